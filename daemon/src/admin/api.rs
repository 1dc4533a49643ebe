//! The admin API: a JSON API on its own listener (`[admin] listen`, keep it
//! on loopback), every request carrying `Authorization: Bearer <token>`;
//! and the same API on the local admin socket (`admin.sock` in `data_dir`,
//! mode 0660), where the file's permissions are the check and no token is
//! asked for.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/status` | sources, rules (version, broken files), actions (gates), backlog, the store (on PostgreSQL, the instances sharing it) |
//! | GET | `/v1/events?source=&type=&since=&until=&limit=` | stored events, newest first |
//! | GET | `/v1/events/stream?source=&type=&state=&field=&since=&after=` | the events as they are stored, with their envelopes, as server-sent events (`stream.rs`) |
//! | GET | `/v1/events/{id}` | one event: envelope, request, rule runs, jobs, attempts |
//! | POST | `/v1/events/{id}/replay` | route it again through the current rules |
//! | POST | `/v1/events/release` | `{"id": "…"}`, `{"source": "…"}` or `{"all": true}`: route held events (a strict source's drifted ones) as they are |
//! | GET | `/v1/types?source=` | each source's event types: declared, learned or undeclared, counts, last seen, drift |
//! | GET | `/v1/types/{source}/{type}` | one type: its schema, a sample (the last event's data), its drift with the first and last event that showed it |
//! | GET | `/v1/dead-letters?limit=` | dead letters |
//! | POST | `/v1/dead-letters/redrive` | `{"id": "…"}` or `{"all": true}`, optionally with `"action"` and `"error"` (a text of the last error) |
//! | GET | `/v1/actions` | every action with its gate (state, failures, until, reason) and its rate (as configured, lowered by its destination's 429s, budget left, jobs waiting, time to drain) |
//! | POST | `/v1/actions/{name}/enable` | resume a paused or disabled action |
//! | POST | `/v1/actions/{name}/pause` | pause an action by hand (its jobs wait) |
//! | GET | `/v1/subscriptions` | each source's last check of its subscriptions at its provider |
//! | POST | `/v1/subscriptions/{source}/check` | check them now (calls the provider's API) |
//! | POST | `/v1/subscriptions/{source}/apply` | make the provider match the config, then check |
//! | POST | `/v1/reload` | reload the config, plugins and rules (422 with the problems if refused) |
//! | GET | `/metrics`, `/healthz`, `/readyz` | as on the webhook listener |
//!
//! Each does what [`ops`] says; the CLI calls the same routes. The
//! read-only token (`[admin] read_only_token`), where there is one, is
//! taken for every GET; a write with it is a 403.
//! `since`/`until` are Unix milliseconds or RFC 3339 (anything else is a
//! 400); `limit` is at most [`MAX_LIMIT`] (default 50 events, 100 dead
//! letters). The scheme of `Authorization` is case-insensitive, as HTTP
//! says. Errors are `{"error": "…"}` with 400, 401, 404, 405, 411, 413, 415
//! or 503, and never echo internal representations. See
//! `daemon/admin-openapi.yaml`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::ops::{self, OpError, OpResult};
use crate::app::Switchyard;
use crate::ingress::answer::{answer as reply, error};
use crate::store::EventFilter;

/// An operation's answer, or its refusal with the status it deserves.
fn answer<T: serde::Serialize>(result: OpResult<T>) -> Response {
    match result {
        Ok(value) => reply(StatusCode::OK, json!(value)),
        Err(e) => {
            let status = match &e {
                OpError::NotFound(_) => StatusCode::NOT_FOUND,
                OpError::Invalid(_) => StatusCode::BAD_REQUEST,
                OpError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

/// The most items a list answers with; a larger `limit` is cut to it.
pub const MAX_LIMIT: usize = 10_000;

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, &message)
}

/// The query parameter `limit` (at most [`MAX_LIMIT`]), `default`, or what
/// is wrong with it.
fn limit_param(q: &HashMap<String, String>, default: usize) -> Result<usize, String> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .map(|n| n.min(MAX_LIMIT))
            .map_err(|_| format!("limit: {l:?} is not a count")),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// case does not matter (RFC 9110, 11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// The admin listener's routes: the dashboard (`/ui`, its own sessions)
/// and the API, every route of which is behind the bearer token.
pub fn filter(
    app: Arc<Switchyard>,
    token: String,
    read_only_token: Option<String>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let sessions = Arc::new(super::ui::session::Sessions::new(
        token.clone(),
        read_only_token.clone(),
    ));
    super::ui::filter(app.clone(), sessions)
        .or(routes(
            app,
            Some(Tokens {
                admin: Arc::new(token),
                read_only: read_only_token.map(Arc::new),
            }),
        ))
        .unify()
}

/// The admin API's routes without a token: for the local admin socket,
/// which only the daemon's user and group may open (its file mode is the
/// check, as with docker's socket).
pub fn local_filter(
    app: Arc<Switchyard>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    routes(app, None)
}

/// The tokens the API takes: the admin token for everything, the
/// read-only one (`[admin] read_only_token`) for reads (GET and HEAD).
#[derive(Clone)]
struct Tokens {
    admin: Arc<String>,
    read_only: Option<Arc<String>>,
}

/// Every route of the API, behind the bearer tokens when there are any.
fn routes(
    app: Arc<Switchyard>,
    token: Option<Tokens>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let api = status(&app)
        .or(super::stream::route(&app))
        .unify()
        .or(list_events(&app))
        .unify()
        .or(replay(&app))
        .unify()
        .or(release(&app))
        .unify()
        .or(types(&app))
        .unify()
        .or(show_type(&app))
        .unify()
        .or(show_event(&app))
        .unify()
        .or(dead_letters(&app))
        .unify()
        .or(redrive(&app))
        .unify()
        .or(actions(&app))
        .unify()
        .or(enable(&app))
        .unify()
        .or(pause(&app))
        .unify()
        .or(subscriptions(&app))
        .unify()
        .or(check_subscriptions(&app))
        .unify()
        .or(reload(&app))
        .unify()
        .or(app.service_filter())
        .unify();
    authorized(token)
        .and(api)
        .recover(recover)
        .unify()
        .map(|r: Response| r)
}

/// Whether `given` is `token`, in constant time.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Passes a request whose bearer token is the admin token, or the
/// read-only one for a read (any, without tokens); refuses the rest as
/// [`Unauthorized`], or a write with the read-only token as [`ReadOnly`].
fn authorized(token: Option<Tokens>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |method: warp::http::Method, header: Option<String>| {
            let token = token.clone();
            async move {
                let Some(tokens) = token else {
                    return Ok(());
                };
                let given = header.as_deref().and_then(bearer_token).unwrap_or("");
                if same(given, &tokens.admin) {
                    return Ok(());
                }
                if tokens.read_only.as_deref().is_some_and(|t| same(given, t)) {
                    if method == warp::http::Method::GET || method == warp::http::Method::HEAD {
                        return Ok(());
                    }
                    tracing::warn!(%method, "admin API: a write refused to the read-only token");
                    return Err(warp::reject::custom(ReadOnly));
                }
                tracing::warn!("admin API: request refused (missing or wrong bearer token)");
                Err(warp::reject::custom(Unauthorized))
            }
        })
        .untuple_one()
}

type App = Arc<Switchyard>;

/// A route's answer.
trait Route: Filter<Extract = (Response,), Error = warp::Rejection> + Clone {}
impl<T: Filter<Extract = (Response,), Error = warp::Rejection> + Clone> Route for T {}

fn with_app(app: &App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    let app = app.clone();
    warp::any().map(move || app.clone())
}

/// `GET /v1/status`
fn status(app: &App) -> impl Route {
    warp::path!("v1" / "status")
        .and(warp::get())
        .and(with_app(app))
        .then(|app: App| async move { reply(StatusCode::OK, ops::status(&app).await) })
}

/// `GET /v1/events?source=&type=&since=&until=&limit=`
fn list_events(app: &App) -> impl Route {
    warp::path!("v1" / "events")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app(app))
        .then(|q: HashMap<String, String>, app: App| async move {
            let filter = match EventFilter::from_query(&q, 50, MAX_LIMIT) {
                Ok(filter) => filter,
                Err(bad) => return bad_request(bad),
            };
            answer(
                ops::list_events(app.store().as_ref(), filter)
                    .await
                    .map(|events| json!({ "events": events })),
            )
        })
}

/// `GET /v1/events/{id}`
fn show_event(app: &App) -> impl Route {
    warp::path!("v1" / "events" / String)
        .and(warp::get())
        .and(with_app(app))
        .then(|id: String, app: App| async move {
            answer(ops::show_event(app.store().as_ref(), id).await)
        })
}

/// `POST /v1/events/{id}/replay`
fn replay(app: &App) -> impl Route {
    warp::path!("v1" / "events" / String / "replay")
        .and(warp::post())
        .and(with_app(app))
        .then(|id: String, app: App| async move {
            answer(ops::replay(app.store().as_ref(), id).await)
        })
}

/// `POST /v1/events/release`
fn release(app: &App) -> impl Route {
    warp::path!("v1" / "events" / "release")
        .and(warp::post())
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::json::<super::types::Release>())
        .and(with_app(app))
        .then(|r: super::types::Release, app: App| async move {
            answer(super::types::release(app.store().as_ref(), r).await)
        })
}

/// `GET /v1/types?source=`
fn types(app: &App) -> impl Route {
    warp::path!("v1" / "types")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app(app))
        .then(|q: HashMap<String, String>, app: App| async move {
            let source = q.get("source").cloned();
            answer(
                super::types::types(app.store().as_ref(), &app.catalog(), source)
                    .await
                    .map(|types| json!({ "types": types })),
            )
        })
}

/// `GET /v1/types/{source}/{type}`
fn show_type(app: &App) -> impl Route {
    warp::path!("v1" / "types" / String / String)
        .and(warp::get())
        .and(with_app(app))
        .then(|source: String, kind: String, app: App| async move {
            answer(
                super::types::show_type(app.store().as_ref(), &app.catalog(), source, kind).await,
            )
        })
}

/// `GET /v1/dead-letters?limit=`
fn dead_letters(app: &App) -> impl Route {
    warp::path!("v1" / "dead-letters")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_app(app))
        .then(|q: HashMap<String, String>, app: App| async move {
            let limit = match limit_param(&q, 100) {
                Ok(limit) => limit,
                Err(bad) => return bad_request(bad),
            };
            answer(
                ops::dead_letters(app.store().as_ref(), limit)
                    .await
                    .map(|jobs| json!({ "dead_letters": jobs })),
            )
        })
}

/// `POST /v1/dead-letters/redrive`
fn redrive(app: &App) -> impl Route {
    warp::path!("v1" / "dead-letters" / "redrive")
        .and(warp::post())
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::json::<ops::Redrive>())
        .and(with_app(app))
        .then(|r: ops::Redrive, app: App| async move {
            let result = ops::redrive(app.store().as_ref(), r).await;
            if result.is_ok() {
                app.wake_dispatcher();
            }
            answer(result)
        })
}

/// `GET /v1/actions`
fn actions(app: &App) -> impl Route {
    warp::path!("v1" / "actions")
        .and(warp::get())
        .and(with_app(app))
        .then(|app: App| async move {
            answer(
                ops::live_actions(&app)
                    .await
                    .map(|actions| json!({ "actions": actions })),
            )
        })
}

/// `POST /v1/actions/{name}/enable`
fn enable(app: &App) -> impl Route {
    warp::path!("v1" / "actions" / String / "enable")
        .and(warp::post())
        .and(with_app(app))
        .then(|name: String, app: App| async move {
            let result = ops::enable_action(app.store().as_ref(), &app.config(), name).await;
            if result.is_ok() {
                app.wake_dispatcher();
            }
            answer(result)
        })
}

/// `POST /v1/actions/{name}/pause`
fn pause(app: &App) -> impl Route {
    warp::path!("v1" / "actions" / String / "pause")
        .and(warp::post())
        .and(with_app(app))
        .then(|name: String, app: App| async move {
            let store = app.store().as_ref();
            answer(ops::pause_action(store, &app.config(), name, "admin API").await)
        })
}

/// `GET /v1/subscriptions`
fn subscriptions(app: &App) -> impl Route {
    warp::path!("v1" / "subscriptions")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: App| {
            let checks: Vec<Value> = ops::subscription_checks(&app)
                .into_iter()
                .map(|(source, last)| json!({"source": source, "last_check": last}))
                .collect();
            reply(StatusCode::OK, json!({ "sources": checks }))
        })
}

/// `POST /v1/subscriptions/{source}/check` and `…/apply`
fn check_subscriptions(app: &App) -> impl Route {
    warp::path!("v1" / "subscriptions" / String / String)
        .and(warp::post())
        .and(with_app(app))
        .then(|source: String, verb: String, app: App| async move {
            let apply = match verb.as_str() {
                "check" => false,
                "apply" => true,
                _ => return error(StatusCode::NOT_FOUND, "not found"),
            };
            let result = ops::check_subscriptions(&app, source.clone(), apply).await;
            if apply && result.is_ok() {
                tracing::info!(source, who = "admin API", "subscriptions applied");
            }
            answer(result)
        })
}

/// `POST /v1/reload`
fn reload(app: &App) -> impl Route {
    let problems = |list: &[crate::config::Problem]| -> Vec<Value> {
        list.iter()
            .map(|p| json!({"location": p.location, "message": p.message}))
            .collect()
    };
    warp::path!("v1" / "reload")
        .and(warp::post())
        .and(with_app(app))
        .then(move |app: App| async move {
            if let Err(refused) = app.reload("admin API").await {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "error": "reload refused; the running configuration stays",
                        "problems": problems(&refused.0),
                    }),
                );
            }
            let set = app.rules().current();
            reply(
                StatusCode::OK,
                json!({
                    "rules_version": set.version,
                    "rules": set.rules().len(),
                    "broken": problems(&set.broken),
                }),
            )
        })
}

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

#[derive(Debug)]
struct ReadOnly;
impl warp::reject::Reject for ReadOnly {}

async fn recover(r: warp::Rejection) -> Result<Response, Infallible> {
    if r.find::<Unauthorized>().is_some() {
        let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized");
        resp.headers_mut().insert(
            "www-authenticate",
            warp::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(resp);
    }
    if r.find::<ReadOnly>().is_some() {
        return Ok(error(
            StatusCode::FORBIDDEN,
            "the read-only token may only read (GET)",
        ));
    }
    if r.is_not_found() {
        return Ok(error(StatusCode::NOT_FOUND, "not found"));
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let (status, message) = if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "body too large".into())
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "Content-Length required".into(),
        )
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON (Content-Type: application/json)".into(),
        )
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".into())
    } else {
        tracing::debug!(rejection = ?r, "admin API: request refused");
        (StatusCode::BAD_REQUEST, "bad request".into())
    };
    Ok(error(status, &message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn limits_are_checked() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(limit_param(&q("limit", "5"), 50).ok(), Some(5));
        assert_eq!(
            limit_param(&q("limit", "99999999"), 50).ok(),
            Some(MAX_LIMIT)
        );
        assert_eq!(limit_param(&HashMap::new(), 50).ok(), Some(50));
        assert!(limit_param(&q("limit", "-1"), 50).is_err());
    }
}
