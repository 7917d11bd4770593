//! A thin wrapper around `bollard::Docker`: one file per engine resource, bollard's types
//! converted to ours at this boundary.
//!
//! Every error names the object and the operation, so a failed step reads on its own
//! ("start container `shop-api`: ..."). Bollard's own types never leave this module.

mod container;
mod files;
mod image;
mod network;
mod oneoff;
mod volume;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::{Docker, API_DEFAULT_VERSION};

pub use container::{ContainerInfo, ContainerOwnership, ContainerSummary, Endpoint, ExecOutput};
pub use image::{registry_credentials_for, RegistryAuth};
pub use network::NetworkInfo;
pub use oneoff::{OneOff, OneOffOutcome};
pub use volume::VolumeInfo;

/// Seconds bollard waits for one request. Pulls and stops stream or wait server-side, so this
/// only bounds a daemon that accepted the connection and then went silent.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The Docker engine this process talks to, with the API version agreed at connect.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    /// Where we connected, for error messages (`unix:///var/run/docker.sock`).
    host: String,
    api_version: String,
}

/// The kind of engine object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Container,
    Network,
    Volume,
    Image,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
            ObjectKind::Image => "image",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {host}: {reason} (fix: start dockerd or set --docker-host)")]
    Unreachable { host: String, reason: String },

    #[error("unsupported Docker host `{host}`: expected unix:///path or tcp://host:port (fix: correct --docker-host or DOCKER_HOST)")]
    BadHost { host: String },

    #[error("{op} {kind} `{name}`: not found")]
    NotFound {
        op: &'static str,
        kind: ObjectKind,
        name: String,
    },

    #[error("{op} {kind} `{name}`: {reason}")]
    Operation {
        op: &'static str,
        kind: ObjectKind,
        name: String,
        reason: String,
    },

    #[error("image `{image}` not found locally and the pull failed: {reason} (fix: build/load it on this host, or check the registry and credentials)")]
    Pull { image: String, reason: String },

    #[error("cannot read registry credentials from {path}: {reason}")]
    Credentials { path: String, reason: String },

    #[error("container `{name}` carries malformed reconciler labels: {reason} (fix: remove or relabel it by hand; it is not skipped, or the planner would create a duplicate)")]
    MalformedLabels { name: String, reason: String },

    #[error("exec {command:?} in container `{name}` did not finish within {timeout_ms} ms")]
    ExecTimeout {
        name: String,
        command: Vec<String>,
        timeout_ms: u128,
    },
}

impl EngineError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }

    /// Prefixes an operation failure's reason with what it was about (the file, the signal);
    /// other errors already say everything.
    pub(crate) fn with_detail(self, detail: impl std::fmt::Display) -> EngineError {
        match self {
            EngineError::Operation {
                op,
                kind,
                name,
                reason,
            } => EngineError::Operation {
                op,
                kind,
                name,
                reason: format!("{detail}: {reason}"),
            },
            other => other,
        }
    }
}

/// The status code of an engine reply, if the error is one.
fn status_of(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The daemon's message without bollard's wrapping, when there is one.
fn reason_of(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Converts a bollard error about one object into ours: 404 becomes `NotFound`.
fn op_error(
    op: &'static str,
    kind: ObjectKind,
    name: &str,
) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let name = name.to_string();
    move |err| {
        if status_of(&err) == Some(404) {
            EngineError::NotFound { op, kind, name }
        } else {
            EngineError::Operation {
                op,
                kind,
                name,
                reason: reason_of(&err),
            }
        }
    }
}

/// The label filter for one release, in bollard's filter shape.
fn label_filters(extra: &[String]) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), extra.to_vec())])
}

fn to_btree(labels: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.unwrap_or_default().into_iter().collect()
}

impl Engine {
    /// Connects to `docker_host` (`unix:///path` or `tcp://host:port`), else `DOCKER_HOST`, else
    /// the local socket, and agrees an API version with the daemon: bollard speaks a newer API
    /// than older engines (20.10 speaks 1.41), which would refuse its requests otherwise.
    pub async fn connect(docker_host: Option<&str>) -> Result<Engine, EngineError> {
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let host = docker_host
            .map(str::to_string)
            .or(from_env)
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.clone(),
            reason,
        };

        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(unreachable(format!("socket {path} does not exist")));
            }
            Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::BadHost { host });
        }
        .map_err(|e| unreachable(e.to_string()))?;

        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(reason_of(&e)))?;
        let version = docker.client_version();
        let api_version = format!("{}.{}", version.major_version, version.minor_version);
        tracing::debug!(%host, %api_version, "connected to the Docker engine");
        Ok(Engine {
            docker,
            host,
            api_version,
        })
    }

    /// Where this engine was reached.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version agreed with the daemon (`1.41` for Docker 20.10).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The daemon's own version string (`20.10.24`), for `status` and diagnostics.
    pub async fn server_version(&self) -> Result<String, EngineError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable {
                host: self.host.clone(),
                reason: reason_of(&e),
            })?;
        Ok(version.version.unwrap_or_default())
    }
}
