//! A provider's sample as the events it becomes: signed by the plugin,
//! verified and normalized by it, completed by the host — what `rules test
//! --sample` and the dashboard's playground run rules on.

use crate::event::Event;
use crate::host::{Instance, OwnedRequest};

/// The events of `instance`'s sample `event`, for the source `source`.
pub fn sample_events(instance: &Instance, source: &str, event: &str) -> Result<Vec<Event>, String> {
    let sample = instance.sample(event).map_err(|e| e.to_string())?;
    let request = OwnedRequest {
        method: sample.method.clone(),
        path: String::new(),
        query: sample.query.clone(),
        headers: sample
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect(),
        remote_addr: "127.0.0.1".into(),
        body: bytes::Bytes::from(sample.body.clone()),
    };
    let verified = instance
        .verify(&request)
        .map_err(|e| e.to_string())?
        .map_err(|r| format!("the {source} plugin refused its own sample: {r}"))?;
    let provider = instance.plugin().name.clone();
    let now = time::OffsetDateTime::now_utc();
    Ok(verified
        .events
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let mut event = Event::from_draft(d, source, &provider, &request.body, i, now);
            event.handshake = verified.handshake;
            event
        })
        .collect())
}
