//! Containers: list, inspect, create (with ownership labels), start, stop, rename, remove, exec.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, HostConfigLogConfig, MountType, NetworkConnectRequest,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, RenameContainerOptions, StartContainerOptions,
    StopContainerOptions, TopOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::ObjectKind::Container;
use super::{label_filters, op_error, reason_of, status_of, to_btree, Engine, EngineError};
use crate::defaults;
use crate::desired::{ContainerConfig, EnvValue, MountKind};
use crate::labels;
use crate::live::{ContainerState, Health};

/// Most output an exec keeps: probes only need the tail of an error message.
const EXEC_OUTPUT_LIMIT: usize = 4096;

/// One row of a container listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What an inspect tells us, in the fields the reconciler reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The reference it was created from (`Config.Image`).
    pub image: String,
    /// The image id it runs (`sha256:...`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub health: Health,
    /// Output of the last Docker HEALTHCHECK run, trimmed (it is the container's own output,
    /// shown when a gate fails).
    pub health_log: Option<String>,
    pub restart_count: i64,
    pub oom_killed: bool,
    pub exit_code: i64,
    /// The engine's error for a container that failed to start (`State.Error`).
    pub error: Option<String>,
    /// `State.StartedAt`; `None` for a container never started.
    pub started_at: Option<SystemTime>,
    /// Sorted by network name, so "the first network" is stable.
    pub endpoints: Vec<Endpoint>,
    /// `Config.StopTimeout`: the grace period `docker stop` gives it; `None` when it has none
    /// of its own (the engine then uses its default).
    pub stop_timeout: Option<i64>,
}

impl ContainerInfo {
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }
}

/// A container's address on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    /// Empty when the container is not running.
    pub ip: String,
    pub aliases: Vec<String>,
}

/// Who owns a container: written as labels on create, read back by `live::observe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOwnership {
    pub release: String,
    pub service: String,
    pub revision: String,
    pub config_hash: String,
    /// `blue`/`green` for blue-green services.
    pub color: Option<String>,
}

/// The result of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr interleaved, cut to the last few KiB.
    pub output: String,
}

/// Parses an engine timestamp; the zero time (`0001-01-01T00:00:00Z`) means "never".
fn parse_engine_time(s: &str) -> Option<SystemTime> {
    if s.is_empty() || s.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(s)
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()
}

fn state_of(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Created,
    }
}

/// The end of a container's output, on one line: enough to tell why a check failed.
fn last_chars(output: &str) -> String {
    let flat = output.split_whitespace().collect::<Vec<_>>().join(" ");
    let skip = flat.chars().count().saturating_sub(200);
    flat.chars().skip(skip).collect()
}

fn health_of(status: Option<HealthStatusEnum>) -> Health {
    match status {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    }
}

fn restart_policy(restart: &str) -> RestartPolicy {
    let (name, retries) = match restart.split_once(':') {
        Some((name, n)) => (name, n.parse::<i64>().ok()),
        None => (restart, None),
    };
    let name = match name {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

/// The create request for `config`. The only place a secret's plaintext is read: the engine
/// needs it in the container's environment. The body is never logged.
fn create_body(config: &ContainerConfig, owner: &ContainerOwnership) -> ContainerCreateBody {
    let env: Vec<String> = config
        .env
        .iter()
        .map(|(key, value)| match value {
            EnvValue::Plain(v) => format!("{key}={v}"),
            EnvValue::Sensitive(secret) => format!("{key}={}", secret.expose()),
        })
        .collect();

    let mut container_labels: HashMap<String, String> = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    container_labels.extend([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::RELEASE.to_string(), owner.release.clone()),
        (labels::SERVICE.to_string(), owner.service.clone()),
        (labels::REVISION.to_string(), owner.revision.clone()),
        (labels::CONFIG_HASH.to_string(), owner.config_hash.clone()),
        (
            labels::CONFIG.to_string(),
            config.canonical_json().to_string(),
        ),
        (labels::KIND.to_string(), "container".to_string()),
    ]);
    if let Some(color) = &owner.color {
        container_labels.insert(labels::COLOR.to_string(), color.clone());
    }

    let mut exposed = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<bollard::models::PortBinding>>> =
        HashMap::new();
    for port in &config.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        exposed.push(key.clone());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(bollard::models::PortBinding {
                host_ip: Some(port.host_ip.clone()),
                host_port: Some(port.host_port.to_string()),
            });
    }

    let mounts = config
        .mounts
        .iter()
        .map(|m| bollard::models::Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect::<Vec<_>>();

    // `/run:size=64m` → path `/run`, options `size=64m`, as `docker run --tmpfs` reads it.
    let tmpfs: HashMap<String, String> = config
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();

    let host_config = HostConfig {
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        restart_policy: config.restart.as_deref().map(restart_policy),
        readonly_rootfs: config.read_only.then_some(true),
        init: config.init.then_some(true),
        cap_add: (!config.cap_add.is_empty()).then(|| config.cap_add.clone()),
        cap_drop: (!config.cap_drop.is_empty()).then(|| config.cap_drop.clone()),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        extra_hosts: (!config.extra_hosts.is_empty()).then(|| config.extra_hosts.clone()),
        memory: config.memory_bytes,
        nano_cpus: config.nano_cpus,
        log_config: config.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: Some(l.driver.clone()),
            config: Some(
                l.options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }),
        // Created on its first network only; the others are connected before start.
        network_mode: config.networks.first().map(|n| n.name.clone()),
        ..Default::default()
    };

    let networking_config = config.networks.first().map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.name.clone(),
            EndpointSettings {
                aliases: (!n.aliases.is_empty()).then(|| n.aliases.clone()),
                ..Default::default()
            },
        )])),
    });

    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: config.command.clone(),
        entrypoint: config.entrypoint.clone(),
        env: Some(env),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: config.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            retries: h.retries,
            start_period: h.start_period_ns,
            start_interval: None,
        }),
        user: config.user.clone(),
        working_dir: config.working_dir.clone(),
        hostname: config.hostname.clone(),
        labels: Some(container_labels),
        stop_signal: config.stop_signal.clone(),
        stop_timeout: config.stop_timeout_secs.and_then(|s| i64::try_from(s).ok()),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

impl Engine {
    /// Every container (running or not) whose labels include all of `label_filter`
    /// (`key=value` each, as `labels::release_filter` builds).
    pub async fn list_containers(
        &self,
        label_filter: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filters(label_filter)),
            ..Default::default()
        };
        let what = label_filter.join(",");
        let rows = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(op_error("list", Container, &what))?;
        Ok(rows
            .into_iter()
            .map(|row| ContainerSummary {
                id: row.id.unwrap_or_default(),
                name: row
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: to_btree(row.labels),
            })
            .collect())
    }

    /// Inspects a container by name or id.
    pub async fn inspect_container(&self, name: &str) -> Result<ContainerInfo, EngineError> {
        let c = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(op_error("inspect", Container, name))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(network, ep)| Endpoint {
                network,
                ip: ep.ip_address.unwrap_or_default(),
                aliases: ep.aliases.unwrap_or_default(),
            })
            .collect();
        endpoints.sort_by(|a, b| a.network.cmp(&b.network));
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| name.to_string()),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            labels: to_btree(config.labels),
            state: state_of(state.status),
            health_log: state
                .health
                .as_ref()
                .and_then(|h| h.log.as_ref())
                .and_then(|log| log.last())
                .and_then(|entry| entry.output.as_deref())
                .map(last_chars)
                .filter(|o| !o.is_empty()),
            health: health_of(state.health.and_then(|h| h.status)),
            restart_count: c.restart_count.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            error: state.error.filter(|e| !e.is_empty()),
            started_at: state.started_at.as_deref().and_then(parse_engine_time),
            endpoints,
            stop_timeout: config.stop_timeout,
        })
    }

    /// Creates container `name` from `config` with the ownership labels, attached to all its
    /// networks (the first at create, the rest before it is ever started). Returns its id.
    pub async fn create_container(
        &self,
        name: &str,
        config: &ContainerConfig,
        owner: &ContainerOwnership,
    ) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let body = create_body(config, owner);
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                // A missing image is worth its own message: the plan should have pulled it.
                if status_of(&e) == Some(404) {
                    EngineError::Operation {
                        op: "create",
                        kind: Container,
                        name: name.to_string(),
                        reason: format!("image `{}` is not on this host", config.image),
                    }
                } else {
                    op_error("create", Container, name)(e)
                }
            })?;
        for network in config.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: name.to_string(),
                endpoint_config: Some(EndpointSettings {
                    aliases: (!network.aliases.is_empty()).then(|| network.aliases.clone()),
                    ..Default::default()
                }),
            };
            if let Err(e) = self.docker.connect_network(&network.name, request).await {
                // Half-wired containers must not linger: remove it before reporting.
                let _ = self.remove_container(name, true).await;
                return Err(EngineError::Operation {
                    op: "connect to network",
                    kind: Container,
                    name: name.to_string(),
                    reason: format!("network `{}`: {}", network.name, reason_of(&e)),
                });
            }
        }
        tracing::debug!(container = name, id = %created.id, "created container");
        Ok(created.id)
    }

    pub async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        // Starting a running container is a 304, which bollard reports as success: fine.
        self.docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(op_error("start", Container, name))
    }

    /// Stops a container, giving it `timeout` (or its own stop timeout when `None`) before the
    /// engine kills it. Returns whether it was running: a stopped container is left as it is.
    pub async fn stop_container(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<bool, EngineError> {
        // The engine answers 304 for a stopped container, which bollard reports as success;
        // ask first, so an undo does not start a container that was not running.
        let info = self.inspect_container(name).await?;
        self.stop_inspected(name, &info, timeout).await
    }

    /// Stops a container with the grace period its config asks for, or the default.
    pub async fn stop_container_gracefully(&self, name: &str) -> Result<bool, EngineError> {
        let info = self.inspect_container(name).await?;
        // `None` lets the engine use the container's own StopTimeout (set at create), which
        // defaults to 10 s there too; pass ours explicitly only as a fallback for unknown ones.
        let timeout = info
            .stop_timeout
            .is_none()
            .then_some(defaults::STOP_GRACE_PERIOD);
        self.stop_inspected(name, &info, timeout).await
    }

    /// The stop itself, after one inspect told whether it runs (one engine request fewer per
    /// stop: this sits on every blue-green release's path).
    async fn stop_inspected(
        &self,
        name: &str,
        info: &ContainerInfo,
        timeout: Option<Duration>,
    ) -> Result<bool, EngineError> {
        let was_running = matches!(
            info.state,
            ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
        );
        if !was_running {
            // The engine would answer 304: nothing to stop.
            return Ok(false);
        }
        let options = StopContainerOptions {
            t: timeout.and_then(|t| i32::try_from(t.as_secs()).ok()),
            ..Default::default()
        };
        self.docker
            .stop_container(name, Some(options))
            .await
            .map_err(op_error("stop", Container, name))?;
        Ok(was_running)
    }

    pub async fn rename_container(&self, from: &str, to: &str) -> Result<(), EngineError> {
        self.docker
            .rename_container(
                from,
                RenameContainerOptions {
                    name: to.to_string(),
                },
            )
            .await
            .map_err(op_error("rename", Container, from))
    }

    /// Sends `signal` (`HUP`, `SIGHUP` or a number) to the container's main process, e.g. to
    /// make nginx reload. The container keeps running unless the signal ends it.
    pub async fn signal_container(&self, name: &str, signal: &str) -> Result<(), EngineError> {
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        self.docker
            .kill_container(name, Some(options))
            .await
            // A stopped container is a 409 "is not running": say which signal was lost.
            .map_err(|e| {
                op_error("signal", Container, name)(e).with_detail(format!("send {signal}"))
            })
    }

    /// Removes a container; its volumes are kept (named volumes hold data).
    pub async fn remove_container(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force,
            v: false,
            link: false,
        };
        self.docker
            .remove_container(name, Some(options))
            .await
            .map_err(op_error("remove", Container, name))
    }

    /// Waits until the container exits; returns its exit code. Not bounded: the caller puts
    /// its own timeout around it (a job's).
    pub async fn wait_container(&self, name: &str) -> Result<i64, EngineError> {
        let options = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut stream = self.docker.wait_container(name, Some(options));
        match stream.next().await {
            Some(Ok(reply)) => Ok(reply.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(op_error("wait for", Container, name)(e)),
            None => Err(EngineError::Operation {
                op: "wait for",
                kind: Container,
                name: name.to_string(),
                reason: "the engine closed the wait without an exit code".to_string(),
            }),
        }
    }

    /// The last `lines` lines of a container's stdout and stderr, interleaved as written.
    pub async fn container_logs(&self, name: &str, lines: usize) -> Result<Vec<u8>, EngineError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(name, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(op_error("read the logs of", Container, name))?;
            out.extend_from_slice(&chunk.into_bytes());
        }
        Ok(out)
    }

    /// The container's processes as the engine's `top` endpoint lists them, one `pid args` line
    /// each (host pids). The engine runs `ps` on its own host, so no process starts in the
    /// container: one request instead of an exec's four.
    pub async fn top(&self, name: &str) -> Result<String, EngineError> {
        let options = TopOptions {
            ps_args: "-o pid,args".to_string(),
        };
        let reply = self
            .docker
            .top_processes(name, Some(options))
            .await
            .map_err(op_error("list processes of", Container, name))?;
        let titles = reply.titles.unwrap_or_default();
        let col = |t: &str| titles.iter().position(|x| x == t);
        let (Some(pid), Some(args)) = (col("PID"), col("COMMAND").or_else(|| col("CMD"))) else {
            return Err(EngineError::Operation {
                op: "list processes of",
                kind: Container,
                name: name.to_string(),
                reason: format!("unexpected columns {titles:?}"),
            });
        };
        let mut out = String::new();
        for row in reply.processes.unwrap_or_default() {
            if let (Some(p), Some(a)) = (row.get(pid), row.get(args)) {
                out.push_str(&format!("{p} {a}\n"));
            }
        }
        Ok(out)
    }

    /// Runs `command` (argv, never a shell string) in a running container; returns its exit
    /// code and output, or `ExecTimeout` after `timeout` (the process may still be running).
    pub async fn exec(
        &self,
        name: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        self.exec_as(name, None, command, timeout).await
    }

    /// [`Engine::exec`] as `user` (`"0"`: root) instead of the container's user.
    pub async fn exec_as(
        &self,
        name: &str,
        user: Option<&str>,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        let run = async {
            let (id, started) = self.start_attached_exec(name, command, user, false).await?;
            let mut output = Vec::new();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = started
            {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(op_error("exec in", Container, name))?;
                    keep_tail(&mut output, &chunk.into_bytes());
                }
            }
            self.exec_outcome(name, &id, &output).await
        };
        with_exec_timeout(name, command, timeout, run).await
    }

    /// Runs `command` in a running container with its stdout streamed into `sink` chunk by
    /// chunk (a database dump is never held in memory); stderr is kept, cut to the last few
    /// KiB, in the returned [`ExecOutput`].
    pub async fn exec_streaming(
        &self,
        name: &str,
        command: &[String],
        timeout: Duration,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<ExecOutput, EngineError> {
        let run = async {
            let (id, started) = self.start_attached_exec(name, command, None, false).await?;
            let mut stderr = Vec::new();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = started
            {
                while let Some(chunk) = stream.next().await {
                    match chunk.map_err(op_error("exec in", Container, name))? {
                        LogOutput::StdOut { message } => {
                            sink.write_all(&message)
                                .map_err(|e| EngineError::Operation {
                                    op: "store the output of exec in",
                                    kind: Container,
                                    name: name.to_string(),
                                    reason: e.to_string(),
                                })?;
                        }
                        other => keep_tail(&mut stderr, &other.into_bytes()),
                    }
                }
            }
            self.exec_outcome(name, &id, &stderr).await
        };
        with_exec_timeout(name, command, timeout, run).await
    }

    /// Runs `command` in a running container with `input` streamed to its stdin (closed at
    /// the end of `input`); returns its exit code and output (stdout and stderr, the last few
    /// KiB). How `pg_restore` reads a snapshot file that is on this host, not in the container.
    pub async fn exec_with_input(
        &self,
        name: &str,
        command: &[String],
        timeout: Duration,
        input: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> Result<ExecOutput, EngineError> {
        use tokio::io::AsyncWriteExt;
        let op_err = |what: &'static str| {
            let name = name.to_string();
            move |e: std::io::Error| EngineError::Operation {
                op: what,
                kind: Container,
                name,
                reason: e.to_string(),
            }
        };
        let run = async {
            let (id, started) = self.start_attached_exec(name, command, None, true).await?;
            let mut output = Vec::new();
            let mut fed_result = Ok(());
            if let StartExecResults::Attached {
                output: mut stream,
                input: mut stdin,
            } = started
            {
                // A command may stop reading before the end (`pg_restore --list` reads only
                // the table of contents): a broken pipe is its choice, its exit code the verdict.
                let feed = async {
                    match tokio::io::copy(input, &mut stdin).await {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        other => other.map_err(op_err("send input to exec in"))?,
                    };
                    match stdin.shutdown().await {
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                            Err(op_err("close stdin of exec in")(e))
                        }
                        _ => Ok(()),
                    }
                };
                let read = async {
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(op_error("exec in", Container, name))?;
                        keep_tail(&mut output, &chunk.into_bytes());
                    }
                    Ok::<(), EngineError>(())
                };
                // Once the output ends the command has exited: input it did not read is not
                // waited for (the engine may stop reading it without closing the connection,
                // which would block the copy until some timeout).
                tokio::pin!(feed);
                tokio::pin!(read);
                let mut fed = None;
                let read = loop {
                    tokio::select! {
                        r = &mut read => break r,
                        f = &mut feed, if fed.is_none() => fed = Some(f),
                    }
                };
                read?;
                fed_result = fed.unwrap_or(Ok(()));
            }
            let outcome = self.exec_outcome(name, &id, &output).await?;
            // A failed command explains itself better than the failed copy into it.
            if outcome.exit_code == 0 {
                fed_result?;
            }
            Ok(outcome)
        };
        with_exec_timeout(name, command, timeout, run).await
    }

    /// Creates and starts an exec with stdout and stderr (and stdin when `stdin`) attached;
    /// returns its id and the attached streams.
    async fn start_attached_exec(
        &self,
        name: &str,
        command: &[String],
        user: Option<&str>,
        stdin: bool,
    ) -> Result<(String, StartExecResults), EngineError> {
        let exec = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    user: user.map(str::to_string),
                    ..Default::default()
                },
            )
            .await
            .map_err(op_error("exec in", Container, name))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(op_error("exec in", Container, name))?;
        Ok((exec.id, started))
    }

    /// The finished exec's exit code, with the last [`EXEC_OUTPUT_LIMIT`] bytes of `output`.
    async fn exec_outcome(
        &self,
        name: &str,
        id: &str,
        output: &[u8],
    ) -> Result<ExecOutput, EngineError> {
        let inspect = self
            .docker
            .inspect_exec(id)
            .await
            .map_err(op_error("exec in", Container, name))?;
        let start = output.len().saturating_sub(EXEC_OUTPUT_LIMIT);
        Ok(ExecOutput {
            exit_code: inspect.exit_code.unwrap_or(-1),
            output: String::from_utf8_lossy(&output[start..]).into_owned(),
        })
    }
}

/// Appends `chunk`, keeping at most about twice [`EXEC_OUTPUT_LIMIT`] bytes (the tail).
fn keep_tail(buffer: &mut Vec<u8>, chunk: &[u8]) {
    buffer.extend_from_slice(chunk);
    if buffer.len() > 2 * EXEC_OUTPUT_LIMIT {
        buffer.drain(..buffer.len() - EXEC_OUTPUT_LIMIT);
    }
}

/// `run` bounded by `timeout`: `ExecTimeout` after it (the process may still be running).
async fn with_exec_timeout(
    name: &str,
    command: &[String],
    timeout: Duration,
    run: impl std::future::Future<Output = Result<ExecOutput, EngineError>>,
) -> Result<ExecOutput, EngineError> {
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::ExecTimeout {
                name: name.to_string(),
                command: command.to_vec(),
                timeout_ms: timeout.as_millis(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{NetworkAttachment, PortBinding};
    use crate::secret::Secret;

    fn owner() -> ContainerOwnership {
        ContainerOwnership {
            release: "shop".into(),
            service: "api".into(),
            revision: "abc".into(),
            config_hash: "h".into(),
            color: None,
        }
    }

    #[test]
    fn create_body_carries_labels_env_ports_and_first_network() {
        let mut config = ContainerConfig {
            image: "app:v1".into(),
            ..Default::default()
        };
        config
            .env
            .insert("TOKEN".into(), EnvValue::Sensitive(Secret::new("s3cr3t")));
        config
            .env
            .insert("MODE".into(), EnvValue::Plain("prod".into()));
        config.ports.push(PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: 18080,
            container_port: 8000,
            protocol: "tcp".into(),
        });
        config.networks = vec![
            NetworkAttachment {
                name: "shop-front".into(),
                aliases: vec!["api".into()],
            },
            NetworkAttachment {
                name: "shop-back".into(),
                aliases: vec![],
            },
        ];
        let body = create_body(&config, &owner());
        let env = body.env.clone().unwrap_or_default();
        assert!(env.contains(&"TOKEN=s3cr3t".to_string()));
        assert!(env.contains(&"MODE=prod".to_string()));
        let labels = body.labels.clone().unwrap_or_default();
        assert_eq!(labels[labels::SERVICE], "api");
        assert_eq!(labels[labels::KIND], "container");
        // The config label redacts the secret.
        assert!(!labels[labels::CONFIG].contains("s3cr3t"));
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("shop-front"));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .unwrap_or_default();
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints.contains_key("shop-front"));
        assert_eq!(body.exposed_ports, Some(vec!["8000/tcp".to_string()]));
    }

    #[test]
    fn restart_policy_parses_retries() {
        let p = restart_policy("on-failure:3");
        assert_eq!(p.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(p.maximum_retry_count, Some(3));
        assert_eq!(restart_policy("no").name, Some(RestartPolicyNameEnum::NO));
    }

    #[test]
    fn engine_times_parse() {
        assert!(parse_engine_time("0001-01-01T00:00:00Z").is_none());
        assert!(parse_engine_time("2024-05-07T21:09:36.123456789Z").is_some());
    }
}
