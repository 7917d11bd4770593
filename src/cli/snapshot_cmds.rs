//! `snapshots list|verify|restore`: the snapshots of stateful services a release took before
//! changing them (see `docs/snapshots.md`).

use std::path::Path;

use clap::{Args, Subcommand};

use super::state_cmds::{release_name, ReleaseArgs};
use super::{connect, exit, OutputFormat};
use crate::snapshot;
use crate::state::snapshots::Index;
use crate::state::ReleaseDir;

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// The snapshots on record: id, service, deploy, size, sha256, how long it took.
    #[command(after_help = "Examples:
  reconciler snapshots list
  reconciler snapshots list --release shop --output json")]
    List {
        #[command(flatten)]
        release: ReleaseArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Recompute each snapshot's sha256 and, for `postgres-custom`, list it with `pg_restore
    /// --list` in the service's running container: exit 0 when all are OK, 1 otherwise.
    #[command(after_help = "Examples:
  reconciler snapshots verify
  reconciler snapshots verify db-20261201T120000123Z --output json")]
    Verify(VerifyArgs),
    /// Restore a `postgres-custom` snapshot into the running container it was taken from
    /// (`pg_restore --clean --if-exists --single-transaction ARGS`, the file on stdin). Stop
    /// the services that write to the database first.
    #[command(after_help = "Example:
  reconciler snapshots restore db-20261201T120000123Z -- -U postgres -d app")]
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// One snapshot (default: all of the release).
    pub id: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    pub id: String,
    /// pg_restore's connection arguments (`-U postgres -d app`), after `--`.
    #[arg(last = true, required = true)]
    pub args: Vec<String>,
}

pub(super) async fn run(
    state_dir: &Path,
    docker_host: Option<&str>,
    cmd: SnapshotsCommand,
) -> anyhow::Result<u8> {
    match cmd {
        SnapshotsCommand::List { release, output } => list(state_dir, &release, output),
        SnapshotsCommand::Verify(args) => verify(state_dir, docker_host, args).await,
        SnapshotsCommand::Restore(args) => restore(state_dir, docker_host, args).await,
    }
}

fn list(state_dir: &Path, args: &ReleaseArgs, output: OutputFormat) -> anyhow::Result<u8> {
    let release = release_name(state_dir, args)?;
    let index = Index::load(&ReleaseDir::new(state_dir, &release))?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&index)?),
        OutputFormat::Text => {
            if index.snapshots.is_empty() {
                println!("No snapshots recorded for release {release}.");
            }
            for r in index.snapshots.iter().rev() {
                println!(
                    "{:<32} {:<10} {:<10} {:>12} B {:>7.1}s {} {}",
                    r.id,
                    r.service,
                    r.deploy,
                    r.size,
                    r.duration_ms as f64 / 1000.0,
                    &r.sha256[..r.sha256.len().min(12)],
                    r.file
                );
            }
        }
    }
    Ok(exit::OK)
}

async fn verify(
    state_dir: &Path,
    docker_host: Option<&str>,
    args: VerifyArgs,
) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let dir = ReleaseDir::new(state_dir, &release);
    let records = match &args.id {
        Some(id) => vec![snapshot::find(&dir, id)?],
        None => Index::load(&dir)?.snapshots,
    };
    let engine = connect(docker_host).await?;
    let mut results = Vec::new();
    for r in &records {
        results.push(snapshot::verify(&engine, &dir, r).await);
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        OutputFormat::Text => {
            if results.is_empty() {
                println!("No snapshots recorded for release {release}.");
            }
            for v in &results {
                println!("{} {}", v.id, if v.ok { "OK" } else { "FAILED" });
                for c in &v.checks {
                    let mark = if c.ok { "ok" } else { "FAILED" };
                    println!("    {:<18} {mark}: {}", c.name, c.detail);
                }
            }
        }
    }
    Ok(if results.iter().all(|v| v.ok) {
        exit::OK
    } else {
        exit::CHANGES_OR_FAILED
    })
}

async fn restore(
    state_dir: &Path,
    docker_host: Option<&str>,
    args: RestoreArgs,
) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let dir = ReleaseDir::new(state_dir, &release);
    let record = snapshot::find(&dir, &args.id)?;
    if record.format != crate::spec::model::SnapshotFormat::PostgresCustom {
        anyhow::bail!(
            "snapshot {} is `{}`; only `postgres-custom` snapshots are restored by this command (fix: restore it by hand, see docs/snapshots.md)",
            record.id,
            record.format.as_str()
        );
    }
    let engine = connect(docker_host).await?;
    let (code, output) = snapshot::restore(&engine, &dir, &record, &args.args).await?;
    if code == 0 {
        println!("restored {} into {}", record.id, record.container);
        Ok(exit::OK)
    } else {
        eprintln!(
            "pg_restore in {} exited with {code}:\n{}",
            record.container,
            output.trim()
        );
        Ok(exit::CHANGES_OR_FAILED)
    }
}
