//! Planning a service's `configs:`. A new container gets its files before its first start; a
//! running one whose files differ from the commit's gets them pushed, then a reload, then its
//! `ready:` probe — never a recreate, so its id and its data stay.

use std::collections::BTreeMap;

use crate::desired::configs::short;
use crate::desired::{DesiredRelease, DesiredService};
use crate::live::LiveState;
use crate::spec::model::ConfigKind;

use super::build::{field, Builder};
use super::{Action, Change, ChangeAction, FieldChange, ObjectKind, Step};

/// After `svc`'s container `name` is created: its files, before it starts.
pub(super) fn seed(b: &mut Builder, svc: &DesiredService, name: &str) {
    let Some(configs) = &svc.configs else { return };
    if configs.files.is_empty() {
        return;
    }
    b.main(
        Action::SeedConfigs {
            service: svc.name.clone(),
            name: name.to_string(),
            files: configs.files.clone(),
        },
        format!(
            "{}: its configs must be in place before it starts",
            svc.name
        ),
    );
}

/// For a container that stays (same config, running): push the files whose content differs,
/// remove the stale ones in directory targets, reload, gate. Nothing when all match.
pub(super) fn update(b: &mut Builder, svc: &DesiredService, name: &str, live: &LiveState) {
    let Some(configs) = &svc.configs else { return };
    let empty = BTreeMap::new();
    let in_container = live.config_files.get(name).unwrap_or(&empty);
    let mut fields: Vec<FieldChange> = Vec::new();
    let changed: Vec<_> = configs
        .files
        .iter()
        .filter(|f| in_container.get(&f.path) != Some(&f.sha256))
        .cloned()
        .collect();
    for f in &changed {
        fields.push(field(
            &format!("configs.{}", f.path),
            in_container.get(&f.path).map(|s| short(s).to_string()),
            Some(short(&f.sha256).to_string()),
        ));
    }
    let stale: Vec<String> = in_container
        .iter()
        .filter(|(path, _)| {
            configs.dirs.iter().any(|d| path.starts_with(d.as_str()))
                && !configs.files.iter().any(|f| &&f.path == path)
        })
        .map(|(path, sha)| {
            fields.push(field(
                &format!("configs.{path}"),
                Some(short(sha).to_string()),
                None,
            ));
            path.clone()
        })
        .collect();
    if changed.is_empty() && stale.is_empty() {
        return;
    }
    let how = configs
        .reload
        .as_ref()
        .map(|r| format!("reload with {}", r.how))
        .unwrap_or_else(|| "no reload declared".to_string());
    b.changes.push(Change {
        kind: ObjectKind::Service,
        name: svc.name.clone(),
        action: ChangeAction::Change,
        reason: format!("configs changed (pushed into the running container, {how})"),
        fields,
    });
    b.main(
        Action::PushConfigs {
            service: svc.name.clone(),
            name: name.to_string(),
            files: changed,
            remove: stale,
            reload: configs.reload.clone(),
        },
        format!(
            "{}: deliver the commit's configs without a recreate",
            svc.name
        ),
    );
    if let Some(reload) = &configs.reload {
        b.main(
            Action::ReloadService {
                service: svc.name.clone(),
                name: name.to_string(),
                reload: reload.clone(),
            },
            format!("{}: read the new configs ({})", svc.name, reload.how),
        );
    }
    if let Some(gate) = &configs.ready {
        b.main(
            Action::AwaitReady {
                service: svc.name.clone(),
                name: name.to_string(),
                gate: gate.clone(),
            },
            format!("{} must be ready after the reload", svc.name),
        );
    }
}

/// One tool check per service whose files the plan delivers (seeded or pushed), to run after
/// the pulls (the tools are in the service's image) and before anything changes.
pub(super) fn checks(desired: &DesiredRelease, main: &[Step]) -> Vec<Step> {
    let delivers = |service: &str| {
        main.iter().any(|s| {
            matches!(&s.action,
                Action::SeedConfigs { service: x, .. } | Action::PushConfigs { service: x, .. }
                    if x == service)
        })
    };
    desired
        .services
        .iter()
        .filter(|svc| delivers(&svc.name))
        .filter_map(|svc| {
            let configs = svc.configs.as_ref()?;
            // Only kinds an image tool checks; the structure of the rest was checked already.
            let tool_checked = configs.files.iter().any(|f| {
                matches!(
                    f.kind,
                    ConfigKind::Prometheus | ConfigKind::PrometheusRules | ConfigKind::Alertmanager
                )
            });
            if !tool_checked {
                return None;
            }
            Some(Step {
                action: Action::CheckConfigs {
                    service: svc.name.clone(),
                    image: svc.container.image.clone(),
                    files: configs.files.clone(),
                },
                reason: format!(
                    "{}: its configs pass the image's own checks before anything changes",
                    svc.name
                ),
            })
        })
        .collect()
}
