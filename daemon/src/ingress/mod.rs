//! Ingress: the HTTP face providers post webhooks to.
//!
//! Owns: `POST /hooks/{source}[/{rest}]` as a warp filter, the body limit,
//! turning a request into a plugin call and the verdict into an HTTP answer.
//! Calls: `host` (verify on the call pool) and hands accepted events to the
//! router's queue. Nothing below imports this module.
//!
//! Answers:
//! | status | when |
//! |---|---|
//! | 200 | verified; body `{"accepted": ["<event id>", ...]}` |
//! | 400 | authentic but malformed (or undecryptable) |
//! | 401 | verification failed (generic body; the reason is logged) |
//! | 403 | sender address not allowed |
//! | 404 | no such source |
//! | 405 | not POST |
//! | 413 | body over `max_body_bytes` |
//! | 500 | the provider plugin failed (panicked or returned nonsense) |
//! | 503 | plugin overloaded or timed out, or the queue is full (`Retry-After`) |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use switchyard_plugin_api::RejectKind;
use tokio::sync::mpsc;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::event::Event;
use crate::host::{CallPool, OwnedRequest, PluginError, Source};
use crate::router::Accepted;

/// What ingress needs to answer a webhook.
pub struct Ingress {
    pub sources: BTreeMap<String, Arc<Source>>,
    pub pool: CallPool,
    pub plugin_timeout: Duration,
    pub max_body_bytes: u64,
    pub queue: mpsc::Sender<Accepted>,
}

/// The webhook filter: `hooks/{source}` relative to wherever it is mounted.
/// Requests that are not under `hooks/` are rejected (not found), so the
/// filter composes with others through `.or()`.
pub fn filter(
    ingress: Arc<Ingress>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("hooks")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .and_then(
            move |source: String,
                  tail: warp::path::Tail,
                  method: Method,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  query: String,
                  body| {
                let ingress = ingress.clone();
                async move {
                    let req = Incoming {
                        source,
                        tail: tail.as_str().to_string(),
                        method,
                        headers,
                        remote,
                        query,
                    };
                    Ok::<_, Infallible>(ingress.handle(req, body).await)
                }
            },
        )
}

struct Incoming {
    source: String,
    tail: String,
    method: Method,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    query: String,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn error(status: StatusCode, code: &str) -> Response {
    answer(status, json!({ "error": code }))
}

fn unavailable(code: &str, retry_after_secs: u32) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, code);
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after_secs));
    resp
}

use warp::Reply as _;

enum BodyError {
    TooLarge,
    Broken(String),
}

async fn read_body<S, B>(body: S, limit: u64) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

impl Ingress {
    async fn handle<S, B>(&self, req: Incoming, body: S) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let Some(source) = self.sources.get(&req.source).cloned() else {
            tracing::info!(source = %req.source, "webhook for an unknown source");
            return error(StatusCode::NOT_FOUND, "unknown source");
        };
        if req.method != Method::POST {
            let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("POST"));
            return resp;
        }
        let declared = req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            tracing::warn!(source = %source.name, bytes = declared, "webhook body over the limit");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        let body = match read_body(body, self.max_body_bytes).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                tracing::warn!(source = %source.name, "webhook body over the limit");
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            }
            Err(BodyError::Broken(e)) => {
                tracing::info!(source = %source.name, "webhook body could not be read: {e}");
                return error(StatusCode::BAD_REQUEST, "unreadable body");
            }
        };
        let received_at = time::OffsetDateTime::now_utc();
        let owned = OwnedRequest {
            method: req.method.to_string(),
            path: req.tail,
            query: req.query,
            headers: req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            remote_addr: req.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            body: body.clone(),
        };
        let instance = source.instance.clone();
        let verdict = self
            .pool
            .call(self.plugin_timeout, move || instance.verify(&owned))
            .await
            .and_then(|r| r);
        let drafts = match verdict {
            Ok(Ok(drafts)) => drafts,
            Ok(Err(rejection)) => {
                tracing::warn!(
                    source = %source.name, reason = rejection.kind.as_str(),
                    "webhook rejected: {}", rejection.message
                );
                return match rejection.kind {
                    RejectKind::Unauthenticated | RejectKind::Expired => {
                        error(StatusCode::UNAUTHORIZED, "unauthorized")
                    }
                    RejectKind::Forbidden => error(StatusCode::FORBIDDEN, "forbidden"),
                    RejectKind::Malformed | RejectKind::Decryption => {
                        error(StatusCode::BAD_REQUEST, "malformed")
                    }
                };
            }
            Err(e @ (PluginError::Timeout(_) | PluginError::Busy(_))) => {
                tracing::error!(source = %source.name, "provider plugin unavailable: {e}");
                return unavailable("temporarily unavailable", 5);
            }
            Err(e) => {
                tracing::error!(source = %source.name, "provider plugin failed: {e}");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        let provider = source.provider().to_string();
        let events: Vec<Arc<Event>> = drafts
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                Arc::new(Event::from_draft(
                    d,
                    &source.name,
                    &provider,
                    &body,
                    i,
                    received_at,
                ))
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        match self.queue.try_send(Accepted { events }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(source = %source.name, "routing queue full; asking the sender to retry");
                return unavailable("busy", 5);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return unavailable("shutting down", 5);
            }
        }
        for id in &ids {
            tracing::info!(event_id = %id, source = %source.name, "webhook accepted");
        }
        answer(StatusCode::OK, json!({ "accepted": ids }))
    }
}
