//! A plain directory as a source, for `reconciler diff --local DIR`: same reads as a git
//! snapshot, with the same path rules (no `..`, symlinks refused) so a local diff shows what a
//! commit of that directory would deploy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::SourceError;
use super::{paths, SourceTree, SPEC_FILE};

/// The revision every local tree reports.
pub const LOCAL_REVISION: &str = "local";

#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    /// Shown in errors in place of a URL.
    display: String,
    spec_dir: String,
}

impl LocalDir {
    /// `root` plays the repo root; release.yaml is read from `root/release.yaml`.
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        let root = root.into();
        LocalDir {
            display: root.display().to_string(),
            root,
            spec_dir: String::new(),
        }
    }

    /// Reads release.yaml from `spec_dir` under the root (the source's `path`).
    pub fn with_spec_dir(mut self, spec_dir: impl Into<String>) -> LocalDir {
        self.spec_dir = spec_dir.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn spec_path(&self) -> String {
        paths::join(&self.spec_dir, SPEC_FILE)
    }

    pub fn read_file(&self, repo_path: &str) -> Result<Vec<u8>, SourceError> {
        let comps = paths::components(&self.display, repo_path)?;
        let full = self.locate(&comps)?;
        let meta = self.metadata(&full, repo_path)?;
        if meta.is_dir() {
            return Err(self.wrong_kind(repo_path, "file (it is a directory)"));
        }
        fs::read(&full).map_err(|e| self.io(repo_path, e))
    }

    pub fn read_dir(&self, repo_path: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let comps = paths::components(&self.display, repo_path)?;
        let full = self.locate(&comps)?;
        if !self.metadata(&full, repo_path)?.is_dir() {
            return Err(self.wrong_kind(repo_path, "directory"));
        }
        let mut out = Vec::new();
        self.collect(&full, &comps.join("/"), &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn collect(
        &self,
        dir: &Path,
        prefix: &str,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<(), SourceError> {
        let entries = fs::read_dir(dir).map_err(|e| self.io(prefix, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io(prefix, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = paths::join(prefix, &name);
            let meta = self.metadata(&entry.path(), &path)?;
            if meta.is_dir() {
                self.collect(&entry.path(), &path, out)?;
            } else {
                out.push((
                    path.clone(),
                    fs::read(entry.path()).map_err(|e| self.io(&path, e))?,
                ));
            }
        }
        Ok(())
    }

    /// The full path of `comps`, after checking that every component exists; a missing one
    /// gives the same "not found ...; files there" error as a git tree.
    fn locate(&self, comps: &[&str]) -> Result<PathBuf, SourceError> {
        let mut full = self.root.clone();
        for comp in comps {
            full.push(comp);
            if fs::symlink_metadata(&full).is_err() {
                return Err(paths::not_found(
                    &self.display,
                    LOCAL_REVISION,
                    comps,
                    |prefix| self.list(prefix),
                ));
            }
        }
        Ok(full)
    }

    /// Metadata without following links; a symlink is refused like in a git tree.
    fn metadata(&self, full: &Path, repo_path: &str) -> Result<fs::Metadata, SourceError> {
        let meta = fs::symlink_metadata(full).map_err(|e| self.io(repo_path, e))?;
        if meta.file_type().is_symlink() {
            return Err(self.wrong_kind(
                repo_path,
                "regular file (it is a symlink, which is not followed)",
            ));
        }
        Ok(meta)
    }

    fn list(&self, prefix: &[&str]) -> Option<Vec<String>> {
        let dir = prefix.iter().fold(self.root.clone(), |p, c| p.join(c));
        let entries = fs::read_dir(dir).ok()?;
        Some(
            entries
                .flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        format!("{name}/")
                    } else {
                        name
                    }
                })
                .collect(),
        )
    }

    fn wrong_kind(&self, path: &str, expected: &'static str) -> SourceError {
        SourceError::WrongKind {
            url: self.display.clone(),
            revision: LOCAL_REVISION.to_string(),
            path: path.to_string(),
            expected,
        }
    }

    fn io(&self, path: &str, source: io::Error) -> SourceError {
        SourceError::Io {
            url: self.display.clone(),
            path: path.to_string(),
            source,
        }
    }
}

impl SourceTree for LocalDir {
    fn revision(&self) -> &str {
        LOCAL_REVISION
    }
    fn spec_path(&self) -> String {
        LocalDir::spec_path(self)
    }
    fn read_file(&self, repo_path: &str) -> Result<Vec<u8>, SourceError> {
        LocalDir::read_file(self, repo_path)
    }
    fn read_dir(&self, repo_path: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        LocalDir::read_dir(self, repo_path)
    }
}
