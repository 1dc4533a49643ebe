//! The dead letters page: the jobs that gave up, filtered by action and by
//! a text of their error, grouped by action and error; one job or a group
//! redriven with one form, or everything matching the filter — with the
//! count on the button before it runs, and a progress page while it runs
//! (a chunk of [`ops::REDRIVE_CHUNK`] per store statement).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::{Role, Session};
use super::{may_act, nav, page, page_route, plain, see_other, store_failed, Nav, SessionFilter};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::store::{given, DeadFilter, JobRecord};

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
    /// Shown (at most [`SHOWN`]).
    total: usize,
    /// Matching, in the store.
    matching: u64,
    actions: Vec<String>,
    filter_action: String,
    filter_error: String,
    filtered: bool,
    groups: Vec<Group>,
}

/// A redrive of everything matching a filter, as it runs.
struct Run {
    id: String,
    filter: DeadFilter,
    total: u64,
    done: AtomicU64,
    finished: AtomicBool,
    problem: Mutex<Option<String>>,
}

/// The redrives started lately (the newest [`RUNS_KEPT`]).
#[derive(Default)]
struct Runs(Mutex<VecDeque<Arc<Run>>>);

const RUNS_KEPT: usize = 16;

impl Runs {
    fn add(&self, run: Arc<Run>) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if runs.len() == RUNS_KEPT {
            runs.pop_front();
        }
        runs.push_back(run);
    }

    fn get(&self, id: &str) -> Option<Arc<Run>> {
        let runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|r| r.id == id).cloned()
    }
}

#[derive(Template)]
#[template(path = "redrive_progress.html")]
struct Progress {
    nav: Option<Nav>,
    what: String,
    total: u64,
    done: u64,
    finished: bool,
    problem: Option<String>,
}

/// The filter of a query or form: empty fields are absent.
fn dead_filter(q: &HashMap<String, String>) -> DeadFilter {
    DeadFilter {
        action: given(q, "action"),
        error: given(q, "error"),
    }
}

fn describe(f: &DeadFilter) -> String {
    match (&f.action, &f.error) {
        (None, None) => "every dead letter".into(),
        (Some(a), None) => format!("the dead letters of {a}"),
        (None, Some(e)) => format!("the dead letters whose error contains {e:?}"),
        (Some(a), Some(e)) => format!("the dead letters of {a} whose error contains {e:?}"),
    }
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
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let list = page_route(
        warp::path!("ui" / "dead-letters"),
        session.clone(),
        app,
        list,
    );
    let redrive = warp::path!("ui" / "dead-letters" / "redrive")
        .and(warp::post())
        .and(session.clone())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(redrive_chosen);
    let runs = Arc::new(Runs::default());
    let started = {
        let runs = runs.clone();
        warp::path!("ui" / "dead-letters" / "redrive-matching")
            .and(warp::post())
            .and(session.clone())
            .and(warp::body::content_length_limit(16 * 1024))
            .and(warp::body::form::<HashMap<String, String>>())
            .and(with_app)
            .then(
                move |s: Option<(String, Session)>, f: HashMap<String, String>, app| {
                    redrive_matching(runs.clone(), s, f, app)
                },
            )
    };
    let progress = warp::path!("ui" / "dead-letters" / "progress" / String)
        .and(warp::get())
        .and(session)
        .map(move |id: String, s: Option<(String, Session)>| progress(&runs, id, s));
    list.or(redrive)
        .unify()
        .or(started)
        .unify()
        .or(progress)
        .unify()
}

/// `GET /ui/dead-letters`: the dead letters by action and error, filtered.
async fn list(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let notice = q
        .get("redriven")
        .map(|n| format!("{n} sent back to the queue."));
    let filter = dead_filter(&q);
    let store = app.store().as_ref();
    let (jobs, problem) = match ops::dead_letters(store, SHOWN).await {
        Ok(jobs) => (jobs, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let jobs: Vec<JobRecord> = jobs
        .into_iter()
        .filter(|j| filter.action.as_ref().is_none_or(|a| *a == j.action))
        .filter(|j| {
            filter.error.as_ref().is_none_or(|e| {
                j.last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains(e.as_str())
            })
        })
        .collect();
    let matching = ops::count_dead(store, filter.clone())
        .await
        .unwrap_or(jobs.len() as u64);
    let mut actions: Vec<String> = app.config().actions.keys().cloned().collect();
    actions.sort();
    page(
        StatusCode::OK,
        DeadLetters {
            nav: nav(&s, "dead-letters"),
            notice,
            problem,
            can_act: s.role == Role::Admin,
            csrf: s.csrf.clone(),
            total: jobs.len(),
            matching,
            actions,
            filtered: filter != DeadFilter::default(),
            filter_action: filter.action.unwrap_or_default(),
            filter_error: filter.error.unwrap_or_default(),
            groups: groups(jobs),
        }
        .render(),
    )
}

/// `POST /ui/dead-letters/redrive`: the chosen dead letters (`ids`) sent
/// back to the queue.
async fn redrive_chosen(
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let s = match may_act(s, &f, "redrive") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let ids: Vec<&str> = f
        .get("ids")
        .map(|ids| {
            ids.split(',')
                .filter(|i| !i.is_empty())
                .take(SHOWN)
                .collect()
        })
        .unwrap_or_default();
    let mut sent = 0;
    for id in &ids {
        let which = ops::Redrive {
            id: Some(id.to_string()),
            ..Default::default()
        };
        match ops::redrive(app.store().as_ref(), which).await {
            Ok(r) => sent += r.redriven,
            // Redriven already (by another hand), or gone.
            Err(ops::OpError::NotFound(_)) => {}
            Err(e) => return store_failed(e),
        }
    }
    app.wake_dispatcher();
    tracing::info!(
        who = s.role.who(),
        asked = ids.len(),
        redriven = sent,
        "dashboard: dead letters redriven"
    );
    see_other(&format!("/ui/dead-letters?redriven={sent}"))
}

/// `POST /ui/dead-letters/redrive-matching`: every dead letter the filter
/// matches (at most as many as the page counted), sent back in steps on a
/// task of its own; answered with its progress page.
async fn redrive_matching(
    runs: Arc<Runs>,
    s: Option<(String, Session)>,
    f: HashMap<String, String>,
    app: Arc<Switchyard>,
) -> Reply {
    let s = match may_act(s, &f, "redrive") {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let filter = dead_filter(&f);
    // At most what the page counted (and the user saw).
    let counted: u64 = f.get("count").and_then(|c| c.parse().ok()).unwrap_or(0);
    let run = Arc::new(Run {
        id: crate::event::new_id(),
        filter: filter.clone(),
        total: counted,
        done: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        problem: Mutex::new(None),
    });
    runs.add(run.clone());
    tracing::info!(who = s.role.who(), what = %describe(&filter), count = counted, "dashboard: redriving dead letters");
    let id = run.id.clone();
    tokio::spawn(async move {
        let result = ops::redrive_matching(app.store().as_ref(), filter, counted, |n| {
            run.done.store(n, Ordering::Relaxed);
            app.wake_dispatcher();
        })
        .await;
        if let Err(e) = result {
            tracing::error!("dashboard: redrive stopped: {e}");
            *run.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        run.finished.store(true, Ordering::Relaxed);
        tracing::info!(
            who = s.role.who(),
            redriven = run.done.load(Ordering::Relaxed),
            "dashboard: dead letters redriven"
        );
    });
    see_other(&format!("/ui/dead-letters/progress/{id}"))
}

/// `GET /ui/dead-letters/progress/{id}`: how far a redrive by filter got.
fn progress(runs: &Runs, id: String, s: Option<(String, Session)>) -> Reply {
    let Some((_, s)) = s else {
        return see_other("/ui/sign-in");
    };
    let Some(run) = runs.get(&id) else {
        return plain(
            StatusCode::NOT_FOUND,
            "no such redrive (only the latest are kept)",
        );
    };
    let view = Progress {
        nav: nav(&s, "dead-letters"),
        what: describe(&run.filter),
        total: run.total,
        done: run.done.load(Ordering::Relaxed),
        finished: run.finished.load(Ordering::Relaxed),
        problem: run
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    page(StatusCode::OK, view.render())
}
