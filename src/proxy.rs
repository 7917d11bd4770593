//! STUB, replaced by the proxy module being written on branch wip-proxy: only the pure
//! rendering used by the planner, so the planner compiles and is tested meanwhile.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamTarget {
    pub upstream: String,
    pub service: String,
    pub color: String,
    pub container: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyFile {
    pub path: String,
    pub content: String,
}

pub fn render_upstreams(release: &str, targets: &[UpstreamTarget]) -> String {
    let mut out = format!("# Rendered by reconciler for release {release}.\n");
    for t in targets {
        out.push_str(&format!(
            "# reconciler: upstream={} service={} color={}\nupstream {} {{\n    server {}:{};\n}}\n",
            t.upstream, t.service, t.color, t.upstream, t.container, t.port
        ));
    }
    out
}

pub fn serving_colors(rendered: &str) -> BTreeMap<String, (String, String)> {
    let mut map = BTreeMap::new();
    for line in rendered.lines() {
        let Some(rest) = line.strip_prefix("# reconciler: ") else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = rest
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let (Some(u), Some(s), Some(c)) = (
            fields.get("upstream"),
            fields.get("service"),
            fields.get("color"),
        ) {
            map.insert(u.to_string(), (s.to_string(), c.to_string()));
        }
    }
    map
}

#[derive(Debug, Clone)]
pub struct PreviousFile {
    pub path: String,
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("proxy stub: {0}")]
pub struct ProxyError(String);

pub async fn install(
    _engine: &crate::engine::Engine,
    container: &str,
    _files: &[ProxyFile],
) -> Result<Vec<PreviousFile>, ProxyError> {
    Err(ProxyError(container.to_string()))
}

pub async fn restore(
    _engine: &crate::engine::Engine,
    container: &str,
    _previous: &[PreviousFile],
) -> Result<(), ProxyError> {
    Err(ProxyError(container.to_string()))
}

pub async fn seed(
    _engine: &crate::engine::Engine,
    container: &str,
    _files: &[ProxyFile],
) -> Result<(), ProxyError> {
    Err(ProxyError(container.to_string()))
}

pub async fn old_workers(
    _engine: &crate::engine::Engine,
    _container: &str,
) -> Result<Option<usize>, ProxyError> {
    Ok(None)
}
