//! The rejections page: the most recent refused webhooks, from ingress's
//! in-memory ring (`ingress::rejections`) — time, source, sender, status,
//! reason and message, with the request's headers (redacted) and the start
//! of its body. Only this instance's: the ring is never stored.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::Session;
use super::{nav, page, page_route, when, Nav, SessionFilter};
use crate::app::Switchyard;
use crate::ingress::rejections::{self, Rejection as Refused};

struct Row {
    at: String,
    r: Refused,
}

#[derive(Template)]
#[template(path = "rejections.html")]
struct Rejections {
    nav: Option<Nav>,
    source: String,
    kept: usize,
    sources: Vec<(String, usize)>,
    rows: Vec<Row>,
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    page_route(
        warp::path!("ui" / "rejections"),
        session,
        app,
        |s: Session, q: HashMap<String, String>, app: Arc<Switchyard>| async move {
            let all = app.rejections();
            let mut sources: Vec<(String, usize)> = Vec::new();
            for r in &all {
                match sources.iter_mut().find(|(name, _)| *name == r.source) {
                    Some((_, n)) => *n += 1,
                    None => sources.push((r.source.clone(), 1)),
                }
            }
            sources.sort();
            let source = q.get("source").cloned().unwrap_or_default();
            let rows = all
                .into_iter()
                .filter(|r| source.is_empty() || r.source == source)
                .map(|r| Row {
                    at: when(r.at_ms),
                    r,
                })
                .collect();
            page(
                StatusCode::OK,
                Rejections {
                    nav: nav(&s, "rejections"),
                    source,
                    kept: rejections::KEPT,
                    sources,
                    rows,
                }
                .render(),
            )
        },
    )
}
