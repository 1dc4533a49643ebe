//! Managing the providers' subscriptions, against fake Teal and Tripletex
//! APIs (tests/fixtures/provider_apis.py, written from the seed documents,
//! which check paths, bodies and credentials): `switchyard subscriptions
//! plan|apply|list` make exactly the declared subscriptions, a second apply
//! does nothing, a new public_url moves them, `--prune` is the only way to
//! delete what Switchyard did not make; the watcher switches a subscription
//! Tripletex disabled back on, a rule hears of it, and the webhook Tripletex
//! then sends with the configured auth header is accepted.

use std::path::Path;

use serde_json::{json, Value};

use crate::actions::Fixture;
use crate::common::*;

const CALLBACK: &str = "Bearer tx-callback-s3cret";

/// The plugins of these tests' sources (tight, teal, tripletex) and the
/// file action.
fn with_plugins(env: &Env) {
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_teal"));
    env.add_plugin(&built_plugin("switchyard_tripletex"));
}

fn fake(dir: &Path) -> Fixture {
    Fixture::start("provider_apis.py", &[], dir.join("apis.jsonl"))
}

fn base(f: &Fixture) -> String {
    format!("http://127.0.0.1:{}", f.port)
}

fn control(f: &Fixture, method: &str, path: &str, body: Value) -> Value {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/_control/{path}", base(f));
    let r = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(&body),
    }
    .send()
    .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().unwrap()
}

/// The requests that change something at a provider (not the session's).
fn changes(f: &Fixture) -> Vec<Value> {
    f.lines()
        .into_iter()
        .filter(|l| l["method"] != "GET" && !l["path"].as_str().unwrap().starts_with("/_control"))
        .filter(|l| !l["path"].as_str().unwrap().contains("/token/session"))
        .collect()
}

/// The sources: Teal, Tripletex (header auth) and Tight (made by hand).
fn sources(f: &Fixture, tripletex_extra: &str) -> String {
    format!(
        r#"
[sources.teal]
plugin = "teal"
signing_secret = "teal-signing-s3cret"
[sources.teal.subscription]
api_url = "{base}/teal"
api_key = "teal-api-key"
events = ["user-payroll-submitted", "user-bank-statement-submitted"]
include_payload = true

[sources.tripletex]
plugin = "tripletex"
auth = "header"
header_name = "Authorization"
header_value = "{CALLBACK}"
{tripletex_extra}
[sources.tripletex.subscription]
api_url = "{base}/tripletex/v2"
consumer_token = "consumer-token"
employee_token = "employee-token"
events = ["Product.Create", "order.update"]
fields = "id,name,version"

[sources.tight]
plugin = "tight"
secret = {{ env = "SWITCHYARD_IT_SECRET" }}
"#,
        base = base(f)
    )
}

fn never_a_secret(out: &str) {
    for secret in [
        "tx-callback-s3cret",
        "teal-signing-s3cret",
        "teal-api-key",
        "employee-token",
        "sess-",
    ] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
}

#[test]
fn plan_apply_and_list_make_exactly_the_declared_subscriptions() {
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    let foreign = control(
        &f,
        "POST",
        "tripletex/add",
        json!({"event": "product.update", "targetUrl": "https://erp.example.com/tripletex"}),
    );
    let config = env.config(&format!(
        "public_url = \"https://hooks.example.com/\"\n{}",
        sources(&f, "")
    ));

    // Plan: what would change, and nothing changes.
    let (code, out) = cli(&["subscriptions", "plan"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("teal -> https://hooks.example.com/hooks/teal"),
        "{out}"
    );
    assert!(
        out.contains("create   user-bank-statement-submitted,user-payroll-submitted"),
        "{out}"
    );
    assert!(out.contains("create   order.update\n"), "{out}");
    assert!(out.contains("create   product.create\n"), "{out}");
    assert!(
        out.contains(&format!(
            "foreign  product.update (id {}): https://erp.example.com/tripletex, not Switchyard's",
            foreign["id"]
        )),
        "{out}"
    );
    assert!(
        out.contains("not managed: Tight webhooks are set up by Tight's API team"),
        "{out}"
    );
    assert!(out.contains("api@tight.com"), "{out}");
    assert!(
        out.contains("(https://hooks.example.com/hooks/tight)"),
        "{out}"
    );
    never_a_secret(&out);
    assert!(
        changes(&f).is_empty(),
        "plan changed something: {:?}",
        changes(&f)
    );

    // Apply: exactly the declared ones, with the source's own secrets.
    let (code, out) = cli(&["subscriptions", "apply"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 changed, 0 failed"), "{out}");
    assert!(out.contains("2 changed, 0 failed"), "{out}");
    never_a_secret(&out);
    let state = control(&f, "GET", "state", Value::Null);
    let teal = state["teal"].as_array().unwrap();
    assert_eq!(teal.len(), 1, "{state}");
    assert_eq!(teal[0]["url"], "https://hooks.example.com/hooks/teal");
    assert_eq!(
        teal[0]["events"],
        json!(["user-bank-statement-submitted", "user-payroll-submitted"])
    );
    assert_eq!(teal[0]["signing_secret"], "teal-signing-s3cret");
    assert_eq!(teal[0]["config"]["include_payload"], true);
    assert_eq!(teal[0]["name"], "switchyard");
    let tx = state["tripletex"].as_array().unwrap();
    assert_eq!(tx.len(), 3, "{state}");
    let ours: Vec<&Value> = tx
        .iter()
        .filter(|s| s["targetUrl"] == "https://hooks.example.com/hooks/tripletex")
        .collect();
    let mut events: Vec<&str> = ours.iter().map(|s| s["event"].as_str().unwrap()).collect();
    events.sort();
    assert_eq!(events, ["order.update", "product.create"]);
    for s in &ours {
        assert_eq!(s["authHeaderName"], "Authorization");
        assert_eq!(s["authHeaderValue"], CALLBACK);
        assert_eq!(s["fields"], "id,name,version");
    }
    assert!(
        f.lines().iter().all(|l| l.get("error").is_none()),
        "{:?}",
        f.lines()
    );

    // A second apply does nothing.
    let before = changes(&f).len();
    let (code, out) = cli(&["subscriptions", "apply"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("keep     order.update"), "{out}");
    assert_eq!(out.matches("0 changed, 0 failed").count(), 2, "{out}");
    assert_eq!(changes(&f).len(), before, "{:?}", changes(&f));

    // List: the provider's view, Switchyard's and others'.
    let (code, out) = cli(&["subscriptions", "list", "tripletex", "--json"], &config);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(
        rows.iter()
            .filter(|r| r["made_by_switchyard"] == true)
            .count(),
        2
    );
    assert!(rows.iter().all(|r| r["state"] == "active"), "{out}");
    let (code, out) = cli(&["subscriptions", "list"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SOURCE"), "{out}");
    assert!(out.contains("active (ACTIVE)"), "{out}");
    assert!(out.contains("tight: not managed"), "{out}");

    // A new public_url moves them: made anew, the old ones deleted.
    let moved = env.config(&format!(
        "public_url = \"https://new.example.com/base\"\n{}",
        sources(&f, "")
    ));
    let (code, out) = cli(&["subscriptions", "apply"], &moved);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("https://hooks.example.com/hooks/tripletex -> https://new.example.com/base/hooks/tripletex"),
        "{out}"
    );
    let state = control(&f, "GET", "state", Value::Null);
    assert_eq!(state["teal"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(
        state["teal"][0]["url"],
        "https://new.example.com/base/hooks/teal"
    );
    let tx = state["tripletex"].as_array().unwrap();
    assert_eq!(tx.len(), 3, "{state}");
    assert_eq!(
        tx.iter()
            .filter(|s| s["targetUrl"] == "https://new.example.com/base/hooks/tripletex")
            .count(),
        2
    );
    // Only --prune deletes what Switchyard did not make.
    assert!(tx.iter().any(|s| s["id"] == foreign["id"]));
    let (code, out) = cli(&["subscriptions", "apply", "tripletex", "--prune"], &moved);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("prune    product.update"), "{out}");
    let state = control(&f, "GET", "state", Value::Null);
    assert_eq!(state["tripletex"].as_array().unwrap().len(), 2, "{state}");
    assert!(
        f.lines().iter().all(|l| l.get("error").is_none()),
        "{:?}",
        f.lines()
    );
}

#[test]
fn refusals_by_the_provider_are_reported_without_secrets() {
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    let text = sources(&f, "")
        .replace("employee-token\"", "employee-t0ken-wrong\"")
        .replace("\"order.update\"", "\"nosuch.event\"");
    let config = env.config(&format!("public_url = \"https://h.example.com\"\n{text}"));
    let (code, out) = cli(&["subscriptions", "plan", "tripletex"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot plan: Tripletex API: PUT /token/session/:create answered 403"),
        "{out}"
    );
    assert!(!out.contains("employee-t0ken-wrong"), "{out}");
    let config = env.config(&format!(
        "public_url = \"https://h.example.com\"\n{}",
        sources(&f, "").replace("\"order.update\"", "\"nosuch.event\"")
    ));
    let (code, out) = cli(&["subscriptions", "apply", "tripletex"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED   create   nosuch.event"), "{out}");
    assert!(out.contains("answered 422"), "{out}");
    // The other declared one was made all the same.
    assert!(out.contains("1 changed, 1 failed"), "{out}");
    let (code, out) = cli(&["subscriptions", "plan"], &env.config(&sources(&f, "")));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("set public_url"), "{out}");
    // Watching a provider without a subscription API is pointed out.
    let watched =
        sources(&f, "").replace("plugin = \"tight\"", "plugin = \"tight\"\nwatch = \"5m\"");
    let config = env.config(&format!(
        "public_url = \"https://h.example.com\"\n{watched}"
    ));
    let (_, out) = cli(&["check"], &config);
    assert!(
        out.contains("sources.tight.watch has nothing to watch: Tight webhooks are set up"),
        "{out}"
    );
}

#[test]
fn the_watcher_switches_a_disabled_subscription_back_on_and_rules_hear_of_it() {
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    let port = free_port();
    env.rule(
        "told",
        r#"const EVENTS = ["switchyard.subscription.*", "tripletex.*"];
action("audit", #{ type: event.type, data: event.data });"#,
    );
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
data_dir = "data"
plugin_dir = "plugins"
rules_dir = "rules"
{}
[actions.audit]
plugin = "file"
path = "{}"
"#,
        sources(&f, "watch = \"1s\"\nreenable = true"),
        env.audit_path().display()
    );
    let config = env.path("switchyard.toml");
    std::fs::write(&config, text).unwrap();
    let (code, out) = cli(&["subscriptions", "apply", "tripletex"], &config);
    assert_eq!(code, 0, "{out}");
    let state = control(&f, "GET", "state", Value::Null);
    let product = state["tripletex"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["event"] == "product.create")
        .unwrap()
        .clone();
    let daemon = Daemon::start(&config);

    // Tripletex gives up on the receiver after a week of failures.
    control(
        &f,
        "POST",
        &format!("tripletex/disable/{}", product["id"]),
        Value::Null,
    );
    let told = |kind: &str| {
        env.audit_lines()
            .into_iter()
            .filter(|l| l["params"]["type"] == kind)
            .map(|l| l["params"].clone())
            .collect::<Vec<_>>()
    };
    // Both are told, each through its own job: the two may be written in
    // either order.
    assert!(
        eventually(30, || !told("switchyard.subscription.reenabled").is_empty()
            && !told("switchyard.subscription.disabled").is_empty()),
        "not told of both; logs:\n{}",
        daemon.logs()
    );
    let disabled = told("switchyard.subscription.disabled");
    assert_eq!(disabled[0]["data"]["status"], "DISABLED_TOO_MANY_ERRORS");
    assert_eq!(disabled[0]["data"]["id"], product["id"].to_string());
    assert_eq!(disabled[0]["data"]["events"], json!(["product.create"]));
    let again = &told("switchyard.subscription.reenabled")[0];
    assert_eq!(again["data"]["status"], "ACTIVE");
    let state = control(&f, "GET", "state", Value::Null);
    let now = state["tripletex"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == product["id"])
        .unwrap();
    assert_eq!(now["status"], "ACTIVE");
    // Switched on with its callback's credentials intact.
    assert_eq!(now["authHeaderValue"], CALLBACK);

    // Tripletex delivers again, with the configured auth header: accepted.
    let sent = control(
        &f,
        "POST",
        &format!("tripletex/deliver/{}", product["id"]),
        json!({"id": 4242, "value": {"id": 4242, "version": 1, "name": "Widget"}}),
    );
    assert_eq!(sent["status"], 200, "{sent}");
    assert!(eventually(20, || !told("tripletex.product.create").is_empty()));
    assert_eq!(told("tripletex.product.create")[0]["data"]["id"], 4242);
    // Told once, though the watcher looked again since.
    let checks = scrape_checks(&daemon);
    assert!(eventually(10, || scrape_checks(&daemon) >= checks + 2.0));
    assert_eq!(told("switchyard.subscription.disabled").len(), 1);
    assert_eq!(told("switchyard.subscription.reenabled").len(), 1);
    let samples = scrape(&daemon);
    assert_eq!(
        value(
            &samples,
            "switchyard_subscriptions_reenabled_total",
            &[("source", "tripletex")]
        ),
        1.0
    );
    assert!(!daemon.logs().contains("tx-callback-s3cret"));
    assert!(!daemon.logs().contains("employee-token"));
}

fn scrape_checks(daemon: &Daemon) -> f64 {
    value(
        &scrape(daemon),
        "switchyard_subscription_checks_total",
        &[("source", "tripletex"), ("outcome", "ok")],
    )
}

#[test]
fn the_dashboard_and_the_admin_api_check_and_apply_them() {
    use crate::dashboard::{csrf, get, post, sign_in, READ_ONLY, TOKEN};
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    let config = env.config(&format!(
        "public_url = \"https://hooks.example.com\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nread_only_token = \"{READ_ONLY}\"\n{}",
        sources(&f, "")
    ));
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    let api = |method: &str, path: &str| -> Value {
        let c = reqwest::blocking::Client::new();
        let url = format!("{base}{path}");
        let r = match method {
            "GET" => c.get(url),
            _ => c.post(url),
        }
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().unwrap()
    };
    let listed = api("GET", "/v1/subscriptions");
    assert_eq!(listed["sources"].as_array().unwrap().len(), 3, "{listed}");
    assert!(listed["sources"][0]["last_check"].is_null(), "{listed}");

    // Read-only may check (it changes nothing), not apply.
    let viewer = sign_in(&base, READ_ONLY);
    let (_, page, _) = get(&base, "/ui/subscriptions", Some(&viewer));
    assert!(page.contains("not checked yet"), "{page}");
    assert!(
        !page.contains("/ui/subscriptions/tripletex/apply"),
        "{page}"
    );
    let token = csrf(&page);
    let (status, body) = post(
        &base,
        "/ui/subscriptions/tripletex/check",
        Some(&viewer),
        &[("csrf", &token)],
    );
    assert_eq!(status, 303, "{body}");
    let (status, _) = post(
        &base,
        "/ui/subscriptions/tripletex/apply",
        Some(&viewer),
        &[("csrf", &token)],
    );
    assert_eq!(status, 403);
    post(
        &base,
        "/ui/subscriptions/tight/check",
        Some(&viewer),
        &[("csrf", &token)],
    );
    let (_, page, _) = get(&base, "/ui/subscriptions", Some(&viewer));
    assert!(
        page.contains("step-create\">create</span> order.update"),
        "{page}"
    );
    assert!(
        page.contains("step-create\">create</span> product.create"),
        "{page}"
    );
    assert!(page.contains("<strong>2 to change</strong>"), "{page}");
    assert!(
        page.contains("Not managed here: Tight webhooks are set up by Tight&#39;s API team"),
        "{page}"
    );
    assert!(changes(&f).is_empty(), "{:?}", changes(&f));

    // The admin applies; the page then shows them as declared.
    let admin = sign_in(&base, TOKEN);
    let (_, page, _) = get(&base, "/ui/subscriptions", Some(&admin));
    let (status, body) = post(
        &base,
        "/ui/subscriptions/tripletex/apply",
        Some(&admin),
        &[("csrf", &csrf(&page))],
    );
    assert_eq!(status, 303, "{body}");
    let (_, page, _) = get(&base, "/ui/subscriptions?applied=tripletex", Some(&admin));
    assert!(page.contains("Applied tripletex"), "{page}");
    assert!(
        page.contains("step-keep\">keep</span> order.update"),
        "{page}"
    );
    assert!(page.contains("As declared."), "{page}");
    let state = control(&f, "GET", "state", Value::Null);
    assert_eq!(state["tripletex"].as_array().unwrap().len(), 2, "{state}");
    assert!(daemon.logged("dashboard: subscriptions applied"));

    // The admin API: the same check, as JSON.
    let check = api("POST", "/v1/subscriptions/tripletex/check");
    assert_eq!(check["changes"], 0, "{check}");
    assert_eq!(
        check["target_url"],
        "https://hooks.example.com/hooks/tripletex"
    );
    assert_eq!(check["lines"][0]["verb"], "keep", "{check}");
    let teal = api("POST", "/v1/subscriptions/teal/apply");
    assert_eq!(teal["applied"], true, "{teal}");
    assert_eq!(teal["changes"], 0, "{teal}");
    assert_eq!(
        control(&f, "GET", "state", Value::Null)["teal"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    never_a_secret(&daemon.logs());
}

/// Every credential these tests' sources send their providers, in the
/// forms a provider's error body could echo: as sent, in a session's query
/// (percent-encoded), and a session's Basic value (`base64("0:sess-…")`
/// starts `MDpzZXNz`).
fn never_a_credential(out: &str) {
    never_a_secret(out);
    for c in ["consumer-token", "MDpzZXNz", "teal-api-key"] {
        assert!(!out.contains(c), "{c} shown:\n{out}");
    }
}

#[test]
fn an_echoing_hanging_or_half_moving_provider_is_said_plainly_and_shows_no_credential() {
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    let fault = |method: &str, path: &str, extra: Value| {
        let mut body = json!({"method": method, "path": path});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        control(&f, "POST", "fault", body);
    };
    let text = sources(&f, "").replace(
        "plugin = \"teal\"",
        "plugin = \"teal\"\napi_timeout = \"1s\"",
    );
    let config = env.config(&format!(
        "public_url = \"https://hooks.example.com\"\n{text}"
    ));

    // Error bodies that echo what they were sent: Teal's key; Tripletex's
    // consumer and employee tokens (the session's query), then the
    // session's token and its Basic value.
    fault(
        "GET",
        "/teal/webhooks",
        json!({"status": 500, "echo": true}),
    );
    let (code, out) = cli(&["subscriptions", "plan", "teal"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Teal API: GET /webhooks answered 500"),
        "{out}"
    );
    assert!(out.contains("[redacted]"), "{out}");
    never_a_credential(&out);
    fault(
        "PUT",
        "/tripletex/v2/token/session",
        json!({"status": 401, "echo": true}),
    );
    let (code, out) = cli(&["subscriptions", "plan", "tripletex"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PUT /token/session/:create answered 401"),
        "{out}"
    );
    assert!(out.contains("consumerToken=[redacted]"), "{out}");
    never_a_credential(&out);
    fault(
        "GET",
        "/tripletex/v2/event/subscription",
        json!({"status": 500, "echo": true}),
    );
    let (code, out) = cli(&["subscriptions", "list", "tripletex"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("GET /event/subscription answered 500"),
        "{out}"
    );
    assert!(out.contains("Basic [redacted]"), "{out}");
    never_a_credential(&out);
    // The fake did echo them: the scrubbing above is what hid them.
    let echoed = f.lines().into_iter().filter(|l| l["fault"] == true).count();
    assert_eq!(echoed, 3, "{:?}", f.lines());

    // A provider that takes the connection and never answers.
    fault("GET", "/teal/webhooks", json!({"hang": 5}));
    let (code, out) = cli(&["subscriptions", "plan", "teal"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot plan: Teal API: GET /webhooks: timed out after 1 s"),
        "{out}"
    );

    // A move whose delete fails: what was made is named, and counted.
    let (code, out) = cli(&["subscriptions", "apply", "teal"], &config);
    assert_eq!(code, 0, "{out}");
    let old = control(&f, "GET", "state", Value::Null)["teal"][0]["webhook_id"]
        .as_str()
        .unwrap()
        .to_string();
    fault("DELETE", "/teal/webhooks/", json!({"status": 500}));
    let moved = env.config(&format!("public_url = \"https://new.example.com\"\n{text}"));
    let (code, out) = cli(&["subscriptions", "apply", "teal"], &moved);
    assert_eq!(code, 1, "{out}");
    let state = control(&f, "GET", "state", Value::Null);
    let teal = state["teal"].as_array().unwrap();
    assert_eq!(teal.len(), 2, "{state}");
    let new = teal
        .iter()
        .find(|w| w["url"] == "https://new.example.com/hooks/teal")
        .unwrap()["webhook_id"]
        .as_str()
        .unwrap();
    assert!(
        out.contains(&format!(
            "HALF     move     user-bank-statement-submitted,user-payroll-submitted (id {old}): \
             https://hooks.example.com/hooks/teal -> https://new.example.com/hooks/teal: \
             created {new} for the new target; deleting {old} failed: Teal API: DELETE /webhooks/{old} answered 500"
        )),
        "{out}"
    );
    assert!(
        out.contains("both deliver until the next apply deletes"),
        "{out}"
    );
    assert!(out.contains("0 changed, 1 half done, 0 failed"), "{out}");
    // The next apply finishes it.
    let (code, out) = cli(&["subscriptions", "apply", "teal"], &moved);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "delete   user-bank-statement-submitted,user-payroll-submitted (id {old})"
        )),
        "{out}"
    );
    let state = control(&f, "GET", "state", Value::Null);
    assert_eq!(state["teal"].as_array().unwrap().len(), 1, "{state}");
}

#[test]
fn the_watcher_and_the_dashboard_show_no_credential_a_provider_echoes() {
    use crate::dashboard::{get, sign_in, TOKEN};
    let env = Env::new();
    with_plugins(&env);
    let f = fake(env.dir.path());
    control(
        &f,
        "POST",
        "fault",
        json!({"method": "GET", "path": "/teal/webhooks", "status": 500, "echo": true, "times": 1000}),
    );
    let text = sources(&f, "").replace("plugin = \"teal\"", "plugin = \"teal\"\nwatch = \"1s\"");
    let config = env.config(&format!(
        "public_url = \"https://hooks.example.com\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{text}"
    ));
    let daemon = Daemon::start(&config);
    assert!(daemon.logged("cannot check the provider's subscriptions"));
    let base = format!("http://{}", daemon.admin_addr());
    let admin = sign_in(&base, TOKEN);
    let (_, page, _) = get(&base, "/ui/subscriptions", Some(&admin));
    assert!(page.contains("answered 500"), "{page}");
    never_a_credential(&page);
    let listed: Value = reqwest::blocking::Client::new()
        .get(format!("{base}/v1/subscriptions"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = listed.to_string();
    assert!(text.contains("answered 500"), "{text}");
    never_a_credential(&text);
    never_a_credential(&daemon.logs());
}
