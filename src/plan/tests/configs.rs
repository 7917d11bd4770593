//! `configs:`: seeded before the first start, pushed and reloaded when they change (never a
//! recreate), nothing when unchanged, put back by the undo.

use super::*;
use crate::desired::{ConfigSource, RepoFiles};

const PROM: &str = r#"
version: 1
release: mon
volumes: { prom-data: {} }
services:
  prometheus:
    image: prometheus:1
    volumes: ["prom-data:/prometheus"]
    configs:
      - { source: prometheus.yml, target: /etc/prometheus/prometheus.yml, kind: prometheus }
      - { source: rules/, target: /etc/prometheus/rules/, kind: prometheus-rules }
    reload: { http: { port: 9090, path: /-/reload } }
    ready: { http: { port: 9090, path: /-/ready } }
"#;

/// prometheus.yml and a rules directory, with contents per test.
struct Files {
    prometheus: &'static str,
    rules: Vec<(&'static str, &'static str)>,
}

impl RepoFiles for Files {
    fn read(&self, path: &str) -> Result<String, String> {
        match path {
            "prometheus.yml" => Ok(self.prometheus.to_string()),
            "nginx.conf" => Ok(NGINX_CONF.to_string()),
            other => Err(format!("{other} is not a file in the repo")),
        }
    }
    fn read_config(&self, path: &str) -> Result<ConfigSource, String> {
        match path {
            "rules" => Ok(ConfigSource::Dir(
                self.rules
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                    .collect(),
            )),
            other => self.read(other).map(|t| ConfigSource::File(t.into_bytes())),
        }
    }
}

fn prom(rules: Vec<(&'static str, &'static str)>) -> DesiredRelease {
    let files = Files {
        prometheus: "global: {}\n",
        rules,
    };
    resolve(&spec(PROM), "rev1", &NoHost, &files).unwrap()
}

#[test]
fn a_new_container_gets_its_configs_before_it_starts() {
    let d = prom(vec![("a.yml", "groups: []\n")]);
    let p = plan(&d, &live_with_images(&d)).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "check_configs",
            "create_network",
            "create_volume",
            "create",
            "seed_configs",
            "start",
            "gate"
        ]
    );
    let seeded: Vec<&str> = p
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::SeedConfigs { files, .. } => {
                Some(files.iter().map(|f| f.path.as_str()).collect())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        seeded,
        [
            "/etc/prometheus/prometheus.yml",
            "/etc/prometheus/rules/a.yml"
        ]
    );
    let after = simulate(&live_with_images(&d), &p);
    assert!(
        plan(&d, &after).unwrap().in_sync(),
        "unchanged configs: no action"
    );
}

#[test]
fn a_changed_rule_is_pushed_reloaded_and_gated_without_a_recreate() {
    let before = prom(vec![("a.yml", "groups: []\n"), ("old.yml", "groups: []\n")]);
    let live = simulate(
        &live_with_images(&before),
        &plan(&before, &live_with_images(&before)).unwrap(),
    );
    let after = prom(vec![
        ("a.yml", "groups: [{name: x, rules: []}]\n"),
        ("b.yml", "groups: []\n"),
    ]);
    let p = plan(&after, &live).unwrap();
    assert_eq!(
        kinds(&p),
        ["check_configs", "push_configs", "reload", "ready"]
    );
    let Action::PushConfigs {
        files,
        remove,
        reload,
        ..
    } = &p.steps[1].action
    else {
        panic!("{:?}", p.steps[1]);
    };
    let pushed: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        pushed,
        ["/etc/prometheus/rules/a.yml", "/etc/prometheus/rules/b.yml"]
    );
    assert_eq!(remove, &["/etc/prometheus/rules/old.yml".to_string()]);
    assert_eq!(reload.as_ref().unwrap().prometheus_metrics_port, Some(9090));

    // `diff` names each file with its old and new hash, short.
    let text = render_text(&p);
    let old = crate::desired::configs::sha256_hex(b"groups: []\n");
    let new = crate::desired::configs::sha256_hex(b"groups: [{name: x, rules: []}]\n");
    assert!(
        text.contains(&format!(
            "configs./etc/prometheus/rules/a.yml: {} -> {}",
            &old[..12],
            &new[..12]
        )),
        "{text}"
    );
    assert!(
        text.contains("configs./etc/prometheus/rules/b.yml: (none) -> "),
        "{text}"
    );
    assert!(
        text.contains("configs./etc/prometheus/rules/old.yml: "),
        "{text}"
    );

    // Applied, the host is in sync; undone, it is back as it was.
    let applied = simulate(&live, &p);
    assert!(plan(&after, &applied).unwrap().in_sync());
    let mut undone = applied.clone();
    let effect = sim_step(&mut live.clone(), &p.steps[1].action);
    let undo = inverse(&p.steps[1].action, effect).expect("a push is undone");
    sim_undo(&mut undone, &undo);
    assert_eq!(undone.config_files, live.config_files);
}

#[test]
fn a_container_change_recreates_with_the_configs_seeded_not_pushed() {
    let d = prom(vec![("a.yml", "groups: []\n")]);
    let live = simulate(
        &live_with_images(&d),
        &plan(&d, &live_with_images(&d)).unwrap(),
    );
    let newer = PROM.replace("prometheus:1", "prometheus:2");
    let files = Files {
        prometheus: "global: {scrape_interval: 5s}\n",
        rules: vec![("a.yml", "groups: []\n")],
    };
    let d2 = resolve(&spec(&newer), "rev2", &NoHost, &files).unwrap();
    let mut live2 = live.clone();
    live2
        .images
        .insert("prometheus:2".into(), Some("sha256:p2".into()));
    let k = kinds(&plan(&d2, &live2).unwrap());
    assert!(
        k.contains(&"seed_configs") && k.contains(&"create"),
        "{k:?}"
    );
    assert!(!k.contains(&"push_configs"), "{k:?}");
}

#[test]
fn a_missing_source_is_an_error_at_its_place() {
    let files = Files {
        prometheus: "",
        rules: vec![],
    };
    let yaml = PROM.replace("source: prometheus.yml", "source: nope.yml");
    let errors = resolve(&spec(&yaml), "rev1", &NoHost, &files).unwrap_err();
    assert_eq!(errors[0].path, "services.prometheus.configs.0.source");
    assert!(errors[0].message.contains("nope.yml"), "{errors:?}");
}

#[test]
fn configs_are_not_in_the_container_hash() {
    let a = prom(vec![("a.yml", "groups: []\n")]);
    let b = prom(vec![("a.yml", "groups: [{name: x, rules: []}]\n")]);
    assert_eq!(a.services[0].config_hash, b.services[0].config_hash);
}

#[test]
fn a_directory_source_must_say_so_with_a_trailing_slash() {
    let files = Files {
        prometheus: "",
        rules: vec![("a.yml", "groups: []\n")],
    };
    let yaml = PROM.replace(
        "source: rules/, target: /etc/prometheus/rules/",
        "source: rules, target: /etc/prometheus/rules/",
    );
    let errors = resolve(&spec(&yaml), "rev1", &NoHost, &files).unwrap_err();
    assert_eq!(errors[0].path, "services.prometheus.configs.1.source");
    assert!(errors[0].fix.contains("`source: rules/`"), "{errors:?}");
}

#[test]
fn blue_green_seeds_the_new_color_and_pushes_into_the_serving_one() {
    let yaml = format!(
        "{BG}    configs: [{{ source: prometheus.yml, target: /etc/app/app.yml }}]\n    reload: {{ signal: SIGHUP }}\n"
    );
    let with = |content: &'static str| {
        let files = Files {
            prometheus: content,
            rules: vec![],
        };
        resolve(&spec(&yaml), "rev1", &NoHost, &files).unwrap()
    };
    let d = with("a: 1\n");
    let p = plan(&d, &live_with_images(&d)).unwrap();
    let k = kinds(&p);
    let create = k.iter().position(|k| *k == "create").unwrap();
    assert_eq!(k[create + 1], "seed_configs", "{k:?}");
    let live = simulate(&live_with_images(&d), &p);
    assert!(plan(&d, &live).unwrap().in_sync());

    let d2 = with("a: 2\n");
    let p = plan(&d2, &live).unwrap();
    assert_eq!(kinds(&p), ["push_configs", "reload"]);
    assert_eq!(p.steps[0].action.target(), "shop-api-blue");
    assert!(plan(&d2, &simulate(&live, &p)).unwrap().in_sync());
}
