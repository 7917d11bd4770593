//! The shipped examples parse into the release model and refer only to the
//! images that tests/images/build.sh makes; the quickstart cache's command
//! and healthcheck really work in reconciler-test/busybox:1.

mod common;

use common::images::{self, TEST_LABEL};
use reconciler::spec::model::{HealthGate, ReleaseSpec};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn quickstart() -> ReleaseSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/release.yaml");
    let text = std::fs::read_to_string(&path).expect("read quickstart release.yaml");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn quickstart_parses_with_expected_shape() {
    let spec = quickstart();
    assert_eq!(spec.version, 1);
    assert_eq!(spec.release, "quickstart");
    assert!(!spec.networks["edge"].internal);
    assert!(spec.networks["backend"].internal);
    assert!(spec.volumes.contains_key("data"));
    let names: Vec<&str> = spec.services.keys().map(String::as_str).collect();
    assert_eq!(names, ["web", "cache"]);

    let web = &spec.services["web"];
    assert_eq!(web.image, images::APP_V1);
    assert_eq!(web.dependencies(), ["cache"]);
    let nets: Vec<String> = web.network_attachments().into_iter().map(|n| n.0).collect();
    assert_eq!(nets, ["edge", "backend"]);
    let gate: &HealthGate = web.health.as_ref().expect("web has a health gate");
    let http = gate.http.as_ref().expect("http probe");
    assert_eq!(
        (http.port, http.path.as_str(), http.expect),
        (8000, "/health", 200)
    );

    let cache = &spec.services["cache"];
    assert_eq!(cache.image, images::BUSYBOX);
    assert!(cache
        .healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .is_some());
}

#[test]
fn quickstart_cache_command_and_healthcheck_work() {
    images::ensure_images(&["busybox"]);
    let spec = quickstart();
    let cache = &spec.services["cache"];
    let command = cache.command.as_ref().expect("cache command").to_vec();
    let hc = cache.healthcheck.as_ref().expect("cache healthcheck");
    let test = hc.test.as_ref().expect("healthcheck test").to_vec();
    assert_eq!(test[0], "CMD");
    let case = format!(
        "io.reconciler.test.case=examples-cache-{}",
        std::process::id()
    );

    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &self.0])
                .output();
        }
    }

    let mut run = Command::new("docker");
    run.args(["run", "-d", "--label", TEST_LABEL, "--label", &case])
        .args(["--health-cmd", &test[1..].join(" ")])
        .args(["--health-interval", "1s", "--health-retries", "10"])
        .arg(images::BUSYBOX)
        .args(&command);
    let out = run.output().expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _guard = Guard(id.clone());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
            .output()
            .expect("docker inspect");
        let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if status == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache container not healthy in time (status {status:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The healthcheck must also be able to fail: nothing listens on 6380.
    let probe_closed: Vec<String> = test[1..]
        .iter()
        .map(|w| {
            if w == "6379" {
                "6380".to_string()
            } else {
                w.clone()
            }
        })
        .collect();
    let out = Command::new("docker")
        .args(["exec", &id])
        .args(&probe_closed)
        .output()
        .expect("docker exec");
    assert!(!out.status.success(), "probe of a closed port succeeded");

    let t = Instant::now();
    let out = Command::new("docker").args(["stop", &id]).output().unwrap();
    assert!(out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t.elapsed()
    );
}

/// The secret variables the examples read from the operator's environment (examples/stack).
const EXAMPLE_SECRET_VARS: &[&str] = &["STACK_PG_PASSWORD", "STACK_DATABASE_URL"];

/// The process environment, plus a stand-in value for each of [`EXAMPLE_SECRET_VARS`] it lacks.
struct ExampleEnv;

impl reconciler::desired::HostEnv for ExampleEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| {
            EXAMPLE_SECRET_VARS
                .contains(&name)
                .then(|| format!("test value of {name}"))
        })
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Every example repo loads as `reconciler` would read it (schema, semantic checks, the files
/// it references such as nginx.conf, resolution on this host).
#[test]
fn every_example_loads_and_resolves() {
    use reconciler::source::LocalDir;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).expect("examples/") {
        let dir = entry.expect("entry").path();
        if !dir.join("release.yaml").exists() {
            continue;
        }
        let tree = std::sync::Arc::new(LocalDir::new(&dir));
        if let Err(e) = reconciler::reconcile::load(tree, &ExampleEnv) {
            panic!("{}: {e}", dir.display());
        }
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} examples");
}
