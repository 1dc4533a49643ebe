//! The HTTP side of ingress: the warp filter for `POST /hooks/{source}`,
//! the peer's address whichever server accepted the connection, and reading
//! the body within its size limit and the listener's body deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::Filter;

use super::Ingress;

/// The peer of a connection, as the daemon's own listener records it
/// (warp's server records its own; ingress reads either).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A request body that did not arrive within the listener's `body_timeout`
/// of its head: the body stream fails with this, ingress answers 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} of its head")]
pub struct BodyTimeout(pub Duration);

/// Whether an error (or one it wraps) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The address of the connection's peer, whichever server accepted it.
fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::addr::remote()
        .and(warp::ext::optional::<PeerAddr>())
        .map(|warp_peer: Option<SocketAddr>, ours: Option<PeerAddr>| {
            warp_peer.or(ours.map(|p| p.0))
        })
}

/// The webhook filter: `hooks/{source}` relative to wherever it is mounted.
/// Requests that are not under `hooks/` are rejected (not found), so the
/// filter composes with others through `.or()`.
pub fn filter(
    ingress: Arc<Ingress>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("hooks")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(peer())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .and_then(
            move |source: String,
                  tail: warp::path::Tail,
                  method: Method,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  query: String,
                  body| {
                let ingress = ingress.clone();
                async move {
                    let req = Incoming {
                        source,
                        tail: tail.as_str().to_string(),
                        method,
                        headers,
                        remote,
                        query,
                    };
                    Ok::<_, Infallible>(ingress.handle(req, body).await)
                }
            },
        )
}

pub(super) struct Incoming {
    pub source: String,
    pub tail: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub remote: Option<SocketAddr>,
    pub query: String,
}

impl Incoming {
    /// The request as plugins (and redaction) take it, with `body`.
    pub fn owned(&self, remote_addr: String, body: Bytes) -> crate::host::OwnedRequest {
        crate::host::OwnedRequest {
            method: self.method.to_string(),
            path: self.tail.clone(),
            query: self.query.clone(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            remote_addr,
            body,
        }
    }
}

pub(super) enum BodyError {
    TooLarge,
    TimedOut,
    Broken(String),
}

pub(super) async fn read_body<S, B>(body: S, limit: u64) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            if is_body_timeout(&e) {
                BodyError::TimedOut
            } else {
                BodyError::Broken(e.to_string())
            }
        })?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}
