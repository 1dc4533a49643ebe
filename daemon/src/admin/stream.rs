//! `GET /v1/events/stream`: the stored events as server-sent events, as
//! they are stored — each with its envelope, oldest first, under the
//! events list's filters (`source`, `type` with globs, `state`, `field`,
//! `since`). It only reads: nothing is acknowledged or recorded.
//!
//! Where it starts: after `after` (or the `Last-Event-ID` header, which an
//! SSE client sends when it reconnects), else at `since` (stored events
//! first, then the new ones), else at now.
//!
//! Ids are ULIDs taken when a webhook arrives, so an event may be stored a
//! little after one with a later id (two batches in flight, two instances
//! on PostgreSQL). A stream therefore reads again the last [`LOOKBACK`]
//! before the newest id it sent, and sends what it had not: nothing stored
//! late is missed, and nothing is sent twice on one connection. A stream
//! resumed with `after` starts that window before it, so the events of
//! the window may come again: a client drops the ids it has seen
//! (`switchyard listen` does).

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::ops;
use crate::app::Switchyard;
use crate::ingress::answer::error;
use crate::store::{now_ms, ulid_floor, EventFilter, EventSummary};

/// How far back before the newest id sent a stream looks for events
/// stored late.
pub const LOOKBACK: Duration = Duration::from_secs(2);
/// How often a stream asks the store for what came in.
const EVERY: Duration = Duration::from_millis(250);
/// Events read at once.
const PAGE: usize = 500;
/// Pages read at most in one look (then the next look goes on).
const PAGES: usize = 20;
/// Streams open at once; one more is answered 503.
const STREAMS: usize = 16;

/// The route, behind the API's token check.
pub fn route(
    app: &Arc<Switchyard>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let app = app.clone();
    let open = Arc::new(Semaphore::new(STREAMS));
    warp::path!("v1" / "events" / "stream")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(move |q: HashMap<String, String>, last: Option<String>| {
            open_stream(app.clone(), &open, q, last)
        })
}

fn open_stream(
    app: Arc<Switchyard>,
    open: &Arc<Semaphore>,
    q: HashMap<String, String>,
    last: Option<String>,
) -> Response {
    let mut filter = match EventFilter::from_query(&q, PAGE, PAGE) {
        Ok(f) => f,
        Err(bad) => return error(StatusCode::BAD_REQUEST, &bad),
    };
    if filter.before.is_some() || filter.until_ms.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "a stream has no end: before and until are for the events list",
        );
    }
    let last = match last.filter(|l| !l.is_empty()) {
        None => None,
        Some(l) if ulid::Ulid::from_string(&l).is_ok() => Some(l),
        Some(_) => return error(StatusCode::BAD_REQUEST, "Last-Event-ID is not an event id"),
    };
    let Ok(permit) = open.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open",
        );
    };
    // Where it starts (exclusive): LOOKBACK before the last id the client
    // has (what was stored late may not have reached it), else the start
    // of `since`, else now.
    let (start, newest) = match last.or_else(|| filter.after.take()) {
        Some(id) => (ulid_floor(ms_of(&id) - LOOKBACK.as_millis() as i64), id),
        None => {
            let start = match filter.since_ms {
                Some(t) => ulid_floor(t - 1),
                None => ulid_floor(now_ms()),
            };
            (start.clone(), start)
        }
    };
    filter.after = None;
    filter.limit = PAGE;
    filter.envelopes = true;
    let events = events(app, filter, start, newest, permit);
    let mut resp = warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response();
    resp.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The milliseconds of a ULID (0 for what is not one).
pub fn ms_of(id: &str) -> i64 {
    ulid::Ulid::from_string(id)
        .map(|u| u.timestamp_ms() as i64)
        .unwrap_or(0)
}

/// Events after `start` (exclusive), looking back [`LOOKBACK`] before the
/// newest one sent (`newest` at first).
fn events(
    app: Arc<Switchyard>,
    filter: EventFilter,
    start: String,
    mut newest: String,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + Sync {
    let (tx, rx) = tokio::sync::mpsc::channel::<EventSummary>(PAGE);
    tokio::spawn(async move {
        let _permit = permit;
        // The ids sent within LOOKBACK of the newest.
        let mut sent = BTreeSet::<String>::new();
        let lookback = LOOKBACK.as_millis() as i64;
        loop {
            // What lies before the window is never read again.
            let window = ulid_floor(ms_of(&newest) - lookback);
            sent = sent.split_off(&window);
            let mut from = window.max(start.clone());
            for _ in 0..PAGES {
                let mut ask = filter.clone();
                ask.after = Some(from.clone());
                let page = match ops::list_events(app.store().as_ref(), ask).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!("admin API: an event stream could not read events: {e}");
                        break;
                    }
                };
                let full = page.len() >= PAGE;
                for e in page {
                    from = e.id.clone();
                    if !sent.insert(e.id.clone()) {
                        continue;
                    }
                    if e.id > newest {
                        newest = e.id.clone();
                    }
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    });
    sse_events(rx, |e| (e.id.clone(), e))
}

/// Server-sent events named `event` from what a task sends: each with the
/// id and the JSON data `shape` makes of it (also the dashboard's live
/// tail).
pub(crate) fn sse_events<T: Send + 'static, D: serde::Serialize>(
    rx: tokio::sync::mpsc::Receiver<T>,
    shape: fn(T) -> (String, D),
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + Sync {
    stream::unfold(rx, move |mut rx| async move {
        let (id, data) = shape(rx.recv().await?);
        let sent = warp::sse::Event::default()
            .id(id)
            .event("event")
            .json_data(data)
            .unwrap_or_default();
        Some((Ok(sent), rx))
    })
}
