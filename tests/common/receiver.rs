//! A real webhook receiver on 127.0.0.1 (axum) that records every request and answers as the
//! test scripts it: a status, a status with `Retry-After`, or no answer at all.
//!
//! Not declared in `common/mod.rs` (that would build axum into every test binary); a test that
//! needs it adds `#[path = "common/receiver.rs"] mod receiver;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// The status and `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers (the connection stays open until the client gives up).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

#[derive(Default)]
struct Book {
    received: Vec<Received>,
    /// Per path: replies to give, in order; then 200.
    script: HashMap<String, Vec<Reply>>,
    /// Per path: answer every request this way (after the script runs out).
    always: HashMap<String, Reply>,
}

pub struct Receiver {
    pub port: u16,
    book: Arc<Mutex<Book>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn record(
    State(book): State<Arc<Mutex<Book>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let reply = {
        let mut b = book.lock().expect("receiver book");
        b.received.push(Received {
            path: path.clone(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        let scripted = b
            .script
            .get_mut(&path)
            .filter(|s| !s.is_empty())
            .map(|s| s.remove(0));
        scripted
            .or_else(|| b.always.get(&path).copied())
            .unwrap_or(Reply::Status(200))
    };
    let code = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        Reply::Status(c) => code(c).into_response(),
        Reply::RetryAfter(c, secs) => {
            (code(c), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Hang => std::future::pending::<Response>().await,
    }
}

impl Receiver {
    pub fn start() -> Receiver {
        let book = Arc::new(Mutex::new(Book::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(book.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    r = axum::serve(listener, app) => { r.expect("receiver serves"); }
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels handlers that never answer.
        });
        Receiver {
            port,
            book,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next requests to `path` get these replies, in order; then 200.
    pub fn script(&self, path: &str, replies: &[Reply]) {
        self.book
            .lock()
            .expect("book")
            .script
            .insert(path.to_string(), replies.to_vec());
    }

    /// Every request to `path` gets `reply`.
    pub fn always(&self, path: &str, reply: Reply) {
        self.book
            .lock()
            .expect("book")
            .always
            .insert(path.to_string(), reply);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.book
            .lock()
            .expect("book")
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every body received, on any path.
    pub fn all_bodies(&self) -> Vec<String> {
        self.book
            .lock()
            .expect("book")
            .received
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// Polls until `path` has received at least `n` requests, or `timeout` passes; returns
    /// what it has then.
    pub fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
