//! Handshakes: the requests some providers send to check an endpoint
//! before they deliver to it, each answered as its provider documents, and
//! a source's own answer to its events.
//!
//! | preset | the check | answered | authenticated by |
//! |---|---|---|---|
//! | `slack` | POST `{"type": "url_verification", "challenge"}` | 200 text/plain, the challenge | the source's `verify` (Slack signs it) |
//! | `zoom` | POST `{"event": "endpoint.url_validation", "payload": {"plainToken"}}` | 200 JSON `{plainToken, encryptedToken}`, the hex HMAC-SHA256 of plainToken under the secret | the source's `verify` (Zoom signs it) |
//! | `meta` | GET `?hub.mode=subscribe&hub.verify_token&hub.challenge` | 200 text/plain, the challenge; 403 when the token differs | `verify_token` |
//! | `graph` | POST `?validationToken=…` | 200 text/plain, the token | nothing (the protocol has nothing) |
//! | `dropbox` | GET `?challenge=…` | 200 text/plain, the challenge | nothing (the protocol has nothing) |
//! | `cloudevents` | OPTIONS with `WebHook-Request-Origin` | 200, `WebHook-Allowed-Origin`, `WebHook-Allowed-Rate`; 403 for another origin | `allowed_origins` |
//! | `{when, equals, answer}` | POST whose body at `when` is `equals` | 200, the value at `answer` (text, or JSON `{key: value}` with `reply = "json"`) | the source's `verify` |
//!
//! What an unsigned challenge lets anyone do: make the endpoint echo a
//! value of at most [`MAX_CHALLENGE`] bytes as `text/plain` (never sniffed,
//! never cached) — nothing is routed, and such challenges are recorded
//! once per dedup window (the others count as duplicates of it), so they
//! cannot fill the store.

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{Answer, EventDraft, Rejection, Request, VerifyOutput};
use switchyard_plugin_support::hex;
use switchyard_plugin_support::hmac::{self, equal, Algorithm};

use crate::pointer;

/// The longest challenge echoed.
pub const MAX_CHALLENGE: usize = 2048;

/// `handshake = "slack"` or `handshake = { when, equals, answer, reply }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Preset(String),
    Pointer(PointerForm),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointerForm {
    when: String,
    equals: String,
    answer: String,
    #[serde(default)]
    reply: Reply,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Reply {
    #[default]
    Text,
    Json,
}

/// The settings a handshake reads beside `handshake` itself.
#[derive(Debug, Default)]
pub struct Extra {
    pub verify_token: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_rate: Option<Value>,
    /// The HMAC secret the source verifies with, for Zoom's answer.
    pub hmac_secret: Option<Vec<u8>>,
}

#[derive(Debug)]
pub enum Handshake {
    Slack,
    Zoom { secret: Vec<u8> },
    Meta { verify_token: String },
    Graph,
    Dropbox,
    CloudEvents { origins: Vec<String>, rate: String },
    Pointer(PointerForm),
}

pub const PRESETS: &str = "slack, zoom, meta, graph, dropbox, cloudevents";

impl Handshake {
    pub fn new(setting: Setting, extra: Extra) -> Result<Handshake, String> {
        let unused = |key: &str, given: bool, preset: &str| {
            if given {
                Err(format!(
                    "webhook settings: {key} is read by handshake = \"{preset}\" only"
                ))
            } else {
                Ok(())
            }
        };
        let preset = match &setting {
            Setting::Preset(p) => p.as_str(),
            Setting::Pointer(_) => "",
        };
        if preset != "meta" {
            unused("verify_token", extra.verify_token.is_some(), "meta")?;
        }
        if preset != "cloudevents" {
            unused(
                "allowed_origins",
                extra.allowed_origins.is_some(),
                "cloudevents",
            )?;
            unused("allowed_rate", extra.allowed_rate.is_some(), "cloudevents")?;
        }
        Ok(match setting {
            Setting::Pointer(form) => {
                for p in [&form.when, &form.answer] {
                    pointer::check(p)?;
                    if p.is_empty() {
                        return Err("webhook settings: handshake's when and answer are JSON pointers into the body (\"/type\")".into());
                    }
                }
                Handshake::Pointer(form)
            }
            Setting::Preset(p) => match p.as_str() {
                "slack" => Handshake::Slack,
                "zoom" => Handshake::Zoom {
                    secret: extra.hmac_secret.ok_or(
                        "webhook settings: handshake = \"zoom\" answers with an HMAC under the \
                         source's secret: set verify = \"hmac\" with Zoom's secret token",
                    )?,
                },
                "meta" => Handshake::Meta {
                    verify_token: extra.verify_token.filter(|t| !t.is_empty()).ok_or(
                        "webhook settings: handshake = \"meta\" needs verify_token (the one \
                         given to Meta with the callback URL)",
                    )?,
                },
                "graph" => Handshake::Graph,
                "dropbox" => Handshake::Dropbox,
                "cloudevents" => {
                    let origins = extra.allowed_origins.filter(|o| !o.is_empty()).ok_or(
                        "webhook settings: handshake = \"cloudevents\" needs allowed_origins \
                         (the senders' hosts, e.g. [\"eventgrid.azure.net\"], or [\"*\"])",
                    )?;
                    let rate = match extra.allowed_rate {
                        None => "*".to_string(),
                        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
                            n.to_string()
                        }
                        Some(Value::String(s)) if s == "*" => s,
                        Some(other) => {
                            return Err(format!(
                                "webhook settings: allowed_rate is requests per minute (a number) or \"*\", not {other}"
                            ))
                        }
                    };
                    Handshake::CloudEvents { origins, rate }
                }
                other => {
                    return Err(format!(
                        "webhook settings: handshake = {other:?} is not a preset ({PRESETS}); \
                         or give {{ when = \"/type\", equals = \"…\", answer = \"/challenge\" }}"
                    ))
                }
            },
        })
    }

    /// The methods the source takes with this handshake.
    pub fn methods(&self) -> &'static [&'static str] {
        match self {
            Handshake::Meta { .. } | Handshake::Dropbox => &["GET", "POST"],
            Handshake::CloudEvents { .. } => &["OPTIONS", "POST"],
            _ => &["POST"],
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Handshake::Slack => "slack",
            Handshake::Zoom { .. } => "zoom",
            Handshake::Meta { .. } => "meta",
            Handshake::Graph => "graph",
            Handshake::Dropbox => "dropbox",
            Handshake::CloudEvents { .. } => "cloudevents",
            Handshake::Pointer(_) => "custom",
        }
    }

    /// A handshake the protocol does not sign, answered before the source's
    /// own verification: `None` when the request is not one.
    pub fn unsigned(&self, request: &Request<'_>) -> Option<Result<VerifyOutput, Rejection>> {
        let param = |name: &str| {
            request
                .query_pairs()
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
        };
        match (self, request.method) {
            (Handshake::Meta { verify_token }, "GET") => Some(self.meta(verify_token, &param)),
            (Handshake::Graph, "POST") => {
                let token = param("validationToken")?;
                Some(challenge(&token).map(|t| self.record(t, Some("graph".into()))))
            }
            (Handshake::Dropbox, "GET") => Some(match param("challenge") {
                Some(c) => challenge(&c).map(|c| self.record(c, Some("dropbox".into()))),
                None => Err(Rejection::malformed(
                    "a GET without ?challenge= (only Dropbox's check comes as a GET)",
                )),
            }),
            (Handshake::CloudEvents { origins, rate }, "OPTIONS") => {
                Some(self.cloudevents(request, origins, rate))
            }
            _ => None,
        }
    }

    /// A handshake in an authenticated request's body: `None` when it is
    /// an event.
    pub fn signed(&self, body: &Value) -> Option<Result<VerifyOutput, Rejection>> {
        match self {
            Handshake::Slack => {
                if body.pointer("/type")? != "url_verification" {
                    return None;
                }
                Some(
                    text_at(body, "/challenge")
                        .and_then(|c| challenge(&c))
                        .map(|c| self.record(c, None)),
                )
            }
            Handshake::Zoom { secret } => {
                if body.pointer("/event")? != "endpoint.url_validation" {
                    return None;
                }
                Some(text_at(body, "/payload/plainToken").and_then(|plain| {
                    challenge(&plain)?;
                    let encrypted = hex(&hmac::mac(Algorithm::Sha256, secret, &[plain.as_bytes()]));
                    let answer =
                        Answer::json(&json!({ "plainToken": plain, "encryptedToken": encrypted }));
                    Ok(VerifyOutput::handshake(
                        self.event(json!({ "plainToken": plain }), None),
                        answer,
                    ))
                }))
            }
            Handshake::Pointer(form) => {
                if pointer::text(body, &form.when)? != form.equals {
                    return None;
                }
                Some(text_at(body, &form.answer).and_then(|value| {
                    challenge(&value)?;
                    let answer = match form.reply {
                        Reply::Text => Answer::text(value.clone()),
                        Reply::Json => {
                            let key = form.answer.rsplit('/').next().unwrap_or("challenge");
                            let key = key.replace("~1", "/").replace("~0", "~");
                            Answer::json(&json!({ key: value }))
                        }
                    };
                    Ok(VerifyOutput::handshake(
                        self.event(json!({ "challenge": value }), None),
                        answer,
                    ))
                }))
            }
            _ => None,
        }
    }

    /// A challenge echoed as text, recorded as `handshake.<preset>`.
    /// `dedup` names an unsigned check, recorded once per dedup window.
    fn record(&self, challenge: String, dedup: Option<String>) -> VerifyOutput {
        let data = json!({ "challenge": challenge });
        VerifyOutput::handshake(self.event(data, dedup), Answer::text(challenge))
    }

    fn event(&self, data: Value, dedup: Option<String>) -> EventDraft {
        let mut ev = EventDraft::new(format!("handshake.{}", self.name()), data);
        ev.dedup_key = dedup.map(|d| format!("handshake:{d}"));
        ev
    }

    fn cloudevents(
        &self,
        request: &Request<'_>,
        origins: &[String],
        rate: &str,
    ) -> Result<VerifyOutput, Rejection> {
        let origin = request
            .header_str("webhook-request-origin")
            .filter(|o| !o.is_empty() && o.len() <= 253)
            .ok_or_else(|| Rejection::malformed("an OPTIONS without WebHook-Request-Origin"))?;
        if !origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        {
            return Err(Rejection::forbidden(format!(
                "WebHook-Request-Origin {origin:?} is not in allowed_origins"
            )));
        }
        let event = self.event(
            json!({ "origin": origin, "rate": rate }),
            Some("cloudevents".into()),
        );
        let answer = Answer::status(200)
            .header("WebHook-Allowed-Origin", origin)
            .header("WebHook-Allowed-Rate", rate)
            .header("Allow", "POST");
        Ok(VerifyOutput::handshake(event, answer))
    }
}

/// Meta's verification request: its token must match, its challenge is
/// echoed (403 for another token, as Meta's documentation says).
impl Handshake {
    fn meta(
        &self,
        verify_token: &str,
        param: &dyn Fn(&str) -> Option<String>,
    ) -> Result<VerifyOutput, Rejection> {
        if param("hub.mode").as_deref() != Some("subscribe") {
            return Err(Rejection::malformed(
                "a GET without hub.mode=subscribe (only Meta's verification comes as a GET)",
            ));
        }
        let token = param("hub.verify_token").unwrap_or_default();
        if !equal(token.as_bytes(), verify_token.as_bytes()) {
            return Err(Rejection::forbidden(
                "hub.verify_token does not match verify_token",
            ));
        }
        let c = challenge(&param("hub.challenge").unwrap_or_default())?;
        // Authenticated by the token: each challenge is recorded.
        let dedup = format!("meta:{c}");
        Ok(self.record(c, Some(dedup)))
    }
}

/// A challenge fit to echo: not empty, at most [`MAX_CHALLENGE`] bytes.
fn challenge(value: &str) -> Result<String, Rejection> {
    if value.is_empty() {
        return Err(Rejection::malformed("an empty challenge"));
    }
    if value.len() > MAX_CHALLENGE {
        return Err(Rejection::malformed(format!(
            "a challenge of {} bytes (at most {MAX_CHALLENGE} are echoed)",
            value.len()
        )));
    }
    Ok(value.to_string())
}

fn text_at(body: &Value, p: &str) -> Result<String, Rejection> {
    pointer::text(body, p)
        .ok_or_else(|| Rejection::malformed(format!("a handshake without a value at {p}")))
}

/// `success_status`, `success_body`, `success_content_type`: what a
/// source answers its events with, for senders that insist on one.
pub fn success(
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
) -> Result<Option<Answer>, String> {
    if status.is_none() && body.is_none() && content_type.is_none() {
        return Ok(None);
    }
    let status = status.unwrap_or(200);
    if ![200, 202, 204].contains(&status) {
        return Err(format!(
            "webhook settings: success_status is 200, 202 or 204, not {status}"
        ));
    }
    let body = body.unwrap_or_default();
    if status == 204 && !body.is_empty() {
        return Err(
            "webhook settings: success_status = 204 answers no body; drop success_body".into(),
        );
    }
    if body.len() > Answer::MAX_BODY {
        return Err(format!(
            "webhook settings: success_body is {} bytes (at most {})",
            body.len(),
            Answer::MAX_BODY
        ));
    }
    let content_type = content_type.or_else(|| {
        (!body.is_empty()).then(|| {
            if serde_json::from_str::<Value>(&body).is_ok() {
                "application/json".to_string()
            } else {
                "text/plain; charset=utf-8".to_string()
            }
        })
    });
    Ok(Some(Answer {
        status,
        content_type,
        body,
        headers: Vec::new(),
    }))
}
