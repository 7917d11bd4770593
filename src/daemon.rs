//! `reconciler run`: the loop around [`reconcile`], in the shape of kube-runtime's controller.
//! The loop owns triggers, one-at-a-time, requeue and backoff; a cycle is a plain async
//! function, and [`error_policy`] only decides when to try again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::apply::ApplyOptions;
use crate::defaults;
use crate::desired::ProcessEnv;
use crate::engine::Engine;
use crate::notify::Reporter;
use crate::plan;
use crate::reconcile::{self, Origin, ReconcileError, Trigger};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub interval: Duration,
    /// Apply the current revision even if it failed before (`--retry`).
    pub retry_failed: bool,
}

/// What a cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The host already matched the revision.
    InSync {
        revision: String,
    },
    Applied {
        revision: String,
    },
    /// The revision failed before; it waits for a new commit (or `--retry`).
    SkippedFailed {
        revision: String,
    },
}

/// When to run the next cycle (kube-runtime's `Action`): a value, never a side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RequeueAfter(Duration),
}

/// State the loop carries between cycles.
struct Cycle {
    engine: Engine,
    origin: Origin,
    state_dir: PathBuf,
    options: RunOptions,
    cancel: CancellationToken,
    /// Revisions whose release failed; not applied again until a new commit (or `--retry`).
    failed: HashSet<String>,
    notify: Reporter,
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: finishing or rolling back the step in flight");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the loop");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(defaults::BACKOFF_MIN)
        .with_max_delay(defaults::BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Connects to the engine, retrying with backoff while it is down (a daemon outlives dockerd
/// restarts). `None` when shutdown was requested first.
async fn connect_with_retry(
    docker_host: Option<&str>,
    cancel: &CancellationToken,
) -> Option<Engine> {
    let mut delays = backoff();
    loop {
        match Engine::connect(docker_host).await {
            Ok(engine) => return Some(engine),
            Err(e) => {
                let delay = delays.next().unwrap_or(defaults::BACKOFF_MAX);
                error!(error = %e, retry_in = ?delay, "Docker engine unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return None,
                }
            }
        }
    }
}

pub async fn run(
    docker_host: Option<&str>,
    origin: Origin,
    state_dir: PathBuf,
    options: RunOptions,
) {
    let cancel = shutdown_token();
    info!(interval = ?options.interval, "reconciler run started");
    let Some(engine) = connect_with_retry(docker_host, &cancel).await else {
        info!("stopped");
        return;
    };
    let mut cycle = Cycle {
        engine,
        origin,
        state_dir,
        options,
        cancel: cancel.clone(),
        failed: HashSet::new(),
        notify: Reporter::daemon(),
    };
    let mut delays = backoff();
    loop {
        let trigger = Trigger::Poll;
        let span = info_span!("reconcile", %trigger, revision = tracing::field::Empty);
        let next = match reconcile(&mut cycle, trigger).instrument(span).await {
            Ok(outcome) => {
                delays = backoff();
                match &outcome {
                    Outcome::InSync { revision } => debug!(%revision, "in sync"),
                    Outcome::Applied { revision } => info!(%revision, "applied"),
                    Outcome::SkippedFailed { revision } => debug!(
                        %revision,
                        "revision failed before; waiting for a new commit (or run with --retry)"
                    ),
                }
                Next::RequeueAfter(cycle.options.interval)
            }
            Err(e) => error_policy(&e, &mut delays, cycle.options.interval),
        };
        if cancel.is_cancelled() {
            break;
        }
        let Next::RequeueAfter(delay) = next;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => break,
        }
    }
    cycle.notify.flush().await;
    info!("stopped");
}

/// Decides only when to try again: input errors wait for the next poll (a new commit is what
/// fixes them), everything else backs off exponentially, capped.
pub fn error_policy(
    err: &ReconcileError,
    delays: &mut impl Iterator<Item = Duration>,
    interval: Duration,
) -> Next {
    if err.is_input_error() {
        error!(error = %err, "the release spec is not valid; waiting for a fix in git");
        return Next::RequeueAfter(interval);
    }
    let delay = delays.next().unwrap_or(defaults::BACKOFF_MAX);
    error!(error = %err, retry_in = ?delay, "reconcile failed");
    Next::RequeueAfter(delay)
}

async fn reconcile(cycle: &mut Cycle, trigger: Trigger) -> Result<Outcome, ReconcileError> {
    let tree = reconcile::fetch(&cycle.origin, &cycle.state_dir).await?;
    let revision = tree.revision().to_string();
    tracing::Span::current().record("revision", revision.as_str());
    if cycle.failed.contains(&revision) && !cycle.options.retry_failed {
        return Ok(Outcome::SkippedFailed { revision });
    }
    let loaded = reconcile::load(tree.clone(), &ProcessEnv)
        .inspect_err(|e| cycle.notify.load_failed(tree.as_ref(), e))?;
    let mut deploy = cycle.notify.loaded(&loaded, trigger);
    let (plan, live) = reconcile::plan_observed(&cycle.engine, &loaded.desired)
        .await
        .inspect_err(|e| cycle.notify.plan_failed(&deploy, e))?;
    cycle.notify.planned(&mut deploy, &plan, &live);
    if plan.in_sync() {
        return Ok(Outcome::InSync { revision });
    }
    let (add, change, destroy) = plan::summary(&plan);
    info!(%revision, add, change, destroy, "applying");
    let options = ApplyOptions {
        cancel: cycle.cancel.clone(),
    };
    cycle.notify.started(&mut deploy);
    let result = reconcile::apply(&cycle.engine, &plan, &options).await;
    cycle.notify.finished(&deploy, &result);
    match result {
        Ok(_) => {
            cycle.failed.remove(&revision);
            Ok(Outcome::Applied { revision })
        }
        Err(e) => {
            cycle.failed.insert(revision);
            Err(e)
        }
    }
}
