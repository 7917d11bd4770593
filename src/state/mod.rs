//! What the reconciler remembers between runs, under `--state-dir`:
//!
//! ```text
//! <state-dir>/
//!   git/<cache-key>/             bare git caches (source)
//!   releases/<release>/
//!     current.json               the release last applied (state::current)
//!     history.json               bounded list of past deploys (state::history)
//!     journal.json               the deploy in progress, step by step (state::journal)
//!     lock, lock.json            the deploy lock and its holder record (state::lock)
//!     suspended.json             present while automatic sync is suspended
//!     audit.log, audit.log.1     append-only JSON lines, rotated by size (state::audit)
//!     snapshots.json             index of the snapshots below (state::snapshots)
//!     snapshots/<service>/*.dump snapshots of stateful services (crate::snapshot)
//! ```
//!
//! Every file is written atomically ([`write_atomic`]), so a crash leaves either the old or the
//! new content, never half of each. A file that does not parse anyway (a disk fault, a hand
//! edit) is reported as [`StateError::Corrupt`] with its path, and callers fall back to what the
//! labels on the live containers say.

pub mod actor;
pub mod audit;
pub mod current;
pub mod history;
pub mod lock;
pub mod snapshots;
pub mod suspend;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod journal;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not valid state ({reason}); fix: move it aside and run again (the reconciler then relies on the container labels)", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The directory of one release's state files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDir {
    root: PathBuf,
}

impl ReleaseDir {
    /// `<state_dir>/releases/<release>`. The release name is schema-checked (`[a-z][a-z0-9-]*`),
    /// so it is a safe path component.
    pub fn new(state_dir: &Path, release: &str) -> ReleaseDir {
        ReleaseDir {
            root: state_dir.join("releases").join(release),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and its parents) if missing.
    pub fn ensure(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.root).map_err(|source| StateError::Io {
            what: "create directory",
            path: self.root.clone(),
            source,
        })
    }
}

/// Now, as RFC 3339 UTC with milliseconds: sorts as text in time order.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The releases that have a state directory, sorted.
pub fn releases(state_dir: &Path) -> Result<Vec<String>, StateError> {
    let dir = state_dir.join("releases");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                what: "list",
                path: dir,
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content: a temp file in
/// the same directory, fsync, rename over `path`, fsync of the directory (the rename itself must
/// reach the disk too).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io_err = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Io {
            what,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename into place", path)(e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// [`write_atomic`] of `value` as pretty JSON with a trailing newline.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot serialize: {e}"),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON state file: `Ok(None)` when it does not exist, `Corrupt` when it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                what: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let rel = ReleaseDir::new(dir.path(), "shop");
        rel.ensure().unwrap();
        let path = rel.file("current.json");
        assert_eq!(read_json::<serde_json::Value>(&path).unwrap(), None);
        write_json(&path, &serde_json::json!({"revision": "abc"})).unwrap();
        let back: serde_json::Value = read_json(&path).unwrap().unwrap();
        assert_eq!(back["revision"], "abc");
        // No temp file is left next to it.
        let names: Vec<_> = fs::read_dir(rel.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("current.json")]);
    }

    #[test]
    fn torn_file_is_reported_as_corrupt_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        fs::write(&path, b"[{\"revision\": \"ab").unwrap();
        match read_json::<serde_json::Value>(&path) {
            Err(StateError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let msg = read_json::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("history.json") && msg.contains("fix:"),
            "{msg}"
        );
    }
}
