//! Ingress: the HTTP face providers post webhooks to.
//!
//! Owns: `POST /hooks/{source}[/{rest}]` (and the other methods a source's
//! plugin declares, for handshakes) as a warp filter, the body limit,
//! who may send, turning a request into a plugin call and the verdict into
//! an HTTP answer, what of a request is never stored, and the sources'
//! config (`[sources.NAME]`). Calls: `host` (verify on the source's lane) and
//! `store` (persist before the answer), then hands new events to the router
//! through a channel it is given. Imports no later stage.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Ingress`]: one webhook from its body to its answer |
//! | `filter.rs` | the warp filter, the peer's address, reading the body |
//! | `sender.rs` | the sender behind trusted proxies, `allow_ips` |
//! | `limit.rs` | a source's inbound limits: `rate`, `rate_per_sender` |
//! | `redact.rs` | credentials redacted before the request is stored |
//! | `rejections.rs` | the most recent refused requests, in memory only |
//! | `sample.rs` | a provider's sample as the events it becomes |
//! | `answer.rs` | the JSON answers (the admin API answers with them too) |
//! | `config.rs` | `[sources.NAME]`, `max_body_bytes` |
//! | `build.rs` | [`Ingress::new`] from its sources, [`Limits`] and [`Links`] |
//!
//! A 2xx is sent only once the request and its events are committed to the
//! store (durably, by default). A delivery seen before (same dedup key within
//! the window) is answered 2xx too, and not routed again.
//!
//! Answers:
//! | status | when |
//! |---|---|
//! | 200 | verified and stored; `{"accepted": [new event ids], "duplicates": [ids of the events repeated], "stale": [ids stored but not routed: an older version of their object]}` (and `"handshakes"`: ids of handshakes recorded) |
//! | 2xx | verified and stored, answered as the provider plugin said (ABI 1.5): a handshake's challenge echoed, a source's own success answer |
//! | 400 | authentic but malformed |
//! | 401 | verification or decryption failed (generic body; the reason is logged) |
//! | 403 | sender address not allowed |
//! | 404 | no such source |
//! | 405 | not a method the source takes (POST, unless its plugin declares more: GET or OPTIONS for a handshake); `Allow` lists them |
//! | 408 | the body did not arrive within the listener's `body_timeout` |
//! | 413 | body over `max_body_bytes` |
//! | 429 | over the source's `rate` or `rate_per_sender` (`Retry-After`: seconds until one would pass) |
//! | 500 | the provider plugin failed (panicked, returned nonsense, or said OK with no event) |
//! | 503 | plugin overloaded or timed out, the plugin said "retry later" (`SY_RETRY_LATER`, ABI 1.6: `Retry-After: 30`), backlog over its bound, or the store cannot write (`Retry-After`) |

/// `Retry-After` of a provider plugin's "not now" (`SY_RETRY_LATER`).
pub const RETRY_LATER_SECS: u32 = 30;

pub mod answer;
mod build;
mod config;
mod filter;
mod limit;
mod quiet;
mod redact;
pub mod rejections;
mod sample;
mod sender;
mod trace;

use std::collections::BTreeMap;
use std::time::SystemTime;

use opentelemetry::trace::SpanContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde_json::json;
use switchyard_plugin_api::{Answer, RejectKind};
use tokio::sync::mpsc;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use crate::event::Event;
use crate::host::{CallPool, Instance, Lane, OwnedRequest, PluginError};
use crate::metrics::recent::{Kind, Latency};
use crate::metrics::Metrics;
use crate::store::{BacklogGauge, Ingested, PendingEvent, Pipeline};

use answer::{answer, error, log_refusal, refused, unavailable, Refused};
use filter::{read_body, BodyError, Incoming};

pub use build::{sources, Limits, Links};
pub use config::{SourceConfig, DEFAULT_API_TIMEOUT, DEFAULT_MAX_BODY_BYTES};
pub use filter::{filter, is_body_timeout, BodyTimeout, PeerAddr};
pub use sample::sample_events;
pub use sender::sender_address;

/// A configured source: its provider plugin's instance and what ingress
/// checks and redacts for it.
pub struct Source {
    pub name: String,
    pub instance: Arc<Instance>,
    /// Extra header names to redact when the request is stored.
    pub redact_headers: Vec<String>,
    /// Sender networks allowed (empty: any).
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Requests per period, in all and per sender (`limit.rs`).
    pub limits: limit::SourceLimits,
    /// Credential values to redact wherever a stored request carries them.
    pub credentials: Vec<String>,
    /// Where its verifications run (on the plugin call pool).
    pub lane: Arc<Lane>,
}

impl Source {
    /// The provider plugin's name.
    pub fn provider(&self) -> &str {
        &self.instance.plugin().name
    }
}

/// What ingress needs to answer a webhook.
pub struct Ingress {
    /// The configured sources; a reload swaps the whole map.
    pub sources: ArcSwap<BTreeMap<String, Arc<Source>>>,
    pub pool: CallPool,
    pub plugin_timeout: Duration,
    pub max_body_bytes: u64,
    pub store: Arc<dyn Pipeline>,
    pub dedup_window: Duration,
    /// How long an acknowledgement waits for the store's commit.
    pub write_timeout: Duration,
    /// The router's inbox: new events, after their commit.
    pub router: mpsc::Sender<PendingEvent>,
    /// Set when the inbox was full (the router then reads the store).
    pub router_overflowed: Arc<AtomicBool>,
    pub gauge: Arc<BacklogGauge>,
    pub max_unrouted_events: u64,
    pub max_pending_jobs: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: Arc<Metrics>,
    /// Set when the daemon is stopping: answer 503.
    pub stopping: AtomicBool,
    /// The most recent refusals (the dashboard's rejections page).
    pub rejections: Arc<rejections::Rejections>,
    /// How often each kind of refusal is logged.
    pub quiet: quiet::Quiet,
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
            let response = error(StatusCode::NOT_FOUND, "unknown source");
            let why = refused(
                response,
                "unknown_source",
                "no source of this name is configured",
            )
            .at(tracing::Level::INFO);
            return self.note(why, &req, None, None, None);
        };
        // The webhook's trace, when tracing is on: its span, from now to
        // the answer.
        let mut span = trace::start(&req, &source.name);
        let trace = span.as_ref().map(crate::telemetry::context);
        let response = match self.handle_source(req, &source, body, trace.as_ref()).await {
            Ok(response) | Err(response) => response,
        };
        trace::end(span.as_mut(), response.status().as_u16());
        let took = started.elapsed().as_secs_f64();
        self.metrics
            .ingest_seconds
            .get_or_create(&self.metrics.source(&source.name))
            .observe(took);
        self.metrics
            .recent
            .latency(crate::store::now_ms(), Latency::Ingest, took);
        response
    }

    /// One webhook for a known source: admitted, verified, stored, answered.
    /// Each step that refuses it returns its answer as the error.
    async fn handle_source<S, B>(
        &self,
        req: Incoming,
        source: &Source,
        body: S,
        trace: Option<&SpanContext>,
    ) -> Result<Response, Response>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let body = match self.receive(&req, source, body).await {
            Ok(body) => body,
            Err(why) => return Err(self.note(why, &req, Some(source), None, None)),
        };
        let sender = self
            .admit(&req, source)
            .map_err(|why| self.note(why, &req, Some(source), None, Some(&body)))?;
        let received_at = time::OffsetDateTime::now_utc();
        let remote_addr = sender.map(|ip| ip.to_string()).unwrap_or_default();
        let request = Arc::new(req.owned(remote_addr, body));
        let verifying = SystemTime::now();
        let verdict = self.verify(source, &request, received_at).await;
        if let Some(cx) = trace {
            let outcome = match &verdict {
                Ok((events, _)) => format!("{} event(s)", events.len()),
                Err(why) => why.reason.to_string(),
            };
            trace::verified(
                cx,
                source.provider(),
                &outcome,
                verifying,
                request.body.len(),
            );
        }
        let (mut events, custom) = match verdict {
            Ok(verified) => verified,
            Err(why) => {
                return Err(self.note(why, &req, Some(source), sender, Some(&request.body)))
            }
        };
        // Each event carries the webhook's trace into the store, and so to
        // its routing and its jobs' attempts.
        if let Some(cx) = trace {
            trace::mark(&mut events, cx);
        }
        let storing = SystemTime::now();
        let stored = self
            .store(source, &request, received_at, events, custom)
            .await;
        if let Some(cx) = trace {
            let outcome = stored
                .as_ref()
                .map_or_else(|why| why.reason, |_| "committed");
            trace::stored(cx, outcome, storing);
        }
        stored.map_err(|why| self.note(why, &req, Some(source), sender, Some(&request.body)))
    }

    /// Counts a refusal, keeps it in the rejections ring (redacted, cut
    /// short), and gives its answer.
    fn note(
        &self,
        why: Refused,
        req: &Incoming,
        source: Option<&Source>,
        sender: Option<std::net::IpAddr>,
        body: Option<&[u8]>,
    ) -> Response {
        // An unknown source's name is the sender's to choose: never a
        // metric's label (unbounded), and cut short in the ring.
        let now = crate::store::now_ms();
        let name = match source {
            Some(s) => {
                self.metrics.reject(&s.name, why.reason, now);
                s.name.clone()
            }
            None => req.source.chars().take(64).collect(),
        };
        let key = source.map_or("", |s| s.name.as_str());
        if let Some(unlogged) = self.quiet.admit(key, why.reason, now) {
            log_refusal(&why, &name, unlogged);
        }
        let (extra, credentials) = source.map_or((&[][..], &[][..]), |s| {
            (&s.redact_headers[..], &s.credentials[..])
        });
        let seen = redact::stored_request(
            &req.owned(String::new(), Bytes::new()),
            &name,
            0,
            extra,
            credentials,
        );
        let (body, body_cut) = rejections::cut_body(body.unwrap_or_default());
        let sender = sender.or_else(|| {
            sender_address(
                req.remote.map(|a| a.ip()),
                &req.headers,
                &self.trusted_proxies,
            )
        });
        self.rejections.push(rejections::Rejection {
            at_ms: now,
            source: name,
            sender: sender.map(|ip| ip.to_string()).unwrap_or_default(),
            status: why.response.status().as_u16(),
            reason: why.reason,
            message: why.message,
            method: seen.method,
            path: if seen.query.is_empty() {
                format!("/hooks/{}", seen.path)
            } else {
                format!("/hooks/{}?{}", seen.path, seen.query)
            },
            headers: seen.headers,
            body: redact::redact_values(&body, credentials),
            body_cut,
        });
        why.response
    }

    /// The body, within `max_body_bytes` and the listener's body deadline.
    async fn receive<S, B>(
        &self,
        req: &Incoming,
        source: &Source,
        body: S,
    ) -> Result<Bytes, Refused>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let methods = source.instance.methods();
        if !methods.iter().any(|m| m == req.method.as_str()) {
            let allow = methods.join(", ");
            let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert("allow", v);
            }
            let why = format!("{} is not one of {allow}", req.method);
            return Err(refused(resp, "method", why));
        }
        let declared = req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            let resp = error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            let over = format!(
                "declared {} bytes; max_body_bytes is {}",
                declared.unwrap_or(0),
                self.max_body_bytes
            );
            return Err(refused(resp, "too_large", over));
        }
        read_body(body, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    let resp = error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
                    let over =
                        format!("more than max_body_bytes ({}) arrived", self.max_body_bytes);
                    refused(resp, "too_large", over)
                }
                BodyError::TimedOut => {
                    let mut resp = error(StatusCode::REQUEST_TIMEOUT, "body timed out");
                    resp.headers_mut()
                        .insert("connection", HeaderValue::from_static("close"));
                    refused(
                        resp,
                        "body_timeout",
                        "the body did not arrive within body_timeout; closing the connection",
                    )
                    .at(tracing::Level::INFO)
                }
                BodyError::Broken(e) => {
                    let resp = error(StatusCode::BAD_REQUEST, "unreadable body");
                    refused(
                        resp,
                        "unreadable",
                        format!("the body could not be read: {e}"),
                    )
                    .at(tracing::Level::INFO)
                }
            })
    }

    /// Whether the daemon takes the webhook now (not stopping, backlog
    /// within bounds) and the sender may send it; the sender's address.
    // The error is the answer, sent as it is: no gain in boxing it.
    #[allow(clippy::result_large_err)]
    fn admit(&self, req: &Incoming, source: &Source) -> Result<Option<std::net::IpAddr>, Refused> {
        if self.stopping.load(Ordering::Relaxed) {
            let resp = unavailable("shutting down", 5);
            return Err(refused(resp, "shutting_down", "the daemon is stopping"));
        }
        let backlog = self.gauge.get();
        if backlog.unrouted_events >= self.max_unrouted_events
            || backlog.pending_jobs >= self.max_pending_jobs
        {
            let over = format!(
                "backlog over its bound ({} unrouted events, {} pending jobs); asking the sender to retry",
                backlog.unrouted_events, backlog.pending_jobs
            );
            return Err(refused(unavailable("busy", 30), "backlog", over));
        }
        let sender = sender_address(
            req.remote.map(|a| a.ip()),
            &req.headers,
            &self.trusted_proxies,
        );
        if !sender::allowed(sender, &source.allow_ips) {
            let resp = error(StatusCode::FORBIDDEN, "forbidden");
            let who = sender.map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string());
            return Err(refused(
                resp,
                "sender_not_allowed",
                format!("the sender {who} is not in allow_ips"),
            ));
        }
        let limited = source.limits.any().then(|| {
            let now_us = crate::store::now_ms() * 1_000;
            source.limits.admit(sender, now_us)
        });
        if let Some(Err(over)) = limited {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(over.retry_after_secs));
            let who = sender.map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string());
            return Err(refused(
                resp,
                "rate_limited",
                format!(
                    "over the source's {} (sender {who}); asked to retry in {} s",
                    over.limit, over.retry_after_secs
                ),
            ));
        }
        Ok(sender)
    }

    /// The provider plugin's verdict, on the source's lane (the call pool's
    /// threads) within the plugin deadline: the events it found (marked when
    /// the request is a handshake) and the answer it gives, or the answer
    /// to a refusal.
    async fn verify(
        &self,
        source: &Source,
        request: &Arc<OwnedRequest>,
        received_at: time::OffsetDateTime,
    ) -> Result<(Vec<Event>, Option<Answer>), Refused> {
        let m = &self.metrics;
        let instance = source.instance.clone();
        let lent = request.clone();
        let verdict = source
            .lane
            .call(self.plugin_timeout, move || instance.verify(&lent))
            .await
            .and_then(|r| r);
        let verified = match verdict {
            Ok(Ok(verified)) => {
                m.plugin_call(source.provider(), "verify", "ok");
                verified
            }
            Ok(Err(rejection)) => {
                m.plugin_call(source.provider(), "verify", "rejected");
                let resp = match rejection.kind {
                    // A body that does not decrypt failed its authentication
                    // tag (AES-GCM): as unauthenticated as a bad signature.
                    RejectKind::Unauthenticated | RejectKind::Expired | RejectKind::Decryption => {
                        error(StatusCode::UNAUTHORIZED, "unauthorized")
                    }
                    RejectKind::Forbidden => error(StatusCode::FORBIDDEN, "forbidden"),
                    RejectKind::Malformed => error(StatusCode::BAD_REQUEST, "malformed"),
                    RejectKind::RetryLater => unavailable("retry_later", RETRY_LATER_SECS),
                };
                return Err(refused(resp, rejection.kind.as_str(), rejection.message));
            }
            Err(e @ (PluginError::Timeout(_) | PluginError::Busy(_))) => {
                let what = if matches!(e, PluginError::Timeout(_)) {
                    "timeout"
                } else {
                    "busy"
                };
                m.plugin_call(source.provider(), "verify", what);
                let resp = unavailable("temporarily unavailable", 5);
                return Err(refused(
                    resp,
                    "plugin_unavailable",
                    format!("provider plugin unavailable: {e}"),
                )
                .at(tracing::Level::ERROR));
            }
            Err(e) => {
                m.plugin_call(source.provider(), "verify", "failed");
                let resp = error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
                return Err(refused(
                    resp,
                    "plugin_failed",
                    format!("provider plugin failed: {e}"),
                )
                .at(tracing::Level::ERROR));
            }
        };
        let provider = source.provider();
        let handshake = verified.handshake;
        let events = verified
            .events
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let mut event =
                    Event::from_draft(d, &source.name, provider, &request.body, i, received_at);
                event.handshake = handshake;
                event
            })
            .collect();
        Ok((events, verified.answer))
    }

    /// Commits the request (credentials redacted) and its events, hands the
    /// new events to the router, and answers: as the plugin said, or 200
    /// with what became of each event.
    async fn store(
        &self,
        source: &Source,
        request: &OwnedRequest,
        received_at: time::OffsetDateTime,
        events: Vec<Event>,
        custom: Option<Answer>,
    ) -> Result<Response, Refused> {
        let m = &self.metrics;
        let stored = redact::stored_request(
            request,
            &source.name,
            (received_at.unix_timestamp_nanos() / 1_000_000) as i64,
            &source.redact_headers,
            &source.credentials,
        );
        let ingest = self
            .store
            .ingest(stored, &events, self.dedup_window.as_millis() as i64);
        let outcome = tokio::time::timeout(self.write_timeout, ingest)
            .await
            .map_err(|_| {
                let resp = unavailable("temporarily unavailable", 5);
                let waited = self.write_timeout.as_secs_f64();
                refused(
                    resp,
                    "store_timeout",
                    format!("the store did not commit within {waited} s (write_timeout); asking the sender to retry"),
                )
                .at(tracing::Level::ERROR)
            })?
            .map_err(|e| {
                let resp = unavailable("temporarily unavailable", 5);
                refused(
                    resp,
                    "store_unavailable",
                    format!("the store cannot write, asking the sender to retry: {e}"),
                )
                .at(tracing::Level::ERROR)
            })?;
        let mut accepted = Vec::new();
        let mut duplicates = Vec::new();
        let mut stale = Vec::new();
        let mut handshakes = Vec::new();
        for (o, event) in outcome.into_iter().zip(events) {
            match o {
                Ingested::Handshake(id) => {
                    tracing::info!(event_id = %id, source = %source.name, "handshake answered; stored, not routed");
                    handshakes.push(id);
                }
                Ingested::New(id) => {
                    match crate::telemetry::of_extensions(&event.extensions) {
                        // The log line names the webhook's trace.
                        Some(cx) => tracing::info!(
                            event_id = %id, source = %source.name,
                            trace_id = %crate::telemetry::trace_id(&cx), "webhook accepted"
                        ),
                        None => {
                            tracing::info!(event_id = %id, source = %source.name, "webhook accepted")
                        }
                    }
                    accepted.push(id);
                    let pending = PendingEvent {
                        event,
                        routings: 0,
                        released: false,
                    };
                    if self.router.try_send(pending).is_err() {
                        self.router_overflowed.store(true, Ordering::Relaxed);
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
        m.handshakes
            .get_or_create(&label)
            .inc_by(handshakes.len() as u64);
        let now = crate::store::now_ms();
        for (outcome, n) in [
            ("accepted", accepted.len()),
            ("duplicate", duplicates.len()),
            ("stale", stale.len()),
            ("handshake", handshakes.len()),
        ] {
            m.recent
                .count(now, Kind::Webhook, &source.name, outcome, n as u64);
        }
        if !accepted.is_empty() {
            self.gauge
                .unrouted_events
                .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        }
        if let Some(custom) = custom {
            return Ok(answer::custom(custom));
        }
        let mut said = json!({ "accepted": accepted, "duplicates": duplicates, "stale": stale });
        if !handshakes.is_empty() {
            said["handshakes"] = json!(handshakes);
        }
        Ok(answer(StatusCode::OK, said))
    }
}
