//! What `apply` and `run`'s loop tell the targets, kept here so each makes one call per
//! milestone. Across `run`'s cycles it remembers the last release that loaded (its targets
//! hear about a revision that does not load) and the revision last applied (drift is the host
//! leaving it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::event::{running_revision, Deploy, EventError};
use super::{Notifier, Target};
use crate::defaults;
use crate::deploy::DeployEvents;
use crate::live::LiveState;
use crate::plan::Plan;
use crate::reconcile::{Loaded, ReconcileError, Trigger};
use crate::recovery::RecoveryReport;
use crate::source::SourceTree;
use crate::spec::model::EventKind;

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
    /// `previous`: the revision recorded as applied, when the caller knows it.
    pub fn planned(
        &mut self,
        cycle: &mut CycleDeploy,
        plan: &Plan,
        live: &LiveState,
        previous: Option<&str>,
    ) {
        let revision = cycle.deploy.revision.clone();
        if plan.in_sync() {
            self.applied = revision;
            return;
        }
        let previous = previous
            .map(str::to_string)
            .or_else(|| self.applied.clone())
            .or_else(|| running_revision(live));
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
    pub fn finished(&mut self, cycle: &CycleDeploy, result: Result<(), &ReconcileError>) {
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

/// A deploy's milestones told to the targets, beside another [`DeployEvents`] (the CLI's
/// printing, or nothing for the daemon): `started` goes out only once the plan is made under the
/// lock, so a deploy refused for the lock or a failed revision announces nothing.
pub struct Notifying<'a> {
    inner: &'a dyn DeployEvents,
    state: Mutex<NotifyingState<'a>>,
}

struct NotifyingState<'a> {
    reporter: &'a mut Reporter,
    cycle: &'a mut CycleDeploy,
    /// The CLI has not reported the plan yet (the daemon did, before the deploy).
    report_plan: bool,
    started: bool,
}

impl<'a> Notifying<'a> {
    pub fn new(
        inner: &'a dyn DeployEvents,
        reporter: &'a mut Reporter,
        cycle: &'a mut CycleDeploy,
        report_plan: bool,
    ) -> Notifying<'a> {
        Notifying {
            inner,
            state: Mutex::new(NotifyingState {
                reporter,
                cycle,
                report_plan,
                started: false,
            }),
        }
    }

    /// After the deploy: `succeeded`, `failed` or `rolled_back`, if `started` was sent.
    pub fn finished(self, result: Result<(), &ReconcileError>) {
        let state = self
            .state
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.started {
            state.reporter.finished(state.cycle, result);
        }
    }
}

impl DeployEvents for Notifying<'_> {
    fn planned(&self, plan: &Plan, live: &LiveState, previous: Option<&str>) {
        self.inner.planned(plan, live, previous);
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        if state.report_plan {
            state.reporter.planned(state.cycle, plan, live, previous);
        }
        state.reporter.started(state.cycle);
        state.started = true;
    }

    fn recovered(&self, report: &RecoveryReport) {
        self.inner.recovered(report);
    }
}
