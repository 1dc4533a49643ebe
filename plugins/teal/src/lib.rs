//! # Teal provider plugin
//!
//! Verifies Teal webhooks and turns them into Switchyard events.
//!
//! Verification, in order, over the raw body bytes:
//! 1. `X-Teal-Signature` is HMAC-SHA512 of the raw body under
//!    `signing_secret`: lowercase hex as Teal sends it; hex in any case and
//!    base64 are accepted too. Compared in constant time.
//! 2. When the delivery is encrypted (an `X-Teal-Encryption-IV` header), the
//!    body is base64 of AES-256-GCM ciphertext followed by its 16-byte tag,
//!    under `encryption_key` (base64 of 32 bytes), with the header's 12-byte
//!    IV. Teal encrypts, then signs: the signature is checked over the
//!    encrypted body first, and only an authentic body is decrypted.
//!
//! A source needs `signing_secret`, `encryption_key`, or both. With only an
//! encryption key, the GCM tag is what authenticates a delivery (only a
//! holder of the key can produce one), and unencrypted deliveries are refused.
//!
//! Normalization: `teal.<event>` (e.g. `teal.user-payroll-submitted`),
//! `subject` = `user_id`, `time` from `timestamp`, the whole (decrypted) body
//! as `data`. See README.md.

mod catalog;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

use switchyard_plugin_api::{
    EventDraft, Host, Provider, RejectKind, Rejection, Request, SampleError, SampleRequest,
    Subscription, SubscriptionCall, SubscriptionError,
};
use switchyard_plugin_support::hmac::{self, Algorithm, Encoding};
use switchyard_plugin_support::{base64, decode_base64, dedup_key, hex, Secret, SecretEncoding};

pub const SIGNATURE_HEADER: &str = "X-Teal-Signature";
pub const IV_HEADER: &str = "X-Teal-Encryption-IV";

/// The event names Teal documents; `sample` knows each of them.
pub const EVENTS: [&str; 3] = [
    "user-payroll-submitted",
    "user-bank-statement-submitted",
    "user-hmrc-data-submitted",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The subscription's `signing_secret`.
    #[serde(default)]
    signing_secret: Option<String>,
    /// How to read `signing_secret`: `utf8` (default) or `base64`.
    #[serde(default)]
    encoding: SecretEncoding,
    /// The subscription's `encryption_key`: base64 of 32 bytes.
    #[serde(default)]
    encryption_key: Option<String>,
    /// Refuse deliveries that are not encrypted (when a key is set).
    #[serde(default)]
    require_encryption: Option<bool>,
    /// The webhook to keep at Teal (`switchyard subscriptions`).
    #[serde(default)]
    subscription: Option<subscriptions::Settings>,
}

pub struct Teal {
    host: Host,
    signing_secret: Option<Secret>,
    cipher: Option<Aes256Gcm>,
    require_encryption: bool,
    subscriptions: Option<subscriptions::Subscriptions>,
}

impl Teal {
    /// Decrypts a body: base64 text of ciphertext ‖ tag, IV from the header.
    fn decrypt(&self, body: &[u8], iv_b64: &str) -> Result<Vec<u8>, Rejection> {
        let cipher = self.cipher.as_ref().ok_or_else(|| {
            Rejection::new(
                RejectKind::Decryption,
                "encrypted delivery (X-Teal-Encryption-IV) but no encryption_key is configured",
            )
        })?;
        let iv: [u8; 12] = decode_base64(iv_b64.trim())
            .and_then(|iv| iv.try_into().ok())
            .ok_or_else(|| {
                Rejection::new(
                    RejectKind::Decryption,
                    "X-Teal-Encryption-IV is not base64 of 12 bytes",
                )
            })?;
        let text = std::str::from_utf8(body)
            .ok()
            .map(|t| t.trim())
            .and_then(decode_base64)
            .ok_or_else(|| {
                Rejection::new(RejectKind::Decryption, "encrypted body is not base64")
            })?;
        if text.len() < 16 {
            return Err(Rejection::new(
                RejectKind::Decryption,
                "encrypted body is shorter than its tag",
            ));
        }
        cipher
            .decrypt(&Nonce::from(iv), text.as_ref())
            .map_err(|_| {
                Rejection::new(
                    RejectKind::Decryption,
                    "decryption failed: wrong key, IV or tag, or a tampered body",
                )
            })
    }

    /// Encrypts a plaintext as Teal does: (IV base64, body base64).
    pub fn encrypt(&self, plaintext: &[u8]) -> Option<(String, String)> {
        let cipher = self.cipher.as_ref()?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, plaintext).ok()?;
        Some((base64(&nonce), base64(&sealed)))
    }

    /// The `X-Teal-Signature` Teal would send for a raw body.
    pub fn signature(&self, raw_body: &[u8]) -> Option<String> {
        let secret = self.signing_secret.as_ref()?;
        Some(hex(&hmac::mac(
            Algorithm::Sha512,
            secret.bytes(),
            &[raw_body],
        )))
    }
}

/// Parses a decrypted or plain body into events.
pub fn normalize(body: &[u8]) -> Result<Vec<EventDraft>, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::malformed(format!("body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Rejection::malformed("body is JSON but not an object"))?;
    let event = obj
        .get("event")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| Rejection::malformed("body has no event name"))?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let timestamp = s("timestamp");
    // What identifies the submission: its entry, else its documents.
    let documents: Vec<&str> = match obj.get("document_external_ids") {
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let documents = documents.join(",");
    let entry = [s("entry_id"), s("document_external_id"), documents.as_str()]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or("");
    let mut ev = EventDraft::new(event, value.clone());
    ev.subject = Some(s("user_id").to_string()).filter(|u| !u.is_empty());
    ev.time = normalize_time(timestamp);
    ev.dedup_key = Some(dedup_key(&[event, s("user_id"), entry, timestamp]));
    let mut ext = Map::new();
    for key in ["entry_id", "account_id", "document_external_id"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            ext.insert(key.into(), v.clone());
        }
    }
    ext.insert("has_payload".into(), json!(obj.contains_key("payload")));
    ev.extensions = ext;
    Ok(vec![ev])
}

fn normalize_time(s: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    t.format(&Rfc3339).ok()
}

impl Provider for Teal {
    fn catalog(&self) -> Vec<switchyard_plugin_api::EventType> {
        catalog::catalog()
    }

    fn create(host: Host, config: Value) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("teal settings: {e}"))?;
        let signing_secret = config
            .signing_secret
            .as_deref()
            .map(|s| Secret::decode(s, config.encoding, "teal settings: signing_secret"))
            .transpose()?;
        let cipher = config
            .encryption_key
            .as_deref()
            .map(|k| {
                decode_base64(k.trim())
                    .filter(|k| k.len() == 32)
                    .ok_or("teal settings: encryption_key must be base64 of 32 bytes")
                    .map(|k| Aes256Gcm::new_from_slice(&k).expect("32-byte key"))
            })
            .transpose()?;
        if signing_secret.is_none() && cipher.is_none() {
            return Err("teal settings: set signing_secret (the subscription's), \
                        encryption_key, or both; a source cannot accept unsigned deliveries"
                .into());
        }
        let require_encryption = match config.require_encryption {
            Some(true) if cipher.is_none() => {
                return Err("teal settings: require_encryption needs encryption_key".into())
            }
            Some(r) => r,
            // Without a signing secret, only encryption authenticates.
            None => signing_secret.is_none(),
        };
        if signing_secret.is_none() && !require_encryption {
            return Err(
                "teal settings: without signing_secret, require_encryption cannot be false".into(),
            );
        }
        let subscriptions = config
            .subscription
            .map(|s| {
                subscriptions::Subscriptions::new(
                    s,
                    config.signing_secret.clone(),
                    config.encryption_key.clone(),
                )
            })
            .transpose()?;
        Ok(Teal {
            host,
            signing_secret,
            cipher,
            require_encryption,
            subscriptions,
        })
    }

    fn credential_headers(&self) -> Vec<String> {
        vec![SIGNATURE_HEADER.to_string()]
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        if let Some(secret) = &self.signing_secret {
            let sig = request
                .header_str(SIGNATURE_HEADER)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Rejection::unauthenticated("missing X-Teal-Signature header"))?;
            if !hmac::verify(
                Algorithm::Sha512,
                secret.bytes(),
                &[request.body],
                sig,
                Encoding::Any,
            ) {
                return Err(Rejection::unauthenticated(
                    "X-Teal-Signature does not match the body",
                ));
            }
        }
        let events = match request.header_str(IV_HEADER) {
            Some(iv) => normalize(&self.decrypt(request.body, iv)?)?,
            None if self.require_encryption => {
                // Without a signing secret this is the authentication failing.
                return Err(Rejection::unauthenticated(
                    "delivery is not encrypted (no X-Teal-Encryption-IV) and require_encryption is set",
                ));
            }
            None => normalize(request.body)?,
        };
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
                "this source declares no Teal webhook: add [sources.NAME.subscription] with \
                 api_url, api_key and events (see plugins/teal/README.md)"
                    .into(),
            )),
        }
    }

    fn sample(&self, name: &str) -> Result<SampleRequest, SampleError> {
        let body = sample_body(name).ok_or_else(|| {
            SampleError::Unknown(format!(
                "no Teal sample named {name:?}; known: {} (each also as <name>+payload), \
                 user-payroll-submitted+payslip",
                EVENTS.join(", ")
            ))
        })?;
        let plain = serde_json::to_string(&body).map_err(|e| SampleError::Failed(e.to_string()))?;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        let body = match self.encrypt(plain.as_bytes()) {
            Some((iv, sealed)) => {
                headers[0].1 = "text/plain".into();
                headers.push((IV_HEADER.to_ascii_lowercase(), iv));
                sealed
            }
            None => plain,
        };
        if let Some(sig) = self.signature(body.as_bytes()) {
            headers.push((SIGNATURE_HEADER.to_ascii_lowercase(), sig));
        }
        Ok(SampleRequest {
            method: "POST".into(),
            query: String::new(),
            headers,
            body,
        })
    }
}

/// A sample body: `event`, `event+payload`, or `user-payroll-submitted+payslip`.
pub fn sample_body(name: &str) -> Option<Value> {
    let (event, variant) = match name.split_once('+') {
        Some((e, v)) => (e, Some(v)),
        None => (name, None),
    };
    if !EVENTS.contains(&event) {
        return None;
    }
    let now = switchyard_plugin_support::rfc3339_now();
    let user = "4708334c-70b3-437d-8e46-91ff5c9a8d7d";
    let unique = &switchyard_plugin_support::sha256_hex(now.as_bytes())[..12];
    let mut body = json!({
        "event": event,
        "user_id": user,
        "timestamp": now,
    });
    match (event, variant) {
        ("user-bank-statement-submitted", None | Some("payload")) => {
            let doc = format!("doc-{unique}");
            body["entry_id"] = Value::Null;
            body["account_id"] = json!("c9e1cd05-82b5-414c-b3de-534787cc5ff9");
            body["document_external_ids"] = json!([doc]);
            if variant == Some("payload") {
                body["payload"] = json!({"bank_statement_submissions": [{
                    "document_external_id": doc,
                    "document_filename": "statement-2025-03.pdf",
                    "period_start": "2025-03-01",
                    "period_end": "2025-03-31",
                    "currency": "GBP",
                    "transactions": [{"date": "2025-03-03", "amount": -42.5, "description": "Coffee beans"}]
                }]});
            }
        }
        (_, None | Some("payload")) => {
            body["entry_id"] = json!(format!("3a839179-b8aa-4281-bcdd-{unique}"));
            body["account_id"] = json!("c9e1cd05-82b5-414c-b3de-534787cc5ff9");
            if variant == Some("payload") {
                body["payload"] = json!({
                    "employer": "Acme Ltd",
                    "pay_date": "2025-03-28",
                    "gross_pay": 3250.0,
                    "net_pay": 2544.18,
                    "tax": 420.2,
                    "national_insurance": 285.62,
                    "currency": "GBP"
                });
            }
        }
        ("user-payroll-submitted", Some("payslip")) => {
            body["entry_id"] = json!(format!("3a839179-b8aa-4281-bcdd-{unique}"));
            body["account_id"] = Value::Null;
            body["document_external_id"] = json!(format!("doc-{unique}"));
            body["document_filename"] = json!("payslip-2025-03.pdf");
        }
        _ => return None,
    }
    Some(body)
}

/// One fuzzing input: bytes as a request (see
/// `switchyard_plugin_support::fuzz`) through `verify`, and its body
/// through normalization directly (a fuzzer cannot forge a signature).
/// Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: std::sync::OnceLock<Teal> = std::sync::OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Teal::create(Host::detached(), json!({"signing_secret": "fuzz", "encryption_key": "7/PxZATSzWbQkS8ZjSt0f+bTMt9oQ6jkm0aYFe3NN24="}))
            .expect("fuzz settings")
    });
    let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    let _ = normalize(&r.body);
    let _ = p.decrypt(&r.body, "vdBbe9Tk7aqo1pZi");
}

switchyard_plugin_api::export_provider!("teal", Teal);

mod subscriptions;

#[cfg(test)]
mod tests;
