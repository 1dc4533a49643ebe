//! The subscriptions page: for each source, the last check of its
//! subscriptions at its provider (the watcher's, every `watch`, or one asked
//! for here): where the provider should post, what is as declared, what
//! differs (to create, to move, switched off by the provider), and what
//! Switchyard leaves alone. "Check now" asks the provider's API (read-only
//! may); "Apply" makes the provider match the config (admin), as
//! `switchyard subscriptions apply` does, never deleting what Switchyard
//! did not make.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::{Role, Session};
use super::{
    form_post, may_act, may_look, nav, page, page_route, plain, see_other, when, Nav, SessionFilter,
};
use crate::admin::ops;
use crate::app::Switchyard;
use crate::subscriptions::watch::Line;

struct Row {
    source: String,
    plugin: String,
    watch: String,
    checked: Option<Checked>,
}

struct Checked {
    at: String,
    target_url: String,
    lines: Vec<Line>,
    changes: usize,
    error: Option<String>,
    not_managed: Option<String>,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct Subscriptions {
    nav: Option<Nav>,
    notice: Option<String>,
    can_act: bool,
    csrf: String,
    public_url: Option<String>,
    rows: Vec<Row>,
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let list = page_route(
        warp::path!("ui" / "subscriptions"),
        session.clone(),
        app.clone(),
        |s: Session, q: HashMap<String, String>, app: Arc<Switchyard>| async move {
            let config = app.config();
            let rows = ops::subscription_checks(&app)
                .into_iter()
                .map(|(source, last)| {
                    let sc = config.sources.get(&source);
                    Row {
                        plugin: sc.map(|c| c.plugin.clone()).unwrap_or_default(),
                        watch: sc
                            .and_then(|c| c.watch)
                            .map(|w| {
                                let every = humantime::format_duration(w).to_string();
                                match sc.is_some_and(|c| c.reenable) {
                                    true => format!("every {every}, switches on again"),
                                    false => format!("every {every}"),
                                }
                            })
                            .unwrap_or_else(|| "not watched".into()),
                        checked: last.map(|c| Checked {
                            at: when(c.at_ms),
                            target_url: c.target_url,
                            lines: c.lines,
                            changes: c.changes,
                            error: c.error,
                            not_managed: c.not_managed,
                        }),
                        source,
                    }
                })
                .collect();
            let notice = match (q.get("checked"), q.get("applied")) {
                (Some(source), _) => Some(format!("Checked {source}'s subscriptions.")),
                (_, Some(source)) => Some(format!("Applied {source}'s subscriptions.")),
                _ => None,
            };
            page(
                StatusCode::OK,
                Subscriptions {
                    nav: nav(&s, "subscriptions"),
                    notice,
                    can_act: s.role == Role::Admin,
                    csrf: s.csrf.clone(),
                    public_url: config.public_url.clone(),
                    rows,
                }
                .render(),
            )
        },
    );
    let act = warp::path!("ui" / "subscriptions" / String / String)
        .and(form_post(session, app.clone()))
        .then(
            |source: String, verb: String, s: Option<(String, Session)>, f: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let apply = match verb.as_str() {
                    "check" => false,
                    "apply" => true,
                    _ => return plain(StatusCode::NOT_FOUND, "no such page"),
                };
                // Checking only reads the provider; applying changes it.
                let s = match if apply {
                    may_act(s, &f, "apply subscriptions")
                } else {
                    may_look(s, &f)
                } {
                    Ok(s) => s,
                    Err(refused) => return *refused,
                };
                match ops::check_subscriptions(&app, source.clone(), apply).await {
                    Ok(_) => {
                        let done = if apply { "applied" } else { "checked" };
                        tracing::info!(who = s.role.who(), source, "dashboard: subscriptions {done}");
                        see_other(&format!(
                            "/ui/subscriptions?{done}={}",
                            switchyard_plugin_api::percent_encode(&source)
                        ))
                    }
                    Err(ops::OpError::NotFound(_)) => plain(StatusCode::NOT_FOUND, "no such source"),
                    Err(ops::OpError::Invalid(_)) => plain(
                        StatusCode::BAD_REQUEST,
                        "set public_url in the config: the providers post to <public_url>/hooks/<source>",
                    ),
                    Err(e) => {
                        tracing::error!("dashboard: {e}");
                        plain(StatusCode::SERVICE_UNAVAILABLE, "the check failed")
                    }
                }
            },
        );
    list.or(act).unify()
}
