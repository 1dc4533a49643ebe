use super::*;
use serde_json::json;
use switchyard_plugin_api::RejectKind;
use switchyard_plugin_support::hex;
use switchyard_plugin_support::hmac;

fn plugin(config: Value) -> Webhook {
    Webhook::create(Host::detached(), config).unwrap()
}

fn req<'a>(query: &'a str, headers: &'a [(&'a str, &'a [u8])], body: &'a [u8]) -> Request<'a> {
    Request {
        method: "POST",
        path: "",
        query,
        headers,
        remote_addr: "127.0.0.1",
        body,
    }
}

fn github() -> Webhook {
    plugin(json!({
        "verify": "hmac", "secret": "It's a Secret to Everybody",
        "signature_header": "X-Hub-Signature-256", "signature_prefix": "sha256=",
        "event_type_header": "X-GitHub-Event", "event_type": "/action",
        "dedup_header": "X-GitHub-Delivery"
    }))
}

#[test]
fn github_documented_vector() {
    // From GitHub's "Validating webhook deliveries".
    let sig = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let headers: [(&str, &[u8]); 3] = [
        ("x-hub-signature-256", sig),
        ("x-github-event", b"ping"),
        ("x-github-delivery", b"d1"),
    ];
    let ev = github()
        .verify(&req("", &headers, b"Hello, World!"))
        .unwrap();
    assert_eq!(ev[0].kind, "ping");
    assert_eq!(ev[0].dedup_key.as_deref(), Some("header:d1"));
    assert_eq!(ev[0].data, json!("Hello, World!"));
    let tampered = github()
        .verify(&req("", &headers, b"Hello, World?"))
        .unwrap_err();
    assert_eq!(tampered.kind, RejectKind::Unauthenticated);
    let no_prefix: [(&str, &[u8]); 2] = [
        ("x-hub-signature-256", &sig[7..]),
        ("x-github-event", b"ping"),
    ];
    assert_eq!(
        github()
            .verify(&req("", &no_prefix, b"Hello, World!"))
            .unwrap_err()
            .kind,
        RejectKind::Unauthenticated
    );
}

#[test]
fn github_type_joins_header_and_action() {
    let p = github();
    let body = br#"{"action":"opened","issue":{"number":1}}"#;
    let mac = hmac::mac(Algorithm::Sha256, b"It's a Secret to Everybody", &[body]);
    let sig = format!("sha256={}", hex(&mac));
    let headers: [(&str, &[u8]); 2] = [
        ("x-hub-signature-256", sig.as_bytes()),
        ("x-github-event", b"issues"),
    ];
    assert_eq!(
        p.verify(&req("", &headers, body)).unwrap()[0].kind,
        "issues.opened"
    );
}

#[test]
fn slack_documented_vector() {
    // From Slack's "Verifying requests from Slack".
    let p = plugin(json!({
        "verify": "hmac", "secret": "8f742231b10e8888abcd99yyyzzz85a5",
        "signature_header": "X-Slack-Signature", "signature_prefix": "v0=",
        "timestamp_header": "X-Slack-Request-Timestamp", "signed_content": "v0:{timestamp}:{body}",
        "event_type": "/type"
    }));
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let headers: [(&str, &[u8]); 2] = [
        (
            "x-slack-signature",
            b"v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
        ("x-slack-request-timestamp", b"1531420618"),
    ];
    let Check::Hmac(h) = &p.check else { panic!() };
    h.verify(&req("", &headers, body), 1531420618, 300).unwrap();
    assert_eq!(
        h.verify(&req("", &headers, body), 1531420618 + 301, 300)
            .unwrap_err()
            .kind,
        RejectKind::Expired
    );
    // Now is far from 2018: the live check refuses it as expired.
    assert_eq!(
        p.verify(&req("", &headers, body)).unwrap_err().kind,
        RejectKind::Expired
    );
}

fn stripe() -> Webhook {
    plugin(json!({
        "verify": "hmac", "secret": "whsec_test_secret",
        "signature_header": "Stripe-Signature", "signature_key": "v1", "timestamp_key": "t",
        "signed_content": "{timestamp}.{body}", "event_type": "/type", "dedup_pointer": "/id"
    }))
}

#[test]
fn stripe_structured_header() {
    let p = stripe();
    let body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{}}}"#;
    let ts = unix_now().to_string();
    let mac = hex(&hmac::mac(
        Algorithm::Sha256,
        b"whsec_test_secret",
        &[format!("{ts}.").as_bytes(), body],
    ));
    let header = format!("t={ts},v1=00ff,v1={mac},v0=abc");
    let headers: [(&str, &[u8]); 1] = [("stripe-signature", header.as_bytes())];
    let ev = p.verify(&req("", &headers, body)).unwrap();
    assert_eq!(ev[0].kind, "invoice.paid");
    assert_eq!(ev[0].dedup_key.as_deref(), Some("body:evt_1"));
    let old = format!("t={},v1={mac}", unix_now() - 1000);
    let headers: [(&str, &[u8]); 1] = [("stripe-signature", old.as_bytes())];
    assert_eq!(
        p.verify(&req("", &headers, body)).unwrap_err().kind,
        RejectKind::Expired
    );
    let no_ts = format!("v1={mac}");
    let headers: [(&str, &[u8]); 1] = [("stripe-signature", no_ts.as_bytes())];
    assert_eq!(
        p.verify(&req("", &headers, body)).unwrap_err().kind,
        RejectKind::Unauthenticated
    );
}

#[test]
fn algorithms_and_encodings() {
    for (alg, enc) in [("sha1", "hex"), ("sha512", "base64"), ("sha256", "base64")] {
        let p = plugin(json!({"verify": "hmac", "secret": "k", "algorithm": alg,
                              "signature_header": "X-Sig", "signature_encoding": enc, "event_type": "/t"}));
        let s = p.sample("thing.done").unwrap();
        let h: Vec<(&str, &[u8])> = s
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            p.verify(&req("", &h, s.body.as_bytes())).unwrap()[0].kind,
            "thing.done"
        );
        let mut other = s.body.clone();
        other.push(' ');
        assert_eq!(
            p.verify(&req("", &h, other.as_bytes())).unwrap_err().kind,
            RejectKind::Unauthenticated
        );
    }
}

#[test]
fn standard_webhooks_vector() {
    let p = plugin(
        json!({"verify": "standard-webhooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    );
    let Check::Standard(secrets) = &p.check else {
        panic!()
    };
    let h = Headers {
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp: "1614265330",
        signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    };
    standard_webhooks::verify(secrets, &h, br#"{"test": 2432232314}"#, 1614265330, 300).unwrap();
    let s = p.sample("x").unwrap();
    let hs: Vec<(&str, &[u8])> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    p.verify(&req("", &hs, s.body.as_bytes())).unwrap();
}

#[test]
fn token_and_basic() {
    let gitlab = plugin(
        json!({"verify": "token", "token": "glt", "token_header": "X-Gitlab-Token",
                               "event_type": "/object_kind"}),
    );
    let body = br#"{"object_kind":"push"}"#;
    assert_eq!(
        gitlab
            .verify(&req("", &[("x-gitlab-token", b"glt")], body))
            .unwrap()[0]
            .kind,
        "push"
    );
    assert_eq!(
        gitlab
            .verify(&req("", &[("x-gitlab-token", b"glx")], body))
            .unwrap_err()
            .kind,
        RejectKind::Unauthenticated
    );
    let q = plugin(json!({"verify": "token", "token": "a b", "token_param": "key"}));
    q.verify(&req("key=a%20b", &[], body)).unwrap();
    assert!(q.verify(&req("key=ab", &[], body)).is_err());
    let basic = plugin(json!({"verify": "basic", "username": "u", "password": "p"}));
    let good = format!("Basic {}", base64(b"u:p"));
    basic
        .verify(&req("", &[("authorization", good.as_bytes())], body))
        .unwrap();
    let bad = format!("Basic {}", base64(b"u:q"));
    assert!(basic
        .verify(&req("", &[("authorization", bad.as_bytes())], body))
        .is_err());
    let open = plugin(json!({"verify": "none"}));
    assert_eq!(open.verify(&req("", &[], body)).unwrap()[0].kind, "unknown");
}

#[test]
fn settings_are_checked() {
    for (config, needle) in [
        (json!({}), "choose verify"),
        (json!({"verify": "hmac", "signature_header": "X"}), "secret"),
        (json!({"verify": "hmac", "secret": "s"}), "signature_header"),
        (
            json!({"verify": "hmac", "secret": "s", "signature_header": "X", "signed_content": "{timestamp}.{body}"}),
            "timestamp_header",
        ),
        (
            json!({"verify": "hmac", "secret": "s", "signature_header": "X", "signed_content": "{timestamp}"}),
            "{body}",
        ),
        (
            json!({"verify": "hmac", "secret": "s", "signature_header": "X", "timestamp_key": "t"}),
            "signature_key",
        ),
        (
            json!({"verify": "hmac", "secret": "s", "signature_header": "X", "algorithm": "md5"}),
            "md5",
        ),
        (json!({"verify": "token", "token": "t"}), "token_header"),
        (
            json!({"verify": "none", "event_type": "type"}),
            "JSON pointer",
        ),
        (json!({"verify": "none", "colour": 1}), "colour"),
    ] {
        let err = Webhook::create(Host::detached(), config).err().unwrap();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/webhook");
    let n = switchyard_plugin_support::fuzz::replay_dir(&dir, fuzz_one);
    assert!(n > 0, "no corpus at {}", dir.display());
}

#[test]
fn the_handshakes_fuzz_corpus_replays_and_its_seeds_reach_each_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/webhook_handshakes");
    let n = switchyard_plugin_support::fuzz::replay_dir(&dir, fuzz_handshakes);
    assert!(n >= 11, "{n} seeds at {}", dir.display());
    // The unsigned checks' seeds are what their providers send: each is
    // answered as a handshake by its preset (so the fuzzer starts inside
    // the parse it is there to shake), and refused where it must be.
    let sources = fuzz::handshake_sources();
    let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let receive = |i: usize, name: &str| {
        switchyard_plugin_support::fuzz::FuzzRequest::parse(&seed(name))
            .with(|req| sources[i].receive(req))
    };
    for (i, name, answer) in [
        (2, "meta", "1158201444"),
        (
            3,
            "graph",
            "Validation: Testing client application reachability for subscription",
        ),
        (4, "dropbox", "IHn2qGyhXyUZDd9v"),
        (5, "cloudevents", ""),
    ] {
        let out = receive(i, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.handshake, "{name}");
        let body = out.answer.map(|a| a.body).unwrap_or_default();
        assert!(body.starts_with(answer), "{name}: {body}");
    }
    assert!(receive(2, "meta-wrong-token").is_err());
    assert!(receive(5, "cloudevents-other-origin").is_err());
    // The signed ones' bodies, as if the signature held.
    for (i, name) in [(0, "slack"), (1, "zoom")] {
        let r = switchyard_plugin_support::fuzz::FuzzRequest::parse(&seed(name));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let handshake = sources[i].handshake.as_ref().unwrap();
        let out = handshake.signed(&body).unwrap().unwrap();
        assert!(out.handshake, "{name}");
    }
}

fn on<'a>(
    method: &'a str,
    query: &'a str,
    headers: &'a [(&'a str, &'a [u8])],
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method,
        ..req(query, headers, body)
    }
}

fn slack_like(extra: Value) -> Webhook {
    let mut config = json!({
        "verify": "hmac", "secret": "key", "signature_header": "X-Sig",
        "signature_prefix": "v0=", "timestamp_header": "X-Ts",
        "signed_content": "v0:{timestamp}:{body}", "event_type": "/type",
    });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    plugin(config)
}

/// Headers signing `body` now as `slack_like` checks them.
fn signed(p: &Webhook, body: &str) -> Vec<(String, String)> {
    let sample_ts = unix_now().to_string();
    let Check::Hmac(h) = &p.check else {
        panic!("hmac")
    };
    vec![
        ("x-ts".into(), sample_ts.clone()),
        ("x-sig".into(), h.sign(&sample_ts, body.as_bytes())),
    ]
}

fn receive(
    p: &Webhook,
    method: &str,
    query: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<VerifyOutput, Rejection> {
    let h: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    p.receive(&on(method, query, &h, body.as_bytes()))
}

#[test]
fn slack_and_the_pointer_form_answer_a_signed_challenge_only_when_signed() {
    for p in [
        slack_like(json!({"handshake": "slack"})),
        slack_like(
            json!({"handshake": {"when": "/type", "equals": "url_verification", "answer": "/challenge"}}),
        ),
    ] {
        let body = r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let out = receive(&p, "POST", "", &signed(&p, body), body).unwrap();
        assert!(out.handshake);
        let answer = out.answer.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        );
        assert!(answer.content_type.unwrap().starts_with("text/plain"));
        assert!(out.events[0].kind.starts_with("handshake."));
        assert!(
            out.events[0].data.get("token").is_none(),
            "the verification token is not kept"
        );
        // Signed the same way under another secret.
        let ts = unix_now().to_string();
        let content = format!("v0:{ts}:{body}");
        let mac = hmac::mac(Algorithm::Sha256, b"not-the-key", &[content.as_bytes()]);
        let forged = vec![
            ("x-ts".to_string(), ts),
            ("x-sig".to_string(), format!("v0={}", hex(&mac))),
        ];
        assert_eq!(
            receive(&p, "POST", "", &forged, body).unwrap_err().kind,
            RejectKind::Unauthenticated
        );
        // An event is an event, answered by the host.
        let body = r#"{"type":"event_callback","event":{"type":"message"}}"#;
        let out = receive(&p, "POST", "", &signed(&p, body), body).unwrap();
        assert!(!out.handshake && out.answer.is_none());
        assert_eq!(out.events[0].kind, "event_callback");
    }
    let json = slack_like(
        json!({"handshake": {"when": "/type", "equals": "url_verification", "answer": "/challenge", "reply": "json"}}),
    );
    let body = r#"{"challenge":"c1","type":"url_verification"}"#;
    let answer = receive(&json, "POST", "", &signed(&json, body), body)
        .unwrap()
        .answer
        .unwrap();
    assert_eq!(answer.body, r#"{"challenge":"c1"}"#);
}

#[test]
fn zoom_answers_the_hmac_of_the_plain_token() {
    let p = slack_like(json!({"handshake": "zoom"}));
    // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"),
    // the well-known vector.
    let body = r#"{"payload":{"plainToken":"The quick brown fox jumps over the lazy dog"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let out = receive(&p, "POST", "", &signed(&p, body), body).unwrap();
    let answer: Value = serde_json::from_str(&out.answer.unwrap().body).unwrap();
    assert_eq!(
        answer,
        json!({"plainToken": "The quick brown fox jumps over the lazy dog", "encryptedToken": "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"})
    );
    assert!(Webhook::create(
        Host::detached(),
        json!({"verify": "none", "handshake": "zoom"})
    )
    .is_err());
}

#[test]
fn meta_checks_its_verify_token() {
    let p = slack_like(json!({"handshake": "meta", "verify_token": "meatyhamhock"}));
    assert_eq!(p.methods(), &["GET", "POST"]);
    let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
    let out = receive(&p, "GET", q, &[], "").unwrap();
    assert_eq!(out.answer.unwrap().body, "1158201444");
    assert_eq!(
        out.events[0].dedup_key.as_deref(),
        Some("handshake:meta:1158201444")
    );
    let wrong = "hub.mode=subscribe&hub.challenge=1&hub.verify_token=other";
    assert_eq!(
        receive(&p, "GET", wrong, &[], "").unwrap_err().kind,
        RejectKind::Forbidden
    );
    assert_eq!(
        receive(&p, "GET", "", &[], "").unwrap_err().kind,
        RejectKind::Malformed
    );
    assert!(Webhook::create(
        Host::detached(),
        json!({"verify": "none", "handshake": "meta"})
    )
    .is_err());
    assert!(Webhook::create(
        Host::detached(),
        json!({"verify": "none", "verify_token": "x"})
    )
    .is_err());
}

#[test]
fn graph_dropbox_and_cloudevents_challenges() {
    let graph = plugin(
        json!({"verify": "token", "token": "secretClientValue", "token_pointer": "/value/*/clientState", "handshake": "graph", "success_status": 202}),
    );
    let out = receive(
        &graph,
        "POST",
        "validationToken=Validation%3A%20Testing%20client%20application",
        &[],
        "",
    )
    .unwrap();
    assert_eq!(
        out.answer.unwrap().body,
        "Validation: Testing client application"
    );
    assert_eq!(out.events[0].dedup_key.as_deref(), Some("handshake:graph"));
    let ok = r#"{"value":[{"clientState":"secretClientValue","changeType":"created"},{"clientState":"secretClientValue"}]}"#;
    let out = receive(&graph, "POST", "", &[], ok).unwrap();
    assert_eq!(out.answer.unwrap().status, 202);
    let one_bad = r#"{"value":[{"clientState":"secretClientValue"},{"clientState":"guess"}]}"#;
    assert_eq!(
        receive(&graph, "POST", "", &[], one_bad).unwrap_err().kind,
        RejectKind::Unauthenticated
    );
    assert_eq!(
        receive(&graph, "POST", "", &[], r#"{"value":[]}"#)
            .unwrap_err()
            .kind,
        RejectKind::Unauthenticated
    );
    let long = format!(
        "validationToken={}",
        "a".repeat(handshake::MAX_CHALLENGE + 1)
    );
    assert_eq!(
        receive(&graph, "POST", &long, &[], "").unwrap_err().kind,
        RejectKind::Malformed
    );

    let dropbox = plugin(
        json!({"verify": "hmac", "secret": "s", "signature_header": "X-Dropbox-Signature", "handshake": "dropbox"}),
    );
    let out = receive(&dropbox, "GET", "challenge=abc%20123", &[], "").unwrap();
    assert_eq!(out.answer.unwrap().body, "abc 123");
    assert_eq!(
        receive(&dropbox, "GET", "", &[], "").unwrap_err().kind,
        RejectKind::Malformed
    );
    assert_eq!(
        receive(&dropbox, "POST", "challenge=abc", &[], "{}")
            .unwrap_err()
            .kind,
        RejectKind::Unauthenticated
    );

    let ce = plugin(
        json!({"verify": "token", "token": "t0k3n", "token_header": "Authorization", "handshake": "cloudevents", "allowed_origins": ["eventemitter.example.com"], "allowed_rate": 120}),
    );
    assert_eq!(ce.methods(), &["OPTIONS", "POST"]);
    let origin = vec![(
        "webhook-request-origin".to_string(),
        "eventemitter.example.com".to_string(),
    )];
    let answer = receive(&ce, "OPTIONS", "", &origin, "")
        .unwrap()
        .answer
        .unwrap();
    assert!(answer.headers.contains(&(
        "WebHook-Allowed-Origin".into(),
        "eventemitter.example.com".into()
    )));
    assert!(answer
        .headers
        .contains(&("WebHook-Allowed-Rate".into(), "120".into())));
    let other = vec![(
        "webhook-request-origin".to_string(),
        "evil.example".to_string(),
    )];
    assert_eq!(
        receive(&ce, "OPTIONS", "", &other, "").unwrap_err().kind,
        RejectKind::Forbidden
    );
    assert!(Webhook::create(
        Host::detached(),
        json!({"verify": "none", "handshake": "cloudevents"})
    )
    .is_err());
}

#[test]
fn a_source_answers_its_events_as_configured() {
    let p =
        plugin(json!({"verify": "none", "success_status": 200, "success_body": "{\"ok\":true}"}));
    let answer = receive(&p, "POST", "", &[], "{}").unwrap().answer.unwrap();
    assert_eq!(
        (
            answer.status,
            answer.body.as_str(),
            answer.content_type.as_deref()
        ),
        (200, "{\"ok\":true}", Some("application/json"))
    );
    for bad in [
        json!({"success_status": 500}),
        json!({"success_status": 204, "success_body": "x"}),
        json!({"handshake": "teams"}),
    ] {
        let mut config = json!({"verify": "none"});
        config
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        assert!(Webhook::create(Host::detached(), config).is_err(), "{bad}");
    }
    // Without a handshake a GET is not this source's.
    assert_eq!(
        receive(&p, "GET", "challenge=x", &[], "").unwrap_err().kind,
        RejectKind::Malformed
    );
}

#[test]
fn schemas_name_the_catalog_and_a_bad_file_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("sy-webhook-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("opened.json");
    std::fs::write(
        &good,
        r#"{"description": "An issue was opened.", "type": "object", "required": ["action"]}"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let make = |schemas: Value| {
        Webhook::create(
            Host::detached(),
            json!({"verify": "none", "event_type": "/action", "schemas": schemas}),
        )
    };
    let w = make(json!({"issues.opened": good.display().to_string()})).unwrap();
    let catalog = w.catalog();
    assert_eq!(catalog.len(), 1);
    assert_eq!(catalog[0].name, "issues.opened");
    assert_eq!(catalog[0].description, "An issue was opened.");
    assert_eq!(catalog[0].schema["required"], json!(["action"]));
    let Err(e) = make(json!({"issues.closed": bad.display().to_string()})) else {
        panic!("a file that is not JSON is refused");
    };
    assert!(
        e.contains("schemas.issues.closed") && e.contains("not JSON"),
        "{e}"
    );
    let Err(e) = make(json!({"x": dir.join("missing.json").display().to_string()})) else {
        panic!("a missing file is refused");
    };
    assert!(e.contains("schemas.x: cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
