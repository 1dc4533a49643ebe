//! Ingress: the HTTP face providers post webhooks to.
//!
//! Owns: `POST /hooks/{source}[/{rest}]` as a warp filter, the body limit,
//! turning a request into a plugin call and the verdict into an HTTP answer.
//! Calls: `host` (verify on the call pool) and `store` (persist before the
//! answer), then wakes the router. Nothing below imports this module.
//!
//! A 2xx is sent only once the request and its events are committed to the
//! store (durably, by default). A delivery seen before (same dedup key within
//! the window) is answered 2xx too, and not routed again.
//!
//! Answers:
//! | status | when |
//! |---|---|
//! | 200 | verified and stored; `{"accepted": [new event ids], "duplicates": [ids of the events repeated], "stale": [ids stored but not routed: an older version of their object]}` |
//! | 400 | authentic but malformed |
//! | 401 | verification or decryption failed (generic body; the reason is logged) |
//! | 403 | sender address not allowed |
//! | 404 | no such source |
//! | 405 | not POST |
//! | 408 | the body did not arrive within the listener's `body_timeout` |
//! | 413 | body over `max_body_bytes` |
//! | 500 | the provider plugin failed (panicked or returned nonsense) |
//! | 503 | plugin overloaded or timed out, backlog over its bound, or the store cannot write (`Retry-After`) |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
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

use crate::store::{
    redact_headers, redact_query, BacklogGauge, Ingested, PendingEvent, Pipeline, StoredRequest,
};

/// What ingress needs to answer a webhook.
pub struct Ingress {
    /// The configured sources; a reload swaps the whole map.
    pub sources: ArcSwap<BTreeMap<String, Arc<Source>>>,
    pub pool: CallPool,
    pub plugin_timeout: Duration,
    pub max_body_bytes: u64,
    pub store: Arc<dyn Pipeline>,
    pub dedup_window: Duration,
    /// The router's inbox: new events, after their commit.
    pub router: mpsc::Sender<PendingEvent>,
    /// Set when the inbox was full (the router then reads the store).
    pub router_overflowed: Arc<std::sync::atomic::AtomicBool>,
    pub gauge: Arc<BacklogGauge>,
    pub max_unrouted_events: u64,
    pub max_pending_jobs: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when the daemon is stopping: answer 503.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// The peer of a connection, as the daemon's own listener records it
/// (warp's server records its own; ingress reads either).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A request body that did not arrive within the listener's `body_timeout`
/// of its head: the body stream fails with this, ingress answers 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} of its head")]
pub struct BodyTimeout(pub Duration);

/// Whether an error (or one it wraps) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The address of the connection's peer, whichever server accepted it.
fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::addr::remote()
        .and(warp::ext::optional::<PeerAddr>())
        .map(|warp_peer: Option<SocketAddr>, ours: Option<PeerAddr>| {
            warp_peer.or(ours.map(|p| p.0))
        })
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
        .and(peer())
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

/// The sender of a request: the peer, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not a trusted proxy
/// (read from the right: only what trusted proxies appended is believed).
pub fn sender_address(
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut sender = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                sender = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A hop that is not an address: stop at what is known.
            Err(_) => break,
        }
    }
    Some(sender)
}

/// Replaces every occurrence of a credential (as is, or percent-encoded) in
/// a stored value.
fn redact_values(text: &str, credentials: &[String]) -> String {
    let mut out = text.to_string();
    for c in credentials {
        if out.contains(c.as_str()) {
            out = out.replace(c.as_str(), crate::store::REDACTED);
        }
        let encoded = switchyard_plugin_api::percent_encode(c);
        if encoded != *c && out.contains(encoded.as_str()) {
            out = out.replace(encoded.as_str(), crate::store::REDACTED);
        }
    }
    out
}

enum BodyError {
    TooLarge,
    TimedOut,
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
        let mut chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                BodyError::TimedOut
            } else {
                BodyError::Broken(e.to_string())
            }
        })?;
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
    /// The sources now configured.
    pub fn sources(&self) -> Arc<BTreeMap<String, Arc<Source>>> {
        self.sources.load_full()
    }

    /// Makes a new set of sources live (a reload). Requests in flight finish
    /// with the source they started with.
    pub fn set_sources(&self, sources: BTreeMap<String, Arc<Source>>) {
        self.sources.store(Arc::new(sources));
    }

    async fn handle<S, B>(&self, req: Incoming, body: S) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let started = std::time::Instant::now();
        let Some(source) = self.sources().get(&req.source).cloned() else {
            tracing::info!(source = %req.source, "webhook for an unknown source");
            return error(StatusCode::NOT_FOUND, "unknown source");
        };
        let response = self.handle_source(req, source.clone(), body).await;
        self.metrics
            .ingest_seconds
            .get_or_create(&self.metrics.source(&source.name))
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn handle_source<S, B>(&self, req: Incoming, source: Arc<Source>, body: S) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let m = &self.metrics;
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
            m.reject(&source.name, "too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        let body = match read_body(body, self.max_body_bytes).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                tracing::warn!(source = %source.name, "webhook body over the limit");
                m.reject(&source.name, "too_large");
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            }
            Err(BodyError::TimedOut) => {
                tracing::info!(source = %source.name, "webhook body did not arrive in time; closing the connection");
                m.reject(&source.name, "body_timeout");
                let mut resp = error(StatusCode::REQUEST_TIMEOUT, "body timed out");
                resp.headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
                return resp;
            }
            Err(BodyError::Broken(e)) => {
                tracing::info!(source = %source.name, "webhook body could not be read: {e}");
                m.reject(&source.name, "unreadable");
                return error(StatusCode::BAD_REQUEST, "unreadable body");
            }
        };
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            m.reject(&source.name, "shutting_down");
            return unavailable("shutting down", 5);
        }
        let backlog = self.gauge.get();
        if backlog.unrouted_events >= self.max_unrouted_events
            || backlog.pending_jobs >= self.max_pending_jobs
        {
            tracing::warn!(
                source = %source.name, unrouted = backlog.unrouted_events, pending_jobs = backlog.pending_jobs,
                "backlog over its bound; asking the sender to retry"
            );
            m.reject(&source.name, "backlog");
            return unavailable("busy", 30);
        }
        let sender = sender_address(
            req.remote.map(|a| a.ip()),
            &req.headers,
            &self.trusted_proxies,
        );
        if !source.allow_ips.is_empty()
            && !sender.is_some_and(|ip| source.allow_ips.iter().any(|net| net.contains(&ip)))
        {
            tracing::warn!(
                source = %source.name, reason = "forbidden",
                "webhook rejected: sender {} is not in allow_ips",
                sender.map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string())
            );
            m.reject(&source.name, "sender_not_allowed");
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
        let received_at = time::OffsetDateTime::now_utc();
        let owned = Arc::new(OwnedRequest {
            method: req.method.to_string(),
            path: req.tail,
            query: req.query,
            headers: req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            remote_addr: sender.map(|ip| ip.to_string()).unwrap_or_default(),
            body,
        });
        let instance = source.instance.clone();
        let lent = owned.clone();
        let verdict = self
            .pool
            .call(self.plugin_timeout, move || instance.verify(&lent))
            .await
            .and_then(|r| r);
        let drafts = match verdict {
            Ok(Ok(drafts)) => {
                m.plugin_call(source.provider(), "verify", "ok");
                drafts
            }
            Ok(Err(rejection)) => {
                m.reject(&source.name, rejection.kind.as_str());
                m.plugin_call(source.provider(), "verify", "rejected");
                tracing::warn!(
                    source = %source.name, reason = rejection.kind.as_str(),
                    "webhook rejected: {}", rejection.message
                );
                return match rejection.kind {
                    // A body that does not decrypt failed its authentication
                    // tag (AES-GCM): as unauthenticated as a bad signature.
                    RejectKind::Unauthenticated | RejectKind::Expired | RejectKind::Decryption => {
                        error(StatusCode::UNAUTHORIZED, "unauthorized")
                    }
                    RejectKind::Forbidden => error(StatusCode::FORBIDDEN, "forbidden"),
                    RejectKind::Malformed => error(StatusCode::BAD_REQUEST, "malformed"),
                };
            }
            Err(e @ (PluginError::Timeout(_) | PluginError::Busy(_))) => {
                tracing::error!(source = %source.name, "provider plugin unavailable: {e}");
                m.reject(&source.name, "plugin_unavailable");
                let what = if matches!(e, PluginError::Timeout(_)) {
                    "timeout"
                } else {
                    "busy"
                };
                m.plugin_call(source.provider(), "verify", what);
                return unavailable("temporarily unavailable", 5);
            }
            Err(e) => {
                tracing::error!(source = %source.name, "provider plugin failed: {e}");
                m.reject(&source.name, "plugin_failed");
                m.plugin_call(source.provider(), "verify", "failed");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        let provider = source.provider().to_string();
        let events: Vec<Event> = drafts
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                Event::from_draft(d, &source.name, &provider, &owned.body, i, received_at)
            })
            .collect();
        let request = StoredRequest {
            id: crate::event::new_id(),
            source: source.name.clone(),
            received_at_ms: (received_at.unix_timestamp_nanos() / 1_000_000) as i64,
            method: owned.method.clone(),
            path: redact_values(&owned.path, &source.credentials),
            query: redact_values(&redact_query(&owned.query), &source.credentials),
            headers: redact_headers(&owned.headers, &source.redact_headers)
                .into_iter()
                .map(|(n, v)| (n, redact_values(&v, &source.credentials)))
                .collect(),
            body: owned.body.clone(),
        };
        let outcome = match self
            .store
            .ingest(request, &events, self.dedup_window.as_millis() as i64)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(source = %source.name, "cannot store the webhook; asking the sender to retry: {e}");
                m.reject(&source.name, "store_unavailable");
                return unavailable("temporarily unavailable", 5);
            }
        };
        let mut accepted = Vec::new();
        let mut duplicates = Vec::new();
        let mut stale = Vec::new();
        for (o, event) in outcome.into_iter().zip(events) {
            match o {
                Ingested::New(id) => {
                    tracing::info!(event_id = %id, source = %source.name, "webhook accepted");
                    accepted.push(id);
                    let pending = PendingEvent { event, routings: 0 };
                    if self.router.try_send(pending).is_err() {
                        self.router_overflowed
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ingested::Stale(id) => {
                    tracing::info!(event_id = %id, source = %source.name, "older version of an object than one already accepted; stored, not routed");
                    stale.push(id);
                }
                Ingested::Duplicate(id) => {
                    tracing::info!(event_id = %id, source = %source.name, "duplicate delivery; not routed again");
                    duplicates.push(id);
                }
            }
        }
        let label = m.source(&source.name);
        m.accepted
            .get_or_create(&label)
            .inc_by(accepted.len() as u64);
        m.duplicates
            .get_or_create(&label)
            .inc_by(duplicates.len() as u64);
        m.stale.get_or_create(&label).inc_by(stale.len() as u64);
        if !accepted.is_empty() {
            self.gauge
                .unrouted_events
                .fetch_add(accepted.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        answer(
            StatusCode::OK,
            json!({ "accepted": accepted, "duplicates": duplicates, "stale": stale }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let ip = |s: &str| Some(s.parse().unwrap());
        // A direct sender: its header is ignored.
        assert_eq!(
            sender_address(ip("3.3.3.3"), &headers(&["1.1.1.1"]), &trusted),
            ip("3.3.3.3")
        );
        // Through a trusted proxy: the nearest untrusted hop.
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["1.1.1.1"]), &trusted),
            ip("1.1.1.1")
        );
        // A spoofed first hop is not believed: the proxy appended the real one.
        assert_eq!(
            sender_address(
                ip("10.0.0.2"),
                &headers(&["6.6.6.6, 2.2.2.2, 10.0.0.9"]),
                &trusted
            ),
            ip("2.2.2.2")
        );
        assert_eq!(
            sender_address(ip("127.0.0.1"), &headers(&["5.5.5.5", "2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&[]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["garbage"]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["1.1.1.1"]), &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn credentials_are_redacted_wherever_they_appear() {
        let creds = vec!["s3cret tok".to_string()];
        assert_eq!(redact_values("/a/s3cret tok", &creds), "/a/[redacted]");
        assert_eq!(
            redact_values("t=s3cret%20tok&x=1", &creds),
            "t=[redacted]&x=1"
        );
        assert_eq!(
            redact_values("Bearer s3cret tok", &creds),
            "Bearer [redacted]"
        );
        assert_eq!(redact_values("nothing", &creds), "nothing");
    }
}
