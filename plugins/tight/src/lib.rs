//! # Tight provider plugin
//!
//! Verifies Tight webhooks and turns them into Switchyard events.
//!
//! Verification, in order (every step over the raw body bytes; the host
//! has already checked the source's `allow_ips`, e.g. [`TIGHT_SENDER_IPS`]):
//! 1. the `Tight-Verification` header is a JWT signed with **HS256 only**
//!    (`none` and every other algorithm are refused) under the source's secret;
//! 2. its `iat` claim is within `tolerance_secs` (default 300) of now, in
//!    either direction;
//! 3. its `request_body_sha256` claim equals SHA-256 of the raw body, compared
//!    as decoded bytes in constant time. Tight sends standard padded base64;
//!    unpadded, base64url and hex are accepted too.
//!
//! Normalization (see README.md for the envelopes):
//! - `LIFECYCLE` → `tight.<event>` (e.g. `tight.invoiceViewed`), `time` from `datetime`;
//! - legacy `LIFECYCLE_EVENT` → `tight.<EVENT>` as sent (e.g. `tight.INVOICE_VIEWED`);
//! - `ENTITY_UPDATE` → `tight.entity.<entity>` with the entity's name, id and
//!   resource path in `extensions`; the legacy form with `entities: [...]`
//!   gives one event per entity;
//! - anything else → `tight.<type>`, passed through untouched.

mod catalog;
mod entities;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_plugin_api::{
    EventDraft, Host, Provider, Rejection, Request, SampleError, SampleRequest, Subscription,
    SubscriptionCall, SubscriptionError,
};
use switchyard_plugin_support::hmac::{decode_signature, Encoding};
use switchyard_plugin_support::{hex, unix_now};

pub use entities::{entity_for_url, resource_for_entity, ENTITIES};

/// Tight's documented sender addresses, for `allow_ips`.
pub const TIGHT_SENDER_IPS: [&str; 2] = ["3.221.92.254", "34.200.77.221"];

/// The header carrying the JWT.
pub const HEADER: &str = "Tight-Verification";

/// Lifecycle event names the docs mention; `sample` knows each of them.
pub const LIFECYCLE_EVENTS: [&str; 10] = [
    "invoiceDrafted",
    "invoiceEdited",
    "invoiceSent",
    "invoiceScheduled",
    "invoiceViewed",
    "bankAccountCreated",
    "bankLinked",
    "transactionCreated",
    "transactionEdited",
    "accountingClosingCreated",
];

/// Legacy `LIFECYCLE_EVENT` names `sample` knows.
pub const LEGACY_EVENTS: [&str; 5] = [
    "INVOICE_CREATED",
    "INVOICE_PAID",
    "INVOICE_VIEWED",
    "EXPENSE_ADDED",
    "TRANSACTION_PULL_COMPLETED",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The environment's `webhook_secret`.
    secret: String,
    /// How to read `secret`: `utf8` (default) or `base64`.
    #[serde(default)]
    encoding: SecretEncoding,
    /// Maximum age of `iat`, and how far in the future it may be, in seconds.
    #[serde(default = "default_tolerance")]
    tolerance_secs: u64,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SecretEncoding {
    #[default]
    Utf8,
    Base64,
}

fn default_tolerance() -> u64 {
    300
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    request_body_sha256: Option<String>,
}

pub struct Tight {
    host: Host,
    secret: Vec<u8>,
    tolerance_secs: i64,
}

impl Tight {
    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.leeway = 0;
        v
    }

    fn check_claims(&self, token: &str, body: &[u8], now: i64) -> Result<(), Rejection> {
        let key = DecodingKey::from_secret(&self.secret);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &Self::validation())
            .map_err(|e| Rejection::unauthenticated(format!("JWT refused: {}", jwt_reason(&e))))?;
        let claims = data.claims;
        let iat = claims
            .iat
            .ok_or_else(|| Rejection::unauthenticated("JWT has no iat claim"))?;
        if now - iat >= self.tolerance_secs {
            return Err(Rejection::expired(format!(
                "JWT iat is {}s old, tolerance is {}s",
                now - iat,
                self.tolerance_secs
            )));
        }
        if iat - now > self.tolerance_secs {
            return Err(Rejection::expired(format!(
                "JWT iat is {}s in the future, tolerance is {}s",
                iat - now,
                self.tolerance_secs
            )));
        }
        let claimed = claims
            .request_body_sha256
            .ok_or_else(|| Rejection::unauthenticated("JWT has no request_body_sha256 claim"))?;
        let claimed = decode_digest(&claimed).ok_or_else(|| {
            Rejection::unauthenticated("request_body_sha256 is not a base64 or hex SHA-256")
        })?;
        let actual = Sha256::digest(body);
        if !bool::from(actual[..].ct_eq(&claimed)) {
            return Err(Rejection::unauthenticated(
                "body does not match the JWT's request_body_sha256",
            ));
        }
        Ok(())
    }

    fn sign(&self, body: &[u8], iat: i64) -> Result<String, String> {
        let claims = Claims {
            iat: Some(iat),
            request_body_sha256: Some(STANDARD.encode(Sha256::digest(body))),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| format!("could not sign sample: {e}"))
    }
}

/// Says why a JWT was refused, without echoing any part of it.
fn jwt_reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        InvalidAlgorithm | InvalidAlgorithmName => "algorithm is not HS256",
        InvalidSignature => "bad signature",
        InvalidToken => "not a JWT",
        Base64(_) | Json(_) | Utf8(_) => "malformed token (or an algorithm other than HS256)",
        _ => "invalid token",
    }
}

/// Decodes a SHA-256 digest written as base64 (padded or not, standard or
/// url-safe) or hex. Returns None unless it decodes to exactly 32 bytes.
fn decode_digest(s: &str) -> Option<Vec<u8>> {
    decode_signature(s, Encoding::Any, 32)
}

/// A stable key for a delivery: the same body of the same kind is the same
/// delivery, whatever JWT (re-signed on each retry) came with it. (Not the
/// support crate's `dedup_key`: keys already stored were made this way.)
fn dedup_key(parts: &[&str], body_sha: &str) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.update(body_sha.as_bytes());
    hex(&h.finalize())
}

/// Normalizes RFC 3339 with 1–9 fractional digits; None if unparseable.
fn normalize_time(s: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    t.format(&Rfc3339).ok()
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Turns a verified body into events.
pub fn normalize(body: &Value, raw_body: &[u8]) -> Result<Vec<EventDraft>, Rejection> {
    let obj = body
        .as_object()
        .ok_or_else(|| Rejection::malformed("body is JSON but not an object"))?;
    let body_sha = hex(&Sha256::digest(raw_body));
    let kind = str_at(body, "type").unwrap_or("unknown");
    let mut events = Vec::new();
    match kind {
        "LIFECYCLE" | "LIFECYCLE_EVENT" => {
            let name = str_at(body, "event")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| Rejection::malformed(format!("{kind} body has no event name")))?;
            let datetime = str_at(body, "datetime").unwrap_or("");
            let mut ev = EventDraft::new(name, body.clone());
            ev.time = normalize_time(datetime);
            ev.subject = body
                .pointer("/eventData/entityId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            ev.dedup_key = Some(dedup_key(&[kind, name, datetime], &body_sha));
            if kind == "LIFECYCLE_EVENT" {
                ev.extensions.insert("legacy".into(), Value::Bool(true));
            }
            events.push(ev);
        }
        "ENTITY_UPDATE" => {
            if let Some(url) = str_at(body, "url") {
                let (entity, resource) = entity_for_url(url);
                let id = body
                    .pointer("/data/id")
                    .or_else(|| body.pointer("/data/id:"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| url.rsplit('/').next().map(str::to_owned))
                    .filter(|s| !s.is_empty());
                let mut ev = EventDraft::new(format!("entity.{entity}"), body.clone());
                ev.subject = id.clone();
                ev.extensions = entity_extensions(&entity, &resource, id.as_deref(), Some(url));
                ev.dedup_key = Some(dedup_key(&[kind, url], &body_sha));
                events.push(ev);
            } else if let Some(list) = obj.get("entities").and_then(Value::as_array) {
                for entity in list.iter().filter_map(Value::as_str) {
                    let resource = resource_for_entity(entity);
                    let mut ev = EventDraft::new(format!("entity.{entity}"), body.clone());
                    ev.extensions = entity_extensions(entity, &resource, None, None);
                    ev.extensions.insert("legacy".into(), Value::Bool(true));
                    ev.dedup_key = Some(dedup_key(&[kind, entity], &body_sha));
                    events.push(ev);
                }
                if events.is_empty() {
                    return Err(Rejection::malformed(
                        "legacy ENTITY_UPDATE lists no entities",
                    ));
                }
            } else {
                return Err(Rejection::malformed(
                    "ENTITY_UPDATE body has neither url nor entities",
                ));
            }
        }
        other => {
            // Unknown types pass through: never lose an event because it is new.
            let mut ev = EventDraft::new(other, body.clone());
            ev.dedup_key = Some(dedup_key(&[other], &body_sha));
            events.push(ev);
        }
    }
    Ok(events)
}

fn entity_extensions(
    entity: &str,
    resource: &str,
    id: Option<&str>,
    url: Option<&str>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("entity".into(), json!(entity));
    m.insert("resource".into(), json!(resource));
    if let Some(id) = id {
        m.insert("entity_id".into(), json!(id));
    }
    if let Some(url) = url {
        m.insert("url".into(), json!(url));
    }
    m
}

impl Provider for Tight {
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("tight settings: {e}"))?;
        let secret = match config.encoding {
            SecretEncoding::Utf8 => config.secret.into_bytes(),
            SecretEncoding::Base64 => STANDARD.decode(config.secret.trim()).map_err(|_| {
                "tight settings: secret is not valid base64 (encoding = \"base64\")"
            })?,
        };
        if secret.is_empty() {
            return Err("tight settings: secret is empty".into());
        }
        if config.tolerance_secs == 0 {
            return Err("tight settings: tolerance_secs must be at least 1".into());
        }
        Ok(Tight {
            host,
            secret,
            tolerance_secs: config.tolerance_secs.min(i64::MAX as u64) as i64,
        })
    }

    /// The JWT it verifies: a delivery's credential, never kept or shown.
    fn catalog(&self) -> Vec<switchyard_plugin_api::EventType> {
        catalog::catalog()
    }

    fn credential_headers(&self) -> Vec<String> {
        vec![HEADER.to_string()]
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        let token = request
            .header_str(HEADER)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Rejection::unauthenticated("missing Tight-Verification header"))?;
        self.check_claims(token, request.body, unix_now())?;
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| Rejection::malformed(format!("body is not JSON: {e}")))?;
        let events = normalize(&body, request.body)?;
        self.host
            .debug(&format!("verified, {} event(s)", events.len()));
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
            "Tight webhooks are set up by Tight's API team, not through an API: email api@tight.com with the subject \"Subscribe to Webhooks\", your API client_id, and the URL for each environment (one source each: sandbox, production){url}. Tight gives you the webhook_secret this source verifies with."
        )))
    }

    fn sample(&self, event: &str) -> Result<SampleRequest, SampleError> {
        let body = sample_body(event).ok_or_else(|| {
            SampleError::Unknown(format!(
                "no Tight sample named {event:?}; known: {}, entity.<name> for {}, and legacy {}",
                LIFECYCLE_EVENTS.join(", "),
                ENTITIES
                    .iter()
                    .map(|(e, _)| *e)
                    .collect::<Vec<_>>()
                    .join(", "),
                LEGACY_EVENTS.join(", ")
            ))
        })?;
        let body =
            serde_json::to_string_pretty(&body).map_err(|e| SampleError::Failed(e.to_string()))?;
        let jwt = self
            .sign(body.as_bytes(), unix_now())
            .map_err(SampleError::Failed)?;
        Ok(SampleRequest {
            method: "POST".into(),
            query: String::new(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (HEADER.to_ascii_lowercase(), jwt),
            ],
            body,
        })
    }
}

/// The sample body for a named event, or None if there is no such sample.
pub fn sample_body(event: &str) -> Option<Value> {
    let now = time::OffsetDateTime::now_utc();
    let datetime = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    if let Some(entity) = event.strip_prefix("entity.") {
        let resource = ENTITIES.iter().find(|(e, _)| *e == entity)?.1;
        let id = format!("{}_sample1", &entity[..3.min(entity.len())].to_lowercase());
        return Some(json!({
            "editor": {"userId": "usr_sample"},
            "company": {"id": "co_sample", "apiCompanyId": "id_sample"},
            "type": "ENTITY_UPDATE",
            "url": format!("/v6{resource}/{id}"),
            "data": {"id": id, "amount": 15399},
        }));
    }
    if LEGACY_EVENTS.contains(&event) {
        return Some(json!({
            "userId": "usr_sample",
            "type": "LIFECYCLE_EVENT",
            "event": event,
            "eventData": {"entityId": "inv_sample1"},
        }));
    }
    if LIFECYCLE_EVENTS.contains(&event) {
        let event_data = if event.starts_with("invoice") {
            json!({"entityId": "inv_sample1", "invoiceNumber": "1001", "clientName": "Sample Client Ltd"})
        } else {
            json!({"entityId": "ent_sample1"})
        };
        return Some(json!({
            "editor": {"userId": "usr_sample"},
            "company": {"id": "co_sample"},
            "type": "LIFECYCLE",
            "event": event,
            "datetime": datetime,
            "eventData": event_data,
        }));
    }
    None
}

/// One fuzzing input: bytes as a request (see
/// `switchyard_plugin_support::fuzz`) through `verify`, and its body
/// through normalization directly (a fuzzer cannot forge a signature).
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: std::sync::OnceLock<Tight> = std::sync::OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Tight::create(Host::detached(), json!({"secret": "fuzz-secret"})).expect("fuzz settings")
    });
    let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
        let _ = normalize(&v, &r.body);
    }
}

switchyard_plugin_api::export_provider!("tight", Tight);

#[cfg(test)]
mod tests;
