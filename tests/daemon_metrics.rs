//! `/metrics` of `reconciler run` after an applied, a no-op, a rolled-back (gate fails) and a
//! failed (bad spec) cycle; the same series read back through a real Prometheus that scrapes
//! the daemon; and `promtool check metrics` on the exposition.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon::{get, http, json_lines, message, metric, openssl_signature, Daemon};
use common::docker::{docker, TestRelease};
use common::free_port;
use common::gitrepo::TestRepo;
use common::images::{ensure_images, PROMETHEUS};

const SECRET: &str = "planted-webhook-secret-metrics";

fn spec(release: &str, image: &str, port: u16, extra_env: &str) -> String {
    format!(
        "version: 1\nrelease: {release}\nservices:\n  web:\n    image: {image}\n    ports: [\"127.0.0.1:{port}:8000\"]\n    environment: {{ MODE: run{extra_env} }}\n    stop_grace_period: 1s\n    health: {{ http: {{ port: 8000, path: /health }}, interval: 200ms, deadline: 3s }}\n"
    )
}

fn metrics(port: u16) -> String {
    get(port, "/metrics").expect("metrics answer").body
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Requests a cycle with a signed generic webhook and waits until `result` has counted `n`.
fn cycle_until(daemon: &Daemon, port: u16, result: &str, n: f64) {
    let sig = openssl_signature(SECRET, b"");
    let r = http(
        port,
        "POST",
        "/webhook",
        &[("X-Reconciler-Signature-256", &sig)],
        b"",
    )
    .expect("webhook answers");
    assert_eq!(r.status, 202, "{}", r.body);
    let series = format!("reconciler_reconcile_total{{result=\"{result}\"}}");
    let start = Instant::now();
    while metric(&metrics(port), &series) != Some(n) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{series} never reached {n}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus on the host network, on 127.0.0.1 only, scraping `target` every second.
struct Prometheus {
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(release: &TestRelease, target: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reconciler\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"),
        )
        .expect("config");
        let port = common::free_port();
        let name = release.obj("prometheus");
        release.remove_on_drop(&name);
        let label = format!("io.reconciler.release={}", release.name);
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "io.reconciler.test=1",
            "--label",
            &label,
            "--network",
            "host",
            "-v",
            &format!("{}:/etc/prometheus/prometheus.yml:ro", config.display()),
            PROMETHEUS,
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .unwrap_or_else(|e| panic!("prometheus does not start: {e}"));
        common::daemon::wait_status(port, "/-/ready", 200, Duration::from_secs(60));
        Prometheus { port, _dir: dir }
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let reply =
            get(self.port, &format!("/api/v1/query?query={encoded}")).expect("prometheus answers");
        assert_eq!(reply.status, 200, "{promql}: {}", reply.body);
        let v: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `promql` returns exactly one sample equal to `want`; that sample.
    fn wait_value(&self, promql: &str, want: f64) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let result = self.query(promql);
            if let [one] = result.as_slice() {
                let got = one["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
                if got == Some(want) {
                    return one.clone();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{promql} never gave {want}: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn metrics_after_applied_noop_rolled_back_and_failed_cycles_and_through_prometheus() {
    ensure_images(&["app", "prometheus"]);
    let release = TestRelease::new("metrics");
    let app_port = free_port();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &spec(&release.name, "reconciler-test/app:v1", app_port, ""),
    );
    let good = repo.commit("v1");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = repo.url();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let daemon = Daemon::start_with_env(
        &[
            "--repo",
            &url,
            "--ref",
            "main",
            "--interval",
            "1h",
            "--listen",
            &listen,
            "--webhook-secret-env",
            "WEBHOOK_SECRET",
            "--log-format",
            "json",
        ],
        &[("WEBHOOK_SECRET", SECRET)],
    );
    common::daemon::wait_status(port, "/readyz", 200, Duration::from_secs(60));
    let text = metrics(port);
    assert_eq!(
        value(&text, r#"reconciler_reconcile_total{result="applied"}"#),
        1.0
    );

    // A no-op.
    cycle_until(&daemon, port, "noop", 1.0);

    // A release whose gate fails: rolled back.
    repo.write(
        "release.yaml",
        &spec(
            &release.name,
            "reconciler-test/app:v2",
            app_port,
            ", APP_FAIL_HEALTH: \"1\"",
        ),
    );
    let bad = repo.commit("v2 broken");
    cycle_until(&daemon, port, "rolled_back", 1.0);

    let text = metrics(port);
    for (series, want) in [
        (
            r#"reconciler_reconcile_total{result="applied"}"#.to_string(),
            1.0,
        ),
        (r#"reconciler_reconcile_total{result="noop"}"#.into(), 1.0),
        (r#"reconciler_reconcile_total{result="failed"}"#.into(), 0.0),
        ("reconciler_reconcile_duration_seconds_count".into(), 3.0),
        (r#"reconciler_rollbacks_total{reason="gate"}"#.into(), 1.0),
        (
            r#"reconciler_health_gate_failures_total{service="web"}"#.into(),
            1.0,
        ),
        // Only the first release's gate completed; both releases started a container.
        (
            r#"reconciler_step_duration_seconds_count{step="gate"}"#.into(),
            1.0,
        ),
        (
            r#"reconciler_step_duration_seconds_count{step="start"}"#.into(),
            2.0,
        ),
        (r#"reconciler_drift_detected{service="web"}"#.into(), 1.0),
        (r#"reconciler_services{state="out_of_sync"}"#.into(), 1.0),
        (r#"reconciler_services{state="in_sync"}"#.into(), 0.0),
        ("reconciler_git_fetch_duration_seconds_count".into(), 3.0),
        ("reconciler_git_fetch_errors_total".into(), 0.0),
        (
            format!("reconciler_applied_revision_info{{revision=\"{good}\"}}"),
            1.0,
        ),
        (
            format!("reconciler_desired_revision_info{{revision=\"{bad}\"}}"),
            1.0,
        ),
        ("reconciler_suspended".into(), 0.0),
    ] {
        assert_eq!(value(&text, &series), want, "{series}\n{text}");
    }
    // One series per _info gauge: the old desired revision is gone.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("reconciler_desired_revision_info{"))
            .count(),
        1,
        "{text}"
    );
    let last_apply = value(&text, "reconciler_last_apply_timestamp_seconds");
    assert!(last_apply >= started.floor(), "{last_apply} < {started}");
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);

    // A spec that does not load: failed, nothing else moves.
    repo.write("release.yaml", "version: 1\nrelease: [not a name]\n");
    repo.commit("broken spec");
    cycle_until(&daemon, port, "failed", 1.0);
    let text = metrics(port);
    assert_eq!(
        value(&text, r#"reconciler_rollbacks_total{reason="gate"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!("reconciler_applied_revision_info{{revision=\"{good}\"}}")
        ),
        1.0
    );

    // promtool accepts the exposition.
    let mut promtool = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--label",
            "io.reconciler.test=1",
            "--network",
            "none",
            "--entrypoint",
            "/usr/bin/promtool",
            PROMETHEUS,
            "check",
            "metrics",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(out.status.success(), "{}", common::show(&out));

    // A real Prometheus scrapes the daemon and answers with the same values.
    let prom = Prometheus::start(&release, port);
    prom.wait_value(r#"up{job="reconciler"}"#, 1.0);
    prom.wait_value(r#"reconciler_reconcile_total{result="rolled_back"}"#, 1.0);
    prom.wait_value(r#"reconciler_reconcile_total{result="applied"}"#, 1.0);
    prom.wait_value(
        r#"reconciler_health_gate_failures_total{service="web"}"#,
        1.0,
    );
    prom.wait_value(r#"reconciler_drift_detected{service="web"}"#, 1.0);
    let applied = prom.wait_value("reconciler_applied_revision_info", 1.0);
    assert_eq!(applied["metric"]["revision"], good.as_str(), "{applied}");
    let quantile = prom.query(
        "histogram_quantile(0.5, sum by (le) (reconciler_reconcile_duration_seconds_bucket))",
    );
    assert_eq!(quantile.len(), 1, "{quantile:?}");
    prom.wait_value("count(process_resident_memory_bytes > 0)", 1.0);

    assert!(
        json_lines(&daemon.log())
            .iter()
            .any(|l| message(l) == "cycle finished" && l["fields"]["result"] == "rolled_back"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), 0);
}
