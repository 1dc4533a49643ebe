//! The admin API: a JSON API on its own listener (`[admin] listen`, keep it
//! on loopback), every request carrying `Authorization: Bearer <token>`.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/status` | sources, rules (version, broken files), actions (gates), backlog |
//! | GET | `/v1/events?source=&type=&since=&until=&limit=` | stored events, newest first |
//! | GET | `/v1/events/{id}` | one event: envelope, request, rule runs, jobs, attempts |
//! | POST | `/v1/events/{id}/replay` | route it again through the current rules |
//! | GET | `/v1/dead-letters?limit=` | dead letters |
//! | POST | `/v1/dead-letters/redrive` | `{"id": "…"}` or `{"all": true}` |
//! | POST | `/v1/actions/{name}/enable` | resume a paused or disabled action |
//! | POST | `/v1/reload` | reload the config, plugins and rules (422 with the problems if refused) |
//! | GET | `/metrics`, `/healthz`, `/readyz` | as on the webhook listener |
//!
//! `since`/`until` are Unix milliseconds or RFC 3339. Errors are
//! `{"error": "…"}` with 400, 401, 404 or 503. See `daemon/admin-openapi.yaml`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::Switchyard;
use crate::store::{now_ms, EventFilter, StoreError};

fn reply(status: StatusCode, body: Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => reply(StatusCode::NOT_FOUND, json!({ "error": m })),
        other => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": other.to_string() }),
        ),
    }
}

/// Unix milliseconds or RFC 3339.
fn parse_time(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    })
}

#[derive(Debug, Deserialize, Default)]
struct Redrive {
    id: Option<String>,
    #[serde(default)]
    all: bool,
}

/// The admin API's routes, every one behind the bearer token.
pub fn filter(
    app: Arc<Switchyard>,
    token: String,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let token = Arc::new(token);
    let authorized = warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                let given = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                let ok = given.len() == token.len()
                    && bool::from(given.as_bytes().ct_eq(token.as_bytes()));
                if ok {
                    Ok(())
                } else {
                    tracing::warn!("admin API: request refused (missing or wrong bearer token)");
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one();
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };

    let status = warp::path!("v1" / "status")
        .and(warp::get())
        .and(with_app.clone())
        .then(|app: Arc<Switchyard>| async move { reply(StatusCode::OK, app.status().await) });

    let list = warp::path!("v1" / "events")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(
            |q: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let filter = EventFilter {
                    source: q.get("source").cloned(),
                    kind: q.get("type").cloned(),
                    since_ms: q.get("since").and_then(|t| parse_time(t)),
                    until_ms: q.get("until").and_then(|t| parse_time(t)),
                    limit: q
                        .get("limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(50)
                        .min(10_000),
                };
                match app.store().list_events(filter).await {
                    Ok(events) => reply(StatusCode::OK, json!({ "events": events })),
                    Err(e) => store_error(e),
                }
            },
        );

    let show = warp::path!("v1" / "events" / String)
        .and(warp::get())
        .and(with_app.clone())
        .then(|id: String, app: Arc<Switchyard>| async move {
            match app.store().show_event(id).await {
                Ok(detail) => reply(StatusCode::OK, json!(detail)),
                Err(e) => store_error(e),
            }
        });

    let replay = warp::path!("v1" / "events" / String / "replay")
        .and(warp::post())
        .and(with_app.clone())
        .then(|id: String, app: Arc<Switchyard>| async move {
            match app.store().replay(id.clone()).await {
                Ok(()) => reply(StatusCode::OK, json!({ "replayed": id })),
                Err(e) => store_error(e),
            }
        });

    let dead = warp::path!("v1" / "dead-letters")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app.clone())
        .then(
            |q: HashMap<String, String>, app: Arc<Switchyard>| async move {
                let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
                match app.store().dead_letters(limit).await {
                    Ok(jobs) => reply(StatusCode::OK, json!({ "dead_letters": jobs })),
                    Err(e) => store_error(e),
                }
            },
        );

    let redrive = warp::path!("v1" / "dead-letters" / "redrive")
        .and(warp::post())
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::json::<Redrive>())
        .and(with_app.clone())
        .then(|r: Redrive, app: Arc<Switchyard>| async move {
            let target = match (r.id, r.all) {
                (Some(id), false) => Some(id),
                (None, true) => None,
                _ => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "give {\"id\": \"…\"} or {\"all\": true}" }),
                    )
                }
            };
            match app.store().redrive(target, now_ms()).await {
                Ok(n) => {
                    app.wake_dispatcher();
                    reply(StatusCode::OK, json!({ "redriven": n }))
                }
                Err(e) => store_error(e),
            }
        });

    let enable = warp::path!("v1" / "actions" / String / "enable")
        .and(warp::post())
        .and(with_app.clone())
        .then(|name: String, app: Arc<Switchyard>| async move {
            if !app.config().actions.contains_key(&name) {
                return reply(
                    StatusCode::NOT_FOUND,
                    json!({ "error": format!("no action {name:?}") }),
                );
            }
            match app.store().enable_action(name.clone(), now_ms()).await {
                Ok(n) => {
                    app.wake_dispatcher();
                    reply(StatusCode::OK, json!({ "enabled": name, "jobs_due": n }))
                }
                Err(e) => store_error(e),
            }
        });

    let reload = warp::path!("v1" / "reload")
        .and(warp::post())
        .and(with_app.clone())
        .then(|app: Arc<Switchyard>| async move {
            if let Err(problems) = app.reload("admin API").await {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "error": "reload refused; the running configuration stays",
                        "problems": problems.0.iter().map(|p| json!({"location": p.location, "message": p.message})).collect::<Vec<_>>(),
                    }),
                );
            }
            let set = app.rules().current();
            reply(
                StatusCode::OK,
                json!({
                    "rules_version": set.version,
                    "rules": set.rules().len(),
                    "broken": set.broken.iter().map(|p| json!({"location": p.location, "message": p.message})).collect::<Vec<_>>(),
                }),
            )
        });

    let api = status
        .or(list)
        .unify()
        .or(replay)
        .unify()
        .or(show)
        .unify()
        .or(dead)
        .unify()
        .or(redrive)
        .unify()
        .or(enable)
        .unify()
        .or(reload)
        .unify()
        .or(app.service_filter())
        .unify();
    authorized
        .and(api)
        .recover(recover)
        .unify()
        .map(|r: Response| r)
}

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

async fn recover(r: warp::Rejection) -> Result<Response, Infallible> {
    if r.find::<Unauthorized>().is_some() {
        let mut resp = reply(StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" }));
        resp.headers_mut().insert(
            "www-authenticate",
            warp::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(resp);
    }
    if r.is_not_found() {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({ "error": "not found" }),
        ));
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "method not allowed" }),
        ));
    }
    Ok(reply(
        StatusCode::BAD_REQUEST,
        json!({ "error": format!("{r:?}") }),
    ))
}
