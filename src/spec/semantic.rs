//! Checks that need the whole spec: references between sections, cycles, clashes, and secrets
//! or placeholders written where they must not be. Each returns [`Issue`]s with a dotted path;
//! the loader gives them their place in the file.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::model::{DependsOn, Environment, ReleaseSpec, ServiceNetworks, ServiceSpec, Strategy};
use super::schema::Issue;

/// All checks on a structurally valid spec.
pub fn check(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    out.extend(check_networks_declared(spec));
    out.extend(check_volumes_declared(spec));
    out.extend(check_dependencies_known(spec));
    out.extend(check_dependency_cycles(spec));
    out.extend(check_port_clashes(spec));
    out.extend(check_literal_secrets(spec));
    out.extend(check_strategy_supported(spec));
    out
}

fn svc_path(name: &str, rest: &str) -> String {
    format!("services.{name}.{rest}")
}

/// Path of each entry of a list-or-map key: `key.N` for lists, `key.NAME` for maps.
fn network_entries(name: &str, s: &ServiceSpec) -> Vec<(String, String)> {
    match &s.networks {
        None => Vec::new(),
        Some(ServiceNetworks::List(v)) => v
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), svc_path(name, &format!("networks.{i}"))))
            .collect(),
        Some(ServiceNetworks::Map(m)) => m
            .keys()
            .map(|n| (n.clone(), svc_path(name, &format!("networks.{n}"))))
            .collect(),
    }
}

fn dependency_entries(name: &str, s: &ServiceSpec) -> Vec<(String, String)> {
    match &s.depends_on {
        None => Vec::new(),
        Some(DependsOn::List(v)) => v
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), svc_path(name, &format!("depends_on.{i}"))))
            .collect(),
        Some(DependsOn::Map(m)) => m
            .keys()
            .map(|n| (n.clone(), svc_path(name, &format!("depends_on.{n}"))))
            .collect(),
    }
}

fn check_networks_declared(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        for (net, path) in network_entries(name, s) {
            if !spec.networks.contains_key(&net) {
                out.push(Issue::new(
                    path,
                    format!("network `{net}` is not declared"),
                    Some(format!(
                        "declare it at the top level: `networks: {{ {net}: {{}} }}`"
                    )),
                ));
            }
        }
    }
    out
}

/// The named volume of a short-syntax mount, or `None` for a host path.
pub fn named_volume(mount: &str) -> Option<&str> {
    let source = mount.split(':').next()?;
    (!source.starts_with('/')).then_some(source)
}

fn check_volumes_declared(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        for (i, mount) in s.volumes.iter().enumerate() {
            if let Some(vol) = named_volume(mount) {
                if !spec.volumes.contains_key(vol) {
                    out.push(Issue::new(
                        svc_path(name, &format!("volumes.{i}")),
                        format!("volume `{vol}` is not declared"),
                        Some(format!(
                            "declare it at the top level: `volumes: {{ {vol}: {{}} }}`"
                        )),
                    ));
                }
            }
        }
    }
    out
}

fn check_dependencies_known(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        for (dep, path) in dependency_entries(name, s) {
            if !spec.services.contains_key(&dep) {
                let fix =
                    match super::schema::suggest(&dep, spec.services.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!(
                            "services in this release: {}",
                            spec.services.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                out.push(Issue::new(
                    path,
                    format!("depends on unknown service `{dep}`"),
                    Some(fix),
                ));
            }
        }
    }
    out
}

fn check_dependency_cycles(spec: &ReleaseSpec) -> Vec<Issue> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        spec: &ReleaseSpec,
        node: &str,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
        seen: &mut HashSet<Vec<String>>,
        out: &mut Vec<Issue>,
    ) {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        if let Some(s) = spec.services.get(node) {
            for (dep, _) in dependency_entries(node, s) {
                match marks.get(&dep).copied().unwrap_or(Mark::Done) {
                    Mark::New => visit(spec, &dep, marks, stack, seen, out),
                    Mark::Open => {
                        let start = stack.iter().position(|n| *n == dep).unwrap_or(0);
                        let cycle: Vec<String> = stack[start..].to_vec();
                        let mut key = cycle.clone();
                        key.sort();
                        if seen.insert(key) {
                            let mut names = cycle.clone();
                            names.push(dep.clone());
                            let first = &cycle[0];
                            let next = cycle.get(1).unwrap_or(first);
                            let path = spec
                                .services
                                .get(first)
                                .and_then(|s| {
                                    dependency_entries(first, s)
                                        .into_iter()
                                        .find(|(d, _)| d == next)
                                })
                                .map(|(_, p)| p)
                                .unwrap_or_else(|| svc_path(first, "depends_on"));
                            out.push(Issue::new(
                                path,
                                format!("dependency cycle: {}", names.join(" -> ")),
                                Some(
                                    "remove one of these `depends_on` entries; services start in dependency order"
                                        .to_string(),
                                ),
                            ));
                        }
                    }
                    Mark::Done => {}
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
    }
    let mut marks: HashMap<String, Mark> = spec
        .services
        .keys()
        .map(|k| (k.clone(), Mark::New))
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for name in spec.services.keys() {
        if marks.get(name) == Some(&Mark::New) {
            visit(spec, name, &mut marks, &mut Vec::new(), &mut seen, &mut out);
        }
    }
    out
}

/// `(host ip, host port, protocol)` of a short-syntax mapping; the ip is empty for "all".
pub fn published(mapping: &str) -> Option<(String, u16, String)> {
    let (spec, proto) = match mapping.rsplit_once('/') {
        Some((s, p)) => (s, p.to_string()),
        None => (mapping, "tcp".to_string()),
    };
    let (host, _container) = spec.rsplit_once(':')?;
    let (ip, port) = match host.rsplit_once(':') {
        Some((ip, port)) => (ip.trim_start_matches('[').trim_end_matches(']'), port),
        None => ("", host),
    };
    let ip = if matches!(ip, "0.0.0.0" | "::") {
        ""
    } else {
        ip
    };
    Some((ip.to_string(), port.parse().ok()?, proto))
}

fn check_port_clashes(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut taken: Vec<((String, u16, String), String, String)> = Vec::new();
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        for (i, p) in s.ports.iter().enumerate() {
            let super::model::PortSpec::Short(text) = p else {
                continue;
            };
            let Some(key) = published(text) else { continue };
            let path = svc_path(name, &format!("ports.{i}"));
            let clash = taken.iter().find(|(k, _, _)| {
                k.1 == key.1 && k.2 == key.2 && (k.0 == key.0 || k.0.is_empty() || key.0.is_empty())
            });
            if let Some((_, owner, owner_path)) = clash {
                out.push(Issue::new(
                    path.clone(),
                    format!(
                        "host port {}/{} is already published by service `{owner}` ({owner_path})",
                        key.1, key.2
                    ),
                    Some(
                        "publish a different host port, or publish it from one service only"
                            .to_string(),
                    ),
                ));
            }
            taken.push((key, name.clone(), path));
        }
    }
    out
}

/// Whether an environment variable name says its value is a secret.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN"]
        .iter()
        .any(|w| n.contains(w))
        || n.ends_with("_KEY")
        || n == "KEY"
}

/// Whether a value carries credentials in a URL (`scheme://user:pass@host`).
pub fn has_url_credentials(value: &str) -> bool {
    let Some(i) = value.find("://") else {
        return false;
    };
    let rest = &value[i + 3..];
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, pass)| !pass.is_empty()),
        None => false,
    }
}

fn check_literal_secrets(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        let list_form = matches!(s.environment, Some(Environment::List(_)));
        for (i, (key, value)) in s.environment_pairs().into_iter().enumerate() {
            let path = if list_form {
                svc_path(name, &format!("environment.{i}"))
            } else {
                svc_path(name, &format!("environment.{key}"))
            };
            if s.secrets.contains_key(&key) {
                out.push(Issue::new(
                    path.clone(),
                    format!("`{key}` is set both in `environment` and in `secrets`"),
                    Some(format!("remove `{key}` from `environment`")),
                ));
            }
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            if looks_secret(&key) || has_url_credentials(&value) {
                let host_var = format!(
                    "{}_{}",
                    spec.release.to_ascii_uppercase().replace('-', "_"),
                    key
                );
                out.push(Issue::new(
                    path,
                    format!("`{key}` looks like a secret written as a literal value in git"),
                    Some(format!(
                        "move it to `secrets: {{ {key}: {{ env: {host_var} }} }}` and set {host_var} on the host"
                    )),
                ));
            }
        }
    }
    out
}

/// Blue-green and rolling replacement need the nginx proxy to switch traffic; until it lands they
/// are rejected here, in one place, so lifting the restriction is a one-line change.
pub fn check_strategy_supported(spec: &ReleaseSpec) -> Vec<Issue> {
    spec.services
        .iter()
        .filter(|(_, s)| s.strategy != Strategy::Recreate)
        .map(|(name, s)| {
            Issue::new(
                svc_path(name, "strategy"),
                format!(
                    "strategy `{}` is not supported yet: arrives with the nginx proxy",
                    s.strategy.as_str()
                ),
                Some("use `strategy: recreate` (the default) for now".to_string()),
            )
        })
        .collect()
}

/// Placeholders such as `CHANGE_ME` anywhere in the document; runs on the raw value so it works
/// even when the document has structural errors.
pub fn check_placeholders(doc: &Value) -> Vec<Issue> {
    fn walk(v: &Value, path: &str, out: &mut Vec<Issue>) {
        match v {
            Value::String(s) => {
                let lower = s.to_ascii_lowercase();
                if lower.contains("changeme") || lower.contains("change_me") {
                    out.push(Issue::new(
                        path,
                        format!("placeholder {s:?} left in the spec"),
                        Some(
                            "replace it with the real value; a secret goes in `secrets:` and is resolved on the host"
                                .to_string(),
                        ),
                    ));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &join(path, &i.to_string()), out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, &join(path, k), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_parse() {
        assert_eq!(
            published("8080:80"),
            Some((String::new(), 8080, "tcp".into()))
        );
        assert_eq!(
            published("127.0.0.1:8000:8000"),
            Some(("127.0.0.1".into(), 8000, "tcp".into()))
        );
        assert_eq!(
            published("[::1]:53:53/udp"),
            Some(("::1".into(), 53, "udp".into()))
        );
        assert_eq!(
            published("0.0.0.0:80:80"),
            Some((String::new(), 80, "tcp".into()))
        );
    }

    #[test]
    fn secret_names_and_urls() {
        assert!(looks_secret("DB_PASSWORD"));
        assert!(looks_secret("API_KEY"));
        assert!(looks_secret("github_token"));
        assert!(!looks_secret("LOG_LEVEL"));
        assert!(!looks_secret("KEYBOARD"));
        assert!(has_url_credentials("postgres://shop:s3cret@db/shop"));
        assert!(!has_url_credentials("postgres://shop@db/shop"));
        assert!(!has_url_credentials("https://example.com/a@b"));
    }

    #[test]
    fn named_volumes() {
        assert_eq!(named_volume("pgdata:/var/lib/pg"), Some("pgdata"));
        assert_eq!(named_volume("/srv/x:/x:ro"), None);
    }
}
