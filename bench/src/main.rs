//! `switchyard-bench`: the pieces of the ingest benchmark (see bench/README.md).
//!
//! - `ceiling`: a minimal hyper server that only checks an HMAC-SHA256 of the
//!   body and answers 200: the most this machine can do per request.
//! - `load`: a closed-loop HTTP/1.1 load generator. Each connection sends
//!   distinct 1 KiB Tight LIFECYCLE webhooks back to back, signed either as
//!   Tight does (a `Tight-Verification` JWT) or with a plain body HMAC
//!   (`X-Signature: sha256=<hex>`), and records every latency.
//! - `rules`: routing cost with 1, 100 and 1,000 rule files where one rule
//!   matches, and reload times (see `rules.rs`).
//! - `restart`: a steady stream of webhooks while the daemon is restarted,
//!   on a socket it inherits or binds itself (see `restart.rs`).
//! - `soak`: a steady load on a daemon with a short retention, reported per
//!   slice: throughput, store size, longest commit (see `soak.rs`).

mod broker;
mod e2e;
mod listing;
mod restart;
mod rules;
mod soak;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Ingest benchmark: load generator and reference server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum Signing {
    /// Tight-Verification JWT (HS256, iat, request_body_sha256).
    Tight,
    /// X-Signature: sha256=<hex HMAC-SHA256 of the body>.
    Hmac,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST requests with an empty 200: a stand-in for an OTLP/HTTP
    /// trace collector (an empty body is an empty ExportTraceServiceResponse).
    Sink {
        #[arg(long, default_value = "127.0.0.1:4318")]
        listen: SocketAddr,
    },
    /// Serve POST requests checking X-Signature (HMAC-SHA256 of the body).
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        #[arg(long)]
        secret: String,
    },
    /// Send signed webhooks for a while and report throughput and latency.
    Load {
        /// Where to post, e.g. http://127.0.0.1:8080/hooks/tight
        #[arg(long)]
        url: String,
        #[arg(long, value_enum)]
        signing: Signing,
        #[arg(long)]
        secret: String,
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// A label for the result line.
        #[arg(long, default_value = "target")]
        label: String,
    },
    /// Send Tight webhooks at a steady rate to Switchyard, receive its http
    /// action's requests, and report delivery latency.
    E2e {
        /// Switchyard's hook, e.g. http://127.0.0.1:18080/hooks/tight; several
        /// instances' hooks comma-separated, the connections spread over them.
        #[arg(long)]
        url: String,
        #[arg(long)]
        secret: String,
        /// Where the http action posts to.
        #[arg(long, default_value = "127.0.0.1:19200")]
        listen: SocketAddr,
        /// Webhooks per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// Route one event through 1, 100 and 1,000 rule files (one matches);
    /// report median and p99 per routing and the reload times.
    Rules {
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
    },
    /// List events from an embedded store of this many: the newest page, a
    /// page far back, and the dashboard's filters.
    List {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Send Tight webhooks at a steady rate, a new connection each, while
    /// the daemon is restarted; report refused connections and latency.
    Restart(restart::Options),
    /// The queue benchmark's broker side: make the queue or stream, read
    /// its depth, or measure the broker's own publish rate.
    Broker(broker::Options),
    /// Keep-alive connections sending for a while, reported per slice:
    /// throughput, store size and longest commit (pruning runs meanwhile
    /// when the daemon's retention is short).
    Soak(soak::Options),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Rules { iterations } => rules::run(iterations),
        Command::List { events } => listing::run(events),
        Command::Restart(options) => one_worker()?.block_on(restart::run(options)),
        Command::Soak(options) => one_worker()?.block_on(soak::run(options)),
        Command::Broker(options) => one_worker()?.block_on(broker::run(options)),
        Command::E2e {
            url,
            secret,
            listen,
            rate,
            seconds,
            connections,
        } => one_worker()?.block_on(e2e::run(url, secret, listen, rate, seconds, connections)),
        Command::Sink { listen } => one_worker()?.block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            println!("sink listening on {}", listener.local_addr()?);
            serve(listener, |_, _| (hyper::StatusCode::OK, b"")).await
        }),
        Command::Ceiling { listen, secret } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(ceiling(listen, secret))
        }
        Command::Load {
            url,
            signing,
            secret,
            connections,
            seconds,
            body_bytes,
            label,
        } => {
            // One thread: the generator should take as little of the machine as it can.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load(
                url,
                signing,
                secret,
                connections,
                seconds,
                body_bytes,
                label,
            ))
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// A runtime of one worker thread (and a blocking pool): a generator that
/// takes as little of the machine as it can.
fn one_worker() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// Serves HTTP/1.1 on `listener`: each request's headers and whole body go
/// to `handle`, whose status and body are the answer.
pub(crate) async fn serve<F>(listener: TcpListener, handle: F) -> Result<()>
where
    F: Fn(&hyper::HeaderMap, &[u8]) -> (hyper::StatusCode, &'static [u8]) + Send + Sync + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    let handle = Arc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let (status, answer) = handle(&parts.headers, &body);
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(bytes::Bytes::from_static(answer)))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn ceiling(listen: SocketAddr, secret: String) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("ceiling listening on {}", listener.local_addr()?);
    let secret = secret.into_bytes();
    serve(listener, move |headers, body| {
        let sig = headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="));
        let mut mac = HmacSha256::new_from_slice(&secret).expect("any key length");
        mac.update(body);
        let ok = sig
            .and_then(|s| hex::decode(s).ok())
            .is_some_and(|bytes| mac.verify_slice(&bytes).is_ok());
        let status = if ok {
            hyper::StatusCode::OK
        } else {
            hyper::StatusCode::UNAUTHORIZED
        };
        (status, b"{}")
    })
    .await
}

/// `http://IP:PORT/path` → (address, `IP:PORT` for the Host header, path).
pub(crate) fn split_url(url: &str) -> Result<(SocketAddr, String, String)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h.to_string(), format!("/{p}")))
        .unwrap_or((rest.to_string(), "/".into()));
    let addr: SocketAddr = host
        .parse()
        .context("the URL's host must be an IP:port on this machine")?;
    Ok((addr, host, path))
}

/// Words the padding of a body is made of: text as a webhook's notes and
/// descriptions carry it, which compresses as such text does (a run of one
/// letter would make compression look far better than it is).
const WORDS: [&str; 32] = [
    "invoice",
    "client",
    "viewed",
    "payment",
    "due",
    "the",
    "of",
    "and",
    "to",
    "for",
    "order",
    "line",
    "amount",
    "total",
    "tax",
    "net",
    "kr",
    "EUR",
    "project",
    "hours",
    "consulting",
    "delivered",
    "March",
    "April",
    "reminder",
    "sent",
    "overdue",
    "account",
    "Oslo",
    "Bergen",
    "ref",
    "note",
];

/// `len` bytes of words picked by a generator seeded with `n`: each body's
/// padding its own.
fn padding(n: u64, len: usize) -> String {
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        out.push(' ');
        if state.is_multiple_of(11) {
            out.push_str(&(state % 100_000).to_string());
            out.push(' ');
        }
    }
    out.truncate(len);
    out
}

/// Builds the n-th request: a distinct 1 KiB LIFECYCLE body, signed.
fn request(
    n: u64,
    host: &str,
    path: &str,
    signing: Signing,
    secret: &[u8],
    body_bytes: usize,
) -> Vec<u8> {
    let head = format!(
        r#"{{"editor":{{"userId":"usr_bench"}},"company":{{"id":"co_bench"}},"type":"LIFECYCLE","event":"invoiceViewed","datetime":"2025-04-01T11:31:04.1Z","eventData":{{"entityId":"inv_{n}","padding":""#
    );
    let tail = r#""}}"#;
    let pad = body_bytes.saturating_sub(head.len() + tail.len());
    let body = format!("{head}{}{tail}", padding(n, pad));
    let auth = match signing {
        Signing::Tight => {
            let iat = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let claims = serde_json::json!({
                "iat": iat,
                "request_body_sha256": base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes())),
            });
            let jwt = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .expect("sign");
            format!("Tight-Verification: {jwt}\r\n")
        }
        Signing::Hmac => {
            let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
            mac.update(body.as_bytes());
            format!(
                "X-Signature: sha256={}\r\n",
                hex::encode(mac.finalize().into_bytes())
            )
        }
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The number the first request's body is made from: distinct across the
/// load processes of one run too (their pids), or two of them started in
/// the same clock tick would send the same bodies, which the daemon
/// rightly takes for duplicate deliveries.
pub(crate) fn first_number() -> u64 {
    let low = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        % (1 << 31);
    (u64::from(std::process::id()) << 32) | low
}

/// Reads one HTTP/1.1 response; returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).context("response head")?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

#[allow(clippy::too_many_arguments)]
async fn load(
    url: String,
    signing: Signing,
    secret: String,
    connections: usize,
    seconds: u64,
    body_bytes: usize,
    label: String,
) -> Result<()> {
    let (addr, host, path) = split_url(&url)?;
    let secret = Arc::new(secret.into_bytes());
    let counter = Arc::new(AtomicU64::new(first_number()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (host, path, secret, counter) =
            (host.clone(), path.clone(), secret.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(100_000);
            let mut failures = 0u64;
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let req = request(n, &host, &path, signing, &secret, body_bytes);
                let start = Instant::now();
                stream.write_all(&req).await?;
                match read_response(&mut stream, &mut buf).await {
                    Ok(status) if (200..300).contains(&status) => {
                        latencies.push(start.elapsed().as_micros() as u32)
                    }
                    Ok(_) => failures += 1,
                    Err(_) => {
                        failures += 1;
                        stream = TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, failures))
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (lat, f) = t.await??;
        all.extend(lat);
        failures += f;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
    };
    let rps = all.len() as f64 / seconds as f64;
    println!(
        "{{\"label\":\"{label}\",\"connections\":{connections},\"ok\":{},\"failed\":{failures},\"rps\":{rps:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        all.len(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
