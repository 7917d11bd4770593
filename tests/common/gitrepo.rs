//! Real git repositories for tests, made with the git CLI in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestRepo {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test Author",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl TestRepo {
    /// An empty repository whose default branch is `main`.
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ops");
        std::fs::create_dir_all(&path).expect("mkdir");
        git(&path, &["init", "-q", "-b", "main"]);
        TestRepo { _dir: dir, path }
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let file = self.path.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(file, text).expect("write");
        self
    }

    /// Commits everything; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(
            &self.path,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.path, &["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        self.path.display().to_string()
    }
}
