//! reconciler: converges a Docker host to a release spec tracked in git.
//!
//! The modules follow the reconcile pipeline: `source` gets a commit, `spec` loads and validates
//! the release from its tree, `desired` resolves it on this host (secrets, env files) into the
//! containers it wants, `live` observes what the engine runs, `plan` compares the two (pure),
//! `apply` carries the plan out through `engine`, gated by `health`, and undoes it on failure.
//! `cli` and `daemon` are the edges.

pub mod apply;
pub mod cli;
pub mod daemon;
pub mod defaults;
pub mod desired;
pub mod engine;
pub mod health;
pub mod labels;
pub mod live;
pub mod logging;
pub mod notify;
pub mod plan;
pub mod proxy;
pub mod reconcile;
pub mod secret;
pub mod source;
pub mod spec;
pub mod state;
