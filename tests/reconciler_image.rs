//! `scripts/image.sh` builds a working container image of reconciler: with the Docker socket
//! and a release repository mounted, `reconciler diff` inside the container reads the repo at
//! its commit and the engine's state, and changes nothing. The image gets a test-specific tag
//! (from the debug binary, to keep the test cheap) and is removed at the end.

mod common;

use common::docker::{docker, TestRelease};
use common::gitrepo::TestRepo;
use common::images::{ensure_images, BUSYBOX, TEST_LABEL};
use common::show;
use std::path::Path;
use std::process::Command;

/// Removes the image tag on drop, even when an assertion failed.
struct ImageTag(String);

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

/// The engine's unix socket on this host, to mount into the container.
fn docker_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => host["unix://".len()..].to_string(),
        _ => "/var/run/docker.sock".to_string(),
    }
}

#[test]
fn image_runs_diff_against_a_mounted_repo_through_the_socket() {
    ensure_images(&["busybox"]);
    let release = TestRelease::new("image");
    let tag = ImageTag(format!("reconciler-test/reconciler:{}", release.name));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image.sh");
    let build = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_reconciler"))
        .env("RECONCILER_IMAGE", &tag.0)
        .env("RECONCILER_IMAGE_LABEL", TEST_LABEL)
        .output()
        .expect("run scripts/image.sh");
    assert!(build.status.success(), "{}", show(&build));
    assert_eq!(
        String::from_utf8_lossy(&build.stdout).trim(),
        tag.0,
        "the script prints the tag it built"
    );

    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &format!(
            "version: 1\nrelease: {}\nservices:\n  a: {{ image: '{BUSYBOX}', command: [sleep, '60'] }}\n",
            release.name
        ),
    );
    let commit = repo.commit("one service");

    let ctl = release.obj("ctl");
    release.remove_on_drop(&ctl);
    let socket = format!("{}:/var/run/docker.sock", docker_socket());
    let mount = format!("{}:/repo:ro", repo.url());
    let out = Command::new("docker")
        .args(["run", "--rm", "--name", &ctl, "--label", TEST_LABEL])
        .args(["-v", &socket, "-v", &mount, "-e", "RECONCILER_LOG=warn"])
        .arg(&tag.0)
        .args(["diff", "--repo", "/repo", "--steps"])
        .output()
        .expect("docker run");
    // diff(1) exit codes: 1 = there are changes.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("+ service a"), "{}", show(&out));
    assert!(
        text.contains(&commit[..7]),
        "revision {commit}: {}",
        show(&out)
    );
    assert!(text.contains("create_network"), "{}", show(&out));
    // diff changed nothing on the engine.
    let ours = docker(&["ps", "-aq", "--filter", &release.label_filter()]).unwrap_or_default();
    assert!(ours.trim().is_empty(), "diff created containers: {ours}");

    // git and the CA bundle are in the image (for https and ssh sources).
    let tools = Command::new("docker")
        .args(["run", "--rm", "--label", TEST_LABEL, "--entrypoint", "sh"])
        .arg(&tag.0)
        .args([
            "-c",
            "git --version && test -s /etc/ssl/certs/ca-certificates.crt",
        ])
        .output()
        .expect("docker run");
    assert!(tools.status.success(), "{}", show(&tools));
}
