//! `switchyard rules test`: the shipped rules pass their cases; a mismatch
//! fails with what differs; events from files, the store and samples are
//! routed without side effects; `check` catches calls to unknown actions.

use crate::common::*;

#[test]
fn the_shipped_rules_pass_their_cases() {
    let env = Env::new();
    let config = env.example_config();
    let (code, out) = cli(&["rules", "test"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("7 passed, 0 failed"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    assert!(
        out.contains("ok      ") && out.contains("invoice-viewed-sample.json"),
        "{out}"
    );
}

#[test]
fn a_mismatch_fails_and_says_what_differs() {
    let env = Env::new();
    let config = env.standard();
    std::fs::create_dir_all(env.path("rules/tests")).unwrap();
    std::fs::write(
        env.path("rules/tests/wrong.json"),
        r#"{"event": {"type": "tight.invoiceViewed", "data": {"eventData": {"entityId": "inv_1"}}},
            "expect": [{"rule": "viewed", "action": "audit", "params": {"invoice": "inv_2"}}]}"#,
    )
    .unwrap();
    std::fs::write(
        env.path("rules/tests/missing.json"),
        r#"{"event": {"type": "tight.invoiceSent"},
            "expect": [{"rule": "viewed", "action": "audit"}]}"#,
    )
    .unwrap();
    std::fs::write(
        env.path("rules/tests/right.json"),
        r#"{"event": {"type": "tight.invoiceViewed", "data": {"eventData": {"entityId": "inv_1"}}},
            "expect": [{"rule": "viewed", "action": "audit", "params": {"invoice": "inv_1"}}]}"#,
    )
    .unwrap();
    let (code, out) = cli(&["rules", "test"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 passed, 2 failed"), "{out}");
    assert!(out.contains(r#"do not have {"invoice":"inv_2"}"#), "{out}");
    assert!(out.contains("missing call 1: viewed → audit"), "{out}");
}

#[test]
fn events_from_files_the_store_and_samples_have_no_side_effects() {
    let env = Env::new();
    let config = env.standard();
    let file = env.path("event.json");
    std::fs::write(
        &file,
        r#"{"type": "tight.invoiceViewed", "data": {"eventData": {"entityId": "inv_file"}}}"#,
    )
    .unwrap();
    let (code, out) = cli(&["rules", "test", file.to_str().unwrap()], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule viewed: matched") && out.contains(r#""invoice":"inv_file""#),
        "{out}"
    );

    let (code, out) = cli(
        &["rules", "test", "--sample", "tight", "invoiceViewed"],
        &config,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#"→ audit {"invoice":"inv_sample1""#), "{out}");

    // A stored event, while the daemon runs; nothing new is routed or run.
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_stored");
    assert_eq!(env.wait_audit(1).len(), 1);
    let (code, out) = cli(&["rules", "test", "--event", &id, "--json"], &config);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["runs"][0]["calls"][0]["params"]["invoice"], "inv_stored");
    // A webhook after it is the marker: its action is the only one since.
    let marker = daemon.send_viewed("inv_after_test");
    let lines = env.wait_audit_of(&marker);
    assert_eq!(lines.len(), 2, "rules test ran no action: {lines:?}");
}

#[test]
fn check_catches_a_call_to_an_undefined_action() {
    let env = Env::new();
    let config = env.standard();
    env.rule(
        "typo",
        r#"const EVENTS = ["tight.*"]; action("adit", #{});"#,
    );
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("typo.rhai") && out.contains(r#"calls action "adit""#),
        "{out}"
    );
}

#[test]
fn runaway_rules_are_stopped_and_ingress_carries_on() {
    let env = Env::new();
    let config = env.standard();
    env.rule("a-loop", r#"const EVENTS = ["tight.*"]; loop { }"#);
    env.rule(
        "b-recurse",
        r#"const EVENTS = ["tight.*"]; fn f(n) { f(n + 1) } f(0);"#,
    );
    env.rule(
        "c-huge",
        r#"const EVENTS = ["tight.*"]; let s = "x"; loop { s += s; }"#,
    );
    let daemon = Daemon::start(&config);
    let started = std::time::Instant::now();
    let ids: Vec<String> = (0..5)
        .map(|i| daemon.send_viewed(&format!("inv_run{i}")))
        .collect();
    // Ingress answered every webhook while the rules spun.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let lines = env.wait_audit(5);
    assert_eq!(lines.len(), 5, "the good rule still ran for every event");
    assert!(eventually(10, || {
        let (_, out) = cli(&["events", "show", &ids[4]], &config);
        out.contains("\"state\": \"routed\"")
    }));
    let (_, shown) = cli(&["events", "show", &ids[4]], &config);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let runs = v["rule_runs"].as_array().unwrap();
    let error = |rule: &str| {
        runs.iter()
            .find(|r| r["rule"] == rule)
            .and_then(|r| r["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // Stopped by its operation budget or its deadline, whichever comes first.
    assert!(!error("a-loop").is_empty(), "{shown}");
    assert!(!error("b-recurse").is_empty(), "{shown}");
    assert!(!error("c-huge").is_empty(), "{shown}");
    assert!(runs
        .iter()
        .any(|r| r["rule"] == "viewed" && r["error"].is_null()));
}
