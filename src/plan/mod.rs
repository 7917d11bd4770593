//! Desired vs live → an ordered plan. Pure: no I/O, so it is tested without an engine.
//!
//! A plan has two views of the same decision:
//! - `changes`: one entry per object, with the fields that differ: what `diff` shows a person;
//! - `steps`: the ordered engine actions, each with its reason: what `apply` carries out.
//!
//! Both come from one function, so `diff` shows exactly what `apply` will do. A strategy
//! (recreate now; blue-green and rolling later) expands a service change into steps. Steps that
//! cannot be undone (removing the previous container, pruning) come last, after every gate of
//! the release has passed, so a failure anywhere can still put the host back as it was.

mod build;
mod configs;
mod jobs;
mod render;
mod rolling;
mod snapshot;

use serde::Serialize;

use std::time::Duration;

use crate::desired::{
    ConfigFile, ContainerConfig, DesiredSnapshot, Gate, JobPhase, Reload, Verify,
};
use crate::proxy::ProxyFile;
use crate::spec::model::{NetworkSpec, VolumeSpec};

pub use build::{plan, PlanError};
pub use jobs::done_key;
pub use render::{render_json, render_steps, render_text, summary};
pub use rolling::slot_container;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub release: String,
    pub revision: String,
    pub changes: Vec<Change>,
    pub steps: Vec<Step>,
    /// Things a person should know that are not changes (a volume kept after its removal from
    /// the spec, say).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn in_sync(&self) -> bool {
        self.steps.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Network,
    Volume,
    Service,
    Proxy,
    Job,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// `+`
    Add,
    /// `~`
    Change,
    /// `-`
    Destroy,
}

impl ChangeAction {
    pub fn symbol(self) -> char {
        match self {
            ChangeAction::Add => '+',
            ChangeAction::Change => '~',
            ChangeAction::Destroy => '-',
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub kind: ObjectKind,
    /// The name in the spec (`api`), not the engine name.
    pub name: String,
    pub action: ChangeAction,
    /// Why: `not running`, `config changed`, `container exited`, `removed from spec`, ...
    pub reason: String,
    pub fields: Vec<FieldChange>,
}

/// One changed field. Sensitive fields carry no values at all.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldChange {
    /// Dotted path in the container config (`image`, `env.LOG_LEVEL`, `ports`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: Action,
    pub reason: String,
}

/// One engine operation. Containers are named, not identified by id: a container the plan
/// creates has no id yet, and names are unique on an engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Pull an image that is not on this host. All pulls come first, so a missing image fails
    /// the release before anything on the host has changed.
    PullImage {
        image: String,
    },
    CreateNetwork {
        name: String,
        spec: NetworkSpec,
    },
    CreateVolume {
        name: String,
        spec: VolumeSpec,
    },
    /// Stop a running container (undo: start it again).
    StopContainer {
        service: String,
        name: String,
    },
    /// Move a container out of the way, keeping it (undo: rename back).
    RenameContainer {
        service: String,
        from: String,
        to: String,
    },
    /// Create a container with the ownership labels (undo: remove it).
    CreateContainer {
        service: String,
        name: String,
        /// `blue` / `green` for a blue-green service.
        color: Option<String>,
        revision: String,
        config_hash: String,
        config: Box<ContainerConfig>,
    },
    /// Write the proxy's files into its new container before its first start.
    SeedProxy {
        name: String,
        files: Vec<ProxyFile>,
    },
    /// Deliver files into the running proxy, `nginx -t`, graceful reload: the traffic switch
    /// (undo: the previous files back, reload).
    ConfigureProxy {
        name: String,
        files: Vec<ProxyFile>,
    },
    /// After the switch, an HTTP request through the proxy must answer as declared.
    Verify {
        service: String,
        verify: Verify,
    },
    /// Let nginx's old workers finish their requests before the old colors stop.
    Drain {
        proxy: String,
        period: Duration,
    },
    StartContainer {
        service: String,
        name: String,
    },
    /// Wait until the gate passes or its deadline expires; fails fast when the container exits.
    AwaitHealthy {
        service: String,
        name: String,
        gate: Gate,
    },
    /// Remove a container for good. Only after every gate of the release has passed.
    RemoveContainer {
        service: String,
        name: String,
    },
    RemoveNetwork {
        name: String,
    },
    /// Check a service's new configs with the tools of its image (`promtool`, `amtool`) in a
    /// one-off container, after the pulls and before anything on the host changes. Their
    /// structure was checked when the spec was resolved.
    CheckConfigs {
        service: String,
        image: String,
        files: Vec<ConfigFile>,
    },
    /// Write a service's `configs:` into its new container before its first start (undone
    /// with the container).
    SeedConfigs {
        service: String,
        name: String,
        files: Vec<ConfigFile>,
    },
    /// Deliver changed config files into the running container and remove the stale ones of
    /// its directory targets (undo: the previous files back, reload).
    PushConfigs {
        service: String,
        name: String,
        files: Vec<ConfigFile>,
        remove: Vec<String>,
        reload: Option<Reload>,
    },
    /// Tell the service to read its configs again; a failed reload fails the step.
    ReloadService {
        service: String,
        name: String,
        reload: Reload,
    },
    /// After a reload, `ready:` must pass.
    AwaitReady {
        service: String,
        name: String,
        gate: Gate,
    },
    /// Back up a stateful service from its running container before the release changes it or
    /// a service depending on it (undo: nothing; the file is kept, also by a failed release).
    TakeSnapshot {
        service: String,
        container: String,
        snapshot: DesiredSnapshot,
    },
    /// Run a one-off job container to completion (exit 0 within `timeout`), keep its redacted
    /// output tail, remove it. Nothing to undo: the container is always removed; what the job
    /// did (a migration) stays.
    RunJob {
        /// The attached service; `None` for a release-level job.
        service: Option<String>,
        /// `api/migrate`, `release/smoke`.
        job: String,
        /// The container's engine name.
        name: String,
        phase: JobPhase,
        revision: String,
        config_hash: String,
        config: Box<ContainerConfig>,
        timeout: Duration,
        /// Every secret value of the release, scrubbed from the job's output. Not serialised
        /// (it would only print markers).
        #[serde(skip)]
        redact: Vec<crate::secret::Secret>,
    },
}

impl Action {
    /// A short name for logs, metrics and history (`pull`, `create`, `gate`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::PullImage { .. } => "pull",
            Action::CreateNetwork { .. } => "create_network",
            Action::CreateVolume { .. } => "create_volume",
            Action::StopContainer { .. } => "stop",
            Action::RenameContainer { .. } => "rename",
            Action::CreateContainer { .. } => "create",
            Action::StartContainer { .. } => "start",
            Action::AwaitHealthy { .. } => "gate",
            Action::RemoveContainer { .. } => "remove",
            Action::RemoveNetwork { .. } => "remove_network",
            Action::SeedProxy { .. } => "seed_proxy",
            Action::ConfigureProxy { .. } => "switch",
            Action::Verify { .. } => "verify",
            Action::Drain { .. } => "drain",
            Action::CheckConfigs { .. } => "check_configs",
            Action::SeedConfigs { .. } => "seed_configs",
            Action::PushConfigs { .. } => "push_configs",
            Action::ReloadService { .. } => "reload",
            Action::AwaitReady { .. } => "ready",
            Action::TakeSnapshot { .. } => "snapshot",
            Action::RunJob { .. } => "job",
        }
    }

    /// The engine object the action is about (image, network, volume or container name).
    pub fn target(&self) -> String {
        match self {
            Action::PullImage { image } => image.clone(),
            Action::CreateNetwork { name, .. }
            | Action::CreateVolume { name, .. }
            | Action::RemoveNetwork { name }
            | Action::StopContainer { name, .. }
            | Action::CreateContainer { name, .. }
            | Action::StartContainer { name, .. }
            | Action::AwaitHealthy { name, .. }
            | Action::RemoveContainer { name, .. }
            | Action::SeedProxy { name, .. }
            | Action::ConfigureProxy { name, .. }
            | Action::RunJob { name, .. }
            | Action::SeedConfigs { name, .. }
            | Action::PushConfigs { name, .. }
            | Action::ReloadService { name, .. }
            | Action::AwaitReady { name, .. } => name.clone(),
            Action::RenameContainer { from, to, .. } => format!("{from} -> {to}"),
            Action::Verify { verify, .. } => format!("127.0.0.1:{}{}", verify.port, verify.path),
            Action::Drain { proxy, .. } => proxy.clone(),
            Action::TakeSnapshot { container, .. } => container.clone(),
            Action::CheckConfigs { image, .. } => image.clone(),
        }
    }

    /// The service the action belongs to, if any.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::StopContainer { service, .. }
            | Action::RenameContainer { service, .. }
            | Action::CreateContainer { service, .. }
            | Action::StartContainer { service, .. }
            | Action::AwaitHealthy { service, .. }
            | Action::RemoveContainer { service, .. }
            | Action::Verify { service, .. }
            | Action::CheckConfigs { service, .. }
            | Action::SeedConfigs { service, .. }
            | Action::PushConfigs { service, .. }
            | Action::ReloadService { service, .. }
            | Action::AwaitReady { service, .. }
            | Action::TakeSnapshot { service, .. } => Some(service),
            Action::RunJob { service, .. } => service.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
