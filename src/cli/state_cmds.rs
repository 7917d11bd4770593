//! The commands about deployment state: `status`, `history`, `rollback`, `suspend`, `resume`,
//! `lock status|release`. Flags here, work in `deploy`, `status` and `state`.

use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{connect, exit, OutputFormat};
use crate::daemon;
use crate::deploy::{self, Deployed};
use crate::plan;
use crate::source::SourceConfig;
use crate::state::history::{Entry, History};
use crate::state::suspend::{self, Suspended};
use crate::state::{self, audit, lock, ReleaseDir};

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// The release (default: the only one under --state-dir).
    #[arg(long, value_name = "NAME")]
    pub release: Option<String>,
    /// Who is doing this, for the audit log (default as for `apply`).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// The source to compare with (default: the one recorded at the last deploy).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Branch, tag or commit for --repo.
    #[arg(long = "ref", value_name = "REF", requires = "repo")]
    pub reference: Option<String>,
    /// Directory inside the repo that holds release.yaml.
    #[arg(long, value_name = "DIR", default_value = "", requires = "repo")]
    pub path: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Show the newest N entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// A history entry id (`shop-4`) or revision (prefix); default: the previous applied one.
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
    /// Wait up to this long for another deploy's lock instead of failing.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// How many deploys history.json keeps.
    #[arg(long, value_name = "N", default_value_t = crate::defaults::HISTORY_LIMIT)]
    pub history_limit: usize,
}

#[derive(Debug, Args)]
pub struct SuspendArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Why, for whoever finds it suspended.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the deploy lock, since when, for which revision.
    #[command(after_help = "Example:
  reconciler lock status --output json")]
    Status {
        #[command(flatten)]
        release: ReleaseArgs,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Break the lock: a dead holder's record is removed; a live holder gets SIGTERM, rolls
    /// its deploy back and lets go.
    #[command(after_help = "Example:
  reconciler lock release --force")]
    Release {
        #[command(flatten)]
        release: ReleaseArgs,
        /// Required: this stops someone else's deploy.
        #[arg(long, required = true)]
        force: bool,
    },
}

/// The release named by `--release`, or the only one with state.
pub(super) fn release_name(state_dir: &Path, args: &ReleaseArgs) -> anyhow::Result<String> {
    if let Some(r) = &args.release {
        return Ok(r.clone());
    }
    let all = state::releases(state_dir)?;
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!(
            "no release has state under {}; fix: deploy one with `reconciler apply`, or check --state-dir",
            state_dir.display()
        ),
        many => anyhow::bail!(
            "several releases have state under {} ({}); fix: pass --release NAME",
            state_dir.display(),
            many.join(", ")
        ),
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// Prints what a deploy did; returns the exit code.
pub(super) fn report_deployed(deployed: &Deployed) -> u8 {
    match deployed {
        Deployed::InSync { revision } => {
            println!("In sync with revision {revision}: nothing to do.");
            exit::OK
        }
        Deployed::Applied { report, entry, .. } => {
            println!(
                "Applied release {} revision {} in {:.1}s ({} steps; history {}).",
                entry.release,
                entry.revision,
                entry.duration_ms as f64 / 1000.0,
                report.steps.len(),
                entry.id
            );
            for failure in &report.final_failures {
                eprintln!(
                    "warning: clean-up step {} ({} {}) failed after every gate passed: {}",
                    failure.index + 1,
                    failure.action,
                    failure.target,
                    failure.reason
                );
            }
            exit::OK
        }
        Deployed::RefusedFailed { revision, failed } => {
            let why = failed
                .failure
                .as_ref()
                .map(|f| {
                    let step = f
                        .step
                        .as_ref()
                        .map(|s| format!("step {} ({}) ", s.index + 1, s.action))
                        .unwrap_or_default();
                    format!("{step}failed: {}", f.reason)
                })
                .unwrap_or_else(|| "failed".to_string());
            eprintln!(
                "error: revision {revision} was not applied: its last deploy ({}, {}) {why}; fix: push a new commit, or pass --retry to try it again",
                failed.id, failed.finished_at
            );
            exit::CHANGES_OR_FAILED
        }
    }
}

pub(super) async fn status(
    state_dir: &Path,
    docker_host: Option<&str>,
    args: StatusArgs,
) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let engine = connect(docker_host).await?;
    let source = args.repo.map(|url| SourceConfig {
        url,
        reference: args.reference,
        path: args.path,
        ..SourceConfig::default()
    });
    let st = crate::status::gather(state_dir, &engine, &release, source).await;
    match args.output {
        OutputFormat::Text => print!("{}", crate::status::render_text(&st)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&st)?),
    }
    Ok(exit::OK)
}

pub(super) fn history(state_dir: &Path, args: HistoryArgs) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let mut h = History::load(&ReleaseDir::new(state_dir, &release))?;
    if let Some(limit) = args.limit {
        let excess = h.entries.len().saturating_sub(limit);
        h.entries.drain(..excess);
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&h)?),
        OutputFormat::Text => {
            if h.entries.is_empty() {
                println!("No deploys recorded for release {release}.");
            }
            for e in h.entries.iter().rev() {
                print_entry(e);
            }
        }
    }
    Ok(exit::OK)
}

fn print_entry(e: &Entry) {
    let kind = format!("{:?}", e.kind).to_lowercase();
    println!(
        "{:<10} {:<8} {:<12} {:<11} {} by {} ({}) {:.1}s",
        e.id,
        kind,
        short(&e.revision),
        e.outcome.as_str(),
        e.started_at,
        e.actor,
        e.trigger,
        e.duration_ms as f64 / 1000.0
    );
    for s in &e.services {
        println!(
            "    {:<12} {} {}",
            s.service,
            s.image,
            s.color.as_deref().unwrap_or("")
        );
    }
    for s in &e.snapshots {
        println!(
            "    snapshot {} ({}): {} B in {:.1}s, sha256 {}",
            s.id,
            s.service,
            s.size,
            s.duration_ms as f64 / 1000.0,
            &s.sha256[..s.sha256.len().min(12)]
        );
    }
    if let Some(f) = &e.failure {
        let step = f
            .step
            .as_ref()
            .map(|s| {
                format!(
                    "step {} {}{} on {}: ",
                    s.index + 1,
                    s.action,
                    s.service
                        .as_deref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default(),
                    s.target
                )
            })
            .unwrap_or_default();
        println!("    failed at {step}{}", f.reason);
        for u in &f.rollback_errors {
            println!("    undo failed: {u}");
        }
    }
}

pub(super) async fn rollback(
    state_dir: &Path,
    docker_host: Option<&str>,
    args: RollbackArgs,
) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let cancel = daemon::shutdown_token();
    let engine = connect(docker_host).await?;
    let ctx = deploy::Context {
        state_dir: state_dir.to_path_buf(),
        history_limit: args.history_limit,
    };
    let req = deploy::RollbackRequest {
        actor: state::actor::from_env(args.release.actor.as_deref()),
        lock_wait: args.lock_wait,
        cancel,
    };
    let (target, deployed) =
        deploy::rollback(&ctx, &engine, &release, args.to.as_deref(), req, &Printed).await?;
    let code = report_deployed(&deployed);
    println!(
        "Rolled back release {release} to revision {} (recorded as {}). Automatic sync is suspended; `reconciler resume` re-enables it.",
        short(&target.revision),
        target.id
    );
    Ok(code)
}

pub(super) fn suspend(state_dir: &Path, args: SuspendArgs) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args.release)?;
    let dir = ReleaseDir::new(state_dir, &release);
    let actor = state::actor::from_env(args.release.actor.as_deref());
    let record = Suspended {
        by: actor.clone(),
        at: state::now(),
        reason: suspend::Reason::Suspend,
        revision: None,
        message: args.message.clone(),
    };
    suspend::suspend(&dir, &record)?;
    audit::record(
        &dir,
        audit::Line {
            time: record.at.clone(),
            release: release.clone(),
            actor,
            trigger: "cli".into(),
            action: "suspend".into(),
            revision: None,
            outcome: "ok".into(),
            detail: args.message,
        },
    );
    println!("Automatic sync of release {release} is suspended; `reconciler run` only reports drift until `reconciler resume`.");
    Ok(exit::OK)
}

pub(super) fn resume(state_dir: &Path, args: ReleaseArgs) -> anyhow::Result<u8> {
    let release = release_name(state_dir, &args)?;
    let dir = ReleaseDir::new(state_dir, &release);
    let previous = suspend::resume(&dir)?;
    let actor = state::actor::from_env(args.actor.as_deref());
    audit::record(
        &dir,
        audit::Line {
            time: state::now(),
            release: release.clone(),
            actor,
            trigger: "cli".into(),
            action: "resume".into(),
            revision: previous.as_ref().and_then(|p| p.revision.clone()),
            outcome: if previous.is_some() {
                "ok"
            } else {
                "not_suspended"
            }
            .into(),
            detail: None,
        },
    );
    match previous {
        Some(p) => println!(
            "Automatic sync of release {release} resumed (it was suspended by {} at {}).",
            p.by, p.at
        ),
        None => println!("Release {release} was not suspended."),
    }
    Ok(exit::OK)
}

pub(super) async fn lock(state_dir: &Path, cmd: LockCommand) -> anyhow::Result<u8> {
    match cmd {
        LockCommand::Status { release, output } => {
            let name = release_name(state_dir, &release)?;
            let st = lock::status(&ReleaseDir::new(state_dir, &name), &name)?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&st)?),
                OutputFormat::Text => match (&st.holder, st.held, st.stale) {
                    (Some(h), true, _) => println!("Release {name}: lock held by {h}"),
                    (None, true, _) => println!("Release {name}: lock held (no holder record yet)"),
                    (Some(h), false, true) => println!(
                        "Release {name}: lock free; a stale record of {h} is left (its process is gone; the next deploy takes it over)"
                    ),
                    _ => println!("Release {name}: lock free"),
                },
            }
            Ok(exit::OK)
        }
        LockCommand::Release { release, force: _ } => {
            let name = release_name(state_dir, &release)?;
            let dir = ReleaseDir::new(state_dir, &name);
            let actor = state::actor::from_env(release.actor.as_deref());
            let forced = lock::force_release(&dir, &name, crate::defaults::LOCK_RELEASE_WAIT)
                .await
                .with_context(|| format!("release {name}: lock release --force"))?;
            let (text, holder) = match &forced {
                lock::Forced::NotHeld => (format!("Release {name}: the lock was not held."), None),
                lock::Forced::StaleRemoved(h) => (
                    format!("Release {name}: removed the stale lock record of {h} (its process was gone)."),
                    Some(h.clone()),
                ),
                lock::Forced::Released { holder, after } => (
                    format!(
                        "Release {name}: sent SIGTERM to pid {} ({}); it rolled back and released the lock after {:.1}s.{}",
                        holder.pid,
                        holder.actor,
                        after.as_secs_f64(),
                        if holder.trigger == "cli" {
                            ""
                        } else {
                            " That was the daemon: it has stopped (its service manager restarts it)."
                        }
                    ),
                    Some(holder.clone()),
                ),
            };
            if let Some(h) = holder {
                audit::record(
                    &dir,
                    audit::Line {
                        time: state::now(),
                        release: name.clone(),
                        actor,
                        trigger: "cli".into(),
                        action: "lock_force_release".into(),
                        revision: h.revision.clone(),
                        outcome: "ok".into(),
                        detail: Some(text.clone()),
                    },
                );
            }
            println!("{text}");
            Ok(exit::OK)
        }
    }
}

/// The CLI's view of a deploy in progress: the plan and any crash recovery, for a person.
pub(super) struct Printed;

impl crate::deploy::DeployEvents for Printed {
    fn planned(&self, plan: &plan::Plan, _live: &crate::live::LiveState, _previous: Option<&str>) {
        print!("{}", plan::render_text(plan));
    }
    fn recovered(&self, report: &crate::recovery::RecoveryReport) {
        eprintln!("recovery: {}", report.summary());
        for action in &report.actions {
            eprintln!("recovery:   {action}");
        }
    }
}
