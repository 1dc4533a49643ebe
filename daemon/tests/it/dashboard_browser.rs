//! The dashboard in a real browser (`browser.rs`): sign in, watch a webhook
//! sent by `switchyard send` arrive in the live tail, find an event by a
//! payload field, open it, replay it, redrive a dead letter — with every
//! page loading only from the daemon and its CSP holding.

use crate::browser::Browser;
use crate::common::*;

const TOKEN: &str = "admin-token-0123456789abcdef";

#[test]
fn a_user_works_the_dashboard_in_a_browser() {
    let Some(b) = Browser::start() else { return };
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId });
if event.data.eventData.entityId == "inv_mail" { action("notify", #{}); }"#,
    );
    let fixed = env.path("data/fixed");
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[delivery]
retry_schedule = []

{TIGHT_SOURCE}
[actions.audit]
plugin = "file"
path = "{}"

[actions.notify]
plugin = "exec"
shell = "test -e '{}' || {{ echo mail server said no >&2; exit 3; }}"
"#,
        env.audit_path().display(),
        fixed.display()
    ));
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());

    // Signing in: a page asked for without a session leads to sign-in.
    b.goto(&format!("{base}/ui/events"));
    assert!(b.url().ends_with("/ui/sign-in"), "{}", b.url());
    b.screenshot("sign-in");
    b.check_page(&base);
    b.type_into("input[name=token]", TOKEN);
    b.click("form button[type=submit]");
    b.find("div.tiles");
    assert!(b.url().ends_with("/ui/overview"), "{}", b.url());

    // The live tail shows a webhook sent by `switchyard send`.
    b.goto(&format!("{base}/ui/tail"));
    b.wait_text("#tail-status", "live");
    let to = daemon.url("/hooks/tight");
    let (code, out) = cli(&["send", "tight", "invoiceViewed", "--to", &to], &config);
    assert_eq!(code, 0, "{out}");
    b.wait_text("#tail-rows", "tight.invoiceViewed");
    b.check_page(&base);
    b.screenshot("live-tail");

    // Found by a field of its payload, among others.
    let wanted = daemon.send_viewed("inv_browser");
    daemon.send_viewed("inv_other");
    let mailed = daemon.send_viewed("inv_mail");
    assert!(eventually(20, || env.audit_lines().len() >= 4));
    b.goto(&format!("{base}/ui/events"));
    b.type_into("input[name=field]", "data.eventData.entityId=inv_browser");
    b.click("form.filters button[type=submit]");
    b.wait_text("table.events", &wanted);
    let links = b.find_all("table.events a[href^='/ui/events/']");
    assert_eq!(links.len(), 1, "{}", b.text("table.events"));
    assert!(
        b.url()
            .contains("field=data.eventData.entityId%3Dinv_browser"),
        "{}",
        b.url()
    );
    b.check_page(&base);
    b.screenshot("events");

    // Its detail, and a replay: the action runs again.
    b.click("table.events a[href^='/ui/events/']");
    b.wait_text("h1", &wanted);
    b.wait_text("main", "inv_browser");
    b.check_page(&base);
    b.screenshot("event");
    let before = env.audit_lines().len();
    b.click("form[action$='/replay'] button");
    b.wait_text("p.notice", "Replayed");
    assert!(eventually(20, || env.audit_lines().len() == before + 1));

    // The email that was not sent: a dead letter, redriven once fixed.
    b.goto(&format!("{base}/ui/dead-letters"));
    b.wait_text("main", "mail server said no");
    b.check_page(&base);
    b.screenshot("dead-letters");
    std::fs::write(&fixed, "").unwrap();
    b.click("form[action='/ui/dead-letters/redrive-matching'] button");
    b.wait_text("p.notice", "Done: 1 of 1 sent back");
    b.check_page(&base);
    b.goto(&format!("{base}/ui/events/{mailed}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !b.text("main").contains("notify done") {
        assert!(std::time::Instant::now() < deadline, "{}", b.text("main"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        b.goto(&format!("{base}/ui/events/{mailed}"));
    }
    b.check_page(&base);
    assert!(daemon.logs().contains("dashboard: dead letters redriven"));

    // The playground: the live rule's text, edited, run on the stored event.
    b.goto(&format!("{base}/ui/events/{wanted}"));
    b.click("a[href^='/ui/rules/playground']");
    b.type_into("input[name=rule]", "viewed");
    // A misspelt field is pointed at as it is typed.
    b.type_into(
        "textarea[name=text]",
        "const EVENTS = [\"tight.invoiceViewed\"];\n\
         action(\"notify\", #{ invoice: event.data.eventData.entityid });",
    );
    b.wait_text("#checks", "2:51: reads event.data.eventData.entityid; tight.invoiceViewed's data.eventData has entityId");
    b.type_into(
        "textarea[name=text]",
        "const EVENTS = [\"tight.invoiceViewed\"];\n\
         action(\"notify\", #{ to: \"owner@example.com\", invoice: event.data.eventData.entityId });",
    );
    b.click("form.playground button:not(#save)");
    b.wait_text("#edited", "owner@example.com");
    b.wait_text("#edited", "inv_browser");
    b.wait_text("#live", "audit");
    b.check_page(&base);
    b.screenshot("playground");
    let done = env.audit_lines().len();

    // A provider signing with another secret: the rejections page says so.
    let body = invoice_viewed("inv_rotated");
    let forged = pyjwt("another-secret-0123456789abcdef", body.as_bytes(), &[]);
    let (status, _) = daemon.post("/hooks/tight", &[("Tight-Verification", &forged)], body);
    assert_eq!(status, 401);
    b.goto(&format!("{base}/ui/rejections"));
    b.wait_text("table.rejections", "unauthenticated");
    b.check_page(&base);
    b.screenshot("rejections");

    // The overview: the last hour's webhooks, the rejected one among them.
    b.goto(&format!("{base}/ui/overview"));
    b.wait_text("main", "1 rejected");
    b.find("svg rect.accepted");
    b.check_page(&base);
    b.screenshot("overview");

    // Actions, and the rules.
    b.goto(&format!("{base}/ui/actions"));
    b.wait_text("table.actions", "notify");
    b.check_page(&base);
    b.screenshot("actions");
    b.goto(&format!("{base}/ui/rules"));
    b.wait_text("table.rules", "viewed");
    b.check_page(&base);
    b.goto(&format!("{base}/ui/subscriptions"));
    b.wait_text("table.subscriptions", "not checked yet");
    b.check_page(&base);
    // The event types, and one of them with its schema.
    b.goto(&format!("{base}/ui/types"));
    b.wait_text("table.types", "tight.invoiceViewed");
    b.check_page(&base);
    b.click("a[href='/ui/types/tight/tight.invoiceViewed']");
    b.wait_text("main", "eventData");
    b.check_page(&base);
    b.screenshot("types");
    assert_eq!(env.audit_lines().len(), done, "the playground did nothing");
}
