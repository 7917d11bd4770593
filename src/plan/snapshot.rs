//! Which stateful services are snapshotted before a release: those with `snapshot:` that the
//! release changes, or whose dependents (`depends_on` naming them) it changes, and only when
//! their container runs: a first deploy has nothing to back up.

use crate::desired::DesiredRelease;
use crate::live::{ContainerState, LiveState};

use super::{Action, Change, ObjectKind, Step};

/// The snapshot steps, in the release's service order, and notes for those that cannot be
/// taken.
pub(super) fn snapshot_steps(
    desired: &DesiredRelease,
    live: &LiveState,
    changes: &[Change],
) -> (Vec<Step>, Vec<String>) {
    let changed = |name: &str| {
        changes
            .iter()
            .any(|c| c.kind == ObjectKind::Service && c.name == name)
    };
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    for svc in &desired.services {
        let Some(snapshot) = &svc.snapshot else {
            continue;
        };
        let dependents: Vec<&str> = desired
            .services
            .iter()
            .filter(|d| d.dependencies.contains(&svc.name) && changed(&d.name))
            .map(|d| d.name.as_str())
            .collect();
        let reason = if changed(&svc.name) {
            format!("{} changes", svc.name)
        } else if !dependents.is_empty() {
            format!("{} depends on it and changes", dependents.join(", "))
        } else {
            continue;
        };
        let running = live
            .containers
            .iter()
            .any(|c| c.name == svc.container_name && c.state == ContainerState::Running);
        if !running {
            notes.push(format!(
                "no snapshot of {}: its container {} is not running (nothing to back up yet)",
                svc.name, svc.container_name
            ));
            continue;
        }
        steps.push(Step {
            action: Action::TakeSnapshot {
                service: svc.name.clone(),
                container: svc.container_name.clone(),
                snapshot: snapshot.clone(),
            },
            reason: format!("snapshot {} before the release: {reason}", svc.name),
        });
    }
    (steps, notes)
}
