//! The converge loop end to end: the real `reconciler` binary, a real git repo, the real engine.

mod common;

use common::show;

use common::free_port;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{mutating_events, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;

struct Reconciler {
    state_dir: tempfile::TempDir,
}

impl Reconciler {
    fn new() -> Reconciler {
        Reconciler {
            state_dir: tempfile::tempdir().expect("state dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(args)
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .env("RECONCILER_LOG", "warn")
            .output()
            .expect("reconciler runs")
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Two services: `web` (HTTP gate) depends on `cache` (Docker HEALTHCHECK gate).
fn spec(release: &str, web_image: &str, port: u16) -> String {
    format!(
        r#"version: 1
release: {release}
networks:
  edge: {{}}
  backend: {{ internal: true }}
volumes:
  data: {{}}
services:
  web:
    image: {web_image}
    ports: ["127.0.0.1:{port}:8000"]
    networks: [edge, backend]
    depends_on: [cache]
    environment: {{ LOG_LEVEL: info }}
    health: {{ http: {{ port: 8000, path: /health, expect: 200 }}, interval: 200ms, deadline: 30s }}
  cache:
    image: reconciler-test/busybox:1
    command: ["sh", "-c", "mkdir -p /data; trap 'exit 0' TERM; httpd -f -p 6379 -h /data & wait"]
    volumes: ["data:/data"]
    networks: [backend]
    healthcheck: {{ test: ["CMD", "nc", "-w", "2", "127.0.0.1", "6379"], interval: 1s, timeout: 2s, retries: 20 }}
"#
    )
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

#[test]
fn converges_is_idempotent_shows_changes_and_repairs_drift() {
    ensure_images(&["busybox", "app"]);
    let release = TestRelease::new("converge");
    let port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", port),
    );
    let rev1 = repo.commit("v1");
    let r = Reconciler::new();
    let url = repo.url();

    // From nothing: diff lists everything (exit 1), apply converges, diff is then clean.
    let out = r.run(&["diff", "--repo", &url]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(shown.contains("+ service web"), "{shown}");
    assert!(shown.contains("+ network backend"), "{shown}");
    assert!(
        shown.contains("Plan: 5 to add, 0 to change, 0 to destroy."),
        "{shown}"
    );

    let out = r.run(&["apply", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(http_get(port, "/version").as_deref(), Some("v1"));
    let web = format!("{}-web", release.name);
    let cache = format!("{}-cache", release.name);
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.reconciler.revision\"}}",
            &web
        ]),
        rev1
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &cache]),
        "healthy"
    );

    // Dependency order: web was created only after cache passed its health gate.
    let cache_healthy = docker(&[
        "inspect",
        "-f",
        "{{(index .State.Health.Log 0).End}}",
        &cache,
    ]);
    let web_created = docker(&["inspect", "-f", "{{.Created}}", &web]);
    assert!(
        chrono_order(&cache_healthy, &web_created),
        "web created at {web_created}, before cache was first healthy at {cache_healthy}"
    );

    let out = r.run(&["diff", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    // Idempotence: a second apply makes no create/start/stop/remove on the engine.
    let since = common::docker::instant();
    let started = Instant::now();
    let out = r.run(&["apply", "--repo", &url]);
    let noop = started.elapsed();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let until = common::docker::instant();
    let events = mutating_events(&release.name, since, until);
    assert!(
        events.is_empty(),
        "a no-op apply changed the engine: {events:?}"
    );
    eprintln!("no-op apply took {noop:?}");

    // An image change is a one-service `~` with the field, exit 1; exit 0 after apply.
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v2", port),
    );
    repo.commit("v2");
    let out = r.run(&["diff", "--repo", &url, "--output", "json"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json plan");
    let changes = plan["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{plan:#}");
    assert_eq!(changes[0]["name"], "web");
    assert_eq!(changes[0]["action"], "change");
    assert_eq!(changes[0]["fields"][0]["path"], "image");
    assert_eq!(changes[0]["fields"][0]["new"], "reconciler-test/app:v2");
    let out = r.run(&["apply", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(http_get(port, "/version").as_deref(), Some("v2"));
    let out = r.run(&["diff", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    // The replaced container is gone: one container per service.
    let names = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.reconciler.release={}", release.name),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, [cache.as_str(), web.as_str()]);

    // Drift: a managed container removed by hand is shown and repaired.
    docker(&["rm", "-f", &web]);
    let out = r.run(&["diff", "--repo", &url]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("+ service web"),
        "{}",
        show(&out)
    );
    let out = r.run(&["apply", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(http_get(port, "/version").as_deref(), Some("v2"));
    // A stopped one too.
    docker(&["stop", "-t", "1", &cache]);
    let out = r.run(&["diff", "--repo", &url]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("container exited"),
        "{}",
        show(&out)
    );
    let out = r.run(&["apply", "--repo", &url]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &cache]),
        "true"
    );
}

/// RFC 3339 timestamps from the engine, compared as text after normalising the fraction:
/// `a` is not later than `b`.
fn chrono_order(a: &str, b: &str) -> bool {
    fn key(t: &str) -> String {
        // 2026-11-23T10:46:23.123456789Z and 2026-11-23T10:46:23.1Z must compare right.
        let (secs, frac) = t
            .trim_end_matches('Z')
            .split_once('.')
            .unwrap_or((t.trim_end_matches('Z'), ""));
        let frac: String = frac.chars().take_while(char::is_ascii_digit).collect();
        format!("{secs}.{frac:0<9}")
    }
    key(a) <= key(b)
}

#[test]
fn unowned_containers_are_left_alone() {
    ensure_images(&["busybox"]);
    let release = TestRelease::new("unowned");
    // Same release name in a label-free container, and a container of another "release" made
    // by hand with a look-alike name: neither is ours.
    let stranger = format!("{}-stranger", release.name);
    docker(&[
        "run",
        "-d",
        "--name",
        &stranger,
        "--label",
        "io.reconciler.test=1",
        "--label",
        &format!("io.reconciler.release={}", release.name),
        "reconciler-test/busybox:1",
        "sleep",
        "300",
    ]);
    release.remove_on_drop(&stranger);
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &format!("version: 1\nrelease: {}\nservices:\n  app:\n    image: reconciler-test/busybox:1\n    command: [sleep, '300']\n", release.name),
    );
    repo.commit("one service");
    let r = Reconciler::new();
    let out = r.run(&["apply", "--repo", &repo.url()]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = r.run(&["diff", "--repo", &repo.url()]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &stranger]),
        "true"
    );
}

#[test]
fn a_missing_image_fails_before_anything_changes() {
    let release = TestRelease::new("noimage");
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &format!("version: 1\nrelease: {}\nnetworks: {{ n: {{}} }}\nservices:\n  app:\n    image: 127.0.0.1:1/reconciler-test/missing:1\n    networks: [n]\n", release.name),
    );
    repo.commit("missing image");
    let r = Reconciler::new();
    let since = common::docker::instant();
    let out = r.run(&["apply", "--repo", &repo.url()]);
    let until = common::docker::instant();
    assert_ne!(code(&out), 0, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1/reconciler-test/missing:1"),
        "{err}"
    );
    assert!(err.contains("fix"), "{err}");
    assert!(mutating_events(&release.name, since, until).is_empty());
}

#[test]
fn a_dead_engine_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: deadengine\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let r = Reconciler::new();
    let out = r.run(&[
        "diff",
        "--repo",
        &repo.url(),
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/docker.sock"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
