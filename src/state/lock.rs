//! The deploy lock: one deploy at a time per host and release, whoever starts it (the daemon,
//! a person, two CIs).
//!
//! Two files: `lock`, which is `flock`ed for as long as a deploy runs (the kernel releases it
//! when the process dies, however it dies), and `lock.json`, the holder record (who, pid, host,
//! revision, since) that errors and `lock status` show. The flock is the truth; the record is
//! information. A record whose flock is free belongs to a process that died without cleaning
//! up (SIGKILL, power loss): the next deploy takes it over and says so.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{read_json, write_json, ReleaseDir, StateError};
use crate::defaults;

pub const LOCK_FILE: &str = "lock";
pub const RECORD: &str = "lock.json";

/// Who holds (or held) the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub release: String,
    pub actor: String,
    pub pid: u32,
    pub host: String,
    /// `poll`, `webhook`, `watch`, `cli`.
    pub trigger: String,
    /// `apply`, `rollback`, `run`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} pid {} on {}, {}",
            self.actor, self.action, self.pid, self.host, self.trigger
        )?;
        if let Some(rev) = &self.revision {
            write!(f, ", revision {}", short(rev))?;
        }
        write!(f, ", since {})", self.since)
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("release {release}: another deploy holds the lock: {}{}; fix: wait for it (or pass --lock-wait 5m), see `reconciler lock status`, or stop it with `reconciler lock release --force`",
        holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "holder unknown (no lock.json yet)".into()),
        waited.map(|w| format!(" (waited {})", humantime::format_duration(w))).unwrap_or_default())]
    Held {
        release: String,
        holder: Option<Holder>,
        waited: Option<Duration>,
    },
    #[error("release {release}: cancelled while waiting for the deploy lock")]
    Cancelled { release: String },
    #[error("release {release}: the lock is still held by {holder} {waited:?} after SIGTERM; fix: check the process (it may be stuck in a step), then `kill -9 {}` (the lock is released when it exits)", holder.pid)]
    StillHeld {
        release: String,
        holder: Holder,
        waited: Duration,
    },
    #[error("release {release}: the lock is held by a process this host cannot signal ({}); fix: stop it where it runs", holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "holder unknown".into()))]
    NotSignalable {
        release: String,
        holder: Option<Holder>,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// A held deploy lock; dropping it removes the record, then closes the flocked file (which
/// releases the lock). Dropped on every path out of a deploy, a failure or a cancel included.
#[derive(Debug)]
pub struct DeployLock {
    // Kept open: closing it releases the flock.
    _file: File,
    record: PathBuf,
    /// The record of a dead holder this lock took over, if any.
    pub taken_over: Option<Holder>,
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.record) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.record.display(), error = %e, "cannot remove the lock record");
            }
        }
    }
}

fn open(dir: &ReleaseDir) -> Result<File, StateError> {
    dir.ensure()?;
    let path = dir.file(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::Io {
            what: "open",
            path,
            source,
        })
}

/// `Ok(true)` when this file now holds the flock.
fn try_flock(file: &File, dir: &ReleaseDir) -> Result<bool, StateError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(source)) => Err(StateError::Io {
            what: "lock",
            path: dir.file(LOCK_FILE),
            source,
        }),
    }
}

fn read_record(dir: &ReleaseDir) -> Option<Holder> {
    // A torn record (a crash mid-write cannot make one, but a hand edit can) is no holder.
    read_json(&dir.file(RECORD)).ok().flatten()
}

/// Takes the lock for `holder`, waiting up to `wait` (polling, cancellable) when another
/// deploy holds it.
pub async fn acquire(
    dir: &ReleaseDir,
    holder: Holder,
    wait: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<DeployLock, LockError> {
    let file = open(dir)?;
    let started = Instant::now();
    // Without --lock-wait, still retry for a moment: `lock status` takes the flock briefly to
    // test it, and must not make a deploy fail.
    let wait = wait.unwrap_or(Duration::from_millis(300));
    loop {
        if try_flock(&file, dir)? {
            break;
        }
        if started.elapsed() >= wait {
            return Err(LockError::Held {
                release: holder.release.clone(),
                holder: read_record(dir),
                waited: (wait > Duration::from_secs(1)).then(|| started.elapsed()),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(defaults::LOCK_POLL) => {}
            () = cancel.cancelled() => return Err(LockError::Cancelled { release: holder.release.clone() }),
        }
    }
    // We hold the flock: any record left is from a holder that died.
    let taken_over = read_record(dir);
    if let Some(old) = &taken_over {
        tracing::warn!(previous = %old, "took over the deploy lock of a process that is gone");
    }
    let record = dir.file(RECORD);
    // The lock is released with `file` if this write fails.
    write_json(&record, &holder)?;
    Ok(DeployLock {
        _file: file,
        record,
        taken_over,
    })
}

/// What `lock status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub release: String,
    /// A live process holds the flock.
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// A record is left but nobody holds the lock: the next deploy takes it over.
    pub stale: bool,
}

pub fn status(dir: &ReleaseDir, release: &str) -> Result<Status, StateError> {
    let holder = read_record(dir);
    if !dir.file(LOCK_FILE).exists() {
        return Ok(Status {
            release: release.to_string(),
            held: false,
            stale: holder.is_some(),
            holder,
        });
    }
    let file = open(dir)?;
    let free = try_flock(&file, dir)?;
    // Let go at once (closing releases it too; unlock says it outright).
    if free {
        let _ = file.unlock();
    }
    drop(file);
    // Read again: a deploy may have started or ended meanwhile; its record is the better one.
    let holder = read_record(dir).or(holder);
    Ok(Status {
        release: release.to_string(),
        held: !free,
        stale: free && holder.is_some(),
        holder,
    })
}

/// What `lock release --force` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// Nobody held it and no record was left.
    NotHeld,
    /// The holder was gone; its record was removed.
    StaleRemoved(Holder),
    /// The holder got SIGTERM, rolled back and let go after this long.
    Released { holder: Holder, after: Duration },
}

/// Breaks the lock: a stale record is removed; a live holder is asked to stop with SIGTERM (it
/// rolls back its deploy and releases the lock), and this waits up to `wait` for that.
pub async fn force_release(
    dir: &ReleaseDir,
    release: &str,
    wait: Duration,
) -> Result<Forced, LockError> {
    let st = status(dir, release)?;
    if !st.held {
        return match st.holder {
            None => Ok(Forced::NotHeld),
            Some(old) => {
                remove_stale_record(dir)?;
                Ok(Forced::StaleRemoved(old))
            }
        };
    }
    let Some(holder) = st.holder.filter(|h| h.host == super::actor::hostname()) else {
        return Err(LockError::NotSignalable {
            release: release.to_string(),
            holder: read_record(dir),
        });
    };
    let Ok(pid) = libc::pid_t::try_from(holder.pid) else {
        return Err(LockError::NotSignalable {
            release: release.to_string(),
            holder: Some(holder),
        });
    };
    // SAFETY: kill has no memory preconditions; the pid comes from the holder record of a
    // process that holds the flock right now, so it is alive and is that holder.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc != 0 {
        return Err(LockError::NotSignalable {
            release: release.to_string(),
            holder: Some(holder),
        });
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(defaults::LOCK_POLL).await;
        if !status(dir, release)?.held {
            return Ok(Forced::Released {
                holder,
                after: started.elapsed(),
            });
        }
        if started.elapsed() >= wait {
            return Err(LockError::StillHeld {
                release: release.to_string(),
                holder,
                waited: started.elapsed(),
            });
        }
    }
}

/// Removes a record only while holding the flock, so a deploy starting meanwhile keeps its own.
fn remove_stale_record(dir: &ReleaseDir) -> Result<(), StateError> {
    let file = open(dir)?;
    if try_flock(&file, dir)? {
        let path = dir.file(RECORD);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    what: "remove",
                    path,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(actor: &str) -> Holder {
        Holder {
            release: "shop".into(),
            actor: actor.into(),
            pid: std::process::id(),
            host: super::super::actor::hostname(),
            trigger: "cli".into(),
            action: "apply".into(),
            revision: Some("abc".into()),
            since: super::super::now(),
        }
    }

    #[tokio::test]
    async fn second_holder_fails_fast_naming_the_first_then_gets_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let cancel = CancellationToken::new();
        let first = acquire(&dir, holder("ann"), None, &cancel).await.unwrap();
        let st = status(&dir, "shop").unwrap();
        assert!(st.held && !st.stale);
        let err = acquire(&dir, holder("bob"), None, &cancel)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ann") && msg.contains("--lock-wait"), "{msg}");
        drop(first);
        assert!(!dir.file(RECORD).exists());
        let second = acquire(&dir, holder("bob"), None, &cancel).await.unwrap();
        assert_eq!(second.taken_over, None);
    }

    #[tokio::test]
    async fn a_record_without_a_flock_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        dir.ensure().unwrap();
        write_json(&dir.file(RECORD), &holder("dead")).unwrap();
        let st = status(&dir, "shop").unwrap();
        assert!(!st.held && st.stale);
        let lock = acquire(&dir, holder("bob"), None, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            lock.taken_over.as_ref().map(|h| h.actor.as_str()),
            Some("dead")
        );
    }
}
