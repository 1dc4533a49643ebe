//! Teal, Tripletex and Tightknit end to end: requests signed (and encrypted)
//! by independent Python code, through the daemon and the real plugin
//! libraries, to a rule and the file action; every kind of tampering
//! refused with nothing routed; `switchyard send` for every sample; sender
//! allowlists behind a trusted proxy.

use serde_json::Value;

use crate::common::*;

const TEAL_SECRET: &str = "teal-signing-secret";
const TEAL_KEY: &str = "7/PxZATSzWbQkS8ZjSt0f+bTMt9oQ6jkm0aYFe3NN24=";
const TX_SECRET: &str = "my-shared-secret";
const TK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A deployment with every provider and a rule sending every event to `audit`.
fn deployment(env: &Env, extra_host: &str, extra_sources: &str) -> std::path::PathBuf {
    env.with_standard_plugins();
    for lib in [
        "switchyard_teal",
        "switchyard_tripletex",
        "switchyard_tightknit",
    ] {
        env.add_plugin(&built_plugin(lib));
    }
    env.rule(
        "all",
        r#"const EVENTS = ["teal.*", "tripletex.*", "tightknit.*"];
action("audit", #{ type: event.type, subject: event.subject });"#,
    );
    env.config(&format!(
        r#"{extra_host}
[sources.teal]
plugin = "teal"
signing_secret = "{TEAL_SECRET}"
encryption_key = "{TEAL_KEY}"

[sources.teal-plain]
plugin = "teal"
signing_secret = "{TEAL_SECRET}"

[sources.tripletex]
plugin = "tripletex"
auth = "hmac"
secret = "{TX_SECRET}"
version_guard = true

[sources.tripletex-token]
plugin = "tripletex"
auth = "token"
token = "tok-1234"

[sources.tightknit]
plugin = "tightknit"
secret = "{TK_SECRET}"
{extra_sources}
[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ))
}

type Headers = Vec<(String, String)>;

/// Signs `body` with tests/fixtures/sign.py; returns (headers, body).
fn sign(scheme: &str, body: &str, args: &[&str]) -> (Headers, String) {
    let v = signed_by_python(scheme, body, args);
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_string(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (headers, v["body"].as_str().unwrap().to_string())
}

fn post(d: &Daemon, path: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    d.post(path, &h, body.to_string())
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case(name) {
                value.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

/// Changes the character at `at` to another value: a digit, so that a hex
/// signature read in any case really changes (`a` to `A` would not).
fn flip(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

const PAYROLL: &str = r#"{"event":"user-payroll-submitted","user_id":"c7a3bdb2-68c3-46d4-8c40-901269d1f033","entry_id":"3a839179-b8aa-4281-bcdd-b618f3ec4377","account_id":"c9e1cd05-82b5-414c-b3de-534787cc5ff9","timestamp":"2025-04-04T10:56:16.388Z"}"#;

#[test]
fn teal_signed_and_encrypted_by_python_is_routed_and_tampering_is_refused() {
    let env = Env::new();
    let d = Daemon::start(&deployment(&env, "", ""));
    let (h, body) = sign(
        "teal",
        PAYROLL,
        &["--secret", TEAL_SECRET, "--encryption-key", TEAL_KEY],
    );
    let (status, text) = post(&d, "/hooks/teal", &h, &body);
    assert_eq!(status, 200, "{text}\n{}", d.logs());
    let lines = env.wait_audit(1);
    assert_eq!(lines[0]["params"]["type"], "teal.user-payroll-submitted");
    assert_eq!(
        lines[0]["params"]["subject"],
        "c7a3bdb2-68c3-46d4-8c40-901269d1f033"
    );
    // The same delivery again (a retry) is acknowledged, not routed.
    let (status, text) = post(&d, "/hooks/teal", &h, &body);
    assert_eq!(status, 200);
    assert!(text.contains("\"duplicates\":[\""), "{text}");

    // Plain (unencrypted) deliveries to a source without a key.
    let (h2, body2) = sign(
        "teal",
        &PAYROLL.replace("b618f3ec4377", "b618f3ec4399"),
        &["--secret", TEAL_SECRET],
    );
    assert_eq!(post(&d, "/hooks/teal-plain", &h2, &body2).0, 200);

    let iv = h
        .iter()
        .find(|(k, _)| k == "X-Teal-Encryption-IV")
        .unwrap()
        .1
        .clone();
    let sig = h
        .iter()
        .find(|(k, _)| k == "X-Teal-Signature")
        .unwrap()
        .1
        .clone();
    let (other_key_h, other_key_body) = sign(
        "teal",
        PAYROLL,
        &[
            "--secret",
            TEAL_SECRET,
            "--encryption-key",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ],
    );
    let cases: Vec<(&str, Headers, String, u16)> = vec![
        ("body", h.clone(), flip(&body, 5), 401),
        (
            "signature",
            with(&h, "X-Teal-Signature", &flip(&sig, 0)),
            body.clone(),
            401,
        ),
        (
            "missing signature",
            without(&h, "X-Teal-Signature"),
            body.clone(),
            401,
        ),
        (
            "secret",
            sign(
                "teal",
                PAYROLL,
                &["--secret", "other", "--encryption-key", TEAL_KEY],
            )
            .0,
            body.clone(),
            401,
        ),
        (
            "iv",
            with(&h, "X-Teal-Encryption-IV", &flip(&iv, 0)),
            body.clone(),
            401,
        ),
        ("key", other_key_h, other_key_body, 401),
    ];
    for (what, headers, b, want) in cases {
        let (status, text) = post(&d, "/hooks/teal", &headers, &b);
        assert_eq!(status, want, "{what}: {text}");
    }
    // A broken tag, correctly re-signed: the signature passes, GCM refuses.
    let (_, sealed) = sign("teal", PAYROLL, &["--encryption-key", TEAL_KEY]);
    let mut raw = base64_decode(&sealed);
    let n = raw.len() - 1;
    raw[n] ^= 1;
    let broken = base64_encode(&raw);
    let (resigned, _) = sign("teal", &broken, &["--secret", TEAL_SECRET]);
    let mut headers = resigned;
    headers.push(("X-Teal-Encryption-IV".into(), iv));
    assert_eq!(post(&d, "/hooks/teal", &headers, &broken).0, 401);

    // A good delivery afterwards is the only one routed since.
    let (h3, body3) = sign(
        "teal",
        &PAYROLL.replace("b618f3ec4377", "b618f3ec4388"),
        &["--secret", TEAL_SECRET, "--encryption-key", TEAL_KEY],
    );
    let (status, text) = post(&d, "/hooks/teal", &h3, &body3);
    assert_eq!(status, 200, "{text}");
    let lines = env.wait_audit_of(&accepted_id(&text));
    assert_eq!(lines.len(), 3, "nothing tampered was routed: {lines:?}");
    // A wrong IV, a wrong key and the broken tag.
    assert_eq!(refused(&d, "teal", "decryption_failed"), 3.0);
    let logs = d.logs();
    assert!(
        logs.contains(r#""source":"teal","reason":"decryption_failed""#),
        "{logs}"
    );
    assert!(!logs.contains(TEAL_SECRET) && !logs.contains(TEAL_KEY));
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64,sys; sys.stdout.write(base64.b64decode(sys.argv[1]).hex())",
            s,
        ])
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn base64_encode(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let out = std::process::Command::new("python3")
        .args(["-c", "import base64,sys; sys.stdout.write(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())", &hex])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tripletex_hmac_from_python_token_auth_and_the_version_guard() {
    let env = Env::new();
    let d = Daemon::start(&deployment(&env, "", ""));
    let body = |version: u32| {
        format!(
            r#"{{"subscriptionId":7,"event":"product.update","id":42,"value":{{"id":42,"version":{version},"name":"Widget"}}}}"#
        )
    };
    let key = |n: u32| format!("3f1c2a9e-0000-4000-8000-00000000000{n}");
    let send = |version: u32, n: u32| {
        let (h, b) = sign(
            "tripletex",
            &body(version),
            &["--secret", TX_SECRET, "--idempotency-key", &key(n)],
        );
        let (status, text) = post(&d, "/hooks/tripletex", &h, &b);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_eq!(send(3, 1)["accepted"].as_array().unwrap().len(), 1);
    // Tripletex's retry of the same delivery (same idempotency-key): a duplicate.
    assert_eq!(send(3, 1)["duplicates"].as_array().unwrap().len(), 1);
    // An older version arriving late: stored, not routed.
    assert_eq!(send(2, 2)["stale"].as_array().unwrap().len(), 1);
    assert_eq!(send(5, 3)["accepted"].as_array().unwrap().len(), 1);
    let lines = env.wait_audit(2);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["params"]["type"], "tripletex.product.update");
    assert_eq!(lines[0]["params"]["subject"], "42");

    // Tampering: body, idempotency key, signature, secret, missing header.
    let (h, b) = sign(
        "tripletex",
        &body(9),
        &["--secret", TX_SECRET, "--idempotency-key", &key(9)],
    );
    let sig = h[1].1.clone();
    for (what, headers, b) in [
        ("body", h.clone(), b.replace("Widget", "Gadget")),
        ("key", with(&h, "idempotency-key", &key(8)), b.clone()),
        (
            "signature",
            with(&h, "x-request-signature", &flip(&sig, 3)),
            b.clone(),
        ),
        (
            "secret",
            sign(
                "tripletex",
                &b,
                &["--secret", "nope", "--idempotency-key", &key(9)],
            )
            .0,
            b.clone(),
        ),
        ("missing", without(&h, "x-request-signature"), b.clone()),
    ] {
        assert_eq!(post(&d, "/hooks/tripletex", &headers, &b).0, 401, "{what}");
    }
    // Token auth: in the query or the path; the token is never stored or logged.
    let del = r#"{"subscriptionId":8,"event":"Order.Delete","id":5,"value":null}"#;
    assert_eq!(
        d.post("/hooks/tripletex-token?token=tok-1234", &[], del).0,
        200
    );
    assert_eq!(
        d.post(
            "/hooks/tripletex-token/tok-1234",
            &[],
            del.replace("5", "6")
        )
        .0,
        200
    );
    assert_eq!(
        d.post("/hooks/tripletex-token?token=tok-9999", &[], del).0,
        401
    );
    let lines = env.wait_audit(4);
    assert_eq!(lines[2]["params"]["type"], "tripletex.order.delete");
    // Once nothing is left to do, those four alone: the duplicate, the
    // stale version and the refused requests routed nothing.
    wait_quiet(&d_config(&env));
    assert_eq!(env.audit_lines().len(), 4, "{:?}", env.audit_lines());
    let (code, out) = cli(
        &["events", "list", "--source", "tripletex-token"],
        &d_config(&env),
    );
    assert_eq!(code, 0, "{out}");
    let id = out
        .split_whitespace()
        .find(|w| w.len() == 26)
        .expect("an event id")
        .to_string();
    let (_, shown) = cli(&["events", "show", &id], &d_config(&env));
    assert!(
        !shown.contains("tok-1234") && shown.contains("[redacted]"),
        "{shown}"
    );
    assert!(!d.logs().contains("tok-1234") && !d.logs().contains(TX_SECRET));
}

fn d_config(env: &Env) -> std::path::PathBuf {
    env.path("switchyard.toml")
}

#[test]
fn tightknit_standard_webhooks_from_the_python_library() {
    let env = Env::new();
    let d = Daemon::start(&deployment(&env, "", ""));
    let legacy = r#"{"version":"1.0","action":"event_registration_status_change","status":"registered","date":"2025-05-01T10:00:00Z","custom_metadata":null,"event":{"id":"evt_1","title":"Call","slug":"call"},"source":{"slack_workspace_id":"T1"},"user":{"id":"usr_1","first_name":"Ada","last_name":"L","real_name":"Ada L","display_name":"ada","email":"ada@example.com","profile_fields":{}}}"#;
    let current = legacy
        .replace(
            r#""action":"event_registration_status_change","status":"registered""#,
            r#""action":"calendar_event.user_unregistered""#,
        )
        .replace("usr_1", "usr_2");
    for (body, id, prefix) in [
        (legacy.to_string(), "msg_1", "svix"),
        (current, "msg_2", "webhook"),
    ] {
        let (h, b) = sign(
            "standard",
            &body,
            &["--secret", TK_SECRET, "--msg-id", id, "--prefix", prefix],
        );
        let (status, text) = post(&d, "/hooks/tightknit", &h, &b);
        assert_eq!(status, 200, "{text}\n{}", d.logs());
    }
    let lines = env.wait_audit(2);
    let mut types: Vec<&str> = lines
        .iter()
        .map(|l| l["params"]["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "tightknit.calendar_event.user_registered",
            "tightknit.calendar_event.user_unregistered"
        ]
    );

    let (h, b) = sign(
        "standard",
        legacy,
        &["--secret", TK_SECRET, "--msg-id", "msg_3"],
    );
    let sig = h[2].1.clone();
    let cases = vec![
        ("body", h.clone(), b.replace("Ada", "Eve")),
        (
            "signature",
            with(&h, "svix-signature", &flip(&sig, 5)),
            b.clone(),
        ),
        ("id", with(&h, "svix-id", "msg_4"), b.clone()),
        (
            "timestamp",
            sign(
                "standard",
                legacy,
                &[
                    "--secret",
                    TK_SECRET,
                    "--msg-id",
                    "msg_3",
                    "--ts-offset",
                    "-400",
                ],
            )
            .0,
            b.clone(),
        ),
        (
            "secret",
            sign(
                "standard",
                legacy,
                &[
                    "--secret",
                    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                    "--msg-id",
                    "msg_3",
                ],
            )
            .0,
            b.clone(),
        ),
        ("missing", without(&h, "svix-signature"), b.clone()),
    ];
    for (what, headers, body) in cases {
        let (status, text) = post(&d, "/hooks/tightknit", &headers, &body);
        assert_eq!(status, 401, "{what}: {text}");
    }
    // A good delivery afterwards is the only one routed since.
    let fresh = legacy.replace("usr_1", "usr_5");
    let (h5, b5) = sign(
        "standard",
        &fresh,
        &["--secret", TK_SECRET, "--msg-id", "msg_5"],
    );
    let (status, text) = post(&d, "/hooks/tightknit", &h5, &b5);
    assert_eq!(status, 200, "{text}");
    let lines = env.wait_audit_of(&accepted_id(&text));
    assert_eq!(lines.len(), 3, "nothing forged was routed: {lines:?}");
    assert_eq!(refused(&d, "tightknit", "expired"), 1.0);
    assert!(d.logs().contains(r#""reason":"expired""#), "{}", d.logs());
}

#[test]
fn switchyard_send_works_for_every_sample_of_every_provider() {
    let env = Env::new();
    let config = deployment(&env, "", "");
    let d = Daemon::start(&config);
    let cases: &[(&str, &[&str])] = &[
        (
            "teal",
            &[
                "user-payroll-submitted",
                "user-payroll-submitted+payload",
                "user-payroll-submitted+payslip",
                "user-bank-statement-submitted",
                "user-bank-statement-submitted+payload",
                "user-hmrc-data-submitted",
            ],
        ),
        (
            "tripletex",
            &[
                "invoice.charged",
                "product.create",
                "product.delete",
                "closegroup.create",
                "voucherstatus.ready",
                "notification.sent",
            ],
        ),
        ("tripletex-token", &["customer.update", "order.delete"]),
        (
            "tightknit",
            &[
                "calendar_event.user_registered",
                "calendar_event.user_unregistered",
                "legacy.registered",
                "legacy.unregistered",
            ],
        ),
    ];
    let mut sent = 0;
    for (source, events) in cases {
        for event in *events {
            let to = d.url(&format!("/hooks/{source}"));
            let (code, out) = cli(&["send", source, event, "--to", &to], &config);
            assert_eq!(code, 0, "{source} {event}: {out}\n{}", d.logs());
            sent += 1;
        }
    }
    let lines = env.wait_audit(sent);
    assert_eq!(lines.len(), sent, "{}", d.logs());
}

#[test]
fn allow_ips_behind_a_trusted_proxy() {
    let env = Env::new();
    let config = deployment(
        &env,
        r#"trusted_proxies = ["127.0.0.1"]"#,
        "\n[sources.tk-allow]\nplugin = \"tightknit\"\nunsigned = true\nallow_ips = [\"203.0.113.0/24\"]\n",
    );
    let d = Daemon::start(&config);
    let body = r#"{"action":"post.created","date":"2025-05-01T10:00:00Z","post":{"id":"p1"}}"#;
    // The proxy (127.0.0.1, trusted) says who sent it.
    assert_eq!(
        d.post(
            "/hooks/tk-allow",
            &[("X-Forwarded-For", "203.0.113.9")],
            body
        )
        .0,
        200
    );
    // A spoofed hop before the one the proxy appended is not believed.
    assert_eq!(
        d.post(
            "/hooks/tk-allow",
            &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7")],
            body
        )
        .0,
        403
    );
    assert_eq!(d.post("/hooks/tk-allow", &[], body).0, 403);
    assert!(d.logged("not in allow_ips"));
    assert_eq!(env.wait_audit(1).len(), 1);
}

/// The GitHub recipe of plugins/webhook/README.md, copied from it, with a
/// request signed as GitHub signs (Python's hmac).
#[test]
fn github_by_configuration_alone_following_the_readme() {
    let readme = std::fs::read_to_string(repo_root().join("plugins/webhook/README.md")).unwrap();
    let recipe = readme
        .split("```toml\n")
        .find(|block| block.starts_with("[sources.github]"))
        .and_then(|block| block.split("```").next())
        .expect("the README has a GitHub recipe")
        .replace(
            r#"secret = { env = "GITHUB_WEBHOOK_SECRET" }"#,
            r#"secret = "gh-secret""#,
        );
    let env = Env::new();
    env.add_plugin(&built_plugin("switchyard_webhook"));
    let config = deployment(&env, "", &recipe);
    env.rule(
        "gh",
        r#"const EVENTS = ["webhook.issues.*"];
if event.source == "github" { action("audit", #{ type: event.type, subject: event.data.issue.title }); }"#,
    );
    let d = Daemon::start(&config);
    let body = r#"{"action":"opened","issue":{"number":7,"title":"Crash on start"}}"#;
    let (mut h, b) = sign("github", body, &["--secret", "gh-secret"]);
    h.push(("X-GitHub-Event".into(), "issues".into()));
    h.push((
        "X-GitHub-Delivery".into(),
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
    ));
    let (status, text) = post(&d, "/hooks/github", &h, &b);
    assert_eq!(status, 200, "{text}\n{}", d.logs());
    // GitHub's redelivery of the same delivery id is not routed again.
    let (_, again) = post(&d, "/hooks/github", &h, &b);
    assert!(again.contains(r#""duplicates":[""#), "{again}");
    let lines = env.wait_audit(1);
    assert_eq!(lines[0]["params"]["type"], "webhook.issues.opened");
    assert_eq!(lines[0]["params"]["subject"], "Crash on start");
    let (bad, _) = sign("github", body, &["--secret", "not-it"]);
    let mut bad = bad;
    bad.push(("X-GitHub-Event".into(), "issues".into()));
    assert_eq!(post(&d, "/hooks/github", &bad, &b).0, 401);
    assert_eq!(
        post(&d, "/hooks/github", &h, &b.replace("Crash", "Crush")).0,
        401
    );
    let (code, out) = cli(
        &["send", "github", "issues", "--to", &d.url("/hooks/github")],
        &config,
    );
    assert_eq!(code, 0, "{out}");
}

/// A generic Standard Webhooks source, signed by the `standardwebhooks` package.
#[test]
fn generic_standard_webhooks_source() {
    let env = Env::new();
    env.add_plugin(&built_plugin("switchyard_webhook"));
    let config = deployment(
        &env,
        "",
        &format!(
            "\n[sources.svix]\nplugin = \"webhook\"\nverify = \"standard-webhooks\"\nsecrets = [\"{TK_SECRET}\"]\nevent_type = \"/type\"\ndedup_header = \"webhook-id\"\n"
        ),
    );
    env.rule(
        "svix",
        r#"const EVENTS = ["webhook.*"]; action("audit", #{ type: event.type });"#,
    );
    let d = Daemon::start(&config);
    let body = r#"{"type":"email.delivered","data":{"to":"a@example.com"}}"#;
    let (h, b) = sign(
        "standard",
        body,
        &[
            "--secret", TK_SECRET, "--msg-id", "msg_g1", "--prefix", "webhook",
        ],
    );
    assert_eq!(post(&d, "/hooks/svix", &h, &b).0, 200, "{}", d.logs());
    assert_eq!(
        env.wait_audit(1)[0]["params"]["type"],
        "webhook.email.delivered"
    );
    assert_eq!(post(&d, "/hooks/svix", &h, &b.replace("a@", "b@")).0, 401);
}
