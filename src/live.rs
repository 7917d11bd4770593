//! What the engine runs now, for one release, in the few fields `plan` compares.
//!
//! `observe` lists the release's objects by their ownership labels and converts bollard's types
//! into these at the boundary. A container whose labels cannot be read is an error, never
//! skipped: skipping it would make the planner create a duplicate.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LiveState {
    pub release: String,
    pub containers: Vec<LiveContainer>,
    pub networks: Vec<LiveNetwork>,
    pub volumes: Vec<LiveVolume>,
    /// For every image the desired release names: the id of the local image with that reference,
    /// or `None` when it is not on this host (it will be pulled).
    pub images: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveContainer {
    pub id: String,
    /// Engine name without the leading `/`.
    pub name: String,
    pub service: String,
    pub color: Option<String>,
    pub revision: Option<String>,
    pub config_hash: Option<String>,
    /// The canonical config label (see `labels::CONFIG`), parsed.
    pub config: Option<serde_json::Value>,
    /// The reference it was created from (`Config.Image`).
    pub image: String,
    /// The image id it runs (`Image`, `sha256:...`).
    pub image_id: String,
    pub state: ContainerState,
    pub health: Health,
    pub restart_count: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The container has no HEALTHCHECK.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveNetwork {
    pub id: String,
    pub name: String,
    pub internal: bool,
    pub driver: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveVolume {
    pub name: String,
    pub driver: String,
}
