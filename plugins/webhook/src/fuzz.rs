//! The generic plugin's fuzzing entry points (the `fuzz/` crate's targets,
//! and the tests that replay their corpora): bytes as a request (see
//! `switchyard_plugin_support::fuzz`), each through a configuration of the
//! plugin. Must never panic, hang or allocate without bound.
//!
//! - [`fuzz_one`]: an HMAC source (Stripe's scheme): `verify`, and the
//!   body's normalization directly (a fuzzer cannot forge a signature);
//! - [`fuzz_handshakes`]: every handshake preset (Slack, Zoom, Meta, Graph,
//!   Dropbox, CloudEvents) and the pointer form: `receive` (the unsigned
//!   checks, Graph's and Dropbox's and Meta's and CloudEvents', parse an
//!   untrusted request before anything is verified), and the signed
//!   checks' parse of the body directly, as if the signature held.

use std::sync::OnceLock;

use serde_json::{json, Value};
use switchyard_plugin_api::{Host, Provider as _};
use switchyard_plugin_support::fuzz::FuzzRequest;

use crate::Webhook;

/// One input through the HMAC source.
pub fn fuzz_one(data: &[u8]) {
    static PLUGIN: OnceLock<Webhook> = OnceLock::new();
    let p = PLUGIN.get_or_init(|| {
        Webhook::create(Host::detached(), json!({"verify": "hmac", "secret": "fuzz", "signature_header": "Stripe-Signature", "signature_key": "v1", "timestamp_key": "t", "signed_content": "{timestamp}.{body}", "event_type_header": "X-Type", "event_type": "/type", "subject": "/a/b", "dedup_pointer": "/id"}))
            .expect("fuzz settings")
    });
    let r = FuzzRequest::parse(data);
    let _ = r.with(|req| p.verify(req));
    let _ = r.with(|req| p.normalize(req));
}

/// The sources a handshake input goes through: each preset as its
/// provider is configured, and the pointer form.
pub(crate) fn handshake_sources() -> Vec<Webhook> {
    let slack = json!({"verify": "hmac", "secret": "fuzz", "signature_header": "X-Slack-Signature",
        "signature_prefix": "v0=", "timestamp_header": "X-Slack-Request-Timestamp",
        "signed_content": "v0:{timestamp}:{body}", "event_type": "/type"});
    let with = |base: &Value, extra: Value| {
        let mut v = base.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    [
        with(&slack, json!({"handshake": "slack"})),
        with(&slack, json!({"handshake": "zoom"})),
        with(&slack, json!({"handshake": "meta", "verify_token": "meatyhamhock"})),
        json!({"verify": "token", "token": "secretClientValue", "token_pointer": "/value/*/clientState",
               "handshake": "graph", "success_status": 202, "event_type": "/value/0/changeType"}),
        json!({"verify": "hmac", "secret": "s", "signature_header": "X-Dropbox-Signature",
               "handshake": "dropbox"}),
        json!({"verify": "token", "token": "t0k3n", "token_header": "Authorization",
               "handshake": "cloudevents", "allowed_origins": ["eventemitter.example.com"],
               "allowed_rate": 120, "event_type": "/type"}),
        with(
            &slack,
            json!({"handshake": {"when": "/type", "equals": "url_verification",
                                 "answer": "/challenge", "reply": "json"}}),
        ),
    ]
    .into_iter()
    .map(|settings| Webhook::create(Host::detached(), settings).expect("fuzz settings"))
    .collect()
}

/// One input through every handshake configuration.
pub fn fuzz_handshakes(data: &[u8]) {
    static SOURCES: OnceLock<Vec<Webhook>> = OnceLock::new();
    let sources = SOURCES.get_or_init(handshake_sources);
    let r = FuzzRequest::parse(data);
    let body: Option<Value> = serde_json::from_slice(&r.body).ok();
    for p in sources {
        let _ = r.with(|req| p.receive(req));
        if let (Some(handshake), Some(body)) = (&p.handshake, &body) {
            let _ = handshake.signed(body);
        }
        let _ = r.with(|req| p.normalize(req));
    }
}
