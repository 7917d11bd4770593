//! Every spec of the bad-spec corpus, committed to a real repo and given to `reconciler apply`:
//! rejected with exit 2 and its expected error, and not one change on the engine.
//!
//! This binary holds one test, so no other test of the suite runs while it watches the
//! engine's events (cargo runs test binaries one after another).

mod common;

use std::process::Command;

use common::docker::mutating_events_of_all_releases;
use common::gitrepo::TestRepo;

#[test]
fn apply_rejects_every_bad_spec_and_changes_nothing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_specs");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad_specs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} bad specs", cases.len());

    let state = tempfile::tempdir().expect("state dir");
    let since = common::docker::instant();
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("read case");
        let expect_path = header(&text, "expect-path");
        let expect_message = header(&text, "expect-message");
        let repo = TestRepo::new();
        repo.write("release.yaml", &text);
        repo.commit("bad spec");
        let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["apply", "--repo", &repo.url()])
            .arg("--state-dir")
            .arg(state.path())
            .env("RECONCILER_LOG", "warn")
            .output()
            .expect("reconciler runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", case.display());
        if let Some(p) = expect_path.filter(|p| !p.is_empty()) {
            assert!(
                stderr.contains(&format!(": {p}: ")) || stderr.contains(&p),
                "{}: path {p} not in {stderr}",
                case.display()
            );
        }
        if let Some(m) = expect_message {
            assert!(
                stderr.contains(&m),
                "{}: message {m:?} not in {stderr}",
                case.display()
            );
        }
        assert!(
            stderr.contains("release.yaml:"),
            "{}: no file:line in {stderr}",
            case.display()
        );
    }
    let until = common::docker::instant();
    let events = mutating_events_of_all_releases(since, until);
    assert!(
        events.is_empty(),
        "bad specs changed the engine: {events:?}"
    );
    eprintln!(
        "{} bad specs rejected by apply, no engine change",
        cases.len()
    );
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
}
