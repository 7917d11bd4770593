//! Good specs load cleanly, and the model's accessors give the normalised forms.

use reconciler::spec::{self, model::Strategy};

fn load(name: &str) -> spec::LoadedSpec {
    let path = format!("{}/tests/good_specs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    match spec::load(&path, &text) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_good_spec_loads() {
    let dir = format!("{}/tests/good_specs", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = spec::load(&path.display().to_string(), &text) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn full_example_normalises() {
    let l = load("full.yaml");
    let s = &l.spec;
    assert_eq!(s.release, "shop");
    let api = &s.services["api"];
    assert_eq!(api.dependencies(), vec!["db"]);
    assert_eq!(
        api.network_attachments(),
        vec![
            ("edge".to_string(), vec![]),
            ("backend".to_string(), vec![])
        ]
    );
    assert_eq!(
        api.environment_pairs(),
        vec![("LOG_LEVEL".to_string(), Some("info".to_string()))]
    );
    assert_eq!(s.services["db"].strategy, Strategy::Recreate);
    assert_eq!(l.locations.of("services.api.health.http.port"), (24, 23));
}

#[test]
fn alternative_forms_normalise() {
    let l = load("alternative-forms.yaml");
    let cache = &l.spec.services["cache"];
    assert_eq!(
        cache.environment_pairs(),
        vec![
            ("MODE".to_string(), Some("cache".to_string())),
            ("PASSTHROUGH".to_string(), None)
        ]
    );
    assert_eq!(
        cache.network_attachments(),
        vec![
            ("back".to_string(), vec!["redis".to_string()]),
            ("front".to_string(), vec![])
        ]
    );
    let worker = &l.spec.services["worker"];
    assert_eq!(worker.dependencies(), vec!["cache"]);
    assert_eq!(
        worker.environment_pairs(),
        vec![
            ("RETRIES".to_string(), Some("3".to_string())),
            ("RATIO".to_string(), Some("0.5".to_string())),
            ("VERBOSE".to_string(), Some("true".to_string())),
            ("FROM_HOST".to_string(), None),
        ]
    );
    assert_eq!(
        worker.stop_grace_period.as_ref().unwrap().parse().unwrap(),
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn three_independent_mistakes_are_reported_together() {
    let text = "version: 1\nrelease: shop\nservices:\n  api:\n    image: shop-api:1\n    helth: {}\n    ports: [\"eighty:80\"]\n    restart: sometimes\n";
    let errs = spec::load("release.yaml", text).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "services.api.helth",
            "services.api.ports.0",
            "services.api.restart"
        ],
        "{errs}"
    );
    assert_eq!(errs.0[0].line, 6);
}

#[test]
fn error_at_points_into_the_spec() {
    let l = load("full.yaml");
    let e = spec::error_at(
        &l,
        "services.api.secrets.DATABASE_URL.env",
        "SHOP_DATABASE_URL is not set",
        None,
    );
    assert_eq!((e.line, e.column), (20, 32));
    assert!(
        e.to_string().ends_with(
            "full.yaml:20:32: services.api.secrets.DATABASE_URL.env: SHOP_DATABASE_URL is not set"
        ),
        "{e}"
    );
}

#[test]
fn blue_green_example_normalises() {
    let l = load("blue-green.yaml");
    let s = &l.spec;
    let proxy = s.proxy.as_ref().expect("the example has a proxy");
    assert_eq!(proxy.config, "deploy/nginx.conf");
    assert_eq!(proxy.upstreams_file, "/etc/nginx/reconciler/upstreams.conf");
    assert_eq!(
        proxy.network_attachments(),
        vec![("edge".to_string(), vec![])]
    );
    assert_eq!(proxy.routes_to("api").collect::<Vec<_>>(), vec!["api"]);
    assert_eq!(proxy.routes["web"].port, 3000);
    assert_eq!(s.services["api"].strategy, Strategy::BlueGreen);
    assert_eq!(s.services["db"].strategy, Strategy::Recreate);
    let web = s.services["web"].verify.as_ref().expect("web has verify");
    // Unset verify fields take the model's defaults.
    assert_eq!(
        (web.path.as_str(), web.expect, web.port),
        ("/", 200, Some(80))
    );
    assert_eq!(
        s.services["api"].drain.as_ref().unwrap().parse().unwrap(),
        std::time::Duration::from_secs(15)
    );
}

#[test]
fn upstreams_file_defaults() {
    let text = "version: 1\nrelease: shop\nservices:\n  api:\n    image: shop-api:1\n    strategy: blue-green\nproxy:\n  image: nginx:1.27-alpine\n  config: nginx.conf\n  ports: [\"80:80\"]\n  routes:\n    api: { service: api, port: 8000 }\n";
    let l = spec::load("release.yaml", text).unwrap();
    let proxy = l.spec.proxy.unwrap();
    assert_eq!(proxy.upstreams_file, "/etc/nginx/reconciler/upstreams.conf");
    assert_eq!(proxy.ports.len(), 1);
}
