//! A git source over ssh with a key file, against a real `sshd` on 127.0.0.1 (Debian's
//! openssh-server, started by the test on a free port, with its own host and client keys).

mod common;

use common::show;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::gitrepo::TestRepo;

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd (the test runs as root)");
        let port = free_port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n",
                dir = d.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts (apt-get install openssh-server)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { child, port, dir }
    }

    fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A HOME whose known_hosts trusts this sshd's host key (or not).
    fn home(&self, trusted: bool) -> PathBuf {
        let home = self
            .dir
            .path()
            .join(if trusted { "home" } else { "stranger" });
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        if trusted {
            let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
            let mut fields = key.split_whitespace();
            let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
            std::fs::write(
                home.join(".ssh/known_hosts"),
                format!("[127.0.0.1]:{} {kind} {blob}\n", self.port),
            )
            .unwrap();
        }
        home
    }
}

fn validate(url: &str, key: &Path, home: &Path) -> Output {
    let state = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["validate", "--repo", url, "--ssh-key"])
        .arg(key)
        .arg("--state-dir")
        .arg(state.path())
        .env("HOME", home)
        .env("RECONCILER_LOG", "warn")
        .output()
        .expect("reconciler runs")
}

#[test]
fn fetches_over_ssh_with_a_key_file() {
    let sshd = Sshd::start();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: overssh\nservices:\n  a: { image: 'x:1' }\n",
    );
    let rev = repo.commit("over ssh");
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, repo.url());

    let out = validate(&url, &sshd.client_key(), &sshd.home(true));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&rev), "{stdout}");

    // A key the server does not accept: a clear error that names the fix.
    let other = sshd.dir.path().join("other_key");
    keygen(&other);
    let out = validate(&url, &other, &sshd.home(true));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ssh-key"), "{stderr}");
}

#[test]
fn an_unknown_host_key_is_refused() {
    let sshd = Sshd::start();
    let repo = TestRepo::new();
    repo.write(
        "release.yaml",
        "version: 1\nrelease: overssh\nservices:\n  a: { image: 'x:1' }\n",
    );
    repo.commit("over ssh");
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, repo.url());
    let out = validate(&url, &sshd.client_key(), &sshd.home(false));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("host key is unknown") && stderr.contains("known_hosts"),
        "{stderr}"
    );
}
