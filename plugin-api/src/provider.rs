//! The provider's side: the request it verifies, the events and answers it
//! hands back, its refusals and samples, and the [`Provider`] trait.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ffi, parse_query, Host, Subscription, SubscriptionCall, SubscriptionError};

/// An incoming webhook request, borrowed from the host for one `verify` call.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path after the source's mount point (`/hooks/{source}`), may be empty.
    pub path: &'a str,
    /// The raw query string without `?`, may be empty.
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The sender's IP address as text, empty when unknown.
    pub remote_addr: &'a str,
    /// The raw body exactly as received: verify over these bytes.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The first header of that name (case-insensitive), as bytes.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The first header of that name as UTF-8 text, trimmed.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Query parameters, percent-decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(self.query)
    }
}

/// One normalized event, as a provider hands it to the host. The host adds
/// the envelope fields it owns (`id`, `source`, `provider`, `received_at`) and
/// prefixes `type` with the provider's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    /// The provider's own event name, e.g. `invoiceViewed` or `entity.invoice`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the provider says the event happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Stable across the provider's retries of the same delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// Normalized attributes beside the payload (e.g. an entity's resource path).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, Value>,
    /// The version of the object this event carries, when the provider says
    /// versions only grow: the host drops (2xx, not routed) an event whose
    /// version is not newer than the last it accepted for the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    pub data: Value,
}

/// An object's identity and version, for dropping stale events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Names the object within the source, e.g. `product:42`.
    pub key: String,
    pub version: i64,
}

impl EventDraft {
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        EventDraft {
            kind: kind.into(),
            subject: None,
            time: None,
            dedup_key: None,
            extensions: serde_json::Map::new(),
            order: None,
            data,
        }
    }
}

/// Why a provider refused a request. The HTTP answer stays generic; the
/// message goes to the log and must never contain a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Missing or bad signature or token (401).
    Unauthenticated,
    /// Signature timestamp outside the tolerance (401).
    Expired,
    /// Authentic, but the body could not be understood (400).
    Malformed,
    /// The sender's address is not allowed (403).
    Forbidden,
    /// Could not be decrypted: the cipher's authentication tag failed, or the
    /// key, IV or ciphertext is wrong (401).
    Decryption,
    /// Not now: the plugin cannot decide yet (a key it must fetch is
    /// unreachable). Answered 503 with `Retry-After`, so the provider's
    /// retry follows, not a 500 (ABI 1.6).
    RetryLater,
}

impl RejectKind {
    pub fn status(self) -> i32 {
        match self {
            RejectKind::Unauthenticated => ffi::SY_REJECT_UNAUTHENTICATED,
            RejectKind::Expired => ffi::SY_REJECT_EXPIRED,
            RejectKind::Malformed => ffi::SY_REJECT_MALFORMED,
            RejectKind::Forbidden => ffi::SY_REJECT_FORBIDDEN,
            RejectKind::Decryption => ffi::SY_REJECT_DECRYPTION,
            RejectKind::RetryLater => ffi::SY_RETRY_LATER,
        }
    }

    pub fn from_status(status: i32) -> Option<RejectKind> {
        Some(match status {
            ffi::SY_REJECT_UNAUTHENTICATED => RejectKind::Unauthenticated,
            ffi::SY_REJECT_EXPIRED => RejectKind::Expired,
            ffi::SY_REJECT_MALFORMED => RejectKind::Malformed,
            ffi::SY_REJECT_FORBIDDEN => RejectKind::Forbidden,
            ffi::SY_REJECT_DECRYPTION => RejectKind::Decryption,
            ffi::SY_RETRY_LATER => RejectKind::RetryLater,
            _ => return None,
        })
    }

    /// A short machine-readable name, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Unauthenticated => "unauthenticated",
            RejectKind::Expired => "expired",
            RejectKind::Malformed => "malformed",
            RejectKind::Forbidden => "forbidden",
            RejectKind::Decryption => "decryption_failed",
            RejectKind::RetryLater => "retry_later",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: RejectKind, message: impl Into<String>) -> Self {
        Rejection {
            kind,
            message: message.into(),
        }
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Unauthenticated, message)
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Expired, message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Malformed, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Forbidden, message)
    }
    /// Not now: the provider is answered 503 with `Retry-After` (ABI 1.6).
    pub fn retry_later(message: impl Into<String>) -> Self {
        Self::new(RejectKind::RetryLater, message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// The `verify` result document: the events, and (ABI 1.5) whether the
/// request is a handshake and how to answer it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyOutput {
    pub events: Vec<EventDraft>,
    /// The request is the provider checking the endpoint (Slack's
    /// `url_verification`, Meta's `hub.challenge`, …), not an event: its
    /// events are stored as handshakes, for the record, and never routed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handshake: bool,
    /// What to answer instead of the host's `{"accepted": …}` (a 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

impl VerifyOutput {
    /// Ordinary events, answered as the host answers them.
    pub fn events(events: Vec<EventDraft>) -> Self {
        VerifyOutput {
            events,
            ..Default::default()
        }
    }

    /// A handshake: recorded as `event`, answered with `answer`.
    pub fn handshake(event: EventDraft, answer: Answer) -> Self {
        VerifyOutput {
            events: vec![event],
            handshake: true,
            answer: Some(answer),
        }
    }

    /// The same, answered with `answer`.
    pub fn with_answer(mut self, answer: Option<Answer>) -> Self {
        self.answer = answer;
        self
    }
}

/// An answer a provider gives to a verified request (ABI 1.5), sent once
/// the request is stored. The host allows only a 2xx status, a body of at
/// most [`Answer::MAX_BODY`] bytes, and headers that are not about the
/// connection or the body's framing (`content-length`, `connection`, …);
/// it always adds `cache-control: no-store` and
/// `x-content-type-options: nosniff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// `text/plain; charset=utf-8` when not said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The largest body an answer may carry.
    pub const MAX_BODY: usize = 64 * 1024;

    /// `200`, `text/plain`, the text as the body: a challenge echoed.
    pub fn text(body: impl Into<String>) -> Self {
        Answer {
            status: 200,
            content_type: Some("text/plain; charset=utf-8".into()),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// `200`, `application/json`, the value as the body.
    pub fn json(value: &Value) -> Self {
        Answer {
            status: 200,
            content_type: Some("application/json".into()),
            body: value.to_string(),
            headers: Vec::new(),
        }
    }

    /// A status alone, without a body.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            content_type: None,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What `create` may hand back beside the instance (ABI 1.5): the HTTP
/// methods the source takes (`POST` alone when not said); from 1.6 the
/// headers its verification reads that carry a credential (a token, a
/// signature), whose values the host never stores or shows, whatever they
/// hold (an old, rotated token too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOutput {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_headers: Vec<String>,
    /// An action's (ABI 1.7): a batch is one operation at its destination
    /// ([`Action::BATCH_IS_ONE_OPERATION`](crate::Action::BATCH_IS_ONE_OPERATION)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch_is_one_operation: bool,
    /// A provider's (ABI 1.8): the event types it sends, each with a JSON
    /// Schema of its `data` ([`Provider::catalog`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog: Vec<EventType>,
}

/// One event type of a provider's catalog (ABI 1.8): its name as the
/// provider's events carry it (`invoiceViewed`, `entity.invoice`; the host
/// prefixes the plugin's name, as it does the events'), and a JSON Schema
/// (draft 2020-12 unless `$schema` says another) of the event's `data`,
/// written from the provider's documentation.
///
/// The host checks each stored event of the type against the schema, off
/// the acknowledgement's path, and records what does not match as drift:
/// a property the schema requires and the event lacks, a value of another
/// JSON type, a property an object the schema closes
/// (`"additionalProperties": false`) does not declare; and an event of a
/// type the catalog does not list. So close an object only where the
/// documentation lists all of it, and leave it open where the provider
/// says "the rest of the entity's properties". Rules' reads of `event.data`
/// are checked against the same schemas: a path a closed object cannot
/// have is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    /// The provider's own name for it, without the plugin's prefix.
    #[serde(rename = "type")]
    pub name: String,
    /// What it means, in a sentence; where the documentation says it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A JSON Schema of the event's `data`.
    pub schema: Value,
}

impl EventType {
    pub fn new(name: impl Into<String>, description: impl Into<String>, schema: Value) -> Self {
        EventType {
            name: name.into(),
            description: description.into(),
            schema,
        }
    }
}

/// A correctly signed sample request, produced by a provider's `sample`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleRequest {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn default_method() -> String {
    "POST".into()
}

/// Why `sample` produced nothing.
#[derive(Debug, Clone)]
pub enum SampleError {
    /// No sample of that name; the message lists the known ones.
    Unknown(String),
    Failed(String),
}

/// A provider plugin: verifies and parses incoming webhooks.
///
/// One instance serves one configured source and is called from several
/// threads at once, so it must be `Sync`.
pub trait Provider: Send + Sync + Sized + 'static {
    /// Build an instance from the source's settings (a JSON object, secrets
    /// resolved). Reject unknown keys with a message naming them.
    fn create(host: Host, config: Value) -> Result<Self, String>;

    /// Verify the request over its raw bytes and turn it into events.
    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection>;

    /// What the host calls: [`verify`](Provider::verify), answered as the
    /// host answers events. Override it (ABI 1.5) to tell handshakes from
    /// events and to give an answer of its own ([`VerifyOutput`]); check
    /// [`Host::abi`] in `create` first: a host older than 1.5 routes a
    /// handshake as an event and answers it its own way.
    fn receive(&self, request: &Request<'_>) -> Result<VerifyOutput, Rejection> {
        self.verify(request).map(VerifyOutput::events)
    }

    /// The HTTP methods this instance takes (ABI 1.5); any other is
    /// answered 405 by the host. A handshake may come as a `GET` (Meta,
    /// Dropbox) or an `OPTIONS` (CloudEvents).
    fn methods(&self) -> &[&'static str] {
        &["POST"]
    }

    /// The headers this instance's verification reads that carry a
    /// credential (ABI 1.6): the host replaces their values whole wherever
    /// a request is kept or shown (the rejections page, stored requests,
    /// logs, the API), whatever they hold. `Authorization`, `Cookie` and
    /// API-key headers always are.
    fn credential_headers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The event types this instance's provider sends, with a JSON Schema
    /// of each one's `data` (ABI 1.8; see [`EventType`]). Empty (the
    /// default): the host checks nothing, and no type is unknown.
    fn catalog(&self) -> Vec<EventType> {
        Vec::new()
    }

    /// A correctly signed sample request for a named event.
    fn sample(&self, event: &str) -> Result<SampleRequest, SampleError> {
        Err(SampleError::Unknown(format!(
            "this provider has no samples (asked for {event:?})"
        )))
    }

    /// Its provider's subscriptions (ABI 1.4): see [`SubscriptionCall`].
    /// Within `timeout`. A provider without an API for them says how they
    /// are made instead ([`SubscriptionError::Unsupported`]).
    fn subscriptions(
        &self,
        call: &SubscriptionCall,
        timeout: Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        let _ = (call, timeout);
        Err(SubscriptionError::Unsupported(
            "this provider's subscriptions are not managed by Switchyard".into(),
        ))
    }
}
