//! One reconcile: source → spec → desired → live → plan → apply. `diff` stops after the plan,
//! `apply` and the daemon go on; all three share these functions, so `diff` shows exactly the
//! plan `apply` carries out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::ApplyError;
use crate::desired::{self, DesiredRelease, HostEnv, RepoFiles};
use crate::engine::{Engine, EngineError};
use crate::live;
use crate::notify;
use crate::plan::{self, Plan, PlanError};
use crate::recovery::RecoveryError;
use crate::source::{GitSource, LocalDir, SourceConfig, SourceError, SourceTree};
use crate::spec::{self, LoadedSpec, SpecError, SpecErrors};

/// Where a release is read from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A git remote, fetched into the cache under the state dir.
    Git(SourceConfig),
    /// An uncommitted directory (`diff --local`): revision `local`.
    Local { dir: PathBuf, path: String },
}

/// Why a cycle was started: recorded in logs and, later, history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Poll,
    Webhook,
    Watch,
    Cli,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Watch => "watch",
            Trigger::Cli => "cli",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Spec(SpecErrors),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// Boxed: the failure report is large and this error travels through every cycle.
    #[error(transparent)]
    Apply(Box<ApplyError>),
    /// The deploy's lock or state files (boxed: it nests this very type).
    #[error(transparent)]
    Deploy(Box<crate::deploy::DeployError>),
}

impl From<ApplyError> for ReconcileError {
    fn from(e: ApplyError) -> Self {
        ReconcileError::Apply(Box::new(e))
    }
}

impl ReconcileError {
    /// Bad input (the operator must change something) as opposed to a failed or unreachable
    /// host: decides the exit code and whether the daemon retries.
    /// A release that was tried and failed (and was rolled back), as opposed to one that never
    /// started (a journal that cannot be written changes nothing).
    pub fn is_failed_release(&self) -> bool {
        matches!(self, ReconcileError::Apply(a) if !matches!(**a, ApplyError::Journal { .. }))
    }

    pub fn is_input_error(&self) -> bool {
        matches!(self, ReconcileError::Spec(_) | ReconcileError::Plan(_))
    }
}

/// A release read and resolved on this host, not yet compared with the engine.
pub struct Loaded {
    pub tree: Arc<dyn SourceTree>,
    pub spec: LoadedSpec,
    pub desired: DesiredRelease,
    /// The `notifications:` targets, URLs read on this host.
    pub notify: Vec<notify::Target>,
}

/// Fetches (git) or reads (local) the source and returns its tree.
pub async fn fetch(
    origin: &Origin,
    state_dir: &Path,
) -> Result<Arc<dyn SourceTree>, ReconcileError> {
    match origin {
        Origin::Git(config) => {
            let source = Arc::new(GitSource::new(config.clone(), state_dir)?);
            let snapshot = source.fetch_async().await.map_err(ReconcileError::from)?;
            Ok(Arc::new(snapshot))
        }
        Origin::Local { dir, path } => Ok(Arc::new(
            LocalDir::new(dir.clone()).with_spec_dir(path.clone()),
        )),
    }
}

/// Reads, validates and resolves the release in `tree`. Every problem with the input is
/// reported at once, pointing into the spec.
pub fn load(tree: Arc<dyn SourceTree>, host: &dyn HostEnv) -> Result<Loaded, ReconcileError> {
    let file = tree.spec_path();
    let bytes = tree.read_spec()?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ReconcileError::Spec(SpecErrors(vec![SpecError {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: "the file is not UTF-8 text".to_string(),
            fix: Some("save it as UTF-8".to_string()),
        }]))
    })?;
    let loaded = spec::load(&file, &text).map_err(ReconcileError::Spec)?;
    let mut errors = spec::check_host(&loaded);
    let repo = TreeFiles {
        tree: tree.as_ref(),
        dir: file
            .rsplit_once('/')
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default(),
    };
    let desired = match desired::resolve(&loaded.spec, tree.revision(), host, &repo) {
        Ok(d) => Some(d),
        Err(resolve_errors) => {
            errors.extend(
                resolve_errors
                    .into_iter()
                    .map(|e| spec::error_at(&loaded, &e.path, e.message, Some(e.fix))),
            );
            None
        }
    };
    let targets = match notify::resolve_targets(&loaded.spec, host) {
        Ok(t) => t,
        Err(resolve_errors) => {
            errors.extend(
                resolve_errors
                    .into_iter()
                    .map(|e| spec::error_at(&loaded, &e.path, e.message, Some(e.fix))),
            );
            Vec::new()
        }
    };
    match desired {
        Some(desired) if errors.is_empty() => Ok(Loaded {
            tree,
            spec: loaded,
            desired,
            notify: targets,
        }),
        _ => Err(ReconcileError::Spec(SpecErrors(errors))),
    }
}

/// The release's files at its commit, relative to the directory holding release.yaml.
struct TreeFiles<'a> {
    tree: &'a dyn SourceTree,
    dir: String,
}

impl RepoFiles for TreeFiles<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = if self.dir.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.dir)
        };
        let bytes = self.tree.read_file(&full).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| format!("{full} is not UTF-8 text"))
    }

    fn read_config(&self, path: &str) -> Result<desired::ConfigSource, String> {
        let full = if self.dir.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.dir)
        };
        let file_error = match self.tree.read_file(&full) {
            Ok(bytes) => return Ok(desired::ConfigSource::File(bytes)),
            Err(e) => e.to_string(),
        };
        // Not a file: a directory, or nothing (then the file's error says so).
        let entries = self.tree.read_dir(&full).map_err(|_| file_error)?;
        let prefix = format!("{full}/");
        Ok(desired::ConfigSource::Dir(
            entries
                .into_iter()
                .map(|(p, bytes)| (p.strip_prefix(&prefix).unwrap_or(&p).to_string(), bytes))
                .collect(),
        ))
    }
}

/// Observes the engine (and the jobs already done, from `state_dir`) and plans. Pure apart
/// from the observation.
pub async fn plan(
    engine: &Engine,
    desired: &DesiredRelease,
    state_dir: &std::path::Path,
) -> Result<Plan, ReconcileError> {
    Ok(plan_observed(engine, desired, state_dir).await?.0)
}

/// [`plan`], also returning what was observed (notifications name the running revision).
pub async fn plan_observed(
    engine: &Engine,
    desired: &DesiredRelease,
    state_dir: &std::path::Path,
) -> Result<(Plan, live::LiveState), ReconcileError> {
    let mut live = observe(engine, desired).await?;
    let dir = crate::state::ReleaseDir::new(state_dir, &desired.release);
    live.jobs_done = crate::deploy::jobs_done(&dir, &desired.revision);
    let plan = plan::plan(desired, &live)?;
    Ok((plan, live))
}

/// What the engine runs for the release: its labelled objects, the images it names and the
/// proxy's managed files.
pub async fn observe(
    engine: &Engine,
    desired: &DesiredRelease,
) -> Result<live::LiveState, ReconcileError> {
    let images = desired.images();
    let proxy_paths: Vec<String> = desired
        .proxy
        .iter()
        .flat_map(|p| [p.nginx_conf_path.clone(), p.upstreams_path.clone()])
        .collect();
    let proxy = desired
        .proxy
        .as_ref()
        .map(|p| (p.container_name.as_str(), proxy_paths.as_slice()));
    let mut live = live::observe(engine, &desired.release, &images, proxy).await?;
    crate::configs::observe(engine, desired, &mut live).await?;
    Ok(live)
}
