//! The plugin ABI from the host's side: a plugin written in C, libraries the
//! host must refuse, and a plugin that panics or hangs.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn check(config: &std::path::Path) -> (bool, String) {
    let (code, out) = cli(&["check"], config);
    (code == 0, out)
}

#[test]
fn a_plugin_written_in_c_verifies_and_its_events_are_routed() {
    let env = Env::new();
    build_c_plugin(&env.plugin_dir());
    env.add_plugin(&built_plugin("switchyard_file"));
    env.rule(
        "c-messages",
        r#"const EVENTS = ["c-example.*"]; action("audit", #{ said: event.data.say });"#,
    );
    let config = env.config(&format!(
        r#"
[sources.c]
plugin = "c-example"
token = {{ env = "SWITCHYARD_IT_SECRET" }}

[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);
    let (status, text) = daemon.post(
        "/hooks/c",
        &[("X-Switchyard-Token", SECRET)],
        r#"{"say":"hello from C"}"#,
    );
    assert_eq!(status, 200, "{text}\n{}", daemon.logs());
    assert_eq!(
        daemon
            .post("/hooks/c", &[("X-Switchyard-Token", "wrong")], "{}")
            .0,
        401
    );
    assert_eq!(daemon.post("/hooks/c", &[], "{}").0, 401);
    assert_eq!(
        daemon
            .post("/hooks/c", &[("X-Switchyard-Token", SECRET)], "[1]")
            .0,
        400
    );
    let lines = env.wait_audit(1);
    assert_eq!(lines.len(), 1, "{}", daemon.logs());
    assert_eq!(lines[0]["params"]["said"], "hello from C");
    assert_eq!(lines[0]["event_type"], "c-example.message");
}

/// ABI 1.x stays stable across minors, in both directions:
/// - c-example's table is exactly the 1.0 size when built against a 1.1 or
///   1.2 header, one entry larger (`execute_batch`) against 1.3's, two
///   (`subscriptions`) against 1.4's;
/// - c-future's is larger, from a minor newer than the host's, with an entry
///   point after `sample` the host does not know: it loads, the host reads
///   only what it knows, and it learns the host's version from sy_host and
///   the size of sy_out;
/// - a plugin built before a minor bump keeps working: the host is at 1.8
///   and c-example is compiled against the 1.1 … 1.7 headers as
///   released (frozen in plugin-api/tests/abi-1.1/ … abi-1.7/; 1.5 added
///   no entry, only what verify's and create's documents may say, 1.6 a
///   status, 1.7 what an action's create may say, 1.8 a provider's
///   catalog); 1.1's sy_host and
///   sy_out are shorter and it has no SY_HAS. Such a plugin says its minor,
///   and the host reads its table up to its struct_size.
#[test]
fn plugins_of_every_abi_1_minor_load_and_work() {
    let root = repo_root();
    for (header, minor) in [
        (root.join("plugin-api/include"), "8"),
        (root.join("plugin-api/tests/abi-1.7"), "7"),
        (root.join("plugin-api/tests/abi-1.6"), "6"),
        (root.join("plugin-api/tests/abi-1.5"), "5"),
        (root.join("plugin-api/tests/abi-1.4"), "4"),
        (root.join("plugin-api/tests/abi-1.3"), "3"),
        (root.join("plugin-api/tests/abi-1.2"), "2"),
        (root.join("plugin-api/tests/abi-1.1"), "1"),
    ] {
        let env = Env::new();
        build_c(
            "plugins/c-example/token_provider.c",
            &header,
            &env.plugin_dir().join("libswitchyard_c_example.so"),
        );
        build_c(
            "plugins/testing/c-future/future_table.c",
            &root.join("plugin-api/include"),
            &env.plugin_dir().join("libswitchyard_c_future.so"),
        );
        env.add_plugin(&built_plugin("switchyard_file"));
        env.rule(
            "all",
            r#"const EVENTS = ["c-example.*", "c-future.*"]; action("audit", #{ data: event.data });"#,
        );
        let config = env.config(&format!(
            r#"
[sources.c]
plugin = "c-example"
token = {{ env = "SWITCHYARD_IT_SECRET" }}

[sources.f]
plugin = "c-future"

[actions.audit]
plugin = "file"
path = "{}"
"#,
            env.audit_path().display()
        ));
        let daemon = Daemon::start(&config);
        let loaded = |name: &str| {
            let logs = daemon.logs();
            let line = logs
                .lines()
                .find(|l| {
                    l.contains("plugin loaded") && l.contains(&format!("\"plugin\":\"{name}\""))
                })
                .unwrap_or_else(|| panic!("{name} not loaded:\n{logs}"))
                .to_string();
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["fields"].clone()
        };
        let example = loaded("c-example");
        assert_eq!(example["abi"], format!("1.{minor}"));
        let entries = match minor {
            "8" | "7" | "6" | "5" | "4" => 10,
            "3" => 9,
            _ => 8,
        };
        assert_eq!(
            example["table_size"],
            8 + entries * std::mem::size_of::<usize>()
        );
        let future = loaded("c-future");
        assert_eq!(future["abi"], "1.9");
        assert_eq!(future["table_size"], 8 + 11 * std::mem::size_of::<usize>());
        if minor != "1" {
            assert!(daemon.logged("c-example instance created (host ABI 1.8)"));
        } else {
            assert!(daemon.logged("c-example instance created\""));
        }

        let (status, text) = daemon.post(
            "/hooks/c",
            &[("X-Switchyard-Token", SECRET)],
            r#"{"say":"from C"}"#,
        );
        assert_eq!(status, 200, "{text}\n{}", daemon.logs());
        let (status, text) = daemon.post("/hooks/f", &[("x-probe", "yes")], "{}");
        assert_eq!(status, 200, "{text}\n{}", daemon.logs());
        assert_eq!(daemon.post("/hooks/f", &[], "{}").0, 401);
        if minor == "6" {
            // "Not now" (1.6): 503 with Retry-After, the provider retries.
            let r = reqwest::blocking::Client::new()
                .post(daemon.url("/hooks/f"))
                .header("x-probe", "later")
                .body("{}")
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 503);
            assert_eq!(r.headers()["retry-after"], "30");
            assert_eq!(r.text().unwrap(), r#"{"error":"retry_later"}"#);
            // OK with nothing in it acknowledges nothing: the plugin failed.
            let (status, text) = daemon.post("/hooks/f", &[("x-probe", "empty")], "{}");
            assert_eq!(status, 500, "{text}");
            assert!(daemon.logged("verify said OK with no events"));
            assert!(daemon.logged("the key server did not answer"));
        }
        let lines = env.wait_audit(2);
        assert_eq!(lines.len(), 2, "{}", daemon.logs());
        let data = |t: &str| {
            lines
                .iter()
                .find(|l| l["event_type"] == t)
                .unwrap_or_else(|| panic!("no {t} in {lines:?}"))["params"]["data"]
                .clone()
        };
        assert_eq!(data("c-example.message")["say"], "from C");
        let probe = data("c-future.probe");
        assert_eq!(probe["host_abi_minor"], 8);
        assert_eq!(probe["out_struct_size"], 4 * std::mem::size_of::<usize>());
    }
}

#[test]
fn c_plugin_refuses_unknown_settings_with_a_clear_message() {
    let env = Env::new();
    build_c_plugin(&env.plugin_dir());
    let config = env.config(
        r#"
[sources.c]
plugin = "c-example"
tokn = "x"
"#,
    );
    let (ok, out) = check(&config);
    assert!(!ok, "{out}");
    assert!(out.contains("switchyard.toml:6: sources.c"), "{out}");
    assert!(out.contains("unknown key"), "{out}");
}

#[test]
fn libraries_for_another_abi_or_without_the_entry_symbol_are_refused_by_name() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_test_future_abi"));
    // A shared library that is not a plugin at all.
    let stray_c = env.path("stray.c");
    std::fs::write(&stray_c, "int not_a_plugin(void) { return 1; }\n").unwrap();
    let stray = env.plugin_dir().join("libstray.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&stray)
        .arg(&stray_c)
        .status()
        .unwrap();
    assert!(status.success());
    let config = env.standard();

    let (ok, out) = check(&config);
    assert!(ok, "refused libraries nobody uses are warnings: {out}");
    assert!(
        out.contains("libswitchyard_test_future_abi.so: built for plugin ABI 2.0, but this switchyard speaks ABI 1.x"),
        "{out}"
    );
    // Said for Rust and C authors alike.
    assert!(
        out.contains("switchyard-plugin-api 1 (Rust) or a switchyard_plugin.h whose SWITCHYARD_ABI_MAJOR is 1 (C"),
        "{out}"
    );
    assert!(
        out.contains("libstray.so: not a Switchyard plugin"),
        "{out}"
    );

    // The daemon starts and serves beside them.
    let daemon = Daemon::start(&config);
    let body = invoice_viewed("inv_7");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    assert_eq!(
        daemon
            .post("/hooks/tight", &[("Tight-Verification", &token)], body)
            .0,
        200
    );
    assert!(daemon.logged("libstray.so"));

    // A source naming the refused plugin is an error.
    let config = env.config(
        r#"
[sources.f]
plugin = "future"
"#,
    );
    let (ok, out) = check(&config);
    assert!(!ok, "{out}");
    assert!(out.contains("no provider plugin named \"future\""), "{out}");
    // ...and says why the library that may be it was refused, in the error
    // itself (it stops the daemon before warnings would be printed).
    let error_line = out
        .lines()
        .find(|l| l.contains("no provider plugin named"))
        .unwrap();
    assert!(
        error_line.contains("refused: ") && error_line.contains("built for plugin ABI 2.0"),
        "{out}"
    );
}

#[test]
fn a_panicking_plugin_fails_one_request_and_the_daemon_serves_on() {
    let env = Env::new();
    env.add_plugin(&built_plugin("switchyard_test_panicky"));
    let config = env.config(
        r#"
plugin_timeout_ms = 500
[sources.p]
plugin = "panicky"
"#,
    );
    let mut daemon = Daemon::start(&config);
    for _ in 0..3 {
        let (status, text) = daemon.post("/hooks/p", &[], "panic");
        assert_eq!(status, 500, "{text}");
        assert_eq!(text, r#"{"error":"internal error"}"#);
        assert_eq!(daemon.post("/hooks/p", &[], "fine").0, 200);
    }
    assert!(daemon.alive());
    assert!(daemon.logged("plugin panicked: "), "{}", daemon.logs());
    assert!(daemon.logged("asked to panic"), "{}", daemon.logs());

    // A call that overruns its deadline is answered 503 at the deadline, not later.
    let start = Instant::now();
    let (status, _) = daemon.post("/hooks/p", &[], "sleep");
    assert_eq!(status, 503);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(daemon.post("/hooks/p", &[], "fine").0, 200);
    assert!(daemon.alive());
}

#[test]
fn a_plugin_that_panics_in_create_is_a_config_problem() {
    let env = Env::new();
    env.add_plugin(&built_plugin("switchyard_test_panicky"));
    let config = env.config(
        r#"
[sources.p]
plugin = "panicky"
panic_on_create = true
"#,
    );
    let (ok, out) = check(&config);
    assert!(!ok, "{out}");
    assert!(out.contains("sources.p: plugin panicked: "), "{out}");
}

#[test]
fn on_a_full_disk_plugins_load_in_place_and_no_partial_copy_is_left() {
    let env = Env::new();
    let config = env.standard();
    let data = env.path("data");
    // The copies' folder as an older run left it: a partial copy of a
    // full disk, and a copy of a build no longer in plugin_dir.
    let daemon = Daemon::start_on_small_disk(
        &config,
        &data,
        "8m",
        "mkdir -p .plugins && echo x > .plugins/.libswitchyard_tight-0011223344556677.so.99.tmp \
         && echo x > .plugins/libswitchyard_tight-0011223344556677.so",
    );
    // Each debug build of a bundled plugin is larger than the disk.
    assert!(daemon.logged("the disk is full: no room in"));
    assert!(daemon.logged("plugin loaded in place, not from a copy"));
    daemon.send_viewed("inv_full_disk");
    // The audit file is on the small disk too: read as the daemon sees it.
    let audit = daemon.seen(&env.audit_path());
    assert!(eventually(10, || std::fs::read_to_string(&audit)
        .is_ok_and(|t| t.contains("inv_full_disk"))));
    let copies = daemon.seen(&data.join(".plugins"));
    let left: Vec<String> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // What fitted was copied (the small file plugin); no partial copy,
    // nothing of the older run.
    assert!(
        left.iter()
            .all(|n| n.starts_with("libswitchyard_file-") && n.ends_with(".so")),
        "{left:?}"
    );
    assert!(daemon.logged("removed a plugin copy no library in plugin_dir has"));
}
