//! Shared helpers for integration tests. Each `tests/*.rs` does `mod common;`.
#![allow(dead_code)]

pub mod daemon;
pub mod docker;
pub mod gitrepo;
pub mod images;
pub mod load;
pub mod proxy;

/// A port on 127.0.0.1 that was free a moment ago (bound, then released), for publishing a
/// test container's port as `127.0.0.1:PORT`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A finished command's exit code, stdout and stderr, for an assertion message.
pub fn show(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `value` matches `schemas/<schema_file>`, listing every violation with where it
/// is in the document.
pub fn assert_schema(schema_file: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(schema_file);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema"))
            .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:?}\n{value:#}");
}
