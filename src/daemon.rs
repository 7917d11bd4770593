//! `reconciler run`: the loop around [`reconcile`], in the shape of kube-runtime's controller.
//! The loop owns triggers, one-at-a-time, requeue and backoff; a cycle is a plain async
//! function, and [`error_policy`] only decides when to try again. The poll timer, the webhook
//! and the watcher all request cycles through one coalescing slot ([`crate::trigger`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::apply::{ApplyError, StepReport};
use crate::defaults;
use crate::deploy::{self, DeployError, Deployed};
use crate::desired::{DesiredRelease, ProcessEnv};
use crate::engine::Engine;
use crate::metrics::{CycleResult, Metrics, MetricsError};
use crate::notify::{Notifier, Notifying, Reporter};
use crate::plan::{self, ObjectKind};
use crate::reconcile::{self, Origin, ReconcileError, Trigger};
use crate::server::{self, AppState, Readiness, ServerError};
use crate::source::SourceTree;
use crate::state::current;
use crate::state::history::Kind;
use crate::state::lock::LockError;
use crate::state::{self, suspend};
use crate::trigger::{self, Pending, Request};
use crate::watch::{self, WatchError};
use crate::webhook::WebhookConfig;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub interval: Duration,
    /// Apply the current revision even if it failed before (`--retry`).
    pub retry_failed: bool,
    /// How many deploys history.json keeps.
    pub history_limit: usize,
    /// The HTTP endpoint; `None` with `--listen off`.
    pub listen: Option<SocketAddr>,
    /// `None`: no secret configured, the webhook endpoint is off.
    pub webhook: Option<WebhookConfig>,
    /// `--watch`: the git directory whose refs start a cycle when written.
    pub watch: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
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
    /// Tells the release's notification targets what each cycle did.
    notify: Reporter,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
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
    readiness: &Readiness,
) -> Option<Engine> {
    let mut delays = backoff();
    loop {
        match Engine::connect(docker_host).await {
            Ok(engine) => return Some(engine),
            Err(e) => {
                let delay = delays.next().unwrap_or(defaults::BACKOFF_MAX);
                error!(error = %e, retry_in = ?delay, "Docker engine unreachable");
                readiness.set(Err(format!("Docker engine unreachable: {e}")));
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
) -> Result<(), DaemonError> {
    let cancel = shutdown_token();
    let metrics = Arc::new(Metrics::new()?);
    let readiness = Arc::new(Readiness::default());
    let (triggers, pending) = trigger::channel();
    // Bound before anything else, so a taken port fails the start instead of a later request.
    let server = match options.listen {
        Some(addr) => {
            let listener = server::bind(addr).await?;
            let state = AppState {
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                triggers: triggers.clone(),
                webhook: options.webhook.clone().map(Arc::new),
            };
            Some(tokio::spawn(server::serve(listener, state, cancel.clone())))
        }
        None => None,
    };
    if let Some(git_dir) = &options.watch {
        watch::spawn(git_dir.clone(), triggers.clone(), cancel.clone())?;
    }
    info!(interval = ?options.interval, "reconciler run started");
    if let Some(engine) = connect_with_retry(docker_host, &cancel, &readiness).await {
        let cycle = Cycle {
            engine,
            origin,
            state_dir,
            options,
            cancel: cancel.clone(),
            notify: Reporter::new(Notifier::default(), defaults::DAEMON_ACTOR),
            metrics,
            readiness,
        };
        run_cycles(cycle, &pending).await;
    }
    cancel.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    info!("stopped");
    Ok(())
}

/// Runs one cycle per request, one at a time, until shutdown. The timer is one more source of
/// requests; the first cycle runs at once.
async fn run_cycles(mut cycle: Cycle, pending: &Pending) {
    let cancel = cycle.cancel.clone();
    let mut delays = backoff();
    let mut request = Request {
        kind: Trigger::Poll,
        reason: "startup".to_string(),
        coalesced: 0,
    };
    loop {
        let span = info_span!(
            "reconcile",
            trigger = %request.kind,
            reason = %request.reason,
            coalesced = request.coalesced,
            revision = tracing::field::Empty,
        );
        let started = Instant::now();
        debug!(parent: &span, "cycle started");
        let result = reconcile(&mut cycle, request.kind)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let entered = span.enter();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let (result, next) = match result {
            Ok(outcome) => {
                delays = backoff();
                match &outcome {
                    Outcome::InSync { revision } => debug!(%revision, elapsed_ms, "in sync"),
                    Outcome::Applied { revision } => info!(%revision, elapsed_ms, "applied"),
                    Outcome::SkippedFailed { revision } => debug!(
                        %revision,
                        elapsed_ms,
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
                let result = match outcome {
                    Outcome::Applied { .. } => CycleResult::Applied,
                    Outcome::InSync { .. }
                    | Outcome::SkippedFailed { .. }
                    | Outcome::Suspended { .. }
                    | Outcome::Busy { .. } => CycleResult::Noop,
                };
                (result, Next::RequeueAfter(cycle.options.interval))
            }
            Err(e) => {
                let result = match &e {
                    ReconcileError::Apply(a) if e.is_failed_release() && a.rolled_back() => {
                        CycleResult::RolledBack
                    }
                    _ => CycleResult::Failed,
                };
                (
                    result,
                    error_policy(&e, &mut delays, cycle.options.interval),
                )
            }
        };
        cycle.metrics.cycle(result, elapsed);
        debug!(result = result.as_str(), elapsed_ms, "cycle finished");
        drop(entered);
        if cancel.is_cancelled() {
            break;
        }
        let Next::RequeueAfter(delay) = next;
        request = tokio::select! {
            _ = tokio::time::sleep(delay) => Request {
                kind: Trigger::Poll,
                reason: format!("every {}", humantime::format_duration(delay)),
                coalesced: 0,
            },
            r = pending.next() => r,
            _ = cancel.cancelled() => break,
        };
    }
    // Events of the last cycle still queued get their deadline before the process ends.
    cycle.notify.flush().await;
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

/// The services a plan would change (the proxy counts as a service of its own).
fn out_of_sync(plan: &plan::Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.kind, ObjectKind::Service | ObjectKind::Proxy))
        .map(|c| c.name.clone())
        .collect()
}

fn services(desired: &DesiredRelease) -> Vec<String> {
    desired
        .services
        .iter()
        .map(|s| s.name.clone())
        .chain(desired.proxy.as_ref().map(|_| "proxy".to_string()))
        .collect()
}

/// Whether git and the engine were reached, for `/readyz`.
fn readiness_of(result: &Result<Outcome, ReconcileError>) -> Result<(), String> {
    match result {
        Err(ReconcileError::Source(e)) => Err(format!("git unreachable: {e}")),
        Err(ReconcileError::Engine(e)) => Err(format!("Docker engine unreachable: {e}")),
        _ => Ok(()),
    }
}

async fn reconcile(cycle: &mut Cycle, trigger: Trigger) -> Result<Outcome, ReconcileError> {
    let result = reconcile_inner(cycle, trigger).await;
    cycle.readiness.set(readiness_of(&result));
    result
}

async fn fetch(cycle: &Cycle) -> Result<Arc<dyn SourceTree>, ReconcileError> {
    let started = Instant::now();
    let tree = reconcile::fetch(&cycle.origin, &cycle.state_dir).await;
    if matches!(cycle.origin, Origin::Git(_)) {
        cycle.metrics.git_fetch(started.elapsed(), tree.is_ok());
    }
    tree
}

/// Plans without the lock first (cheap, and it keeps drift visible in the metrics even while
/// suspended or refused); only a plan with changes goes through [`deploy::deploy`], which takes
/// the lock and plans again against what the host is then.
async fn reconcile_inner(cycle: &mut Cycle, trigger: Trigger) -> Result<Outcome, ReconcileError> {
    let tree = fetch(cycle).await?;
    let revision = tree.revision().to_string();
    tracing::Span::current().record("revision", revision.as_str());
    cycle.metrics.desired_revision(&revision);
    let loaded = reconcile::load(tree.clone(), &ProcessEnv)
        .inspect_err(|e| cycle.notify.load_failed(tree.as_ref(), e))?;
    let mut notes = cycle.notify.loaded(&loaded, trigger);
    let (plan, live) = reconcile::plan_observed(&cycle.engine, &loaded.desired, &cycle.state_dir)
        .await
        .inspect_err(|e| cycle.notify.plan_failed(&notes, e))?;
    let dir = state::ReleaseDir::new(&cycle.state_dir, &loaded.desired.release);
    // The applied revision on record: a plan against it is drift (reported even if suspended).
    let applied = current::load(&dir).ok().flatten().map(|c| c.revision);
    cycle
        .notify
        .planned(&mut notes, &plan, &live, applied.as_deref());
    let services = services(&loaded.desired);
    let drifted = out_of_sync(&plan);
    // A torn record still means someone suspended sync: stay suspended.
    let suspended = suspend::load(&dir)
        .unwrap_or_else(|e| {
            warn!(error = %e, "suspension record unreadable; staying suspended");
            Some(suspend::Suspended {
                by: "unknown".into(),
                at: state::now(),
                reason: suspend::Reason::Suspend,
                revision: None,
                message: None,
            })
        })
        .is_some();
    cycle.metrics.set_suspended(suspended);
    cycle.metrics.sync_state(&services, &drifted);
    if plan.in_sync() {
        cycle.metrics.applied_revision(&revision);
        return Ok(Outcome::InSync { revision });
    }
    if suspended {
        let (add, change, destroy) = plan::summary(&plan);
        warn!(%revision, add, change, destroy, "drift while suspended: not applying");
        return Ok(Outcome::Suspended {
            revision,
            in_sync: false,
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
        trigger,
        actor: defaults::DAEMON_ACTOR.to_string(),
        retry: cycle.options.retry_failed,
        lock_wait: None,
        cancel: cycle.cancel.clone(),
        pause_at: None,
    };
    let events = Notifying::new(&deploy::Quiet, &mut cycle.notify, &mut notes, false);
    let result = deploy::deploy(&ctx, &cycle.engine, request, &events).await;
    events.finished(match &result {
        Err(DeployError::Reconcile(e)) => Err(e),
        _ => Ok(()),
    });
    match result {
        Ok(Deployed::InSync { revision }) => {
            cycle.metrics.sync_state(&services, &[]);
            cycle.metrics.applied_revision(&revision);
            Ok(Outcome::InSync { revision })
        }
        Ok(Deployed::Applied { report, .. }) => {
            cycle.metrics.steps(&report.steps);
            cycle.metrics.sync_state(&services, &[]);
            cycle.metrics.applied_revision(&revision);
            cycle.metrics.applied_now();
            Ok(Outcome::Applied { revision })
        }
        Ok(Deployed::RefusedFailed { revision, .. }) => Ok(Outcome::SkippedFailed { revision }),
        Err(DeployError::Lock(LockError::Held { holder, .. })) => Ok(Outcome::Busy {
            revision,
            holder: holder
                .map(|h| h.to_string())
                .unwrap_or_else(|| "unknown".into()),
        }),
        Err(DeployError::Reconcile(e)) => {
            if let ReconcileError::Apply(apply_err) = &e {
                cycle.metrics.apply_failed(apply_err);
                cycle.metrics.steps(completed_steps(apply_err));
            }
            Err(e)
        }
        Err(e) => Err(ReconcileError::Deploy(Box::new(e))),
    }
}

fn completed_steps(err: &ApplyError) -> &[StepReport] {
    match err {
        ApplyError::Failed { completed, .. } | ApplyError::Cancelled { completed, .. } => completed,
        ApplyError::Journal { .. } => &[],
    }
}
