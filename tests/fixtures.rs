//! Checks that the test-image fixtures behave as the other tests assume:
//! the app's endpoints and failure switches, prompt shutdown, concurrency,
//! nginx reloads, a push/pull round trip through the local registry, and the
//! service images: Prometheus (+ promtool), Alertmanager (+ amtool) and
//! PostgreSQL (init from env, dump/restore, clean stop, data kept on a volume).
//!
//! Uses the docker CLI for setup; every container carries `io.reconciler.test=1`
//! plus a per-test label, and a Drop guard removes them even when an
//! assertion fails.

mod common;

use common::images::{
    self, ALERTMANAGER, ALERTMANAGER_PORT, APP_PORT, APP_V1, APP_V2, APP_V3, NGINX, POSTGRES,
    POSTGRES_PORT, PROMETHEUS, PROMETHEUS_PORT, TEST_LABEL,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const CASE_LABEL_KEY: &str = "io.reconciler.test.case";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs docker with `input` on stdin; the output whatever the exit status.
fn docker_with_input(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run docker CLI");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write docker stdin");
    child.wait_with_output().expect("wait for docker CLI")
}

/// Removes every container, volume (and image tag) a test made when dropped.
struct Cleanup {
    case: String,
    image_tags: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    fn new(test: &str) -> Self {
        Cleanup {
            case: format!("fixtures-{test}-{}", std::process::id()),
            image_tags: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// A new named volume, labelled, removed on drop.
    fn volume(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.case);
        let case_label = self.case_label();
        docker(&[
            "volume",
            "create",
            "--label",
            TEST_LABEL,
            "--label",
            &case_label,
            &name,
        ]);
        self.volumes.push(name.clone());
        name
    }

    fn case_label(&self) -> String {
        format!("{CASE_LABEL_KEY}={}", self.case)
    }

    /// `docker run -d` with the test labels; returns the container id.
    fn run(&self, extra: &[&str], image: &str) -> String {
        let case_label = self.case_label();
        let mut args = vec!["run", "-d", "--label", TEST_LABEL, "--label", &case_label];
        args.extend_from_slice(extra);
        args.push(image);
        docker(&args)
    }

    /// Run an app container with port 8000 published on 127.0.0.1:<random>.
    fn run_app(&self, image: &str, env: &[&str]) -> (String, u16) {
        let publish = format!("127.0.0.1:0:{APP_PORT}");
        let mut extra = vec!["-p", publish.as_str()];
        for e in env {
            extra.push("-e");
            extra.push(e);
        }
        let id = self.run(&extra, image);
        let port = host_port(&id, APP_PORT);
        (id, port)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}", self.case_label());
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
        for tag in &self.image_tags {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

fn host_port(id: &str, container_port: u16) -> u16 {
    let out = docker(&["port", id, &format!("{container_port}/tcp")]);
    let line = out.lines().next().unwrap_or("");
    line.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse `docker port` output {out:?}"))
}

/// Minimal HTTP GET to 127.0.0.1:port; returns (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request("GET", port, path)
}

/// Minimal HTTP request without a body to 127.0.0.1:port; returns (status, body).
fn http_request(method: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    // An empty body must be announced on POST (Go servers answer 411 otherwise).
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response {text:?}"),
        )
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status {head:?}"),
            )
        })?;
    Ok((status, body.to_string()))
}

/// Poll `f` until it returns Some or the deadline passes.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the app answers HTTP at all (any status), then return GET path.
fn wait_http(port: u16, path: &str) -> (u16, String) {
    poll(
        &format!("HTTP on 127.0.0.1:{port}{path}"),
        Duration::from_secs(20),
        || http_get(port, path).ok(),
    )
}

#[test]
fn app_v1_serves_version_and_health() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("v1");
    let (_id, port) = c.run_app(APP_V1, &[]);
    assert_eq!(wait_http(port, "/version"), (200, "v1".to_string()));
    assert_eq!(http_get(port, "/health").unwrap(), (200, "ok".to_string()));
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);
}

#[test]
fn app_versions_are_baked_in_and_env_overrides() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("versions");
    let (_, p2) = c.run_app(APP_V2, &[]);
    let (_, p3) = c.run_app(APP_V3, &[]);
    let (_, po) = c.run_app(APP_V3, &["APP_VERSION=v42"]);
    assert_eq!(wait_http(p2, "/version"), (200, "v2".to_string()));
    assert_eq!(wait_http(p3, "/version"), (200, "v3".to_string()));
    assert_eq!(wait_http(po, "/version"), (200, "v42".to_string()));
}

#[test]
fn app_fail_health_answers_500() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("fail-health");
    let (_, port) = c.run_app(APP_V1, &["APP_FAIL_HEALTH=1"]);
    assert_eq!(wait_http(port, "/health").0, 500);
    assert_eq!(http_get(port, "/version").unwrap(), (200, "v1".to_string()));
}

#[test]
fn app_fail_verify_answers_500_on_version_only() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("fail-verify");
    let (_, port) = c.run_app(APP_V2, &["APP_FAIL_VERIFY=1"]);
    assert_eq!(wait_http(port, "/health"), (200, "ok".to_string()));
    assert_eq!(http_get(port, "/version").unwrap().0, 500);
}

#[test]
fn app_crash_exits_nonzero() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("crash-env");
    let id = c.run(&["-e", "APP_CRASH=1"], APP_V1);
    let code = poll(
        "APP_CRASH=1 container to exit",
        Duration::from_secs(20),
        || {
            let s = docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &id,
            ]);
            let (status, code) = s.split_once(' ')?;
            (status == "exited").then(|| code.to_string())
        },
    );
    assert_eq!(code, "1", "APP_CRASH=1 must exit with status 1");
}

#[test]
fn app_start_delay_postpones_listening() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("delay");
    let started = Instant::now();
    let (_, port) = c.run_app(APP_V1, &["APP_START_DELAY=2"]);
    assert_eq!(wait_http(port, "/health").0, 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "answered after {waited:?}, before APP_START_DELAY=2 elapsed"
    );
}

#[test]
fn app_stops_promptly_on_sigterm() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("stop");
    let (id, port) = c.run_app(APP_V1, &[]);
    assert_eq!(wait_http(port, "/health").0, 200);
    let t = Instant::now();
    docker(&["stop", "-t", "10", &id]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "docker stop took {took:?}");
    // Also while still sleeping in APP_START_DELAY.
    let id = c.run(&["-e", "APP_START_DELAY=30"], APP_V1);
    let t = Instant::now();
    docker(&["stop", "-t", "10", &id]);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "docker stop during start delay took {took:?}"
    );
}

#[test]
fn app_serves_concurrent_requests() {
    images::ensure_images(&["app"]);
    let c = Cleanup::new("concurrent");
    let (_, port) = c.run_app(APP_V1, &[]);
    assert_eq!(wait_http(port, "/health").0, 200);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..50 {
                    match http_get(port, "/version") {
                        Ok((200, body)) if body == "v1" => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("request thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 200 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn nginx_config_test_and_reload() {
    images::ensure_images(&["nginx"]);
    let c = Cleanup::new("nginx");
    let id = c.run(&["-p", "127.0.0.1:0:80"], NGINX);
    let port = host_port(&id, 80);
    assert_eq!(wait_http(port, "/nginx-health"), (200, "ok".to_string()));
    assert_eq!(http_get(port, "/").unwrap().0, 404);
    assert_eq!(
        docker(&["inspect", "-f", "{{.Config.StopSignal}}", &id]),
        "SIGQUIT"
    );
    docker(&[
        "exec",
        &id,
        "sh",
        "-c",
        "printf 'server {\\n listen 80;\\n location / { default_type text/plain; return 200 \"reloaded\"; }\\n}\\n' > /etc/nginx/conf.d/test.conf",
    ]);
    docker(&["exec", &id, "nginx", "-t"]);
    docker(&["kill", "-s", "HUP", &id]);
    let body = poll(
        "nginx to serve the reloaded config",
        Duration::from_secs(10),
        || match http_get(port, "/") {
            Ok((200, b)) => Some(b),
            _ => None,
        },
    );
    assert_eq!(body, "reloaded");
    let t = Instant::now();
    docker(&["stop", &id]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "nginx stop took {:?}",
        t.elapsed()
    );
}

#[test]
fn registry_push_pull_round_trip() {
    images::ensure_images(&["app"]);
    let port = images::ensure_registry();
    let mut c = Cleanup::new("registry");
    // A throwaway image whose layer exists nowhere else, so the pull must
    // really fetch it from the registry.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("{}-{nanos}", c.case);
    let cid = docker(&[
        "create",
        "--label",
        TEST_LABEL,
        "--label",
        &c.case_label(),
        images::BUSYBOX,
        "sh",
        "-c",
        &format!("echo {marker} > /marker"),
    ]);
    docker(&["start", "-a", &cid]);
    let tag = format!(
        "127.0.0.1:{port}/reconciler-test/probe:{}",
        std::process::id()
    );
    c.image_tags.push(tag.clone());
    docker(&["commit", &cid, &tag]);
    docker(&["push", &tag]);
    docker(&["rmi", &tag]);
    docker(&["pull", &tag]);
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            TEST_LABEL,
            "--label",
            &c.case_label(),
            &tag,
            "cat",
            "/marker",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), marker);
}

/// Writes `content` to `path` inside the running container `id`.
fn put_file(id: &str, path: &str, content: &str) {
    let out = docker_with_input(
        &["exec", "-i", id, "sh", "-c", &format!("cat > {path}")],
        content,
    );
    assert!(
        out.status.success(),
        "writing {path}: {}",
        common::show(&out)
    );
}

/// `docker exec` whatever its exit status.
fn exec(id: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("docker")
        .arg("exec")
        .arg(id)
        .args(cmd)
        .output()
        .expect("run docker CLI")
}

/// The sample values of a Prometheus instant query, as (labels, value) pairs.
fn prom_query(port: u16, query: &str) -> Option<Vec<(serde_json::Value, String)>> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={query}")).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap_or_default().to_string();
                (r["metric"].clone(), value)
            })
            .collect(),
    )
}

/// `docker stop` must end the container with exit code 0 well before the timeout.
fn assert_clean_stop(id: &str, what: &str) {
    let t = Instant::now();
    docker(&["stop", "-t", "30", id]);
    let took = t.elapsed();
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", id]);
    assert_eq!(code, "0", "{what} exit code after docker stop");
    assert!(
        took < Duration::from_secs(10),
        "{what}: docker stop took {took:?}"
    );
}

const PROMETHEUS_GOOD_CONFIG: &str = "global:
  scrape_interval: 5s
scrape_configs:
  - job_name: reconciler
    static_configs:
      - targets: ['127.0.0.1:9100']
";

const PROMETHEUS_BROKEN_CONFIG: &str = "global:
  scrape_interval: banana
scrape_configs: []
";

#[test]
fn prometheus_ready_scrapes_and_promtool_checks_configs() {
    images::ensure_images(&["prometheus"]);
    let mut c = Cleanup::new("prometheus");
    let vol = c.volume("tsdb");
    let mount = format!("{vol}:/prometheus");
    let id = c.run(
        &[
            "-p",
            &format!("127.0.0.1:0:{PROMETHEUS_PORT}"),
            "-v",
            &mount,
        ],
        PROMETHEUS,
    );
    let port = host_port(&id, PROMETHEUS_PORT);
    poll("Prometheus /-/ready", Duration::from_secs(30), || {
        matches!(http_get(port, "/-/ready"), Ok((200, _))).then_some(())
    });
    assert_eq!(docker(&["exec", &id, "id", "-un"]), "prometheus");

    // It scrapes (itself, with the image's default config) and stores on the volume.
    poll(
        "Prometheus to report up{job=\"prometheus\"} = 1",
        Duration::from_secs(30),
        || {
            let samples = prom_query(port, "up")?;
            samples
                .iter()
                .any(|(m, v)| m["job"] == "prometheus" && v == "1")
                .then_some(())
        },
    );
    let tsdb = docker(&["exec", &id, "ls", "/prometheus"]);
    assert!(
        tsdb.lines().any(|l| l == "wal"),
        "no TSDB WAL on the volume: {tsdb:?}"
    );

    // promtool accepts a good config and refuses a broken one, naming the problem.
    put_file(&id, "/tmp/good.yml", PROMETHEUS_GOOD_CONFIG);
    put_file(&id, "/tmp/broken.yml", PROMETHEUS_BROKEN_CONFIG);
    let good = exec(&id, &["promtool", "check", "config", "/tmp/good.yml"]);
    assert!(
        good.status.success(),
        "good config: {}",
        common::show(&good)
    );
    let broken = exec(&id, &["promtool", "check", "config", "/tmp/broken.yml"]);
    assert!(
        !broken.status.success(),
        "broken config accepted: {}",
        common::show(&broken)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&broken.stdout),
        String::from_utf8_lossy(&broken.stderr)
    );
    assert!(text.contains("banana"), "promtool output: {text}");

    // The lifecycle API is on: a reload of the unchanged config succeeds.
    assert_eq!(http_request("POST", port, "/-/reload").unwrap().0, 200);
    assert_clean_stop(&id, "prometheus");
}

/// stdout + stderr of a finished command, for matching tool messages.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const ALERTMANAGER_GOOD_CONFIG: &str = "route:
  receiver: hook
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:9/hook
";

/// The route names a receiver nobody defined.
const ALERTMANAGER_BROKEN_CONFIG: &str = "route:
  receiver: nobody
receivers:
  - name: hook
";

#[test]
fn alertmanager_ready_takes_alerts_and_amtool_checks_configs() {
    images::ensure_images(&["alertmanager"]);
    let c = Cleanup::new("alertmanager");
    let id = c.run(
        &["-p", &format!("127.0.0.1:0:{ALERTMANAGER_PORT}")],
        ALERTMANAGER,
    );
    let port = host_port(&id, ALERTMANAGER_PORT);
    poll("Alertmanager /-/ready", Duration::from_secs(30), || {
        matches!(http_get(port, "/-/ready"), Ok((200, _))).then_some(())
    });
    assert_eq!(docker(&["exec", &id, "id", "-un"]), "prometheus");

    // An alert posted with amtool comes back from the API.
    let url = format!("--alertmanager.url=http://127.0.0.1:{ALERTMANAGER_PORT}");
    let add = exec(
        &id,
        &[
            "amtool",
            &url,
            "alert",
            "add",
            "FixtureProbe",
            "severity=info",
        ],
    );
    assert!(
        add.status.success(),
        "amtool alert add: {}",
        common::show(&add)
    );
    poll(
        "the posted alert in /api/v2/alerts",
        Duration::from_secs(10),
        || {
            let (status, body) = http_get(port, "/api/v2/alerts").ok()?;
            (status == 200 && body.contains("FixtureProbe")).then_some(())
        },
    );

    let default = exec(
        &id,
        &["amtool", "check-config", "/etc/prometheus/alertmanager.yml"],
    );
    assert!(
        default.status.success(),
        "image's own config: {}",
        common::show(&default)
    );
    put_file(&id, "/tmp/good.yml", ALERTMANAGER_GOOD_CONFIG);
    put_file(&id, "/tmp/broken.yml", ALERTMANAGER_BROKEN_CONFIG);
    let good = exec(&id, &["amtool", "check-config", "/tmp/good.yml"]);
    assert!(
        good.status.success(),
        "good config: {}",
        common::show(&good)
    );
    let broken = exec(&id, &["amtool", "check-config", "/tmp/broken.yml"]);
    assert!(
        !broken.status.success(),
        "broken config accepted: {}",
        common::show(&broken)
    );
    let text = all_output(&broken);
    assert!(text.contains("nobody"), "amtool output: {text}");
    assert_clean_stop(&id, "alertmanager");
}

const PG_USER: &str = "fixture";
const PG_DB: &str = "fixturedb";

/// psql over TCP (password authentication) inside container `id`; the output whatever the
/// exit status.
fn psql_tcp(id: &str, password: &str, sql: &str) -> std::process::Output {
    let env = format!("PGPASSWORD={password}");
    Command::new("docker")
        .args(["exec", "-e", &env, id, "psql", "-h", "127.0.0.1"])
        .args([
            "-U",
            PG_USER,
            "-d",
            PG_DB,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ])
        .output()
        .expect("run docker CLI")
}

fn psql_ok(id: &str, password: &str, sql: &str) -> String {
    let out = psql_tcp(id, password, sql);
    assert!(out.status.success(), "psql {sql:?}: {}", common::show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the postgres image on `volume` and waits until it accepts TCP connections (the
/// entrypoint's setup server listens on the socket only, so this is after initialisation).
fn run_postgres(c: &Cleanup, volume: &str, password: &str) -> (String, u16) {
    let env_password = format!("POSTGRES_PASSWORD={password}");
    run_postgres_with(c, volume, &["-e", &env_password])
}

/// As [`run_postgres`], the password given by `extra` docker run arguments.
fn run_postgres_with(c: &Cleanup, volume: &str, extra: &[&str]) -> (String, u16) {
    let mount = format!("{volume}:/var/lib/postgresql/data");
    let env_user = format!("POSTGRES_USER={PG_USER}");
    let env_db = format!("POSTGRES_DB={PG_DB}");
    let publish = format!("127.0.0.1:0:{POSTGRES_PORT}");
    let mut args = vec!["-p", &publish, "-v", &mount, "-e", &env_user, "-e", &env_db];
    args.extend_from_slice(extra);
    let id = c.run(&args, POSTGRES);
    let port = host_port(&id, POSTGRES_PORT);
    poll(
        "PostgreSQL to accept TCP connections",
        Duration::from_secs(60),
        || {
            exec(&id, &["pg_isready", "-q", "-h", "127.0.0.1"])
                .status
                .success()
                .then_some(())
        },
    );
    // The published port reaches it from the host as well.
    TcpStream::connect(("127.0.0.1", port)).expect("connect to the published PostgreSQL port");
    (id, port)
}

#[test]
fn postgres_init_query_dump_restore_stop_and_keep_data() {
    images::ensure_images(&["postgres"]);
    let mut c = Cleanup::new("postgres");
    let vol = c.volume("pgdata");
    let (id, _) = run_postgres(&c, &vol, "first-pass");

    // Initialised from env: the user owns the database, the password is required over TCP.
    assert_eq!(
        psql_ok(
            &id,
            "first-pass",
            "select current_user || '@' || current_database()"
        ),
        format!("{PG_USER}@{PG_DB}")
    );
    let wrong = psql_tcp(&id, "wrong-pass", "select 1");
    assert!(!wrong.status.success(), "a wrong password was accepted");
    assert!(
        all_output(&wrong).contains("password authentication failed"),
        "{}",
        common::show(&wrong)
    );
    psql_ok(
        &id,
        "first-pass",
        "create table items(id int primary key, name text); \
         insert into items select g, 'item ' || g from generate_series(1, 1000) g",
    );

    // A custom-format dump lists the table, and restores into a fresh database.
    let dump = exec(
        &id,
        &[
            "pg_dump",
            "-U",
            PG_USER,
            "-d",
            PG_DB,
            "-Fc",
            "-f",
            "/tmp/db.dump",
        ],
    );
    assert!(dump.status.success(), "pg_dump: {}", common::show(&dump));
    let list = exec(&id, &["pg_restore", "--list", "/tmp/db.dump"]);
    assert!(
        list.status.success(),
        "pg_restore --list: {}",
        common::show(&list)
    );
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("TABLE public items"),
        "{}",
        common::show(&list)
    );
    psql_ok(&id, "first-pass", "create database restored");
    let restore = exec(
        &id,
        &[
            "pg_restore",
            "-U",
            PG_USER,
            "-d",
            "restored",
            "/tmp/db.dump",
        ],
    );
    assert!(
        restore.status.success(),
        "pg_restore: {}",
        common::show(&restore)
    );
    let restored = exec(
        &id,
        &[
            "psql",
            "-U",
            PG_USER,
            "-d",
            "restored",
            "-Atc",
            "select count(*) from items",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&restored.stdout).trim(), "1000");

    assert_clean_stop(&id, "postgres");
    let logs = Command::new("docker")
        .args(["logs", &id])
        .output()
        .expect("docker logs");
    assert!(
        all_output(&logs).contains("database system is shut down"),
        "no clean shutdown in the log: {}",
        common::show(&logs)
    );

    // A replacement container on the same volume keeps the data; the env of an already
    // initialised directory is ignored (the first password still applies).
    docker(&["rm", &id]);
    let (id2, _) = run_postgres(&c, &vol, "second-pass");
    assert_eq!(
        psql_ok(&id2, "first-pass", "select count(*), max(name) from items"),
        "1000|item 999"
    );
    assert_clean_stop(&id2, "replacement postgres");
}

#[test]
fn postgres_refuses_to_initialise_without_a_password() {
    images::ensure_images(&["postgres"]);
    let c = Cleanup::new("postgres-nopass");
    let id = c.run(&[], POSTGRES);
    let code = poll(
        "postgres without POSTGRES_PASSWORD to exit",
        Duration::from_secs(30),
        || {
            let s = docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &id,
            ]);
            let (status, code) = s.split_once(' ')?;
            (status == "exited").then(|| code.to_string())
        },
    );
    assert_eq!(code, "1");
    let logs = Command::new("docker")
        .args(["logs", &id])
        .output()
        .expect("docker logs");
    assert!(
        all_output(&logs).contains("POSTGRES_PASSWORD"),
        "{}",
        common::show(&logs)
    );
}

#[test]
fn postgres_takes_the_password_from_a_file() {
    images::ensure_images(&["postgres"]);
    let mut c = Cleanup::new("postgres-pwfile");
    let vol = c.volume("pgdata");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pg-password");
    std::fs::write(&file, "from-a-file\n").expect("write password file");
    // Read by the postgres user in the container, as with Docker secrets (0444).
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .expect("chmod");
    let mount = format!("{}:/run/secrets/pg-password:ro", file.display());
    let (id, _) = run_postgres_with(
        &c,
        &vol,
        &[
            "-v",
            &mount,
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/pg-password",
        ],
    );
    assert_eq!(psql_ok(&id, "from-a-file", "select 1"), "1");
    let logs = Command::new("docker")
        .args(["logs", &id])
        .output()
        .expect("docker logs");
    assert!(
        !all_output(&logs).contains("from-a-file"),
        "the password is in the log: {}",
        common::show(&logs)
    );
}
