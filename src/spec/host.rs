//! Checks against this host's files, separate from [`super::load`] so a spec can be validated
//! anywhere (CI, a laptop) and these run only where it will be applied.

use std::path::Path;

use super::load::{error_at, LoadedSpec};
use super::model::StringOrList;
use super::SpecError;

/// Env files must exist, and env files, secret files and webhook URL files must not be readable
/// by group or others (they hold secrets: env file values are treated as sensitive).
pub fn check_host(loaded: &LoadedSpec) -> Vec<SpecError> {
    let mut out = Vec::new();
    for (name, s) in &loaded.spec.services {
        let files: Vec<(String, String)> = match &s.env_file {
            None => Vec::new(),
            Some(StringOrList::One(f)) => vec![(f.clone(), format!("services.{name}.env_file"))],
            Some(StringOrList::Many(v)) => v
                .iter()
                .enumerate()
                .map(|(i, f)| (f.clone(), format!("services.{name}.env_file.{i}")))
                .collect(),
        };
        for (file, path) in files {
            match std::fs::metadata(&file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(error_at(
                    loaded,
                    &path,
                    format!("env_file `{file}` does not exist on this host"),
                    Some(format!("create it with mode 600 (`install -m 600 /dev/null {file}`), or remove it from the spec")),
                )),
                Err(e) => out.push(error_at(
                    loaded,
                    &path,
                    format!("env_file `{file}` cannot be read: {e}"),
                    None,
                )),
                Ok(_) => out.extend(mode_error(loaded, &path, "env_file", &file)),
            }
        }
        for (key, source) in &s.secrets {
            if let Some(file) = &source.file {
                if Path::new(file).exists() {
                    let path = format!("services.{name}.secrets.{key}.file");
                    out.extend(mode_error(loaded, &path, "secret file", file));
                }
            }
        }
    }
    // A webhook URL holds its token.
    for (i, n) in loaded.spec.notifications.iter().enumerate() {
        if let Some(file) = &n.url_file {
            if Path::new(file).exists() {
                let path = format!("notifications.{i}.url_file");
                out.extend(mode_error(loaded, &path, "webhook URL file", file));
            }
        }
    }
    out
}

#[cfg(unix)]
fn mode_error(loaded: &LoadedSpec, path: &str, what: &str, file: &str) -> Option<SpecError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        error_at(
            loaded,
            path,
            format!(
                "{what} `{file}` is readable by group or others (mode {:03o})",
                mode & 0o777
            ),
            Some(format!("chmod 600 {file}")),
        )
    })
}

#[cfg(not(unix))]
fn mode_error(_: &LoadedSpec, _: &str, _: &str, _: &str) -> Option<SpecError> {
    None
}
