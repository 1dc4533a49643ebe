//! Handshakes through the real daemon and the generic plugin: each
//! provider's documented check answered exactly as its documentation says
//! (signed ones signed by Python's hmac), recorded as a handshake and never
//! routed; a forged one refused; then an ordinary event from the same
//! source accepted and routed. A source without a handshake still answers
//! other methods 405.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ZOOM_SECRET: &str = "zoom-webhook-secret-token";
const META_SECRET: &str = "meta-app-secret";
const DROPBOX_SECRET: &str = "dropbox-app-secret";

fn config(env: &Env) -> std::path::PathBuf {
    config_with(env, "")
}

fn config_with(env: &Env, more: &str) -> std::path::PathBuf {
    env.add_plugin(&built_plugin("switchyard_webhook"));
    env.add_plugin(&built_plugin("switchyard_file"));
    env.rule(
        "all",
        r#"const EVENTS = ["webhook.*"]; action("audit", #{ type: event.type, source: event.source });"#,
    );
    env.config(&format!(
        r#"
[sources.slack]
plugin = "webhook"
verify = "hmac"
secret = "{SLACK_SECRET}"
signature_header = "X-Slack-Signature"
signature_prefix = "v0="
timestamp_header = "X-Slack-Request-Timestamp"
signed_content = "v0:{{timestamp}}:{{body}}"
event_type = "/event/type"
dedup_pointer = "/event_id"
handshake = "slack"

[sources.zoom]
plugin = "webhook"
verify = "hmac"
secret = "{ZOOM_SECRET}"
signature_header = "x-zm-signature"
signature_prefix = "v0="
timestamp_header = "x-zm-request-timestamp"
signed_content = "v0:{{timestamp}}:{{body}}"
event_type = "/event"
handshake = "zoom"

[sources.meta]
plugin = "webhook"
verify = "hmac"
secret = "{META_SECRET}"
signature_header = "X-Hub-Signature-256"
signature_prefix = "sha256="
event_type = "/object"
handshake = "meta"
verify_token = "meatyhamhock"

[sources.graph]
plugin = "webhook"
verify = "token"
token = "secretClientValue"
token_pointer = "/value/*/clientState"
event_type = "/value/0/changeType"
handshake = "graph"
success_status = 202

[sources.dropbox]
plugin = "webhook"
verify = "hmac"
secret = "{DROPBOX_SECRET}"
signature_header = "X-Dropbox-Signature"
handshake = "dropbox"

[sources.cloudevents]
plugin = "webhook"
verify = "token"
token = "ce-delivery-token"
token_header = "Authorization"
event_type_header = "ce-type"
handshake = "cloudevents"
allowed_origins = ["eventemitter.example.com"]
allowed_rate = 120

[sources.plain]
plugin = "webhook"
verify = "token"
token = "plain-token"
token_header = "X-Token"
event_type = "/type"

[actions.audit]
plugin = "file"
path = "{}"
{more}"#,
        env.audit_path().display()
    ))
}

struct Answered {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answered {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

fn send(d: &Daemon, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answered {
    tls_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method, d.url(path)).body(body.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().expect("request reached the daemon");
    Answered {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().unwrap_or_default(),
    }
}

/// Sends a body signed by Python as `scheme` with `secret`; returns the
/// answer and what sign.py printed.
fn send_signed(
    d: &Daemon,
    path: &str,
    scheme: &str,
    secret: &str,
    body: &str,
) -> (Answered, Value) {
    let signed = signed_by_python(scheme, body, &["--secret", secret]);
    let headers: Vec<(String, String)> = signed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    (send(d, "POST", path, &h, body), signed)
}

fn assert_text(a: &Answered, body: &str) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, body);
    assert!(
        a.header("content-type").starts_with("text/plain"),
        "{:?}",
        a.headers
    );
    assert_eq!(a.header("x-content-type-options"), "nosniff");
    assert_eq!(a.header("cache-control"), "no-store");
}

#[test]
fn every_preset_answers_its_handshake_records_it_and_routes_events_after() {
    let env = Env::new();
    let config = config(&env);
    let d = Daemon::start(&config);

    // Slack: the url_verification in its documentation, signed; the
    // challenge comes back as text. Signed with another secret: 401.
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    let body = format!(
        r#"{{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"{challenge}","type":"url_verification"}}"#
    );
    let (a, _) = send_signed(&d, "/hooks/slack", "slack", SLACK_SECRET, &body);
    assert_text(&a, challenge);
    let (a, _) = send_signed(&d, "/hooks/slack", "slack", "not-the-secret", &body);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(!a.body.contains(challenge));
    let event = r#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}"#;
    let (a, _) = send_signed(&d, "/hooks/slack", "slack", SLACK_SECRET, event);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("accepted"), "{}", a.body);

    // Zoom: encryptedToken is the HMAC Python computes; forged: 401.
    let body = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let (a, signed) = send_signed(&d, "/hooks/zoom", "zoom", ZOOM_SECRET, body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), "application/json");
    let answer: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(answer, signed["expect"]);
    assert_eq!(answer["encryptedToken"].as_str().unwrap().len(), 64);
    let (a, _) = send_signed(&d, "/hooks/zoom", "zoom", "forged", body);
    assert_eq!(a.status, 401);
    let event = r#"{"event":"meeting.started","payload":{"object":{"id":"85746065432"}},"event_ts":1654503849681}"#;
    assert_eq!(
        send_signed(&d, "/hooks/zoom", "zoom", ZOOM_SECRET, event)
            .0
            .status,
        200
    );

    // Meta: GET with its verify token; another token is 403 (as Meta's
    // documentation says), OPTIONS is not Meta's: 405 with Allow.
    let a = send(
        &d,
        "GET",
        "/hooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
        &[],
        "",
    );
    assert_text(&a, "1158201444");
    let a = send(
        &d,
        "GET",
        "/hooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess",
        &[],
        "",
    );
    assert_eq!(a.status, 403);
    let a = send(&d, "OPTIONS", "/hooks/meta", &[], "");
    assert_eq!((a.status, a.header("allow")), (405, "GET, POST"));
    let event = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}]}"#;
    let (a, _) = send_signed(&d, "/hooks/meta", "github", META_SECRET, event);
    assert_eq!(a.status, 200, "{}", a.body);

    // Microsoft Graph: POST ?validationToken= answered with the token as
    // text; notifications carry clientState and are answered 202.
    let a = send(
        &d,
        "POST",
        "/hooks/graph?validationToken=Validation%3A%20Testing%20client%20application",
        &[("content-type", "text/plain")],
        "",
    );
    assert_text(&a, "Validation: Testing client application");
    let note = |state: &str| {
        json!({"value": [{"subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
            "clientState": state, "changeType": "created",
            "resource": "Users/1/Messages/2", "tenantId": "t1"}]})
        .to_string()
    };
    let a = send(&d, "POST", "/hooks/graph", &[], &note("guessed"));
    assert_eq!(a.status, 401);
    let a = send(&d, "POST", "/hooks/graph", &[], &note("secretClientValue"));
    assert_eq!((a.status, a.body.as_str()), (202, ""), "{}", d.logs());

    // Dropbox: GET ?challenge= echoed with nosniff; notifications signed.
    let a = send(
        &d,
        "GET",
        "/hooks/dropbox?challenge=jxIkvbQ2BLLvwp",
        &[],
        "",
    );
    assert_text(&a, "jxIkvbQ2BLLvwp");
    let event = r#"{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]},"delta":{"users":[12345]}}"#;
    let (a, _) = send_signed(&d, "/hooks/dropbox", "dropbox", "forged", event);
    assert_eq!(a.status, 401);
    let (a, _) = send_signed(&d, "/hooks/dropbox", "dropbox", DROPBOX_SECRET, event);
    assert_eq!(a.status, 200, "{}", a.body);

    // CloudEvents' abuse protection: OPTIONS from an allowed origin.
    let a = send(
        &d,
        "OPTIONS",
        "/hooks/cloudevents",
        &[
            ("WebHook-Request-Origin", "eventemitter.example.com"),
            ("WebHook-Request-Rate", "120"),
        ],
        "",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("webhook-allowed-origin"),
        "eventemitter.example.com"
    );
    assert_eq!(a.header("webhook-allowed-rate"), "120");
    assert_eq!(a.header("allow"), "POST");
    let a = send(
        &d,
        "OPTIONS",
        "/hooks/cloudevents",
        &[("WebHook-Request-Origin", "evil.example")],
        "",
    );
    assert_eq!(a.status, 403);
    let a = send(
        &d,
        "POST",
        "/hooks/cloudevents",
        &[
            ("Authorization", "Bearer ce-delivery-token"),
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.object.deleted.v2"),
            ("ce-source", "/mycontext"),
            ("ce-id", "A234-1234-1234"),
            ("content-type", "application/json"),
        ],
        r#"{"key":"value"}"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // A source without a handshake takes POST alone.
    for method in ["GET", "OPTIONS", "PUT"] {
        let a = send(&d, method, "/hooks/plain?challenge=x", &[], "");
        assert_eq!((a.status, a.header("allow")), (405, "POST"), "{method}");
    }
    let a = send(
        &d,
        "POST",
        "/hooks/plain",
        &[("X-Token", "plain-token")],
        r#"{"type":"last"}"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // Every ordinary event is routed (the last one, sent after every
    // handshake, proves the router got that far); no handshake is, even
    // once nothing is left to do.
    env.wait_audit(7);
    wait_quiet(&config);
    let lines = env.audit_lines();
    let types: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["params"]["source"].as_str().unwrap(),
                l["params"]["type"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "slack webhook.app_mention",
        "zoom webhook.meeting.started",
        "meta webhook.whatsapp_business_account",
        "graph webhook.created",
        "dropbox webhook.unknown",
        "cloudevents webhook.com.example.object.deleted.v2",
        "plain webhook.last",
    ] {
        assert!(types.iter().any(|t| t == want), "{want} not in {types:?}");
    }
    assert_eq!(lines.len(), 7, "{types:?}");
    assert!(!types.iter().any(|t| t.contains("handshake")), "{types:?}");

    // The handshakes are in the store, as handshakes.
    let (code, out) = cli(
        &["events", "list", "--state", "handshake", "--json"],
        &config,
    );
    assert_eq!(code, 0, "{out}");
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen: Vec<String> = listed
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["source"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "cloudevents webhook.handshake.cloudevents",
            "dropbox webhook.handshake.dropbox",
            "graph webhook.handshake.graph",
            "meta webhook.handshake.meta",
            "slack webhook.handshake.slack",
            "zoom webhook.handshake.zoom",
        ]
    );
    assert!(listed.iter().all(|e| e["state"] == "handshake"), "{out}");
    // Meta's verify token is a credential: not kept in the stored query.
    let meta = listed.iter().find(|e| e["source"] == "meta").unwrap();
    let shown = show(&config, meta["id"].as_str().unwrap());
    assert_eq!(shown["envelope"]["handshake"], true);
    assert_eq!(shown["envelope"]["data"]["challenge"], "1158201444");
    let query = shown["request"]["query"].as_str().unwrap();
    assert!(
        query.contains("hub.challenge=1158201444") && !query.contains("meatyhamhock"),
        "{query}"
    );
    // A handshake is not replayed.
    let (code, out) = cli(&["replay", meta["id"].as_str().unwrap()], &config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("handshake"), "{out}");

    let samples = scrape(&d);
    assert_eq!(
        value(
            &samples,
            "switchyard_webhooks_handshakes_total",
            &[("source", "slack")]
        ),
        1.0
    );
    assert!(
        !d.logs().contains("meatyhamhock"),
        "a credential in the logs"
    );
}

/// An unsigned challenge anyone may send is answered each time but
/// recorded once per dedup window: it cannot fill the store. The dashboard
/// shows it as a handshake, without Replay, and does not count it refused.
#[test]
fn unsigned_challenges_are_recorded_once_per_dedup_window() {
    let env = Env::new();
    let config = config_with(
        &env,
        "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"handshake-admin-token\"\n",
    );
    let d = Daemon::start(&config);
    for i in 0..5 {
        let a = send(
            &d,
            "GET",
            &format!("/hooks/dropbox?challenge=c{i}"),
            &[],
            "",
        );
        assert_text(&a, &format!("c{i}"));
    }
    let (code, out) = cli(
        &[
            "events",
            "list",
            "--state",
            "handshake",
            "--source",
            "dropbox",
            "--json",
        ],
        &config,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let listed: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(listed["duplicates"], 4, "{out}");

    use crate::dashboard::{get as ui_get, sign_in};
    let base = format!("http://{}", d.admin_addr());
    let cookie = sign_in(&base, "handshake-admin-token");
    let id = listed["id"].as_str().unwrap();
    let (status, html, _) = ui_get(&base, &format!("/ui/events/{id}"), Some(&cookie));
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("A handshake"), "{html}");
    assert!(!html.contains("/replay"), "{html}");
    let (_, html, _) = ui_get(&base, "/ui/overview", Some(&cookie));
    assert!(html.contains("5 duplicate, stale or handshake"), "{html}");
    assert!(html.contains("0 rejected"), "{html}");
}
