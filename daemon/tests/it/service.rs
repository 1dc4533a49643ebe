//! The service endpoints: /healthz, /readyz, and /metrics read by the
//! Prometheus Python client's parser while requests arrive.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    let resp = reqwest::blocking::get(daemon.url(path)).unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The samples of /metrics as the Prometheus client library parses them.
fn scrape(daemon: &Daemon) -> Vec<Value> {
    let (status, text) = get(daemon, "/metrics");
    assert_eq!(status, 200);
    let mut child = Command::new("python3")
        .arg(repo_root().join("daemon/tests/fixtures/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn metrics_move_as_requests_arrive_and_health_answers() {
    let env = Env::new();
    let daemon = Daemon::start(&env.standard());
    assert_eq!(get(&daemon, "/healthz").0, 200);
    let (status, body) = get(&daemon, "/readyz");
    assert_eq!(status, 200, "{body}");

    let before = scrape(&daemon);
    assert_eq!(
        value(
            &before,
            "switchyard_webhooks_accepted_total",
            &[("source", "tight")]
        ),
        0.0
    );
    daemon.send_viewed("inv_m1");
    daemon.send_viewed("inv_m2");
    let body = invoice_viewed("inv_m3");
    let bad = pyjwt("wrong-secret", body.as_bytes(), &[]);
    assert_eq!(
        daemon
            .post("/hooks/tight", &[("Tight-Verification", &bad)], body)
            .0,
        401
    );
    assert_eq!(env.wait_audit(2).len(), 2);

    assert!(eventually(10, || {
        let m = scrape(&daemon);
        value(
            &m,
            "switchyard_action_attempts_total",
            &[("action", "audit"), ("outcome", "done")],
        ) == 2.0
    }));
    let m = scrape(&daemon);
    assert_eq!(
        value(
            &m,
            "switchyard_webhooks_accepted_total",
            &[("source", "tight")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_webhooks_rejected_total",
            &[("source", "tight"), ("reason", "unauthenticated")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_rule_runs_total",
            &[("rule", "viewed"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_ingest_seconds_count",
            &[("source", "tight")]
        ),
        3.0
    );
    assert!(value(&m, "switchyard_store_commit_seconds_count", &[]) >= 2.0);
    assert_eq!(
        value(
            &m,
            "switchyard_plugin_calls_total",
            &[("plugin", "tight"), ("call", "verify"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(value(&m, "switchyard_rules_version", &[]), 1.0);
}
