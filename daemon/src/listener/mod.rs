//! The listeners: the sockets webhooks and operators reach the daemon on,
//! and their HTTP/1.1 server — accepting connections within a bound,
//! serving each with the deadlines of [`conn`] and the header limits, and
//! draining them at shutdown. Their settings are theirs: `listen`,
//! `[http]` ([`HttpLimits`]) and `[admin]` ([`AdminConfig`]). Each
//! listener takes the socket systemd passes for it ([`activation`]) or
//! binds its configured address ([`bind`]); the local admin socket is
//! [`socket`].
//!
//! At shutdown a connection finishes the request it is in and closes; one
//! that was accepted but has not had its first request read is served that
//! request first (for at most [`FIRST_REQUEST_GRACE`]): its client has most
//! likely sent it already, and closing such a connection unread (as hyper's
//! own graceful shutdown does) would drop a webhook the provider believes
//! delivered to a listening socket — the restart on a held socket would
//! then not be invisible after all.
//!
//! Owns: the accept loop (connections beyond `max_connections`, or beyond
//! `max_connections_per_client` from one client (`per_client.rs`), get a
//! 503 and are closed at once, never queued), the hyper connection settings (header
//! count and size answered 431), the open-file limit at start and the
//! connection bound it allows, and the listener metrics
//! (`switchyard_connections_*`). Serves any warp filter that answers every
//! request, on TCP or a unix socket ([`Accept`]); of the daemon it uses
//! only `metrics` and `ingress::PeerAddr` (how the routes learn the peer).
//!
//! warp's own server has no deadlines or bounds, hence this one; the
//! routes stay warp filters, so an embedding program may still mount them
//! in a server of its own (which then owns those limits).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use warp::reply::Response;
use warp::Filter;

pub mod activation;
mod admin_config;
mod config;
pub mod conn;
mod per_client;
pub mod socket;

pub use admin_config::{AdminConfig, DEFAULT_ADMIN_MAX_CONNECTIONS};
pub use config::HttpLimits;

use crate::config::{Problem, Problems};
use crate::ingress::PeerAddr;
use crate::metrics::Metrics;
use conn::{Guarded, Phase, TimedBody, Timeouts};

/// Open files kept for the rest of the daemon when the open-file limit
/// bounds the connections: the store's files, the admin listener, the
/// action plugins' sockets and the pipes of the programs they run.
const RESERVED_FILES: u64 = 512;

/// How long shutdown waits for connections with a request in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// At shutdown, how long a connection accepted before it may take to start
/// its first request (its client connected to a listening socket, and its
/// request is usually on the wire already).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Answered to a connection over the bound, before closing it.
const OVER_THE_BOUND: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A listening socket the server accepts connections from: TCP (the
/// webhook and admin listeners) or a unix socket (the local admin socket).
pub trait Accept: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection, and its peer's address when it has one.
    fn accept(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
    /// Answers 503 without waiting and closes (a connection over the bound).
    fn refuse(io: Self::Io);
    /// Per-connection socket options.
    fn tune(_io: &Self::Io) {}
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<SocketAddr>)> {
        TcpListener::accept(self).await.map(|(s, a)| (s, Some(a)))
    }
    fn refuse(io: Self::Io) {
        // Best effort, never waiting: the client learns to come back.
        let _ = io.try_write(OVER_THE_BOUND);
    }
    fn tune(io: &Self::Io) {
        let _ = io.set_nodelay(true);
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<SocketAddr>)> {
        UnixListener::accept(self).await.map(|(s, _)| (s, None))
    }
    fn refuse(io: Self::Io) {
        let _ = io.try_write(OVER_THE_BOUND);
    }
}

/// Raises the soft open-file limit to the hard one (systemd starts services
/// with a soft limit of 1,024), saying so. Each connection is a file.
pub fn raise_open_file_limit() {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else {
        return;
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if now > soft => {
            tracing::info!(
                from = soft,
                to = now,
                "raised the open-file limit to its hard limit"
            );
        }
        Ok(_) => tracing::info!(limit = soft, hard, "open-file limit"),
        Err(e) => tracing::warn!(limit = soft, hard, "cannot raise the open-file limit: {e}"),
    }
}

/// `configured`, or less when the open-file limit cannot hold that many
/// connections beside the daemon's other files (a warning says so).
fn connection_bound(listener: &str, configured: usize) -> usize {
    let Ok(soft) = rlimit::Resource::NOFILE.get_soft() else {
        return configured;
    };
    let room = soft.saturating_sub(RESERVED_FILES).max(16);
    if (configured as u64) <= room {
        return configured;
    }
    tracing::warn!(
        listener,
        configured,
        open_file_limit = soft,
        "serving at most {room} connections at once: the open-file limit ({soft}) holds no more \
         beside the daemon's other files; raise LimitNOFILE= (or ulimit -n) to allow {configured}"
    );
    room as usize
}

/// A warning that repeats at most every ten seconds, with how many times it
/// happened since.
struct Occasional {
    last: Option<Instant>,
    since: u64,
}

impl Occasional {
    fn new() -> Self {
        Occasional {
            last: None,
            since: 0,
        }
    }

    /// The count to report, when it is time to say something.
    fn tick(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// One listener's metric handles.
#[derive(Clone)]
struct Counters {
    open: Gauge,
    refused: Counter,
    timeouts: Timeouts,
}

impl Counters {
    fn new(metrics: &Metrics, listener: &str) -> Counters {
        let timeout = |phase: &str| metrics.connection_timeout(listener, phase);
        Counters {
            open: metrics.connections_open(listener),
            refused: metrics.connections_refused(listener),
            timeouts: Timeouts {
                head: timeout("head"),
                body: timeout("body"),
                idle: timeout("idle"),
                write: timeout("write"),
            },
        }
    }
}

/// Serves `routes` on `listener` until `shutdown` completes, then waits (at
/// most 30 s) for the requests in flight. `name` labels the metrics
/// and logs (`webhooks`, `admin`).
pub async fn serve<L: Accept, F>(
    listener: L,
    name: &'static str,
    routes: F,
    limits: HttpLimits,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let limits = HttpLimits {
        max_connections: connection_bound(name, limits.max_connections),
        ..limits
    };
    let counters = Counters::new(metrics, name);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Tells each connection the daemon is stopping.
    let (stop, stopping) = watch::channel(false);
    let mut refusals = Occasional::new();
    let per_client = per_client::PerClient::new(limits.max_connections_per_client);
    let mut client_refusals = Occasional::new();
    let mut accept_errors = Occasional::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(name, e, &mut accept_errors).await;
                    continue;
                }
            },
        };
        let Some(held) = per_client.take(peer) else {
            counters.refused.inc();
            L::refuse(stream);
            if let Some(n) = client_refusals.tick() {
                tracing::warn!(
                    listener = name,
                    max_connections_per_client = limits.max_connections_per_client,
                    refused = n,
                    "a client holds its most connections: its new ones are answered 503 and closed"
                );
            }
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters.refused.inc();
            L::refuse(stream);
            if let Some(n) = refusals.tick() {
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    refused = n,
                    "connection bound reached: new connections are answered 503 and closed"
                );
            }
            continue;
        };
        L::tune(&stream);
        let (routes, limits, counters) = (routes.clone(), limits.clone(), counters.clone());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            counters.open.inc();
            serve_connection(stream, peer, routes, limits, &counters, stopping).await;
            counters.open.dec();
            drop((permit, held));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "requests still in flight after {DRAIN:?}; closing their connections"
        );
    }
}

/// A failed accept: nothing to do for a connection that went away before
/// it was taken; out of files or memory, wait a moment for some to be
/// freed (and say so now and then) rather than spin.
async fn accept_failed(name: &str, e: std::io::Error, errors: &mut Occasional) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) {
        return;
    }
    if let Some(n) = errors.tick() {
        tracing::error!(
            listener = name,
            failures = n,
            "cannot accept connections: {e}"
        );
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn serve_connection<S, F>(
    stream: S,
    peer: Option<SocketAddr>,
    routes: F,
    limits: HttpLimits,
    counters: &Counters,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let phase = Arc::new(Phase::default());
    let io = TokioIo::new(Guarded::new(
        stream,
        phase.clone(),
        limits.clone(),
        counters.timeouts.clone(),
    ));
    let routes = TowerToHyperService::new(warp::service(routes));
    let (body_timeout, body_timeouts) = (limits.body_timeout, counters.timeouts.body.clone());
    let started = phase.clone();
    let service = hyper::service::service_fn(move |mut req: warp::http::Request<Incoming>| {
        phase.request_started();
        if let Some(peer) = peer {
            req.extensions_mut().insert(PeerAddr(peer));
        }
        let req = req.map(|body| TimedBody::new(body, body_timeout, body_timeouts.clone()));
        let answer = routes.call(req);
        let phase = phase.clone();
        async move {
            let answer = answer.await;
            phase.answered();
            answer
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let mut conn = std::pin::pin!(http.serve_connection(io, service));
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = async {
            // A closed channel is a stop too: the listener is gone.
            let _ = stopping.wait_for(|stop| *stop).await;
        } => {
            if !started.ever_started() {
                // Accepted, not yet read from: serve the request its client
                // has most likely sent already before closing.
                tokio::select! {
                    served = conn.as_mut() => return closed(peer, served),
                    () = started.first_request() => {}
                    () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
                }
            }
            // The request in flight is answered; then the connection closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    closed(peer, served);
}

fn closed(peer: Option<SocketAddr>, served: hyper::Result<()>) {
    if let Err(e) = served {
        tracing::debug!(?peer, "connection closed: {e}");
    }
}

/// A listening socket with room for a burst of new connections (the
/// kernel's own cap, `net.core.somaxconn`, still applies).
pub fn bind(addr: SocketAddr, setting: &str) -> Result<TcpListener, Problems> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(4096)
        })
        .map_err(|e| {
            Problems(vec![Problem::new(
                setting,
                format!("cannot listen on {addr}: {e}"),
            )])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_repeat_at_most_every_ten_seconds_with_a_count() {
        let mut o = Occasional::new();
        assert_eq!(o.tick(), Some(1));
        assert_eq!(o.tick(), None);
        assert_eq!(o.tick(), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(o.tick(), Some(3));
    }
}
