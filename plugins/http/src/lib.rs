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
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::http::{answer_text, http_outcome};
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
                let text = answer_text(resp);
                let out = http_outcome(status.as_u16(), retry.as_deref(), &text);
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
