//! Rolling: replicas replaced one at a time, scaled, repaired.

use super::properties::host_state;
use super::*;

const ROLLING: &str = r#"
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
    strategy: rolling
    deploy: { replicas: 3 }
    networks: [edge]
    verify: { path: /version }
    drain: 2s
"#;

fn upstreams_of(live: &LiveState) -> String {
    live.proxy_files["/etc/nginx/reconciler/upstreams.conf"]
        .clone()
        .unwrap()
}

#[test]
fn rolling_first_deploy_starts_every_replica_then_the_proxy() {
    let d = desired(ROLLING);
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
            "start",
            "gate",
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
    assert_eq!(p.steps[1].action.target(), "shop-api-1-blue");
    assert_eq!(p.steps[7].action.target(), "shop-api-3-blue");
    let after = simulate(&live, &p);
    let text = upstreams_of(&after);
    assert!(
        text.contains("slots=1:blue,2:blue,3:blue\nupstream api {\n    server shop-api-1-blue:8000;\n    server shop-api-2-blue:8000;\n    server shop-api-3-blue:8000;\n}"),
        "{text}"
    );
    assert!(plan(&d, &after).unwrap().in_sync());
}

#[test]
fn rolling_replaces_one_replica_at_a_time_start_first() {
    let d1 = desired(ROLLING);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&ROLLING.replace("shop-api:1", "shop-api:2"));
    let p = plan(&d2, &live).unwrap();
    let one = ["create", "start", "gate", "switch", "drain", "stop"];
    let mut expected = vec!["pull"];
    for _ in 0..3 {
        expected.extend(one);
    }
    expected.extend(["verify", "remove", "remove", "remove"]);
    assert_eq!(kinds(&p), expected, "{}", render_text(&p));
    // Replica 2's switch: 1 already moved, 2 moves now, 3 still old.
    let Action::ConfigureProxy { files, .. } = &p.steps[10].action else {
        panic!("{:?}", p.steps[10].action)
    };
    assert!(
        files[0].content.contains("slots=1:green,2:green,3:blue"),
        "{}",
        files[0].content
    );
    assert_eq!(
        p.steps[12].action.target(),
        "shop-api-2-blue",
        "old replica 2 stops"
    );
    let text = render_text(&p);
    assert!(
        text.contains("slots: 1:blue,2:blue,3:blue -> 1:green,2:green,3:green"),
        "{text}"
    );
    let after = simulate(&live, &p);
    assert!(plan(&d2, &after).unwrap().in_sync());

    // A failed gate on replica 2 unwinds to the old release, file byte-identical.
    let gate2 = p
        .steps
        .iter()
        .position(|s| matches!(&s.action, Action::AwaitHealthy { name, .. } if name == "shop-api-2-green"))
        .unwrap();
    let mut host = live.clone();
    let mut undo = Vec::new();
    for step in &p.steps[..gate2] {
        let effect = sim_step(&mut host, &step.action);
        undo.extend(inverse(&step.action, effect));
    }
    for u in undo.iter().rev() {
        sim_undo(&mut host, u);
    }
    assert_eq!(host_state(&host), host_state(&live));
    assert_eq!(upstreams_of(&host), upstreams_of(&live));
}

#[test]
fn rolling_scales_up_and_down() {
    let d3 = desired(ROLLING);
    let live = simulate(
        &live_with_images(&d3),
        &plan(&d3, &live_with_images(&d3)).unwrap(),
    );
    let d2 = desired(&ROLLING.replace("replicas: 3", "replicas: 2"));
    let p = plan(&d2, &live).unwrap();
    assert_eq!(
        kinds(&p),
        ["switch", "drain", "stop", "verify", "remove"],
        "{}",
        render_text(&p)
    );
    assert_eq!(p.steps[4].action.target(), "shop-api-3-blue");
    let two = simulate(&live, &p);
    assert!(plan(&d2, &two).unwrap().in_sync());
    assert!(upstreams_of(&two).contains("slots=1:blue,2:blue\n"));

    let d4 = desired(&ROLLING.replace("replicas: 3", "replicas: 4"));
    let p = plan(&d4, &two).unwrap();
    assert_eq!(
        kinds(&p),
        ["create", "start", "gate", "switch", "create", "start", "gate", "switch", "verify"],
        "{}",
        render_text(&p)
    );
    let four = simulate(&two, &p);
    assert!(upstreams_of(&four).contains("slots=1:blue,2:blue,3:blue,4:blue\n"));
    assert!(plan(&d4, &four).unwrap().in_sync());
}

#[test]
fn a_stopped_replica_is_repaired_in_the_final_switch() {
    let d = desired(ROLLING);
    let mut live = simulate(
        &live_with_images(&d),
        &plan(&d, &live_with_images(&d)).unwrap(),
    );
    live.containers
        .iter_mut()
        .find(|c| c.name == "shop-api-2-blue")
        .unwrap()
        .state = ContainerState::Exited;
    let p = plan(&d, &live).unwrap();
    // nginx -t would fail on the stopped replica's name: no switch before it runs again.
    assert_eq!(
        kinds(&p),
        ["create", "start", "gate", "switch", "verify", "drain", "remove"],
        "{}",
        render_text(&p)
    );
    assert_eq!(p.steps[0].action.target(), "shop-api-2-green");
    assert!(plan(&d, &simulate(&live, &p)).unwrap().in_sync());
}
