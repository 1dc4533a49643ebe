//! A provider's management API, for the plugins that manage their
//! provider's subscriptions (feature `api`): a blocking JSON client whose
//! failures are [`SubscriptionError`]s, worded without a credential.
//!
//! - the API did not answer, or answered 5xx or 429: `Retryable`;
//! - any other 4xx: `Permanent`, with the start of the answer's body;
//! - answers are read up to [`MAX_ANSWER`] bytes; a URL (which may carry a
//!   token in its query) is never part of a message.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;
use switchyard_plugin_api::SubscriptionError;

/// The most of one answer read: a long list of subscriptions fits.
pub const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// One provider API at a base URL (`https://tripletex.no/v2`).
pub struct Api {
    client: Client,
    base: String,
    /// Its name in messages: `Teal API`.
    what: &'static str,
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
        Ok(Api { client, base, what })
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
        let what = self.what;
        let response = request
            .timeout(timeout)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| {
                SubscriptionError::Retryable(format!("{what}: {call}: {}", e.without_url()))
            })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .take(MAX_ANSWER)
            .read_to_end(&mut body)
            .map_err(|e| SubscriptionError::Retryable(format!("{what}: {call}: {e}")))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.trim().chars().take(300).collect();
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

/// A JSON value as an id: a string as it is, a number as its digits.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
