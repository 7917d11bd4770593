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

/// State: how many deploys `history.json` keeps (`--history-limit`).
pub const HISTORY_LIMIT: usize = 10;
/// State: `audit.log` is rotated to `audit.log.1` once it would grow past this size.
pub const AUDIT_MAX_BYTES: u64 = 1024 * 1024;
/// Lock: how often a `--lock-wait` retries the lock.
pub const LOCK_POLL: Duration = Duration::from_millis(100);
/// `lock release --force`: how long the holder gets to roll back and let go after SIGTERM
/// (a rollback restores the proxy and drains, so it takes a drain period or so).
pub const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(60);
/// The actor the daemon records in history and the audit log.
pub const DAEMON_ACTOR: &str = "daemon";

/// `run --listen`: the HTTP endpoint (metrics, health, webhook); loopback only by default.
pub const LISTEN: &str = "127.0.0.1:9100";
/// Largest request body the endpoint reads (a GitHub push event is well below).
pub const HTTP_BODY_LIMIT: usize = 1024 * 1024;
/// A request taking longer is answered 408.
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM, requests in flight get this long to finish.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `--watch`: quiet time after a ref change before the cycle starts (git writes a ref with a
/// lock file and a rename: several events per commit).
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(100);

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

/// How long a `snapshot:` command may run when the spec gives no `timeout`.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
