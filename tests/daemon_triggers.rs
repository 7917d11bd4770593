//! What starts a cycle in `reconciler run`: a signed webhook (sent by the curl + openssl
//! example of docs/webhooks.md) applies a new commit; a burst of webhooks coalesces into one or
//! two cycles that never overlap; `--watch` applies a new commit, and an idle watching daemon
//! (whose own fetches read the watched repo) runs no extra cycles.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{get, http, json_lines, message, openssl_signature, Daemon};
use common::docker::TestRelease;
use common::free_port;
use common::gitrepo::TestRepo;
use common::images::ensure_images;

const SECRET: &str = "planted-webhook-secret-77aa";

fn spec(release: &str, image: &str, port: u16) -> String {
    format!(
        "version: 1\nrelease: {release}\nservices:\n  web:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8000\"]\n    environment: {{ MODE: run }}\n    stop_grace_period: 1s\n    health: {{ http: {{ port: 8000, path: /health }}, interval: 200ms, deadline: 3s }}\n"
    )
}

fn version(port: u16) -> Option<String> {
    get(port, "/version").map(|r| r.body.trim().to_string())
}

fn wait_version(port: u16, want: &str, deadline: Duration) {
    let start = Instant::now();
    while version(port).as_deref() != Some(want) {
        assert!(
            start.elapsed() < deadline,
            "port {port} never served {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(trigger, coalesced)` of each cycle in the JSON log, and whether cycles ever overlapped
/// (a start before the previous cycle's end).
fn cycles(log: &str) -> (Vec<(String, u64)>, bool) {
    let mut out = Vec::new();
    let mut open = false;
    let mut overlapped = false;
    for line in json_lines(log) {
        match message(&line) {
            "cycle started" => {
                overlapped |= open;
                open = true;
                out.push((
                    line["span"]["trigger"].as_str().unwrap_or("").to_string(),
                    line["span"]["coalesced"].as_u64().unwrap_or(0),
                ));
            }
            "cycle finished" => {
                overlapped |= !open;
                open = false;
            }
            _ => {}
        }
    }
    (out, overlapped)
}

/// The fenced `sh` block after the "tested" marker in docs/webhooks.md.
fn docs_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhooks.md"))
        .expect("docs/webhooks.md");
    let after = doc
        .split("<!-- tested: tests/daemon_triggers.rs")
        .nth(1)
        .expect("the tested marker in docs/webhooks.md");
    let block = after.split("```sh\n").nth(1).expect("a sh block");
    block.split("```").next().expect("closed block").to_string()
}

#[test]
fn signed_webhook_applies_a_new_commit_and_a_burst_coalesces() {
    ensure_images(&["app"]);
    let release = TestRelease::new("webhook-apply");
    let app_port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", app_port),
    );
    repo.commit("v1");
    let port = free_port();
    let secret_file = repo.path.parent().expect("parent").join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret");
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let secret_path = secret_file.display().to_string();
    let daemon = Daemon::start(&[
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
    ]);
    wait_version(app_port, "v1", Duration::from_secs(60));

    // A new commit waits for the hourly poll, unless the webhook says so.
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v2", app_port),
    );
    repo.commit("v2");
    let out = Command::new("sh")
        .arg("-c")
        .arg(docs_example())
        .env("SECRET_FILE", &secret_file)
        .env("URL", format!("http://127.0.0.1:{port}/webhook"))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{}", common::show(&out));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains(r#""triggered":true"#), "{reply}");
    wait_version(app_port, "v2", Duration::from_secs(60));
    daemon.wait_log("the webhook's apply", Duration::from_secs(30), |l| {
        json_lines(l)
            .iter()
            .any(|l| message(l) == "applied" && l["span"]["trigger"] == "webhook")
    });

    // A burst: 20 signed pushes from 4 threads at once.
    let before = cycles(&daemon.log()).0.len();
    let burst = 20;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let body = br#"{"ref":"refs/heads/main"}"#;
                let sig = openssl_signature(SECRET, body);
                (0..burst / 4)
                    .map(|_| {
                        http(
                            port,
                            "POST",
                            "/webhook",
                            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
                            body,
                        )
                        .map(|r| r.status)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for status in t.join().expect("thread") {
            assert_eq!(status, Some(202));
        }
    }
    // Every accepted push is accounted for once its cycle started: the cycle itself, plus the
    // requests coalesced into it.
    let start = Instant::now();
    loop {
        let (all, _) = cycles(&daemon.log());
        let served: u64 = all[before..].iter().map(|(_, c)| 1 + c).sum();
        if served >= burst {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {served} of {burst} pushes reached a cycle:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.wait_log("the last cycle to finish", Duration::from_secs(30), |l| {
        let lines = json_lines(l);
        let started = lines
            .iter()
            .filter(|l| message(l) == "cycle started")
            .count();
        let finished = lines
            .iter()
            .filter(|l| message(l) == "cycle finished")
            .count();
        started == finished
    });
    let (all, overlapped) = cycles(&daemon.log());
    let after: Vec<_> = all[before..].to_vec();
    assert!(
        (1..=2).contains(&after.len()),
        "{burst} webhooks gave {} cycles: {after:?}",
        after.len()
    );
    assert!(after.iter().all(|(t, _)| t == "webhook"), "{after:?}");
    assert_eq!(
        after.iter().map(|(_, c)| 1 + c).sum::<u64>(),
        burst,
        "{after:?}"
    );
    assert!(!overlapped, "two cycles ran at once:\n{}", daemon.log());
    assert!(
        !daemon.log().contains(SECRET),
        "the secret shows in the log"
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn watch_applies_a_new_commit_and_an_idle_daemon_stays_idle() {
    ensure_images(&["app"]);
    let release = TestRelease::new("watch");
    let app_port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", app_port),
    );
    repo.commit("v1");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let daemon = Daemon::start_with_env(
        &[
            "--repo",
            &url,
            "--interval",
            "1h",
            "--watch",
            "--listen",
            &listen,
            "--webhook-secret-env",
            "WEBHOOK_SECRET",
            "--log-format",
            "json",
        ],
        &[("WEBHOOK_SECRET", SECRET)],
    );
    wait_version(app_port, "v1", Duration::from_secs(60));
    daemon.wait_log("the watch", Duration::from_secs(10), |l| {
        l.contains("watching the repository's refs")
    });

    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v2", app_port),
    );
    repo.commit("v2");
    wait_version(app_port, "v2", Duration::from_secs(60));
    daemon.wait_log("the watch's apply", Duration::from_secs(30), |l| {
        json_lines(l)
            .iter()
            .any(|l| message(l) == "applied" && l["span"]["trigger"] == "watch")
    });

    // Idle: a fetch (forced by a webhook) reads the watched repo's refs and packed-refs; that
    // must not look like a commit. Reads by hand too.
    daemon.wait_log("the apply cycle to finish", Duration::from_secs(30), |l| {
        json_lines(l)
            .iter()
            .any(|l| message(l) == "cycle finished" && l["span"]["trigger"] == "watch")
    });
    let body = b"";
    let sig = openssl_signature(SECRET, body);
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-Reconciler-Signature-256", &sig)],
        body,
    )
    .expect("webhook answers");
    assert_eq!(r.status, 202, "{}", r.body);
    for args in [
        &["log", "--oneline"][..],
        &["show-ref"][..],
        &["status"][..],
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo.path)
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success());
    }
    daemon.wait_log("the webhook cycle", Duration::from_secs(30), |l| {
        json_lines(l)
            .iter()
            .any(|l| message(l) == "cycle finished" && l["span"]["trigger"] == "webhook")
    });
    let settled = cycles(&daemon.log()).0.len();
    // The window in which a feedback loop would show: several debounce periods.
    std::thread::sleep(Duration::from_secs(3));
    let (all, overlapped) = cycles(&daemon.log());
    assert_eq!(
        all.len(),
        settled,
        "an idle watching daemon ran more cycles: {:?}\n{}",
        &all[settled..],
        daemon.log()
    );
    // startup + the commit (a second watch cycle if git's ref writes straddled the debounce)
    // + the webhook.
    let watch_cycles = all.iter().filter(|(t, _)| t == "watch").count();
    assert!((1..=2).contains(&watch_cycles), "{all:?}");
    assert!(!overlapped);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}
