//! `reconciler run`: the loop applies new commits, does not retry a failed revision until a new
//! commit arrives, survives a dead engine, and stops cleanly on SIGTERM.

mod common;

use common::free_port;

use std::time::{Duration, Instant};

use common::daemon::Daemon;

use common::docker::{instant, mutating_events, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;

fn spec(release: &str, image: &str, port: u16, extra_env: &str) -> String {
    format!(
        "version: 1\nrelease: {release}\nservices:\n  web:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8000\"]\n    environment: {{ MODE: run{extra_env} }}\n    stop_grace_period: 1s\n    health: {{ http: {{ port: 8000, path: /health }}, interval: 200ms, deadline: 3s }}\n"
    )
}

fn version(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /version HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

fn wait_version(port: u16, want: &str, deadline: Duration) {
    let start = Instant::now();
    loop {
        if version(port).as_deref() == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "port {port} never served {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_applies_new_commits_skips_a_failed_revision_and_stops_on_sigterm() {
    ensure_images(&["app"]);
    let release = TestRelease::new("runloop");
    let port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", port, ""),
    );
    repo.commit("v1");
    let daemon = Daemon::start(&["--repo", &repo.url(), "--interval", "500ms"]);
    wait_version(port, "v1", Duration::from_secs(60));

    // A new commit is picked up by the next poll.
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v2", port, ""),
    );
    repo.commit("v2");
    wait_version(port, "v2", Duration::from_secs(60));

    // A revision whose gate fails is rolled back once, then left alone while later polls see it.
    let since = instant();
    repo.write(
        "release.yaml",
        &spec(
            &release.name,
            "reconciler-test/app:v3",
            port,
            ", APP_FAIL_HEALTH: \"1\"",
        ),
    );
    let bad = repo.commit("v3 broken");
    daemon.wait_log("the failed release", Duration::from_secs(60), |l| {
        l.contains("rolled back")
    });
    daemon.wait_log("two skipped polls", Duration::from_secs(30), |l| {
        l.matches("revision failed before").count() >= 2
    });
    let until = instant();
    let creates = mutating_events(&release.name, since, until)
        .into_iter()
        .filter(|e| e.starts_with("container create"))
        .count();
    assert_eq!(
        creates,
        1,
        "the failed revision {bad} was tried more than once:\n{}",
        daemon.log()
    );
    assert_eq!(
        version(port).as_deref(),
        Some("v2"),
        "v2 keeps serving after the failed release"
    );

    // A new commit is applied again.
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v3", port, ""),
    );
    repo.commit("v3 fixed");
    wait_version(port, "v3", Duration::from_secs(60));

    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn run_keeps_retrying_a_dead_engine_and_stops_on_sigterm() {
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: deadrun\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let daemon = Daemon::start(&[
        "--repo",
        &repo.url(),
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ]);
    daemon.wait_log("the engine error", Duration::from_secs(20), |l| {
        l.contains("Docker engine unreachable") && l.contains("/nonexistent/docker.sock")
    });
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(daemon.terminate(Duration::from_secs(10)), 0);
}
