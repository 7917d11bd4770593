//! Deployment state end to end, with the real `reconciler` binary, real git repos and the real
//! engine: history and the failed-revision memory, the deploy lock (fail fast, --lock-wait,
//! two concurrent applies, SIGTERM, forced release, takeover after SIGKILL), rollback from the
//! git cache with the remote gone, suspend/resume with the daemon, a torn current.json, the
//! audit log, and the JSON Schemas of every file the binary wrote.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docker::TestRelease;
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::{free_port, show};
use serde_json::Value;

/// A secret value that must appear in no state file and no output.
const PLANTED: &str = "planted-state-secret-4711";

struct Host {
    release: TestRelease,
    repo: TestRepo,
    state: tempfile::TempDir,
    port: u16,
    /// Where the repo is now (a test moves it away to make the remote unreachable).
    url: Mutex<String>,
}

impl Host {
    fn new(test: &str) -> Host {
        ensure_images(&["app"]);
        let repo = TestRepo::new();
        let url = repo.url();
        Host {
            release: TestRelease::new(test),
            repo,
            state: tempfile::tempdir().expect("state dir"),
            port: free_port(),
            url: Mutex::new(url),
        }
    }

    /// Commits a release of `web` at `version` with extra environment `env` (`K: "v", ...`).
    fn commit(&self, version: &str, env: &str, deadline: &str) -> String {
        let spec = format!(
            r#"version: 1
release: {release}
services:
  web:
    image: reconciler-test/app:{version}
    ports: ["127.0.0.1:{port}:8000"]
    labels: {{ io.reconciler.test: "1" }}
    environment: {{ MODE: state{env} }}
    secrets: {{ API_TOKEN: {{ env: STATE_TEST_TOKEN }} }}
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health, expect: 200 }}, interval: 200ms, deadline: {deadline} }}
"#,
            release = self.release.name,
            port = self.port,
        );
        self.repo.write("release.yaml", &spec);
        self.repo.commit(&format!("{version}{env}"))
    }

    fn url(&self) -> String {
        self.url.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn cmd(&self, args: &[&str], actor: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        c.args(args)
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .env("RECONCILER_ACTOR", actor)
            .env("STATE_TEST_TOKEN", PLANTED);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args, "alice").output().expect("reconciler runs")
    }

    fn apply(&self, extra: &[&str]) -> Output {
        let url = self.url();
        let mut args = vec!["apply", "--repo", url.as_str()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn spawn_apply(&self, actor: &str, extra: &[&str]) -> Child {
        let url = self.url();
        let mut args = vec!["apply", "--repo", url.as_str()];
        args.extend_from_slice(extra);
        self.cmd(&args, actor)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("reconciler starts")
    }

    fn dir(&self) -> PathBuf {
        self.state.path().join("releases").join(&self.release.name)
    }

    fn json(&self, file: &str) -> Value {
        let path = self.dir().join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
    }

    fn history(&self) -> Vec<Value> {
        self.json("history.json")["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir().join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
            .collect()
    }

    fn status_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["status", "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        common::assert_schema("status.schema.json", &v);
        v
    }

    fn version(&self) -> Option<String> {
        http_get(self.port, "/version")
    }

    /// No file under the state dir holds the planted secret.
    fn assert_no_secret_in_state(&self) {
        for file in files_under(self.state.path().join("releases").as_path()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(PLANTED),
                "{} holds the secret",
                file.display()
            );
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

/// Polls `cond` until it holds; panics with `what` at the deadline.
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("reconciler did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Output {
        status: child.wait().expect("wait"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out.stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn history_and_audit_record_applied_failed_and_refused_deploys() {
    let host = Host::new("state-history");
    let rev1 = host.commit("v1", "", "20s");
    let out = host.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(host.version().as_deref(), Some("v1"));

    let current = host.json("current.json");
    common::assert_schema("current.schema.json", &current);
    assert_eq!(current["revision"], rev1.as_str());
    assert_eq!(current["services"][0]["service"], "web");
    assert_eq!(current["services"][0]["image"], "reconciler-test/app:v1");
    assert!(current["services"][0]["image_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("sha256:")));

    let history = host.history();
    assert_eq!(history.len(), 1);
    let e = &history[0];
    assert_eq!(e["kind"], "deploy");
    assert_eq!(e["outcome"], "applied");
    assert_eq!(e["trigger"], "cli");
    assert_eq!(e["actor"], "alice");
    let actions: Vec<&str> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"create") && actions.contains(&"gate"),
        "{actions:?}"
    );

    // v2 whose gate fails: recorded as failed with the step and the reason; v1 still serves.
    let rev2 = host.commit("v2", ", APP_FAIL_HEALTH: \"1\"", "3s");
    let out = host.apply(&[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(PLANTED));
    assert_eq!(host.version().as_deref(), Some("v1"));
    let history = host.history();
    assert_eq!(history.len(), 2);
    let failed = &history[1];
    assert_eq!(failed["revision"], rev2.as_str());
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["previous_revision"], rev1.as_str());
    assert_eq!(failed["failure"]["step"]["action"], "gate");
    assert_eq!(failed["failure"]["step"]["service"], "web");
    assert!(!failed["failure"]["reason"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    assert_eq!(host.json("current.json")["revision"], rev1.as_str());

    // A new process (a restart) still refuses the failed revision, without touching the host.
    let out = host.apply(&[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("--retry") && err.contains(&rev2), "{err}");
    assert_eq!(
        host.history().len(),
        2,
        "a refused revision is not re-applied"
    );

    // --retry runs it again (and it fails again).
    let out = host.apply(&["--retry"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let history = host.history();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["outcome"], "failed");

    let audit: Vec<(String, String)> = host
        .audit()
        .iter()
        .map(|l| {
            common::assert_schema("audit-line.schema.json", l);
            (
                l["action"].as_str().unwrap_or("").to_string(),
                l["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("apply", "applied"),
        ("apply", "failed"),
        ("apply", "refused"),
        ("apply", "failed"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(audit, expected);

    common::assert_schema("history.schema.json", &host.json("history.json"));
    let out = host.run(&["history", "--output", "json", "--limit", "2"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("history JSON");
    common::assert_schema("history.schema.json", &shown);
    assert_eq!(shown["entries"].as_array().map(Vec::len), Some(2));
    let out = host.run(&["history"]);
    assert!(
        stdout(&out).contains("failed at step") && stdout(&out).contains("gate"),
        "{}",
        show(&out)
    );
    host.assert_no_secret_in_state();
}

#[test]
fn concurrent_applies_take_turns_and_lock_wait_waits() {
    let host = Host::new("state-lock");
    // Each release spends ~3 s in its gate, so the two overlap unless the lock orders them.
    let rev1 = host.commit("v1", ", APP_START_DELAY: \"3\"", "30s");
    let rev2 = host.commit("v2", ", APP_START_DELAY: \"3\"", "30s");

    let mut first = host.spawn_apply("first-ci", &["--ref", &rev1]);
    let record = host.dir().join("lock.json");
    wait_for(
        "the first apply to take the lock",
        Duration::from_secs(60),
        || record.exists(),
    );
    let holder = host.json("lock.json");
    common::assert_schema("lock.schema.json", &holder);
    assert_eq!(holder["actor"], "first-ci");
    assert_eq!(holder["revision"], rev1.as_str());
    assert_eq!(holder["pid"], first.id());

    let out = host.run(&["lock", "status", "--output", "json"]);
    let st: Value = serde_json::from_slice(&out.stdout).expect("lock status JSON");
    assert_eq!(st["held"], true, "{}", show(&out));
    assert_eq!(st["holder"]["actor"], "first-ci");

    // Without --lock-wait: fails at once, naming the holder, while the first still runs.
    let url = host.url();
    let out = host
        .cmd(&["apply", "--repo", &url, "--ref", &rev2], "second-ci")
        .output()
        .expect("runs");
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        stderr(&out).contains("first-ci") && stderr(&out).contains("--lock-wait"),
        "{}",
        show(&out)
    );
    assert!(
        first.try_wait().expect("try_wait").is_none(),
        "the second apply must fail while the first still holds the lock"
    );

    // With --lock-wait: waits its turn, then applies the later revision.
    let mut second = host.spawn_apply("second-ci", &["--ref", &rev2, "--lock-wait", "2m"]);
    let out1 = wait_exit(&mut first, Duration::from_secs(120));
    let out2 = wait_exit(&mut second, Duration::from_secs(120));
    assert_eq!(code(&out1), 0, "{}", show(&out1));
    assert_eq!(code(&out2), 0, "{}", show(&out2));

    let history = host.history();
    assert_eq!(history.len(), 2, "{history:#?}");
    let (a, b) = (&history[0], &history[1]);
    assert_eq!(
        (a["revision"].as_str(), b["revision"].as_str()),
        (Some(rev1.as_str()), Some(rev2.as_str()))
    );
    assert_eq!(
        (a["outcome"].as_str(), b["outcome"].as_str()),
        (Some("applied"), Some("applied"))
    );
    // Never interleaved: the second started after the first finished (same RFC 3339 format,
    // so text order is time order).
    let a_end = a["finished_at"].as_str().unwrap();
    let b_start = b["started_at"].as_str().unwrap();
    assert!(
        a_end <= b_start,
        "interleaved: first ended {a_end}, second started {b_start}"
    );
    assert_eq!(host.json("current.json")["revision"], rev2.as_str());
    assert_eq!(host.version().as_deref(), Some("v2"));
    assert!(
        !record.exists(),
        "the lock record is removed after the deploys"
    );
}

#[test]
fn sigterm_and_forced_release_leave_no_lock_and_a_killed_holder_is_taken_over() {
    let host = Host::new("state-signals");
    let rev1 = host.commit("v1", ", APP_START_DELAY: \"30\"", "60s");
    let record = host.dir().join("lock.json");
    let container = host.release.obj("web");
    let in_gate = |record: &Path| record.exists() && common::docker::container_exists(&container);

    // SIGTERM during the gate: rolled back, lock released, recorded as rolled_back.
    let mut child = host.spawn_apply("alice", &[]);
    wait_for(
        "the apply to reach its gate",
        Duration::from_secs(60),
        || in_gate(&record),
    );
    signal(&child, "TERM");
    let out = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(!record.exists(), "lock.json left behind after SIGTERM");
    assert!(
        !common::docker::container_exists(&container),
        "the new container was not undone"
    );
    let out = host.run(&["lock", "status", "--output", "json"]);
    let st: Value = serde_json::from_slice(&out.stdout).expect("lock status JSON");
    assert_eq!(
        (st["held"].as_bool(), st["stale"].as_bool()),
        (Some(false), Some(false))
    );
    let history = host.history();
    assert_eq!(history.last().unwrap()["outcome"], "rolled_back");
    assert_eq!(history.last().unwrap()["revision"], rev1.as_str());

    // lock release --force: the holder gets SIGTERM, rolls back and lets go.
    let mut child = host.spawn_apply("bob", &[]);
    wait_for(
        "the apply to reach its gate",
        Duration::from_secs(60),
        || in_gate(&record),
    );
    let out = host.run(&["lock", "release", "--force"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("sent SIGTERM"), "{}", show(&out));
    let held = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code(&held), 1, "{}", show(&held));
    assert!(!record.exists());

    // SIGKILL: the record stays (stale), the next deploy takes it over and audits it.
    let mut child = host.spawn_apply("carol", &[]);
    wait_for(
        "the apply to reach its gate",
        Duration::from_secs(60),
        || in_gate(&record),
    );
    let killed_pid = child.id();
    signal(&child, "KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    assert!(record.exists());
    let out = host.run(&["lock", "status", "--output", "json"]);
    let st: Value = serde_json::from_slice(&out.stdout).expect("lock status JSON");
    assert_eq!(
        (st["held"].as_bool(), st["stale"].as_bool()),
        (Some(false), Some(true)),
        "{st}"
    );
    host.commit("v1", "", "20s");
    let out = host.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(host.version().as_deref(), Some("v1"));
    assert!(!record.exists());

    let audit = host.audit();
    for l in &audit {
        common::assert_schema("audit-line.schema.json", l);
    }
    let forced = audit.iter().find(|l| l["action"] == "lock_force_release");
    assert!(forced.is_some_and(|l| l["actor"] == "alice"), "{audit:#?}");
    let takeover = audit
        .iter()
        .find(|l| l["action"] == "lock_takeover")
        .unwrap_or_else(|| panic!("no takeover line: {audit:#?}"));
    assert!(
        takeover["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("pid {killed_pid}")) && d.contains("carol")),
        "{takeover}"
    );
}

#[test]
fn rollback_from_the_cache_with_the_remote_gone_restores_v1_and_suspends_the_daemon() {
    let host = Host::new("state-rollback");
    let rev1 = host.commit("v1", "", "20s");
    assert_eq!(code(&host.apply(&[])), 0);
    let rev2 = host.commit("v2", "", "20s");
    let out = host.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(host.version().as_deref(), Some("v2"));

    // The remote goes away.
    let moved = host.repo.path.with_file_name("ops-moved");
    std::fs::rename(&host.repo.path, &moved).expect("move the repo away");
    let st = host.status_json(&[]);
    assert!(st["desired_error"].is_string(), "{st:#}");
    assert_eq!(st["applied_revision"], rev2.as_str());

    let out = host.run(&["rollback"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(host.version().as_deref(), Some("v1"));
    let last = host.history().last().cloned().unwrap();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["revision"], rev1.as_str());
    assert_eq!(last["previous_revision"], rev2.as_str());
    assert_eq!(last["outcome"], "applied");
    let suspended = host.json("suspended.json");
    assert_eq!(suspended["reason"], "rollback");
    assert_eq!(suspended["by"], "alice");

    let st = host.status_json(&[]);
    assert_eq!(st["applied_revision"], rev1.as_str());
    assert_eq!(st["suspended"]["reason"], "rollback");
    assert_eq!(st["in_sync"], true, "{st:#}");
    assert_eq!(st["services"][0]["state"], "running");

    // The daemon, with the remote back at a new place, sees v2 but does not apply it.
    *host.url.lock().unwrap() = moved.display().to_string();
    let mut daemon = spawn_daemon(&host);
    daemon.wait_log("automatic sync suspended");
    assert_eq!(host.version().as_deref(), Some("v1"));
    daemon.stop();

    let out = host.run(&["resume"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!host.dir().join("suspended.json").exists());

    // Resumed: the daemon rolls forward to v2.
    let mut daemon = spawn_daemon(&host);
    // v2 answers before its deploy is over (the gate is still running): wait for the record,
    // or stopping the daemon would cancel the deploy and roll it back.
    wait_for(
        "the daemon to roll forward to v2 and record it",
        Duration::from_secs(90),
        || {
            host.version().as_deref() == Some("v2")
                && host
                    .history()
                    .last()
                    .is_some_and(|e| e["actor"] == "daemon" && e["outcome"] == "applied")
        },
    );
    daemon.stop();
    let last = host.history().last().cloned().unwrap();
    assert_eq!(
        (last["trigger"].as_str(), last["actor"].as_str()),
        (Some("poll"), Some("daemon"))
    );

    let actions: Vec<String> = host
        .audit()
        .iter()
        .map(|l| {
            common::assert_schema("audit-line.schema.json", l);
            format!(
                "{}:{}",
                l["action"].as_str().unwrap(),
                l["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "apply:applied",
            "apply:applied",
            "rollback:applied",
            "resume:ok",
            "apply:applied"
        ],
    );
    common::assert_schema("current.schema.json", &host.json("current.json"));
    host.assert_no_secret_in_state();
}

struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

fn spawn_daemon(host: &Host) -> Daemon {
    let url = host.url();
    let mut child = host
        .cmd(
            &["run", "--repo", &url, "--interval", "1s", "--listen", "off"],
            "ignored",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = sink.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    Daemon { child, log }
}

impl Daemon {
    fn wait_log(&mut self, text: &str) {
        let log = self.log.clone();
        wait_for(text, Duration::from_secs(60), || {
            log.lock().map(|l| l.contains(text)).unwrap_or(false)
        });
    }

    fn stop(&mut self) {
        signal(&self.child, "TERM");
        let out = wait_exit(&mut self.child, Duration::from_secs(60));
        assert_eq!(code(&out), 0, "daemon log:\n{}", self.log.lock().unwrap());
    }
}

#[test]
fn a_torn_current_json_is_reported_and_the_labels_are_used() {
    let host = Host::new("state-torn");
    let rev1 = host.commit("v1", "", "20s");
    assert_eq!(code(&host.apply(&[])), 0);
    let current = host.dir().join("current.json");
    std::fs::write(&current, b"{\"release\": \"t-").expect("tear it");

    let st = host.status_json(&[]);
    assert!(
        st["current_error"]
            .as_str()
            .is_some_and(|e| e.contains("current.json")),
        "{st:#}"
    );
    assert_eq!(st["applied_from"], "labels");
    assert_eq!(st["applied_revision"], rev1.as_str());
    let out = host.run(&["status"]);
    assert!(
        stdout(&out).contains("warning:") && stdout(&out).contains("from labels"),
        "{}",
        show(&out)
    );

    // The next apply finds the host in sync and writes a good current.json.
    let out = host.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let repaired = host.json("current.json");
    common::assert_schema("current.schema.json", &repaired);
    assert_eq!(repaired["revision"], rev1.as_str());

    // suspend / resume by hand: recorded, shown, audited.
    let out = host.run(&["suspend", "--message", "incident 42"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st = host.status_json(&[]);
    assert_eq!(st["suspended"]["reason"], "suspend");
    assert_eq!(st["suspended"]["message"], "incident 42");
    assert_eq!(st["suspended"]["by"], "alice");
    let out = host.run(&["resume"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(host.status_json(&[])["suspended"].is_null());
    let actions: Vec<String> = host
        .audit()
        .iter()
        .map(|l| {
            common::assert_schema("audit-line.schema.json", l);
            format!(
                "{}:{}",
                l["action"].as_str().unwrap(),
                l["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(actions, ["apply:applied", "suspend:ok", "resume:ok"]);
}

/// The schemas are not vacuous: what the library writes passes, and a file with a wrong
/// outcome, a missing field or a stray field does not.
#[test]
fn schemas_accept_what_is_written_and_reject_what_is_not() {
    use reconciler::state::history::{
        Entry, Failure, History, Kind, Outcome, SnapshotTaken, StepTiming,
    };
    let entry = Entry {
        id: "shop-3".into(),
        kind: Kind::Deploy,
        release: "shop".into(),
        revision: "a".repeat(40),
        previous_revision: Some("b".repeat(40)),
        spec_hash: Some("c".repeat(64)),
        trigger: "webhook".into(),
        actor: "github:octo".into(),
        started_at: reconciler::state::now(),
        finished_at: reconciler::state::now(),
        duration_ms: 1200,
        outcome: Outcome::Failed,
        services: vec![],
        steps: vec![],
        failure: Some(Failure {
            step: Some(StepTiming {
                index: 3,
                action: "gate".into(),
                service: Some("web".into()),
                target: "shop-web-green".into(),
                duration_ms: 5000,
            }),
            reason: "health check failed".into(),
            rollback_errors: vec![],
        }),
        source: None,
        snapshots: vec![SnapshotTaken {
            id: "shop-db-20261201T120000Z".into(),
            service: "db".into(),
            file: "snapshots/db/20261201T120000Z-aaaaaaaaaaaa.dump".into(),
            size: 1024,
            sha256: "d".repeat(64),
            duration_ms: 300,
        }],
        jobs: Vec::new(),
    };
    let good = serde_json::to_value(History {
        entries: vec![entry],
    })
    .unwrap();
    common::assert_schema("history.schema.json", &good);

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/history.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut wrong_outcome = good.clone();
    wrong_outcome["entries"][0]["outcome"] = "partially".into();
    let mut missing = good.clone();
    missing["entries"][0]
        .as_object_mut()
        .unwrap()
        .remove("actor");
    let mut stray = good.clone();
    stray["entries"][0]["password"] = "x".into();
    for bad in [wrong_outcome, missing, stray] {
        assert!(!validator.is_valid(&bad), "accepted: {bad:#}");
    }
}
