//! `jobs.json`: the jobs (`jobs:`) that succeeded for the revision being deployed, so that a
//! job runs at most once per revision.
//!
//! With rollback: a release that fails after a `before` job succeeded (a migration, say) is
//! rolled back, but the job's effect is not (nothing can un-run it): the old version runs on
//! the migrated schema, which is why migrations must stay compatible with the version before
//! them. Retrying the same revision does not run the job again; a new revision (or a changed
//! job) does. Only the newest revision is kept: going back to an older one runs its jobs again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{read_json, write_json, ReleaseDir, StateError};

pub const FILE: &str = "jobs.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsDone {
    pub revision: String,
    /// `plan::done_key`: `<job key>@<config hash>`.
    pub done: BTreeSet<String>,
}

/// The jobs that succeeded for `revision` (empty for any other revision, or no file).
pub fn load(dir: &ReleaseDir, revision: &str) -> Result<BTreeSet<String>, StateError> {
    let file: Option<JobsDone> = read_json(&dir.file(FILE))?;
    Ok(file
        .filter(|f| f.revision == revision)
        .map(|f| f.done)
        .unwrap_or_default())
}

/// Records that a job succeeded for `revision`, written at once (atomically), so a later
/// failure or a crash of the same deploy does not make it run again.
pub fn record(dir: &ReleaseDir, revision: &str, key: String) -> Result<(), StateError> {
    dir.ensure()?;
    let mut done = load(dir, revision)?;
    done.insert(key);
    write_json(
        &dir.file(FILE),
        &JobsDone {
            revision: revision.to_string(),
            done,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_revision_starts_with_nothing_done() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        assert!(load(&dir, "r1").unwrap().is_empty());
        record(&dir, "r1", "api/migrate@h".into()).unwrap();
        record(&dir, "r1", "release/smoke@h".into()).unwrap();
        assert_eq!(load(&dir, "r1").unwrap().len(), 2);
        assert!(load(&dir, "r2").unwrap().is_empty());
        record(&dir, "r2", "api/migrate@h".into()).unwrap();
        assert!(load(&dir, "r1").unwrap().is_empty());
    }
}
