//! Blue-green through nginx under continuous load: (a) v1 -> v2 succeeds, (b) a release whose
//! health gate fails, (c) one that crashes at start, (d) one that passes its gate but fails
//! `verify`. Every case: zero failed requests out of at least 5,000, and after (b)-(d) the host
//! is exactly as before (same container ids serving, same upstream file), still answering v2.

mod common;

use common::show;

use common::free_port;

use std::process::{Command, Output};
use std::time::Duration;

use common::docker::TestRelease;
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::{Load, LoadReport};

/// Requests each case must see at least, while the deploy happens.
const MIN_REQUESTS: u64 = 5_000;

use common::proxy::WEB_NGINX_CONF as NGINX_CONF;

fn spec(release: &str, port: u16, version: &str, env: &str, verify_body: &str) -> String {
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
    environment: {{ MODE: bluegreen{env} }}
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 5s }}
    verify: {{ path: /version, body: {verify_body}, deadline: 3s }}
    drain: 3s
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
    fn apply(&self, version: &str, env: &str, verify_body: &str) -> Output {
        self.repo.write(
            "release.yaml",
            &spec(&self.release.name, self.port, version, env, verify_body),
        );
        self.repo.commit(&format!("{version}{env}"));
        Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["apply", "--repo", &self.repo.url()])
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .output()
            .expect("reconciler runs")
    }

    /// Which container serves, by id, and the upstream file nginx runs with.
    fn serving(&self) -> (Vec<String>, String) {
        common::proxy::web_serving(&self.release, false)
    }
}

/// Responses whose body names `version` (`reconciler-test app v2`).
fn count_containing(report: &LoadReport, version: &str) -> u64 {
    report
        .by_body
        .iter()
        .filter(|(body, _)| body.ends_with(version))
        .map(|(_, n)| n)
        .sum()
}

fn summary(r: &LoadReport) -> String {
    format!(
        "{} requests, {} failed, {:.0} req/s over {} ms, by body {:?}",
        r.total, r.failures, r.requests_per_sec, r.duration_ms, r.by_body
    )
}

#[test]
fn blue_green_under_load_has_zero_failed_requests_and_rolls_back_atomically() {
    ensure_images(&["app", "nginx"]);
    let host = Host {
        release: TestRelease::new("bluegreen"),
        repo: TestRepo::new(),
        state: tempfile::tempdir().expect("state dir"),
        port: free_port(),
    };
    host.repo.write("nginx.conf", NGINX_CONF);
    let out = host.apply("v1", "", "v1");
    assert_eq!(out.status.code(), Some(0), "v1: {}", show(&out));

    // Concurrency 8: the test app (a shell per connection) serves that without a failure when
    // healthy; the load runs from before the apply until at least MIN_REQUESTS were answered.
    let start_load = || {
        Load::start(
            host.port,
            "/",
            8,
            MIN_REQUESTS * 4,
            Duration::from_secs(240),
        )
        .min_requests(MIN_REQUESTS)
    };

    // (a) v1 -> v2.
    let load = start_load();
    let out = host.apply("v2", "", "v2");
    let report = load.finish();
    assert_eq!(out.status.code(), Some(0), "(a): {}", show(&out));
    eprintln!("(a) v1 -> v2: {}", summary(&report));
    assert_eq!(report.failures, 0, "(a) failed requests: {report:?}");
    assert!(
        report.total >= MIN_REQUESTS,
        "(a) only {} requests",
        report.total
    );
    assert!(
        count_containing(&report, "v1") > 0 && count_containing(&report, "v2") > 0,
        "{report:?}"
    );
    let before = host.serving();
    assert_eq!(
        before.0.len(),
        1,
        "one color serves after the release: {before:?}"
    );
    assert!(before.1.contains("color=green"), "{}", before.1);

    // (b)-(d): each fails, is rolled back, and the load never sees a failure.
    let cases = [
        ("(b) health gate fails", ", APP_FAIL_HEALTH: \"1\"", "gate"),
        ("(c) crash at start", ", APP_CRASH: \"1\"", "exited"),
        ("(d) verify fails", ", APP_FAIL_VERIFY: \"1\"", "verify"),
    ];
    for (name, env, expect_in_error) in cases {
        let load = start_load();
        let out = host.apply("v3", env, "v3");
        let report = load.finish();
        eprintln!("{name}: {}", summary(&report));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect_in_error), "{name}: {stderr}");
        assert!(stderr.contains("rolled back"), "{name}: {stderr}");
        assert_eq!(report.failures, 0, "{name}: failed requests: {report:?}");
        assert!(
            report.total >= MIN_REQUESTS,
            "{name}: only {} requests",
            report.total
        );
        assert_eq!(host.serving(), before, "{name}: the host is not as it was");
        // After the rollback every response comes from v2 again.
        let after = Load::start(host.port, "/", 4, 200, Duration::from_secs(30))
            .min_requests(200)
            .finish();
        assert_eq!(after.failures, 0, "{name}: {after:?}");
        assert_eq!(
            count_containing(&after, "v2"),
            after.total,
            "{name}: {after:?}"
        );
    }
}
