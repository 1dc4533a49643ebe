//! # Slack action plugin
//!
//! Posts a message to a Slack incoming-webhook URL: the rule's `text`, and
//! optionally `blocks` (Block Kit) with `text` as the fallback. Slack's
//! rate limit (429 with `Retry-After`) and its 5xx are retried; a 410
//! (`channel_is_archived`) disables the action until enabled again; other
//! 4xx (`invalid_payload`, `no_service`, …) are permanent.

use std::time::Duration;

use reqwest::blocking::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Action, Host, Job, Outcome};
use switchyard_plugin_support::http::{answer_text, http_outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The incoming webhook: https://hooks.slack.com/services/T…/B…/…
    webhook_url: String,
    /// Text used when the rule gives none.
    #[serde(default)]
    default_text: Option<String>,
}

pub struct Slack {
    host: Host,
    client: Client,
    url: reqwest::Url,
    default_text: Option<String>,
}

impl Slack {
    /// The JSON Slack takes, from the rule's parameters.
    pub fn payload(&self, params: &Value) -> Result<Value, String> {
        let text = params
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.default_text.clone());
        let blocks = params.get("blocks").filter(|b| !b.is_null());
        if text.is_none() && blocks.is_none() {
            return Err("a Slack message needs text (or blocks) from the rule".into());
        }
        let mut body = json!({});
        if let Some(t) = text {
            body["text"] = json!(t);
        }
        if let Some(b) = blocks {
            if !b.is_array() {
                return Err("blocks must be an array of Block Kit blocks".into());
            }
            body["blocks"] = b.clone();
        }
        for key in [
            "username",
            "icon_emoji",
            "icon_url",
            "thread_ts",
            "unfurl_links",
        ] {
            if let Some(v) = params.get(key) {
                body[key] = v.clone();
            }
        }
        Ok(body)
    }
}

impl Action for Slack {
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("slack settings: {e}"))?;
        let url = reqwest::Url::parse(&c.webhook_url)
            .map_err(|_| "slack settings: webhook_url is not a URL".to_string())?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("slack settings: webhook_url must be https".into());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("slack: cannot make a client: {e}"))?;
        Ok(Slack {
            host,
            client,
            url,
            default_text: c.default_text,
        })
    }

    fn execute(&self, job: &Job, timeout: Duration) -> Outcome {
        let body = match self.payload(&job.params) {
            Ok(b) => b,
            Err(e) => return Outcome::Permanent(e),
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(
                timeout
                    .saturating_sub(Duration::from_millis(100))
                    .max(Duration::from_millis(100)),
            )
            .json(&body);
        // The attempt's trace goes on (W3C Trace Context), when there is one.
        if let Some(trace) = &job.trace {
            request = request.header("traceparent", &trace.traceparent);
        }
        let sent = request.send();
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = answer_text(resp);
                self.host.debug(&format!("Slack answered {status} {text}"));
                http_outcome(status, retry.as_deref(), &text)
            }
            // The URL holds the webhook's secret: never put it in a message.
            Err(e) if e.is_timeout() => Outcome::Retryable(format!(
                "Slack did not answer within {} ms",
                timeout.as_millis()
            )),
            Err(e) => Outcome::Retryable(format!(
                "cannot reach Slack ({})",
                if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                }
            )),
        }
    }
}

switchyard_plugin_api::export_action!("slack", Slack);

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> Slack {
        Slack::create(
            Host::detached(),
            json!({"webhook_url": "https://hooks.slack.com/services/T0/B0/x"}),
        )
        .unwrap()
    }

    #[test]
    fn payloads() {
        assert_eq!(
            slack().payload(&json!({"text": "hi"})).unwrap(),
            json!({"text": "hi"})
        );
        let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
        let p = slack()
            .payload(&json!({"text": "hi", "blocks": blocks, "icon_emoji": ":tada:"}))
            .unwrap();
        assert_eq!(p["blocks"], blocks);
        assert_eq!(p["icon_emoji"], ":tada:");
        assert!(slack().payload(&json!({})).is_err());
        assert!(slack().payload(&json!({"blocks": "x"})).is_err());
        assert!(Slack::create(Host::detached(), json!({"webhook_url": "nope"})).is_err());
    }
}
