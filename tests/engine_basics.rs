//! The engine layer and `live::observe` against the real Docker engine.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::docker::{self as d, TestRelease, APP_PORT, APP_V1, BUSYBOX};
use reconciler::desired::{ContainerConfig, DockerHealthcheck, EnvValue, NetworkAttachment};
use reconciler::engine::{ContainerOwnership, Engine, EngineError};
use reconciler::labels;
use reconciler::live::{self, ContainerState, Health};
use reconciler::secret::Secret;
use reconciler::spec::model::{NetworkSpec, VolumeSpec};

fn owner(release: &str, service: &str, config: &ContainerConfig) -> ContainerOwnership {
    ContainerOwnership {
        release: release.to_string(),
        service: service.to_string(),
        revision: "rev1".to_string(),
        config_hash: config.config_hash(),
        color: None,
    }
}

#[tokio::test]
async fn connect_negotiates_the_api_version() {
    let engine = d::engine().await;
    // Docker 20.10 speaks 1.41; bollard 0.21 defaults to 1.53 and must have come down to it.
    let server_api = d::docker(&["version", "-f", "{{.Server.APIVersion}}"])
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(engine.api_version(), server_api);
    let version = engine.server_version().await.expect("version");
    assert!(!version.is_empty());
    // A real call works at the negotiated version.
    engine
        .list_containers(&labels::release_filter("t-nothing-here"))
        .await
        .expect("list");
}

#[tokio::test]
async fn a_dead_daemon_is_a_clear_error() {
    let err = Engine::connect(Some("unix:///nonexistent.sock"))
        .await
        .expect_err("no daemon there");
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains("cannot reach the Docker engine at unix:///nonexistent.sock"),
        "{msg}"
    );
    assert!(
        msg.contains("fix: start dockerd or set --docker-host"),
        "{msg}"
    );

    // Nothing listens on this port: the error comes from version negotiation.
    let err = Engine::connect(Some("tcp://127.0.0.1:1"))
        .await
        .expect_err("no daemon there");
    assert!(
        err.to_string()
            .contains("cannot reach the Docker engine at tcp://127.0.0.1:1"),
        "{err}"
    );

    let err = Engine::connect(Some("ssh://somewhere"))
        .await
        .expect_err("unsupported scheme");
    assert!(matches!(err, EngineError::BadHost { .. }), "{err}");
}

#[tokio::test]
async fn created_objects_are_observed_back() {
    d::require_images(&[APP_V1, BUSYBOX]);
    let engine = d::engine().await;
    let rel = TestRelease::new("observe");
    let net = rel.obj("back");
    let vol = rel.obj("data");

    engine
        .create_network(
            &net,
            &NetworkSpec {
                internal: false,
                driver: "bridge".into(),
                labels: BTreeMap::new(),
            },
            &rel.name,
        )
        .await
        .expect("create network");
    assert!(engine
        .create_volume(
            &vol,
            &VolumeSpec {
                driver: "local".into(),
                labels: BTreeMap::new()
            },
            &rel.name
        )
        .await
        .expect("create volume"));
    // A second create of the same volume reports it already existed.
    assert!(!engine
        .create_volume(
            &vol,
            &VolumeSpec {
                driver: "local".into(),
                labels: BTreeMap::new()
            },
            &rel.name
        )
        .await
        .expect("create volume again"));

    let mut config = ContainerConfig {
        image: APP_V1.to_string(),
        networks: vec![NetworkAttachment {
            name: net.clone(),
            aliases: vec!["api".into()],
        }],
        healthcheck: Some(DockerHealthcheck {
            test: vec![
                "CMD".into(),
                "wget".into(),
                "-q".into(),
                "-O".into(),
                "/dev/null".into(),
                format!("http://127.0.0.1:{APP_PORT}/health"),
            ],
            interval_ns: Some(300_000_000),
            timeout_ns: Some(2_000_000_000),
            retries: Some(3),
            start_period_ns: None,
        }),
        ..Default::default()
    };
    config
        .env
        .insert("PLAIN".into(), EnvValue::Plain("1".into()));
    config.env.insert(
        "TOKEN".into(),
        EnvValue::Sensitive(Secret::new("planted-secret-42")),
    );
    let name = rel.obj("api");
    let t0 = Instant::now();
    let id = engine
        .create_container(&name, &config, &owner(&rel.name, "api", &config))
        .await
        .expect("create container");
    engine.start_container(&name).await.expect("start");
    eprintln!("create+start took {} ms", t0.elapsed().as_millis());

    // The secret reaches the container, and only its environment.
    let env = d::inspect(&name, "{{json .Config.Env}}");
    assert!(env.contains("TOKEN=planted-secret-42"));
    assert!(!d::inspect(&name, "{{json .Config.Labels}}").contains("planted-secret-42"));

    // Wait for the HEALTHCHECK to turn healthy, then observe.
    let mut state = None;
    for _ in 0..40 {
        let s = live::observe(
            &engine,
            &rel.name,
            &[APP_V1.to_string(), "reconciler-test/absent:0".to_string()],
            None,
        )
        .await
        .expect("observe");
        if s.containers.first().map(|c| c.health) == Some(Health::Healthy) {
            state = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let state = state.expect("container became healthy");
    assert_eq!(state.release, rel.name);
    assert_eq!(state.containers.len(), 1);
    let c = &state.containers[0];
    assert_eq!(c.id, id);
    assert_eq!(c.name, name);
    assert_eq!(c.service, "api");
    assert_eq!(c.revision.as_deref(), Some("rev1"));
    assert_eq!(
        c.config_hash.as_deref(),
        Some(config.config_hash().as_str())
    );
    assert_eq!(c.config.as_ref(), Some(&config.canonical_json()));
    assert_eq!(c.image, APP_V1);
    assert!(c.image_id.starts_with("sha256:"));
    assert_eq!(c.state, ContainerState::Running);
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.color, None);

    assert_eq!(state.networks.len(), 1);
    assert_eq!(state.networks[0].name, net);
    assert_eq!(state.networks[0].driver, "bridge");
    assert!(!state.networks[0].internal);
    assert_eq!(state.volumes.len(), 1);
    assert_eq!(state.volumes[0].name, vol);

    let app_id = d::inspect(APP_V1, "{{.Id}}");
    assert_eq!(state.images.get(APP_V1), Some(&Some(app_id)));
    assert_eq!(state.images.get("reconciler-test/absent:0"), Some(&None));

    // The alias is set on the network.
    assert!(d::inspect(
        &name,
        &format!("{{{{json (index .NetworkSettings.Networks \"{net}\").Aliases}}}}")
    )
    .contains("\"api\""));

    // Stopped containers are observed too.
    assert!(engine
        .stop_container(&name, Some(std::time::Duration::from_secs(5)))
        .await
        .expect("stop"));
    assert!(
        !engine
            .stop_container(&name, None)
            .await
            .expect("stop again"),
        "already stopped"
    );
    let state = live::observe(&engine, &rel.name, &[], None)
        .await
        .expect("observe");
    assert_eq!(state.containers[0].state, ContainerState::Exited);
}

#[tokio::test]
async fn containers_join_every_network_before_start() {
    d::require_images(&[BUSYBOX]);
    let engine = d::engine().await;
    let rel = TestRelease::new("multinet");
    let (a, b) = (rel.obj("a"), rel.obj("b"));
    let spec = NetworkSpec {
        internal: false,
        driver: "bridge".into(),
        labels: BTreeMap::new(),
    };
    engine
        .create_network(&a, &spec, &rel.name)
        .await
        .expect("a");
    engine
        .create_network(
            &b,
            &NetworkSpec {
                internal: true,
                ..spec.clone()
            },
            &rel.name,
        )
        .await
        .expect("b");
    let config = ContainerConfig {
        image: BUSYBOX.to_string(),
        command: Some(vec!["sleep".into(), "300".into()]),
        networks: vec![
            NetworkAttachment {
                name: a.clone(),
                aliases: vec![],
            },
            NetworkAttachment {
                name: b.clone(),
                aliases: vec!["db".into()],
            },
        ],
        stop_timeout_secs: Some(1),
        ..Default::default()
    };
    let name = rel.obj("multi");
    engine
        .create_container(&name, &config, &owner(&rel.name, "multi", &config))
        .await
        .expect("create");
    engine.start_container(&name).await.expect("start");
    let info = engine.inspect_container(&name).await.expect("inspect");
    let nets: Vec<_> = info.endpoints.iter().map(|e| e.network.clone()).collect();
    assert_eq!(nets, vec![a.clone(), b.clone()]);
    assert!(info.endpoints.iter().all(|e| !e.ip.is_empty()));
    assert!(info.endpoints[1].aliases.contains(&"db".to_string()));

    // exec: argv, exit code and output.
    let out = engine
        .exec(
            &name,
            &["sh".into(), "-c".into(), "echo hi; exit 3".into()],
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert!(out.output.contains("hi"));
    let err = engine
        .exec(
            &name,
            &["sleep".into(), "5".into()],
            std::time::Duration::from_millis(300),
        )
        .await
        .expect_err("timeout");
    assert!(matches!(err, EngineError::ExecTimeout { .. }), "{err}");

    // Rename and remove, by name.
    let renamed = rel.obj("renamed");
    engine
        .rename_container(&name, &renamed)
        .await
        .expect("rename");
    assert!(d::container_exists(&renamed) && !d::container_exists(&name));
    let err = engine
        .remove_container(&renamed, false)
        .await
        .expect_err("running");
    assert!(err.to_string().contains(&renamed), "{err}");
    engine
        .remove_container(&renamed, true)
        .await
        .expect("remove");
    let err = engine.inspect_container(&renamed).await.expect_err("gone");
    assert!(err.is_not_found(), "{err}");
    engine.remove_network(&a).await.expect("remove a");
    assert!(!d::network_exists(&a));
}

#[tokio::test]
async fn unowned_containers_are_not_observed() {
    d::require_images(&[BUSYBOX]);
    let engine = d::engine().await;
    let rel = TestRelease::new("unowned");
    // Same name prefix and even the release label, but not managed by us.
    let stranger = rel.obj("stranger");
    rel.remove_on_drop(&stranger);
    d::docker(&["create", "--name", &stranger, BUSYBOX, "true"]).expect("create stranger");
    let half = rel.obj("half");
    rel.remove_on_drop(&half);
    d::docker(&[
        "create",
        "--name",
        &half,
        "--label",
        &format!("{}={}", labels::RELEASE, rel.name),
        BUSYBOX,
        "true",
    ])
    .expect("create half-labelled");
    let state = live::observe(&engine, &rel.name, &[], None)
        .await
        .expect("observe");
    assert!(state.containers.is_empty(), "{:?}", state.containers);
}

#[tokio::test]
async fn malformed_labels_are_an_error_naming_the_container() {
    d::require_images(&[BUSYBOX]);
    let engine = d::engine().await;
    let rel = TestRelease::new("malformed");
    let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGER);
    let release = format!("{}={}", labels::RELEASE, rel.name);

    let no_service = rel.obj("noservice");
    d::docker(&[
        "create",
        "--name",
        &no_service,
        "--label",
        &managed,
        "--label",
        &release,
        BUSYBOX,
        "true",
    ])
    .expect("create");
    let err = live::observe(&engine, &rel.name, &[], None)
        .await
        .expect_err("malformed");
    let msg = err.to_string();
    assert!(
        msg.contains(&no_service) && msg.contains(labels::SERVICE),
        "{msg}"
    );
    d::docker(&["rm", "-f", &no_service]).expect("rm");

    let bad_json = rel.obj("badjson");
    d::docker(&[
        "create",
        "--name",
        &bad_json,
        "--label",
        &managed,
        "--label",
        &release,
        "--label",
        &format!("{}=api", labels::SERVICE),
        "--label",
        &format!("{}={{not json", labels::CONFIG),
        BUSYBOX,
        "true",
    ])
    .expect("create");
    let err = live::observe(&engine, &rel.name, &[], None)
        .await
        .expect_err("malformed");
    let msg = err.to_string();
    assert!(
        msg.contains(&bad_json) && msg.contains("not valid JSON"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_image_gives_the_clear_pull_error_and_changes_nothing() {
    let engine = d::engine().await;
    let image = "127.0.0.1:1/nope:1";
    assert_eq!(engine.image_id(image).await.expect("inspect"), None);
    let err = engine
        .pull_image(image)
        .await
        .expect_err("no registry there");
    let msg = err.to_string();
    assert!(
        msg.starts_with("image `127.0.0.1:1/nope:1` not found locally and the pull failed: "),
        "{msg}"
    );
    assert!(
        msg.contains("fix: build/load it on this host, or check the registry and credentials"),
        "{msg}"
    );
    // Nothing changed: no such image now either (other tests may build images concurrently, so
    // the whole image list is not compared).
    assert_eq!(engine.image_id(image).await.expect("inspect"), None);
    assert!(d::docker(&["image", "inspect", image]).is_err());
}
