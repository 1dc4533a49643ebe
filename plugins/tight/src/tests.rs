use super::*;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use switchyard_plugin_api::RejectKind;

const SECRET: &str = "tight-test-secret";

fn plugin(extra: Value) -> Tight {
    let mut config = json!({"secret": SECRET});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Tight::create(Host::detached(), config).expect("valid config")
}

fn jwt(header: Header, claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn body_claim(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

fn verify(
    p: &Tight,
    token: Option<&str>,
    body: &[u8],
    addr: &str,
) -> Result<Vec<EventDraft>, Rejection> {
    let headers: Vec<(&str, &[u8])> = token
        .map(|t| vec![("tight-verification", t.as_bytes())])
        .unwrap_or_default();
    p.verify(&Request {
        method: "POST",
        path: "",
        query: "",
        headers: &headers,
        remote_addr: addr,
        body,
    })
}

const LIFECYCLE: &[u8] = br#"{"editor":{"userId":"u1"},"company":{"id":"co_1"},"type":"LIFECYCLE","event":"invoiceViewed","datetime":"2025-04-01T11:31:04.1Z","eventData":{"entityId":"inv_9"}}"#;

#[test]
fn accepts_a_good_lifecycle_webhook() {
    let p = plugin(json!({}));
    let token = jwt(
        Header::new(Algorithm::HS256),
        json!({"iat": unix_now(), "request_body_sha256": body_claim(LIFECYCLE)}),
        SECRET.as_bytes(),
    );
    let events = verify(&p, Some(&token), LIFECYCLE, "127.0.0.1").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "invoiceViewed");
    assert_eq!(events[0].subject.as_deref(), Some("inv_9"));
    assert_eq!(events[0].time.as_deref(), Some("2025-04-01T11:31:04.1Z"));
    assert!(events[0].dedup_key.is_some());
}

#[test]
fn refuses_wrong_secret_alg_none_other_algs_and_age() {
    let p = plugin(json!({}));
    let now = unix_now();
    let good = json!({"iat": now, "request_body_sha256": body_claim(LIFECYCLE)});
    let cases: Vec<(&str, String, RejectKind)> = vec![
        (
            "wrong secret",
            jwt(Header::new(Algorithm::HS256), good.clone(), b"other"),
            RejectKind::Unauthenticated,
        ),
        (
            "HS512",
            jwt(
                Header::new(Algorithm::HS512),
                good.clone(),
                SECRET.as_bytes(),
            ),
            RejectKind::Unauthenticated,
        ),
        (
            "HS384",
            jwt(
                Header::new(Algorithm::HS384),
                good.clone(),
                SECRET.as_bytes(),
            ),
            RejectKind::Unauthenticated,
        ),
        (
            "old iat",
            jwt(
                Header::new(Algorithm::HS256),
                json!({"iat": now - 300, "request_body_sha256": body_claim(LIFECYCLE)}),
                SECRET.as_bytes(),
            ),
            RejectKind::Expired,
        ),
        (
            "future iat",
            jwt(
                Header::new(Algorithm::HS256),
                json!({"iat": now + 3600, "request_body_sha256": body_claim(LIFECYCLE)}),
                SECRET.as_bytes(),
            ),
            RejectKind::Expired,
        ),
        (
            "no iat",
            jwt(
                Header::new(Algorithm::HS256),
                json!({"request_body_sha256": body_claim(LIFECYCLE)}),
                SECRET.as_bytes(),
            ),
            RejectKind::Unauthenticated,
        ),
        (
            "other body",
            jwt(
                Header::new(Algorithm::HS256),
                json!({"iat": now, "request_body_sha256": body_claim(b"{}")}),
                SECRET.as_bytes(),
            ),
            RejectKind::Unauthenticated,
        ),
        (
            "garbage",
            "not.a.jwt".to_string(),
            RejectKind::Unauthenticated,
        ),
    ];
    for (name, token, kind) in cases {
        let err = verify(&p, Some(&token), LIFECYCLE, "").expect_err(name);
        assert_eq!(err.kind, kind, "{name}: {err}");
    }
    // alg: none, with an empty signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(good.to_string());
    let none = format!("{header}.{claims}.");
    assert_eq!(
        verify(&p, Some(&none), LIFECYCLE, "").unwrap_err().kind,
        RejectKind::Unauthenticated
    );
    assert_eq!(
        verify(&p, None, LIFECYCLE, "").unwrap_err().kind,
        RejectKind::Unauthenticated
    );
}

#[test]
fn tolerance_is_configurable() {
    let p = plugin(json!({"tolerance_secs": 10}));
    let token = jwt(
        Header::new(Algorithm::HS256),
        json!({"iat": unix_now() - 60, "request_body_sha256": body_claim(LIFECYCLE)}),
        SECRET.as_bytes(),
    );
    assert_eq!(
        verify(&p, Some(&token), LIFECYCLE, "").unwrap_err().kind,
        RejectKind::Expired
    );
}

#[test]
fn body_digest_accepts_every_encoding() {
    let digest = Sha256::digest(LIFECYCLE);
    for claim in [
        STANDARD.encode(digest),
        STANDARD_NO_PAD.encode(digest),
        URL_SAFE.encode(digest),
        URL_SAFE_NO_PAD.encode(digest),
        hex(&digest),
        hex(&digest).to_uppercase(),
    ] {
        assert_eq!(
            decode_digest(&claim).as_deref(),
            Some(&digest[..]),
            "{claim}"
        );
    }
    assert_eq!(decode_digest("c2hvcnQ="), None);
}

#[test]
fn config_errors_name_the_key() {
    let err = Tight::create(Host::detached(), json!({"secret": "s", "tolerance": 5}))
        .err()
        .unwrap();
    assert!(err.contains("tolerance"), "{err}");
    let err = Tight::create(Host::detached(), json!({})).err().unwrap();
    assert!(err.contains("secret"), "{err}");
}

#[test]
fn entity_update_current_form() {
    let body = json!({"editor":{"userId":"u"},"company":{"id":"co","apiCompanyId":"id"},"type":"ENTITY_UPDATE","url":"/v6/banks/transactions/btn_936723","data":{"id:":"btn_936723","type":"REVENUE","amount":15399}});
    let events = normalize(&body, body.to_string().as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "entity.bankTransaction");
    assert_eq!(events[0].subject.as_deref(), Some("btn_936723"));
    assert_eq!(events[0].extensions["resource"], "/banks/transactions");

    let body = json!({"type":"ENTITY_UPDATE","url":"/v6/invoices/inv_1","data":{"id":"inv_1"}});
    let events = normalize(&body, b"x").unwrap();
    assert_eq!(events[0].kind, "entity.invoice");
    assert_eq!(events[0].extensions["resource"], "/invoices");
    assert_eq!(events[0].extensions["entity_id"], "inv_1");
}

#[test]
fn entity_update_legacy_form_gives_one_event_per_entity() {
    let body = json!({"userId":"u","type":"ENTITY_UPDATE","entities":["bankTransfer","expense","expenseCategory"]});
    let events = normalize(&body, b"x").unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "entity.bankTransfer",
            "entity.expense",
            "entity.expenseCategory"
        ]
    );
    assert_eq!(events[2].extensions["resource"], "/expenses/categories");
    let keys: std::collections::HashSet<_> = events.iter().map(|e| e.dedup_key.clone()).collect();
    assert_eq!(keys.len(), 3);
}

#[test]
fn url_mapping_covers_the_table() {
    for (entity, resource) in ENTITIES {
        let (e, r) = entity_for_url(&format!("/v6{resource}/x_1"));
        assert_eq!((e.as_str(), r.as_str()), (entity, resource));
    }
    assert_eq!(entity_for_url("/v6/widgets/w_1").0, "widget");
    assert_eq!(entity_for_url("/v6/glEntries/gle_1").0, "glEntry");
}

#[test]
fn legacy_lifecycle_and_unknown_types_pass_through() {
    let body =
        json!({"userId":"u","type":"LIFECYCLE_EVENT","event":"INVOICE_VIEWED","eventData":{}});
    let events = normalize(&body, b"x").unwrap();
    assert_eq!(events[0].kind, "INVOICE_VIEWED");
    assert_eq!(events[0].extensions["legacy"], true);

    let body = json!({"type":"SOMETHING_NEW","x":1});
    assert_eq!(normalize(&body, b"x").unwrap()[0].kind, "SOMETHING_NEW");

    let body = json!({"type":"LIFECYCLE"});
    assert_eq!(
        normalize(&body, b"x").unwrap_err().kind,
        RejectKind::Malformed
    );
    assert_eq!(
        normalize(&json!([1]), b"x").unwrap_err().kind,
        RejectKind::Malformed
    );
}

#[test]
fn datetime_with_nine_fraction_digits_is_kept() {
    assert_eq!(
        normalize_time("2025-04-01T11:31:04.123456789Z").as_deref(),
        Some("2025-04-01T11:31:04.123456789Z")
    );
    assert_eq!(normalize_time("yesterday"), None);
}

#[test]
fn samples_verify_against_the_same_plugin() {
    let p = plugin(json!({}));
    for name in ["invoiceViewed", "entity.invoice", "INVOICE_VIEWED"] {
        let s = p.sample(name).unwrap();
        let token = &s
            .headers
            .iter()
            .find(|(n, _)| n == "tight-verification")
            .unwrap()
            .1;
        let events = verify(&p, Some(token), s.body.as_bytes(), "").unwrap();
        assert!(!events.is_empty(), "{name}");
    }
    assert!(matches!(p.sample("nope"), Err(SampleError::Unknown(_))));
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tight");
    let n = switchyard_plugin_support::fuzz::replay_dir(&dir, fuzz_one);
    assert!(n > 0, "no corpus at {}", dir.display());
}

/// The documents' examples are the catalog's test vectors: each, as the
/// plugin makes it an event, matches its type's schema.
#[test]
fn the_documents_examples_match_the_catalog() {
    use switchyard_plugin_support::catalog_check::{assert_compiles, assert_events_match};
    let catalog = catalog::catalog();
    assert_compiles(&catalog);
    // Seed 001, "Entity update webhooks" (its stray "id:" key and all).
    let entity = json!({
        "editor": {"userId": "fake_userId"},
        "company": {"id": "co_1234", "apiCompanyId": "id_1234"},
        "type": "ENTITY_UPDATE",
        "url": "/v6/banks/transactions/btn_936723",
        "data": {"id:": "btn_936723", "type": "REVENUE", "amount": 15399}
    });
    // Seed 001, "Lifecycle webhooks".
    let lifecycle = json!({
        "editor": {"userId": "fake_userId"},
        "company": {"id": "co_1234"},
        "type": "LIFECYCLE",
        "event": "bankAccountCreated",
        "datetime": "2025-04-01T11:31:04.1Z",
        "eventData": {"entityId": "fake_id", "apiName": "PLAID", "type": "DEPOSITORY"}
    });
    // The legacy forms (PROVIDERS.md).
    let legacy_entities =
        json!({"userId": "u1", "type": "ENTITY_UPDATE", "entities": ["bankTransfer", "expense"]});
    let legacy_lifecycle = json!({"userId": "u1", "type": "LIFECYCLE_EVENT", "event": "INVOICE_VIEWED", "eventData": {"entityId": "inv_1"}});
    for body in [entity, lifecycle, legacy_entities, legacy_lifecycle] {
        let events = normalize(&body, body.to_string().as_bytes()).unwrap();
        assert_events_match(&catalog, &events);
    }
    // And every sample the plugin can sign.
    let names = LIFECYCLE_EVENTS
        .iter()
        .chain(LEGACY_EVENTS.iter())
        .map(|n| n.to_string())
        .chain(ENTITIES.iter().map(|(e, _)| format!("entity.{e}")));
    for name in names {
        let body = sample_body(&name).unwrap();
        let events = normalize(&body, b"x").unwrap();
        assert_eq!(events[0].kind, name);
        assert_events_match(&catalog, &events);
    }
}

#[test]
fn the_catalog_finds_what_the_documents_do_not_say() {
    use switchyard_plugin_support::catalog_check::problems;
    let catalog = catalog::catalog();
    let viewed = |event_data: Value| {
        json!({"editor": {"userId": "u"}, "company": {"id": "c"}, "type": "LIFECYCLE",
               "event": "invoiceViewed", "datetime": "2025-04-01T11:31:04.1Z", "eventData": event_data})
    };
    assert!(problems(
        &catalog,
        "invoiceViewed",
        &viewed(json!({"entityId": "inv_1"}))
    )
    .is_empty());
    // A renamed field, a number where a string was: both found.
    let found = problems(
        &catalog,
        "invoiceViewed",
        &viewed(json!({"invoiceId": "inv_1"})),
    );
    assert_eq!(found.len(), 2, "{found:?}");
    let found = problems(&catalog, "invoiceViewed", &viewed(json!({"entityId": 7})));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("/eventData/entityId"), "{found:?}");
    // An entity's data is open: more of it is not drift.
    let entity = json!({"editor": {"userId": "u"}, "company": {"id": "c"}, "type": "ENTITY_UPDATE",
                        "url": "/v6/invoices/inv_1", "data": {"id": "inv_1", "total": 5}});
    assert!(problems(&catalog, "entity.invoice", &entity).is_empty());
}
