//! The dashboard over HTTP: sign-in, sessions, CSRF, the read-only token,
//! and what its pages show and do (a real browser drives it in the
//! browser tests).

use reqwest::blocking::Client;
use reqwest::redirect::Policy;

use crate::common::*;

pub const TOKEN: &str = "admin-token-0123456789abcdef";
pub const READ_ONLY: &str = "read-only-token-0123456789ab";

fn client() -> Client {
    tls_provider();
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in with `token`: the session cookie (`name=value`).
pub fn sign_in(base: &str, token: &str) -> String {
    let resp = client()
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/ui/overview");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

pub fn get(
    base: &str,
    path: &str,
    cookie: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = client().get(format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.text().unwrap(), headers)
}

pub fn post(base: &str, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> (u16, String) {
    let mut req = client().post(format!("{base}{path}")).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The CSRF token in a page's forms.
pub fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_string()
}

#[test]
fn the_dashboard_signs_in_shows_events_and_replays_only_for_the_admin() {
    let env = Env::new();
    let config = env.standard_with(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = { env = \"ADMIN_TOKEN\" }\nread_only_token = { env = \"READ_TOKEN\" }\n",
        "",
    );
    let daemon = Daemon::start_with_env(
        &config,
        &[("ADMIN_TOKEN", TOKEN), ("READ_TOKEN", READ_ONLY)],
    );
    let base = format!("http://{}", daemon.admin_addr());
    let id = daemon.send_viewed("inv_dash");
    assert_eq!(env.wait_audit(1).len(), 1);

    // Without a session: pages send to sign-in, POSTs are refused; the
    // sign-in page and the stylesheet are served, under the CSP.
    for path in ["/ui/events", &format!("/ui/events/{id}"), "/ui"] {
        let (status, _, headers) = get(&base, path, None);
        let to = headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        assert!(
            status == 303 && to.as_deref() == Some("/ui/sign-in") || path == "/ui",
            "{path}: {status}"
        );
    }
    let (status, _, headers) = get(&base, "/ui/events", Some("switchyard_session=forged"));
    assert_eq!(
        (status, &headers["location"]),
        (303, &"/ui/sign-in".parse().unwrap())
    );
    for path in [format!("/ui/events/{id}/replay"), "/ui/sign-out".into()] {
        assert_eq!(post(&base, &path, None, &[("csrf", "x")]).0, 401, "{path}");
    }
    let (status, html, headers) = get(&base, "/ui/sign-in", None);
    assert_eq!(status, 200);
    assert!(html.contains("name=\"token\""));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(get(&base, "/ui/static/app.css", None).0, 200);
    // A wrong token: 401, no cookie.
    let resp = client()
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", "wrong-token-0123456789abcdef")])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().unwrap().contains("not a token"));

    // The admin: the event listed and shown, replayed with the form's token.
    let admin = sign_in(&base, TOKEN);
    let (status, html, headers) = get(&base, "/ui/events?source=tight", Some(&admin));
    assert_eq!(status, 200);
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(html.contains(&id), "{html}");
    assert!(html.contains("admin token"));
    let (_, html, _) = get(&base, "/ui/events?type=nothing.*", Some(&admin));
    assert!(!html.contains(&id) && html.contains("No events match"));
    let (_, html, _) = get(&base, "/ui/events?since=yesterday", Some(&admin));
    assert!(
        html.contains("since: &#34;yesterday&#34; is neither"),
        "{html}"
    );
    let (status, html, _) = get(&base, &format!("/ui/events/{id}"), Some(&admin));
    assert_eq!(status, 200);
    for shown in ["inv_dash", "tight.invoiceViewed", "audit", "done", "Replay"] {
        assert!(html.contains(shown), "{shown} not in the page");
    }
    assert!(
        !html.contains(SECRET),
        "the request's credentials are redacted"
    );
    let token = csrf(&html);
    assert_eq!(
        post(&base, &format!("/ui/events/{id}/replay"), Some(&admin), &[]).0,
        403
    );
    assert_eq!(
        post(
            &base,
            &format!("/ui/events/{id}/replay"),
            Some(&admin),
            &[("csrf", &"0".repeat(64))]
        )
        .0,
        403
    );
    let (status, _) = post(
        &base,
        &format!("/ui/events/{id}/replay"),
        Some(&admin),
        &[("csrf", &token)],
    );
    assert_eq!(status, 303);
    assert_eq!(
        env.wait_audit(2).len(),
        2,
        "the replay ran the action again"
    );
    let (_, html, _) = get(&base, &format!("/ui/events/{id}?replayed"), Some(&admin));
    assert!(html.contains("Replayed"));

    // The read-only token looks, and cannot replay.
    let reader = sign_in(&base, READ_ONLY);
    let (status, html, _) = get(&base, &format!("/ui/events/{id}"), Some(&reader));
    assert_eq!(status, 200);
    assert!(html.contains("read-only token") && !html.contains("Replay through"));
    let (status, body) = post(
        &base,
        &format!("/ui/events/{id}/replay"),
        Some(&reader),
        &[("csrf", &csrf(&html))],
    );
    assert_eq!(
        (status, body.as_str()),
        (403, "the read-only token cannot replay")
    );

    // Signing out ends the session.
    let (_, html, _) = get(&base, "/ui/events", Some(&admin));
    assert_eq!(
        post(
            &base,
            "/ui/sign-out",
            Some(&admin),
            &[("csrf", &csrf(&html))]
        )
        .0,
        303
    );
    assert_eq!(get(&base, "/ui/events", Some(&admin)).0, 303);
    let logs = daemon.logs();
    assert!(
        logs.contains("dashboard: event replayed") && logs.contains("admin token"),
        "{logs}"
    );
}

#[test]
fn dead_letters_are_grouped_and_redriven_from_the_dashboard() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("notify", #{});"#,
    );
    let fixed = env.path("data/fixed");
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
read_only_token = "{READ_ONLY}"

[delivery]
retry_schedule = []

{TIGHT_SOURCE}
[actions.notify]
plugin = "exec"
shell = "test -e '{}' || {{ echo mail server said no >&2; exit 3; }}"
"#,
        fixed.display()
    ));
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    for i in 0..3 {
        daemon.send_viewed(&format!("inv_dl_{i}"));
    }
    let admin = sign_in(&base, TOKEN);
    let mut html = String::new();
    assert!(
        eventually(20, || {
            html = get(&base, "/ui/dead-letters", Some(&admin)).1;
            html.contains("Redrive all 3")
        }),
        "{html}"
    );
    assert!(
        html.contains("notify · 3 jobs") && html.contains("mail server said no"),
        "{html}"
    );
    // The read-only token sees them, and cannot redrive.
    let reader = sign_in(&base, READ_ONLY);
    let (_, seen, _) = get(&base, "/ui/dead-letters", Some(&reader));
    assert!(seen.contains("notify · 3 jobs") && !seen.contains("Redrive all"));
    let (status, _) = post(
        &base,
        "/ui/dead-letters/redrive",
        Some(&reader),
        &[("csrf", &csrf(&seen)), ("ids", "x")],
    );
    assert_eq!(status, 403);
    // Fixed: the group goes back to the queue and is done.
    std::fs::write(&fixed, "").unwrap();
    let at = html.find("name=\"ids\" value=\"").unwrap() + 18;
    let ids = html[at..].split('"').next().unwrap().to_string();
    assert_eq!(ids.split(',').count(), 3);
    let (status, _) = post(
        &base,
        "/ui/dead-letters/redrive",
        Some(&admin),
        &[("csrf", &csrf(&html)), ("ids", &ids)],
    );
    assert_eq!(status, 303);
    let events: Vec<String> = html
        .split("href=\"/ui/events/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 3, "{html}");
    let done = |id: &String| {
        get(&base, &format!("/ui/events/{id}"), Some(&admin))
            .1
            .contains("<span class=\"state done\">done</span>")
    };
    assert!(
        eventually(20, || events.iter().all(done)),
        "{}",
        daemon.logs()
    );
    assert!(get(&base, "/ui/dead-letters", Some(&admin))
        .1
        .contains("No dead letters"));
    let (_, shown, _) = get(&base, "/ui/dead-letters?redriven=3", Some(&admin));
    assert!(shown.contains("3 sent back to the queue"));
    assert!(daemon.logs().contains("dashboard: dead letters redriven"));
}

/// Every page the dashboard serves but sign-in and its static files, and
/// every form it posts to.
const PAGES: &[&str] = &[
    "/ui/overview",
    "/ui/events",
    "/ui/events?field=data.x=1",
    "/ui/events/01J00000000000000000000000",
    "/ui/tail",
    "/ui/rejections",
    "/ui/actions",
    "/ui/rules",
    "/ui/rules/playground",
    "/ui/dead-letters",
    "/ui/dead-letters/progress/01J00000000000000000000000",
    "/ui/subscriptions",
];
const STREAMS: &[&str] = &["/ui/tail/stream"];
const POSTS: &[&str] = &[
    "/ui/events/01J00000000000000000000000/replay",
    "/ui/dead-letters/redrive",
    "/ui/dead-letters/redrive-matching",
    "/ui/actions/audit/pause",
    "/ui/actions/audit/enable",
    "/ui/rules/playground",
    "/ui/rules/save",
    "/ui/subscriptions/tight/check",
    "/ui/subscriptions/tight/apply",
    "/ui/sign-out",
];

#[test]
fn nothing_is_served_or_done_without_a_session_and_its_csrf_token() {
    let env = Env::new();
    let config = env.standard_with(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        "",
    );
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    let forged = "switchyard_session=0123456789abcdef0123456789abcdef";
    for cookie in [None, Some(forged)] {
        for path in PAGES {
            let (status, body, headers) = get(&base, path, cookie);
            assert_eq!(
                (status, headers.get("location").map(|l| l.to_str().unwrap())),
                (303, Some("/ui/sign-in")),
                "{path}: {body}"
            );
        }
        for path in STREAMS {
            assert_eq!(get(&base, path, cookie).0, 401, "{path}");
        }
        for path in POSTS {
            assert_eq!(post(&base, path, cookie, &[("csrf", "x")]).0, 401, "{path}");
        }
    }
    // Signed in: every page answers; a POST without the session's CSRF
    // token is refused, whatever it asks.
    let admin = sign_in(&base, TOKEN);
    for path in PAGES {
        let (status, _, headers) = get(&base, path, Some(&admin));
        assert!(status == 200 || status == 404, "{path}: {status}");
        assert!(headers.contains_key("content-security-policy"), "{path}");
    }
    for path in POSTS {
        assert_eq!(post(&base, path, Some(&admin), &[]).0, 403, "{path}");
        assert_eq!(
            post(&base, path, Some(&admin), &[("csrf", &"a".repeat(64))]).0,
            403,
            "{path}"
        );
    }
    // The live tail: an event stream, starting with what is stored.
    let id = daemon.send_viewed("inv_stream");
    let mut resp = client()
        .get(format!("{base}/ui/tail/stream?source=tight"))
        .header("cookie", &admin)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains(&id) {
        use std::io::Read;
        let n = resp.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(
        seen.contains("event:event") || seen.contains("event: event"),
        "{seen}"
    );
}

#[test]
fn refused_webhooks_are_shown_redacted_and_bounded() {
    let env = Env::new();
    let config = env.standard_with(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        "",
    );
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    // A provider signing with a rotated secret (PyJWT, another key), with
    // a credential header; and one correct delivery after it.
    let body = invoice_viewed("inv_rotated");
    let forged = pyjwt("a-rotated-secret-0123456789", body.as_bytes(), &[]);
    let (status, _) = daemon.post(
        "/hooks/tight",
        &[
            ("Tight-Verification", &forged),
            ("Authorization", "Bearer sk_live_do_not_show"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        body,
    );
    assert_eq!(status, 401);
    let (status, _) = daemon.post("/hooks/nowhere", &[], "{}");
    assert_eq!(status, 404);
    daemon.send_viewed("inv_fine");

    let admin = sign_in(&base, TOKEN);
    let (status, html, _) = get(&base, "/ui/rejections", Some(&admin));
    assert_eq!(status, 200);
    for shown in [
        "tight",
        "401",
        "unauthenticated",
        "inv_rotated",
        "tight-verification",
        "authorization",
        "[redacted]",
        "nowhere",
        "404",
        "unknown_source",
    ] {
        assert!(html.contains(shown), "{shown} not shown: {html}");
    }
    assert!(!html.contains("sk_live_do_not_show"), "{html}");
    assert!(
        !html.contains("inv_fine"),
        "an accepted webhook is not a rejection"
    );
    let (_, only, _) = get(&base, "/ui/rejections?source=nowhere", Some(&admin));
    assert!(only.contains("unknown_source") && !only.contains("inv_rotated"));

    // A flood of forgeries: the page keeps the newest 200, and the
    // service goes on taking correct deliveries.
    for i in 0..230 {
        let (status, _) = daemon.post(
            "/hooks/tight",
            &[("Tight-Verification", "forged.forged.forged")],
            format!("{{\"n\": {i}}}"),
        );
        assert_eq!(status, 401);
    }
    daemon.send_viewed("inv_after_flood");
    let (_, html, _) = get(&base, "/ui/rejections?source=tight", Some(&admin));
    assert_eq!(html.matches("<details>").count(), 200);
    assert!(html.contains("{&#34;n&#34;: 229}") && !html.contains("inv_rotated"));
}

#[test]
fn an_action_paused_from_the_dashboard_holds_its_jobs_until_resumed() {
    let env = Env::new();
    let config = env.standard_with(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nread_only_token = \"{READ_ONLY}\"\n"),
        "",
    );
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    let admin = sign_in(&base, TOKEN);
    daemon.send_viewed("inv_before");
    assert_eq!(env.wait_audit(1).len(), 1);
    let (_, html, _) = get(&base, "/ui/actions", Some(&admin));
    assert!(
        html.contains("gate-closed") && html.contains(">1</td><td>0</td><td>0%"),
        "{html}"
    );

    // The read-only token sees, and cannot pause.
    let reader = sign_in(&base, READ_ONLY);
    let (_, seen, _) = get(&base, "/ui/actions", Some(&reader));
    assert!(!seen.contains("Pause"));
    let (status, _) = post(
        &base,
        "/ui/actions/audit/pause",
        Some(&reader),
        &[("csrf", &csrf(&seen))],
    );
    assert_eq!(status, 403);
    assert_eq!(
        post(&base, "/ui/actions/audit/pause", None, &[("csrf", "x")]).0,
        401
    );

    let (status, _) = post(
        &base,
        "/ui/actions/audit/pause",
        Some(&admin),
        &[("csrf", &csrf(&html))],
    );
    assert_eq!(status, 303);
    let (_, html, _) = get(&base, "/ui/actions?paused=audit", Some(&admin));
    assert!(
        html.contains("gate-paused") && html.contains("paused by the admin token"),
        "{html}"
    );
    assert!(html.contains("Resume"));
    // While paused: the event is routed and its job waits.
    let held = daemon.send_viewed("inv_held");
    assert!(eventually(20, || {
        get(&base, &format!("/ui/events/{held}"), Some(&admin))
            .1
            .contains("<span class=\"state pending\">pending</span>")
    }));
    let (_, listed) = cli(&["actions", "list"], &config);
    assert!(listed.contains("paused"), "{listed}");
    assert_eq!(env.audit_lines().len(), 1, "a paused action ran");

    let (status, _) = post(
        &base,
        "/ui/actions/audit/enable",
        Some(&admin),
        &[("csrf", &csrf(&html))],
    );
    assert_eq!(status, 303);
    assert_eq!(env.wait_audit(2).len(), 2);
    assert_eq!(env.audit_lines()[1]["event_id"], held.as_str());
    assert!(daemon.logs().contains("dashboard: action paused"));
    assert!(get(&base, "/ui/actions", Some(&admin))
        .1
        .contains("gate-closed"));
}

#[test]
fn the_playground_runs_an_edited_rule_beside_the_live_ones_and_saves_it() {
    let env = Env::new();
    let config = env.standard_with(
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nread_only_token = \"{READ_ONLY}\"\n"),
        "",
    );
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    let id = daemon.send_viewed("inv_play");
    assert_eq!(env.wait_audit(1).len(), 1);
    let admin = sign_in(&base, TOKEN);

    // The rules page: the live rule, and a file broken since, at its line.
    env.rule("broken", "const EVENTS = [\"tight.*\"];\nlet x = ;\n");
    let mut html = String::new();
    assert!(
        eventually(20, || {
            html = get(&base, "/ui/rules", Some(&admin)).1;
            html.contains("broken.rhai:2:")
        }),
        "{html}"
    );
    assert!(html.contains("viewed") && html.contains("tight.invoiceViewed"));

    // The live rule's text, on the stored event.
    let (_, html, _) = get(
        &base,
        &format!("/ui/rules/playground?rule=viewed&event={id}"),
        Some(&admin),
    );
    assert!(html.contains("action(&#34;audit&#34;"), "{html}");
    let edited = r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, tried: "in the playground" });
action("nowhere", #{});"#;
    let run = |cookie: &str, csrf: &str, from: &[(&str, &str)]| {
        let mut form = vec![("csrf", csrf), ("rule", "viewed"), ("text", edited)];
        form.extend_from_slice(from);
        post(&base, "/ui/rules/playground", Some(cookie), &form)
    };
    let token = csrf(&html);
    let (status, out) = run(&admin, &token, &[("from", "stored"), ("event", &id)]);
    assert_eq!(status, 200, "{out}");
    let (edited_side, live_side) = out.split_once("id=\"live\"").unwrap();
    assert!(
        edited_side.contains("in the playground")
            && edited_side.contains("no such action in the config")
    );
    assert!(live_side.contains("inv_play") && !live_side.contains("in the playground"));
    // A provider's sample, and a typed-in event; a rule that does not compile.
    let (_, out) = run(
        &admin,
        &token,
        &[
            ("from", "sample"),
            ("source", "tight"),
            ("sample", "invoiceViewed"),
        ],
    );
    assert!(out.contains("in the playground"), "{out}");
    let (_, out) = run(
        &admin,
        &token,
        &[
            ("from", "json"),
            ("json", r#"{"type": "tight.other", "data": {}}"#),
        ],
    );
    assert!(out.contains("do not match"), "{out}");
    let (_, out) = post(
        &base,
        "/ui/rules/playground",
        Some(&admin),
        &[
            ("csrf", &token),
            ("rule", "x"),
            ("text", "let = 1"),
            ("from", "stored"),
            ("event", &id),
        ],
    );
    assert!(out.contains("x.rhai:1:"), "{out}");
    // No side effect: nothing more was done.
    assert_eq!(env.audit_lines().len(), 1);
    assert_eq!(
        post(
            &base,
            "/ui/rules/playground",
            Some(&admin),
            &[("rule", "viewed")]
        )
        .0,
        403
    );

    // Saving: not for the read-only token, not for text that does not compile.
    let reader = sign_in(&base, READ_ONLY);
    let page = get(&base, "/ui/rules/playground", Some(&reader)).1;
    assert!(!page.contains("Save as"));
    let (status, out) = run(&reader, &csrf(&page), &[("from", "stored"), ("event", &id)]);
    assert_eq!(status, 200, "the read-only token may run: {out}");
    let save = |cookie: &str, csrf: &str, name: &str, text: &str| {
        post(
            &base,
            "/ui/rules/save",
            Some(cookie),
            &[("csrf", csrf), ("rule", name), ("text", text)],
        )
    };
    assert_eq!(save(&reader, &csrf(&page), "viewed", edited).0, 403);
    let (status, out) = save(&admin, &token, "viewed", "let = 1");
    assert_eq!(status, 422);
    assert!(out.contains("not saved"), "{out}");
    assert_eq!(save(&admin, &token, "../escape", edited).0, 422);
    let fixed = r#"const EVENTS = ["tight.invoiceViewed"];
action("audit", #{ invoice: event.data.eventData.entityId, tried: "saved" });"#;
    assert_eq!(save(&admin, &token, "viewed", fixed).0, 303);
    assert!(get(&base, "/ui/rules?saved=viewed", Some(&admin))
        .1
        .contains("viewed.rhai saved"));
    daemon.send_viewed("inv_after_save");
    let lines = env.wait_audit(2);
    assert_eq!(lines[1]["params"]["tried"], "saved", "{lines:?}");
    assert!(daemon.logs().contains("dashboard: rule saved"));

    // A rule that fails in the playground is shown to whoever ran it, not
    // logged as a live rule's failure; the same failure live is.
    let (_, out) = post(
        &base,
        "/ui/rules/playground",
        Some(&admin),
        &[
            ("csrf", &token),
            ("rule", "viewed"),
            (
                "text",
                "const EVENTS = [\"tight.*\"];\nthrow \"boom in the playground\";",
            ),
            ("from", "stored"),
            ("event", &id),
        ],
    );
    assert!(out.contains("boom in the playground"), "{out}");
    env.rule(
        "failing",
        "const EVENTS = [\"tight.*\"];\nthrow \"boom live\";",
    );
    assert!(eventually(20, || {
        daemon.send_viewed("inv_failing");
        eventually(1, || daemon.logs().contains("boom live"))
    }));
    assert!(daemon.logs().contains("rule failed"));
    assert!(!daemon.logs().contains("boom in the playground"));
}

#[test]
fn the_overview_shows_the_last_hour_and_what_needs_a_look() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("notify", #{});"#,
    );
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[delivery]
retry_schedule = []

{TIGHT_SOURCE}
[sources.tight-idle]
plugin = "tight"
secret = {{ env = "SWITCHYARD_IT_SECRET" }}

[actions.notify]
plugin = "exec"
shell = "echo the mail server is down >&2; exit 3"

[actions.slack]
plugin = "exec"
shell = "true"
"#
    ));
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    let admin = sign_in(&base, TOKEN);
    let (_, html, _) = get(&base, "/ui/overview", Some(&admin));
    assert!(html.contains("tight") && !html.contains("<rect"), "{html}");
    // Idle sources are one line, not empty charts.
    assert!(!html.contains("class=\"chart\""), "{html}");
    assert!(
        html.contains("No webhooks in the last 60 minutes: <a href=\"/ui/events?source=tight\">tight</a>, <a href=\"/ui/events?source=tight-idle\">tight-idle</a>"),
        "{html}"
    );

    // Two accepted, one repeated, one forged; the action fails for good.
    let body = invoice_viewed("inv_ov_1");
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    for _ in 0..2 {
        let (status, _) = daemon.post(
            "/hooks/tight",
            &[("Tight-Verification", &token)],
            body.clone(),
        );
        assert_eq!(status, 200);
    }
    daemon.send_viewed("inv_ov_2");
    let (status, _) = daemon.post("/hooks/tight", &[("Tight-Verification", "x.y.z")], "{}");
    assert_eq!(status, 401);
    let html = {
        let mut html = String::new();
        assert!(
            eventually(20, || {
                html = get(&base, "/ui/overview", Some(&admin)).1;
                html.contains("<strong>2</strong></div></a>")
            }),
            "two dead letters: {html}"
        );
        html
    };
    for shown in [
        "2 accepted",
        "1 duplicate, stale or handshake",
        "1 rejected",
        "unauthenticated (1)",
        "class=\"accepted\"",
        "class=\"rejected\"",
        "first attempts done",
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    // One chart (the idle source folded into a line), on a scale whose top
    // is the busiest minute rounded up to 1, 2 or 5 times a power of ten,
    // labelled.
    assert_eq!(html.matches("class=\"chart\"").count(), 1, "{html}");
    assert!(
        html.contains("No webhooks in the last 60 minutes: <a href=\"/ui/events?source=tight-idle\">tight-idle</a></p>"),
        "{html}"
    );
    let number_after = |marker: &str| -> u64 {
        let at = html
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not in {html}"))
            + marker.len();
        html[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let busiest = number_after("busiest minute ");
    let top = number_after("class=\"scale-top\">");
    let expected = [1, 2, 5, 10, 20, 50]
        .into_iter()
        .find(|t| *t >= busiest)
        .unwrap();
    assert_eq!(top, expected, "busiest {busiest}: {html}");
    assert!(html.contains(&format!("<span>{top}/min</span>")), "{html}");
    // An action paused by hand is listed with a link to the actions page.
    let (_, paused) = cli(&["actions", "pause", "slack"], &config);
    assert!(paused.contains("paused"), "{paused}");
    let (_, html, _) = get(&base, "/ui/overview", Some(&admin));
    assert!(
        html.contains("Actions not running") && html.contains("gate-paused"),
        "{html}"
    );
}

#[test]
fn everything_matching_a_filter_is_redriven_with_its_count_and_progress() {
    let env = Env::new();
    env.with_standard_plugins();
    env.add_plugin(&built_plugin("switchyard_exec"));
    env.rule(
        "viewed",
        r#"const EVENTS = ["tight.invoiceViewed"];
action("notify", #{});
action("slack", #{});"#,
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
[actions.notify]
plugin = "exec"
shell = "test -e '{}' || {{ echo mail server said no >&2; exit 3; }}"

[actions.slack]
plugin = "exec"
shell = "echo slack said no >&2; exit 3"
"#,
        fixed.display()
    ));
    let daemon = Daemon::start(&config);
    let base = format!("http://{}", daemon.admin_addr());
    for i in 0..3 {
        daemon.send_viewed(&format!("inv_m_{i}"));
    }
    let admin = sign_in(&base, TOKEN);
    let mut html = String::new();
    assert!(
        eventually(20, || {
            html = get(&base, "/ui/dead-letters", Some(&admin)).1;
            html.contains("Redrive all 6<")
        }),
        "{html}"
    );
    // The count before it runs, for the filter.
    let (_, html, _) = get(
        &base,
        "/ui/dead-letters?action=notify&error=mail+server",
        Some(&admin),
    );
    assert!(html.contains("Redrive all 3 matching"), "{html}");
    assert!(!html.contains("slack said no"), "{html}");
    let (_, none, _) = get(
        &base,
        "/ui/dead-letters?action=notify&error=slack",
        Some(&admin),
    );
    assert!(none.contains("No dead letters match"), "{none}");

    std::fs::write(&fixed, "").unwrap();
    let resp = client()
        .post(format!("{base}/ui/dead-letters/redrive-matching"))
        .header("cookie", &admin)
        .form(&[
            ("csrf", csrf(&html).as_str()),
            ("action", "notify"),
            ("error", "mail server"),
            ("count", "3"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let progress = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        progress.starts_with("/ui/dead-letters/progress/"),
        "{progress}"
    );
    let mut page = String::new();
    assert!(
        eventually(20, || {
            page = get(&base, &progress, Some(&admin)).1;
            page.contains("Done: 3 of 3 sent back")
        }),
        "{page}"
    );
    assert!(
        page.contains("the dead letters of notify whose error contains"),
        "{page}"
    );
    // The three are done; slack's three are still dead.
    assert!(
        eventually(20, || get(&base, "/ui/dead-letters", Some(&admin))
            .1
            .contains("Redrive all 3<")),
        "{}",
        daemon.logs()
    );
    let (_, left, _) = get(&base, "/ui/dead-letters", Some(&admin));
    assert!(
        left.contains("slack said no") && !left.contains("mail server said no"),
        "{left}"
    );
    // The same from the CLI, through the admin API.
    let (code, out) = cli(&["dlq", "redrive", "--all", "--action", "slack"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 dead letters sent back"), "{out}");
    assert!(daemon.logs().contains("dashboard: redriving dead letters"));
}

/// Two instances sharing PostgreSQL: a webhook taken in by one is found,
/// shown, tried in the playground and replayed from the other's dashboard.
#[test]
fn the_dashboard_works_the_same_on_a_shared_postgres_store() {
    let url = crate::pg::fresh_database();
    let envs = [Env::new(), Env::new()];
    let daemons: Vec<Daemon> = envs
        .iter()
        .map(|env| {
            let config = env.standard_with(
                &format!("[store]\nurl = \"{url}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
                "",
            );
            Daemon::start(&config)
        })
        .collect();
    let id = daemons[0].send_viewed("inv_shared");
    daemons[0].send_viewed("inv_other");
    assert_eq!(envs[0].wait_audit(2).len(), 2);
    let base = format!("http://{}", daemons[1].admin_addr());
    let admin = sign_in(&base, TOKEN);
    let (_, html, _) = get(
        &base,
        "/ui/events?field=data.eventData.entityId%3Dinv_shared",
        Some(&admin),
    );
    assert!(html.contains(&id), "{html}");
    assert_eq!(html.matches("href=\"/ui/events/01").count(), 1, "{html}");
    let (status, html, _) = get(&base, &format!("/ui/events/{id}"), Some(&admin));
    assert_eq!(status, 200);
    assert!(
        html.contains("inv_shared") && html.contains("audit"),
        "{html}"
    );
    let (status, out) = post(
        &base,
        "/ui/rules/playground",
        Some(&admin),
        &[
            ("csrf", &csrf(&html)),
            ("rule", "viewed"),
            ("text", "const EVENTS = [\"tight.*\"];\naction(\"audit\", #{ tried: event.data.eventData.entityId });"),
            ("from", "stored"),
            ("event", &id),
        ],
    );
    assert_eq!(status, 200);
    assert!(
        out.split_once("id=\"live\"")
            .unwrap()
            .0
            .contains("inv_shared"),
        "{out}"
    );
    let (status, _) = post(
        &base,
        &format!("/ui/events/{id}/replay"),
        Some(&admin),
        &[("csrf", &csrf(&html))],
    );
    assert_eq!(status, 303);
    assert!(
        eventually(20, || envs[0].audit_lines().len()
            + envs[1].audit_lines().len()
            == 3),
        "the replay ran (on either instance)"
    );
    let (_, overview, _) = get(&base, "/ui/overview", Some(&admin));
    assert!(
        overview.contains("this instance") && overview.contains("Dead letters"),
        "{overview}"
    );
    for page in ["/ui/dead-letters", "/ui/actions", "/ui/rules", "/ui/tail"] {
        assert_eq!(get(&base, page, Some(&admin)).0, 200, "{page}");
    }
}

/// Every file under `dir`, read as bytes, that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path);
            }
        }
    }
    found
}

/// A partner still sending a rotated (old) token is refused, and the old
/// token is shown to nobody: the header the source's verification reads is
/// replaced whole in the rejections ring (for the admin and the read-only
/// viewer), in the log and in what the store keeps; a header that carries
/// the current token inside a longer value is replaced whole too, never as
/// `Bearer [redacted]4`. The header's name is not taken for a secret.
#[test]
fn a_rotated_token_is_shown_to_nobody() {
    let env = Env::new();
    env.with_bundled_plugins();
    env.rule(
        "partner",
        r#"const EVENTS = ["webhook.*"]; action("audit", #{ type: event.type });"#,
    );
    let config = env.config(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
read_only_token = "{READ_ONLY}"

[sources.partner]
plugin = "webhook"
verify = "token"
token_header = "X-Partner-Token"
token = {{ env = "PARTNER_TOKEN" }}

{TIGHT_SOURCE}
[actions.audit]
plugin = "file"
path = "{}"
"#,
        env.audit_path().display()
    ));
    let (code, out) = cli_with_env(
        &["check"],
        &config,
        &[("PARTNER_TOKEN", "partner-token-NEW")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("token_header") || !out.contains("literal secret"),
        "a header's name is not a secret: {out}"
    );
    let daemon = Daemon::start_with_env(&config, &[("PARTNER_TOKEN", "partner-token-NEW")]);
    let base = format!("http://{}", daemon.admin_addr());
    let (status, _) = daemon.post(
        "/hooks/partner",
        &[("X-Partner-Token", "partner-token-OLD")],
        r#"{"type": "ping", "n": "refused"}"#,
    );
    assert_eq!(status, 401);
    // A bundled provider's own header, as its plugin declares it (ABI
    // 1.6): Tight's JWT, signed with a secret rotated out.
    let body = invoice_viewed("inv_rotated");
    let old_jwt = pyjwt("the-rotated-out-secret", body.as_bytes(), &[]);
    let (status, _) = daemon.post("/hooks/tight", &[("Tight-Verification", &old_jwt)], body);
    assert_eq!(status, 401);
    // Its start: the ring cuts a value at 200 characters, so the start is
    // what would show.
    let jwt_signature = old_jwt[..60].to_string();
    // Accepted, with the current token repeated inside another header.
    let (status, text) = daemon.post(
        "/hooks/partner",
        &[
            ("X-Partner-Token", "partner-token-NEW"),
            ("X-Debug", "Bearer partner-token-NEW4"),
        ],
        r#"{"type": "ping", "n": "accepted"}"#,
    );
    assert_eq!(status, 200, "{text}");
    env.wait_audit(1);

    for token in [TOKEN, READ_ONLY] {
        let session = sign_in(&base, token);
        let (status, html, _) = get(&base, "/ui/rejections", Some(&session));
        assert_eq!(status, 200);
        assert!(html.contains("x-partner-token"), "{html}");
        assert!(html.contains("[redacted]"), "{html}");
        assert!(!html.contains("partner-token-OLD"), "{html}");
        assert!(!html.contains("partner-token-NEW"), "{html}");
        assert!(html.contains("tight-verification"), "{html}");
        assert!(!html.contains(&jwt_signature), "{html}");
    }
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["accepted"][0]
        .as_str()
        .unwrap()
        .to_string();
    let detail = show(&config, &id);
    let headers = detail["request"]["headers"].to_string();
    assert!(headers.contains("x-debug"), "{headers}");
    assert!(!headers.contains("partner-token-"), "{headers}");
    assert!(!headers.contains("]4"), "{headers}");
    assert!(!daemon.logs().contains("partner-token-OLD"));
    assert!(!daemon.logs().contains(&jwt_signature));
    daemon.stop();
    for secret in ["partner-token-OLD", "partner-token-NEW"] {
        let found = files_holding(&env.path("data"), secret);
        assert!(found.is_empty(), "{secret} kept in {found:?}");
    }
}

/// The types pages show a source's types, one type's drift linked to its
/// events and its schema; a held event is released from its page (the
/// admin only); the playground checks a rule's reads as it is typed.
#[test]
fn types_drift_held_events_and_the_playground_checks_on_the_dashboard() {
    let env = Env::new();
    let config = env.standard_with(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = { env = \"ADMIN_TOKEN\" }\nread_only_token = { env = \"READ_TOKEN\" }\n",
        "strict = true\n",
    );
    let daemon = Daemon::start_with_env(
        &config,
        &[("ADMIN_TOKEN", TOKEN), ("READ_TOKEN", READ_ONLY)],
    );
    let base = format!("http://{}", daemon.admin_addr());
    let body = r#"{"editor":{"userId":"usr_1"},"company":{"id":"co_1"},"type":"LIFECYCLE","event":"invoiceViewed","datetime":"2025-04-01T11:31:04.1Z","eventData":{"entityId":42}}"#;
    let token = pyjwt(SECRET, body.as_bytes(), &[]);
    let (status, text) = daemon.post("/hooks/tight", &[("Tight-Verification", &token)], body);
    assert_eq!(status, 200, "{text}");
    let held = accepted_id(&text);
    let after = daemon.send_viewed("inv_after");
    env.wait_audit_of(&after);
    let admin = sign_in(&base, TOKEN);
    let viewer = sign_in(&base, READ_ONLY);

    // The drift is recorded about a second after: the type's page shows it.
    let mut page = String::new();
    assert!(
        eventually(20, || {
            page = get(&base, "/ui/types/tight/tight.invoiceViewed", Some(&admin)).1;
            page.contains("type_changed")
        }),
        "{page}"
    );
    assert!(
        page.contains("/eventData/entityId")
            && page.contains("documented as string, sent as integer"),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"/ui/events/{held}\"")),
        "{page}"
    );
    assert!(page.contains("&#34;LIFECYCLE&#34;"), "the schema: {page}");
    let (status, list, _) = get(&base, "/ui/types?source=tight", Some(&viewer));
    assert_eq!(status, 200);
    assert!(
        list.contains("tight.entity.invoice") && list.contains("1 path(s)"),
        "{list}"
    );
    assert_eq!(
        get(&base, "/ui/types/tight/tight.nothing", Some(&admin)).0,
        404
    );

    // The held event: why, and a release for the admin only.
    let (_, page, _) = get(&base, &format!("/ui/events/{held}"), Some(&viewer));
    assert!(
        page.contains("Held for an operator: schema drift (type_changed /eventData/entityId"),
        "{page}"
    );
    assert!(!page.contains("/release\""), "{page}");
    let form = csrf(&page);
    assert_eq!(
        post(
            &base,
            &format!("/ui/events/{held}/release"),
            Some(&viewer),
            &[("csrf", &form)]
        )
        .0,
        403
    );
    let (_, page, _) = get(&base, &format!("/ui/events/{held}"), Some(&admin));
    let form = csrf(&page);
    let (status, _) = post(
        &base,
        &format!("/ui/events/{held}/release"),
        Some(&admin),
        &[("csrf", &form)],
    );
    assert_eq!(status, 303);
    let lines = env.wait_audit_of(&held);
    assert!(lines.iter().any(|l| l["event_id"] == held.as_str()));

    // The playground's checks, as the script asks for them.
    let (_, page, _) = get(&base, "/ui/rules/playground", Some(&viewer));
    let form = csrf(&page);
    let text = "const EVENTS = [\"tight.invoiceViewed\"];\naction(\"audit\", #{ i: event.data.eventData.entityID });\n";
    let (status, answer) = post(
        &base,
        "/ui/rules/check",
        Some(&viewer),
        &[("csrf", &form), ("rule", "mine"), ("text", text)],
    );
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["checks"],
        serde_json::json!(["2:44: reads event.data.eventData.entityID; tight.invoiceViewed's data.eventData has entityId"])
    );
    assert_eq!(
        post(
            &base,
            "/ui/rules/check",
            Some(&viewer),
            &[("csrf", "stale"), ("rule", "mine"), ("text", text)]
        )
        .0,
        403
    );
}
