//! What `apply` and `run`'s loop tell the targets, kept here so each makes one call per
//! milestone. Across `run`'s cycles it remembers the last release that loaded (its targets
//! hear about a revision that does not load) and the revision last applied (drift is the host
//! leaving it).

use std::time::{Duration, Instant};

use super::event::{running_revision, Deploy, EventError};
use super::{Notifier, Target};
use crate::defaults;
use crate::live::LiveState;
use crate::plan::Plan;
use crate::reconcile::{Loaded, ReconcileError, Trigger};
use crate::source::SourceTree;
use crate::spec::model::EventKind;

/// The daemon's actor.
pub const DAEMON_ACTOR: &str = "reconciler";

pub struct Reporter {
    notifier: Notifier,
    /// `reconciler` for the daemon, the operator's login name for the CLI.
    actor: String,
    last_loaded: Option<(Deploy, Vec<Target>)>,
    /// The revision this loop last applied or found in sync.
    applied: Option<String>,
}

/// One cycle's deploy, from load to the end of its apply.
pub struct CycleDeploy {
    deploy: Deploy,
    targets: Vec<Target>,
    started: Option<Instant>,
}

impl Reporter {
    pub fn new(notifier: Notifier, actor: &str) -> Reporter {
        Reporter {
            notifier,
            actor: actor.to_string(),
            last_loaded: None,
            applied: None,
        }
    }

    /// `run`'s reporter: actor `reconciler`, default delivery settings.
    pub fn daemon() -> Reporter {
        Reporter::new(Notifier::default(), DAEMON_ACTOR)
    }

    /// `apply`'s reporter: the operator's login name as actor.
    pub fn cli() -> Reporter {
        Reporter::new(Notifier::default(), &super::event::local_actor())
    }

    /// A revision whose spec does not load: `failed`, to the last loaded release's targets
    /// (the broken revision's own cannot be trusted; the dedupe window keeps a poll loop from
    /// repeating it).
    pub fn load_failed(&self, tree: &dyn SourceTree, err: &ReconcileError) {
        if let Some((deploy, targets)) = &self.last_loaded {
            let deploy = deploy
                .clone()
                .with_commit(tree.revision(), tree.subject(), tree.author());
            let (kind, error) = EventError::from_reconcile(err);
            self.notifier
                .send(targets, &deploy.event(kind, None, Some(error)));
        }
    }

    /// The release loaded; its targets get this cycle's events.
    pub fn loaded(&mut self, loaded: &Loaded, trigger: Trigger) -> CycleDeploy {
        let base = Deploy::new(
            &loaded.desired.release,
            loaded.desired.environment.as_deref(),
            &self.actor,
            &trigger.to_string(),
        );
        self.last_loaded = Some((base.clone(), loaded.notify.clone()));
        let tree = &loaded.tree;
        CycleDeploy {
            deploy: base.with_commit(tree.revision(), tree.subject(), tree.author()),
            targets: loaded.notify.clone(),
            started: None,
        }
    }

    /// Observing or planning failed: `failed`.
    pub fn plan_failed(&self, cycle: &CycleDeploy, err: &ReconcileError) {
        let (kind, error) = EventError::from_reconcile(err);
        self.send(cycle, kind, None, Some(error));
    }

    /// The plan is made. In sync: the revision counts as applied. Otherwise the deploy learns
    /// the services and the previous revision, and a plan against the revision already
    /// applied is drift: `drift_detected`.
    pub fn planned(&mut self, cycle: &mut CycleDeploy, plan: &Plan, live: &LiveState) {
        let revision = cycle.deploy.revision.clone();
        if plan.in_sync() {
            self.applied = revision;
            return;
        }
        let previous = self.applied.clone().or_else(|| running_revision(live));
        let drifted = previous.is_some() && previous == revision;
        cycle.deploy = cycle.deploy.clone().with_previous(previous).with_plan(plan);
        if drifted {
            self.send(cycle, EventKind::DriftDetected, None, None);
        }
    }

    /// The apply begins: `started`.
    pub fn started(&self, cycle: &mut CycleDeploy) {
        cycle.started = Some(Instant::now());
        self.send(cycle, EventKind::Started, None, None);
    }

    /// The apply ended: `succeeded`, `failed` or `rolled_back`.
    pub fn finished<T>(&mut self, cycle: &CycleDeploy, result: &Result<T, ReconcileError>) {
        let took = cycle.started.map(|s| s.elapsed()).unwrap_or_default();
        if result.is_ok() {
            self.applied = cycle.deploy.revision.clone();
        }
        let event = cycle.deploy.finished(result, took);
        self.notifier.send(&cycle.targets, &event);
    }

    /// Shutdown: wait for the queues, up to the flush deadline.
    pub async fn flush(&self) {
        self.notifier.flush(defaults::NOTIFY_FLUSH_DEADLINE).await;
    }

    fn send(
        &self,
        cycle: &CycleDeploy,
        kind: EventKind,
        took: Option<Duration>,
        error: Option<EventError>,
    ) {
        let event = cycle.deploy.event(kind, took, error);
        self.notifier.send(&cycle.targets, &event);
    }
}
