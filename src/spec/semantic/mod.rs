//! Checks that need the whole spec: references between sections, cycles, clashes, and secrets
//! or placeholders written where they must not be. Each returns [`Issue`]s with a dotted path;
//! the loader gives them their place in the file.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::model::{
    DependsOn, Environment, JobsSpec, PortSpec, ProxySpec, ReleaseSpec, ServiceNetworks,
    ServiceSpec, Strategy,
};
use super::schema::Issue;

mod configs;
mod jobs;
mod snapshots;

use configs::check_configs;
use jobs::check_jobs;
use snapshots::check_snapshots;

/// All checks on a structurally valid spec.
pub fn check(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    out.extend(check_networks_declared(spec));
    out.extend(check_volumes_declared(spec));
    out.extend(check_dependencies_known(spec));
    out.extend(check_dependency_cycles(spec));
    out.extend(check_port_clashes(spec));
    out.extend(check_literal_secrets(spec));
    out.extend(check_replicas(spec));
    out.extend(check_reserved_names(spec));
    out.extend(check_blue_green(spec));
    out.extend(check_routes(spec));
    out.extend(check_notifications(spec));
    out.extend(check_configs(spec));
    out.extend(check_snapshots(spec));
    out.extend(check_jobs(spec));
    out
}

/// The network a service or the proxy joins when it names none (the engine creates it as
/// `<release>-default`, like compose's `<project>_default`); a declared network called `default`
/// is the same network, so comparing names is enough.
const IMPLICIT_NETWORK: &str = "default";

/// Color suffixes of a blue-green service's containers (`<release>-<service>-blue|green`).
pub const COLORS: [&str; 2] = ["blue", "green"];

fn svc_path(name: &str, rest: &str) -> String {
    format!("services.{name}.{rest}")
}

/// Path of each entry of a list-or-map `networks` key under `prefix`: `networks.N` for lists,
/// `networks.NAME` for maps.
fn network_entries(prefix: &str, networks: &Option<ServiceNetworks>) -> Vec<(String, String)> {
    match networks {
        None => Vec::new(),
        Some(ServiceNetworks::List(v)) => v
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), format!("{prefix}.networks.{i}")))
            .collect(),
        Some(ServiceNetworks::Map(m)) => m
            .keys()
            .map(|n| (n.clone(), format!("{prefix}.networks.{n}")))
            .collect(),
    }
}

/// The networks a container joins: the ones written, or the implicit default network.
fn joined_networks(attachments: Vec<(String, Vec<String>)>) -> Vec<String> {
    if attachments.is_empty() {
        vec![IMPLICIT_NETWORK.to_string()]
    } else {
        attachments.into_iter().map(|(n, _)| n).collect()
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
    let services = spec
        .services
        .iter()
        .map(|(name, s)| network_entries(&format!("services.{name}"), &s.networks));
    let proxy = spec
        .proxy
        .iter()
        .map(|p| network_entries("proxy", &p.networks));
    for entries in services.chain(proxy) {
        for (net, path) in entries {
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

/// The container port of a short-syntax mapping (`"127.0.0.1:8080:80/tcp"` → 80).
pub fn container_port(mapping: &str) -> Option<u16> {
    let spec = mapping.rsplit_once('/').map_or(mapping, |(s, _)| s);
    spec.rsplit_once(':')?.1.parse().ok()
}

/// Host ports are one namespace for the services and the proxy alike: a clash makes the second
/// container fail to start in the middle of an apply.
fn check_port_clashes(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut taken: Vec<((String, u16, String), String, String)> = Vec::new();
    let mut out = Vec::new();
    let services = spec.services.iter().map(|(name, s)| {
        (
            format!("service `{name}`"),
            format!("services.{name}"),
            &s.ports,
        )
    });
    let proxy = spec
        .proxy
        .iter()
        .map(|p| ("the proxy".to_string(), "proxy".to_string(), &p.ports));
    for (owner_name, prefix, ports) in services.chain(proxy) {
        for (i, p) in ports.iter().enumerate() {
            let PortSpec::Short(text) = p else {
                continue;
            };
            let Some(key) = published(text) else { continue };
            let path = format!("{prefix}.ports.{i}");
            let clash = taken.iter().find(|(k, _, _)| {
                k.1 == key.1 && k.2 == key.2 && (k.0 == key.0 || k.0.is_empty() || key.0.is_empty())
            });
            if let Some((_, owner, owner_path)) = clash {
                out.push(Issue::new(
                    path.clone(),
                    format!(
                        "host port {}/{} is already published by {owner} ({owner_path})",
                        key.1, key.2
                    ),
                    Some(
                        "publish a different host port, or publish it from one container only"
                            .to_string(),
                    ),
                ));
            }
            taken.push((key, owner_name.clone(), path));
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

/// `deploy.replicas` above 1 means several containers of one service at once, which only
/// `strategy: rolling` runs (each replica in its own slot behind the proxy): recreate and
/// blue-green run one container per service, and silently ignoring the key would deploy fewer
/// replicas than asked for.
pub fn check_replicas(spec: &ReleaseSpec) -> Vec<Issue> {
    spec.services
        .iter()
        .filter(|(_, s)| s.strategy != Strategy::Rolling)
        .filter_map(|(name, s)| {
            let n = s.deploy.as_ref()?.replicas?;
            (n > 1).then(|| {
                Issue::new(
                    svc_path(name, "deploy.replicas"),
                    format!(
                        "`replicas: {n}` needs `strategy: rolling`; service `{name}` uses `{}`, which runs one container",
                        s.strategy.as_str()
                    ),
                    Some(
                        "set `strategy: rolling` and route the service through `proxy.routes`, or remove `deploy.replicas`"
                            .to_string(),
                    ),
                )
            })
        })
        .collect()
}

/// Names whose containers would collide with containers the reconciler creates itself: the
/// proxy's `<release>-proxy`, the colors `<release>-<service>-blue|green` of a blue-green
/// service and the replicas `<release>-<service>-<slot>-blue|green` of a rolling one. Checked
/// even without a `proxy:` section, so adding one later cannot break a release.
fn check_reserved_names(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for name in spec.services.keys() {
        if name == "proxy" {
            out.push(Issue::new(
                format!("services.{name}"),
                format!(
                    "service name `proxy` is reserved: the proxy's container is `{}-proxy`",
                    spec.release
                ),
                Some(
                    "rename the service (e.g. `web`); to run nginx in front of services, use the top-level `proxy:` section"
                        .to_string(),
                ),
            ));
            continue;
        }
        let color_of = COLORS.iter().find_map(|c| {
            let base = name.strip_suffix(&format!("-{c}"))?;
            spec.services
                .get(base)
                .filter(|s| s.strategy == Strategy::BlueGreen)
                .map(|_| base)
        });
        // `api-2` or `api-2-blue` beside rolling `api`: a replica's name, or one of its colors.
        let replica_of = spec
            .services
            .iter()
            .filter(|(_, s)| s.strategy == Strategy::Rolling)
            .map(|(base, _)| base)
            .find(|base| {
                let Some(rest) = name.strip_prefix(&format!("{base}-")) else {
                    return false;
                };
                let slot = COLORS
                    .iter()
                    .find_map(|c| rest.strip_suffix(&format!("-{c}")))
                    .unwrap_or(rest);
                !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit())
            });
        if let Some(base) = replica_of {
            out.push(Issue::new(
                format!("services.{name}"),
                format!(
                    "container `{}-{name}` would clash with the replicas of rolling service `{base}` (`{}-{base}-<slot>-blue|green`)",
                    spec.release, spec.release
                ),
                Some("rename the service; `-<number>` after a rolling service's name is its replica slot".to_string()),
            ));
            continue;
        }
        if let Some(base) = color_of {
            out.push(Issue::new(
                format!("services.{name}"),
                format!(
                    "container `{}-{name}` would be one of the colors of blue-green service `{base}`",
                    spec.release
                ),
                Some("rename the service; `-blue` and `-green` name the colors of a blue-green service".to_string()),
            ));
        }
    }
    out
}

/// Rules of `strategy: blue-green` and `rolling` on each service: it needs the proxy and a
/// route (traffic is switched by rewriting the proxy's upstreams), its host ports would clash
/// (both colors, or old and new replicas, run at once), and `verify`/`drain` mean nothing
/// without it.
fn check_blue_green(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        if s.strategy == Strategy::Recreate {
            for (key, present) in [("verify", s.verify.is_some()), ("drain", s.drain.is_some())] {
                if present {
                    out.push(Issue::new(
                        svc_path(name, key),
                        format!(
                            "`{key}` only applies to `strategy: blue-green` or `rolling`; service `{name}` uses `{}`",
                            s.strategy.as_str()
                        ),
                        Some(format!(
                            "remove `{key}:`, or set `strategy: blue-green` (or `rolling`) and route the service through `proxy.routes`"
                        )),
                    ));
                }
            }
            continue;
        }
        let strategy = s.strategy.as_str();
        let why_clash = if s.strategy == Strategy::Rolling {
            "its old and new replicas run at once"
        } else {
            "both colors run at once during a deploy"
        };
        for (i, p) in s.ports.iter().enumerate() {
            let shown = match p {
                PortSpec::Short(t) => t.clone(),
                PortSpec::Number(n) => n.to_string(),
            };
            out.push(Issue::new(
                svc_path(name, &format!("ports.{i}")),
                format!(
                    "{strategy} service `{name}` publishes host port `{shown}`: {why_clash} and would clash"
                ),
                Some("remove it from the service and publish through the proxy (`proxy.ports`)".to_string()),
            ));
        }
        let Some(proxy) = &spec.proxy else {
            out.push(Issue::new(
                svc_path(name, "strategy"),
                format!("strategy `{strategy}` needs a top-level `proxy:` section; service `{name}` has no proxy to switch traffic"),
                Some(format!(
                    "add `proxy:` with `image`, `config` and a route `routes: {{ {name}: {{ service: {name}, port: PORT }} }}`, or use `strategy: recreate`"
                )),
            ));
            continue;
        };
        // A route to a misspelt service is reported by `check_routes` with a suggestion; saying
        // here too that the intended service has no route would report one typo twice.
        let route_typo = proxy
            .routes
            .values()
            .any(|r| !spec.services.contains_key(&r.service));
        if !route_typo && proxy.routes_to(name).next().is_none() {
            out.push(Issue::new(
                svc_path(name, "strategy"),
                format!("{strategy} service `{name}` is not the target of any route in `proxy.routes`"),
                Some(format!(
                    "add a route under `proxy.routes` (e.g. `{name}: {{ service: {name}, port: PORT }}`); {strategy} switches traffic through the proxy"
                )),
            ));
        }
        out.extend(check_verify_reachable(name, s, proxy));
    }
    out
}

/// `verify` is sent to 127.0.0.1 on a port the proxy publishes (the first published TCP port
/// unless `verify.port` names the proxy's container port), so that port must exist and listen
/// on the loopback address. Only for services that declare `verify:` (it is optional).
fn check_verify_reachable(name: &str, s: &ServiceSpec, proxy: &ProxySpec) -> Option<Issue> {
    s.verify.as_ref()?;
    let reachable: Vec<u16> = proxy
        .ports
        .iter()
        .filter_map(|p| match p {
            PortSpec::Short(t) => {
                let (ip, _, proto) = published(t)?;
                (proto == "tcp" && (ip.is_empty() || ip.starts_with("127.")))
                    .then(|| container_port(t))
                    .flatten()
            }
            PortSpec::Number(_) => None,
        })
        .collect();
    let wanted = s.verify.as_ref().and_then(|v| v.port);
    match wanted {
        None if reachable.is_empty() => Some(Issue::new(
            "proxy.ports",
            format!(
                "the proxy publishes no TCP port on 127.0.0.1 or all addresses, so service `{name}` cannot be verified through it"
            ),
            Some("publish one, e.g. `proxy.ports: [\"80:80\"]` or `[\"127.0.0.1:8080:80\"]`".to_string()),
        )),
        Some(port) if !reachable.contains(&port) => Some(Issue::new(
            svc_path(name, "verify.port"),
            format!(
                "the proxy does not publish container port {port} over TCP on 127.0.0.1 or all addresses, so verify cannot reach it"
            ),
            Some(if reachable.is_empty() {
                format!("publish it in `proxy.ports` (e.g. \"{port}:{port}\")")
            } else {
                format!(
                    "use one of the proxy's published container ports ({}), or publish {port} in `proxy.ports`",
                    reachable.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                )
            }),
        )),
        _ => None,
    }
}

/// Each route must lead to a declared blue-green service the proxy can reach on a network.
fn check_routes(spec: &ReleaseSpec) -> Vec<Issue> {
    let Some(proxy) = &spec.proxy else {
        return Vec::new();
    };
    let proxy_nets = joined_networks(proxy.network_attachments());
    let mut out = Vec::new();
    let mut reported: HashSet<&str> = HashSet::new();
    for (upstream, route) in &proxy.routes {
        let path = format!("proxy.routes.{upstream}.service");
        let Some(s) = spec.services.get(&route.service) else {
            let fix = match super::schema::suggest(
                &route.service,
                spec.services.keys().map(String::as_str),
            ) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!(
                    "services in this release: {}",
                    spec.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            out.push(Issue::new(
                path,
                format!(
                    "route `{upstream}` sends traffic to unknown service `{}`",
                    route.service
                ),
                Some(fix),
            ));
            continue;
        };
        // One report per service, however many upstreams point at it.
        if !reported.insert(route.service.as_str()) {
            continue;
        }
        if s.strategy == Strategy::Recreate {
            out.push(Issue::new(
                svc_path(&route.service, "strategy"),
                format!(
                    "service `{}` is routed by the proxy (`proxy.routes.{upstream}`) but uses strategy `recreate`",
                    route.service
                ),
                Some(
                    "set `strategy: blue-green`; recreate would stop the only container behind the proxy and cut traffic (or `rolling` for several replicas)"
                        .to_string(),
                ),
            ));
        }
        let service_nets = joined_networks(s.network_attachments());
        if !service_nets.iter().any(|n| proxy_nets.contains(n)) {
            out.push(Issue::new(
                path,
                format!(
                    "the proxy cannot reach service `{}`: they share no network (proxy on {}, `{}` on {})",
                    route.service,
                    quoted(&proxy_nets),
                    route.service,
                    quoted(&service_nets)
                ),
                Some(format!(
                    "add `{}` to `proxy.networks` (or put the service on one of the proxy's networks)",
                    service_nets.first().map_or(IMPLICIT_NETWORK, String::as_str)
                )),
            ));
        }
    }
    out
}

/// Target names are unique (they name the queue in logs) and an event is listed once.
fn check_notifications(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, target) in spec.notifications.iter().enumerate() {
        if let Some(first) = names.insert(target.name.as_str(), i) {
            out.push(Issue::new(
                format!("notifications.{i}.name"),
                format!(
                    "notification target `{}` is already declared at notifications.{first}",
                    target.name
                ),
                Some("give each target its own name".to_string()),
            ));
            names.insert(target.name.as_str(), first);
        }
        let mut seen = HashSet::new();
        for (j, event) in target.events.iter().flatten().enumerate() {
            if !seen.insert(*event) {
                out.push(Issue::new(
                    format!("notifications.{i}.events.{j}"),
                    format!("event `{}` is listed twice", event.as_str()),
                    Some("list each event once".to_string()),
                ));
            }
        }
    }
    out
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
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
    fn container_ports_parse() {
        assert_eq!(container_port("8080:80"), Some(80));
        assert_eq!(container_port("127.0.0.1:8443:443/tcp"), Some(443));
        assert_eq!(container_port("[::1]:53:53/udp"), Some(53));
        assert_eq!(container_port("80"), None);
    }

    const PROXIED: &str = "version: 1\nrelease: shop\nservices:\n  api:\n    image: a:1\n    strategy: blue-green\nproxy:\n  image: nginx:1.27\n  config: nginx.conf\n  ports: [\"80:80\"]\n  routes:\n    api: { service: api, port: 8000 }\n";

    fn issues(yaml: &str) -> Vec<Issue> {
        let value: Value = match serde_saphyr::from_str(yaml) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {yaml}"),
        };
        let spec: ReleaseSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => panic!("{e}: {yaml}"),
        };
        check(&spec)
    }

    fn paths(yaml: &str) -> Vec<String> {
        issues(yaml).into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn proxy_and_service_without_networks_share_the_default_network() {
        assert_eq!(issues(PROXIED), vec![]);
    }

    #[test]
    fn two_upstreams_to_one_service_report_it_once() {
        let yaml = PROXIED.replace("strategy: blue-green", "strategy: recreate")
            + "    admin: { service: api, port: 9000 }\n";
        assert_eq!(paths(&yaml), vec!["services.api.strategy"]);
    }

    #[test]
    fn a_routed_rolling_service_with_replicas_is_valid() {
        let yaml = PROXIED.replace(
            "strategy: blue-green",
            "strategy: rolling\n    deploy: { replicas: 3 }\n    drain: 2s",
        );
        assert_eq!(issues(&yaml), vec![]);
    }

    #[test]
    fn rolling_needs_a_route_and_no_host_port() {
        let yaml = PROXIED
            .replace(
                "strategy: blue-green",
                "strategy: rolling\n    ports: [\"127.0.0.1:9000:8000\"]",
            )
            .replace("service: api,", "service: web,")
            .replace(
                "services:\n",
                "services:\n  web: { image: w:1, strategy: blue-green }\n",
            );
        assert_eq!(
            paths(&yaml),
            vec!["services.api.ports.0", "services.api.strategy"]
        );
    }

    #[test]
    fn replicas_above_one_need_rolling_and_replica_names_are_reserved() {
        let yaml = PROXIED.replace(
            "strategy: blue-green",
            "strategy: blue-green\n    deploy: { replicas: 2 }",
        );
        let found = issues(&yaml);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "services.api.deploy.replicas");
        assert!(found[0].message.contains("needs `strategy: rolling`"));
        let one = PROXIED.replace(
            "strategy: blue-green",
            "strategy: blue-green\n    deploy: { replicas: 1 }",
        );
        assert_eq!(issues(&one), vec![]);
        let clash = PROXIED.replace("strategy: blue-green", "strategy: rolling").replace(
            "services:\n",
            "services:\n  api-2-blue: { image: b:1 }\n  api-3: { image: b:1 }\n  api-v2: { image: b:1 }\n",
        );
        assert_eq!(paths(&clash), vec!["services.api-2-blue", "services.api-3"]);
    }

    #[test]
    fn verify_needs_the_proxy_on_loopback() {
        // Verify connects to 127.0.0.1, so a port published on another address does not count.
        let verified = PROXIED.replace(
            "strategy: blue-green",
            "strategy: blue-green\n    verify: { path: /version }",
        );
        let unverified = PROXIED.replace("\"80:80\"", "\"10.0.0.5:80:80\"");
        assert_eq!(
            issues(&unverified),
            vec![],
            "verify is optional, and so is the port"
        );
        let other = verified.replace("\"80:80\"", "\"10.0.0.5:80:80\"");
        assert_eq!(paths(&other), vec!["proxy.ports"]);
        let loopback = verified.replace("\"80:80\"", "\"127.0.0.1:8080:80\"");
        assert_eq!(issues(&loopback), vec![]);
        let udp = verified.replace("\"80:80\"", "\"80:80/udp\"");
        assert_eq!(paths(&udp), vec!["proxy.ports"]);
    }

    #[test]
    fn verify_port_names_a_published_container_port() {
        let yaml = PROXIED.replace(
            "strategy: blue-green",
            "strategy: blue-green\n    verify: { port: 80 }",
        );
        assert_eq!(issues(&yaml), vec![]);
        let wrong = yaml.replace("port: 80 }", "port: 443 }");
        assert_eq!(paths(&wrong), vec!["services.api.verify.port"]);
    }

    #[test]
    fn reserved_names_need_no_proxy_section() {
        let yaml = "version: 1\nrelease: shop\nservices:\n  proxy:\n    image: a:1\n";
        assert_eq!(paths(yaml), vec!["services.proxy"]);
        // `api-blue` is only a color name when `api` is blue-green.
        let plain = "version: 1\nrelease: shop\nservices:\n  api:\n    image: a:1\n  api-blue:\n    image: a:1\n";
        assert_eq!(issues(plain), vec![]);
    }

    #[test]
    fn named_volumes() {
        assert_eq!(named_volume("pgdata:/var/lib/pg"), Some("pgdata"));
        assert_eq!(named_volume("/srv/x:/x:ro"), None);
    }
}
