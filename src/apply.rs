//! Carries out a plan's steps in order, and puts the host back if any of them fails.
//!
//! Every completed step pushes its inverse onto an undo stack; on a failure (or cancellation)
//! the stack runs in reverse, continuing past undo errors so that as much as possible is put
//! back, and the error says what failed and what could not be undone. Steps that cannot be
//! undone (`RemoveContainer`, `RemoveNetwork`) come last in every plan, after every gate has
//! passed: once the first of them starts, the release is committed, and a failure there is
//! reported in the [`ApplyReport`] instead of rolling back a release that is healthy.

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::defaults;
use crate::engine::{ContainerOwnership, Engine};
use crate::health;
use crate::plan::{Action, Plan};
use crate::proxy;

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Fired on SIGTERM: the step in flight finishes (a gate stops waiting), then the apply
    /// rolls back as for a failure.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepReport {
    pub index: usize,
    /// `Action::kind` (`create`, `gate`, ...).
    pub action: &'static str,
    pub service: Option<String>,
    /// The engine object acted on (container, network, volume or image name).
    pub target: String,
    pub duration_ms: u64,
}

/// A step after the commit point that failed: reported, not rolled back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FinalStepFailure {
    pub index: usize,
    pub action: &'static str,
    pub target: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    pub release: String,
    pub revision: String,
    /// Completed steps, in order.
    pub steps: Vec<StepReport>,
    /// Final steps (removals of the old containers and networks) that failed after every gate
    /// passed; the release runs, but leftovers need attention.
    pub final_failures: Vec<FinalStepFailure>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("step {} ({action}{}) on `{target}` failed: {reason}; {}", index + 1, service_suffix(service), rollback_summary(*rolled_back, undo_errors))]
    Failed {
        /// 0-based index into `plan.steps`.
        index: usize,
        action: &'static str,
        service: Option<String>,
        target: String,
        reason: String,
        rolled_back: bool,
        undo_errors: Vec<String>,
        /// Steps completed before the failure (all undone when `rolled_back`).
        completed: Vec<StepReport>,
    },

    #[error("apply cancelled at step {} ({action}{}) on `{target}`; {}", index + 1, service_suffix(service), rollback_summary(*rolled_back, undo_errors))]
    Cancelled {
        index: usize,
        action: &'static str,
        service: Option<String>,
        target: String,
        rolled_back: bool,
        undo_errors: Vec<String>,
        completed: Vec<StepReport>,
    },
}

impl ApplyError {
    pub fn rolled_back(&self) -> bool {
        match self {
            ApplyError::Failed { rolled_back, .. } | ApplyError::Cancelled { rolled_back, .. } => {
                *rolled_back
            }
        }
    }
}

fn service_suffix(service: &Option<String>) -> String {
    service
        .as_deref()
        .map(|s| format!(", service `{s}`"))
        .unwrap_or_default()
}

fn rollback_summary(rolled_back: bool, undo_errors: &[String]) -> String {
    if rolled_back {
        "rolled back: the host is as it was before".to_string()
    } else {
        format!(
            "rollback incomplete ({} undo step(s) failed): {}",
            undo_errors.len(),
            undo_errors.join("; ")
        )
    }
}

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
}

/// The step that undoes `action`, given what it did; `None` when there is nothing to undo
/// (pulls, gates, verify, drain) or it cannot be undone (removals: they come last, after every
/// gate). Pure, so the property test of the executor runs this very function.
pub(crate) fn inverse(action: &Action, effect: Effect) -> Option<Undo> {
    match (action, effect) {
        (Action::CreateNetwork { name, .. }, _) => Some(Undo::RemoveNetwork(name.clone())),
        (Action::CreateVolume { name, .. }, Effect::VolumeCreated(true)) => {
            Some(Undo::RemoveVolume(name.clone()))
        }
        (Action::StopContainer { name, .. }, Effect::WasRunning(true)) => {
            Some(Undo::StartContainer(name.clone()))
        }
        (Action::RenameContainer { from, to, .. }, _) => Some(Undo::Rename {
            from: to.clone(),
            to: from.clone(),
        }),
        (Action::CreateContainer { name, .. }, _) => Some(Undo::RemoveContainer(name.clone())),
        (Action::StartContainer { name, .. }, _) => Some(Undo::StopContainer(name.clone())),
        (Action::ConfigureProxy { name, .. }, Effect::ProxyFilesReplaced(previous)) => {
            Some(Undo::RestoreProxy {
                name: name.clone(),
                previous,
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
    /// The proxy's files as they were before a switch; put back and reloaded.
    RestoreProxy {
        name: String,
        previous: Vec<proxy::PreviousFile>,
    },
}

impl Undo {
    async fn run(&self, engine: &Engine) -> Result<(), String> {
        let result = match self {
            Undo::RemoveNetwork(name) => engine.remove_network(name).await,
            Undo::RemoveVolume(name) => engine.remove_volume(name).await,
            Undo::StartContainer(name) => engine.start_container(name).await,
            Undo::StopContainer(name) => engine.stop_container_gracefully(name).await.map(drop),
            Undo::Rename { from, to } => engine.rename_container(from, to).await,
            // Forced: it may be running, and it is ours, created by this apply.
            Undo::RemoveContainer(name) => engine.remove_container(name, true).await,
            Undo::RestoreProxy { name, previous } => {
                proxy::restore(engine, name, previous)
                    .await
                    .map_err(|e| e.to_string())?;
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
        };
        result.map_err(|e| e.to_string())
    }
}

/// Steps after which there is no going back.
fn is_final(action: &Action) -> bool {
    matches!(
        action,
        Action::RemoveContainer { .. } | Action::RemoveNetwork { .. }
    )
}

/// Runs one reversible step; returns its inverse, if it has one.
async fn run_step(
    engine: &Engine,
    plan: &Plan,
    action: &Action,
    cancel: &CancellationToken,
) -> Result<Effect, String> {
    let err = |e: crate::engine::EngineError| e.to_string();
    match action {
        Action::PullImage { image } => {
            // A plan is computed before it is applied: the image may have arrived since.
            if engine.image_id(image).await.map_err(err)?.is_none() {
                engine.pull_image(image).await.map_err(err)?;
            }
            Ok(Effect::Done)
        }
        Action::CreateNetwork { name, spec } => {
            engine
                .create_network(name, spec, &plan.release)
                .await
                .map_err(err)?;
            Ok(Effect::Done)
        }
        Action::CreateVolume { name, spec } => {
            let created = engine
                .create_volume(name, spec, &plan.release)
                .await
                .map_err(err)?;
            Ok(Effect::VolumeCreated(created))
        }
        Action::StopContainer { name, .. } => {
            let was_running = engine.stop_container_gracefully(name).await.map_err(err)?;
            Ok(Effect::WasRunning(was_running))
        }
        Action::RenameContainer { from, to, .. } => {
            engine.rename_container(from, to).await.map_err(err)?;
            Ok(Effect::Done)
        }
        Action::CreateContainer {
            service,
            name,
            color,
            revision,
            config_hash,
            config,
        } => {
            let owner = ContainerOwnership {
                release: plan.release.clone(),
                service: service.clone(),
                revision: revision.clone(),
                config_hash: config_hash.clone(),
                color: color.clone(),
            };
            engine
                .create_container(name, config, &owner)
                .await
                .map_err(err)?;
            Ok(Effect::Done)
        }
        Action::StartContainer { name, .. } => {
            engine.start_container(name).await.map_err(err)?;
            Ok(Effect::Done)
        }
        Action::AwaitHealthy { name, gate, .. } => {
            health::await_healthy(engine, name, gate, cancel)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::RemoveContainer { name, .. } => {
            // Normally stopped by an earlier step; one restarted behind our back gets its
            // grace period rather than a forced kill.
            engine.stop_container_gracefully(name).await.map_err(err)?;
            engine.remove_container(name, false).await.map_err(err)?;
            Ok(Effect::Done)
        }
        Action::RemoveNetwork { name } => {
            engine.remove_network(name).await.map_err(err)?;
            Ok(Effect::Done)
        }
        Action::SeedProxy { name, files } => {
            // Undone with the container itself, which this release created.
            proxy::seed(engine, name, files)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::ConfigureProxy { name, files } => {
            let previous = proxy::install(engine, name, files)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::ProxyFilesReplaced(previous))
        }
        Action::Verify { service, verify } => {
            health::verify(service, verify, cancel)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::Drain {
            proxy: name,
            period,
        } => {
            drain(engine, name, *period, cancel).await;
            Ok(Effect::Done)
        }
    }
}

/// Waits until nginx has no old workers left (they exit once their in-flight requests are
/// done), at most `period`; without a way to count them, the whole period.
async fn drain(
    engine: &Engine,
    proxy_name: &str,
    period: std::time::Duration,
    cancel: &CancellationToken,
) {
    let started = Instant::now();
    loop {
        let old = match proxy::old_workers(engine, proxy_name).await {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count nginx's old workers; waiting the drain period");
                None
            }
        };
        if old == Some(0) {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drained: no old nginx workers left"
            );
            return;
        }
        let remaining = period.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            tracing::info!(old_workers = ?old, "drain period over");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(remaining.min(std::time::Duration::from_millis(200))) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Runs the undo stack in reverse; returns the errors of the undo steps that failed.
async fn roll_back(engine: &Engine, undo: Vec<Undo>) -> Vec<String> {
    let mut errors = Vec::new();
    for step in undo.into_iter().rev() {
        let span = tracing::info_span!("undo", step = ?step);
        match step.run(engine).instrument(span).await {
            Ok(()) => tracing::info!(undo = ?step, "undone"),
            Err(e) => {
                tracing::warn!(undo = ?step, error = %e, "undo failed");
                errors.push(e);
            }
        }
    }
    errors
}

/// Executes `plan.steps` in order against `engine`.
pub async fn apply(
    engine: &Engine,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let mut undo: Vec<Undo> = Vec::new();
    let mut completed: Vec<StepReport> = Vec::new();
    let mut final_failures = Vec::new();
    let mut committed = false;

    for (index, step) in plan.steps.iter().enumerate() {
        let action = &step.action;
        let kind = action.kind();
        let service = action.service().map(str::to_string);
        let target = action.target();
        committed |= is_final(action);

        if !committed && opts.cancel.is_cancelled() {
            let undo_errors = roll_back(engine, std::mem::take(&mut undo)).await;
            return Err(ApplyError::Cancelled {
                index,
                action: kind,
                service,
                target,
                rolled_back: undo_errors.is_empty(),
                undo_errors,
                completed,
            });
        }

        let span = tracing::info_span!(
            "step",
            step = kind,
            service = service.as_deref().unwrap_or("-"),
            target = %target,
        );
        let started = Instant::now();
        tracing::info!(parent: &span, reason = %step.reason, "step started");
        let result = run_step(engine, plan, action, &opts.cancel)
            .instrument(span.clone())
            .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(effect) => {
                tracing::info!(parent: &span, duration_ms, "step done");
                undo.extend(inverse(action, effect));
                completed.push(StepReport {
                    index,
                    action: kind,
                    service,
                    target,
                    duration_ms,
                });
            }
            Err(reason) if committed => {
                tracing::warn!(parent: &span, duration_ms, error = %reason, "final step failed; the release stands");
                final_failures.push(FinalStepFailure {
                    index,
                    action: kind,
                    target,
                    reason,
                });
            }
            Err(reason) => {
                tracing::warn!(parent: &span, duration_ms, error = %reason, "step failed; rolling back");
                let undo_errors = roll_back(engine, std::mem::take(&mut undo)).await;
                // A gate interrupted by the token is a cancellation, not a failure of the release.
                if opts.cancel.is_cancelled() {
                    return Err(ApplyError::Cancelled {
                        index,
                        action: kind,
                        service,
                        target,
                        rolled_back: undo_errors.is_empty(),
                        undo_errors,
                        completed,
                    });
                }
                return Err(ApplyError::Failed {
                    index,
                    action: kind,
                    service,
                    target,
                    reason,
                    rolled_back: undo_errors.is_empty(),
                    undo_errors,
                    completed,
                });
            }
        }
    }

    Ok(ApplyReport {
        release: plan.release.clone(),
        revision: plan.revision.clone(),
        steps: completed,
        final_failures,
    })
}
