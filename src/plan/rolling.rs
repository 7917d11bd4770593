//! `strategy: rolling`: `deploy.replicas` containers behind the proxy, replaced one at a time.
//!
//! Each replica has a slot (1..=replicas) and, like a blue-green service, a color per slot:
//! slot `k` runs as `<release>-<service>-<k>-<color>`, and a replacement starts the other
//! color of that slot beside the serving one. The upstreams file records each slot's color
//! (`slots=1:blue,2:green`), so what serves is read back from the proxy.
//!
//! When the proxy stays and its live upstreams are fully ours (see `steady_upstreams`), each
//! replacement is start-first and switched on its own: create, start, gate, switch the upstream
//! to the new replica (`nginx -t`, reload), drain, stop the old one; then the next slot. New
//! slots are added the same way; slots above `replicas` are switched out together at the end,
//! drained and stopped. Removals wait for the commit point, like every removal, so a failed
//! gate on any replica undoes all of them. Otherwise (first deploy, proxy recreated, upstreams
//! edited by hand or pointing at a stopped container) the new replicas are started and gated
//! side by side and switched in the release's one final reload, as blue-green does.

use std::collections::BTreeMap;

use crate::desired::{DesiredProxy, DesiredService};
use crate::live::{LiveContainer, LiveState};
use crate::proxy::{render_upstreams, ProxyFile, Servers, SlotTarget};

use super::build::{
    compare, create_service_container, field, other_color, retire_unless_serving, Builder, COLORS,
};
use super::{Action, Change, ChangeAction, FieldChange};

/// What a rolling service looks like after its steps.
pub(super) struct RollingOutcome {
    /// Every slot's container after the release, in slot order.
    pub servers: Servers,
    /// A replica changed: the service is verified after the final switch.
    pub switched: bool,
    /// Containers still serving that the final switch retires (removed after the drain).
    pub retired: Vec<String>,
}

/// Why a replica is replaced (`compare`'s answer), if it is.
type Decision = Option<(ChangeAction, String, Vec<FieldChange>)>;
/// A wanted slot, its serving container if any, and whether it is replaced.
type SlotPlan<'a> = (u32, Option<&'a LiveContainer>, Decision);

/// The engine name of slot `slot` in `color`.
pub fn slot_container(service_container: &str, slot: u32, color: &str) -> String {
    format!("{service_container}-{slot}-{color}")
}

/// The slot and color of a container named by [`slot_container`], if it is one.
fn parse_slot(service_container: &str, name: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix(service_container)?.strip_prefix('-')?;
    let (slot, color) = rest.split_once('-')?;
    let slot: u32 = slot.parse().ok().filter(|s| *s >= 1)?;
    COLORS.contains(&color).then(|| (slot, color.to_string()))
}

/// The color the live upstreams file gives each slot of `svc` (its container may be gone).
fn file_slots(
    svc: &DesiredService,
    live: &LiveState,
    proxy: &DesiredProxy,
) -> BTreeMap<u32, String> {
    live.proxy_files
        .get(&proxy.upstreams_path)
        .cloned()
        .flatten()
        .and_then(|text| {
            crate::proxy::read_markers(&text)
                .into_values()
                .find(|m| m.service == svc.name && !m.slots.is_empty())
        })
        .map(|m| m.slots)
        .unwrap_or_default()
}

/// The serving container of each slot: by the live upstreams file when it names this service,
/// else by name, a slot with exactly one container.
fn live_slots<'a>(
    svc: &DesiredService,
    containers: &[&'a LiveContainer],
    file: &BTreeMap<u32, String>,
) -> BTreeMap<u32, &'a LiveContainer> {
    let find = |slot: u32, color: &str| {
        let name = slot_container(&svc.container_name, slot, color);
        containers.iter().copied().find(|c| c.name == name)
    };
    if !file.is_empty() {
        return file
            .iter()
            .filter_map(|(slot, color)| Some((*slot, find(*slot, color)?)))
            .collect();
    }
    let mut by_slot: BTreeMap<u32, Vec<&LiveContainer>> = BTreeMap::new();
    for c in containers {
        if let Some((slot, _)) = parse_slot(&svc.container_name, &c.name) {
            by_slot.entry(slot).or_default().push(c);
        }
    }
    by_slot
        .into_iter()
        .filter_map(|(slot, cs)| match cs.as_slice() {
            [only] => Some((slot, *only)),
            _ => None,
        })
        .collect()
}

/// The routes to `svc` in the steady upstreams, when every one is a rolling block with exactly
/// the serving slots, on the port the spec routes to: only then can one block be rewritten
/// slot by slot. `None` sends the service to the final switch.
fn steady_blocks(
    b: &Builder,
    svc: &DesiredService,
    proxy: &DesiredProxy,
    serving: &BTreeMap<u32, &LiveContainer>,
) -> Option<()> {
    let targets = b.upstreams.as_ref()?;
    let wanted: BTreeMap<&str, u16> = proxy
        .routes
        .iter()
        .filter(|r| r.service == svc.name)
        .map(|r| (r.upstream.as_str(), r.port))
        .collect();
    let mut found = 0;
    for t in targets.iter().filter(|t| t.service == svc.name) {
        let Servers::Slots(slots) = &t.servers else {
            return None;
        };
        let same_slots = slots.len() == serving.len()
            && slots
                .iter()
                .all(|s| serving.get(&s.slot).is_some_and(|c| c.name == s.container));
        if wanted.get(t.upstream.as_str()) != Some(&t.port) || !same_slots {
            return None;
        }
        found += 1;
    }
    (found == wanted.len() && !serving.is_empty()).then_some(())
}

/// Rewrites the slots of every block of `service` in the steady upstreams and plans the switch.
fn switch(
    b: &mut Builder,
    svc: &DesiredService,
    proxy: &DesiredProxy,
    release: &str,
    edit: impl Fn(&mut Vec<SlotTarget>),
    reason: String,
) {
    let Some(targets) = b.upstreams.as_mut() else {
        return;
    };
    for t in targets.iter_mut().filter(|t| t.service == svc.name) {
        if let Servers::Slots(slots) = &mut t.servers {
            edit(slots);
            slots.sort();
        }
    }
    let content = render_upstreams(release, targets);
    b.delivered
        .insert(proxy.upstreams_path.clone(), content.clone());
    b.main(
        Action::ConfigureProxy {
            name: proxy.container_name.clone(),
            files: vec![ProxyFile {
                path: proxy.upstreams_path.clone(),
                content,
            }],
        },
        reason,
    );
}

/// Plans a rolling service; see the module docs for the two ways it goes.
pub(super) fn plan_rolling(
    b: &mut Builder,
    svc: &DesiredService,
    revision: &str,
    containers: &[&LiveContainer],
    live: &LiveState,
    proxy: &DesiredProxy,
) -> RollingOutcome {
    let release = live.release.clone();
    let file = file_slots(svc, live, proxy);
    let serving = live_slots(svc, containers, &file);
    let one_by_one = steady_blocks(b, svc, proxy, &serving).is_some();
    let replicas = svc.replicas.max(1);

    // Per wanted slot: keep the serving container, or replace it (with the reason).
    let mut plans: Vec<SlotPlan> = Vec::new();
    for slot in 1..=replicas {
        let current = serving.get(&slot).copied();
        let decision = match current {
            None => Some((
                ChangeAction::Add,
                "not running".to_string(),
                vec![field("image", None, Some(svc.container.image.clone()))],
            )),
            Some(c) => compare(svc, c, live),
        };
        plans.push((slot, current, decision));
    }
    let scaled_down: Vec<&LiveContainer> = serving.range(replicas + 1..).map(|(_, c)| *c).collect();
    let leftovers: Vec<&&LiveContainer> = containers
        .iter()
        .filter(|c| !serving.values().any(|s| s.name == c.name))
        .collect();

    let changed: Vec<&SlotPlan> = plans.iter().filter(|(_, _, d)| d.is_some()).collect();
    let describe = |slots: &[(u32, String)]| {
        slots
            .iter()
            .map(|(k, c)| format!("{k}:{c}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let before: Vec<(u32, String)> = serving
        .iter()
        .map(|(k, c)| (*k, c.color.clone().unwrap_or_default()))
        .collect();
    let after: Vec<(u32, String)> = plans
        .iter()
        .map(|(slot, current, decision)| {
            // A replacement takes the other color than the file names, even when that
            // container is gone: the running nginx may still hold its name.
            let color = current
                .and_then(|c| c.color.clone())
                .or_else(|| file.get(slot).cloned());
            let color = match (decision, color) {
                (None, Some(c)) => c,
                (_, c) => c
                    .as_deref()
                    .map(other_color)
                    .unwrap_or(COLORS[0])
                    .to_string(),
            };
            (*slot, color)
        })
        .collect();
    let servers = Servers::Slots(
        after
            .iter()
            .map(|(slot, color)| SlotTarget {
                slot: *slot,
                color: color.clone(),
                container: slot_container(&svc.container_name, *slot, color),
            })
            .collect(),
    );

    if changed.is_empty() && scaled_down.is_empty() && leftovers.is_empty() {
        return RollingOutcome {
            servers,
            switched: false,
            retired: Vec::new(),
        };
    }
    // One change entry for the service: the first replaced replica's reason and fields, and
    // how the slots move.
    let (action, reason, mut fields) = match changed.first() {
        Some((_, _, Some((action, reason, fields)))) => {
            let action = if serving.is_empty() {
                *action
            } else {
                ChangeAction::Change
            };
            (action, reason.clone(), fields.clone())
        }
        _ if !scaled_down.is_empty() => (
            ChangeAction::Change,
            format!("scaled to {replicas} replicas"),
            Vec::new(),
        ),
        _ => (
            ChangeAction::Change,
            "containers left over from an interrupted release".to_string(),
            Vec::new(),
        ),
    };
    if serving.len() != replicas as usize {
        fields.push(field(
            "replicas",
            (!serving.is_empty()).then(|| serving.len().to_string()),
            Some(replicas.to_string()),
        ));
    }
    if before != after {
        fields.push(field(
            "slots",
            (!before.is_empty()).then(|| describe(&before)),
            Some(describe(&after)),
        ));
    }
    b.changes.push(Change {
        kind: super::ObjectKind::Service,
        name: svc.name.clone(),
        action,
        reason: reason.clone(),
        fields,
    });
    // Not serving: out of the way first (a slot's name may be needed). Serving leftovers
    // (another strategy's containers) keep serving until the final switch.
    let mut retired = retire_unless_serving(b, svc, &leftovers);

    for ((slot, current, decision), (_, color)) in plans.iter().zip(&after) {
        let Some((_, why, _)) = decision else {
            continue;
        };
        let name = slot_container(&svc.container_name, *slot, color);
        b.main(
            create_service_container(svc, name.clone(), Some(color.clone()), revision),
            format!(
                "{} replica {slot} {why}: {color} beside the serving one",
                svc.name
            ),
        );
        b.main(
            Action::StartContainer {
                service: svc.name.clone(),
                name: name.clone(),
            },
            format!("start {} replica {slot} ({color})", svc.name),
        );
        b.main(
            Action::AwaitHealthy {
                service: svc.name.clone(),
                name: name.clone(),
                gate: svc.gate.clone(),
            },
            format!(
                "{} replica {slot} must pass its gate before it takes traffic",
                svc.name
            ),
        );
        if !one_by_one {
            retired.extend(current.map(|c| c.name.clone()));
            continue;
        }
        let target = SlotTarget {
            slot: *slot,
            color: color.clone(),
            container: name.clone(),
        };
        let slot = *slot;
        switch(
            b,
            svc,
            proxy,
            &release,
            |slots| {
                slots.retain(|s| s.slot != slot);
                slots.push(target.clone());
            },
            format!(
                "{} replica {slot}: the upstream sends to {name} (nginx -t, graceful reload)",
                svc.name
            ),
        );
        if let Some(old) = current {
            drain_and_stop(b, svc, proxy, &[old], &format!("replica {slot}"));
        }
    }

    if one_by_one {
        if !scaled_down.is_empty() {
            switch(
                b,
                svc,
                proxy,
                &release,
                |slots| slots.retain(|s| s.slot <= replicas),
                format!(
                    "{} scaled to {replicas}: slots above it leave the upstream",
                    svc.name
                ),
            );
            drain_and_stop(b, svc, proxy, &scaled_down, "scaled down");
        }
    } else {
        retired.extend(scaled_down.iter().map(|c| c.name.clone()));
    }
    RollingOutcome {
        servers,
        switched: !changed.is_empty() || !scaled_down.is_empty(),
        retired,
    }
}

/// After a switch moved traffic off `old`: nginx's old workers finish, then `old` stops
/// (undoable); it is removed after the commit point.
fn drain_and_stop(
    b: &mut Builder,
    svc: &DesiredService,
    proxy: &DesiredProxy,
    old: &[&LiveContainer],
    what: &str,
) {
    b.main(
        Action::Drain {
            proxy: proxy.container_name.clone(),
            period: svc.drain,
        },
        format!(
            "{} {what}: nginx's old workers finish their requests",
            svc.name
        ),
    );
    for c in old {
        b.take_out(
            &svc.name,
            c,
            false,
            &format!("{} {what}: no longer in the upstream", svc.name),
        );
    }
}
