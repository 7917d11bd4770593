//! Taking, verifying and restoring snapshots of stateful services (`snapshot:` in the spec).
//!
//! A snapshot is the stdout of a command run by exec in the service's running container
//! (`pg_dump -Fc ...`), streamed into `<state-dir>/releases/<release>/snapshots/<service>/`
//! chunk by chunk and hashed on the way: a dump is never held in memory, and no volume has to
//! be mounted for it. The file is written under a temporary name, fsynced and renamed, so a
//! crash leaves no half snapshot under a real name. `state::snapshots` keeps the index.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::desired::DesiredSnapshot;
use crate::engine::{Engine, EngineError};
use crate::spec::model::SnapshotFormat;
use crate::state::snapshots::{self, Record};
use crate::state::{self, ReleaseDir, StateError};

/// How long `pg_restore --list` of a snapshot may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a deploy's snapshots go and what they are recorded against.
#[derive(Debug, Clone)]
pub struct SnapshotTarget {
    pub state_dir: PathBuf,
    /// The history entry id the deploy will be recorded under.
    pub deploy: String,
    pub revision: String,
    /// The revision running when the snapshot is taken.
    pub previous_revision: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("snapshot of {service}: `{command}` exited with {exit_code}: {output} (fix: run it by hand with `docker exec {container} {command}` and correct `services.{service}.snapshot.exec`)")]
    CommandFailed {
        service: String,
        container: String,
        command: String,
        exit_code: i64,
        output: String,
    },
    #[error("snapshot of {service}: the command wrote nothing to stdout (fix: `services.{service}.snapshot.exec` must write the backup to stdout, e.g. `pg_dump -Fc` without `-f`)")]
    Empty { service: String },
    #[error("no snapshot `{id}` in {} (fix: see `reconciler snapshots list`)", index.display())]
    Unknown { id: String, index: PathBuf },
    #[error("snapshot of {service}: cancelled; the partial file was removed")]
    Cancelled { service: String },
    #[error("cannot run a snapshot step without a state dir (fix: deploy through `reconciler apply`/`run`, which pass --state-dir)")]
    NoStateDir,
}

/// `io::Write` that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `20261201T120000123Z`: sorts in time order and is a safe file name.
fn compact_time(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Takes one snapshot of `service` from its running `container` and records it in the index.
pub async fn take(
    engine: &Engine,
    target: &SnapshotTarget,
    release: &str,
    service: &str,
    container: &str,
    spec: &DesiredSnapshot,
    cancel: &CancellationToken,
) -> Result<Record, SnapshotError> {
    let started = Instant::now();
    let image = engine.inspect_container(container).await?.image;
    let dir = ReleaseDir::new(&target.state_dir, release);
    let taken_at = state::now();
    let stamp = compact_time(&taken_at);
    let short: String = target.revision.chars().take(12).collect();
    let relative = format!("{}/{service}/{stamp}-{short}.dump", snapshots::DIR);
    let path = dir.path().join(&relative);
    let parent = path.parent().unwrap_or(dir.path()).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io_err("create directory", &parent))?;
    let tmp = parent.join(format!(".{stamp}.partial"));
    let file = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut writer = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        size: 0,
    };
    // Cancelled (SIGTERM): the exec's stream is dropped, so the command in the container
    // gets a broken pipe and stops, and the partial file goes.
    let result = tokio::select! {
        r = engine.exec_streaming(container, &spec.exec, spec.timeout, &mut writer) => r,
        () = cancel.cancelled() => {
            let _ = std::fs::remove_file(&tmp);
            return Err(SnapshotError::Cancelled { service: service.to_string() });
        }
    };
    let finish = |writer: HashingWriter<io::BufWriter<std::fs::File>>| {
        let file = writer
            .inner
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &tmp))
    };
    let fail = |e: SnapshotError| {
        let _ = std::fs::remove_file(&tmp);
        Err(e)
    };
    let output = match result {
        Ok(output) => output,
        Err(e) => return fail(e.into()),
    };
    if output.exit_code != 0 {
        return fail(SnapshotError::CommandFailed {
            service: service.to_string(),
            container: container.to_string(),
            command: spec.exec.join(" "),
            exit_code: output.exit_code,
            output: output.output.trim().to_string(),
        });
    }
    if writer.size == 0 {
        return fail(SnapshotError::Empty {
            service: service.to_string(),
        });
    }
    let size = writer.size;
    let sha256 = hex::encode(writer.hasher.clone().finalize());
    if let Err(e) = finish(writer) {
        return fail(e.into());
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", &parent))?;
    let record = Record {
        id: format!("{service}-{stamp}"),
        release: release.to_string(),
        service: service.to_string(),
        container: container.to_string(),
        image,
        format: spec.format,
        deploy: target.deploy.clone(),
        revision: target.revision.clone(),
        previous_revision: target.previous_revision.clone(),
        file: relative,
        size,
        sha256,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        taken_at,
    };
    snapshots::add(&dir, record.clone())?;
    tracing::info!(
        service,
        id = %record.id,
        size,
        duration_ms = record.duration_ms,
        "snapshot taken"
    );
    Ok(record)
}

/// sha256 (hex) of a file, read in chunks.
pub fn file_sha256(path: &Path) -> Result<String, StateError> {
    let mut file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What `snapshots verify` found about one snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub id: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `sha256` or `pg_restore --list`.
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Recomputes the checksum and, for `postgres-custom`, lists the archive with `pg_restore
/// --list` by exec in the service's running container (the file streamed to its stdin), so
/// the tool is the version the service runs.
pub async fn verify(engine: &Engine, dir: &ReleaseDir, record: &Record) -> Verified {
    let path = dir.path().join(&record.file);
    let mut checks = Vec::new();
    let sha = match file_sha256(&path) {
        Ok(sum) if sum == record.sha256 => Check {
            name: "sha256",
            ok: true,
            detail: sum,
        },
        Ok(sum) => Check {
            name: "sha256",
            ok: false,
            detail: format!("{sum} (recorded {}): the file changed", record.sha256),
        },
        Err(e) => Check {
            name: "sha256",
            ok: false,
            detail: e.to_string(),
        },
    };
    let readable = sha.ok;
    checks.push(sha);
    if record.format == SnapshotFormat::PostgresCustom && readable {
        let command = vec!["pg_restore".to_string(), "--list".to_string()];
        checks.push(
            match pipe_file(engine, &record.container, &command, &path).await {
                Ok((0, output)) => Check {
                    name: "pg_restore --list",
                    ok: true,
                    detail: format!("{} archive entries", toc_entries(&output)),
                },
                Ok((code, output)) => Check {
                    name: "pg_restore --list",
                    ok: false,
                    detail: format!("exit {code}: {}", output.trim()),
                },
                Err(e) => Check {
                    name: "pg_restore --list",
                    ok: false,
                    detail: e.to_string(),
                },
            },
        );
    }
    Verified {
        id: record.id.clone(),
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// Entries in a `pg_restore --list` table of contents (its non-comment lines).
fn toc_entries(output: &str) -> usize {
    output
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count()
}

/// Runs `command` in `container` with the file at `path` as its stdin.
async fn pipe_file(
    engine: &Engine,
    container: &str,
    command: &[String],
    path: &Path,
) -> Result<(i64, String), SnapshotError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(io_err("open", path))?;
    let out = engine
        .exec_with_input(container, command, VERIFY_TIMEOUT, &mut file)
        .await?;
    Ok((out.exit_code, out.output))
}

/// Restores a `postgres-custom` snapshot into the running container it was taken from:
/// `pg_restore --clean --if-exists --single-transaction` with `args` naming the database (and
/// user), the file streamed to its stdin; the procedure `docs/snapshots.md` describes.
pub async fn restore(
    engine: &Engine,
    dir: &ReleaseDir,
    record: &Record,
    args: &[String],
) -> Result<(i64, String), SnapshotError> {
    let mut command: Vec<String> = [
        "pg_restore",
        "--clean",
        "--if-exists",
        "--single-transaction",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    command.extend_from_slice(args);
    pipe_file(
        engine,
        &record.container,
        &command,
        &dir.path().join(&record.file),
    )
    .await
}

/// Finds a snapshot by id in a release's index.
pub fn find(dir: &ReleaseDir, id: &str) -> Result<Record, SnapshotError> {
    let index = snapshots::Index::load(dir)?;
    index
        .find(id)
        .cloned()
        .ok_or_else(|| SnapshotError::Unknown {
            id: id.to_string(),
            index: dir.file(snapshots::FILE),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_a_hash_of_the_whole() {
        let mut w = HashingWriter {
            inner: Vec::new(),
            hasher: Sha256::new(),
            size: 0,
        };
        for chunk in [&b"pg"[..], b"dmp", b"", b"data"] {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.size, 9);
        assert_eq!(
            hex::encode(w.hasher.finalize()),
            hex::encode(Sha256::digest(b"pgdmpdata"))
        );
        assert_eq!(
            compact_time("2026-12-01T12:00:00.123Z"),
            "20261201T120000123Z"
        );
        assert_eq!(toc_entries(";\n; Archive\n1; 0 0 TABLE\n2; 0 0 DATA\n"), 2);
    }
}
