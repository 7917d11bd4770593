//! Service config files on the host side: read back, delivered, reloaded, put back.
//!
//! Live state is what is in the container, read back through the archive API and hashed, not a
//! record of what was last written: a hand edit inside the container is drift like any other,
//! and "unchanged → no action" holds only when the files really are the commit's.
//! Delivery goes through the same API (`engine::files`), so it works before the first start
//! and needs nothing in the image; only removing a stale file needs `rm`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::desired::configs::sha256_hex;
use crate::desired::{ConfigFile, DesiredRelease, Reload, ReloadHow};
use crate::engine::{Engine, EngineError};
use crate::live::LiveState;
use crate::proxy::PreviousFile;

/// The metric Prometheus sets to 0 when it could not load its config.
const PROMETHEUS_RELOAD_OK: &str = "prometheus_config_last_reload_successful";
/// When it last loaded its config (seconds): moves on every successful reload.
const PROMETHEUS_RELOAD_AT: &str = "prometheus_config_last_reload_success_timestamp_seconds";
/// Between two looks at the metrics after a signal.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image `{image}`: cannot run its config checks: {source}")]
    CheckRun {
        image: String,
        #[source]
        source: EngineError,
    },

    #[error(transparent)]
    Refused(#[from] crate::validate::ConfigErrors),

    #[error("container `{container}`: cannot write `{path}`: {source}")]
    Write {
        container: String,
        path: String,
        #[source]
        source: EngineError,
    },

    #[error("container `{container}`: cannot read `{path}`: {source}")]
    Read {
        container: String,
        path: String,
        #[source]
        source: EngineError,
    },

    #[error("container `{container}`: cannot remove `{path}`: {source}")]
    Remove {
        container: String,
        path: String,
        #[source]
        source: EngineError,
    },

    #[error("container `{container}`: reload ({how}) failed: {reason} (fix: see `docker logs {container}` for the service's own reason, correct the config in the repo and commit)")]
    Reload {
        container: String,
        how: String,
        reason: String,
    },
}

impl ConfigError {
    /// The message, and the engine's "no such container" when that is what this is.
    pub fn split_not_found(self) -> (String, Option<EngineError>) {
        let text = self.to_string();
        match self {
            ConfigError::Write { source, .. }
            | ConfigError::Read { source, .. }
            | ConfigError::Remove { source, .. }
                if source.is_not_found() =>
            {
                (text, Some(source))
            }
            _ => (text, None),
        }
    }
}

/// Reads back the `configs:` files of every service container that declares them, into
/// `live.config_files` (see the module comment for why read back).
pub async fn observe(
    engine: &Engine,
    desired: &DesiredRelease,
    live: &mut LiveState,
) -> Result<(), EngineError> {
    for svc in &desired.services {
        let Some(configs) = &svc.configs else {
            continue;
        };
        // The recreate container, or a blue-green service's colors.
        let names = [
            svc.container_name.clone(),
            format!("{}-blue", svc.container_name),
            format!("{}-green", svc.container_name),
        ];
        for name in &names {
            if live.containers.iter().any(|c| &c.name == name) {
                let found = read_back(engine, name, configs).await?;
                live.config_files.insert(name.clone(), found);
            }
        }
    }
    Ok(())
}

/// The hashes of the files of `configs` in container `name`.
async fn read_back(
    engine: &Engine,
    name: &str,
    configs: &crate::desired::ServiceConfigs,
) -> Result<BTreeMap<String, String>, EngineError> {
    let mut found = BTreeMap::new();
    for dir in &configs.dirs {
        for (path, content) in engine.read_dir(name, dir).await?.unwrap_or_default() {
            found.insert(path, sha256_hex(&content));
        }
    }
    for file in &configs.files {
        if found.contains_key(&file.path) {
            continue;
        }
        if let Some(content) = engine.read_file(name, &file.path).await? {
            found.insert(file.path.clone(), sha256_hex(&content));
        }
    }
    Ok(found)
}

/// Runs the image's own tools (`promtool check config|rules`, `amtool check-config`) over a
/// service's new files in a one-off container; every problem is reported, nothing on the host
/// changes. An image without the tool passes on its structural checks alone.
pub async fn check(
    engine: &Engine,
    release: &str,
    image: &str,
    files: &[ConfigFile],
) -> Result<crate::validate::ServiceCheck, ConfigError> {
    use crate::validate::{self, ConfigCheck};
    let configs: Vec<(ConfigCheck, validate::ConfigFile)> = files
        .iter()
        .map(|f| {
            (
                ConfigCheck::from_kind(f.kind.as_str(), &f.source),
                validate::ConfigFile {
                    source: f.source.clone(),
                    target: f.path.clone(),
                    content: f.content.clone(),
                },
            )
        })
        .collect();
    let outcome = validate::validate_service(engine, release, image, &configs, &BTreeMap::new())
        .await
        .map_err(|source| ConfigError::CheckRun {
            image: image.to_string(),
            source,
        })?;
    Ok(outcome.into_result()?)
}

/// Writes `files` into `container` (created or running).
pub async fn write(
    engine: &Engine,
    container: &str,
    files: &[ConfigFile],
) -> Result<(), ConfigError> {
    for file in files {
        engine
            .write_file(container, &file.path, &file.content)
            .await
            .map_err(|source| ConfigError::Write {
                container: container.to_string(),
                path: file.path.clone(),
                source,
            })?;
    }
    Ok(())
}

/// The current content of `paths` in `container` (`None`: missing): what an undo puts back.
pub async fn read_previous(
    engine: &Engine,
    container: &str,
    paths: &[String],
) -> Result<Vec<PreviousFile>, ConfigError> {
    let mut out = Vec::new();
    for path in paths {
        let content =
            engine
                .read_file(container, path)
                .await
                .map_err(|source| ConfigError::Read {
                    container: container.to_string(),
                    path: path.clone(),
                    source,
                })?;
        out.push(PreviousFile {
            path: path.clone(),
            content,
        });
    }
    Ok(out)
}

/// The paths a push touches: the files it writes and the stale ones it removes.
pub fn touched(files: &[ConfigFile], remove: &[String]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.path.clone())
        .chain(remove.iter().cloned())
        .collect()
}

/// Delivers `files`, removes `remove`; returns what was there before.
pub async fn push(
    engine: &Engine,
    container: &str,
    files: &[ConfigFile],
    remove: &[String],
) -> Result<Vec<PreviousFile>, ConfigError> {
    let previous = read_previous(engine, container, &touched(files, remove)).await?;
    let result = async {
        write(engine, container, files).await?;
        for path in remove {
            remove_one(engine, container, path).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // Half a push is the worst state: put back what was there (the undo stack does not
        // know this step happened).
        if let Err(undo) = put_back(engine, container, &previous).await {
            tracing::warn!(container, error = %undo, "could not put the previous configs back after a failed push");
        }
        return Err(e);
    }
    Ok(previous)
}

async fn remove_one(engine: &Engine, container: &str, path: &str) -> Result<(), ConfigError> {
    engine
        .remove_file(container, path)
        .await
        .map_err(|source| ConfigError::Remove {
            container: container.to_string(),
            path: path.to_string(),
            source,
        })
}

async fn put_back(
    engine: &Engine,
    container: &str,
    previous: &[PreviousFile],
) -> Result<(), ConfigError> {
    for file in previous {
        match &file.content {
            Some(content) => engine
                .write_file(container, &file.path, content)
                .await
                .map_err(|source| ConfigError::Write {
                    container: container.to_string(),
                    path: file.path.clone(),
                    source,
                })?,
            None => remove_one(engine, container, &file.path).await?,
        }
    }
    Ok(())
}

/// Undo of a push: the previous files back, and a reload so the service runs them again.
pub async fn restore(
    engine: &Engine,
    container: &str,
    previous: &[PreviousFile],
    reload: Option<&Reload>,
) -> Result<(), ConfigError> {
    put_back(engine, container, previous).await?;
    match reload {
        Some(reload) => self::reload(engine, container, reload).await,
        None => Ok(()),
    }
}

/// Tells the service to read its configs again and checks that it did: an HTTP reload must
/// answer as declared; for Prometheus, `prometheus_config_last_reload_successful` must be 1
/// (after a signal: once the reload happened, which the success timestamp shows).
pub async fn reload(engine: &Engine, container: &str, reload: &Reload) -> Result<(), ConfigError> {
    let fail = |reason: String| ConfigError::Reload {
        container: container.to_string(),
        how: reload.how.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(reload.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| fail(format!("HTTP client: {e}")))?;
    let needs_address =
        matches!(reload.how, ReloadHow::Http { .. }) || reload.prometheus_metrics_port.is_some();
    let ip = if needs_address {
        Some(address(engine, container).await.map_err(fail)?)
    } else {
        None
    };
    let metrics = |port: u16| {
        let client = client.clone();
        let url = ip.map(|ip| format!("http://{}/metrics", std::net::SocketAddr::new(ip, port)));
        async move {
            let url = url.ok_or_else(|| "no address".to_string())?;
            let body = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", crate::health::error_chain(&e)))?
                .text()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            Ok::<_, String>((
                metric(&body, PROMETHEUS_RELOAD_OK),
                metric(&body, PROMETHEUS_RELOAD_AT),
            ))
        }
    };
    match &reload.how {
        ReloadHow::Http {
            port,
            path,
            method,
            expect,
        } => {
            let url = format!(
                "http://{}{path}",
                std::net::SocketAddr::new(ip.unwrap_or(IpAddr::from([127, 0, 0, 1])), *port)
            );
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|e| fail(format!("method `{method}`: {e}")))?;
            let resp = client
                .request(method.clone(), &url)
                .send()
                .await
                .map_err(|e| {
                    fail(format!(
                        "{method} {url}: {}",
                        crate::health::error_chain(&e)
                    ))
                })?;
            let status = resp.status().as_u16();
            if status != *expect {
                let body: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(500)
                    .collect();
                return Err(fail(format!(
                    "{method} {url} answered {status}, not {expect}: {}",
                    body.trim()
                )));
            }
            if let Some(port) = reload.prometheus_metrics_port {
                match metrics(port).await.map_err(fail)? {
                    (Some(1.0), _) => {}
                    (Some(_), _) => {
                        return Err(fail(format!(
                        "Prometheus reports {PROMETHEUS_RELOAD_OK} 0: it rejected the new config"
                    )))
                    }
                    (None, _) => {
                        return Err(fail(format!(
                            "Prometheus' /metrics on port {port} has no {PROMETHEUS_RELOAD_OK}"
                        )))
                    }
                }
            }
            Ok(())
        }
        ReloadHow::Signal { signal } => {
            let before = match reload.prometheus_metrics_port {
                Some(port) => Some(metrics(port).await.map_err(fail)?.1),
                None => None,
            };
            // The success timestamp has whole seconds: a reload within the second of the last
            // one would not move it, so the signal waits for the next second.
            if let Some(Some(last)) = before {
                let deadline = Instant::now() + Duration::from_secs(2);
                while unix_now() <= last && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            engine
                .signal_container(container, signal)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let (Some(port), Some(before)) = (reload.prometheus_metrics_port, before) else {
                return Ok(());
            };
            // A signal is asynchronous: wait until Prometheus reports the reload either way.
            let started = Instant::now();
            loop {
                match metrics(port).await.map_err(fail)? {
                    (Some(0.0), _) => {
                        return Err(fail(format!(
                        "Prometheus reports {PROMETHEUS_RELOAD_OK} 0: it rejected the new config"
                    )))
                    }
                    (Some(_), at) if at > before => return Ok(()),
                    _ => {}
                }
                if started.elapsed() >= reload.timeout {
                    return Err(fail(format!(
                        "Prometheus did not report a reload within {} ms",
                        reload.timeout.as_millis()
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64().floor())
        .unwrap_or(0.0)
}

/// The value of an unlabelled sample in Prometheus' text format.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The container's address on its first network that has one. An HTTP reload goes from this
/// host to it, as the HTTP health probe does.
async fn address(engine: &Engine, container: &str) -> Result<IpAddr, String> {
    let info = engine
        .inspect_container(container)
        .await
        .map_err(|e| e.to_string())?;
    info.endpoints
        .iter()
        .find(|e| !e.ip.is_empty())
        .ok_or_else(|| "the container has no network address".to_string())?
        .ip
        .parse()
        .map_err(|_| "unreadable container address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_prometheus_samples() {
        let body = "# HELP x\n# TYPE prometheus_config_last_reload_successful gauge\n\
                    prometheus_config_last_reload_successful 0\n\
                    prometheus_config_last_reload_success_timestamp_seconds 1.7e+09\n";
        assert_eq!(metric(body, PROMETHEUS_RELOAD_OK), Some(0.0));
        assert_eq!(metric(body, PROMETHEUS_RELOAD_AT), Some(1.7e9));
        assert_eq!(metric(body, "absent"), None);
    }
}
