//! # HTTP action plugin
//!
//! Sends each job as an HTTP request (POST JSON by default) to a URL,
//! signed per Standard Webhooks so the receiver can verify and dedupe it:
//! `webhook-id` is the job's idempotency key (the same on every retry),
//! `webhook-timestamp` the attempt's Unix time, `webhook-signature` one
//! `v1,<base64>` per configured secret (several while rotating).
//!
//! Answers: 2xx done; 410 gone (dead, and the host pauses the action until it
//! is enabled again); 429, 502, 503, 504 retry, no sooner than `Retry-After`;
//! other 4xx permanent; other 5xx, timeouts and connection errors retry.
//!
//! The body is the rule's `body` parameter when it gives one, else
//! `{"type", "timestamp", "data"}` with the event envelope as `data`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::standard_webhooks;
use switchyard_plugin_support::{unix_now, Secret, SecretEncoding};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Standard Webhooks signing secrets (`whsec_…`); none: unsigned.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
}

fn default_method() -> String {
    "POST".into()
}

pub struct HttpAction {
    host: Host,
    client: Client,
    url: reqwest::Url,
    method: Method,
    headers: HeaderMap,
    secrets: Vec<Secret>,
}

/// Reads `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What an HTTP answer means for the job.
pub fn outcome(status: StatusCode, retry_after_header: Option<&str>, body: &str) -> Outcome {
    let code = status.as_u16();
    let snippet: String = body.chars().take(200).collect();
    let message = format!("HTTP {code} {}", snippet.trim());
    match code {
        200..=299 => Outcome::Done(Some(json!({ "status": code }))),
        410 => Outcome::Gone(message),
        429 | 502 | 503 | 504 => {
            match retry_after_header.and_then(|v| retry_after(v, SystemTime::now())) {
                Some(after) => Outcome::RetryAfter(message, after),
                None => Outcome::Retryable(message),
            }
        }
        400..=499 => Outcome::Permanent(message),
        _ => Outcome::Retryable(message),
    }
}

impl HttpAction {
    fn body(job: &Job) -> Value {
        match job.params.get("body") {
            Some(body) => body.clone(),
            None => json!({
                "type": job.event.get("type").cloned().unwrap_or(Value::Null),
                "timestamp": job.event.get("time").cloned().unwrap_or(Value::Null),
                "data": job.event,
            }),
        }
    }
}

impl Action for HttpAction {
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("http settings: {e}"))?;
        let url = reqwest::Url::parse(&c.url)
            .map_err(|e| format!("http settings: url {:?}: {e}", c.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "http settings: url must be http or https, not {}",
                url.scheme()
            ));
        }
        let method = Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("http settings: method {:?} is not an HTTP method", c.method))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("http settings: header name {k:?} is not valid"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("http settings: header {k} has a value that is not valid"))?;
            headers.insert(name, value);
        }
        let secrets = c
            .secret
            .iter()
            .chain(c.secrets.iter())
            .map(|s| Secret::decode(s, SecretEncoding::Whsec, "http settings: secret"))
            .collect::<Result<Vec<_>, _>>()?;
        // One crypto provider for the process's rustls; another library may
        // have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http: cannot make a client: {e}"))?;
        Ok(HttpAction {
            host,
            client,
            url,
            method,
            headers,
            secrets,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let body = match serde_json::to_vec(&Self::body(job)) {
            Ok(b) => b,
            Err(e) => return Outcome::Permanent(format!("cannot encode the body: {e}")),
        };
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .timeout(
                timeout
                    .saturating_sub(Duration::from_millis(100))
                    .max(Duration::from_millis(100)),
            )
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &job.idempotency_key);
        if !self.secrets.is_empty() {
            let ts = unix_now();
            let signatures: Vec<String> = self
                .secrets
                .iter()
                .map(|s| standard_webhooks::sign(s, &job.idempotency_key, ts, &body))
                .collect();
            request = request
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signatures.join(" "));
        }
        match request.body(body).send() {
            Ok(resp) => {
                let status = resp.status();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = resp.text().unwrap_or_default();
                let out = outcome(status, retry.as_deref(), &text);
                self.host
                    .debug(&format!("{} → HTTP {}", self.url, status.as_u16()));
                out
            }
            Err(e) if e.is_timeout() => Outcome::Retryable(format!(
                "no answer from {} within {} ms",
                self.url,
                timeout.as_millis()
            )),
            Err(e) => Outcome::Retryable(format!("cannot reach {}: {}", self.url, error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

switchyard_plugin_api::export_action!("http", HttpAction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert!(matches!(outcome(s(200), None, ""), Outcome::Done(_)));
        assert!(matches!(outcome(s(204), None, ""), Outcome::Done(_)));
        assert!(matches!(outcome(s(410), None, ""), Outcome::Gone(_)));
        assert_eq!(
            outcome(s(429), Some("7"), "slow down"),
            Outcome::RetryAfter("HTTP 429 slow down".into(), Duration::from_secs(7))
        );
        assert!(matches!(outcome(s(503), None, ""), Outcome::Retryable(_)));
        assert!(matches!(outcome(s(500), None, ""), Outcome::Retryable(_)));
        assert!(matches!(outcome(s(400), None, ""), Outcome::Permanent(_)));
        assert!(matches!(
            outcome(s(404), Some("5"), ""),
            Outcome::Permanent(_)
        ));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn settings_are_checked() {
        for (config, needle) in [
            (json!({}), "url"),
            (json!({"url": "ftp://x"}), "http or https"),
            (json!({"url": "http://x", "method": "P OST"}), "method"),
            (json!({"url": "http://x", "secret": "whsec_!!"}), "secret"),
            (json!({"url": "http://x", "colour": 1}), "colour"),
        ] {
            let err = HttpAction::create(Host::detached(), config).err().unwrap();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
