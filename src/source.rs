//! Where the desired state comes from: a git repository (fetched with git2 into a cache under
//! the state dir) or, for `diff --local`, a directory. Files are always read from the tree of
//! the resolved commit, never from a working tree.
//!
//! - [`GitSource`] fetches a remote into a bare cache repo and resolves the configured ref to a
//!   [`Snapshot`]; [`LocalDir`] reads a plain directory. Both implement [`SourceTree`].
//! - URLs are printed only through [`redacted_url`]; tokens are read from the env at fetch
//!   time into a [`crate::secret::Secret`] and handed to libgit2 only through the credentials
//!   callback, never in a URL.

mod auth;
mod error;
mod git;
mod local;
mod paths;
mod url;

use std::fmt;
use std::path::PathBuf;

pub use error::{Names, SourceError};
pub use git::{GitSource, Snapshot};
pub use local::{LocalDir, LOCAL_REVISION};
pub use url::redacted_url;

/// The env var holding an https token when the config names none.
pub const DEFAULT_TOKEN_ENV: &str = "RECONCILER_GIT_TOKEN";

/// The spec file's name inside the configured directory.
pub const SPEC_FILE: &str = "release.yaml";

/// Where to fetch the release from.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SourceConfig {
    /// `file://`, a local path, `https://`, `ssh://` or scp-like `git@host:org/repo.git`. May
    /// carry credentials; it is only ever printed through [`redacted_url`].
    pub url: String,
    /// Branch, tag or (abbreviated) commit id; `None` = the remote's default branch.
    pub reference: Option<String>,
    /// Directory inside the repo holding release.yaml; `""` = the root.
    pub path: String,
    /// Name of the env var holding an https token; `None` = [`DEFAULT_TOKEN_ENV`].
    pub token_env: Option<String>,
    /// Private key file for ssh URLs.
    pub ssh_key: Option<PathBuf>,
}

impl SourceConfig {
    pub fn new(url: impl Into<String>) -> SourceConfig {
        SourceConfig {
            url: url.into(),
            ..SourceConfig::default()
        }
    }

    /// `path`/release.yaml.
    pub fn spec_path(&self) -> String {
        paths::join(&self.path, SPEC_FILE)
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redacted_url(&self.url))
            .field("reference", &self.reference)
            .field("path", &self.path)
            .field("token_env", &self.token_env)
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// Read access to one revision of the release's files, from git or a local directory. Paths
/// are relative to the repo root, use `/`, and may not contain `..`.
pub trait SourceTree: Send + Sync {
    /// The 40-hex commit id, or [`LOCAL_REVISION`].
    fn revision(&self) -> &str;

    /// First line of the commit message; empty for a local directory.
    fn subject(&self) -> &str {
        ""
    }

    /// `name <email>` of the commit's author; empty for a local directory.
    fn author(&self) -> &str {
        ""
    }

    /// Repo-relative path of release.yaml.
    fn spec_path(&self) -> String;

    fn read_file(&self, repo_path: &str) -> Result<Vec<u8>, SourceError>;

    /// Every file under `repo_path`, recursively, sorted by path; paths are relative to the repo
    /// root.
    fn read_dir(&self, repo_path: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError>;

    /// The bytes of release.yaml.
    fn read_spec(&self) -> Result<Vec<u8>, SourceError> {
        self.read_file(&self.spec_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_credentials() {
        let mut c = SourceConfig::new("https://bob:tok3n@example.com/x.git");
        c.path = "deploy".into();
        let debug = format!("{c:?}");
        assert!(!debug.contains("tok3n"), "{debug}");
        assert!(debug.contains("https://bob@example.com/x.git"), "{debug}");
        assert_eq!(c.spec_path(), "deploy/release.yaml");
    }
}
