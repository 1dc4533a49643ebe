//! The dead letters page: the jobs that gave up, grouped by action and
//! error, each group (or one job, or all) redriven with one form, whose
//! button says how many it sends back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::{Role, Session};
use super::{may_act, nav, page, plain, see_other, Nav, SessionFilter};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::store::JobRecord;

/// Dead letters shown at most (the oldest first).
const SHOWN: usize = 1000;

struct Group {
    action: String,
    error: String,
    ids: String,
    jobs: Vec<JobRecord>,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLetters {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    can_act: bool,
    csrf: String,
    total: usize,
    all_ids: String,
    groups: Vec<Group>,
}

/// The jobs by action and by their error's first line (the rest of a
/// message is often what differs between jobs: an id, a time).
fn groups(jobs: Vec<JobRecord>) -> Vec<Group> {
    let mut by: BTreeMap<(String, String), Vec<JobRecord>> = BTreeMap::new();
    for job in jobs {
        let error = job
            .last_error
            .as_deref()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        by.entry((job.action.clone(), error)).or_default().push(job);
    }
    let mut groups: Vec<Group> = by
        .into_iter()
        .map(|((action, error), jobs)| Group {
            ids: jobs
                .iter()
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            action,
            error,
            jobs,
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.jobs.len()));
    groups
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let with_app = warp::any().map(move || app.clone());
    let list = warp::path!("ui" / "dead-letters")
        .and(warp::get())
        .and(session.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(
            |s: Option<(String, Session)>, q: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let Some((_, s)) = s else {
                    return see_other("/ui/sign-in");
                };
                let notice = q
                    .get("redriven")
                    .map(|n| format!("{n} sent back to the queue."));
                let (jobs, problem) = match ops::dead_letters(app.store().as_ref(), SHOWN).await {
                    Ok(jobs) => (jobs, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                let total = jobs.len();
                let all_ids = jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>().join(",");
                page(
                    StatusCode::OK,
                    DeadLetters {
                        nav: nav(&s, "dead-letters"),
                        notice,
                        problem,
                        can_act: s.role == Role::Admin,
                        csrf: s.csrf.clone(),
                        total,
                        all_ids,
                        groups: groups(jobs),
                    }
                    .render(),
                )
            },
        );
    let redrive = warp::path!("ui" / "dead-letters" / "redrive")
        .and(warp::post())
        .and(session)
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(with_app)
        .then(
            |s: Option<(String, Session)>, f: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let s = match may_act(s, &f, "redrive") {
                    Ok(s) => s,
                    Err(refused) => return *refused,
                };
                let ids: Vec<&str> = f
                    .get("ids")
                    .map(|ids| ids.split(',').filter(|i| !i.is_empty()).take(SHOWN).collect())
                    .unwrap_or_default();
                let mut sent = 0;
                for id in &ids {
                    let which = ops::Redrive { id: Some(id.to_string()), all: false };
                    match ops::redrive(app.store().as_ref(), which).await {
                        Ok(r) => sent += r.redriven,
                        // Redriven already (by another hand), or gone.
                        Err(ops::OpError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::error!("dashboard: {e}");
                            return plain(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer");
                        }
                    }
                }
                app.wake_dispatcher();
                tracing::info!(who = s.role.who(), asked = ids.len(), redriven = sent, "dashboard: dead letters redriven");
                see_other(&format!("/ui/dead-letters?redriven={sent}"))
            },
        );
    list.or(redrive).unify()
}
