//! `reconciler run`: the loop around [`reconcile`], in the shape of kube-runtime's controller.
//! The loop owns triggers, one-at-a-time, requeue and backoff; a cycle is a plain async
//! function, and [`error_policy`] only decides when to try again.

use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::defaults;
use crate::deploy::{self, DeployError, Deployed};
use crate::desired::ProcessEnv;
use crate::engine::Engine;
use crate::plan;
use crate::reconcile::{self, Origin, ReconcileError, Trigger};
use crate::state::history::Kind;
use crate::state::lock::LockError;
use crate::state::{self, suspend};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub interval: Duration,
    /// Apply the current revision even if it failed before (`--retry`).
    pub retry_failed: bool,
    /// How many deploys history.json keeps.
    pub history_limit: usize,
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
    /// `reconciler suspend` or a rollback paused automatic sync; drift is only reported.
    Suspended {
        revision: String,
        in_sync: bool,
    },
    /// Another deploy (a person, a CI) holds the release's lock; try at the next poll.
    Busy {
        revision: String,
        holder: String,
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
    };
    let mut delays = backoff();
    loop {
        let trigger = Trigger::Poll;
        let span = info_span!("reconcile", %trigger, revision = tracing::field::Empty);
        let next = match reconcile(&mut cycle).instrument(span).await {
            Ok(outcome) => {
                delays = backoff();
                match &outcome {
                    Outcome::InSync { revision } => debug!(%revision, "in sync"),
                    Outcome::Applied { revision } => info!(%revision, "applied"),
                    Outcome::SkippedFailed { revision } => debug!(
                        %revision,
                        "revision failed before; waiting for a new commit (or run with --retry)"
                    ),
                    Outcome::Suspended { revision, in_sync } => info!(
                        %revision,
                        in_sync,
                        "automatic sync suspended; not applying (`reconciler resume` re-enables it)"
                    ),
                    Outcome::Busy { revision, holder } => info!(
                        %revision,
                        %holder,
                        "another deploy holds the lock; trying again at the next poll"
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

async fn reconcile(cycle: &mut Cycle) -> Result<Outcome, ReconcileError> {
    let tree = reconcile::fetch(&cycle.origin, &cycle.state_dir).await?;
    let revision = tree.revision().to_string();
    tracing::Span::current().record("revision", revision.as_str());
    let loaded = reconcile::load(tree, &ProcessEnv)?;
    let dir = state::ReleaseDir::new(&cycle.state_dir, &loaded.desired.release);
    // A torn record still means someone suspended sync: stay suspended.
    let suspended = suspend::load(&dir).unwrap_or_else(|e| {
        warn!(error = %e, "suspension record unreadable; staying suspended");
        Some(suspend::Suspended {
            by: "unknown".into(),
            at: state::now(),
            reason: suspend::Reason::Suspend,
            revision: None,
            message: None,
        })
    });
    if suspended.is_some() {
        let plan = reconcile::plan(&cycle.engine, &loaded.desired).await?;
        if !plan.in_sync() {
            let (add, change, destroy) = plan::summary(&plan);
            warn!(%revision, add, change, destroy, "drift while suspended: not applying");
        }
        return Ok(Outcome::Suspended {
            revision,
            in_sync: plan.in_sync(),
        });
    }
    let source = match &cycle.origin {
        Origin::Git(config) => deploy::source_record(config, &cycle.state_dir),
        Origin::Local { .. } => None,
    };
    let ctx = deploy::Context {
        state_dir: cycle.state_dir.clone(),
        history_limit: cycle.options.history_limit,
    };
    let request = deploy::Request {
        loaded,
        source,
        kind: Kind::Deploy,
        trigger: Trigger::Poll,
        actor: defaults::DAEMON_ACTOR.to_string(),
        retry: cycle.options.retry_failed,
        lock_wait: None,
        cancel: cycle.cancel.clone(),
        pause_at: None,
    };
    match deploy::deploy(&ctx, &cycle.engine, request, &deploy::Quiet).await {
        Ok(Deployed::InSync { revision }) => Ok(Outcome::InSync { revision }),
        Ok(Deployed::Applied { .. }) => Ok(Outcome::Applied { revision }),
        Ok(Deployed::RefusedFailed { revision, .. }) => Ok(Outcome::SkippedFailed { revision }),
        Err(DeployError::Lock(LockError::Held { holder, .. })) => Ok(Outcome::Busy {
            revision,
            holder: holder
                .map(|h| h.to_string())
                .unwrap_or_else(|| "unknown".into()),
        }),
        Err(DeployError::Reconcile(e)) => Err(e),
        Err(e) => Err(ReconcileError::Deploy(Box::new(e))),
    }
}
