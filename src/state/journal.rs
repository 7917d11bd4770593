//! `journal.json`: the deploy in progress, step by step, so that a crash can be resolved at the
//! next start (`crate::recovery`).
//!
//! `apply` writes it through [`Journal`]: the whole plan's steps when the deploy begins (names
//! only, see [`StepRef`]: never a container config, so never an env value or a secret), then a
//! `started` record before each step runs and a `done` record after it (with what undoing it
//! needs: whether a stopped container was running, whether a volume was created, the proxy's
//! previous files). A switch records the proxy files it replaces in its `started` record, so a
//! crash in the middle of the switch can still put them back. Each record rewrites the file
//! atomically ([`write_json`]); the caller removes it ([`Journal::finish`]) once the deploy is
//! recorded as finished.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{read_json, write_json, ReleaseDir, StateError};
use crate::apply::{Effect, StepRef};
use crate::plan::Plan;
use crate::proxy::PreviousFile;

/// The journal's file name in the release's state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// Bumped when the layout changes incompatibly; recovery treats another value as corrupt.
pub const FORMAT: u32 = 1;

/// The content of `journal.json` (`schemas/journal.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFile {
    pub format: u32,
    pub release: String,
    pub revision: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// The process that ran the deploy.
    pub pid: u32,
    /// The index of the first final (non-undoable) step; once it has started, recovery
    /// finishes the release instead of undoing it. `None`: the plan has no final step.
    pub commit_point: Option<usize>,
    /// Apply had begun undoing the release (a step failed or it was cancelled).
    #[serde(default)]
    pub rolling_back: bool,
    pub steps: Vec<JournalStep>,
}

/// One step of the plan and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStep {
    pub index: usize,
    /// `Action::kind` (`create`, `switch`, `remove`, ...).
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The engine object acted on, as in `diff --steps`.
    pub target: String,
    /// What undoing or finishing it acts on.
    pub step: StepRef,
    /// Written before the step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Written after it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// What it did, as far as undoing needs to know (with `done_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<RecordedEffect>,
    /// A switch: the proxy's files before it (`content: null`: the file did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_files: Option<Vec<SavedFile>>,
}

/// [`Effect`] as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedEffect {
    Done,
    WasRunning {
        was_running: bool,
    },
    VolumeCreated {
        created: bool,
    },
    /// The files are in the step's `previous_files`.
    ProxyFilesReplaced,
    /// A service's config files; they are in the step's `previous_files`.
    ConfigFilesReplaced,
}

/// A proxy file's previous content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    pub path: String,
    pub content: Option<FileContent>,
}

/// Text as itself (nginx config is text, and a person may read the journal); anything else
/// as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileContent {
    Text(String),
    Base64(String),
}

impl SavedFile {
    fn from_previous(p: &PreviousFile) -> SavedFile {
        let content = p
            .content
            .as_ref()
            .map(|bytes| match std::str::from_utf8(bytes) {
                Ok(text) => FileContent::Text(text.to_string()),
                Err(_) => {
                    FileContent::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            });
        SavedFile {
            path: p.path.clone(),
            content,
        }
    }

    /// Back to what `proxy::restore` takes; `Err` for base64 that does not decode.
    pub fn to_previous(&self) -> Result<PreviousFile, String> {
        let content = match &self.content {
            None => None,
            Some(FileContent::Text(t)) => Some(t.clone().into_bytes()),
            Some(FileContent::Base64(b)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("previous content of `{}`: {e}", self.path))?,
            ),
        };
        Ok(PreviousFile {
            path: self.path.clone(),
            content,
        })
    }
}

impl JournalFile {
    /// The plan's steps, none started yet.
    pub(crate) fn for_plan(plan: &Plan, commit_point: Option<usize>) -> JournalFile {
        JournalFile {
            format: FORMAT,
            release: plan.release.clone(),
            revision: plan.revision.clone(),
            started_at: now(),
            pid: std::process::id(),
            commit_point,
            rolling_back: false,
            steps: plan
                .steps
                .iter()
                .enumerate()
                .map(|(index, s)| JournalStep {
                    index,
                    action: s.action.kind().to_string(),
                    service: s.action.service().map(str::to_string),
                    target: s.action.target(),
                    step: StepRef::of(&s.action),
                    started_at: None,
                    done_at: None,
                    effect: None,
                    previous_files: None,
                })
                .collect(),
        }
    }
}

impl JournalStep {
    /// The `started` record; `previous`: the proxy files a switch is about to replace.
    pub(crate) fn mark_started(&mut self, previous: Option<&[PreviousFile]>) {
        self.started_at = Some(now());
        if let Some(previous) = previous {
            self.previous_files = Some(previous.iter().map(SavedFile::from_previous).collect());
        }
    }

    /// The `done` record.
    pub(crate) fn mark_done(&mut self, effect: &Effect) {
        self.done_at = Some(now());
        self.effect = Some(match effect {
            Effect::Done => RecordedEffect::Done,
            Effect::WasRunning(was_running) => RecordedEffect::WasRunning {
                was_running: *was_running,
            },
            Effect::VolumeCreated(created) => RecordedEffect::VolumeCreated { created: *created },
            Effect::ProxyFilesReplaced(previous) => {
                // What install actually replaced: the same files as in `started`, unless
                // someone changed them in between.
                self.previous_files = Some(previous.iter().map(SavedFile::from_previous).collect());
                RecordedEffect::ProxyFilesReplaced
            }
            Effect::ConfigFilesReplaced(previous) => {
                self.previous_files = Some(previous.iter().map(SavedFile::from_previous).collect());
                RecordedEffect::ConfigFilesReplaced
            }
        });
    }

    /// The effect to undo with: the recorded one for a done step; for a step in flight (it may
    /// or may not have happened) the one whose undo is safe either way.
    pub(crate) fn effect_for_undo(&self) -> Result<Effect, String> {
        let previous = || -> Result<Vec<PreviousFile>, String> {
            self.previous_files
                .as_deref()
                .ok_or_else(|| {
                    format!(
                        "step {} ({}) has no record of the previous proxy files",
                        self.index + 1,
                        self.action
                    )
                })?
                .iter()
                .map(SavedFile::to_previous)
                .collect()
        };
        match (&self.effect, &self.step) {
            (Some(RecordedEffect::Done), _) => Ok(Effect::Done),
            (Some(RecordedEffect::WasRunning { was_running }), _) => {
                Ok(Effect::WasRunning(*was_running))
            }
            (Some(RecordedEffect::VolumeCreated { created }), _) => {
                Ok(Effect::VolumeCreated(*created))
            }
            (Some(RecordedEffect::ProxyFilesReplaced), _) => {
                Ok(Effect::ProxyFilesReplaced(previous()?))
            }
            (Some(RecordedEffect::ConfigFilesReplaced), _) => {
                Ok(Effect::ConfigFilesReplaced(previous()?))
            }
            // In flight. The planner stops only running containers: start it again (a no-op
            // if the stop never happened).
            (None, StepRef::StopContainer { .. }) => Ok(Effect::WasRunning(true)),
            // A volume this step may have created holds no data yet, but one it did not create
            // may: keep it either way (the next plan sees it and does not create it again).
            (None, StepRef::CreateVolume { .. }) => Ok(Effect::VolumeCreated(false)),
            // Writing the previous files again is harmless if the switch never happened.
            (None, StepRef::ConfigureProxy { .. }) => Ok(Effect::ProxyFilesReplaced(previous()?)),
            (None, StepRef::PushConfigs { .. }) => Ok(Effect::ConfigFilesReplaced(previous()?)),
            (None, _) => Ok(Effect::Done),
        }
    }
}

/// The journal of one release, as apply writes it. Cheap to create: nothing is written until
/// [`Journal::begin`].
#[derive(Debug)]
pub struct Journal {
    dir: ReleaseDir,
    path: PathBuf,
    current: Mutex<Option<JournalFile>>,
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Journal {
    pub fn new(dir: ReleaseDir) -> Journal {
        let path = dir.file(JOURNAL_FILE);
        Journal {
            dir,
            path,
            current: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Option<JournalFile>> {
        // A panic while holding it cannot leave a half-updated file (the write is atomic).
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the plan's steps, none started yet.
    pub(crate) fn begin(&self, plan: &Plan, commit_point: Option<usize>) -> Result<(), StateError> {
        self.dir.ensure()?;
        let file = JournalFile::for_plan(plan, commit_point);
        write_json(&self.path, &file)?;
        *self.lock() = Some(file);
        Ok(())
    }

    fn update(&self, change: impl FnOnce(&mut JournalFile) -> bool) -> Result<(), StateError> {
        let mut guard = self.lock();
        let Some(file) = guard.as_mut() else {
            return Err(self.misuse("a step was recorded before the deploy began"));
        };
        if !change(file) {
            return Err(self.misuse("a step index outside the plan was recorded"));
        }
        write_json(&self.path, file)
    }

    fn misuse(&self, what: &str) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            reason: format!("{what} (a bug in the reconciler)"),
        }
    }

    /// Step `index` is about to run; `previous`: the proxy files a switch is about to replace.
    pub(crate) fn started(
        &self,
        index: usize,
        previous: Option<&[PreviousFile]>,
    ) -> Result<(), StateError> {
        self.update(|file| {
            let Some(step) = file.steps.get_mut(index) else {
                return false;
            };
            step.mark_started(previous);
            true
        })
    }

    /// Step `index` succeeded with `effect`.
    pub(crate) fn done(&self, index: usize, effect: &Effect) -> Result<(), StateError> {
        self.update(|file| {
            let Some(step) = file.steps.get_mut(index) else {
                return false;
            };
            step.mark_done(effect);
            true
        })
    }

    /// Apply began undoing the release.
    pub(crate) fn rolling_back(&self) -> Result<(), StateError> {
        self.update(|file| {
            file.rolling_back = true;
            true
        })
    }

    /// The deploy is over (and recorded): removes the journal. Nothing to do if it was never
    /// begun.
    pub fn finish(&self) -> Result<(), StateError> {
        let mut guard = self.lock();
        if guard.take().is_none() {
            return Ok(());
        }
        remove(&self.path)
    }
}

/// Reads the journal of a release: `Ok(None)` when there is none.
pub fn read(dir: &ReleaseDir) -> Result<Option<JournalFile>, StateError> {
    read_json(&dir.file(JOURNAL_FILE))
}

/// Removes `path` (missing is fine) and makes the removal durable.
pub(crate) fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Io {
                what: "remove",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    sync_parent(path)
}

/// fsync of the directory holding `path`, so a rename or removal in it reaches the disk.
pub(crate) fn sync_parent(path: &Path) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            what: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Moves a journal that cannot be used aside, as `journal.json.corrupt-<UTC time>`, and
/// returns the new path. Kept rather than deleted: a person may want to read it.
pub fn move_aside(dir: &ReleaseDir) -> Result<PathBuf, StateError> {
    let from = dir.file(JOURNAL_FILE);
    // `2026-12-01T12:15:00.123Z` -> `20261201T121500123Z`: no `:` in a file name.
    let stamp: String = now()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let to = dir.file(&format!("{JOURNAL_FILE}.corrupt-{stamp}"));
    fs::rename(&from, &to).map_err(|source| StateError::Io {
        what: "move aside",
        path: from.clone(),
        source,
    })?;
    sync_parent(&to)?;
    Ok(to)
}

/// Removes temp files left by a write that a crash interrupted (`.journal.json.tmp-<pid>`):
/// the journal itself is intact (the rename never happened), so they hold nothing needed.
/// Returns the paths removed.
pub fn remove_stale_temp_files(dir: &ReleaseDir) -> Vec<PathBuf> {
    let prefix = format!(".{JOURNAL_FILE}.tmp-");
    let own = format!("{prefix}{}", std::process::id());
    let Ok(entries) = fs::read_dir(dir.path()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name != own && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Step};

    fn plan() -> Plan {
        let step = |action| Step {
            action,
            reason: "test".to_string(),
        };
        Plan {
            release: "shop".to_string(),
            revision: "abc".to_string(),
            changes: Vec::new(),
            steps: vec![
                step(Action::StopContainer {
                    service: "web".to_string(),
                    name: "shop-web".to_string(),
                }),
                step(Action::ConfigureProxy {
                    name: "shop-proxy".to_string(),
                    files: Vec::new(),
                }),
                step(Action::RemoveContainer {
                    service: "web".to_string(),
                    name: "shop-web-old".to_string(),
                }),
            ],
            notes: Vec::new(),
        }
    }

    fn previous() -> Vec<PreviousFile> {
        vec![
            PreviousFile {
                path: "/etc/nginx/reconciler/upstreams.conf".to_string(),
                content: Some(b"upstream web { server shop-web-blue:8000; }\n".to_vec()),
            },
            PreviousFile {
                path: "/etc/nginx/bin".to_string(),
                content: Some(vec![0xff, 0x00, 0x80]),
            },
            PreviousFile {
                path: "/etc/nginx/missing".to_string(),
                content: None,
            },
        ]
    }

    #[test]
    fn a_config_push_in_flight_or_done_is_undone_with_the_previous_files_and_its_reload() {
        let reload = crate::desired::Reload {
            how: crate::desired::ReloadHow::Signal {
                signal: "SIGHUP".to_string(),
            },
            timeout: std::time::Duration::from_secs(30),
            prometheus_metrics_port: Some(9090),
        };
        let plan = Plan {
            release: "mon".to_string(),
            revision: "abc".to_string(),
            changes: Vec::new(),
            steps: vec![Step {
                action: Action::PushConfigs {
                    service: "prometheus".to_string(),
                    name: "mon-prometheus".to_string(),
                    files: Vec::new(),
                    remove: Vec::new(),
                    reload: Some(reload.clone()),
                },
                reason: "test".to_string(),
            }],
            notes: Vec::new(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "mon");
        let journal = Journal::new(dir.clone());
        journal.begin(&plan, None).unwrap();
        journal.started(0, Some(&previous())).unwrap();
        let file = read(&dir).unwrap().unwrap();
        let undo_in_flight = crate::apply::undo_of(
            &file.steps[0].step,
            file.steps[0].effect_for_undo().unwrap(),
        );
        journal
            .done(0, &Effect::ConfigFilesReplaced(previous()))
            .unwrap();
        let file = read(&dir).unwrap().unwrap();
        assert_eq!(
            file.steps[0].effect,
            Some(RecordedEffect::ConfigFilesReplaced)
        );
        let undo_done = crate::apply::undo_of(
            &file.steps[0].step,
            file.steps[0].effect_for_undo().unwrap(),
        );
        for undo in [undo_in_flight, undo_done] {
            match undo {
                Some(crate::apply::Undo::RestoreConfigs {
                    name,
                    previous: p,
                    reload: r,
                }) => {
                    assert_eq!(name, "mon-prometheus");
                    assert_eq!(p, previous());
                    assert_eq!(r, Some(reload.clone()));
                }
                other => panic!("expected the previous configs back, got {other:?}"),
            }
        }
    }

    #[test]
    fn records_steps_before_and_after_and_is_removed_on_finish() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let journal = Journal::new(dir.clone());
        journal.begin(&plan(), Some(2)).unwrap();
        let file = read(&dir).unwrap().unwrap();
        assert_eq!(file.commit_point, Some(2));
        assert_eq!(file.pid, std::process::id());
        assert!(file.steps.iter().all(|s| s.started_at.is_none()));
        assert_eq!(
            file.steps[2].step,
            StepRef::RemoveContainer {
                name: "shop-web-old".to_string()
            }
        );

        journal.started(0, None).unwrap();
        let file = read(&dir).unwrap().unwrap();
        assert!(file.steps[0].started_at.is_some() && file.steps[0].done_at.is_none());
        journal.done(0, &Effect::WasRunning(false)).unwrap();
        journal.started(1, Some(&previous())).unwrap();
        let file = read(&dir).unwrap().unwrap();
        assert_eq!(
            file.steps[0].effect,
            Some(RecordedEffect::WasRunning { was_running: false })
        );
        // A switch in flight already carries the files to put back, byte for byte.
        match file.steps[1].effect_for_undo().unwrap() {
            Effect::ProxyFilesReplaced(p) => assert_eq!(p, previous()),
            other => panic!("expected the previous files, got {other:?}"),
        }
        // The stop was recorded as a no-op, so undoing it starts nothing.
        assert!(matches!(
            file.steps[0].effect_for_undo().unwrap(),
            Effect::WasRunning(false)
        ));

        journal.rolling_back().unwrap();
        assert!(read(&dir).unwrap().unwrap().rolling_back);
        journal.finish().unwrap();
        assert_eq!(read(&dir).unwrap(), None);
        assert!(journal.started(0, None).is_err(), "finished journal");
    }

    #[test]
    fn a_step_in_flight_is_undone_as_if_it_happened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let journal = Journal::new(dir.clone());
        journal.begin(&plan(), Some(2)).unwrap();
        journal.started(0, None).unwrap();
        let file = read(&dir).unwrap().unwrap();
        assert!(matches!(
            file.steps[0].effect_for_undo().unwrap(),
            Effect::WasRunning(true)
        ));
        // A switch with no record of the previous files cannot be undone blindly.
        assert!(file.steps[1].effect_for_undo().is_err());
    }

    #[test]
    fn no_container_config_reaches_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let mut p = plan();
        let mut config = crate::desired::ContainerConfig {
            image: "app:v1".to_string(),
            ..Default::default()
        };
        config.env.insert(
            "DB_PASSWORD".to_string(),
            crate::desired::EnvValue::Plain("hunter2-plain".to_string()),
        );
        p.steps.push(Step {
            action: Action::CreateContainer {
                service: "web".to_string(),
                name: "shop-web-green".to_string(),
                color: Some("green".to_string()),
                revision: "abc".to_string(),
                config_hash: "h".to_string(),
                config: Box::new(config),
            },
            reason: "test".to_string(),
        });
        Journal::new(dir.clone()).begin(&p, Some(2)).unwrap();
        let text = fs::read_to_string(dir.file(JOURNAL_FILE)).unwrap();
        assert!(text.contains("shop-web-green"), "{text}");
        assert!(!text.contains("hunter2-plain"), "{text}");
        assert!(!text.contains("app:v1"), "{text}");
    }

    #[test]
    fn move_aside_keeps_the_torn_file_under_a_new_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        dir.ensure().unwrap();
        fs::write(dir.file(JOURNAL_FILE), b"{\"format\": 1, \"rel").unwrap();
        fs::write(dir.file(".journal.json.tmp-999999"), b"{").unwrap();
        assert!(matches!(read(&dir), Err(StateError::Corrupt { .. })));
        let moved = move_aside(&dir).unwrap();
        assert!(moved
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal.json.corrupt-"));
        assert_eq!(fs::read(&moved).unwrap(), b"{\"format\": 1, \"rel");
        assert_eq!(read(&dir).unwrap(), None);
        assert_eq!(remove_stale_temp_files(&dir).len(), 1);
    }

    #[test]
    fn the_journal_matches_its_published_schema_at_every_stage() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/journal.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let journal = Journal::new(dir.clone());
        let check = || {
            let value: serde_json::Value = read_json(&dir.file(JOURNAL_FILE)).unwrap().unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{value:#}");
        };
        journal.begin(&plan(), Some(2)).unwrap();
        check();
        journal.started(0, None).unwrap();
        journal.done(0, &Effect::WasRunning(true)).unwrap();
        journal.started(1, Some(&previous())).unwrap();
        check();
        journal
            .done(1, &Effect::ProxyFilesReplaced(previous()))
            .unwrap();
        journal.started(2, None).unwrap();
        journal.rolling_back().unwrap();
        check();
    }

    /// Repeated records rewrite one valid journal, and their cost is printed: a few rounds in
    /// every test run, 200 from bench/journal_write.sh (`JOURNAL_WRITE_ROUNDS`), which prints
    /// the figure. Nothing here asserts on time.
    #[test]
    fn journal_write_cost() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        let journal = Journal::new(dir.clone());
        journal.begin(&plan(), Some(2)).unwrap();
        let rounds: u32 = std::env::var("JOURNAL_WRITE_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            journal.started(1, Some(&previous())).unwrap();
        }
        let per_write = started.elapsed() / rounds;
        let bytes = fs::metadata(dir.file(JOURNAL_FILE)).unwrap().len();
        println!(
            "journal write: {:.3} ms per record ({rounds} records, {bytes} bytes each, fsync + rename + directory fsync)",
            per_write.as_secs_f64() * 1000.0
        );
        assert!(read(&dir).unwrap().unwrap().steps[1]
            .previous_files
            .is_some());
    }
}
