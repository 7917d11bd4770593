//! Every default in one place (kamal-proxy keeps its deploy, drain and health timings together;
//! so do we).

use std::time::Duration;

/// Where state and the git cache live unless `--state-dir` / `RECONCILER_STATE_DIR` says otherwise.
pub const STATE_DIR: &str = "/var/lib/reconciler";
/// The spec's file name at the repo root (or under `--path`).
pub const SPEC_FILE: &str = "release.yaml";
/// `run`: how often the source is fetched.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// `run`: first and largest delay between retries after a failed cycle.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Health gate: time between probes, one probe's timeout, and the deadline for the whole gate.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// A container with no probe at all must have stayed up this long, without a restart.
pub const MIN_UPTIME: Duration = Duration::from_secs(2);

/// How long a container gets to stop after its stop signal before it is killed (compose: 10 s).
pub const STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// blue-green: the longest wait for nginx's old workers after a switch (ends early once none
/// is left).
pub const DRAIN_PERIOD: Duration = Duration::from_secs(10);
/// blue-green `verify`: time between attempts and the window for the whole check.
pub const VERIFY_INTERVAL: Duration = Duration::from_millis(500);
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(10);
/// Where the operator's nginx.conf is delivered in the proxy container.
pub const NGINX_CONF_PATH: &str = "/etc/nginx/nginx.conf";

/// Notifications: one delivery attempt's bound (connect + response), so a receiver that never
/// answers holds a queue for at most this long per attempt.
pub const NOTIFY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const NOTIFY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per event (the first one included), and the backoff between them.
pub const NOTIFY_MAX_ATTEMPTS: usize = 5;
pub const NOTIFY_RETRY_MIN: Duration = Duration::from_millis(500);
pub const NOTIFY_RETRY_MAX: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a receiver asking for more gets this.
pub const NOTIFY_RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// An event identical to one already sent to the same target within this window is dropped
/// (a spec that stays broken fails every poll; the team hears about it once).
pub const NOTIFY_DEDUPE_WINDOW: Duration = Duration::from_secs(600);
/// Events waiting per target; beyond this the newest is dropped (and logged).
pub const NOTIFY_QUEUE_CAPACITY: usize = 64;
/// `apply` and `run`'s shutdown wait this long for the queues to drain, then give up.
pub const NOTIFY_FLUSH_DEADLINE: Duration = Duration::from_secs(5);
