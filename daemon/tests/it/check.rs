//! `switchyard check` lists every problem with its file and line, and exits
//! non-zero; a good setup passes.

use std::process::Command;

use crate::common::*;

fn check(config: &std::path::Path) -> (i32, String) {
    cli(&["check"], config)
}

#[test]
fn the_shipped_example_config_passes() {
    // The README's quick start config, with plugins from this build.
    let env = Env::new();
    let config = env.example_config();
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule invoice-viewed: wants tight.invoiceViewed"),
        "{out}"
    );
    assert!(
        out.contains("source tight: POST /hooks/tight via tight"),
        "{out}"
    );
}

#[test]
fn every_problem_is_listed_with_its_location() {
    let env = Env::new();
    env.with_standard_plugins();
    env.rule("broken", "const EVENTS = [\"tight.*\"];\nlet x = ;\n");
    env.rule("no-events", "action(\"audit\");\n");
    let config = env.config(
        r#"
[sources.tight]
plugin = "tight"
secret = { env = "SWITCHYARD_IT_SECRET" }
tolerance_secs = "five"

[sources.other]
plugin = "nonexistent"

[sources.secretless]
plugin = "tight"
secret = { env = "SWITCHYARD_IT_SURELY_UNSET" }

[actions.audit]
plugin = "file"
"#,
    );
    let (code, out) = check(&config);
    assert_ne!(code, 0, "{out}");
    let file = config.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:6: sources.tight: plugin refused its config: tight settings: invalid type"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:11: sources.other: no provider plugin named \"nonexistent\""
        )),
        "{out}"
    );
    assert!(out.contains(&format!("{file}:16: sources.secretless.secret: environment variable SWITCHYARD_IT_SURELY_UNSET is not set")), "{out}");
    assert!(out.contains(&format!("{file}:18: actions.audit: plugin refused its config: file settings: missing field `path`")), "{out}");
    assert!(out.contains("broken.rhai:2:9: "), "{out}");
    assert!(
        out.contains("no-events.rhai: declare the event types"),
        "{out}"
    );
    assert!(out.contains("6 problems"), "{out}");
}

#[test]
fn unknown_keys_and_bad_toml_are_named() {
    let env = Env::new();
    let config = env.config("colour = \"blue\"\n");
    let (code, out) = check(&config);
    assert_ne!(code, 0);
    assert!(
        out.contains("switchyard.toml:5:1: unknown field `colour`"),
        "{out}"
    );

    std::fs::write(&config, "listen = \n").unwrap();
    let (code, out) = check(&config);
    assert_ne!(code, 0);
    assert!(out.contains("switchyard.toml:1:"), "{out}");
}

#[test]
fn help_is_there_for_every_command() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["send", "--help"],
        &["events", "list", "--help"],
        &["events", "show", "--help"],
        &["replay", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "redrive", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: switchyard"),
            "{args:?}"
        );
    }
}

#[test]
fn check_says_whether_the_shared_store_answers_and_at_which_schema() {
    let url = crate::pg::fresh_database();
    let env = Env::new();
    env.with_standard_plugins();
    let config = env.config(&format!(
        "[store]\nurl = \"{url}\"\n{TIGHT_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
        env.path("data/audit.jsonl").display()
    ));
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reachable; no schema yet"), "{out}");
    let daemon = Daemon::start(&config);
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}\n{}", daemon.logs());
    assert!(
        out.contains("reachable; schema version 7; 1 instance(s) alive"),
        "{out}"
    );
    drop(daemon);
    // Nothing listens there: an error naming the store, its password masked.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = env.config(&format!(
        "[store]\nurl = \"postgres://switchyard:sekrit@127.0.0.1:{port}/sy\"\n{TIGHT_SOURCE}\n"
    ));
    let (code, out) = check(&config);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "error: postgres://switchyard:***@127.0.0.1:{port}/sy"
        )),
        "{out}"
    );
    assert!(!out.contains("sekrit"), "{out}");
}
