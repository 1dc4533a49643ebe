use super::*;
use rhai::Dynamic;
use serde_json::json;
use std::time::{Duration, Instant};

fn event(kind: &str) -> Event {
    Event {
        id: "01TEST".into(),
        source: "tight".into(),
        kind: kind.into(),
        subject: Some("inv_1".into()),
        time: "2025-01-01T00:00:00Z".into(),
        data: json!({"company": {"id": "co_1"}, "eventData": {"clientName": "ACME"}}),
        provider: "tight".into(),
        dedup_key: "k".into(),
        received_at: "2025-01-01T00:00:00Z".into(),
        extensions: Default::default(),
        order: None,
        handshake: false,
    }
}

fn set(engine: &Engine, files: &[(&str, &str)]) -> RuleSet {
    let rules = files
        .iter()
        .map(|(name, text)| {
            Arc::new(compile(engine, Path::new(&format!("{name}.rhai")), text).unwrap())
        })
        .collect();
    RuleSet::from_rules(rules).unwrap()
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    }
}

#[test]
fn matching_rules_call_actions_with_params() {
    let engine = engine(&limits());
    let rules = set(
        &engine,
        &[
            (
                "a-viewed",
                r#"const EVENTS = ["tight.invoiceViewed"];
                action("notify", #{ client: event.data.eventData.clientName, missing: event.data?.nope?.deeper });"#,
            ),
            (
                "b-all-tight",
                r#"const EVENTS = "tight.*"; action("audit");"#,
            ),
            ("c-other", r#"const EVENTS = ["teal.*"]; action("never");"#),
        ],
    );
    let runs = rules.route(&engine, &limits(), &event("tight.invoiceViewed"));
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].rule, "a-viewed");
    assert_eq!(runs[0].error, None);
    assert_eq!(
        runs[0].calls,
        vec![ActionCall {
            action: "notify".into(),
            params: json!({"client": "ACME", "missing": null})
        }]
    );
    assert_eq!(runs[1].calls[0].action, "audit");
    assert!(rules
        .route(&engine, &limits(), &event("tripletex.x"))
        .is_empty());
    assert_eq!(*rules.matching("tight.entity.invoice"), [1]);
}

#[test]
fn a_looping_rule_is_stopped_and_others_still_run() {
    let engine = engine(&limits());
    let rules = set(
        &engine,
        &[
            (
                "a-loop",
                r#"const EVENTS = ["x.y"]; action("before"); loop { }"#,
            ),
            (
                "b-recurse",
                r#"const EVENTS = ["x.y"]; fn f(n) { f(n + 1) } f(0);"#,
            ),
            (
                "c-huge",
                r#"const EVENTS = ["x.y"]; let s = "x"; loop { s += s; }"#,
            ),
            ("d-eval", r#"const EVENTS = ["x.y"]; action("ok");"#),
        ],
    );
    let start = Instant::now();
    let runs = rules.route(&engine, &limits(), &event("x.y"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(runs.len(), 4);
    for run in &runs[..3] {
        assert!(run.error.is_some(), "{run:?}");
        assert!(
            run.calls.is_empty(),
            "a failed run decides nothing: {run:?}"
        );
    }
    assert_eq!(runs[3].error, None);
    assert_eq!(runs[3].calls[0].action, "ok");
}

#[test]
fn eval_is_disabled_and_errors_have_positions() {
    let engine = engine(&limits());
    let err = compile(
        &engine,
        Path::new("r.rhai"),
        "const EVENTS = [\"a\"];\nlet x = eval(\"1\");",
    )
    .unwrap_err();
    assert!(err.location.starts_with("r.rhai:2:"), "{err}");
    let err = compile(
        &engine,
        Path::new("r.rhai"),
        "const EVENTS = [\"a\"];\nlet x = ;",
    )
    .unwrap_err();
    assert_eq!(err.location, "r.rhai:2:9", "{err}");
    let err = compile(&engine, Path::new("r.rhai"), "action(\"x\");").unwrap_err();
    assert!(err.message.contains("const EVENTS"), "{err}");
    let err = compile(&engine, Path::new("r.rhai"), "const EVENTS = [1];").unwrap_err();
    assert!(err.message.contains("strings"), "{err}");
}

#[test]
fn reload_keeps_the_last_good_version_of_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("a.rhai", r#"const EVENTS = ["x.a"]; action("one");"#);
    write("b.rhai", r#"const EVENTS = ["x.b"]; action("two");"#);
    write(".#a.rhai", "not a rule: an editor's lock file");
    write("a.rhai~", "a backup");
    let limits = limits();
    let engine = engine(&limits);
    let rules = Rules::new(
        engine,
        limits,
        dir.path().to_path_buf(),
        RuleSet::load_dir(&engine_for_load(), dir.path()).unwrap(),
    );
    assert_eq!(rules.current().version, 1);
    assert_eq!(rules.current().rules().len(), 2);

    // Nothing changed: the same set stays, same version.
    let r = rules.reload().unwrap();
    assert!(!r.changed);
    assert_eq!(r.version, 1);

    // Break a: its last good version stays live; b changes.
    write("a.rhai", r#"const EVENTS = ["x.a"]; action("one"#);
    write("b.rhai", r#"const EVENTS = ["x.b"]; action("three");"#);
    let r = rules.reload().unwrap();
    assert!(r.changed);
    assert_eq!(r.version, 2);
    assert_eq!(r.broken.len(), 1);
    assert!(r.broken[0].location.contains("a.rhai:1:"), "{:?}", r.broken);
    let calls = |kind: &str| -> Vec<String> {
        rules
            .route(&event(kind))
            .1
            .into_iter()
            .flat_map(|run| run.calls.into_iter().map(|c| c.action))
            .collect()
    };
    assert_eq!(calls("x.a"), ["one"]);
    assert_eq!(calls("x.b"), ["three"]);
    assert_eq!(rules.failed_reloads.load(Ordering::Relaxed), 1);

    // Fix a, delete b, add c.
    write("a.rhai", r#"const EVENTS = ["x.a"]; action("four");"#);
    std::fs::remove_file(dir.path().join("b.rhai")).unwrap();
    write("c.rhai", r#"const EVENTS = ["x.*"]; action("five");"#);
    let r = rules.reload().unwrap();
    assert_eq!((r.version, r.rules, r.broken.len()), (3, 2, 0));
    assert_eq!(calls("x.a"), ["four", "five"]);
    assert_eq!(calls("x.b"), ["five"]);

    // A new file that never compiled is simply absent.
    write("d.rhai", "const EVENTS = [");
    let r = rules.reload().unwrap();
    assert_eq!((r.rules, r.broken.len()), (2, 1));
}

fn engine_for_load() -> Engine {
    engine(&limits())
}

#[test]
fn time_and_text_helpers() {
    let engine = engine(&limits());
    let eval = |src: &str| engine.eval::<Dynamic>(src).unwrap();
    assert_eq!(
        eval(r#"parse_time("2025-04-01T11:31:04.1Z")"#)
            .as_int()
            .unwrap(),
        1743507064
    );
    assert!(eval(r#"parse_time("yesterday")"#).is_unit());
    assert_eq!(
        eval("format_time(0)").into_string().unwrap(),
        "1970-01-01T00:00:00Z"
    );
    assert!(
        eval(r#"age_secs("2020-01-01T00:00:00Z")"#)
            .as_int()
            .unwrap()
            > 100_000_000
    );
    assert!(eval("now_unix()").as_int().unwrap() > 1_700_000_000);
    assert!(eval("now()").into_string().unwrap().ends_with('Z'));
    assert_eq!(
        eval(r#"json(#{a: [1, "x"]})"#).into_string().unwrap(),
        r#"{"a":[1,"x"]}"#
    );
    assert_eq!(
        eval(r#""Inv_1".to_upper()"#).into_string().unwrap(),
        "INV_1"
    );
}

#[test]
fn literal_action_calls_are_found_in_the_compiled_script() {
    let engine = engine(&limits());
    let rules = set(
        &engine,
        &[(
            "calls",
            r#"const EVENTS = ["tight.*"];
// action("in-a-comment");
let note = "action(\"in-a-string\")";
action("a", #{});
action ( "c" );
if event.type == "tight.x" { action("in-a-branch") }
fn helper() { action("in-a-function") }
let name = "computed";
action(name);
my_action("b");
fn my_action(x) { x }"#,
        )],
    );
    let mut names = rules.rules()[0].literal_actions();
    names.sort();
    assert_eq!(names, ["a", "c", "in-a-branch", "in-a-function"]);
}
