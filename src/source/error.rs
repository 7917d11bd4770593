//! Errors of the source. Every variant names the source (a credential-free URL, or the local
//! directory) and, where we can tell, the fix.

use std::fmt;

/// A list of names printed comma-separated, or `(none)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names(pub Vec<String>);

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&self.0.join(", "))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("git source {url}: repository not found or unreadable: {message}; check the URL and that the repository exists and is readable")]
    RepoNotFound { url: String, message: String },

    #[error("git source {url}: authentication failed: {message}; {fix}")]
    AuthFailed {
        url: String,
        message: String,
        fix: String,
    },

    #[error("git source {url}: network error: {message}; check that the host is reachable (it is retried on the next poll)")]
    Network { url: String, message: String },

    /// The ssh server's host key is not in the known_hosts of the user running reconciler:
    /// refused, as ssh itself would, until the operator vouches for the host.
    #[error("git source {url}: the ssh host key is unknown or does not match: {message}; add the host's key to ~/.ssh/known_hosts of the user running reconciler (e.g. `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`, then check its fingerprint)")]
    UnknownHostKey { url: String, message: String },

    #[error("git source {url}: unknown ref `{reference}`; use a branch, a tag or a commit id reachable from them. Available: {available}")]
    UnknownRef {
        url: String,
        reference: String,
        available: Names,
    },

    #[error("source {url}: `{name}` not found at commit {revision} under `{dir}`; files there: {siblings}")]
    NotFound {
        url: String,
        revision: String,
        /// The missing entry's name relative to `dir`.
        name: String,
        /// The deepest directory that exists on the way (`/` for the root).
        dir: String,
        siblings: Names,
    },

    #[error("source {url}: `{path}` at commit {revision} is not a {expected}")]
    WrongKind {
        url: String,
        revision: String,
        path: String,
        expected: &'static str,
    },

    #[error("source {url}: invalid path `{path}`: {reason}")]
    InvalidPath {
        url: String,
        path: String,
        reason: &'static str,
    },

    #[error("git source {url}: cache repository {cache}: {message}; check that the state dir is writable (deleting the cache dir is safe)")]
    Cache {
        url: String,
        cache: String,
        message: String,
    },

    #[error("source {url}: reading `{path}`: {source}")]
    Io {
        url: String,
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("git source {url}: {message}")]
    Git { url: String, message: String },
}

impl SourceError {
    /// The credential-free URL (or directory) the error is about.
    pub fn url(&self) -> &str {
        match self {
            SourceError::RepoNotFound { url, .. }
            | SourceError::AuthFailed { url, .. }
            | SourceError::Network { url, .. }
            | SourceError::UnknownHostKey { url, .. }
            | SourceError::UnknownRef { url, .. }
            | SourceError::NotFound { url, .. }
            | SourceError::WrongKind { url, .. }
            | SourceError::InvalidPath { url, .. }
            | SourceError::Cache { url, .. }
            | SourceError::Io { url, .. }
            | SourceError::Git { url, .. } => url,
        }
    }

    /// Whether trying again later may help (network trouble), as opposed to a fix by the user.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Network { .. })
    }
}
