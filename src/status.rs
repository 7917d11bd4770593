//! `reconciler status`: what the source wants now, what was applied, what runs, and what is in
//! the way (the lock, a suspension). Every part is gathered independently: an unreachable
//! remote or a torn `current.json` is reported in its field, and the rest is still shown.
//! The applied revision falls back to the container labels when `current.json` is unusable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::desired::ProcessEnv;
use crate::engine::Engine;
use crate::live::{self, ContainerState, LiveState};
use crate::plan::ObjectKind;
use crate::reconcile;
use crate::source::{GitSource, Snapshot, SourceConfig};
use crate::state::current::{self, SourceRecord};
use crate::state::lock;
use crate::state::suspend::{self, Suspended};
use crate::state::ReleaseDir;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub release: String,
    /// What the source's ref points at now (`None` when unreachable: see `desired_error`).
    pub desired_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_error: Option<String>,
    pub applied_revision: Option<String>,
    /// `current.json`, or `labels` when it is missing or unreadable.
    pub applied_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_error: Option<String>,
    pub suspended: Option<Suspended>,
    pub lock: lock::Status,
    pub services: Vec<ServiceStatus>,
    /// Whether the host matches the applied revision (`None`: could not be checked).
    pub in_sync: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub container: Option<String>,
    pub color: Option<String>,
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// `running`, `exited`, ..., or `missing`.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `none` (no HEALTHCHECK).
    pub health: String,
    pub revision: Option<String>,
    /// What differs from the applied revision (empty: none).
    pub drift: Vec<String>,
}

/// Gathers the status of `release`. `source` overrides the one recorded in `current.json`.
pub async fn gather(
    state_dir: &Path,
    engine: &Engine,
    release: &str,
    source: Option<SourceConfig>,
) -> Status {
    let dir = ReleaseDir::new(state_dir, release);
    let (current, current_error) = match current::load(&dir) {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let recorded = current.as_ref().and_then(|c| c.source.clone());
    let source = source.or_else(|| {
        recorded.as_ref().map(|r| SourceConfig {
            url: r.url.clone(),
            reference: r.reference.clone(),
            path: r.path.clone(),
            ..SourceConfig::default()
        })
    });
    let (desired_revision, desired_error) = match source {
        Some(config) => match GitSource::new(config, state_dir) {
            Ok(src) => match Arc::new(src).fetch_async().await {
                Ok(snap) => (Some(snap.revision), None),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        },
        None => (
            None,
            Some("no source recorded yet; pass --repo URL".to_string()),
        ),
    };
    let live = live::observe(engine, release, &[], None).await;
    let (live, live_error) = match live {
        Ok(l) => (l, None),
        Err(e) => (LiveState::default(), Some(e.to_string())),
    };
    let (applied_revision, applied_from) = match &current {
        Some(c) => (Some(c.revision.clone()), "current.json".to_string()),
        None => (
            crate::deploy::revision_from_labels(&live),
            "labels".to_string(),
        ),
    };
    let (drift, in_sync, drift_error) = match (&applied_revision, &recorded, &live_error) {
        (_, _, Some(e)) => (BTreeMap::new(), None, Some(e.clone())),
        (Some(rev), Some(src), None) => match drift_against(state_dir, engine, src, rev).await {
            Ok((d, sync)) => (d, Some(sync), None),
            Err(e) => (BTreeMap::new(), None, Some(e)),
        },
        _ => (
            BTreeMap::new(),
            None,
            Some("the applied revision's source is not recorded".to_string()),
        ),
    };
    let services = services(&live, current.as_ref(), &drift);
    let lock = lock::status(&dir, release).unwrap_or(lock::Status {
        release: release.to_string(),
        held: false,
        holder: None,
        stale: false,
    });
    Status {
        release: release.to_string(),
        desired_revision,
        desired_error,
        applied_revision,
        applied_from,
        current_error,
        suspended: suspend::load(&dir).ok().flatten(),
        lock,
        services,
        in_sync,
        drift_error,
    }
}

/// Plans the applied revision (read from the git cache) against the engine: each change is
/// drift. Returns the drift by service and whether the host is in sync.
async fn drift_against(
    state_dir: &Path,
    engine: &Engine,
    source: &SourceRecord,
    revision: &str,
) -> Result<(BTreeMap<String, Vec<String>>, bool), String> {
    let cache = state_dir.join(&source.cache_dir);
    let snap = Snapshot::from_cache(&cache, &source.url, revision, &source.path)
        .map_err(|e| e.to_string())?;
    let loaded = reconcile::load(Arc::new(snap), &ProcessEnv).map_err(|e| e.to_string())?;
    let plan = reconcile::plan(engine, &loaded.desired, state_dir)
        .await
        .map_err(|e| e.to_string())?;
    let mut drift: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for change in &plan.changes {
        let key = match change.kind {
            ObjectKind::Service => change.name.clone(),
            ObjectKind::Proxy => "proxy".to_string(),
            ObjectKind::Network => format!("network {}", change.name),
            ObjectKind::Volume => format!("volume {}", change.name),
            ObjectKind::Job => format!("job {}", change.name),
        };
        let fields: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
        let text = if fields.is_empty() {
            change.reason.clone()
        } else {
            format!("{} ({})", change.reason, fields.join(", "))
        };
        drift.entry(key).or_default().push(text);
    }
    Ok((drift, plan.in_sync()))
}

fn services(
    live: &LiveState,
    current: Option<&current::Current>,
    drift: &BTreeMap<String, Vec<String>>,
) -> Vec<ServiceStatus> {
    let mut names: Vec<String> = current
        .map(|c| c.services.iter().map(|s| s.service.clone()).collect())
        .unwrap_or_default();
    for c in &live.containers {
        if !names.contains(&c.service) {
            names.push(c.service.clone());
        }
    }
    for key in drift.keys() {
        if !key.contains(' ') && !names.contains(key) {
            names.push(key.clone());
        }
    }
    names
        .into_iter()
        .map(|service| {
            // The serving container: a running one, and of two colors the one not being
            // replaced (both run only during a deploy), else any.
            let containers: Vec<_> = live
                .containers
                .iter()
                .filter(|c| c.service == service)
                .collect();
            let chosen = containers
                .iter()
                .find(|c| c.state == ContainerState::Running)
                .or(containers.first());
            ServiceStatus {
                container: chosen.map(|c| c.name.clone()),
                color: chosen.and_then(|c| c.color.clone()),
                image: chosen.map(|c| c.image.clone()),
                image_id: chosen.map(|c| c.image_id.clone()),
                state: chosen
                    .map(|c| c.state.as_str().to_string())
                    .unwrap_or_else(|| "missing".to_string()),
                health: chosen
                    .map(|c| health_str(c.health).to_string())
                    .unwrap_or_else(|| "none".to_string()),
                revision: chosen.and_then(|c| c.revision.clone()),
                drift: drift.get(&service).cloned().unwrap_or_default(),
                service,
            }
        })
        .collect()
}

fn health_str(h: live::Health) -> &'static str {
    match h {
        live::Health::None => "none",
        live::Health::Starting => "starting",
        live::Health::Healthy => "healthy",
        live::Health::Unhealthy => "unhealthy",
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// The text form of `status`.
pub fn render_text(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Release {}", s.release);
    let desired = match (&s.desired_revision, &s.desired_error) {
        (Some(r), _) => short(r).to_string(),
        (None, Some(e)) => format!("unknown ({e})"),
        (None, None) => "unknown".to_string(),
    };
    let _ = writeln!(out, "  desired:   {desired}");
    let applied = s.applied_revision.as_deref().map(short).unwrap_or("none");
    let _ = writeln!(out, "  applied:   {applied} (from {})", s.applied_from);
    if let Some(e) = &s.current_error {
        let _ = writeln!(out, "  warning:   {e}");
    }
    let sync = match (s.in_sync, &s.drift_error) {
        (Some(true), _) => "in sync with the applied revision".to_string(),
        (Some(false), _) => "DRIFT: the host differs from the applied revision".to_string(),
        (None, Some(e)) => format!("unknown ({e})"),
        (None, None) => "unknown".to_string(),
    };
    let _ = writeln!(out, "  host:      {sync}");
    let behind = matches!((&s.desired_revision, &s.applied_revision), (Some(d), Some(a)) if d != a);
    if behind {
        let _ = writeln!(
            out,
            "             the source has moved on: desired != applied"
        );
    }
    match &s.suspended {
        Some(sus) => {
            let _ = writeln!(
                out,
                "  sync:      SUSPENDED by {} at {} ({}{}); `reconciler resume` re-enables it",
                sus.by,
                sus.at,
                sus.reason.as_str(),
                sus.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "  sync:      automatic");
        }
    }
    let lock = match (&s.lock.held, &s.lock.holder) {
        (true, Some(h)) => format!("held by {h}"),
        (true, None) => "held (holder record not written yet)".to_string(),
        (false, Some(h)) if s.lock.stale => {
            format!("free (stale record of {h}; the next deploy takes it over)")
        }
        _ => "free".to_string(),
    };
    let _ = writeln!(out, "  lock:      {lock}");
    let _ = writeln!(out, "Services:");
    for svc in &s.services {
        let _ = writeln!(
            out,
            "  {:<14} {:<8} {:<6} {:<10} {:<10} {}",
            svc.service,
            svc.state,
            svc.color.as_deref().unwrap_or("-"),
            svc.health,
            svc.revision.as_deref().map(short).unwrap_or("-"),
            svc.image.as_deref().unwrap_or("-"),
        );
        for d in &svc.drift {
            let _ = writeln!(out, "    drift: {d}");
        }
    }
    out
}
