//! Switchyard's own events, routed through the rules: a job that gives up
//! is announced (`switchyard.action.dead_letter`), a rule file that breaks
//! too (`switchyard.rules.broken`), and an alert whose own action fails is
//! not announced again.

use crate::common::*;

#[test]
fn a_dead_letter_reaches_the_rules_and_a_failing_alert_does_not_loop() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("notify", #{});"#,
    );
    env.rule(
        "alert",
        r#"const EVENTS = ["switchyard.*"];
action("audit", #{ kind: event.type, about: event.subject, data: event.data });
action("pager", #{});"#,
    );
    let config = env.config(&format!(
        r#"
[delivery]
retry_schedule = []

{TIGHT_SOURCE}
[actions.notify]
plugin = "exec"
shell = "echo mail server said no >&2; exit 3"

[actions.pager]
plugin = "exec"
shell = "echo the pager is down too >&2; exit 3"

[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);
    let id = daemon.send_viewed("inv_dead");
    let lines = env.wait_audit(1);
    assert_eq!(lines.len(), 1, "{}", daemon.logs());
    let alert = &lines[0]["params"];
    assert_eq!(alert["kind"], "switchyard.action.dead_letter");
    assert_eq!(alert["about"], "notify");
    assert_eq!(alert["data"]["event_id"], id.as_str());
    assert_eq!(alert["data"]["event_type"], "tight.invoiceViewed");
    assert!(alert["data"]["error"]
        .as_str()
        .unwrap()
        .contains("mail server said no"));

    // The alert's own pager job dies too: it is a dead letter, and not
    // announced (no second switchyard event).
    let pager_dead = || {
        let (_, out) = cli(&["dlq", "list", "--json"], &config);
        out.contains("\"action\":\"pager\"")
    };
    assert!(eventually(20, pager_dead), "{}", daemon.logs());
    // A later, unrelated notice proves the daemon announced on after it.
    env.rule("broken", "const EVENTS = [\"tight.*\"];\nlet x = ;\n");
    let lines = env.wait_audit(2);
    assert_eq!(
        lines[1]["params"]["kind"], "switchyard.rules.broken",
        "{lines:?}"
    );
    assert!(lines[1]["params"]["about"]
        .as_str()
        .unwrap()
        .contains("broken.rhai:2:"));
    let (_, own) = cli(
        &["events", "list", "--source", "switchyard", "--json"],
        &config,
    );
    let kinds: Vec<&str> = own
        .lines()
        .map(|l| {
            if l.contains("switchyard.action.dead_letter") {
                "dead_letter"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "dead_letter").count(),
        1,
        "only notify's dead letter was announced: {own}"
    );
}
