//! The proxy against a real nginx: deliver upstreams, `nginx -t`, graceful reload, undo.

mod common;

use common::free_port;

use std::time::{Duration, Instant};

use common::docker::{docker, inspect, TestRelease, APP_V1, APP_V2};
use reconciler::engine::Engine;
use reconciler::proxy::{self, ProxyError, ProxyFile, Servers, UpstreamTarget};

const NGINX: &str = "reconciler-test/nginx:1";
const UPSTREAMS: &str = "/etc/nginx/reconciler/upstreams.conf";
const NGINX_CONF: &str = "\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 128; }
http {
    access_log off;
    include /etc/nginx/reconciler/upstreams.conf;
    server {
        listen 80;
        location / { proxy_pass http://api; }
    }
}
";

struct Setup {
    rel: TestRelease,
    proxy: String,
    port: u16,
    http: reqwest::Client,
}

fn upstreams(rel: &str, color: &str) -> ProxyFile {
    let target = UpstreamTarget {
        upstream: "api".into(),
        service: "api".into(),
        servers: Servers::Color {
            color: color.into(),
            container: format!("{rel}-api-{color}"),
        },
        port: 8000,
    };
    ProxyFile {
        path: UPSTREAMS.into(),
        content: proxy::render_upstreams(rel, &[target]),
    }
}

/// A network, `api-blue` (v1) and `api-green` (v2) on it, and nginx seeded with the config
/// and upstreams pointing at blue, then started.
async fn setup(engine: &Engine, test: &str) -> Setup {
    let images = [APP_V1, APP_V2, NGINX];
    common::docker::require_images(&images);
    let rel = TestRelease::new(test);
    let label = format!("io.reconciler.release={}", rel.name);
    let net = rel.obj("net");
    docker(&["network", "create", "--label", &label, &net]).unwrap();
    for (color, image) in [("blue", APP_V1), ("green", APP_V2)] {
        let name = rel.obj(&format!("api-{color}"));
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &net,
            image,
        ])
        .unwrap_or_else(|e| panic!("docker run {name}: {e}"));
    }
    let proxy = rel.obj("proxy");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    docker(&[
        "create",
        "--name",
        &proxy,
        "--label",
        &label,
        "--network",
        &net,
        "-p",
        &publish,
        NGINX,
    ])
    .unwrap();
    proxy::seed(
        engine,
        &proxy,
        &[
            ProxyFile {
                path: "/etc/nginx/nginx.conf".into(),
                content: NGINX_CONF.into(),
            },
            upstreams(&rel.name, "blue"),
        ],
    )
    .await
    .unwrap();
    docker(&["start", &proxy]).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let setup = Setup {
        rel,
        proxy,
        port,
        http,
    };
    setup.wait_for_version("v1").await;
    setup
}

impl Setup {
    async fn version(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/version", self.port);
        let resp = self.http.get(&url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok().map(|t| t.trim().to_string())
    }

    /// Waits for the first answer (containers starting); then every answer must be `want`.
    async fn wait_for_version(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.version().await;
            if last.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxy never answered {want}; last answer {last:?}");
    }

    /// The answer right now, with no waiting: after `install` returns, the switch is done.
    async fn assert_serves(&self, want: &str) {
        for _ in 0..5 {
            assert_eq!(self.version().await.as_deref(), Some(want));
        }
    }
}

#[tokio::test]
async fn install_switches_colors_without_restart_and_restores() {
    let engine = common::docker::engine().await;
    let s = setup(&engine, "proxy-switch").await;
    let rel = s.rel.name.clone();
    let id = inspect(&s.proxy, "{{.Id}}");
    let started = inspect(&s.proxy, "{{.State.StartedAt}}");

    let read = engine
        .read_file(&s.proxy, UPSTREAMS)
        .await
        .unwrap()
        .unwrap();
    let colors = proxy::serving_colors(&String::from_utf8_lossy(&read));
    assert_eq!(colors["api"], ("api".into(), "blue".into()));

    // Install green: v2 at once, same container, not restarted.
    let t = Instant::now();
    let previous = proxy::install(&engine, &s.proxy, &[upstreams(&rel, "green")])
        .await
        .unwrap();
    let install_took = t.elapsed();
    s.assert_serves("v2").await;
    assert_eq!(inspect(&s.proxy, "{{.Id}}"), id);
    assert_eq!(inspect(&s.proxy, "{{.State.StartedAt}}"), started);
    assert_eq!(inspect(&s.proxy, "{{.RestartCount}}"), "0");
    assert_eq!(previous.len(), 1);
    assert_eq!(
        proxy::serving_colors(&previous[0].text().unwrap())["api"].1,
        "blue"
    );

    // Old workers drain: the count is known (busybox ps) and reaches 0.
    let t = Instant::now();
    let mut drained = None;
    while t.elapsed() < Duration::from_secs(15) {
        let n = proxy::old_workers(&engine, &s.proxy).await.unwrap();
        assert!(n.is_some(), "the nginx test image has busybox ps");
        if n == Some(0) {
            drained = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = drained.expect("old workers never exited");

    // Restore: blue again.
    let t = Instant::now();
    proxy::restore(&engine, &s.proxy, &previous).await.unwrap();
    let restore_took = t.elapsed();
    s.assert_serves("v1").await;
    assert_eq!(inspect(&s.proxy, "{{.Id}}"), id);
    assert_eq!(inspect(&s.proxy, "{{.RestartCount}}"), "0");

    // A plain reload of the files in place confirms too.
    let reloaded = proxy::reload(&engine, &s.proxy).await.unwrap();
    assert!(
        matches!(reloaded, proxy::Reloaded::Confirmed(_)),
        "{reloaded:?}"
    );

    eprintln!(
        "timings: install+reload {install_took:?}, restore {restore_took:?}, \
         old workers gone after {drained:?}, reload {reloaded:?}"
    );
}

#[tokio::test]
async fn broken_config_is_rejected_and_the_previous_files_stay() {
    let engine = common::docker::engine().await;
    let s = setup(&engine, "proxy-broken").await;
    let rel = s.rel.name.clone();
    proxy::install(&engine, &s.proxy, &[upstreams(&rel, "green")])
        .await
        .unwrap();
    s.assert_serves("v2").await;
    let good = engine.read_file(&s.proxy, UPSTREAMS).await.unwrap();

    let extra = "/etc/nginx/reconciler/new-dir/extra.conf";
    let broken = [
        ProxyFile {
            path: UPSTREAMS.into(),
            content: "upstream api { server; }\n".into(),
        },
        ProxyFile {
            path: extra.into(),
            content: "# did not exist before\n".into(),
        },
    ];
    let err = proxy::install(&engine, &s.proxy, &broken)
        .await
        .unwrap_err();
    match &err {
        ProxyError::ConfigTest {
            container,
            files,
            message,
        } => {
            assert_eq!(container, &s.proxy);
            assert_eq!(files, &vec![UPSTREAMS.to_string(), extra.to_string()]);
            // nginx's own words, naming the file.
            assert!(message.contains("[emerg]"), "{message}");
            assert!(message.contains(UPSTREAMS), "{message}");
        }
        other => panic!("expected ConfigTest, got {other:?}"),
    }
    assert!(err.to_string().contains(&s.proxy), "{err}");
    // The previous file is back, the new one is gone, and v2 still serves.
    assert_eq!(engine.read_file(&s.proxy, UPSTREAMS).await.unwrap(), good);
    assert_eq!(engine.read_file(&s.proxy, extra).await.unwrap(), None);
    s.assert_serves("v2").await;

    // An upstream whose container does not exist fails the test too (nginx resolves names).
    let mut missing = upstreams(&rel, "green");
    missing.content = missing.content.replace("-api-green", "-api-purple");
    let err = proxy::install(&engine, &s.proxy, &[missing])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProxyError::ConfigTest { message, .. } if message.contains("host not found")),
        "{err:?}"
    );
    assert_eq!(engine.read_file(&s.proxy, UPSTREAMS).await.unwrap(), good);
    s.assert_serves("v2").await;
}

#[tokio::test]
async fn proxy_errors_name_the_container() {
    let engine = common::docker::engine().await;
    let missing = common::docker::release_name("proxy-gone");
    let err = proxy::install(&engine, &missing, &[upstreams("x", "blue")])
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");
    let err = proxy::seed(&engine, &missing, &[upstreams("x", "blue")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains(UPSTREAMS), "{err}");
}
