//! Tripletex's event subscriptions (seed 003): the source's
//! `[subscription]` settings made real at Tripletex.
//!
//! - one subscription per event: `POST /event/subscription` `{event,
//!   targetUrl, fields?, authHeaderName?, authHeaderValue?,
//!   hmacSharedSecret?}`; `GET /event/subscription` lists them with their
//!   `status`; `DELETE /event/subscription/{id}`;
//! - a subscription whose deliveries failed for a week is
//!   `DISABLED_TOO_MANY_ERRORS` (state `failing`); `PUT
//!   /event/subscription/{id}` with `status: ACTIVE` switches it on again.
//!   Other `DISABLED*` statuses are `disabled`: reported, left alone.
//! - API authentication (Tripletex's "Authentication and tokens"): the
//!   consumer and employee tokens make a session token with `PUT
//!   /token/session/:create`, kept until the day before it expires; every
//!   other call is Basic auth, user = the company id (`0`, the employee's
//!   own), password = the session token. A 401 makes a new session once.
//!
//! The callback's authentication is the source's own (`auth`): the header
//! Tripletex sends, the HMAC secret, or the Basic credentials or token put
//! into the target URL. Event names are compared in lower case (Tripletex
//! writes `closeGroup.create` and `closegroup.create`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{
    percent_encode, Subscription, SubscriptionCall, SubscriptionError, SubscriptionState,
};
use switchyard_plugin_support::api::{id_text, Api};

/// The page size asked of `GET /event/subscription`, and the most pages read.
const PAGE: usize = 1000;
const PAGES: usize = 20;
/// How long a session token is asked for.
const SESSION_DAYS: i64 = 2;

/// `[sources.NAME.subscription]` of a Tripletex source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Production `https://tripletex.no/v2` (the default); the test
    /// environment is `https://api.tripletex.io/v2`.
    #[serde(default = "default_api_url")]
    api_url: String,
    /// The integration's consumer token and the customer's employee token.
    consumer_token: String,
    employee_token: String,
    /// The company whose events: 0 = the employee's own (an accountant's
    /// client company by its id).
    #[serde(default)]
    company_id: u64,
    /// The events to subscribe to, one subscription each.
    events: Vec<String>,
    /// The object's fields each delivery carries (API2 `fields` syntax).
    #[serde(default)]
    fields: Option<String>,
}

fn default_api_url() -> String {
    "https://tripletex.no/v2".into()
}

/// How Tripletex authenticates its callbacks: the source's `auth`.
pub enum Callback {
    Header { name: String, value: String },
    Basic { username: String, password: String },
    Token { param: String, token: String },
    Hmac { secret: String },
}

pub struct Subscriptions {
    settings: Settings,
    api: Api,
    callback: Callback,
    /// The session token and the day it expires (`YYYY-MM-DD`).
    session: Mutex<Option<(String, time::Date)>>,
}

fn refused(message: String) -> SubscriptionError {
    SubscriptionError::Permanent(message)
}

impl Subscriptions {
    pub fn new(settings: Settings, callback: Callback) -> Result<Subscriptions, String> {
        if settings.events.is_empty() || settings.events.iter().any(|e| e.trim().is_empty()) {
            return Err(
                "tripletex settings: subscription.events must name at least one event".into(),
            );
        }
        if settings.consumer_token.is_empty() || settings.employee_token.is_empty() {
            return Err(
                "tripletex settings: subscription needs consumer_token and employee_token".into(),
            );
        }
        let api = Api::new(&settings.api_url, "Tripletex API")
            .map_err(|e| format!("tripletex settings: subscription: {e}"))?;
        // What this source sends Tripletex, never shown back: the tokens
        // that make a session, and what its callbacks are to carry.
        api.hide(settings.consumer_token.as_str());
        api.hide(settings.employee_token.as_str());
        match &callback {
            Callback::Header { value, .. } => api.hide(value.as_str()),
            Callback::Basic { username, password } => api.hide_basic(username, password),
            Callback::Token { token, .. } => api.hide(token.as_str()),
            Callback::Hmac { secret } => api.hide(secret.as_str()),
        }
        Ok(Subscriptions {
            settings,
            api,
            callback,
            session: Mutex::new(None),
        })
    }

    pub fn call(
        &self,
        call: &SubscriptionCall,
        timeout: Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        let deadline = Instant::now() + timeout;
        match call {
            SubscriptionCall::Desired { target_url } => Ok(self.desired(target_url)),
            SubscriptionCall::List => self.list(deadline),
            SubscriptionCall::Create { subscription } => {
                let event = subscription.events.first().ok_or_else(|| {
                    refused("a Tripletex subscription is for one event; none given".into())
                })?;
                let mut body = json!({"event": event, "targetUrl": subscription.target_url});
                if let Some(fields) = self.fields() {
                    body["fields"] = json!(fields);
                }
                self.add_auth(&mut body);
                let answer =
                    self.send(Method::POST, "/event/subscription", Some(&body), deadline)?;
                let made = answer
                    .get("value")
                    .and_then(subscription_of)
                    .ok_or_else(|| {
                        refused(
                            "Tripletex API: POST /event/subscription answered no subscription"
                                .into(),
                        )
                    })?;
                Ok(vec![made])
            }
            SubscriptionCall::Delete { id } => {
                let path = format!("/event/subscription/{}", percent_encode(id));
                self.send(Method::DELETE, &path, None, deadline)?;
                Ok(Vec::new())
            }
            SubscriptionCall::Enable { id } => {
                let path = format!("/event/subscription/{}", percent_encode(id));
                let got = self.send(Method::GET, &path, None, deadline)?;
                let mut body = got
                    .get("value")
                    .filter(|v| v.is_object())
                    .cloned()
                    .ok_or_else(|| {
                        refused(format!("Tripletex API: GET {path}: no subscription"))
                    })?;
                body["status"] = json!("ACTIVE");
                self.add_auth(&mut body);
                let answer = self.send(Method::PUT, &path, Some(&body), deadline)?;
                let now = answer
                    .get("value")
                    .and_then(subscription_of)
                    .ok_or_else(|| {
                        refused(format!(
                            "Tripletex API: PUT {path} answered no subscription"
                        ))
                    })?;
                Ok(vec![now])
            }
        }
    }

    fn fields(&self) -> Option<&str> {
        self.settings.fields.as_deref().filter(|f| !f.is_empty())
    }

    /// The callback's credentials, as Tripletex takes them on a subscription.
    fn add_auth(&self, body: &mut Value) {
        match &self.callback {
            Callback::Header { name, value } => {
                body["authHeaderName"] = json!(name);
                body["authHeaderValue"] = json!(value);
            }
            Callback::Hmac { secret } => body["hmacSharedSecret"] = json!(secret),
            // In the target URL.
            Callback::Basic { .. } | Callback::Token { .. } => {}
        }
    }

    /// The target URL with the callback's credentials in it (Basic, token).
    fn target(&self, base: &str) -> String {
        match &self.callback {
            Callback::Basic { username, password } => match base.split_once("://") {
                Some((scheme, rest)) => format!(
                    "{scheme}://{}:{}@{rest}",
                    percent_encode(username),
                    percent_encode(password)
                ),
                None => base.to_string(),
            },
            Callback::Token { param, token } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!(
                    "{base}{sep}{}={}",
                    percent_encode(param),
                    percent_encode(token)
                )
            }
            Callback::Header { .. } | Callback::Hmac { .. } => base.to_string(),
        }
    }

    fn desired(&self, target_url: &str) -> Vec<Subscription> {
        let target = self.target(target_url);
        let mut events: Vec<String> = self
            .settings
            .events
            .iter()
            .map(|e| e.trim().to_ascii_lowercase())
            .collect();
        events.sort();
        events.dedup();
        events
            .into_iter()
            .map(|event| Subscription {
                id: None,
                events: vec![event],
                target_url: target.clone(),
                state: SubscriptionState::Active,
                status: String::new(),
                name: None,
                spec: json!({"fields": self.fields().unwrap_or("")}),
                revision: None,
            })
            .collect()
    }

    fn list(&self, deadline: Instant) -> Result<Vec<Subscription>, SubscriptionError> {
        let mut found = Vec::new();
        for page in 0..PAGES {
            let path = format!("/event/subscription?from={}&count={PAGE}", page * PAGE);
            let answer = self.send(Method::GET, &path, None, deadline)?;
            let values = answer
                .get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    refused(
                        "Tripletex API: GET /event/subscription: no values in the answer".into(),
                    )
                })?;
            found.extend(
                values
                    .iter()
                    .filter_map(subscription_of)
                    .map(|s| self.seen_as_declared(s)),
            );
            if values.len() < PAGE {
                break;
            }
        }
        Ok(found)
    }

    /// A subscription whose `fields` Tripletex does not show is taken to
    /// have the declared ones: what cannot be seen is not a difference.
    fn seen_as_declared(&self, mut s: Subscription) -> Subscription {
        if s.spec.get("fields").is_none() {
            s.spec = json!({"fields": self.fields().unwrap_or("")});
        }
        s
    }

    /// A call with the session's Basic auth; a 401 makes a new session and
    /// tries once more.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, SubscriptionError> {
        let name = format!("{method} {}", path.split('?').next().unwrap_or(path));
        for fresh in [false, true] {
            let token = self.session(fresh, deadline)?;
            let mut request = self
                .api
                .request(method.clone(), path)
                .basic_auth(self.settings.company_id.to_string(), Some(token));
            if let Some(body) = body {
                request = request.json(body);
            }
            match self.api.send(&name, request, left(deadline)) {
                Err(SubscriptionError::Permanent(m)) if !fresh && m.contains(" answered 401") => {
                    continue
                }
                other => return other.map(|a| a.json),
            }
        }
        unreachable!("the second try returns")
    }

    /// The session token: the one kept while it has a day left, else a new one.
    fn session(&self, fresh: bool, deadline: Instant) -> Result<String, SubscriptionError> {
        let today = time::OffsetDateTime::now_utc().date();
        let mut kept = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires)) = kept.as_ref() {
            if !fresh && today < *expires - time::Duration::days(1) {
                return Ok(token.clone());
            }
        }
        let expires = today + time::Duration::days(SESSION_DAYS);
        let path = format!(
            "/token/session/:create?consumerToken={}&employeeToken={}&expirationDate={expires}",
            percent_encode(&self.settings.consumer_token),
            percent_encode(&self.settings.employee_token),
        );
        let request = self.api.request(Method::PUT, &path);
        let answer = self
            .api
            .send("PUT /token/session/:create", request, left(deadline))?;
        let token = answer
            .json
            .pointer("/value/token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refused("Tripletex API: PUT /token/session/:create answered no token".into())
            })?
            .to_string();
        self.api
            .hide_basic(&self.settings.company_id.to_string(), &token);
        *kept = Some((token.clone(), expires));
        Ok(token)
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// One subscription as Tripletex shows it.
fn subscription_of(v: &Value) -> Option<Subscription> {
    let id = v.get("id").and_then(id_text)?;
    let event = v.get("event").and_then(Value::as_str)?.to_ascii_lowercase();
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("ACTIVE")
        .to_string();
    let state = match status.as_str() {
        "ACTIVE" => SubscriptionState::Active,
        "DISABLED_TOO_MANY_ERRORS" => SubscriptionState::Failing,
        _ => SubscriptionState::Disabled,
    };
    Some(Subscription {
        id: Some(id),
        events: vec![event],
        target_url: v
            .get("targetUrl")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        state,
        status,
        name: None,
        spec: match v.get("fields") {
            Some(Value::String(f)) => json!({ "fields": f }),
            Some(Value::Null) => json!({"fields": ""}),
            _ => json!({}),
        },
        revision: v.get("version").and_then(id_text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(callback: Callback) -> Subscriptions {
        let settings: Settings = serde_json::from_value(json!({
            "api_url": "http://127.0.0.1:9/v2", "consumer_token": "c", "employee_token": "e",
            "events": ["Product.Create", "order.update", "product.create"], "fields": "id,name"
        }))
        .unwrap();
        Subscriptions::new(settings, callback).unwrap()
    }

    #[test]
    fn one_desired_subscription_per_event_with_the_callbacks_credentials() {
        let s = with(Callback::Basic {
            username: "u".into(),
            password: "p@ss".into(),
        });
        let d = s.desired("https://hooks.example/hooks/tx");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].events, ["order.update"]);
        assert_eq!(d[1].events, ["product.create"]);
        assert_eq!(d[0].target_url, "https://u:p%40ss@hooks.example/hooks/tx");
        assert_eq!(d[0].spec, json!({"fields": "id,name"}));
        let s = with(Callback::Token {
            param: "token".into(),
            token: "a b".into(),
        });
        assert_eq!(
            s.desired("https://h/hooks/tx")[0].target_url,
            "https://h/hooks/tx?token=a%20b"
        );
    }

    #[test]
    fn statuses_read_as_states() {
        let one = |status: &str| {
            subscription_of(&json!({"id": 1, "version": 3, "event": "closeGroup.create",
                "targetUrl": "u", "status": status}))
            .unwrap()
        };
        assert_eq!(one("ACTIVE").state, SubscriptionState::Active);
        assert_eq!(
            one("DISABLED_TOO_MANY_ERRORS").state,
            SubscriptionState::Failing
        );
        assert_eq!(one("DISABLED_MISUSE").state, SubscriptionState::Disabled);
        assert_eq!(one("ACTIVE").events, ["closegroup.create"]);
        assert_eq!(one("ACTIVE").revision.as_deref(), Some("3"));
    }
}
