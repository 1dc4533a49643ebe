//! Sending finished spans without ever holding up a webhook: a bounded
//! queue that a span joins without waiting (a full queue drops it, and
//! counts it), emptied by a thread of its own that sends batches to the
//! collector through the OTLP exporter. A collector that is down or slow
//! costs dropped spans, counted, never a webhook's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Spans in one request to the collector at most.
const BATCH: usize = 512;
/// A span waits this long at most for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);

/// What the queue did with spans: sent, and dropped (queue full, or the
/// collector refused or did not answer).
#[derive(Debug, Default)]
pub struct Counts {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

enum Item {
    Span(Box<SpanData>),
    /// What the spans come from (the service), told once at the start.
    Resource(Box<Resource>),
    /// Send what is queued, then say so.
    Flush(SyncSender<()>),
}

/// The span processor: hands each finished span to the sending thread.
#[derive(Debug)]
pub struct Bounded {
    queue: SyncSender<Item>,
    counts: Arc<Counts>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Item")
    }
}

impl Bounded {
    /// Starts the sending thread for `exporter`, with room for `capacity`
    /// spans.
    pub fn start<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
        counts: Arc<Counts>,
    ) -> std::io::Result<Bounded> {
        let (queue, rx) = sync_channel(capacity.max(1));
        let sender_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-traces".into())
            .spawn(move || send_loop(exporter, rx, &sender_counts))?;
        Ok(Bounded {
            queue,
            counts,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.queue.send(Item::Resource(Box::new(resource.clone())));
    }

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Item::Span(Box::new(span))).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Item::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Item::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
        // The thread ends when the processor (its queue's sender) goes.
        drop(self.thread.lock().map(|mut t| t.take()));
        Ok(())
    }
}

/// The sending thread: batches of at most [`BATCH`] spans, each sent once
/// it is full or [`LINGER`] after its first span, on a runtime of its own.
fn send_loop<E: SpanExporter>(mut exporter: E, rx: Receiver<Item>, counts: &Counts) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start the trace exporter; spans are dropped");
        return;
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut first_at: Option<Instant> = None;
    loop {
        let wait = first_at.map_or(Duration::from_secs(3600), |at| {
            LINGER.saturating_sub(at.elapsed())
        });
        match rx.recv_timeout(wait) {
            Ok(Item::Span(span)) => {
                first_at.get_or_insert_with(Instant::now);
                batch.push(*span);
                if batch.len() >= BATCH {
                    send(&runtime, &exporter, &mut batch, counts);
                    first_at = None;
                }
            }
            Ok(Item::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Item::Flush(done)) => {
                send(&runtime, &exporter, &mut batch, counts);
                first_at = None;
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&runtime, &exporter, &mut batch, counts);
                first_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&runtime, &exporter, &mut batch, counts);
                return;
            }
        }
    }
}

/// Sends one batch, counting its spans as sent or dropped.
fn send<E: SpanExporter>(
    runtime: &tokio::runtime::Runtime,
    exporter: &E,
    batch: &mut Vec<SpanData>,
    counts: &Counts,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match runtime.block_on(exporter.export(std::mem::take(batch))) {
        Ok(()) => counts.exported.fetch_add(n, Ordering::Relaxed),
        Err(e) => {
            tracing::debug!("the trace collector did not take {n} span(s): {e}");
            counts.dropped.fetch_add(n, Ordering::Relaxed)
        }
    };
}

/// The OTLP exporter's HTTP client: reqwest, as the daemon's own actions
/// use, with a deadline for the whole exchange.
#[derive(Debug, Clone)]
pub struct Client(pub reqwest::Client);

impl opentelemetry_http::HttpClient for Client {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        opentelemetry_http::Response<opentelemetry_http::Bytes>,
                        opentelemetry_http::HttpError,
                    >,
                > + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = self.0.execute(request).await?;
            let status = response.status();
            let body = response.bytes().await?;
            let mut answer = opentelemetry_http::Response::new(body);
            *answer.status_mut() = status;
            Ok(answer)
        })
    }
}
