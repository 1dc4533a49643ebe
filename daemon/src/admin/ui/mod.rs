//! The dashboard: server-rendered pages on the admin listener under `/ui`,
//! over the same operations as the admin API ([`super::ops`]). No script,
//! no external resource: templates compiled into the binary (askama,
//! escaped by default), one embedded stylesheet, and a Content-Security-
//! Policy that allows nothing else.
//!
//! Sign-in exchanges the admin token (or `[admin] read_only_token`) for a
//! session cookie ([`session`]); every page but the sign-in page and the
//! stylesheet needs one (a page without answers 303 to sign-in, a POST
//! 401); every POST carries the session's CSRF token; a read-only session
//! can look, not act. Each action is logged with who did it.
//!
//! | page | shows / does |
//! |---|---|
//! | `GET /ui/events` | stored events, filtered by source, type (`tight.*`), time |
//! | `GET /ui/events/{id}` | the event: jobs and attempts, rule runs, envelope, the request as stored |
//! | `POST /ui/events/{id}/replay` | routes it again (admin) |
//! | `GET /ui/dead-letters` | jobs that gave up, grouped by action and error |
//! | `POST /ui/dead-letters/redrive` | sends the listed jobs back to the queue (admin) |

mod dead_letters;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response as Reply;
use warp::{Filter, Rejection, Reply as _};

use super::ops;
use crate::app::Switchyard;
use crate::store::{EventDetail, EventFilter, EventSummary};
use session::{Role, Session, Sessions, COOKIE, SESSION_TTL};

/// Every page's protections: nothing but this origin's stylesheet and
/// forms, never framed, never cached, never sniffed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

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

/// The session of a POST that acts (replay, redrive): signed in, the form's
/// CSRF token its own, and the admin's; else the answer refusing it.
pub(super) fn may_act(
    s: Option<(String, Session)>,
    form: &HashMap<String, String>,
    what: &str,
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
    if s.role != Role::Admin {
        let refused = warp::reply::with_status(
            format!("the read-only token cannot {what}"),
            StatusCode::FORBIDDEN,
        );
        return Err(Box::new(secured(refused.into_response())));
    }
    Ok(s)
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

/// An event as a row of the list.
struct Row {
    id: String,
    received: String,
    source: String,
    kind: String,
    state: String,
    jobs: u64,
    jobs_dead: u64,
    duplicates: u64,
}

impl From<EventSummary> for Row {
    fn from(e: EventSummary) -> Row {
        Row {
            received: when(e.received_at_ms),
            id: e.id,
            source: e.source,
            kind: e.kind,
            state: e.state,
            jobs: e.jobs,
            jobs_dead: e.jobs_dead,
            duplicates: e.duplicates,
        }
    }
}

/// The list's filter as the form shows it back.
#[derive(Default)]
struct Shown {
    source: String,
    kind: String,
    since: String,
    until: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct Events {
    nav: Option<Nav>,
    filter: Shown,
    problem: Option<String>,
    events: Vec<Row>,
}

struct AttemptRow {
    n: u32,
    started: String,
    took_ms: i64,
    outcome: String,
    message: String,
}

struct JobView {
    action: String,
    state: String,
    rule: String,
    call_index: u32,
    idempotency_key: String,
    params: String,
    attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    nav: Option<Nav>,
    id: String,
    notice: Option<&'static str>,
    can_act: bool,
    csrf: String,
    state: String,
    routings: u32,
    routed: String,
    rules_version: String,
    duplicates: u64,
    jobs: Vec<JobView>,
    rule_runs: String,
    envelope: String,
    verdict: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Unix milliseconds as RFC 3339 (UTC).
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(crate::event::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

impl EventPage {
    fn new(d: EventDetail, session: &Session, notice: Option<&'static str>) -> EventPage {
        let id = d.envelope["id"].as_str().unwrap_or_default().to_string();
        EventPage {
            nav: nav(session, "events"),
            id,
            notice,
            can_act: session.role == Role::Admin,
            csrf: session.csrf.clone(),
            state: d.state,
            routings: d.routings,
            routed: d.routed_at_ms.map(when).unwrap_or_else(|| "not yet".into()),
            rules_version: d
                .rules_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            duplicates: d.duplicates,
            jobs: d
                .jobs
                .into_iter()
                .map(|j| JobView {
                    params: pretty(&j.params),
                    attempts: j
                        .attempt_log
                        .into_iter()
                        .map(|a| AttemptRow {
                            n: a.n,
                            started: when(a.started_at_ms),
                            took_ms: a.finished_at_ms - a.started_at_ms,
                            outcome: a.outcome,
                            message: a.message.unwrap_or_default(),
                        })
                        .collect(),
                    action: j.action,
                    state: j.state,
                    rule: j.rule,
                    call_index: j.call_index,
                    idempotency_key: j.idempotency_key,
                })
                .collect(),
            rule_runs: pretty(&d.rule_runs),
            envelope: pretty(&d.envelope),
            verdict: d.request.verdict,
            method: d.request.method,
            path: if d.request.query.is_empty() {
                d.request.path
            } else {
                format!("{}?{}", d.request.path, d.request.query)
            },
            headers: d.request.headers,
            body: d.request.body,
        }
    }
}

/// The dashboard's routes. `sessions` holds the tokens that sign in.
pub fn filter(
    app: Arc<Switchyard>,
    sessions: Arc<Sessions>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let with_app_value = app.clone();
    let with_app = warp::any().map(move || app.clone());
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

    let css = warp::path!("ui" / "static" / "app.css")
        .and(warp::get())
        .map(|| {
            let mut resp = include_str!("static/app.css").into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            secured(resp)
        });

    let root = warp::path("ui")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| see_other("/ui/events"));

    let sign_in_page = warp::path!("ui" / "sign-in").and(warp::get()).map(|| {
        page(
            StatusCode::OK,
            SignIn {
                nav: None,
                problem: None,
            }
            .render(),
        )
    });

    let sign_in = warp::path!("ui" / "sign-in")
        .and(warp::post())
        .and(form)
        .and(with_sessions.clone())
        .map(|f: HashMap<String, String>, sessions: Arc<Sessions>| {
            let token = f.get("token").map(String::as_str).unwrap_or("");
            match sessions.sign_in(token) {
                Some((id, role)) => {
                    tracing::info!(who = role.who(), "dashboard: signed in");
                    let mut resp = see_other("/ui/events");
                    let cookie = format!(
                        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
                        SESSION_TTL.as_secs()
                    );
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        resp.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    resp
                }
                None => {
                    tracing::warn!("dashboard: sign-in refused (wrong token)");
                    page(
                        StatusCode::UNAUTHORIZED,
                        SignIn {
                            nav: None,
                            problem: Some("That is not a token this Switchyard takes."),
                        }
                        .render(),
                    )
                }
            }
        });

    let sign_out = warp::path!("ui" / "sign-out")
        .and(warp::post())
        .and(session.clone())
        .and(form)
        .and(with_sessions.clone())
        .map(
            |s: Option<(String, Session)>, f: HashMap<String, String>, sessions: Arc<Sessions>| {
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
            },
        );

    let events = warp::path!("ui" / "events")
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(
            |s: Option<(String, Session)>, q: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let Some((_, s)) = s else {
                    return see_other("/ui/sign-in");
                };
                let given = |k: &str| q.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
                let shown = Shown {
                    source: given("source").unwrap_or_default(),
                    kind: given("type").unwrap_or_default(),
                    since: given("since").unwrap_or_default(),
                    until: given("until").unwrap_or_default(),
                };
                let mut problem = None;
                let mut time = |k: &str| {
                    given(k).and_then(|t| match super::api::parse_time(&t) {
                        Some(ms) => Some(ms),
                        None => {
                            problem = Some(format!(
                                "{k}: {t:?} is neither Unix milliseconds nor an RFC 3339 time"
                            ));
                            None
                        }
                    })
                };
                let (since_ms, until_ms) = (time("since"), time("until"));
                let filter = EventFilter {
                    source: given("source"),
                    kind: given("type"),
                    since_ms,
                    until_ms,
                    limit: 100,
                };
                let events = match ops::list_events(app.store().as_ref(), filter).await {
                    Ok(events) => events.into_iter().map(Row::from).collect(),
                    Err(e) => {
                        problem = Some(e.to_string());
                        Vec::new()
                    }
                };
                page(
                    StatusCode::OK,
                    Events {
                        nav: nav(&s, "events"),
                        filter: shown,
                        problem,
                        events,
                    }
                    .render(),
                )
            },
        );

    let event = warp::path!("ui" / "events" / String)
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(
            |id: String,
             s: Option<(String, Session)>,
             q: HashMap<String, String>,
             app: Arc<Switchyard>| async move {
                let Some((_, s)) = s else {
                    return see_other("/ui/sign-in");
                };
                let notice = q
                    .contains_key("replayed")
                    .then_some("Replayed: it is routed again through the current rules.");
                match ops::show_event(app.store().as_ref(), id).await {
                    Ok(d) => page(StatusCode::OK, EventPage::new(d, &s, notice).render()),
                    Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such event"),
                    Err(e) => {
                        tracing::error!("dashboard: {e}");
                        plain(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer")
                    }
                }
            },
        );

    let replay = warp::path!("ui" / "events" / String / "replay")
        .and(warp::post())
        .and(session.clone())
        .and(form)
        .and(with_app.clone())
        .then(
            |id: String, s: Option<(String, Session)>, f: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let s = match may_act(s, &f, "replay") {
                    Ok(s) => s,
                    Err(refused) => return *refused,
                };
                match ops::replay(app.store().as_ref(), id.clone()).await {
                    Ok(_) => {
                        tracing::info!(who = s.role.who(), event_id = %id, "dashboard: event replayed");
                        see_other(&format!("/ui/events/{id}?replayed"))
                    }
                    Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such event"),
                    Err(e) => {
                        tracing::error!("dashboard: {e}");
                        plain(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer")
                    }
                }
            },
        );

    let dead_letters = dead_letters::routes(with_app_value.clone(), session.clone());
    css.or(root)
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
        .or(replay)
        .unify()
        .or(event)
        .unify()
}
