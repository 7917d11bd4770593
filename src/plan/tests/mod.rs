//! Planner tests: examples for each decision, and properties over random releases checked with
//! a pure simulator of the engine (what a perfect engine would look like after each action).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::apply::{commit_point, inverse, Effect, StepRef, Undo};
use crate::desired::{resolve, DesiredRelease, HostEnv};
use crate::live::{ContainerState, Health, LiveContainer, LiveNetwork, LiveState, LiveVolume};
use crate::proxy::PreviousFile;
use crate::spec::model::ReleaseSpec;

struct NoHost;
impl HostEnv for NoHost {
    fn var(&self, name: &str) -> Option<String> {
        (name == "PLANTED_SECRET").then(|| "s3cr3t-value".to_string())
    }
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.to_string(),
        ))
    }
}

fn spec(yaml: &str) -> ReleaseSpec {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    serde_json::from_value(value).unwrap()
}

/// The repo holds one nginx.conf; its content can be changed per test.
struct Repo(&'static str);
impl crate::desired::RepoFiles for Repo {
    fn read(&self, path: &str) -> Result<String, String> {
        match path {
            "nginx.conf" => Ok(self.0.to_string()),
            other => Err(format!("{other} is not in the repo")),
        }
    }
}
const NGINX_CONF: &str = "events {}\nhttp { include /etc/nginx/reconciler/upstreams.conf; }\n";

fn desired(yaml: &str) -> DesiredRelease {
    resolve(&spec(yaml), "rev1", &NoHost, &Repo(NGINX_CONF)).unwrap()
}

/// What a perfect engine looks like after the plan ran.
fn simulate(live: &LiveState, plan: &Plan) -> LiveState {
    let mut live = live.clone();
    for step in &plan.steps {
        sim_step(&mut live, &step.action);
    }
    live
}

/// One action on a perfect engine; returns what the real executor would report of it.
fn sim_step(live: &mut LiveState, action: &Action) -> Effect {
    let effect = match action {
        Action::StopContainer { name, .. } => Effect::WasRunning(
            live.containers
                .iter()
                .any(|c| &c.name == name && c.state == ContainerState::Running),
        ),
        Action::CreateVolume { name, .. } => {
            Effect::VolumeCreated(!live.volumes.iter().any(|v| &v.name == name))
        }
        Action::ConfigureProxy { files, .. } => Effect::ProxyFilesReplaced(
            files
                .iter()
                .map(|f| PreviousFile {
                    path: f.path.clone(),
                    content: live
                        .proxy_files
                        .get(&f.path)
                        .cloned()
                        .flatten()
                        .map(String::into_bytes),
                })
                .collect(),
        ),
        Action::PushConfigs {
            name,
            files,
            remove,
            ..
        } => {
            // The simulator keeps hashes as the files' content.
            let held = live.config_files.get(name).cloned().unwrap_or_default();
            Effect::ConfigFilesReplaced(
                crate::configs::touched(files, remove)
                    .into_iter()
                    .map(|path| PreviousFile {
                        content: held.get(&path).cloned().map(String::into_bytes),
                        path,
                    })
                    .collect(),
            )
        }
        _ => Effect::Done,
    };
    {
        match action {
            Action::PullImage { image } => {
                live.images
                    .insert(image.clone(), Some(format!("sha256:pulled-{image}")));
            }
            Action::CreateNetwork { name, spec } => live.networks.push(LiveNetwork {
                id: format!("net-{name}"),
                name: name.clone(),
                internal: spec.internal,
                driver: spec.driver.clone(),
            }),
            Action::CreateVolume { name, spec } => live.volumes.push(LiveVolume {
                name: name.clone(),
                driver: spec.driver.clone(),
            }),
            Action::StopContainer { name, .. } => {
                let c = live
                    .containers
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .unwrap();
                c.state = ContainerState::Exited;
            }
            Action::RenameContainer { from, to, .. } => {
                assert!(
                    !live.containers.iter().any(|c| &c.name == to),
                    "rename onto an existing name {to}"
                );
                let c = live
                    .containers
                    .iter_mut()
                    .find(|c| &c.name == from)
                    .unwrap();
                c.name = to.clone();
                sim_move_files(live, from, to);
            }
            Action::CreateContainer {
                service,
                name,
                color,
                revision,
                config_hash,
                config,
            } => {
                assert!(
                    !live.containers.iter().any(|c| &c.name == name),
                    "create onto an existing name {name}"
                );
                for net in &config.networks {
                    assert!(
                        live.networks.iter().any(|n| n.name == net.name),
                        "container {name} created before its network {}",
                        net.name
                    );
                }
                let image_id = live
                    .images
                    .get(&config.image)
                    .cloned()
                    .flatten()
                    .expect("image pulled before create");
                live.containers.push(LiveContainer {
                    id: format!("id-{name}-{}", live.containers.len()),
                    name: name.clone(),
                    service: service.clone(),
                    color: color.clone(),
                    revision: Some(revision.clone()),
                    config_hash: Some(config_hash.clone()),
                    config: Some(config.canonical_json()),
                    image: config.image.clone(),
                    image_id,
                    state: ContainerState::Created,
                    health: Health::None,
                    restart_count: 0,
                });
            }
            Action::StartContainer { name, .. } => {
                let c = live
                    .containers
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .unwrap();
                c.state = ContainerState::Running;
            }
            Action::AwaitHealthy { name, .. } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(
                    c.state,
                    ContainerState::Running,
                    "gate on a stopped container"
                );
            }
            Action::RemoveContainer { name, .. } => {
                assert!(
                    !sim_serving(live).contains(name),
                    "removed {name} while it serves"
                );
                live.containers.retain(|c| &c.name != name);
                sim_move_files(live, name, "");
            }
            Action::SeedProxy { name, files } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(c.state, ContainerState::Created, "seeded a started proxy");
                for f in files {
                    live.proxy_files
                        .insert(f.path.clone(), Some(f.content.clone()));
                }
            }
            Action::ConfigureProxy { name, files } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(c.state, ContainerState::Running, "reloaded a stopped proxy");
                for f in files {
                    for target in crate::proxy::upstream_hosts(&f.content) {
                        let t = live.containers.iter().find(|c| c.name == target);
                        assert!(
                            t.is_some_and(|t| t.state == ContainerState::Running),
                            "switched to {target}, which is not running"
                        );
                    }
                    live.proxy_files
                        .insert(f.path.clone(), Some(f.content.clone()));
                }
            }
            Action::Verify { .. }
            | Action::Drain { .. }
            | Action::TakeSnapshot { .. }
            | Action::CheckConfigs { .. }
            | Action::RunJob { .. } => {}
            Action::SeedConfigs { name, files, .. } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(
                    c.state,
                    ContainerState::Created,
                    "seeded a started container"
                );
                let held = live.config_files.entry(name.clone()).or_default();
                for f in files {
                    held.insert(f.path.clone(), f.sha256.clone());
                }
            }
            Action::PushConfigs {
                name,
                files,
                remove,
                ..
            } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(
                    c.state,
                    ContainerState::Running,
                    "pushed to a stopped container"
                );
                let held = live.config_files.entry(name.clone()).or_default();
                for f in files {
                    held.insert(f.path.clone(), f.sha256.clone());
                }
                for path in remove {
                    held.remove(path);
                }
            }
            Action::ReloadService { name, .. } | Action::AwaitReady { name, .. } => {
                let c = live.containers.iter().find(|c| &c.name == name).unwrap();
                assert_eq!(
                    c.state,
                    ContainerState::Running,
                    "reload of a stopped container"
                );
            }
            Action::RemoveNetwork { name } => {
                assert!(
                    !live.containers.iter().any(|c| c
                        .config
                        .as_ref()
                        .is_some_and(|cfg| cfg.to_string().contains(name.as_str()))),
                    "network {name} removed while a container still uses it"
                );
                live.networks.retain(|n| &n.name != name);
            }
        }
    }
    effect
}

/// The containers a running proxy sends traffic to (the `server`s of its files).
fn sim_serving(live: &LiveState) -> Vec<String> {
    let proxy_runs = live
        .containers
        .iter()
        .any(|c| c.name == format!("{}-proxy", live.release) && c.state == ContainerState::Running);
    live.proxy_files
        .iter()
        .filter(|(path, _)| !path.contains('\0'))
        .filter_map(|(_, text)| text.as_ref())
        .filter(|_| proxy_runs)
        .flat_map(|text| crate::proxy::upstream_hosts(text))
        .collect()
}

/// The proxy's files live inside its container, and the plan reads those of the container
/// named `<release>-proxy`. The simulator keeps the files of a proxy container under any other
/// name (moved aside) under `<container>\0<path>` keys, which the planner never looks up.
fn sim_move_files(live: &mut LiveState, from: &str, to: &str) {
    // Config files are kept by container name: they go where the container goes.
    if let Some(files) = live.config_files.remove(from) {
        if !to.is_empty() {
            live.config_files.insert(to.to_string(), files);
        }
    }
    let proxy = format!("{}-proxy", live.release);
    let key_of = |name: &str, path: &str| {
        if name == proxy {
            path.to_string()
        } else {
            format!("{name}\0{path}")
        }
    };
    let moving: Vec<(String, Option<String>)> = live
        .proxy_files
        .iter()
        .filter(|(k, _)| {
            if from == proxy {
                !k.contains('\0')
            } else {
                k.starts_with(&format!("{from}\0"))
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in moving {
        live.proxy_files.remove(&k);
        let path = k.rsplit('\0').next().unwrap_or(&k).to_string();
        if !to.is_empty() {
            live.proxy_files.insert(key_of(to, &path), v);
        }
    }
}

/// An undo step on a perfect engine.
fn sim_undo(live: &mut LiveState, undo: &Undo) {
    let container = |live: &mut LiveState, name: &str| -> usize {
        live.containers
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("undo on missing {name}"))
    };
    match undo {
        Undo::RemoveNetwork(name) => live.networks.retain(|n| &n.name != name),
        Undo::RemoveVolume(name) => live.volumes.retain(|v| &v.name != name),
        Undo::StartContainer(name) => {
            let i = container(live, name);
            live.containers[i].state = ContainerState::Running;
        }
        Undo::StopContainer(name) => {
            let i = container(live, name);
            live.containers[i].state = ContainerState::Exited;
        }
        Undo::Rename { from, to } => {
            assert!(
                !live.containers.iter().any(|c| &c.name == to),
                "undo renames onto {to}"
            );
            let i = container(live, from);
            live.containers[i].name = to.clone();
            sim_move_files(live, from, to);
        }
        Undo::RemoveContainer(name) => {
            live.containers.retain(|c| &c.name != name);
            sim_move_files(live, name, "");
        }
        Undo::RemoveJobContainer(_) => {}
        Undo::RestoreConfigs { name, previous, .. } => {
            let held = live.config_files.entry(name.clone()).or_default();
            for f in previous {
                match &f.content {
                    Some(sha) => {
                        held.insert(f.path.clone(), String::from_utf8_lossy(sha).into_owned())
                    }
                    None => held.remove(&f.path),
                };
            }
        }
        Undo::RestoreProxy { previous, .. } => {
            for f in previous {
                live.proxy_files.insert(
                    f.path.clone(),
                    f.content
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned()),
                );
            }
        }
    }
}

/// [`sim_undo`] as crash recovery runs it (`Undo::run_after_crash`): the step in flight may not
/// have happened, so an object that is not there counts as undone.
fn sim_undo_after_crash(live: &mut LiveState, undo: &Undo) {
    let exists = |name: &str| live.containers.iter().any(|c| c.name == name);
    match undo {
        Undo::StopContainer(name) | Undo::RemoveContainer(name) if !exists(name) => {}
        Undo::Rename { from, .. } if !exists(from) => {}
        _ => sim_undo(live, undo),
    }
}

/// A final step as crash recovery finishes it: skipped when its object is already gone.
fn sim_finish(live: &mut LiveState, step: &StepRef) {
    match step {
        StepRef::RemoveContainer { name } if live.containers.iter().any(|c| &c.name == name) => {
            sim_step(
                live,
                &Action::RemoveContainer {
                    service: String::new(),
                    name: name.clone(),
                },
            );
        }
        StepRef::RemoveNetwork { name } => live.networks.retain(|n| &n.name != name),
        _ => {}
    }
}

fn live_with_images(d: &DesiredRelease) -> LiveState {
    let mut live = LiveState {
        release: d.release.clone(),
        ..LiveState::default()
    };
    for image in d.images() {
        live.images
            .insert(image.clone(), Some(format!("sha256:local-{image}")));
    }
    live
}

const SHOP: &str = r#"
version: 1
release: shop
networks: { edge: {}, backend: { internal: true } }
volumes: { pgdata: {} }
services:
  db:
    image: postgres:16
    volumes: ["pgdata:/var/lib/postgresql/data"]
    networks: [backend]
  api:
    image: shop-api:1.4.1
    environment: { LOG_LEVEL: info }
    secrets: { DATABASE_URL: { env: PLANTED_SECRET } }
    networks: [edge, backend]
    depends_on: [db]
    ports: ["127.0.0.1:8000:8000"]
"#;

#[test]
fn from_nothing_creates_everything_in_order() {
    let d = desired(SHOP);
    let p = plan(&d, &live_with_images(&d)).unwrap();
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(
        kinds,
        [
            "create_network",
            "create_network",
            "create_volume",
            "create",
            "start",
            "gate", // db first: api depends on it
            "create",
            "start",
            "gate",
        ]
    );
    assert_eq!(p.steps[3].action.service(), Some("db"));
    assert_eq!(p.steps[6].action.service(), Some("api"));
    assert_eq!(render::summary(&p), (5, 0, 0));
    let after = simulate(&live_with_images(&d), &p);
    assert!(plan(&d, &after).unwrap().in_sync());
}

#[test]
fn missing_image_is_pulled_before_anything_changes() {
    let d = desired(SHOP);
    let mut live = live_with_images(&d);
    live.images.insert("shop-api:1.4.1".to_string(), None);
    let p = plan(&d, &live).unwrap();
    assert!(matches!(&p.steps[0].action, Action::PullImage { image } if image == "shop-api:1.4.1"));
    assert_eq!(
        p.steps.iter().filter(|s| s.action.kind() == "pull").count(),
        1
    );
}

#[test]
fn an_image_change_is_one_service_change_with_the_field() {
    let d1 = desired(SHOP);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&SHOP.replace("shop-api:1.4.1", "shop-api:1.4.2"));
    let p = plan(&d2, &live).unwrap();
    assert_eq!(p.changes.len(), 1, "{:?}", p.changes);
    let c = &p.changes[0];
    assert_eq!(
        (c.kind, c.name.as_str(), c.action),
        (ObjectKind::Service, "api", ChangeAction::Change)
    );
    assert_eq!(
        c.fields,
        vec![FieldChange {
            path: "image".into(),
            old: Some("shop-api:1.4.1".into()),
            new: Some("shop-api:1.4.2".into()),
            sensitive: false
        }]
    );
    let text = render_text(&p);
    assert!(text.contains("~ service api (config changed)"), "{text}");
    assert!(
        text.contains("image: shop-api:1.4.1 -> shop-api:1.4.2"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    // The old container is stopped and moved aside first, removed only at the very end.
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(
        kinds,
        ["pull", "stop", "rename", "create", "start", "gate", "remove"]
    );
}

#[test]
fn a_secret_change_is_shown_without_its_value() {
    struct Rotated;
    impl HostEnv for Rotated {
        fn var(&self, _: &str) -> Option<String> {
            Some("rotated-value".to_string())
        }
        fn read_file(&self, p: &str) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.to_string(),
            ))
        }
    }
    let d1 = desired(SHOP);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = resolve(&spec(SHOP), "rev2", &Rotated, &Repo(NGINX_CONF)).unwrap();
    let p = plan(&d2, &live).unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].fields.len(), 1);
    assert!(p.changes[0].fields[0].sensitive);
    let text = render_text(&p);
    let json = render_json(&p).to_string();
    assert!(text.contains("(sensitive value changed)"), "{text}");
    for out in [&text, &json] {
        assert!(
            !out.contains("s3cr3t-value") && !out.contains("rotated-value"),
            "{out}"
        );
    }
}

#[test]
fn drift_is_repaired() {
    let d = desired(SHOP);
    let base = simulate(
        &live_with_images(&d),
        &plan(&d, &live_with_images(&d)).unwrap(),
    );

    let mut removed = base.clone();
    removed.containers.retain(|c| c.service != "api");
    let p = plan(&d, &removed).unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].action, ChangeAction::Add);
    assert!(plan(&d, &simulate(&removed, &p)).unwrap().in_sync());

    let mut stopped = base.clone();
    stopped
        .containers
        .iter_mut()
        .find(|c| c.service == "db")
        .unwrap()
        .state = ContainerState::Exited;
    let p = plan(&d, &stopped).unwrap();
    assert_eq!(p.changes[0].reason, "container exited");
    assert!(
        !p.steps.iter().any(|s| s.action.kind() == "stop"),
        "an exited container is not stopped"
    );
    assert!(plan(&d, &simulate(&stopped, &p)).unwrap().in_sync());

    let mut unhealthy = base.clone();
    unhealthy.containers[0].health = Health::Unhealthy;
    assert_eq!(
        plan(&d, &unhealthy).unwrap().changes[0].reason,
        "container unhealthy"
    );

    let mut other_image = base;
    other_image
        .images
        .insert("postgres:16".into(), Some("sha256:newer".into()));
    let p = plan(&d, &other_image).unwrap();
    assert_eq!(p.changes[0].reason, "image updated on this host");
}

#[test]
fn removed_services_and_networks_are_pruned_last_and_volumes_kept() {
    let d1 = desired(SHOP);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let only_db = r#"
version: 1
release: shop
networks: { backend: { internal: true } }
services:
  db: { image: "postgres:16", networks: [backend], volumes: ["pgdata:/var/lib/postgresql/data"] }
"#;
    // pgdata is referenced but not declared: resolution does not check that (the spec check
    // does), so declare nothing and expect the note about the kept volume.
    let d2 = desired(only_db);
    let p = plan(&d2, &live).unwrap();
    let text = render_text(&p);
    assert!(
        text.contains("- service api (removed from the spec)"),
        "{text}"
    );
    assert!(
        text.contains("- network edge (removed from the spec)"),
        "{text}"
    );
    assert!(
        p.notes.iter().any(|n| n.contains("shop-pgdata")),
        "{:?}",
        p.notes
    );
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(kinds, ["stop", "remove", "remove_network"]);
}

#[test]
fn blue_green_without_a_proxy_is_refused_with_a_fix() {
    let d = desired(&SHOP.replace(
        "image: shop-api:1.4.1",
        "image: shop-api:1.4.1\n    strategy: blue-green",
    ));
    let e = plan(&d, &live_with_images(&d)).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("the spec has none") && e.contains("fix:"), "{e}");
}

const BG: &str = r#"
version: 1
release: shop
networks: { edge: {} }
proxy:
  image: nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:8080:80"]
  networks: [edge]
  routes: { api: { service: api, port: 8000 } }
services:
  api:
    image: shop-api:1
    strategy: blue-green
    networks: [edge]
    verify: { path: /version, body: "1" }
    drain: 3s
"#;

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(|s| s.action.kind()).collect()
}

#[test]
fn blue_green_first_deploy_starts_blue_then_the_proxy_pointing_at_it() {
    let d = desired(BG);
    let live = live_with_images(&d);
    let p = plan(&d, &live).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "create_network",
            "create",
            "start",
            "gate",
            "create",
            "seed_proxy",
            "start",
            "gate",
            "verify"
        ]
    );
    assert_eq!(p.steps[1].action.target(), "shop-api-blue");
    assert_eq!(p.steps[4].action.target(), "shop-proxy");
    let Action::SeedProxy { files, .. } = &p.steps[5].action else {
        panic!()
    };
    assert!(
        files[1].content.contains("server shop-api-blue:8000;"),
        "{}",
        files[1].content
    );
    let after = simulate(&live, &p);
    assert!(
        plan(&d, &after).unwrap().in_sync(),
        "{}",
        render_text(&plan(&d, &after).unwrap())
    );
}

#[test]
fn blue_green_image_change_switches_colors_and_retires_the_old_one_last() {
    let d1 = desired(BG);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&BG.replace("shop-api:1", "shop-api:2"));
    let p = plan(&d2, &live).unwrap();
    assert_eq!(
        kinds(&p),
        ["pull", "create", "start", "gate", "switch", "verify", "drain", "remove"]
    );
    assert_eq!(p.steps[1].action.target(), "shop-api-green");
    assert_eq!(p.steps[7].action.target(), "shop-api-blue");
    let text = render_text(&p);
    assert!(text.contains("~ service api (config changed)"), "{text}");
    assert!(text.contains("color: blue -> green"), "{text}");
    assert!(text.contains("~ proxy proxy (files changed"), "{text}");
    assert!(text.contains("upstream.api: blue -> green"), "{text}");
    let Action::Drain { period, .. } = &p.steps[6].action else {
        panic!()
    };
    assert_eq!(*period, std::time::Duration::from_secs(3));
    let after = simulate(&live, &p);
    assert!(plan(&d2, &after).unwrap().in_sync());
    // And back: the next change goes to blue again.
    let d3 = desired(&BG.replace("shop-api:1", "shop-api:3"));
    let p3 = plan(&d3, &after).unwrap();
    assert_eq!(p3.steps[1].action.target(), "shop-api-blue");
}

/// A crash right after the switch with the journal lost: the plan comes from the labels alone.
/// The old color no longer appears in the upstreams file, but nginx's old workers may still be
/// finishing requests on it, so it must run until the drain, not be stopped first.
#[test]
fn a_leftover_color_after_a_switch_is_removed_only_after_the_drain() {
    let d1 = desired(BG);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&BG.replace("shop-api:1", "shop-api:2"));
    let p = plan(&d2, &live).unwrap();
    let switch = kinds(&p).iter().position(|k| *k == "switch").unwrap();
    let mut crashed = live.clone();
    for step in &p.steps[..=switch] {
        sim_step(&mut crashed, &step.action);
    }
    let recovery = plan(&d2, &crashed).unwrap();
    assert_eq!(kinds(&recovery), ["drain", "remove"]);
    assert_eq!(recovery.steps[1].action.target(), "shop-api-blue");
    let Action::Drain { period, .. } = &recovery.steps[0].action else {
        panic!()
    };
    assert_eq!(
        *period,
        std::time::Duration::from_secs(3),
        "the service's own drain"
    );
    assert!(plan(&d2, &simulate(&crashed, &recovery)).unwrap().in_sync());
}

#[test]
fn an_nginx_conf_change_is_a_reload_without_new_containers() {
    let d1 = desired(BG);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = resolve(
        &spec(BG),
        "rev2",
        &NoHost,
        &Repo("events {}\nhttp { include /etc/nginx/reconciler/upstreams.conf; gzip on; }\n"),
    )
    .unwrap();
    let p = plan(&d2, &live).unwrap();
    assert_eq!(kinds(&p), ["switch"]);
    let Action::ConfigureProxy { files, .. } = &p.steps[0].action else {
        panic!()
    };
    assert_eq!(files.len(), 1, "only the changed file is delivered");
    assert_eq!(files[0].path, "/etc/nginx/nginx.conf");
}

#[test]
fn a_hand_edited_upstream_file_is_drift_repaired_by_a_reload() {
    let d = desired(BG);
    let mut live = simulate(
        &live_with_images(&d),
        &plan(&d, &live_with_images(&d)).unwrap(),
    );
    live.proxy_files.insert(
        "/etc/nginx/reconciler/upstreams.conf".into(),
        Some("upstream api { server 10.0.0.9:80; }\n".into()),
    );
    let p = plan(&d, &live).unwrap();
    // The blue container still runs and is the only color: it keeps serving, no new color.
    assert_eq!(kinds(&p), ["switch"], "{}", render_text(&p));
}

#[test]
fn a_changed_network_is_refused_with_a_fix() {
    let d = desired(SHOP);
    let mut live = simulate(
        &live_with_images(&d),
        &plan(&d, &live_with_images(&d)).unwrap(),
    );
    live.networks
        .iter_mut()
        .find(|n| n.name == "shop-backend")
        .unwrap()
        .internal = false;
    let e = plan(&d, &live).unwrap_err().to_string();
    assert!(e.contains("network backend") && e.contains("fix:"), "{e}");
}

#[test]
fn json_has_the_documented_fields() {
    let d = desired(SHOP);
    let j = render_json(&plan(&d, &live_with_images(&d)).unwrap());
    assert_eq!(j["revision"], "rev1");
    assert_eq!(j["in_sync"], false);
    assert_eq!(j["changes"][0]["kind"], "network");
    assert_eq!(j["changes"][0]["action"], "add");
    assert!(j["changes"][0]["fields"].is_array());
    assert_eq!(j["steps"][3]["action"], "create");
}

mod configs;
mod jobs;
mod properties;
mod rolling;

fn with_snapshot(web_image: &str, cache_image: &str) -> String {
    format!(
        r#"
version: 1
release: shop
volumes: {{ pgdata: {{}} }}
services:
  db:
    image: postgres:16
    volumes: ["pgdata:/var/lib/postgresql/data"]
    snapshot: {{ exec: [pg_dump, -Fc, -U, postgres, app], format: postgres-custom }}
  web:
    image: {web_image}
    depends_on: [db]
  cache:
    image: {cache_image}
"#
    )
}

#[test]
fn a_snapshot_is_taken_after_pulls_and_volumes_before_any_container_changes() {
    let d1 = desired(&with_snapshot("web:1", "cache:1"));
    let first = plan(&d1, &live_with_images(&d1)).unwrap();
    // First deploy: the database is not running yet, nothing to back up; a note says so.
    assert!(!kinds(&first).contains(&"snapshot"));
    assert!(
        first.notes.iter().any(|n| n.contains("no snapshot of db")),
        "{:?}",
        first.notes
    );
    let live = simulate(&live_with_images(&d1), &first);

    // A service that does not depend on db changes: no snapshot.
    let d2 = desired(&with_snapshot("web:1", "cache:2"));
    let mut live2 = live.clone();
    live2
        .images
        .insert("cache:2".into(), Some("sha256:c2".into()));
    assert!(!kinds(&plan(&d2, &live2).unwrap()).contains(&"snapshot"));

    // A dependent changes, its image still to pull, and the volume was removed by hand: the
    // pull and the volume come first, then the snapshot, then the first container change.
    let d3 = desired(&with_snapshot("web:2", "cache:1"));
    let mut live3 = live.clone();
    live3.images.insert("web:2".into(), None);
    live3.volumes.clear();
    let p = plan(&d3, &live3).unwrap();
    let k = kinds(&p);
    assert_eq!(
        &k[..4],
        ["pull", "create_volume", "snapshot", "stop"],
        "{k:?}"
    );
    assert_eq!(k.iter().filter(|k| **k == "snapshot").count(), 1);
    let Action::TakeSnapshot {
        service, container, ..
    } = &p.steps[2].action
    else {
        panic!("{k:?}")
    };
    assert_eq!((service.as_str(), container.as_str()), ("db", "shop-db"));
    assert!(
        p.steps[2].reason.contains("web depends on it"),
        "{}",
        p.steps[2].reason
    );

    // db itself changes: snapshotted too, before it is stopped.
    let d4 = desired(&with_snapshot("web:1", "cache:1").replace("postgres:16", "postgres:16.1"));
    let mut live4 = live.clone();
    live4
        .images
        .insert("postgres:16.1".into(), Some("sha256:p".into()));
    let k = kinds(&plan(&d4, &live4).unwrap());
    assert_eq!(&k[..2], ["snapshot", "stop"], "{k:?}");
}
