//! The actions page: each configured action's gate (running, circuit open,
//! half-open, throttled by a target's `Retry-After`, disabled after a 410,
//! paused by hand), its attempts and
//! failure rate over the last 15 minutes (this instance's), and the forms
//! to pause it or to enable it again (admin). A paused action's jobs wait
//! in the store, none lost, and are due at once when it is enabled.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::{Role, Session};
use super::{
    form_post, may_act, nav, page, page_route, plain, see_other, store_failed, when, Nav,
    SessionFilter,
};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::metrics::recent::Kind;
use crate::store::now_ms;

/// The window the rates are over.
const WINDOW_MINUTES: usize = 15;

struct Row {
    name: String,
    plugin: String,
    state: String,
    failures: u32,
    until: String,
    reason: String,
    attempts: u64,
    failed: u64,
    /// Failed attempts per hundred, or "-" with none.
    failure_rate: String,
    /// Its rate limit (lowered, when its destination refuses), or "-".
    limit: String,
    /// Jobs its rate lets go at once now, or "-".
    budget: String,
    /// How long the jobs waiting for its rate take to go, or "-".
    drain: String,
    /// Its jobs waiting for the rate.
    waiting: u64,
}

#[derive(Template)]
#[template(path = "actions.html")]
struct Actions {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    can_act: bool,
    csrf: String,
    minutes: usize,
    rows: Vec<Row>,
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let list = page_route(
        warp::path!("ui" / "actions"),
        session.clone(),
        app.clone(),
        list,
    );
    let act = warp::path!("ui" / "actions" / String / String)
        .and(form_post(session, app))
        .then(act);
    list.or(act).unify()
}

/// `GET /ui/actions`: each action with its gate and its last hour's
/// attempts and failure rate.
async fn list(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let tally = attempts_by_action(&app);
    let (rows, problem) = match ops::live_actions(&app).await {
        Ok(rows) => (rows, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let rows = rows
        .into_iter()
        .map(|a| {
            let (attempts, failed) = tally.get(&a.name).copied().unwrap_or_default();
            Row {
                until: a
                    .until_ms
                    .filter(|_| a.state == "open" || a.state == "throttled")
                    .map(when)
                    .unwrap_or_default(),
                limit: a.rate_shown(),
                budget: a.budget_shown(),
                drain: a.drain_shown(),
                waiting: a.waiting_for_rate,
                failure_rate: if attempts == 0 {
                    "-".into()
                } else {
                    format!("{:.0}%", failed as f64 * 100.0 / attempts as f64)
                },
                name: a.name,
                plugin: a.plugin,
                state: a.state,
                failures: a.failures,
                reason: a.reason.unwrap_or_default(),
                attempts,
                failed,
            }
        })
        .collect();
    let notice = match (q.get("paused"), q.get("enabled"), q.get("due")) {
        (Some(name), _, _) => Some(format!(
            "{name} is paused: its jobs wait until it is enabled."
        )),
        (_, Some(name), due) => Some(format!(
            "{name} runs again; {} waiting job(s) are due now.",
            due.map_or("its", |d| d.as_str())
        )),
        _ => None,
    };
    page(
        StatusCode::OK,
        Actions {
            nav: nav(&s, "actions"),
            notice,
            problem,
            can_act: s.role == Role::Admin,
            csrf: s.csrf.clone(),
            minutes: WINDOW_MINUTES,
            rows,
        }
        .render(),
    )
}

/// Attempts and failed attempts per action over the window, from the
/// in-memory minutes.
fn attempts_by_action(app: &Switchyard) -> HashMap<String, (u64, u64)> {
    let mut tally: HashMap<String, (u64, u64)> = HashMap::new();
    let recent = &app.metrics().recent;
    for minute in recent.counts(now_ms(), Kind::Attempt, WINDOW_MINUTES) {
        for (action, outcome, n) in minute.counts {
            let t = tally.entry(action).or_default();
            t.0 += n;
            if outcome != "done" {
                t.1 += n;
            }
        }
    }
    tally
}

/// `POST /ui/actions/{name}/pause` and `…/enable`, for a session that may
/// act.
async fn act(
    name: String,
    verb: String,
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let what = match verb.as_str() {
        "pause" => "pause an action",
        "enable" => "enable an action",
        _ => return plain(StatusCode::NOT_FOUND, "no such page"),
    };
    let s = match may_act(s, &f, what) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let store = app.store().as_ref();
    let done = if verb == "pause" {
        ops::pause_action(store, &app.config(), name.clone(), s.role.who())
            .await
            .map(|_| format!("paused={name}"))
    } else {
        ops::enable_action(store, &app.config(), name.clone())
            .await
            .map(|e| format!("enabled={name}&due={}", e.jobs_due))
    };
    match done {
        Ok(query) => {
            app.wake_dispatcher();
            tracing::info!(who = s.role.who(), action = %name, "dashboard: action {verb}d");
            see_other(&format!("/ui/actions?{query}"))
        }
        Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such action"),
        Err(e) => store_failed(e),
    }
}
