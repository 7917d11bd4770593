//! The daemon's HTTP endpoint (`run --listen`): `/metrics`, `/healthz`, `/readyz` and
//! `/webhook`, on axum. One typed state; handlers return `Result<_, ApiError>` and a single
//! `IntoResponse` maps errors to status codes; errors are logged by a middleware, not where
//! they are converted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::defaults;
use crate::metrics::Metrics;
use crate::reconcile::Trigger;
use crate::trigger::Triggers;
use crate::webhook::{self, Verdict, WebhookConfig, WebhookError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}; fix: pick a free address with --listen ADDR, or --listen off")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What `/readyz` answers: whether the last cycle reached git and the engine.
#[derive(Debug, Default)]
pub struct Readiness {
    state: Mutex<Option<Result<(), String>>>,
}

impl Readiness {
    /// `Err(reason)` when git or the engine could not be reached.
    pub fn set(&self, result: Result<(), String>) {
        if let Ok(mut state) = self.state.lock() {
            *state = Some(result);
        }
    }

    pub fn check(&self) -> Result<(), String> {
        match self.state.lock() {
            Ok(state) => match &*state {
                Some(result) => result.clone(),
                None => Err("no reconcile cycle has finished yet".to_string()),
            },
            Err(_) => Err("readiness state poisoned".to_string()),
        }
    }
}

/// Everything the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub triggers: Triggers,
    /// `None`: no secret configured, so the webhook route does not exist.
    pub webhook: Option<Arc<WebhookConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("webhook rejected: {0}")]
    Unauthorized(WebhookError),
    #[error("webhook payload: {0}")]
    BadRequest(WebhookError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The error's text, carried to the logging middleware in the response's extensions.
#[derive(Clone)]
struct LoggedError(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, public) = match &self {
            ApiError::NotReady(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            ),
            ApiError::Unauthorized(e) => (StatusCode::UNAUTHORIZED, e.to_string()),
            ApiError::BadRequest(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            // Internals stay in the log.
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_string(),
            ),
        };
        let mut response = (status, format!("{public}\n")).into_response();
        response
            .extensions_mut()
            .insert(LoggedError(self.to_string()));
        response
    }
}

pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.webhook.is_some() {
        app = app.route("/webhook", post(webhook));
    }
    app.layer(middleware::from_fn(log_errors))
        .layer(DefaultBodyLimit::max(defaults::HTTP_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            defaults::HTTP_REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.readiness.check().map_err(ApiError::NotReady)?;
    Ok("ready\n")
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config = state
        .webhook
        .as_ref()
        .ok_or_else(|| ApiError::Internal("webhook route without a secret".to_string()))?;
    let verdict = webhook::classify(config, &headers, &body).map_err(|e| match e {
        WebhookError::BadPayload(_) => ApiError::BadRequest(e),
        _ => ApiError::Unauthorized(e),
    })?;
    Ok(match verdict {
        Verdict::Ping => (StatusCode::OK, Json(serde_json::json!({"pong": true}))).into_response(),
        Verdict::Trigger { reason } => {
            info!(%reason, "webhook: reconcile requested");
            state.triggers.request(Trigger::Webhook, reason.clone());
            accepted(true, &reason)
        }
        Verdict::Ignored { reason } => {
            info!(%reason, "webhook: ignored");
            accepted(false, &reason)
        }
    })
}

fn accepted(triggered: bool, reason: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"triggered": triggered, "reason": reason})),
    )
        .into_response()
}

async fn log_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    match response.extensions().get::<LoggedError>() {
        Some(LoggedError(e)) if status.is_server_error() => {
            warn!(%method, %path, status = status.as_u16(), error = %e, "request failed")
        }
        Some(LoggedError(e)) => {
            info!(%method, %path, status = status.as_u16(), error = %e, "request refused")
        }
        None if status.is_client_error() || status.is_server_error() => {
            info!(%method, %path, status = status.as_u16(), "request refused")
        }
        None => debug!(%method, %path, status = status.as_u16(), "request"),
    }
    response
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves until `cancel`, then lets requests in flight finish for at most
/// [`defaults::HTTP_SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, state: AppState, cancel: CancellationToken) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if state.webhook.is_none() {
        info!("webhook endpoint off: no --webhook-secret-file or --webhook-secret-env given, and an unsigned webhook is never accepted");
    }
    info!(%addr, "HTTP endpoint listening (/metrics, /healthz, /readyz{})",
        if state.webhook.is_some() { ", /webhook" } else { "" });
    let shutdown = cancel.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    cancel.cancelled().await;
    match tokio::time::timeout(defaults::HTTP_SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => debug!("HTTP endpoint stopped"),
        Ok(Ok(Err(e))) => warn!(error = %e, "HTTP endpoint failed"),
        Ok(Err(e)) => warn!(error = %e, "HTTP endpoint task failed"),
        Err(_) => {
            warn!(grace = ?defaults::HTTP_SHUTDOWN_GRACE, "HTTP requests still open after the grace period; dropped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_before_the_first_cycle() {
        let r = Readiness::default();
        assert!(r.check().unwrap_err().contains("no reconcile cycle"));
        r.set(Err("engine unreachable".into()));
        assert_eq!(r.check(), Err("engine unreachable".into()));
        r.set(Ok(()));
        assert_eq!(r.check(), Ok(()));
    }
}
