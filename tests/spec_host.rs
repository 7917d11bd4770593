//! Host-side checks: env files and secret files on this machine.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;

use reconciler::spec;

fn spec_with(env_file: &str, secret_file: &str) -> String {
    format!(
        "version: 1\nrelease: shop\nservices:\n  api:\n    image: shop-api:1\n    env_file: {env_file}\n    secrets:\n      TOKEN: {{ file: {secret_file} }}\n"
    )
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn private_files_pass() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("api.env");
    let secret = dir.path().join("token");
    std::fs::write(&env, "A=1\n").unwrap();
    std::fs::write(&secret, "t\n").unwrap();
    chmod(&env, 0o600);
    chmod(&secret, 0o400);
    let text = spec_with(&env.display().to_string(), &secret.display().to_string());
    let loaded = spec::load("release.yaml", &text).unwrap();
    assert_eq!(spec::check_host(&loaded), vec![]);
}

#[test]
fn readable_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "t\n").unwrap();
    chmod(&secret, 0o644);
    let missing = dir.path().join("missing.env");
    let text = spec_with(
        &missing.display().to_string(),
        &secret.display().to_string(),
    );
    let loaded = spec::load("release.yaml", &text).unwrap();
    let errs = spec::check_host(&loaded);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].path, "services.api.env_file");
    assert_eq!(errs[0].line, 6);
    assert!(errs[0].message.contains("does not exist"), "{}", errs[0]);
    assert_eq!(errs[1].path, "services.api.secrets.TOKEN.file");
    assert!(errs[1].message.contains("mode 644"), "{}", errs[1]);
    assert_eq!(
        errs[1].fix.as_deref(),
        Some(format!("chmod 600 {}", secret.display()).as_str())
    );
}
