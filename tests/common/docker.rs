//! Real-engine test support: a unique release per test, cleaned up even when the test panics,
//! and a count of the engine's mutating events for a release (to prove idempotence).
//!
//! Setup and cleanup use the docker CLI on purpose: they must not depend on the code under test.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reconciler::engine::Engine;

pub const BUSYBOX: &str = "reconciler-test/busybox:1";
pub const APP_V1: &str = "reconciler-test/app:v1";
pub const APP_V2: &str = "reconciler-test/app:v2";
pub const APP_V3: &str = "reconciler-test/app:v3";
/// The port the test app listens on.
pub const APP_PORT: u16 = 8000;

const RELEASE_LABEL: &str = "io.reconciler.release";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique release name for one test: `t-<test>-<random>`, within `^[a-z][a-z0-9-]{0,30}$`.
pub fn release_name(test: &str) -> String {
    // RandomState is seeded randomly per instance: enough for unique names.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut x = hasher.finish();
    let mut suffix = String::new();
    for _ in 0..6 {
        suffix.push(char::from_digit((x % 36) as u32, 36).unwrap_or('x'));
        x /= 36;
    }
    let cleaned: String = test
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    format!("t-{cleaned}-{suffix}")
}

/// Owns a test release: on drop, removes every container, network and volume labelled with
/// it, plus any extra (unlabelled) objects the test registered.
pub struct TestRelease {
    pub name: String,
    extra_containers: Mutex<Vec<String>>,
}

impl TestRelease {
    pub fn new(test: &str) -> TestRelease {
        let name = release_name(test);
        assert!(name.len() <= 31, "release name too long: {name}");
        TestRelease {
            name,
            extra_containers: Mutex::new(Vec::new()),
        }
    }

    /// `<release>-<suffix>`, the engine name of one of its objects.
    pub fn obj(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Removes `name` too on drop (for unowned containers a test creates).
    pub fn remove_on_drop(&self, name: &str) {
        if let Ok(mut extra) = self.extra_containers.lock() {
            extra.push(name.to_string());
        }
    }

    pub fn label_filter(&self) -> String {
        format!("label={RELEASE_LABEL}={}", self.name)
    }
}

impl Drop for TestRelease {
    fn drop(&mut self) {
        let filter = self.label_filter();
        let mut containers = docker_lines(&["ps", "-aq", "--filter", &filter]);
        if let Ok(extra) = self.extra_containers.lock() {
            containers.extend(extra.iter().cloned());
        }
        for c in containers {
            let _ = docker(&["rm", "-f", &c]);
        }
        for n in docker_lines(&["network", "ls", "-q", "--filter", &filter]) {
            let _ = docker(&["network", "rm", &n]);
        }
        for v in docker_lines(&["volume", "ls", "-q", "--filter", &filter]) {
            let _ = docker(&["volume", "rm", "-f", &v]);
        }
    }
}

/// Runs the docker CLI; Ok(stdout) on success, Err(stderr) otherwise.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    docker(args)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a container, network or volume with this name exists.
pub fn container_exists(name: &str) -> bool {
    docker(&["container", "inspect", name]).is_ok()
}
pub fn network_exists(name: &str) -> bool {
    docker(&["network", "inspect", name]).is_ok()
}
pub fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).is_ok()
}

/// `docker inspect -f <format> <name>`, trimmed.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name])
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub async fn engine() -> Engine {
    Engine::connect(None)
        .await
        .unwrap_or_else(|e| panic!("the tests need a Docker engine: {e}"))
}

/// Fails the test early, with the fix, when the fixture images are not on this engine.
pub fn require_images(images: &[&str]) {
    for image in images {
        assert!(
            docker(&["image", "inspect", image]).is_ok(),
            "test image {image} is missing (fix: bash tests/images/build.sh busybox app)"
        );
    }
}

/// A point in time for [`mutating_events`], in the form `docker events` takes.
pub fn instant() -> SystemTime {
    SystemTime::now()
}

fn unix_arg(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// The engine's mutating events for `release` between `since` and `until`, as
/// `type action name` lines: container create/start/stop/die/destroy/rename, and
/// network/volume create/destroy. Containers are matched by their release label; networks and
/// volumes by name prefix too, since network events do not carry labels on every engine.
pub fn mutating_events(release: &str, since: SystemTime, until: SystemTime) -> Vec<String> {
    let prefix = format!("{release}-");
    events_where(since, until, |labels, name| {
        labels[RELEASE_LABEL].as_str() == Some(release)
            || name == release
            || name.starts_with(&prefix)
    })
}

/// Every mutating event on the engine in the window, whoever caused it. Only meaningful in a
/// test binary that runs alone (cargo runs test binaries one after another).
pub fn mutating_events_of_all_releases(since: SystemTime, until: SystemTime) -> Vec<String> {
    events_where(since, until, |_, _| true)
}

fn events_where(
    since: SystemTime,
    until: SystemTime,
    ours: impl Fn(&serde_json::Value, &str) -> bool,
) -> Vec<String> {
    // The engine timestamps events itself; let it catch up with `until`.
    let wait = until
        .checked_add(Duration::from_millis(100))
        .and_then(|t| t.duration_since(SystemTime::now()).ok());
    if let Some(wait) = wait {
        std::thread::sleep(wait);
    }
    let out = docker(&[
        "events",
        "--since",
        &unix_arg(since),
        "--until",
        &unix_arg(until),
        "--format",
        "{{json .}}",
    ])
    .unwrap_or_else(|e| panic!("docker events: {e}"));
    let mut events = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let typ = event["Type"].as_str().unwrap_or_default();
        let action = event["Action"].as_str().unwrap_or_default();
        let attrs = &event["Actor"]["Attributes"];
        // Volume events carry the name only as the actor id.
        let name = attrs["name"]
            .as_str()
            .or_else(|| event["Actor"]["ID"].as_str())
            .unwrap_or_default();
        let mutating = match typ {
            "container" => {
                ["create", "start", "stop", "die", "destroy", "rename"].contains(&action)
            }
            "network" | "volume" => ["create", "destroy"].contains(&action),
            _ => false,
        };
        if mutating && ours(attrs, name) {
            events.push(format!("{typ} {action} {name}"));
        }
    }
    events
}
