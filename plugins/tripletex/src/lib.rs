//! # Tripletex provider plugin
//!
//! Verifies Tripletex webhooks and turns them into Switchyard events.
//!
//! Tripletex offers four ways to authenticate a callback; a source chooses
//! one with `auth`:
//! - `header`: the subscription's `authHeaderName`/`authHeaderValue`, sent
//!   as-is on every callback (Tripletex's recommendation);
//! - `basic`: credentials in the target URL, sent as `Authorization: Basic`;
//! - `token`: a secret in the query (`?token=…`) or as the last path segment
//!   (`/hooks/{source}/{token}`);
//! - `hmac`: `x-request-signature` = base64(HMAC-SHA512(secret,
//!   `idempotency-key` header + `&` + raw body)).
//!
//! Every comparison with a secret is in constant time.
//!
//! Normalization: `tripletex.<object>.<verb>` in lowercase (Tripletex is not
//! consistent: `closeGroup.create` and `closegroup.create` both occur), the
//! object id as `subject`, the whole body as `data` (`value` is null for
//! `*.delete`). Dedup key: the `idempotency-key` header when sent, else
//! (subscriptionId, event, id, value.version). With `version_guard`, each
//! event carries its object's version so the host can drop one that is not
//! newer than the last it accepted for that object.

mod catalog;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

use switchyard_plugin_api::{
    EventDraft, Host, Provider, Rejection, Request, SampleError, SampleRequest, Subscription,
    SubscriptionCall, SubscriptionError,
};
use switchyard_plugin_support::hmac::{self, Algorithm, Encoding};
use switchyard_plugin_support::{
    base64, decode_base64, dedup_key, percent_encode, token_in_query_or_path, Secret,
    SecretEncoding,
};

pub const SIGNATURE_HEADER: &str = "x-request-signature";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The objects and verbs Tripletex documents; `sample` knows each event.
pub const EVENTS: &[&str] = &[
    "invoice.charged",
    "supplier.create",
    "supplier.update",
    "supplier.delete",
    "employee.create",
    "employee.update",
    "employee.delete",
    "order.create",
    "order.update",
    "order.delete",
    "product.create",
    "product.update",
    "product.delete",
    "account.create",
    "account.update",
    "account.delete",
    "project.create",
    "project.update",
    "project.delete",
    "customer.create",
    "customer.update",
    "customer.delete",
    "contact.create",
    "contact.update",
    "contact.delete",
    "archiverelation.create",
    "archiverelation.update",
    "archiverelation.delete",
    "voucher.create",
    "voucher.update",
    "voucher.delete",
    "notification.sent",
    "voucherstatus.ready",
    "closegroup.create",
    "closegroup.delete",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `header`, `basic`, `token` or `hmac`.
    auth: Option<String>,
    /// auth = "header": the subscription's authHeaderName and authHeaderValue.
    header_name: Option<String>,
    header_value: Option<String>,
    /// auth = "basic": the credentials in the target URL.
    username: Option<String>,
    password: Option<String>,
    /// auth = "token": the secret token, and the query parameter carrying it.
    token: Option<String>,
    #[serde(default = "default_token_param")]
    token_param: String,
    /// auth = "hmac": the subscription's hmacSharedSecret.
    secret: Option<String>,
    #[serde(default)]
    encoding: SecretEncoding,
    /// Hand the host each object's version, so that it drops stale ones.
    #[serde(default)]
    version_guard: bool,
    /// The subscriptions to keep at Tripletex (`switchyard subscriptions`).
    #[serde(default)]
    subscription: Option<subscriptions::Settings>,
}

fn default_token_param() -> String {
    "token".into()
}

#[derive(Debug)]
enum Auth {
    Header { name: String, value: String },
    Basic { username: String, password: String },
    Token { token: String, param: String },
    Hmac { secret: Secret },
}

pub struct Tripletex {
    host: Host,
    auth: Auth,
    version_guard: bool,
    subscriptions: Option<subscriptions::Subscriptions>,
}

fn required(value: Option<String>, auth: &str, key: &str) -> Result<String, String> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("tripletex settings: auth = \"{auth}\" needs {key}"))
}

fn same(a: &str, b: &str) -> bool {
    hmac::equal(a.as_bytes(), b.as_bytes())
}

impl Tripletex {
    fn authenticate(&self, request: &Request<'_>) -> Result<(), Rejection> {
        match &self.auth {
            Auth::Header { name, value } => {
                let got = request
                    .header_str(name)
                    .ok_or_else(|| Rejection::unauthenticated(format!("missing {name} header")))?;
                if !same(got, value) {
                    return Err(Rejection::unauthenticated(format!(
                        "{name} header does not match header_value"
                    )));
                }
            }
            Auth::Basic { username, password } => {
                let got = request
                    .header_str("authorization")
                    .ok_or_else(|| Rejection::unauthenticated("missing Authorization header"))?;
                let creds = got
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                    .and_then(|(_, b64)| decode_base64(b64.trim()))
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .ok_or_else(|| {
                        Rejection::unauthenticated("Authorization is not Basic credentials")
                    })?;
                let (user, pass) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
                // Both compared, whatever the first gave.
                let ok = same(user, username) & same(pass, password);
                if !ok {
                    return Err(Rejection::unauthenticated("Basic credentials do not match"));
                }
            }
            Auth::Token { token, param } => {
                let got = token_in_query_or_path(request, param).ok_or_else(|| {
                    Rejection::unauthenticated(format!("no ?{param}= and no token in the path"))
                })?;
                if !same(&got, token) {
                    return Err(Rejection::unauthenticated("token does not match"));
                }
            }
            Auth::Hmac { secret } => {
                let sig = request
                    .header_str(SIGNATURE_HEADER)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        Rejection::unauthenticated("missing x-request-signature header")
                    })?;
                let key = request.header(IDEMPOTENCY_HEADER).ok_or_else(|| {
                    Rejection::unauthenticated("missing idempotency-key header (it is signed)")
                })?;
                if !hmac::verify(
                    Algorithm::Sha512,
                    secret.bytes(),
                    &[key, b"&", request.body],
                    sig,
                    Encoding::Base64,
                ) {
                    return Err(Rejection::unauthenticated(
                        "x-request-signature does not match idempotency-key & body",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The request a subscription of this source would send for `body`.
    fn signed(&self, body: String, idempotency_key: &str) -> SampleRequest {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            (IDEMPOTENCY_HEADER.to_string(), idempotency_key.to_string()),
        ];
        let mut query = String::new();
        match &self.auth {
            Auth::Header { name, value } => {
                headers.push((name.to_ascii_lowercase(), value.clone()))
            }
            Auth::Basic { username, password } => headers.push((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                ),
            )),
            Auth::Token { token, param } => {
                query = format!("{}={}", percent_encode(param), percent_encode(token))
            }
            Auth::Hmac { secret } => {
                let mac = hmac::mac(
                    Algorithm::Sha512,
                    secret.bytes(),
                    &[idempotency_key.as_bytes(), b"&", body.as_bytes()],
                );
                headers.push((SIGNATURE_HEADER.into(), base64(&mac)));
            }
        }
        SampleRequest {
            method: "POST".into(),
            query,
            headers,
            body,
        }
    }
}

/// A JSON number or string as text (ids arrive as numbers).
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Turns an authenticated body into its event.
pub fn normalize(
    body: &[u8],
    idempotency_key: Option<&str>,
    version_guard: bool,
) -> Result<Vec<EventDraft>, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::malformed(format!("body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Rejection::malformed("body is JSON but not an object"))?;
    let event = obj
        .get("event")
        .and_then(Value::as_str)
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| Rejection::malformed("body has no event name"))?;
    let name = event.trim().to_ascii_lowercase();
    let (object, verb) = name.split_once('.').unwrap_or((name.as_str(), ""));
    let id = text(obj.get("id"));
    let subscription = text(obj.get("subscriptionId"));
    let version = obj.get("value").and_then(|v| v.get("version"));
    let mut ext = Map::new();
    ext.insert("object".into(), json!(object));
    ext.insert("verb".into(), json!(verb));
    if event != name {
        ext.insert("event_as_sent".into(), json!(event));
    }
    if let Some(s) = obj.get("subscriptionId") {
        ext.insert("subscription_id".into(), s.clone());
    }
    if let Some(v) = version {
        ext.insert("version".into(), v.clone());
    }
    ext.insert(
        "deleted".into(),
        json!(obj.get("value").is_none_or(Value::is_null)),
    );
    let mut ev = EventDraft::new(name.clone(), value.clone());
    ev.subject = Some(id.clone()).filter(|s| !s.is_empty());
    ev.dedup_key = Some(match idempotency_key.filter(|k| !k.is_empty()) {
        Some(key) => format!("idempotency-key:{key}"),
        None => dedup_key(&[&subscription, &name, &id, &text(version)]),
    });
    if version_guard {
        if let (Some(v), false) = (version.and_then(Value::as_i64), id.is_empty()) {
            ev.order = Some(switchyard_plugin_api::Order {
                key: format!("{object}:{id}"),
                version: v,
            });
        }
    }
    ev.extensions = ext;
    Ok(vec![ev])
}

impl Provider for Tripletex {
    fn catalog(&self) -> Vec<switchyard_plugin_api::EventType> {
        catalog::catalog()
    }

    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("tripletex settings: {e}"))?;
        let callback = callback(&c);
        let mode = c.auth.clone().ok_or(
            "tripletex settings: choose auth = \"header\", \"basic\", \"token\" or \"hmac\" \
             (how the subscription authenticates its callbacks)",
        )?;
        let auth = match mode.as_str() {
            "header" => Auth::Header {
                name: required(c.header_name, &mode, "header_name")?,
                value: required(c.header_value, &mode, "header_value")?,
            },
            "basic" => Auth::Basic {
                username: required(c.username, &mode, "username")?,
                password: required(c.password, &mode, "password")?,
            },
            "token" => Auth::Token {
                token: required(c.token, &mode, "token")?,
                param: c.token_param,
            },
            "hmac" => Auth::Hmac {
                secret: Secret::decode(
                    &required(c.secret, &mode, "secret")?,
                    c.encoding,
                    "tripletex settings: secret",
                )?,
            },
            other => {
                return Err(format!(
                    "tripletex settings: auth = {other:?}; choose \"header\", \"basic\", \"token\" or \"hmac\""
                ))
            }
        };
        let subscriptions = match (c.subscription, callback) {
            (None, _) => None,
            (Some(settings), Ok(callback)) => {
                Some(subscriptions::Subscriptions::new(settings, callback)?)
            }
            (Some(_), Err(why)) => return Err(why),
        };
        Ok(Tripletex {
            host,
            auth,
            version_guard: c.version_guard,
            subscriptions,
        })
    }

    /// The callback's header (its configured auth header, or the HMAC
    /// signature); `Authorization` is always redacted by the host.
    fn credential_headers(&self) -> Vec<String> {
        match &self.auth {
            Auth::Header { name, .. } => vec![name.clone()],
            Auth::Hmac { .. } => vec![SIGNATURE_HEADER.to_string()],
            Auth::Basic { .. } | Auth::Token { .. } => Vec::new(),
        }
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        self.authenticate(request)?;
        let events = normalize(
            request.body,
            request.header_str(IDEMPOTENCY_HEADER),
            self.version_guard,
        )?;
        self.host.debug("verified, 1 event");
        Ok(events)
    }

    fn subscriptions(
        &self,
        call: &SubscriptionCall,
        timeout: Duration,
    ) -> Result<Vec<Subscription>, SubscriptionError> {
        match &self.subscriptions {
            Some(s) => s.call(call, timeout),
            None => Err(SubscriptionError::Unsupported(
                "this source declares no Tripletex subscriptions: add \
                 [sources.NAME.subscription] with consumer_token, employee_token and events \
                 (see plugins/tripletex/README.md)"
                    .into(),
            )),
        }
    }

    fn sample(&self, event: &str) -> Result<SampleRequest, SampleError> {
        let name = event.to_ascii_lowercase();
        if !EVENTS.contains(&name.as_str()) {
            return Err(SampleError::Unknown(format!(
                "no Tripletex sample named {event:?}; known: {}",
                EVENTS.join(", ")
            )));
        }
        let body = serde_json::to_string(&sample_body(&name))
            .map_err(|e| SampleError::Failed(e.to_string()))?;
        let key = format!(
            "{}-{}",
            &switchyard_plugin_support::sha256_hex(body.as_bytes())[..8],
            &switchyard_plugin_support::sha256_hex(
                switchyard_plugin_support::rfc3339_now().as_bytes()
            )[..24]
        );
        Ok(self.signed(body, &key))
    }
}

/// How the source's callbacks authenticate, as a subscription is told:
/// the same values the source verifies with. An HMAC secret read as base64
/// cannot be handed over as Tripletex takes it (text).
fn callback(c: &Config) -> Result<subscriptions::Callback, String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(match c.auth.as_deref() {
        Some("header") => subscriptions::Callback::Header {
            name: text(&c.header_name),
            value: text(&c.header_value),
        },
        Some("basic") => subscriptions::Callback::Basic {
            username: text(&c.username),
            password: text(&c.password),
        },
        Some("token") => subscriptions::Callback::Token {
            param: c.token_param.clone(),
            token: text(&c.token),
        },
        Some("hmac") if c.encoding == SecretEncoding::Utf8 => subscriptions::Callback::Hmac {
            secret: text(&c.secret),
        },
        _ => {
            return Err(
                "tripletex settings: a subscription's hmacSharedSecret is text: \
                 with encoding other than utf8 it cannot be managed here"
                    .into(),
            )
        }
    })
}

/// A sample body for a (lowercase) event name.
pub fn sample_body(event: &str) -> Value {
    let (object, verb) = event.split_once('.').unwrap_or((event, ""));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let id = 1000 + now_ms % 1_000_000;
    let value = match (object, verb) {
        (_, "delete") => Value::Null,
        ("invoice", _) => {
            json!({"id": id, "version": 1, "invoiceNumber": 10042, "invoiceDate": "2025-04-01",
            "amount": 1250.0, "currency": {"id": 1, "code": "NOK"}, "customer": {"id": 77}})
        }
        ("product", _) => {
            json!({"id": id, "version": (now_ms / 1000) % 100_000, "name": "Consulting hour", "number": "P-100",
            "priceExcludingVatCurrency": 1200.0})
        }
        ("customer" | "supplier", _) => {
            json!({"id": id, "version": (now_ms / 1000) % 100_000, "name": "Nordlys AS",
            "organizationNumber": "987654321", "email": "post@nordlys.example"})
        }
        ("employee" | "contact", _) => {
            json!({"id": id, "version": (now_ms / 1000) % 100_000, "firstName": "Kari", "lastName": "Nordmann",
            "email": "kari@nordlys.example"})
        }
        ("notification", _) => {
            json!({"id": id, "title": "Invoice paid", "message": "Invoice 10042 was paid"})
        }
        ("voucherstatus", _) => json!({"id": id, "status": "READY"}),
        _ => json!({"id": id, "version": (now_ms / 1000) % 100_000}),
    };
    json!({"subscriptionId": 4321, "event": event, "id": id, "value": value})
}

/// One fuzzing input: bytes as a request (see
/// `switchyard_plugin_support::fuzz`) through `verify`, and its body
/// through normalization directly (a fuzzer cannot forge a signature).
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: std::sync::OnceLock<Tripletex> = std::sync::OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Tripletex::create(Host::detached(), json!({"auth": "token", "token": "fuzz"}))
            .expect("fuzz settings")
    });
    let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    let _ = normalize(
        &r.body,
        r.headers
            .first()
            .and_then(|(_, v)| std::str::from_utf8(v).ok()),
        true,
    );
}

switchyard_plugin_api::export_provider!("tripletex", Tripletex);

mod subscriptions;

#[cfg(test)]
mod tests;
