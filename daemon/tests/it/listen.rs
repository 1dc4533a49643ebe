//! `switchyard listen` against a running daemon: the events stream of the
//! admin API read with the read-only token, each event forwarded to a
//! local receiver (receiver.py) and verified with the `standardwebhooks`
//! package under the secret `listen` printed; filters, a restart of the
//! daemon in the middle (nothing missed or doubled), `--since`, a wrong
//! token; and the read-only token refused for writes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::actions::Fixture;
use crate::common::*;

const TOKEN: &str = "listen-admin-token-0123456789abcdef";
const READ_ONLY: &str = "listen-read-only-token-0123456789ab";

/// A daemon with the admin API on `admin` (a port, so that a restart keeps
/// it), the admin token and the read-only one.
fn deployment(env: &Env, admin: u16) -> std::path::PathBuf {
    env.standard_with(
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\nread_only_token = \"{READ_ONLY}\"\n"
        ),
        "",
    )
}

/// `switchyard listen` running, its output lines gathered.
struct Listen {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    fn start(env: &Env, admin: u16, token: &str, args: &[&str]) -> Listen {
        let token_file = env.path("listen.token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("listen")
            .args(["--from", &format!("http://127.0.0.1:{admin}")])
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    out.lock().unwrap().push(line);
                }
            });
        }
        Listen { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    /// Waits until it has connected to the stream `n` times: the stream
    /// starts at now, so an event sent after that is forwarded.
    fn connected(&self, n: usize) {
        assert!(
            eventually(20, || self.output().matches("Connected to ").count() >= n),
            "{}",
            self.output()
        );
    }

    /// The secret it printed.
    fn secret(&self) -> String {
        let mut secret = String::new();
        assert!(
            eventually(10, || {
                secret = self
                    .output()
                    .lines()
                    .find_map(|l| l.strip_prefix("Signing secret: "))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                !secret.is_empty()
            }),
            "{}",
            self.output()
        );
        secret
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts a Tight LIFECYCLE event of `event` for `invoice`; its id.
fn send_lifecycle(daemon: &Daemon, event: &str, invoice: &str) -> String {
    let body = invoice_viewed(invoice).replace("invoiceViewed", event);
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (status, text) = daemon.post("/hooks/tight", &[("Tight-Verification", &token)], body);
    assert_eq!(status, 200, "{text}");
    accepted_id(&text)
}

/// Whether the `standardwebhooks` package verifies a request the receiver
/// logged, under `secret`.
fn verifies(secret: &str, request: &Value) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys\nfrom standardwebhooks.webhooks import Webhook\n\
             r = json.load(open(sys.argv[2]))\n\
             Webhook(sys.argv[1]).verify(r['body'], r['headers'])\n",
        )
        .arg(secret)
        .arg(&file)
        .output()
        .unwrap();
    out.status.success()
}

/// The event ids the receiver got, in order.
fn received_ids(receiver: &Fixture) -> Vec<String> {
    receiver
        .lines()
        .iter()
        .map(|l| l["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_received(receiver: &Fixture, n: usize, listen: &Listen) -> Vec<Value> {
    assert!(
        eventually(20, || receiver.lines().len() >= n),
        "{} of {n}\n{}",
        receiver.lines().len(),
        listen.output()
    );
    receiver.lines()
}

#[test]
fn listen_forwards_each_event_signed_to_the_endpoint_its_type_routes_to() {
    let env = Env::new();
    let admin = free_port();
    let config = deployment(&env, admin);
    let daemon = Daemon::start(&config);
    let receiver = Fixture::receiver_all(&env.path("."), "", "200");
    let base = format!("http://127.0.0.1:{}", receiver.port);
    let listen = Listen::start(
        &env,
        admin,
        READ_ONLY,
        &[
            "--forward-to",
            &format!("tight.invoiceViewed={base}/viewed"),
            "--forward-to",
            &format!("{base}/other"),
            "--source",
            "tight",
        ],
    );
    let secret = listen.secret();
    assert!(secret.starts_with("whsec_"), "{secret}");
    listen.connected(1);
    let viewed = daemon.send_viewed("inv_listen");
    let sent = send_lifecycle(&daemon, "invoiceSent", "inv_listen");
    let got = wait_received(&receiver, 2, &listen);
    let by_id = |id: &str| got.iter().find(|l| l["id"] == id).cloned().unwrap();
    assert_eq!(by_id(&viewed)["path"], "/viewed");
    assert_eq!(by_id(&sent)["path"], "/other");
    for request in &got {
        assert!(verifies(&secret, request), "{request}");
        assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", request));
        let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], request["id"]);
        assert_eq!(body["source"], "tight");
    }
    assert!(by_id(&viewed)["body"]
        .as_str()
        .unwrap()
        .contains("inv_listen"));
    assert!(
        eventually(10, || listen.output().matches("[200]").count() >= 2),
        "{}",
        listen.output()
    );
    assert!(listen.output().contains(&viewed));
    // Nothing was acknowledged or recorded on the server: the event's jobs
    // are its rule's only.
    let shown = show(&config, &viewed);
    assert_eq!(shown["jobs"].as_array().map(Vec::len), Some(1), "{shown}");
}

#[test]
fn listen_takes_only_the_types_asked_for() {
    let env = Env::new();
    let admin = free_port();
    let daemon = Daemon::start(&deployment(&env, admin));
    let receiver = Fixture::receiver_all(&env.path("."), "", "200");
    let listen = Listen::start(
        &env,
        admin,
        READ_ONLY,
        &[
            "--forward-to",
            &receiver.url(),
            "--events",
            "tight.invoiceV*",
        ],
    );
    listen.connected(1);
    let other = send_lifecycle(&daemon, "invoiceSent", "inv_other");
    let viewed = daemon.send_viewed("inv_wanted");
    // The later event forwarded is the marker: the earlier one was read
    // past, and not forwarded.
    wait_received(&receiver, 1, &listen);
    assert_eq!(received_ids(&receiver), [viewed]);
    assert!(!listen.output().contains(&other));
}

#[test]
fn listen_resumes_after_the_daemon_restarts_without_missing_or_doubling() {
    let env = Env::new();
    let admin = free_port();
    let config = deployment(&env, admin);
    let mut daemon = Daemon::start(&config);
    let receiver = Fixture::receiver_all(&env.path("."), "", "200");
    let listen = Listen::start(&env, admin, READ_ONLY, &["--forward-to", &receiver.url()]);
    listen.connected(1);
    let mut sent: Vec<String> = (0..5)
        .map(|i| daemon.send_viewed(&format!("inv_a{i}")))
        .collect();
    wait_received(&receiver, 5, &listen);
    // The stream's connection goes with the daemon; events stored while it
    // is down are read once the new daemon answers.
    daemon.terminate();
    assert!(eventually(20, || !daemon.alive()));
    drop(daemon);
    assert!(
        eventually(20, || listen.output().contains("resuming")
            || listen.output().contains("cannot reach")),
        "{}",
        listen.output()
    );
    let daemon = Daemon::start(&config);
    sent.extend((0..5).map(|i| daemon.send_viewed(&format!("inv_b{i}"))));
    wait_received(&receiver, 10, &listen);
    // One more as the marker that nothing else is on its way.
    sent.push(daemon.send_viewed("inv_marker"));
    wait_received(&receiver, 11, &listen);
    let got = received_ids(&receiver);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "forwarded twice: {got:?}");
    let mut want = sent.clone();
    want.sort();
    assert_eq!(unique, want);
}

#[test]
fn listen_since_replays_the_stored_events_first() {
    let env = Env::new();
    let admin = free_port();
    let daemon = Daemon::start(&deployment(&env, admin));
    let before: Vec<String> = (0..3)
        .map(|i| daemon.send_viewed(&format!("inv_old{i}")))
        .collect();
    let receiver = Fixture::receiver_all(&env.path("."), "", "200");
    let listen = Listen::start(
        &env,
        admin,
        READ_ONLY,
        &["--forward-to", &receiver.url(), "--since", "1h"],
    );
    wait_received(&receiver, 3, &listen);
    assert_eq!(received_ids(&receiver), before, "oldest first");
    let after = daemon.send_viewed("inv_new");
    wait_received(&receiver, 4, &listen);
    assert_eq!(received_ids(&receiver)[3], after);
}

#[test]
fn a_wrong_token_is_a_clear_error_and_the_read_only_token_cannot_write() {
    let env = Env::new();
    let admin = free_port();
    let _daemon = Daemon::start(&deployment(&env, admin));
    let mut listen = Listen::start(
        &env,
        admin,
        "not-the-token",
        &["--forward-to", "http://127.0.0.1:9/in"],
    );
    let status = listen.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        eventually(5, || listen.output().contains("refused the token (401")),
        "{}",
        listen.output()
    );
    assert!(!listen.output().contains("not-the-token"));

    // The read-only token reads the API, and may not change anything.
    let client = reqwest::blocking::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{admin}{p}");
    let get = client
        .get(url("/v1/events"))
        .bearer_auth(READ_ONLY)
        .send()
        .unwrap();
    assert_eq!(get.status(), 200);
    let post = client
        .post(url("/v1/reload"))
        .bearer_auth(READ_ONLY)
        .send()
        .unwrap();
    assert_eq!(post.status(), 403);
    assert!(post.text().unwrap().contains("read-only"));
    let admin_post = client
        .post(url("/v1/reload"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(admin_post.status(), 200);
}

/// A local rules folder whose `viewed` rule sends every invoiceViewed to
/// `audit` with the invoice and `extra` (a map entry).
fn local_rules(env: &Env, extra: &str) -> std::path::PathBuf {
    let local = env.path("local-rules");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        local.join("viewed.rhai"),
        format!(
            "const EVENTS = [\"tight.invoiceViewed\"];\naction(\"audit\", #{{ invoice: event.data.eventData.entityId, {extra} }});"
        ),
    )
    .unwrap();
    local
}

#[test]
fn listen_rules_prints_the_local_rules_calls_beside_the_live_ones_and_runs_nothing() {
    let env = Env::new();
    let admin = free_port();
    let config = deployment(&env, admin);
    let daemon = Daemon::start(&config);
    let local = local_rules(&env, "edited: true");
    let listen = Listen::start(
        &env,
        admin,
        READ_ONLY,
        &["--rules", local.to_str().unwrap()],
    );
    listen.connected(1);
    let first = daemon.send_viewed("inv_try");
    assert!(
        eventually(20, || listen.output().contains("live  rule viewed")),
        "{}",
        listen.output()
    );
    let out = listen.output();
    assert!(out.contains(&first), "{out}");
    assert!(
        out.contains(r#"local → audit {"edited":true,"invoice":"inv_try"}"#),
        "{out}"
    );
    assert!(
        out.contains(
            r#"live  rule viewed: → audit {"invoice":"inv_try","type":"tight.invoiceViewed"}"#
        ),
        "{out}"
    );
    assert!(
        out.contains("≠     call 1 (viewed → audit) differs in edited, type"),
        "{out}"
    );
    // Nothing of the local rule ran: the audit file has the live rule's
    // line only, once the daemon has nothing left to do.
    wait_quiet(&config);
    let lines = env.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].get("edited").is_none());

    // An edit (a second file) shows on the next event.
    std::fs::write(
        local.join("also.rhai"),
        r#"const EVENTS = ["tight.*"];
action("notify", #{ kind: event.type });"#,
    )
    .unwrap();
    daemon.send_viewed("inv_again");
    assert!(
        eventually(20, || listen
            .output()
            .contains(r#"local → notify {"kind":"tight.invoiceViewed"}"#)),
        "{}",
        listen.output()
    );
    assert!(listen.output().contains("rules: 2 rule(s)"));
}

#[test]
fn listen_run_actions_runs_the_local_calls_on_the_local_configs_actions_only() {
    let env = Env::new();
    let admin = free_port();
    let config = deployment(&env, admin);
    let daemon = Daemon::start(&config);
    let local = local_rules(&env, "locally: true");
    // A local config: the same plugins, its own file for the audit action.
    let local_audit = env.path("local-audit.jsonl");
    let local_config = env.path("local.toml");
    std::fs::write(
        &local_config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"local-data\"\nplugin_dir = \"plugins\"\nrules_dir = \"local-rules\"\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
            local_audit.display()
        ),
    )
    .unwrap();
    let listen = Listen::start(
        &env,
        admin,
        READ_ONLY,
        &[
            "--rules",
            local.to_str().unwrap(),
            "--run-actions",
            "--config",
            local_config.to_str().unwrap(),
        ],
    );
    listen.connected(1);
    daemon.send_viewed("inv_local");
    assert!(
        eventually(20, || listen
            .output()
            .contains("ran   viewed → audit: done")),
        "{}",
        listen.output()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&local_audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["params"]["locally"], true, "{lines:?}");
    // The server's own action ran its own rule's call, once.
    wait_quiet(&config);
    assert_eq!(env.audit_lines().len(), 1);
}
