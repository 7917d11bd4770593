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
//!
//! One-off jobs are then put in place by `plan::jobs` (after 2, before a service's first step,
//! and before 5).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::desired::resolve::PROXY;
use crate::desired::{DesiredProxy, DesiredRelease, DesiredService};
use crate::live::{ContainerState, Health, LiveContainer, LiveState};
use crate::proxy::{
    parse_upstreams, read_markers, render_upstreams, serving_colors, upstream_hosts, ProxyFile,
    Servers, UpstreamTarget,
};
use crate::secret::REDACTED;
use crate::spec::model::Strategy;

use super::rolling::{plan_rolling, RollingOutcome};
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
pub(super) struct Builder {
    pulls: Vec<Step>,
    main: Vec<Step>,
    finals: Vec<Step>,
    pub(super) changes: Vec<Change>,
    notes: Vec<String>,
    /// The proxy's upstreams as a running nginx serves them at this point of the plan, when
    /// the proxy stays and its live file is fully ours with every server running: only then
    /// can a rolling service switch replica by replica (each switch rewrites this).
    pub(super) upstreams: Option<Vec<UpstreamTarget>>,
    /// Proxy files the plan already delivered before the final switch (path → content).
    pub(super) delivered: BTreeMap<String, String>,
}

impl Builder {
    pub(super) fn main(&mut self, action: Action, reason: impl Into<String>) {
        self.main.push(Step {
            action,
            reason: reason.into(),
        });
    }
    pub(super) fn last(&mut self, action: Action, reason: impl Into<String>) {
        self.finals.push(Step {
            action,
            reason: reason.into(),
        });
    }

    /// Takes a container out of service for the rest of the release: stopped if it runs
    /// (undoable), moved aside when its name is needed by a new container (undoable), and
    /// removed in the final phase, once every gate passed.
    pub(super) fn take_out(
        &mut self,
        service: &str,
        c: &LiveContainer,
        move_aside: bool,
        reason: &str,
    ) {
        if is_active(c.state) {
            self.main(
                Action::StopContainer {
                    service: service.to_string(),
                    name: c.name.clone(),
                },
                reason,
            );
        }
        let mut name = c.name.clone();
        if move_aside {
            let aside = aside_name(&c.name, &c.id);
            self.main(
                Action::RenameContainer {
                    service: service.to_string(),
                    from: c.name.clone(),
                    to: aside.clone(),
                },
                format!("{reason}: kept aside until the release passed"),
            );
            name = aside;
        }
        self.last(
            Action::RemoveContainer {
                service: service.to_string(),
                name,
            },
            reason,
        );
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

    for image in desired.images() {
        let present = live.images.get(&image).is_some_and(Option::is_some);
        if !present {
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

    // Snapshots go here, once the release is decided: after the pulls and the new networks
    // and volumes, before any container of the release changes.
    let snapshots_at = b.main.len();
    b.upstreams = steady_upstreams(desired, live);
    // What serves each routed service after this release, and which containers the switch
    // retires.
    let mut serving: BTreeMap<String, Servers> = BTreeMap::new();
    let mut switched: Vec<&DesiredService> = Vec::new();
    let mut retired: Vec<(String, String)> = Vec::new();
    for svc in &desired.services {
        let containers: Vec<&LiveContainer> = live
            .containers
            .iter()
            .filter(|c| c.service == svc.name)
            .collect();
        match svc.strategy {
            Strategy::Recreate => {
                let old = plan_recreate(
                    &mut b,
                    svc,
                    &desired.revision,
                    &containers,
                    live,
                    desired.proxy.as_ref(),
                );
                retired.extend(old.into_iter().map(|n| (svc.name.clone(), n)));
            }
            Strategy::BlueGreen => {
                let Some(proxy) = &desired.proxy else {
                    return Err(unsupported(
                        "service",
                        &svc.name,
                        "blue-green switches traffic through the proxy, and the spec has none"
                            .to_string(),
                        "declare proxy: with a route to this service, or use strategy: recreate",
                    ));
                };
                let outcome =
                    plan_blue_green(&mut b, svc, &desired.revision, &containers, live, proxy);
                if outcome.switched {
                    switched.push(svc);
                }
                retired.extend(outcome.retired.into_iter().map(|n| (svc.name.clone(), n)));
                serving.insert(
                    svc.name.clone(),
                    Servers::Color {
                        color: outcome.color,
                        container: outcome.container,
                    },
                );
            }
            Strategy::Rolling => {
                let Some(proxy) = &desired.proxy else {
                    return Err(unsupported(
                        "service",
                        &svc.name,
                        "rolling replaces replicas behind the proxy, and the spec has none"
                            .to_string(),
                        "declare proxy: with a route to this service, or use strategy: recreate",
                    ));
                };
                let RollingOutcome {
                    servers,
                    switched: rolled,
                    retired: old,
                } = plan_rolling(&mut b, svc, &desired.revision, &containers, live, proxy);
                if rolled {
                    switched.push(svc);
                }
                retired.extend(old.into_iter().map(|n| (svc.name.clone(), n)));
                serving.insert(svc.name.clone(), servers);
            }
        }
    }
    if let Some(proxy) = &desired.proxy {
        plan_proxy(&mut b, desired, proxy, &serving, live);
        for svc in &switched {
            if let Some(verify) = &svc.verify {
                b.main(
                    Action::Verify {
                        service: svc.name.clone(),
                        verify: verify.clone(),
                    },
                    format!(
                        "{} must answer through the proxy after the switch",
                        svc.name
                    ),
                );
            }
        }
        if !retired.is_empty() {
            // Every service that loses a container waits its own drain period: a leftover
            // color may have served until a reload just before this plan (a crash right
            // after the switch), so its requests drain like those of a switched service.
            let losing: BTreeSet<&str> = retired.iter().map(|(s, _)| s.as_str()).collect();
            let period = desired
                .services
                .iter()
                .filter(|s| losing.contains(s.name.as_str()))
                .chain(switched.iter().copied())
                .map(|s| s.drain)
                .max()
                .unwrap_or(crate::defaults::DRAIN_PERIOD);
            b.main(
                Action::Drain {
                    proxy: proxy.container_name.clone(),
                    period,
                },
                "nginx's old workers finish their requests before the old colors stop",
            );
        }
        for (service, name) in retired {
            b.last(
                Action::RemoveContainer {
                    service: service.clone(),
                    name,
                },
                format!("{service}: the previous color no longer serves"),
            );
        }
    }

    let mut desired_services: BTreeSet<&str> =
        desired.services.iter().map(|s| s.name.as_str()).collect();
    if desired.proxy.is_some() {
        desired_services.insert(PROXY);
    }
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
            b.take_out(
                service,
                c,
                false,
                &format!("service {service} was removed from the spec"),
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

    let checks = super::configs::checks(desired, &b.main);
    b.pulls.extend(checks);
    let (snapshots, notes) = super::snapshot::snapshot_steps(desired, live, &b.changes);
    b.main.splice(snapshots_at..snapshots_at, snapshots);
    b.notes.extend(notes);
    let mut steps = b.pulls;
    steps.extend(b.main);
    steps.extend(b.finals);
    super::jobs::add_jobs(desired, live, &mut steps, &mut b.changes);
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
/// Returns the leftovers the proxy still sends traffic to (from a routed strategy before),
/// which keep running until the final switch.
fn plan_recreate(
    b: &mut Builder,
    svc: &DesiredService,
    revision: &str,
    containers: &[&LiveContainer],
    live: &LiveState,
    proxy: Option<&DesiredProxy>,
) -> Vec<String> {
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

    let stays = decision.is_none();
    if let Some((action, reason, fields)) = decision {
        b.changes.push(Change {
            kind: ObjectKind::Service,
            name: svc.name.clone(),
            action,
            reason: reason.clone(),
            fields,
        });
        if let Some(old) = current {
            b.take_out(
                &svc.name,
                old,
                true,
                &format!("recreate {}: {reason}", svc.name),
            );
        }
        b.main(
            create_service_container(svc, svc.container_name.clone(), None, revision),
            format!("{} {reason}", svc.name),
        );
        super::configs::seed(b, svc, &svc.container_name);
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

    if let (true, Some(c)) = (stays, current) {
        super::configs::update(b, svc, &c.name, live);
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
        let hosts = proxy.map(|p| serving_hosts(live, p)).unwrap_or_default();
        let mut serving = Vec::new();
        for c in leftovers {
            if hosts.contains(&c.name) && c.state == ContainerState::Running {
                serving.push(c.name.clone());
            } else {
                b.take_out(&svc.name, c, false, "left over from an interrupted release");
            }
        }
        return serving;
    }
    Vec::new()
}

/// What a blue-green service looks like after its steps.
struct BlueGreenOutcome {
    /// The color that serves after the release.
    color: String,
    /// Its container.
    container: String,
    /// A new color was started: the upstreams switch to it.
    switched: bool,
    /// Containers that stop serving at the switch, removed after the drain.
    retired: Vec<String>,
}

pub const COLORS: [&str; 2] = ["blue", "green"];

pub(super) fn other_color(color: &str) -> &'static str {
    if color == COLORS[0] {
        COLORS[1]
    } else {
        COLORS[0]
    }
}

/// The color that serves a service now: what the live upstreams file says, else the only
/// color that runs.
fn live_color(
    svc: &DesiredService,
    containers: &[&LiveContainer],
    live: &LiveState,
    proxy: &DesiredProxy,
) -> Option<String> {
    let rendered = live
        .proxy_files
        .get(&proxy.upstreams_path)
        .cloned()
        .flatten();
    let from_file = rendered.and_then(|text| {
        serving_colors(&text)
            .into_values()
            .find(|(service, _)| *service == svc.name)
            .map(|(_, color)| color)
    });
    from_file
        .filter(|c| {
            containers
                .iter()
                .any(|k| k.color.as_deref() == Some(c.as_str()))
        })
        .or_else(|| match containers {
            [only] => only.color.clone(),
            _ => None,
        })
}

/// Blue-green: start the new color beside the serving one and gate it; the proxy switch, the
/// verify, the drain and the removal of the old color follow for the whole release.
fn plan_blue_green(
    b: &mut Builder,
    svc: &DesiredService,
    revision: &str,
    containers: &[&LiveContainer],
    live: &LiveState,
    proxy: &DesiredProxy,
) -> BlueGreenOutcome {
    let colored = |color: &str| format!("{}-{color}", svc.container_name);
    let serving_color = live_color(svc, containers, live, proxy);
    let current = serving_color
        .as_deref()
        .and_then(|c| containers.iter().find(|k| k.name == colored(c)));
    let decision = match current {
        None => Some((
            ChangeAction::Add,
            "not running".to_string(),
            vec![field("image", None, Some(svc.container.image.clone()))],
        )),
        Some(c) => compare(svc, c, live),
    };
    // Everything that is neither the serving container nor about to be created goes.
    let mut leftovers: Vec<&&LiveContainer> = containers
        .iter()
        .filter(|c| Some(c.name.as_str()) != current.map(|k| k.name.as_str()))
        .collect();

    let Some((action, reason, mut fields)) = decision else {
        if let Some(c) = current {
            super::configs::update(b, svc, &c.name, live);
        }
        if !leftovers.is_empty() && !b.changes.iter().any(|c| c.name == svc.name) {
            b.changes.push(Change {
                kind: ObjectKind::Service,
                name: svc.name.clone(),
                action: ChangeAction::Change,
                reason: "containers left over from an interrupted release".to_string(),
                fields: Vec::new(),
            });
        }
        let still_serving = retire_unless_serving(b, svc, &leftovers);
        let color = serving_color.unwrap_or_else(|| COLORS[0].to_string());
        return BlueGreenOutcome {
            container: colored(&color),
            color,
            switched: false,
            retired: still_serving,
        };
    };

    // Not the color the file names even when that container is gone: the running nginx may
    // still hold its name until the switch.
    let file_color = live
        .proxy_files
        .get(&proxy.upstreams_path)
        .cloned()
        .flatten()
        .and_then(|text| {
            serving_colors(&text)
                .into_values()
                .find(|(service, _)| *service == svc.name)
                .map(|(_, color)| color)
        });
    let new_color = serving_color
        .as_deref()
        .or(file_color.as_deref())
        .map(other_color)
        .unwrap_or(COLORS[0])
        .to_string();
    let new_name = colored(&new_color);
    fields.push(field(
        "color",
        serving_color.clone(),
        Some(new_color.clone()),
    ));
    b.changes.push(Change {
        kind: ObjectKind::Service,
        name: svc.name.clone(),
        action,
        reason: reason.clone(),
        fields,
    });
    // A container already holding the new color's name is not serving: move it aside.
    let blocking: Vec<&&LiveContainer> = leftovers
        .iter()
        .copied()
        .filter(|c| c.name == new_name)
        .collect();
    leftovers.retain(|c| c.name != new_name);
    retire(b, svc, &blocking);
    let still_serving = retire_unless_serving(b, svc, &leftovers);
    b.main(
        create_service_container(svc, new_name.clone(), Some(new_color.clone()), revision),
        format!(
            "{} {reason}: new color {new_color} beside the serving one",
            svc.name
        ),
    );
    super::configs::seed(b, svc, &new_name);
    b.main(
        Action::StartContainer {
            service: svc.name.clone(),
            name: new_name.clone(),
        },
        format!("start {} {new_color}", svc.name),
    );
    b.main(
        Action::AwaitHealthy {
            service: svc.name.clone(),
            name: new_name.clone(),
            gate: svc.gate.clone(),
        },
        format!(
            "{} {new_color} must pass its gate before traffic moves",
            svc.name
        ),
    );
    BlueGreenOutcome {
        color: new_color,
        container: new_name,
        switched: true,
        retired: current
            .map(|c| c.name.clone())
            .into_iter()
            .chain(still_serving)
            .collect(),
    }
}

/// Retires the leftovers that are not running; returns the names of those that run, which
/// keep running until the drain and are removed after it. A running leftover may serve now
/// (left behind by another strategy, say) or may have served until a reload moments ago (a
/// crash right after the switch, with the journal lost): the live upstreams file cannot tell
/// nginx's old workers apart, so stopping it before the drain could cut their requests.
pub(super) fn retire_unless_serving(
    b: &mut Builder,
    svc: &DesiredService,
    leftovers: &[&&LiveContainer],
) -> Vec<String> {
    let (running, idle): (Vec<&&LiveContainer>, Vec<&&LiveContainer>) = leftovers
        .iter()
        .copied()
        .partition(|c| c.state == ContainerState::Running);
    retire(b, svc, &idle);
    running.into_iter().map(|c| c.name.clone()).collect()
}

/// The containers the running proxy sends traffic to now, by its live upstreams file.
pub(super) fn serving_hosts(live: &LiveState, proxy: &DesiredProxy) -> BTreeSet<String> {
    let runs = live
        .containers
        .iter()
        .any(|c| c.name == proxy.container_name && c.state == ContainerState::Running);
    match live.proxy_files.get(&proxy.upstreams_path) {
        Some(Some(text)) if runs => upstream_hosts(text).into_iter().collect(),
        _ => BTreeSet::new(),
    }
}

/// The live upstreams when a rolling service may switch replica by replica: the proxy stays
/// (running, same container config), its upstreams file is exactly one we rendered, and every
/// server in it runs, so any rewrite of one block passes `nginx -t`. Otherwise `None`, and
/// every service switches in the release's one final reload.
fn steady_upstreams(desired: &DesiredRelease, live: &LiveState) -> Option<Vec<UpstreamTarget>> {
    let proxy = desired.proxy.as_ref()?;
    let container = live
        .containers
        .iter()
        .find(|c| c.name == proxy.container_name)?;
    if container.state != ContainerState::Running
        || container.config_hash.as_deref() != Some(proxy.config_hash.as_str())
    {
        return None;
    }
    let text = live.proxy_files.get(&proxy.upstreams_path)?.as_ref()?;
    let targets = parse_upstreams(&desired.release, text)?;
    let all_run = targets
        .iter()
        .flat_map(|t| t.servers.containers())
        .all(|h| {
            live.containers
                .iter()
                .any(|c| c.name == h && c.state == ContainerState::Running)
        });
    all_run.then_some(targets)
}

/// Containers of a blue-green service that do not serve: out of the way of the new color.
pub(super) fn retire(b: &mut Builder, svc: &DesiredService, containers: &[&&LiveContainer]) {
    for c in containers {
        b.take_out(
            &svc.name,
            c,
            true,
            "not serving: left over from an interrupted release",
        );
    }
}

/// The proxy: created (files seeded before its first start) or recreated when its container
/// config changed; otherwise its files are delivered and nginx reloaded when they differ from
/// what runs: that is the switch.
fn plan_proxy(
    b: &mut Builder,
    desired: &DesiredRelease,
    proxy: &DesiredProxy,
    serving: &BTreeMap<String, Servers>,
    live: &LiveState,
) {
    let targets: Vec<UpstreamTarget> = proxy
        .routes
        .iter()
        .map(|r| {
            let servers = serving
                .get(&r.service)
                .cloned()
                .unwrap_or_else(|| Servers::Color {
                    // A route to a recreate service points at its single container.
                    color: String::new(),
                    container: format!("{}-{}", desired.release, r.service),
                });
            UpstreamTarget {
                upstream: r.upstream.clone(),
                service: r.service.clone(),
                servers,
                port: r.port,
            }
        })
        .collect();
    let upstreams = render_upstreams(&desired.release, &targets);
    let wanted = [
        ProxyFile {
            path: proxy.nginx_conf_path.clone(),
            content: proxy.nginx_conf.clone(),
        },
        ProxyFile {
            path: proxy.upstreams_path.clone(),
            content: upstreams,
        },
    ];
    let live_proxy = live
        .containers
        .iter()
        .find(|c| c.name == proxy.container_name);
    // Compared with what nginx will have after the plan's earlier (rolling) switches.
    let changed_files: Vec<ProxyFile> = wanted
        .iter()
        .filter(|f| {
            let current = match b.delivered.get(&f.path) {
                Some(text) => Some(text.clone()),
                None => live.proxy_files.get(&f.path).cloned().flatten(),
            };
            current.as_deref() != Some(f.content.as_str())
        })
        .cloned()
        .collect();
    let file_fields = |files: &[ProxyFile]| -> Vec<FieldChange> {
        let before = live
            .proxy_files
            .get(&proxy.upstreams_path)
            .cloned()
            .flatten()
            .map(|t| read_markers(&t))
            .unwrap_or_default();
        let mut fields = Vec::new();
        for f in files {
            if f.path == proxy.upstreams_path {
                for t in &targets {
                    let old = before.get(&t.upstream).map(crate::proxy::Marker::describe);
                    let new = t.servers.describe();
                    if old.as_deref() != Some(new.as_str()) {
                        fields.push(field(&format!("upstream.{}", t.upstream), old, Some(new)));
                    }
                }
            } else {
                // A whole file does not fit on a diff line; its digest says whether it changed.
                let old = live.proxy_files.get(&f.path).cloned().flatten();
                fields.push(field(
                    &f.path,
                    old.as_deref().map(content_digest),
                    Some(content_digest(&f.content)),
                ));
            }
        }
        fields
    };

    let recreate_reason = match live_proxy {
        None => Some((ChangeAction::Add, "not running".to_string())),
        Some(c) if c.config_hash.as_deref() != Some(proxy.config_hash.as_str()) => Some((
            ChangeAction::Change,
            "container config changed (nginx is restarted)".to_string(),
        )),
        Some(c) if c.state != ContainerState::Running => Some((
            ChangeAction::Change,
            format!("container {}", c.state.as_str()),
        )),
        Some(_) => None,
    };
    let Some((action, reason)) = recreate_reason else {
        if !changed_files.is_empty() {
            b.changes.push(Change {
                kind: ObjectKind::Proxy,
                name: PROXY.to_string(),
                action: ChangeAction::Change,
                reason: "files changed (nginx -t, graceful reload)".to_string(),
                fields: file_fields(&changed_files),
            });
            b.main(
                Action::ConfigureProxy {
                    name: proxy.container_name.clone(),
                    files: changed_files,
                },
                "render the upstreams to the serving colors, nginx -t, graceful reload",
            );
        }
        return;
    };
    let mut fields = match live_proxy {
        None => vec![field("image", None, Some(proxy.container.image.clone()))],
        Some(c) => config_fields(c.config.as_ref(), &proxy.container.canonical_json()),
    };
    fields.extend(file_fields(&wanted));
    b.changes.push(Change {
        kind: ObjectKind::Proxy,
        name: PROXY.to_string(),
        action,
        reason,
        fields,
    });
    if let Some(old) = live_proxy {
        b.take_out(PROXY, old, true, "the proxy's container config changed");
    }
    b.main(
        Action::CreateContainer {
            service: PROXY.to_string(),
            name: proxy.container_name.clone(),
            color: None,
            revision: desired.revision.clone(),
            config_hash: proxy.config_hash.clone(),
            config: Box::new(proxy.container.clone()),
        },
        "the proxy runs the release's nginx",
    );
    b.main(
        Action::SeedProxy {
            name: proxy.container_name.clone(),
            files: wanted.to_vec(),
        },
        "nginx.conf and the upstreams must be there before nginx starts",
    );
    b.main(
        Action::StartContainer {
            service: PROXY.to_string(),
            name: proxy.container_name.clone(),
        },
        "start the proxy",
    );
    b.main(
        Action::AwaitHealthy {
            service: PROXY.to_string(),
            name: proxy.container_name.clone(),
            gate: proxy.gate.clone(),
        },
        "the proxy must stay up",
    );
}

/// Why a live container no longer matches its desired service, if it does not.
pub(super) fn compare(
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

pub(super) fn field(path: &str, old: Option<String>, new: Option<String>) -> FieldChange {
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

/// `sha256:` and the first 12 hex digits of a file's content.
fn content_digest(content: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex = hex::encode(Sha256::digest(content.as_bytes()));
    format!("sha256:{}", &hex[..12])
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

/// The creation of one of `svc`'s containers (`color` for blue-green and rolling), labelled
/// with the revision and config hash it is created for.
pub(super) fn create_service_container(
    svc: &DesiredService,
    name: String,
    color: Option<String>,
    revision: &str,
) -> Action {
    Action::CreateContainer {
        service: svc.name.clone(),
        name,
        color,
        revision: revision.to_string(),
        config_hash: svc.config_hash.clone(),
        config: Box::new(svc.container.clone()),
    }
}
