//! The nginx proxy in front of blue-green services.
//!
//! `render` turns "which color serves each route" into an upstreams file and reads it back
//! (pure); `nginx` delivers files into the proxy container, checks them with `nginx -t`,
//! reloads with SIGHUP (never a restart, so connections survive) and puts the previous files
//! back when anything fails.

mod nginx;
mod render;

pub use nginx::{
    install, install_over, old_workers, read_files, reload, restore, seed, PreviousFile, ProxyFile,
    Reloaded,
};
pub use render::{
    parse_upstreams, read_markers, render_upstreams, serving_colors, upstream_hosts, Marker,
    Servers, SlotTarget, UpstreamTarget,
};

use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy `{container}`: cannot read `{path}`: {source}")]
    Read {
        container: String,
        path: String,
        #[source]
        source: EngineError,
    },

    #[error("proxy `{container}`: cannot write `{path}`: {source}")]
    Write {
        container: String,
        path: String,
        #[source]
        source: EngineError,
    },

    #[error("proxy `{container}`: nginx rejected the config ({}); the previous files are back and nginx still serves them: {message}", files_list(files))]
    ConfigTest {
        container: String,
        /// The files just written (empty for a plain reload).
        files: Vec<String>,
        /// nginx's own output (`nginx: [emerg] ... in /etc/nginx/...:3`).
        message: String,
    },

    #[error("proxy `{container}`: cannot run `nginx -t`: {source}")]
    Test {
        container: String,
        #[source]
        source: EngineError,
    },

    #[error("proxy `{container}`: cannot send SIGHUP to reload nginx: {source}")]
    Signal {
        container: String,
        #[source]
        source: EngineError,
    },

    #[error("proxy `{container}`: nginx started no new workers within {waited_ms} ms of SIGHUP, so the new config is not known to serve; the previous files were put back and reloaded (fix: see `docker logs {container}` for nginx's reason)")]
    ReloadNotSeen { container: String, waited_ms: u128 },

    #[error("proxy `{container}`: cannot list nginx's processes: {source}")]
    Processes {
        container: String,
        #[source]
        source: EngineError,
    },

    #[error("proxy `{container}`: could not put `{path}` back ({source}) after: {cause} (fix: check the file by hand; nginx still runs the config it loaded last)")]
    RollbackFailed {
        container: String,
        path: String,
        source: EngineError,
        cause: Box<ProxyError>,
    },
}

fn files_list(files: &[String]) -> String {
    if files.is_empty() {
        "config in place".to_string()
    } else {
        files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
