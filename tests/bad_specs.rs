//! The bad-spec corpus: every file in `tests/bad_specs/` holds exactly one mistake and says, in
//! its leading comment lines, where the loader must report it:
//!
//! ```text
//! # expect-path: services.api.health.http.port     (dotted path; empty for the document root)
//! # expect-message: <substring of the rendered error: message and fix>
//! # expect-line: N                                 (optional, 1-based)
//! ```
//!
//! The corpus is reused by the apply tests (a bad spec must change nothing on the engine), so
//! keep this header format stable.

use std::path::{Path, PathBuf};

use reconciler::spec;

const MIN_CASES: usize = 35;

#[derive(Debug)]
struct Expect {
    path: String,
    message: String,
    line: Option<usize>,
}

fn header(text: &str, file: &Path) -> Expect {
    let field = |name: &str| {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(&format!("# expect-{name}:")))
            .map(|v| v.trim().to_string())
    };
    Expect {
        path: field("path").unwrap_or_else(|| panic!("{}: no `# expect-path:`", file.display())),
        message: field("message")
            .unwrap_or_else(|| panic!("{}: no `# expect-message:`", file.display())),
        line: field("line").map(|l| l.parse().expect("expect-line is a number")),
    }
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_specs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_spec_fails_where_it_says() {
    let files = corpus();
    assert!(
        files.len() >= MIN_CASES,
        "only {} bad specs, want at least {MIN_CASES}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let want = header(&text, file);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let errors = match spec::load(&name, &text) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(e) => e,
        };
        let hit = errors.0.iter().find(|e| {
            e.path == want.path
                && e.to_string().contains(&want.message)
                && want.line.is_none_or(|l| l == e.line)
        });
        if hit.is_none() {
            failures.push(format!("{name}: want {want:?}, got:\n{errors}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_spec_has_one_mistake() {
    // One mistake each, so that a case keeps testing the check it names.
    for file in corpus() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if let Err(errors) = spec::load(&name, &text) {
            assert_eq!(errors.0.len(), 1, "{errors}");
        }
    }
}
