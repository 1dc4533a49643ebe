//! `switchyard-bench soak`: a steady load on a daemon whose retention is
//! short, so that pruning runs all along, reported slice by slice.
//!
//! Keep-alive connections send distinct signed webhooks back to back
//! (closed loop) for `slices × slice_seconds`. At the end of each slice one
//! JSON line says how many were answered 2xx and otherwise, the store's
//! size on disk (every file under the data dir: database, WAL, journal),
//! and the longest group commit of the slice as the upper bound of the
//! highest `switchyard_store_commit_seconds` bucket that grew. A summary
//! line ends the run: the first slice's rate, the lowest after it, their
//! ratio, the largest store and the longest commit.
//!
//! A request that gets no answer within `ANSWER_WITHIN` counts as failed
//! and its connection is made anew, so a stalled daemon shows as slices of
//! zero, not as a hang of the benchmark.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{read_response, request, split_url, Signing};

const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Options {
    /// Where to post, e.g. http://127.0.0.1:8080/hooks/partner
    #[arg(long)]
    pub url: String,
    /// The daemon's metrics, e.g. http://127.0.0.1:8080/metrics
    #[arg(long)]
    pub metrics: String,
    /// The daemon's data_dir, whose files are the store.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "hmac")]
    pub signing: Signing,
    #[arg(long)]
    pub secret: String,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 12)]
    pub slices: u32,
    #[arg(long, default_value_t = 10)]
    pub slice_seconds: u64,
}

pub async fn run(o: Options) -> Result<()> {
    let (addr, host, path) = split_url(&o.url)?;
    let secret = Arc::new(o.secret.clone().into_bytes());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(crate::first_number()));
    let total = Duration::from_secs(o.slice_seconds * u64::from(o.slices));
    let deadline = Instant::now() + total;
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let (host, path, secret, counter, ok, failed) = (
            host.clone(),
            path.clone(),
            secret.clone(),
            counter.clone(),
            ok.clone(),
            failed.clone(),
        );
        let signing = o.signing;
        tasks.push(tokio::spawn(async move {
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(8192);
            while Instant::now() < deadline {
                let s = match stream.as_mut() {
                    Some(s) => s,
                    None => match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            stream.insert(s)
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let req = request(n, &host, &path, signing, &secret, 1024);
                let answered = tokio::time::timeout(ANSWER_WITHIN, async {
                    s.write_all(&req).await?;
                    read_response(s, &mut buf).await
                })
                .await;
                match answered {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                    }
                }
            }
        }));
    }
    let mut buckets = commit_buckets(&o.metrics).await.unwrap_or_default();
    let (mut last_ok, mut last_failed) = (0, 0);
    let mut rates = Vec::new();
    let mut largest = 0u64;
    let mut longest = 0f64;
    let start = Instant::now();
    for slice in 1..=o.slices {
        let end = start + Duration::from_secs(o.slice_seconds * u64::from(slice));
        tokio::time::sleep_until(end.into()).await;
        let (now_ok, now_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        let rps = (now_ok - last_ok) as f64 / o.slice_seconds as f64;
        let bytes = dir_bytes(&o.data_dir);
        let now_buckets = commit_buckets(&o.metrics).await.unwrap_or_default();
        let commit = longest_grown(&buckets, &now_buckets);
        println!(
            "{{\"slice\":{slice},\"t_s\":{},\"ok\":{},\"failed\":{},\"rps\":{rps:.0},\"store_mib\":{:.1},\"longest_commit_ms\":{}}}",
            o.slice_seconds * u64::from(slice),
            now_ok - last_ok,
            now_failed - last_failed,
            bytes as f64 / 1048576.0,
            match commit {
                Some(s) if s.is_finite() => format!("{:.1}", s * 1000.0),
                Some(_) => "\"over the largest bucket\"".into(),
                None => "null".into(),
            }
        );
        rates.push(rps);
        largest = largest.max(bytes);
        if let Some(s) = commit {
            longest = longest.max(s);
        }
        (last_ok, last_failed, buckets) = (now_ok, now_failed, now_buckets);
    }
    for t in tasks {
        let _ = t.await;
    }
    let first = rates.first().copied().unwrap_or(0.0);
    let lowest = rates.iter().skip(1).copied().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"summary\":true,\"first_rps\":{first:.0},\"lowest_later_rps\":{lowest:.0},\"lowest_over_first\":{:.2},\"largest_store_mib\":{:.1},\"longest_commit_ms\":{:.1}}}",
        if first > 0.0 { lowest / first } else { 0.0 },
        largest as f64 / 1048576.0,
        longest * 1000.0
    );
    Ok(())
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The commit histogram's cumulative bucket counts, by upper bound.
async fn commit_buckets(url: &str) -> Result<Vec<(f64, u64)>> {
    let text = get(url).await?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("switchyard_store_commit_seconds_bucket{") else {
            continue;
        };
        let Some((labels, count)) = rest.split_once("} ") else {
            continue;
        };
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
            .context("a bucket without le")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        out.push((le, count.trim().parse::<f64>()? as u64));
    }
    Ok(out)
}

/// The upper bound of the smallest bucket holding every commit made
/// between the two readings (None: no commit).
fn longest_grown(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let count = |b: &[(f64, u64)], le: f64| {
        b.iter()
            .find(|(l, _)| *l == le)
            .map(|(_, c)| *c)
            .unwrap_or(0)
    };
    let all = count(after, f64::INFINITY).saturating_sub(count(before, f64::INFINITY));
    if all == 0 {
        return None;
    }
    after
        .iter()
        .find(|(le, c)| c.saturating_sub(count(before, *le)) == all)
        .map(|(le, _)| *le)
}

/// A plain HTTP/1.1 GET; the body.
async fn get(url: &str) -> Result<String> {
    let (addr, host, path) = split_url(url)?;
    let mut s = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(addr)).await??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
