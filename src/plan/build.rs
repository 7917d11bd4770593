//! Building the plan: desired + live → changes and ordered steps.
//!
//! Order of the steps, and why:
//! 1. pulls: a missing image fails the release before anything on the host changed;
//! 2. networks and volumes, which containers need;
//! 3. services in `depends_on` order, each expanded by its strategy and gated, so a dependent
//!    starts only after what it depends on passed its gate;
//! 4. pruned services are stopped (undoable);
//! 5. final, not undoable: removal of replaced and pruned containers, then of networks. They
//!    run only after every gate passed, so until then a failure can put the host back.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::desired::{DesiredRelease, DesiredService};
use crate::live::{ContainerState, Health, LiveContainer, LiveState};
use crate::secret::REDACTED;
use crate::spec::model::Strategy;

use super::{Action, Change, ChangeAction, FieldChange, ObjectKind, Plan, Step};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("release {release}: {object} {name}: {message} (fix: {fix})")]
    Unsupported {
        release: String,
        object: &'static str,
        name: String,
        message: String,
        fix: String,
    },
}

/// Accumulates the three phases of steps and the changes as the planner walks the objects.
#[derive(Default)]
struct Builder {
    pulls: Vec<Step>,
    main: Vec<Step>,
    finals: Vec<Step>,
    changes: Vec<Change>,
    notes: Vec<String>,
}

impl Builder {
    fn main(&mut self, action: Action, reason: impl Into<String>) {
        self.main.push(Step {
            action,
            reason: reason.into(),
        });
    }
    fn last(&mut self, action: Action, reason: impl Into<String>) {
        self.finals.push(Step {
            action,
            reason: reason.into(),
        });
    }
}

pub fn plan(desired: &DesiredRelease, live: &LiveState) -> Result<Plan, PlanError> {
    let mut b = Builder::default();
    let unsupported =
        |object: &'static str, name: &str, message: String, fix: &str| PlanError::Unsupported {
            release: desired.release.clone(),
            object,
            name: name.to_string(),
            message,
            fix: fix.to_string(),
        };

    let mut pulled = BTreeSet::new();
    for svc in &desired.services {
        let image = &svc.container.image;
        let present = live.images.get(image).is_some_and(Option::is_some);
        if !present && pulled.insert(image.clone()) {
            b.pulls.push(Step {
                action: Action::PullImage {
                    image: image.clone(),
                },
                reason: format!("image {image} is not on this host"),
            });
        }
    }

    for net in &desired.networks {
        match live.networks.iter().find(|l| l.name == net.name) {
            None => {
                b.changes.push(Change {
                    kind: ObjectKind::Network,
                    name: net.key.clone(),
                    action: ChangeAction::Add,
                    reason: "not on the engine".to_string(),
                    fields: vec![field("internal", None, Some(net.spec.internal.to_string()))],
                });
                b.main(
                    Action::CreateNetwork {
                        name: net.name.clone(),
                        spec: net.spec.clone(),
                    },
                    format!("network {} is not on the engine", net.key),
                );
            }
            Some(l) if l.internal != net.spec.internal || l.driver != net.spec.driver => {
                return Err(unsupported(
                    "network",
                    &net.key,
                    format!(
                        "changed on the engine would need every attached container recreated \
                         (internal: {} -> {}, driver: {} -> {})",
                        l.internal, net.spec.internal, l.driver, net.spec.driver
                    ),
                    "give the network a new name in the spec; services move to it and the old one is removed",
                ));
            }
            Some(_) => {}
        }
    }
    for vol in &desired.volumes {
        match live.volumes.iter().find(|l| l.name == vol.name) {
            None => {
                b.changes.push(Change {
                    kind: ObjectKind::Volume,
                    name: vol.key.clone(),
                    action: ChangeAction::Add,
                    reason: "not on the engine".to_string(),
                    fields: Vec::new(),
                });
                b.main(
                    Action::CreateVolume {
                        name: vol.name.clone(),
                        spec: vol.spec.clone(),
                    },
                    format!("volume {} is not on the engine", vol.key),
                );
            }
            Some(l) if l.driver != vol.spec.driver => {
                return Err(unsupported(
                    "volume",
                    &vol.key,
                    format!("driver {} on the engine, {} in the spec", l.driver, vol.spec.driver),
                    "volumes keep data and are never recreated: name a new volume and move the data",
                ));
            }
            Some(_) => {}
        }
    }

    for svc in &desired.services {
        let containers: Vec<&LiveContainer> = live
            .containers
            .iter()
            .filter(|c| c.service == svc.name)
            .collect();
        match svc.strategy {
            Strategy::Recreate => plan_recreate(&mut b, svc, &desired.revision, &containers, live),
            other => {
                return Err(unsupported(
                    "service",
                    &svc.name,
                    format!("strategy {} is not supported yet", other.as_str()),
                    "use strategy: recreate",
                ))
            }
        }
    }

    let desired_services: BTreeSet<&str> =
        desired.services.iter().map(|s| s.name.as_str()).collect();
    let mut pruned: BTreeMap<&str, Vec<&LiveContainer>> = BTreeMap::new();
    for c in &live.containers {
        if !desired_services.contains(c.service.as_str()) {
            pruned.entry(c.service.as_str()).or_default().push(c);
        }
    }
    for (service, containers) in pruned {
        b.changes.push(Change {
            kind: ObjectKind::Service,
            name: service.to_string(),
            action: ChangeAction::Destroy,
            reason: "removed from the spec".to_string(),
            fields: Vec::new(),
        });
        for c in containers {
            if is_active(c.state) {
                b.main(
                    Action::StopContainer {
                        service: service.to_string(),
                        name: c.name.clone(),
                    },
                    format!("service {service} was removed from the spec"),
                );
            }
            b.last(
                Action::RemoveContainer {
                    service: service.to_string(),
                    name: c.name.clone(),
                },
                format!("service {service} was removed from the spec"),
            );
        }
    }

    let desired_networks: BTreeSet<&str> =
        desired.networks.iter().map(|n| n.name.as_str()).collect();
    for net in &live.networks {
        if !desired_networks.contains(net.name.as_str()) {
            b.changes.push(Change {
                kind: ObjectKind::Network,
                name: strip_release(&desired.release, &net.name),
                action: ChangeAction::Destroy,
                reason: "removed from the spec".to_string(),
                fields: Vec::new(),
            });
            b.last(
                Action::RemoveNetwork {
                    name: net.name.clone(),
                },
                "network removed from the spec",
            );
        }
    }
    let desired_volumes: BTreeSet<&str> = desired.volumes.iter().map(|v| v.name.as_str()).collect();
    for vol in &live.volumes {
        if !desired_volumes.contains(vol.name.as_str()) {
            b.notes.push(format!(
                "volume {} is no longer in the spec; it is kept with its data \
                 (remove it with `docker volume rm {}` once you are sure)",
                vol.name, vol.name
            ));
        }
    }

    let mut steps = b.pulls;
    steps.extend(b.main);
    steps.extend(b.finals);
    Ok(Plan {
        release: desired.release.clone(),
        revision: desired.revision.clone(),
        changes: b.changes,
        steps,
        notes: b.notes,
    })
}

/// Recreate: stop the running container and move it aside (kept, so a failed gate can put it
/// back), create and start the new one, gate it; the old one is removed in the final phase.
fn plan_recreate(
    b: &mut Builder,
    svc: &DesiredService,
    revision: &str,
    containers: &[&LiveContainer],
    live: &LiveState,
) {
    let current = containers.iter().find(|c| c.name == svc.container_name);
    let leftovers: Vec<&&LiveContainer> = containers
        .iter()
        .filter(|c| c.name != svc.container_name)
        .collect();

    let decision = match current {
        None => Some((
            ChangeAction::Add,
            "not running".to_string(),
            vec![field("image", None, Some(svc.container.image.clone()))],
        )),
        Some(c) => compare(svc, c, live),
    };

    if let Some((action, reason, fields)) = decision {
        b.changes.push(Change {
            kind: ObjectKind::Service,
            name: svc.name.clone(),
            action,
            reason: reason.clone(),
            fields,
        });
        if let Some(old) = current {
            if is_active(old.state) {
                b.main(
                    Action::StopContainer {
                        service: svc.name.clone(),
                        name: old.name.clone(),
                    },
                    format!("recreate {}: {reason}", svc.name),
                );
            }
            let aside = aside_name(&old.name, &old.id);
            b.main(
                Action::RenameContainer {
                    service: svc.name.clone(),
                    from: old.name.clone(),
                    to: aside.clone(),
                },
                "keep the old container until the new one passed its gate",
            );
            b.last(
                Action::RemoveContainer {
                    service: svc.name.clone(),
                    name: aside,
                },
                format!("replaced by the new {} container", svc.name),
            );
        }
        b.main(
            Action::CreateContainer {
                service: svc.name.clone(),
                name: svc.container_name.clone(),
                revision: revision.to_string(),
                config_hash: svc.config_hash.clone(),
                config: Box::new(svc.container.clone()),
            },
            format!("{} {reason}", svc.name),
        );
        b.main(
            Action::StartContainer {
                service: svc.name.clone(),
                name: svc.container_name.clone(),
            },
            format!("start {}", svc.name),
        );
        b.main(
            Action::AwaitHealthy {
                service: svc.name.clone(),
                name: svc.container_name.clone(),
                gate: svc.gate.clone(),
            },
            format!(
                "{} must pass its gate before anything depending on it",
                svc.name
            ),
        );
    }

    if !leftovers.is_empty() {
        if !b.changes.iter().any(|c| c.name == svc.name) {
            b.changes.push(Change {
                kind: ObjectKind::Service,
                name: svc.name.clone(),
                action: ChangeAction::Change,
                reason: "containers left over from an interrupted release".to_string(),
                fields: Vec::new(),
            });
        }
        for c in leftovers {
            if is_active(c.state) {
                b.main(
                    Action::StopContainer {
                        service: svc.name.clone(),
                        name: c.name.clone(),
                    },
                    "left over from an interrupted release",
                );
            }
            b.last(
                Action::RemoveContainer {
                    service: svc.name.clone(),
                    name: c.name.clone(),
                },
                "left over from an interrupted release",
            );
        }
    }
}

/// Why a live container no longer matches its desired service, if it does not.
fn compare(
    svc: &DesiredService,
    live_container: &LiveContainer,
    live: &LiveState,
) -> Option<(ChangeAction, String, Vec<FieldChange>)> {
    if live_container.config_hash.as_deref() != Some(svc.config_hash.as_str()) {
        let fields = config_fields(
            live_container.config.as_ref(),
            &svc.container.canonical_json(),
        );
        return Some((ChangeAction::Change, "config changed".to_string(), fields));
    }
    match live.images.get(&svc.container.image) {
        Some(Some(id)) if *id != live_container.image_id => {
            return Some((
                ChangeAction::Change,
                "image updated on this host".to_string(),
                vec![field(
                    "image",
                    Some(format!(
                        "{} ({})",
                        svc.container.image,
                        short_id(&live_container.image_id)
                    )),
                    Some(format!("{} ({})", svc.container.image, short_id(id))),
                )],
            ));
        }
        Some(None) | None => {
            return Some((
                ChangeAction::Change,
                "image no longer on this host".to_string(),
                vec![field("image", None, Some(svc.container.image.clone()))],
            ));
        }
        Some(Some(_)) => {}
    }
    if live_container.state != ContainerState::Running {
        return Some((
            ChangeAction::Change,
            format!("container {}", live_container.state.as_str()),
            vec![field(
                "state",
                Some(live_container.state.as_str().to_string()),
                Some("running".to_string()),
            )],
        ));
    }
    if live_container.health == Health::Unhealthy {
        return Some((
            ChangeAction::Change,
            "container unhealthy".to_string(),
            vec![field(
                "health",
                Some("unhealthy".to_string()),
                Some("healthy".to_string()),
            )],
        ));
    }
    None
}

/// The fields that differ between the live config label and the desired canonical config.
/// Values hidden on either side are reported as a sensitive change without values; when the
/// hash differs but no visible field does, a sensitive value changed.
fn config_fields(live: Option<&Value>, desired: &Value) -> Vec<FieldChange> {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    if let Some(live) = live {
        flatten("", live, &mut old);
    }
    flatten("", desired, &mut new);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut fields = Vec::new();
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        if o == n {
            continue;
        }
        let hidden = |v: Option<&String>| v.is_some_and(|v| v == REDACTED);
        if hidden(o) || hidden(n) {
            fields.push(FieldChange {
                path: key.clone(),
                old: None,
                new: None,
                sensitive: true,
            });
        } else {
            fields.push(field(key, o.cloned(), n.cloned()));
        }
    }
    if fields.is_empty() && live.is_some() {
        fields.push(FieldChange {
            path: "env".to_string(),
            old: None,
            new: None,
            sensitive: true,
        });
    }
    fields
}

/// Objects become dotted paths; lists stay whole (a list of ports reads best as one value).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), display_value(other));
        }
    }
}

fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            format!("[{}]", words.join(", "))
        }
        other => other.to_string(),
    }
}

fn field(path: &str, old: Option<String>, new: Option<String>) -> FieldChange {
    FieldChange {
        path: path.to_string(),
        old,
        new,
        sensitive: false,
    }
}

fn is_active(state: ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// Where a replaced container waits for the end of the release: unique per container, so a
/// leftover from an interrupted release never blocks the next one.
pub fn aside_name(name: &str, id: &str) -> String {
    format!("{name}-old-{}", &id[..id.len().min(12)])
}

fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex[..hex.len().min(12)].to_string()
}

fn strip_release(release: &str, name: &str) -> String {
    name.strip_prefix(&format!("{release}-"))
        .unwrap_or(name)
        .to_string()
}
