//! `switchyard-bench e2e`: from a webhook entering Switchyard to the http
//! action's request arriving at a receiver, at a steady rate (open loop:
//! requests leave on schedule whether or not earlier ones are answered, so
//! queueing shows up as latency). Several instances' hooks may be given:
//! the connections are spread over them, in turn. The first second is a
//! warm-up, not timed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::{read_response, request, serve, split_url, Signing};

type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

/// The `inv_<n>` number in a forwarded body.
fn invoice_number(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let i = text.find("inv_")? + 4;
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Answers every request at once, noting how long its event took.
fn receive(sent: &Sent, latencies: &Mutex<Vec<u32>>, body: &[u8]) {
    let arrived = Instant::now();
    if let Some(n) = invoice_number(body) {
        if let Some(at) = sent.lock().unwrap().remove(&n) {
            latencies
                .lock()
                .unwrap()
                .push(arrived.duration_since(at).as_micros() as u32);
        }
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
    let targets = url.split(',').map(split_url).collect::<Result<Vec<_>>>()?;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let listener = TcpListener::bind(listen).await?;
    {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tokio::spawn(serve(listener, move |_, body| {
            receive(&sent, &latencies, body);
            (hyper::StatusCode::OK, b"ok")
        }));
    }

    // The schedule's numbers, shared by the connections: each takes the next.
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(rate as usize * seconds as usize + 16);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let secret = Arc::new(secret.into_bytes());
    let mut senders = Vec::new();
    // Request numbers start from the process id (see `load`); the first
    // second's are the warm-up's.
    let base = 1_000_000 + (std::process::id() as u64 % 1000) * 10_000_000;
    let first_timed = base + rate;
    for c in 0..connections {
        let (addr, host, path) = targets[c % targets.len()].clone();
        let (rx, secret) = (rx.clone(), secret.clone());
        let (accepted, failed) = (accepted.clone(), failed.clone());
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(4096);
            loop {
                let Some(n) = rx.lock().await.recv().await else {
                    break;
                };
                let req = request(n, &host, &path, Signing::Tight, &secret, 1024);
                stream.write_all(&req).await?;
                let counted = n >= first_timed;
                match read_response(&mut stream, &mut buf).await {
                    Ok(s) if (200..300).contains(&s) && counted => {
                        accepted.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(s) if (200..300).contains(&s) => 0,
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
    // The schedule: `rate` per second, in 1 ms ticks. The first second is
    // a warm-up (connections opened, threads started, on both sides): its
    // webhooks are sent and delivered like the others, but neither timed
    // nor counted.
    let warmup = rate;
    let total = rate * seconds;
    let started = Instant::now();
    let mut timed_from = started;
    for i in 0..warmup + total {
        let due = started + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let n = base + i;
        if i == warmup {
            timed_from = due;
        }
        if i >= warmup {
            sent.lock().unwrap().insert(n, due);
        }
        let _ = tx.send(n).await;
    }
    drop(tx);
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
    let elapsed = timed_from.elapsed().as_secs_f64();
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
