//! Crash recovery: at the start of a deploy (before observing and planning, under the deploy
//! lock the caller holds), a journal left by a deploy that never finished is resolved.
//!
//! - Before the commit point (no final step started, or apply was already rolling back): the
//!   completed steps and the one in flight are undone in reverse, with the executor's own
//!   mapping (`apply::undo_of`). The step in flight may or may not have happened, so each undo
//!   is safe either way: an object that is not there counts as undone, the proxy's previous
//!   files (recorded before the switch began) are simply written again.
//! - Past the commit point: every gate had passed, so the remaining final steps (removals of
//!   the old colors, renamed-aside containers and networks) are run.
//! - A torn or corrupt journal is moved aside (`journal.json.corrupt-<time>`) and reported;
//!   the planner then repairs from the container labels, as it does for any leftover.
//!
//! The journal is removed afterwards, whatever the undo steps said: their failures are in the
//! [`RecoveryReport`], and the plan that follows starts from what the engine shows.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apply::{self, StepRef, Undo};
use crate::engine::{Engine, EngineError};
use crate::state::journal::{self, JournalFile, JournalStep, FORMAT};
use crate::state::{ReleaseDir, StateError};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("release `{release}`: crash recovery cannot read or clear its journal: {source}")]
    State {
        release: String,
        #[source]
        source: StateError,
    },

    #[error("release `{release}`: {} says reconciler process {pid} is deploying it right now; nothing was changed (fix: wait for it to finish, or stop it and run again)", journal.display())]
    InProgress {
        release: String,
        journal: PathBuf,
        pid: u32,
    },
}

/// What was found and what was done: for logs, and for history and audit once recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoveryReport {
    pub release: String,
    pub journal: PathBuf,
    /// The interrupted deploy (absent when the journal could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The last step with a record: where the process stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_at: Option<InterruptedAt>,
    pub outcome: RecoveryOutcome,
    /// What recovery did to the host, in order.
    pub actions: Vec<String>,
    /// Undo or finishing steps that failed; the plan that follows repairs from the labels.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterruptedAt {
    /// 0-based, as in the journal and `diff --output json`.
    pub index: usize,
    pub action: String,
    pub target: String,
    /// Whether its `done` record was written.
    pub done: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// No step had started: nothing on the host had changed.
    NothingStarted,
    /// Crash before the commit point: the release was undone; the host runs what it ran before.
    RolledBack,
    /// Crash after the commit point: the final steps were run; the host runs the new release.
    Finished,
    /// The journal could not be used; it was moved aside.
    CorruptMovedAside { moved_to: PathBuf, reason: String },
}

impl RecoveryReport {
    /// One line for a person.
    pub fn summary(&self) -> String {
        let what = match &self.outcome {
            RecoveryOutcome::NothingStarted => "no step had started; nothing to undo".to_string(),
            RecoveryOutcome::RolledBack => format!(
                "rolled back to the release that ran before ({} action(s))",
                self.actions.len()
            ),
            RecoveryOutcome::Finished => format!(
                "finished the release past its commit point ({} action(s))",
                self.actions.len()
            ),
            RecoveryOutcome::CorruptMovedAside { moved_to, reason } => format!(
                "the journal is not usable ({reason}); moved aside to {}, planning from the container labels",
                moved_to.display()
            ),
        };
        let revision = self
            .revision
            .as_deref()
            .map(|r| format!(" of revision {r}"))
            .unwrap_or_default();
        let at = self
            .interrupted_at
            .as_ref()
            .map(|s| {
                format!(
                    " at step {} ({} {}, {})",
                    s.index + 1,
                    s.action,
                    s.target,
                    if s.done { "done" } else { "in flight" }
                )
            })
            .unwrap_or_default();
        let errors = if self.errors.is_empty() {
            String::new()
        } else {
            format!(
                "; {} step(s) failed: {}",
                self.errors.len(),
                self.errors.join("; ")
            )
        };
        format!(
            "release {}: the deploy{revision} was interrupted{at}: {what}{errors}",
            self.release
        )
    }
}

/// Resolves the journal of `release` under `state_dir`, if there is one. `Ok(None)`: no
/// interrupted deploy. Call it at the start of every deploy, before observing the engine.
pub async fn recover(
    engine: &Engine,
    state_dir: &Path,
    release: &str,
) -> Result<Option<RecoveryReport>, RecoveryError> {
    let dir = ReleaseDir::new(state_dir, release);
    let state_err = |source| RecoveryError::State {
        release: release.to_string(),
        source,
    };
    for stale in journal::remove_stale_temp_files(&dir) {
        tracing::info!(path = %stale.display(), "removed a journal temp file a crash left");
    }
    let path = dir.file(journal::JOURNAL_FILE);
    let file = match journal::read(&dir) {
        Ok(None) => return Ok(None),
        Ok(Some(file)) => match check(&file, release) {
            Ok(()) => file,
            Err(reason) => return corrupt(&dir, release, path, reason).map_err(state_err),
        },
        Err(StateError::Corrupt { reason, .. }) => {
            return corrupt(&dir, release, path, reason).map_err(state_err)
        }
        Err(e) => return Err(state_err(e)),
    };
    if file.pid != std::process::id() && process_is_reconciler(file.pid) {
        return Err(RecoveryError::InProgress {
            release: release.to_string(),
            journal: path,
            pid: file.pid,
        });
    }

    let mut report = RecoveryReport {
        release: release.to_string(),
        journal: path.clone(),
        revision: Some(file.revision.clone()),
        started_at: Some(file.started_at.clone()),
        pid: Some(file.pid),
        interrupted_at: file
            .steps
            .iter()
            .rev()
            .find(|s| s.started_at.is_some())
            .map(|s| InterruptedAt {
                index: s.index,
                action: s.action.clone(),
                target: s.target.clone(),
                done: s.done_at.is_some(),
            }),
        outcome: RecoveryOutcome::NothingStarted,
        actions: Vec::new(),
        errors: Vec::new(),
    };
    tracing::warn!(
        release,
        revision = %file.revision,
        pid = file.pid,
        started_at = %file.started_at,
        "found the journal of a deploy that did not finish; recovering"
    );

    match resolution(&file) {
        Resolution::NothingStarted => {}
        Resolution::Finish(steps) => {
            report.outcome = RecoveryOutcome::Finished;
            finish(engine, &steps, &mut report).await;
        }
        Resolution::Undo { stack, errors } => {
            report.outcome = RecoveryOutcome::RolledBack;
            report.errors.extend(errors);
            undo(engine, stack, &mut report).await;
        }
    }

    journal::remove(&path).map_err(state_err)?;
    if report.errors.is_empty() {
        tracing::warn!(release, summary = %report.summary(), "recovered");
    } else {
        tracing::error!(release, summary = %report.summary(), "recovered with errors");
    }
    Ok(Some(report))
}

/// A sentence about a deploy of `release` that is in progress or was interrupted, if its
/// journal is there (for `diff`, which changes nothing): what the next deploy resolves first.
pub fn pending(state_dir: &Path, release: &str) -> Option<String> {
    let dir = ReleaseDir::new(state_dir, release);
    let path = dir.file(journal::JOURNAL_FILE);
    match journal::read(&dir) {
        Ok(None) => None,
        Ok(Some(file)) => {
            let at = file
                .steps
                .iter()
                .rev()
                .find(|s| s.started_at.is_some())
                .map(|s| format!(" at step {} ({} {})", s.index + 1, s.action, s.target))
                .unwrap_or_default();
            Some(format!(
                "a deploy of revision {} by pid {} is in progress or was interrupted{at} ({}); the next apply resolves it before planning, so the plan below may change",
                file.revision,
                file.pid,
                path.display()
            ))
        }
        Err(e) => Some(format!(
            "{e}; the next apply moves it aside and plans from the container labels"
        )),
    }
}

/// A journal that parses but cannot be trusted is as bad as a torn one.
fn check(file: &JournalFile, release: &str) -> Result<(), String> {
    if file.format != FORMAT {
        return Err(format!(
            "format {} (this reconciler reads {FORMAT})",
            file.format
        ));
    }
    if file.release != release {
        return Err(format!(
            "it names release `{}`, not `{release}`",
            file.release
        ));
    }
    if let Some(bad) = file.steps.iter().enumerate().find(|(i, s)| s.index != *i) {
        return Err(format!(
            "step {} is recorded as index {}",
            bad.0, bad.1.index
        ));
    }
    if file.commit_point.is_some_and(|c| c >= file.steps.len()) {
        return Err("the commit point is outside the plan".to_string());
    }
    // Steps run in order: a started step after one that never started is impossible.
    let started: Vec<bool> = file.steps.iter().map(|s| s.started_at.is_some()).collect();
    if started.windows(2).any(|w| !w[0] && w[1]) {
        return Err("a step started before the one ahead of it".to_string());
    }
    Ok(())
}

fn corrupt(
    dir: &ReleaseDir,
    release: &str,
    path: PathBuf,
    reason: String,
) -> Result<Option<RecoveryReport>, StateError> {
    let moved_to = journal::move_aside(dir)?;
    tracing::error!(
        release,
        journal = %path.display(),
        moved_to = %moved_to.display(),
        %reason,
        "the deploy journal is torn or corrupt; moved aside, planning from the container labels"
    );
    Ok(Some(RecoveryReport {
        release: release.to_string(),
        journal: path,
        revision: None,
        started_at: None,
        pid: None,
        interrupted_at: None,
        outcome: RecoveryOutcome::CorruptMovedAside { moved_to, reason },
        actions: Vec::new(),
        errors: Vec::new(),
    }))
}

/// What recovery must do with a journal: decided from the journal alone (pure).
#[derive(Debug)]
pub(crate) enum Resolution<'a> {
    NothingStarted,
    /// Past the commit point: the final steps not done, in order.
    Finish(Vec<&'a JournalStep>),
    /// Before it: the undo of every started step, in the order they ran (run in reverse);
    /// `errors`: steps that cannot be undone from what the journal holds.
    Undo {
        stack: Vec<Undo>,
        errors: Vec<String>,
    },
}

pub(crate) fn resolution(file: &JournalFile) -> Resolution<'_> {
    let started = |s: &&JournalStep| s.started_at.is_some();
    if !file.steps.iter().any(|s| s.started_at.is_some()) {
        return Resolution::NothingStarted;
    }
    // Apply rolls back only before the commit point, so `rolling_back` means: undo.
    if let Some(c) = file.commit_point.filter(|_| !file.rolling_back) {
        if file.steps.iter().skip(c).any(|s| s.started_at.is_some()) {
            return Resolution::Finish(
                file.steps
                    .iter()
                    .skip(c)
                    .filter(|s| s.done_at.is_none())
                    .collect(),
            );
        }
    }
    let mut stack = Vec::new();
    let mut errors = Vec::new();
    for step in file.steps.iter().filter(started) {
        match step.effect_for_undo() {
            Ok(effect) => stack.extend(apply::undo_of(&step.step, effect)),
            Err(e) => errors.push(format!(
                "step {} ({} {}): cannot undo: {e}",
                step.index + 1,
                step.action,
                step.target
            )),
        }
    }
    Resolution::Undo { stack, errors }
}

/// Runs the undo steps in reverse, each tolerating that its step never happened.
async fn undo(engine: &Engine, stack: Vec<Undo>, report: &mut RecoveryReport) {
    for u in stack.into_iter().rev() {
        match u.run_after_crash(engine).await {
            Ok(true) => {
                tracing::info!(undo = %u, "recovery: undone");
                report.actions.push(format!("undone: {u}"));
            }
            Ok(false) => {
                tracing::info!(undo = %u, "recovery: nothing to undo (the step had not happened)");
                report.actions.push(format!("already undone: {u}"));
            }
            Err(e) => {
                tracing::warn!(undo = %u, error = %e, "recovery: undo failed");
                report.errors.push(format!("{u}: {e}"));
            }
        }
    }
}

/// Runs the final steps that had not finished. Each is safe to run twice.
async fn finish(engine: &Engine, steps: &[&JournalStep], report: &mut RecoveryReport) {
    for step in steps {
        let result = match &step.step {
            StepRef::RemoveContainer { name } => remove_container(engine, name).await,
            StepRef::RemoveNetwork { name } => gone_is_fine(engine.remove_network(name).await),
            // Only removals come after the commit point.
            _ => Ok(false),
        };
        let what = format!("step {} ({} {})", step.index + 1, step.action, step.target);
        match result {
            Ok(true) => {
                tracing::info!(step = %what, "recovery: finished");
                report.actions.push(format!("finished: {what}"));
            }
            Ok(false) => report.actions.push(format!("already done: {what}")),
            Err(e) => {
                tracing::warn!(step = %what, error = %e, "recovery: final step failed");
                report.errors.push(format!("{what}: {e}"));
            }
        }
    }
}

async fn remove_container(engine: &Engine, name: &str) -> Result<bool, EngineError> {
    // As apply does: one restarted behind our back gets its grace period.
    if !gone_is_fine(engine.stop_container_gracefully(name).await.map(drop))? {
        return Ok(false);
    }
    gone_is_fine(engine.remove_container(name, false).await)
}

/// `Ok(true)`: done now; `Ok(false)`: the object was already gone.
fn gone_is_fine(result: Result<(), EngineError>) -> Result<bool, EngineError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `pid` is a live reconciler process (Linux: /proc). Guards against undoing a deploy
/// that is still running when no deploy lock is held; a pid reused by another program does
/// not count.
fn process_is_reconciler(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie (killed, not yet reaped) has an empty command line: it deploys nothing.
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let name = argv0.rsplit('/').next().unwrap_or_default();
    name.starts_with("reconciler")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::RecordedEffect;

    fn file() -> JournalFile {
        let step = |index: usize, started: bool| JournalStep {
            index,
            action: "create".to_string(),
            service: Some("web".to_string()),
            target: format!("shop-web-{index}"),
            step: StepRef::CreateContainer {
                name: format!("shop-web-{index}"),
            },
            started_at: started.then(|| "2026-12-01T12:00:00.000Z".to_string()),
            done_at: None,
            effect: None,
            previous_files: None,
        };
        JournalFile {
            format: FORMAT,
            release: "shop".to_string(),
            revision: "abc".to_string(),
            started_at: "2026-12-01T12:00:00.000Z".to_string(),
            pid: 1,
            commit_point: Some(1),
            rolling_back: false,
            steps: vec![step(0, true), step(1, false)],
        }
    }

    #[test]
    fn a_journal_that_parses_but_cannot_be_trusted_is_refused() {
        assert_eq!(check(&file(), "shop"), Ok(()));
        assert!(check(&file(), "other").unwrap_err().contains("`shop`"));
        let mut f = file();
        f.format = 2;
        assert!(check(&f, "shop").unwrap_err().contains("format 2"));
        let mut f = file();
        f.commit_point = Some(2);
        assert!(check(&f, "shop").is_err());
        let mut f = file();
        f.steps[1].index = 5;
        assert!(check(&f, "shop").is_err());
        let mut f = file();
        f.steps[0].started_at = None;
        f.steps[1].started_at = Some("2026-12-01T12:00:01.000Z".to_string());
        assert!(check(&f, "shop").unwrap_err().contains("started before"));
    }

    /// A recreate release: stop, rename aside, create, start, gate, remove the old one.
    fn recreate(started: usize, done: usize) -> JournalFile {
        let refs = [
            (
                "stop",
                StepRef::StopContainer {
                    name: "shop-web".to_string(),
                },
            ),
            (
                "rename",
                StepRef::RenameContainer {
                    from: "shop-web".to_string(),
                    to: "shop-web-old".to_string(),
                },
            ),
            (
                "create",
                StepRef::CreateContainer {
                    name: "shop-web".to_string(),
                },
            ),
            (
                "start",
                StepRef::StartContainer {
                    name: "shop-web".to_string(),
                },
            ),
            ("gate", StepRef::NothingToUndo),
            (
                "remove",
                StepRef::RemoveContainer {
                    name: "shop-web-old".to_string(),
                },
            ),
        ];
        let mut f = file();
        f.commit_point = Some(5);
        f.steps = refs
            .into_iter()
            .enumerate()
            .map(|(index, (action, step))| JournalStep {
                index,
                action: action.to_string(),
                service: Some("web".to_string()),
                target: String::new(),
                effect: (index < done).then_some(match step {
                    StepRef::StopContainer { .. } => {
                        RecordedEffect::WasRunning { was_running: true }
                    }
                    _ => RecordedEffect::Done,
                }),
                step,
                started_at: (index < started).then(|| "t".to_string()),
                done_at: (index < done).then(|| "t".to_string()),
                previous_files: None,
            })
            .collect();
        f
    }

    fn undo_lines(f: &JournalFile) -> Vec<String> {
        match resolution(f) {
            Resolution::Undo { stack, errors } => {
                assert!(errors.is_empty(), "{errors:?}");
                stack.iter().rev().map(|u| u.to_string()).collect()
            }
            other => panic!("expected an undo, got {other:?}"),
        }
    }

    #[test]
    fn before_the_commit_point_the_done_steps_and_the_one_in_flight_are_undone_in_reverse() {
        assert!(matches!(
            resolution(&recreate(0, 0)),
            Resolution::NothingStarted
        ));
        // Killed while creating the new container: it may exist; the old one goes back.
        assert_eq!(
            undo_lines(&recreate(3, 2)),
            [
                "remove container `shop-web`",
                "rename container `shop-web-old` back to `shop-web`",
                "start container `shop-web`",
            ]
        );
        // Killed while stopping: start it again (a no-op if the stop never happened).
        assert_eq!(undo_lines(&recreate(1, 0)), ["start container `shop-web`"]);
        // Apply was rolling back when it died: everything started is undone again.
        let mut f = recreate(5, 5);
        f.rolling_back = true;
        assert_eq!(undo_lines(&f).len(), 4);
    }

    #[test]
    fn past_the_commit_point_the_final_steps_not_done_are_finished() {
        // The removal ran, or not, but its `done` was never written: run it (idempotently).
        match resolution(&recreate(6, 5)) {
            Resolution::Finish(steps) => {
                assert_eq!(steps.len(), 1);
                assert_eq!(steps[0].action, "remove");
            }
            other => panic!("expected finish, got {other:?}"),
        }
        // Every step done, only the journal's removal missing: nothing left to run.
        assert!(matches!(resolution(&recreate(6, 6)), Resolution::Finish(s) if s.is_empty()));
    }

    #[test]
    fn a_live_reconciler_process_counts_and_a_dead_pid_does_not() {
        // This test binary is `reconciler-<hash>`: a live reconciler process.
        if cfg!(target_os = "linux") {
            assert!(process_is_reconciler(std::process::id()));
        }
        // Pids are below 2^22 on Linux: no such process.
        assert!(!process_is_reconciler(u32::MAX - 1));
    }
}
