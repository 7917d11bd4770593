//! Carries out a plan's steps in order, and puts the host back if any of them fails.
//!
//! Every completed step pushes its inverse onto an undo stack; on a failure (or cancellation)
//! the stack runs in reverse, continuing past undo errors so that as much as possible is put
//! back, and the error says what failed and what could not be undone. Steps that cannot be
//! undone (`RemoveContainer`, `RemoveNetwork`) come last in every plan, after every gate has
//! passed: once the first of them starts, the release is committed, and a failure there is
//! reported in the [`ApplyReport`] instead of rolling back a release that is healthy.
//!
//! With a [`Journal`] in the options, each step is recorded before and after it runs, so that a
//! crash (SIGKILL, power loss) can be resolved at the next start (`crate::recovery`), with the
//! same [`undo_of`] mapping this executor uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::configs;
use crate::engine::{ContainerOwnership, Engine};
use crate::health;
use crate::plan::{Action, Plan};
use crate::proxy;
use crate::snapshot::{SnapshotError, SnapshotTarget};
use crate::state::journal::Journal;
use crate::state::StateError;

mod known_proxy;
mod undo;

pub use known_proxy::KnownProxyFiles;
pub use undo::StepRef;
pub(crate) use undo::{inverse, undo_of, Effect, Undo};

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Fired on SIGTERM: the step in flight finishes (a gate stops waiting), then the apply
    /// rolls back as for a failure.
    pub cancel: CancellationToken,
    /// Where each step is recorded before and after it runs; `None` records nothing (tests of
    /// the executor that need no state dir).
    pub journal: Option<Arc<Journal>>,
    /// Test-only: stop for good at this point (see [`PausePoint`]); `None` in production.
    pub pause_at: Option<PausePoint>,
    /// Where `TakeSnapshot` steps write; a plan with such a step fails without it.
    pub snapshots: Option<SnapshotTarget>,
    /// Where job runs (`Action::RunJob`) are recorded; `None`: not recorded anywhere.
    pub jobs: Option<Arc<crate::job::JobLog>>,
    /// The proxy's files as observed for the plan, under the deploy lock: what a switch
    /// records as "previous" without downloading them again. `None`: read at the switch.
    pub proxy_files: Option<KnownProxyFiles>,
}

/// The environment variable naming a test pause point: `<step index>:<before|after>`.
pub const PAUSE_AT_ENV: &str = "RECONCILER_TEST_PAUSE_AT";
/// The file written when the pause point is reached (so a test knows when to kill).
pub const PAUSE_MARKER_ENV: &str = "RECONCILER_TEST_PAUSE_MARKER";

/// **Test-only** fault-injection hook: `apply` stops at this point and waits forever, so a
/// crash-recovery test can SIGKILL the process at a known step. `before`: the step's `started`
/// record is in the journal but the step has not run; `after`: the step ran but its `done`
/// record is not written yet (the two moments where a crash leaves the most doubt).
/// Nothing happens unless [`PAUSE_AT_ENV`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausePoint {
    /// 0-based index into `plan.steps` (as in `diff --output json`).
    pub index: usize,
    pub after: bool,
    /// Written (empty) when the pause begins.
    pub marker: Option<PathBuf>,
}

impl PausePoint {
    /// Reads [`PAUSE_AT_ENV`] and [`PAUSE_MARKER_ENV`]; `Ok(None)` when unset.
    pub fn from_env() -> Result<Option<PausePoint>, String> {
        let Some(value) = std::env::var_os(PAUSE_AT_ENV) else {
            return Ok(None);
        };
        PausePoint::parse(
            &value.to_string_lossy(),
            std::env::var_os(PAUSE_MARKER_ENV).map(PathBuf::from),
        )
        .map(Some)
    }

    /// `<step index>:<before|after>`.
    pub fn parse(value: &str, marker: Option<PathBuf>) -> Result<PausePoint, String> {
        let bad = || format!("{PAUSE_AT_ENV}={value:?}: expected <step index>:<before|after>");
        let (index, when) = value.split_once(':').ok_or_else(bad)?;
        let index = index.trim().parse().map_err(|_| bad())?;
        let after = match when.trim() {
            "before" => false,
            "after" => true,
            _ => return Err(bad()),
        };
        Ok(PausePoint {
            index,
            after,
            marker,
        })
    }
}

/// Waits forever if `pause` names this point (test-only, see [`PausePoint`]).
async fn maybe_pause(pause: &Option<PausePoint>, index: usize, after: bool) {
    let Some(p) = pause else { return };
    if p.index != index || p.after != after {
        return;
    }
    let when = if after { "after" } else { "before" };
    tracing::warn!(
        step = index,
        when,
        "test pause point reached ({PAUSE_AT_ENV}); waiting to be killed"
    );
    if let Some(marker) = &p.marker {
        if let Err(e) = std::fs::write(marker, format!("{index}:{when}\n")) {
            tracing::warn!(path = %marker.display(), error = %e, "cannot write the pause marker");
        }
    }
    std::future::pending::<()>().await;
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
    /// Without a journal a crash could not be resolved, so nothing is started.
    #[error("release `{release}`: cannot start the deploy journal, nothing was changed: {source}")]
    Journal {
        release: String,
        #[source]
        source: StateError,
    },

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
            // Nothing had started.
            ApplyError::Journal { .. } => true,
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

/// Steps after which there is no going back.
fn is_final(action: &Action) -> bool {
    StepRef::of(action).is_final()
}

/// The index of the first final step: once it starts, the release is committed.
pub fn commit_point(plan: &Plan) -> Option<usize> {
    plan.steps.iter().position(|s| is_final(&s.action))
}

/// Runs one reversible step; returns its inverse, if it has one. `previous`: for a switch, the
/// proxy files as the journal recorded them just before.
async fn run_step(
    engine: &Engine,
    plan: &Plan,
    action: &Action,
    opts: &ApplyOptions,
    previous: Option<Vec<proxy::PreviousFile>>,
) -> Result<Effect, String> {
    let cancel = &opts.cancel;
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
            let installed = match previous {
                Some(previous) => proxy::install_over(engine, name, files, previous).await,
                None => proxy::install(engine, name, files).await,
            };
            let previous = installed.map_err(|e| e.to_string())?;
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
        Action::CheckConfigs { image, files, .. } => {
            let checked = configs::check(engine, &plan.release, image, files)
                .await
                .map_err(|e| e.to_string())?;
            if !checked.tools_absent.is_empty() {
                tracing::info!(image = %image, absent = ?checked.tools_absent,
                    "the image has no tool for these configs: structural checks only");
            }
            Ok(Effect::Done)
        }
        Action::SeedConfigs { name, files, .. } => {
            configs::write(engine, name, files)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::PushConfigs {
            name,
            files,
            remove,
            ..
        } => {
            let previous = configs::push(engine, name, files, remove)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::ConfigFilesReplaced(previous))
        }
        Action::ReloadService { name, reload, .. } => {
            configs::reload(engine, name, reload)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::AwaitReady { name, gate, .. } => {
            health::await_healthy(engine, name, gate, cancel)
                .await
                .map_err(|e| format!("not ready after the reload: {e}"))?;
            Ok(Effect::Done)
        }
        Action::TakeSnapshot {
            service,
            container,
            snapshot,
        } => {
            let target = opts
                .snapshots
                .as_ref()
                .ok_or_else(|| SnapshotError::NoStateDir.to_string())?;
            crate::snapshot::take(
                engine,
                target,
                &plan.release,
                service,
                container,
                snapshot,
                cancel,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(Effect::Done)
        }
        Action::RunJob {
            service,
            job,
            name,
            phase,
            revision,
            config_hash,
            config,
            timeout,
            redact,
        } => {
            let run = crate::job::JobRun {
                release: &plan.release,
                service: service.as_deref(),
                job,
                name,
                phase: *phase,
                revision,
                config_hash,
                config,
                timeout: *timeout,
                redact,
            };
            crate::job::run(engine, &run, opts.jobs.as_deref(), cancel).await?;
            Ok(Effect::Done)
        }
    }
}

/// Between two counts of nginx's old workers while draining: a count is one engine request
/// (its `top`), and the release waits for the last old worker to go.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

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
            () = tokio::time::sleep(remaining.min(DRAIN_POLL)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Runs the undo stack in reverse; returns the errors of the undo steps that failed.
async fn roll_back(engine: &Engine, journal: Option<&Journal>, undo: Vec<Undo>) -> Vec<String> {
    if let Some(j) = journal {
        // Recovery undoes the same steps again if this rollback is itself interrupted; the
        // mark only tells it (and a person reading the journal) that it was under way.
        if let Err(e) = j.rolling_back() {
            tracing::warn!(error = %e, "cannot mark the journal as rolling back");
        }
    }
    let mut errors = Vec::new();
    for step in undo.into_iter().rev() {
        let span = tracing::info_span!("undo", step = %step);
        match step.run(engine).instrument(span).await {
            Ok(()) => tracing::info!(undo = %step, "undone"),
            Err(e) => {
                tracing::warn!(undo = %step, error = %e, "undo failed");
                errors.push(e);
            }
        }
    }
    errors
}

/// Records in the journal that step `index` is about to run. A switch also records the proxy
/// files it is about to replace: if the process dies during the switch, recovery puts them back.
/// Returns those files, so that the switch does not read them again.
async fn record_started(
    engine: &Engine,
    journal: Option<&Journal>,
    index: usize,
    action: &Action,
    known: Option<&KnownProxyFiles>,
) -> Result<Option<Vec<proxy::PreviousFile>>, String> {
    let Some(journal) = journal else {
        return Ok(None);
    };
    let previous = match action {
        Action::ConfigureProxy { name, files } => {
            let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            match known.and_then(|k| k.previous(name, &paths)) {
                Some(previous) => Some(previous),
                None => Some(
                    proxy::read_files(engine, name, &paths)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            }
        }
        // Recorded before the push, so a crash during it can put them back.
        Action::PushConfigs {
            name,
            files,
            remove,
            ..
        } => Some(
            configs::read_previous(engine, name, &configs::touched(files, remove))
                .await
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    journal
        .started(index, previous.as_deref())
        .map_err(|e| format!("cannot record the step in the journal: {e}"))?;
    Ok(previous)
}

/// Executes `plan.steps` in order against `engine`.
pub async fn apply(
    engine: &Engine,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let journal = opts.journal.as_deref();
    if let Some(j) = journal {
        j.begin(plan, commit_point(plan))
            .map_err(|source| ApplyError::Journal {
                release: plan.release.clone(),
                source,
            })?;
    }
    let mut undo: Vec<Undo> = Vec::new();
    let mut completed: Vec<StepReport> = Vec::new();
    let mut final_failures = Vec::new();
    let mut committed = false;
    let mut known_proxy = opts.proxy_files.clone();

    for (index, step) in plan.steps.iter().enumerate() {
        let action = &step.action;
        let kind = action.kind();
        let service = action.service().map(str::to_string);
        let target = action.target();
        committed |= is_final(action);

        if !committed && opts.cancel.is_cancelled() {
            let undo_errors = roll_back(engine, journal, std::mem::take(&mut undo)).await;
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
        let result =
            match record_started(engine, journal, index, action, known_proxy.as_ref()).await {
                Ok(previous) => {
                    maybe_pause(&opts.pause_at, index, false).await;
                    run_step(engine, plan, action, opts, previous)
                        .instrument(span.clone())
                        .await
                }
                Err(e) => Err(e),
            };
        let result = match result {
            Ok(effect) => {
                maybe_pause(&opts.pause_at, index, true).await;
                match journal.map(|j| j.done(index, &effect)).transpose() {
                    Ok(_) => Ok(effect),
                    Err(e) => {
                        // The step happened: its undo must run with the others.
                        undo.extend(inverse(action, effect));
                        Err(format!(
                            "cannot record the step as done in the journal: {e}"
                        ))
                    }
                }
            }
            Err(e) => Err(e),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(effect) => {
                tracing::info!(parent: &span, duration_ms, "step done");
                KnownProxyFiles::after(&mut known_proxy, action);
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
                let undo_errors = roll_back(engine, journal, std::mem::take(&mut undo)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_point_parses_index_and_side_and_rejects_anything_else() {
        assert_eq!(
            PausePoint::parse("3:after", None),
            Ok(PausePoint {
                index: 3,
                after: true,
                marker: None
            })
        );
        assert!(!PausePoint::parse("0:before", None).unwrap().after);
        for bad in ["", "3", "x:before", "3:during", "-1:after"] {
            let err = PausePoint::parse(bad, None).unwrap_err();
            assert!(err.contains(PAUSE_AT_ENV), "{bad}: {err}");
        }
    }

    #[test]
    fn a_job_step_is_undone_by_removing_its_container_if_a_crash_left_it() {
        let step = StepRef::RunJob {
            name: "shop-job-api-migrate".to_string(),
        };
        assert!(!step.is_final());
        match undo_of(&step, Effect::Done) {
            Some(Undo::RemoveJobContainer(name)) => assert_eq!(name, "shop-job-api-migrate"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_commit_point_is_the_first_removal() {
        let step = |action| crate::plan::Step {
            action,
            reason: String::new(),
        };
        let mut plan = Plan {
            release: "shop".to_string(),
            revision: "r".to_string(),
            changes: Vec::new(),
            steps: vec![step(Action::StartContainer {
                service: "web".to_string(),
                name: "shop-web".to_string(),
            })],
            notes: Vec::new(),
        };
        assert_eq!(commit_point(&plan), None);
        plan.steps.push(step(Action::RemoveContainer {
            service: "web".to_string(),
            name: "shop-web-old".to_string(),
        }));
        plan.steps.push(step(Action::RemoveNetwork {
            name: "shop-old".to_string(),
        }));
        assert_eq!(commit_point(&plan), Some(1));
    }
}
