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
//! into the body (`event_type`), or both joined with a dot. README.md has
//! recipes for GitHub, Stripe and Slack.

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_plugin_api::{
    EventDraft, Host, Provider, Rejection, Request, SampleError, SampleRequest,
};
use switchyard_plugin_support::hmac::{self, equal, Algorithm, Encoding};
use switchyard_plugin_support::standard_webhooks::{self, Headers};
use switchyard_plugin_support::{
    base64, decode_base64, hex, percent_encode, unix_now, Secret, SecretEncoding,
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
struct HmacCheck {
    secrets: Vec<Secret>,
    algorithm: Algorithm,
    header: String,
    encoding: Encoding,
    prefix: Option<String>,
    key: Option<String>,
    timestamp_key: Option<String>,
    timestamp_header: Option<String>,
    content: String,
}

impl HmacCheck {
    fn uses_timestamp(&self) -> bool {
        self.content.contains("{timestamp}")
            || self.timestamp_key.is_some()
            || self.timestamp_header.is_some()
    }

    /// The signed content: the template with `{timestamp}` and `{body}` filled.
    fn content(&self, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + self.content.len());
        let mut rest = self.content.as_str();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{body}") {
                out.extend_from_slice(body);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{timestamp}") {
                out.extend_from_slice(timestamp.as_bytes());
                rest = r;
            } else {
                let c = rest.chars().next().expect("not empty");
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mac = hmac::mac(
            self.algorithm,
            self.secrets[0].bytes(),
            &[&self.content(timestamp, body)],
        );
        let text = match self.encoding {
            Encoding::Base64 => base64(&mac),
            Encoding::Hex | Encoding::Any => hex(&mac),
        };
        let text = format!("{}{text}", self.prefix.as_deref().unwrap_or(""));
        match (&self.key, &self.timestamp_key) {
            (Some(k), Some(t)) => format!("{t}={timestamp},{k}={text}"),
            (Some(k), None) => format!("{k}={text}"),
            _ => text,
        }
    }

    fn verify(&self, request: &Request<'_>, now: i64, tolerance: i64) -> Result<(), Rejection> {
        let header = request
            .header_str(&self.header)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Rejection::unauthenticated(format!("missing {} header", self.header)))?;
        // The candidate signatures, and the timestamp if the header holds one.
        let (candidates, mut timestamp): (Vec<&str>, Option<&str>) = match &self.key {
            Some(key) => {
                let pairs: Vec<(&str, &str)> = header
                    .split(',')
                    .filter_map(|p| p.trim().split_once('='))
                    .collect();
                let sigs = pairs
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| *v)
                    .collect();
                let ts = self
                    .timestamp_key
                    .as_ref()
                    .and_then(|t| pairs.iter().find(|(k, _)| k == t).map(|(_, v)| *v));
                (sigs, ts)
            }
            None => (header.split_whitespace().collect(), None),
        };
        if let Some(h) = &self.timestamp_header {
            timestamp = request.header_str(h);
        }
        let timestamp = if self.uses_timestamp() {
            let ts = timestamp
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Rejection::unauthenticated("missing signature timestamp"))?;
            let at: i64 = ts.parse().map_err(|_| {
                Rejection::unauthenticated("signature timestamp is not a Unix time")
            })?;
            if (now - at).abs() > tolerance {
                return Err(Rejection::expired(format!(
                    "signature timestamp is {}s from now, tolerance is {tolerance}s",
                    now - at
                )));
            }
            ts
        } else {
            ""
        };
        let content = self.content(timestamp, request.body);
        let len = self.algorithm.output_len();
        let received: Vec<Vec<u8>> = candidates
            .iter()
            .filter_map(|c| match &self.prefix {
                Some(p) => c.strip_prefix(p.as_str()),
                None => Some(c),
            })
            .filter_map(|c| hmac::decode_signature(c, self.encoding, len))
            .collect();
        if received.is_empty() {
            return Err(Rejection::unauthenticated(format!(
                "{} holds no signature in the configured form",
                self.header
            )));
        }
        for secret in &self.secrets {
            let expected = hmac::mac(self.algorithm, secret.bytes(), &[&content]);
            let mut matched = false;
            for sig in &received {
                matched |= equal(&expected, sig);
            }
            if matched {
                return Ok(());
            }
        }
        Err(Rejection::unauthenticated(format!(
            "{} does not match the body under any configured secret",
            self.header
        )))
    }
}

#[derive(Debug)]
enum Check {
    Hmac(HmacCheck),
    Standard(Vec<Secret>),
    Token {
        token: String,
        header: Option<String>,
        param: Option<String>,
    },
    Basic {
        username: String,
        password: String,
    },
    None,
}

pub struct Webhook {
    host: Host,
    check: Check,
    tolerance_secs: i64,
    event_type: Option<String>,
    event_type_header: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    dedup_header: Option<String>,
    dedup_pointer: Option<String>,
}

fn need(v: Option<String>, what: &str, scheme: &str) -> Result<String, String> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| format!("webhook settings: verify = \"{scheme}\" needs {what}"))
}

fn pointer_text(body: &Value, pointer: &str) -> Option<String> {
    match body.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
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
                header,
                param,
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
            if let Some(v) = pointer_text(&body, p) {
                parts.push(v);
            }
        }
        let kind = if parts.is_empty() {
            "unknown".to_string()
        } else {
            parts.join(".")
        };
        let mut ev = EventDraft::new(kind, body.clone());
        ev.subject = self.subject.as_deref().and_then(|p| pointer_text(&body, p));
        ev.time = self.time.as_deref().and_then(|p| pointer_text(&body, p));
        ev.dedup_key = self
            .dedup_header
            .as_deref()
            .and_then(|h| request.header_str(h))
            .filter(|v| !v.is_empty())
            .map(|v| format!("header:{v}"))
            .or_else(|| {
                self.dedup_pointer
                    .as_deref()
                    .and_then(|p| pointer_text(&body, p))
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
    fn create(host: Host, config: Value) -> Result<Self, String> {
        let c: Config =
            serde_json::from_value(config).map_err(|e| format!("webhook settings: {e}"))?;
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
        let check = match scheme {
            Scheme::Hmac => {
                if secrets.is_empty() {
                    return Err(
                        "webhook settings: verify = \"hmac\" needs secret (or secrets)".into(),
                    );
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
                    header: need(c.signature_header, "signature_header", "hmac")?,
                    encoding: c.signature_encoding,
                    prefix: c.signature_prefix.filter(|p| !p.is_empty()),
                    key: c.signature_key,
                    timestamp_key: c.timestamp_key,
                    timestamp_header: c.timestamp_header,
                    content: c.signed_content,
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
                Check::Hmac(check)
            }
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
                let token = need(c.token, "token", "token")?;
                if c.token_header.is_none() && c.token_param.is_none() {
                    return Err(
                        "webhook settings: verify = \"token\" needs token_header or token_param"
                            .into(),
                    );
                }
                Check::Token {
                    token,
                    header: c.token_header,
                    param: c.token_param,
                }
            }
            Scheme::Basic => Check::Basic {
                username: need(c.username, "username", "basic")?,
                password: need(c.password, "password", "basic")?,
            },
            Scheme::None => Check::None,
        };
        if c.tolerance_secs == 0 {
            return Err("webhook settings: tolerance_secs must be at least 1".into());
        }
        for p in [&c.event_type, &c.subject, &c.time, &c.dedup_pointer]
            .into_iter()
            .flatten()
        {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!(
                    "webhook settings: {p:?} is not a JSON pointer (they start with /, e.g. \"/type\")"
                ));
            }
        }
        Ok(Webhook {
            host,
            check,
            tolerance_secs: c.tolerance_secs.min(i64::MAX as u64) as i64,
            event_type: c.event_type,
            event_type_header: c.event_type_header,
            subject: c.subject,
            time: c.time,
            dedup_header: c.dedup_header,
            dedup_pointer: c.dedup_pointer,
        })
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        self.authenticate(request)?;
        let events = self.normalize(request)?;
        self.host.debug("verified, 1 event");
        Ok(events)
    }

    /// A sample for any event name: a small JSON body whose type field (or
    /// type header) says `event`, authenticated as configured.
    fn sample(&self, event: &str) -> Result<SampleRequest, SampleError> {
        let mut body = Value::Object(Map::new());
        if let Some(p) = &self.event_type {
            set_pointer(&mut body, p, Value::String(event.to_string()));
        }
        let id = format!(
            "sample_{}",
            &switchyard_plugin_support::sha256_hex(
                switchyard_plugin_support::rfc3339_now().as_bytes()
            )[..16]
        );
        if let Some(p) = &self.dedup_pointer {
            set_pointer(&mut body, p, Value::String(id.clone()));
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
            } => match (header, param) {
                (Some(h), _) => headers.push((h.to_ascii_lowercase(), token.clone())),
                (None, Some(p)) => query = format!("{p}={}", percent_encode(token)),
                (None, None) => {}
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

/// Sets a value at a JSON pointer, creating objects on the way.
fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, t) in tokens.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let map = cur.as_object_mut().expect("object");
        if i + 1 == tokens.len() {
            map.insert(t.clone(), value);
            return;
        }
        cur = map
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// One fuzzing input: bytes as a request (see
/// `switchyard_plugin_support::fuzz`) through `verify`, and its body
/// through normalization directly (a fuzzer cannot forge a signature).
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: std::sync::OnceLock<Webhook> = std::sync::OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Webhook::create(Host::detached(), serde_json::json!({"verify": "hmac", "secret": "fuzz", "signature_header": "Stripe-Signature", "signature_key": "v1", "timestamp_key": "t", "signed_content": "{timestamp}.{body}", "event_type_header": "X-Type", "event_type": "/type", "subject": "/a/b", "dedup_pointer": "/id"}))
            .expect("fuzz settings")
    });
    let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    let _ = r.with(|req| p.normalize(req));
}

switchyard_plugin_api::export_provider!("webhook", Webhook);

#[cfg(test)]
mod tests;
