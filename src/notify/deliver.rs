//! One POST per attempt, retried with exponential backoff (`backon`) on a transport error,
//! a timeout, 429 or 5xx, waiting at least what `Retry-After` asks. Other statuses are final.
//!
//! The URL is a [`Secret`]: it is handed to reqwest and nowhere else, and reqwest's errors are
//! stripped of it (`without_url`) before they are described.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::NotifyOptions;
use crate::secret::Secret;

/// How one event's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered { attempts: usize },
    GaveUp { attempts: usize, reason: String },
}

/// What one attempt got back.
enum Attempt {
    Ok,
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Final {
        reason: String,
    },
}

pub fn client(options: &NotifyOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        // A webhook that redirects is misconfigured; following it could send the event (and
        // the URL's token in a Referer) somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("reconciler/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub async fn deliver(
    client: &reqwest::Client,
    url: &Secret,
    body: &[u8],
    options: &NotifyOptions,
    target: &str,
) -> Delivery {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(options.retry_min)
        .with_max_delay(options.retry_max)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(options.max_attempts.saturating_sub(1))
        .build();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (reason, retry_after) = match attempt(client, url, body, options).await {
            Attempt::Ok => return Delivery::Delivered { attempts },
            Attempt::Final { reason } => return Delivery::GaveUp { attempts, reason },
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let Some(backoff) = delays.next() else {
            return Delivery::GaveUp { attempts, reason };
        };
        let delay = match retry_after {
            Some(asked) => asked.min(options.retry_after_max).max(backoff),
            None => backoff,
        };
        tracing::warn!(
            target_name = target,
            attempt = attempts,
            %reason,
            retry_in = ?delay,
            "notification not delivered; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

async fn attempt(
    client: &reqwest::Client,
    url: &Secret,
    body: &[u8],
    options: &NotifyOptions,
) -> Attempt {
    let sent = client
        .post(url.expose())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .timeout(options.request_timeout)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let reason = if e.is_timeout() {
                format!("no answer within {:?}", options.request_timeout)
            } else {
                describe(e)
            };
            return Attempt::Retry {
                reason,
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Ok;
    }
    let reason = format!("the receiver answered {status}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry {
            reason,
            retry_after: retry_after(response.headers()),
        }
    } else {
        Attempt::Final { reason }
    }
}

/// `Retry-After` in its delta-seconds form (what webhook receivers send); an HTTP date is
/// ignored and the backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes on one line, without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
