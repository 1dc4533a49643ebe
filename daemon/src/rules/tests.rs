use super::*;
use serde_json::json;

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
    }
}

fn set(engine: &Engine, files: &[(&str, &str)]) -> RuleSet {
    let rules = files
        .iter()
        .map(|(name, text)| compile(engine, Path::new(&format!("{name}.rhai")), text).unwrap())
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
    assert_eq!(rules.matching("tight.entity.invoice"), vec![1]);
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
