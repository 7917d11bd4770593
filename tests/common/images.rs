//! Test images and the local registry, built/started on demand.
//!
//! `ensure_images` runs `tests/images/build.sh` for the image groups a test
//! needs (busybox, app, debian, nginx, prometheus, alertmanager, postgres). It runs at most once per group per
//! test process; across concurrently running test binaries the script itself
//! serializes on a lock file (`flock`) and skips images that already exist,
//! so a second caller waits for the first and then returns at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Image names other tests refer to.
pub const BUSYBOX: &str = "reconciler-test/busybox:1";
pub const APP_V1: &str = "reconciler-test/app:v1";
pub const APP_V2: &str = "reconciler-test/app:v2";
pub const APP_V3: &str = "reconciler-test/app:v3";
pub const DEBIAN: &str = "reconciler-test/debian:bookworm";
pub const NGINX: &str = "reconciler-test/nginx:1";
/// Debian's `prometheus` (with `promtool`); runs as user `prometheus`, flags as upstream's
/// image (`--config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus`)
/// plus `--web.enable-lifecycle`; override CMD to change them.
pub const PROMETHEUS: &str = "reconciler-test/prometheus:1";
/// Debian's `prometheus-alertmanager` (with `amtool`), config `/etc/prometheus/alertmanager.yml`,
/// storage `/alertmanager`, no cluster port.
pub const ALERTMANAGER: &str = "reconciler-test/alertmanager:1";
/// Debian's `postgresql-15`; env `POSTGRES_PASSWORD` (or `POSTGRES_PASSWORD_FILE`),
/// `POSTGRES_USER`, `POSTGRES_DB` as the official image, data in `/var/lib/postgresql/data`,
/// stop signal SIGINT.
pub const POSTGRES: &str = "reconciler-test/postgres:15";

/// The label every test object carries; cleanup removes by it.
pub const TEST_LABEL: &str = "io.reconciler.test=1";

/// Port the app images listen on.
pub const APP_PORT: u16 = 8000;
/// Ports the service images listen on.
pub const PROMETHEUS_PORT: u16 = 9090;
pub const ALERTMANAGER_PORT: u16 = 9093;
pub const POSTGRES_PORT: u16 = 5432;

pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images")
}

fn run_script(script: &str, args: &[&str]) -> Output {
    let path = images_dir().join(script);
    Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
}

fn check(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Make sure the named image groups exist (`busybox`, `app`, `debian`,
/// `nginx`, `prometheus`, `alertmanager`, `postgres`; `app` implies `busybox`, `nginx` implies
/// `debian`, the last three share `packages`, which implies `debian`).
/// Panics with the build script's output if it fails.
pub fn ensure_images(names: &[&str]) {
    static DONE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    // Holding the lock while building also serializes threads of this process.
    let mut done = DONE
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !done.contains(*n))
        .collect();
    if missing.is_empty() {
        return;
    }
    let out = run_script("build.sh", &missing);
    check(
        &format!("tests/images/build.sh {}", missing.join(" ")),
        &out,
    );
    done.extend(missing.iter().map(|s| s.to_string()));
}

/// Start (idempotently) the local registry on 127.0.0.1 and return its port.
/// Push to `127.0.0.1:<port>/reconciler-test/...`; Docker allows plain HTTP
/// for loopback registries.
pub fn ensure_registry() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let out = run_script("registry.sh", &["start"]);
        check("tests/images/registry.sh start", &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("").trim();
        last.parse()
            .unwrap_or_else(|_| panic!("registry.sh start printed no port: {stdout:?}"))
    })
}
