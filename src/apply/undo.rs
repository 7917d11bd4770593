//! How each step is undone: what a step did ([`Effect`]), the step as the journal names it
//! ([`StepRef`]), and its inverse ([`Undo`]), shared by the executor's rollback and by crash
//! recovery.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::drain;
use crate::configs;
use crate::defaults;
use crate::desired::Reload;
use crate::engine::{Engine, EngineError};
use crate::plan::Action;
use crate::proxy;

/// What a completed step did, as far as undoing it needs to know.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    Done,
    /// `StopContainer`: whether it was running (a stopped container is not started by undo).
    WasRunning(bool),
    /// `CreateVolume`: whether this step created it (an existing volume holds data the apply
    /// did not put there, and is never removed).
    VolumeCreated(bool),
    /// `ConfigureProxy`: the files as they were.
    ProxyFilesReplaced(Vec<proxy::PreviousFile>),
    /// `PushConfigs`: a service's config files as they were.
    ConfigFilesReplaced(Vec<proxy::PreviousFile>),
}

/// A step as undoing or finishing it sees it: what it does and the names it acts on. It holds
/// no container config, so the journal that stores it cannot hold an env value or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StepRef {
    CreateNetwork {
        name: String,
    },
    CreateVolume {
        name: String,
    },
    StopContainer {
        name: String,
    },
    RenameContainer {
        from: String,
        to: String,
    },
    CreateContainer {
        name: String,
    },
    StartContainer {
        name: String,
    },
    ConfigureProxy {
        name: String,
    },
    RemoveContainer {
        name: String,
    },
    RemoveNetwork {
        name: String,
    },
    /// A job's container, always removed by the job itself; a crash may leave it.
    RunJob {
        name: String,
    },
    /// Undone by putting the previous files back and reloading with `reload`.
    PushConfigs {
        name: String,
        reload: Option<Reload>,
    },
    /// Pulls, seeding a new proxy (undone with its container), gates, verify, drain,
    /// snapshots: nothing on the host to put back.
    NothingToUndo,
}

impl StepRef {
    pub fn of(action: &Action) -> StepRef {
        let name = |n: &String| n.clone();
        match action {
            Action::CreateNetwork { name: n, .. } => StepRef::CreateNetwork { name: name(n) },
            Action::CreateVolume { name: n, .. } => StepRef::CreateVolume { name: name(n) },
            Action::StopContainer { name: n, .. } => StepRef::StopContainer { name: name(n) },
            Action::RenameContainer { from, to, .. } => StepRef::RenameContainer {
                from: from.clone(),
                to: to.clone(),
            },
            Action::CreateContainer { name: n, .. } => StepRef::CreateContainer { name: name(n) },
            Action::StartContainer { name: n, .. } => StepRef::StartContainer { name: name(n) },
            Action::ConfigureProxy { name: n, .. } => StepRef::ConfigureProxy { name: name(n) },
            Action::RemoveContainer { name: n, .. } => StepRef::RemoveContainer { name: name(n) },
            Action::RemoveNetwork { name: n } => StepRef::RemoveNetwork { name: name(n) },
            Action::RunJob { name: n, .. } => StepRef::RunJob { name: name(n) },
            Action::PushConfigs {
                name: n, reload, ..
            } => StepRef::PushConfigs {
                name: name(n),
                reload: reload.clone(),
            },
            // Seeding is undone with the container; a reload with the push before it; a
            // ready probe changes nothing.
            Action::SeedConfigs { .. }
            | Action::CheckConfigs { .. }
            | Action::ReloadService { .. }
            | Action::AwaitReady { .. } => StepRef::NothingToUndo,
            Action::PullImage { .. }
            | Action::SeedProxy { .. }
            | Action::AwaitHealthy { .. }
            | Action::Verify { .. }
            | Action::Drain { .. }
            // The file is kept: a failed release keeps its snapshot; after a crash, a
            // half-written one is only a `.partial` file, never in the index.
            | Action::TakeSnapshot { .. } => StepRef::NothingToUndo,
        }
    }

    /// Steps after which there is no going back: the first of them is the commit point.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            StepRef::RemoveContainer { .. } | StepRef::RemoveNetwork { .. }
        )
    }
}

/// The step that undoes `action`, given what it did; `None` when there is nothing to undo
/// (pulls, gates, verify, drain) or it cannot be undone (removals: they come last, after every
/// gate). Pure, so the property test of the executor runs this very function.
pub(crate) fn inverse(action: &Action, effect: Effect) -> Option<Undo> {
    undo_of(&StepRef::of(action), effect)
}

/// [`inverse`] on the journal's view of a step: crash recovery undoes with this same mapping.
pub(crate) fn undo_of(step: &StepRef, effect: Effect) -> Option<Undo> {
    match (step, effect) {
        (StepRef::CreateNetwork { name }, _) => Some(Undo::RemoveNetwork(name.clone())),
        (StepRef::CreateVolume { name }, Effect::VolumeCreated(true)) => {
            Some(Undo::RemoveVolume(name.clone()))
        }
        (StepRef::StopContainer { name }, Effect::WasRunning(true)) => {
            Some(Undo::StartContainer(name.clone()))
        }
        (StepRef::RenameContainer { from, to }, _) => Some(Undo::Rename {
            from: to.clone(),
            to: from.clone(),
        }),
        (StepRef::CreateContainer { name }, _) => Some(Undo::RemoveContainer(name.clone())),
        (StepRef::StartContainer { name }, _) => Some(Undo::StopContainer(name.clone())),
        // What the job did stays; only its container, if a crash left it, goes.
        (StepRef::RunJob { name }, _) => Some(Undo::RemoveJobContainer(name.clone())),
        (StepRef::ConfigureProxy { name }, Effect::ProxyFilesReplaced(previous)) => {
            Some(Undo::RestoreProxy {
                name: name.clone(),
                previous,
            })
        }
        (StepRef::PushConfigs { name, reload }, Effect::ConfigFilesReplaced(previous)) => {
            Some(Undo::RestoreConfigs {
                name: name.clone(),
                previous,
                reload: reload.clone(),
            })
        }
        _ => None,
    }
}

/// The inverse of a completed step.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    RemoveNetwork(String),
    RemoveVolume(String),
    StartContainer(String),
    StopContainer(String),
    Rename {
        from: String,
        to: String,
    },
    RemoveContainer(String),
    /// A job's container, if it is still there (normally the job removed it).
    RemoveJobContainer(String),
    /// The proxy's files as they were before a switch; put back and reloaded.
    RestoreProxy {
        name: String,
        previous: Vec<proxy::PreviousFile>,
    },
    /// A service's config files as they were before a push; put back and reloaded.
    RestoreConfigs {
        name: String,
        previous: Vec<proxy::PreviousFile>,
        reload: Option<Reload>,
    },
}

impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::RemoveNetwork(name) => write!(f, "remove network `{name}`"),
            Undo::RemoveVolume(name) => write!(f, "remove volume `{name}`"),
            Undo::StartContainer(name) => write!(f, "start container `{name}`"),
            Undo::StopContainer(name) => write!(f, "stop container `{name}`"),
            Undo::Rename { from, to } => write!(f, "rename container `{from}` back to `{to}`"),
            Undo::RemoveContainer(name) => write!(f, "remove container `{name}`"),
            Undo::RemoveJobContainer(name) => write!(f, "remove job container `{name}` if left"),
            Undo::RestoreProxy { name, previous } => {
                let paths: Vec<&str> = previous.iter().map(|p| p.path.as_str()).collect();
                write!(
                    f,
                    "put the previous {} back in `{name}` and reload",
                    paths.join(", ")
                )
            }
            Undo::RestoreConfigs { name, previous, .. } => {
                let paths: Vec<&str> = previous.iter().map(|p| p.path.as_str()).collect();
                write!(
                    f,
                    "put the previous configs {} back in `{name}` and reload",
                    paths.join(", ")
                )
            }
        }
    }
}

/// Why an undo step failed, typed so that recovery can tell "already gone" apart.
enum UndoFailure {
    Engine(EngineError),
    Other(String),
}

impl UndoFailure {
    fn message(self) -> String {
        match self {
            UndoFailure::Engine(e) => e.to_string(),
            UndoFailure::Other(m) => m,
        }
    }
}

impl Undo {
    async fn exec(&self, engine: &Engine) -> Result<(), UndoFailure> {
        let result = match self {
            Undo::RemoveNetwork(name) => engine.remove_network(name).await,
            Undo::RemoveVolume(name) => engine.remove_volume(name).await,
            Undo::StartContainer(name) => engine.start_container(name).await,
            Undo::StopContainer(name) => engine.stop_container_gracefully(name).await.map(drop),
            Undo::Rename { from, to } => engine.rename_container(from, to).await,
            // Forced: it may be running, and it is ours, created by this apply.
            Undo::RemoveContainer(name) => engine.remove_container(name, true).await,
            Undo::RemoveJobContainer(name) => {
                crate::job::remove_quietly(engine, name).await;
                Ok(())
            }
            Undo::RestoreProxy { name, previous } => {
                proxy::restore(engine, name, previous)
                    .await
                    .map_err(|e| UndoFailure::Other(e.to_string()))?;
                // The old workers still carry requests to the color being switched away from,
                // which the next undo steps stop: let them finish first, as after a switch.
                // Not cancellable: an interrupted rollback is worse than a slow one.
                drain(
                    engine,
                    name,
                    defaults::DRAIN_PERIOD,
                    &CancellationToken::new(),
                )
                .await;
                return Ok(());
            }
            Undo::RestoreConfigs {
                name,
                previous,
                reload,
            } => {
                return configs::restore(engine, name, previous, reload.as_ref())
                    .await
                    .map_err(|e| match e.split_not_found() {
                        // The container is gone: recovery counts that as undone.
                        (_, Some(gone)) => UndoFailure::Engine(gone),
                        (text, None) => UndoFailure::Other(text),
                    });
            }
        };
        result.map_err(UndoFailure::Engine)
    }

    pub(super) async fn run(&self, engine: &Engine) -> Result<(), String> {
        self.exec(engine).await.map_err(UndoFailure::message)
    }

    /// Crash recovery: the step may or may not have happened, so an object that is not there
    /// counts as undone (`Ok(false)`). Everything else is as [`Undo::run`]: a container stopped
    /// twice, a running one started again or the previous proxy files written again are no-ops.
    pub(crate) async fn run_after_crash(&self, engine: &Engine) -> Result<bool, String> {
        match self.exec(engine).await {
            Ok(()) => Ok(true),
            Err(UndoFailure::Engine(e))
                if e.is_not_found() && !matches!(self, Undo::StartContainer(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.message()),
        }
    }
}
