//! The dashboard: server-rendered pages on the admin listener under `/ui`,
//! over the same operations as the admin API ([`super::ops`]). No external
//! resource and no inline script: templates compiled into the binary
//! (askama, escaped by default), one embedded stylesheet, a small script
//! for the live views (`static/`), and a Content-Security-Policy that
//! allows nothing else.
//!
//! Sign-in exchanges the admin token (or `[admin] read_only_token`) for a
//! session cookie ([`session`]); every page but the sign-in page and the
//! stylesheet needs one (a page without answers 303 to sign-in, a POST
//! 401); every POST carries the session's CSRF token; a read-only session
//! can look, not act. Each action is logged with who did it.
//!
//! | page | shows / does |
//! |---|---|
//! | `GET /ui/overview` | the last hour's webhooks, latency, backlog, dead letters, gates, broken rules |
//! | `GET /ui/events` | stored events, filtered by source, type (`tight.*`), time |
//! | `GET /ui/events/{id}` | the event: jobs and attempts, rule runs, envelope, the request as stored |
//! | `POST /ui/events/{id}/replay` | routes it again (admin) |
//! | `GET /ui/dead-letters` | jobs that gave up, grouped by action and error |
//! | `POST /ui/dead-letters/redrive` | sends the listed jobs back to the queue (admin) |
//! | `GET /ui/tail` | new events as they arrive (`/ui/tail/stream`: server-sent events) |
//! | `GET /ui/rejections` | the most recent refused webhooks (in memory) |
//! | `GET /ui/actions` | each action's gate and recent failure rate |
//! | `POST /ui/actions/{name}/pause`, `…/enable` | pause by hand, resume (admin) |
//! | `GET /ui/rules` | the live rules, and files that do not compile |
//! | `GET /ui/types?source=`, `/ui/types/{source}/{type}` | each source's event types (declared, learned, undeclared; counts, last seen, drift); one type's schema, sample and drift with links to its events |
//! | `POST /ui/rules/check` | the playground's checks of a rule's text as you type (JSON) |
//! | `GET`/`POST /ui/rules/playground` | a rule's text run on an event in the sandbox, beside the live rules |
//! | `POST /ui/rules/save` | writes a rule that compiles to the rules folder (admin) |
//! | `GET /ui/subscriptions` | each source's last check of its subscriptions at its provider |
//! | `POST /ui/subscriptions/{source}/check`, `…/apply` | check now; make the provider match the config (admin) |

mod actions;
mod dead_letters;
mod events;
mod overview;
mod rejections;
mod rules;
pub mod session;
mod subscriptions;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response as Reply;
use warp::{Filter, Rejection, Reply as _};

use crate::app::Switchyard;
use session::{Role, Session, Sessions, COOKIE, SESSION_TTL};

/// Every page's protections: nothing but this origin's stylesheet and
/// forms, never framed, never cached, never sniffed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn secured(mut resp: Reply) -> Reply {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn page(status: StatusCode, html: Result<String, askama::Error>) -> Reply {
    let (status, body) = match html {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!("dashboard: a page did not render: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page did not render".into(),
            )
        }
    };
    secured(warp::reply::with_status(warp::reply::html(body), status).into_response())
}

pub(super) fn see_other(to: &str) -> Reply {
    let mut resp = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secured(resp)
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Reply {
    secured(warp::reply::with_status(text, status).into_response())
}

/// A store that did not answer a page or a command: logged, 503.
pub(super) fn store_failed(e: impl std::fmt::Display) -> Reply {
    tracing::error!("dashboard: {e}");
    plain(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer")
}

/// The session of a POST that acts (replay, redrive): signed in, the form's
/// CSRF token its own, and the admin's; else the answer refusing it.
pub(super) fn may_act(
    s: Option<(String, Session)>,
    form: &HashMap<String, String>,
    what: &str,
) -> Result<Session, Box<Reply>> {
    let s = may_look(s, form)?;
    if s.role != Role::Admin {
        let refused = warp::reply::with_status(
            format!("the read-only token cannot {what}"),
            StatusCode::FORBIDDEN,
        );
        return Err(Box::new(secured(refused.into_response())));
    }
    Ok(s)
}

/// A form any session may post (it changes nothing): the session, if it is
/// live and the form carries its CSRF token; else the answer.
pub(super) fn may_look(
    s: Option<(String, Session)>,
    form: &HashMap<String, String>,
) -> Result<Session, Box<Reply>> {
    let Some((_, s)) = s else {
        return Err(Box::new(plain(StatusCode::UNAUTHORIZED, "sign in first")));
    };
    if !s.csrf_ok(form.get("csrf").map(String::as_str)) {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "the form is stale; reload the page",
        )));
    }
    Ok(s)
}

/// The filter giving each route the request's session, if it is live.
pub(super) trait SessionFilter:
    Filter<Extract = (Option<(String, Session)>,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<F> SessionFilter for F where
    F: Filter<Extract = (Option<(String, Session)>,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A page without path parameters: `GET`, the query string, and the
/// session — or, without one, a 303 to sign-in before `handler` runs.
pub(super) fn page_route<P, F, Fut>(
    path: P,
    session: impl SessionFilter,
    app: Arc<Switchyard>,
    handler: F,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone
where
    P: Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
    F: Fn(Session, HashMap<String, String>, Arc<Switchyard>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send,
{
    path.and(warp::get())
        .and(session)
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::any().map(move || app.clone()))
        .then(
            move |s: Option<(String, Session)>,
                  q: HashMap<String, String>,
                  app: Arc<Switchyard>| {
                let handler = handler.clone();
                async move {
                    match s {
                        Some((_, s)) => handler(s, q, app).await,
                        None => see_other("/ui/sign-in"),
                    }
                }
            },
        )
}

/// A form POST's session, form and app, as [`form_post`] extracts them.
pub(super) type FormPost = (
    Option<(String, Session)>,
    HashMap<String, String>,
    Arc<Switchyard>,
);

/// What a form's POST is given: the session (if live), the form (at most
/// 16 KiB), and the app. The handler checks the session with
/// [`may_act`] or [`may_look`].
pub(super) fn form_post(
    session: impl SessionFilter,
    app: Arc<Switchyard>,
) -> impl Filter<Extract = FormPost, Error = Rejection> + Clone {
    warp::post()
        .and(session)
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(warp::any().map(move || app.clone()))
}

/// What the header shows of the session.
pub(super) struct Nav {
    page: &'static str,
    who: &'static str,
    csrf: String,
}

pub(super) fn nav(session: &Session, page: &'static str) -> Option<Nav> {
    Some(Nav {
        page,
        who: session.role.who(),
        csrf: session.csrf.clone(),
    })
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    nav: Option<Nav>,
    problem: Option<&'static str>,
}

/// Unix milliseconds as RFC 3339 (UTC).
pub(super) fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(crate::event::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

pub(super) fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The dashboard's routes. `sessions` holds the tokens that sign in.
pub fn filter(
    app: Arc<Switchyard>,
    sessions: Arc<Sessions>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let with_sessions = {
        let sessions = sessions.clone();
        warp::any().map(move || sessions.clone())
    };
    // The session of the request's cookie, if it is live.
    let session = warp::cookie::optional::<String>(COOKIE)
        .and(with_sessions.clone())
        .map(|id: Option<String>, sessions: Arc<Sessions>| {
            id.and_then(|id| sessions.get(&id).map(|s| (id, s)))
        });
    let form = warp::body::content_length_limit(16 * 1024)
        .and(warp::body::form::<HashMap<String, String>>());

    let statics = warp::path!("ui" / "static" / String)
        .and(warp::get())
        .and_then(|name: String| async move { static_file(&name) });
    let root = warp::path("ui")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| see_other("/ui/overview"));
    let sign_in_page = warp::path!("ui" / "sign-in")
        .and(warp::get())
        .map(|| sign_in_page(StatusCode::OK, None));
    let sign_in = warp::path!("ui" / "sign-in")
        .and(warp::post())
        .and(form)
        .and(with_sessions.clone())
        .map(sign_in);
    let sign_out = warp::path!("ui" / "sign-out")
        .and(warp::post())
        .and(session.clone())
        .and(form)
        .and(with_sessions.clone())
        .map(sign_out);

    let dead_letters = dead_letters::routes(app.clone(), session.clone());
    let events = events::routes(app.clone(), sessions.clone(), session.clone());
    let rejections = rejections::routes(app.clone(), session.clone());
    let actions = actions::routes(app.clone(), session.clone());
    let rules = rules::routes(app.clone(), session.clone());
    let overview = overview::routes(app.clone(), session.clone());
    let subscriptions = subscriptions::routes(app.clone(), session.clone());
    let types = types::routes(app.clone(), session.clone());
    statics
        .or(root)
        .unify()
        .or(dead_letters)
        .unify()
        .or(sign_in_page)
        .unify()
        .or(sign_in)
        .unify()
        .or(sign_out)
        .unify()
        .or(events)
        .unify()
        .or(rejections)
        .unify()
        .or(actions)
        .unify()
        .or(rules)
        .unify()
        .or(overview)
        .unify()
        .or(subscriptions)
        .unify()
        .or(types)
        .unify()
}

/// `GET /ui/static/{name}`: the stylesheet, script and icon compiled in.
fn static_file(name: &str) -> Result<Reply, Rejection> {
    let (body, kind) = match name {
        "app.css" => (include_str!("static/app.css"), "text/css"),
        "tail.js" => (include_str!("static/tail.js"), "text/javascript"),
        "playground.js" => (include_str!("static/playground.js"), "text/javascript"),
        "favicon.svg" => (include_str!("static/favicon.svg"), "image/svg+xml"),
        _ => return Err(warp::reject::not_found()),
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    Ok(secured(resp))
}

/// The sign-in page, with a problem if the last try was refused.
fn sign_in_page(status: StatusCode, problem: Option<&'static str>) -> Reply {
    page(status, SignIn { nav: None, problem }.render())
}

/// `POST /ui/sign-in`: a session for a token this Switchyard takes (the
/// admin token acts, the read-only one looks), in a strict cookie.
fn sign_in(f: HashMap<String, String>, sessions: Arc<Sessions>) -> Reply {
    let token = f.get("token").map(String::as_str).unwrap_or("");
    let Some((id, role)) = sessions.sign_in(token) else {
        tracing::warn!("dashboard: sign-in refused (wrong token)");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not a token this Switchyard takes."),
        );
    };
    tracing::info!(who = role.who(), "dashboard: signed in");
    let mut resp = see_other("/ui/overview");
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/sign-out`: the session ended and its cookie cleared.
fn sign_out(
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    sessions: Arc<Sessions>,
) -> Reply {
    let Some((id, s)) = s else {
        return plain(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !s.csrf_ok(f.get("csrf").map(String::as_str)) {
        return plain(StatusCode::FORBIDDEN, "the form is stale; reload the page");
    }
    sessions.sign_out(&id);
    tracing::info!(who = s.role.who(), "dashboard: signed out");
    let mut resp = see_other("/ui/sign-in");
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
