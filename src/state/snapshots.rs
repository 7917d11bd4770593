//! `snapshots.json`: the index of a release's snapshots (the files live beside it, under
//! `snapshots/<service>/`), and retention: which of them a successful release prunes.
//!
//! Retention is pure ([`to_prune`]) so that its one promise is tested on its own: the
//! snapshots taken by the current and by the previous applied deploy are never pruned,
//! whatever `keep:` says.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::history::SnapshotTaken;
use super::{read_json, write_json, ReleaseDir, StateError};
use crate::spec::model::{SnapshotFormat, SnapshotKeep};

pub const FILE: &str = "snapshots.json";
/// Directory of the snapshot files, relative to the release's state directory.
pub const DIR: &str = "snapshots";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Oldest first.
    pub snapshots: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `<service>-<time>`: unique within the release, what `snapshots verify` takes.
    pub id: String,
    pub release: String,
    pub service: String,
    /// The container it was taken from.
    pub container: String,
    /// That container's image: its tools read the file back (`pg_restore`).
    pub image: String,
    pub format: SnapshotFormat,
    /// The history entry id of the deploy that took it.
    pub deploy: String,
    /// The revision that deploy applied.
    pub revision: String,
    /// The revision that ran when it was taken: the data it holds belongs to that release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    /// Relative to the release's state directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub taken_at: String,
}

impl Record {
    pub fn taken(&self) -> SnapshotTaken {
        SnapshotTaken {
            id: self.id.clone(),
            service: self.service.clone(),
            file: self.file.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            duration_ms: self.duration_ms,
        }
    }
}

impl Index {
    pub fn load(dir: &ReleaseDir) -> Result<Index, StateError> {
        Ok(read_json(&dir.file(FILE))?.unwrap_or_default())
    }

    pub fn save(&self, dir: &ReleaseDir) -> Result<(), StateError> {
        dir.ensure()?;
        write_json(&dir.file(FILE), self)
    }

    /// The snapshots one deploy took, for its history entry.
    pub fn taken_by(&self, deploy: &str) -> Vec<SnapshotTaken> {
        self.snapshots
            .iter()
            .filter(|r| r.deploy == deploy)
            .map(Record::taken)
            .collect()
    }

    pub fn find(&self, id: &str) -> Option<&Record> {
        self.snapshots.iter().find(|r| r.id == id)
    }
}

/// Adds `record` to the index (under the deploy lock: no other writer).
pub fn add(dir: &ReleaseDir, record: Record) -> Result<(), StateError> {
    let mut index = Index::load(dir)?;
    index.snapshots.push(record);
    index.save(dir)
}

/// The ids retention removes. Per service, a snapshot stays while either rule of its `keep`
/// keeps it (the newest `last`, or younger than `days`); a service with no rule (or no longer
/// in `keep`) keeps all. Snapshots taken by a `protected` deploy (the current and the previous
/// applied one) always stay; so does one whose time does not parse (age unknown).
pub fn to_prune(
    records: &[Record],
    keep: &BTreeMap<String, SnapshotKeep>,
    protected: &[String],
    now: SystemTime,
) -> Vec<String> {
    let mut by_service: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_service.entry(r.service.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (service, mut rs) in by_service {
        let Some(rule) = keep.get(service) else {
            continue;
        };
        if rule.last.is_none() && rule.days.is_none() {
            continue;
        }
        // Newest first (RFC 3339 UTC sorts as text).
        rs.sort_by(|a, b| b.taken_at.cmp(&a.taken_at));
        for (rank, r) in rs.into_iter().enumerate() {
            let by_last = rule.last.is_some_and(|n| rank < n as usize);
            let by_age = rule.days.is_some_and(|d| {
                humantime::parse_rfc3339_weak(&r.taken_at)
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age < Duration::from_secs(u64::from(d) * 86_400))
            });
            let unknown_age = humantime::parse_rfc3339_weak(&r.taken_at).is_err();
            if !(by_last || by_age || unknown_age || protected.contains(&r.deploy)) {
                out.push(r.id.clone());
            }
        }
    }
    out
}

/// Removes the files of `ids` and their index entries; returns the ids removed. A file
/// already gone is not an error (removed by hand); the index entry goes all the same.
pub fn prune(dir: &ReleaseDir, ids: &[String]) -> Result<Vec<String>, StateError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut index = Index::load(dir)?;
    let mut removed = Vec::new();
    for r in index.snapshots.iter().filter(|r| ids.contains(&r.id)) {
        let path = dir.path().join(&r.file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    what: "remove snapshot",
                    path,
                    source,
                })
            }
        }
        removed.push(r.id.clone());
    }
    index.snapshots.retain(|r| !removed.contains(&r.id));
    index.save(dir)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    fn at(now: SystemTime, days_ago: u64, seq: u64) -> String {
        let t = now - Duration::from_secs(days_ago * DAY + seq);
        humantime::format_rfc3339_millis(t).to_string()
    }

    fn record(id: usize, service: &str, deploy: usize, taken_at: String) -> Record {
        Record {
            id: format!("{service}-{id}"),
            release: "shop".into(),
            service: service.into(),
            container: format!("shop-{service}"),
            image: "postgres:15".into(),
            format: SnapshotFormat::PostgresCustom,
            deploy: format!("shop-{deploy}"),
            revision: format!("r{deploy}"),
            previous_revision: None,
            file: format!("snapshots/{service}/{id}.dump"),
            size: 1,
            sha256: "0".repeat(64),
            duration_ms: 1,
            taken_at,
        }
    }

    fn keep(last: Option<u32>, days: Option<u32>) -> BTreeMap<String, SnapshotKeep> {
        BTreeMap::from([("db".to_string(), SnapshotKeep { last, days })])
    }

    #[test]
    fn keeps_the_newest_n_or_the_young_and_always_the_protected() {
        let now = SystemTime::now();
        // db-0 is the oldest (10 days), db-4 the newest (today).
        let rs: Vec<Record> = (0..5)
            .map(|i| record(i, "db", i + 1, at(now, 10 - 2 * i as u64, 0)))
            .collect();
        assert_eq!(
            to_prune(&rs, &keep(Some(2), None), &[], now),
            ["db-2", "db-1", "db-0"]
        );
        // Younger than 5 days: db-3 (4 days), db-4 (0 days).
        assert_eq!(
            to_prune(&rs, &keep(None, Some(5)), &[], now),
            ["db-2", "db-1", "db-0"]
        );
        // Either rule keeps: last 1 (db-4) or younger than 7 days (db-2, db-3, db-4).
        assert_eq!(
            to_prune(&rs, &keep(Some(1), Some(7)), &[], now),
            ["db-1", "db-0"]
        );
        // The deploys shop-1 and shop-2 are protected: their snapshots stay.
        let protected = ["shop-1".to_string(), "shop-2".to_string()];
        assert_eq!(
            to_prune(&rs, &keep(Some(1), None), &protected, now),
            ["db-3", "db-2"]
        );
        // No rule, or a service not in `keep`: everything stays.
        assert!(to_prune(&rs, &keep(None, None), &[], now).is_empty());
        assert!(to_prune(&rs, &BTreeMap::new(), &[], now).is_empty());
    }

    proptest! {
        /// Whatever the rules and the history, the protected deploys' snapshots and the
        /// newest `last` of each service survive, and nothing is pruned twice.
        #[test]
        fn never_prunes_the_protected_nor_the_newest_n(
            ages in prop::collection::vec((0u64..30, 0usize..2, 1usize..8), 0..25),
            last in prop::option::of(1u32..5),
            days in prop::option::of(1u32..20),
            protected in prop::collection::vec(1usize..8, 0..3),
        ) {
            let now = SystemTime::now();
            let services = ["db", "cache"];
            let rs: Vec<Record> = ages
                .iter()
                .enumerate()
                .map(|(i, (age, s, deploy))| record(i, services[*s], *deploy, at(now, *age, i as u64)))
                .collect();
            let rules: BTreeMap<String, SnapshotKeep> = services
                .iter()
                .map(|s| (s.to_string(), SnapshotKeep { last, days }))
                .collect();
            let protected: Vec<String> = protected.iter().map(|d| format!("shop-{d}")).collect();
            let pruned = to_prune(&rs, &rules, &protected, now);
            for id in &pruned {
                let r = rs.iter().find(|r| &r.id == id).unwrap();
                prop_assert!(!protected.contains(&r.deploy), "pruned protected {id}");
                if let Some(n) = last {
                    let newer = rs
                        .iter()
                        .filter(|o| o.service == r.service && o.taken_at > r.taken_at)
                        .count();
                    prop_assert!(newer >= n as usize, "pruned {id}, one of the newest {n}");
                }
                if let Some(d) = days {
                    prop_assert!(r.taken_at <= at(now, u64::from(d), 0), "pruned young {id}");
                }
            }
            let mut unique = pruned.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), pruned.len());
        }
    }

    #[test]
    fn prune_removes_files_and_entries_and_tolerates_a_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let now = SystemTime::now();
        for i in 0..3 {
            let r = record(i, "db", i + 1, at(now, 0, i as u64));
            if i != 1 {
                let path = dir.path().join(&r.file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, b"x").unwrap();
            }
            add(&dir, r).unwrap();
        }
        let removed = prune(&dir, &["db-0".to_string(), "db-1".to_string()]).unwrap();
        assert_eq!(removed, ["db-0", "db-1"]);
        let index = Index::load(&dir).unwrap();
        let ids: Vec<&str> = index.snapshots.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["db-2"]);
        assert!(!dir.path().join("snapshots/db/0.dump").exists());
        assert!(dir.path().join("snapshots/db/2.dump").exists());
        assert_eq!(index.taken_by("shop-3").len(), 1);
    }
}
