//! A git source over HTTP with a token from an environment variable, against a real
//! `git http-backend` behind Basic auth on 127.0.0.1 (tests/fixtures/git_http_auth.py). The
//! token reaches libgit2 through the credentials callback only, the same path https takes.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::gitrepo::TestRepo;

const TOKEN: &str = "tok-planted-4f1d2a";

struct GitHttp {
    child: Child,
    port: u16,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(repo: &TestRepo) -> GitHttp {
    let port = free_port();
    let root = repo.path.parent().expect("repo parent");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git_http_auth.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(root)
        .args(["x-access-token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "git http server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    GitHttp { child, port }
}

fn validate(url: &str, token: Option<&str>) -> Output {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.args(["--log-level", "trace", "validate", "--repo", url])
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("RECONCILER_GIT_TOKEN");
    if let Some(t) = token {
        cmd.env("RECONCILER_GIT_TOKEN", t);
    }
    cmd.output().expect("reconciler runs")
}

#[test]
fn fetches_with_a_token_from_the_environment_and_never_shows_it() {
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: overhttp\nservices:\n  a: { image: 'x:1' }\n",
    );
    let rev = repo.commit("over http");
    let server = serve(&repo);
    let url = format!("http://127.0.0.1:{}/ops", server.port);

    let out = validate(&url, Some(TOKEN));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(&rev), "{all}");
    assert!(
        !all.contains(TOKEN),
        "the token leaked into the output at trace level:\n{all}"
    );

    let out = validate(&url, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RECONCILER_GIT_TOKEN"));

    let out = validate(&url, Some("wrong-token"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rejected") || stderr.contains("authentication"),
        "{stderr}"
    );
}
