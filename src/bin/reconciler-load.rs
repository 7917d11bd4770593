//! reconciler-load: a small closed-loop HTTP load generator, used by the zero-downtime tests
//! (`tests/common/load.rs`) and by `bench/bluegreen_vs_recreate.sh`.
//!
//! It does not use the reconciler library on purpose: the thing that measures a deploy must not
//! share code with the deploy.
//!
//! Traffic rule: requests only ever go to 127.0.0.1 (there is no host option), and every run is
//! bounded by a request count *and* a duration, so it always stops by itself.
//!
//! Each of `--concurrency` worker threads loops: open a connection, send one
//! `GET <path> HTTP/1.1` with `Connection: close`, read the whole response, record the outcome.
//! A failure is a connection error, a timeout (`--timeout`, whole request), a malformed or
//! truncated response, or a non-2xx status. The run ends at `--max-requests` requests, after
//! `--max-duration`, when `--until-file` appears, or on SIGTERM/SIGINT; then it prints one JSON
//! report on stdout. While running, `--progress-file` is rewritten (atomically) every 50 ms with
//! the counts so far, so a caller can wait on "N more requests" instead of sleeping.
//!
//! Exit status: 0 when the report was printed (whatever the failure count: judging it is the
//! caller's job), 1 on an I/O error of the generator itself, 2 on bad arguments.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

/// Zero failures on the test app at this concurrency (measured: see tests/load_selftest.rs).
const DEFAULT_CONCURRENCY: usize = 8;
/// Samples of failures kept in the report.
const MAX_FAILURE_SAMPLES: usize = 10;
/// Bodies are keyed by their first characters: enough for `v1`/`v2` and error pages alike.
const BODY_KEY_CHARS: usize = 64;
/// A response larger than this is treated as malformed: the test endpoints answer a few bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Hard caps so a typo cannot turn into a long-running flood.
const MAX_CONCURRENCY: usize = 256;
const MAX_DURATION_CAP: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Parser)]
#[command(
    name = "reconciler-load",
    about = "Bounded HTTP load against 127.0.0.1:PORT; prints a JSON report when done."
)]
struct Args {
    /// Port on 127.0.0.1 (the only host this tool talks to).
    #[arg(long)]
    port: u16,
    /// Request path.
    #[arg(long, default_value = "/version")]
    path: String,
    /// Concurrent connections (worker threads).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 20_000)]
    max_requests: u64,
    /// Stop starting new requests after this long (e.g. `60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    max_duration: Duration,
    /// Stop (after the requests in flight) as soon as this file exists.
    #[arg(long, value_name = "FILE")]
    until_file: Option<PathBuf>,
    /// Rewrite this file with `{"total":..,"ok":..,"failures":..,...}` while running.
    #[arg(long, value_name = "FILE")]
    progress_file: Option<PathBuf>,
    /// Per-request timeout (connect + send + whole response); a timeout is a failure.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Pause of a worker after a failed request, so a server that is down is not hammered in a
    /// busy loop (refused connects take microseconds) and the request budget is not burnt on it.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    failure_backoff: Duration,
}

/// What ended the run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum StoppedBy {
    MaxRequests,
    MaxDuration,
    UntilFile,
    Signal,
}

/// The final report (stdout, one JSON object). `tests/common/load.rs` reads the same fields.
#[derive(Debug, Default, Serialize)]
struct Report {
    port: u16,
    path: String,
    concurrency: usize,
    stopped_by: Option<StoppedBy>,
    /// Completed requests (each one either ok or a failure).
    total: u64,
    ok: u64,
    /// non_2xx + connect_errors + other_errors.
    failures: u64,
    non_2xx: u64,
    connect_errors: u64,
    /// Timeouts, resets, malformed or truncated responses (timeouts are also counted below).
    other_errors: u64,
    timeouts: u64,
    /// 2xx response bodies (trimmed, first 64 chars) → count.
    by_body: BTreeMap<String, u64>,
    /// Milliseconds from the start to the first 2xx response with that body: shows when a new
    /// version started answering.
    first_seen_ms: BTreeMap<String, u64>,
    /// Status code → count, for every complete response (2xx and not).
    by_status: BTreeMap<u16, u64>,
    /// Up to 10 failure samples, `"<sent, ms since start>ms (+<took>ms): <what>"`.
    first_failures: Vec<String>,
    /// When the first and last failed requests were sent (ms since start): the outage window.
    first_failure_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    duration_ms: u64,
    requests_per_sec: f64,
}

/// Counters shared by the workers and the supervisor (progress file, stop decisions).
struct Shared {
    started: Instant,
    /// Requests started (the budget check); may exceed max_requests by the refused claims.
    issued: AtomicU64,
    total: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    stop: AtomicBool,
    active_workers: AtomicUsize,
    samples: Mutex<Vec<String>>,
}

#[derive(Default)]
struct WorkerStats {
    non_2xx: u64,
    connect_errors: u64,
    other_errors: u64,
    timeouts: u64,
    by_body: BTreeMap<String, u64>,
    first_seen_ms: BTreeMap<String, u64>,
    by_status: BTreeMap<u16, u64>,
    first_failure_ms: Option<u64>,
    last_failure_ms: Option<u64>,
}

enum Outcome {
    Response { status: u16, body: String },
    ConnectError(String),
    Timeout(String),
    Other(String),
}

#[derive(Serialize)]
struct Progress {
    total: u64,
    ok: u64,
    failures: u64,
    elapsed_ms: u64,
    done: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check_args(&args) {
        eprintln!("reconciler-load: {e}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("reconciler-load: cannot encode the report: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("reconciler-load: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.port == 0 {
        return Err("--port must be 1-65535".into());
    }
    // The path goes verbatim into the request line: no way to smuggle headers through it.
    if !args.path.starts_with('/')
        || args
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "--path must start with / and contain no spaces or control characters: {:?}",
            args.path
        ));
    }
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(format!("--concurrency must be 1-{MAX_CONCURRENCY}"));
    }
    if args.max_requests == 0 {
        return Err("--max-requests must be at least 1".into());
    }
    if args.max_duration.is_zero() || args.max_duration > MAX_DURATION_CAP {
        return Err(format!(
            "--max-duration must be more than 0 and at most {}",
            humantime::format_duration(MAX_DURATION_CAP)
        ));
    }
    if args.timeout.is_zero() {
        return Err("--timeout must be more than 0".into());
    }
    Ok(())
}

fn run(args: &Args) -> io::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Signal handlers are installed before any request goes out, so an early SIGTERM still
    // gets a report instead of killing the process.
    let (mut sigterm, mut sigint) = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;

    let shared = Arc::new(Shared {
        started: Instant::now(),
        issued: AtomicU64::new(0),
        total: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        active_workers: AtomicUsize::new(args.concurrency),
        samples: Mutex::new(Vec::new()),
    });
    let deadline = shared.started + args.max_duration;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: reconciler-load\r\nConnection: close\r\n\r\n",
        args.path
    );

    let mut workers = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        let mine = Arc::clone(&shared);
        let request = request.clone();
        let (max_requests, timeout, backoff) =
            (args.max_requests, args.timeout, args.failure_backoff);
        let spawned = thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || {
                let stats = worker(
                    &mine,
                    addr,
                    &request,
                    max_requests,
                    deadline,
                    timeout,
                    backoff,
                );
                mine.active_workers.fetch_sub(1, Ordering::SeqCst);
                stats
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                // Stop the workers already running before giving up.
                shared.stop.store(true, Ordering::SeqCst);
                for w in workers {
                    let _ = w.join();
                }
                return Err(e);
            }
        }
    }
    let mut stopped_by: Option<StoppedBy> = None;
    let supervise: io::Result<()> = runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // A bound for the supervisor itself, should a worker ever hang past its timeout.
        let hard_stop = deadline + args.timeout + Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = sigterm.recv() => { stopped_by = Some(StoppedBy::Signal); break; }
                _ = sigint.recv() => { stopped_by = Some(StoppedBy::Signal); break; }
                _ = tick.tick() => {
                    if let Some(path) = &args.progress_file {
                        write_progress(path, &shared, false)?;
                    }
                    if shared.active_workers.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    if args.until_file.as_deref().is_some_and(Path::exists) {
                        stopped_by = Some(StoppedBy::UntilFile);
                        break;
                    }
                    if Instant::now() >= hard_stop {
                        break;
                    }
                }
            }
        }
        Ok(())
    });
    shared.stop.store(true, Ordering::SeqCst);

    let mut report = Report {
        port: args.port,
        path: args.path.clone(),
        concurrency: args.concurrency,
        ..Report::default()
    };
    for w in workers {
        // A worker that panicked loses its detail counts; the shared totals still have it.
        if let Ok(stats) = w.join() {
            merge(&mut report, stats);
        }
    }
    supervise?;
    let elapsed = shared.started.elapsed();
    report.stopped_by = stopped_by.or_else(|| {
        if shared.issued.load(Ordering::SeqCst) >= args.max_requests {
            Some(StoppedBy::MaxRequests)
        } else {
            Some(StoppedBy::MaxDuration)
        }
    });
    report.total = shared.total.load(Ordering::SeqCst);
    report.ok = shared.ok.load(Ordering::SeqCst);
    report.failures = shared.failures.load(Ordering::SeqCst);
    report.first_failures = shared.samples.lock().map(|s| s.clone()).unwrap_or_default();
    report.duration_ms = millis(elapsed);
    let secs = elapsed.as_secs_f64();
    report.requests_per_sec = if secs > 0.0 {
        (report.total as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    };
    if let Some(path) = &args.progress_file {
        write_progress(path, &shared, true)?;
    }
    Ok(report)
}

fn merge(report: &mut Report, stats: WorkerStats) {
    report.non_2xx += stats.non_2xx;
    report.connect_errors += stats.connect_errors;
    report.other_errors += stats.other_errors;
    report.timeouts += stats.timeouts;
    for (body, n) in stats.by_body {
        *report.by_body.entry(body).or_default() += n;
    }
    for (body, ms) in stats.first_seen_ms {
        let e = report.first_seen_ms.entry(body).or_insert(ms);
        *e = (*e).min(ms);
    }
    for (status, n) in stats.by_status {
        *report.by_status.entry(status).or_default() += n;
    }
    report.first_failure_ms = min_opt(report.first_failure_ms, stats.first_failure_ms);
    report.last_failure_ms = report.last_failure_ms.max(stats.last_failure_ms);
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Write-then-rename, so a reader never sees a half-written file.
fn write_progress(path: &Path, shared: &Shared, done: bool) -> io::Result<()> {
    let progress = Progress {
        total: shared.total.load(Ordering::SeqCst),
        ok: shared.ok.load(Ordering::SeqCst),
        failures: shared.failures.load(Ordering::SeqCst),
        elapsed_ms: millis(shared.started.elapsed()),
        done,
    };
    let json = serde_json::to_string(&progress).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json + "\n")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn worker(
    shared: &Shared,
    addr: SocketAddr,
    request: &str,
    max_requests: u64,
    deadline: Instant,
    timeout: Duration,
    backoff: Duration,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    loop {
        if shared.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        if shared.issued.fetch_add(1, Ordering::SeqCst) >= max_requests {
            break;
        }
        // Failures are placed at the time they were sent: a timeout completes 5 s after the
        // outage that caused it, which would stretch the outage window.
        let sent_ms = millis(shared.started.elapsed());
        let outcome = one_request(addr, request, timeout);
        let at_ms = millis(shared.started.elapsed());
        let failure = match outcome {
            Outcome::Response { status, body } => {
                *stats.by_status.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    stats.first_seen_ms.entry(body.clone()).or_insert(at_ms);
                    *stats.by_body.entry(body).or_default() += 1;
                    None
                } else {
                    stats.non_2xx += 1;
                    Some(format!("status {status}: {body}"))
                }
            }
            Outcome::ConnectError(e) => {
                stats.connect_errors += 1;
                Some(format!("connect: {e}"))
            }
            Outcome::Timeout(e) => {
                stats.other_errors += 1;
                stats.timeouts += 1;
                Some(format!("timeout: {e}"))
            }
            Outcome::Other(e) => {
                stats.other_errors += 1;
                Some(e)
            }
        };
        shared.total.fetch_add(1, Ordering::SeqCst);
        match failure {
            None => {
                shared.ok.fetch_add(1, Ordering::SeqCst);
            }
            Some(what) => {
                shared.failures.fetch_add(1, Ordering::SeqCst);
                stats.first_failure_ms = min_opt(stats.first_failure_ms, Some(sent_ms));
                stats.last_failure_ms = stats.last_failure_ms.max(Some(sent_ms));
                if let Ok(mut samples) = shared.samples.lock() {
                    if samples.len() < MAX_FAILURE_SAMPLES {
                        let took = at_ms.saturating_sub(sent_ms);
                        samples.push(format!("{sent_ms}ms (+{took}ms): {what}"));
                    }
                }
                if !backoff.is_zero() {
                    thread::sleep(backoff);
                }
            }
        }
    }
    stats
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Time left before `deadline`, or None when it has passed (std rejects a zero timeout).
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn one_request(addr: SocketAddr, request: &str, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::ConnectError(e.to_string()),
    };
    let Some(left) = remaining(deadline) else {
        return Outcome::Timeout("after connect".into());
    };
    if let Err(e) = stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(request.as_bytes()))
    {
        return if is_timeout(&e) {
            Outcome::Timeout(format!("sending the request: {e}"))
        } else {
            Outcome::Other(format!("sending the request: {e}"))
        };
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let Some(left) = remaining(deadline) else {
            return Outcome::Timeout(format!("no complete response ({} bytes read)", buf.len()));
        };
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            return Outcome::Other(format!("set_read_timeout: {e}"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE_BYTES {
                    return Outcome::Other(format!("response over {MAX_RESPONSE_BYTES} bytes"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Outcome::Timeout(format!("reading ({} bytes read): {e}", buf.len()));
            }
            // A reset after a complete response (by its Content-Length) loses nothing the client
            // asked for; anything else is a failure.
            Err(e) => {
                return match parse_response(&buf) {
                    Ok((status, body)) if has_content_length(&buf) => {
                        Outcome::Response { status, body }
                    }
                    _ => Outcome::Other(format!("reading ({} bytes read): {e}", buf.len())),
                };
            }
        }
    }
    match parse_response(&buf) {
        Ok((status, body)) => Outcome::Response { status, body },
        Err(e) => Outcome::Other(e),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn has_content_length(buf: &[u8]) -> bool {
    let head_end = find(buf, b"\r\n\r\n").unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..head_end])
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("content-length:"))
}

/// Parses a complete `Connection: close` response: status code and body key.
fn parse_response(buf: &[u8]) -> Result<(u16, String), String> {
    if buf.is_empty() {
        // What a proxy (docker-proxy, nginx) does when its backend is gone.
        return Err("connection closed without a response".into());
    }
    let head_end = find(buf, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "malformed response: no end of headers in {} bytes: {:?}",
            buf.len(),
            body_key(&buf[..buf.len().min(80)])
        )
    })?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let status = match code.parse::<u16>() {
        Ok(s) if proto.starts_with("HTTP/1.") && code.len() == 3 && (100..600).contains(&s) => s,
        _ => return Err(format!("malformed status line: {status_line:?}")),
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line: {line:?}"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("malformed Content-Length: {value:?}"))?,
            );
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let rest = &buf[head_end + 4..];
    let body: Vec<u8> = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        if rest.len() < len {
            return Err(format!(
                "truncated body: {} of {len} bytes (status {status})",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        // Connection: close without a length: the body runs to EOF.
        rest.to_vec()
    };
    Ok((status, body_key(&body)))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("malformed chunk size: {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunked body".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn body_key(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(BODY_KEY_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv1";
        assert_eq!(parse_response(r), Ok((200, "v1".to_string())));
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nv\r\n1\r\n2\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Ok((200, "v2".to_string())));
        let r = b"HTTP/1.0 502 Bad Gateway\r\n\r\n  <html>bad</html>\n";
        assert_eq!(parse_response(r), Ok((502, "<html>bad</html>".to_string())));
    }

    #[test]
    fn rejects_empty_truncated_and_garbage() {
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nv1").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
    }

    #[test]
    fn body_key_is_trimmed_and_short() {
        assert_eq!(body_key(b"  v1\n"), "v1");
        assert_eq!(body_key(&[b'x'; 100]).len(), BODY_KEY_CHARS);
    }
}
