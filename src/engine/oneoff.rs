//! One-off containers: run one command of an image over some files, collect its output, and
//! remove the container whatever happens (a config check with the image's own tool).
//!
//! The files go in with the archive API into the created-not-started container, not through a
//! bind of a temp dir: that works against a remote engine too, needs no host directory the
//! container's user can read, and leaves nothing on the host.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, WaitContainerOptions};
use futures_util::StreamExt;

use super::ObjectKind::Container;
use super::{op_error, reason_of, Engine, EngineError};

/// Most output a one-off run keeps (from the start: tools name the first problem first).
const OUTPUT_LIMIT: usize = 16 * 1024;

/// How a one-off run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOffOutcome {
    /// The command ran; stdout and stderr in the order the engine logged them.
    Exited { exit_code: i64, output: String },
    /// The image has no such executable: the engine refused to start it.
    NoExecutable { reason: String },
}

/// What to run: `argv[0]` replaces the image's entrypoint, the rest is its command.
#[derive(Debug, Clone)]
pub struct OneOff<'a> {
    pub image: &'a str,
    pub argv: &'a [String],
    /// Absolute path in the container → content.
    pub files: &'a [(String, Vec<u8>)],
    pub labels: &'a BTreeMap<String, String>,
    /// Bounds upload, run and log collection together.
    pub timeout: Duration,
}

/// The engine's wording when the executable of a container is missing (runc and crun).
fn is_missing_executable(reason: &str) -> bool {
    reason.contains("executable file not found") || reason.contains("no such file or directory")
}

impl Engine {
    /// Creates a container of `run.image` with no network, writes `run.files` into it, starts
    /// `run.argv`, waits for it to exit, and returns its output. The container is removed on
    /// every path; a run past `run.timeout` is an error.
    pub async fn run_one_off(&self, run: &OneOff<'_>) -> Result<OneOffOutcome, EngineError> {
        let image = run.image;
        let (entrypoint, cmd) = match run.argv.split_first() {
            Some((first, rest)) => (vec![first.clone()], rest.to_vec()),
            None => {
                return Err(EngineError::Operation {
                    op: "run one-off",
                    kind: Container,
                    name: image.to_string(),
                    reason: "no command given".to_string(),
                })
            }
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            labels: Some(run.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| {
                // The caller pulls the image first (it is the one the service will run).
                if super::status_of(&e) == Some(404) {
                    EngineError::Operation {
                        op: "run a config check from",
                        kind: super::ObjectKind::Image,
                        name: image.to_string(),
                        reason: "not on this host (pull it before checking)".to_string(),
                    }
                } else {
                    op_error("create one-off from", Container, image)(e)
                }
            })?;
        let id = created.id;
        let result = tokio::time::timeout(run.timeout, self.one_off_steps(&id, run)).await;
        // Removed before the result is looked at: a failed or timed-out run leaves nothing.
        let removed = self.remove_container(&id, true).await;
        let outcome = match result {
            Ok(outcome) => outcome?,
            Err(_) => {
                return Err(EngineError::Operation {
                    op: "run one-off",
                    kind: Container,
                    name: format!("{image} {}", run.argv.join(" ")),
                    reason: format!("did not finish within {} ms", run.timeout.as_millis()),
                })
            }
        };
        removed?;
        Ok(outcome)
    }

    async fn one_off_steps(
        &self,
        id: &str,
        run: &OneOff<'_>,
    ) -> Result<OneOffOutcome, EngineError> {
        for (path, content) in run.files {
            self.write_file(id, path, content).await?;
        }
        if let Err(e) = self.docker.start_container(id, None).await {
            let reason = reason_of(&e);
            if is_missing_executable(&reason) {
                return Ok(OneOffOutcome::NoExecutable { reason });
            }
            return Err(op_error("start one-off", Container, id)(e));
        }
        let mut waits = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let exit_code = match waits.next().await {
            Some(Ok(reply)) => reply.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(op_error("wait for one-off", Container, id)(e)),
            None => -1,
        };
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut logs = self.docker.logs(id, Some(options));
        let mut output = Vec::new();
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.map_err(op_error("read output of one-off", Container, id))?;
            if output.len() < OUTPUT_LIMIT {
                output.extend_from_slice(chunk.as_ref());
            }
        }
        output.truncate(OUTPUT_LIMIT);
        Ok(OneOffOutcome::Exited {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_executable_is_recognised() {
        assert!(is_missing_executable(
            "failed to create task: exec: \"promtool\": executable file not found in $PATH: unknown"
        ));
        assert!(!is_missing_executable("permission denied"));
    }
}
