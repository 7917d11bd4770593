//! The load generator (src/bin/reconciler-load.rs, via tests/common/load.rs) against the real
//! test app: it must see zero failures on a healthy app and must be able to fail (connect
//! errors on a closed port, non-2xx from an unhealthy endpoint), or a "zero failures during the
//! deploy" result would prove nothing.
//!
//! The app's throughput by concurrency is measured by `bench/app_throughput.sh`.

mod common;

use std::time::Duration;

use common::docker::{docker, release_name};
use common::images::{ensure_images, APP_PORT, APP_V1, TEST_LABEL};
use common::load::{self, Load, DEFAULT_CONCURRENCY};

/// Label that ties a container to one test, so its Drop removes exactly its own.
const CASE_LABEL: &str = "io.reconciler.test.load";

/// One app container on 127.0.0.1:<random>, removed on drop (also when the test panics).
struct App {
    case: String,
    port: u16,
}

impl App {
    fn start(test: &str, env: &[&str]) -> App {
        ensure_images(&["app"]);
        let case = release_name(test);
        // Built before anything can fail, so Drop cleans up whatever `docker run` managed.
        let mut app = App { case, port: 0 };
        let case_label = format!("{CASE_LABEL}={}", app.case);
        let mut args = vec![
            "run",
            "-d",
            "--label",
            TEST_LABEL,
            "--label",
            &case_label,
            "-p",
            "127.0.0.1:0:8000",
        ];
        for e in env {
            args.extend(["-e", e]);
        }
        args.push(APP_V1);
        let id = docker(&args).unwrap_or_else(|e| panic!("docker run {APP_V1}: {e}"));
        let id = id.trim();
        let port_spec = format!("{APP_PORT}/tcp");
        let mapped =
            docker(&["port", id, &port_spec]).unwrap_or_else(|e| panic!("docker port: {e}"));
        // `127.0.0.1:49153` (one line per binding; we asked for one).
        app.port = mapped
            .lines()
            .find_map(|l| l.trim().rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the published port from {mapped:?}"));
        // Readiness is a real answer, not a sleep: docker-proxy accepts connections before the
        // app listens. /version answers 200 even with APP_FAIL_HEALTH=1.
        assert!(
            load::wait_http_ok(app.port, "/version", Duration::from_secs(20)),
            "the app on 127.0.0.1:{} never answered GET /version",
            app.port
        );
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let filter = format!("label={CASE_LABEL}={}", self.case);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

#[test]
fn healthy_app_answers_every_request() {
    let app = App::start("load-healthy", &[]);
    let mut load = Load::start(
        app.port,
        "/version",
        DEFAULT_CONCURRENCY,
        2_000,
        Duration::from_secs(60),
    )
    .min_requests(2_000);
    assert!(
        load.wait_for_requests(1, Duration::from_secs(10)),
        "no request completed within 10 s"
    );
    let report = load.finish();
    eprintln!(
        "healthy app: {} requests, {} failures, {} req/s at concurrency {DEFAULT_CONCURRENCY}",
        report.total, report.failures, report.requests_per_sec
    );
    assert!(report.total >= 2_000, "{report:#?}");
    assert_eq!(report.failures, 0, "{report:#?}");
    assert_eq!(report.ok, report.total, "{report:#?}");
    assert_eq!(
        report.by_body.keys().collect::<Vec<_>>(),
        ["v1"],
        "{report:#?}"
    );
    assert_eq!(report.by_body["v1"], report.total);
    assert_eq!(report.by_status.get(&200), Some(&report.total));
}

#[test]
fn closed_port_counts_connect_errors() {
    let port = load::closed_port();
    let report = Load::start(port, "/version", 4, 200, Duration::from_secs(20))
        .min_requests(200)
        .finish();
    assert_eq!(report.total, 200, "{report:#?}");
    assert_eq!(report.ok, 0, "{report:#?}");
    assert_eq!(report.connect_errors, report.total, "{report:#?}");
    assert_eq!(report.failures, report.total, "{report:#?}");
    assert!(report.by_body.is_empty(), "{report:#?}");
    assert_eq!(report.first_failures.len(), 10, "{report:#?}");
    assert!(report.first_failures[0].contains("connect"), "{report:#?}");
    assert!(report.first_failure_ms.is_some() && report.last_failure_ms.is_some());
}

#[test]
fn unhealthy_endpoint_counts_non_2xx() {
    let app = App::start("load-unhealthy", &["APP_FAIL_HEALTH=1"]);
    let report = Load::start(app.port, "/health", 4, 300, Duration::from_secs(30))
        .min_requests(300)
        .finish();
    assert_eq!(report.total, 300, "{report:#?}");
    assert_eq!(report.non_2xx, report.total, "{report:#?}");
    assert_eq!(report.failures, report.total, "{report:#?}");
    assert_eq!(
        report.connect_errors + report.other_errors,
        0,
        "{report:#?}"
    );
    assert_eq!(
        report.by_status.get(&500),
        Some(&report.total),
        "{report:#?}"
    );
    // Only 2xx bodies are counted as answers.
    assert!(report.by_body.is_empty(), "{report:#?}");
    assert!(
        report.first_failures[0].contains("status 500"),
        "{report:#?}"
    );
}

#[test]
fn stops_by_itself_at_max_duration() {
    // The budget is far beyond what 1 s allows: the duration bound must end the run.
    let port = load::closed_port();
    let started = std::time::Instant::now();
    let report = Load::start(port, "/version", 2, 1_000_000, Duration::from_secs(1))
        .min_requests(1_000_000)
        .finish();
    assert_eq!(
        report.stopped_by.as_deref(),
        Some("max_duration"),
        "{report:#?}"
    );
    assert!(report.total < 1_000_000, "{report:#?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{report:#?}");
}
