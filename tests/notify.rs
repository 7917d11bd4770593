//! Notifications against a real HTTP receiver on 127.0.0.1: what `apply` sends for an applied
//! and a rolled-back deploy (real binary, real git repo, real engine), and the delivery
//! machinery on its own: retries after 500s, `Retry-After`, the dedupe window, and a receiver
//! that never answers.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::TestRelease;
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::show;
use receiver::{Receiver, Reply};
use reconciler::notify::{Deploy, EventKind, NotificationFormat, Notifier, NotifyOptions, Target};
use reconciler::secret::Secret;

/// Runs the binary; fails the test instead of hanging if it has not exited by `deadline`.
fn run_bounded(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reconciler runs");
    let until = Instant::now() + deadline;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "reconciler still running after {deadline:?}\n{}",
                show(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A webhook URL file as an operator makes it: mode 600 (the host check refuses more).
fn write_url_file(path: &std::path::Path, url: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{url}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn reconciler(state: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.args(args)
        .arg("--state-dir")
        .arg(state)
        .env("RECONCILER_LOG", "info")
        // The documented override; it wins over CI identity variables and $USER@host.
        .env("RECONCILER_ACTOR", "test-operator");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, Duration::from_secs(120))
}

/// One `api` service; `health_path` decides whether its gate passes. Two targets: `team`
/// (Slack, URL from the env, finished events only) and `audit` (JSON, URL from a file, all).
fn spec(release: &str, image: &str, health_path: &str, url_file: &str) -> String {
    format!(
        r#"version: 1
release: {release}
environment: staging
services:
  api:
    image: {image}
    labels: {{ io.reconciler.test: "1" }}
    health: {{ http: {{ port: 8000, path: {health_path}, expect: 200 }}, interval: 200ms, deadline: 3s }}
    stop_grace_period: 1s
notifications:
  - name: team
    format: slack
    url_env: NOTIFY_TEST_SLACK_URL
    events: [succeeded, failed, rolled_back]
  - name: audit
    format: json
    url_file: {url_file}
"#
    )
}

#[test]
fn apply_sends_the_events_of_an_applied_and_a_rolled_back_deploy() {
    ensure_images(&["app"]);
    let release = TestRelease::new("notify-events");
    let hooks = Receiver::start();
    let state = tempfile::tempdir().unwrap();
    let url_file = state.path().join("audit-url");
    write_url_file(&url_file, &hooks.url("/audit/T0K3N"));
    let url_file = url_file.to_str().unwrap();
    let slack_url = hooks.url("/slack/services/T0/B0/S3CR3T");
    let env = [("NOTIFY_TEST_SLACK_URL", slack_url.as_str())];
    let repo = TestRepo::new();

    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", "/health", url_file),
    );
    let rev1 = repo.commit("api: first release");
    let out = reconciler(state.path(), &["apply", "--repo", &repo.url()], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // apply flushes before it exits: everything is there already.
    let audit = hooks.received("/audit/T0K3N");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    let (started, succeeded) = (audit[0].json(), audit[1].json());
    assert_eq!(audit[0].content_type, "application/json");
    assert_eq!(started["event"], "started");
    assert_eq!(succeeded["event"], "succeeded");
    for e in [&started, &succeeded] {
        assert_eq!(e["release"], release.name.as_str(), "{e}");
        assert_eq!(e["environment"], "staging", "{e}");
        assert_eq!(e["revision"], rev1.as_str(), "{e}");
        assert!(e.get("previous_revision").is_none(), "first deploy: {e}");
        assert_eq!(e["commit"]["subject"], "api: first release", "{e}");
        assert_eq!(
            e["commit"]["author"], "Test Author <test@example.invalid>",
            "{e}"
        );
        assert_eq!(e["actor"], "test-operator", "{e}");
        assert_eq!(e["trigger"], "cli", "{e}");
        assert_eq!(e["services"][0]["name"], "api", "{e}");
        assert_eq!(e["services"][0]["action"], "add", "{e}");
        assert!(e.get("error").is_none(), "{e}");
    }
    assert!(started.get("duration_ms").is_none(), "{started}");
    assert!(succeeded["duration_ms"].as_u64().is_some(), "{succeeded}");

    let slack = hooks.received("/slack/services/T0/B0/S3CR3T");
    assert_eq!(slack.len(), 1, "only the finished event: {slack:#?}");
    let body = slack[0].json();
    let text = body["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!(
            "Deployed {} (staging) revision {}",
            release.name,
            &rev1[..12]
        )),
        "{body}"
    );
    assert!(
        body["blocks"].as_array().is_some_and(|b| b.len() >= 3),
        "{body}"
    );
    assert!(body.to_string().contains("api: first release"), "{body}");

    // v2 never passes its gate: rolled back to rev1.
    repo.write(
        "release.yaml",
        &spec(
            &release.name,
            "reconciler-test/app:v2",
            "/no-such-page",
            url_file,
        ),
    );
    let rev2 = repo.commit("api: v2 with a broken health path");
    let out = reconciler(state.path(), &["apply", "--repo", &repo.url()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    let audit = hooks.received("/audit/T0K3N");
    assert_eq!(audit.len(), 4, "{audit:#?}");
    let (started, rolled_back) = (audit[2].json(), audit[3].json());
    assert_eq!(started["event"], "started");
    assert_eq!(rolled_back["event"], "rolled_back");
    for e in [&started, &rolled_back] {
        assert_eq!(e["revision"], rev2.as_str(), "{e}");
        assert_eq!(e["previous_revision"], rev1.as_str(), "{e}");
        assert_eq!(e["services"][0]["action"], "change", "{e}");
    }
    let step = rolled_back["error"]["step"].as_str().unwrap_or_default();
    assert!(step.contains("api"), "{rolled_back}");
    let message = rolled_back["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rolled back"), "{rolled_back}");

    let slack = hooks.received("/slack/services/T0/B0/S3CR3T");
    assert_eq!(slack.len(), 2, "{slack:#?}");
    let text = slack[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("was rolled back to") && text.contains(&rev1[..12]),
        "{text}"
    );
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_up_apply_or_the_other_target() {
    ensure_images(&["app"]);
    let release = TestRelease::new("notify-dead");
    let hooks = Receiver::start();
    hooks.always("/slack/dead", Reply::Hang);
    let state = tempfile::tempdir().unwrap();
    let url_file = state.path().join("audit-url");
    write_url_file(&url_file, &hooks.url("/audit"));
    let slack_url = hooks.url("/slack/dead");
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(
            &release.name,
            "reconciler-test/app:v1",
            "/health",
            url_file.to_str().unwrap(),
        ),
    );
    repo.commit("v1");
    let began = Instant::now();
    let out = reconciler(
        state.path(),
        &["apply", "--repo", &repo.url()],
        &[("NOTIFY_TEST_SLACK_URL", slack_url.as_str())],
    );
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Applied release"),
        "{}",
        show(&out)
    );
    let audit: Vec<String> = hooks
        .received("/audit")
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(audit, ["started", "succeeded"], "{}", show(&out));
    assert!(
        !hooks.received("/slack/dead").is_empty(),
        "the dead target was tried"
    );
    // The flush gave up on the dead target and said so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("undelivered at the flush deadline"),
        "{stderr}"
    );
    println!("apply with a dead receiver took {took:?}");
}

fn target(name: &str, url: String) -> Target {
    Target {
        name: name.into(),
        format: NotificationFormat::Json,
        url: Secret::new(url),
        events: None,
    }
}

/// Short backoff so the tests are quick; `Retry-After` is still honoured in full.
fn fast() -> NotifyOptions {
    NotifyOptions {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..NotifyOptions::default()
    }
}

fn deploy(revision: &str) -> Deploy {
    Deploy::new("shop", Some("production"), "tester", "cli").with_commit(revision, "s", "a")
}

#[tokio::test]
async fn retries_after_500s_then_delivers_the_same_body() {
    let hooks = Receiver::start();
    hooks.script(
        "/flaky",
        &[Reply::Status(500), Reply::Status(502), Reply::Status(200)],
    );
    let notifier = Notifier::new(fast());
    let event = deploy("rev1").event(EventKind::Succeeded, Some(Duration::from_secs(3)), None);
    assert_eq!(
        notifier.send(&[target("flaky", hooks.url("/flaky"))], &event),
        1
    );
    let report = notifier.flush(Duration::from_secs(10)).await;
    let got = hooks.received("/flaky");
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert_eq!(got[0].json()["event"], "succeeded");
    assert_eq!(
        (report.delivered, report.gave_up, report.abandoned),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_attempts_are_bounded() {
    let hooks = Receiver::start();
    hooks.always("/gone", Reply::Status(404));
    hooks.always("/down", Reply::Status(503));
    let notifier = Notifier::new(NotifyOptions {
        max_attempts: 3,
        ..fast()
    });
    let event = deploy("rev1").event(EventKind::Failed, None, None);
    let targets = [
        target("gone", hooks.url("/gone")),
        target("down", hooks.url("/down")),
    ];
    assert_eq!(notifier.send(&targets, &event), 2);
    let report = notifier.flush(Duration::from_secs(10)).await;
    assert_eq!(hooks.received("/gone").len(), 1);
    assert_eq!(hooks.received("/down").len(), 3);
    assert_eq!((report.delivered, report.gave_up), (0, 2));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let hooks = Receiver::start();
    hooks.script("/busy", &[Reply::RetryAfter(503, 2), Reply::Status(200)]);
    let notifier = Notifier::new(fast());
    let event = deploy("rev1").event(EventKind::Started, None, None);
    notifier.send(&[target("busy", hooks.url("/busy"))], &event);
    let report = notifier.flush(Duration::from_secs(10)).await;
    let got = hooks.received("/busy");
    assert_eq!(got.len(), 2, "{got:#?}");
    let gap = got[1].at.duration_since(got[0].at);
    // The backoff alone would retry within 200 ms.
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!(report.delivered, 1);
}

#[tokio::test]
async fn identical_events_are_sent_once_within_the_window() {
    let hooks = Receiver::start();
    let notifier = Notifier::new(fast());
    let targets = [target("t", hooks.url("/t"))];
    let d = deploy("rev1");
    // A spec that stays broken fails every poll with the same error.
    for secs in [1, 2, 3] {
        let e = d.event(EventKind::Failed, Some(Duration::from_secs(secs)), None);
        notifier.send(&targets, &e);
    }
    // Something new is sent: another revision, another kind.
    notifier.send(
        &targets,
        &deploy("rev2").event(EventKind::Failed, None, None),
    );
    notifier.send(&targets, &d.event(EventKind::Succeeded, None, None));
    let report = notifier.flush(Duration::from_secs(10)).await;
    let got: Vec<(String, String)> = hooks
        .received("/t")
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["event"].as_str().unwrap_or_default().to_string(),
                j["revision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want = [
        ("failed", "rev1"),
        ("failed", "rev2"),
        ("succeeded", "rev1"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(got, want);
    assert_eq!(report.deduplicated, 2);

    // With no window, the same event goes out again.
    let hooks2 = Receiver::start();
    let notifier = Notifier::new(NotifyOptions {
        dedupe_window: Duration::ZERO,
        ..fast()
    });
    let targets = [target("t", hooks2.url("/t"))];
    for _ in 0..2 {
        notifier.send(&targets, &d.event(EventKind::Failed, None, None));
    }
    notifier.flush(Duration::from_secs(10)).await;
    assert_eq!(hooks2.received("/t").len(), 2);
}

#[tokio::test]
async fn flush_gives_up_on_a_receiver_that_never_answers_at_its_deadline() {
    let hooks = Receiver::start();
    hooks.always("/dead", Reply::Hang);
    let notifier = Notifier::new(fast());
    let targets = [
        target("dead", hooks.url("/dead")),
        target("live", hooks.url("/live")),
    ];
    let sent = notifier.send(
        &targets,
        &deploy("rev1").event(EventKind::Started, None, None),
    );
    assert_eq!(sent, 2);
    let report = notifier.flush(Duration::from_secs(2)).await;
    assert_eq!(hooks.received("/live").len(), 1);
    assert_eq!(report.delivered, 1);
    assert_eq!(report.abandoned, 1);
}

/// Lines of a running child's stderr, collected by a thread.
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Lines {
    fn collect(stream: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Lines(lines)
    }

    fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .map(|l| l.iter().filter(|x| x.contains(needle)).count())
            .unwrap_or(0)
    }

    fn text(&self) -> String {
        self.0.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

fn events(hooks: &Receiver, path: &str) -> Vec<serde_json::Value> {
    hooks.received(path).iter().map(|r| r.json()).collect()
}

/// Polls the receiver until an event of `kind` arrived, or fails after `timeout`.
fn wait_event(
    hooks: &Receiver,
    path: &str,
    kind: &str,
    timeout: Duration,
    log: &Lines,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = events(hooks, path).into_iter().find(|e| e["event"] == kind) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event within {timeout:?}; got {:#?}\n--- daemon log\n{}",
            events(hooks, path),
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_reports_drift_and_a_revision_that_does_not_load_once() {
    ensure_images(&["app"]);
    let release = TestRelease::new("notify-run");
    let hooks = Receiver::start();
    let state = tempfile::tempdir().unwrap();
    let url_file = state.path().join("audit-url");
    write_url_file(&url_file, &hooks.url("/audit"));
    let url_file = url_file.to_str().unwrap();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", "/health", url_file),
    );
    let rev1 = repo.commit("v1");
    let slack_url = hooks.url("/slack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["run", "--repo", &repo.url(), "--interval", "300ms"])
        .args(["--listen", "off"])
        .arg("--state-dir")
        .arg(state.path())
        .env("RECONCILER_LOG", "info")
        .env("NOTIFY_TEST_SLACK_URL", &slack_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reconciler run starts");
    let log = Lines::collect(child.stderr.take().expect("stderr"));
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    };

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Duration::from_secs(60);
        let ok = wait_event(&hooks, "/audit", "succeeded", t, &log);
        assert_eq!(ok["trigger"], "poll");
        // The same actor as the daemon's history entries.
        assert_eq!(ok["actor"], "daemon");

        // Someone stops the container: same revision, plan not empty.
        common::docker::docker(&["stop", "-t", "1", &release.obj("api")]).expect("docker stop");
        let drift = wait_event(&hooks, "/audit", "drift_detected", t, &log);
        assert_eq!(drift["revision"], rev1.as_str(), "{drift}");
        assert_eq!(drift["previous_revision"], rev1.as_str(), "{drift}");
        assert_eq!(drift["services"][0]["name"], "api", "{drift}");
        let repaired = events(&hooks, "/audit")
            .iter()
            .filter(|e| e["event"] == "succeeded")
            .count();
        assert!(repaired >= 1, "{:#?}", events(&hooks, "/audit"));

        // A revision whose spec does not load: the last release's targets hear it once,
        // however many polls see it.
        repo.write("release.yaml", "version: 1\nrelease: x\nservices: {}\n");
        let rev2 = repo.commit("broken");
        let failed = wait_event(&hooks, "/audit", "failed", t, &log);
        assert_eq!(failed["revision"], rev2.as_str(), "{failed}");
        assert_eq!(failed["commit"]["subject"], "broken", "{failed}");
        assert_eq!(failed["error"]["step"], "load", "{failed}");
        assert_eq!(failed["release"], release.name.as_str(), "{failed}");
        let deadline = Instant::now() + t;
        while log.count("the release spec is not valid") < 4 {
            assert!(Instant::now() < deadline, "{}", log.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }));
    stop(&mut child);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let failed: Vec<_> = events(&hooks, "/audit")
        .into_iter()
        .filter(|e| e["event"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}\n{}", log.text());
    let slack_failed: Vec<String> = hooks
        .received("/slack")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or_default().to_string())
        .filter(|t| t.contains("failed at load"))
        .collect();
    assert_eq!(slack_failed.len(), 1, "{slack_failed:#?}");
    assert!(log.count("stopped") >= 1, "{}", log.text());
}

#[test]
fn a_missing_or_malformed_webhook_url_is_a_located_spec_error_without_its_value() {
    let state = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: hooks\nservices:\n  a: { image: 'x:1' }\nnotifications:\n  - name: team\n    format: slack\n    url_env: NOTIFY_TEST_UNSET_OR_BAD\n",
    );
    repo.commit("hooks");
    let validate = |value: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        cmd.args(["validate", "--repo", &repo.url()])
            .arg("--state-dir")
            .arg(state.path())
            .env_remove("NOTIFY_TEST_UNSET_OR_BAD");
        if let Some(v) = value {
            cmd.env("NOTIFY_TEST_UNSET_OR_BAD", v);
        }
        run_bounded(&mut cmd, Duration::from_secs(60))
    };

    let out = validate(None);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("release.yaml:8:5: notifications.0.url_env: environment variable NOTIFY_TEST_UNSET_OR_BAD is not set on this host"),
        "{stderr}"
    );

    let out = validate(Some("hooks.example/T0/planted-not-a-url"));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let all = show(&out);
    assert!(
        all.contains("does not hold an http:// or https:// URL"),
        "{all}"
    );
    assert!(!all.contains("planted-not-a-url"), "{all}");

    let out = validate(Some("https://hooks.example/T0/planted-good"));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!show(&out).contains("planted-good"), "{}", show(&out));
}
