//! What people read from the CLI, under snapshot tests: a change to it is a
//! reviewed diff of `tests/it/snapshots/`. Ids, times and ports are
//! replaced by placeholders.

use crate::common::*;

/// Stable placeholders for what changes from run to run.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", "[ULID]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    s.add_filter(r#""version": "\d+\.\d+\.\d+""#, r#""version": "[VERSION]""#);
    s.add_filter(r#""at": "[^"]*""#, r#""at": "[STORE]""#);
    s
}

#[test]
fn events_dead_letters_actions_and_status_read_well() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId });
action("fails", #{});"#,
    );
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "admin-token-0123456789abcdef"

[delivery]
retry_schedule = []

{TIGHT_SOURCE}
[actions.audit]
plugin = "file"
path = "{}"
rate = "300/h"
burst = 20

[actions.fails]
plugin = "exec"
shell = "echo no such invoice >&2; exit 3"
"#,
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);
    daemon.send_viewed("inv_1");
    daemon.send_viewed("inv_2");
    assert_eq!(env.wait_audit(2).len(), 2);
    assert!(eventually(10, || cli(&["dlq", "list"], &config)
        .1
        .lines()
        .count()
        == 3));
    // The CLI reaches the daemon's admin API at the port it took.
    let admin = daemon.admin_addr();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\ntoken",
        &format!("listen = \"{admin}\"\ntoken"),
    );
    std::fs::write(&config, text).unwrap();

    let run = |args: &[&str]| {
        let (code, out) = cli(args, &config);
        assert_eq!(code, 0, "{args:?}: {out}");
        out
    };
    settings().bind(|| {
        insta::assert_snapshot!("events_list", run(&["events", "list", "--source", "tight"]));
        insta::assert_snapshot!("dlq_list", run(&["dlq", "list"]));
        insta::assert_snapshot!("actions_list", run(&["actions", "list"]));
        insta::assert_snapshot!("status", run(&["status"]));
    });
}
