//! `configs:`, `reload:` and `ready:` resolved: the files of the release's commit, each with
//! its place in the container and the sha256 of its content, plus how the service reloads.
//!
//! The files are not part of the container config hash: a change to them is delivered into
//! the running container and reloaded, never a recreate (see `crate::configs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::model::{ConfigKind, DurationStr, HealthGate, ServiceSpec};

use super::resolve::{probe_for, ResolveError};
use super::{Gate, Probe};
use crate::defaults;

/// How long a reload (and its check) may take by default.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A file or a directory in the repo.
pub enum ConfigSource {
    File(Vec<u8>),
    /// Every file under the directory, by path relative to it, sorted.
    Dir(Vec<(String, Vec<u8>)>),
}

/// The config side of a service.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceConfigs {
    /// Every file to deliver, sorted by path.
    pub files: Vec<ConfigFile>,
    /// Directory targets (with their trailing `/`): the reconciler owns them, so a file there
    /// that is not in the source is removed.
    pub dirs: Vec<String>,
    pub reload: Option<Reload>,
    /// Must pass after a reload.
    pub ready: Option<Gate>,
}

/// One file as it must be in the container.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigFile {
    /// Absolute path in the container.
    pub path: String,
    /// Where it comes from in the repo.
    pub source: String,
    pub kind: ConfigKind,
    /// sha256 (hex) of the content: what the planner compares.
    pub sha256: String,
    /// Not serialised: the plan shows the hash, not the file.
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// `reload:` resolved. Holds no secret, so the journal may store it (a crash mid-push puts
/// the previous files back and reloads with it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reload {
    pub how: ReloadHow,
    pub timeout: Duration,
    /// The port of Prometheus' `/metrics`, when the service's configs are Prometheus': after
    /// the reload, `prometheus_config_last_reload_successful` must be 1.
    pub prometheus_metrics_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReloadHow {
    /// Sent to the container's main process.
    Signal { signal: String },
    /// Sent to the container's address.
    Http {
        port: u16,
        path: String,
        method: String,
        expect: u16,
    },
}

impl std::fmt::Display for ReloadHow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadHow::Signal { signal } => write!(f, "{signal}"),
            ReloadHow::Http {
                port, path, method, ..
            } => write!(f, "{method} :{port}{path}"),
        }
    }
}

pub fn sha256_hex(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// The first 12 hex digits, as `diff` shows a hash.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Reads the service's config sources from the repo. `read` returns a file or a directory at a
/// path relative to the directory of release.yaml.
pub fn resolve_configs(
    name: &str,
    svc: &ServiceSpec,
    read: &dyn Fn(&str) -> Result<ConfigSource, String>,
) -> Result<Option<ServiceConfigs>, Vec<ResolveError>> {
    if svc.configs.is_empty() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for (i, c) in svc.configs.iter().enumerate() {
        let kind = c.effective_kind();
        let source = c.source.strip_prefix("./").unwrap_or(&c.source);
        let source = source.trim_end_matches('/');
        match read(source) {
            Ok(ConfigSource::File(content)) if !c.source.ends_with('/') => {
                let path = if c.target.ends_with('/') {
                    let file_name = source.rsplit('/').next().unwrap_or(source);
                    format!("{}{file_name}", c.target)
                } else {
                    c.target.clone()
                };
                files.push(ConfigFile {
                    path,
                    source: source.to_string(),
                    kind,
                    sha256: sha256_hex(&content),
                    content,
                });
            }
            Ok(ConfigSource::File(_)) => errors.push(ResolveError {
                path: format!("services.{name}.configs.{i}.source"),
                message: format!("`{}` is a file in the repo, not a directory", c.source),
                fix: format!("write `source: {source}` (without the trailing `/`)"),
            }),
            // Said explicitly, so the spec alone tells which targets the reconciler owns.
            Ok(ConfigSource::Dir(_)) if !c.source.ends_with('/') => errors.push(ResolveError {
                path: format!("services.{name}.configs.{i}.source"),
                message: format!("`{}` is a directory in the repo", c.source),
                fix: format!(
                    "end it with `/` (`source: {source}/`) and give a directory target ending in `/`"
                ),
            }),
            Ok(ConfigSource::Dir(entries)) => {
                let dir = format!("{}/", c.target.trim_end_matches('/'));
                for (relative, content) in entries {
                    files.push(ConfigFile {
                        path: format!("{dir}{relative}"),
                        source: format!("{source}/{relative}"),
                        kind,
                        sha256: sha256_hex(&content),
                        content,
                    });
                }
                dirs.push(dir);
            }
            Err(message) => errors.push(ResolveError {
                path: format!("services.{name}.configs.{i}.source"),
                message,
                fix: "commit the file or directory at that path, relative to the directory of release.yaml".to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let problems = structure_problems(name, svc, &files);
    if !problems.is_empty() {
        return Err(problems);
    }
    let ready = svc.ready.as_ref().map(ready_gate);
    let prometheus = svc.configs.iter().any(|c| {
        matches!(
            c.effective_kind(),
            ConfigKind::Prometheus | ConfigKind::PrometheusRules
        )
    });
    let reload = svc.reload.as_ref().and_then(|r| {
        let how = match (&r.signal, &r.http) {
            (_, Some(h)) => ReloadHow::Http {
                port: h.port,
                path: h.path.clone(),
                method: h.method.clone(),
                expect: h.expect,
            },
            (Some(signal), None) => ReloadHow::Signal {
                signal: signal.clone(),
            },
            // The schema requires one of them.
            (None, None) => return None,
        };
        let metrics_port = match (&how, &ready) {
            (ReloadHow::Http { port, .. }, _) => Some(*port),
            (
                ReloadHow::Signal { .. },
                Some(Gate {
                    probe: Probe::Http { port, .. },
                    ..
                }),
            ) => Some(*port),
            _ => None,
        };
        Some(Reload {
            how,
            timeout: duration(&r.timeout, RELOAD_TIMEOUT),
            prometheus_metrics_port: metrics_port.filter(|_| prometheus),
        })
    });
    Ok(Some(ServiceConfigs {
        files,
        dirs,
        reload,
        ready,
    }))
}

fn duration(d: &Option<DurationStr>, default: Duration) -> Duration {
    d.as_ref().and_then(|d| d.parse().ok()).unwrap_or(default)
}

/// `ready:` as a gate: the `health:` shape and defaults.
fn ready_gate(health: &HealthGate) -> Gate {
    Gate {
        probe: probe_for(health, None),
        interval: duration(&health.interval, defaults::HEALTH_INTERVAL),
        timeout: duration(&health.timeout, defaults::HEALTH_TIMEOUT),
        deadline: duration(&health.deadline, defaults::HEALTH_DEADLINE),
    }
}

/// The structural checks of every file (parse, JSON Schema, dashboards as one set), before the
/// deploy touches anything: a broken config fails `validate`, `diff` and `apply` alike. The
/// image's own tools run later, as the plan's first step after the pulls.
fn structure_problems(name: &str, svc: &ServiceSpec, files: &[ConfigFile]) -> Vec<ResolveError> {
    use crate::validate::{self, ConfigCheck};
    let mut by_check: Vec<(ConfigCheck, Vec<validate::ConfigFile>)> = Vec::new();
    for f in files {
        let check = ConfigCheck::from_kind(f.kind.as_str(), &f.source);
        let file = validate::ConfigFile {
            source: f.source.clone(),
            target: f.path.clone(),
            content: f.content.clone(),
        };
        match by_check.iter_mut().find(|(c, _)| *c == check) {
            Some((_, group)) => group.push(file),
            None => by_check.push((check, vec![file])),
        }
    }
    // The entry a file came from, for the error's path in release.yaml.
    let entry_of = |source: &str| {
        svc.configs.iter().position(|c| {
            let declared = c.source.strip_prefix("./").unwrap_or(&c.source);
            let declared = declared.trim_end_matches('/');
            source == declared || source.starts_with(&format!("{declared}/"))
        })
    };
    by_check
        .iter()
        .flat_map(|(check, group)| validate::check_structure(*check, group))
        .map(|p| ResolveError {
            path: match entry_of(&p.file) {
                Some(i) => format!("services.{name}.configs.{i}.source"),
                None => format!("services.{name}.configs"),
            },
            message: p.located_message(),
            fix: p.fix.clone(),
        })
        .collect()
}
