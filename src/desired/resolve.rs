//! Spec → desired release, on this host: engine names, parsed ports and mounts, env files and
//! secrets read, health gates chosen. The only I/O (env vars, files) goes through [`HostEnv`] so
//! this is tested without touching the host.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::Duration;

use crate::defaults;
use crate::secret::Secret;
use crate::spec::model::{
    HealthGate, Healthcheck, JobsSpec, NetworkSpec, ProxySpec, ReleaseSpec, ScalarValue,
    ServiceNetworks, ServiceSpec, StringOrList,
};

use super::configs::{resolve_configs, ConfigSource};
use super::{
    ContainerConfig, DesiredJob, DesiredNetwork, DesiredProxy, DesiredRelease, DesiredRoute,
    DesiredService, DesiredSnapshot, DesiredVolume, DockerHealthcheck, EnvValue, Gate, JobPhase,
    LogConfig, Mount, MountKind, NetworkAttachment, PortBinding, Probe, Verify,
};

/// The network services join when they name none, as compose's `<project>_default`.
pub const DEFAULT_NETWORK: &str = "default";
/// The proxy's name: its container is `<release>-proxy`, its service label `proxy` (so no
/// service may be called that).
pub const PROXY: &str = "proxy";

/// What resolution reads from the host.
pub trait HostEnv {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &str) -> io::Result<String>;
}

/// Files of the release's commit (the operator's nginx.conf), by path relative to the
/// directory holding release.yaml.
pub trait RepoFiles {
    fn read(&self, path: &str) -> Result<String, String>;

    /// A `configs:` source: a file, or every file under a directory. The default knows only
    /// files.
    fn read_config(&self, path: &str) -> Result<ConfigSource, String> {
        self.read(path)
            .map(|text| ConfigSource::File(text.into_bytes()))
    }
}

/// The reconciler's own process environment and file system.
pub struct ProcessEnv;

impl HostEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A value the spec needs from the host that is not there, or a value that cannot be used.
/// `path` is the place in the spec (`services.api.secrets.DATABASE_URL.env`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message} (fix: {fix})")]
pub struct ResolveError {
    pub path: String,
    pub message: String,
    pub fix: String,
}

fn err(path: String, message: String, fix: impl Into<String>) -> ResolveError {
    ResolveError {
        path,
        message,
        fix: fix.into(),
    }
}

pub fn resolve(
    spec: &ReleaseSpec,
    revision: &str,
    host: &dyn HostEnv,
    repo: &dyn RepoFiles,
) -> Result<DesiredRelease, Vec<ResolveError>> {
    let release = &spec.release;
    let mut errors = Vec::new();

    let uses_default_network = spec
        .services
        .values()
        .any(|s| s.network_attachments().is_empty())
        || spec.proxy.as_ref().is_some_and(|p| p.networks.is_none())
        || all_jobs(spec).any(|j| j.networks.is_none());
    let mut networks: Vec<DesiredNetwork> = spec
        .networks
        .iter()
        .map(|(key, net)| DesiredNetwork {
            key: key.clone(),
            name: engine_name(release, key),
            spec: net.clone(),
        })
        .collect();
    if uses_default_network && !spec.networks.contains_key(DEFAULT_NETWORK) {
        networks.push(DesiredNetwork {
            key: DEFAULT_NETWORK.to_string(),
            name: engine_name(release, DEFAULT_NETWORK),
            spec: NetworkSpec {
                driver: "bridge".to_string(),
                ..NetworkSpec::default()
            },
        });
    }
    let volumes = spec
        .volumes
        .iter()
        .map(|(key, vol)| DesiredVolume {
            key: key.clone(),
            name: engine_name(release, key),
            spec: vol.clone(),
        })
        .collect();

    let mut services = Vec::new();
    for name in dependency_order(spec) {
        let Some(svc) = spec.services.get(&name) else {
            continue;
        };
        let configs = match resolve_configs(&name, svc, &|path| repo.read_config(path)) {
            Ok(configs) => configs,
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        match resolve_service(spec, &name, svc, host) {
            Ok(container) => {
                let config_hash = container.config_hash();
                services.push(DesiredService {
                    container_name: engine_name(release, &name),
                    strategy: svc.strategy,
                    dependencies: svc.dependencies(),
                    gate: gate_for(svc),
                    verify: None,
                    replicas: svc.deploy.as_ref().and_then(|d| d.replicas).unwrap_or(1),
                    drain: svc
                        .drain
                        .as_ref()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(defaults::DRAIN_PERIOD),
                    snapshot: svc.snapshot.as_ref().map(|snap| DesiredSnapshot {
                        exec: snap.exec.clone(),
                        format: snap.format,
                        keep: snap.keep.unwrap_or_default(),
                        timeout: snap
                            .timeout
                            .as_ref()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(defaults::SNAPSHOT_TIMEOUT),
                    }),
                    name,
                    container,
                    config_hash,
                    configs,
                });
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if services.len() < spec.services.len() && errors.is_empty() {
        errors.push(err(
            "services".to_string(),
            "depends_on has a cycle".to_string(),
            "remove one of the dependencies in the cycle",
        ));
    }
    let proxy = match &spec.proxy {
        None => None,
        Some(p) => match resolve_proxy(release, p, repo) {
            Ok(proxy) => Some(proxy),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        },
    };
    for svc in &mut services {
        let Some(verify) = spec.services.get(&svc.name).and_then(|s| s.verify.as_ref()) else {
            continue;
        };
        let port = proxy.as_ref().and_then(|p| match verify.port {
            None => p.host_port,
            Some(container_port) => p
                .container
                .ports
                .iter()
                .find(|b| b.container_port == container_port && b.protocol == "tcp")
                .map(|b| b.host_port),
        });
        let Some(port) = port else {
            errors.push(err(
                format!("services.{}.verify", svc.name),
                "verify is sent to the proxy on 127.0.0.1, but the proxy publishes no such TCP port"
                    .to_string(),
                "publish the proxy's port in proxy.ports (e.g. \"127.0.0.1:8080:80\"), or set verify.port",
            ));
            continue;
        };
        let dur = |d: &Option<crate::spec::model::DurationStr>, default: Duration| {
            d.as_ref().and_then(|d| d.parse().ok()).unwrap_or(default)
        };
        svc.verify = Some(Verify {
            port,
            path: verify.path.clone(),
            expect: verify.expect,
            body: verify.body.clone(),
            host: verify.host.clone(),
            interval: dur(&verify.interval, defaults::VERIFY_INTERVAL),
            deadline: dur(&verify.deadline, defaults::VERIFY_DEADLINE),
        });
    }

    let jobs = resolve_jobs(spec, host, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DesiredRelease {
        release: release.clone(),
        environment: spec.environment.clone(),
        revision: revision.to_string(),
        networks,
        volumes,
        services,
        proxy,
        jobs,
    })
}

fn all_jobs(spec: &ReleaseSpec) -> impl Iterator<Item = &crate::spec::model::JobSpec> {
    let scopes = spec
        .services
        .values()
        .filter_map(|s| s.jobs.as_ref())
        .chain(spec.jobs.as_ref());
    scopes.flat_map(|j| j.before.iter().chain(j.after.iter()))
}

/// Every `jobs:` entry, service-level (in dependency order) then release-level, as
/// containers resolved exactly as a service's are. A service job defaults to the service's
/// image; a release-level one must name its own (the semantic check says so).
fn resolve_jobs(
    spec: &ReleaseSpec,
    host: &dyn HostEnv,
    errors: &mut Vec<ResolveError>,
) -> Vec<DesiredJob> {
    let mut scopes: Vec<(Option<&str>, String, &JobsSpec, &str)> = Vec::new();
    for name in dependency_order(spec) {
        if let Some((key, svc)) = spec.services.get_key_value(&name) {
            if let Some(jobs) = &svc.jobs {
                scopes.push((
                    Some(key.as_str()),
                    format!("services.{key}.jobs"),
                    jobs,
                    &svc.image,
                ));
            }
        }
    }
    if let Some(jobs) = &spec.jobs {
        scopes.push((None, "jobs".to_string(), jobs, ""));
    }
    let mut out = Vec::new();
    for (service, place, jobs, image) in scopes {
        let phases = [
            (JobPhase::Before, &jobs.before, "before"),
            (JobPhase::After, &jobs.after, "after"),
        ];
        for (phase, list, key) in phases {
            for (i, job) in list.iter().enumerate() {
                let at = format!("{place}.{key}.{i}");
                let as_service = job.as_service(image);
                match resolve_container(spec, &at, None, &as_service, host) {
                    Ok(container) => out.push(DesiredJob {
                        container_name: engine_name(
                            &spec.release,
                            &format!("job-{}-{}", service.unwrap_or("release"), job.name),
                        ),
                        service: service.map(str::to_string),
                        name: job.name.clone(),
                        phase,
                        when: job.when,
                        config_hash: container.config_hash(),
                        container,
                        timeout: job
                            .timeout
                            .as_ref()
                            .and_then(|d| d.parse().ok())
                            .unwrap_or(defaults::JOB_TIMEOUT),
                    }),
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
    }
    out
}

/// The proxy container and its files. Its name is fixed (`<release>-proxy`): one proxy per
/// release.
fn resolve_proxy(
    release: &str,
    p: &ProxySpec,
    repo: &dyn RepoFiles,
) -> Result<DesiredProxy, Vec<ResolveError>> {
    let mut errors = Vec::new();
    let nginx_conf = match repo.read(&p.config) {
        Ok(text) => Some(text),
        Err(message) => {
            errors.push(err(
                "proxy.config".to_string(),
                message,
                "commit the nginx.conf at that path, relative to the directory of release.yaml",
            ));
            None
        }
    };
    let mut ports = Vec::new();
    for (i, port) in p.ports.iter().enumerate() {
        match parse_port(port) {
            Ok(b) => ports.push(b),
            Err(message) => errors.push(err(
                format!("proxy.ports.{i}"),
                message,
                "write \"IP:HOST_PORT:CONTAINER_PORT\"",
            )),
        }
    }
    let attachments = match &p.networks {
        None => vec![(DEFAULT_NETWORK.to_string(), Vec::new())],
        Some(ServiceNetworks::List(v)) => v.iter().map(|n| (n.clone(), Vec::new())).collect(),
        Some(ServiceNetworks::Map(m)) => m
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    c.as_ref().map(|c| c.aliases.clone()).unwrap_or_default(),
                )
            })
            .collect(),
    };
    let networks = attachments
        .into_iter()
        .map(|(net, aliases)| NetworkAttachment {
            name: engine_name(release, &net),
            aliases,
        })
        .collect();
    let stop_timeout_secs = p
        .stop_grace_period
        .as_ref()
        .and_then(|d| d.parse().ok())
        .map(|d| d.as_secs());
    let (Some(nginx_conf), true) = (nginx_conf, errors.is_empty()) else {
        return Err(errors);
    };
    let host_port = ports
        .iter()
        .find(|b| b.protocol == "tcp")
        .map(|b| b.host_port);
    let container = ContainerConfig {
        image: p.image.clone(),
        ports,
        networks,
        // nginx's graceful stop: workers finish their requests.
        stop_signal: Some("SIGQUIT".to_string()),
        stop_timeout_secs,
        restart: Some("unless-stopped".to_string()),
        ..ContainerConfig::default()
    };
    Ok(DesiredProxy {
        container_name: engine_name(release, PROXY),
        config_hash: container.config_hash(),
        container,
        nginx_conf,
        nginx_conf_path: defaults::NGINX_CONF_PATH.to_string(),
        upstreams_path: p.upstreams_file.clone(),
        routes: p
            .routes
            .iter()
            .map(|(upstream, r)| DesiredRoute {
                upstream: upstream.clone(),
                service: r.service.clone(),
                port: r.port,
            })
            .collect(),
        host_port,
        gate: Gate {
            probe: Probe::Running,
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            deadline: defaults::HEALTH_DEADLINE,
        },
    })
}

/// `<release>-<name>`: how every engine object of the release is named.
pub fn engine_name(release: &str, name: &str) -> String {
    format!("{release}-{name}")
}

/// Services ordered so each comes after its dependencies; among services that are ready at the
/// same time, the order written in the spec is kept (a stable Kahn's algorithm). Services in a
/// cycle are left out (the spec's semantic check reports cycles with their names).
pub fn dependency_order(spec: &ReleaseSpec) -> Vec<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let next = spec.services.iter().find(|(name, svc)| {
            !done.contains(*name)
                && svc
                    .dependencies()
                    .iter()
                    .all(|d| done.contains(d) || !spec.services.contains_key(d))
        });
        match next {
            Some((name, _)) => {
                done.insert(name.clone());
                order.push(name.clone());
            }
            None => return order,
        }
    }
}

fn resolve_service(
    spec: &ReleaseSpec,
    name: &str,
    svc: &ServiceSpec,
    host: &dyn HostEnv,
) -> Result<ContainerConfig, Vec<ResolveError>> {
    resolve_container(spec, &format!("services.{name}"), Some(name), svc, host)
}

/// A container config from a service-shaped spec at `place` in the document (a service, or a
/// job through [`crate::spec::model::JobSpec::as_service`]). `alias`: the name others reach
/// it by on its networks (a service's name; `None` for a job, which must not take its
/// service's traffic).
fn resolve_container(
    spec: &ReleaseSpec,
    place: &str,
    alias: Option<&str>,
    svc: &ServiceSpec,
    host: &dyn HostEnv,
) -> Result<ContainerConfig, Vec<ResolveError>> {
    let release = &spec.release;
    let at = |field: &str| format!("{place}.{field}");
    let mut errors = Vec::new();

    let mut env: BTreeMap<String, EnvValue> = BTreeMap::new();
    // Precedence as in compose: env_file < environment; secrets last, and the spec check
    // forbids a key in both environment and secrets.
    for (i, path) in svc
        .env_file
        .as_ref()
        .map(StringOrList::to_vec)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = match svc.env_file {
            Some(StringOrList::Many(_)) => at(&format!("env_file.{i}")),
            _ => at("env_file"),
        };
        match host.read_file(path) {
            Ok(text) => match parse_env_file(&text) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        env.insert(k, EnvValue::Sensitive(Secret::new(v)));
                    }
                }
                Err((line, message)) => errors.push(err(
                    field,
                    format!("{path}:{line}: {message}"),
                    "write one KEY=VALUE per line",
                )),
            },
            Err(e) => errors.push(err(
                field,
                format!("cannot read env_file {path}: {e}"),
                format!("create {path} on this host (mode 600)"),
            )),
        }
    }
    for (key, value) in svc.environment_pairs() {
        match value.or_else(|| host.var(&key)) {
            Some(v) => {
                env.insert(key, EnvValue::Plain(v));
            }
            None => errors.push(err(
                at(&format!("environment.{key}")),
                format!("{key} has no value and is not set in the reconciler's environment"),
                format!("give it a value in the spec, or export {key} where reconciler runs"),
            )),
        }
    }
    for (key, source) in &svc.secrets {
        let field = at(&format!("secrets.{key}"));
        let value = match (&source.env, &source.file) {
            (Some(var), _) => host.var(var).ok_or_else(|| {
                err(
                    format!("{field}.env"),
                    format!("environment variable {var} is not set on this host"),
                    format!("export {var} in the reconciler's environment (never in git)"),
                )
            }),
            (None, Some(path)) => host
                .read_file(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    err(
                        format!("{field}.file"),
                        format!("cannot read secret file {path}: {e}"),
                        format!("create {path} on this host (mode 600)"),
                    )
                }),
            (None, None) => Err(err(
                field.clone(),
                "a secret needs `env` or `file`".to_string(),
                "write { env: VAR } or { file: /path }",
            )),
        };
        match value {
            Ok(v) => {
                env.insert(key.clone(), EnvValue::Sensitive(Secret::new(v)));
            }
            Err(e) => errors.push(e),
        }
    }

    let mut ports = Vec::new();
    for (i, port) in svc.ports.iter().enumerate() {
        match parse_port(port) {
            Ok(p) => ports.push(p),
            Err(message) => errors.push(err(
                at(&format!("ports.{i}")),
                message,
                "write \"HOST_PORT:CONTAINER_PORT\" or \"IP:HOST_PORT:CONTAINER_PORT[/udp]\"",
            )),
        }
    }
    let mut mounts = Vec::new();
    for (i, volume) in svc.volumes.iter().enumerate() {
        match parse_mount(release, volume) {
            Ok(m) => mounts.push(m),
            Err(message) => errors.push(err(
                at(&format!("volumes.{i}")),
                message,
                "write \"VOLUME:/path[:ro]\" or \"/host/path:/path[:ro]\"",
            )),
        }
    }

    let attachments = svc.network_attachments();
    let networks = if attachments.is_empty() {
        vec![NetworkAttachment {
            name: engine_name(release, DEFAULT_NETWORK),
            aliases: alias.iter().map(|a| a.to_string()).collect(),
        }]
    } else {
        attachments
            .into_iter()
            .map(|(net, mut aliases)| {
                // Services find each other by service name on every network they share, as
                // with compose.
                if let Some(name) = alias.filter(|n| !aliases.iter().any(|a| a == n)) {
                    aliases.insert(0, name.to_string());
                }
                NetworkAttachment {
                    name: engine_name(release, &net),
                    aliases,
                }
            })
            .collect()
    };

    let limits = svc
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let memory_bytes = match limits.and_then(|l| l.memory.as_ref()) {
        None => None,
        Some(v) => match parse_memory(v) {
            Ok(b) => Some(b),
            Err(message) => {
                errors.push(err(
                    at("deploy.resources.limits.memory"),
                    message,
                    "write bytes or a number with b, k, m or g (e.g. 512m, 2g)",
                ));
                None
            }
        },
    };
    let nano_cpus = match limits.and_then(|l| l.cpus.as_ref()) {
        None => None,
        Some(v) => match parse_cpus(v) {
            Ok(n) => Some(n),
            Err(message) => {
                errors.push(err(
                    at("deploy.resources.limits.cpus"),
                    message,
                    "write a positive number of CPUs, e.g. \"0.5\" or 2",
                ));
                None
            }
        },
    };
    let stop_timeout_secs = match &svc.stop_grace_period {
        None => None,
        Some(d) => match d.parse() {
            Ok(d) => Some(d.as_secs()),
            Err(e) => {
                errors.push(err(
                    at("stop_grace_period"),
                    format!("not a duration: {e}"),
                    "write e.g. 10s or 1m30s",
                ));
                None
            }
        },
    };
    let healthcheck = match &svc.healthcheck {
        None => None,
        Some(hc) => match docker_healthcheck(hc) {
            Ok(h) => Some(h),
            Err(message) => {
                errors.push(err(at("healthcheck"), message, "see specs/release-spec.md"));
                None
            }
        },
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ContainerConfig {
        image: svc.image.clone(),
        command: svc.command.as_ref().map(StringOrList::to_vec),
        entrypoint: svc.entrypoint.as_ref().map(StringOrList::to_vec),
        env,
        ports,
        mounts,
        networks,
        healthcheck,
        restart: svc.restart.map(|r| r.as_str().to_string()),
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        hostname: svc.hostname.clone(),
        labels: svc.labels.clone(),
        stop_signal: svc.stop_signal.clone(),
        stop_timeout_secs,
        read_only: svc.read_only,
        init: svc.init,
        cap_add: svc.cap_add.clone(),
        cap_drop: svc.cap_drop.clone(),
        tmpfs: svc
            .tmpfs
            .as_ref()
            .map(StringOrList::to_vec)
            .unwrap_or_default(),
        extra_hosts: svc.extra_hosts.clone(),
        memory_bytes,
        nano_cpus,
        logging: svc.logging.as_ref().map(|l| LogConfig {
            driver: l.driver.clone(),
            options: l.options.clone(),
        }),
    })
}

/// The gate a new container must pass: the declared probe, else the image's or spec's Docker
/// HEALTHCHECK, else "stays running".
fn gate_for(svc: &ServiceSpec) -> Gate {
    let health = svc.health.clone().unwrap_or_default();
    let probe = probe_for(&health, svc.healthcheck.as_ref());
    let dur = |d: &Option<crate::spec::model::DurationStr>, default: Duration| {
        d.as_ref().and_then(|d| d.parse().ok()).unwrap_or(default)
    };
    Gate {
        probe,
        interval: dur(&health.interval, defaults::HEALTH_INTERVAL),
        timeout: dur(&health.timeout, defaults::HEALTH_TIMEOUT),
        deadline: dur(&health.deadline, defaults::HEALTH_DEADLINE),
    }
}

pub(super) fn probe_for(health: &HealthGate, healthcheck: Option<&Healthcheck>) -> Probe {
    if let Some(http) = &health.http {
        return Probe::Http {
            port: http.port,
            path: http.path.clone(),
            expect: http.expect,
        };
    }
    if let Some(tcp) = &health.tcp {
        return Probe::Tcp { port: tcp.port };
    }
    if let Some(exec) = &health.exec {
        return Probe::Exec {
            command: exec.command.clone(),
        };
    }
    match healthcheck {
        Some(hc) if !hc.disable && hc.test.is_some() => Probe::DockerHealth,
        _ => Probe::Running,
    }
}

fn docker_healthcheck(hc: &Healthcheck) -> Result<DockerHealthcheck, String> {
    let ns = |d: &Option<crate::spec::model::DurationStr>| -> Result<Option<i64>, String> {
        match d {
            None => Ok(None),
            Some(d) => d
                .parse()
                .map(|d| Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
                .map_err(|e| format!("not a duration `{}`: {e}", d.0)),
        }
    };
    let test = if hc.disable {
        vec!["NONE".to_string()]
    } else {
        match &hc.test {
            None => Vec::new(),
            Some(StringOrList::One(cmd)) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            Some(StringOrList::Many(v)) => v.clone(),
        }
    };
    Ok(DockerHealthcheck {
        test,
        interval_ns: ns(&hc.interval)?,
        timeout_ns: ns(&hc.timeout)?,
        retries: hc.retries.map(i64::from),
        start_period_ns: ns(&hc.start_period)?,
    })
}

/// `KEY=VALUE` lines, `#` comments and blank lines, optional `export `, optional matching
/// quotes around the value (the subset of dotenv that compose documents).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, "expected KEY=VALUE".to_string()));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((i + 1, "the key before `=` must be one word".to_string()));
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| value.to_string());
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

/// Compose's short port syntax: `[IP:]HOST:CONTAINER[/PROTO]` or a bare number (same port on
/// both sides).
pub fn parse_port(port: &crate::spec::model::PortSpec) -> Result<PortBinding, String> {
    use crate::spec::model::PortSpec;
    let text = match port {
        PortSpec::Number(n) => n.to_string(),
        PortSpec::Short(s) => s.clone(),
    };
    let (body, protocol) = match text.rsplit_once('/') {
        Some((b, p)) if p == "tcp" || p == "udp" => (b, p.to_string()),
        Some((_, p)) => return Err(format!("unknown protocol `{p}` in `{text}`")),
        None => (text.as_str(), "tcp".to_string()),
    };
    let num = |s: &str| -> Result<u16, String> {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{s}` is not a port number (1-65535) in `{text}`"))
    };
    let parts: Vec<&str> = match body.rsplit_once(':') {
        None => vec![body],
        Some((left, container)) => match left.rsplit_once(':') {
            None => vec![left, container],
            Some((ip, host)) => vec![ip, host, container],
        },
    };
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [p] => (String::new(), num(p)?, num(p)?),
        [h, c] => (String::new(), num(h)?, num(c)?),
        [ip, h, c] => (ip.trim_matches(['[', ']']).to_string(), num(h)?, num(c)?),
        _ => return Err(format!("cannot read port `{text}`")),
    };
    Ok(PortBinding {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

/// `VOLUME:/path[:ro|:rw]` (a volume of the release) or `/host/path:/path[:ro|:rw]` (a bind).
pub fn parse_mount(release: &str, text: &str) -> Result<Mount, String> {
    let mut parts = text.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("`{text}` needs SOURCE:TARGET"));
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(format!("unknown mount mode `{other}` in `{text}`")),
    };
    if parts.next().is_some() {
        return Err(format!("too many `:` in `{text}`"));
    }
    if !target.starts_with('/') {
        return Err(format!("the target `{target}` must be an absolute path"));
    }
    let (kind, source) = if source.starts_with('/') {
        (MountKind::Bind, source.to_string())
    } else if source.starts_with('.') || source.starts_with('~') {
        return Err(format!(
            "relative host path `{source}`: there is no working tree on the host"
        ));
    } else {
        (MountKind::Volume, engine_name(release, source))
    };
    Ok(Mount {
        kind,
        source,
        target: target.to_string(),
        read_only,
    })
}

/// `2g`, `512m`, `1024k`, `100b` or a plain number of bytes.
pub fn parse_memory(value: &ScalarValue) -> Result<i64, String> {
    let text = value.as_env_string().to_ascii_lowercase();
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let factor: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("unknown memory unit in `{text}`")),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not an amount of memory"))?;
    let bytes = (n * factor).round();
    if bytes < 6.0 * 1024.0 * 1024.0 {
        return Err(format!("`{text}` is below Docker's minimum of 6m"));
    }
    Ok(bytes as i64)
}

/// CPUs as a number (`2`, `"0.5"`) → nano CPUs for the engine.
pub fn parse_cpus(value: &ScalarValue) -> Result<i64, String> {
    let text = value.as_env_string();
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs"))?;
    if !(n > 0.0 && n <= 1024.0) {
        return Err(format!("`{text}` CPUs is out of range"));
    }
    Ok((n * 1e9).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::PortSpec;

    struct Host;
    impl HostEnv for Host {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "API_DB_URL" => Some("postgres://u:planted-pw@db/shop".to_string()),
                "FROM_HOST" => Some("hostvalue".to_string()),
                _ => None,
            }
        }
        fn read_file(&self, path: &str) -> io::Result<String> {
            match path {
                "/etc/shop/api.env" => {
                    Ok("# comment\nexport A=1\nB=\"two words\"\n\nLOG_LEVEL=debug\n".to_string())
                }
                "/run/secrets/token" => Ok("tok-planted\n".to_string()),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
            }
        }
    }

    fn spec(yaml: &str) -> ReleaseSpec {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        serde_json::from_value(value).unwrap()
    }

    struct NoRepo;
    impl RepoFiles for NoRepo {
        fn read(&self, path: &str) -> Result<String, String> {
            Err(format!("{path} is not in the repo"))
        }
    }

    #[test]
    fn resolves_env_files_environment_and_secrets_with_precedence() {
        let s = spec(
            r#"
version: 1
release: shop
services:
  api:
    image: shop-api:1
    env_file: /etc/shop/api.env
    environment: { LOG_LEVEL: info, FROM_HOST: null }
    secrets:
      DATABASE_URL: { env: API_DB_URL }
      TOKEN: { file: /run/secrets/token }
"#,
        );
        let d = resolve(&s, "abc", &Host, &NoRepo).unwrap();
        let env = &d.services[0].container.env;
        assert_eq!(
            env["LOG_LEVEL"],
            EnvValue::Plain("info".into()),
            "environment wins over env_file"
        );
        assert_eq!(env["FROM_HOST"], EnvValue::Plain("hostvalue".into()));
        assert!(env["A"].is_sensitive() && env["B"].is_sensitive());
        match &env["TOKEN"] {
            EnvValue::Sensitive(s) => assert_eq!(s.expose(), "tok-planted"),
            other => panic!("{other:?}"),
        }
        // The default network is created and the service joins it under its own name.
        assert_eq!(d.networks.len(), 1);
        assert_eq!(d.networks[0].name, "shop-default");
        assert_eq!(
            d.services[0].container.networks[0].aliases,
            vec!["api".to_string()]
        );
        let shown = format!("{:?} {}", d, d.services[0].container.canonical_json());
        for planted in ["planted-pw", "tok-planted", "two words"] {
            assert!(!shown.contains(planted), "{planted} leaked: {shown}");
        }
    }

    #[test]
    fn missing_host_values_are_all_reported_with_their_place() {
        let s = spec(
            r#"
version: 1
release: shop
services:
  api:
    image: a:1
    env_file: /etc/missing.env
    environment: [UNSET_VAR]
    secrets: { X: { env: NOT_THERE } }
"#,
        );
        let errors = resolve(&s, "abc", &Host, &NoRepo).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "services.api.env_file",
                "services.api.environment.UNSET_VAR",
                "services.api.secrets.X.env"
            ]
        );
        assert!(errors[2].fix.contains("export NOT_THERE"));
    }

    #[test]
    fn a_rotated_secret_changes_the_hash_but_not_the_canonical_form() {
        struct Rotated;
        impl HostEnv for Rotated {
            fn var(&self, _: &str) -> Option<String> {
                Some("new".into())
            }
            fn read_file(&self, _: &str) -> io::Result<String> {
                Err(io::Error::new(io::ErrorKind::NotFound, "x"))
            }
        }
        let s = spec("version: 1\nrelease: r\nservices:\n  a: { image: 'i:1', secrets: { K: { env: API_DB_URL } } }\n");
        let a = resolve(&s, "1", &Host, &NoRepo).unwrap();
        let b = resolve(&s, "1", &Rotated, &NoRepo).unwrap();
        assert_eq!(
            a.services[0].container.canonical_json(),
            b.services[0].container.canonical_json()
        );
        assert_ne!(a.services[0].config_hash, b.services[0].config_hash);
    }

    #[test]
    fn dependency_order_is_stable_and_respects_depends_on() {
        let s = spec(
            "version: 1\nrelease: r\nservices:\n  web: { image: 'i:1', depends_on: [api] }\n  api: { image: 'i:1', depends_on: [db] }\n  db: { image: 'i:1' }\n  cache: { image: 'i:1' }\n",
        );
        assert_eq!(dependency_order(&s), ["db", "api", "web", "cache"]);
    }

    #[test]
    fn ports_mounts_memory_and_cpus_parse_like_compose() {
        let p = |s: &str| parse_port(&PortSpec::Short(s.to_string()));
        assert_eq!(p("127.0.0.1:8080:80").unwrap().host_ip, "127.0.0.1");
        assert_eq!(p("8080:80/udp").unwrap().protocol, "udp");
        assert_eq!(
            parse_port(&PortSpec::Number(9000)).unwrap().container_port,
            9000
        );
        assert!(p("99999:80").is_err());
        assert!(p("80:80/sctp").is_err());
        let m = parse_mount("shop", "pgdata:/var/lib/pg:ro").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.read_only),
            (MountKind::Volume, "shop-pgdata", true)
        );
        assert_eq!(
            parse_mount("shop", "/srv/x:/x").unwrap().kind,
            MountKind::Bind
        );
        assert!(parse_mount("shop", "./data:/x").is_err());
        assert!(parse_mount("shop", "data:relative").is_err());
        assert_eq!(
            parse_memory(&ScalarValue::String("2g".into())).unwrap(),
            2 << 30
        );
        assert_eq!(
            parse_memory(&ScalarValue::String("512m".into())).unwrap(),
            512 << 20
        );
        assert!(parse_memory(&ScalarValue::String("1k".into())).is_err());
        assert_eq!(
            parse_cpus(&ScalarValue::String("0.5".into())).unwrap(),
            500_000_000
        );
        assert!(parse_cpus(&ScalarValue::Integer(0)).is_err());
    }

    #[test]
    fn env_file_errors_name_the_line() {
        assert_eq!(parse_env_file("A=1\nnot a pair\n").unwrap_err().0, 2);
    }
}
