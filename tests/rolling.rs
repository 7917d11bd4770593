//! `strategy: rolling` through nginx under continuous load: (a) v1 -> v2 with 3 replicas,
//! replaced one at a time; (b) a release whose gate fails on replica 2, after replica 1 was
//! already switched in and had taken traffic. Both: zero failed requests out of at least 5,000;
//! after (b) the host is exactly as before (same container ids, upstreams file byte-identical,
//! no new replica or volume left) and every response comes from v2.

mod common;

use common::show;

use common::free_port;

use std::process::{Command, Output};
use std::time::Duration;

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::{Load, LoadReport};

/// Requests each case must see at least, while the deploy happens.
const MIN_REQUESTS: u64 = 5_000;
const REPLICAS: usize = 3;

use common::proxy::WEB_NGINX_CONF as NGINX_CONF;

/// The gate of the failing release: an exec probe over a volume the replicas share. The first
/// replica to probe claims it and passes; any other replica fails, so replica 1 passes and is
/// switched in, and replica 2's gate fails at its deadline.
const FIRST_ONLY_GATE: &str = r#"    volumes: ["tickets:/shared"]
    health:
      exec:
        command: ["sh", "-c", "h=$(hostname); [ -e /shared/$h ] && exit 0; [ -z \"$(ls /shared)\" ] && touch /shared/$h && exit 0; exit 1"]
      interval: 250ms
      deadline: 3s
"#;

const HTTP_GATE: &str =
    "    health: { http: { port: 8000, path: /health }, interval: 250ms, deadline: 5s }\n";

fn spec(release: &str, port: u16, version: &str, gate: &str) -> String {
    let volumes = if gate == FIRST_ONLY_GATE {
        "volumes: { tickets: {} }\n"
    } else {
        ""
    };
    format!(
        r#"version: 1
release: {release}
networks: {{ edge: {{}} }}
{volumes}proxy:
  image: reconciler-test/nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:{port}:80"]
  networks: [edge]
  routes: {{ web: {{ service: web, port: 8000 }} }}
services:
  web:
    image: reconciler-test/app:{version}
    strategy: rolling
    deploy: {{ replicas: {REPLICAS} }}
    networks: [edge]
    stop_grace_period: 2s
{gate}    verify: {{ path: /version, body: {version}, deadline: 3s }}
    drain: 2s
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
    fn apply(&self, version: &str, gate: &str) -> Output {
        self.repo.write(
            "release.yaml",
            &spec(&self.release.name, self.port, version, gate),
        );
        self.repo.commit(version);
        Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["apply", "--repo", &self.repo.url()])
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .output()
            .expect("reconciler runs")
    }

    /// The service's containers (all states, by id) and the upstream file nginx runs with.
    fn serving(&self) -> (Vec<String>, String) {
        common::proxy::web_serving(&self.release, true)
    }

    fn running(&self) -> usize {
        docker(&[
            "ps",
            "-q",
            "--filter",
            &self.release.label_filter(),
            "--filter",
            "label=io.reconciler.service=web",
        ])
        .unwrap_or_default()
        .lines()
        .count()
    }
}

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
fn rolling_under_load_replaces_replicas_one_by_one_and_rolls_back_atomically() {
    ensure_images(&["app", "nginx"]);
    let host = Host {
        release: TestRelease::new("rolling"),
        repo: TestRepo::new(),
        state: tempfile::tempdir().expect("state dir"),
        port: free_port(),
    };
    host.repo.write("nginx.conf", NGINX_CONF);
    let out = host.apply("v1", HTTP_GATE);
    assert_eq!(out.status.code(), Some(0), "v1: {}", show(&out));
    let (ids, upstreams) = host.serving();
    assert_eq!(ids.len(), REPLICAS, "{ids:?}");
    assert!(
        upstreams.contains("slots=1:blue,2:blue,3:blue"),
        "{upstreams}"
    );

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

    // (a) v1 -> v2, one replica at a time.
    let load = start_load();
    let out = host.apply("v2", HTTP_GATE);
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
    // One switch per replica: the log shows three switches before the verify.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let switches = stderr
        .lines()
        .filter(|l| l.contains("step done") && l.contains("switch"))
        .count();
    assert_eq!(switches, REPLICAS, "(a) switches: {stderr}");
    let before = host.serving();
    assert_eq!(before.0.len(), REPLICAS, "{before:?}");
    assert_eq!(host.running(), REPLICAS);
    assert!(
        before.1.contains("slots=1:green,2:green,3:green"),
        "{}",
        before.1
    );

    // (b) the gate fails on replica 2, after replica 1 took traffic: all undone.
    let load = start_load();
    let out = host.apply("v3", FIRST_ONLY_GATE);
    let report = load.finish();
    eprintln!("(b) gate fails on replica 2: {}", summary(&report));
    assert_eq!(out.status.code(), Some(1), "(b): {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gate") && stderr.contains(&host.release.obj("web-2-blue")),
        "(b) not replica 2's gate: {stderr}"
    );
    assert!(stderr.contains("rolled back"), "(b): {stderr}");
    assert_eq!(report.failures, 0, "(b) failed requests: {report:?}");
    assert!(
        report.total >= MIN_REQUESTS,
        "(b) only {} requests",
        report.total
    );
    assert!(
        count_containing(&report, "v3") > 0,
        "(b) replica 1 of v3 was never switched in: {report:?}"
    );
    assert_eq!(host.serving(), before, "(b) the host is not as it was");
    assert_eq!(host.running(), REPLICAS);
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &host.release.label_filter(),
    ])
    .unwrap_or_default();
    assert_eq!(volumes.trim(), "", "(b) the release's new volume is left");
    let after = Load::start(host.port, "/", 4, 300, Duration::from_secs(30))
        .min_requests(300)
        .finish();
    assert_eq!(after.failures, 0, "(b) after: {after:?}");
    assert_eq!(
        count_containing(&after, "v2"),
        after.total,
        "(b) after: {after:?}"
    );
}
