//! The command line, in two layers (as ripgrep does): clap parses and validates flags without
//! any I/O; `run` then opens the expensive things (git, the engine) once and dispatches.
//! Errors are printed once, at the edge, with their whole chain on one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::apply::ApplyOptions;
use crate::daemon::{self, RunOptions};
use crate::defaults;
use crate::desired::ProcessEnv;
use crate::engine::Engine;
use crate::live::LiveState;
use crate::notify;
use crate::plan;
use crate::reconcile::{self, Origin, ReconcileError, Trigger};
use crate::source::SourceConfig;
use crate::spec;

const EXAMPLES: &str = "\
Examples:
  reconciler validate --spec release.yaml
  reconciler diff --repo https://git.example/ops/shop.git --ref main
  reconciler diff --local ./shop-ops --output json
  reconciler apply --repo /srv/git/shop-ops.git
  reconciler run --repo /srv/git/shop-ops.git --interval 30s";

#[derive(Debug, Parser)]
#[command(
    name = "reconciler",
    version,
    about = "Converges a Docker host to a release spec tracked in git.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Where the git cache and state live.
    #[arg(long, global = true, env = "RECONCILER_STATE_DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
    /// The Docker engine (`unix:///path.sock` or `tcp://host:port`); default: the local socket.
    #[arg(long, global = true, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// How logs are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `reconciler=trace`); `RUST_LOG` works too.
    #[arg(long, global = true, env = "RECONCILER_LOG", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a release spec: exit 0 when valid, 2 with every error otherwise.
    #[command(after_help = "Examples:
  reconciler validate --spec release.yaml
  reconciler validate --repo /srv/git/shop-ops.git --ref main --path deploy")]
    Validate(ValidateArgs),
    /// Show what apply would change: exit 0 in sync, 1 changes, 2 error (as diff(1)).
    #[command(after_help = "Examples:
  reconciler diff --repo /srv/git/shop-ops.git
  reconciler diff --repo https://git.example/ops/shop.git --ref v1.4.2 --output json
  reconciler diff --local ./shop-ops --steps")]
    Diff(DiffArgs),
    /// Converge the host once to the release, gated; undone when any gate fails.
    #[command(after_help = "Example:
  reconciler apply --repo /srv/git/shop-ops.git --ref main")]
    Apply(ApplyArgs),
    /// Keep converging: fetch every --interval, apply new revisions and repair drift.
    #[command(after_help = "Example:
  reconciler run --repo /srv/git/shop-ops.git --interval 30s")]
    Run(RunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// The git repository: a path, file://, https:// (token from --token-env) or ssh.
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Branch, tag or commit; default: the remote's default branch.
    #[arg(long = "ref", value_name = "REF", requires = "repo")]
    pub reference: Option<String>,
    /// Directory inside the repo that holds release.yaml.
    #[arg(long, value_name = "DIR", default_value = "")]
    pub path: String,
    /// Environment variable holding an https token.
    #[arg(long, value_name = "VAR", requires = "repo")]
    pub token_env: Option<String>,
    /// Private key file for ssh URLs.
    #[arg(long, value_name = "FILE", requires = "repo")]
    pub ssh_key: Option<PathBuf>,
}

impl RepoArgs {
    fn origin(&self, local: Option<&PathBuf>) -> anyhow::Result<Origin> {
        match (&self.repo, local) {
            (Some(url), None) => Ok(Origin::Git(SourceConfig {
                url: url.clone(),
                reference: self.reference.clone(),
                path: self.path.clone(),
                token_env: self.token_env.clone(),
                ssh_key: self.ssh_key.clone(),
            })),
            (None, Some(dir)) => Ok(Origin::Local {
                dir: dir.clone(),
                path: self.path.clone(),
            }),
            _ => anyhow::bail!("name the release source: --repo URL (or --local DIR for diff)"),
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A spec file on disk.
    #[arg(long, value_name = "FILE", conflicts_with = "repo")]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Preview an uncommitted directory instead of a git revision.
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub local: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also list the engine steps apply would run, in order.
    #[arg(long)]
    pub steps: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Time between fetches (`30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Apply the current revision even if it failed before.
    #[arg(long)]
    pub retry: bool,
}

/// Exit codes, shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    /// `diff`: there are changes. `apply`/`run`: the release failed and was rolled back.
    pub const CHANGES_OR_FAILED: u8 = 1;
    /// Bad input or an unreachable dependency: nothing was changed.
    pub const ERROR: u8 = 2;
}

pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate(args) => validate(&cli.state_dir, args).await,
        Command::Diff(args) => diff(&cli.state_dir, cli.docker_host.as_deref(), args).await,
        Command::Apply(args) => apply(&cli.state_dir, cli.docker_host.as_deref(), args).await,
        Command::Run(args) => run_loop(&cli.state_dir, cli.docker_host.as_deref(), args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e);
            let failed_release = e
                .downcast_ref::<ReconcileError>()
                .is_some_and(|r| matches!(r, ReconcileError::Apply(_)));
            ExitCode::from(if failed_release {
                exit::CHANGES_OR_FAILED
            } else {
                exit::ERROR
            })
        }
    }
}

/// The whole chain on one line (a spec error list keeps its own lines).
fn print_error(e: &anyhow::Error) {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    eprintln!("error: {}", chain.join(": ").trim_end());
}

async fn validate(state_dir: &std::path::Path, args: ValidateArgs) -> anyhow::Result<u8> {
    let tree: std::sync::Arc<dyn crate::source::SourceTree> = match &args.spec {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file.display().to_string();
            let loaded = match spec::load(&name, &text) {
                Ok(l) => l,
                Err(errors) => {
                    eprint!("{errors}");
                    return Ok(exit::ERROR);
                }
            };
            let host_errors = spec::check_host(&loaded);
            if !host_errors.is_empty() {
                eprint!("{}", spec::SpecErrors(host_errors));
                return Ok(exit::ERROR);
            }
            println!("{name}: valid (release {})", loaded.spec.release);
            return Ok(exit::OK);
        }
        None => reconcile::fetch(&args.repo.origin(None)?, state_dir).await?,
    };
    let file = tree.spec_path();
    match reconcile::load(tree.clone(), &ProcessEnv) {
        Ok(loaded) => {
            println!(
                "{file} at {}: valid (release {})",
                tree.revision(),
                loaded.desired.release
            );
            Ok(exit::OK)
        }
        Err(ReconcileError::Spec(errors)) => {
            eprint!("{errors}");
            Ok(exit::ERROR)
        }
        Err(e) => Err(e.into()),
    }
}

async fn connect(docker_host: Option<&str>) -> anyhow::Result<Engine> {
    Ok(Engine::connect(docker_host).await?)
}

/// Fetch, load and plan; a spec error list is printed whole and maps to exit 2.
async fn prepare(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    origin: &Origin,
) -> anyhow::Result<Result<(Engine, reconcile::Loaded, (plan::Plan, LiveState)), u8>> {
    let tree = reconcile::fetch(origin, state_dir).await?;
    let loaded = match reconcile::load(tree, &ProcessEnv) {
        Ok(l) => l,
        Err(ReconcileError::Spec(errors)) => {
            eprint!("{errors}");
            return Ok(Err(exit::ERROR));
        }
        Err(e) => return Err(e.into()),
    };
    let engine = connect(docker_host).await?;
    let planned = reconcile::plan_observed(&engine, &loaded.desired).await?;
    Ok(Ok((engine, loaded, planned)))
}

async fn diff(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    args: DiffArgs,
) -> anyhow::Result<u8> {
    let origin = args.repo.origin(args.local.as_ref())?;
    let (_, _, (plan, _)) = match prepare(state_dir, docker_host, &origin).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    match args.output {
        OutputFormat::Text => {
            print!("{}", plan::render_text(&plan));
            if args.steps && !plan.in_sync() {
                println!("\nSteps:");
                print!("{}", plan::render_steps(&plan));
            }
        }
        OutputFormat::Json => {
            println!("{:#}", plan::render_json(&plan));
        }
    }
    Ok(if plan.in_sync() {
        exit::OK
    } else {
        exit::CHANGES_OR_FAILED
    })
}

async fn apply(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    args: ApplyArgs,
) -> anyhow::Result<u8> {
    let origin = args.repo.origin(None)?;
    let (engine, loaded, (plan, live)) = match prepare(state_dir, docker_host, &origin).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if plan.in_sync() {
        println!(
            "Release {} is in sync with revision {}: nothing to do.",
            plan.release, plan.revision
        );
        return Ok(exit::OK);
    }
    print!("{}", plan::render_text(&plan));
    let cancel = daemon::shutdown_token();
    let options = ApplyOptions {
        cancel: cancel.clone(),
    };
    let started = std::time::Instant::now();
    let mut notes = notify::Reporter::cli();
    let mut deploy = notes.loaded(&loaded, Trigger::Cli);
    notes.planned(&mut deploy, &plan, &live);
    notes.started(&mut deploy);
    let result = reconcile::apply(&engine, &plan, &options).await;
    notes.finished(&deploy, &result);
    notes.flush().await;
    let report = result?;
    println!(
        "Applied release {} revision {} in {:.1}s ({} steps).",
        loaded.desired.release,
        loaded.desired.revision,
        started.elapsed().as_secs_f64(),
        report.steps.len()
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
    Ok(exit::OK)
}

async fn run_loop(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    args: RunArgs,
) -> anyhow::Result<u8> {
    let origin = args.repo.origin(None)?;
    let options = RunOptions {
        interval: args.interval,
        retry_failed: args.retry,
    };
    daemon::run(docker_host, origin, state_dir.to_path_buf(), options).await;
    Ok(exit::OK)
}
