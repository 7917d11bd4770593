//! The nginx setup the blue-green, rolling, jobs and crash tests share: one route `/` to the
//! service `web`, and what the proxy serves at a given moment.

use super::docker::{docker, TestRelease};

/// nginx.conf routing every request to the upstream `web` (the reconciler renders it).
pub const WEB_NGINX_CONF: &str = "worker_processes 2;
events { worker_connections 1024; }
http {
    access_log off;
    include /etc/nginx/reconciler/upstreams.conf;
    server {
        listen 80;
        location / { proxy_pass http://web; }
    }
}
";

/// The release's `web` containers by id, sorted (running ones, or all when `all`), and the
/// upstreams file its proxy runs with: what must be unchanged after a refused release.
pub fn web_serving(release: &TestRelease, all: bool) -> (Vec<String>, String) {
    let ids = docker(&[
        "ps",
        if all { "-aq" } else { "-q" },
        "--no-trunc",
        "--filter",
        &release.label_filter(),
        "--filter",
        "label=io.reconciler.service=web",
    ])
    .unwrap_or_default();
    let mut ids: Vec<String> = ids.lines().map(str::to_string).collect();
    ids.sort();
    let upstreams = docker(&[
        "exec",
        &release.obj("proxy"),
        "cat",
        "/etc/nginx/reconciler/upstreams.conf",
    ])
    .unwrap_or_default();
    (ids, upstreams)
}
