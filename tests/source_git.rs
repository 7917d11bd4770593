//! The git source against real repositories made with the git CLI in temp dirs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use reconciler::source::{GitSource, SourceConfig, SourceError, SourceTree};
use tempfile::TempDir;

/// A repo with a working tree that plays the remote.
struct Origin {
    dir: TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        // Independent of whoever runs the tests.
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_NAME", "Cy Committer")
        .env("GIT_COMMITTER_EMAIL", "cy@example.com")
        .env("GIT_COMMITTER_DATE", "1700000100 +0000")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Origin {
    fn new(branch: &str) -> Origin {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", branch]);
        Origin { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        self.path().display().to_string()
    }

    fn write(&self, path: &str, content: &str) {
        let full = self.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }

    /// Writes the files, commits them and returns the new commit id.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            self.write(path, content);
        }
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.path(), &["rev-parse", "HEAD"])
    }

    fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }
}

fn source(url: &str, reference: Option<&str>, state: &Path) -> GitSource {
    let mut config = SourceConfig::new(url);
    config.reference = reference.map(str::to_string);
    GitSource::new(config, state).unwrap()
}

fn read(tree: &impl SourceTree, path: &str) -> String {
    String::from_utf8(tree.read_file(path).unwrap()).unwrap()
}

#[test]
fn first_fetch_clones_into_the_cache_and_later_fetches_reuse_it() {
    let origin = Origin::new("main");
    let rev1 = origin.commit(&[("release.yaml", "v: 1\n")], "first");
    let state = tempfile::tempdir().unwrap();
    let src = source(&origin.url(), None, state.path());

    let snap1 = src.fetch().unwrap();
    assert_eq!(snap1.revision, rev1);
    let cache = src.cache_dir().to_path_buf();
    assert!(cache.starts_with(state.path().join("git")));
    let name = cache.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 16, "{name}");
    assert!(
        cache.join("HEAD").is_file(),
        "a bare repo at {}",
        cache.display()
    );
    assert!(!cache.join(".git").exists());
    let inode = fs::metadata(&cache).unwrap().ino();
    fs::write(cache.join("reconciler-test-marker"), "x").unwrap();

    let rev2 = origin.commit(&[("release.yaml", "v: 2\n")], "second");
    let snap2 = src.fetch().unwrap();
    assert_eq!(snap2.revision, rev2);
    assert_eq!(read(&snap2, "release.yaml"), "v: 2\n");
    assert_eq!(fs::metadata(&cache).unwrap().ino(), inode);
    assert!(cache.join("reconciler-test-marker").exists(), "re-cloned");

    // An older snapshot still reads its own commit after the cache moved on.
    assert_eq!(read(&snap1, "release.yaml"), "v: 1\n");

    // A new GitSource for the same URL (a restart) finds the same cache.
    let again = source(&origin.url(), None, state.path());
    assert_eq!(again.cache_dir(), cache);
    assert_eq!(again.fetch().unwrap().revision, rev2);
    assert!(cache.join("reconciler-test-marker").exists());
}

#[test]
fn no_new_commit_returns_the_same_revision() {
    let origin = Origin::new("main");
    let rev = origin.commit(&[("release.yaml", "v: 1\n")], "first");
    let state = tempfile::tempdir().unwrap();
    let src = source(&origin.url(), None, state.path());
    assert_eq!(src.fetch().unwrap().revision, rev);
    assert_eq!(src.fetch().unwrap().revision, rev);
}

#[test]
fn default_branch_is_followed_for_main() {
    let origin = Origin::new("main");
    let main = origin.commit(&[("release.yaml", "on: main\n")], "main");
    origin.git(&["checkout", "-q", "-b", "other"]);
    origin.commit(&[("release.yaml", "on: other\n")], "other");
    origin.git(&["checkout", "-q", "main"]);

    let state = tempfile::tempdir().unwrap();
    let snap = source(&origin.url(), None, state.path()).fetch().unwrap();
    assert_eq!(snap.revision, main);
}

#[test]
fn default_branch_is_followed_for_trunk_even_when_main_exists() {
    let origin = Origin::new("trunk");
    let trunk = origin.commit(&[("release.yaml", "on: trunk\n")], "trunk");
    origin.git(&["checkout", "-q", "-b", "main"]);
    origin.commit(&[("release.yaml", "on: main\n")], "main");
    origin.git(&["checkout", "-q", "trunk"]);

    let state = tempfile::tempdir().unwrap();
    let snap = source(&origin.url(), None, state.path()).fetch().unwrap();
    assert_eq!(snap.revision, trunk);
    assert_eq!(read(&snap, "release.yaml"), "on: trunk\n");
}

/// An origin with: main (2 commits), branch `feature`, annotated tag `v1` and lightweight tag
/// `light` on the first commit.
struct Refs {
    origin: Origin,
    first: String,
    main: String,
    feature: String,
}

fn refs() -> Refs {
    let origin = Origin::new("main");
    let first = origin.commit(&[("release.yaml", "at: first\n")], "first");
    origin.git(&["tag", "-a", "v1", "-m", "version 1"]);
    origin.git(&["tag", "light"]);
    let main = origin.commit(&[("release.yaml", "at: main\n")], "second");
    origin.git(&["checkout", "-q", "-b", "feature"]);
    let feature = origin.commit(&[("release.yaml", "at: feature\n")], "feature work");
    origin.git(&["checkout", "-q", "main"]);
    Refs {
        origin,
        first,
        main,
        feature,
    }
}

#[test]
fn reference_can_be_a_branch_a_tag_or_a_commit_id() {
    let r = refs();
    let state = tempfile::tempdir().unwrap();
    let rev = |reference: &str| {
        source(&r.origin.url(), Some(reference), state.path())
            .fetch()
            .unwrap_or_else(|e| panic!("{reference}: {e}"))
            .revision
    };
    assert_eq!(rev("main"), r.main);
    assert_eq!(rev("feature"), r.feature);
    assert_eq!(rev("refs/heads/feature"), r.feature);
    assert_eq!(rev("v1"), r.first, "annotated tag peeled to its commit");
    assert_eq!(rev("light"), r.first, "lightweight tag");
    assert_eq!(rev(&r.feature), r.feature, "full commit id");
    assert_eq!(rev(&r.first[..7]), r.first, "short commit id");
}

#[test]
fn unknown_reference_lists_the_available_ones() {
    let r = refs();
    let state = tempfile::tempdir().unwrap();
    let err = source(&r.origin.url(), Some("relase-2"), state.path())
        .fetch()
        .unwrap_err();
    assert!(matches!(err, SourceError::UnknownRef { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        "`relase-2`",
        r.origin.url().as_str(),
        "feature (branch)",
        "main (branch)",
        "v1 (tag)",
        "light (tag)",
    ] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }
    assert!(!msg.contains("HEAD"), "{msg}");

    // A well-formed but unknown commit id is an unknown ref too.
    let err = source(&r.origin.url(), Some("deadbeef"), state.path())
        .fetch()
        .unwrap_err();
    assert!(matches!(err, SourceError::UnknownRef { .. }), "{err:?}");
}

#[test]
fn a_deleted_branch_is_pruned_from_the_cache() {
    let r = refs();
    let state = tempfile::tempdir().unwrap();
    let src = source(&r.origin.url(), Some("feature"), state.path());
    assert_eq!(src.fetch().unwrap().revision, r.feature);
    r.origin.git(&["branch", "-q", "-D", "feature"]);
    let err = src.fetch().unwrap_err();
    assert!(matches!(err, SourceError::UnknownRef { .. }), "{err:?}");
    assert!(!err.to_string().contains("feature (branch)"), "{err}");
}

#[test]
fn files_come_from_the_commit_not_the_working_tree() {
    let origin = Origin::new("main");
    origin.commit(&[("release.yaml", "committed: true\n")], "c");
    origin.write("release.yaml", "committed: false\n");
    origin.write("untracked.yaml", "x\n");

    let state = tempfile::tempdir().unwrap();
    let snap = source(&origin.url(), None, state.path()).fetch().unwrap();
    assert_eq!(read(&snap, "release.yaml"), "committed: true\n");
    assert_eq!(snap.read_spec().unwrap(), b"committed: true\n");
    let err = snap.read_file("untracked.yaml").unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");
}

#[test]
fn path_selects_a_subdirectory() {
    let origin = Origin::new("main");
    origin.commit(
        &[
            ("release.yaml", "at: root\n"),
            ("deploy/release.yaml", "at: deploy\n"),
        ],
        "c",
    );
    let state = tempfile::tempdir().unwrap();
    let mut config = SourceConfig::new(origin.url());
    config.path = "deploy".into();
    let snap = GitSource::new(config, state.path())
        .unwrap()
        .fetch()
        .unwrap();
    assert_eq!(snap.spec_path(), "deploy/release.yaml");
    assert_eq!(snap.read_spec().unwrap(), b"at: deploy\n");
}

#[test]
fn a_missing_release_yaml_names_the_commit_dir_and_what_is_there() {
    let origin = Origin::new("main");
    let rev = origin.commit(
        &[("deploy/other.yaml", "x\n"), ("deploy/conf/a.env", "A=1\n")],
        "c",
    );
    let state = tempfile::tempdir().unwrap();
    let mut config = SourceConfig::new(origin.url());
    config.path = "deploy/".into();
    let snap = GitSource::new(config, state.path())
        .unwrap()
        .fetch()
        .unwrap();
    let err = snap.read_spec().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "source {}: `release.yaml` not found at commit {} under `deploy/`; files there: conf/, other.yaml",
            origin.url(),
            &rev[..12]
        )
    );

    // A missing directory names the deepest one that exists.
    let err = snap.read_file("dpeloy/release.yaml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`dpeloy/release.yaml` not found"), "{msg}");
    assert!(msg.contains("under `/`; files there: deploy/"), "{msg}");

    // A directory is not a file, and a file is not a directory.
    assert!(matches!(
        snap.read_file("deploy/conf"),
        Err(SourceError::WrongKind { .. })
    ));
    assert!(matches!(
        snap.read_dir("deploy/other.yaml"),
        Err(SourceError::WrongKind { .. })
    ));
    assert!(matches!(
        snap.read_file("deploy/../etc/passwd"),
        Err(SourceError::InvalidPath { .. })
    ));
}

#[test]
fn read_dir_is_recursive_sorted_and_relative_to_the_root() {
    let origin = Origin::new("main");
    origin.commit(
        &[
            ("release.yaml", "r\n"),
            ("config/web/nginx.conf", "n\n"),
            ("config/b.env", "B=1\n"),
            ("config/a.env", "A=1\n"),
            ("other/x", "x\n"),
        ],
        "c",
    );
    let state = tempfile::tempdir().unwrap();
    let snap = source(&origin.url(), None, state.path()).fetch().unwrap();
    let files = snap.read_dir("config").unwrap();
    let got: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("config/a.env", b"A=1\n".as_slice()),
            ("config/b.env", b"B=1\n".as_slice()),
            ("config/web/nginx.conf", b"n\n".as_slice()),
        ]
    );
    assert_eq!(snap.read_dir("").unwrap().len(), 5);
    assert!(matches!(
        snap.read_dir("nope"),
        Err(SourceError::NotFound { .. })
    ));
}

#[test]
fn snapshot_carries_author_subject_and_time() {
    let origin = Origin::new("main");
    let rev = origin.commit(
        &[("release.yaml", "r\n")],
        "Deploy web 1.2\n\nLonger body\nover lines.",
    );
    let state = tempfile::tempdir().unwrap();
    let snap = source(&origin.url(), None, state.path()).fetch().unwrap();
    assert_eq!(snap.revision, rev);
    assert_eq!(snap.revision.len(), 40);
    assert_eq!(snap.subject, "Deploy web 1.2");
    assert_eq!(snap.author, "Ada Author <ada@example.com>");
    assert_eq!(snap.time, 1_700_000_100);
    assert_eq!(SourceTree::author(&snap), snap.author);
}

#[test]
fn file_urls_and_relative_paths_work() {
    let origin = Origin::new("main");
    let rev = origin.commit(&[("release.yaml", "r\n")], "c");
    let state = tempfile::tempdir().unwrap();

    let file_url = format!("file://{}", origin.url());
    assert_eq!(
        source(&file_url, None, state.path())
            .fetch()
            .unwrap()
            .revision,
        rev
    );

    // A path relative to the cwd (the crate dir under cargo test), made absolute.
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let mut rel = PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    rel.push(origin.path().strip_prefix("/").unwrap());
    let src = source(rel.to_str().unwrap(), None, state.path());
    assert_eq!(src.url(), origin.url());
    assert_eq!(src.fetch().unwrap().revision, rev);
}

#[test]
fn a_missing_repository_says_so() {
    let state = tempfile::tempdir().unwrap();
    let missing = state.path().join("no-such-repo");
    let err = source(missing.to_str().unwrap(), None, state.path())
        .fetch()
        .unwrap_err();
    assert!(matches!(err, SourceError::RepoNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-repo"), "{err}");
}

#[test]
fn a_token_in_the_url_never_shows_up() {
    let state = tempfile::tempdir().unwrap();
    for url in [
        "https://user:tok3n@127.0.0.1:9/x.git",
        "https://tok3n@127.0.0.1:9/x.git",
    ] {
        let src = source(url, None, state.path());
        assert!(!format!("{src:?}").contains("tok3n"));
        assert!(!src.url().contains("tok3n"));
        let err = src.fetch().unwrap_err();
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("tok3n"), "{shown}");
        assert!(shown.contains("127.0.0.1:9"), "{shown}");
        assert!(matches!(err, SourceError::Network { .. }), "{err:?}");
        // Nor in the cache repo's config.
        let config = fs::read_to_string(src.cache_dir().join("config")).unwrap();
        assert!(!config.contains("tok3n"), "{config}");
        assert!(config.contains("https://127.0.0.1:9/x.git"), "{config}");
    }
}

#[test]
fn snapshots_are_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<reconciler::source::Snapshot>();
    assert_traits::<reconciler::source::LocalDir>();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GitSource>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_async_runs_on_the_blocking_pool() {
    let origin = Origin::new("main");
    let rev = origin.commit(&[("release.yaml", "r\n")], "c");
    let state = tempfile::tempdir().unwrap();
    let src = Arc::new(source(&origin.url(), None, state.path()));
    // Concurrent fetches of one source are serialised, not failed on ref locks.
    let (a, b) = tokio::join!(src.clone().fetch_async(), src.clone().fetch_async());
    assert_eq!(a.unwrap().revision, rev);
    assert_eq!(b.unwrap().revision, rev);
}

#[test]
fn a_commit_id_must_still_be_reachable_from_a_fetched_ref() {
    let r = refs();
    let state = tempfile::tempdir().unwrap();
    assert_eq!(
        source(&r.origin.url(), Some(&r.feature), state.path())
            .fetch()
            .unwrap()
            .revision,
        r.feature
    );
    // The branch goes away upstream: its commit lingers in the cache's objects, but is no
    // longer part of the remote's history.
    r.origin.git(&["branch", "-q", "-D", "feature"]);
    let err = source(&r.origin.url(), Some(&r.feature), state.path())
        .fetch()
        .unwrap_err();
    assert!(matches!(err, SourceError::UnknownRef { .. }), "{err:?}");
}
