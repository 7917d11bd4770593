//! Load during a test: runs the `reconciler-load` binary (src/bin/reconciler-load.rs) in the
//! background against 127.0.0.1:PORT and reads its JSON report.
//!
//! ```ignore
//! let load = Load::start(port, "/version", 8, 20_000, Duration::from_secs(60)).min_requests(5_000);
//! assert!(load.wait_for_requests(100, Duration::from_secs(10)));  // traffic is flowing
//! /* deploy */
//! let report = load.finish();          // waits for >= 5,000 requests, then stops the load
//! assert_eq!(report.failures, 0, "{report:#?}");
//! ```
//!
//! A separate process rather than threads in the test: the same generator serves
//! `bench/bluegreen_vs_recreate.sh`, and a test that panics cannot leave load running (the
//! generator is bounded by itself, and Drop kills it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Concurrency with zero failures on the healthy test app (busybox `nc -ll -e`, a shell per
/// connection); see tests/load_selftest.rs for the measurement.
pub const DEFAULT_CONCURRENCY: usize = 8;

const POLL: Duration = Duration::from_millis(50);
/// The generator finishes its requests in flight (per-request timeout 5 s) after being told to
/// stop; past this, something is wrong with it.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// The generator's report (see src/bin/reconciler-load.rs for the meaning of each field).
#[derive(Debug, Clone, Deserialize)]
pub struct LoadReport {
    pub stopped_by: Option<String>,
    pub total: u64,
    pub ok: u64,
    /// non_2xx + connect_errors + other_errors.
    pub failures: u64,
    pub non_2xx: u64,
    pub connect_errors: u64,
    /// Timeouts, resets, malformed/truncated/empty responses.
    pub other_errors: u64,
    pub timeouts: u64,
    /// 2xx bodies (trimmed, first 64 chars) → count.
    pub by_body: BTreeMap<String, u64>,
    /// 2xx body → ms from start to its first response.
    pub first_seen_ms: BTreeMap<String, u64>,
    /// Status code → count, all complete responses.
    pub by_status: BTreeMap<u16, u64>,
    /// Up to 10 samples, `"<sent ms>ms (+<took>ms): <what>"`.
    pub first_failures: Vec<String>,
    /// When the first and last failed requests were sent, ms since the load started.
    pub first_failure_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub duration_ms: u64,
    pub requests_per_sec: f64,
}

/// Counts so far, from the generator's progress file.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Progress {
    pub total: u64,
    pub ok: u64,
    pub failures: u64,
    pub elapsed_ms: u64,
    pub done: bool,
}

/// Load running in the background. Stop it with [`Load::finish`]; dropping it kills it.
pub struct Load {
    child: Option<Child>,
    dir: tempfile::TempDir,
    started: Instant,
    max_duration: Duration,
    min_requests: u64,
}

impl Load {
    /// Starts `concurrency` connections' worth of `GET path` against 127.0.0.1:port, stopping by
    /// itself after `max_requests` requests or `max_duration`, whichever comes first.
    pub fn start(
        port: u16,
        path: &str,
        concurrency: usize,
        max_requests: u64,
        max_duration: Duration,
    ) -> Load {
        let dir = tempfile::tempdir().expect("temp dir for the load generator");
        let child = Command::new(env!("CARGO_BIN_EXE_reconciler-load"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--path")
            .arg(path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--max-requests")
            .arg(max_requests.to_string())
            .arg("--max-duration")
            .arg(format!("{}ms", max_duration.as_millis()))
            .arg("--until-file")
            .arg(dir.path().join("stop"))
            .arg("--progress-file")
            .arg(dir.path().join("progress.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reconciler-load");
        Load {
            child: Some(child),
            dir,
            started: Instant::now(),
            max_duration,
            min_requests: 0,
        }
    }

    /// [`Load::finish`] first waits until at least `n` requests were made (bounded by the
    /// load's max_duration), so a test can demand a minimum amount of traffic across a deploy.
    pub fn min_requests(mut self, n: u64) -> Load {
        self.min_requests = n;
        self
    }

    fn progress_path(&self) -> PathBuf {
        self.dir.path().join("progress.json")
    }

    /// Counts so far (zeros before the generator's first progress write).
    pub fn progress(&self) -> Progress {
        std::fs::read_to_string(self.progress_path())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// Whether the generator process has exited (budget used up or max_duration reached).
    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Polls until `cond(progress)` holds; false if `timeout` passes or the generator stops first.
    pub fn wait_until(&mut self, timeout: Duration, cond: impl Fn(&Progress) -> bool) -> bool {
        let until = Instant::now() + timeout;
        loop {
            let p = self.progress();
            if cond(&p) {
                return true;
            }
            if p.done || self.exited() || Instant::now() >= until {
                // One last read: the final progress is written just before exiting.
                return cond(&self.progress());
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until at least `n` requests completed; false on timeout or if the load ended first.
    pub fn wait_for_requests(&mut self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |p| p.total >= n)
    }

    /// Waits for `min_requests` (if set), stops the load and returns its report.
    pub fn finish(mut self) -> LoadReport {
        if self.min_requests > 0 {
            // The generator stops by itself at max_duration; allow for its in-flight requests.
            let bound = (self.started + self.max_duration + EXIT_GRACE)
                .saturating_duration_since(Instant::now());
            let n = self.min_requests;
            self.wait_for_requests(n, bound);
        }
        std::fs::write(self.dir.path().join("stop"), b"").expect("create the stop file");
        let mut child = self.child.take().expect("load still running");
        let until = Instant::now() + EXIT_GRACE;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= until {
                let _ = child.kill();
                let out = child.wait_with_output();
                panic!(
                    "reconciler-load did not stop within {EXIT_GRACE:?} of the stop file: {out:?}"
                );
            }
            thread::sleep(POLL);
        }
        let out = child.wait_with_output().expect("reconciler-load output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "reconciler-load failed ({}): {}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("reconciler-load printed no report ({e}): {stdout:?}"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port on 127.0.0.1 with nothing listening (bound then released at once).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// One `GET path` to 127.0.0.1:port: Ok((status, trimmed body)), Err on any connection or
/// protocol error. For readiness checks before a load starts.
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(5);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: the server then sends the body as it is, never chunked (Prometheus chunks a
    // reply over 2 KiB to an HTTP/1.1 client, which this reader does not decode).
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.trim().to_string()))
}

/// Polls `GET path` until it answers 200; false after `timeout`.
pub fn wait_http_ok(port: u16, path: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if matches!(get(port, path), Ok((200, _))) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(POLL);
    }
}
