//! A claimed job as the plugin ABI reads it (`switchyard_plugin_api::Job`,
//! for `execute` and `execute_batch`).

use serde_json::Value;

use crate::store::ClaimedJob;

/// The job as the ABI defines it for `execute` and `execute_batch`
/// (`switchyard_plugin_api::Job`), written from the claimed job's parts
/// without copying them: the envelope goes in as the JSON it already is.
#[derive(serde::Serialize)]
pub(super) struct PluginJob<'a> {
    id: &'a str,
    idempotency_key: &'a str,
    action: &'a str,
    rule: &'a str,
    attempt: u32,
    params: &'a Value,
    event: &'a serde_json::value::RawValue,
    /// The attempt's trace context, when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<Trace<'a>>,
}

#[derive(serde::Serialize)]
struct Trace<'a> {
    traceparent: &'a str,
}

/// The job as the plugin reads it; `traceparent`: its attempt's span.
pub(super) fn plugin_job<'a>(job: &'a ClaimedJob, traceparent: Option<&'a str>) -> PluginJob<'a> {
    PluginJob {
        trace: traceparent.map(|traceparent| Trace { traceparent }),
        id: &job.id,
        idempotency_key: &job.idempotency_key,
        action: &job.action,
        rule: &job.rule,
        attempt: job.attempt,
        params: &job.params,
        event: &job.event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_written_as_the_abi_reads_it() {
        let event = serde_json::json!({"id": "e1", "type": "a.b", "data": {"n": 1}});
        let job = ClaimedJob {
            id: "j1".into(),
            event_id: "e1".into(),
            event: serde_json::value::to_raw_value(&event).unwrap().into(),
            rule: "r".into(),
            action: "a".into(),
            params: serde_json::json!({"to": "x"}),
            idempotency_key: "e1:r:0".into(),
            attempt: 2,
            series_attempt: 1,
            order_key: None,
            rate_slot: None,
        };
        let text = serde_json::to_string(&plugin_job(&job, None)).unwrap();
        let read: switchyard_plugin_api::Job = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (
                read.id.as_str(),
                read.idempotency_key.as_str(),
                read.action.as_str()
            ),
            ("j1", "e1:r:0", "a")
        );
        assert_eq!((read.rule.as_str(), read.attempt), ("r", 2));
        assert_eq!((read.params, read.event), (job.params, event));
    }
}
