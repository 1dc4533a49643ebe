//! A Tight webhook end to end: PyJWT-signed request → tight plugin → rule →
//! file action; and every way a request can be wrong.

use crate::common::*;

#[test]
fn signed_invoice_viewed_fires_the_rule() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let body = invoice_viewed("inv_42");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (status, text) = daemon.post(
        "/hooks/tight",
        &[
            ("Tight-Verification", &token),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(status, 200, "{text}\n{}", daemon.logs());
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = answer["accepted"].as_array().unwrap();
    assert_eq!(ids.len(), 1);

    let lines = env.wait_audit(1);
    assert_eq!(lines.len(), 1, "{}", daemon.logs());
    assert_eq!(lines[0]["params"]["invoice"], "inv_42");
    assert_eq!(lines[0]["params"]["type"], "tight.invoiceViewed");
    assert_eq!(lines[0]["event_id"], ids[0]);
    assert_eq!(
        lines[0]["idempotency_key"],
        format!("{}:viewed:0", ids[0].as_str().unwrap())
    );
    // The secret never reaches the log.
    assert!(!daemon.logs().contains(SECRET));
}

#[test]
fn bad_signatures_get_401_and_fire_nothing() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let body = invoice_viewed("inv_1");
    let b = body.as_bytes();
    let cases: Vec<(&str, Option<String>, String)> = vec![
        (
            "wrong secret",
            Some(pyjwt("not-the-secret", b, &[])),
            body.clone(),
        ),
        (
            "iat too old",
            Some(pyjwt(SECRET, b, &["--iat-offset", "-301"])),
            body.clone(),
        ),
        (
            "iat far in the future",
            Some(pyjwt(SECRET, b, &["--iat-offset", "3600"])),
            body.clone(),
        ),
        (
            "altered body",
            Some(pyjwt(SECRET, b, &[])),
            body.replace("inv_1", "inv_2"),
        ),
        (
            "alg none",
            Some(pyjwt(SECRET, b, &["--none"])),
            body.clone(),
        ),
        (
            "HS512",
            Some(pyjwt(SECRET, b, &["--alg", "HS512"])),
            body.clone(),
        ),
        (
            "HS384",
            Some(pyjwt(SECRET, b, &["--alg", "HS384"])),
            body.clone(),
        ),
        ("missing header", None, body.clone()),
        ("garbage header", Some("abc.def.ghi".into()), body.clone()),
    ];
    for (name, token, body) in cases {
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| vec![("Tight-Verification", t)])
            .unwrap_or_default();
        let (status, text) = daemon.post("/hooks/tight", &headers, body);
        assert_eq!(status, 401, "{name}: {text}");
        assert_eq!(
            text, r#"{"error":"unauthorized"}"#,
            "{name}: the answer stays generic"
        );
    }
    // A good one afterwards still works, and it is the only action.
    let token = pyjwt(SECRET, b, &[]);
    let (status, text) = daemon.post("/hooks/tight", &[("Tight-Verification", &token)], body);
    assert_eq!(status, 200, "{text}");
    let lines = env.wait_audit_of(&accepted_id(&text));
    assert_eq!(lines.len(), 1, "{lines:?}");
    // Reasons are counted and logged, never sent back.
    assert!(refused(&daemon, "tight", "expired") >= 1.0);
    let logs = daemon.logs();
    assert!(logs.contains("expired"), "{logs}");
    assert!(
        logs.contains("algorithm is not HS256") || logs.contains("malformed token"),
        "{logs}"
    );
}

#[test]
fn unknown_source_oversized_body_non_json_and_wrong_method() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);

    assert_eq!(daemon.post("/hooks/nope", &[], "{}").0, 404);
    assert_eq!(daemon.post("/elsewhere", &[], "{}").0, 404);

    let big = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(daemon.post("/hooks/tight", &[], big).0, 413);

    let not_json = b"this is signed but not JSON".to_vec();
    let token = pyjwt(SECRET, &not_json, &[]);
    let (status, text) = daemon.post("/hooks/tight", &[("Tight-Verification", &token)], not_json);
    assert_eq!(status, 400, "{text}");

    let resp = reqwest::blocking::get(daemon.url("/hooks/tight")).unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    // Nothing of the above was stored: a good one afterwards is the first.
    let id = daemon.send_viewed("inv_after");
    let listed = cli(&["events", "list", "--json"], &config).1;
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&id), "{listed}");
}

#[test]
fn body_limit_is_configurable_and_chunked_bodies_are_counted() {
    let env = Env::new();
    env.standard();
    let config = env.config(
        r#"max_body_bytes = 100
[sources.tight]
plugin = "tight"
secret = "literal-but-fine-for-a-test"
"#,
    );
    let daemon = Daemon::start(&config);
    assert_eq!(daemon.post("/hooks/tight", &[], vec![b'{'; 101]).0, 413);
    // Without a Content-Length (chunked), the limit still holds.
    let client = reqwest::blocking::Client::new();
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'a'; 120]));
    let resp = client
        .post(daemon.url("/hooks/tight"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert!(
        daemon.logged("literal secret"),
        "literal secrets are warned about"
    );
    assert!(!daemon.logs().contains("literal-but-fine-for-a-test"));
}

#[test]
fn send_posts_a_signed_sample_and_sigterm_stops_cleanly() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["send", "tight", "invoiceViewed", "--config"])
        .arg(&config)
        .arg("--to")
        .arg(daemon.url("/hooks/tight"))
        .env("SWITCHYARD_IT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 OK"));
    assert_eq!(env.wait_audit(1).len(), 1);
    let status = daemon.stop();
    assert!(status.success(), "{status:?}");
}
