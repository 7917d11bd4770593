//! The one deploy path shared by `apply`, `run` and `rollback`: take the release's deploy
//! lock, refuse a revision that failed before (unless `--retry`), observe and plan under the
//! lock, apply (gated, undone on failure), then record `current.json`, a history entry and an
//! audit line. Planning happens under the lock so that two deploys never plan against the same
//! host and then both change it: the second one plans against what the first left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::{self, ApplyError, ApplyOptions, ApplyReport, PausePoint, StepReport};
use crate::desired::DesiredRelease;
use crate::engine::Engine;
use crate::live::{ContainerState, LiveState};
use crate::plan::{self, Plan};
use crate::reconcile::{self, Loaded, ReconcileError, Trigger};
use crate::recovery::{self, RecoveryOutcome, RecoveryReport};
use crate::snapshot::SnapshotTarget;
use crate::source::{Snapshot, SourceConfig, SourceError};
use crate::state::current::{self, Current, ServiceImage, SourceRecord};
use crate::state::history::{self, Entry, Failure, History, Kind, Outcome, StepTiming};
use crate::state::journal::Journal;
use crate::state::lock::{self, Holder, LockError};
use crate::state::snapshots;
use crate::state::suspend::{self, Suspended};
use crate::state::{self, audit, ReleaseDir, StateError};

/// What every deploy of this process shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub history_limit: usize,
}

/// One deploy.
pub struct Request {
    pub loaded: Loaded,
    /// Recorded so that `rollback` and `status` work without `--repo`.
    pub source: Option<SourceRecord>,
    pub kind: Kind,
    pub trigger: Trigger,
    pub actor: String,
    /// Apply even if this revision failed before.
    pub retry: bool,
    /// Wait this long for the lock instead of failing at once.
    pub lock_wait: Option<Duration>,
    /// SIGTERM / Ctrl-C: the apply rolls back and the lock is released.
    pub cancel: CancellationToken,
    /// Test-only pause point (see [`PausePoint`]); `None` in production.
    pub pause_at: Option<PausePoint>,
}

#[derive(Debug)]
pub enum Deployed {
    /// The host already ran the revision (for a rollback: recorded and suspended all the same).
    InSync { revision: String },
    Applied {
        plan: Box<Plan>,
        report: ApplyReport,
        entry: Box<Entry>,
    },
    /// The revision failed before; not applied until a new commit or `--retry`.
    RefusedFailed {
        revision: String,
        failed: Box<Entry>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("release {release}: nothing to roll back to: {why}; fix: see `reconciler history --release {release}` and pass --to REVISION of an applied entry")]
    NoRollbackTarget { release: String, why: String },
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl DeployError {
    /// The release was tried and failed (exit 1), as opposed to not started (exit 2).
    pub fn is_failed_release(&self) -> bool {
        matches!(self, DeployError::Reconcile(r) if r.is_failed_release())
    }
}

/// `rel`'s git source as it may be stored: credential-free, with its cache dir relative to the
/// state dir when it lies under it.
pub fn source_record(config: &SourceConfig, state_dir: &Path) -> Option<SourceRecord> {
    let source = crate::source::GitSource::new(config.clone(), state_dir).ok()?;
    let cache = source.cache_dir();
    let cache_dir = cache
        .strip_prefix(state_dir)
        .unwrap_or(cache)
        .display()
        .to_string();
    Some(SourceRecord {
        url: source.url().to_string(),
        reference: config.reference.clone(),
        path: config.path.clone(),
        cache_dir,
    })
}

/// What a deploy tells its caller while it runs. Every method has a do-nothing default.
pub trait DeployEvents: Send + Sync {
    /// The plan, just before it is applied, with what was observed and the revision the host
    /// ran before (from `current.json`, else the container labels).
    fn planned(&self, _plan: &Plan, _live: &LiveState, _previous: Option<&str>) {}
    /// A deploy that a crash interrupted was resolved (before this one planned).
    fn recovered(&self, _report: &RecoveryReport) {}
}

/// For callers that only want the outcome.
pub struct Quiet;
impl DeployEvents for Quiet {}

/// Runs one deploy through the lock, the failed-revision check, plan, apply and the records.
/// `events` hears what a person should see as it happens (the CLI prints it; the daemon logs).
pub async fn deploy(
    ctx: &Context,
    engine: &Engine,
    req: Request,
    events: &dyn DeployEvents,
) -> Result<Deployed, DeployError> {
    let desired = &req.loaded.desired;
    let release = desired.release.clone();
    let revision = desired.revision.clone();
    let dir = ReleaseDir::new(&ctx.state_dir, &release);
    let holder = Holder {
        release: release.clone(),
        actor: req.actor.clone(),
        pid: std::process::id(),
        host: state::actor::hostname(),
        trigger: req.trigger.to_string(),
        action: action_name(req.kind).to_string(),
        revision: Some(revision.clone()),
        since: state::now(),
    };
    let audit_line = |action: &str, outcome: &str, detail: Option<String>| audit::Line {
        time: state::now(),
        release: release.clone(),
        actor: req.actor.clone(),
        trigger: req.trigger.to_string(),
        action: action.to_string(),
        revision: Some(revision.clone()),
        outcome: outcome.to_string(),
        detail,
    };

    let lock = lock::acquire(&dir, holder, req.lock_wait, &req.cancel).await?;
    if let Some(old) = &lock.taken_over {
        audit::record(
            &dir,
            audit_line(
                "lock_takeover",
                "ok",
                Some(format!("the holder was gone: {old}")),
            ),
        );
    }

    // A deploy a crash interrupted is resolved first, under the lock, before the engine is
    // observed for planning.
    if let Some(report) = recovery::recover(engine, &ctx.state_dir, &release)
        .await
        .map_err(ReconcileError::from)?
    {
        record_recovery(ctx, &dir, &report, &req.actor, &req.trigger.to_string());
        events.recovered(&report);
    }
    // Job and config-check containers a crash left (the journal's undo removes a job in
    // flight; this also catches one whose journal was lost).
    crate::job::clean_up(engine, &release).await;
    if let Err(e) = crate::validate::remove_leftover_checks(engine, &release).await {
        tracing::warn!(error = %e, "cannot list leftover config-check containers");
    }

    let history = load_history(&dir)?;
    if req.kind == Kind::Deploy && !req.retry {
        if let Some(failed) = history.failed(&revision) {
            audit::record(
                &dir,
                audit_line(
                    action_name(req.kind),
                    "refused",
                    Some(format!("revision failed before in {}", failed.id)),
                ),
            );
            return Ok(Deployed::RefusedFailed {
                revision,
                failed: Box::new(failed.clone()),
            });
        }
    }

    let mut live = reconcile::observe(engine, desired).await?;
    live.jobs_done = jobs_done(&dir, &revision);
    let previous = match current::load(&dir) {
        Ok(c) => c.map(|c| c.revision),
        Err(e) => {
            warn!(error = %e, "falling back to the container labels for the applied revision");
            None
        }
    }
    .or_else(|| revision_from_labels(&live));
    let plan = plan::plan(desired, &live).map_err(ReconcileError::from)?;
    let spec_hash = spec_hash(&req.loaded);

    if plan.in_sync() {
        let services = services_of(engine, desired, &live).await;
        let stale = current::load(&dir)
            .ok()
            .flatten()
            .is_none_or(|c| c.revision != revision);
        if stale || req.kind == Kind::Rollback {
            current::save(
                &dir,
                &Current {
                    release: release.clone(),
                    revision: revision.clone(),
                    spec_hash: spec_hash.clone(),
                    applied_at: state::now(),
                    source: req.source.clone(),
                    services: services.clone(),
                },
            )?;
        }
        if req.kind == Kind::Rollback {
            let now = state::now();
            let entry = Entry {
                id: history.next_id(&release),
                kind: req.kind,
                release: release.clone(),
                revision: revision.clone(),
                previous_revision: previous,
                spec_hash: Some(spec_hash),
                trigger: req.trigger.to_string(),
                actor: req.actor.clone(),
                started_at: now.clone(),
                finished_at: now,
                duration_ms: 0,
                outcome: Outcome::Applied,
                services,
                steps: vec![],
                failure: None,
                source: req.source.clone(),
                snapshots: Vec::new(),
                jobs: Vec::new(),
            };
            history::append(&dir, entry, ctx.history_limit)?;
            suspend_after_rollback(&dir, &req.actor, &revision)?;
            audit::record(
                &dir,
                audit_line("rollback", "applied", Some("already running".into())),
            );
        }
        drop(lock);
        return Ok(Deployed::InSync { revision });
    }

    events.planned(&plan, &live, previous.as_deref());
    let (add, change, destroy) = plan::summary(&plan);
    info!(%release, %revision, add, change, destroy, kind = action_name(req.kind), "applying");
    let started_at = state::now();
    let t0 = Instant::now();
    let journal = std::sync::Arc::new(Journal::new(dir.clone()));
    let deploy_id = history.next_id(&release);
    let jobs = std::sync::Arc::new(crate::job::JobLog::new(Some(dir.clone())));
    let result = apply::apply(
        engine,
        &plan,
        &ApplyOptions {
            cancel: req.cancel.clone(),
            journal: Some(journal.clone()),
            pause_at: req.pause_at,
            snapshots: Some(SnapshotTarget {
                state_dir: ctx.state_dir.clone(),
                deploy: deploy_id.clone(),
                revision: revision.clone(),
                previous_revision: previous.clone(),
            }),
            jobs: Some(jobs.clone()),
            proxy_files: desired.proxy.as_ref().map(|p| apply::KnownProxyFiles {
                container: p.container_name.clone(),
                files: live.proxy_files.clone(),
            }),
        },
    )
    .await;
    let finished_at = state::now();
    let duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    let taken = snapshot_index(&dir).taken_by(&deploy_id);
    let mut entry = Entry {
        id: deploy_id,
        kind: req.kind,
        release: release.clone(),
        revision: revision.clone(),
        previous_revision: previous,
        spec_hash: Some(spec_hash.clone()),
        trigger: req.trigger.to_string(),
        actor: req.actor.clone(),
        started_at,
        finished_at,
        duration_ms,
        outcome: Outcome::Applied,
        services: Vec::new(),
        steps: Vec::new(),
        failure: None,
        source: req.source.clone(),
        // Also for a failed deploy: its snapshots were taken and are kept.
        snapshots: taken,
        jobs: jobs.records(),
    };
    match result {
        Ok(report) => {
            // The record needs the containers and images only: the proxy's files are not read
            // again (each read is an archive download from the engine).
            let after = crate::live::observe(engine, &release, &desired.images(), None).await;
            entry.services = match &after {
                Ok(live) => services_of(engine, desired, live).await,
                Err(_) => services_of(engine, desired, &LiveState::default()).await,
            };
            entry.steps = report.steps.iter().map(timing).collect();
            current::save(
                &dir,
                &Current {
                    release: release.clone(),
                    revision: revision.clone(),
                    spec_hash,
                    applied_at: entry.finished_at.clone(),
                    source: req.source.clone(),
                    services: entry.services.clone(),
                },
            )?;
            let recorded = history::append(&dir, entry.clone(), ctx.history_limit)?;
            prune_snapshots(&dir, desired, &recorded);
            if req.kind == Kind::Rollback {
                suspend_after_rollback(&dir, &req.actor, &revision)?;
            }
            let detail = (!report.final_failures.is_empty()).then(|| {
                format!(
                    "{} clean-up step(s) failed after every gate passed",
                    report.final_failures.len()
                )
            });
            audit::record(&dir, audit_line(action_name(req.kind), "applied", detail));
            finish_journal(&journal);
            drop(lock);
            Ok(Deployed::Applied {
                plan: Box::new(plan),
                report,
                entry: Box::new(entry),
            })
        }
        Err(err) => {
            entry.services = services_of(engine, desired, &LiveState::default()).await;
            let (outcome, completed, failure) = failure_of(&err);
            entry.outcome = outcome;
            entry.steps = completed.iter().map(timing).collect();
            let detail = Some(failure.reason.clone());
            entry.failure = Some(failure);
            // The failure must be remembered even if the caller only logs the error.
            if let Err(e) = history::append(&dir, entry, ctx.history_limit) {
                warn!(error = %e, "cannot record the failed deploy in history");
            }
            audit::record(
                &dir,
                audit_line(action_name(req.kind), outcome.as_str(), detail),
            );
            finish_journal(&journal);
            drop(lock);
            Err(ReconcileError::from(err).into())
        }
    }
}

/// Re-applies a recorded release (default: the previous applied one) from the git cache, with
/// no network access, through [`deploy`]; then automatic sync stays suspended until `resume`.
pub async fn rollback(
    ctx: &Context,
    engine: &Engine,
    release: &str,
    to: Option<&str>,
    mut req: RollbackRequest,
    events: &dyn DeployEvents,
) -> Result<(Entry, Deployed), DeployError> {
    let dir = ReleaseDir::new(&ctx.state_dir, release);
    let history = History::load(&dir)?;
    let current = current::load(&dir).ok().flatten().map(|c| c.revision);
    let no_target = |why: String| DeployError::NoRollbackTarget {
        release: release.to_string(),
        why,
    };
    let target = history
        .rollback_target(to, current.as_deref())
        .cloned()
        .ok_or_else(|| {
            no_target(match to {
                Some(to) => format!("no applied entry with id or revision `{to}` in history"),
                None => "history has no applied revision other than the current one".into(),
            })
        })?;
    let source = target.source.clone().ok_or_else(|| {
        no_target(format!(
            "entry {} does not record its git source",
            target.id
        ))
    })?;
    let cache = ctx.state_dir.join(&source.cache_dir);
    let snapshot = Snapshot::from_cache(&cache, &source.url, &target.revision, &source.path)?;
    let loaded = reconcile::load(std::sync::Arc::new(snapshot), &crate::desired::ProcessEnv)?;
    let deployed = deploy(
        ctx,
        engine,
        Request {
            loaded,
            source: Some(source),
            kind: Kind::Rollback,
            trigger: Trigger::Cli,
            actor: std::mem::take(&mut req.actor),
            retry: true,
            lock_wait: req.lock_wait,
            cancel: req.cancel,
            pause_at: None,
        },
        events,
    )
    .await?;
    Ok((target, deployed))
}

pub struct RollbackRequest {
    pub actor: String,
    pub lock_wait: Option<Duration>,
    pub cancel: CancellationToken,
}

/// The journal goes only once the outcome is on record: a crash before that leaves it for
/// recovery, which then records what happened.
fn finish_journal(journal: &Journal) {
    if let Err(e) = journal.finish() {
        warn!(error = %e, "cannot remove the deploy journal; the next deploy resolves it");
    }
}

/// The snapshot index, or an empty one when it cannot be read (a deploy is not failed for it;
/// `snapshots list` reports the problem).
fn snapshot_index(dir: &ReleaseDir) -> snapshots::Index {
    snapshots::Index::load(dir).unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the snapshot index");
        snapshots::Index::default()
    })
}

/// Retention after a successful release: per service, `keep:` from the spec just applied;
/// the snapshots of the current and of the previous applied deploy are never pruned. A
/// failure is logged: the release itself succeeded.
fn prune_snapshots(dir: &ReleaseDir, desired: &DesiredRelease, history: &History) {
    let keep: std::collections::BTreeMap<String, crate::spec::model::SnapshotKeep> = desired
        .services
        .iter()
        .filter_map(|s| s.snapshot.as_ref().map(|snap| (s.name.clone(), snap.keep)))
        .collect();
    let protected: Vec<String> = history
        .entries
        .iter()
        .rev()
        .filter(|e| e.outcome == Outcome::Applied)
        .take(2)
        .map(|e| e.id.clone())
        .collect();
    let index = snapshot_index(dir);
    let ids = snapshots::to_prune(
        &index.snapshots,
        &keep,
        &protected,
        std::time::SystemTime::now(),
    );
    match snapshots::prune(dir, &ids) {
        Ok(removed) if !removed.is_empty() => info!(?removed, "pruned snapshots by retention"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot prune snapshots"),
    }
}

/// A resolved crash gets its own history entry (kind `recovery`) and audit line.
fn record_recovery(
    ctx: &Context,
    dir: &ReleaseDir,
    report: &RecoveryReport,
    actor: &str,
    trigger: &str,
) {
    let (outcome, audit_outcome) = match &report.outcome {
        RecoveryOutcome::NothingStarted | RecoveryOutcome::RolledBack => {
            (Outcome::RolledBack, "rolled_back")
        }
        RecoveryOutcome::Finished => (Outcome::Applied, "applied"),
        // Not `Failed`: that would mark a revision as bad, and nothing says it was.
        RecoveryOutcome::CorruptMovedAside { .. } => (Outcome::RolledBack, "journal_corrupt"),
    };
    let summary = report.summary();
    warn!(%summary, "resolved an interrupted deploy");
    let revision = report.revision.clone().unwrap_or_default();
    let now = state::now();
    let failure = (!report.errors.is_empty() || outcome != Outcome::Applied).then(|| Failure {
        step: report.interrupted_at.as_ref().map(|s| StepTiming {
            index: s.index,
            action: s.action.clone(),
            service: None,
            target: s.target.clone(),
            duration_ms: 0,
        }),
        reason: summary.clone(),
        rollback_errors: report.errors.clone(),
    });
    let entry = match History::load(dir) {
        Ok(history) => Entry {
            id: history.next_id(&report.release),
            kind: Kind::Recovery,
            release: report.release.clone(),
            revision: revision.clone(),
            previous_revision: None,
            spec_hash: None,
            trigger: trigger.to_string(),
            actor: actor.to_string(),
            started_at: report.started_at.clone().unwrap_or_else(|| now.clone()),
            finished_at: now.clone(),
            duration_ms: 0,
            outcome,
            services: Vec::new(),
            steps: Vec::new(),
            failure,
            source: None,
            // The interrupted deploy never recorded its entry; this one takes its id, and with
            // it the snapshots taken before the crash.
            snapshots: snapshot_index(dir).taken_by(&history.next_id(&report.release)),
            jobs: Vec::new(),
        },
        Err(e) => {
            warn!(error = %e, "cannot read history to record the recovery");
            return;
        }
    };
    if let Err(e) = history::append(dir, entry, ctx.history_limit) {
        warn!(error = %e, "cannot record the recovery in history");
    }
    audit::record(
        dir,
        audit::Line {
            time: now,
            release: report.release.clone(),
            actor: actor.to_string(),
            trigger: trigger.to_string(),
            action: "recovery".to_string(),
            revision: report.revision.clone(),
            outcome: audit_outcome.to_string(),
            detail: Some(summary),
        },
    );
}

fn action_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Deploy => "apply",
        Kind::Rollback => "rollback",
        Kind::Recovery => "recovery",
    }
}

fn suspend_after_rollback(dir: &ReleaseDir, actor: &str, revision: &str) -> Result<(), StateError> {
    suspend::suspend(
        dir,
        &Suspended {
            by: actor.to_string(),
            at: state::now(),
            reason: suspend::Reason::Rollback,
            revision: Some(revision.to_string()),
            message: None,
        },
    )
}

/// The jobs already done for `revision`; an unreadable record means none (they run again,
/// which is what a lost record would do anyway).
pub fn jobs_done(dir: &ReleaseDir, revision: &str) -> std::collections::BTreeSet<String> {
    state::jobs::load(dir, revision).unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the record of jobs done; they may run again");
        Default::default()
    })
}

/// A torn history is moved aside (kept for a person to read) rather than blocking deploys.
fn load_history(dir: &ReleaseDir) -> Result<History, StateError> {
    match History::load(dir) {
        Ok(h) => Ok(h),
        Err(StateError::Corrupt { path, reason }) => {
            let aside = path.with_extension(format!("json.corrupt-{}", std::process::id()));
            warn!(path = %path.display(), %reason, aside = %aside.display(), "history is not valid; moved aside, starting a new one");
            std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
                what: "move aside",
                path,
                source,
            })?;
            Ok(History::default())
        }
        Err(e) => Err(e),
    }
}

/// The revision most of the release's containers carry in their labels.
pub fn revision_from_labels(live: &LiveState) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in &live.containers {
        if let Some(r) = &c.revision {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(r, _)| r.to_string())
}

/// sha256 (hex) of release.yaml as committed.
fn spec_hash(loaded: &Loaded) -> String {
    let bytes = loaded.tree.read_spec().unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

fn timing(s: &StepReport) -> StepTiming {
    StepTiming {
        index: s.index,
        action: s.action.to_string(),
        service: s.service.clone(),
        target: s.target.clone(),
        duration_ms: s.duration_ms,
    }
}

/// Reasons are stored as the errors say them: engine, gate and proxy errors never carry a
/// secret value (secrets are `Secret`s down to the engine call; tests/secrets.rs checks it).
fn failure_of(err: &ApplyError) -> (Outcome, Vec<StepReport>, Failure) {
    let step =
        |index: usize, action: &'static str, service: &Option<String>, target: &str| StepTiming {
            index,
            action: action.to_string(),
            service: service.clone(),
            target: target.to_string(),
            duration_ms: 0,
        };
    match err {
        ApplyError::Failed {
            index,
            action,
            service,
            target,
            reason,
            undo_errors,
            completed,
            ..
        } => (
            Outcome::Failed,
            completed.clone(),
            Failure {
                step: Some(step(*index, action, service, target)),
                reason: reason.clone(),
                rollback_errors: undo_errors.clone(),
            },
        ),
        ApplyError::Cancelled {
            index,
            action,
            service,
            target,
            undo_errors,
            completed,
            ..
        } => (
            Outcome::RolledBack,
            completed.clone(),
            Failure {
                step: Some(step(*index, action, service, target)),
                reason: "cancelled (SIGTERM or Ctrl-C); the release was undone".to_string(),
                rollback_errors: undo_errors.clone(),
            },
        ),
        // Nothing started, and nothing says the revision is bad.
        ApplyError::Journal { .. } => (
            Outcome::RolledBack,
            Vec::new(),
            Failure {
                step: None,
                reason: err.to_string(),
                rollback_errors: Vec::new(),
            },
        ),
    }
}

/// Per service (and the proxy): the image it runs now, or, with no running container, the
/// image the release names.
async fn services_of(
    engine: &Engine,
    desired: &DesiredRelease,
    live: &LiveState,
) -> Vec<ServiceImage> {
    let mut out = Vec::new();
    let wanted = desired
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.container.image.as_str()))
        .chain(
            desired
                .proxy
                .iter()
                .map(|p| ("proxy", p.container.image.as_str())),
        );
    for (service, image) in wanted {
        let running = live
            .containers
            .iter()
            .find(|c| c.service == service && c.state == ContainerState::Running);
        let digest = engine.repo_digest(image).await.ok().flatten();
        out.push(match running {
            Some(c) => ServiceImage {
                service: service.to_string(),
                image: c.image.clone(),
                image_id: Some(c.image_id.clone()),
                digest,
                color: c.color.clone(),
            },
            None => ServiceImage {
                service: service.to_string(),
                image: image.to_string(),
                image_id: live.images.get(image).cloned().flatten(),
                digest,
                color: None,
            },
        });
    }
    out
}
