//! The git source: a bare cache repo per URL under the state dir, fetched with git2, and
//! snapshots that read files from the tree of the resolved commit.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, FetchPrune,
    ObjectType, Oid, RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};
use tracing::{debug, info, info_span, warn};

use super::auth::{self, AuthInputs, Choice};
use super::error::{Names, SourceError};
use super::paths;
use super::url::{ParsedUrl, Transport};
use super::{SourceConfig, SourceTree, DEFAULT_TOKEN_ENV};
use crate::secret::{Secret, REDACTED};

const REMOTE: &str = "origin";
const BRANCH_SPEC: &str = "+refs/heads/*:refs/remotes/origin/*";
const TAG_SPEC: &str = "+refs/tags/*:refs/tags/*";
const BRANCH_PREFIX: &str = "refs/remotes/origin/";
const TAG_PREFIX: &str = "refs/tags/";
const ORIGIN_HEAD: &str = "refs/remotes/origin/HEAD";
/// How many refs an unknown-ref error lists.
const AVAILABLE_LIMIT: usize = 10;

/// A git repository to fetch the release from.
pub struct GitSource {
    config: SourceConfig,
    url: ParsedUrl,
    cache_dir: PathBuf,
    /// Serialises fetches into the cache (libgit2 takes ref locks and would fail a concurrent
    /// fetch rather than wait) and remembers the last revision, to log only real moves at info.
    last_revision: Mutex<Option<String>>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("config", &self.config)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl GitSource {
    /// Fails only if a relative local path cannot be made absolute (the cwd is gone).
    pub fn new(config: SourceConfig, state_dir: &Path) -> Result<GitSource, SourceError> {
        let url = ParsedUrl::parse(&config.url).map_err(|e| SourceError::Io {
            url: super::redacted_url(&config.url),
            path: super::redacted_url(&config.url),
            source: e,
        })?;
        let cache_dir = state_dir.join("git").join(cache_key(&url.remote_url));
        Ok(GitSource {
            config,
            url,
            cache_dir,
            last_revision: Mutex::new(None),
        })
    }

    /// The URL as it may be printed.
    pub fn url(&self) -> &str {
        &self.url.display
    }

    /// `<state_dir>/git/<first 16 hex of sha256(credential-free url)>`.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// Fetches the remote into the cache and resolves the configured reference. Blocks on
    /// network and disk: from async code use [`GitSource::fetch_async`].
    pub fn fetch(&self) -> Result<Snapshot, SourceError> {
        let span = info_span!("git_fetch", url = %self.url.display);
        let _entered = span.enter();
        // A poisoned lock only means an earlier fetch panicked; the cache is still consistent
        // (libgit2 writes refs atomically), so go on.
        let mut last = self
            .last_revision
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());

        let repo = self.open_cache()?;
        self.ensure_remote(&repo)?;
        let default_branch = self.fetch_into(&repo)?;
        self.record_default_branch(&repo, default_branch.as_deref());
        let commit = self.resolve(&repo)?;
        let snapshot = self.snapshot(&commit)?;

        match last.as_deref() {
            Some(prev) if prev == snapshot.revision => {
                debug!(revision = %snapshot.revision, "no new commit")
            }
            Some(prev) => info!(
                from = %prev,
                revision = %snapshot.revision,
                subject = %snapshot.subject,
                "revision moved"
            ),
            None => info!(
                revision = %snapshot.revision,
                subject = %snapshot.subject,
                "fetched"
            ),
        }
        *last = Some(snapshot.revision.clone());
        Ok(snapshot)
    }

    /// [`GitSource::fetch`] on tokio's blocking pool, since git2 blocks.
    pub async fn fetch_async(self: Arc<Self>) -> Result<Snapshot, SourceError> {
        let url = self.url.display.clone();
        tokio::task::spawn_blocking(move || self.fetch())
            .await
            .map_err(|e| SourceError::Git {
                url,
                message: format!("the fetch task failed: {e}"),
            })?
    }

    fn cache_error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::Cache {
            url: self.url.display.clone(),
            cache: self.cache_dir.display().to_string(),
            message: message.to_string(),
        }
    }

    /// Opens the bare cache repo, creating it on first use. A dir that is not a repo (an
    /// interrupted first clone, a stray dir) is replaced: it only ever holds fetched data.
    fn open_cache(&self) -> Result<Repository, SourceError> {
        if self.cache_dir.exists() {
            match Repository::open_bare(&self.cache_dir) {
                Ok(repo) => return Ok(repo),
                Err(e) => {
                    warn!(cache = %self.cache_dir.display(), error = %e.message(), "cache repo unreadable; recreating it");
                    std::fs::remove_dir_all(&self.cache_dir)
                        .map_err(|e| self.cache_error(format!("removing it: {e}")))?;
                }
            }
        }
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(|e| self.cache_error(format!("creating it: {e}")))?;
        Repository::init_bare(&self.cache_dir).map_err(|e| self.cache_error(e.message()))
    }

    /// Points `origin` at the credential-free URL with our refspecs.
    fn ensure_remote(&self, repo: &Repository) -> Result<(), SourceError> {
        let url = &self.url.remote_url;
        match repo.find_remote(REMOTE) {
            Ok(remote) if remote.url().ok() == Some(url.as_str()) => Ok(()),
            Ok(_) => repo
                .remote_set_url(REMOTE, url)
                .map_err(|e| self.cache_error(e.message())),
            Err(_) => {
                repo.remote_with_fetch(REMOTE, url, BRANCH_SPEC)
                    .map_err(|e| self.cache_error(e.message()))?;
                repo.remote_add_fetch(REMOTE, TAG_SPEC)
                    .map_err(|e| self.cache_error(e.message()))
            }
        }
    }

    fn auth_inputs(&self) -> AuthInputs {
        let token_env = self
            .config
            .token_env
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_string());
        let token = std::env::var(&token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        AuthInputs {
            token_env,
            token,
            url_user: self.url.user.clone(),
            url_password: self.url.password.clone(),
            ssh_key: self.config.ssh_key.clone(),
        }
    }

    /// Fetches all branches and tags (pruning deleted ones) and returns the remote's default
    /// branch (`refs/heads/...`) if it advertises one.
    fn fetch_into(&self, repo: &Repository) -> Result<Option<String>, SourceError> {
        let inputs = self.auth_inputs();
        let problem: RefCell<Option<String>> = RefCell::new(None);
        let key_tries = Cell::new(0u32);
        let pass_tries = Cell::new(0u32);

        let mut remote = repo
            .find_remote(REMOTE)
            .map_err(|e| self.cache_error(e.message()))?;
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, username_from_url, allowed| {
            let counter = if allowed.contains(CredentialType::SSH_KEY) {
                &key_tries
            } else {
                &pass_tries
            };
            let attempt = counter.get();
            if !allowed.contains(CredentialType::USERNAME) {
                counter.set(attempt + 1);
            }
            match auth::choose(&inputs, allowed, username_from_url, attempt) {
                Ok(choice) => to_cred(choice),
                Err(fix) => {
                    let err = git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, &fix);
                    *problem.borrow_mut() = Some(fix);
                    Err(err)
                }
            }
        });
        let mut opts = FetchOptions::new();
        // Full fetches: libgit2 cannot fetch shallow from a local remote, and a cache that is
        // sometimes shallow would make commit-id refs fail unpredictably.
        opts.remote_callbacks(callbacks)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::All)
            .update_fetchhead(false);
        let result = remote.fetch(&[] as &[&str], Some(&mut opts), Some("reconciler fetch"));
        drop(opts);
        if let Err(e) = result {
            return Err(self.classify(&e, problem.take(), &inputs));
        }
        // Available after the fetch disconnected: libgit2 keeps the ref advertisement.
        Ok(remote
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(str::to_string)))
    }

    /// Turns a libgit2 fetch error into one that says what to do.
    fn classify(
        &self,
        e: &git2::Error,
        auth_fix: Option<String>,
        inputs: &AuthInputs,
    ) -> SourceError {
        let url = self.url.display.clone();
        let message = self.scrub(e.message(), inputs);
        if let Some(fix) = auth_fix {
            return SourceError::AuthFailed { url, message, fix };
        }
        let lower = message.to_ascii_lowercase();
        let auth_like = e.code() == ErrorCode::Auth
            || lower.contains("401")
            || lower.contains("403")
            || lower.contains("authentication");
        if auth_like {
            let fix = match self.url.transport {
                Transport::Ssh => "check --ssh-key and that the key has read access".to_string(),
                _ => format!(
                    "set {} to a token with read access to the repository",
                    inputs.token_env
                ),
            };
            return SourceError::AuthFailed { url, message, fix };
        }
        if self.url.transport == Transport::Local {
            // libgit2 reports a missing local path as "unsupported URL protocol".
            let path = local_path(&self.url.remote_url);
            let message = if path.exists() {
                message
            } else {
                format!("{} does not exist", path.display())
            };
            return SourceError::RepoNotFound { url, message };
        }
        let not_found = e.code() == ErrorCode::NotFound
            || lower.contains("not found")
            || lower.contains("404")
            || lower.contains("could not find repository")
            || lower.contains("not a git repository")
            || lower.contains("failed to resolve path");
        if not_found {
            return SourceError::RepoNotFound { url, message };
        }
        if lower.contains("hostkey") || lower.contains("host key") {
            return SourceError::UnknownHostKey { url, message };
        }
        let network_like = lower.contains("failed to connect")
            || lower.contains("connection refused")
            || lower.contains("timed out")
            || lower.contains("failed to resolve address");
        match e.class() {
            ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Ssl => {
                SourceError::Network { url, message }
            }
            _ if network_like => SourceError::Network { url, message },
            _ => SourceError::Git { url, message },
        }
    }

    /// libgit2 only ever sees the credential-free URL, but a server may echo what it was sent:
    /// strip every credential we know of from a message before it is shown.
    fn scrub(&self, message: &str, inputs: &AuthInputs) -> String {
        let mut out = message.to_string();
        if !self.config.url.is_empty() {
            out = out.replace(&self.config.url, &self.url.display);
        }
        let mut secrets: Vec<&str> = [inputs.token.as_ref(), self.url.password.as_ref()]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .collect();
        // A lone user in an http(s) URL is usually a token (see `redacted_url`).
        if self.url.transport == Transport::Http && self.url.password.is_none() {
            secrets.extend(self.url.user.as_deref());
        }
        for secret in secrets {
            if !secret.is_empty() {
                out = out.replace(secret, REDACTED);
            }
        }
        out
    }

    /// Remembers the remote's default branch as `origin/HEAD`, so a later fetch that does not
    /// get an advertisement (or a run offline) still knows it.
    fn record_default_branch(&self, repo: &Repository, branch: Option<&str>) {
        let Some(name) = branch.and_then(|b| b.strip_prefix("refs/heads/")) else {
            return;
        };
        let target = format!("{BRANCH_PREFIX}{name}");
        if repo.find_reference(&target).is_err() {
            return;
        }
        if let Err(e) = repo.reference_symbolic(ORIGIN_HEAD, &target, true, "default branch") {
            warn!(error = %e.message(), "could not record the default branch");
        }
    }

    fn resolve<'r>(&self, repo: &'r Repository) -> Result<git2::Commit<'r>, SourceError> {
        let Some(reference) = self.config.reference.as_deref().filter(|r| !r.is_empty()) else {
            return self.resolve_default(repo);
        };
        let mut candidates = Vec::new();
        if let Some(branch) = reference.strip_prefix("refs/heads/") {
            candidates.push(format!("{BRANCH_PREFIX}{branch}"));
        } else if reference.starts_with("refs/") {
            candidates.push(reference.to_string());
        } else {
            // git's own order: a tag wins over a branch of the same name.
            candidates.push(format!("{TAG_PREFIX}{reference}"));
            candidates.push(format!("{BRANCH_PREFIX}{reference}"));
        }
        for name in &candidates {
            if let Ok(r) = repo.find_reference(name) {
                return r.peel_to_commit().map_err(|e| SourceError::Git {
                    url: self.url.display.clone(),
                    message: format!(
                        "ref `{reference}` does not point to a commit: {}",
                        e.message()
                    ),
                });
            }
        }
        let is_hex =
            (4..=40).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            if let Ok(object) = repo.find_object_by_prefix(reference, Some(ObjectType::Commit)) {
                if let Ok(commit) = object.peel_to_commit() {
                    if self.reachable(repo, commit.id()) {
                        return Ok(commit);
                    }
                }
            }
        }
        Err(self.unknown_ref(repo, reference))
    }

    /// `origin/HEAD` as recorded from the remote, else `main`, else `master`.
    fn resolve_default<'r>(&self, repo: &'r Repository) -> Result<git2::Commit<'r>, SourceError> {
        let names = [
            ORIGIN_HEAD.to_string(),
            format!("{BRANCH_PREFIX}main"),
            format!("{BRANCH_PREFIX}master"),
        ];
        for name in &names {
            if let Ok(commit) = repo.find_reference(name).and_then(|r| r.peel_to_commit()) {
                return Ok(commit);
            }
        }
        Err(self.unknown_ref(repo, "(the remote's default branch)"))
    }

    /// Whether a commit is an ancestor of (or is) a fetched branch or tag. A commit id must be
    /// reachable: objects of a force-pushed-away commit may linger in the cache.
    fn reachable(&self, repo: &Repository, oid: Oid) -> bool {
        for glob in ["refs/remotes/origin/*", "refs/tags/*"] {
            let Ok(refs) = repo.references_glob(glob) else {
                continue;
            };
            for r in refs.flatten() {
                if let Ok(tip) = r.peel_to_commit() {
                    let tip = tip.id();
                    if tip == oid || repo.graph_descendant_of(tip, oid).unwrap_or(false) {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn unknown_ref(&self, repo: &Repository, reference: &str) -> SourceError {
        let mut available = Vec::new();
        let mut branches = ref_names(repo, "refs/remotes/origin/*", BRANCH_PREFIX);
        branches.retain(|b| b != "HEAD");
        let tags = ref_names(repo, "refs/tags/*", TAG_PREFIX);
        available.extend(branches.into_iter().map(|b| format!("{b} (branch)")));
        available.extend(tags.into_iter().map(|t| format!("{t} (tag)")));
        let more = available.len().saturating_sub(AVAILABLE_LIMIT);
        available.truncate(AVAILABLE_LIMIT);
        if more > 0 {
            available.push(format!("... and {more} more"));
        }
        SourceError::UnknownRef {
            url: self.url.display.clone(),
            reference: reference.to_string(),
            available: Names(available),
        }
    }

    fn snapshot(&self, commit: &git2::Commit<'_>) -> Result<Snapshot, SourceError> {
        Ok(Snapshot::of_commit(
            commit,
            self.url.display.clone(),
            self.cache_dir.clone(),
            self.config.path.clone(),
        ))
    }
}

fn to_cred(choice: Choice) -> Result<Cred, git2::Error> {
    match choice {
        Choice::Username(user) => Cred::username(&user),
        Choice::UserPass { user, password } => Cred::userpass_plaintext(&user, password.expose()),
        Choice::SshKey { user, key } => Cred::ssh_key(&user, None, &key, None),
    }
}

/// The filesystem path of a local remote (`file://` URL or plain path).
fn local_path(remote_url: &str) -> PathBuf {
    PathBuf::from(remote_url.strip_prefix("file://").unwrap_or(remote_url))
}

/// Short names of the refs matching `glob`, sorted.
fn ref_names(repo: &Repository, glob: &str, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = repo
        .references_glob(glob)
        .map(|refs| {
            refs.flatten()
                .filter_map(|r| {
                    r.name()
                        .ok()
                        .map(|n| n.trim_start_matches(prefix).to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// First 16 hex digits of sha256 of the credential-free URL: one cache per remote, and the
/// dir name leaks nothing.
fn cache_key(remote_url: &str) -> String {
    let digest = Sha256::digest(remote_url.as_bytes());
    let mut key = hex::encode(digest);
    key.truncate(16);
    key
}

/// One fetched commit of a git source, with read access to its tree.
///
/// It holds the cache repo's path and the commit id, not an open `git2::Repository` (which is
/// not `Sync`), and opens the repo for each read. That keeps it `Send + Sync + Clone` without a
/// lock, and reads are few (the spec and its config dirs). The commit's objects stay valid
/// across later fetches: fetching never deletes objects, it only moves and prunes refs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The 40-hex commit id: the release's revision.
    pub revision: String,
    /// The first line of the commit message.
    pub subject: String,
    /// `name <email>` of the commit's author.
    pub author: String,
    /// Committer time, unix seconds.
    pub time: i64,
    url: String,
    cache_dir: PathBuf,
    commit: Oid,
    spec_dir: String,
}

impl Snapshot {
    /// A commit already in the bare cache at `cache_dir`, read without contacting the remote:
    /// `rollback` re-applies a recorded revision this way even when the remote is gone.
    pub fn from_cache(
        cache_dir: &Path,
        url: &str,
        revision: &str,
        spec_dir: &str,
    ) -> Result<Snapshot, SourceError> {
        let cache_error = |message: String| SourceError::Cache {
            url: url.to_string(),
            cache: cache_dir.display().to_string(),
            message,
        };
        let repo = Repository::open_bare(cache_dir).map_err(|e| cache_error(e.message().into()))?;
        let commit = Oid::from_str(revision)
            .and_then(|oid| repo.find_commit(oid))
            .map_err(|e| {
                cache_error(format!(
                    "commit {} is not in the cache: {}",
                    paths::short(revision),
                    e.message()
                ))
            })?;
        Ok(Snapshot::of_commit(
            &commit,
            url.to_string(),
            cache_dir.to_path_buf(),
            spec_dir.to_string(),
        ))
    }

    /// The snapshot of `commit` in the cache at `cache_dir`, with the commit's subject and
    /// author (notifications name them).
    fn of_commit(
        commit: &git2::Commit<'_>,
        url: String,
        cache_dir: PathBuf,
        spec_dir: String,
    ) -> Snapshot {
        let author = commit.author();
        Snapshot {
            revision: commit.id().to_string(),
            subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                .into_owned(),
            author: format!(
                "{} <{}>",
                String::from_utf8_lossy(author.name_bytes()),
                String::from_utf8_lossy(author.email_bytes())
            ),
            time: commit.time().seconds(),
            url,
            cache_dir,
            commit: commit.id(),
            spec_dir,
        }
    }

    /// The source URL, credential-free.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `path`/release.yaml.
    pub fn spec_path(&self) -> String {
        paths::join(&self.spec_dir, super::SPEC_FILE)
    }

    pub fn read_file(&self, repo_path: &str) -> Result<Vec<u8>, SourceError> {
        let comps = paths::components(&self.url, repo_path)?;
        let repo = self.open()?;
        let tree = self.root_tree(&repo)?;
        let found = self.lookup(&repo, &tree, &comps)?;
        match found {
            Found::Blob(blob) => Ok(blob.content().to_vec()),
            Found::Tree(_) => Err(self.wrong_kind(repo_path, "file (it is a directory)")),
        }
    }

    pub fn read_dir(&self, repo_path: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let comps = paths::components(&self.url, repo_path)?;
        let repo = self.open()?;
        let root = self.root_tree(&repo)?;
        let dir = match self.lookup(&repo, &root, &comps)? {
            Found::Tree(tree) => tree,
            Found::Blob(_) => return Err(self.wrong_kind(repo_path, "directory")),
        };
        let base = comps.join("/");
        let mut out = Vec::new();
        self.collect(&repo, &dir, &base, &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn collect(
        &self,
        repo: &Repository,
        tree: &git2::Tree<'_>,
        prefix: &str,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<(), SourceError> {
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            let path = paths::join(prefix, &name);
            match entry_kind(&entry) {
                Kind::Tree => {
                    let sub = repo.find_tree(entry.id()).map_err(|e| self.git_error(&e))?;
                    self.collect(repo, &sub, &path, out)?;
                }
                Kind::Blob => {
                    let blob = repo.find_blob(entry.id()).map_err(|e| self.git_error(&e))?;
                    out.push((path, blob.content().to_vec()));
                }
                Kind::Other(what) => return Err(self.wrong_kind(&path, what)),
            }
        }
        Ok(())
    }

    fn open(&self) -> Result<Repository, SourceError> {
        Repository::open_bare(&self.cache_dir).map_err(|e| SourceError::Cache {
            url: self.url.clone(),
            cache: self.cache_dir.display().to_string(),
            message: e.message().to_string(),
        })
    }

    fn root_tree<'r>(&self, repo: &'r Repository) -> Result<git2::Tree<'r>, SourceError> {
        repo.find_commit(self.commit)
            .and_then(|c| c.tree())
            .map_err(|e| self.git_error(&e))
    }

    fn lookup<'r>(
        &self,
        repo: &'r Repository,
        root: &git2::Tree<'r>,
        comps: &[&str],
    ) -> Result<Found<'r>, SourceError> {
        let mut current = Found::Tree(root.clone());
        for (i, comp) in comps.iter().enumerate() {
            let Found::Tree(tree) = &current else {
                return Err(self.wrong_kind(&comps[..i].join("/"), "directory"));
            };
            let Some(entry) = tree.get_name(comp) else {
                return Err(paths::not_found(
                    &self.url,
                    &self.revision,
                    comps,
                    |prefix| list_tree(repo, root, prefix),
                ));
            };
            let (kind, id) = (entry_kind(&entry), entry.id());
            // The entry borrows `current`; end that before replacing it.
            drop(entry);
            current = match kind {
                Kind::Tree => Found::Tree(repo.find_tree(id).map_err(|e| self.git_error(&e))?),
                Kind::Blob => Found::Blob(repo.find_blob(id).map_err(|e| self.git_error(&e))?),
                Kind::Other(what) => return Err(self.wrong_kind(&comps[..=i].join("/"), what)),
            };
        }
        Ok(current)
    }

    fn wrong_kind(&self, path: &str, expected: &'static str) -> SourceError {
        SourceError::WrongKind {
            url: self.url.clone(),
            revision: paths::short(&self.revision).to_string(),
            path: path.to_string(),
            expected,
        }
    }

    fn git_error(&self, e: &git2::Error) -> SourceError {
        SourceError::Git {
            url: self.url.clone(),
            message: format!(
                "reading commit {}: {}",
                paths::short(&self.revision),
                e.message()
            ),
        }
    }
}

impl SourceTree for Snapshot {
    fn revision(&self) -> &str {
        &self.revision
    }
    fn subject(&self) -> &str {
        &self.subject
    }
    fn author(&self) -> &str {
        &self.author
    }
    fn spec_path(&self) -> String {
        Snapshot::spec_path(self)
    }
    fn read_file(&self, repo_path: &str) -> Result<Vec<u8>, SourceError> {
        Snapshot::read_file(self, repo_path)
    }
    fn read_dir(&self, repo_path: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        Snapshot::read_dir(self, repo_path)
    }
}

enum Found<'r> {
    Tree(git2::Tree<'r>),
    Blob(git2::Blob<'r>),
}

enum Kind {
    Tree,
    Blob,
    /// Symlinks and submodules: refused rather than followed, so that what is deployed is
    /// exactly what the tree holds.
    Other(&'static str),
}

fn entry_kind(entry: &git2::TreeEntry<'_>) -> Kind {
    const LINK: i32 = 0o120000;
    match entry.kind() {
        Some(ObjectType::Tree) => Kind::Tree,
        Some(ObjectType::Blob) if entry.filemode() == LINK => {
            Kind::Other("regular file (it is a symlink, which is not followed)")
        }
        Some(ObjectType::Blob) => Kind::Blob,
        _ => Kind::Other("regular file (it is a submodule, which is not fetched)"),
    }
}

/// Entry names of the directory at `prefix` (dirs with a trailing `/`), if it is one.
fn list_tree(repo: &Repository, root: &git2::Tree<'_>, prefix: &[&str]) -> Option<Vec<String>> {
    let tree = if prefix.is_empty() {
        root.clone()
    } else {
        let entry = root.get_path(Path::new(&prefix.join("/"))).ok()?;
        repo.find_tree(entry.id()).ok()?
    };
    Some(
        tree.iter()
            .map(|e| {
                let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                if e.kind() == Some(ObjectType::Tree) {
                    format!("{name}/")
                } else {
                    name
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_scrubbed_and_auth_failures_carry_the_fix() {
        let state = tempfile::tempdir().unwrap();
        let mut config = SourceConfig::new("https://tok3n@example.com/x.git");
        config.token_env = Some("RECONCILER_TEST_UNSET_TOKEN_VAR".into());
        let src = GitSource::new(config, state.path()).unwrap();
        let mut inputs = src.auth_inputs();
        inputs.token = Some(Secret::new("envs3cret"));
        let raw = "remote said: bad https://tok3n@example.com/x.git user tok3n pw envs3cret";
        let scrubbed = src.scrub(raw, &inputs);
        assert!(
            !scrubbed.contains("tok3n") && !scrubbed.contains("envs3cret"),
            "{scrubbed}"
        );

        let e = git2::Error::new(ErrorCode::Auth, ErrorClass::Http, raw);
        let err = src.classify(&e, None, &inputs);
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, SourceError::AuthFailed { .. }), "{shown}");
        assert!(
            shown.contains("set RECONCILER_TEST_UNSET_TOKEN_VAR"),
            "{shown}"
        );
        assert!(
            !shown.contains("tok3n") && !shown.contains("envs3cret"),
            "{shown}"
        );
    }

    #[test]
    fn cache_key_is_16_hex_and_ignores_credentials() {
        let a = ParsedUrl::parse("https://u:tok@example.com/x.git").unwrap();
        let b = ParsedUrl::parse("https://example.com/x.git").unwrap();
        assert_eq!(cache_key(&a.remote_url), cache_key(&b.remote_url));
        let key = cache_key(&a.remote_url);
        assert_eq!(key.len(), 16);
        assert!(key.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
