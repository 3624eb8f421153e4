//! The error envelope every failed request gets:
//! `{error_code, message, timestamp, details}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            message,
        );
        e.details = json!({ "parameter": param });
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            format!("{what} is unavailable; retry shortly"),
        );
        err.details = json!({ "cause": e.to_string() });
        err
    }
}

/// `{error_code, message, timestamp, details}`, stamped now.
pub fn envelope(code: &str, message: &str, details: &Value) -> Value {
    json!({
        "error_code": code,
        "message": message,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "details": details,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = envelope(self.code, &self.message, &self.details);
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::unavailable("Postgres", e)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::unavailable("Redis", e)
    }
}
