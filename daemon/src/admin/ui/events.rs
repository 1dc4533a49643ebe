//! The events pages: the list (filters in the URL, so a view can be
//! shared; paged by id, newest first), the live tail (the same filters,
//! new events over server-sent events), an event's whole story, and
//! replay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use futures_util::stream::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection, Reply as _};

use super::rules::RunView;
use super::session::{Role, Session, Sessions};
use super::{
    may_act, nav, page, page_route, plain, pretty, see_other, store_failed, when, Nav,
    SessionFilter,
};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::store::{EventDetail, EventFilter, EventSummary, STATES};

/// Events on a page of the list.
const PAGE: usize = 100;
/// Events a page's search reads at most (newest first, within its bounds).
const SEARCH_WINDOW: usize = 100_000;
/// Live tails open at once, over all sessions; one more is answered 503.
const TAILS: usize = 16;
/// How often a tail asks the store for what came in.
const TAIL_EVERY: Duration = Duration::from_millis(500);
/// Events a tail shows first, before it waits for new ones.
const TAIL_FIRST: usize = 20;

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

/// The list's filter as the form shows it back (what was typed, also
/// when it did not read).
#[derive(Default)]
struct Shown {
    source: String,
    kind: String,
    state: String,
    field: String,
    since: String,
    until: String,
}

impl Shown {
    fn of(q: &HashMap<String, String>) -> Shown {
        let given = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        Shown {
            source: given("source"),
            kind: given("type"),
            state: given("state"),
            field: given("field"),
            since: given("since"),
            until: given("until"),
        }
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct Events {
    nav: Option<Nav>,
    filter: Shown,
    states: [&'static str; 6],
    problem: Option<String>,
    events: Vec<Row>,
    /// The next page's URL, when this one is full.
    older: Option<String>,
    /// The search stopped short of the oldest events: where to go on.
    search_older: Option<(String, String)>,
    /// The filter as a query string (for the live tail's link).
    query: String,
}

#[derive(Template)]
#[template(path = "tail.html")]
struct Tail {
    nav: Option<Nav>,
    filter: Shown,
    states: [&'static str; 6],
    problem: Option<String>,
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
    /// Why it was held for an operator, if it was.
    held: Option<String>,
    /// Its webhook's trace (the envelope's `traceparent`), and where
    /// `[telemetry] trace_url` says to look it up.
    trace_id: Option<String>,
    trace_link: Option<String>,
    jobs: Vec<JobView>,
    rule_runs: Vec<RunView>,
    envelope: String,
    verdict: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl EventPage {
    fn new(
        d: EventDetail,
        session: &Session,
        notice: Option<&'static str>,
        known: &dyn Fn(&str) -> bool,
    ) -> EventPage {
        let id = d.envelope["id"].as_str().unwrap_or_default().to_string();
        let trace_id = d.envelope["extensions"]
            .as_object()
            .and_then(crate::telemetry::of_extensions)
            .map(|cx| crate::telemetry::trace_id(&cx));
        let trace_link = trace_id
            .as_deref()
            .and_then(|t| crate::telemetry::get()?.trace_link(t));
        EventPage {
            trace_id,
            trace_link,
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
            held: d.held,
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
            rule_runs: RunView::of_stored(&d.rule_runs, &known),
            envelope: pretty(&d.envelope),
            verdict: d.request.verdict,
            method: d.request.method,
            path: {
                // As the provider posted it: the stored path is what follows
                // `/hooks/`.
                let source = d.envelope["source"].as_str().unwrap_or_default();
                let mut path = format!("/hooks/{}", d.request.path.trim_start_matches('/'));
                if d.request.path.is_empty() {
                    path = format!("/hooks/{source}");
                }
                if !d.request.query.is_empty() {
                    path = format!("{path}?{}", d.request.query);
                }
                path
            },
            headers: d.request.headers,
            body: d.request.body,
        }
    }
}

/// The events pages' routes.
pub(super) fn routes(
    app: Arc<Switchyard>,
    sessions: Arc<Sessions>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let form = warp::body::content_length_limit(16 * 1024)
        .and(warp::body::form::<HashMap<String, String>>());

    let list = page_route(warp::path!("ui" / "events"), session.clone(), app, list);
    let tail = warp::path!("ui" / "tail")
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .map(tail_page);
    let tails = Arc::new(Semaphore::new(TAILS));
    let stream = warp::path!("ui" / "tail" / "stream")
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_app.clone())
        .map(
            move |s: Option<(String, Session)>,
                  q: HashMap<String, String>,
                  last: Option<String>,
                  app: Arc<Switchyard>| {
                tail_stream(app, &sessions, &tails, s, q, last)
            },
        );
    let event = warp::path!("ui" / "events" / String)
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(event_page);
    let replay = warp::path!("ui" / "events" / String / "replay")
        .and(warp::post())
        .and(session.clone())
        .and(form)
        .and(with_app.clone())
        .then(replay);
    let release = warp::path!("ui" / "events" / String / "release")
        .and(warp::post())
        .and(session)
        .and(form)
        .and(with_app)
        .then(release);

    list.or(tail)
        .unify()
        .or(stream)
        .unify()
        .or(replay)
        .unify()
        .or(release)
        .unify()
        .or(event)
        .unify()
}

/// `GET /ui/events`: a page of events by the filter, with links to older
/// ones.
async fn list(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let mut shown = Events {
        nav: nav(&s, "events"),
        filter: Shown::of(&q),
        states: STATES,
        problem: None,
        events: Vec::new(),
        older: None,
        search_older: None,
        query: String::new(),
    };
    let filter = match EventFilter::from_query(&q, PAGE, PAGE) {
        Ok(filter) => filter,
        Err(problem) => {
            shown.problem = Some(problem);
            return page(StatusCode::OK, shown.render());
        }
    };
    shown.query = encode(&filter.to_query());
    let store = app.store().as_ref();
    match ops::event_page(store, filter.clone(), SEARCH_WINDOW).await {
        Ok(found) => {
            let events = found.events;
            if events.len() == filter.limit {
                let mut next = filter.to_query();
                next.push(("before", events[events.len() - 1].id.clone()));
                shown.older = Some(format!("/ui/events?{}", encode(&next)));
            }
            if let Some(to) = found.searched_to {
                let at = ulid::Ulid::from_string(&to)
                    .map(|u| when(u.timestamp_ms() as i64))
                    .unwrap_or_default();
                let mut next = filter.to_query();
                next.push(("before", to));
                shown.search_older = Some((at, format!("/ui/events?{}", encode(&next))));
            }
            shown.events = events.into_iter().map(Row::from).collect();
        }
        Err(e) => shown.problem = Some(e.to_string()),
    }
    page(StatusCode::OK, shown.render())
}

/// `GET /ui/tail`: the live tail's page (its events come from the stream).
fn tail_page(s: Option<(String, Session)>, q: HashMap<String, String>) -> Reply {
    let Some((_, s)) = s else {
        return see_other("/ui/sign-in");
    };
    let problem = EventFilter::from_query(&q, PAGE, PAGE).err();
    page(
        StatusCode::OK,
        Tail {
            nav: nav(&s, "tail"),
            filter: Shown::of(&q),
            states: STATES,
            problem,
        }
        .render(),
    )
}

/// `GET /ui/tail/stream`: the live tail's server-sent events, resumed
/// after `Last-Event-ID`; at most [`TAILS`] open at once.
fn tail_stream(
    app: Arc<Switchyard>,
    sessions: &Arc<Sessions>,
    tails: &Arc<Semaphore>,
    s: Option<(String, Session)>,
    q: HashMap<String, String>,
    last: Option<String>,
) -> Reply {
    let Some((id, _)) = s else {
        return plain(StatusCode::UNAUTHORIZED, "sign in first");
    };
    let Ok(filter) = EventFilter::from_query(&q, TAIL_FIRST, TAIL_FIRST) else {
        return plain(StatusCode::BAD_REQUEST, "the filter does not read");
    };
    let Ok(permit) = tails.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live tails are open",
        );
    };
    let last = last.filter(|l| ulid::Ulid::from_string(l).is_ok());
    let events = tail_events(app, sessions.clone(), id, filter, last, permit);
    let mut resp = warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response();
    resp.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    super::secured(resp)
}

/// `GET /ui/events/{id}`: one event with its request, routing, jobs and
/// attempts.
async fn event_page(
    id: String,
    s: Option<(String, Session)>,
    q: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let Some((_, s)) = s else {
        return see_other("/ui/sign-in");
    };
    let notice = if q.contains_key("released") {
        Some("Released: it is routed as it is.")
    } else {
        q.contains_key("replayed")
            .then_some("Replayed: it is routed again through the current rules.")
    };
    match ops::show_event(app.store().as_ref(), id).await {
        Ok(d) => {
            let config = app.config();
            let known = |a: &str| config.actions.contains_key(a);
            page(
                StatusCode::OK,
                EventPage::new(d, &s, notice, &known).render(),
            )
        }
        Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such event"),
        Err(e) => store_failed(e),
    }
}

/// `POST /ui/events/{id}/replay`: routes the event again, for a session
/// that may act.
async fn replay(
    id: String,
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
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
        Err(e) => store_failed(e),
    }
}

/// `POST /ui/events/{id}/release`: routes a held event as it is, for a
/// session that may act.
async fn release(
    id: String,
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let s = match may_act(s, &f, "release") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let which = crate::admin::types::Release {
        id: Some(id.clone()),
        ..Default::default()
    };
    match crate::admin::types::release(app.store().as_ref(), which).await {
        Ok(_) => {
            tracing::info!(who = s.role.who(), event_id = %id, "dashboard: held event released");
            see_other(&format!("/ui/events/{id}?released"))
        }
        Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such held event"),
        Err(e) => store_failed(e),
    }
}

/// A query string of `pairs`, percent-encoded.
fn encode(pairs: &[(&'static str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A live tail: the newest events matching `filter` (or those after
/// `last`, the id a reconnecting browser saw last), then each new one as
/// the store has it, until the session ends or the browser goes. Reads by
/// id, so an event whose id is older than one already shown (taken in at
/// the same moment by another instance) can be missed by the tail; the
/// list shows it.
fn tail_events(
    app: Arc<Switchyard>,
    sessions: Arc<Sessions>,
    session_id: String,
    mut filter: EventFilter,
    last: Option<String>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + Sync {
    let (tx, rx) = tokio::sync::mpsc::channel::<EventSummary>(64);
    filter.after = last;
    tokio::spawn(async move {
        let _permit = permit;
        let mut first = filter.after.is_none();
        loop {
            if sessions.get(&session_id).is_none() {
                return;
            }
            let mut ask = filter.clone();
            ask.limit = if first { TAIL_FIRST } else { 200 };
            let mut events = match ops::list_events(app.store().as_ref(), ask).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!("dashboard: the live tail could not read events: {e}");
                    Vec::new()
                }
            };
            if first {
                // The newest few, shown oldest first; then what comes after.
                events.reverse();
                filter.after = Some(match events.last() {
                    Some(e) => e.id.clone(),
                    None => crate::store::ulid_floor(crate::store::now_ms()),
                });
                first = false;
            }
            for e in events {
                filter.after = Some(e.id.clone());
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TAIL_EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    });
    crate::admin::stream::sse_events(rx, |e| (e.id.clone(), TailRow::from(e)))
}

/// An event as the tail's script shows it.
#[derive(serde::Serialize)]
struct TailRow {
    id: String,
    received: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    state: String,
    jobs: u64,
    jobs_dead: u64,
}

impl From<EventSummary> for TailRow {
    fn from(e: EventSummary) -> TailRow {
        TailRow {
            received: when(e.received_at_ms),
            id: e.id,
            source: e.source,
            kind: e.kind,
            state: e.state,
            jobs: e.jobs,
            jobs_dead: e.jobs_dead,
        }
    }
}
