//! Engine file operations against a real engine: write/read through the archive endpoint,
//! on created and running containers, and signals.

mod common;

use common::docker::{docker, TestRelease, BUSYBOX};
use reconciler::engine::EngineError;

/// A busybox container of `release` that stays up (`sleep`), created but not started.
fn create_sleeper(rel: &TestRelease, suffix: &str) -> String {
    let name = rel.obj(suffix);
    let label = format!("io.reconciler.release={}", rel.name);
    docker(&[
        "create", "--name", &name, "--label", &label, BUSYBOX, "sleep", "300",
    ])
    .unwrap_or_else(|e| panic!("docker create: {e}"));
    name
}

#[tokio::test]
async fn write_and_read_round_trip_created_and_running() {
    common::docker::require_images(&[BUSYBOX]);
    let rel = TestRelease::new("proxy-files");
    let engine = common::docker::engine().await;
    let c = create_sleeper(&rel, "files");

    // Created, never started: the archive endpoint still works.
    assert_eq!(
        engine
            .read_file(&c, "/etc/reconciler/a.conf")
            .await
            .unwrap(),
        None
    );
    engine
        .write_file(&c, "/etc/reconciler/deep/a.conf", b"first\n")
        .await
        .unwrap();
    assert_eq!(
        engine
            .read_file(&c, "/etc/reconciler/deep/a.conf")
            .await
            .unwrap(),
        Some(b"first\n".to_vec())
    );

    docker(&["start", &c]).unwrap();
    // Overwrite while running, including an empty file and binary content.
    engine
        .write_file(&c, "/etc/reconciler/deep/a.conf", b"second")
        .await
        .unwrap();
    assert_eq!(
        engine
            .read_file(&c, "/etc/reconciler/deep/a.conf")
            .await
            .unwrap(),
        Some(b"second".to_vec())
    );
    engine.write_file(&c, "/tmp/empty", b"").await.unwrap();
    assert_eq!(
        engine.read_file(&c, "/tmp/empty").await.unwrap(),
        Some(vec![])
    );
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    engine.write_file(&c, "/tmp/bin", &binary).await.unwrap();
    assert_eq!(
        engine.read_file(&c, "/tmp/bin").await.unwrap(),
        Some(binary)
    );

    // Mode and owner as promised, and the new directory is a directory.
    let stat = docker(&[
        "exec",
        &c,
        "stat",
        "-c",
        "%a %u:%g",
        "/etc/reconciler/deep/a.conf",
    ])
    .unwrap();
    assert_eq!(stat.trim(), "644 0:0");
    let stat = docker(&["exec", &c, "stat", "-c", "%F", "/etc/reconciler/deep"]).unwrap();
    assert_eq!(stat.trim(), "directory");

    // remove_file, and removing again is fine.
    engine.remove_file(&c, "/tmp/empty").await.unwrap();
    assert_eq!(engine.read_file(&c, "/tmp/empty").await.unwrap(), None);
    engine.remove_file(&c, "/tmp/empty").await.unwrap();

    // A directory is not a file.
    let err = engine.read_file(&c, "/etc").await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    // Relative paths are refused before reaching the engine.
    let err = engine.write_file(&c, "etc/x", b"x").await.unwrap_err();
    assert!(err.to_string().contains("not absolute"), "{err}");
}

#[tokio::test]
async fn missing_container_is_an_error_not_a_missing_file() {
    let engine = common::docker::engine().await;
    let name = common::docker::release_name("proxy-nosuch");
    let err = engine.read_file(&name, "/etc/hosts").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    let err = engine.write_file(&name, "/etc/x", b"x").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn signal_container() {
    common::docker::require_images(&[BUSYBOX]);
    let engine = common::docker::engine().await;

    let missing = common::docker::release_name("proxy-nosig");
    let err = engine.signal_container(&missing, "HUP").await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("signal container `{missing}`: not found")
    );

    let rel = TestRelease::new("proxy-signal");
    let c = create_sleeper(&rel, "sig");
    // Not running: the engine refuses, and the message says which signal.
    let err = engine.signal_container(&c, "HUP").await.unwrap_err();
    assert!(err.to_string().contains("send HUP"), "{err}");

    docker(&["start", &c]).unwrap();
    // sleep as PID 1 has no handler: the kernel ignores an unhandled signal for PID 1 in a
    // namespace, so it keeps running; SIGKILL from the outside does end it.
    engine.signal_container(&c, "SIGUSR1").await.unwrap();
    assert_eq!(common::docker::inspect(&c, "{{.State.Running}}"), "true");
    engine.signal_container(&c, "KILL").await.unwrap();
    let mut stopped = false;
    for _ in 0..100 {
        if common::docker::inspect(&c, "{{.State.Running}}") == "false" {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(stopped, "SIGKILL did not stop {c}");
}
