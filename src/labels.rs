//! The labels that mark what the reconciler owns.
//!
//! Ownership lives on the engine, not in a database: after a restart the reconciler finds its
//! objects by these labels, and sees drift by comparing the config hash label with the desired
//! one (the idea of compose's `com.docker.compose.config-hash`). Objects without
//! [`MANAGED_BY`] = [`MANAGER`] are never touched.

pub const MANAGED_BY: &str = "io.reconciler.managed-by";
pub const MANAGER: &str = "reconciler";
pub const RELEASE: &str = "io.reconciler.release";
pub const SERVICE: &str = "io.reconciler.service";
pub const REVISION: &str = "io.reconciler.revision";
/// sha256 of the canonical desired container config, secret values included.
pub const CONFIG_HASH: &str = "io.reconciler.config-hash";
/// The canonical config itself (secret values replaced by a marker), so `diff` can name the
/// fields that changed without keeping a copy anywhere else.
pub const CONFIG: &str = "io.reconciler.config";
/// `blue` / `green` for blue-green services; absent for recreate.
pub const COLOR: &str = "io.reconciler.color";
/// On a job's container (`jobs:`): the job's key (`api/migrate`). Such a container is not a
/// service's: `live::observe` leaves it out, and a leftover is removed before the next deploy.
pub const JOB: &str = "io.reconciler.job";
/// `network`, `volume` or `container`, to make label filters unambiguous.
pub const KIND: &str = "io.reconciler.kind";

/// The label filter value (`key=value`) selecting everything one release owns.
pub fn release_filter(release: &str) -> Vec<String> {
    vec![
        format!("{MANAGED_BY}={MANAGER}"),
        format!("{RELEASE}={release}"),
    ]
}
