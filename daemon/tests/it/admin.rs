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
    // Where the CLI cannot use the local socket (gone here; for a user
    // outside the daemon's group, not allowed), it talks to [admin] with the
    // token (at the port the daemon took).
    std::fs::remove_file(env.path("data/admin.sock")).unwrap();
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

/// The CLI's operations go through the running daemon's admin API (its log
/// shows each one) on its local socket, and work on the store itself once
/// the daemon is stopped.
#[test]
fn the_cli_operates_through_the_daemon_and_without_it() {
    let env = Env::new();
    env.with_standard_plugins();
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId });"#,
    );
    // The admin listener on a fixed free port, so that the CLI finds it.
    let port = free_port();
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
token = {{ env = "ADMIN_TOKEN" }}

{TIGHT_SOURCE}
[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ));
    let with_token = [("ADMIN_TOKEN", TOKEN)];
    let daemon = Daemon::start_with_env(&config, &with_token);
    let id = daemon.send_viewed("inv_cli");
    assert_eq!(env.wait_audit(1).len(), 1);

    let (code, out) = cli_with_env(&["replay", &id], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    replayed_by_the_daemon(&env, &daemon, &id);
    let (code, out) = cli_with_env(&["actions", "enable", "audit"], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    assert!(daemon.logged(r#""message":"action enabled","action":"audit""#));
    let (code, out) = cli_with_env(&["dlq", "redrive", "--all"], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 dead letters sent back"), "{out}");
    assert!(daemon.logged("dead letters sent back to the queue"));
    let (code, out) = cli_with_env(&["actions", "enable", "nope"], &config, &with_token);
    assert_ne!(code, 0);
    assert!(out.contains("no action \"nope\""), "{out}");
    let (code, listed) = cli_with_env(&["events", "list"], &config, &with_token);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains(&id), "{listed}");
    // Filters go to the API as query parameters.
    let list = |args: &[&str]| {
        let (code, out) = cli_with_env(args, &config, &with_token);
        assert_eq!(code, 0, "{out}");
        out
    };
    assert!(list(&["events", "list", "--type", "tight.*", "--since", "1h"]).contains(&id));
    assert!(!list(&["events", "list", "--source", "no such source"]).contains(&id));

    // No daemon: the same commands work on the store.
    assert!(daemon.stop().success());
    let (code, out) = cli_with_env(&["replay", &id], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("event {id} will be routed again")),
        "{out}"
    );
    let (code, out) = cli_with_env(&["actions", "enable", "audit"], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli_with_env(&["actions", "list", "--json"], &config, &with_token);
    assert_eq!(code, 0, "{out}");
    let row: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (row["name"].as_str(), row["state"].as_str()),
        (Some("audit"), Some("closed"))
    );
    let (code, shown) = cli_with_env(&["events", "show", &id], &config, &with_token);
    assert_eq!(code, 0, "{shown}");
    // Routed twice by the daemon; the replay without it waits for the next start.
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["routings"], 2, "{shown}");
    assert_eq!(shown["state"], "pending", "{shown}");
}

/// Without any `[admin]` section, the CLI reaches the running daemon
/// through its local socket in data_dir (mode 0660, no token); a second
/// daemon on the same data_dir refuses to start; the socket goes with the
/// daemon, and the CLI then works on the store.
#[test]
fn the_local_socket_needs_no_admin_section() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_socket");
    assert_eq!(env.wait_audit(1).len(), 1);
    let socket = env.path("data/admin.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let (code, out) = cli(&["status"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""name": "tight""#), "{out}");
    let (code, out) = cli(&["replay", &id], &config);
    assert_eq!(code, 0, "{out}");
    replayed_by_the_daemon(&env, &daemon, &id);
    let (code, out) = cli(&["reload"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(daemon.logged("configuration and plugins reloaded (admin API)"));

    // A second daemon with the same data_dir must not share the store.
    // (Bounded: were it to start, it would run until the timeout.)
    let second = std::process::Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_switchyard"), "run", "--config"])
        .arg(&config)
        .env("SWITCHYARD_IT_SECRET", SECRET)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&second.stderr);
    assert_ne!(second.status.code(), Some(0), "{out}");
    assert!(
        out.contains("another switchyard is running with this data_dir"),
        "{out}"
    );
    assert!(socket.exists(), "the first daemon keeps its socket");
    let (code, out) = cli(&["status"], &config);
    assert_eq!(code, 0, "{out}");

    assert!(daemon.stop().success());
    assert!(!socket.exists(), "the socket goes with the daemon");
    let (code, out) = cli(&["replay", &id], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("event {id} will be routed again")),
        "{out}"
    );
    let (code, out) = cli(&["status"], &config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no daemon answers"), "{out}");
}

/// A socket left by a daemon that died (kill -9) is replaced at the next
/// start, not mistaken for a running daemon.
#[test]
fn a_dead_daemons_socket_is_replaced() {
    let env = Env::new();
    let config = env.standard();
    let mut daemon = Daemon::start(&config);
    daemon.kill9();
    assert!(env.path("data/admin.sock").exists());
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_after");
    assert_eq!(env.wait_audit(1).len(), 1);
    let (code, out) = cli(&["status"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(daemon.stop().success());
}

/// The daemon logged the replay of `id` (so the CLI's call reached it) and
/// ran the action again.
fn replayed_by_the_daemon(env: &Env, daemon: &Daemon, id: &str) {
    assert!(
        daemon.logged(&format!(
            r#""message":"event will be routed again (replay)","event_id":"{id}""#
        )),
        "{}",
        daemon.logs()
    );
    assert_eq!(
        env.wait_audit(2).len(),
        2,
        "the replay ran the action again"
    );
}
