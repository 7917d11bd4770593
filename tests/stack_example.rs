//! examples/stack end to end: the seeds-shaped stack (api blue-green behind nginx, worker,
//! postgres, redis, prometheus, alertmanager, dashboards) is copied into a real git repo under a
//! unique release name and free ports, applied with the real binary, and checked from outside
//! (HTTP on 127.0.0.1, `docker exec`): the migration job ran, a rule change is hot-reloaded
//! without touching the api or re-running the migration, and an api image change rolls out
//! through the jobs again. Also: the example's config files pass the validators.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::docker::{docker, engine, inspect, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::get;
use common::{free_port, show};
use reconciler::validate::{validate_service, ConfigCheck, ConfigFile};

/// The database password of the test stack (a test value; the example reads it from the
/// reconciler's environment). It must never show in the output or the state dir.
const PG_PASSWORD: &str = "st4ck-example-pg-pw";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stack")
}

/// `text` with the one occurrence of `from` replaced: a changed example fails here, loudly.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "examples/stack/release.yaml should hold `{from}` exactly once"
    );
    text.replacen(from, to, 1)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy example file");
        }
    }
}

/// Polls `cond` until it holds; panics with `what` and the last observation at the deadline.
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match cond() {
            Ok(()) => return,
            Err(last) if start.elapsed() > deadline => {
                panic!("{what}: not true after {deadline:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

struct Stack {
    release: TestRelease,
    repo: TestRepo,
    state: tempfile::TempDir,
    proxy: u16,
    prometheus: u16,
    alertmanager: u16,
    dashboards: u16,
}

impl Stack {
    /// The example in a fresh repo, its release name and published ports rewritten.
    fn new() -> Stack {
        let stack = Stack {
            release: TestRelease::new("stack"),
            repo: TestRepo::new(),
            state: tempfile::tempdir().expect("state dir"),
            proxy: free_port(),
            prometheus: free_port(),
            alertmanager: free_port(),
            dashboards: free_port(),
        };
        copy_tree(&example_dir(), &stack.repo.path);
        let mut text = std::fs::read_to_string(example_dir().join("release.yaml")).expect("read");
        for (from, to) in [
            (
                "\nrelease: stack\n",
                format!("\nrelease: {}\n", stack.release.name),
            ),
            (
                "127.0.0.1:18080:80",
                format!("127.0.0.1:{}:80", stack.proxy),
            ),
            (
                "127.0.0.1:19090:9090",
                format!("127.0.0.1:{}:9090", stack.prometheus),
            ),
            (
                "127.0.0.1:19093:9093",
                format!("127.0.0.1:{}:9093", stack.alertmanager),
            ),
            (
                "127.0.0.1:13000:3000",
                format!("127.0.0.1:{}:3000", stack.dashboards),
            ),
        ] {
            text = replace_once(&text, from, &to);
        }
        stack.repo.write("release.yaml", &text);
        stack.repo.commit("examples/stack");
        stack
    }

    /// `reconciler COMMAND --repo ...` (`snapshots verify` takes `--release` instead).
    fn reconciler(&self, command: &str) -> Output {
        let url = self.repo.url();
        let target = match command {
            "snapshots verify" => ["--release", self.release.name.as_str()],
            _ => ["--repo", url.as_str()],
        };
        let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(command.split(' '))
            .args(target)
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info")
            .env("STACK_PG_PASSWORD", PG_PASSWORD)
            .env(
                "STACK_DATABASE_URL",
                format!("postgres://postgres:{PG_PASSWORD}@postgres:5432/postgres"),
            )
            .output()
            .expect("reconciler runs");
        let printed = show(&out);
        assert!(
            !printed.contains(PG_PASSWORD),
            "`reconciler {command}` printed the password:\n{printed}"
        );
        out
    }

    fn apply(&self) {
        let out = self.reconciler("apply");
        assert!(out.status.success(), "apply failed:\n{}", show(&out));
    }

    fn edit_release(&self, from: &str, to: &str, message: &str) {
        let path = self.repo.path.join("release.yaml");
        let text = std::fs::read_to_string(&path).expect("read release.yaml");
        self.repo
            .write("release.yaml", &replace_once(&text, from, to));
        self.repo.commit(message);
    }

    fn psql(&self, sql: &str) -> String {
        docker(&[
            "exec",
            &self.release.obj("postgres"),
            "psql",
            "-U",
            "postgres",
            "-tAc",
            sql,
        ])
        .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
        .trim()
        .to_string()
    }

    /// The last history entry; the state dir never holds the password.
    fn last_deploy(&self) -> Value {
        let dir = self.state.path().join("releases").join(&self.release.name);
        for file in ["history.json", "jobs.json", "current.json"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(!text.contains(PG_PASSWORD), "{file} holds the password");
        }
        let text = std::fs::read_to_string(dir.join("history.json")).expect("history.json");
        let history: Value = serde_json::from_str(&text).expect("history JSON");
        history["entries"]
            .as_array()
            .and_then(|e| e.last())
            .cloned()
            .expect("a history entry")
    }

    /// `(job, phase, outcome)` of the jobs the last deploy ran.
    fn last_jobs(&self) -> Vec<(String, String, String)> {
        let entry = self.last_deploy();
        assert_eq!(entry["outcome"], "applied", "last deploy: {entry:#}");
        entry["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|j| {
                let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
                (s("job"), s("phase"), s("outcome"))
            })
            .collect()
    }

    /// Services whose snapshot the last deploy took, with the file's size.
    fn last_snapshots(&self) -> Vec<(String, u64)> {
        let entry = self.last_deploy();
        let dir = self.state.path().join("releases").join(&self.release.name);
        entry["snapshots"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let file = dir.join(s["file"].as_str().unwrap_or_default());
                let on_disk = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                assert_eq!(Some(on_disk), s["size"].as_u64(), "{}", file.display());
                (
                    s["service"].as_str().unwrap_or_default().to_string(),
                    on_disk,
                )
            })
            .collect()
    }

    fn body(&self, port: u16, path: &str) -> Result<String, String> {
        match get(port, path)? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET {path}: {status} {body}")),
        }
    }

    fn prometheus_api(&self, path: &str) -> Result<Value, String> {
        let body = self.body(self.prometheus, path)?;
        serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))
    }

    /// Names of the rules Prometheus has loaded.
    fn rule_names(&self) -> Result<Vec<String>, String> {
        let rules = self.prometheus_api("/api/v1/rules")?;
        Ok(rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect())
    }

    fn wait_for_rules(&self, names: &[&str]) {
        wait_for(
            "Prometheus lists the rules",
            Duration::from_secs(30),
            || {
                let have = self.rule_names()?;
                match names.iter().find(|n| !have.iter().any(|h| h == *n)) {
                    None => Ok(()),
                    Some(missing) => Err(format!("{missing} missing from {have:?}")),
                }
            },
        );
    }
}

fn job(name: &str, phase: &str) -> (String, String, String) {
    (name.to_string(), phase.to_string(), "succeeded".to_string())
}

#[test]
fn the_stack_example_converges_migrates_reloads_and_rolls_out() {
    ensure_images(&[
        "app",
        "nginx",
        "postgres",
        "redis",
        "prometheus",
        "alertmanager",
    ]);
    let stack = Stack::new();

    // First apply: everything from nothing, the migration before api's first color.
    stack.apply();
    assert_eq!(
        stack.last_jobs(),
        [job("api/migrate", "before"), job("release/smoke", "after")]
    );
    assert_eq!(
        stack.last_snapshots(),
        [],
        "nothing to back up before the first start"
    );
    assert_eq!(stack.body(stack.proxy, "/version").as_deref(), Ok("v1"));
    assert_eq!(
        stack.psql("SELECT version FROM schema_migrations"),
        "001_create_items"
    );
    assert_eq!(stack.psql("SELECT to_regclass('public.items')"), "items");
    let pong = docker(&["exec", &stack.release.obj("redis"), "redis-cli", "ping"]);
    assert_eq!(pong.map(|p| p.trim().to_string()), Ok("PONG".to_string()));
    // The worker runs and got its secret from the environment, not from git.
    let env = inspect(&stack.release.obj("worker"), "{{json .Config.Env}}");
    assert!(
        env.contains("DATABASE_URL=postgres://postgres:"),
        "worker env: {env}"
    );

    stack.wait_for_rules(&[
        "job:up:ratio",
        "StackTargetDown",
        "StackPrometheusConfigReloadFailed",
        "StackAlertmanagerConfigReloadFailed",
    ]);
    wait_for(
        "Prometheus scrapes itself and Alertmanager",
        Duration::from_secs(60),
        || {
            let targets = stack.prometheus_api("/api/v1/targets")?;
            let mut up: Vec<String> = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|t| t["health"] == "up")
                .filter_map(|t| t["labels"]["job"].as_str().map(str::to_string))
                .collect();
            up.sort();
            if up == ["alertmanager", "prometheus"] {
                Ok(())
            } else {
                Err(format!("up: {up:?} in {targets}"))
            }
        },
    );
    assert_eq!(
        get(stack.alertmanager, "/-/ready").map(|(status, _)| status),
        Ok(200)
    );
    let dashboard = stack
        .body(stack.dashboards, "/stack.json")
        .expect("dashboard");
    assert!(dashboard.contains("\"uid\": \"stack-overview\""));
    let provisioning = docker(&[
        "exec",
        &stack.release.obj("dashboards"),
        "cat",
        "/etc/grafana/provisioning/dashboards/stack.yml",
    ]);
    assert!(provisioning.is_ok_and(|p| p.contains("path: /var/lib/grafana/dashboards")));

    let diff = stack.reconciler("diff");
    assert_eq!(diff.status.code(), Some(0), "in sync:\n{}", show(&diff));

    // A new rule file: pushed into the running Prometheus and reloaded. The api is untouched,
    // so its migration does not run; the release changed, so the smoke test does.
    let prometheus_id = inspect(&stack.release.obj("prometheus"), "{{.Id}}");
    stack.repo.write(
        "monitoring/rules/api.yml",
        "groups:\n  - name: api\n    rules:\n      - alert: StackApiDown\n        expr: absent(up{job=\"api\"})\n        for: 10m\n",
    );
    stack.repo.commit("rules: StackApiDown");
    stack.apply();
    assert_eq!(stack.last_jobs(), [job("release/smoke", "after")]);
    assert_eq!(
        stack.last_snapshots(),
        [],
        "postgres and its dependents did not change"
    );
    assert_eq!(
        inspect(&stack.release.obj("prometheus"), "{{.Id}}"),
        prometheus_id,
        "a rule change recreated Prometheus"
    );
    stack.wait_for_rules(&["StackApiDown", "StackTargetDown"]);

    // api v1 -> v2: postgres is backed up (api depends on it), then the migration runs again
    // before the new color (jobs run when their service changes); its SQL is idempotent, so the
    // schema is as it was.
    stack.edit_release(
        "  api:\n    image: reconciler-test/app:v1",
        "  api:\n    image: reconciler-test/app:v2",
        "api v2",
    );
    stack.apply();
    assert_eq!(
        stack.last_jobs(),
        [job("api/migrate", "before"), job("release/smoke", "after")]
    );
    assert_eq!(stack.body(stack.proxy, "/version").as_deref(), Ok("v2"));
    assert_eq!(stack.psql("SELECT count(*) FROM schema_migrations"), "1");
    let snapshots = stack.last_snapshots();
    assert!(
        matches!(snapshots.as_slice(), [(service, size)] if service == "postgres" && *size > 0),
        "one snapshot of postgres: {snapshots:?}"
    );
    let verify = stack.reconciler("snapshots verify");
    assert!(
        verify.status.success(),
        "snapshots verify:\n{}",
        show(&verify)
    );
    assert_eq!(
        inspect(&stack.release.obj("worker"), "{{.Config.Image}}"),
        "reconciler-test/app:v1",
        "the worker is its own service"
    );

    // The same revision again: in sync, no job runs twice.
    let diff = stack.reconciler("diff");
    assert_eq!(diff.status.code(), Some(0), "in sync:\n{}", show(&diff));
}

/// Every `configs:` file of the example passes the checks a deploy runs: structure (schemas,
/// dashboards) and the images' own tools (promtool, amtool) in one-off containers.
#[tokio::test]
async fn the_stack_example_configs_pass_the_validators() {
    ensure_images(&["busybox", "prometheus", "alertmanager"]);
    let text = std::fs::read_to_string(example_dir().join("release.yaml")).expect("read");
    let loaded = reconciler::spec::load("examples/stack/release.yaml", &text)
        .unwrap_or_else(|e| panic!("examples/stack/release.yaml: {e}"));
    let t = TestRelease::new("stack-validate");
    let labels = BTreeMap::from([
        ("io.reconciler.test".to_string(), "1".to_string()),
        ("io.reconciler.release".to_string(), t.name.clone()),
    ]);
    let engine = engine().await;
    let mut tools = Vec::new();
    for (name, service) in &loaded.spec.services {
        let mut files = Vec::new();
        for config in &service.configs {
            let kind = config.effective_kind().as_str();
            let check = ConfigCheck::from_kind(kind, &config.source);
            for (source, target) in config_files(&config.source, &config.target) {
                let content = std::fs::read(example_dir().join(&source)).expect("config file");
                files.push((
                    check,
                    ConfigFile {
                        source,
                        target,
                        content,
                    },
                ));
            }
        }
        if files.is_empty() {
            continue;
        }
        let verdict = validate_service(&engine, &t.name, &service.image, &files, &labels)
            .await
            .expect("the checks ran");
        assert!(
            verdict.problems.is_empty(),
            "{name}: {:?}",
            verdict.problems
        );
        assert!(verdict.tools_absent.is_empty(), "{name}: {verdict:?}");
        tools.extend(verdict.tools_run);
    }
    tools.sort();
    assert_eq!(
        tools,
        [
            "amtool check-config",
            "promtool check config",
            "promtool check rules"
        ]
    );
}

/// `(repo path, container path)` of each file a config entry delivers.
fn config_files(source: &str, target: &str) -> Vec<(String, String)> {
    let Some(dir) = source.strip_suffix('/') else {
        return vec![(source.to_string(), target.to_string())];
    };
    let mut names: Vec<String> = std::fs::read_dir(example_dir().join(dir))
        .expect("config dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| (format!("{dir}/{n}"), format!("{target}{n}")))
        .collect()
}
