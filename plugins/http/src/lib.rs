//! # HTTP action plugin
//!
//! Sends each job as an HTTP request (POST JSON by default) to a URL,
//! signed per Standard Webhooks so the receiver can verify and dedupe it:
//! `webhook-id` is the job's idempotency key (the same on every retry),
//! `webhook-timestamp` the attempt's Unix time, `webhook-signature` one
//! `v1,<base64>` per configured secret (several while rotating).
//!
//! With the host tracing, each request carries the attempt's `traceparent`.
//!
//! Answers: 2xx done; 410 gone (dead, and the host pauses the action until it
//! is enabled again); 429, 502, 503, 504 retry, no sooner than `Retry-After`
//! (a 429, or one with `Retry-After`, also slows the whole action);
//! other 4xx permanent; other 5xx, timeouts and connection errors retry.
//!
//! The body is the rule's `body` parameter when it gives one, else
//! `{"type", "timestamp", "data"}` with the event envelope as `data`.
//!
//! It takes jobs in batch calls (ABI 1.3 `execute_batch`): the requests of a
//! batch go out at once, over one async client whose connections are kept
//! alive between calls, on a runtime of the plugin's own (one thread); the
//! call returns when every request has its answer or its deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Client;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::http::{http_outcome, MAX_ANSWER_BYTES};
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
    /// The client's runtime; a call's requests are driven by its own thread
    /// (`block_on`), their connections by the runtime's.
    runtime: tokio::runtime::Runtime,
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
        // A thread of its own keeps the connections' tasks going between
        // calls: an answer cut short closes its connection at once, and an
        // idle connection the target closed is noticed before it is reused.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-http")
            .enable_all()
            .build()
            .map_err(|e| format!("http: cannot start its runtime: {e}"))?;
        Ok(HttpAction {
            host,
            runtime,
            client,
            url,
            method,
            headers,
            secrets,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        self.runtime.block_on(self.send(job, timeout))
    }

    const BATCHES: bool = true;

    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        self.runtime
            .block_on(join_all(jobs.iter().map(|job| self.send(job, timeout))))
    }
}

impl HttpAction {
    /// Sends one job's request and tells what its answer means.
    async fn send(&self, job: &Job, timeout: Duration) -> Outcome {
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
        // The attempt's trace goes on to the destination (W3C Trace Context).
        if let Some(trace) = &job.trace {
            request = request.header("traceparent", &trace.traceparent);
            if let Some(state) = &trace.tracestate {
                request = request.header("tracestate", state);
            }
        }
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
        match request.body(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = answer_start(resp).await;
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

/// The start of an answer's body as text: at most [`MAX_ANSWER_BYTES`],
/// the rest never read (the connection is then closed, not reused).
async fn answer_start(mut resp: reqwest::Response) -> String {
    let max = MAX_ANSWER_BYTES as usize;
    let mut kept = Vec::new();
    while kept.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(max - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
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
