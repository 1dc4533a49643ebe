//! Rules change while webhooks flow: edits, a new file, a broken file (its
//! last good version stays live), the fix, a deletion, and SIGHUP. No event
//! is lost or routed twice, and each says which version of the rules routed it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const VIEWED_V1: &str = r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, v: 1 });"#;
const VIEWED_V2: &str = r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, v: 2 });"#;
const BROKEN: &str = r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, v: 3 "#;
const SECOND: &str = r#"const EVENTS = ["tight.*"];
action("audit", #{ invoice: event.data.eventData.entityId, second: true });"#;

#[test]
fn rules_change_while_webhooks_flow_and_nothing_is_lost_or_doubled() {
    let env = Env::new();
    let config = env.standard();
    env.rule("viewed", VIEWED_V1);
    let daemon = Daemon::start(&config);
    let signed = bulk_signed(300, "reload", 0);
    let sender = daemon.send_in_background(signed, Duration::from_millis(5));
    let steps: [(&str, Option<&str>); 5] = [
        ("second", Some(SECOND)),
        ("viewed", Some(BROKEN)),
        ("viewed", Some(VIEWED_V2)),
        ("second", None),
        ("viewed", Some(VIEWED_V1)),
    ];
    for (name, text) in steps {
        std::thread::sleep(Duration::from_millis(250));
        match text {
            Some(t) => {
                // As editors save: a temporary file renamed over the rule.
                let tmp = env.path(&format!("rules/.{name}.rhai.tmp"));
                std::fs::write(&tmp, t).unwrap();
                std::fs::rename(&tmp, env.path(&format!("rules/{name}.rhai"))).unwrap();
            }
            None => std::fs::remove_file(env.path(&format!("rules/{name}.rhai"))).unwrap(),
        }
    }
    let ids = sender.join().unwrap();
    assert_eq!(ids.len(), 300);

    // Every event routed once: one line of the viewed rule each, in one of
    // its good versions (never the broken one), and no idempotency key twice.
    assert!(eventually(20, || {
        env.audit_lines()
            .iter()
            .filter(|l| l["rule"] == "viewed")
            .count()
            >= 300
    }));
    // A webhook after them all is the marker: once its line is written,
    // every routing before it has been recorded.
    let marker = daemon.send_viewed("inv_reload_marker");
    let lines = env.wait_audit_of(&marker);
    let mut keys = HashSet::new();
    let mut viewed: HashMap<String, u32> = HashMap::new();
    for l in &lines {
        assert!(
            keys.insert(l["idempotency_key"].as_str().unwrap().to_string()),
            "twice: {l}"
        );
        if l["rule"] == "viewed" {
            *viewed
                .entry(l["event_id"].as_str().unwrap().to_string())
                .or_default() += 1;
            assert!(l["params"]["v"] == 1 || l["params"]["v"] == 2, "{l}");
        }
    }
    for id in &ids {
        assert_eq!(viewed.get(id), Some(&1), "event {id}");
    }
    // The second rule was live for a while, then gone.
    let seconds = lines.iter().filter(|l| l["rule"] == "second").count();
    assert!(
        seconds > 0 && seconds < 300,
        "second rule ran {seconds} times"
    );
    let logs = daemon.logs();
    assert!(logs.contains("rule does not compile"), "{logs}");
    assert!(
        logs.contains("viewed.rhai:"),
        "the broken file is named with its line"
    );
    assert!(logs.contains("rules reloaded"));

    // Each event records the version of the rules that routed it.
    let (_, shown) = cli(&["events", "show", &ids[299]], &config);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert!(shown["rules_version"].as_i64().unwrap() >= 5, "{shown}");
}

#[test]
fn sighup_reloads_the_rules() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    // The watcher sees the new file too; SIGHUP reloads on its own word.
    env.rule("extra", SECOND);
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status();
    assert!(eventually(10, || daemon.logged("SIGHUP: reloading")));
    daemon.send_viewed("inv_hup");
    assert!(eventually(10, || env
        .audit_lines()
        .iter()
        .any(|l| l["rule"] == "extra")));
}
