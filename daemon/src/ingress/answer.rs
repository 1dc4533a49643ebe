//! The answers ingress gives: JSON bodies, never cached; 503s say when to
//! come back; a provider's own answer (a handshake's) as it said it; and
//! a refusal with what is kept and logged of it.

use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply as _;

pub fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

pub fn error(status: StatusCode, code: &str) -> Response {
    answer(status, json!({ "error": code }))
}

pub fn unavailable(code: &str, retry_after_secs: u32) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, code);
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after_secs));
    resp
}

/// A provider plugin's own answer (checked by the host when it came back):
/// its status, content type, body and headers, never cached, never sniffed.
pub fn custom(said: switchyard_plugin_api::Answer) -> Response {
    let status = StatusCode::from_u16(said.status).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(said.body.into());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in &said.headers {
        if let (Ok(n), Ok(v)) = (
            warp::http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    if status != StatusCode::NO_CONTENT {
        let ct = said
            .content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
            .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert("content-type", ct);
    }
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A refusal: the answer, and the reason (as the `rejected` metric counts
/// it) and message the rejections ring keeps.
pub(super) struct Refused {
    pub response: Response,
    pub reason: &'static str,
    pub message: String,
    /// How the refusal is logged (at most a line per source and reason in
    /// a while, see `quiet.rs`).
    pub level: tracing::Level,
}

pub(super) fn refused(
    response: Response,
    reason: &'static str,
    message: impl Into<String>,
) -> Refused {
    Refused {
        response,
        reason,
        message: message.into(),
        level: tracing::Level::WARN,
    }
}

impl Refused {
    pub(super) fn at(self, level: tracing::Level) -> Refused {
        Refused { level, ..self }
    }
}

/// One line for a refusal; `unlogged`: how many like it went unlogged
/// since the last line.
pub(super) fn log_refusal(why: &Refused, source: &str, unlogged: u64) {
    let status = why.response.status().as_u16();
    let reason = why.reason;
    let message = &why.message;
    match why.level {
        tracing::Level::ERROR => {
            tracing::error!(%source, reason, status, unlogged, "webhook refused: {message}")
        }
        tracing::Level::WARN => {
            tracing::warn!(%source, reason, status, unlogged, "webhook refused: {message}")
        }
        _ => tracing::info!(%source, reason, status, unlogged, "webhook refused: {message}"),
    }
}
