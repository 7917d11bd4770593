//! reconciler: converges a Docker host to a release spec tracked in git.
//!
//! The modules follow the reconcile pipeline: `source` gets a commit, `spec` loads and validates
//! the release from its tree, `desired` resolves it on this host (secrets, env files) into the
//! containers it wants, `live` observes what the engine runs, `plan` compares the two (pure),
//! `apply` carries the plan out through `engine`, gated by `health`, and undoes it on failure;
//! `deploy` wraps it with the deploy lock and the records in `state` (current, history,
//! journal, audit), and `recovery` resolves a deploy a crash interrupted, from its journal.
//! `cli` and `daemon` are the edges; the daemon's HTTP endpoint is `server` (with `metrics` and
//! `webhook`), and its cycles are requested through `trigger` by the timer, the webhook and
//! `watch`.

pub mod apply;
pub mod cli;
pub mod configs;
pub mod daemon;
pub mod defaults;
pub mod deploy;
pub mod desired;
pub mod engine;
pub mod health;
pub mod job;
pub mod labels;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod proxy;
pub mod reconcile;
pub mod recovery;
pub mod secret;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod spec;
pub mod state;
pub mod status;
pub mod trigger;
pub mod validate;
pub mod watch;
pub mod webhook;
