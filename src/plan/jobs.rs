//! Where one-off jobs (`jobs:`) go in a plan, and which of them run.
//!
//! A job runs when the release changes what it is attached to (a service: a new container of
//! it is created; the release: the plan has any step), or on every revision with
//! `when: always`; and never twice for one revision (`LiveState::jobs_done`). Positions:
//! 1. pulls, network and volume creation (a job may need them);
//! 2. (snapshots of stateful services go here, before any job);
//! 3. release-level `before` jobs;
//! 4. each service's `before` jobs, right before the first step of that service (the old
//!    version still serves while a migration runs, and nothing of it has been touched);
//! 5. `after` jobs (services', then the release's) once everything is started, switched,
//!    verified and drained, before the first final step: a failure still rolls back.

use crate::desired::{DesiredJob, DesiredRelease, JobPhase};
use crate::live::LiveState;
use crate::spec::model::JobWhen;

use super::build::field;
use super::{Action, Change, ChangeAction, ObjectKind, Step};

/// How a succeeded job is remembered for a revision: its key and its config hash (a job edited
/// under the same revision, as with `diff --local`, is a new job).
pub fn done_key(job: &str, config_hash: &str) -> String {
    format!("{job}@{config_hash}")
}

/// Where the release starts changing what runs: after the pulls, the creation of networks and
/// volumes, and the snapshots of stateful services (spliced in by the planner before
/// `add_jobs` runs), so that every `before` job runs after the snapshots.
pub(super) fn prelude_end(steps: &[Step]) -> usize {
    steps
        .iter()
        .position(|s| {
            !matches!(
                s.action,
                Action::PullImage { .. }
                    | Action::CreateNetwork { .. }
                    | Action::CreateVolume { .. }
                    | Action::TakeSnapshot { .. }
                    | Action::CheckConfigs { .. }
            )
        })
        .unwrap_or(steps.len())
}

/// Inserts the job steps that should run into `steps` (already ordered by the planner) and
/// their changes into `changes`.
pub(super) fn add_jobs(
    desired: &DesiredRelease,
    live: &LiveState,
    steps: &mut Vec<Step>,
    changes: &mut Vec<Change>,
) {
    let release_changes = !steps.is_empty();
    let service_changes = |service: &str| {
        steps.iter().any(
            |s| matches!(&s.action, Action::CreateContainer { service: svc, .. } if svc == service),
        )
    };
    let runs = |job: &DesiredJob| {
        let attached_changes = match &job.service {
            Some(service) => service_changes(service),
            None => release_changes,
        };
        let done = live
            .jobs_done
            .contains(&done_key(&job.key(), &job.config_hash));
        !done && (attached_changes || job.when == JobWhen::Always)
    };
    let chosen: Vec<&DesiredJob> = desired.jobs.iter().filter(|j| runs(j)).collect();
    if chosen.is_empty() {
        return;
    }
    let secrets = desired.secrets();
    let mut step = |job: &DesiredJob| {
        let attached = job.service.as_deref().unwrap_or("the release");
        let (when, what) = match job.phase {
            JobPhase::Before => ("before", format!("{attached}'s new version starts")),
            JobPhase::After => ("after", format!("{attached} changed")),
        };
        let why = match job.when {
            JobWhen::Changed => "",
            JobWhen::Always => " (when: always)",
        };
        changes.push(Change {
            kind: ObjectKind::Job,
            name: job.key(),
            action: ChangeAction::Add,
            reason: format!("runs {when} {what}{why}"),
            fields: vec![
                field("image", None, Some(job.container.image.clone())),
                field(
                    "command",
                    None,
                    job.container.command.as_ref().map(|c| c.join(" ")),
                ),
            ],
        });
        Step {
            action: Action::RunJob {
                service: job.service.clone(),
                job: job.key(),
                name: job.container_name.clone(),
                phase: job.phase,
                revision: desired.revision.clone(),
                config_hash: job.config_hash.clone(),
                config: Box::new(job.container.clone()),
                timeout: job.timeout,
                redact: secrets.clone(),
            },
            reason: format!("job {} runs {when} {what}{why}", job.key()),
        }
    };

    let prelude_end = prelude_end(steps);
    let mut before: Vec<Step> = Vec::new();
    let mut after: Vec<Step> = Vec::new();
    let mut per_service: Vec<(String, Vec<Step>)> = Vec::new();
    // `desired.jobs` lists the services' jobs (in dependency order), then the release's: so
    // `after` holds the services' before the release's.
    for job in &chosen {
        match (job.phase, &job.service) {
            (JobPhase::Before, None) => before.push(step(job)),
            (JobPhase::Before, Some(service)) => {
                match per_service.iter_mut().find(|(s, _)| s == service) {
                    Some((_, list)) => list.push(step(job)),
                    None => per_service.push((service.clone(), vec![step(job)])),
                }
            }
            (JobPhase::After, _) => after.push(step(job)),
        }
    }

    let commit = steps
        .iter()
        .position(|s| {
            matches!(
                s.action,
                Action::RemoveContainer { .. } | Action::RemoveNetwork { .. }
            )
        })
        .unwrap_or(steps.len());
    let mut out: Vec<Step> = Vec::with_capacity(steps.len() + chosen.len());
    let mut rest = std::mem::take(steps).into_iter().enumerate().peekable();
    while let Some((_, s)) = rest.next_if(|(i, _)| *i < prelude_end) {
        out.push(s);
    }
    out.append(&mut before);
    // Jobs of services that have no step of their own (`when: always`) run here, in order.
    let has_steps = |service: &str, rest: &[(usize, Step)]| {
        rest.iter()
            .any(|(i, s)| *i < commit && s.action.service() == Some(service))
    };
    let remaining: Vec<(usize, Step)> = rest.collect();
    let (idle, mut pending): (Vec<_>, Vec<_>) = per_service
        .into_iter()
        .partition(|(service, _)| !has_steps(service, &remaining));
    for (_, mut list) in idle {
        out.append(&mut list);
    }
    for (i, s) in remaining {
        if i == commit {
            out.append(&mut after);
        }
        if i < commit {
            if let Some(service) = s.action.service() {
                if let Some(pos) = pending.iter().position(|(p, _)| p == service) {
                    let (_, mut list) = pending.remove(pos);
                    out.append(&mut list);
                }
            }
        }
        out.push(s);
    }
    out.append(&mut after);
    *steps = out;
}
