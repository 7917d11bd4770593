//! Deciding what a webhook delivery asks for: the signature is checked over the raw body
//! (HMAC-SHA256, constant-time), then a GitHub-style event is classified. Pure: the HTTP edge
//! is in `server`.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// GitHub's signature header (`sha256=<hex>`).
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// The same scheme for any other sender (a CI job, a script with curl and openssl).
pub const GENERIC_SIGNATURE: &str = "x-reconciler-signature-256";
pub const GITHUB_EVENT: &str = "x-github-event";

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secret: Secret,
    /// The `--ref` being deployed; `None` (the default branch) accepts a push to any branch
    /// and lets the fetch find out whether the default branch moved.
    pub reference: Option<String>,
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// GitHub's `ping` on hook creation.
    Ping,
    /// Start a cycle.
    Trigger { reason: String },
    /// Acknowledged, nothing to do (another branch, another event).
    Ignored { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no X-Hub-Signature-256 or X-Reconciler-Signature-256 header")]
    MissingSignature,
    #[error("the signature does not match the body (wrong secret, or the body was altered)")]
    BadSignature,
    #[error("the push event's body is not JSON with a `ref` string: {0}")]
    BadPayload(String),
}

type HmacSha256 = Hmac<Sha256>;

/// Checks `sha256=<hex>` against the HMAC of `body`.
pub fn verify(secret: &Secret, header: &str, body: &[u8]) -> Result<(), WebhookError> {
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::BadSignature)?;
    let sig = hex::decode(hex_sig).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)
}

/// `sha256=<hex>` of `body`: what a sender puts in the signature header.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies and classifies one delivery.
pub fn classify(
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verdict, WebhookError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = header(GITHUB_SIGNATURE)
        .or_else(|| header(GENERIC_SIGNATURE))
        .ok_or(WebhookError::MissingSignature)?;
    verify(&config.secret, signature, body)?;
    match header(GITHUB_EVENT) {
        Some("ping") => Ok(Verdict::Ping),
        Some("push") => push(config, body, true),
        Some(other) => Ok(Verdict::Ignored {
            reason: format!("event `{}` is not a push", short(other)),
        }),
        // A generic sender: a push-shaped body is filtered by branch, anything else triggers.
        None => push(config, body, false),
    }
}

fn push(config: &WebhookConfig, body: &[u8], required: bool) -> Result<Verdict, WebhookError> {
    let reference = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.get("ref").and_then(|r| r.as_str()).map(str::to_string),
        Err(e) if required => return Err(WebhookError::BadPayload(e.to_string())),
        Err(_) => None,
    };
    let Some(pushed) = reference else {
        if required {
            return Err(WebhookError::BadPayload("no `ref`".to_string()));
        }
        return Ok(Verdict::Trigger {
            reason: "webhook".to_string(),
        });
    };
    if tracks(config.reference.as_deref(), &pushed) {
        Ok(Verdict::Trigger {
            reason: format!("push to {}", short(&pushed)),
        })
    } else {
        Ok(Verdict::Ignored {
            reason: format!(
                "push to {} (tracking {})",
                short(&pushed),
                config.reference.as_deref().unwrap_or("the default branch")
            ),
        })
    }
}

/// Whether a push to `pushed` (`refs/heads/x`, `refs/tags/y`) moves the tracked reference.
fn tracks(tracked: Option<&str>, pushed: &str) -> bool {
    match tracked {
        None => pushed.starts_with("refs/heads/"),
        Some(r) => {
            pushed == r
                || pushed.strip_prefix("refs/heads/") == Some(r)
                || pushed.strip_prefix("refs/tags/") == Some(r)
        }
    }
}

/// Sender-controlled text in logs and replies stays short.
fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(reference: Option<&str>) -> WebhookConfig {
        WebhookConfig {
            secret: Secret::new("s3cret"),
            reference: reference.map(str::to_string),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn known_vector_matches_openssl() {
        // printf '{"ref":"refs/heads/main"}' | openssl dgst -sha256 -hmac s3cret
        let sig = sign(&Secret::new("s3cret"), br#"{"ref":"refs/heads/main"}"#);
        assert_eq!(
            sig,
            "sha256=232a5e067b6a5aa567ed5a1d21a0dffaf6ef0eeecb6bd9bcf43b3d5ef3fc4f43"
        );
        let body = br#"{"ref":"refs/heads/main"}"#;
        assert!(verify(&Secret::new("s3cret"), &sig, body).is_ok());
        assert_eq!(
            verify(&Secret::new("other"), &sig, body),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&Secret::new("s3cret"), &sig, b"tampered"),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&Secret::new("s3cret"), "sha1=abcd", body),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&Secret::new("s3cret"), "sha256=zz", body),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn signature_is_checked_before_anything_else() {
        let c = config(Some("main"));
        let body = br#"{"ref":"refs/heads/main"}"#;
        assert_eq!(
            classify(&c, &headers(&[(GITHUB_EVENT, "push")]), body),
            Err(WebhookError::MissingSignature)
        );
        let bad = sign(&Secret::new("nope"), body);
        assert_eq!(
            classify(
                &c,
                &headers(&[(GITHUB_EVENT, "push"), (GITHUB_SIGNATURE, &bad)]),
                body
            ),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn github_events() {
        let c = config(Some("main"));
        let deliver = |event: &str, body: &[u8]| {
            let sig = sign(&c.secret, body);
            classify(
                &c,
                &headers(&[(GITHUB_EVENT, event), (GITHUB_SIGNATURE, &sig)]),
                body,
            )
        };
        assert_eq!(deliver("ping", b"{}"), Ok(Verdict::Ping));
        assert!(matches!(
            deliver("push", br#"{"ref":"refs/heads/main"}"#),
            Ok(Verdict::Trigger { .. })
        ));
        assert!(matches!(
            deliver("push", br#"{"ref":"refs/heads/feature"}"#),
            Ok(Verdict::Ignored { .. })
        ));
        assert!(matches!(
            deliver("issues", b"{}"),
            Ok(Verdict::Ignored { .. })
        ));
        assert!(matches!(
            deliver("push", b"not json"),
            Err(WebhookError::BadPayload(_))
        ));
    }

    #[test]
    fn generic_sender() {
        let c = config(None);
        let deliver = |body: &[u8]| {
            let sig = sign(&c.secret, body);
            classify(&c, &headers(&[(GENERIC_SIGNATURE, &sig)]), body)
        };
        assert!(matches!(deliver(b""), Ok(Verdict::Trigger { .. })));
        assert!(matches!(
            deliver(br#"{"ref":"refs/heads/any"}"#),
            Ok(Verdict::Trigger { .. })
        ));
        assert!(matches!(
            deliver(br#"{"ref":"refs/tags/v1"}"#),
            Ok(Verdict::Ignored { .. })
        ));
    }
}
