//! Crash recovery under load: a blue-green release behind nginx, with load through nginx on
//! 127.0.0.1 for the whole sequence. For every step of the release (enumerated with
//! `diff --output json`), before and after it, `reconciler apply` is paused there by the
//! test-only hook (`RECONCILER_TEST_PAUSE_AT`), SIGKILLed, and run again; plus one kill whose
//! journal is then torn in half. After each: one color per service, the upstreams file names
//! the serving color, no stray container of the release, the host runs the new release, and
//! the load has seen zero failed requests, and the history has an entry for the recovery.
//!
//! One nginx and one load for the whole sequence; each kill point deploys the other version
//! (v1 -> v2, then v2 -> v1, ...), whose plan has the same steps (checked every round).
//!
//! A second test does the same for a recreate service (stop, move aside, create, start, gate,
//! remove), whose undo puts the stopped, renamed-aside container back.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::Load;
use common::{free_port, show};

use common::proxy::WEB_NGINX_CONF as NGINX_CONF;

/// How long a paused apply may take to reach its pause point.
const PAUSE_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);

/// A blue-green service behind nginx, published on 127.0.0.1:port.
fn blue_green_spec(release: &str, port: u16, version: &str) -> String {
    format!(
        r#"version: 1
release: {release}
networks: {{ edge: {{}} }}
proxy:
  image: reconciler-test/nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:{port}:80"]
  networks: [edge]
  routes: {{ web: {{ service: web, port: 8000 }} }}
services:
  web:
    image: reconciler-test/app:{version}
    strategy: blue-green
    networks: [edge]
    environment: {{ MODE: bluegreen }}
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 10s }}
    verify: {{ path: /version, body: {version}, deadline: 5s }}
    drain: 3s
"#
    )
}

/// A recreate service, published on 127.0.0.1:port.
fn recreate_spec(release: &str, port: u16, version: &str) -> String {
    format!(
        r#"version: 1
release: {release}
services:
  web:
    image: reconciler-test/app:{version}
    ports: ["127.0.0.1:{port}:8000"]
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 10s }}
"#
    )
}

/// Kills the paused apply if the test panics before it does.
struct Paused(Option<Child>);

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Host {
    release: TestRelease,
    repo: TestRepo,
    state: tempfile::TempDir,
    logs: tempfile::TempDir,
    port: u16,
    spec: fn(&str, u16, &str) -> String,
}

impl Host {
    fn new(test: &str, spec: fn(&str, u16, &str) -> String) -> Host {
        Host {
            release: TestRelease::new(test),
            repo: TestRepo::new(),
            state: tempfile::tempdir().expect("state dir"),
            logs: tempfile::tempdir().expect("log dir"),
            port: free_port(),
            spec,
        }
    }

    fn reconciler(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        cmd.args(args)
            .args(["--repo", &self.repo.url()])
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .env_remove("RECONCILER_TEST_PAUSE_AT")
            .env_remove("RECONCILER_TEST_PAUSE_MARKER");
        cmd
    }

    fn commit(&self, version: &str) {
        self.repo.write(
            "release.yaml",
            &(self.spec)(&self.release.name, self.port, version),
        );
        self.repo.commit(version);
    }

    fn apply(&self) -> Output {
        self.reconciler(&["apply"])
            .output()
            .expect("reconciler apply runs")
    }

    /// The plan's step kinds (`create`, `start`, `gate`, `switch`, ...), from the JSON diff.
    fn step_kinds(&self) -> Vec<String> {
        let out = self
            .reconciler(&["diff", "--steps", "--output", "json"])
            .output()
            .expect("reconciler diff runs");
        assert_eq!(out.status.code(), Some(1), "diff: {}", show(&out));
        let plan: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("diff --output json prints JSON");
        plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["action"].as_str().expect("action").to_string())
            .collect()
    }

    fn journal_path(&self) -> PathBuf {
        self.state
            .path()
            .join("releases")
            .join(&self.release.name)
            .join("journal.json")
    }

    /// Starts `apply`, paused at `index:when` (before/after), and returns once it is there.
    fn apply_paused(&self, index: usize, when: &str, round: usize) -> Paused {
        let marker = self.logs.path().join(format!("paused-{round}"));
        let log = self.logs.path().join(format!("apply-{round}.log"));
        let log_file = fs::File::create(&log).expect("log file");
        let child = self
            .reconciler(&["apply"])
            .env("RECONCILER_TEST_PAUSE_AT", format!("{index}:{when}"))
            .env("RECONCILER_TEST_PAUSE_MARKER", &marker)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("reconciler apply starts");
        let mut paused = Paused(Some(child));
        let until = Instant::now() + PAUSE_DEADLINE;
        while !marker.exists() {
            let child = paused.0.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "round {round}: apply exited ({status}) before pausing at {index}:{when}:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < until,
                "round {round}: apply did not reach {index}:{when} within {PAUSE_DEADLINE:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(POLL);
        }
        paused
    }

    /// Starts `apply` paused at `index:when`, SIGKILLs it there, checks the journal it left
    /// (tearing it in half when `torn`), runs `apply` again and checks that it recovered as
    /// the journal says it must. Returns the journal as the killed apply left it and the
    /// second apply's stderr.
    fn kill_and_recover(
        &self,
        index: usize,
        when: &str,
        torn: bool,
        round: usize,
        what: &str,
        check_diff_note: bool,
    ) -> (serde_json::Value, String) {
        let round_started = Instant::now();
        let mut paused = self.apply_paused(index, when, round);
        let to_pause = round_started.elapsed();
        let mut child = paused.0.take().expect("child");
        child.kill().expect("SIGKILL the paused apply");
        child.wait().expect("reap the killed apply");

        let journal = read_journal(&self.journal_path());
        let step = &journal["steps"][index];
        assert!(step["started_at"].is_string(), "{what}: {step}");
        assert!(step["done_at"].is_null(), "{what}: {step}");
        if check_diff_note {
            // diff changes nothing, but says that the next apply resolves the journal first.
            let out = self
                .reconciler(&["diff"])
                .output()
                .expect("reconciler diff runs");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("in progress or was interrupted"),
                "{what}: {}",
                show(&out)
            );
            assert!(
                self.journal_path().exists(),
                "{what}: diff resolved the journal"
            );
        }
        if torn {
            let bytes = fs::read(self.journal_path()).expect("journal");
            fs::write(self.journal_path(), &bytes[..bytes.len() / 2]).expect("tear the journal");
        }

        let recover_started = Instant::now();
        let out = self.apply();
        let recover_and_apply = recover_started.elapsed();
        assert_eq!(out.status.code(), Some(0), "{what}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let recovery = stderr
            .lines()
            .find(|l| l.starts_with("recovery: "))
            .unwrap_or_else(|| panic!("{what}: no recovery reported: {}", show(&out)));
        eprintln!(
            "{what}: paused after {:.1}s, recovered and applied in {:.1}s: {recovery}",
            to_pause.as_secs_f64(),
            recover_and_apply.as_secs_f64()
        );
        let expected = if torn {
            "moved aside"
        } else if journal["commit_point"]
            .as_u64()
            .is_some_and(|c| c <= index as u64)
        {
            "finished the release"
        } else {
            "rolled back"
        };
        assert!(recovery.contains(expected), "{what}: {recovery}");
        if torn {
            let aside = fs::read_dir(self.journal_path().parent().expect("dir"))
                .expect("state dir")
                .filter_map(Result::ok)
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("journal.json.corrupt-")
                });
            assert!(aside, "{what}: the torn journal was not kept aside");
        }
        assert!(
            !self.journal_path().exists(),
            "{what}: the journal is still there"
        );
        // The history tells what happened: the newest recovery entry is this one.
        let history = self.history();
        let entry = history["entries"]
            .as_array()
            .and_then(|e| e.iter().rev().find(|e| e["kind"] == "recovery"))
            .unwrap_or_else(|| panic!("{what}: no recovery in the history: {history:#}"));
        let outcome = if expected == "finished the release" {
            "applied"
        } else {
            "rolled_back"
        };
        assert_eq!(entry["outcome"], outcome, "{what}: {entry:#}");
        if !torn {
            assert_eq!(entry["revision"], journal["revision"], "{what}: {entry:#}");
        }
        (journal, stderr)
    }

    /// `reconciler history --output json`.
    fn history(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args([
                "history",
                "--output",
                "json",
                "--release",
                &self.release.name,
            ])
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .expect("reconciler history runs");
        assert_eq!(out.status.code(), Some(0), "history: {}", show(&out));
        let history: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("history --output json prints JSON");
        // Recovery entries too (a torn journal's included) match the published schema.
        common::assert_schema("history.schema.json", &history);
        history
    }

    /// Every container of the release: (name, image, running).
    fn containers(&self) -> Vec<(String, String, bool)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &self.release.label_filter(),
            "--format",
            "{{.Names}} {{.Image}} {{.State}}",
        ])
        .expect("docker ps");
        let mut list: Vec<(String, String, bool)> = out
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()? == "running",
                ))
            })
            .collect();
        list.sort();
        list
    }

    fn upstreams(&self) -> String {
        docker(&[
            "exec",
            &self.release.obj("proxy"),
            "cat",
            "/etc/nginx/reconciler/upstreams.conf",
        ])
        .expect("read the upstreams file")
    }

    /// The host runs exactly `version`: the proxy and one running web container of one color,
    /// named in the upstreams file; nothing else of the release.
    fn check_converged(&self, version: &str, what: &str) {
        let containers = self.containers();
        let proxy = self.release.obj("proxy");
        let web: Vec<_> = containers.iter().filter(|c| c.0 != proxy).collect();
        assert!(
            containers.iter().any(|c| c.0 == proxy && c.2),
            "{what}: the proxy is not running: {containers:?}"
        );
        assert_eq!(
            web.len(),
            1,
            "{what}: one container of web, no orphan color, renamed-aside or unrecorded one: {containers:?}"
        );
        let (name, image, running) = web[0];
        assert!(*running, "{what}: {name} is not running");
        assert_eq!(
            image,
            &format!("reconciler-test/app:{version}"),
            "{what}: {containers:?}"
        );
        let color = name
            .strip_prefix(&format!("{}-web-", self.release.name))
            .unwrap_or_else(|| panic!("{what}: unexpected web container name {name}"));
        let upstreams = self.upstreams();
        assert!(
            upstreams.contains(&format!("color={color}")) && upstreams.contains(name.as_str()),
            "{what}: the upstreams file does not name the serving {color} ({name}):\n{upstreams}"
        );
        assert!(
            !self.journal_path().exists(),
            "{what}: the journal is still there"
        );
    }
}

/// The journal the killed apply left, checked against its published schema.
fn read_journal(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).expect("the journal of the killed apply");
    // No container config: the spec's environment (`MODE: bluegreen`) is not in it.
    assert!(!text.contains("MODE"), "{text}");
    let journal: serde_json::Value = serde_json::from_str(&text).expect("the journal parses");
    common::assert_schema("journal.schema.json", &journal);
    journal
}

#[test]
fn sigkill_at_every_step_of_a_blue_green_release_recovers_with_zero_failed_requests() {
    ensure_images(&["app", "nginx"]);
    let host = Host::new("crash-bg", blue_green_spec);
    host.repo.write("nginx.conf", NGINX_CONF);
    host.commit("v1");
    let out = host.apply();
    assert_eq!(out.status.code(), Some(0), "v1: {}", show(&out));
    host.check_converged("v1", "v1");

    // The v1 -> v2 release's steps: the kill points.
    host.commit("v2");
    let kinds = host.step_kinds();
    eprintln!("v1 -> v2 steps: {kinds:?}");
    assert!(
        kinds.contains(&"switch".to_string()) && kinds.contains(&"remove".to_string()),
        "a blue-green release switches and removes: {kinds:?}"
    );
    let switch = kinds.iter().position(|k| k == "switch").expect("switch");
    let mut points: Vec<(usize, &str, bool)> = Vec::new();
    for index in 0..kinds.len() {
        points.push((index, "before", false));
        points.push((index, "after", false));
    }
    // The journal torn in half after the switch: the labels and the upstreams file must do.
    points.push((switch, "after", true));

    // Bounded: stops by itself after 3M requests or 6 minutes, and at the end of the test.
    let mut load = Load::start(host.port, "/", 4, 3_000_000, Duration::from_secs(360));
    assert!(
        load.wait_for_requests(50, Duration::from_secs(20)),
        "no traffic through nginx: {:?}",
        load.progress()
    );

    let started = Instant::now();
    let mut version = "v2";
    for (round, &(index, when, torn)) in points.iter().enumerate() {
        let what = format!(
            "round {round}: kill {when} step {index} ({}){} deploying {version}",
            kinds[index],
            if torn { ", journal torn" } else { "" }
        );
        if round > 0 {
            host.commit(version);
        }
        assert_eq!(host.step_kinds(), kinds, "{what}: the plan changed shape");

        let (journal, _) = host.kill_and_recover(index, when, torn, round, &what, false);
        if index == switch {
            // Recorded before the switch began, so a crash during it can put them back.
            let previous = journal["steps"][index]["previous_files"].to_string();
            assert!(previous.contains("upstreams.conf"), "{what}: {journal}");
        }
        host.check_converged(version, &what);
        let progress = load.progress();
        assert_eq!(
            progress.failures, 0,
            "{what}: failed requests: {progress:?}"
        );

        version = if version == "v2" { "v1" } else { "v2" };
    }

    let report = load.finish();
    eprintln!(
        "{} kill points in {:.0}s: {} requests through nginx, {} failed ({:.0} req/s), by body {:?}",
        points.len(),
        started.elapsed().as_secs_f64(),
        report.total,
        report.failures,
        report.requests_per_sec,
        report.by_body
    );
    assert_eq!(report.failures, 0, "failed requests: {report:#?}");
    assert!(
        report.by_body.keys().any(|b| b.ends_with("v1"))
            && report.by_body.keys().any(|b| b.ends_with("v2")),
        "both versions served: {report:?}"
    );
}

#[test]
fn sigkill_at_every_step_of_a_recreate_release_puts_the_old_container_back_or_finishes() {
    ensure_images(&["app"]);
    let host = Host::new("crash-rc", recreate_spec);
    host.commit("v1");
    let out = host.apply();
    assert_eq!(out.status.code(), Some(0), "v1: {}", show(&out));

    host.commit("v2");
    let kinds = host.step_kinds();
    eprintln!("recreate v1 -> v2 steps: {kinds:?}");
    let rename = kinds.iter().position(|k| k == "rename").expect("rename");
    let remove = kinds.iter().position(|k| k == "remove").expect("remove");
    assert!(kinds.contains(&"stop".to_string()), "{kinds:?}");

    let name = host.release.obj("web");
    let mut version = "v2";
    let mut round = 0;
    for index in 0..kinds.len() {
        for when in ["before", "after"] {
            let what = format!(
                "recreate round {round}: kill {when} step {index} ({}) deploying {version}",
                kinds[index]
            );
            if round > 0 {
                host.commit(version);
            }
            assert_eq!(host.step_kinds(), kinds, "{what}: the plan changed shape");
            let (_, stderr) = host.kill_and_recover(index, when, false, round, &what, true);
            if (rename..remove).contains(&index) {
                // The renamed-aside container was renamed back (or had not moved yet).
                assert!(stderr.contains("rename container"), "{what}: {stderr}");
            }
            // One container, under the service's name, running the new version.
            let containers = host.containers();
            assert_eq!(
                containers,
                vec![(name.clone(), format!("reconciler-test/app:{version}"), true)],
                "{what}"
            );
            round += 1;
            version = if version == "v2" { "v1" } else { "v2" };
        }
    }
    eprintln!("recreate: {round} kill points recovered");
}
