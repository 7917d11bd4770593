//! Pulling from a registry that requires a login, with the credentials taken from the Docker
//! config file (`$DOCKER_CONFIG/config.json`, `auths`), as operators have them after
//! `docker login`: against Debian's docker-registry with htpasswd auth on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker, TestRelease};
use common::free_port;
use common::gitrepo::TestRepo;
use common::images::ensure_images;

const USER: &str = "tester";
const PASSWORD: &str = "registry-pw-planted-77";

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .expect("htpasswd runs (apt-get install apache2-utils)");
    assert!(htpasswd.status.success());
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
    let port = free_port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry runs");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "registry did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port }
}

fn apply(repo: &TestRepo, docker_config: &Path) -> Output {
    let state = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["apply", "--repo", &repo.url()])
        .arg("--state-dir")
        .arg(state.path())
        .env("DOCKER_CONFIG", docker_config)
        .env("RECONCILER_LOG", "debug")
        .output()
        .expect("reconciler runs")
}

#[test]
fn pulls_with_credentials_from_the_docker_config() {
    ensure_images(&["app"]);
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(dir.path());
    let release = TestRelease::new("regauth");
    let image = format!(
        "127.0.0.1:{}/reconciler-test/app:{}",
        registry.port, release.name
    );

    // Log in and push with a config of the test's own, never the user's ~/.docker.
    let logged_in = dir.path().join("logged-in");
    let login = Command::new("docker")
        .arg("--config")
        .arg(&logged_in)
        .args([
            "login",
            "-u",
            USER,
            "--password-stdin",
            &format!("127.0.0.1:{}", registry.port),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(PASSWORD.as_bytes())?;
            c.wait()
        })
        .expect("docker login runs");
    assert!(login.success());
    docker(&["tag", "reconciler-test/app:v1", &image]).unwrap();
    let push = Command::new("docker")
        .arg("--config")
        .arg(&logged_in)
        .args(["push", &image])
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    docker(&["rmi", &image]).unwrap();

    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        &format!("version: 1\nrelease: {}\nservices:\n  app:\n    image: {image}\n    stop_grace_period: 1s\n", release.name),
    );
    repo.commit("private image");

    // Without credentials: the pull is refused, the error names the image and the fix, and
    // nothing was created.
    let anonymous = dir.path().join("anonymous");
    std::fs::create_dir_all(&anonymous).unwrap();
    let out = apply(&repo, &anonymous);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&image) && stderr.contains("fix"),
        "{stderr}"
    );
    assert!(!common::docker::container_exists(&release.obj("app")));

    // With the logged-in config: pulled and running; the password shows nowhere.
    let out = apply(&repo, &logged_in);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
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
