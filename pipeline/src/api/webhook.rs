//! Webhook ingest: `POST /api/v1/signals` takes one Signal or envelope, a
//! JSON array of them, or NDJSON (`content-type: application/x-ndjson`).
//! Each record is validated as the pipeline validates input lines (the same
//! reasons as the dead letters); the valid ones are appended to a bus the
//! pipeline reads (`api.webhook_bus`), acknowledged by the bus before the
//! 202, so an accepted record survives the process: it is never held in
//! memory only.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ideaflow_operators::validate::parse_line;
use ideaflow_sources::bus::Append;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::Shared;
use crate::source_status::SourceStatus;

/// What the endpoint needs; `None` in the app state when no token is set.
pub struct Webhook {
    tokens: Vec<Vec<u8>>,
    /// The bus accepted records go to; `None`: no bus input (503).
    bus: Option<Mutex<Box<dyn Append>>>,
    limiter: DefaultKeyedRateLimiter<usize>,
    burst: u32,
    max_body: usize,
    max_lag: u64,
    status: Option<Arc<SourceStatus>>,
}

/// The webhook's settings (from `[api]`).
pub struct WebhookSettings {
    pub tokens: Vec<String>,
    pub rate: f64,
    pub burst: u64,
    pub max_body: usize,
    pub max_lag: u64,
}

impl Webhook {
    pub fn new(
        settings: WebhookSettings,
        bus: Option<Box<dyn Append>>,
        status: Option<Arc<SourceStatus>>,
    ) -> Option<Webhook> {
        if settings.tokens.is_empty() {
            return None;
        }
        let burst = settings.burst.clamp(1, u32::MAX as u64) as u32;
        let period = Duration::from_secs_f64(1.0 / settings.rate.max(1e-6));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
        Some(Webhook {
            tokens: settings
                .tokens
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            bus: bus.map(Mutex::new),
            limiter: RateLimiter::dashmap(quota),
            burst,
            max_body: settings.max_body,
            max_lag: settings.max_lag,
            status,
        })
    }

    /// The index of the token the request carries, compared in constant time.
    fn authorize(&self, headers: &HeaderMap) -> Option<usize> {
        let given = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            // Every token is compared, whichever matches.
            if bool::from(t.as_slice().ct_eq(given)) {
                found = Some(i);
            }
        }
        found
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// The records of a body: JSON values, each as the line it would be.
fn records(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-ndjson"));
    if ndjson {
        return Ok(body
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("the body is not JSON ({e}); send a Signal or envelope object, an array of them, or NDJSON with content-type application/x-ndjson"),
        )
    })?;
    Ok(match value {
        Value::Array(items) => items.iter().map(|v| v.to_string().into_bytes()).collect(),
        other => vec![other.to_string().into_bytes()],
    })
}

/// What a client can use to find an accepted record again: its eventId, or
/// the signal's source and id.
fn record_id(event: &ideaflow_operators::Event) -> String {
    match (&event.meta.event_id, &event.payload) {
        (Some(id), _) => id.clone(),
        (None, ideaflow_operators::Payload::Signal(s)) => format!("{}:{}", s.source, s.id),
        (None, p) => p.event_type().as_str().to_owned(),
    }
}

/// 401 with the bearer challenge.
fn unauthorized(code: &'static str, message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, code, message.to_owned()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ideaflow\""),
    );
    r
}

pub async fn ingest(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    // Off (no token configured): no token is valid, so every request is
    // unauthorized; the message says how to turn it on.
    let Some(hook) = s.webhook.clone() else {
        return unauthorized(
            "webhook_off",
            "webhook ingest is off: set api.webhook_tokens (or IDEAFLOW_WEBHOOK_TOKENS) to turn it on",
        );
    };
    let Some(token) = hook.authorize(&headers) else {
        return unauthorized(
            "unauthorized",
            "send a valid token as `Authorization: Bearer TOKEN` (api.webhook_tokens)",
        );
    };
    let Some(bus) = hook.bus.as_ref() else {
        return with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_bus",
                "the pipeline reads no bus to append to: add a Redis stream or Kafka topic to pipeline.inputs (api.webhook_bus names which)",
            )
            .into_response(),
            60,
        );
    };
    if let Some(status) = &hook.status {
        let behind = status.backlog();
        if behind > hook.max_lag {
            let mut e = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "pipeline_lagging",
                format!("the pipeline is {behind} records behind (api.webhook_max_lag = {}); retry later", hook.max_lag),
            );
            e.details = json!({"behind": behind});
            return with_retry_after(e.into_response(), 5);
        }
    }
    let body: Bytes = match axum::body::to_bytes(body, hook.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over api.webhook_max_body_bytes = {} bytes; send fewer records per request", hook.max_body),
            )
            .into_response()
        }
    };
    let lines = match records(&headers, &body) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    if lines.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the body holds no record",
        )
        .into_response();
    }
    // The whole request counts against the token's rate, valid or not.
    let n = NonZeroU32::new(lines.len().min(u32::MAX as usize) as u32).expect("not empty");
    match hook.limiter.check_key_n(&token, n) {
        Ok(Ok(())) => {}
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "this token is over api.webhook_rate; retry after the time Retry-After says",
                )
                .into_response(),
                wait.as_secs_f64().ceil() as u64,
            );
        }
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_records",
                format!(
                    "{} records in one request is over the token's burst of {}; split the request",
                    lines.len(),
                    hook.burst
                ),
            )
            .into_response();
        }
    }
    let mut accepted = Vec::new();
    let mut ids = Vec::new();
    let mut rejected = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        match parse_line(&line) {
            Ok(event) => {
                ids.push(record_id(&event));
                accepted.push(line);
            }
            Err(r) => {
                rejected.push(json!({"index": index, "reason": r.reason, "message": r.message}))
            }
        }
    }
    if accepted.is_empty() {
        let mut e = error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_records",
            "no record is valid; see details.rejected",
        );
        e.details = json!({"rejected": rejected});
        return e.into_response();
    }
    let appended = {
        let hook = hook.clone();
        tokio::task::spawn_blocking(move || {
            let bus = hook.bus.as_ref().expect("checked above");
            let mut bus = bus.lock().unwrap_or_else(|p| p.into_inner());
            let name = bus.name().to_owned();
            bus.append(&accepted).map(|positions| (name, positions))
        })
        .await
    };
    let _ = bus;
    match appended {
        Ok(Ok((name, positions))) => (
            StatusCode::ACCEPTED,
            Json(
                json!({"accepted": ids, "rejected": rejected, "bus": name, "positions": positions}),
            ),
        )
            .into_response(),
        Ok(Err(e)) => with_retry_after(ApiError::unavailable("the bus", e).into_response(), 5),
        Err(e) => ApiError::unavailable("the bus writer", e).into_response(),
    }
}
