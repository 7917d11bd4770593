//! `reconciler run --listen`: the endpoint's status codes, readiness, a signed webhook that
//! applies a new commit, bursts that coalesce, and the metrics after applied, no-op, failed and
//! rolled-back cycles. Real daemon binary, real engine, real git repos; everything on
//! 127.0.0.1.

mod common;

use std::time::Duration;

use common::daemon::{
    get, http, json_lines, message, metric, openssl_signature, wait_status, Daemon,
};
use common::docker::TestRelease;
use common::free_port;
use common::gitrepo::TestRepo;
use common::images::ensure_images;

const SECRET: &str = "planted-webhook-secret-5d1e";

fn spec(release: &str, image: &str, port: u16, extra_env: &str) -> String {
    format!(
        "version: 1\nrelease: {release}\nservices:\n  web:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8000\"]\n    environment: {{ MODE: run{extra_env} }}\n    stop_grace_period: 1s\n    health: {{ http: {{ port: 8000, path: /health }}, interval: 200ms, deadline: 3s }}\n"
    )
}

fn version(port: u16) -> Option<String> {
    get(port, "/version").map(|r| r.body.trim().to_string())
}

fn wait_version(port: u16, want: &str, deadline: Duration) {
    let start = std::time::Instant::now();
    while version(port).as_deref() != Some(want) {
        assert!(
            start.elapsed() < deadline,
            "port {port} never served {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon on `repo` with the endpoint on `listen` and the webhook secret in a file.
fn daemon_with_secret(repo: &TestRepo, listen: u16, extra: &[&str]) -> Daemon {
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let secret_file = secret_dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let listen = format!("127.0.0.1:{listen}");
    let secret_path = secret_file.display().to_string();
    let url = repo.url();
    let mut args = vec![
        "--repo",
        &url,
        "--ref",
        "main",
        "--interval",
        "1h",
        "--listen",
        &listen,
        "--webhook-secret-file",
        &secret_path,
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args);
    // The secret is read at start; the file can go.
    daemon.wait_log("the endpoint", Duration::from_secs(20), |l| {
        l.contains("HTTP endpoint listening")
    });
    drop(secret_dir);
    daemon
}

/// Sum of every `reconciler_reconcile_total` series: cycles finished so far (0 while the
/// endpoint is not up yet).
fn cycles(port: u16) -> f64 {
    let Some(reply) = get(port, "/metrics") else {
        return 0.0;
    };
    let text = reply.body;
    ["applied", "noop", "failed", "rolled_back"]
        .iter()
        .filter_map(|r| {
            metric(
                &text,
                &format!("reconciler_reconcile_total{{result=\"{r}\"}}"),
            )
        })
        .sum()
}

fn wait_cycles(port: u16, at_least: f64, deadline: Duration) {
    let start = std::time::Instant::now();
    while cycles(port) < at_least {
        assert!(
            start.elapsed() < deadline,
            "fewer than {at_least} cycles after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signed_push(port: u16, branch: &str) -> common::daemon::Reply {
    let body = format!(r#"{{"ref":"refs/heads/{branch}","after":"0000"}}"#);
    let sig = openssl_signature(SECRET, body.as_bytes());
    http(
        port,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .expect("webhook answers")
}

#[test]
fn endpoint_status_codes_and_readiness() {
    ensure_images(&["app"]);
    let release = TestRelease::new("http-codes");
    let app_port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", app_port, ""),
    );
    repo.commit("v1");
    let port = free_port();
    let daemon = daemon_with_secret(&repo, port, &[]);

    assert_eq!(get(port, "/healthz").expect("healthz").status, 200);
    // Ready once the first cycle has reached git and the engine.
    wait_status(port, "/readyz", 200, Duration::from_secs(60));
    wait_version(app_port, "v1", Duration::from_secs(30));
    let after_first = cycles(port);
    assert_eq!(after_first, 1.0);

    // Unsigned and wrongly signed deliveries: 401, nothing triggered.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push")],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let wrong = openssl_signature("not-the-secret", body);
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    // Right signature over a different body: 401 as well.
    let sig = openssl_signature(SECRET, body);
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        br#"{"ref":"refs/heads/evil"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);

    // Over 1 MiB: 413.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push")],
        &big,
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);

    // GitHub's ping: 200.
    let ping = br#"{"zen":"Keep it logically awesome."}"#;
    let sig = openssl_signature(SECRET, ping);
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)],
        ping,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // A push to another branch: 202, ignored.
    let r = signed_push(port, "feature");
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains(r#""triggered":false"#), "{}", r.body);

    // Unknown path, wrong method.
    assert_eq!(get(port, "/nope").unwrap().status, 404);
    assert_eq!(get(port, "/webhook").unwrap().status, 405);

    // None of these started a cycle: a signed push to main, sent last, is the only one.
    let r = signed_push(port, "main");
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains(r#""triggered":true"#), "{}", r.body);
    wait_cycles(port, 2.0, Duration::from_secs(30));
    let lines = json_lines(&daemon.log());
    let started: Vec<_> = lines
        .iter()
        .filter(|l| message(l) == "cycle started")
        .map(|l| l["span"]["trigger"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(started, ["poll", "webhook"], "{}", daemon.log());
    assert!(
        !daemon.log().contains(SECRET),
        "the webhook secret shows in the log"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn readyz_names_an_unreachable_engine_and_the_webhook_is_off_without_a_secret() {
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: deadready\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let daemon = Daemon::start(&[
        "--repo",
        &url,
        "--listen",
        &listen,
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ]);
    assert_eq!(
        wait_status(port, "/healthz", 200, Duration::from_secs(20)).body,
        "ok\n"
    );
    let r = wait_status(port, "/readyz", 503, Duration::from_secs(20));
    // Before the engine answers: either no cycle yet or the engine error; wait for the latter.
    daemon.wait_log("the engine error", Duration::from_secs(20), |l| {
        l.contains("Docker engine unreachable")
    });
    let r = if r.body.contains("engine") {
        r
    } else {
        wait_status(port, "/readyz", 503, Duration::from_secs(5))
    };
    assert!(
        r.body.contains("Docker engine unreachable") && r.body.contains("/nonexistent/docker.sock"),
        "{}",
        r.body
    );
    let r = http(port, "POST", "/webhook", &[], b"{}").unwrap();
    assert_eq!(r.status, 404);
    assert!(
        daemon
            .log()
            .contains("webhook endpoint off: no --webhook-secret-file or --webhook-secret-env"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(Duration::from_secs(10)), 0);
}

#[test]
fn listen_on_a_taken_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: taken\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let mut daemon = Daemon::start(&["--repo", &url, "--listen", &listen]);
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(code) = daemon.exited() {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 2, "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        daemon.log()
    );
}

#[test]
fn an_apply_logs_at_info_and_a_no_op_cycle_only_at_debug() {
    ensure_images(&["app"]);
    let release = TestRelease::new("log-levels");
    let app_port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", app_port, ""),
    );
    let revision = repo.commit("v1");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let daemon = Daemon::start_with_env(
        &[
            "--repo",
            &url,
            "--interval",
            "1h",
            "--listen",
            &listen,
            "--webhook-secret-env",
            "WEBHOOK_SECRET",
            "--log-format",
            "json",
        ],
        &[("WEBHOOK_SECRET", SECRET), ("RECONCILER_LOG", "info")],
    );
    wait_cycles(port, 1.0, Duration::from_secs(60));
    let first = daemon.log();
    let in_cycle = |l: &serde_json::Value| {
        l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "reconcile"))
    };
    // The apply: info lines inside the cycle's span, which names trigger, reason and revision;
    // each step in a span of its own.
    let lines = json_lines(&first);
    let applied = lines
        .iter()
        .find(|l| message(l) == "applied")
        .unwrap_or_else(|| panic!("no `applied` line:\n{first}"));
    assert_eq!(applied["level"], "INFO");
    assert_eq!(applied["span"]["trigger"], "poll");
    assert_eq!(applied["span"]["reason"], "startup");
    assert_eq!(applied["span"]["revision"], revision.as_str());
    assert!(
        lines
            .iter()
            .any(|l| message(l) == "step done" && l["span"]["name"] == "step" && in_cycle(l)),
        "{first}"
    );

    // A no-op cycle: nothing inside its span at info.
    let sig = openssl_signature(SECRET, b"");
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-Reconciler-Signature-256", &sig)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202);
    wait_cycles(port, 2.0, Duration::from_secs(30));
    let text = get(port, "/metrics").unwrap().body;
    assert_eq!(
        metric(&text, r#"reconciler_reconcile_total{result="noop"}"#),
        Some(1.0)
    );
    let log = daemon.log();
    let later: Vec<_> = json_lines(&log[first.len()..])
        .into_iter()
        .filter(|l| in_cycle(l))
        .collect();
    assert!(later.is_empty(), "a no-op cycle logged at info: {later:?}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn a_request_whose_body_never_arrives_times_out_with_408() {
    use std::io::{Read, Write};
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: slowbody\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let daemon = Daemon::start_with_env(
        &[
            "--repo",
            &url,
            "--listen",
            &listen,
            "--webhook-secret-env",
            "WEBHOOK_SECRET",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
        ],
        &[("WEBHOOK_SECRET", SECRET)],
    );
    wait_status(port, "/healthz", 200, Duration::from_secs(20));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // Announces 100 bytes, sends 10, then nothing.
    write!(
        s,
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    .expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(daemon.terminate(Duration::from_secs(10)), 0);
}

#[test]
fn bad_daemon_flags_exit_2_with_the_fix_before_anything_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: flags\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("x");
    let empty = dir.path().join("empty.secret");
    std::fs::write(&empty, "\n").expect("write");
    let not_a_repo = dir.path().display().to_string();
    let url = repo.url();
    let empty = empty.display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--repo", &url, "--listen", "nonsense"],
            "is not ADDR:PORT",
        ),
        (
            &["--repo", "https://git.example/ops.git", "--watch"],
            "--watch needs a repository on this machine",
        ),
        (
            &["--repo", &not_a_repo, "--watch"],
            "is not a git repository",
        ),
        (
            &["--repo", &url, "--webhook-secret-file", &empty],
            "the webhook secret is empty",
        ),
        (
            &[
                "--repo",
                &url,
                "--webhook-secret-env",
                "RECONCILER_TEST_UNSET_VAR",
            ],
            "RECONCILER_TEST_UNSET_VAR: the variable is not set",
        ),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .arg("run")
            .args(args)
            .args(
                ["--listen", "off"]
                    .iter()
                    .filter(|_| !args.contains(&"--listen")),
            )
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env_remove("RECONCILER_TEST_UNSET_VAR")
            .output()
            .expect("reconciler runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            common::show(&out)
        );
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            err.contains("fix") || err.contains("e.g."),
            "{args:?} names no fix: {err}"
        );
    }
}
