//! `run --watch`: for a source on this machine's disk, a cycle starts when a ref of the repo
//! moves (a commit, a push into it, a fetch), debounced, instead of waiting for the next poll.
//!
//! Only writes to refs count: the daemon's own fetch opens and reads these very files, and
//! counting those would start a cycle after every cycle.

use std::path::{Path, PathBuf};

use ::notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use ::notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::defaults;
use crate::reconcile::Trigger;
use crate::trigger::Triggers;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("--watch needs a repository on this machine (a path or file:// URL), not {url}; fix: drop --watch and rely on --interval or the webhook")]
    NotLocal { url: String },
    #[error("--watch: {} is not a git repository (no .git directory, and not a bare repo with HEAD and refs/); fix: point --repo at the repository", path.display())]
    NotARepo { path: PathBuf },
    #[error("--watch: cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: ::notify::Error,
    },
}

/// The git directory of a local source URL (`/srv/ops`, `/srv/ops.git`, `file:///srv/ops`).
pub fn git_dir(url: &str) -> Result<PathBuf, WatchError> {
    let path = match url.strip_prefix("file://") {
        Some(p) => p,
        None if url.contains("://") || scp_like(url) => {
            return Err(WatchError::NotLocal {
                url: crate::source::redacted_url(url),
            })
        }
        None => url,
    };
    let path = Path::new(path);
    let dot_git = path.join(".git");
    if dot_git.is_dir() {
        return Ok(dot_git);
    }
    if path.join("HEAD").is_file() && path.join("refs").is_dir() {
        return Ok(path.to_path_buf());
    }
    Err(WatchError::NotARepo {
        path: path.to_path_buf(),
    })
}

/// `git@host:org/repo`: a colon before any slash.
fn scp_like(url: &str) -> bool {
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether an event under `git_dir` is a ref being written (as opposed to read).
fn is_ref_write(git_dir: &Path, kind: &EventKind, path: &Path) -> bool {
    let writes = matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    if !writes {
        return false;
    }
    let Ok(rel) = path.strip_prefix(git_dir) else {
        return false;
    };
    // A ref is written to `<ref>.lock` first and renamed into place: the rename is the change.
    if rel.extension().is_some_and(|e| e == "lock") {
        return false;
    }
    rel == Path::new("HEAD") || rel == Path::new("packed-refs") || rel.starts_with("refs")
}

/// Starts watching; requests a cycle on `triggers` within [`defaults::WATCH_DEBOUNCE`] of
/// the last ref write of a burst. Stops on `cancel`.
pub fn spawn(
    git_dir: PathBuf,
    triggers: Triggers,
    cancel: CancellationToken,
) -> Result<(), WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let dir = git_dir.clone();
    let mut watcher =
        ::notify::recommended_watcher(move |res: ::notify::Result<::notify::Event>| match res {
            Ok(event) => {
                for path in &event.paths {
                    if is_ref_write(&dir, &event.kind, path) {
                        let _ = tx.send(path.clone());
                    }
                }
            }
            Err(e) => warn!(error = %e, "file watch error"),
        })
        .map_err(|source| WatchError::Watch {
            path: git_dir.clone(),
            source,
        })?;
    let watch = |w: &mut RecommendedWatcher, path: &Path, mode| {
        w.watch(path, mode).map_err(|source| WatchError::Watch {
            path: path.to_path_buf(),
            source,
        })
    };
    // HEAD and packed-refs sit at the top; the top is not watched recursively, since objects/
    // and logs/ change on every commit too.
    watch(&mut watcher, &git_dir, RecursiveMode::NonRecursive)?;
    watch(
        &mut watcher,
        &git_dir.join("refs"),
        RecursiveMode::Recursive,
    )?;
    info!(git_dir = %git_dir.display(), "watching the repository's refs");
    tokio::spawn(async move {
        // Owned by the task: dropping it stops the watch.
        let _watcher = watcher;
        loop {
            let first = tokio::select! {
                p = rx.recv() => match p { Some(p) => p, None => return },
                () = cancel.cancelled() => return,
            };
            let mut count = 1u32;
            while let Ok(Some(_)) = tokio::time::timeout(defaults::WATCH_DEBOUNCE, rx.recv()).await
            {
                count += 1;
            }
            let rel = first
                .strip_prefix(&git_dir)
                .unwrap_or(&first)
                .display()
                .to_string();
            debug!(path = %rel, events = count, "ref written");
            triggers.request(Trigger::Watch, format!("{rel} written"));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::notify::event::{CreateKind, RenameMode};

    #[test]
    fn reads_and_lock_files_do_not_count() {
        let g = Path::new("/r/.git");
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let close_read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let created = EventKind::Create(CreateKind::File);
        assert!(!is_ref_write(
            g,
            &open,
            Path::new("/r/.git/refs/heads/main")
        ));
        assert!(!is_ref_write(
            g,
            &close_read,
            Path::new("/r/.git/packed-refs")
        ));
        assert!(!is_ref_write(
            g,
            &created,
            Path::new("/r/.git/refs/heads/main.lock")
        ));
        assert!(!is_ref_write(g, &created, Path::new("/r/.git/index")));
        assert!(is_ref_write(
            g,
            &renamed,
            Path::new("/r/.git/refs/heads/main")
        ));
        assert!(is_ref_write(g, &renamed, Path::new("/r/.git/packed-refs")));
        assert!(is_ref_write(g, &created, Path::new("/r/.git/HEAD")));
    }

    #[test]
    fn only_local_sources() {
        assert!(matches!(
            git_dir("https://git.example/ops.git"),
            Err(WatchError::NotLocal { .. })
        ));
        assert!(matches!(
            git_dir("git@host:ops.git"),
            Err(WatchError::NotLocal { .. })
        ));
        assert!(matches!(
            git_dir("/nonexistent/repo"),
            Err(WatchError::NotARepo { .. })
        ));
    }
}
