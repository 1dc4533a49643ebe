//! Each attempt of a job as a span (when tracing is on): a child of its
//! event's webhook span, whose context the event's envelope carries — or,
//! for backlog (a redrive, a replay), a trace of its own linked to it. Its
//! context goes to the plugin with the job (`trace.traceparent`), to be
//! sent on to the destination.

use opentelemetry::trace::{Span as _, SpanKind};
use opentelemetry::KeyValue;
use tracing::span::EnteredSpan;

use crate::host::ExecOutcome;
use crate::store::ClaimedJob;
use crate::telemetry::{self, Parent, Span, Status};

/// An attempt's span under way, and its context as `traceparent` text.
pub struct Attempt {
    span: Span,
    pub traceparent: String,
    trace_id: String,
}

/// Starts the span of an attempt of `job`, if tracing is on.
pub fn start(job: &ClaimedJob) -> Option<Attempt> {
    let t = telemetry::get()?;
    let webhook = telemetry::of_envelope(job.event.get());
    let parent = match &webhook {
        Some(cx) if job.is_backlog() => Parent::Linked(cx),
        Some(cx) => Parent::Child(cx),
        None => Parent::Root,
    };
    let span = t.start(
        format!("attempt {}", job.action),
        SpanKind::Client,
        parent,
        None,
        vec![
            KeyValue::new("switchyard.action", job.action.clone()),
            KeyValue::new("switchyard.rule", job.rule.clone()),
            KeyValue::new("switchyard.job_id", job.id.clone()),
            KeyValue::new("switchyard.event_id", job.event_id.clone()),
            KeyValue::new("switchyard.attempt", i64::from(job.attempt)),
        ],
    );
    let cx = telemetry::context(&span);
    Some(Attempt {
        traceparent: telemetry::traceparent(&cx),
        trace_id: telemetry::trace_id(&cx),
        span,
    })
}

/// Ends an attempt's span with its outcome. While what it returns lives,
/// log lines carry the trace's id (`trace_id`).
pub fn end(attempt: Option<Attempt>, outcome: &ExecOutcome) -> Option<EnteredSpan> {
    let Attempt {
        mut span, trace_id, ..
    } = attempt?;
    let (label, message) = match outcome {
        ExecOutcome::Done(_) => ("done", None),
        ExecOutcome::Retryable(m) => ("retryable", Some(m)),
        ExecOutcome::RetryAfter(m, _) => ("retry_after", Some(m)),
        ExecOutcome::Permanent(m) => ("permanent", Some(m)),
        ExecOutcome::Gone(m) => ("gone", Some(m)),
    };
    span.set_attribute(KeyValue::new("switchyard.outcome", label));
    if let Some(status) = http_status(outcome) {
        span.set_attribute(KeyValue::new("http.response.status_code", status));
    }
    if let Some(m) = message {
        span.set_status(Status::error(m.chars().take(200).collect::<String>()));
    }
    span.end();
    Some(tracing::info_span!("trace", trace_id = %trace_id).entered())
}

/// The destination's HTTP status, when the action says it: a result's
/// `status` (the http action's), or a failure's message `HTTP 503 …` (the
/// first-party actions' words).
fn http_status(outcome: &ExecOutcome) -> Option<i64> {
    match outcome {
        ExecOutcome::Done(result) => result.as_ref()?.get("status")?.as_i64(),
        ExecOutcome::Retryable(m)
        | ExecOutcome::RetryAfter(m, _)
        | ExecOutcome::Permanent(m)
        | ExecOutcome::Gone(m) => m.strip_prefix("HTTP ")?.get(..3)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destinations_status_is_read_from_what_the_action_said() {
        let done = ExecOutcome::Done(Some(serde_json::json!({"status": 202})));
        assert_eq!(http_status(&done), Some(202));
        assert_eq!(
            http_status(&ExecOutcome::Retryable("HTTP 503 busy".into())),
            Some(503)
        );
        assert_eq!(http_status(&ExecOutcome::Permanent("HTTP 4".into())), None);
        assert_eq!(
            http_status(&ExecOutcome::Retryable("timed out".into())),
            None
        );
        assert_eq!(http_status(&ExecOutcome::Done(None)), None);
    }
}
