//! Files inside containers, through the engine's archive endpoint (what `docker cp` uses): it
//! works on created-but-not-started containers too, so a config can be in place before the
//! first start, and it needs no tools in the image.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::TryStreamExt;

use super::ObjectKind::Container;
use super::{op_error, status_of, Engine, EngineError};

/// Largest file `read_file` returns: config files are small; anything bigger is a mistake
/// (a log, a directory of certs) and should not be held in memory.
const READ_LIMIT: u64 = 8 * 1024 * 1024;

/// How long removing a file may take (an exec of `rm`).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that `path` names a file by an absolute, plain path, and returns it without the
/// leading `/` (the form tar entries take). `..` is refused: the path must say where it writes.
fn file_path<'a>(op: &'static str, container: &str, path: &'a str) -> Result<&'a str, EngineError> {
    let bad = |why: &str| EngineError::Operation {
        op,
        kind: Container,
        name: container.to_string(),
        reason: format!("path `{path}` {why}"),
    };
    let relative = path
        .strip_prefix('/')
        .ok_or_else(|| bad("is not absolute"))?;
    if relative.is_empty() || relative.ends_with('/') {
        return Err(bad("names a directory, not a file"));
    }
    if relative
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("has empty, `.` or `..` components"));
    }
    Ok(relative)
}

/// A tar archive holding one regular file at `relative`, root-owned, mode 0644.
fn one_file_tar(relative: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    header.set_mtime(now);
    let mut builder = tar::Builder::new(Vec::new());
    // Only the file's entry: the engine creates missing parent directories (0755) when it
    // extracts, and entries for existing parents would reset their mode and owner.
    builder.append_data(&mut header, relative, content)?;
    builder.into_inner()
}

/// The content of the single regular file in a `GET /archive` reply.
fn file_from_tar(archive: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = tar::Archive::new(archive);
    let mut entries = reader.entries().map_err(|e| format!("bad archive: {e}"))?;
    let mut entry = match entries.next() {
        Some(entry) => entry.map_err(|e| format!("bad archive: {e}"))?,
        None => return Err("empty archive".to_string()),
    };
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {}
        tar::EntryType::Directory => return Err("is a directory".to_string()),
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "is a symbolic link to `{target}` (read or write the file it points to)"
            ));
        }
        other => return Err(format!("is not a regular file ({other:?})")),
    }
    if entry.size() > READ_LIMIT {
        return Err(format!(
            "is {} bytes, more than the {READ_LIMIT} a config file may have",
            entry.size()
        ));
    }
    let mut content = Vec::new();
    entry
        .read_to_end(&mut content)
        .map_err(|e| format!("bad archive: {e}"))?;
    Ok(content)
}

/// The deepest directory holding every one of `paths` (absolute file paths), if it is at least
/// two levels deep: reading `/etc` or `/` whole to get two files would cost more than it saves.
fn common_dir(paths: &[String]) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for path in paths {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let dir = &parts[..parts.len().saturating_sub(1)];
        common = Some(match common {
            None => dir.to_vec(),
            Some(c) => c
                .iter()
                .zip(dir)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    common
        .filter(|c| c.len() >= 2)
        .map(|c| format!("/{}", c.join("/")))
}

/// Every regular file in a `GET /archive` reply of a directory, as `(prefix + entry path,
/// content)`, sorted by path.
fn files_from_tar(archive: &[u8], prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut reader = tar::Archive::new(archive);
    let entries = reader.entries().map_err(|e| format!("bad archive: {e}"))?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad archive: {e}"))?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        total += entry.size();
        if total > READ_LIMIT {
            return Err(format!(
                "holds more than the {READ_LIMIT} bytes a config directory may have"
            ));
        }
        let path = entry
            .path()
            .map_err(|e| format!("bad archive: {e}"))?
            .to_string_lossy()
            .into_owned();
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .map_err(|e| format!("bad archive: {e}"))?;
        out.push((
            format!("{prefix}{}", path.trim_start_matches("./")),
            content,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl Engine {
    /// Writes one file into a container (running or only created), creating parent
    /// directories, root-owned, mode 0644. Replaces the file if it exists.
    pub async fn write_file(
        &self,
        container: &str,
        path: &str,
        content: &[u8],
    ) -> Result<(), EngineError> {
        let relative = file_path("write file in", container, path)?;
        let archive = one_file_tar(relative, content).map_err(|e| EngineError::Operation {
            op: "write file in",
            kind: Container,
            name: container.to_string(),
            reason: format!("build the archive for `{path}`: {e}"),
        })?;
        let options = UploadToContainerOptions {
            path: "/".to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| {
                op_error("write file in", Container, container)(e).with_detail(format!("`{path}`"))
            })?;
        tracing::debug!(container, path, bytes = content.len(), "wrote file");
        Ok(())
    }

    /// The content of a file in a container, or `None` when it does not exist.
    pub async fn read_file(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        file_path("read file in", container, path)?;
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let reply: Result<Vec<u8>, _> = self
            .docker
            .download_from_container(container, Some(options))
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await;
        let archive = match reply {
            Ok(archive) => archive,
            Err(e) if status_of(&e) == Some(404) => {
                // The engine answers 404 both for a missing container and a missing path:
                // a missing container must be an error, not "no such file".
                self.inspect_container(container)
                    .await
                    .map_err(|err| match err {
                        EngineError::NotFound { kind, name, .. } => EngineError::NotFound {
                            op: "read file in",
                            kind,
                            name,
                        },
                        other => other,
                    })?;
                return Ok(None);
            }
            Err(e) => {
                return Err(op_error("read file in", Container, container)(e)
                    .with_detail(format!("`{path}`")))
            }
        };
        file_from_tar(&archive)
            .map(Some)
            .map_err(|reason| EngineError::Operation {
                op: "read file in",
                kind: Container,
                name: container.to_string(),
                reason: format!("`{path}` {reason}"),
            })
    }

    /// [`Engine::read_file`] for each of `paths`, in order. Files under one directory at least two
    /// levels deep (`/etc/nginx`) are read in one archive download of that directory: the engine
    /// serializes downloads from one container (each mounts its file system), so two
    /// single-file reads cost twice one. A path the directory's archive does not hold as a
    /// regular file (missing, a link) is read alone, for `read_file`'s answer.
    pub async fn read_files(
        &self,
        container: &str,
        paths: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        for path in paths {
            file_path("read file in", container, path)?;
        }
        let tree = match common_dir(paths) {
            Some(dir) if paths.len() > 1 => match self.read_dir(container, &dir).await {
                Ok(tree) => Some(tree.unwrap_or_default()),
                Err(e) if e.is_not_found() => return Err(e),
                // Too big, or unreadable as a whole: file by file.
                Err(e) => {
                    tracing::debug!(container, dir, error = %e, "reading the files one by one");
                    None
                }
            },
            _ => None,
        };
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let found = tree
                .as_ref()
                .and_then(|t| t.iter().find(|(p, _)| p == path))
                .map(|(_, content)| content.clone());
            out.push(match found {
                Some(content) => Some(content),
                None => self.read_file(container, path).await?,
            });
        }
        Ok(out)
    }

    /// Every regular file under directory `dir` of a container, by absolute path, sorted; `None`
    /// when the directory does not exist. Symbolic links and special files are skipped.
    pub async fn read_dir(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Option<Vec<(String, Vec<u8>)>>, EngineError> {
        let trimmed = dir.trim_end_matches('/');
        let relative = file_path("read directory in", container, trimmed)?;
        let options = DownloadFromContainerOptions {
            path: format!("{trimmed}/"),
        };
        let reply: Result<Vec<u8>, _> = self
            .docker
            .download_from_container(container, Some(options))
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await;
        let archive = match reply {
            Ok(archive) => archive,
            Err(e) if status_of(&e) == Some(404) => {
                // As in `read_file`: a missing container is an error, a missing path is not.
                self.inspect_container(container).await?;
                return Ok(None);
            }
            Err(e) => {
                return Err(op_error("read directory in", Container, container)(e)
                    .with_detail(format!("`{dir}`")))
            }
        };
        // Entries are named after the directory's last component (`rules/a.yml`).
        let parent = match relative.rsplit_once('/') {
            Some((parent, _)) => format!("/{parent}/"),
            None => "/".to_string(),
        };
        files_from_tar(&archive, &parent)
            .map(Some)
            .map_err(|reason| EngineError::Operation {
                op: "read directory in",
                kind: Container,
                name: container.to_string(),
                reason: format!("`{dir}` {reason}"),
            })
    }

    /// Removes a file from a running container (`rm -f`, so a missing file is fine). The
    /// archive endpoint cannot delete, so this needs `rm` in the image. As root: the files
    /// the reconciler writes are root's, whoever the container runs as.
    pub async fn remove_file(&self, container: &str, path: &str) -> Result<(), EngineError> {
        file_path("remove file in", container, path)?;
        let argv = ["rm", "-f", "--", path].map(String::from);
        let out = self
            .exec_as(container, Some("0"), &argv, REMOVE_TIMEOUT)
            .await?;
        if out.exit_code != 0 {
            return Err(EngineError::Operation {
                op: "remove file in",
                kind: Container,
                name: container.to_string(),
                reason: format!(
                    "`rm -f {path}` exited with {}: {}",
                    out.exit_code,
                    out.output.trim()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_together_only_under_a_directory_two_levels_deep() {
        let paths = |ps: &[&str]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            common_dir(&paths(&[
                "/etc/nginx/nginx.conf",
                "/etc/nginx/reconciler/upstreams.conf"
            ])),
            Some("/etc/nginx".to_string())
        );
        assert_eq!(
            common_dir(&paths(&["/etc/nginx/a/x", "/etc/nginx/a/y"])),
            Some("/etc/nginx/a".to_string())
        );
        assert_eq!(
            common_dir(&paths(&["/etc/nginx/nginx.conf", "/etc/up.conf"])),
            None
        );
        assert_eq!(common_dir(&paths(&["/a.conf", "/b.conf"])), None);
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(
            file_path("w", "c", "/etc/nginx/a.conf").ok(),
            Some("etc/nginx/a.conf")
        );
        for bad in ["etc/a", "/", "/etc/", "/etc/../a", "/etc//a", "/./a"] {
            assert!(file_path("w", "c", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tar_round_trip() {
        let archive = one_file_tar("etc/x/y.conf", b"hello\n").unwrap();
        assert_eq!(file_from_tar(&archive).unwrap(), b"hello\n");
        let mut reader = tar::Archive::new(&archive[..]);
        let entry = reader.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mode().unwrap(), 0o644);
        assert_eq!(entry.path().unwrap().to_str(), Some("etc/x/y.conf"));
    }

    #[test]
    fn empty_archive_is_an_error() {
        let archive = tar::Builder::new(Vec::new()).into_inner().unwrap();
        assert!(file_from_tar(&archive).is_err());
    }
}
