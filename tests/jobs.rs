//! One-off jobs (`jobs:`) against a real PostgreSQL (reconciler-test/postgres:15) and a
//! blue-green web service behind nginx under load:
//! (a) a `before` migration that succeeds changes the schema;
//! (b) one that fails fails the release before any switch: zero failed requests, the old color
//!     keeps serving, the database snapshot taken before the job is kept and verifies, history
//!     names the job and keeps its output tail, with the secret value it printed redacted;
//! (c) one that hangs is killed at its timeout.
//! After each, no job container is left.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::{Load, LoadReport};
use common::{free_port, show};

/// Requests the failing case must see at least, while the deploy happens.
const MIN_REQUESTS: u64 = 2_000;
/// The database password: a secret the job prints, which must never be stored.
const PASSWORD: &str = "pl4nted-pg-pa55word";

use common::proxy::WEB_NGINX_CONF as NGINX_CONF;

/// `web` at `version`, whose `before` job runs `sql` through psql (after printing the password
/// it was given, as a careless script would), with `timeout`.
fn spec(release: &str, port: u16, version: &str, sql: &str, timeout: &str) -> String {
    format!(
        r#"version: 1
release: {release}
networks: {{ edge: {{}}, backend: {{}} }}
proxy:
  image: reconciler-test/nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:{port}:80"]
  networks: [edge]
  routes: {{ web: {{ service: web, port: 8000 }} }}
services:
  db:
    image: reconciler-test/postgres:15
    networks: [backend]
    secrets: {{ POSTGRES_PASSWORD: {{ env: JOBS_TEST_PG_PASSWORD }} }}
    health: {{ exec: {{ command: ["pg_isready", "-h", "127.0.0.1", "-U", "postgres"] }}, interval: 500ms, deadline: 60s }}
    snapshot: {{ exec: ["pg_dump", "-Fc", "-U", "postgres", "postgres"], format: postgres-custom }}
  web:
    image: reconciler-test/app:{version}
    strategy: blue-green
    networks: [edge]
    depends_on: [db]
    environment: {{ MODE: jobs }}
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 10s }}
    drain: 3s
    jobs:
      before:
        - name: migrate
          image: reconciler-test/postgres:15
          networks: [backend]
          secrets: {{ PGPASSWORD: {{ env: JOBS_TEST_PG_PASSWORD }} }}
          environment: {{ PGHOST: db, PGUSER: postgres }}
          command: ["bash", "-c", "echo \"connecting with $PGPASSWORD\"; psql -v ON_ERROR_STOP=1 -c \"$0\"", "{sql}"]
          timeout: {timeout}
"#
    )
}

struct Host {
    release: TestRelease,
    repo: TestRepo,
    state: tempfile::TempDir,
    port: u16,
}

impl Host {
    fn apply(&self, version: &str, sql: &str, timeout: &str) -> Output {
        let text = spec(&self.release.name, self.port, version, sql, timeout);
        self.repo.write("release.yaml", &text);
        self.repo.commit(&format!("{version}: {sql}"));
        Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["apply", "--repo", &self.repo.url()])
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .env("JOBS_TEST_PG_PASSWORD", PASSWORD)
            .output()
            .expect("reconciler runs")
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        docker(&[
            "exec",
            &self.release.obj("db"),
            "psql",
            "-U",
            "postgres",
            "-tAc",
            sql,
        ])
        .map(|out| out.trim().to_string())
    }

    /// The web containers that run, by id, and the upstream file nginx runs with.
    fn serving(&self) -> (Vec<String>, String) {
        common::proxy::web_serving(&self.release, false)
    }

    fn job_containers(&self) -> String {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &self.release.label_filter(),
            "--filter",
            "label=io.reconciler.job",
        ])
        .unwrap_or_default()
        .trim()
        .to_string()
    }

    fn last_history_entry(&self) -> Value {
        let path = self
            .state
            .path()
            .join("releases")
            .join(&self.release.name)
            .join("history.json");
        let text = std::fs::read_to_string(&path).expect("history.json");
        assert!(!text.contains(PASSWORD), "history holds the secret: {text}");
        let history: Value = serde_json::from_str(&text).expect("history JSON");
        common::assert_schema("history.schema.json", &history);
        history["entries"]
            .as_array()
            .and_then(|e| e.last())
            .cloned()
            .expect("a history entry")
    }
}

fn summary(r: &LoadReport) -> String {
    format!(
        "{} requests, {} failed, {:.0} req/s over {} ms, by body {:?}",
        r.total, r.failures, r.requests_per_sec, r.duration_ms, r.by_body
    )
}

#[test]
fn migrations_gate_a_blue_green_release_against_postgres() {
    ensure_images(&["app", "nginx", "postgres"]);
    let host = Host {
        release: TestRelease::new("jobs"),
        repo: TestRepo::new(),
        state: tempfile::tempdir().expect("state dir"),
        port: free_port(),
    };
    host.repo.write("nginx.conf", NGINX_CONF);

    // (a) The first deploy migrates before web starts: the table is there afterwards.
    let out = host.apply("v1", "CREATE TABLE items (id int PRIMARY KEY)", "2m");
    assert_eq!(out.status.code(), Some(0), "(a): {}", show(&out));
    assert_eq!(
        host.psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'"),
        Ok("1".to_string())
    );
    let entry = host.last_history_entry();
    let job = &entry["jobs"][0];
    assert_eq!(job["job"], "web/migrate", "{entry:#}");
    assert_eq!(job["outcome"], "succeeded", "{entry:#}");
    assert_eq!(job["exit_code"], 0, "{entry:#}");
    let tail = job["output_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("connecting with <redacted>"), "{tail}");
    assert!(tail.contains("CREATE TABLE"), "{tail}");
    assert_eq!(host.job_containers(), "", "(a) a job container is left");
    let before = host.serving();
    assert_eq!(before.0.len(), 1, "{before:?}");

    // (b) A migration that fails, under load: the release fails before any switch.
    let load = Load::start(
        host.port,
        "/",
        8,
        MIN_REQUESTS * 4,
        Duration::from_secs(180),
    )
    .min_requests(MIN_REQUESTS);
    let out = host.apply("v2", "ALTER TABLE missing ADD COLUMN x int", "2m");
    let report = load.finish();
    eprintln!("(b) failing migration under load: {}", summary(&report));
    assert_eq!(out.status.code(), Some(1), "(b): {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("job web/migrate (before) exited with code"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relation \"missing\" does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD) && !stdout.contains(PASSWORD),
        "the secret leaked: {}",
        show(&out)
    );
    assert_eq!(report.failures, 0, "(b) failed requests: {report:?}");
    assert!(report.total >= MIN_REQUESTS, "(b) only {}", report.total);
    assert!(
        report.by_body.keys().all(|body| body.ends_with("v1")),
        "(b) something else than v1 answered: {report:?}"
    );
    assert_eq!(host.serving(), before, "(b) the host is not as it was");
    let entry = host.last_history_entry();
    assert_eq!(entry["outcome"], "failed", "{entry:#}");
    let reason = entry["failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("job web/migrate"), "{reason}");
    assert!(reason.contains("does not exist"), "{reason}");
    let job = &entry["jobs"][0];
    assert_eq!(job["outcome"], "failed", "{entry:#}");
    assert_ne!(job["exit_code"], 0, "{entry:#}");
    let tail = job["output_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("connecting with <redacted>"), "{tail}");
    assert!(
        tail.contains("relation \"missing\" does not exist"),
        "{tail}"
    );
    // Nothing was switched: no step of web ran before the job.
    let steps: Vec<&str> = entry["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(!steps.contains(&"switch"), "{steps:?}");
    assert_eq!(host.job_containers(), "", "(b) a job container is left");
    // The snapshot taken before the migration is kept by the failed release, and verifies
    // (sha256 and `pg_restore --list`).
    let snapshot = &entry["snapshots"][0];
    assert_eq!(snapshot["service"], "db", "{entry:#}");
    let file = host
        .state
        .path()
        .join("releases")
        .join(&host.release.name)
        .join(snapshot["file"].as_str().unwrap_or_default());
    assert_eq!(
        std::fs::metadata(&file).map(|m| m.len()).ok(),
        snapshot["size"].as_u64(),
        "{}",
        file.display()
    );
    let id = snapshot["id"].as_str().unwrap_or_default();
    let verify = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["snapshots", "verify", id, "--release", &host.release.name])
        .arg("--state-dir")
        .arg(host.state.path())
        .output()
        .expect("reconciler runs");
    assert_eq!(verify.status.code(), Some(0), "{}", show(&verify));

    // (c) A migration that hangs is killed at its timeout; the release fails the same way.
    let out = host.apply("v3", "SELECT pg_sleep(600)", "3s");
    assert_eq!(out.status.code(), Some(1), "(c): {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not finish within its timeout of 3s and was killed"),
        "{stderr}"
    );
    let entry = host.last_history_entry();
    assert_eq!(entry["jobs"][0]["outcome"], "timed_out", "{entry:#}");
    eprintln!(
        "(c) hung job: killed after {} ms (timeout 3 s)",
        entry["jobs"][0]["duration_ms"]
    );
    assert_eq!(host.serving(), before, "(c) the host is not as it was");
    assert_eq!(host.job_containers(), "", "(c) a job container is left");
    // And the schema is as (a) left it.
    assert_eq!(
        host.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'items'"),
        Ok("1".to_string())
    );
}

/// A recreate `web` at `version` with release-level jobs: `prepare` (before, running `script`)
/// and `smoke` (after, `when: always`: it checks web answers with `version`).
fn release_jobs_spec(release: &str, port: u16, version: &str, script: &str) -> String {
    format!(
        r#"version: 1
release: {release}
services:
  web:
    image: reconciler-test/app:{version}
    ports: ["127.0.0.1:{port}:8000"]
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 10s }}
jobs:
  before:
    - {{ name: prepare, image: "reconciler-test/busybox:1", command: ["sh", "-c", "{script}"], timeout: 2m }}
  after:
    - name: smoke
      image: reconciler-test/busybox:1
      command: ["sh", "-c", "wget -qO- http://web:8000/version | grep {version}"]
      timeout: 30s
      when: always
"#
    )
}

fn reconciler(args: &[&str], repo: &TestRepo, state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.args(args)
        .args(["--repo", &repo.url()])
        .arg("--state-dir")
        .arg(state)
        .env("RECONCILER_LOG", "info");
    cmd
}

fn history(state: &Path, release: &str) -> Vec<Value> {
    let path = state.join("releases").join(release).join("history.json");
    let history: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("history")).expect("JSON");
    common::assert_schema("history.schema.json", &history);
    history["entries"].as_array().cloned().unwrap_or_default()
}

fn job_names(entry: &Value) -> Vec<(String, String)> {
    entry["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    (
                        j["job"].as_str().unwrap_or_default().to_string(),
                        j["outcome"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn release_jobs_run_once_per_revision_and_a_crash_during_a_job_is_recovered() {
    ensure_images(&["app"]);
    let release = TestRelease::new("jobs-crash");
    let repo = TestRepo::new();
    let state = tempfile::tempdir().expect("state dir");
    let port = free_port();
    let write = |version: &str, script: &str| {
        repo.write(
            "release.yaml",
            &release_jobs_spec(&release.name, port, version, script),
        );
        repo.commit(&format!("{version}: {script}"));
    };

    // The first revision: prepare before web, smoke after it.
    write("v1", "echo prepared");
    let out = reconciler(&["apply"], &repo, state.path())
        .output()
        .expect("apply");
    assert_eq!(out.status.code(), Some(0), "v1: {}", show(&out));
    let entries = history(state.path(), &release.name);
    assert_eq!(
        job_names(&entries[0]),
        [
            ("release/prepare".to_string(), "succeeded".to_string()),
            ("release/smoke".to_string(), "succeeded".to_string())
        ]
    );
    assert!(entries[0]["jobs"][1]["output_tail"]
        .as_str()
        .is_some_and(|t| t.contains("v1")));

    // The same revision again: in sync, even for the `always` job, which ran for it.
    let out = reconciler(&["diff"], &repo, state.path())
        .output()
        .expect("diff");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No changes"), "{}", show(&out));
    let out = reconciler(&["apply"], &repo, state.path())
        .output()
        .expect("apply");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(history(state.path(), &release.name).len(), 1);

    // A revision whose `prepare` hangs; diff shows the job steps; the apply is SIGKILLed
    // while the job runs.
    write("v2", "echo started; sleep 120");
    let out = reconciler(&["diff", "--steps"], &repo, state.path())
        .output()
        .expect("diff");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+ job release/prepare") && text.contains("+ job release/smoke"),
        "{}",
        show(&out)
    );
    let out = reconciler(&["diff", "--output", "json"], &repo, state.path())
        .output()
        .expect("diff");
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    common::assert_schema("plan.schema.json", &plan);
    let job_steps = plan["steps"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["action"] == "job").count())
        .unwrap_or_default();
    assert_eq!(job_steps, 2, "{plan:#}");
    let job_container = release.obj("job-release-prepare");
    let mut child = reconciler(&["apply"], &repo, state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("apply");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let running = loop {
        let state = docker(&["inspect", "-f", "{{.State.Running}}", &job_container]);
        if state.as_deref().map(str::trim) == Ok("true") {
            break true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(running, "the job container never ran");
    let killed_id = docker(&["inspect", "-f", "{{.Id}}", &job_container]).expect("still there");

    // The next apply (a fixed job) recovers first: the job container is removed, the
    // interrupted release rolled back, then the new revision is applied.
    write("v2", "echo fixed");
    let out = reconciler(&["apply"], &repo, state.path())
        .output()
        .expect("apply");
    assert_eq!(out.status.code(), Some(0), "v2 fixed: {}", show(&out));
    assert!(
        docker(&["inspect", killed_id.trim()]).is_err(),
        "the killed job's container is still there"
    );
    let entries = history(state.path(), &release.name);
    let recovery = entries
        .iter()
        .find(|e| e["kind"] == "recovery")
        .expect("a recovery entry");
    assert_eq!(recovery["outcome"], "rolled_back", "{recovery:#}");
    let last = entries.last().expect("entry");
    assert_eq!(last["outcome"], "applied", "{last:#}");
    assert_eq!(
        job_names(last),
        [
            ("release/prepare".to_string(), "succeeded".to_string()),
            ("release/smoke".to_string(), "succeeded".to_string())
        ]
    );
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["history", "--release", &release.name, "--limit", "1"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("history");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("job release/prepare (before) succeeded exit 0"),
        "{}",
        show(&out)
    );
    let leftovers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &release.label_filter(),
        "--filter",
        "label=io.reconciler.job",
    ])
    .unwrap_or_default();
    assert_eq!(leftovers.trim(), "", "job containers left");
}
