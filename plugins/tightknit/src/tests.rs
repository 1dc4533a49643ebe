use super::*;
use switchyard_plugin_api::RejectKind;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn plugin(config: Value) -> Tightknit {
    Tightknit::create(Host::detached(), config).unwrap()
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

fn signed(secret: &Secret, id: &str, ts: i64, body: &str, prefix: &str) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}-id"), id.to_string()),
        (format!("{prefix}-timestamp"), ts.to_string()),
        (
            format!("{prefix}-signature"),
            standard_webhooks::sign(secret, id, ts, body.as_bytes()),
        ),
    ]
}

fn verify(
    p: &Tightknit,
    headers: &[(String, String)],
    body: &str,
) -> Result<Vec<EventDraft>, Rejection> {
    let h: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    p.verify(&req("", &h, body.as_bytes()))
}

fn secret() -> Secret {
    Secret::decode(SECRET, SecretEncoding::Whsec, "s").unwrap()
}

#[test]
fn legacy_and_current_payloads_share_names() {
    for (name, kind, legacy) in [
        (REGISTERED, REGISTERED, false),
        (UNREGISTERED, UNREGISTERED, false),
        ("legacy.registered", REGISTERED, true),
        ("legacy.unregistered", UNREGISTERED, true),
    ] {
        let body = sample_body(name).unwrap().to_string();
        let ev = &normalize(body.as_bytes(), None).unwrap()[0];
        assert_eq!(ev.kind, kind);
        assert_eq!(ev.extensions.contains_key("legacy"), legacy);
        assert_eq!(ev.subject.as_deref(), Some("usr_8f2k"));
        assert_eq!(ev.extensions["calendar_event_id"], "evt_2xq");
        if legacy {
            assert_eq!(ev.data["action"], LEGACY_ACTION);
        }
    }
    let other = normalize(br#"{"action":"post.created","post":{"id":"p1"}}"#, None).unwrap();
    assert_eq!(other[0].kind, "post.created");
    assert_eq!(
        normalize(br#"{"x":1}"#, None).unwrap_err().kind,
        RejectKind::Malformed
    );
}

#[test]
fn signed_deliveries_in_both_header_spellings() {
    let p = plugin(json!({"secret": SECRET}));
    let body = sample_body(REGISTERED).unwrap().to_string();
    for prefix in ["svix", "webhook"] {
        let h = signed(&secret(), "msg_1", unix_now(), &body, prefix);
        let ev = verify(&p, &h, &body).unwrap();
        assert_eq!(ev[0].dedup_key.as_deref(), Some("msg:msg_1"));
    }
}

#[test]
fn rotation_accepts_either_secret() {
    let old = Secret::from_bytes(b"old secret bytes".to_vec());
    let old_text = format!("whsec_{}", switchyard_plugin_support::base64(old.bytes()));
    let p = plugin(json!({"secrets": [SECRET, old_text]}));
    let body = sample_body(UNREGISTERED).unwrap().to_string();
    verify(&p, &signed(&old, "msg_2", unix_now(), &body, "svix"), &body).unwrap();
    verify(
        &p,
        &signed(&secret(), "msg_2", unix_now(), &body, "svix"),
        &body,
    )
    .unwrap();
}

#[test]
fn tampering_is_refused() {
    let p = plugin(json!({"secret": SECRET}));
    let body = sample_body(REGISTERED).unwrap().to_string();
    let now = unix_now();
    let good = signed(&secret(), "msg_3", now, &body, "svix");
    let kind = |h: &[(String, String)], b: &str| verify(&p, h, b).unwrap_err().kind;
    assert_eq!(
        kind(&good, &body.replace("Ada", "Eve")),
        RejectKind::Unauthenticated
    );
    let mut h = good.clone();
    h[0].1 = "msg_4".into();
    assert_eq!(kind(&h, &body), RejectKind::Unauthenticated);
    let stale = signed(&secret(), "msg_3", now - 301, &body, "svix");
    assert_eq!(kind(&stale, &body), RejectKind::Expired);
    let future = signed(&secret(), "msg_3", now + 301, &body, "svix");
    assert_eq!(kind(&future, &body), RejectKind::Expired);
    let other = Secret::from_bytes(b"not the secret".to_vec());
    assert_eq!(
        kind(&signed(&other, "msg_3", now, &body, "svix"), &body),
        RejectKind::Unauthenticated
    );
    assert_eq!(kind(&good[..2], &body), RejectKind::Unauthenticated);
    assert_eq!(kind(&[], &body), RejectKind::Unauthenticated);
}

#[test]
fn unsigned_setups_use_a_token() {
    let p = plugin(json!({"unsigned": true, "token": "tok-123"}));
    let body = sample_body("legacy.registered").unwrap().to_string();
    p.verify(&req("token=tok-123", &[], body.as_bytes()))
        .unwrap();
    assert_eq!(
        p.verify(&req("token=tok-124", &[], body.as_bytes()))
            .unwrap_err()
            .kind,
        RejectKind::Unauthenticated
    );
    assert_eq!(
        p.verify(&req("", &[], body.as_bytes())).unwrap_err().kind,
        RejectKind::Unauthenticated
    );
    let ev = p
        .verify(&req("token=tok-123", &[], body.as_bytes()))
        .unwrap();
    let again = p
        .verify(&req("token=tok-123", &[], body.as_bytes()))
        .unwrap();
    assert_eq!(ev[0].dedup_key, again[0].dedup_key);
    assert!(Tightknit::create(Host::detached(), json!({})).is_err());
    assert!(Tightknit::create(Host::detached(), json!({"secret": "whsec_!!"})).is_err());
    assert!(
        Tightknit::create(Host::detached(), json!({"secret": SECRET, "tolerence": 3}))
            .err()
            .unwrap()
            .contains("tolerence")
    );
}

#[test]
fn samples_verify() {
    for p in [
        plugin(json!({"secret": SECRET})),
        plugin(json!({"unsigned": true, "token": "a b"})),
    ] {
        for name in SAMPLES {
            let s = p.sample(name).unwrap();
            let h: Vec<(&str, &[u8])> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            p.verify(&req(&s.query, &h, s.body.as_bytes())).unwrap();
        }
    }
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tightknit");
    let n = switchyard_plugin_support::fuzz::replay_dir(&dir, fuzz_one);
    assert!(n > 0, "no corpus at {}", dir.display());
}

/// The documents' examples are the catalog's test vectors: each, as the
/// plugin makes it an event, matches its type's schema.
#[test]
fn the_documents_examples_match_the_catalog() {
    use switchyard_plugin_support::catalog_check::{
        assert_compiles, assert_events_match, problems,
    };
    let catalog = catalog::catalog();
    assert_compiles(&catalog);
    // The documents' "Event User Registration" shape, filled in, with the
    // optional parts absent; and every sample (legacy and newer forms).
    let documented = json!({
        "version": "1.0", "action": LEGACY_ACTION, "status": "registered",
        "date": "2025-05-01T10:00:00Z",
        "event": {"id": "e1", "title": "Community call", "slug": "community-call"},
        "source": {"slack_workspace_id": "T1"},
        "user": {"id": "u1", "first_name": "Ada", "last_name": "Lovelace", "real_name": "Ada Lovelace",
                 "display_name": "ada", "email": "ada@example.com",
                 "profile_fields": {"role": {"label": "Role", "value": "Engineer"}}}
    })
    .to_string();
    assert_events_match(&catalog, &normalize(documented.as_bytes(), None).unwrap());
    for name in SAMPLES {
        let body = sample_body(name).unwrap().to_string();
        assert_events_match(&catalog, &normalize(body.as_bytes(), None).unwrap());
    }
    // The calendar event's title changed to a number: found.
    let mut changed = sample_body(REGISTERED).unwrap();
    changed["event"]["title"] = json!(7);
    assert_eq!(problems(&catalog, REGISTERED, &changed).len(), 1);
}
