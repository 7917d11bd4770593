//! `history.json`: the last N deploys of a release (default [`defaults::HISTORY_LIMIT`]),
//! oldest first. It answers "what ran when, who started it, how long each step took, and why
//! it failed", and it is where a failed revision is remembered across restarts: `apply` and
//! `run` refuse a revision whose last deploy failed until a new commit (or `--retry`).
//!
//! Reasons come from engine, gate and proxy errors, which never carry secret values (they are
//! `Secret`s, redacted at the type level).

use serde::{Deserialize, Serialize};

use super::current::{ServiceImage, SourceRecord};
use super::{read_json, write_json, ReleaseDir, StateError};

pub const FILE: &str = "history.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Rollback,
    /// Written by crash recovery (the journal).
    Recovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    /// A step failed: the revision is bad and is not applied again until a new commit (or
    /// `--retry`). The host was put back unless `rollback_errors` says otherwise.
    Failed,
    /// Interrupted (SIGTERM, Ctrl-C) and undone: nothing is wrong with the revision.
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `<release>-<n>`, n counting every deploy ever recorded for the release.
    pub id: String,
    pub kind: Kind,
    pub release: String,
    pub revision: String,
    /// The revision applied before this deploy started, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    pub spec_hash: String,
    /// `poll`, `webhook`, `watch` or `cli`.
    pub trigger: String,
    pub actor: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// Images of the services after the deploy (for a failed one: what it tried to run).
    pub services: Vec<ServiceImage>,
    /// Completed steps, in order.
    pub steps: Vec<StepTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRecord>,
    /// Snapshots taken before the deploy changed anything (`state::snapshots` has the index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotTaken>,
}

/// One snapshot as the history entry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTaken {
    pub id: String,
    pub service: String,
    /// Relative to the release's state directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub index: usize,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub target: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The failing step (absent when the deploy failed before its first step, e.g. planning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepTiming>,
    pub reason: String,
    /// Undo steps that failed (empty: the host is as it was before the deploy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_errors: Vec<String>,
}

impl History {
    pub fn load(dir: &ReleaseDir) -> Result<History, StateError> {
        Ok(read_json(&dir.file(FILE))?.unwrap_or_default())
    }

    /// The next entry id.
    pub fn next_id(&self, release: &str) -> String {
        let n = self
            .entries
            .last()
            .and_then(|e| e.id.rsplit_once('-'))
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        format!("{release}-{}", n + 1)
    }

    /// The newest deploy of `revision` if it failed: the revision waits for a new commit.
    pub fn failed(&self, revision: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.revision == revision && e.outcome != Outcome::RolledBack)
            .filter(|e| e.outcome == Outcome::Failed)
    }

    /// The newest applied entry, by id or revision prefix (`--to`), or by default the newest
    /// applied revision other than `current`.
    pub fn rollback_target(&self, to: Option<&str>, current: Option<&str>) -> Option<&Entry> {
        let applied = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.outcome == Outcome::Applied);
        match to {
            Some(to) => applied
                .clone()
                .find(|e| e.id == to)
                .or_else(|| applied.clone().find(|e| e.revision.starts_with(to))),
            None => applied
                .clone()
                .find(|e| Some(e.revision.as_str()) != current),
        }
    }
}

/// Appends `entry` and keeps the newest `limit` entries (at least one).
pub fn append(dir: &ReleaseDir, entry: Entry, limit: usize) -> Result<History, StateError> {
    dir.ensure()?;
    let mut history = History::load(dir)?;
    history.entries.push(entry);
    let excess = history.entries.len().saturating_sub(limit.max(1));
    history.entries.drain(..excess);
    write_json(&dir.file(FILE), &history)?;
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, revision: &str, outcome: Outcome) -> Entry {
        Entry {
            id: id.into(),
            kind: Kind::Deploy,
            release: "shop".into(),
            revision: revision.into(),
            previous_revision: None,
            spec_hash: "h".into(),
            trigger: "cli".into(),
            actor: "me".into(),
            started_at: super::super::now(),
            finished_at: super::super::now(),
            duration_ms: 1,
            outcome,
            services: vec![],
            steps: vec![],
            failure: None,
            source: None,
            snapshots: vec![],
        }
    }

    #[test]
    fn bounded_and_numbered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        for i in 0..5 {
            let h = History::load(&dir).unwrap();
            let id = h.next_id("shop");
            append(&dir, entry(&id, &format!("r{i}"), Outcome::Applied), 3).unwrap();
        }
        let h = History::load(&dir).unwrap();
        let ids: Vec<_> = h.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["shop-3", "shop-4", "shop-5"]);
    }

    #[test]
    fn a_failed_revision_is_remembered_until_it_succeeds() {
        let mut h = History::default();
        h.entries.push(entry("shop-1", "r1", Outcome::Applied));
        h.entries.push(entry("shop-2", "r2", Outcome::Failed));
        assert!(h.failed("r2").is_some());
        assert!(h.failed("r1").is_none());
        // An interrupted retry does not clear it; a success does.
        h.entries.push(entry("shop-3", "r2", Outcome::RolledBack));
        assert!(h.failed("r2").is_some());
        h.entries.push(entry("shop-4", "r2", Outcome::Applied));
        assert!(h.failed("r2").is_none());
    }

    #[test]
    fn rollback_target_is_the_previous_applied_revision() {
        let mut h = History::default();
        h.entries.push(entry("shop-1", "aaa1", Outcome::Applied));
        h.entries.push(entry("shop-2", "bbb2", Outcome::Failed));
        h.entries.push(entry("shop-3", "ccc3", Outcome::Applied));
        assert_eq!(
            h.rollback_target(None, Some("ccc3")).map(|e| &e.id[..]),
            Some("shop-1")
        );
        assert_eq!(
            h.rollback_target(Some("ccc"), None).map(|e| &e.id[..]),
            Some("shop-3")
        );
        assert_eq!(h.rollback_target(Some("bbb2"), None), None);
    }
}
