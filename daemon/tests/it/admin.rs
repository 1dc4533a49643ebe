//! The admin API: its own listener, a bearer token, and what it shows and does.

use serde_json::Value;

use crate::common::*;

const TOKEN: &str = "admin-token-0123456789abcdef";

fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    tls_provider();
    let client = reqwest::blocking::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn the_admin_api_needs_its_token_and_shows_and_does() {
    let env = Env::new();
    let config = env.standard_with(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = { env = \"ADMIN_TOKEN\" }\n",
        "",
    );
    let daemon = Daemon::start_with_env(&config, &[("ADMIN_TOKEN", TOKEN)]);
    let base = format!("http://{}", daemon.admin_addr());

    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let (status, body) = call("GET", &format!("{base}/v1/status"), token, None);
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    assert_eq!(
        call("POST", &format!("{base}/v1/reload"), None, None).0,
        401
    );
    assert_eq!(call("GET", &format!("{base}/metrics"), None, None).0, 401);

    let id = daemon.send_viewed("inv_admin");
    assert_eq!(env.wait_audit(1).len(), 1);
    let (status, st) = call("GET", &format!("{base}/v1/status"), Some(TOKEN), None);
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["sources"][0]["name"], "tight");
    assert_eq!(st["rules"]["count"], 1);
    assert_eq!(st["actions"][0]["name"], "audit");
    assert_eq!(st["actions"][0]["state"], "closed");

    let (_, list) = call(
        "GET",
        &format!("{base}/v1/events?source=tight&limit=5"),
        Some(TOKEN),
        None,
    );
    assert_eq!(list["events"][0]["id"], id.as_str(), "{list}");
    // The scheme's case does not matter; what the query says must parse.
    let lower = reqwest::blocking::Client::new()
        .get(format!("{base}/v1/events?limit=1"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);
    for query in ["since=yesterday", "until=2025-13-45", "limit=lots"] {
        let (status, body) = call(
            "GET",
            &format!("{base}/v1/events?{query}"),
            Some(TOKEN),
            None,
        );
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.starts_with(query.split('=').next().unwrap()),
            "{message}"
        );
    }
    let (status, all) = call(
        "GET",
        &format!("{base}/v1/events?since=2000-01-01T00:00:00Z&limit=99999999999"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["events"].as_array().unwrap().len(), 1);
    // A body that is not what the route wants: a plain message, no Rust
    // representation of the rejection.
    let (status, body) = call(
        "POST",
        &format!("{base}/v1/dead-letters/redrive"),
        Some(TOKEN),
        Some("[1, 2"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        !body["error"].as_str().unwrap().contains("Rejection"),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &format!("{base}/v1/dead-letters/redrive"),
        Some(TOKEN),
        Some(&format!(r#"{{"id": "{}"}}"#, "x".repeat(5000))),
    );
    assert_eq!(status, 413, "{body}");

    let (status, shown) = call("GET", &format!("{base}/v1/events/{id}"), Some(TOKEN), None);
    assert_eq!(status, 200);
    assert_eq!(shown["envelope"]["id"], id.as_str());
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/events/01NOSUCHEVENT0000000000000"),
            Some(TOKEN),
            None
        )
        .0,
        404
    );

    let (status, _) = call(
        "POST",
        &format!("{base}/v1/events/{id}/replay"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        env.wait_audit(2).len(),
        2,
        "the replay ran the action again"
    );

    let (status, dead) = call("GET", &format!("{base}/v1/dead-letters"), Some(TOKEN), None);
    assert_eq!(status, 200);
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0);
    let (status, _) = call(
        "POST",
        &format!("{base}/v1/dead-letters/redrive"),
        Some(TOKEN),
        Some(r#"{"all": true}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(
        call(
            "POST",
            &format!("{base}/v1/dead-letters/redrive"),
            Some(TOKEN),
            Some("{}")
        )
        .0,
        400
    );
    assert_eq!(
        call(
            "POST",
            &format!("{base}/v1/actions/audit/enable"),
            Some(TOKEN),
            None
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "POST",
            &format!("{base}/v1/actions/nope/enable"),
            Some(TOKEN),
            None
        )
        .0,
        404
    );

    let (status, reloaded) = call("POST", &format!("{base}/v1/reload"), Some(TOKEN), None);
    assert_eq!(status, 200);
    assert_eq!(reloaded["rules"], 1);
    let (status, _) = call("GET", &format!("{base}/metrics"), Some(TOKEN), None);
    assert_eq!(status, 200);
    // The CLI talks to it (at the port the daemon took).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!(
            "[admin]\nlisten = \"{}\"",
            base.trim_start_matches("http://")
        ),
    );
    std::fs::write(&config, text).unwrap();
    let (code, out) = cli_with_env(&["status"], &config, &[("ADMIN_TOKEN", TOKEN)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""name": "tight""#), "{out}");
    let (code, out) = cli_with_env(&["reload"], &config, &[("ADMIN_TOKEN", TOKEN)]);
    assert_eq!(code, 0, "{out}");
    assert!(daemon.logged("configuration and plugins reloaded (admin API)"));
    assert!(!daemon.logs().contains(TOKEN), "the token is never logged");
}

#[test]
fn admin_settings_are_checked() {
    let env = Env::new();
    let config = env.standard_with("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"short\"\n", "");
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 1);
    assert!(out.contains("admin.token"), "{out}");
}
