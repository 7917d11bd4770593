//! `apply` and the health gate against the real Docker engine.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::docker::{self as d, TestRelease, APP_PORT, APP_V1, APP_V2, BUSYBOX};
use reconciler::apply::{self, ApplyError, ApplyOptions};
use reconciler::desired::{
    ContainerConfig, DockerHealthcheck, EnvValue, Gate, NetworkAttachment, Probe,
};
use reconciler::engine::{ContainerOwnership, Engine};
use reconciler::health::{self, GateError};
use reconciler::live;
use reconciler::plan::{Action, Plan, Step};
use reconciler::spec::model::{NetworkSpec, VolumeSpec};
use tokio_util::sync::CancellationToken;

fn net_spec() -> NetworkSpec {
    NetworkSpec {
        internal: false,
        driver: "bridge".into(),
        labels: BTreeMap::new(),
    }
}

fn app(image: &str, network: &str, env: &[(&str, &str)]) -> ContainerConfig {
    let mut config = ContainerConfig {
        image: image.to_string(),
        networks: vec![NetworkAttachment {
            name: network.to_string(),
            aliases: vec!["api".into()],
        }],
        stop_timeout_secs: Some(2),
        ..Default::default()
    };
    for (k, v) in env {
        config
            .env
            .insert((*k).to_string(), EnvValue::Plain((*v).to_string()));
    }
    config
}

fn gate(probe: Probe, deadline: Duration) -> Gate {
    Gate {
        probe,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        deadline,
    }
}

fn http_health() -> Probe {
    Probe::Http {
        port: APP_PORT,
        path: "/health".into(),
        expect: 200,
    }
}

fn step(action: Action) -> Step {
    Step {
        action,
        reason: "test".into(),
    }
}

fn plan(release: &str, steps: Vec<Action>) -> Plan {
    Plan {
        release: release.to_string(),
        revision: "rev2".into(),
        changes: vec![],
        steps: steps.into_iter().map(step).collect(),
        notes: vec![],
    }
}

/// The steps that create, start and gate one container.
fn deploy(service: &str, name: &str, config: ContainerConfig, gate: Gate) -> Vec<Action> {
    vec![
        Action::CreateContainer {
            color: None,
            service: service.into(),
            name: name.into(),
            revision: "rev2".into(),
            config_hash: config.config_hash(),
            config: Box::new(config),
        },
        Action::StartContainer {
            service: service.into(),
            name: name.into(),
        },
        Action::AwaitHealthy {
            service: service.into(),
            name: name.into(),
            gate,
        },
    ]
}

/// Creates and starts a container directly, as a previous release would have.
async fn run_direct(
    engine: &Engine,
    rel: &TestRelease,
    service: &str,
    name: &str,
    config: &ContainerConfig,
) -> String {
    let owner = ContainerOwnership {
        release: rel.name.clone(),
        service: service.into(),
        revision: "rev1".into(),
        config_hash: config.config_hash(),
        color: None,
    };
    let id = engine
        .create_container(name, config, &owner)
        .await
        .expect("create");
    engine.start_container(name).await.expect("start");
    id
}

#[tokio::test]
async fn a_plan_creates_network_volume_container_and_passes_the_gate() {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new("apply-ok");
    let net = rel.obj("net");
    let vol = rel.obj("data");
    let name = rel.obj("api");
    let mut config = app(APP_V1, &net, &[]);
    config.mounts.push(reconciler::desired::Mount {
        kind: reconciler::desired::MountKind::Volume,
        source: vol.clone(),
        target: "/data".into(),
        read_only: false,
    });
    let mut steps = vec![
        Action::PullImage {
            image: APP_V1.into(),
        }, // present: a no-op
        Action::CreateNetwork {
            name: net.clone(),
            spec: net_spec(),
        },
        Action::CreateVolume {
            name: vol.clone(),
            spec: VolumeSpec {
                driver: "local".into(),
                labels: BTreeMap::new(),
            },
        },
    ];
    steps.extend(deploy(
        "api",
        &name,
        config.clone(),
        gate(http_health(), Duration::from_secs(20)),
    ));
    let p = plan(&rel.name, steps);

    let since = d::instant();
    let t0 = Instant::now();
    let report = apply::apply(&engine, &p, &ApplyOptions::default())
        .await
        .expect("apply");
    let took = t0.elapsed();
    eprintln!(
        "apply (network+volume+create+start+http gate) took {} ms",
        took.as_millis()
    );
    for s in &report.steps {
        eprintln!(
            "  step {} {} {:?} {} ms",
            s.index, s.action, s.service, s.duration_ms
        );
    }
    assert_eq!(report.steps.len(), 6);
    assert!(report.final_failures.is_empty());
    let kinds: Vec<_> = report.steps.iter().map(|s| s.action).collect();
    assert_eq!(
        kinds,
        vec![
            "pull",
            "create_network",
            "create_volume",
            "create",
            "start",
            "gate"
        ]
    );
    assert_eq!(report.steps[5].service.as_deref(), Some("api"));

    let state = live::observe(&engine, &rel.name, &[], None)
        .await
        .expect("observe");
    assert_eq!(state.containers.len(), 1);
    assert_eq!(
        state.containers[0].config_hash.as_deref(),
        Some(config.config_hash().as_str())
    );
    assert_eq!(state.containers[0].revision.as_deref(), Some("rev2"));
    let until = d::instant();
    let events = d::mutating_events(&rel.name, since, until);
    eprintln!("events during apply: {events:?}");
    assert!(
        events.iter().any(|e| e.starts_with("container create")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("network create")),
        "{events:?}"
    );

    // Observing changes nothing on the engine.
    let since = d::instant();
    live::observe(&engine, &rel.name, &[APP_V1.into()], None)
        .await
        .expect("observe");
    live::observe(&engine, &rel.name, &[APP_V1.into()], None)
        .await
        .expect("observe");
    let events = d::mutating_events(&rel.name, since, d::instant());
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn a_failed_gate_rolls_everything_back() {
    d::require_images(&[APP_V1, APP_V2]);
    let engine = d::engine().await;
    let rel = TestRelease::new("rollback");
    let old_net = rel.obj("old");
    engine
        .create_network(&old_net, &net_spec(), &rel.name)
        .await
        .expect("old net");
    let name = rel.obj("api");
    let old_id = run_direct(&engine, &rel, "api", &name, &app(APP_V1, &old_net, &[])).await;
    let volume = rel.obj("vol");

    let new_net = rel.obj("new");
    let parked = rel.obj("api-old");
    let mut steps = vec![
        Action::CreateNetwork {
            name: new_net.clone(),
            spec: net_spec(),
        },
        Action::CreateVolume {
            name: volume.clone(),
            spec: VolumeSpec {
                driver: "local".into(),
                labels: BTreeMap::new(),
            },
        },
        Action::StopContainer {
            service: "api".into(),
            name: name.clone(),
        },
        Action::RenameContainer {
            service: "api".into(),
            from: name.clone(),
            to: parked.clone(),
        },
    ];
    steps.extend(deploy(
        "api",
        &name,
        app(APP_V2, &new_net, &[("APP_FAIL_HEALTH", "1")]),
        gate(http_health(), Duration::from_secs(5)),
    ));
    // Never reached: final steps come after the gate.
    steps.push(Action::RemoveContainer {
        service: "api".into(),
        name: parked.clone(),
    });
    let p = plan(&rel.name, steps);

    let t0 = Instant::now();
    let err = apply::apply(&engine, &p, &ApplyOptions::default())
        .await
        .expect_err("gate fails");
    eprintln!(
        "failed apply + rollback took {} ms: {err}",
        t0.elapsed().as_millis()
    );
    match &err {
        ApplyError::Failed {
            index,
            action,
            service,
            reason,
            rolled_back,
            undo_errors,
            ..
        } => {
            assert_eq!(*index, 6);
            assert_eq!(*action, "gate");
            assert_eq!(service.as_deref(), Some("api"));
            assert!(reason.contains("HTTP 500"), "{reason}");
            assert!(reason.contains("deadline"), "{reason}");
            assert!(*rolled_back, "{undo_errors:?}");
        }
        other => panic!("expected Failed, got {other}"),
    }
    // The new container, network and volume are gone; the old container is back, running,
    // under its name, with the same id.
    assert!(!d::network_exists(&new_net));
    assert!(!d::volume_exists(&volume));
    assert!(!d::container_exists(&parked));
    assert_eq!(d::inspect(&name, "{{.Id}}"), old_id);
    assert_eq!(d::inspect(&name, "{{.State.Status}}"), "running");
    assert_eq!(d::inspect(&name, "{{.Config.Image}}"), APP_V1);
}

#[tokio::test]
async fn a_crashing_container_fails_the_gate_fast() {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new("crash");
    let net = rel.obj("net");
    let name = rel.obj("api");
    let mut steps = vec![Action::CreateNetwork {
        name: net.clone(),
        spec: net_spec(),
    }];
    steps.extend(deploy(
        "api",
        &name,
        {
            let mut config = app(APP_V1, &net, &[("APP_CRASH", "1")]);
            config.env.insert(
                "API_TOKEN".into(),
                EnvValue::Sensitive(reconciler::secret::Secret::new("planted-crash-secret")),
            );
            config
        },
        gate(http_health(), Duration::from_secs(30)),
    ));
    let t0 = Instant::now();
    let err = apply::apply(&engine, &plan(&rel.name, steps), &ApplyOptions::default())
        .await
        .expect_err("crash");
    let took = t0.elapsed();
    eprintln!(
        "crash detected and rolled back in {} ms: {err}",
        took.as_millis()
    );
    let msg = err.to_string();
    assert!(msg.contains("exited with code 1"), "{msg}");
    assert!(msg.contains("service `api`"), "{msg}");
    assert!(!format!("{msg} {err:?}").contains("planted-crash-secret"));
    assert!(
        took < Duration::from_secs(30),
        "fail fast, not at the deadline"
    );
    assert!(err.rolled_back());
    assert!(!d::container_exists(&name));
    assert!(!d::network_exists(&net));
}

#[tokio::test]
async fn a_restarting_container_fails_the_gate_fast() {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new("restart");
    let net = rel.obj("net");
    engine
        .create_network(&net, &net_spec(), &rel.name)
        .await
        .expect("net");
    let name = rel.obj("api");
    let mut config = app(APP_V1, &net, &[("APP_CRASH", "1")]);
    config.restart = Some("always".into());
    run_direct(&engine, &rel, "api", &name, &config).await;
    let t0 = Instant::now();
    let err = health::await_healthy(
        &engine,
        &name,
        &gate(Probe::Running, Duration::from_secs(30)),
        &CancellationToken::new(),
    )
    .await
    .expect_err("restarts");
    eprintln!(
        "restart loop detected in {} ms: {err}",
        t0.elapsed().as_millis()
    );
    assert!(matches!(err, GateError::ContainerFailed { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("restart") || msg.contains("exited"), "{msg}");
}

async fn gate_on(
    test: &str,
    config_env: &[(&str, &str)],
    healthcheck: Option<DockerHealthcheck>,
    probe: Probe,
    deadline: Duration,
) -> (TestRelease, Result<health::GateReport, GateError>, Duration) {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new(test);
    let net = rel.obj("net");
    engine
        .create_network(&net, &net_spec(), &rel.name)
        .await
        .expect("net");
    let name = rel.obj("api");
    let mut config = app(APP_V1, &net, config_env);
    config.healthcheck = healthcheck;
    run_direct(&engine, &rel, "api", &name, &config).await;
    let t0 = Instant::now();
    let result = health::await_healthy(
        &engine,
        &name,
        &gate(probe, deadline),
        &CancellationToken::new(),
    )
    .await;
    (rel, result, t0.elapsed())
}

#[tokio::test]
async fn exec_probe() {
    let probe = Probe::Exec {
        command: vec![
            "wget".into(),
            "-q".into(),
            "-O".into(),
            "/dev/null".into(),
            format!("http://127.0.0.1:{APP_PORT}/health"),
        ],
    };
    let (_rel, result, took) = gate_on(
        "exec",
        &[("APP_START_DELAY", "1")],
        None,
        probe.clone(),
        Duration::from_secs(20),
    )
    .await;
    let report = result.expect("exec probe passes");
    eprintln!(
        "exec gate passed in {} ms after {} probes",
        took.as_millis(),
        report.attempts
    );
    assert_eq!(report.service, "api");
    assert!(
        report.attempts >= 2,
        "the app listens after 1 s: {report:?}"
    );

    let (_rel, result, _) = gate_on(
        "exec-fail",
        &[("APP_FAIL_HEALTH", "1")],
        None,
        probe,
        Duration::from_secs(2),
    )
    .await;
    let err = result.expect_err("health is 500");
    assert!(matches!(err, GateError::Deadline { .. }), "{err}");
    assert!(err.to_string().contains("exit 1"), "{err}");
}

#[tokio::test]
async fn tcp_probe() {
    let (_rel, result, took) = gate_on(
        "tcp",
        &[("APP_START_DELAY", "1")],
        None,
        Probe::Tcp { port: APP_PORT },
        Duration::from_secs(20),
    )
    .await;
    let report = result.expect("tcp probe passes");
    eprintln!(
        "tcp gate passed in {} ms after {} probes",
        took.as_millis(),
        report.attempts
    );

    let (_rel, result, _) = gate_on(
        "tcp-fail",
        &[],
        None,
        Probe::Tcp { port: 9 },
        Duration::from_secs(2),
    )
    .await;
    let err = result.expect_err("nothing listens on 9");
    let msg = err.to_string();
    assert!(msg.contains("tcp :9") && msg.contains("connect"), "{msg}");
}

#[tokio::test]
async fn docker_healthcheck_probe() {
    let check = DockerHealthcheck {
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
        retries: Some(2),
        start_period_ns: None,
    };
    let (_rel, result, took) = gate_on(
        "dockerhealth",
        &[],
        Some(check),
        Probe::DockerHealth,
        Duration::from_secs(20),
    )
    .await;
    let report = result.expect("healthcheck passes");
    eprintln!("docker-health gate passed in {} ms", took.as_millis());
    assert_eq!(report.last, "healthy");

    // No HEALTHCHECK at all: the gate cannot pass, and says so at once.
    let (_rel, result, took) = gate_on(
        "nohealth",
        &[],
        None,
        Probe::DockerHealth,
        Duration::from_secs(20),
    )
    .await;
    let err = result.expect_err("no healthcheck");
    assert!(matches!(err, GateError::Unusable { .. }), "{err}");
    assert!(took < Duration::from_secs(5));
}

#[tokio::test]
async fn running_probe_waits_for_min_uptime() {
    let (_rel, result, took) = gate_on(
        "running",
        &[],
        None,
        Probe::Running,
        Duration::from_secs(20),
    )
    .await;
    let report = result.expect("running");
    eprintln!("running gate passed in {} ms", took.as_millis());
    assert!(took >= Duration::from_millis(1500), "{took:?} {report:?}");
}

#[tokio::test]
async fn cancellation_rolls_back() {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new("cancel");
    let net = rel.obj("net");
    let name = rel.obj("api");
    let mut steps = vec![Action::CreateNetwork {
        name: net.clone(),
        spec: net_spec(),
    }];
    steps.extend(deploy(
        "api",
        &name,
        app(APP_V1, &net, &[("APP_FAIL_HEALTH", "1")]),
        gate(http_health(), Duration::from_secs(60)),
    ));
    let opts = ApplyOptions::default();
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let t0 = Instant::now();
    let err = apply::apply(&engine, &plan(&rel.name, steps), &opts)
        .await
        .expect_err("cancelled");
    eprintln!(
        "cancelled and rolled back in {} ms: {err}",
        t0.elapsed().as_millis()
    );
    assert!(
        matches!(err, ApplyError::Cancelled { index: 3, .. }),
        "{err}"
    );
    assert!(err.rolled_back());
    assert!(!d::container_exists(&name));
    assert!(!d::network_exists(&net));
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_missing_image_fails_the_plan_before_anything_changes() {
    let engine = d::engine().await;
    let rel = TestRelease::new("nopull");
    let p = plan(
        &rel.name,
        vec![
            Action::PullImage {
                image: "127.0.0.1:1/nope:1".into(),
            },
            Action::CreateNetwork {
                name: rel.obj("net"),
                spec: net_spec(),
            },
        ],
    );
    let since = d::instant();
    let err = apply::apply(&engine, &p, &ApplyOptions::default())
        .await
        .expect_err("no registry");
    let msg = err.to_string();
    assert!(
        msg.contains("image `127.0.0.1:1/nope:1` not found locally and the pull failed"),
        "{msg}"
    );
    assert!(err.rolled_back());
    assert!(d::mutating_events(&rel.name, since, d::instant()).is_empty());
    let _ = BUSYBOX;
}

#[tokio::test]
async fn a_replacement_removes_the_old_container_last_and_reports_final_failures() {
    d::require_images(&[APP_V1, APP_V2]);
    let engine = d::engine().await;
    let rel = TestRelease::new("replace");
    let net = rel.obj("net");
    engine
        .create_network(&net, &net_spec(), &rel.name)
        .await
        .expect("net");
    let name = rel.obj("api");
    let old_id = run_direct(&engine, &rel, "api", &name, &app(APP_V1, &net, &[])).await;
    let parked = rel.obj("api-old");
    let mut steps = vec![
        Action::StopContainer {
            service: "api".into(),
            name: name.clone(),
        },
        Action::RenameContainer {
            service: "api".into(),
            from: name.clone(),
            to: parked.clone(),
        },
    ];
    steps.extend(deploy(
        "api",
        &name,
        app(APP_V2, &net, &[]),
        gate(http_health(), Duration::from_secs(20)),
    ));
    steps.push(Action::RemoveContainer {
        service: "api".into(),
        name: parked.clone(),
    });
    // A final step that fails: reported, and the release stands.
    let ghost = rel.obj("ghost");
    steps.push(Action::RemoveNetwork {
        name: ghost.clone(),
    });
    let t0 = Instant::now();
    let report = apply::apply(&engine, &plan(&rel.name, steps), &ApplyOptions::default())
        .await
        .expect("apply");
    eprintln!(
        "recreate (stop, rename, create, start, gate, remove) took {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(report.steps.len(), 6);
    assert_eq!(
        report.final_failures.len(),
        1,
        "{:?}",
        report.final_failures
    );
    assert_eq!(report.final_failures[0].target, ghost);
    assert!(report.final_failures[0].reason.contains(&ghost));
    assert!(!d::container_exists(&parked));
    assert_ne!(d::inspect(&name, "{{.Id}}"), old_id);
    assert_eq!(d::inspect(&name, "{{.Config.Image}}"), APP_V2);
    assert_eq!(d::inspect(&name, "{{.State.Status}}"), "running");
}

#[tokio::test]
async fn http_probe_on_internal_networks_runs_inside_the_container() {
    d::require_images(&[APP_V1]);
    let engine = d::engine().await;
    let rel = TestRelease::new("internal");
    let net = rel.obj("net");
    let spec = NetworkSpec {
        internal: true,
        ..net_spec()
    };
    engine
        .create_network(&net, &spec, &rel.name)
        .await
        .expect("net");
    let name = rel.obj("api");
    run_direct(&engine, &rel, "api", &name, &app(APP_V1, &net, &[])).await;
    let report = health::await_healthy(
        &engine,
        &name,
        &gate(http_health(), Duration::from_secs(10)),
        &CancellationToken::new(),
    )
    .await
    .expect("wget inside the container");
    assert_eq!(report.last, "exit 0");

    // A non-2xx expectation cannot be checked with wget: said at once.
    let probe = Probe::Http {
        port: APP_PORT,
        path: "/missing".into(),
        expect: 404,
    };
    let err = health::await_healthy(
        &engine,
        &name,
        &gate(probe, Duration::from_secs(10)),
        &CancellationToken::new(),
    )
    .await
    .expect_err("unusable");
    assert!(matches!(err, GateError::Unusable { .. }), "{err}");
}
