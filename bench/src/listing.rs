//! `switchyard-bench list`: what listing events costs in a store of a
//! million — the newest page, a page deep in the past (by id), and the
//! dashboard's filters: a common and a rare source, a type prefix, a
//! payload field — each the median of five calls, and as a ratio to the
//! newest page measured in the same run.
//!
//! The store is made by the embedded backend and filled through its own
//! ingest, as a long-running daemon's would look.

use std::time::{Duration, Instant};

use anyhow::Result;
use switchyard::admin::ops;
use switchyard::event::Event;
use switchyard::store::{
    Durability, EventFilter, FieldMatch, Operations, Pipeline, SqliteStore, StoreOptions,
    StoredRequest,
};

/// The dashboard's search window.
const WINDOW: usize = 100_000;

const SOURCES: [(&str, u32); 4] = [
    ("tight", 700),
    ("teal", 200),
    ("tripletex", 99),
    ("rare", 1),
];

/// Fills the store through its own ingest (relaxed durability, 512 at a
/// time), as a daemon's store is made — each request's record in the
/// journal, the events' envelopes there — then marks every event routed
/// in one statement.
fn fill(path: &std::path::Path, n: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = std::sync::Arc::new(SqliteStore::open(
        path,
        StoreOptions {
            durability: Durability::Relaxed,
            ..Default::default()
        },
    )?);
    let start_ms: u64 = 1_700_000_000_000;
    rt.block_on(async {
        let mut running = tokio::task::JoinSet::new();
        for i in 0..n {
            if running.len() >= 512 {
                running.join_next().await.expect("one runs")??;
            }
            let slot = (i as u32 * 7919) % 1000;
            let mut acc = 0;
            let source = SOURCES
                .iter()
                .find(|(_, share)| {
                    acc += share;
                    slot < acc
                })
                .map_or("tight", |(s, _)| s);
            let kind = format!(
                "{source}.{}",
                ["invoiceViewed", "invoicePaid", "clientCreated"][i % 3]
            );
            // A second of event time per 100 events: a long-running daemon's spread.
            let ms = start_ms + (i as u64) * 10;
            let id = ulid::Ulid::from_parts(ms, i as u128).to_string();
            let data = serde_json::json!({
                "invoice": {"id": format!("inv_{i}"), "amount": i % 1000}, "company": {"id": "co_1"}
            });
            let request = StoredRequest {
                id: ulid::Ulid::from_parts(ms, i as u128 + (1 << 64)).to_string(),
                source: source.into(),
                received_at_ms: ms as i64,
                method: "POST".into(),
                path: format!("/hooks/{source}"),
                query: String::new(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: bytes::Bytes::from(data.to_string()),
            };
            let event = Event {
                id,
                source: source.into(),
                kind,
                subject: None,
                time: "2025-04-01T11:31:04Z".into(),
                data,
                provider: source.into(),
                dedup_key: format!("k{i}"),
                received_at: "2025-04-01T11:31:04Z".into(),
                extensions: Default::default(),
                order: None,
                handshake: false,
            };
            let store = store.clone();
            running.spawn(async move { store.ingest(request, &[event], 60_000).await.map(drop) });
        }
        while let Some(done) = running.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    drop(rt);
    std::sync::Arc::into_inner(store)
        .expect("every ingest has ended")
        .close();
    let conn = rusqlite::Connection::open(path)?;
    conn.execute(
        "UPDATE events SET state = 'routed', routings = 1, routed_at = received_at",
        [],
    )?;
    Ok(())
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

pub fn run(events: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.db");
    let started = Instant::now();
    fill(&path, events)?;
    println!(
        "filled {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store = SqliteStore::open(&path, StoreOptions::default())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let page = |f: EventFilter| EventFilter { limit: 100, ..f };
    let middle =
        ulid::Ulid::from_parts(1_700_000_000_000 + (events as u64 / 2) * 10, 0).to_string();
    let cases: Vec<(&str, EventFilter)> = vec![
        ("newest page", page(EventFilter::default())),
        (
            "a page half way back (before=id)",
            page(EventFilter {
                before: Some(middle),
                ..Default::default()
            }),
        ),
        (
            "source, 20% of events",
            page(EventFilter {
                source: Some("teal".into()),
                ..Default::default()
            }),
        ),
        (
            "source, 0.1% of events",
            page(EventFilter {
                source: Some("rare".into()),
                ..Default::default()
            }),
        ),
        (
            "type prefix tripletex.*",
            page(EventFilter {
                kind: Some("tripletex.*".into()),
                ..Default::default()
            }),
        ),
        (
            "payload field, 1 match",
            page(EventFilter {
                field: Some(
                    FieldMatch::parse("data.invoice.id=inv_17").map_err(anyhow::Error::msg)?,
                ),
                ..Default::default()
            }),
        ),
        (
            "payload field, 0.1% match",
            page(EventFilter {
                field: Some(
                    FieldMatch::parse("data.invoice.amount=7").map_err(anyhow::Error::msg)?,
                ),
                ..Default::default()
            }),
        ),
        (
            "state dead (none)",
            page(EventFilter {
                state: Some("dead".into()),
                ..Default::default()
            }),
        ),
    ];
    let mut reference = None;
    println!(
        "| listing ({events} events, 100 a page) | whole store: median | vs newest page | found \
         | dashboard (search window {WINDOW}): median | vs newest page | found |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, filter) in cases {
        let mut whole = Vec::new();
        let mut windowed = Vec::new();
        let (mut found, mut found_windowed) = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            found = rt.block_on(store.list_events(filter.clone()))?.len();
            whole.push(t.elapsed());
            let t = Instant::now();
            found_windowed = rt
                .block_on(ops::event_page(&store, filter.clone(), WINDOW))?
                .events
                .len();
            windowed.push(t.elapsed());
        }
        let (m, w) = (median(whole), median(windowed));
        let base = *reference.get_or_insert(m);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.2} ms | {:.0}x | {found} | {:.2} ms | {:.0}x | {found_windowed} |",
            ms(m),
            m.as_secs_f64() / base.as_secs_f64(),
            ms(w),
            w.as_secs_f64() / base.as_secs_f64()
        );
    }
    Ok(())
}
