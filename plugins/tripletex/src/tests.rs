use super::*;
use switchyard_plugin_api::RejectKind;

const SECRET: &str = "my-shared-secret";
const KEY: &str = "3f1c2a9e-0000-4000-8000-000000000001";
const BODY: &str = r#"{"subscriptionId":1,"event":"product.create","id":2,"value":null}"#;
const SIG: &str =
    "eW9Xz4Cp8I+9AGUvW8TosH1cBgy4m9vTr9ZvnNuY3Ma5vJd+0M08UleSVvJ4maZxIwwt+D4Cfs3T4DtB04p28Q==";

fn plugin(config: Value) -> Tripletex {
    Tripletex::create(Host::detached(), config).unwrap()
}

fn req<'a>(
    path: &'a str,
    query: &'a str,
    headers: &'a [(&'a str, &'a [u8])],
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method: "POST",
        path,
        query,
        headers,
        remote_addr: "127.0.0.1",
        body,
    }
}

fn kind(p: &Tripletex, r: Request<'_>) -> RejectKind {
    p.verify(&r).unwrap_err().kind
}

#[test]
fn hmac_vector() {
    let p = plugin(json!({"auth": "hmac", "secret": SECRET}));
    let events = p
        .verify(&req(
            "",
            "",
            &[
                ("idempotency-key", KEY.as_bytes()),
                ("x-request-signature", SIG.as_bytes()),
            ],
            BODY.as_bytes(),
        ))
        .unwrap();
    let ev = &events[0];
    assert_eq!(ev.kind, "product.create");
    assert_eq!(ev.subject.as_deref(), Some("2"));
    assert_eq!(
        ev.dedup_key.as_deref(),
        Some(&*format!("idempotency-key:{KEY}"))
    );
    assert_eq!(ev.extensions["deleted"], true);
    assert_eq!(p.signed(BODY.into(), KEY).headers.last().unwrap().1, SIG);
}

#[test]
fn hmac_tampering() {
    let p = plugin(json!({"auth": "hmac", "secret": SECRET}));
    let h = |k: &'static str, s: &'static str| -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("idempotency-key", k.as_bytes()),
            ("x-request-signature", s.as_bytes()),
        ]
    };
    let other_body = BODY.replace("\"id\":2", "\"id\":3");
    assert_eq!(
        kind(&p, req("", "", &h(KEY, SIG), other_body.as_bytes())),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        kind(
            &p,
            req(
                "",
                "",
                &h("3f1c2a9e-0000-4000-8000-000000000002", SIG),
                BODY.as_bytes()
            )
        ),
        RejectKind::Unauthenticated
    );
    let bad = SIG.replace('e', "f");
    let bad: &'static str = Box::leak(bad.into_boxed_str());
    assert_eq!(
        kind(&p, req("", "", &h(KEY, bad), BODY.as_bytes())),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        kind(
            &p,
            req(
                "",
                "",
                &[("x-request-signature", SIG.as_bytes())],
                BODY.as_bytes()
            )
        ),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        kind(
            &p,
            req(
                "",
                "",
                &[("idempotency-key", KEY.as_bytes())],
                BODY.as_bytes()
            )
        ),
        RejectKind::Unauthenticated
    );
    let other = plugin(json!({"auth": "hmac", "secret": "another-secret"}));
    assert_eq!(
        kind(&other, req("", "", &h(KEY, SIG), BODY.as_bytes())),
        RejectKind::Unauthenticated
    );
}

#[test]
fn custom_header() {
    let p =
        plugin(json!({"auth": "header", "header_name": "X-Auth", "header_value": "Bearer abc123"}));
    p.verify(&req(
        "",
        "",
        &[("x-auth", b"Bearer abc123")],
        BODY.as_bytes(),
    ))
    .unwrap();
    assert_eq!(
        kind(
            &p,
            req("", "", &[("x-auth", b"Bearer abc124")], BODY.as_bytes())
        ),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        kind(
            &p,
            req("", "", &[("x-other", b"Bearer abc123")], BODY.as_bytes())
        ),
        RejectKind::Unauthenticated
    );
}

#[test]
fn basic_auth() {
    let p = plugin(json!({"auth": "basic", "username": "tx", "password": "pa:ss"}));
    let good = format!("Basic {}", base64(b"tx:pa:ss"));
    p.verify(&req(
        "",
        "",
        &[("authorization", good.as_bytes())],
        BODY.as_bytes(),
    ))
    .unwrap();
    for bad in [
        format!("Basic {}", base64(b"tx:pass")),
        format!("Basic {}", base64(b"ty:pa:ss")),
        format!("Bearer {}", base64(b"tx:pa:ss")),
        "Basic !!!".into(),
    ] {
        assert_eq!(
            kind(
                &p,
                req(
                    "",
                    "",
                    &[("authorization", bad.as_bytes())],
                    BODY.as_bytes()
                )
            ),
            RejectKind::Unauthenticated,
            "{bad}"
        );
    }
    assert_eq!(
        kind(&p, req("", "", &[], BODY.as_bytes())),
        RejectKind::Unauthenticated
    );
}

#[test]
fn token_in_query_or_path() {
    let p = plugin(json!({"auth": "token", "token": "secret 123"}));
    p.verify(&req("", "token=secret%20123", &[], BODY.as_bytes()))
        .unwrap();
    p.verify(&req("/secret 123", "", &[], BODY.as_bytes()))
        .unwrap();
    assert_eq!(
        kind(&p, req("", "token=secret124", &[], BODY.as_bytes())),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        kind(&p, req("", "", &[], BODY.as_bytes())),
        RejectKind::Unauthenticated
    );
    let named = plugin(json!({"auth": "token", "token": "t", "token_param": "key"}));
    named
        .verify(&req("", "key=t", &[], BODY.as_bytes()))
        .unwrap();
}

#[test]
fn settings_are_checked() {
    for (config, needle) in [
        (json!({}), "choose auth"),
        (json!({"auth": "magic"}), "magic"),
        (
            json!({"auth": "header", "header_name": "X"}),
            "header_value",
        ),
        (json!({"auth": "basic", "username": "u"}), "password"),
        (json!({"auth": "token"}), "token"),
        (json!({"auth": "hmac"}), "secret"),
        (
            json!({"auth": "hmac", "secret": "s", "colour": 1}),
            "colour",
        ),
    ] {
        let err = Tripletex::create(Host::detached(), config).err().unwrap();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn names_are_case_insensitive_and_dedup_falls_back_to_the_body() {
    let a = normalize(
        br#"{"subscriptionId":9,"event":"closeGroup.create","id":5,"value":{"id":5,"version":3}}"#,
        None,
        false,
    )
    .unwrap();
    let b = normalize(
        br#"{"subscriptionId":9,"event":"closegroup.create","id":5,"value":{"id":5,"version":3}}"#,
        None,
        false,
    )
    .unwrap();
    assert_eq!(a[0].kind, "closegroup.create");
    assert_eq!(a[0].extensions["event_as_sent"], "closeGroup.create");
    assert_eq!(a[0].dedup_key, b[0].dedup_key);
    let newer = normalize(
        br#"{"subscriptionId":9,"event":"closegroup.create","id":5,"value":{"id":5,"version":4}}"#,
        None,
        false,
    )
    .unwrap();
    assert_ne!(newer[0].dedup_key, a[0].dedup_key);
    assert!(a[0].order.is_none());
    let guarded = normalize(
        br#"{"subscriptionId":9,"event":"product.update","id":5,"value":{"id":5,"version":4}}"#,
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        guarded[0].order,
        Some(switchyard_plugin_api::Order {
            key: "product:5".into(),
            version: 4
        })
    );
    assert_eq!(
        normalize(b"{}", None, false).unwrap_err().kind,
        RejectKind::Malformed
    );
    assert_eq!(
        normalize(b"nope", None, false).unwrap_err().kind,
        RejectKind::Malformed
    );
    let unknown = normalize(
        br#"{"subscriptionId":9,"event":"timesheet.approve","id":1,"value":{}}"#,
        None,
        false,
    )
    .unwrap();
    assert_eq!(unknown[0].kind, "timesheet.approve");
}

#[test]
fn samples_verify_for_every_event_and_every_auth() {
    for config in [
        json!({"auth": "hmac", "secret": SECRET}),
        json!({"auth": "header", "header_name": "Authorization", "header_value": "Bearer abc"}),
        json!({"auth": "basic", "username": "u", "password": "p"}),
        json!({"auth": "token", "token": "t&=x"}),
    ] {
        let p = plugin(config);
        for event in EVENTS {
            let s = p.sample(event).unwrap();
            let headers: Vec<(&str, &[u8])> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            let ev = p
                .verify(&req("", &s.query, &headers, s.body.as_bytes()))
                .unwrap();
            assert_eq!(ev[0].kind, *event);
            assert_eq!(ev[0].extensions["deleted"], event.ends_with(".delete"));
        }
    }
    assert!(matches!(
        plugin(json!({"auth": "token", "token": "t"})).sample("x.y"),
        Err(SampleError::Unknown(_))
    ));
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tripletex");
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
    // The HMAC vector's body, and the "WebHook format" (an object, and a
    // delete's null value), as Tripletex spells closeGroup.
    let bodies = [
        BODY.to_string(),
        r#"{"subscriptionId":7,"event":"product.update","id":42,"value":{"id":42,"version":3,"name":"Consulting hour"}}"#.into(),
        r#"{"subscriptionId":7,"event":"customer.delete","id":42,"value":null}"#.into(),
        r#"{"subscriptionId":7,"event":"closeGroup.create","id":9,"value":{"id":9}}"#.into(),
    ];
    for body in bodies
        .iter()
        .cloned()
        .chain(EVENTS.iter().map(|e| sample_body(e).to_string()))
    {
        assert_events_match(&catalog, &normalize(body.as_bytes(), None, false).unwrap());
    }
    // A delete that carries its object, an id sent as text: both found.
    let odd =
        json!({"subscriptionId": 7, "event": "customer.delete", "id": "42", "value": {"id": 42}});
    assert_eq!(problems(&catalog, "customer.delete", &odd).len(), 2);
}
