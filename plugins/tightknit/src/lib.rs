//! # Tightknit provider plugin
//!
//! Verifies Tightknit webhooks and turns them into Switchyard events.
//!
//! Tightknit delivers through Svix, which signs with the Standard Webhooks
//! scheme: `svix-id`/`svix-timestamp`/`svix-signature` (the `webhook-*`
//! names are accepted too), HMAC-SHA256 over `{id}.{timestamp}.{body}` with
//! a `whsec_` secret, timestamps within ±`tolerance_secs` (300). Several
//! secrets may be configured at once, for rotation. The older documents
//! describe no signature: for such a setup, a secret `token` in the query or
//! as the last path segment, and the source's `allow_ips`, authenticate
//! instead; `unsigned = true` must then be said out loud.
//!
//! Normalization: the legacy `event_registration_status_change` with
//! `status` `registered`/`unregistered` becomes
//! `tightknit.calendar_event.user_registered`/`…_unregistered`, like the
//! newer payloads (`extensions.legacy = true`, the body untouched in `data`);
//! every other `action` passes through as `tightknit.<action>`.

mod catalog;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchyard_plugin_api::{
    EventDraft, Host, Provider, Rejection, Request, SampleError, SampleRequest, Subscription,
    SubscriptionCall, SubscriptionError,
};
use switchyard_plugin_support::hmac::equal;
use switchyard_plugin_support::standard_webhooks::{self, Headers};
use switchyard_plugin_support::{
    dedup_key, percent_encode, token_in_query_or_path, unix_now, Secret, SecretEncoding,
};

pub const REGISTERED: &str = "calendar_event.user_registered";
pub const UNREGISTERED: &str = "calendar_event.user_unregistered";
pub const LEGACY_ACTION: &str = "event_registration_status_change";

/// Names `sample` knows.
pub const SAMPLES: [&str; 4] = [
    REGISTERED,
    UNREGISTERED,
    "legacy.registered",
    "legacy.unregistered",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// One `whsec_…` signing secret, or several (rotation).
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default = "default_tolerance")]
    tolerance_secs: u64,
    /// For unsigned setups: a token in the query (`token_param`) or path.
    #[serde(default)]
    token: Option<String>,
    #[serde(default = "default_token_param")]
    token_param: String,
    /// Accept deliveries without a signature (pair with a token or allow_ips).
    #[serde(default)]
    unsigned: bool,
}

fn default_tolerance() -> u64 {
    300
}

fn default_token_param() -> String {
    "token".into()
}

pub struct Tightknit {
    host: Host,
    secrets: Vec<Secret>,
    tolerance_secs: i64,
    token: Option<(String, String)>,
}

impl Tightknit {
    fn check_token(&self, request: &Request<'_>) -> Result<(), Rejection> {
        let Some((token, param)) = &self.token else {
            return Ok(());
        };
        let got = token_in_query_or_path(request, param).ok_or_else(|| {
            Rejection::unauthenticated(format!("no ?{param}= and no token in the path"))
        })?;
        if !equal(got.as_bytes(), token.as_bytes()) {
            return Err(Rejection::unauthenticated("token does not match"));
        }
        Ok(())
    }
}

/// Turns an authenticated body into its event. `message_id` is the
/// delivery's `svix-id`/`webhook-id`, the same on every retry.
pub fn normalize(body: &[u8], message_id: Option<&str>) -> Result<Vec<EventDraft>, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::malformed(format!("body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Rejection::malformed("body is JSON but not an object"))?;
    let action = obj
        .get("action")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Rejection::malformed("body has no action"))?;
    let status = obj.get("status").and_then(Value::as_str).unwrap_or("");
    let (kind, legacy) = if action == LEGACY_ACTION {
        match status {
            "registered" => (REGISTERED.to_string(), true),
            "unregistered" => (UNREGISTERED.to_string(), true),
            // An unknown status keeps its own name rather than being dropped.
            other => (format!("{LEGACY_ACTION}.{other}"), true),
        }
    } else {
        (action.to_string(), false)
    };
    let user_id = value
        .pointer("/user/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let event_id = value
        .pointer("/event/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let date = obj.get("date").and_then(Value::as_str).unwrap_or("");
    let mut ext = Map::new();
    if legacy {
        ext.insert("legacy".into(), json!(true));
    }
    if !event_id.is_empty() {
        ext.insert("calendar_event_id".into(), json!(event_id));
    }
    if let Some(email) = value.pointer("/user/email").and_then(Value::as_str) {
        ext.insert("user_email".into(), json!(email));
    }
    let mut ev = EventDraft::new(kind.clone(), value.clone());
    ev.subject = Some(user_id.to_string()).filter(|s| !s.is_empty());
    ev.time = Some(date.to_string()).filter(|d| !d.is_empty());
    ev.dedup_key = Some(match message_id.filter(|m| !m.is_empty()) {
        Some(id) => format!("msg:{id}"),
        None => dedup_key(&[&kind, event_id, user_id, date]),
    });
    ev.extensions = ext;
    Ok(vec![ev])
}

impl Provider for Tightknit {
    fn catalog(&self) -> Vec<switchyard_plugin_api::EventType> {
        catalog::catalog()
    }

    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("tightknit settings: {e}"))?;
        let secrets = c
            .secret
            .iter()
            .chain(c.secrets.iter())
            .map(|s| Secret::decode(s, SecretEncoding::Whsec, "tightknit settings: secret"))
            .collect::<Result<Vec<_>, _>>()?;
        let token = c
            .token
            .filter(|t| !t.is_empty())
            .map(|t| (t, c.token_param));
        if secrets.is_empty() && !c.unsigned {
            return Err(
                "tightknit settings: set secret (the endpoint's whsec_… signing secret), \
                        or unsigned = true with a token or the source's allow_ips"
                    .into(),
            );
        }
        if c.tolerance_secs == 0 {
            return Err("tightknit settings: tolerance_secs must be at least 1".into());
        }
        Ok(Tightknit {
            host,
            secrets,
            tolerance_secs: c.tolerance_secs.min(i64::MAX as u64) as i64,
            token,
        })
    }

    fn credential_headers(&self) -> Vec<String> {
        vec!["svix-signature".into(), "webhook-signature".into()]
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        self.check_token(request)?;
        let headers = Headers::find(request);
        if !self.secrets.is_empty() {
            let h = headers.ok_or_else(|| {
                if Headers::any_present(request) {
                    Rejection::unauthenticated("incomplete svix-/webhook- signature headers")
                } else {
                    Rejection::unauthenticated(
                        "missing svix-signature (or webhook-signature) headers",
                    )
                }
            })?;
            standard_webhooks::verify(
                &self.secrets,
                &h,
                request.body,
                unix_now(),
                self.tolerance_secs,
            )?;
        }
        let events = normalize(request.body, headers.map(|h| h.id))?;
        self.host.debug("verified, 1 event");
        Ok(events)
    }

    /// Made by hand: says how, with the URL to give.
    fn subscriptions(
        &self,
        call: &SubscriptionCall,
        _timeout: std::time::Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        let url = match call {
            SubscriptionCall::Desired { target_url } => format!(" ({target_url})"),
            _ => String::new(),
        };
        Err(SubscriptionError::Unsupported(format!(
            "Tightknit webhooks are made in Tightknit, not through an API: an admin opens the Developers module on the App Home, Webhooks, + Create Webhook, and enters the URL{url} and the events; put the endpoint's signing secret (whsec_…) in this source's secret."
        )))
    }

    fn sample(&self, name: &str) -> Result<SampleRequest, SampleError> {
        let body = sample_body(name).ok_or_else(|| {
            SampleError::Unknown(format!(
                "no Tightknit sample named {name:?}; known: {}",
                SAMPLES.join(", ")
            ))
        })?;
        let body = serde_json::to_string(&body).map_err(|e| SampleError::Failed(e.to_string()))?;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(secret) = self.secrets.first() {
            let now = unix_now();
            let id = format!(
                "msg_{}",
                &switchyard_plugin_support::sha256_hex(
                    format!("{body}{}", switchyard_plugin_support::rfc3339_now()).as_bytes()
                )[..24]
            );
            let sig = standard_webhooks::sign(secret, &id, now, body.as_bytes());
            headers.push(("svix-id".into(), id));
            headers.push(("svix-timestamp".into(), now.to_string()));
            headers.push(("svix-signature".into(), sig));
        }
        let query = match &self.token {
            Some((token, param)) => format!("{}={}", percent_encode(param), percent_encode(token)),
            None => String::new(),
        };
        Ok(SampleRequest {
            method: "POST".into(),
            query,
            headers,
            body,
        })
    }
}

/// A sample body by name (see [`SAMPLES`]).
pub fn sample_body(name: &str) -> Option<Value> {
    let date = switchyard_plugin_support::rfc3339_now();
    let user = json!({
        "id": "usr_8f2k", "first_name": "Ada", "last_name": "Lovelace",
        "real_name": "Ada Lovelace", "display_name": "ada", "email": "ada@example.com",
        "profile_fields": {"company": {"label": "Company", "value": "Analytical Engines"}}
    });
    let event = json!({"id": "evt_2xq", "title": "Community call", "slug": "community-call"});
    let source = json!({"slack_workspace_id": "T0123", "slack_channel_id": "C0456"});
    Some(match name {
        REGISTERED | UNREGISTERED => {
            let mut user = user;
            user["profile_id"] = json!("prf_77");
            user["slack_user_id"] = json!("U0789");
            user["slack_is_admin"] = json!(false);
            json!({"version": "2.0", "action": name, "date": date, "custom_metadata": null,
                   "event": event, "source": source, "user": user})
        }
        "legacy.registered" | "legacy.unregistered" => {
            let status = name.trim_start_matches("legacy.");
            json!({"version": "1.0", "action": LEGACY_ACTION, "status": status, "date": date,
                   "custom_metadata": "utm=newsletter", "event": event, "source": source, "user": user})
        }
        _ => return None,
    })
}

/// One fuzzing input: bytes as a request (see
/// `switchyard_plugin_support::fuzz`) through `verify`, and its body
/// through normalization directly (a fuzzer cannot forge a signature).
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: std::sync::OnceLock<Tightknit> = std::sync::OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Tightknit::create(
            Host::detached(),
            json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        )
        .expect("fuzz settings")
    });
    let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    let _ = normalize(&r.body, None);
}

switchyard_plugin_api::export_provider!("tightknit", Tightknit);

#[cfg(test)]
mod tests;
