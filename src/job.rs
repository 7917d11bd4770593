//! Running a one-off job (`jobs:`, planned as `Action::RunJob`): create its container with the
//! ownership labels and the job label, start it, wait for it to exit within its timeout (kill
//! it at the timeout), keep the tail of its output with every secret value of the release
//! scrubbed out, remove the container. Success is exit code 0.
//!
//! The output comes from outside (whatever the job printed), so it is the one text the
//! reconciler scrubs by value; everything it produces itself keeps secrets as `Secret`s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::defaults;
use crate::desired::{ContainerConfig, JobPhase};
use crate::engine::{ContainerOwnership, Engine};
use crate::labels;
use crate::plan::done_key;
use crate::secret::{Secret, REDACTED};
use crate::state::history::{JobOutcome, JobRecord};
use crate::state::{jobs as jobs_state, ReleaseDir};

/// What a deploy learns from its jobs: the records for its history entry; with a release dir,
/// each success is also recorded at once in `jobs.json` (at most once per revision).
#[derive(Debug, Default)]
pub struct JobLog {
    dir: Option<ReleaseDir>,
    records: Mutex<Vec<JobRecord>>,
}

impl JobLog {
    pub fn new(dir: Option<ReleaseDir>) -> JobLog {
        JobLog {
            dir,
            records: Mutex::new(Vec::new()),
        }
    }

    /// The records so far, in the order the jobs ran.
    pub fn records(&self) -> Vec<JobRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn push(&self, record: JobRecord) {
        if let Ok(mut r) = self.records.lock() {
            r.push(record);
        }
    }
}

/// One `RunJob` step, as the planner described it.
pub struct JobRun<'a> {
    pub release: &'a str,
    pub service: Option<&'a str>,
    pub job: &'a str,
    pub name: &'a str,
    pub phase: JobPhase,
    pub revision: &'a str,
    pub config_hash: &'a str,
    pub config: &'a ContainerConfig,
    pub timeout: Duration,
    pub redact: &'a [Secret],
}

/// How the wait ended.
enum End {
    Exited(i64),
    TimedOut,
    Cancelled,
}

/// Runs the job; `Err` names the job, how it ended and its redacted output tail (the text the
/// failure in history, the CLI and notifications show).
pub async fn run(
    engine: &Engine,
    run: &JobRun<'_>,
    log: Option<&JobLog>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let phase = match run.phase {
        JobPhase::Before => "before",
        JobPhase::After => "after",
    };
    let started = Instant::now();
    let record = |outcome, exit_code, output_tail: String| JobRecord {
        job: run.job.to_string(),
        phase: phase.to_string(),
        outcome,
        exit_code,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        output_tail,
    };
    let fail = |record: JobRecord, message: String| {
        if let Some(log) = log {
            log.push(record);
        }
        Err(message)
    };

    // A container of the same name is a leftover of a crash: it is ours, and in the way.
    remove_quietly(engine, run.name).await;
    let mut config = run.config.clone();
    config
        .labels
        .insert(labels::JOB.to_string(), run.job.to_string());
    let owner = ContainerOwnership {
        release: run.release.to_string(),
        service: run.service.unwrap_or("release").to_string(),
        revision: run.revision.to_string(),
        config_hash: run.config_hash.to_string(),
        color: None,
    };
    if let Err(e) = engine.create_container(run.name, &config, &owner).await {
        return fail(
            record(JobOutcome::Failed, None, String::new()),
            format!(
                "job {} ({phase}): cannot create its container: {e}",
                run.job
            ),
        );
    }
    if let Err(e) = engine.start_container(run.name).await {
        remove_quietly(engine, run.name).await;
        return fail(
            record(JobOutcome::Failed, None, String::new()),
            format!("job {} ({phase}): cannot start: {e}", run.job),
        );
    }
    let end = tokio::select! {
        code = engine.wait_container(run.name) => match code {
            Ok(code) => End::Exited(code),
            Err(e) => {
                remove_quietly(engine, run.name).await;
                return fail(
                    record(JobOutcome::Failed, None, String::new()),
                    format!("job {} ({phase}): {e}", run.job),
                );
            }
        },
        () = tokio::time::sleep(run.timeout) => End::TimedOut,
        () = cancel.cancelled() => End::Cancelled,
    };
    if !matches!(end, End::Exited(_)) {
        if let Err(e) = engine.signal_container(run.name, "KILL").await {
            tracing::debug!(job = run.job, error = %e, "kill at the timeout (it may have just exited)");
        }
    }
    let tail = match engine
        .container_logs(run.name, defaults::JOB_OUTPUT_LINES)
        .await
    {
        Ok(bytes) => tail_of(&String::from_utf8_lossy(&bytes), run.redact),
        Err(e) => format!("(output unavailable: {e})"),
    };
    remove_quietly(engine, run.name).await;
    let shown = if tail.is_empty() {
        "no output".to_string()
    } else {
        format!("output (last lines, secrets redacted):\n{tail}")
    };
    let took = format!("{:.1}s", started.elapsed().as_secs_f64());
    match end {
        End::Exited(0) => {
            tracing::info!(job = run.job, phase, took, "job succeeded");
            if let Some(log) = log {
                log.push(record(JobOutcome::Succeeded, Some(0), tail));
                if let Some(dir) = &log.dir {
                    let key = done_key(run.job, run.config_hash);
                    if let Err(e) = jobs_state::record(dir, run.revision, key) {
                        // It ran; the worst case is that it runs again on a retry.
                        tracing::warn!(job = run.job, error = %e, "cannot record the job as done");
                    }
                }
            }
            Ok(())
        }
        End::Exited(code) => fail(
            record(JobOutcome::Failed, Some(code), tail),
            format!(
                "job {} ({phase}) exited with code {code} after {took}; {shown}",
                run.job
            ),
        ),
        End::TimedOut => fail(
            record(JobOutcome::TimedOut, None, tail),
            format!(
                "job {} ({phase}) did not finish within its timeout of {}s and was killed; {shown}",
                run.job,
                run.timeout.as_secs_f64()
            ),
        ),
        End::Cancelled => fail(
            record(JobOutcome::Failed, None, tail),
            format!(
                "job {} ({phase}) was killed: the deploy was cancelled",
                run.job
            ),
        ),
    }
}

/// Force-removes a job container; gone already is fine (the job removes its own container on
/// every path, so this also undoes a job step whose container is still there after a crash).
pub async fn remove_quietly(engine: &Engine, name: &str) {
    match engine.remove_container(name, true).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(container = name, error = %e, "cannot remove a job container"),
    }
}

/// Removes job containers of `release` that a crash left behind (they carry [`labels::JOB`]).
pub async fn clean_up(engine: &Engine, release: &str) {
    let mut filter = labels::release_filter(release);
    filter.push(labels::JOB.to_string());
    match engine.list_containers(&filter).await {
        Ok(rows) => {
            for row in rows {
                tracing::warn!(container = %row.name, "removing a job container left by an interrupted deploy");
                remove_quietly(engine, &row.id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list leftover job containers"),
    }
}

/// The end of a job's output, every secret value replaced by the marker (longest first, so a
/// secret containing another is scrubbed whole), then cut to [`defaults::JOB_OUTPUT_BYTES`] on
/// a line boundary when possible.
pub fn tail_of(output: &str, secrets: &[Secret]) -> String {
    let mut values: Vec<&str> = secrets
        .iter()
        .map(Secret::expose)
        .filter(|v| !v.is_empty())
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut text = output.trim_end().to_string();
    for value in values {
        text = text.replace(value, REDACTED);
    }
    if text.len() <= defaults::JOB_OUTPUT_BYTES {
        return text;
    }
    let mut start = text.len() - defaults::JOB_OUTPUT_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) if nl + 1 < cut.len() => cut[nl + 1..].to_string(),
        _ => cut.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_scrubbed_and_the_longest_first() {
        let secrets = [
            Secret::new("pw"),
            Secret::new("pw-long-one"),
            Secret::new(""),
        ];
        let out = tail_of("a pw-long-one b pw c\n", &secrets);
        assert_eq!(out, format!("a {REDACTED} b {REDACTED} c"));
        assert!(!out.contains("pw"));
    }

    #[test]
    fn a_long_output_keeps_its_end_within_the_byte_limit() {
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let out = tail_of(&text, &[]);
        assert!(out.len() <= defaults::JOB_OUTPUT_BYTES);
        assert!(out.ends_with("line 1999"));
        assert!(out.starts_with("line "));
    }
}
