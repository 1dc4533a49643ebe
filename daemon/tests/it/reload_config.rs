//! Reloading the configuration and plugins while webhooks flow: a good
//! config adds a source and removes one, a bad one is refused and the old
//! keeps running, a plugin built after the daemon started goes live — and
//! no acknowledged event is lost.

use std::time::Duration;

use crate::common::*;

fn sighup(daemon: &Daemon) {
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status();
}

const C_SOURCE: &str = r#"
[sources.c]
plugin = "c-example"
token = { env = "SWITCHYARD_IT_SECRET" }
"#;

#[test]
fn reload_with_good_and_bad_configs_while_webhooks_flow() {
    let env = Env::new();
    let config = env.standard();
    let original = std::fs::read_to_string(&config).unwrap();
    let daemon = Daemon::start(&config);

    // Webhooks keep coming during all of it.
    let signed = bulk_signed(200, "rl", 0);
    let sender = daemon.send_in_background(signed, Duration::from_millis(5));

    // A plugin built now, after the daemon started, named by a new source.
    build_c_plugin(&env.plugin_dir());
    std::fs::write(&config, format!("{original}\n{C_SOURCE}")).unwrap();
    sighup(&daemon);
    assert_eq!(wait_reloads(&daemon, "done", 1.0), 1.0, "{}", daemon.logs());
    assert!(
        daemon.logs().contains("configuration and plugins reloaded"),
        "{}",
        daemon.logs()
    );
    let (status, text) = daemon.post(
        "/hooks/c",
        &[("X-Switchyard-Token", SECRET)],
        r#"{"say":"hi"}"#,
    );
    assert_eq!(status, 200, "{text}\n{}", daemon.logs());

    // A bad config: refused, the running one stays (the c source still works).
    std::fs::write(
        &config,
        format!("{original}\n{C_SOURCE}\n[sources.broken]\nplugin = \"nope\"\n"),
    )
    .unwrap();
    sighup(&daemon);
    assert_eq!(
        wait_reloads(&daemon, "refused", 1.0),
        1.0,
        "{}",
        daemon.logs()
    );
    // The log says what was wrong, at its setting.
    assert!(
        daemon.logs().contains("reload refused") && daemon.logs().contains("sources.broken"),
        "{}",
        daemon.logs()
    );
    let (status, _) = daemon.post(
        "/hooks/c",
        &[("X-Switchyard-Token", SECRET)],
        r#"{"say":"still"}"#,
    );
    assert_eq!(status, 200);

    // Back to the original: the c source is gone.
    std::fs::write(&config, &original).unwrap();
    sighup(&daemon);
    assert!(eventually(10, || {
        daemon
            .post(
                "/hooks/c",
                &[("X-Switchyard-Token", SECRET)],
                r#"{"say":"gone"}"#,
            )
            .0
            == 404
    }));

    // Nothing acknowledged was lost: every tight event ran its action once.
    let accepted = sender.join().unwrap();
    assert_eq!(accepted.len(), 200);
    assert!(
        eventually(20, || env.audit_lines().len() >= 200),
        "{}",
        daemon.logs()
    );
    let lines = env.audit_lines();
    for id in &accepted {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l["event_id"] == id.as_str())
                .count(),
            1,
            "{id}"
        );
    }
}

#[test]
fn a_replaced_plugin_library_goes_live_without_a_restart() {
    let env = Env::new();
    env.with_standard_plugins();
    build_c_plugin(&env.plugin_dir());
    env.rule(
        "c",
        r#"const EVENTS = ["c-example.*"]; action("audit", #{ said: event.data.say });"#,
    );
    let config = env.config(&format!(
        "{C_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);
    assert_eq!(
        daemon
            .post(
                "/hooks/c",
                &[("X-Switchyard-Token", SECRET)],
                r#"{"say":"v1"}"#
            )
            .0,
        200
    );
    // Rebuild the library in place (new content, same name): the folder
    // watcher loads the new copy and the source's instance is remade.
    let lib = env.plugin_dir().join("libswitchyard_c_example.so");
    let before = std::fs::read(&lib).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rebuilt = build_c_plugin(tmp.path());
    let mut bytes = std::fs::read(&rebuilt).unwrap();
    bytes.extend_from_slice(b"\0rebuilt");
    assert_ne!(bytes, before);
    let staged = env.plugin_dir().join(".staged");
    std::fs::write(&staged, &bytes).unwrap();
    std::fs::rename(&staged, &lib).unwrap();
    assert_eq!(wait_reloads(&daemon, "done", 1.0), 1.0, "{}", daemon.logs());
    assert!(
        daemon.logs().contains("a plugin library changed"),
        "{}",
        daemon.logs()
    );
    assert_eq!(
        daemon
            .post(
                "/hooks/c",
                &[("X-Switchyard-Token", SECRET)],
                r#"{"say":"v2"}"#
            )
            .0,
        200
    );
    assert_eq!(env.wait_audit(2).len(), 2);
}

/// Loading a library or reading a rule opens the file: that is not a change,
/// and must not reload (or the daemon's own reload, which reads them all,
/// would trigger the next one forever).
#[test]
fn reading_plugins_and_rules_is_not_a_change() {
    let env = Env::new();
    let config = env.standard();
    let daemon = Daemon::start(&config);
    // Another process loads the same plugins and reads the rules.
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    for dir in ["plugins", "rules"] {
        for entry in std::fs::read_dir(env.path(dir)).unwrap() {
            let _ = std::fs::read(entry.unwrap().path()).unwrap();
        }
    }
    // Two real changes, one after the other's reload: each is one reload.
    // Were reading a change, the daemon's own reload (which loads every
    // library) would set off the next one, and the count would run ahead.
    let lib = env.plugin_dir().join("libswitchyard_file.so");
    let bytes = std::fs::read(&lib).unwrap();
    for n in [1.0, 2.0] {
        std::fs::write(&lib, &bytes).unwrap();
        assert_eq!(wait_reloads(&daemon, "done", n), n, "{}", daemon.logs());
    }
    // A webhook routed after the second is the marker: the count is read
    // once more, after it.
    daemon.send_viewed("inv_after_reloads");
    assert_eq!(env.wait_audit(1).len(), 1);
    let samples = scrape(&daemon);
    assert_eq!(
        value(
            &samples,
            "switchyard_config_reloads_total",
            &[("outcome", "done")]
        ),
        2.0,
        "one change, one reload:\n{}",
        daemon.logs()
    );
    // The rules were compiled again at each of the two reloads, and never
    // for a read (a reload reads every rule file).
    assert_eq!(
        value(&samples, "switchyard_rules_reloads_total", &[]),
        2.0,
        "{}",
        daemon.logs()
    );
}
