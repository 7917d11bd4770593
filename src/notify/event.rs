//! What a notification says: one [`Event`] per deploy milestone, built from the values the
//! reconcile already has (the loaded release, its commit, the plan, the error).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::apply::ApplyError;
use crate::live::LiveState;
use crate::plan::{ObjectKind, Plan};
use crate::reconcile::ReconcileError;
use crate::spec::model::EventKind;

/// One deploy milestone, as sent (the `json` format is this struct).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub event: EventKind,
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The commit being applied; `None` when it could not be fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The revision the host ran before this deploy, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// Who started it: the operator's user name for the CLI, `reconciler` for the daemon.
    pub actor: String,
    /// `cli`, `poll`, `webhook`, `watch`.
    pub trigger: String,
    /// From the start of the apply to this event; absent on `started`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The services (and the proxy) the plan adds, changes or removes.
    pub services: Vec<ServiceChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// RFC 3339, UTC, when the event was made.
    pub at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct Commit {
    pub subject: String,
    pub author: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct ServiceChange {
    pub name: String,
    /// `add`, `change`, `destroy`.
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct EventError {
    /// The step that failed: `fetch`, `load`, `observe`, `plan`, or the apply step
    /// (`step 3 (await_healthy api) on shop-api`).
    pub step: String,
    pub message: String,
}

impl EventError {
    /// The failing step and message of a reconcile error, and whether it was rolled back.
    pub fn from_reconcile(err: &ReconcileError) -> (EventKind, EventError) {
        let step = match err {
            ReconcileError::Source(_) => "fetch".to_string(),
            ReconcileError::Spec(_) => "load".to_string(),
            ReconcileError::Engine(_) => "observe".to_string(),
            ReconcileError::Plan(_) => "plan".to_string(),
            ReconcileError::Recovery(_) => "recover".to_string(),
            ReconcileError::Deploy(_) => "deploy".to_string(),
            ReconcileError::Apply(e) => return Self::from_apply(e),
        };
        (
            EventKind::Failed,
            EventError {
                step,
                message: err.to_string().trim_end().to_string(),
            },
        )
    }

    pub fn from_apply(err: &ApplyError) -> (EventKind, EventError) {
        let (ApplyError::Failed {
            index,
            action,
            service,
            target,
            ..
        }
        | ApplyError::Cancelled {
            index,
            action,
            service,
            target,
            ..
        }) = err
        else {
            // The journal could not start: nothing ran, nothing was rolled back.
            return (
                EventKind::Failed,
                EventError {
                    step: "journal".to_string(),
                    message: err.to_string(),
                },
            );
        };
        let service = service
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let kind = if err.rolled_back() {
            EventKind::RolledBack
        } else {
            EventKind::Failed
        };
        (
            kind,
            EventError {
                step: format!("step {} ({action}{service}) on {target}", index + 1),
                message: err.to_string(),
            },
        )
    }
}

/// What every event of one deploy shares; [`Deploy::event`] stamps out each milestone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub release: String,
    pub environment: Option<String>,
    pub revision: Option<String>,
    pub previous_revision: Option<String>,
    pub commit: Option<Commit>,
    pub actor: String,
    pub trigger: String,
    pub services: Vec<ServiceChange>,
}

impl Deploy {
    pub fn new(release: &str, environment: Option<&str>, actor: &str, trigger: &str) -> Deploy {
        Deploy {
            release: release.to_string(),
            environment: environment.map(str::to_string),
            revision: None,
            previous_revision: None,
            commit: None,
            actor: actor.to_string(),
            trigger: trigger.to_string(),
            services: Vec::new(),
        }
    }

    /// The commit's revision, subject and author (empty ones, as for a local directory, are
    /// left out).
    pub fn with_commit(mut self, revision: &str, subject: &str, author: &str) -> Deploy {
        self.revision = Some(revision.to_string());
        if !subject.is_empty() || !author.is_empty() {
            self.commit = Some(Commit {
                subject: subject.to_string(),
                author: author.to_string(),
            });
        }
        self
    }

    pub fn with_previous(mut self, previous: Option<String>) -> Deploy {
        self.previous_revision = previous;
        self
    }

    /// The services and proxy the plan touches (networks and volumes are not news).
    pub fn with_plan(mut self, plan: &Plan) -> Deploy {
        self.services = plan
            .changes
            .iter()
            .filter(|c| matches!(c.kind, ObjectKind::Service | ObjectKind::Proxy))
            .map(|c| ServiceChange {
                name: c.name.clone(),
                action: format!("{:?}", c.action).to_ascii_lowercase(),
                reason: c.reason.clone(),
            })
            .collect();
        self
    }

    /// `succeeded`, or `failed` / `rolled_back` with the failing step.
    pub fn finished(&self, result: Result<(), &ReconcileError>, took: Duration) -> Event {
        match result {
            Ok(_) => self.event(EventKind::Succeeded, Some(took), None),
            Err(e) => {
                let (kind, error) = EventError::from_reconcile(e);
                self.event(kind, Some(took), Some(error))
            }
        }
    }

    pub fn event(
        &self,
        kind: EventKind,
        duration: Option<Duration>,
        error: Option<EventError>,
    ) -> Event {
        Event {
            event: kind,
            release: self.release.clone(),
            environment: self.environment.clone(),
            revision: self.revision.clone(),
            previous_revision: self.previous_revision.clone(),
            commit: self.commit.clone(),
            actor: self.actor.clone(),
            trigger: self.trigger.clone(),
            duration_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            services: self.services.clone(),
            error,
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }
}

impl Event {
    /// Equal for events that say the same thing (time and duration aside): what the dedupe
    /// window compares.
    pub fn dedupe_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.event.hash(&mut h);
        self.release.hash(&mut h);
        self.environment.hash(&mut h);
        self.revision.hash(&mut h);
        self.previous_revision.hash(&mut h);
        self.trigger.hash(&mut h);
        self.services.hash(&mut h);
        self.error.hash(&mut h);
        h.finish()
    }

    /// The first 12 characters of the revision, or `unknown`.
    pub fn short_revision(&self) -> &str {
        short(self.revision.as_deref())
    }
}

pub fn short(revision: Option<&str>) -> &str {
    match revision {
        Some(r) => r.get(..12).unwrap_or(r),
        None => "unknown",
    }
}

/// The revision the release's containers were created from: the one most of them carry
/// (a service left unchanged by the last deploy keeps its older label).
pub fn running_revision(live: &LiveState) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &live.containers {
        if let Some(r) = c.revision.as_deref() {
            *counts.entry(r).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(r, _)| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Deploy {
        Deploy::new("shop", Some("production"), "alice", "cli").with_commit(
            "0123456789abcdef0123",
            "api: 1.4.2",
            "Alice <a@example.invalid>",
        )
    }

    #[test]
    fn dedupe_key_ignores_time_and_duration_only() {
        let d = deploy();
        let a = d.event(EventKind::Succeeded, Some(Duration::from_secs(1)), None);
        let mut b = d.event(EventKind::Succeeded, Some(Duration::from_secs(9)), None);
        b.at = "2000-01-01T00:00:00Z".to_string();
        assert_eq!(a.dedupe_key(), b.dedupe_key());
        let c = d.event(EventKind::Failed, Some(Duration::from_secs(1)), None);
        assert_ne!(a.dedupe_key(), c.dedupe_key());
        let other =
            d.clone()
                .with_commit("fedcba", "x", "y")
                .event(EventKind::Succeeded, None, None);
        assert_ne!(a.dedupe_key(), other.dedupe_key());
    }

    #[test]
    fn short_revision_and_missing_commit() {
        let e = deploy().event(EventKind::Started, None, None);
        assert_eq!(e.short_revision(), "0123456789ab");
        let local = Deploy::new("shop", None, "a", "cli").with_commit("local", "", "");
        assert_eq!(local.commit, None);
        assert_eq!(
            local.event(EventKind::Started, None, None).short_revision(),
            "local"
        );
    }
}
