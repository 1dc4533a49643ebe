//! Deadlines of one connection: what keeps a slow or silent client from
//! holding a socket for ever.
//!
//! Owns: [`Guarded`], the socket wrapper that closes a connection whose
//! request head does not arrive in time (`header_timeout`, counted from the
//! connection's start or from the first byte of a later request), that sits
//! idle between requests too long (`idle_timeout`), or that takes no byte
//! of its answer for too long (`write_timeout`); and [`TimedBody`], the
//! request body that fails with [`BodyTimeout`] (which ingress answers 408)
//! once `body_timeout` has passed since its head.
//!
//! The service tells the socket where the connection is through a shared
//! [`Phase`]: the socket cannot see where a request head ends, the service
//! is called exactly then. While a request is being handled, the socket
//! sets no read deadline: the body has its own, and the handler's plugin
//! calls have theirs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::HttpLimits;
use crate::ingress::BodyTimeout;

/// Where a connection is, as the service sees it.
#[derive(Debug, Default)]
pub struct Phase {
    state: AtomicU8,
    /// A read the server left pending while a request was handled (hyper
    /// watches for the client going away): woken when the answer is ready,
    /// so the idle deadline starts.
    reader: AtomicWaker,
    /// Whether a request head ever arrived on the connection, and who
    /// waits for the first one (the listener, when it stops).
    started: std::sync::atomic::AtomicBool,
    first: tokio::sync::Notify,
}

const WAITING: u8 = 0;
const IN_REQUEST: u8 = 1;
const ANSWERED: u8 = 2;

impl Phase {
    /// A request head arrived whole: its handler runs.
    pub fn request_started(&self) {
        self.state.store(IN_REQUEST, Ordering::Release);
        if !self.started.swap(true, Ordering::AcqRel) {
            self.first.notify_waiters();
        }
    }

    /// Whether a request head ever arrived whole on the connection.
    pub fn ever_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Completes when the connection's first request head has arrived.
    pub async fn first_request(&self) {
        let notified = self.first.notified();
        if self.ever_started() {
            return;
        }
        notified.await;
    }

    /// The handler has its answer: the connection goes back to waiting for
    /// the next request once the answer is out.
    pub fn answered(&self) {
        self.state.store(ANSWERED, Ordering::Release);
        self.reader.wake();
    }
}

/// How many connections were closed for each deadline, per listener.
#[derive(Clone, Debug, Default)]
pub struct Timeouts {
    pub head: Counter,
    pub body: Counter,
    pub idle: Counter,
    pub write: Counter,
}

/// Which read deadline is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadDeadline {
    None,
    /// For the request head, since the connection started or the first byte
    /// of the request arrived.
    Head,
    /// For the first byte of the next request.
    Idle,
}

/// Sent to a client whose request head stopped half-way, before closing.
const HEAD_TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A socket with the connection's read and write deadlines.
pub struct Guarded<T> {
    io: T,
    phase: Arc<Phase>,
    limits: HttpLimits,
    timeouts: Timeouts,
    read_deadline: ReadDeadline,
    read_timer: Pin<Box<Sleep>>,
    /// Bytes of the current request head seen so far (any: a partial head
    /// is answered 408 at its deadline, silence is just closed).
    head_started: bool,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Guarded<T> {
    pub fn new(io: T, phase: Arc<Phase>, limits: HttpLimits, timeouts: Timeouts) -> Self {
        Guarded {
            io,
            phase,
            limits,
            timeouts,
            read_deadline: ReadDeadline::None,
            read_timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            head_started: false,
            write_timer: None,
        }
    }

    fn arm(&mut self, deadline: ReadDeadline, after: Duration) {
        self.read_deadline = deadline;
        self.read_timer.as_mut().reset(Instant::now() + after);
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.phase.state.load(Ordering::Acquire) {
            IN_REQUEST => {
                // The body: bounded by TimedBody, not here.
                this.read_deadline = ReadDeadline::None;
                this.head_started = false;
                this.phase.reader.register(cx.waker());
                if this.phase.state.load(Ordering::Acquire) == IN_REQUEST {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                // Answered meanwhile: read as for the next request.
                this.phase.state.store(WAITING, Ordering::Release);
                this.arm(ReadDeadline::Idle, this.limits.idle_timeout);
            }
            ANSWERED => {
                // The server reads again: the answer is out.
                this.phase.state.store(WAITING, Ordering::Release);
                this.arm(ReadDeadline::Idle, this.limits.idle_timeout);
            }
            _ if this.read_deadline == ReadDeadline::None => {
                // A new connection: its first request head starts now.
                this.arm(ReadDeadline::Head, this.limits.header_timeout);
            }
            _ => {}
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.head_started = true;
                    if this.read_deadline == ReadDeadline::Idle {
                        this.arm(ReadDeadline::Head, this.limits.header_timeout);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.read_timer.as_mut().poll(cx));
                if this.read_deadline == ReadDeadline::Idle {
                    // A quiet keep-alive connection: close it as if the
                    // client had (end of stream, no error).
                    this.timeouts.idle.inc();
                    return Poll::Ready(Ok(()));
                }
                this.timeouts.head.inc();
                if this.head_started {
                    // Best effort: the client learns why, if its socket
                    // takes the bytes now.
                    let _ = Pin::new(&mut this.io).poll_write(cx, HEAD_TIMED_OUT);
                }
                Poll::Ready(Err(timed_out("request head timed out")))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    /// Runs a write step under the write deadline: armed while the client
    /// takes nothing, cleared by any progress.
    fn under_write_deadline<R>(
        &mut self,
        cx: &mut Context<'_>,
        step: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match step(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let after = self.limits.write_timeout;
                let timer = self
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                ready!(timer.as_mut().poll(cx));
                self.timeouts.write.inc();
                Poll::Ready(Err(timed_out("the client took no byte of its answer")))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.under_write_deadline(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.under_write_deadline(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.under_write_deadline(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimeout`] at its deadline.
pub struct TimedBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    timeouts: Counter,
    done: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limit: Duration, timeouts: Counter) -> Self {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            timeouts,
            done: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.deadline.as_mut().poll(cx));
        this.done = true;
        this.timeouts.inc();
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            ..HttpLimits::default()
        }
    }

    fn guarded(
        io: tokio::io::DuplexStream,
    ) -> (Guarded<tokio::io::DuplexStream>, Arc<Phase>, Timeouts) {
        let phase = Arc::new(Phase::default());
        let timeouts = Timeouts::default();
        (
            Guarded::new(io, phase.clone(), limits(), timeouts.clone()),
            phase,
            timeouts,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_stops_half_way_is_answered_408_and_closed() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut conn, _, timeouts) = guarded(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"POST /hooks/ti").await.unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"POST /hooks/ti");
        let started = Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(timeouts.head.get(), 1);
        let mut answer = vec![0u8; HEAD_TIMED_OUT.len()];
        client_read.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_drip_does_not_extend_the_head_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut conn, _, timeouts) = guarded(server);
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        });
        for _ in 0..30 {
            if client.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(11));
        assert_eq!(timeouts.head.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_on_a_new_connection_is_closed_at_the_head_deadline() {
        let (_client, server) = tokio::io::duplex(1024);
        let (mut conn, _, timeouts) = guarded(server);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        assert!(conn.read(&mut buf).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(timeouts.head.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_deadline_while_a_request_is_handled_then_the_idle_one() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut conn, phase, timeouts) = guarded(server);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 18);
        phase.request_started();
        // A long handler (reading nothing more): no deadline of the socket's.
        let read = tokio::time::timeout(Duration::from_secs(300), conn.read(&mut buf)).await;
        assert!(read.is_err(), "still waiting after 300 s");
        assert_eq!(timeouts.head.get(), 0);
        phase.answered();
        // Back to waiting: closed (end of stream) after the idle timeout.
        let started = Instant::now();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(timeouts.idle.get(), 1);
        // The next request's first byte would have started a head deadline.
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_left_pending_during_a_request_gets_the_idle_deadline_once_answered() {
        let (_client, server) = tokio::io::duplex(1024);
        let (mut conn, phase, timeouts) = guarded(server);
        phase.request_started();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = conn.read(&mut buf).await.unwrap();
            (n, Instant::now())
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!reader.is_finished(), "no deadline while the request runs");
        let answered = Instant::now();
        phase.answered();
        let (n, closed) = tokio::time::timeout(Duration::from_secs(3600), reader)
            .await
            .expect("the pending read was woken")
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(closed - answered, Duration::from_secs(30));
        assert_eq!(timeouts.idle.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_request_gets_the_head_deadline_from_its_first_byte() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut conn, phase, timeouts) = guarded(server);
        phase.request_started();
        phase.answered();
        let mut buf = [0u8; 64];
        let reader = tokio::spawn(async move {
            let n = conn.read(&mut buf).await.unwrap();
            let started = Instant::now();
            let err = conn.read(&mut buf).await.unwrap_err();
            (n, started.elapsed(), err.kind())
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"POS").await.unwrap();
        let (n, waited, kind) = reader.await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(waited, Duration::from_secs(10));
        assert_eq!(timeouts.head.get(), 1);
        assert_eq!(timeouts.idle.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_of_its_answer_is_dropped() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut conn, _, timeouts) = guarded(server);
        let started = Instant::now();
        let err = conn.write_all(&[b'x'; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(timeouts.write.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_with_body_timeout() {
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
        let counter = Counter::default();
        let mut timed = TimedBody::new(body, Duration::from_secs(30), counter.clone());
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        let first = std::future::poll_fn(|cx| Pin::new(&mut timed).poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "part");
        let started = Instant::now();
        let err = std::future::poll_fn(|cx| Pin::new(&mut timed).poll_frame(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert!(crate::ingress::is_body_timeout(err.as_ref()));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(counter.get(), 1);
        drop(tx);
    }
}
