//! The answers ingress gives: JSON bodies, never cached; 503s say when to
//! come back.

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
