//! The command line, in two layers (as ripgrep does): clap parses and validates flags without
//! any I/O; `run` then opens the expensive things (git, the engine) once and dispatches.
//! Errors are printed once, at the edge, with their whole chain on one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod snapshot_cmds;
mod state_cmds;

use crate::apply::PausePoint;
use crate::daemon::{self, RunOptions};
use crate::defaults;
use crate::desired::ProcessEnv;
use crate::engine::Engine;
use crate::notify;
use crate::plan;
use crate::reconcile::{self, Origin, ReconcileError, Trigger};
use crate::recovery;
use crate::secret::Secret;
use crate::source::SourceConfig;
use crate::spec;
use crate::watch;
use crate::webhook::WebhookConfig;

const EXAMPLES: &str = "\
Examples:
  reconciler validate --spec release.yaml
  reconciler diff --repo https://git.example/ops/shop.git --ref main
  reconciler diff --local ./shop-ops --output json
  reconciler apply --repo /srv/git/shop-ops.git
  reconciler run --repo /srv/git/shop-ops.git --interval 30s
  reconciler run --repo /srv/git/shop-ops --watch --webhook-secret-file /etc/reconciler/webhook.secret
  reconciler status
  reconciler rollback --to 3f2a9c1";

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
    #[command(after_help = "Examples:
  reconciler run --repo /srv/git/shop-ops.git --interval 30s
  reconciler run --repo https://git.example/ops/shop.git --ref main \\
      --webhook-secret-env RECONCILER_WEBHOOK_SECRET --listen 127.0.0.1:9100
  reconciler run --repo /srv/git/shop-ops --watch --log-format json")]
    Run(RunArgs),
    /// Desired vs applied revision, per service the color, image, health and drift; the lock.
    #[command(after_help = "Examples:
  reconciler status
  reconciler status --release shop --output json")]
    Status(state_cmds::StatusArgs),
    /// The last deploys: revision, who, trigger, outcome, failing step, timings.
    #[command(after_help = "Examples:
  reconciler history --limit 5
  reconciler history --release shop --output json")]
    History(state_cmds::HistoryArgs),
    /// Re-apply a recorded release (default: the previous applied one) from the git cache,
    /// through the same gates; then automatic sync stays suspended until `resume`.
    #[command(after_help = "Examples:
  reconciler rollback
  reconciler rollback --to 3f2a9c1 --lock-wait 5m")]
    Rollback(state_cmds::RollbackArgs),
    /// Pause automatic sync: `run` keeps observing and reporting drift but applies nothing.
    #[command(after_help = "Example:
  reconciler suspend --message 'investigating the 14:00 incident'")]
    Suspend(state_cmds::SuspendArgs),
    /// Re-enable automatic sync after `suspend` or `rollback`.
    #[command(after_help = "Example:
  reconciler resume --release shop")]
    Resume(state_cmds::ReleaseArgs),
    /// Show or break the deploy lock.
    #[command(subcommand)]
    Lock(state_cmds::LockCommand),
    /// List, verify or restore the snapshots of stateful services (`snapshot:` in the spec).
    #[command(subcommand)]
    Snapshots(snapshot_cmds::SnapshotsCommand),
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

/// Flags of every command that deploys.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// Who is deploying, for history and the audit log; default: RECONCILER_ACTOR, else the
    /// CI's user (GITHUB_ACTOR, GITLAB_USER_LOGIN, ...), else $USER@hostname.
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Wait up to this long (`30s`, `5m`) for another deploy's lock instead of failing.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<Duration>,
    /// How many deploys history.json keeps.
    #[arg(long, value_name = "N", default_value_t = defaults::HISTORY_LIMIT)]
    pub history_limit: usize,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Apply the revision even if its last deploy failed.
    #[arg(long)]
    pub retry: bool,
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
    /// How many deploys history.json keeps.
    #[arg(long, value_name = "N", default_value_t = defaults::HISTORY_LIMIT)]
    pub history_limit: usize,
    /// The HTTP endpoint (/metrics, /healthz, /readyz, /webhook): `ADDR:PORT`, or `off`.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen, default_value = defaults::LISTEN)]
    pub listen: Listen,
    /// File holding the webhook's HMAC secret (surrounding whitespace ignored); enables /webhook.
    #[arg(long, value_name = "FILE", conflicts_with = "webhook_secret_env")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Environment variable holding the webhook's HMAC secret; enables /webhook.
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// Start a cycle as soon as a ref of the (local) repository moves, besides polling.
    #[arg(long)]
    pub watch: bool,
}

/// `--listen`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<std::net::SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 127.0.0.1:9100) or `off`"))
}

impl RunArgs {
    /// The webhook secret, read once at start; `None` leaves the endpoint off.
    fn webhook_secret(&self) -> anyhow::Result<Option<Secret>> {
        let value = match (&self.webhook_secret_file, &self.webhook_secret_env) {
            (Some(file), _) => std::fs::read_to_string(file).with_context(|| {
                format!("cannot read the webhook secret file {}", file.display())
            })?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!("--webhook-secret-env {var}: the variable is not set (or not UTF-8); fix: export it, or use --webhook-secret-file")
            })?,
            (None, None) => return Ok(None),
        };
        let value = value.trim();
        anyhow::ensure!(
            !value.is_empty(),
            "the webhook secret is empty; fix: put a long random string in it (openssl rand -hex 32)"
        );
        Ok(Some(Secret::new(value)))
    }
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
        Command::Status(args) => {
            state_cmds::status(&cli.state_dir, cli.docker_host.as_deref(), args).await
        }
        Command::History(args) => state_cmds::history(&cli.state_dir, args),
        Command::Rollback(args) => {
            state_cmds::rollback(&cli.state_dir, cli.docker_host.as_deref(), args).await
        }
        Command::Suspend(args) => state_cmds::suspend(&cli.state_dir, args),
        Command::Resume(args) => state_cmds::resume(&cli.state_dir, args),
        Command::Lock(cmd) => state_cmds::lock(&cli.state_dir, cmd).await,
        Command::Snapshots(cmd) => {
            snapshot_cmds::run(&cli.state_dir, cli.docker_host.as_deref(), cmd).await
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e);
            // Exit 1 only when a release was tried and failed; a journal that cannot be started
            // means nothing was changed: exit 2.
            let failed_release = e
                .downcast_ref::<ReconcileError>()
                .is_some_and(ReconcileError::is_failed_release)
                || e.downcast_ref::<crate::deploy::DeployError>()
                    .is_some_and(|d| d.is_failed_release());
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
) -> anyhow::Result<Result<(Engine, reconcile::Loaded, plan::Plan), u8>> {
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
    if let Some(note) = recovery::pending(state_dir, &loaded.desired.release) {
        // diff changes nothing, recovery included; it says what the next apply will do first.
        eprintln!("note: {note}");
    }
    let plan = reconcile::plan(&engine, &loaded.desired).await?;
    Ok(Ok((engine, loaded, plan)))
}

async fn diff(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    args: DiffArgs,
) -> anyhow::Result<u8> {
    let origin = args.repo.origin(args.local.as_ref())?;
    let (_, _, plan) = match prepare(state_dir, docker_host, &origin).await? {
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
    // Test-only hook (see `PausePoint`); read before anything changes so a bad value changes
    // nothing.
    let pause_at = PausePoint::from_env().map_err(anyhow::Error::msg)?;
    // Before anything slow: a SIGTERM while waiting for the lock or planning still ends in a
    // clean exit that releases the lock.
    let cancel = daemon::shutdown_token();
    let tree = reconcile::fetch(&origin, state_dir).await?;
    let loaded = match reconcile::load(tree, &ProcessEnv) {
        Ok(l) => l,
        Err(ReconcileError::Spec(errors)) => {
            eprint!("{errors}");
            return Ok(exit::ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    let engine = connect(docker_host).await?;
    let source = match &origin {
        Origin::Git(config) => crate::deploy::source_record(config, state_dir),
        Origin::Local { .. } => None,
    };
    let ctx = crate::deploy::Context {
        state_dir: state_dir.to_path_buf(),
        history_limit: args.deploy.history_limit,
    };
    let actor = crate::state::actor::from_env(args.deploy.actor.as_deref());
    let mut reporter = notify::Reporter::new(notify::Notifier::default(), &actor);
    let mut cycle = reporter.loaded(&loaded, Trigger::Cli);
    let request = crate::deploy::Request {
        loaded,
        source,
        kind: crate::state::history::Kind::Deploy,
        trigger: Trigger::Cli,
        actor,
        retry: args.retry,
        lock_wait: args.deploy.lock_wait,
        cancel,
        pause_at,
    };
    let events = notify::Notifying::new(&state_cmds::Printed, &mut reporter, &mut cycle, true);
    let result = crate::deploy::deploy(&ctx, &engine, request, &events).await;
    events.finished(match &result {
        Err(crate::deploy::DeployError::Reconcile(e)) => Err(e),
        _ => Ok(()),
    });
    // Never long: a receiver that does not answer costs at most the flush deadline.
    reporter.flush().await;
    Ok(state_cmds::report_deployed(&result?))
}

async fn run_loop(
    state_dir: &std::path::Path,
    docker_host: Option<&str>,
    args: RunArgs,
) -> anyhow::Result<u8> {
    let origin = args.repo.origin(None)?;
    let webhook = args.webhook_secret()?.map(|secret| WebhookConfig {
        secret,
        reference: args.repo.reference.clone(),
    });
    let watch = match (&origin, args.watch) {
        (Origin::Git(config), true) => Some(watch::git_dir(&config.url)?),
        _ => None,
    };
    let options = RunOptions {
        interval: args.interval,
        retry_failed: args.retry,
        history_limit: args.history_limit,
        listen: args.listen.0,
        webhook,
        watch,
    };
    daemon::run(docker_host, origin, state_dir.to_path_buf(), options).await?;
    Ok(exit::OK)
}
