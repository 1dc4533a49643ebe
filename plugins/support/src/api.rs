//! A provider's management API, for the plugins that manage their
//! provider's subscriptions (feature `api`): a blocking JSON client whose
//! failures are [`SubscriptionError`]s, worded without a credential.
//!
//! - the API did not answer, or answered 5xx or 429: `Retryable`;
//! - any other 4xx: `Permanent`, with the start of the answer's body;
//! - no answer within the call's deadline: `Retryable`, "timed out after
//!   30 s" (the deadline the host gave the call);
//! - answers are read up to [`MAX_ANSWER`] bytes; a URL (which may carry a
//!   token in its query) is never part of a message, an error body is cut
//!   at [`MAX_SHOWN`] characters, and every credential the plugin sends
//!   ([`Api::hide`]: keys, tokens, a session and its Basic form) is
//!   scrubbed from every message — a provider's error body may echo them.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;
use switchyard_plugin_api::SubscriptionError;

/// The most of one answer read: a long list of subscriptions fits.
pub const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// The most of an error body a message shows, in characters.
pub const MAX_SHOWN: usize = 300;

/// One provider API at a base URL (`https://tripletex.no/v2`).
pub struct Api {
    client: Client,
    base: String,
    /// Its name in messages: `Teal API`.
    what: &'static str,
    /// Credentials scrubbed from every message.
    hidden: Mutex<Vec<String>>,
}

/// What an API answered: its status and its JSON (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

impl Api {
    pub fn new(base_url: &str, what: &'static str) -> Result<Api, String> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!(
                "{what}: api_url must be an http(s) URL, not {base_url:?}"
            ));
        }
        // One crypto provider for the process's rustls; another library may
        // have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("{what}: cannot make a client: {e}"))?;
        Ok(Api {
            client,
            base,
            what,
            hidden: Mutex::new(Vec::new()),
        })
    }

    /// Adds a credential to scrub from every message this API's failures
    /// make (a key, a token, a session's Basic value): kept for the API's
    /// life, which is the source's.
    pub fn hide(&self, credential: impl Into<String>) {
        let credential = credential.into();
        let mut hidden = self.hidden.lock().unwrap_or_else(|p| p.into_inner());
        if !hidden.contains(&credential) {
            hidden.push(credential);
        }
    }

    /// Hides a password and the Basic credential made of it
    /// (`base64(user:password)`, as `Authorization: Basic …` carries it).
    pub fn hide_basic(&self, user: &str, password: &str) {
        use base64::Engine as _;
        self.hide(password);
        self.hide(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
    }

    fn scrubbed(&self, message: String) -> String {
        let hidden = self.hidden.lock().unwrap_or_else(|p| p.into_inner());
        switchyard_plugin_api::redact(&message, &hidden)
    }

    /// A request to `path` (after the base URL, starting with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request within `timeout`; an answer of 2xx is `Ok`, any
    /// other is the error it means. `call` names it in messages
    /// (`POST /webhooks`).
    pub fn send(
        &self,
        call: &str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Answer, SubscriptionError> {
        self.exchange(call, request, timeout)
            .map_err(|e| e.map_message(|m| self.scrubbed(m)))
    }

    fn exchange(
        &self,
        call: &str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Answer, SubscriptionError> {
        let what = self.what;
        let failed = |e: &reqwest::Error| {
            if e.is_timeout() {
                format!("{what}: {call}: timed out after {}", seconds(timeout))
            } else {
                format!("{what}: {call}: {}", causes(e))
            }
        };
        let response = request
            .timeout(timeout)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| SubscriptionError::Retryable(failed(&e.without_url())))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .take(MAX_ANSWER)
            .read_to_end(&mut body)
            .map_err(|e| {
                let message = match e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>()) {
                    Some(r) => failed(r),
                    None => format!("{what}: {call}: {e}"),
                };
                SubscriptionError::Retryable(message)
            })?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let mut snippet: String = text.chars().take(MAX_SHOWN).collect();
            if snippet.len() < text.len() {
                snippet.push('…');
            }
            let message = format!("{what}: {call} answered {status}: {snippet}");
            return Err(match status {
                429 | 500..=599 => SubscriptionError::Retryable(message),
                _ => SubscriptionError::Permanent(message),
            });
        }
        let json = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                SubscriptionError::Permanent(format!("{what}: {call}: the answer is not JSON: {e}"))
            })?
        };
        Ok(Answer { status, json })
    }
}

/// A deadline as a message says it: `30 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    let s = (d.as_secs_f64() * 10.0).round() / 10.0;
    format!("{s} s")
}

/// An error and its causes, `: `-joined (reqwest's own says only "error
/// sending request"; the cause says "connection refused").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    // A bounded walk: error chains are short, a cycle is not possible but
    // the loop does not rely on it.
    for _ in 0..8 {
        let Some(cause) = next else { break };
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// A JSON value as an id: a string as it is, a number as its digits.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
