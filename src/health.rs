//! The health gate: probe a new container until it is ready, its deadline passes, or it dies.
//!
//! Small on purpose (kamal-proxy's health check is a loop around one probe): every probe kind
//! reports through [`probe_once`], and the loop around it does the timing. Each round inspects
//! the container first, so a container that exits, is OOM-killed or restarts fails the gate at
//! once, with the reason, instead of after the deadline.
//!
//! HTTP and TCP probes go from this host to the container's IP on its first non-internal
//! network (networks sorted by name). A container only on internal networks cannot be reached
//! that way; its HTTP probe runs inside it instead (`wget -q -O /dev/null`, so it can only check
//! for a 2xx answer), and its TCP probe is refused with a clear message.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::defaults;
use crate::desired::{Gate, Probe};
use crate::engine::{ContainerInfo, Engine, EngineError};
use crate::labels;
use crate::live::{ContainerState, Health};

/// What a passed gate reports, for logs and history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GateReport {
    pub service: String,
    pub container: String,
    pub probe: String,
    pub attempts: u32,
    pub elapsed_ms: u128,
    /// The passing probe's result (`HTTP 200`, `exit 0`, ...).
    pub last: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{subject}: the container {what} during the {probe} gate, after {elapsed_ms} ms (last probe: {last})")]
    ContainerFailed {
        subject: String,
        probe: String,
        what: String,
        last: String,
        elapsed_ms: u128,
    },

    #[error("{subject}: the {probe} gate did not pass within its {deadline_ms} ms deadline ({attempts} probes over {elapsed_ms} ms; last probe: {last})")]
    Deadline {
        subject: String,
        probe: String,
        deadline_ms: u128,
        attempts: u32,
        elapsed_ms: u128,
        last: String,
    },

    #[error("{subject}: the {probe} gate cannot run: {reason}")]
    Unusable {
        subject: String,
        probe: String,
        reason: String,
    },

    #[error(
        "{subject}: the {probe} gate was cancelled after {elapsed_ms} ms (last probe: {last})"
    )]
    Cancelled {
        subject: String,
        probe: String,
        last: String,
        elapsed_ms: u128,
    },

    #[error("{subject}: the {probe} gate could not inspect the container: {source}")]
    Engine {
        subject: String,
        probe: String,
        #[source]
        source: EngineError,
    },
}

/// A probe that did not pass: try again, or give up now (the gate can never pass).
enum Miss {
    Retry(String),
    Unusable(String),
    /// A verdict that more probing cannot change: fail the gate now.
    Failed(String),
}

/// How a probe reads in messages: `http GET :8000/health == 200`, `exec [..]`, ...
pub fn describe_probe(probe: &Probe) -> String {
    match probe {
        Probe::Http { port, path, expect } => format!("http GET :{port}{path} == {expect}"),
        Probe::Tcp { port } => format!("tcp :{port}"),
        Probe::Exec { command } => format!("exec {command:?}"),
        Probe::DockerHealth => "docker healthcheck".to_string(),
        Probe::Running => format!("running for {} ms", defaults::MIN_UPTIME.as_millis()),
    }
}

/// Why the gate must fail now, if the container is gone from under it.
fn fatal_state(info: &ContainerInfo, baseline_restarts: i64) -> Option<String> {
    let oom = if info.oom_killed { ", OOM-killed" } else { "" };
    let error = info
        .error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    match info.state {
        ContainerState::Exited | ContainerState::Dead => {
            Some(format!("exited with code {}{oom}{error}", info.exit_code))
        }
        ContainerState::Restarting => Some(format!(
            "is restarting (last exit code {}{oom}){error}",
            info.exit_code
        )),
        ContainerState::Created => Some("was never started".to_string()),
        ContainerState::Removing => Some("is being removed".to_string()),
        _ if info.restart_count > baseline_restarts => Some(format!(
            "restarted {} time(s) (last exit code {}{oom})",
            info.restart_count - baseline_restarts,
            info.exit_code
        )),
        _ => None,
    }
}

/// The probe's state across rounds: the HTTP client and which networks are internal.
struct Prober<'a> {
    engine: &'a Engine,
    container: &'a str,
    gate: &'a Gate,
    http: Option<reqwest::Client>,
    internal: BTreeMap<String, bool>,
    baseline_restarts: i64,
}

impl Prober<'_> {
    /// The container's address on its first non-internal network; `None` if it has none.
    async fn address(&mut self, info: &ContainerInfo) -> Result<Option<IpAddr>, Miss> {
        for endpoint in &info.endpoints {
            let internal = match self.internal.get(&endpoint.network) {
                Some(internal) => *internal,
                None => {
                    let internal = self
                        .engine
                        .inspect_network(&endpoint.network)
                        .await
                        .map_err(|e| Miss::Retry(e.to_string()))?
                        .is_some_and(|n| n.internal);
                    self.internal.insert(endpoint.network.clone(), internal);
                    internal
                }
            };
            if internal {
                continue;
            }
            if endpoint.ip.is_empty() {
                return Err(Miss::Retry(format!(
                    "no address yet on network `{}`",
                    endpoint.network
                )));
            }
            let ip = endpoint.ip.parse().map_err(|_| {
                Miss::Unusable(format!("unreadable container address `{}`", endpoint.ip))
            })?;
            return Ok(Some(ip));
        }
        Ok(None)
    }

    async fn probe_once(&mut self, info: &ContainerInfo) -> Result<String, Miss> {
        match &self.gate.probe {
            Probe::Http { port, path, expect } => match self.address(info).await? {
                Some(ip) => {
                    let client = match &self.http {
                        Some(client) => client.clone(),
                        None => {
                            let client = reqwest::Client::builder()
                                .timeout(self.gate.timeout)
                                .redirect(reqwest::redirect::Policy::none())
                                .no_proxy()
                                .build()
                                .map_err(|e| Miss::Unusable(format!("HTTP client: {e}")))?;
                            self.http = Some(client.clone());
                            client
                        }
                    };
                    let url = format!("http://{}{path}", std::net::SocketAddr::new(ip, *port));
                    match client.get(&url).send().await {
                        Ok(resp) if resp.status().as_u16() == *expect => {
                            Ok(format!("HTTP {}", resp.status().as_u16()))
                        }
                        Ok(resp) => Err(Miss::Retry(format!(
                            "HTTP {} from {url}",
                            resp.status().as_u16()
                        ))),
                        Err(e) => Err(Miss::Retry(format!("GET {url}: {}", error_chain(&e)))),
                    }
                }
                None if (200..300).contains(expect) => {
                    let command = vec![
                        "wget".to_string(),
                        "-q".to_string(),
                        "-O".to_string(),
                        "/dev/null".to_string(),
                        format!("http://127.0.0.1:{port}{path}"),
                    ];
                    self.exec(&command).await
                }
                None => Err(Miss::Unusable(format!(
                    "the container is only on internal networks, so the probe runs inside it \
                     with wget, which can check for a 2xx answer but not for {expect} \
                     (fix: expect a 2xx status, or attach it to a non-internal network)"
                ))),
            },
            Probe::Tcp { port } => match self.address(info).await? {
                Some(ip) => {
                    let addr = std::net::SocketAddr::new(ip, *port);
                    match tokio::time::timeout(
                        self.gate.timeout,
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Ok(format!("connected to {addr}")),
                        Ok(Err(e)) => Err(Miss::Retry(format!("connect {addr}: {e}"))),
                        Err(_) => Err(Miss::Retry(format!("connect {addr}: timed out"))),
                    }
                }
                None => Err(Miss::Unusable(
                    "the container is only on internal networks, which this host cannot reach \
                     (fix: use an exec probe, or attach it to a non-internal network)"
                        .to_string(),
                )),
            },
            Probe::Exec { command } => self.exec(command).await,
            Probe::DockerHealth => match info.health {
                Health::Healthy => Ok("healthy".to_string()),
                Health::Starting => Err(Miss::Retry("health: starting".to_string())),
                // Docker says unhealthy only after `retries` failures in a row: a verdict, as
                // for compose's `service_healthy`, so waiting for the deadline gains nothing.
                Health::Unhealthy => Err(Miss::Failed(format!(
                    "was reported unhealthy by its Docker HEALTHCHECK{}",
                    info.health_log
                        .as_deref()
                        .map(|l| format!(" (last output: {l})"))
                        .unwrap_or_default()
                ))),
                Health::None => Err(Miss::Unusable(
                    "the container has no HEALTHCHECK (fix: declare one, or another probe)"
                        .to_string(),
                )),
            },
            Probe::Running => {
                let up = info
                    .started_at
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                if info.is_running()
                    && info.restart_count == self.baseline_restarts
                    && up >= defaults::MIN_UPTIME
                {
                    Ok(format!("up {} ms", up.as_millis()))
                } else {
                    Err(Miss::Retry(format!(
                        "up {} ms of {}",
                        up.as_millis(),
                        defaults::MIN_UPTIME.as_millis()
                    )))
                }
            }
        }
    }

    async fn exec(&self, command: &[String]) -> Result<String, Miss> {
        match self
            .engine
            .exec(self.container, command, self.gate.timeout)
            .await
        {
            Ok(out) if out.exit_code == 0 => Ok("exit 0".to_string()),
            Ok(out) => {
                let tail: String = out.output.trim().chars().rev().take(200).collect();
                let tail: String = tail.chars().rev().collect();
                Err(Miss::Retry(format!("exit {}: {tail}", out.exit_code)))
            }
            Err(e) => Err(Miss::Retry(e.to_string())),
        }
    }
}

/// reqwest's top-level message is terse (`error sending request`); the cause says why.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The pause after probe number `attempts`. The first probe after a start usually comes too
/// early (the process is still binding its port), so the pauses start at [`FIRST_PAUSE`] and
/// double up to `interval`: a container ready in 200 ms passes then, not a whole interval later.
fn pause_after(attempts: u32, interval: Duration) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(interval)
}

const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Probes `container_name` by `gate` until it passes, fails for good, its deadline passes, or
/// `cancel` fires. Every probe gets `gate.timeout`; rounds are `gate.interval` apart, but for
/// the first few (see [`pause_after`]).
pub async fn await_healthy(
    engine: &Engine,
    container_name: &str,
    gate: &Gate,
    cancel: &CancellationToken,
) -> Result<GateReport, GateError> {
    let started = Instant::now();
    let probe = describe_probe(&gate.probe);
    let mut subject = format!("container `{container_name}`");
    let mut service = String::new();
    let mut last = "none yet".to_string();
    let mut attempts = 0u32;
    let mut prober = Prober {
        engine,
        container: container_name,
        gate,
        http: None,
        internal: BTreeMap::new(),
        baseline_restarts: 0,
    };

    loop {
        let info = engine
            .inspect_container(container_name)
            .await
            .map_err(|source| GateError::Engine {
                subject: subject.clone(),
                probe: probe.clone(),
                source,
            })?;
        if attempts == 0 {
            if let Some(s) = info.labels.get(labels::SERVICE) {
                service = s.clone();
                subject = format!("service `{s}` (container `{container_name}`)");
            }
            prober.baseline_restarts = info.restart_count;
        }
        if let Some(what) = fatal_state(&info, prober.baseline_restarts) {
            return Err(GateError::ContainerFailed {
                subject,
                probe,
                what,
                last,
                elapsed_ms: started.elapsed().as_millis(),
            });
        }
        if attempts > 0 && started.elapsed() >= gate.deadline {
            return Err(GateError::Deadline {
                subject,
                probe,
                deadline_ms: gate.deadline.as_millis(),
                attempts,
                elapsed_ms: started.elapsed().as_millis(),
                last,
            });
        }

        attempts += 1;
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(gate.timeout, prober.probe_once(&info)) => outcome,
            () = cancel.cancelled() => {
                return Err(GateError::Cancelled {
                    subject,
                    probe,
                    last,
                    elapsed_ms: started.elapsed().as_millis(),
                });
            }
        };
        match outcome {
            Ok(Ok(result)) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(container = container_name, %probe, attempts, elapsed_ms, "gate passed");
                return Ok(GateReport {
                    service,
                    container: container_name.to_string(),
                    probe,
                    attempts,
                    elapsed_ms,
                    last: result,
                });
            }
            Ok(Err(Miss::Retry(result))) => {
                tracing::debug!(container = container_name, %probe, %result, "probe missed");
                last = result;
            }
            Ok(Err(Miss::Unusable(reason))) => {
                return Err(GateError::Unusable {
                    subject,
                    probe,
                    reason,
                })
            }
            Ok(Err(Miss::Failed(what))) => {
                return Err(GateError::ContainerFailed {
                    subject,
                    probe,
                    last: what.clone(),
                    what,
                    elapsed_ms: started.elapsed().as_millis(),
                })
            }
            Err(_) => last = format!("timed out after {} ms", gate.timeout.as_millis()),
        }

        let remaining = gate.deadline.saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(pause_after(attempts, gate.interval).min(remaining)) => {}
            () = cancel.cancelled() => {
                return Err(GateError::Cancelled {
                    subject,
                    probe,
                    last,
                    elapsed_ms: started.elapsed().as_millis(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Endpoint;

    fn info(state: ContainerState, restarts: i64) -> ContainerInfo {
        ContainerInfo {
            id: "x".into(),
            name: "c".into(),
            image: "i".into(),
            image_id: "sha256:i".into(),
            labels: BTreeMap::new(),
            state,
            health: Health::None,
            health_log: None,
            restart_count: restarts,
            oom_killed: false,
            exit_code: 1,
            error: None,
            started_at: None,
            endpoints: vec![Endpoint {
                network: "n".into(),
                ip: "10.0.0.2".into(),
                aliases: vec![],
            }],
            stop_timeout: None,
        }
    }

    #[test]
    fn pauses_start_short_and_double_up_to_the_interval() {
        let ms = Duration::from_millis;
        let pauses: Vec<Duration> = (1..=7).map(|a| pause_after(a, ms(1000))).collect();
        assert_eq!(
            pauses,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
        assert_eq!(pause_after(u32::MAX, ms(1000)), ms(1000));
        assert_eq!(pause_after(1, ms(20)), ms(20));
    }

    #[test]
    fn exits_restarts_and_oom_are_fatal() {
        assert!(fatal_state(&info(ContainerState::Running, 0), 0).is_none());
        let exited = fatal_state(&info(ContainerState::Exited, 0), 0).unwrap_or_default();
        assert!(exited.contains("exited with code 1"), "{exited}");
        let restarted = fatal_state(&info(ContainerState::Running, 2), 0).unwrap_or_default();
        assert!(restarted.contains("restarted 2"), "{restarted}");
        let mut oom = info(ContainerState::Exited, 0);
        oom.oom_killed = true;
        oom.exit_code = 137;
        let oom = fatal_state(&oom, 0).unwrap_or_default();
        assert!(oom.contains("OOM-killed") && oom.contains("137"), "{oom}");
    }
}

/// `verify` did not pass through the proxy within its window.
#[derive(Debug, thiserror::Error)]
#[error("service `{service}`: verify through the proxy (GET {url}, expect {expect}{body}) did not pass within {deadline_ms} ms ({attempts} attempts; last: {last})")]
pub struct VerifyError {
    pub service: String,
    pub url: String,
    pub expect: u16,
    pub body: String,
    pub deadline_ms: u128,
    pub attempts: u32,
    pub last: String,
}

/// Sends the `verify` request to the proxy on 127.0.0.1 until it answers as declared, or its
/// deadline passes (a short window: nginx's new workers take a moment after a reload).
pub async fn verify(
    service: &str,
    v: &crate::desired::Verify,
    cancel: &CancellationToken,
) -> Result<u32, VerifyError> {
    let url = format!("http://127.0.0.1:{}{}", v.port, v.path);
    let started = Instant::now();
    let mut attempts = 0;
    let fail = |attempts: u32, last: String| VerifyError {
        service: service.to_string(),
        url: url.clone(),
        expect: v.expect,
        body: v
            .body
            .as_ref()
            .map(|b| format!(" and a body containing {b:?}"))
            .unwrap_or_default(),
        deadline_ms: v.deadline.as_millis(),
        attempts,
        last,
    };
    let client = reqwest::Client::builder()
        .timeout(defaults::HEALTH_TIMEOUT.min(v.deadline))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(0, format!("HTTP client: {e}")))?;
    loop {
        attempts += 1;
        let mut request = client.get(&url);
        if let Some(host) = &v.host {
            request = request.header(reqwest::header::HOST, host);
        }
        let last = match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let body_ok = v
                    .body
                    .as_ref()
                    .is_none_or(|want| body.contains(want.as_str()));
                if status == v.expect && body_ok {
                    tracing::info!(service, %url, attempts, elapsed_ms = started.elapsed().as_millis() as u64, "verify passed");
                    return Ok(attempts);
                }
                let shown: String = body.trim().chars().take(80).collect();
                format!("status {status}, body {shown:?}")
            }
            Err(e) => error_chain(&e),
        };
        tracing::debug!(service, %url, attempts, %last, "verify missed");
        let remaining = v.deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(fail(attempts, last));
        }
        tokio::select! {
            () = tokio::time::sleep(v.interval.min(remaining)) => {}
            () = cancel.cancelled() => return Err(fail(attempts, format!("cancelled; {last}"))),
        }
    }
}
