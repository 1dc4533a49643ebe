//! The event envelope every stage after ingress works with.
//!
//! Attribute names follow CloudEvents: `id` (a ULID assigned here, so ids sort
//! by arrival), `source` (the configured source name), `type`
//! (`<provider>.<provider's own name>`), `subject`, `time`, `data`, plus
//! `provider`, `dedup_key`, `received_at` and `extensions` (normalized
//! attributes a provider adds, e.g. Tight's entity resource path).
//!
//! Switchyard's own events (`switchyard.*`, source `switchyard`) are
//! [`Notice`]s a stage announces; the app stores and routes them like a
//! provider's (`app/notices.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use switchyard_plugin_api::EventDraft;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the provider says it happened; else when it was received.
    pub time: String,
    pub data: Value,
    pub provider: String,
    pub dedup_key: String,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
    /// The object's key and version, when the provider orders its events:
    /// an event not newer than the last accepted for its key is not routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<switchyard_plugin_api::Order>,
    /// The provider checking the endpoint (a challenge answered), not an
    /// event: stored for the record, never routed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handshake: bool,
}

/// A new sortable event id.
pub fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl Event {
    /// Completes a provider's draft into an envelope. A draft without a dedup
    /// key gets one derived from the source, type and raw body, so a retried
    /// delivery of the same bytes is still recognised.
    pub fn from_draft(
        draft: EventDraft,
        source: &str,
        provider: &str,
        raw_body: &[u8],
        index: usize,
        received_at: OffsetDateTime,
    ) -> Event {
        let received_at = rfc3339(received_at);
        let kind = format!("{provider}.{}", draft.kind);
        let dedup_key = draft.dedup_key.unwrap_or_else(|| {
            let mut h = Sha256::new();
            h.update(kind.as_bytes());
            h.update([0]);
            h.update(index.to_le_bytes());
            h.update(raw_body);
            hex::encode(h.finalize())
        });
        Event {
            id: new_id(),
            source: source.to_string(),
            kind,
            subject: draft.subject,
            time: draft.time.unwrap_or_else(|| received_at.clone()),
            data: draft.data,
            provider: provider.to_string(),
            dedup_key,
            received_at,
            extensions: draft.extensions,
            order: draft.order,
            handshake: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draft_becomes_a_prefixed_envelope() {
        let draft = EventDraft::new("invoiceViewed", json!({"a": 1}));
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let ev = Event::from_draft(draft, "tight-prod", "tight", b"{}", 0, t);
        assert_eq!(ev.kind, "tight.invoiceViewed");
        assert_eq!(ev.source, "tight-prod");
        assert_eq!(ev.time, "2023-11-14T22:13:20Z");
        assert_eq!(ev.dedup_key.len(), 64);
        assert_eq!(ev.id.len(), 26);
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "tight.invoiceViewed");
        assert!(v.get("subject").is_none());
    }
}

/// The source of Switchyard's own events.
pub const OWN_SOURCE: &str = "switchyard";

/// One of Switchyard's own events, as a stage announces it: its type
/// (`switchyard.action.dead_letter`), what it is about (an action's name),
/// its data, and a key that makes announcing the same thing twice one
/// event.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: &'static str,
    pub subject: String,
    pub data: Value,
    pub dedup_key: String,
}

/// Where stages announce notices.
pub type Announce = std::sync::Arc<dyn Fn(Notice) + Send + Sync>;

impl Notice {
    /// The notice as an event of the source `switchyard`.
    pub fn into_event(self, now: OffsetDateTime) -> Event {
        let at = rfc3339(now);
        Event {
            id: new_id(),
            source: OWN_SOURCE.into(),
            kind: self.kind.into(),
            subject: Some(self.subject),
            time: at.clone(),
            data: self.data,
            provider: OWN_SOURCE.into(),
            dedup_key: self.dedup_key,
            received_at: at,
            extensions: Map::new(),
            order: None,
            handshake: false,
        }
    }
}

/// Whether an event (as stored JSON) is one of Switchyard's own: what
/// befalls its jobs is not announced again, so an alert that fails cannot
/// feed itself.
pub fn is_own(envelope: &str) -> bool {
    #[derive(Deserialize)]
    struct Source<'a> {
        #[serde(borrow)]
        source: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Source>(envelope).is_ok_and(|e| e.source == OWN_SOURCE)
}
