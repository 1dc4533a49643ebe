//! The event types pages: for each source (`/ui/types?source=`), each type
//! its provider declares, was learned or arrived undeclared — how many
//! arrived in the last hour and in all, when last, and its drift; and one
//! type (`/ui/types/{source}/{type}`): its schema, a sample (its last
//! event's data), and each drift with links to the first and last event
//! that showed it. Held events (a strict source's drifted ones) are on the
//! events page (state `held`), each with its own release.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

use super::session::Session;
use super::{
    nav, page, page_route, plain, pretty, see_other, store_failed, when, Nav, SessionFilter,
};
use crate::admin::ops::OpError;
use crate::admin::types::{self, TypeSummary};
use crate::app::Switchyard;
use crate::store::DriftRow;

#[derive(Template)]
#[template(path = "types.html")]
struct Types {
    nav: Option<Nav>,
    sources: Vec<String>,
    source: String,
    rows: Vec<(TypeSummary, String)>,
}

#[derive(Template)]
#[template(path = "type.html")]
struct TypePage {
    nav: Option<Nav>,
    t: TypeSummary,
    last_seen: String,
    schema: Option<String>,
    sample: Option<String>,
    drift: Vec<(DriftRow, String)>,
}

pub(super) fn routes(
    app: Arc<Switchyard>,
    session: impl SessionFilter,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let list = page_route(
        warp::path!("ui" / "types"),
        session.clone(),
        app.clone(),
        list,
    );
    let with_app = warp::any().map(move || app.clone());
    let one = warp::path!("ui" / "types" / String / String)
        .and(warp::get())
        .and(session)
        .and(with_app)
        .then(one);
    list.or(one).unify()
}

/// `GET /ui/types?source=`
async fn list(s: Session, q: HashMap<String, String>, app: Arc<Switchyard>) -> Reply {
    let catalog = app.catalog();
    let mut sources: Vec<String> = catalog.sources.keys().cloned().collect();
    sources.sort();
    let source = q
        .get("source")
        .filter(|s| !s.is_empty())
        .cloned()
        .or_else(|| sources.first().cloned())
        .unwrap_or_default();
    let found = types::types(app.store().as_ref(), &catalog, Some(source.clone())).await;
    let list = match found {
        Ok(list) => list,
        Err(OpError::NotFound(_)) => return plain(StatusCode::NOT_FOUND, "no such source or type"),
        Err(e) => return store_failed(e),
    };
    let rows = list
        .into_iter()
        .map(|t| {
            let last = t.last_seen_ms.map_or("never".into(), when);
            (t, last)
        })
        .collect();
    page(
        StatusCode::OK,
        Types {
            nav: nav(&s, "types"),
            sources,
            source,
            rows,
        }
        .render(),
    )
}

/// `GET /ui/types/{source}/{type}`
async fn one(
    source: String,
    kind: String,
    s: Option<(String, Session)>,
    app: Arc<Switchyard>,
) -> Reply {
    let Some((_, s)) = s else {
        return see_other("/ui/sign-in");
    };
    let found = types::show_type(app.store().as_ref(), &app.catalog(), source, kind).await;
    let detail = match found {
        Ok(d) => d,
        Err(OpError::NotFound(_)) => return plain(StatusCode::NOT_FOUND, "no such source or type"),
        Err(e) => return store_failed(e),
    };
    let drift = detail
        .drift_rows
        .into_iter()
        .map(|d| {
            let last = when(d.last_seen_ms);
            (d, last)
        })
        .collect();
    page(
        StatusCode::OK,
        TypePage {
            nav: nav(&s, "types"),
            last_seen: detail.summary.last_seen_ms.map_or("never".into(), when),
            t: detail.summary,
            schema: detail.schema.as_ref().map(pretty),
            sample: detail.sample.as_ref().map(pretty),
            drift,
        }
        .render(),
    )
}
