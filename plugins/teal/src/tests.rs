use super::*;
use switchyard_plugin_api::RejectKind;

const VECTOR_BODY: &str = r#"{"event": "user-payroll-submitted", "user_id": "4708334c-70b3-437d-8e46-91ff5c9a8d7d", "timestamp": "2024-04-04T12:00:00.00Z"}"#;
const VECTOR_SIG: &str = "a30540779107a19069257432b775b74b16b32214616638fae2e6027a41a3f2dfb08f44daf3862c335d08fb83501fc769f73d49a1cb137f96f31c6a7db412c197";
const KEY: &str = "7/PxZATSzWbQkS8ZjSt0f+bTMt9oQ6jkm0aYFe3NN24=";
const IV: &str = "vdBbe9Tk7aqo1pZi";
const SEALED: &str = "nBPqEB4T1g/88q1P2qm7oYH5MYbR/NpCVBCytMZsB7ux4xR+OYPS8Y/Ye8giQb6UplDitbKlFlHPoA6pzMu3CmD2cew4JvluyKiOQBE61OwETwJ++KkvwuB9WxegKnhncWqg6qwn9WkRGtmKpfrxiXrdvj7V4aKSOFkO8ByWYztQp58Ublm3yNPQyQmnzJOR+/4v8OMbVivcAkumRu8PO2EYr2uqfPvNMonXiNE5fnqJieZKFvRnDi+s6TNZpSsCzWPgfDGn+EqiDbjqWw+eWnUYd3BQ75OOJficovrzk1dYkONm5uYTnZYSdiwMzNm7";
const PLAIN: &str = r#"{"event":"user-payroll-submitted","user_id":"c7a3bdb2-68c3-46d4-8c40-901269d1f033","entry_id":"3a839179-b8aa-4281-bcdd-b618f3ec4377","account_id":"c9e1cd05-82b5-414c-b3de-534787cc5ff9","timestamp":"2025-04-04T10:56:16.388Z"}"#;

fn teal(config: Value) -> Teal {
    Teal::create(Host::detached(), config).unwrap()
}

fn signed() -> Teal {
    teal(json!({"signing_secret": "mysecret"}))
}

fn both() -> Teal {
    teal(json!({"signing_secret": "mysecret", "encryption_key": KEY}))
}

fn request<'a>(headers: &'a [(&'a str, &'a [u8])], body: &'a [u8]) -> Request<'a> {
    Request {
        method: "POST",
        path: "",
        query: "",
        headers,
        remote_addr: "127.0.0.1",
        body,
    }
}

fn reject(t: &Teal, headers: &[(&str, &[u8])], body: &[u8]) -> RejectKind {
    t.verify(&request(headers, body)).unwrap_err().kind
}

#[test]
fn signature_vector() {
    assert_eq!(
        signed().signature(VECTOR_BODY.as_bytes()).unwrap(),
        VECTOR_SIG
    );
    let events = signed()
        .verify(&request(
            &[("x-teal-signature", VECTOR_SIG.as_bytes())],
            VECTOR_BODY.as_bytes(),
        ))
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "user-payroll-submitted");
    assert_eq!(
        events[0].subject.as_deref(),
        Some("4708334c-70b3-437d-8e46-91ff5c9a8d7d")
    );
    assert_eq!(events[0].time.as_deref(), Some("2024-04-04T12:00:00Z"));
}

#[test]
fn signature_in_upper_hex_or_base64_is_accepted() {
    let upper = VECTOR_SIG.to_uppercase();
    let b64 = base64(&switchyard_plugin_support::decode_hex(VECTOR_SIG).unwrap());
    for sig in [upper, b64] {
        signed()
            .verify(&request(
                &[("X-Teal-Signature", sig.as_bytes())],
                VECTOR_BODY.as_bytes(),
            ))
            .unwrap();
    }
}

#[test]
fn decryption_vector() {
    let t = both();
    let plain = t.decrypt(SEALED.as_bytes(), IV).unwrap();
    assert_eq!(std::str::from_utf8(&plain).unwrap(), PLAIN);
    // The signature is made over the encrypted body, as Teal sends it.
    let sig = t.signature(SEALED.as_bytes()).unwrap();
    let events = t
        .verify(&request(
            &[
                ("x-teal-signature", sig.as_bytes()),
                ("x-teal-encryption-iv", IV.as_bytes()),
            ],
            SEALED.as_bytes(),
        ))
        .unwrap();
    assert_eq!(
        events[0].extensions["entry_id"],
        "3a839179-b8aa-4281-bcdd-b618f3ec4377"
    );
    assert_eq!(
        events[0].data["user_id"],
        "c7a3bdb2-68c3-46d4-8c40-901269d1f033"
    );
}

#[test]
fn each_tampering_is_refused() {
    let t = both();
    let sig = t.signature(SEALED.as_bytes()).unwrap();
    let sig = sig.as_bytes();
    let iv = IV.as_bytes();
    // Body changed after signing.
    let mut body = SEALED.as_bytes().to_vec();
    body[10] ^= 1;
    assert_eq!(
        reject(
            &t,
            &[("x-teal-signature", sig), ("x-teal-encryption-iv", iv)],
            &body
        ),
        RejectKind::Unauthenticated
    );
    // Signature changed, missing, or made with another secret.
    let mut bad = sig.to_vec();
    bad[0] = if bad[0] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        reject(
            &t,
            &[("x-teal-signature", &bad), ("x-teal-encryption-iv", iv)],
            SEALED.as_bytes()
        ),
        RejectKind::Unauthenticated
    );
    assert_eq!(
        reject(&t, &[("x-teal-encryption-iv", iv)], SEALED.as_bytes()),
        RejectKind::Unauthenticated
    );
    let other = teal(json!({"signing_secret": "othersecret", "encryption_key": KEY}));
    assert_eq!(
        reject(
            &other,
            &[("x-teal-signature", sig), ("x-teal-encryption-iv", iv)],
            SEALED.as_bytes()
        ),
        RejectKind::Unauthenticated
    );
    // A correctly signed delivery with a wrong IV, a broken tag or another key.
    let wrong_iv = base64(b"000000000000");
    assert_eq!(
        reject(
            &t,
            &[
                ("x-teal-signature", sig),
                ("x-teal-encryption-iv", wrong_iv.as_bytes())
            ],
            SEALED.as_bytes()
        ),
        RejectKind::Decryption
    );
    let mut raw = decode_base64(SEALED).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let cut_tag = base64(&raw);
    let resigned = t.signature(cut_tag.as_bytes()).unwrap();
    assert_eq!(
        reject(
            &t,
            &[
                ("x-teal-signature", resigned.as_bytes()),
                ("x-teal-encryption-iv", iv)
            ],
            cut_tag.as_bytes()
        ),
        RejectKind::Decryption
    );
    let other_key =
        teal(json!({"signing_secret": "mysecret", "encryption_key": base64(&[7u8; 32])}));
    assert_eq!(
        reject(
            &other_key,
            &[("x-teal-signature", sig), ("x-teal-encryption-iv", iv)],
            SEALED.as_bytes()
        ),
        RejectKind::Decryption
    );
    // An IV of the wrong length.
    assert_eq!(
        reject(
            &t,
            &[("x-teal-signature", sig), ("x-teal-encryption-iv", b"AAAA")],
            SEALED.as_bytes()
        ),
        RejectKind::Decryption
    );
}

#[test]
fn encryption_alone_authenticates_and_requires_encrypted_deliveries() {
    let t = teal(json!({"encryption_key": KEY}));
    let events = t
        .verify(&request(
            &[("x-teal-encryption-iv", IV.as_bytes())],
            SEALED.as_bytes(),
        ))
        .unwrap();
    assert_eq!(events[0].kind, "user-payroll-submitted");
    assert_eq!(
        reject(&t, &[], PLAIN.as_bytes()),
        RejectKind::Unauthenticated
    );
    assert!(Teal::create(Host::detached(), json!({})).is_err());
    assert!(Teal::create(
        Host::detached(),
        json!({"encryption_key": KEY, "require_encryption": false})
    )
    .is_err());
    assert!(Teal::create(
        Host::detached(),
        json!({"signing_secret": "s", "require_encryption": true})
    )
    .is_err());
    assert!(Teal::create(
        Host::detached(),
        json!({"signing_secret": "s", "encryption_key": "c2hvcnQ="})
    )
    .is_err());
    let err = Teal::create(
        Host::detached(),
        json!({"signing_secret": "s", "sekret": 1}),
    )
    .err()
    .unwrap();
    assert!(err.contains("sekret"), "{err}");
}

#[test]
fn dedup_key_is_stable_and_tells_submissions_apart() {
    let a = normalize(PLAIN.as_bytes()).unwrap();
    let b = normalize(PLAIN.as_bytes()).unwrap();
    assert_eq!(a[0].dedup_key, b[0].dedup_key);
    let other = PLAIN.replace("b618f3ec4377", "b618f3ec4378");
    assert_ne!(
        normalize(other.as_bytes()).unwrap()[0].dedup_key,
        a[0].dedup_key
    );
}

#[test]
fn shapes_and_unknown_events_pass_through() {
    let statement = sample_body("user-bank-statement-submitted+payload").unwrap();
    let ev = &normalize(statement.to_string().as_bytes()).unwrap()[0];
    assert_eq!(ev.extensions["has_payload"], true);
    assert!(ev.data["payload"]["bank_statement_submissions"].is_array());
    let payslip = sample_body("user-payroll-submitted+payslip").unwrap();
    let ev = &normalize(payslip.to_string().as_bytes()).unwrap()[0];
    assert!(ev.extensions.get("account_id").is_none());
    assert!(ev.extensions["document_external_id"].is_string());
    let new =
        br#"{"event":"user-pension-submitted","user_id":"u1","timestamp":"2025-01-01T00:00:00Z"}"#;
    assert_eq!(normalize(new).unwrap()[0].kind, "user-pension-submitted");
    assert_eq!(normalize(b"[1]").unwrap_err().kind, RejectKind::Malformed);
    assert_eq!(
        normalize(br#"{"user_id":"u"}"#).unwrap_err().kind,
        RejectKind::Malformed
    );
}

#[test]
fn samples_verify_for_every_event_in_every_mode() {
    for t in [signed(), both(), teal(json!({"encryption_key": KEY}))] {
        for name in EVENTS
            .iter()
            .flat_map(|e| [e.to_string(), format!("{e}+payload")])
        {
            let s = t.sample(&name).unwrap();
            let headers: Vec<(&str, &[u8])> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            let events = t.verify(&request(&headers, s.body.as_bytes())).unwrap();
            assert_eq!(events[0].kind, name.split('+').next().unwrap());
        }
    }
    assert!(matches!(
        signed().sample("nope"),
        Err(SampleError::Unknown(_))
    ));
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/teal");
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
    // The signature vector's body, and the decryption vector's plaintext.
    for body in [VECTOR_BODY, PLAIN] {
        assert_events_match(&catalog, &normalize(body.as_bytes()).unwrap());
    }
    // Every shape the documents describe, as the samples make them.
    for event in EVENTS {
        for name in [event.to_string(), format!("{event}+payload")] {
            let body = sample_body(&name).unwrap().to_string();
            assert_events_match(&catalog, &normalize(body.as_bytes()).unwrap());
        }
    }
    let payslip = sample_body("user-payroll-submitted+payslip")
        .unwrap()
        .to_string();
    assert_events_match(&catalog, &normalize(payslip.as_bytes()).unwrap());
    // A field the documents do not list, and one missing: both found.
    let drifted = json!({"event": "user-payroll-submitted", "timestamp": "2025-04-04T10:56:16.388Z", "userId": "u"});
    let found = problems(&catalog, "user-payroll-submitted", &drifted);
    assert_eq!(found.len(), 2, "{found:?}");
}
