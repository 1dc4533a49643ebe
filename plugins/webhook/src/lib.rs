//! # Generic webhook provider plugin
//!
//! Verifies any provider's webhooks by configuration alone and turns them
//! into events. One `verify` scheme per source:
//!
//! - `hmac`: an HMAC (SHA-1/256/512) of a signed content made of the raw body
//!   and, optionally, a timestamp (`signed_content = "{timestamp}.{body}"`),
//!   read from a header as hex or base64, with an optional prefix
//!   (`sha256=`), or from a `k=v,k=v` header (`signature_key`, Stripe's
//!   `v1`); a timestamp from a header or from that same structured header,
//!   within ±`tolerance_secs`;
//! - `standard-webhooks`: the Standard Webhooks (Svix) scheme, several
//!   secrets at once;
//! - `token`: a shared token in a header or in the query;
//! - `basic`: HTTP Basic credentials;
//! - `none`: nothing (for use with the source's `allow_ips` only), to be
//!   said out loud.
//!
//! The event type comes from a header (`event_type_header`), a JSON pointer
//! into the body (`event_type`), or both joined with a dot.
//!
//! A source may also answer its provider's handshake (`handshake`: Slack's
//! `url_verification`, Meta's `hub.challenge`, Microsoft Graph's
//! `validationToken`, Zoom's `endpoint.url_validation`, Dropbox's
//! `challenge`, CloudEvents' `OPTIONS`, or a pointer form; see
//! `handshake.rs`) and answer its events with a status and body of its own
//! (`success_status`, `success_body`). README.md has a recipe per sender.

mod fuzz;
mod handshake;
mod pointer;
mod signature;

use handshake::Handshake;
use signature::HmacCheck;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_plugin_api::{
    Answer, EventDraft, EventType, Host, Provider, Rejection, Request, SampleError, SampleRequest,
    VerifyOutput,
};
use switchyard_plugin_support::hmac::{equal, Algorithm, Encoding};
use switchyard_plugin_support::standard_webhooks::{self, Headers};
use switchyard_plugin_support::{
    base64, decode_base64, percent_encode, unix_now, Secret, SecretEncoding,
};

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Scheme {
    Hmac,
    StandardWebhooks,
    Token,
    Basic,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    verify: Option<Scheme>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    encoding: Option<SecretEncoding>,
    // hmac
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    signature_header: Option<String>,
    #[serde(default)]
    signature_encoding: Encoding,
    signature_prefix: Option<String>,
    signature_key: Option<String>,
    timestamp_key: Option<String>,
    timestamp_header: Option<String>,
    #[serde(default = "default_signed_content")]
    signed_content: String,
    #[serde(default = "default_tolerance")]
    tolerance_secs: u64,
    // token
    token: Option<String>,
    token_header: Option<String>,
    token_param: Option<String>,
    token_pointer: Option<String>,
    // basic
    username: Option<String>,
    password: Option<String>,
    // events
    event_type: Option<String>,
    event_type_header: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    dedup_header: Option<String>,
    dedup_pointer: Option<String>,
    // handshakes and answers
    handshake: Option<handshake::Setting>,
    verify_token: Option<String>,
    allowed_origins: Option<Vec<String>>,
    allowed_rate: Option<Value>,
    success_status: Option<u16>,
    success_body: Option<String>,
    success_content_type: Option<String>,
    // the catalog: a JSON Schema file per event type
    #[serde(default)]
    schemas: std::collections::BTreeMap<String, String>,
}

/// The catalog the source's `schemas` name: each type's JSON Schema read
/// from its file (a path as written: relative to the working directory).
fn catalog_of(
    files: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<EventType>, String> {
    files
        .iter()
        .map(|(kind, file)| {
            let text = std::fs::read_to_string(file).map_err(|e| {
                format!("webhook settings: schemas.{kind}: cannot read {file}: {e}")
            })?;
            let schema: Value = serde_json::from_str(&text).map_err(|e| {
                format!("webhook settings: schemas.{kind}: {file} is not JSON: {e}")
            })?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err(format!(
                    "webhook settings: schemas.{kind}: {file} is not a JSON Schema (an object)"
                ));
            }
            let description = schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(EventType::new(kind.clone(), description, schema))
        })
        .collect()
}

fn default_algorithm() -> Algorithm {
    Algorithm::Sha256
}

fn default_signed_content() -> String {
    "{body}".into()
}

fn default_tolerance() -> u64 {
    300
}

#[derive(Debug)]
enum Check {
    Hmac(HmacCheck),
    Standard(Vec<Secret>),
    Token {
        token: String,
        header: Option<String>,
        param: Option<String>,
        /// Where in the body (every value a `*` pointer reaches).
        pointer: Option<String>,
    },
    Basic {
        username: String,
        password: String,
    },
    None,
}

pub struct Webhook {
    host: Host,
    /// The event types `schemas` names, with their schemas.
    catalog: Vec<EventType>,
    check: Check,
    tolerance_secs: i64,
    event_type: Option<String>,
    event_type_header: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    dedup_header: Option<String>,
    dedup_pointer: Option<String>,
    handshake: Option<Handshake>,
    /// What events are answered with, when not the host's answer.
    success: Option<Answer>,
    methods: &'static [&'static str],
}

/// How a request is authenticated, from `verify` and its settings (taken
/// out of `c`).
fn check_of(c: &mut Config) -> Result<Check, String> {
    let scheme = c.verify.ok_or(
        "webhook settings: choose verify = \"hmac\", \"standard-webhooks\", \"token\", \
         \"basic\" or \"none\"",
    )?;
    let default_encoding = match scheme {
        Scheme::StandardWebhooks => SecretEncoding::Whsec,
        _ => SecretEncoding::Utf8,
    };
    let secrets = c
        .secret
        .iter()
        .chain(c.secrets.iter())
        .map(|s| {
            Secret::decode(
                s,
                c.encoding.unwrap_or(default_encoding),
                "webhook settings: secret",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match scheme {
        Scheme::Hmac => Check::Hmac(hmac_check(c, secrets)?),
        Scheme::StandardWebhooks => {
            if secrets.is_empty() {
                return Err(
                    "webhook settings: verify = \"standard-webhooks\" needs secret (whsec_…)"
                        .into(),
                );
            }
            Check::Standard(secrets)
        }
        Scheme::Token => {
            let token = need(c.token.take(), "token", "token")?;
            let places = [
                c.token_header.is_some(),
                c.token_param.is_some(),
                c.token_pointer.is_some(),
            ];
            if places.iter().filter(|p| **p).count() != 1 {
                return Err(
                    "webhook settings: verify = \"token\" needs one of token_header, \
                            token_param or token_pointer"
                        .into(),
                );
            }
            if let Some(p) = &c.token_pointer {
                pointer::check(p)?;
            }
            Check::Token {
                token,
                header: c.token_header.take(),
                param: c.token_param.take(),
                pointer: c.token_pointer.take(),
            }
        }
        Scheme::Basic => Check::Basic {
            username: need(c.username.take(), "username", "basic")?,
            password: need(c.password.take(), "password", "basic")?,
        },
        Scheme::None => Check::None,
    })
}

/// `verify = "hmac"`: the signature's header, encoding and signed content.
fn hmac_check(c: &mut Config, secrets: Vec<Secret>) -> Result<HmacCheck, String> {
    if secrets.is_empty() {
        return Err("webhook settings: verify = \"hmac\" needs secret (or secrets)".into());
    }
    if c.timestamp_key.is_some() && c.signature_key.is_none() {
        return Err(
            "webhook settings: timestamp_key reads the signature header's \
                    k=v pairs; set signature_key too"
                .into(),
        );
    }
    let check = HmacCheck {
        secrets,
        algorithm: c.algorithm,
        header: need(c.signature_header.take(), "signature_header", "hmac")?,
        encoding: c.signature_encoding,
        prefix: c.signature_prefix.take().filter(|p| !p.is_empty()),
        key: c.signature_key.take(),
        timestamp_key: c.timestamp_key.take(),
        timestamp_header: c.timestamp_header.take(),
        content: std::mem::take(&mut c.signed_content),
    };
    if !check.content.contains("{body}") {
        return Err("webhook settings: signed_content must contain {body}".into());
    }
    if check.content.contains("{timestamp}")
        && check.timestamp_key.is_none()
        && check.timestamp_header.is_none()
    {
        return Err("webhook settings: signed_content uses {timestamp}; \
                    set timestamp_header or timestamp_key"
            .into());
    }
    Ok(check)
}

/// The handshake a source answers, if any, with the settings it reads;
/// those settings without a handshake that reads them are refused.
fn handshake_of(c: &mut Config, check: &Check) -> Result<Option<Handshake>, String> {
    let extra = handshake::Extra {
        verify_token: c.verify_token.take(),
        allowed_origins: c.allowed_origins.take(),
        allowed_rate: c.allowed_rate.take(),
        hmac_secret: match check {
            Check::Hmac(h) => Some(h.secrets[0].bytes().to_vec()),
            _ => None,
        },
    };
    match c.handshake.take() {
        Some(setting) => Handshake::new(setting, extra).map(Some),
        None if extra.verify_token.is_some() => {
            Err("webhook settings: verify_token is read by handshake = \"meta\"".into())
        }
        None if extra.allowed_origins.is_some() || extra.allowed_rate.is_some() => Err(
            "webhook settings: allowed_origins and allowed_rate are read by \
             handshake = \"cloudevents\""
                .into(),
        ),
        None => Ok(None),
    }
}

fn need(v: Option<String>, what: &str, scheme: &str) -> Result<String, String> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| format!("webhook settings: verify = \"{scheme}\" needs {what}"))
}

impl Webhook {
    fn authenticate(&self, request: &Request<'_>) -> Result<(), Rejection> {
        match &self.check {
            Check::Hmac(h) => h.verify(request, unix_now(), self.tolerance_secs),
            Check::Standard(secrets) => {
                let h = Headers::find(request).ok_or_else(|| {
                    Rejection::unauthenticated("missing webhook-id/-timestamp/-signature headers")
                })?;
                standard_webhooks::verify(
                    secrets,
                    &h,
                    request.body,
                    unix_now(),
                    self.tolerance_secs,
                )
            }
            Check::Token {
                token,
                pointer: Some(p),
                ..
            } => {
                let body: Value = serde_json::from_slice(request.body)
                    .map_err(|_| Rejection::unauthenticated("no token in the body (not JSON)"))?;
                let found = pointer::all(&body, p);
                if found.is_empty() {
                    return Err(Rejection::unauthenticated(format!("no token at {p}")));
                }
                // Every one must match: a batch is as good as its worst item.
                let mut all = true;
                for v in found {
                    let got = v.as_str().unwrap_or_default();
                    all &= equal(got.as_bytes(), token.as_bytes());
                }
                if !all {
                    return Err(Rejection::unauthenticated(format!(
                        "the token at {p} does not match"
                    )));
                }
                Ok(())
            }
            Check::Token {
                token,
                header,
                param,
                pointer: None,
            } => {
                let got = match (header, param) {
                    (Some(h), _) => request.header_str(h).map(str::to_owned),
                    (None, Some(p)) => request
                        .query_pairs()
                        .into_iter()
                        .find(|(k, _)| k == p)
                        .map(|(_, v)| v),
                    (None, None) => None,
                }
                .ok_or_else(|| Rejection::unauthenticated("no token in the request"))?;
                let got = got.strip_prefix("Bearer ").unwrap_or(&got);
                if !equal(got.as_bytes(), token.as_bytes()) {
                    return Err(Rejection::unauthenticated("token does not match"));
                }
                Ok(())
            }
            Check::Basic { username, password } => {
                let creds = request
                    .header_str("authorization")
                    .and_then(|v| v.split_once(' '))
                    .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                    .and_then(|(_, b)| decode_base64(b.trim()))
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .ok_or_else(|| Rejection::unauthenticated("no Basic credentials"))?;
                let (u, p) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
                if !(equal(u.as_bytes(), username.as_bytes())
                    & equal(p.as_bytes(), password.as_bytes()))
                {
                    return Err(Rejection::unauthenticated("Basic credentials do not match"));
                }
                Ok(())
            }
            Check::None => Ok(()),
        }
    }

    /// Turns an authenticated request into its event.
    pub fn normalize(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        let body: Value = serde_json::from_slice(request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(request.body).into_owned()));
        let mut parts = Vec::new();
        if let Some(h) = &self.event_type_header {
            let v = request
                .header_str(h)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Rejection::malformed(format!("missing {h} header (the event type)"))
                })?;
            parts.push(v.to_string());
        }
        if let Some(p) = &self.event_type {
            if let Some(v) = pointer::text(&body, p) {
                parts.push(v);
            }
        }
        let kind = if parts.is_empty() {
            "unknown".to_string()
        } else {
            parts.join(".")
        };
        let mut ev = EventDraft::new(kind, body.clone());
        ev.subject = self
            .subject
            .as_deref()
            .and_then(|p| pointer::text(&body, p));
        ev.time = self.time.as_deref().and_then(|p| pointer::text(&body, p));
        ev.dedup_key = self
            .dedup_header
            .as_deref()
            .and_then(|h| request.header_str(h))
            .filter(|v| !v.is_empty())
            .map(|v| format!("header:{v}"))
            .or_else(|| {
                self.dedup_pointer
                    .as_deref()
                    .and_then(|p| pointer::text(&body, p))
                    .map(|v| format!("body:{v}"))
            });
        let mut ext = Map::new();
        if let Some(h) = &self.event_type_header {
            ext.insert("type_header".into(), Value::String(h.clone()));
        }
        ev.extensions = ext;
        Ok(vec![ev])
    }
}

impl Provider for Webhook {
    fn catalog(&self) -> Vec<EventType> {
        self.catalog.clone()
    }

    fn create(host: Host, config: Value) -> Result<Self, String> {
        let mut c: Config =
            serde_json::from_value(config).map_err(|e| format!("webhook settings: {e}"))?;
        let check = check_of(&mut c)?;
        if c.tolerance_secs == 0 {
            return Err("webhook settings: tolerance_secs must be at least 1".into());
        }
        for p in [&c.event_type, &c.subject, &c.time, &c.dedup_pointer]
            .into_iter()
            .flatten()
        {
            pointer::check(p)?;
        }
        let handshake = handshake_of(&mut c, &check)?;
        let success = handshake::success(c.success_status, c.success_body, c.success_content_type)?;
        // Both are answers only a host of ABI 1.5 or later gives; an older
        // one would route a handshake as an event (a host of 1.1 or older,
        // or none in unit tests, does not say).
        if handshake.is_some() || success.is_some() {
            if let Some((major, minor)) = host.abi().filter(|&(_, minor)| minor < 5) {
                return Err(format!(
                    "webhook settings: handshake and success_* need a switchyard of plugin ABI 1.5 \
                     or later; this one speaks {major}.{minor}"
                ));
            }
        }
        let methods = handshake.as_ref().map_or(&["POST"][..], Handshake::methods);
        let catalog = catalog_of(&c.schemas)?;
        Ok(Webhook {
            catalog,
            host,
            check,
            tolerance_secs: c.tolerance_secs.min(i64::MAX as u64) as i64,
            event_type: c.event_type,
            event_type_header: c.event_type_header,
            subject: c.subject,
            time: c.time,
            dedup_header: c.dedup_header,
            dedup_pointer: c.dedup_pointer,
            handshake,
            success,
            methods,
        })
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        self.receive(request).map(|out| out.events)
    }

    /// A handshake the protocol does not sign is answered first; then the
    /// request is authenticated; then a signed handshake is answered, or
    /// the events are (with the source's own answer, if it has one).
    fn receive(&self, request: &Request<'_>) -> Result<VerifyOutput, Rejection> {
        if let Some(handshake) = &self.handshake {
            if let Some(answered) = handshake.unsigned(request) {
                return answered;
            }
        }
        if request.method != "POST" {
            return Err(Rejection::malformed(format!(
                "a {} that is not this source's handshake (events come as a POST)",
                request.method
            )));
        }
        self.authenticate(request)?;
        if let Some(handshake) = &self.handshake {
            if let Ok(body) = serde_json::from_slice::<Value>(request.body) {
                if let Some(answered) = handshake.signed(&body) {
                    self.host.debug("verified, a handshake");
                    return answered;
                }
            }
        }
        let events = self.normalize(request)?;
        self.host.debug("verified, 1 event");
        Ok(VerifyOutput::events(events).with_answer(self.success.clone()))
    }

    /// The header its check reads: the signature, the token's header, or
    /// `Authorization` for Basic (always redacted by the host anyway).
    fn credential_headers(&self) -> Vec<String> {
        match &self.check {
            Check::Hmac(h) => vec![h.header.clone()],
            Check::Standard(_) => vec!["webhook-signature".into(), "svix-signature".into()],
            Check::Token {
                header: Some(h), ..
            } => vec![h.clone()],
            Check::Token { header: None, .. } | Check::Basic { .. } | Check::None => Vec::new(),
        }
    }

    fn methods(&self) -> &[&'static str] {
        self.methods
    }

    /// A sample for any event name: a small JSON body whose type field (or
    /// type header) says `event`, authenticated as configured.
    fn sample(&self, event: &str) -> Result<SampleRequest, SampleError> {
        let mut body = Value::Object(Map::new());
        if let Check::Token {
            token,
            pointer: Some(p),
            ..
        } = &self.check
        {
            pointer::set(&mut body, p, Value::String(token.clone()));
        }
        if let Some(p) = &self.event_type {
            pointer::set(&mut body, p, Value::String(event.to_string()));
        }
        let id = format!(
            "sample_{}",
            &switchyard_plugin_support::sha256_hex(
                switchyard_plugin_support::rfc3339_now().as_bytes()
            )[..16]
        );
        if let Some(p) = &self.dedup_pointer {
            pointer::set(&mut body, p, Value::String(id.clone()));
        }
        body["sample"] = Value::Bool(true);
        let body = serde_json::to_string(&body).map_err(|e| SampleError::Failed(e.to_string()))?;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(h) = &self.event_type_header {
            headers.push((h.to_ascii_lowercase(), event.to_string()));
        }
        if let Some(h) = &self.dedup_header {
            headers.push((h.to_ascii_lowercase(), id.clone()));
        }
        let mut query = String::new();
        let now = unix_now();
        match &self.check {
            Check::Hmac(h) => {
                let ts = now.to_string();
                if let Some(th) = &h.timestamp_header {
                    headers.push((th.to_ascii_lowercase(), ts.clone()));
                }
                headers.push((h.header.to_ascii_lowercase(), h.sign(&ts, body.as_bytes())));
            }
            Check::Standard(secrets) => {
                headers.push(("webhook-id".into(), id.clone()));
                headers.push(("webhook-timestamp".into(), now.to_string()));
                headers.push((
                    "webhook-signature".into(),
                    standard_webhooks::sign(&secrets[0], &id, now, body.as_bytes()),
                ));
            }
            Check::Token {
                token,
                header,
                param,
                pointer: p,
            } => match (header, param, p) {
                (Some(h), _, _) => headers.push((h.to_ascii_lowercase(), token.clone())),
                (None, Some(p), _) => query = format!("{p}={}", percent_encode(token)),
                // In the body, set above.
                (None, None, _) => {}
            },
            Check::Basic { username, password } => headers.push((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                ),
            )),
            Check::None => {}
        }
        Ok(SampleRequest {
            method: "POST".into(),
            query,
            headers,
            body,
        })
    }
}

#[doc(hidden)]
pub use fuzz::{fuzz_handshakes, fuzz_one};

switchyard_plugin_api::export_provider!("webhook", Webhook);

#[cfg(test)]
mod tests;
