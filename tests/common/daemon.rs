//! A real `reconciler run` child process for tests, its log, and a minimal HTTP client for its
//! endpoint (plain std: what is under test is the daemon, not a client library).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `reconciler run` child whose stderr goes to a file the test can poll.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `reconciler run ARGS`. Without `--listen` in `args`, the endpoint is off (tests
    /// run concurrently; the default port would be shared).
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("run.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        cmd.arg("run").args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "off"]);
        }
        let child = cmd
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RECONCILER_LOG", "reconciler=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("reconciler run starts");
        Daemon { child, log, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the log until `pred` holds, failing with the log after `deadline`.
    pub fn wait_log(&self, what: &str, deadline: Duration, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !pred(&self.log()) {
            assert!(
                start.elapsed() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process has exited (and its code).
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .expect("wait")
            .map(|s| s.code().unwrap_or(-1))
    }

    /// SIGTERM, then the exit status within `deadline`.
    pub fn terminate(mut self, deadline: Duration) -> i32 {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "run did not stop within {deadline:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (connection closed after it); `None` when the
/// port does not answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    // The server may answer (413) and close before reading a large body: a failed write of
    // the rest is expected then, the reply is what counts.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some(Reply { status, body })
}

pub fn get(port: u16, path: &str) -> Option<Reply> {
    http(port, "GET", path, &[], b"")
}

/// Polls GET `path` until its status is `status`; the last reply.
pub fn wait_status(port: u16, path: &str, status: u16, deadline: Duration) -> Reply {
    let start = Instant::now();
    loop {
        let reply = get(port, path);
        if let Some(r) = reply {
            if r.status == status {
                return r;
            }
            assert!(
                start.elapsed() < deadline,
                "GET {path} answered {} ({}), never {status}",
                r.status,
                r.body.trim()
            );
        } else {
            assert!(
                start.elapsed() < deadline,
                "port {port} never answered GET {path}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one series in a Prometheus text exposition (`name{labels}` exactly as
/// rendered), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `sha256=<hex>` over `body`, computed with openssl (independently of the code under test).
pub fn openssl_signature(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.rsplit("= ").next().unwrap_or("").trim();
    assert_eq!(hex.len(), 64, "unexpected openssl output: {text}");
    format!("sha256={hex}")
}

/// The JSON log lines of a daemon run with `--log-format json`.
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A JSON log line's message.
pub fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}
