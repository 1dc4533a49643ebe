//! Teal's webhooks API (seed 002): the source's `[subscription]` settings
//! made real at Teal.
//!
//! - `POST /webhooks` `{name, events, url, signing_secret?, encryption_key?,
//!   config: {include_payload}}` → `{webhook_id, created_at}`;
//! - `GET /webhooks?offset&limit` lists them; `DELETE /webhooks/{id}`;
//! - the API key in `X-API-KEY`.
//!
//! A Teal webhook carries several events, so the source declares one: its
//! events, `include_payload`, and the source's own `signing_secret` and
//! `encryption_key` (the ones it verifies with: nothing to copy by hand).
//! Teal has no disabled state: every webhook it lists is active.
//!
//! The list's envelope is not documented [I]: a bare array, or an array
//! under `webhooks`, `data`, `items`, `results` or `values`, is read; an
//! item's id is `webhook_id` or `id`; `include_payload` may be `true` or
//! `"true"` (the docs' example).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Subscription, SubscriptionCall, SubscriptionError};
use switchyard_plugin_support::api::{id_text, Api};
use switchyard_plugin_support::percent_encode;

/// The page size asked of `GET /webhooks`, and the most pages read.
const PAGE: usize = 100;
const PAGES: usize = 100;

/// `[sources.NAME.subscription]` of a Teal source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Teal's API base URL, as Teal gives it to you.
    api_url: String,
    /// The API key, sent as `X-API-KEY`.
    api_key: String,
    /// The events to subscribe to.
    #[serde(default = "default_events")]
    events: Vec<String>,
    /// Whether deliveries carry the submitted data (`payload`).
    #[serde(default)]
    include_payload: bool,
    /// The webhook's label at Teal.
    #[serde(default = "default_name")]
    name: String,
}

fn default_events() -> Vec<String> {
    vec!["user-payroll-submitted".into()]
}

fn default_name() -> String {
    "switchyard".into()
}

/// A source's subscription at Teal: its settings, its API, and the secrets
/// the source verifies with (given to Teal on create).
pub struct Subscriptions {
    settings: Settings,
    api: Api,
    signing_secret: Option<String>,
    encryption_key: Option<String>,
}

impl Subscriptions {
    pub fn new(
        settings: Settings,
        signing_secret: Option<String>,
        encryption_key: Option<String>,
    ) -> Result<Subscriptions, String> {
        if settings.events.is_empty() || settings.events.iter().any(|e| e.trim().is_empty()) {
            return Err("teal settings: subscription.events must name at least one event".into());
        }
        if settings.api_key.is_empty() {
            return Err("teal settings: subscription.api_key is empty".into());
        }
        let api = Api::new(&settings.api_url, "Teal API")
            .map_err(|e| format!("teal settings: subscription: {e}"))?;
        // What this source sends Teal, never shown back.
        api.hide(settings.api_key.as_str());
        for s in signing_secret.iter().chain(&encryption_key) {
            api.hide(s.as_str());
        }
        Ok(Subscriptions {
            settings,
            api,
            signing_secret,
            encryption_key,
        })
    }

    pub fn call(
        &self,
        call: &SubscriptionCall,
        timeout: Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        match call {
            SubscriptionCall::Desired { target_url } => Ok(vec![self.desired(target_url)]),
            SubscriptionCall::List => self.list(deadline),
            SubscriptionCall::Create { subscription } => {
                let mut body = json!({
                    "name": subscription.name.clone().unwrap_or_else(|| self.settings.name.clone()),
                    "events": subscription.events,
                    "url": subscription.target_url,
                    "config": {"include_payload": self.settings.include_payload},
                });
                if let Some(s) = &self.signing_secret {
                    body["signing_secret"] = json!(s);
                }
                if let Some(k) = &self.encryption_key {
                    body["encryption_key"] = json!(k);
                }
                let request = self.authed(reqwest::Method::POST, "/webhooks").json(&body);
                let answer = self.api.send("POST /webhooks", request, left())?;
                let id = answer
                    .json
                    .get("webhook_id")
                    .or_else(|| answer.json.get("id"))
                    .and_then(id_text)
                    .ok_or_else(|| {
                        SubscriptionError::Permanent(
                            "Teal API: POST /webhooks answered without a webhook_id".into(),
                        )
                    })?;
                let mut made = subscription.clone();
                made.id = Some(id);
                Ok(vec![made])
            }
            SubscriptionCall::Delete { id } => {
                let path = format!("/webhooks/{}", percent_encode(id));
                let request = self.authed(reqwest::Method::DELETE, &path);
                self.api.send(&format!("DELETE {path}"), request, left())?;
                Ok(Vec::new())
            }
            SubscriptionCall::Enable { .. } => Err(SubscriptionError::Unsupported(
                "Teal webhooks have no disabled state to switch off".into(),
            )),
        }
    }

    fn desired(&self, target_url: &str) -> Subscription {
        let mut events = self.settings.events.clone();
        events.sort();
        events.dedup();
        Subscription {
            id: None,
            events,
            target_url: target_url.to_string(),
            state: Default::default(),
            status: String::new(),
            name: Some(self.settings.name.clone()),
            spec: json!({"include_payload": self.settings.include_payload}),
            revision: None,
        }
    }

    fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.api
            .request(method, path)
            .header("X-API-KEY", &self.settings.api_key)
    }

    fn list(&self, deadline: Instant) -> Result<Vec<Subscription>, SubscriptionError> {
        let mut found = Vec::new();
        for page in 0..PAGES {
            let path = format!("/webhooks?offset={}&limit={PAGE}", page * PAGE);
            let request = self.authed(reqwest::Method::GET, &path);
            let answer = self.api.send(
                "GET /webhooks",
                request,
                deadline.saturating_duration_since(Instant::now()),
            )?;
            let items = items(&answer.json).ok_or_else(|| {
                SubscriptionError::Permanent(
                    "Teal API: GET /webhooks: no list in the answer".into(),
                )
            })?;
            let n = items.len();
            found.extend(
                items
                    .iter()
                    .filter_map(|i| webhook(i, self.settings.include_payload)),
            );
            if n < PAGE {
                break;
            }
        }
        Ok(found)
    }
}

/// The list in `GET /webhooks`'s answer.
fn items(answer: &Value) -> Option<&Vec<Value>> {
    if let Value::Array(a) = answer {
        return Some(a);
    }
    ["webhooks", "data", "items", "results", "values"]
        .iter()
        .find_map(|k| answer.get(k).and_then(Value::as_array))
}

/// One listed webhook. When Teal does not show its `include_payload`, it
/// is taken to be as declared (`declared`): what cannot be seen is not a
/// difference to replace the webhook for.
fn webhook(item: &Value, declared: bool) -> Option<Subscription> {
    let id = item
        .get("webhook_id")
        .or_else(|| item.get("id"))
        .and_then(id_text)?;
    let mut events: Vec<String> = item
        .get("events")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    events.sort();
    events.dedup();
    let include_payload = match item.pointer("/config/include_payload") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => declared,
    };
    Some(Subscription {
        id: Some(id),
        events,
        target_url: item
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        state: Default::default(),
        status: String::new(),
        name: item.get("name").and_then(Value::as_str).map(str::to_owned),
        spec: json!({"include_payload": include_payload}),
        revision: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_webhooks_read_in_every_documented_shape() {
        let one = json!({"webhook_id": "wh_1", "name": "switchyard", "url": "https://x/hooks/teal",
            "events": ["user-payroll-submitted"], "config": {"include_payload": "true"}});
        for answer in [
            json!([one.clone()]),
            json!({"webhooks": [one.clone()]}),
            json!({"data": [one]}),
        ] {
            let list: Vec<_> = items(&answer)
                .unwrap()
                .iter()
                .filter_map(|i| webhook(i, false))
                .collect();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].id.as_deref(), Some("wh_1"));
            assert_eq!(list[0].spec, json!({"include_payload": true}));
        }
        assert!(webhook(&json!({"url": "no id"}), false).is_none());
        let unseen = webhook(&json!({"id": 7, "url": "u", "events": []}), true).unwrap();
        assert_eq!(unseen.spec, json!({"include_payload": true}));
    }
}
