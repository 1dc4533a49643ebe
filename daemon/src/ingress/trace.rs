//! A webhook's spans, when tracing is on (`telemetry`): the server span
//! from the request to the answer, its `verify` and `store` children, and
//! its context written into each event's envelope (`traceparent`), so that
//! routing and each attempt join the same trace. A sender's own
//! `traceparent` is linked, not adopted: a client on the internet does not
//! choose where our spans go.

use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanContext, SpanKind};
use opentelemetry::KeyValue;

use super::filter::Incoming;
use crate::event::Event;
use crate::telemetry::{self, Parent, Span, Status};

/// Starts the webhook's span, if tracing is on.
pub(super) fn start(req: &Incoming, source: &str) -> Option<Span> {
    let t = telemetry::get()?;
    let sender = req
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::parse_traceparent);
    let parent = match &sender {
        Some(cx) => Parent::Linked(cx),
        None => Parent::Root,
    };
    Some(t.start(
        format!("{} /hooks/{source}", req.method),
        SpanKind::Server,
        parent,
        None,
        vec![
            KeyValue::new("switchyard.source", source.to_string()),
            KeyValue::new("http.request.method", req.method.to_string()),
        ],
    ))
}

/// Ends it with the answer's status.
pub(super) fn end(span: Option<&mut Span>, status: u16) {
    let Some(span) = span else {
        return;
    };
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
}

/// The provider plugin's verdict, from `start` to now.
pub(super) fn verified(
    webhook: &SpanContext,
    plugin: &str,
    verdict: &str,
    start: SystemTime,
    bytes: usize,
) {
    if let Some(t) = telemetry::get() {
        t.record(
            "verify",
            webhook,
            start,
            SystemTime::now(),
            vec![
                KeyValue::new("switchyard.plugin", plugin.to_string()),
                KeyValue::new("switchyard.verdict", verdict.to_string()),
                KeyValue::new("http.request.body.size", bytes as i64),
            ],
        );
    }
}

/// The store's commit (the group commit's wait included), from `start`.
pub(super) fn stored(webhook: &SpanContext, outcome: &str, start: SystemTime) {
    if let Some(t) = telemetry::get() {
        t.record(
            "store",
            webhook,
            start,
            SystemTime::now(),
            vec![KeyValue::new("switchyard.outcome", outcome.to_string())],
        );
    }
}

/// Writes the webhook's context into each event (the CloudEvents
/// distributed-tracing extension).
pub(super) fn mark(events: &mut [Event], webhook: &SpanContext) {
    let text = telemetry::traceparent(webhook);
    for event in events {
        event
            .extensions
            .insert(telemetry::EXTENSION.into(), text.clone().into());
    }
}
