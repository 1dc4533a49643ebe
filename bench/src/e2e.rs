//! `switchyard-bench e2e`: from a webhook entering Switchyard to the http
//! action's request arriving at a receiver, at a steady rate (open loop:
//! requests leave on schedule whether or not earlier ones are answered, so
//! queueing shows up as latency).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::{read_response, request, Signing};

type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

/// The `inv_<n>` number in a forwarded body.
fn invoice_number(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let i = text.find("inv_")? + 4;
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn receiver(listener: TcpListener, sent: Sent, latencies: Arc<Mutex<Vec<u32>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (sent, latencies) = (sent.clone(), latencies.clone());
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let arrived = Instant::now();
                    if let Some(n) = invoice_number(&body) {
                        if let Some(at) = sent.lock().unwrap().remove(&n) {
                            latencies
                                .lock()
                                .unwrap()
                                .push(arrived.duration_since(at).as_micros() as u32);
                        }
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn run(
    url: String,
    secret: String,
    listen: SocketAddr,
    rate: u64,
    seconds: u64,
    connections: usize,
) -> Result<()> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h.to_string(), format!("/{p}")))
        .unwrap_or((rest.to_string(), "/".into()));
    let addr: SocketAddr = host.parse().context("the URL's host must be IP:port")?;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let listener = TcpListener::bind(listen).await?;
    tokio::spawn(receiver(listener, sent.clone(), latencies.clone()));

    let (tx, rx) = async_channel(rate as usize * seconds as usize + 16);
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let secret = Arc::new(secret.into_bytes());
    let mut senders = Vec::new();
    for _ in 0..connections {
        let (rx, host, path, secret) = (rx.clone(), host.clone(), path.clone(), secret.clone());
        let (accepted, failed) = (accepted.clone(), failed.clone());
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(4096);
            while let Ok(n) = rx.recv().await {
                let req = request(n, &host, &path, Signing::Tight, &secret, 1024);
                stream.write_all(&req).await?;
                match read_response(&mut stream, &mut buf).await {
                    Ok(s) if (200..300).contains(&s) => accepted.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => failed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        stream = TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                        0
                    }
                };
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    // The schedule: `rate` per second, in 1 ms ticks.
    let base = 1_000_000 + (std::process::id() as u64 % 1000) * 10_000_000;
    let total = rate * seconds;
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let n = base + i;
        sent.lock().unwrap().insert(n, due);
        let _ = tx.send(n).await;
    }
    tx.close();
    for s in senders {
        let _ = s.await;
    }
    // Let the last actions arrive (bounded).
    let wait_until = Instant::now() + Duration::from_secs(15);
    while latencies.lock().unwrap().len() < accepted.load(Ordering::Relaxed) as usize
        && Instant::now() < wait_until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "rate": rate, "seconds": seconds, "sent": total,
            "accepted": accepted.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed),
            "delivered": lat.len(), "delivered_per_s": (lat.len() as f64 / elapsed).round(),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        })
    );
    Ok(())
}

/// A small multi-consumer channel over tokio's primitives.
fn async_channel(cap: usize) -> (Tx, Rx) {
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(cap.max(1));
    let rx = Rx(Arc::new(tokio::sync::Mutex::new(rx)));
    (Tx(Some(tx)), rx)
}

struct Tx(Option<tokio::sync::mpsc::Sender<u64>>);

impl Tx {
    async fn send(&self, n: u64) -> Result<(), ()> {
        match &self.0 {
            Some(tx) => tx.send(n).await.map_err(|_| ()),
            None => Err(()),
        }
    }
    fn close(mut self) {
        self.0.take();
    }
}

#[derive(Clone)]
struct Rx(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>>);

impl Rx {
    async fn recv(&self) -> Result<u64, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}
