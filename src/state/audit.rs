//! `audit.log`: one JSON line per thing an operator may have to account for (apply, rollback,
//! lock takeover, forced lock release, suspend, resume). Append-only; once it would grow past
//! [`defaults::AUDIT_MAX_BYTES`] it is renamed to `audit.log.1` (replacing the older one) and
//! a new file begins, so it never fills the disk.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::{ReleaseDir, StateError};
use crate::defaults;

pub const FILE: &str = "audit.log";
pub const ROTATED: &str = "audit.log.1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub time: String,
    pub release: String,
    pub actor: String,
    /// `poll`, `webhook`, `watch` or `cli`.
    pub trigger: String,
    /// `apply`, `rollback`, `lock_takeover`, `lock_force_release`, `suspend`, `resume`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `applied`, `failed`, `rolled_back`, `ok`, `refused`, ...
    pub outcome: String,
    /// A short explanation (never a secret: reasons are scrubbed like history's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Appends one line, rotating first when the file would pass `max_bytes`.
pub fn append(dir: &ReleaseDir, line: &Line, max_bytes: u64) -> Result<(), StateError> {
    dir.ensure()?;
    let path = dir.file(FILE);
    let mut bytes = serde_json::to_vec(line).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: format!("cannot serialize: {e}"),
    })?;
    bytes.push(b'\n');
    let size = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(StateError::Io {
                what: "stat",
                path,
                source,
            })
        }
    };
    if size > 0 && size + bytes.len() as u64 > max_bytes {
        fs::rename(&path, dir.file(ROTATED)).map_err(|source| StateError::Io {
            what: "rotate",
            path: path.clone(),
            source,
        })?;
    }
    // O_APPEND: one write of a whole line, so concurrent writers never interleave within one.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| StateError::Io {
            what: "open",
            path: path.clone(),
            source,
        })?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(|source| StateError::Io {
            what: "append to",
            path,
            source,
        })
}

/// [`append`] with the default size limit; a failure is logged, not fatal: the deploy itself
/// must not fail because its audit line could not be written.
pub fn record(dir: &ReleaseDir, line: Line) {
    if let Err(e) = append(dir, &line, defaults::AUDIT_MAX_BYTES) {
        tracing::error!(error = %e, action = %line.action, "cannot write the audit log");
    }
}

/// Every line of the current file (not the rotated one), oldest first.
pub fn read(dir: &ReleaseDir) -> Result<Vec<Line>, StateError> {
    let path = dir.file(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                what: "read",
                path,
                source,
            })
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Line {
        Line {
            time: super::super::now(),
            release: "shop".into(),
            actor: "me".into(),
            trigger: "cli".into(),
            action: "apply".into(),
            revision: Some(format!("rev{n}")),
            outcome: "applied".into(),
            detail: None,
        }
    }

    #[test]
    fn appends_and_rotates_by_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        for n in 0..3 {
            append(&dir, &line(n), 400).unwrap();
        }
        // Each line is ~170 bytes: the third one did not fit and rotated the first two out.
        let lines = read(&dir).unwrap();
        assert_eq!(lines, vec![line_with_time(&lines[0], 2)]);
        let rotated = fs::read_to_string(dir.file(ROTATED)).unwrap();
        assert_eq!(rotated.lines().count(), 2);
        assert!(rotated.contains("rev0") && rotated.contains("rev1"));
    }

    fn line_with_time(original: &Line, n: usize) -> Line {
        Line {
            time: original.time.clone(),
            ..line(n)
        }
    }
}
