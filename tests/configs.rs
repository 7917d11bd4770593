//! `configs:` end to end with the real binary, a real git repo and a real Prometheus
//! (reconciler-test/prometheus:1): a rule change reaches the running Prometheus without a
//! restart, its TSDB keeps its series, a broken rule is refused (by the structural checks, or
//! by promtool in a one-off container) before anything changes, and a config Prometheus
//! rejects at reload is rolled back (the previous files back and reloaded, the same container,
//! the release failed with the reason).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{docker, inspect, instant, mutating_events, TestRelease};
use common::gitrepo::TestRepo;
use common::images::ensure_images;
use common::load::get;
use common::{free_port, show};
use serde_json::Value;

const PROMETHEUS_YML: &str = r#"global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: ["/etc/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: prometheus
    static_configs: [{ targets: ["localhost:9090"] }]
"#;

fn rule(name: &str, expr: &str) -> String {
    format!("groups:\n  - name: test\n    rules:\n      - record: {name}\n        expr: {expr}\n")
}

pub struct Host {
    pub release: TestRelease,
    pub repo: TestRepo,
    state: tempfile::TempDir,
    pub port: u16,
    /// The `reload:` value.
    pub reload: &'static str,
    /// The `ready:` value.
    pub ready: &'static str,
    /// The `kind:` of prometheus.yml and of the rules directory (`file` skips every validator;
    /// a `prometheus` config alone makes promtool check the rules it loads).
    pub config_kind: &'static str,
    pub rules_kind: &'static str,
    /// monitoring/prometheus.yml.
    pub prometheus_yml: String,
}

impl Host {
    pub fn new(test: &str) -> Host {
        ensure_images(&["prometheus"]);
        Host {
            release: TestRelease::new(test),
            repo: TestRepo::new(),
            state: tempfile::tempdir().expect("state dir"),
            port: free_port(),
            reload: "{ http: { port: 9090, path: /-/reload, method: POST } }",
            ready: "{ http: { port: 9090, path: /-/ready }, interval: 200ms, deadline: 30s }",
            config_kind: "prometheus",
            rules_kind: "prometheus-rules",
            prometheus_yml: PROMETHEUS_YML.to_string(),
        }
    }

    /// Commits the release with `rules` (file name → content) in monitoring/rules/.
    pub fn commit(&self, rules: &[(&str, String)]) -> String {
        let spec = format!(
            r#"version: 1
release: {release}
volumes: {{ prom-data: {{}} }}
services:
  prometheus:
    image: reconciler-test/prometheus:1
    ports: ["127.0.0.1:{port}:9090"]
    volumes: ["prom-data:/prometheus"]
    labels: {{ io.reconciler.test: "1" }}
    stop_grace_period: 5s
    health: {{ http: {{ port: 9090, path: /-/ready }}, interval: 200ms, deadline: 60s }}
    configs:
      - {{ source: monitoring/prometheus.yml, target: /etc/prometheus/prometheus.yml, kind: {config_kind} }}
      - {{ source: monitoring/rules/, target: /etc/prometheus/rules/, kind: {rules_kind} }}
    reload: {reload}
    ready: {ready}
"#,
            release = self.release.name,
            port = self.port,
            reload = self.reload,
            ready = self.ready,
            config_kind = self.config_kind,
            rules_kind = self.rules_kind,
        );
        let dir = self.repo.path.join("monitoring/rules");
        let _ = std::fs::remove_dir_all(&dir);
        self.repo
            .write("release.yaml", &spec)
            .write("monitoring/prometheus.yml", &self.prometheus_yml);
        for (name, content) in rules {
            self.repo
                .write(&format!("monitoring/rules/{name}"), content);
        }
        self.repo.commit("rules")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let url = self.repo.url();
        let mut c = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        c.args(args)
            .args(["--repo", url.as_str()])
            .arg("--state-dir")
            .arg(self.state.path())
            .env("RECONCILER_LOG", "info");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("reconciler runs")
    }

    fn release_file(&self, name: &str) -> std::path::PathBuf {
        self.state
            .path()
            .join("releases")
            .join(&self.release.name)
            .join(name)
    }

    pub fn container(&self) -> String {
        self.release.obj("prometheus")
    }

    fn history(&self) -> Vec<Value> {
        let path = self.release_file("history.json");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        serde_json::from_str::<Value>(&text).unwrap_or_default()["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The file in the container, by the docker CLI (not the code under test).
    fn file(&self, path: &str) -> Option<String> {
        docker(&["exec", &self.container(), "cat", path]).ok()
    }

    pub fn rules_api(&self) -> String {
        get(self.port, "/api/v1/rules")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

/// Polls `cond` until it holds; panics with `what` at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn started_at(name: &str) -> String {
    inspect(name, "{{.State.StartedAt}}")
}

#[test]
fn a_rule_change_reaches_running_prometheus_without_a_restart_and_keeps_its_data() {
    let host = Host::new("configs-rule");
    host.commit(&[("a.yml", rule("test:up:v1", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let name = host.container();
    let id = inspect(&name, "{{.Id}}");
    let started = started_at(&name);
    wait_for("rule v1 loaded", Duration::from_secs(30), || {
        host.rules_api().contains("test:up:v1")
    });

    // Unchanged files: nothing to do.
    let out = host.run(&["diff", "--output", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("diff JSON");
    assert_eq!(plan["in_sync"], true, "{}", show(&out));

    // A series sample in the TSDB before the change.
    let mut before = 0.0;
    wait_for("a sample of `up`", Duration::from_secs(30), || {
        let Ok((200, body)) = get(host.port, "/api/v1/query?query=time()") else {
            return false;
        };
        let Some(now) = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            v["data"]["result"][0]
                .as_f64()
                .or_else(|| v["data"]["result"][0].as_str().and_then(|s| s.parse().ok()))
        }) else {
            return false;
        };
        before = now;
        get(host.port, &format!("/api/v1/query?query=up&time={now}"))
            .is_ok_and(|(_, b)| b.contains("\"job\":\"prometheus\""))
    });

    // The rule changes (and a file is added): pushed and reloaded, never recreated.
    host.commit(&[
        ("a.yml", rule("test:up:v2", "up")),
        ("b.yml", rule("test:up:b", "up")),
    ]);
    let out = host.run(&["diff", "--steps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("configs./etc/prometheus/rules/a.yml:") && text.contains("push_configs"),
        "{text}"
    );
    let steps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|k| ["push_configs", "reload", "ready", "create", "stop", "start"].contains(k))
        .collect();
    assert_eq!(steps, ["push_configs", "reload", "ready"], "{text}");
    let since = instant();
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = mutating_events(&host.release.name, since, instant());
    assert!(
        events.is_empty(),
        "a config push touched containers: {events:?}"
    );
    let rules = host.rules_api();
    assert!(
        rules.contains("test:up:v2")
            && rules.contains("test:up:b")
            && !rules.contains("test:up:v1"),
        "{rules}"
    );
    assert_eq!(inspect(&name, "{{.Id}}"), id, "the container was recreated");
    assert_eq!(started_at(&name), started, "the container was restarted");
    let (_, body) = get(host.port, &format!("/api/v1/query?query=up&time={before}")).unwrap();
    assert!(
        body.contains("\"job\":\"prometheus\""),
        "series lost: {body}"
    );

    // A rule file removed from the repo is removed from the container.
    host.commit(&[("a.yml", rule("test:up:v2", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(host.file("/etc/prometheus/rules/b.yml"), None);
    assert!(!host.rules_api().contains("test:up:b"));
    let out = host.run(&["diff", "--output", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("diff JSON");
    assert_eq!(plan["in_sync"], true, "{}", show(&out));

    // A hand edit inside the container is drift: the next apply puts the commit's file back.
    docker(&[
        "exec",
        "-u",
        "0",
        &name,
        "sh",
        "-c",
        "echo '# edited' >> /etc/prometheus/rules/a.yml",
    ])
    .expect("hand edit");
    let out = host.run(&["diff", "--output", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("diff JSON");
    assert_eq!(plan["in_sync"], false, "{}", show(&out));
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        host.file("/etc/prometheus/rules/a.yml").as_deref(),
        Some(rule("test:up:v2", "up").as_str())
    );
    assert_eq!(inspect(&name, "{{.Id}}"), id);
}

/// A rule that parses as YAML and fits the rules schema but is not PromQL: promtool, run in a
/// one-off container of the service's image, refuses it, and nothing on the host changes.
#[test]
fn a_broken_rule_is_refused_by_promtool_before_anything_changes() {
    let host = Host::new("configs-promtool");
    host.commit(&[("a.yml", rule("test:up:good", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let name = host.container();
    let (id, started) = (inspect(&name, "{{.Id}}"), started_at(&name));
    let good = host.file("/etc/prometheus/rules/a.yml");

    host.commit(&[("a.yml", rule("test:up:bad", "\"up((\""))]);
    let since = instant();
    let out = host.run(&["apply"]);
    let until = instant();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("monitoring/rules/a.yml")
            && stderr.contains("promtool check")
            && stderr.contains("unclosed left parenthesis"),
        "{}",
        show(&out)
    );
    let last = host.history().last().cloned().expect("a history entry");
    assert_eq!(
        last["failure"]["step"]["action"], "check_configs",
        "{last:#}"
    );
    assert_eq!(
        mutating_events(&host.release.name, since, until),
        Vec::<String>::new(),
        "the release's containers were touched"
    );
    assert_eq!(inspect(&name, "{{.Id}}"), id);
    assert_eq!(started_at(&name), started);
    assert_eq!(host.file("/etc/prometheus/rules/a.yml"), good);
    assert!(host.rules_api().contains("test:up:good"));
    // The one-off check container is gone.
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.reconciler.check-release={}", host.release.name),
    ])
    .unwrap_or_default();
    assert_eq!(left.trim(), "", "a check container was left");
}

/// A rule file without `expr` fails the structural check when the spec is resolved: `validate`
/// and `apply` name the file and the fix, without Docker being touched.
#[test]
fn a_rule_without_expr_is_refused_when_the_spec_is_resolved() {
    let host = Host::new("configs-schema");
    host.commit(&[(
        "a.yml",
        "groups:\n  - name: test\n    rules:\n      - record: test:up\n".to_string(),
    )]);
    for command in ["validate", "apply"] {
        let out = host.run(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("services.prometheus.configs.1.source")
                && stderr.contains("monitoring/rules/a.yml")
                && stderr.contains("expr"),
            "{command}: {}",
            show(&out)
        );
    }
    assert!(!common::docker::container_exists(&host.container()));
}

#[test]
fn a_ready_probe_that_fails_after_the_reload_rolls_the_files_back() {
    let mut host = Host::new("configs-ready");
    host.commit(&[("a.yml", rule("test:up:first", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let id = inspect(&host.container(), "{{.Id}}");

    // The reload succeeds, but the (new) ready probe never passes.
    host.ready = "{ http: { port: 9090, path: /no-such-page }, interval: 200ms, deadline: 2s }";
    host.commit(&[("a.yml", rule("test:up:second", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let last = host.history().last().cloned().expect("a history entry");
    assert_eq!(last["failure"]["step"]["action"], "ready", "{last:#}");
    assert_eq!(inspect(&host.container(), "{{.Id}}"), id);
    assert_eq!(
        host.file("/etc/prometheus/rules/a.yml").as_deref(),
        Some(rule("test:up:first", "up").as_str())
    );
    // Reloaded with the previous rule.
    let rules = host.rules_api();
    assert!(
        rules.contains("test:up:first") && !rules.contains("test:up:second"),
        "{rules}"
    );
}

#[test]
fn a_rejected_config_is_rolled_back_in_the_same_container() {
    let mut host = Host::new("configs-bad");
    // `kind: file`: no validator runs, so the broken rule reaches Prometheus' reload.
    host.config_kind = "file";
    host.rules_kind = "file";
    host.commit(&[("a.yml", rule("test:up:good", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let name = host.container();
    let id = inspect(&name, "{{.Id}}");
    let good = host
        .file("/etc/prometheus/rules/a.yml")
        .expect("rules delivered");

    // A rule Prometheus cannot parse, and a new file: its reload fails.
    let bad = host.commit(&[
        ("a.yml", rule("test:up:bad", "\"up((\"")),
        ("new.yml", rule("test:up:new", "up")),
    ]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    assert_eq!(inspect(&name, "{{.Id}}"), id, "the container was recreated");
    assert_eq!(host.file("/etc/prometheus/rules/a.yml"), Some(good));
    assert_eq!(host.file("/etc/prometheus/rules/new.yml"), None);
    // Reloaded with the previous files: Prometheus reports a good config and the old rule.
    let (_, metrics) = get(host.port, "/metrics").unwrap();
    assert!(
        metrics.contains("prometheus_config_last_reload_successful 1"),
        "{metrics}"
    );
    assert!(host.rules_api().contains("test:up:good"));

    let history = host.history();
    let last = history.last().expect("a history entry");
    assert_eq!(last["revision"], bad.as_str());
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["failure"]["step"]["action"], "reload", "{last:#}");
    let reason = last["failure"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("/-/reload") && reason.contains("500"),
        "{reason}"
    );
    assert!(
        last["failure"]["rollback_errors"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{last:#}"
    );
}

#[test]
fn a_sighup_reload_is_checked_through_prometheus_metrics() {
    let mut host = Host::new("configs-hup");
    host.reload = "{ signal: SIGHUP }";
    // prometheus.yml unchecked (`kind: file`), so the broken one below reaches Prometheus; the
    // rules keep their kind, which turns on the reload check through Prometheus' metrics.
    host.config_kind = "file";
    host.commit(&[("a.yml", rule("test:up:one", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let id = inspect(&host.container(), "{{.Id}}");

    host.commit(&[("a.yml", rule("test:up:two", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(host.rules_api().contains("test:up:two"));

    // A scrape timeout longer than its interval: Prometheus refuses the file at its reload.
    host.prometheus_yml = PROMETHEUS_YML.replace(
        "  - job_name: prometheus\n",
        "  - job_name: prometheus\n    scrape_interval: 1s\n    scrape_timeout: 5s\n",
    );
    assert_ne!(host.prometheus_yml, PROMETHEUS_YML);
    host.commit(&[("a.yml", rule("test:up:two", "up"))]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let last = host.history().last().cloned().expect("a history entry");
    let reason = last["failure"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("rejected the new config"), "{last:#}");
    assert_eq!(inspect(&host.container(), "{{.Id}}"), id);
    let (_, metrics) = get(host.port, "/metrics").unwrap();
    assert!(
        metrics.contains("prometheus_config_last_reload_successful 1"),
        "the previous files were not reloaded: {metrics}"
    );
    assert!(host.rules_api().contains("test:up:two"));
}

#[test]
fn a_push_killed_midway_is_put_back_from_the_journal() {
    let host = Host::new("configs-crash");
    let old_rule = rule("test:up:old", "up");
    host.commit(&[("a.yml", old_rule.clone())]);
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Killed after the push (step 1, after the tool check) ran, before it was recorded as done.
    host.commit(&[("a.yml", rule("test:up:new", "up"))]);
    let marker = host.state.path().join("paused");
    let mut child = host
        .command(&["apply"])
        .env("RECONCILER_TEST_PAUSE_AT", "1:after")
        .env("RECONCILER_TEST_PAUSE_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("reconciler starts");
    let start = Instant::now();
    while !marker.exists() && start.elapsed() < Duration::from_secs(60) {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(marker.exists(), "apply did not pause after the push");
    assert!(host
        .file("/etc/prometheus/rules/a.yml")
        .unwrap()
        .contains("test:up:new"));

    // The journal holds the file as it was before the push, and matches its schema.
    let text = std::fs::read_to_string(host.release_file("journal.json")).expect("journal");
    let journal: Value = serde_json::from_str(&text).expect("journal parses");
    common::assert_schema("journal.schema.json", &journal);
    let step = &journal["steps"][1];
    assert_eq!(step["step"]["op"], "push_configs", "{journal:#}");
    assert_eq!(
        step["previous_files"][0]["path"],
        "/etc/prometheus/rules/a.yml"
    );
    assert_eq!(
        step["previous_files"][0]["content"]["text"],
        old_rule.as_str()
    );

    // The next apply puts the old file back and reloads (recovery), then deploys again.
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("recovery: ")),
        "{}",
        show(&out)
    );
    assert!(host.rules_api().contains("test:up:new"));
    assert!(!host.release_file("journal.json").exists());
}

const NGINX_CONF: &str = "events { worker_connections 64; }
http {
    access_log off;
    include /etc/nginx/reconciler/upstreams.conf;
    server { listen 80; location / { proxy_pass http://web; } }
}
";

#[test]
fn a_blue_green_service_gets_its_configs_seeded_per_color_and_pushed_into_the_serving_one() {
    ensure_images(&["app", "nginx"]);
    let host = Host::new("configs-bg");
    let commit = |version: &str, greeting: &str| {
        let spec = format!(
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
    stop_grace_period: 2s
    health: {{ http: {{ port: 8000, path: /health }}, interval: 250ms, deadline: 10s }}
    drain: 1s
    configs: [{{ source: app/greeting.txt, target: /etc/app/greeting.txt }}]
    ready: {{ http: {{ port: 8000, path: /health }} }}
"#,
            release = host.release.name,
            port = host.port,
        );
        host.repo
            .write("release.yaml", &spec)
            .write("nginx.conf", NGINX_CONF)
            .write("app/greeting.txt", greeting);
        host.repo.commit(greeting);
    };
    let cat = |name: &str| docker(&["exec", name, "cat", "/etc/app/greeting.txt"]).ok();
    let blue = host.release.obj("web-blue");
    let green = host.release.obj("web-green");

    commit("v1", "hello\n");
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(cat(&blue).as_deref(), Some("hello\n"));
    let id = inspect(&blue, "{{.Id}}");

    // Only the file changes: pushed into the serving color, no new color.
    commit("v1", "bye\n");
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(cat(&blue).as_deref(), Some("bye\n"));
    assert_eq!(inspect(&blue, "{{.Id}}"), id);
    assert!(
        docker(&["inspect", &green]).is_err(),
        "a new color was started"
    );

    // A new image: the new color starts with the file already in place.
    commit("v2", "bye\n");
    let out = host.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(cat(&green).as_deref(), Some("bye\n"));
    assert!(
        docker(&["inspect", &blue]).is_err(),
        "the old color was not removed"
    );
}
