//! `suspended.json`: while it exists the daemon does not apply (it still observes and logs
//! drift). Written by `reconciler suspend` and by `rollback` (so the loop does not roll
//! forward again at once), removed by `reconciler resume`.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::{read_json, write_json, ReleaseDir, StateError};

pub const FILE: &str = "suspended.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Rollback,
    Suspend,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rollback => "rollback",
            Reason::Suspend => "suspend",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspended {
    pub by: String,
    pub at: String,
    pub reason: Reason,
    /// For a rollback: the revision rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The operator's note (`suspend --message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn load(dir: &ReleaseDir) -> Result<Option<Suspended>, StateError> {
    read_json(&dir.file(FILE))
}

pub fn suspend(dir: &ReleaseDir, record: &Suspended) -> Result<(), StateError> {
    dir.ensure()?;
    write_json(&dir.file(FILE), record)
}

/// Removes the record; returns what it said (`None`: it was not suspended).
pub fn resume(dir: &ReleaseDir) -> Result<Option<Suspended>, StateError> {
    // A torn record still means "suspended": resuming removes it all the same.
    let previous = load(dir).unwrap_or(None);
    let path = dir.file(FILE);
    match fs::remove_file(&path) {
        Ok(()) => Ok(previous),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            what: "remove",
            path,
            source,
        }),
    }
}
