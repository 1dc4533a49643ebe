//! `switchyard-bench restart`: what a restart costs a provider.
//!
//! Signed Tight webhooks go out at a steady rate, each on a new connection
//! (as providers send them), while the daemon is stopped with SIGTERM and
//! started again, a number of times. With `--inherit` the listening socket
//! is held by this program and passed to each daemon as systemd passes
//! `switchyard.socket` (`LISTEN_FDS`, `LISTEN_FDNAMES=webhooks`), so
//! connections made between two daemons wait in its backlog; without it
//! each daemon binds `listen` itself, as it does started by hand.
//!
//! Prints one JSON line: webhooks sent, answered 2xx, refused connections,
//! other failures (non-2xx, reset), latency p50/p99/max, and how long each
//! restart took (SIGTERM to the new daemon answering `/healthz`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::{read_response, request, Signing};

/// How long one webhook may take before it counts as failed.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long a daemon may take to answer `/healthz` after it is started.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Options {
    /// The switchyard binary.
    #[arg(long)]
    pub daemon: PathBuf,
    /// Its config: a `tight` source, `listen` the same as --listen.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:18095")]
    pub listen: SocketAddr,
    #[arg(long)]
    pub secret: String,
    /// Webhooks per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 3)]
    pub restarts: u32,
    /// Hold the socket and pass it to each daemon, as switchyard.socket does.
    #[arg(long)]
    pub inherit: bool,
}

enum Outcome {
    Ok(Duration),
    Refused,
    /// What went wrong: the status, or where the connection failed.
    Failed(String),
}

pub async fn run(o: Options) -> Result<()> {
    let socket = if o.inherit {
        let s = std::net::TcpListener::bind(o.listen).context("binding the socket to pass")?;
        // As switchyard.socket's Backlog=; a second listen(2) sets it.
        // SAFETY: a valid listening socket's descriptor.
        unsafe { libc::listen(s.as_raw_fd(), 4096) };
        Some(s)
    } else {
        None
    };
    let mut daemon = start(&o.daemon, &o.config, socket.as_ref())?;
    ready(o.listen).await?;

    let (host, path) = (o.listen.to_string(), "/hooks/tight".to_string());
    let secret = Arc::new(o.secret.into_bytes());
    let started = Instant::now();
    let total = o.rate * o.seconds;
    let every = Duration::from_secs_f64(1.0 / o.rate as f64);
    let sender = {
        let (host, path, secret) = (host.clone(), path.clone(), secret.clone());
        let addr = o.listen;
        let base = u64::from(std::process::id()) << 32;
        tokio::spawn(async move {
            let mut tasks = Vec::with_capacity(total as usize);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for n in 0..total {
                tick.tick().await;
                let req = request(base | n, &host, &path, Signing::Tight, &secret, 1024);
                tasks.push(tokio::spawn(one(addr, req)));
            }
            let mut outcomes = Vec::with_capacity(tasks.len());
            for t in tasks {
                outcomes.push(t.await.unwrap_or_else(|e| Outcome::Failed(e.to_string())));
            }
            outcomes
        })
    };

    let mut gaps = Vec::new();
    for i in 1..=o.restarts {
        let at =
            Duration::from_secs_f64(o.seconds as f64 * f64::from(i) / f64::from(o.restarts + 1));
        tokio::time::sleep_until((started + at).into()).await;
        let t0 = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let status = tokio::task::spawn_blocking(move || daemon.wait()).await??;
        if !status.success() {
            bail!("the daemon stopped with {status}");
        }
        daemon = start(&o.daemon, &o.config, socket.as_ref())?;
        ready(o.listen).await?;
        gaps.push(t0.elapsed());
    }

    let outcomes = sender.await?;
    let _ = unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = tokio::task::spawn_blocking(move || daemon.wait()).await?;

    let mut latencies: Vec<Duration> = Vec::new();
    let mut refused = 0u64;
    let mut failed: std::collections::BTreeMap<&str, u64> = Default::default();
    for outcome in &outcomes {
        match outcome {
            Outcome::Ok(d) => latencies.push(*d),
            Outcome::Refused => refused += 1,
            Outcome::Failed(why) => *failed.entry(why).or_default() += 1,
        }
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| ms(*d))
    };
    // The mean restart; 0 without any (an empty f64 sum is -0).
    let gap = if gaps.is_empty() {
        0.0
    } else {
        gaps.iter().map(|d| ms(*d)).sum::<f64>() / gaps.len() as f64
    };
    println!(
        "{{\"socket\":\"{}\",\"rate\":{},\"restarts\":{},\"sent\":{},\"ok\":{},\"refused\":{refused},\"failed\":{},\"failures\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.1},\"restart_ms\":{gap:.0}}}",
        if o.inherit { "inherited" } else { "bound by the daemon" },
        o.rate,
        o.restarts,
        outcomes.len(),
        latencies.len(),
        failed.values().sum::<u64>(),
        serde_json::to_string(&failed)?,
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0.0, |d| ms(*d)),
    );
    Ok(())
}

/// One webhook on a connection of its own.
async fn one(addr: SocketAddr, req: Vec<u8>) -> Outcome {
    let start = Instant::now();
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        Err(e) => return Outcome::Failed(format!("connect: {}", e.kind())),
    };
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.write_all(&req).await {
        return Outcome::Failed(format!("write: {}", e.kind()));
    }
    let mut buf = Vec::with_capacity(1024);
    match tokio::time::timeout(ANSWER_WITHIN, read_response(&mut stream, &mut buf)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Outcome::Ok(start.elapsed()),
        Ok(Ok(status)) => Outcome::Failed(format!("status {status}")),
        Ok(Err(e)) => Outcome::Failed(format!("read: {e}")),
        Err(_) => Outcome::Failed("no answer within 30 s".into()),
    }
}

/// Starts the daemon, on `socket` when given (as systemd passes it).
fn start(daemon: &Path, config: &Path, socket: Option<&std::net::TcpListener>) -> Result<Child> {
    let mut cmd = match socket {
        Some(socket) => switchyard::listener::activation::passing(daemon, socket),
        None => Command::new(daemon),
    };
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null());
    cmd.spawn().context("starting the daemon")
}

/// Waits until the daemon answers `GET /healthz` with 200.
async fn ready(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        let probe = async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await?;
            let mut buf = Vec::new();
            read_response(&mut s, &mut buf).await
        };
        if let Ok(Ok(200)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the daemon did not answer /healthz within {READY_WITHIN:?}")
}
