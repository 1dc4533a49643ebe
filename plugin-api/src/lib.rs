//! # switchyard-plugin-api
//!
//! The stable plugin ABI of Switchyard, and the safe Rust side of it.
//!
//! What this crate owns:
//! - [`ffi`]: the `repr(C)` mirror of `include/switchyard_plugin.h`, which is
//!   the source of truth for the ABI (a plugin may be written in C against it).
//! - The safe traits a Rust plugin implements: [`Provider`] (verify and parse
//!   incoming webhooks, and optionally manage its provider's subscriptions)
//!   and [`Action`] (carry out a job).
//! - The export macros [`export_provider!`] and [`export_action!`], which build
//!   the plugin table and wrap every entry point in `catch_unwind`, so a panic
//!   in a plugin becomes an error status for that one call.
//!
//! It depends on nothing of the daemon; the daemon's plugin host depends on it.

pub mod ffi;
mod subscription;

#[doc(hidden)]
pub mod export;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use serde_json;
use serde_json::Value;
pub use subscription::{
    Subscription, SubscriptionCall, SubscriptionError, SubscriptionState, SubscriptionsOutput,
};

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

/// Splits and percent-decodes a query string (`a=1&b=x%20y`, `+` is a
/// space), as `application/x-www-form-urlencoded`.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters: a value
/// safe in a query string or a path segment.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// What a credential is replaced with wherever it would be shown.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of each credential, as is or
/// percent-encoded, replaced by [`REDACTED`]. Credentials shorter than four
/// bytes are left (they would blot out ordinary words). The one scrubber of
/// the host and the plugins: a message built from what a provider's API
/// answered, a stored request, a log line.
pub fn redact(text: &str, credentials: &[impl AsRef<str>]) -> String {
    let mut out = text.to_string();
    for c in credentials.iter().map(AsRef::as_ref) {
        if c.len() < 4 {
            continue;
        }
        if out.contains(c) {
            out = out.replace(c, REDACTED);
        }
        let encoded = percent_encode(c);
        if encoded != c && out.contains(encoded.as_str()) {
            out = out.replace(encoded.as_str(), REDACTED);
        }
    }
    out
}

/// Whether a credential (of four bytes or more) appears in `text`, as is or
/// percent-encoded.
pub fn carries_credential(text: &str, credentials: &[impl AsRef<str>]) -> bool {
    credentials.iter().map(AsRef::as_ref).any(|c| {
        if c.len() < 4 {
            return false;
        }
        if text.contains(c) {
            return true;
        }
        let encoded = percent_encode(c);
        encoded != c && text.contains(encoded.as_str())
    })
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
}

/// A job handed to an action plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Stable across retries: event id + rule + call index.
    pub idempotency_key: String,
    pub action: String,
    pub rule: String,
    pub attempt: u32,
    pub params: Value,
    pub event: Value,
}

/// What an action made of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; an optional result object is recorded with the job.
    Done(Option<Value>),
    /// Failed; worth trying again later.
    Retryable(String),
    /// Failed; worth trying again, not before this long (a `Retry-After`).
    RetryAfter(String, Duration),
    /// Failed; will never succeed as it is.
    Permanent(String),
    /// Failed for good, and the target says it is gone (HTTP 410): the host
    /// pauses this action until someone enables it again.
    Gone(String),
}

/// The JSON an action's failure may carry beside its message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailureDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
}

/// One job's outcome in `execute_batch`'s answer (ABI 1.3):
/// `{"status": "done" | "retryable" | "permanent", "message", "result",
/// "retry_after_ms", "disable"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub status: BatchStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(flatten)]
    pub detail: FailureDetail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Done,
    Retryable,
    Permanent,
}

/// `execute_batch`'s answer: one outcome per job, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchOutput {
    pub outcomes: Vec<BatchOutcome>,
}

impl From<Outcome> for BatchOutcome {
    fn from(outcome: Outcome) -> BatchOutcome {
        let (status, message, result, detail) = match outcome {
            Outcome::Done(result) => (
                BatchStatus::Done,
                String::new(),
                result,
                FailureDetail::default(),
            ),
            Outcome::Retryable(m) => (BatchStatus::Retryable, m, None, FailureDetail::default()),
            Outcome::RetryAfter(m, after) => (
                BatchStatus::Retryable,
                m,
                None,
                FailureDetail {
                    retry_after_ms: Some(after.as_millis().min(u64::MAX as u128) as u64),
                    disable: false,
                },
            ),
            Outcome::Permanent(m) => (BatchStatus::Permanent, m, None, FailureDetail::default()),
            Outcome::Gone(m) => (
                BatchStatus::Permanent,
                m,
                None,
                FailureDetail {
                    retry_after_ms: None,
                    disable: true,
                },
            ),
        };
        BatchOutcome {
            status,
            message,
            result,
            detail,
        }
    }
}

impl From<BatchOutcome> for Outcome {
    fn from(b: BatchOutcome) -> Outcome {
        match (b.status, b.detail.retry_after_ms, b.detail.disable) {
            (BatchStatus::Done, ..) => Outcome::Done(b.result),
            (BatchStatus::Retryable, Some(ms), _) => {
                Outcome::RetryAfter(b.message, Duration::from_millis(ms))
            }
            (BatchStatus::Retryable, None, _) => Outcome::Retryable(b.message),
            (BatchStatus::Permanent, _, true) => Outcome::Gone(b.message),
            (BatchStatus::Permanent, _, false) => Outcome::Permanent(b.message),
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

/// A handle on the host's services, given to `create`. Cheap to copy, and
/// safe to use from any thread for as long as the instance lives.
#[derive(Clone, Copy)]
pub struct Host {
    raw: *const ffi::SyHost,
}

// SAFETY: the host guarantees the sy_host table and its log callback are
// thread-safe and outlive the instance (see the header).
unsafe impl Send for Host {}
unsafe impl Sync for Host {}

impl Host {
    /// # Safety
    /// `raw` must be null or a valid `sy_host` that outlives every use.
    pub unsafe fn from_raw(raw: *const ffi::SyHost) -> Host {
        Host { raw }
    }

    /// A host that drops every message (for unit tests of plugin code).
    pub fn detached() -> Host {
        Host {
            raw: std::ptr::null(),
        }
    }

    /// The host's ABI version `(major, minor)`, or `None` from a host of
    /// ABI 1.1 or older (which did not say) and from a detached host.
    pub fn abi(&self) -> Option<(u16, u16)> {
        if self.raw.is_null() {
            return None;
        }
        // SAFETY: see from_raw. Every sy_host starts with struct_size and
        // holds at least the 1.0 fields; only what struct_size covers is read.
        let host: ffi::SyHost = unsafe {
            let size = std::ptr::read(self.raw as *const usize);
            if size < ffi::HOST_V1_0_SIZE {
                return None;
            }
            ffi::read_prefix(self.raw as *const u8, size)
        };
        let needed = std::mem::offset_of!(ffi::SyHost, abi_minor) + 2;
        (host.struct_size >= needed).then_some((host.abi_major, host.abi_minor))
    }

    pub fn log(&self, level: u32, message: &str) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: see from_raw. The 1.0 fields are read in place, without a
        // reference to a struct that may be shorter than ours.
        unsafe {
            let (log, ctx) = ((*self.raw).log, (*self.raw).ctx);
            log(ctx, level, message.as_ptr(), message.len());
        }
    }
    pub fn error(&self, message: &str) {
        self.log(ffi::LOG_ERROR, message)
    }
    pub fn warn(&self, message: &str) {
        self.log(ffi::LOG_WARN, message)
    }
    pub fn info(&self, message: &str) {
        self.log(ffi::LOG_INFO, message)
    }
    pub fn debug(&self, message: &str) {
        self.log(ffi::LOG_DEBUG, message)
    }
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

/// An action plugin: carries out jobs decided by rules.
pub trait Action: Send + Sync + Sized + 'static {
    fn create(host: Host, config: Value) -> Result<Self, String>;

    /// Carry out a job within `timeout`. The same job may arrive again after
    /// a retryable failure or a crash: use `job.idempotency_key` to dedupe.
    fn execute(&self, job: &Job, timeout: Duration) -> Outcome;

    /// Whether the host should hand this action every ready job in one
    /// [`execute_batch`](Action::execute_batch) call (ABI 1.3) rather than
    /// one `execute` call per job. Worth it when many jobs at once cost
    /// less than one by one (one write and one sync for many lines).
    const BATCHES: bool = false;

    /// Carry out several jobs within `timeout` in all, one outcome per job,
    /// in order. Called only when [`BATCHES`](Action::BATCHES) is true.
    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        jobs.iter().map(|job| self.execute(job, timeout)).collect()
    }
}

/// Exports a [`Provider`] implementation as a Switchyard plugin.
///
/// ```ignore
/// switchyard_plugin_api::export_provider!("tight", TightProvider);
/// ```
#[macro_export]
macro_rules! export_provider {
    ($name:literal, $ty:ty) => {
        #[no_mangle]
        pub extern "C" fn switchyard_plugin_v1() -> *const $crate::ffi::SyPlugin {
            static TABLE: $crate::ffi::SyPlugin = $crate::ffi::SyPlugin {
                struct_size: ::std::mem::size_of::<$crate::ffi::SyPlugin>(),
                abi_major: $crate::ffi::ABI_MAJOR,
                abi_minor: $crate::ffi::ABI_MINOR,
                role: $crate::ffi::ROLE_PROVIDER,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr()
                    as *const ::std::ffi::c_char,
                create: Some($crate::export::create_provider::<$ty>),
                destroy: Some($crate::export::destroy::<$ty>),
                verify: Some($crate::export::verify::<$ty>),
                execute: None,
                sample: Some($crate::export::sample::<$ty>),
                execute_batch: None,
                subscriptions: Some($crate::export::subscriptions::<$ty>),
            };
            &TABLE
        }
    };
}

/// Exports an [`Action`] implementation as a Switchyard plugin.
///
/// ```ignore
/// switchyard_plugin_api::export_action!("file", FileAction);
/// ```
#[macro_export]
macro_rules! export_action {
    ($name:literal, $ty:ty) => {
        #[no_mangle]
        pub extern "C" fn switchyard_plugin_v1() -> *const $crate::ffi::SyPlugin {
            static TABLE: $crate::ffi::SyPlugin = $crate::ffi::SyPlugin {
                struct_size: ::std::mem::size_of::<$crate::ffi::SyPlugin>(),
                abi_major: $crate::ffi::ABI_MAJOR,
                abi_minor: $crate::ffi::ABI_MINOR,
                role: $crate::ffi::ROLE_ACTION,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr()
                    as *const ::std::ffi::c_char,
                create: Some($crate::export::create_action::<$ty>),
                destroy: Some($crate::export::destroy::<$ty>),
                verify: None,
                execute: Some($crate::export::execute::<$ty>),
                sample: None,
                execute_batch: if <$ty as $crate::Action>::BATCHES {
                    Some($crate::export::execute_batch::<$ty>)
                } else {
                    None
                },
                subscriptions: None,
            };
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_percent_decoded() {
        let pairs = parse_query("token=a%2Fb+c&x=&flag&bad=%zz&end=%4");
        assert_eq!(
            pairs,
            vec![
                ("token".into(), "a/b c".into()),
                ("x".into(), "".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        assert_eq!(percent_encode("aZ9-_.~"), "aZ9-_.~");
        assert_eq!(percent_encode("a/b c+d=é"), "a%2Fb%20c%2Bd%3D%C3%A9");
        let round: Vec<_> = parse_query(&format!("t={}", percent_encode("s3cret tok/+&=")));
        assert_eq!(round, vec![("t".to_string(), "s3cret tok/+&=".to_string())]);
    }

    #[test]
    fn the_verify_document_of_1_5_only_adds() {
        // A document as every minor before 1.5 wrote it reads as events.
        let old: VerifyOutput =
            serde_json::from_str(r#"{"events":[{"type":"ping","data":{}}]}"#).unwrap();
        assert_eq!(
            old,
            VerifyOutput::events(vec![EventDraft::new("ping", serde_json::json!({}))])
        );
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"events":[{"type":"ping","data":{}}]}"#
        );
        let shake = VerifyOutput::handshake(
            EventDraft::new("handshake.slack", serde_json::json!({})),
            Answer::text("c").header("X-A", "1"),
        );
        assert_eq!(
            serde_json::to_value(&shake).unwrap(),
            serde_json::json!({"events": [{"type": "handshake.slack", "data": {}}],
                "handshake": true,
                "answer": {"status": 200, "content_type": "text/plain; charset=utf-8",
                           "body": "c", "headers": [["X-A", "1"]]}})
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let headers = [("tight-verification", &b" tok "[..])];
        let req = Request {
            method: "POST",
            path: "",
            query: "",
            headers: &headers,
            remote_addr: "",
            body: b"",
        };
        assert_eq!(req.header_str("Tight-Verification"), Some("tok"));
        assert_eq!(req.header("missing"), None);
    }
}
