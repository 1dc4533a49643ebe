//! The event-type catalog from outside: each kind of drift from a
//! provider's documented schema is recorded once per path, with the first
//! and last event that showed it, and raises one `switchyard.schema.drift`
//! that a rule routes; a strict source holds a drifted event until an
//! operator releases it; `switchyard check` points at a misspelt field in a
//! rule and says nothing of the shipped rules. Tight's webhooks are signed
//! by PyJWT.

use serde_json::Value;

use crate::common::*;

/// Posts a Tight body signed by PyJWT; the accepted event's id.
fn post_tight(daemon: &Daemon, body: &str) -> String {
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (status, text) = daemon.post("/hooks/tight", &[("Tight-Verification", &token)], body);
    assert_eq!(status, 200, "{text}\n{}", daemon.logs());
    accepted_id(&text)
}

/// A LIFECYCLE body of `event` with this `eventData`, and `datetime` or not.
fn lifecycle(event: &str, event_data: &str, datetime: bool) -> String {
    let when = if datetime {
        r#""datetime":"2025-04-01T11:31:04.1Z","#
    } else {
        ""
    };
    format!(
        r#"{{"editor":{{"userId":"usr_1"}},"company":{{"id":"co_1"}},"type":"LIFECYCLE","event":"{event}",{when}"eventData":{event_data}}}"#
    )
}

/// `switchyard types show SOURCE TYPE --json`.
fn type_detail(config: &std::path::Path, source: &str, kind: &str) -> Value {
    let (code, out) = cli(&["types", "show", source, kind, "--json"], config);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn drift_rows(detail: &Value) -> Vec<(String, String, u64, String, String)> {
    let mut rows: Vec<_> = detail["drift_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["drift"].as_str().unwrap().to_string(),
                d["count"].as_u64().unwrap(),
                d["first_event"].as_str().unwrap().to_string(),
                d["last_event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn each_kind_of_drift_is_recorded_and_raises_one_alert_a_rule_routes() {
    let env = Env::new();
    env.with_standard_plugins();
    env.rule(
        "drift",
        r#"const EVENTS = ["switchyard.schema.drift"];
action("audit", #{ alert: event.data.drift, path: event.data.path, of: event.data.type, first: event.data.event_id });"#,
    );
    env.rule(
        "all",
        r#"const EVENTS = ["tight.*"];
action("audit", #{ routed: event.type });"#,
    );
    let config = env.config(&format!(
        "{TIGHT_SOURCE}\n[actions.audit]\nplugin = \"file\"\npath = \"{}\"\n",
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);

    let good = post_tight(&daemon, &invoice_viewed("inv_1"));
    let unknown = post_tight(
        &daemon,
        &lifecycle("invoiceViewedTwice", r#"{"entityId":"inv_2"}"#, true),
    );
    let missing = post_tight(
        &daemon,
        &lifecycle("invoiceViewed", r#"{"entityId":"inv_3"}"#, false),
    );
    let changed = post_tight(
        &daemon,
        &lifecycle("invoiceViewed", r#"{"entityId":42}"#, true),
    );
    let added = post_tight(
        &daemon,
        &lifecycle(
            "invoiceViewed",
            r#"{"entityId":"inv_5","viewerIp":"203.0.113.9"}"#,
            true,
        ),
    );

    // One alert each, routed by the rule, naming the event that showed it.
    let alerts = |lines: &[Value]| -> Vec<(String, String, String, String)> {
        let mut a: Vec<_> = lines
            .iter()
            .filter(|l| l["params"]["alert"].is_string())
            .map(|l| {
                let p = &l["params"];
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("alert"), s("of"), s("path"), s("first"))
            })
            .collect();
        a.sort();
        a
    };
    let mut want = vec![
        (
            "added".to_string(),
            "tight.invoiceViewed".to_string(),
            "/eventData/viewerIp".to_string(),
            added.clone(),
        ),
        (
            "missing".into(),
            "tight.invoiceViewed".into(),
            "/datetime".into(),
            missing.clone(),
        ),
        (
            "type_changed".into(),
            "tight.invoiceViewed".into(),
            "/eventData/entityId".into(),
            changed.clone(),
        ),
        (
            "unknown_type".into(),
            "tight.invoiceViewedTwice".into(),
            String::new(),
            unknown.clone(),
        ),
    ];
    want.sort();
    assert!(
        eventually(20, || alerts(&env.audit_lines()).len() >= 4),
        "{:?}\n{}",
        env.audit_lines(),
        daemon.logs()
    );
    assert_eq!(alerts(&env.audit_lines()), want);
    // A drifted event is routed all the same (the provider sent it).
    for id in [&good, &unknown, &missing, &changed, &added] {
        assert!(env
            .audit_lines()
            .iter()
            .any(|l| l["event_id"] == **id && l["params"]["routed"].is_string()));
    }

    // The same drift again: counted, not announced again.
    let again = post_tight(
        &daemon,
        &lifecycle("invoiceViewed", r#"{"entityId":7}"#, true),
    );
    assert!(
        eventually(20, || {
            drift_rows(&type_detail(&config, "tight", "tight.invoiceViewed"))
                .iter()
                .any(|r| r.1 == "type_changed" && r.2 == 2)
        }),
        "{}",
        daemon.logs()
    );
    wait_quiet(&config);
    env.wait_audit_of(&again);
    assert_eq!(alerts(&env.audit_lines()), want, "one alert a drift");

    let detail = type_detail(&config, "tight", "tight.invoiceViewed");
    assert_eq!(
        drift_rows(&detail),
        vec![
            (
                "/datetime".into(),
                "missing".into(),
                1,
                missing.clone(),
                missing.clone()
            ),
            (
                "/eventData/entityId".into(),
                "type_changed".into(),
                2,
                changed.clone(),
                again.clone()
            ),
            (
                "/eventData/viewerIp".into(),
                "added".into(),
                1,
                added.clone(),
                added.clone()
            ),
        ]
    );
    assert_eq!(detail["known_as"], "declared");
    assert_eq!(detail["total"], 5);
    assert_eq!(detail["last_event"], again.as_str());
    assert_eq!(detail["sample"]["eventData"]["entityId"], 7);
    assert_eq!(detail["schema"]["properties"]["type"]["const"], "LIFECYCLE");
    // The undeclared type is listed with what arrived of it; declared ones
    // that never arrived are listed too.
    let (code, out) = cli(&["types", "list", "--source", "tight", "--json"], &config);
    assert_eq!(code, 0, "{out}");
    let list: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |k: &str| {
        list.iter()
            .find(|t| t["type"] == k)
            .unwrap_or_else(|| panic!("no {k}: {out}"))
    };
    assert_eq!(of("tight.invoiceViewedTwice")["known_as"], "undeclared");
    assert_eq!(of("tight.invoiceViewedTwice")["total"], 1);
    assert_eq!(of("tight.invoiceViewedTwice")["drift"], 1);
    assert_eq!(of("tight.entity.vendor")["total"], 0);
    assert_eq!(of("tight.invoiceViewed")["last_hour"], 5);
    // The table, for people.
    let (_, table) = cli(&["types", "list", "--source", "tight"], &config);
    assert!(
        table
            .lines()
            .any(|l| l.contains("tight.invoiceViewed ") && l.contains("3 path(s)")),
        "{table}"
    );
}

#[test]
fn a_strict_source_holds_a_drifted_event_until_it_is_released() {
    let env = Env::new();
    let config = env.standard_with("", "strict = true\n");
    let daemon = Daemon::start(&config);
    let drifted = post_tight(
        &daemon,
        &lifecycle("invoiceViewed", r#"{"entityId":"inv_9","note":"x"}"#, true),
    );
    // The positive marker: an event after it went through.
    let after = daemon.send_viewed("inv_10");
    let lines = env.wait_audit_of(&after);
    assert!(
        !lines.iter().any(|l| l["event_id"] == drifted.as_str()),
        "{lines:?}"
    );
    let shown = show(&config, &drifted);
    assert_eq!(shown["state"], "held", "{shown}");
    let (code, out) = cli(&["events", "list", "--state", "held", "--json"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&drifted), "{out}");
    assert!(daemon.logged("event held for an operator"));

    let (code, out) = cli(&["events", "release", &drifted], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 held event(s)"), "{out}");
    let lines = env.wait_audit_of(&drifted);
    let line = lines
        .iter()
        .find(|l| l["event_id"] == drifted.as_str())
        .unwrap();
    assert_eq!(line["params"]["invoice"], "inv_9");
    assert_eq!(show(&config, &drifted)["state"], "routed");
    // Released once, routed as it is: not held again.
    let (code, out) = cli(&["events", "release", &drifted], &config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no held event"), "{out}");
}

#[test]
fn check_points_at_a_misspelt_field_and_is_quiet_on_the_shipped_rules() {
    let env = Env::new();
    let config = env.example_config();
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("reads event"), "{out}");

    // The shipped rules, and one that misspells two fields.
    let rules = env.path("rules");
    for f in std::fs::read_dir(repo_root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "rhai") {
            std::fs::copy(&f, rules.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        rules.join("misspelt.rhai"),
        "const EVENTS = [\"tight.invoiceViewed\"];\nlet data = event.data;\nlet who = data?.editor?.userid;\naction(\"notify-owner\", #{ subject: `${event.data.eventData.entityid} ${who}` });\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("rules_dir = \"{}\"", repo_root().join("rules").display()),
        "rules_dir = \"rules\"",
    );
    std::fs::write(&config, text).unwrap();
    let (code, out) = cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("reads event")).collect();
    let file = rules.join("misspelt.rhai").display().to_string();
    assert_eq!(
        warnings,
        vec![
            format!("warning: {file}:3:25: reads event.data.editor.userid; tight.invoiceViewed's data.editor has userId"),
            format!("warning: {file}:4:60: reads event.data.eventData.entityid; tight.invoiceViewed's data.eventData has entityId"),
        ],
        "{out}"
    );
    // `rules test` says the same.
    let (_, out) = cli(&["rules", "test"], &config);
    assert!(
        out.contains(&format!("{file}:4:60: reads event.data.eventData.entityid")),
        "{out}"
    );
}

/// The generic plugin: a type's schema from a file the source names, and
/// another learned from its first 20 events; drift from either raises its
/// alert.
#[test]
fn the_generic_plugin_takes_schema_files_and_learns_the_rest() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_webhook"));
    let schema = env.path("order-created.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"type": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["type", "amount"]}"#,
    )
    .unwrap();
    env.rule(
        "drift",
        r#"const EVENTS = ["switchyard.schema.drift"];
action("audit", #{ alert: event.data.drift, path: event.data.path, of: event.data.type });"#,
    );
    let config = env.config(&format!(
        r#"[sources.shop]
plugin = "webhook"
verify = "token"
token = {{ env = "SWITCHYARD_IT_SECRET" }}
token_header = "X-Shop-Token"
event_type = "/type"
learn_schemas = true
schemas = {{ "order.created" = "{}" }}

[actions.audit]
plugin = "file"
path = "{}"
"#,
        schema.display(),
        env.audit_path().display()
    ));
    let daemon = Daemon::start(&config);
    let post = |body: String| {
        let (status, text) = daemon.post("/hooks/shop", &[("X-Shop-Token", SECRET)], body);
        assert_eq!(status, 200, "{text}");
        accepted_id(&text)
    };
    post(r#"{"type": "order.created", "amount": 12.5}"#.into());
    let changed = post(r#"{"type": "order.created", "amount": "12.50"}"#.into());
    for i in 0..20 {
        post(format!(
            r#"{{"type": "order.shipped", "id": {i}, "carrier": "posten"}}"#
        ));
    }
    // Learned from those 20 (the store has it once it is recorded).
    assert!(
        eventually(20, || {
            let (_, out) = cli(&["types", "list", "--source", "shop", "--json"], &config);
            out.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|t| t["type"] == "webhook.order.shipped" && t["known_as"] == "learned")
        }),
        "{}",
        daemon.logs()
    );
    let added = post(
        r#"{"type": "order.shipped", "id": 21, "carrier": "posten", "tracking": "T1"}"#.into(),
    );
    let alerts = || -> Vec<(String, String, String)> {
        let mut a: Vec<_> = env
            .audit_lines()
            .iter()
            .map(|l| {
                let p = &l["params"];
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("alert"), s("of"), s("path"))
            })
            .collect();
        a.sort();
        a
    };
    assert!(
        eventually(20, || alerts().len() >= 2),
        "{:?}\n{}",
        alerts(),
        daemon.logs()
    );
    assert_eq!(
        alerts(),
        vec![
            (
                "added".into(),
                "webhook.order.shipped".into(),
                "/tracking".into()
            ),
            (
                "type_changed".into(),
                "webhook.order.created".into(),
                "/amount".into()
            ),
        ]
    );
    let detail = type_detail(&config, "shop", "webhook.order.shipped");
    assert_eq!(detail["schema"]["properties"]["carrier"]["type"], "string");
    assert_eq!(drift_rows(&detail)[0].3, added);
    let detail = type_detail(&config, "shop", "webhook.order.created");
    assert_eq!(detail["known_as"], "declared");
    assert_eq!(drift_rows(&detail)[0].3, changed);

    // What was learned outlives a restart: the next event is checked at once.
    drop(daemon);
    let daemon = Daemon::start(&config);
    let (status, text) = daemon.post(
        "/hooks/shop",
        &[("X-Shop-Token", SECRET)],
        r#"{"type": "order.shipped", "id": 22, "carrier": "posten", "weight": 2}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        eventually(20, || alerts().iter().any(|a| a.2 == "/weight")),
        "{:?}\n{}",
        alerts(),
        daemon.logs()
    );
}

/// A schema that does not compile refuses the config, naming the source
/// and the type.
#[test]
fn a_schema_that_does_not_compile_is_refused_by_name() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_webhook"));
    let schema = env.path("broken.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"amount": {"type": 5}}}"#,
    )
    .unwrap();
    let config = env.config(&format!(
        "[sources.shop]\nplugin = \"webhook\"\nverify = \"none\"\nevent_type = \"/type\"\nschemas = {{ \"order.created\" = \"{}\" }}\n",
        schema.display()
    ));
    let (code, out) = cli(&["check"], &config);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("sources.shop: the schema of webhook.order.created does not compile"),
        "{out}"
    );
}
