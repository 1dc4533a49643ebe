//! The dashboard over HTTP: sign-in, sessions, CSRF, the read-only token,
//! and what its pages show and do (a real browser drives it in the
//! browser tests).

use reqwest::blocking::Client;
use reqwest::redirect::Policy;

use crate::common::*;

const TOKEN: &str = "admin-token-0123456789abcdef";
const READ_ONLY: &str = "read-only-token-0123456789ab";

fn client() -> Client {
    tls_provider();
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in with `token`: the session cookie (`name=value`).
fn sign_in(base: &str, token: &str) -> String {
    let resp = client()
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/ui/events");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

fn get(base: &str, path: &str, cookie: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = client().get(format!("{base}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.text().unwrap(), headers)
}

fn post(base: &str, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> (u16, String) {
    let mut req = client().post(format!("{base}{path}")).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The CSRF token in a page's forms.
fn csrf(html: &str) -> String {
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
            status == 303 && to.as_deref() != Some("/ui/events") || path == "/ui",
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
