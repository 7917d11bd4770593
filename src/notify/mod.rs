//! Notifications: deploy events sent to the webhooks under `notifications:` (Slack or a
//! generic JSON body).
//!
//! A deploy never waits for a receiver: [`Notifier::send`] only puts the rendered body on the
//! target's queue (one queue per target, each drained by its own task, so a dead receiver
//! holds up only its own events) and returns. Delivery retries in the background
//! ([`deliver`]). An event identical to one sent to the same target within the dedupe window
//! is dropped. `apply` and `run`'s shutdown call [`Notifier::flush`], which waits for the
//! queues up to a deadline and then gives up on what is left.

mod cycle;
mod deliver;
mod event;
mod render;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::defaults;
use crate::desired::{HostEnv, ResolveError};
use crate::secret::Secret;
use crate::spec::model::{NotificationSpec, ReleaseSpec};

pub use crate::spec::model::{EventKind, NotificationFormat};
pub use cycle::{CycleDeploy, Notifying, Reporter};
pub use deliver::Delivery;
pub use event::{running_revision, Commit, Deploy, Event, EventError, ServiceChange};
pub use render::{body, headline, json_body, slack};

/// A target resolved on this host: the URL read from its env var or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub format: NotificationFormat,
    pub url: Secret,
    /// `None` = every event.
    pub events: Option<Vec<EventKind>>,
}

impl Target {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }

    /// Same name, format and URL: the queue can be kept across revisions.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([0, self.format as u8]);
        self.url.feed(&mut h);
        hex::encode(h.finalize())
    }
}

/// Reads every target's URL on this host. Errors carry the place in the spec
/// (`notifications.0.url_env`) and never the value.
pub fn resolve_targets(
    spec: &ReleaseSpec,
    host: &dyn HostEnv,
) -> Result<Vec<Target>, Vec<ResolveError>> {
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (i, n) in spec.notifications.iter().enumerate() {
        match resolve_url(i, n, host) {
            Ok(url) => targets.push(Target {
                name: n.name.clone(),
                format: n.format,
                url,
                events: n.events.clone(),
            }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(errors)
    }
}

fn resolve_url(i: usize, n: &NotificationSpec, host: &dyn HostEnv) -> Result<Secret, ResolveError> {
    let (path, source, value) = match (&n.url_env, &n.url_file) {
        (Some(var), _) => {
            let path = format!("notifications.{i}.url_env");
            let value = host.var(var).ok_or_else(|| ResolveError {
                path: path.clone(),
                message: format!("environment variable {var} is not set on this host"),
                fix: format!(
                    "export {var} (the webhook URL) in the reconciler's environment, never in git"
                ),
            })?;
            (path, format!("environment variable {var}"), value)
        }
        (None, Some(file)) => {
            let path = format!("notifications.{i}.url_file");
            let value = host.read_file(file).map_err(|e| ResolveError {
                path: path.clone(),
                message: format!("cannot read the webhook URL file {file}: {e}"),
                fix: format!("write the webhook URL to {file} on this host (mode 600)"),
            })?;
            (path, format!("file {file}"), value)
        }
        (None, None) => {
            return Err(ResolveError {
                path: format!("notifications.{i}"),
                message: "the target names no URL source".to_string(),
                fix: "write `url_env: VAR` or `url_file: /path`".to_string(),
            })
        }
    };
    let url = Secret::new(value.trim());
    // The value is a secret: the message says what is wrong with it, never what it is.
    let parsed = reqwest::Url::parse(url.expose()).ok();
    let ok = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        return Err(ResolveError {
            path,
            message: format!("the {source} does not hold an http:// or https:// URL"),
            fix: "put the whole webhook URL there (https://hooks.slack.com/services/...)"
                .to_string(),
        });
    }
    Ok(url)
}

/// Delivery settings; [`Default`] takes them from `defaults`.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_attempts: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub retry_after_max: Duration,
    pub dedupe_window: Duration,
    pub queue_capacity: usize,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        NotifyOptions {
            request_timeout: defaults::NOTIFY_REQUEST_TIMEOUT,
            connect_timeout: defaults::NOTIFY_CONNECT_TIMEOUT,
            max_attempts: defaults::NOTIFY_MAX_ATTEMPTS,
            retry_min: defaults::NOTIFY_RETRY_MIN,
            retry_max: defaults::NOTIFY_RETRY_MAX,
            retry_after_max: defaults::NOTIFY_RETRY_AFTER_MAX,
            dedupe_window: defaults::NOTIFY_DEDUPE_WINDOW,
            queue_capacity: defaults::NOTIFY_QUEUE_CAPACITY,
        }
    }
}

/// Counts since the notifier was made.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicUsize,
    gave_up: AtomicUsize,
    dropped: AtomicUsize,
    deduplicated: AtomicUsize,
}

/// What [`Notifier::flush`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub delivered: usize,
    /// Retried until the attempts ran out, or refused by the receiver.
    pub gave_up: usize,
    /// Still queued or in flight at the deadline.
    pub abandoned: usize,
    pub deduplicated: usize,
    /// The queue was full.
    pub dropped: usize,
}

struct Job {
    body: Vec<u8>,
    kind: EventKind,
}

struct Queue {
    fingerprint: String,
    tx: mpsc::Sender<Job>,
    task: JoinHandle<()>,
    /// Queued plus in flight.
    pending: Arc<AtomicUsize>,
}

struct Inner {
    options: NotifyOptions,
    client: Option<reqwest::Client>,
    queues: Mutex<HashMap<String, Queue>>,
    /// (target name, event key) → when it was last queued.
    recent: Mutex<HashMap<(String, u64), Instant>>,
    counters: Arc<Counters>,
}

/// The handle the CLI and the daemon send events through; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(NotifyOptions::default())
    }
}

impl Notifier {
    pub fn new(options: NotifyOptions) -> Notifier {
        let client = match deliver::client(&options) {
            Ok(c) => Some(c),
            Err(e) => {
                // Notifications are never worth failing a deploy for.
                warn!(error = %e.without_url(), "cannot set up the HTTP client; notifications are off");
                None
            }
        };
        Notifier {
            inner: Arc::new(Inner {
                options,
                client,
                queues: Mutex::new(HashMap::new()),
                recent: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// Queues `event` for every target that wants it and returns at once (never awaits a
    /// receiver). Returns how many targets it was queued for.
    pub fn send(&self, targets: &[Target], event: &Event) -> usize {
        let Some(client) = &self.inner.client else {
            return 0;
        };
        let key = event.dedupe_key();
        let mut queued = 0;
        for target in targets.iter().filter(|t| t.wants(event.event)) {
            if self.seen_recently(&target.name, key) {
                self.inner
                    .counters
                    .deduplicated
                    .fetch_add(1, Ordering::Relaxed);
                debug!(target_name = %target.name, event = event.event.as_str(), "same event sent within the dedupe window; skipped");
                continue;
            }
            let body = render::body(target.format, event).to_string().into_bytes();
            if self.enqueue(
                client,
                target,
                Job {
                    body,
                    kind: event.event,
                },
            ) {
                queued += 1;
            }
        }
        queued
    }

    fn seen_recently(&self, target: &str, key: u64) -> bool {
        let Ok(mut recent) = self.inner.recent.lock() else {
            return false;
        };
        let now = Instant::now();
        let window = self.inner.options.dedupe_window;
        recent.retain(|_, at| now.duration_since(*at) < window);
        match recent.entry((target.to_string(), key)) {
            std::collections::hash_map::Entry::Occupied(_) => true,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                false
            }
        }
    }

    fn enqueue(&self, client: &reqwest::Client, target: &Target, job: Job) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            warn!(target_name = %target.name, "no async runtime; notification not sent");
            return false;
        };
        let Ok(mut queues) = self.inner.queues.lock() else {
            return false;
        };
        let fingerprint = target.fingerprint();
        let stale = queues
            .get(&target.name)
            .is_some_and(|q| q.fingerprint != fingerprint || q.tx.is_closed());
        if stale {
            // The URL or format changed with a new revision: the old task drains what it has
            // and ends when its sender is dropped here.
            queues.remove(&target.name);
        }
        let queue = queues.entry(target.name.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.inner.options.queue_capacity.max(1));
            let pending = Arc::new(AtomicUsize::new(0));
            let task = handle.spawn(drain(
                rx,
                client.clone(),
                target.clone(),
                self.inner.options.clone(),
                pending.clone(),
                self.inner.counters.clone(),
            ));
            Queue {
                fingerprint,
                tx,
                task,
                pending,
            }
        });
        queue.pending.fetch_add(1, Ordering::SeqCst);
        let kind = job.kind;
        match queue.tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                queue.pending.fetch_sub(1, Ordering::SeqCst);
                self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(target_name = %target.name, event = kind.as_str(), "notification queue full; event dropped");
                false
            }
        }
    }

    /// Closes every queue and waits up to `deadline` for them to drain; what is still pending
    /// then is abandoned (and logged).
    pub async fn flush(&self, deadline: Duration) -> FlushReport {
        let queues: Vec<Queue> = match self.inner.queues.lock() {
            Ok(mut q) => q.drain().map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        };
        let mut tasks = Vec::new();
        let mut pending = Vec::new();
        for q in queues {
            drop(q.tx);
            tasks.push(q.task);
            pending.push(q.pending);
        }
        let until = tokio::time::Instant::now() + deadline;
        for task in &mut tasks {
            if tokio::time::timeout_at(until, &mut *task).await.is_err() {
                break;
            }
        }
        for task in &tasks {
            task.abort();
        }
        let abandoned: usize = pending.iter().map(|p| p.load(Ordering::SeqCst)).sum();
        let c = &self.inner.counters;
        let report = FlushReport {
            delivered: c.delivered.load(Ordering::Relaxed),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            abandoned,
            deduplicated: c.deduplicated.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        };
        if abandoned > 0 {
            warn!(
                abandoned,
                deadline = ?deadline,
                "notifications still undelivered at the flush deadline; given up"
            );
        } else {
            debug!(?report, "notification queues flushed");
        }
        report
    }
}

/// One target's queue, in order: a slow receiver delays only its own later events.
async fn drain(
    mut rx: mpsc::Receiver<Job>,
    client: reqwest::Client,
    target: Target,
    options: NotifyOptions,
    pending: Arc<AtomicUsize>,
    counters: Arc<Counters>,
) {
    while let Some(job) = rx.recv().await {
        let result =
            deliver::deliver(&client, &target.url, &job.body, &options, &target.name).await;
        match result {
            Delivery::Delivered { attempts } => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                info!(target_name = %target.name, event = job.kind.as_str(), attempts, "notification delivered");
            }
            Delivery::GaveUp { attempts, reason } => {
                counters.gave_up.fetch_add(1, Ordering::Relaxed);
                warn!(target_name = %target.name, event = job.kind.as_str(), attempts, %reason, "notification not delivered; given up");
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    struct Host(&'static str);
    impl HostEnv for Host {
        fn var(&self, name: &str) -> Option<String> {
            (name == "HOOK").then(|| self.0.to_string())
        }
        fn read_file(&self, path: &str) -> io::Result<String> {
            match path {
                "/etc/hook" => Ok(format!("{}\n", self.0)),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "not found")),
            }
        }
    }

    fn spec(notifications: &str) -> ReleaseSpec {
        let yaml = format!(
            "version: 1\nrelease: r\nservices:\n  a: {{ image: 'i:1' }}\nnotifications:\n{notifications}"
        );
        crate::spec::load("release.yaml", &yaml)
            .map(|l| l.spec)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn urls_come_from_env_or_file_as_secrets() {
        let s = spec("  - { name: a, format: slack, url_env: HOOK }\n  - { name: b, format: json, url_file: /etc/hook, events: [failed] }\n");
        let targets = resolve_targets(&s, &Host("https://hooks.example/T/PLANTED")).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1].url.expose(), "https://hooks.example/T/PLANTED");
        assert!(!format!("{targets:?}").contains("PLANTED"));
        assert!(targets[0].wants(EventKind::Started));
        assert!(!targets[1].wants(EventKind::Started));
        assert!(targets[1].wants(EventKind::Failed));
    }

    #[test]
    fn bad_or_missing_urls_are_reported_without_their_value() {
        let s = spec("  - { name: a, format: slack, url_env: HOOK }\n  - { name: b, format: json, url_file: /etc/missing }\n");
        let errors = resolve_targets(&s, &Host("hooks.example/PLANTED")).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].path, "notifications.0.url_env");
        assert_eq!(errors[1].path, "notifications.1.url_file");
        let all = format!("{errors:?}");
        assert!(!all.contains("PLANTED"), "{all}");
        assert!(
            errors[0]
                .message
                .contains("does not hold an http:// or https:// URL"),
            "{all}"
        );
    }
}
