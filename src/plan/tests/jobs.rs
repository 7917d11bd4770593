//! Where jobs go in a plan, and when they run at all.

use super::*;

const JOBS: &str = r#"
version: 1
release: shop
networks: { backend: {} }
services:
  db:
    image: postgres:16
    networks: [backend]
  api:
    image: shop-api:1.4.1
    networks: [backend]
    depends_on: [db]
    secrets: { DATABASE_URL: { env: PLANTED_SECRET } }
    jobs:
      before:
        - { name: migrate, command: ["./migrate"], secrets: { DATABASE_URL: { env: PLANTED_SECRET } } }
      after:
        - { name: smoke, command: ["./smoke"] }
  web:
    image: shop-web:2
    networks: [backend]
    jobs:
      before:
        - { name: warm, command: ["./warm"], when: always }
jobs:
  before:
    - { name: announce, image: busybox:1, command: ["echo", "start"] }
  after:
    - { name: check, image: busybox:1, command: ["echo", "done"] }
"#;

fn jobs_in(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::RunJob { job, .. } => Some(job.clone()),
            _ => None,
        })
        .collect()
}

fn position(p: &Plan, pred: impl Fn(&Action) -> bool) -> usize {
    p.steps.iter().position(|s| pred(&s.action)).unwrap()
}

fn is_job(name: &'static str) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::RunJob { job, .. } if job == name)
}

#[test]
fn a_first_deploy_orders_release_service_and_after_jobs() {
    let d = desired(JOBS);
    let p = plan(&d, &live_with_images(&d)).unwrap();
    assert_eq!(
        jobs_in(&p),
        [
            "release/announce",
            "api/migrate",
            "web/warm",
            "api/smoke",
            "release/check"
        ]
    );
    let networks = position(&p, |a| matches!(a, Action::CreateNetwork { .. }));
    let announce = position(&p, is_job("release/announce"));
    let db = position(&p, |a| a.service() == Some("db"));
    let migrate = position(&p, is_job("api/migrate"));
    let api = position(
        &p,
        |a| matches!(a, Action::CreateContainer { service, .. } if service == "api"),
    );
    let api_gate = position(
        &p,
        |a| matches!(a, Action::AwaitHealthy { service, .. } if service == "api"),
    );
    let smoke = position(&p, is_job("api/smoke"));
    assert!(networks < announce && announce < db, "{:#?}", p.steps);
    // The migration runs after db (a dependency) passed its gate and before api is created.
    assert!(db < migrate && migrate < api, "{:#?}", p.steps);
    assert!(api_gate < smoke, "{:#?}", p.steps);
    assert_eq!(
        p.changes
            .iter()
            .filter(|c| c.kind == ObjectKind::Job)
            .count(),
        5
    );
    // The job gets its own secret; its output is scrubbed of every secret of the release.
    let Action::RunJob { config, redact, .. } = &p.steps[migrate].action else {
        unreachable!()
    };
    assert!(config.env["DATABASE_URL"].is_sensitive());
    assert_eq!(redact.len(), 1);
    assert_eq!(
        config.image, "shop-api:1.4.1",
        "defaults to the service's image"
    );
    // A job must not answer to its service's name on the network.
    assert!(config.networks.iter().all(|n| n.aliases.is_empty()));
    let text = render_text(&p);
    assert!(
        text.contains("+ job api/migrate (runs before api's new version starts)"),
        "{text}"
    );
    assert!(!render_json(&p).to_string().contains("s3cr3t-value"));
}

#[test]
fn a_changed_job_runs_only_when_its_service_changes_and_always_once_per_revision() {
    let d1 = desired(JOBS);
    let mut live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    // Everything that ran for rev1 is on record.
    for j in &d1.jobs {
        live.jobs_done.insert(done_key(&j.key(), &j.config_hash));
    }
    assert!(plan(&d1, &live).unwrap().in_sync());

    // A new revision that changes web only: web's `always` job, the release's jobs, not api's.
    let mut d2 = desired(&JOBS.replace("shop-web:2", "shop-web:3"));
    d2.revision = "rev2".into();
    live.jobs_done.clear();
    live.images
        .insert("shop-web:3".into(), Some("sha256:w3".into()));
    let p = plan(&d2, &live).unwrap();
    assert_eq!(
        jobs_in(&p),
        ["release/announce", "web/warm", "release/check"]
    );

    // A new revision that changes nothing: only the `always` job, once.
    let mut d3 = desired(JOBS);
    d3.revision = "rev3".into();
    let p = plan(&d3, &live).unwrap();
    assert_eq!(jobs_in(&p), ["web/warm"]);
    let mut after = simulate(&live, &p);
    let warm = d3.jobs.iter().find(|j| j.name == "warm").unwrap();
    after
        .jobs_done
        .insert(done_key(&warm.key(), &warm.config_hash));
    assert!(plan(&d3, &after).unwrap().in_sync());

    // A retry of a revision whose migration already succeeded does not migrate again.
    let d4 = desired(&JOBS.replace("shop-api:1.4.1", "shop-api:1.4.2"));
    let migrate = d4.jobs.iter().find(|j| j.name == "migrate").unwrap();
    live.jobs_done
        .insert(done_key(&migrate.key(), &migrate.config_hash));
    live.images
        .insert("shop-api:1.4.2".into(), Some("sha256:a2".into()));
    let p = plan(&d4, &live).unwrap();
    assert!(
        !jobs_in(&p).contains(&"api/migrate".to_string()),
        "{:?}",
        jobs_in(&p)
    );
    assert!(jobs_in(&p).contains(&"api/smoke".to_string()));
}

#[test]
fn after_jobs_of_a_blue_green_release_run_after_the_switch_before_any_removal() {
    let yaml = r#"
version: 1
release: shop
services:
  web:
    image: shop-web:2
    strategy: blue-green
    jobs:
      after:
        - { name: smoke, command: ["./smoke"] }
proxy:
  image: nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:8080:80"]
  routes:
    web: { service: web, port: 80 }
"#;
    let d1 = desired(yaml);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&yaml.replace("shop-web:2", "shop-web:3"));
    let mut live = live;
    live.images
        .insert("shop-web:3".into(), Some("sha256:w3".into()));
    let p = plan(&d2, &live).unwrap();
    let switch = position(&p, |a| matches!(a, Action::ConfigureProxy { .. }));
    let smoke = position(&p, is_job("web/smoke"));
    let first_removal = position(&p, |a| matches!(a, Action::RemoveContainer { .. }));
    assert!(switch < smoke && smoke < first_removal, "{:#?}", p.steps);
    assert_eq!(crate::apply::commit_point(&p), Some(first_removal));
}

/// Every `before` job (release-level and the service's migration) runs after the snapshot of
/// the database it may change: the snapshot is what a failed migration is restored from.
#[test]
fn before_jobs_run_after_the_snapshot() {
    let with = |api: &str| {
        JOBS.replace(
            "    image: postgres:16\n",
            "    image: postgres:16\n    snapshot: { exec: [pg_dump, -Fc, app], format: postgres-custom }\n",
        )
        .replace("shop-api:1.4.1", api)
    };
    let d1 = desired(&with("shop-api:1.4.1"));
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&with("shop-api:1.5.0"));
    let p = plan(&d2, &live).unwrap();
    let snapshot = position(&p, |a| matches!(a, Action::TakeSnapshot { .. }));
    let announce = position(&p, is_job("release/announce"));
    let migrate = position(&p, is_job("api/migrate"));
    assert!(snapshot < announce && announce < migrate, "{:#?}", p.steps);
}
