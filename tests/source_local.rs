//! `LocalDir`: the `diff --local` source reads a plain directory like a commit's tree.

use std::fs;

use reconciler::source::{LocalDir, SourceError, SourceTree, LOCAL_REVISION};

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    dir
}

#[test]
fn reads_files_and_the_spec() {
    let dir = dir_with(&[("release.yaml", "r\n"), ("deploy/release.yaml", "d\n")]);
    let local = LocalDir::new(dir.path());
    assert_eq!(local.revision(), LOCAL_REVISION);
    assert_eq!(local.subject(), "");
    assert_eq!(local.author(), "");
    assert_eq!(local.read_spec().unwrap(), b"r\n");
    assert_eq!(local.read_file("./deploy/release.yaml").unwrap(), b"d\n");

    let local = local.with_spec_dir("deploy");
    assert_eq!(local.spec_path(), "deploy/release.yaml");
    assert_eq!(local.read_spec().unwrap(), b"d\n");
}

#[test]
fn read_dir_is_recursive_and_sorted() {
    let dir = dir_with(&[
        ("config/z.env", "Z\n"),
        ("config/a/b.conf", "B\n"),
        ("config/a.env", "A\n"),
        ("release.yaml", "r\n"),
    ]);
    let local = LocalDir::new(dir.path());
    let files = local.read_dir("config").unwrap();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["config/a.env", "config/a/b.conf", "config/z.env"]);
    assert_eq!(files[1].1, b"B\n");
}

#[test]
fn missing_files_name_what_is_there() {
    let dir = dir_with(&[("deploy/other.yaml", "x\n")]);
    let local = LocalDir::new(dir.path()).with_spec_dir("deploy");
    let err = local.read_spec().unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "`release.yaml` not found at commit local under `deploy/`; files there: other.yaml"
        ),
        "{msg}"
    );
}

#[test]
fn escapes_and_symlinks_are_refused() {
    let outside = dir_with(&[("secret", "s\n")]);
    let dir = dir_with(&[("release.yaml", "r\n")]);
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    let local = LocalDir::new(dir.path());
    assert!(matches!(
        local.read_file("../secret"),
        Err(SourceError::InvalidPath { .. })
    ));
    assert!(matches!(
        local.read_file("link"),
        Err(SourceError::WrongKind { .. })
    ));
    assert!(matches!(
        local.read_dir(""),
        Err(SourceError::WrongKind { .. })
    ));
}
