//! Telemetry: one OpenTelemetry trace per webhook, from the socket to the
//! destination, exported over OTLP/HTTP (`[telemetry]`, or the standard
//! `OTEL_*` variables). Off unless a collector is named, and then nothing
//! here is reached: each stage asks [`get`] first.
//!
//! Owns: the tracer and its exporter (`export.rs`: a bounded queue and a
//! thread of its own, so that a slow or absent collector drops spans,
//! counted, never delays a webhook), `[telemetry]` (`config.rs`), and the
//! trace context as it travels: W3C `traceparent` text.
//!
//! How a trace crosses the stages: ingress starts the webhook's span
//! (`POST /hooks/{source}`, with children `verify` and `store`) and writes
//! its context into each event's envelope as the CloudEvents
//! distributed-tracing extension `traceparent` — stored with the event,
//! so that routing (`route`) and each attempt of each job (`attempt
//! ACTION`), however much later and on whichever instance, are children
//! of it. A replay's routing and a redriven job start a trace of their own
//! with a link to the original. An attempt's context goes to the action
//! plugin in its job (`trace.traceparent`): the http and slack actions
//! send it as the `traceparent` header, the exec action as `TRACEPARENT`.
//! A sender's own `traceparent` is linked, not adopted as the parent: a
//! client on the internet does not choose where our spans go.
//!
//! The spans are made with the OpenTelemetry API directly rather than
//! through `tracing-opentelemetry`: a webhook's trace crosses the store (a
//! restart, another instance) where no `tracing` span can follow, and its
//! spans take times measured where the work happened.
//!
//! One tracer per process: the first daemon started with tracing on sets
//! it (an embedding program that runs several shares it).

mod config;
mod export;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub use config::{TelemetryConfig, DEFAULT_QUEUE};
pub use opentelemetry::trace::Status;

/// A span under way (the SDK's).
pub type Span = opentelemetry_sdk::trace::Span;

/// The process's tracer, when tracing is on.
pub struct Telemetry {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    counts: Arc<export::Counts>,
    trace_url: Option<String>,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// The tracer, if tracing is on.
#[inline]
pub fn get() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

/// Turns tracing on when `config` (or the environment) names a collector:
/// whether it is on. Said once in the log.
pub fn start(config: &TelemetryConfig) -> Result<bool, String> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(url) = config.traces_url(env) else {
        return Ok(false);
    };
    if TELEMETRY.get().is_some() {
        return Ok(true);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("telemetry: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(export::Client(client))
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| format!("telemetry: {e}"))?;
    let counts = Arc::new(export::Counts::default());
    let queue = config.queue.unwrap_or(DEFAULT_QUEUE);
    let processor = export::Bounded::start(exporter, queue, counts.clone())
        .map_err(|e| format!("telemetry: {e}"))?;
    let ratio = config.ratio(env);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service(env))
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    let _ = TELEMETRY.set(Telemetry {
        tracer,
        provider,
        counts,
        trace_url: config.trace_url.clone(),
    });
    tracing::info!(collector = %url, sample_ratio = ratio, "tracing on: spans go to the collector over OTLP/HTTP");
    Ok(true)
}

/// Sends what is queued (at a stop).
pub fn flush() {
    if let Some(t) = get() {
        let _ = t.provider.force_flush();
    }
}

/// A span's context as W3C `traceparent` text (the SDK's propagator).
pub fn traceparent(cx: &SpanContext) -> String {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(
        &Context::new().with_remote_span_context(cx.clone()),
        &mut carrier,
    );
    carrier.remove("traceparent").unwrap_or_default()
}

/// Reads W3C `traceparent` text, as the SDK's propagator does: none when
/// it is not a valid one.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let carrier = std::collections::HashMap::from([("traceparent".to_string(), text.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The key of an event's extensions that carries its webhook's trace.
pub const EXTENSION: &str = "traceparent";

/// The trace an event's extensions carry, if any.
pub fn of_extensions(
    extensions: &serde_json::Map<String, serde_json::Value>,
) -> Option<SpanContext> {
    parse_traceparent(extensions.get(EXTENSION)?.as_str()?)
}

/// The `traceparent` an event's envelope carries (its CloudEvents
/// distributed-tracing extension), if any.
pub fn of_envelope(envelope: &str) -> Option<SpanContext> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        extensions: Extensions,
    }
    #[derive(serde::Deserialize, Default)]
    struct Extensions {
        traceparent: Option<String>,
    }
    let e: Envelope = serde_json::from_str(envelope).ok()?;
    parse_traceparent(e.extensions.traceparent.as_deref()?)
}

/// How a span relates to the trace it belongs with.
pub enum Parent<'a> {
    /// None: a trace of its own.
    Root,
    /// A child of this span.
    Child(&'a SpanContext),
    /// A trace of its own, linked to this one (a replay, a redrive, a
    /// sender's own trace).
    Linked(&'a SpanContext),
}

impl Telemetry {
    /// Starts a span at `start` (now when `None`).
    pub fn start(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        parent: Parent<'_>,
        start: Option<SystemTime>,
        attributes: Vec<KeyValue>,
    ) -> Span {
        let mut builder = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes);
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let cx = match parent {
            Parent::Root => Context::new(),
            Parent::Child(p) => Context::new().with_remote_span_context(p.clone()),
            Parent::Linked(l) => {
                builder = builder.with_links(vec![Link::with_context(l.clone())]);
                Context::new()
            }
        };
        builder.start_with_context(&self.tracer, &cx)
    }

    /// A finished span of work measured elsewhere: from `start` to `end`.
    pub fn record(
        &self,
        name: &'static str,
        parent: &SpanContext,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let mut span = self.start(
            name,
            SpanKind::Internal,
            Parent::Child(parent),
            Some(start),
            attributes,
        );
        span.end_with_timestamp(end);
    }

    /// Where the dashboard links a trace, if `trace_url` is set.
    pub fn trace_link(&self, trace_id: &str) -> Option<String> {
        self.trace_url
            .as_ref()
            .map(|u| u.replace("{trace_id}", trace_id))
    }

    /// Spans sent, and spans dropped (a full queue, a collector that did
    /// not take them).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.exported.load(Ordering::Relaxed),
            self.counts.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The trace id a span context says, as text.
pub fn trace_id(cx: &SpanContext) -> String {
    cx.trace_id().to_string()
}

/// A span's own context.
pub fn context(span: &Span) -> SpanContext {
    span.span_context().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_reads_and_writes_the_w3c_form() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(text).unwrap();
        assert_eq!(traceparent(&cx), text);
        assert!(cx.is_sampled() && cx.is_remote());
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        let envelope =
            format!(r#"{{"id":"e","data":{{"x":1}},"extensions":{{"traceparent":"{text}"}}}}"#);
        assert_eq!(
            of_envelope(&envelope).map(|c| traceparent(&c)),
            Some(text.into())
        );
        assert!(of_envelope(r#"{"id":"e"}"#).is_none());
    }
}
