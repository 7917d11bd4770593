//! The desired state: a validated spec resolved on this host.
//!
//! Resolution is the only I/O here (reading `env_file`s and secret sources); everything it
//! produces is plain data that `plan` compares with the live state. Each service becomes the
//! exact container configuration the engine will be asked for, with a sha256 over its
//! canonical form: equal hashes mean nothing to do.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::spec::model::{NetworkSpec, SnapshotFormat, SnapshotKeep, Strategy, VolumeSpec};

/// The release as this host should run it.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredRelease {
    pub release: String,
    pub environment: Option<String>,
    /// The git commit the spec was read from (or `local` for `diff --local`).
    pub revision: String,
    pub networks: Vec<DesiredNetwork>,
    pub volumes: Vec<DesiredVolume>,
    /// In `depends_on` order: a service comes after everything it depends on.
    pub services: Vec<DesiredService>,
    pub proxy: Option<DesiredProxy>,
    /// One-off jobs, service-level and release-level (`crate::plan` decides which run).
    pub jobs: Vec<DesiredJob>,
}

/// When a job runs relative to what it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    Before,
    After,
}

/// A `jobs:` entry resolved on this host: a container config like a service's.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredJob {
    /// The service it is attached to; `None` for a release-level job.
    pub service: Option<String>,
    pub name: String,
    pub phase: JobPhase,
    pub when: crate::spec::model::JobWhen,
    /// `<release>-job-<service|release>-<name>`.
    pub container_name: String,
    pub container: ContainerConfig,
    /// Over the config and its secret values: a changed job is a new job for the done record.
    pub config_hash: String,
    pub timeout: Duration,
}

impl DesiredJob {
    /// `api/migrate`, or `release/smoke` for a release-level job: how history and errors
    /// name it.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.service.as_deref().unwrap_or("release"),
            self.name
        )
    }
}

impl DesiredRelease {
    /// Every secret value the release hands to a container: what a job's output is scrubbed of.
    pub fn secrets(&self) -> Vec<Secret> {
        let configs = self
            .services
            .iter()
            .map(|s| &s.container)
            .chain(self.jobs.iter().map(|j| &j.container));
        let mut out: Vec<Secret> = Vec::new();
        for config in configs {
            for value in config.env.values() {
                if let EnvValue::Sensitive(secret) = value {
                    if !out.contains(secret) {
                        out.push(secret.clone());
                    }
                }
            }
        }
        out
    }

    /// Every image the release runs (services, then the proxy), without repeats.
    pub fn images(&self) -> Vec<String> {
        let mut images: Vec<String> = Vec::new();
        let all = self
            .services
            .iter()
            .map(|s| &s.container.image)
            .chain(self.proxy.iter().map(|p| &p.container.image))
            .chain(self.jobs.iter().map(|j| &j.container.image));
        for image in all {
            if !images.contains(image) {
                images.push(image.clone());
            }
        }
        images
    }
}

/// The nginx proxy: its container, the operator's nginx.conf from the repo, and the routes whose
/// upstreams the reconciler renders.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredProxy {
    /// `<release>-proxy`.
    pub container_name: String,
    pub container: ContainerConfig,
    /// Over the container config only: nginx.conf and upstream changes are delivered into the
    /// running container and reloaded, never by recreating it.
    pub config_hash: String,
    /// The operator's nginx.conf, as committed.
    pub nginx_conf: String,
    /// Where nginx.conf goes in the container.
    pub nginx_conf_path: String,
    /// Where the rendered upstreams go (what nginx.conf includes).
    pub upstreams_path: String,
    pub routes: Vec<DesiredRoute>,
    /// 127.0.0.1 port that reaches the proxy's first published TCP port, for `verify`.
    pub host_port: Option<u16>,
    pub gate: Gate,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DesiredRoute {
    pub upstream: String,
    pub service: String,
    pub port: u16,
}

/// `verify:` resolved: an HTTP request to 127.0.0.1:`port` (the proxy) after the switch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verify {
    pub port: u16,
    pub path: String,
    pub expect: u16,
    pub body: Option<String>,
    pub host: Option<String>,
    pub interval: Duration,
    pub deadline: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DesiredNetwork {
    /// As written in the spec (`backend`).
    pub key: String,
    /// On the engine (`shop-backend`).
    pub name: String,
    pub spec: NetworkSpec,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DesiredVolume {
    pub key: String,
    pub name: String,
    pub spec: VolumeSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesiredService {
    pub name: String,
    pub strategy: Strategy,
    /// Engine name of the (single, for `recreate`) container: `<release>-<service>`.
    pub container_name: String,
    pub container: ContainerConfig,
    /// sha256 (hex) over the canonical config and every secret value.
    pub config_hash: String,
    pub dependencies: Vec<String>,
    pub gate: Gate,
    /// blue-green: checked through the proxy after the switch.
    pub verify: Option<Verify>,
    /// blue-green and rolling: the longest wait for nginx's old workers before the old
    /// container is stopped.
    pub drain: Duration,
    /// `deploy.replicas` (1 when absent); more than one only with `strategy: rolling`.
    pub replicas: u32,
    /// `configs:` with its `reload:` and `ready:`; not in `config_hash` (never a recreate).
    pub configs: Option<ServiceConfigs>,
    /// `snapshot:`: taken before a release changes this service or one depending on it.
    pub snapshot: Option<DesiredSnapshot>,
}

/// `snapshot:` resolved: the argv run by exec, what its output is, retention and time limit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DesiredSnapshot {
    pub exec: Vec<String>,
    pub format: SnapshotFormat,
    pub keep: SnapshotKeep,
    pub timeout: Duration,
}

/// A value in a container's environment. Values from `secrets:` and from `env_file`s are
/// sensitive: they are hashed but never shown, stored or logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Sensitive(Secret),
}

impl EnvValue {
    pub fn is_sensitive(&self) -> bool {
        matches!(self, EnvValue::Sensitive(_))
    }
}

/// Everything the engine is told when the container is created: our own small type, converted
/// to bollard's at the `engine` boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerConfig {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, EnvValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortBinding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Engine network names with aliases; the first is the one the container is created on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<DockerHealthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The operator's labels; ownership labels are added by `engine` on create.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<LogConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortBinding {
    /// `127.0.0.1`, or empty for all interfaces (as compose's `"8080:80"`).
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Engine volume name for `Volume`, absolute host path for `Bind`.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// Docker's HEALTHCHECK, in the engine's units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerHealthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]` (disable).
    pub test: Vec<String>,
    pub interval_ns: Option<i64>,
    pub timeout_ns: Option<i64>,
    pub retries: Option<i64>,
    pub start_period_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// What must be true of a new container before the release moves on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// GET `path` on the container's address must answer `expect`.
    Http {
        port: u16,
        path: String,
        expect: u16,
    },
    /// A TCP connect to the container's address must succeed.
    Tcp { port: u16 },
    /// A command run inside the container must exit 0.
    Exec { command: Vec<String> },
    /// The container's Docker HEALTHCHECK must report `healthy`.
    DockerHealth,
    /// No probe declared and no HEALTHCHECK: the container must be running, without restarts,
    /// for [`crate::defaults::MIN_UPTIME`].
    Running,
}

impl ContainerConfig {
    /// The canonical form written into the container's config label: secret values are replaced
    /// by the redaction marker (via `Secret`'s `Serialize`), so the label shows which keys are
    /// secret but never their values.
    pub fn canonical_json(&self) -> serde_json::Value {
        // Serialising our own plain-data type cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// sha256 over the canonical form and every sensitive value: any change to either changes
    /// the hash, while the hash alone reveals nothing a reader of the engine could not already see.
    pub fn config_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.canonical_json().to_string().as_bytes());
        for (key, value) in &self.env {
            if let EnvValue::Sensitive(secret) = value {
                hasher.update(key.as_bytes());
                secret.feed(&mut hasher);
            }
        }
        hex::encode(hasher.finalize())
    }
}

pub mod configs;
pub mod resolve;

pub use configs::{ConfigFile, ConfigSource, Reload, ReloadHow, ServiceConfigs};

pub use resolve::{resolve, HostEnv, ProcessEnv, RepoFiles, ResolveError};
