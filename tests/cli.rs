//! The command line as operators and scripts use it: help with examples, validate's exit
//! codes, `diff --local`, and a real pull from a registry on 127.0.0.1.

mod common;

use common::show;

use std::process::{Command, Output};

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::{ensure_images, ensure_registry};

fn reconciler(args: &[&str], state: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("RECONCILER_LOG", "warn")
        .output()
        .expect("reconciler runs")
}

#[test]
fn every_command_has_help_with_an_example() {
    let state = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["diff", "--help"],
        vec!["apply", "--help"],
        vec!["run", "--help"],
        vec!["snapshots", "list", "--help"],
        vec!["snapshots", "verify", "--help"],
        vec!["snapshots", "restore", "--help"],
    ] {
        let out = reconciler(&cmd, state.path());
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{cmd:?} has no example:\n{text}");
        assert!(text.contains("reconciler "), "{cmd:?}:\n{text}");
    }
    let out = reconciler(&["--version"], state.path());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn validate_exits_0_for_a_valid_spec_and_2_with_every_error_located() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("release.yaml");
    std::fs::write(
        &good,
        "version: 1\nrelease: shop\nservices:\n  api: { image: 'shop-api:1' }\n",
    )
    .unwrap();
    let out = reconciler(&["validate", "--spec", good.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nrelease: shop\nservices:\n  api:\n    image: 'shop-api:1'\n    helth: {}\n    ports: [\"eighty:80\"]\n",
    )
    .unwrap();
    let out = reconciler(&["validate", "--spec", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:6:5: services.api.helth"), "{err}");
    assert!(
        err.contains("health"),
        "the closest key is suggested: {err}"
    );
    assert!(err.contains("bad.yaml:7:"), "both errors at once: {err}");
}

#[test]
fn validate_a_repo_resolves_secrets_on_this_host() {
    let state = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();
    repo.write(
        "deploy/release.yaml",
        "version: 1\nrelease: shop\nservices:\n  api:\n    image: 'shop-api:1'\n    secrets: { DB_URL: { env: RECONCILER_TEST_UNSET_VAR } }\n",
    );
    repo.commit("spec under deploy/");
    let out = reconciler(
        &["validate", "--repo", &repo.url(), "--path", "deploy"],
        state.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deploy/release.yaml:6:"), "{err}");
    assert!(err.contains("services.api.secrets.DB_URL.env"), "{err}");
    assert!(err.contains("export RECONCILER_TEST_UNSET_VAR"), "{err}");
}

#[test]
fn diff_local_previews_an_uncommitted_directory() {
    ensure_images(&["busybox"]);
    let release = TestRelease::new("difflocal");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("release.yaml"),
        format!("version: 1\nrelease: {}\nservices:\n  a: {{ image: 'reconciler-test/busybox:1', command: [sleep, '60'] }}\n", release.name),
    )
    .unwrap();
    let out = reconciler(
        &["diff", "--local", dir.path().to_str().unwrap(), "--steps"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("at revision local"), "{text}");
    assert!(text.contains("+ service a"), "{text}");
    assert!(
        text.contains("Steps:") && text.contains("create_network"),
        "{text}"
    );
}

#[test]
fn apply_pulls_a_missing_image_from_a_registry() {
    ensure_images(&["app"]);
    let port = ensure_registry();
    let release = TestRelease::new("pull");
    let image = format!("127.0.0.1:{port}/reconciler-test/app:{}", release.name);
    docker(&["tag", "reconciler-test/app:v1", &image]).unwrap();
    docker(&["push", &image]).unwrap();
    docker(&["rmi", &image]).unwrap();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &format!("version: 1\nrelease: {}\nservices:\n  app:\n    image: {image}\n    stop_grace_period: 1s\n", release.name),
    );
    repo.commit("pulled image");
    let state = tempfile::tempdir().unwrap();
    let out = reconciler(&["diff", "--repo", &repo.url(), "--steps"], state.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pull           {image}")),
        "{}",
        show(&out)
    );
    let out = reconciler(&["apply", "--repo", &repo.url()], state.path());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let running = docker(&[
        "inspect",
        "-f",
        "{{.Config.Image}} {{.State.Running}}",
        &release.obj("app"),
    ])
    .unwrap();
    assert_eq!(running.trim(), format!("{image} true"));
    let _ = docker(&["rmi", "-f", &image]);
}
