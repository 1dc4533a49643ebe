//! Listing events by every filter the API, the CLI and the dashboard take,
//! the same on the embedded store and on PostgreSQL.

use serde_json::{json, Value};

use crate::pg::fresh_database;
use crate::pg_store::{event, request};
use switchyard::admin::ops;
use switchyard::store::{
    EventFilter, FieldMatch, Operations, PgOptions, PgStore, Pipeline, SqliteStore, Store,
    StoreOptions,
};

/// Takes in six events with different data; returns their ids, oldest first.
async fn six_events<S: Pipeline + Operations>(store: &S) -> Vec<String> {
    let data: [Value; 6] = [
        json!({"invoice": {"id": "inv_1", "amount": 10}, "paid": true}),
        json!({"invoice": {"id": "inv_2", "amount": 10.5}, "paid": false}),
        json!({"invoice": {"id": "inv_1", "amount": 12}, "lines": [{"sku": "a"}]}),
        json!({"invoice": {"id": "inv_3"}, "lines": [{"sku": "b"}, {"sku": "a"}]}),
        json!({"invoice": null}),
        json!({"invoice": {"id": "inv_1%"}, "who": "o'brien"}),
    ];
    let mut ids = Vec::new();
    for (i, d) in data.into_iter().enumerate() {
        let mut e = event(&switchyard::event::new_id(), &format!("key{i}"));
        e.data = d;
        if i == 3 {
            e.kind = "tight.invoice_paid".into();
        }
        store
            .ingest(request(&switchyard::event::new_id()), &[e.clone()], 60_000)
            .await
            .unwrap();
        ids.push(e.id);
        // Distinct milliseconds, so that ids sort as taken in.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    ids
}

async fn listed<S: Operations>(store: &S, filter: EventFilter) -> Vec<String> {
    store
        .list_events(filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn field(text: &str) -> EventFilter {
    EventFilter {
        field: Some(FieldMatch::parse(text).unwrap()),
        limit: 100,
        ..Default::default()
    }
}

async fn every_filter_lists_what_it_says<S: Pipeline + Operations>(store: &S) {
    let ids = six_events(store).await;
    let newest_first =
        |picks: &[usize]| -> Vec<String> { picks.iter().rev().map(|&i| ids[i].clone()).collect() };
    for (text, want) in [
        ("data.invoice.id=inv_1", vec![0, 2]),
        ("data.invoice.amount=10", vec![0]),
        ("data.invoice.amount=10.5", vec![1]),
        ("data.paid=true", vec![0]),
        ("data.paid=false", vec![1]),
        ("data.lines.0.sku=a", vec![2]),
        ("data.lines.1.sku=a", vec![3]),
        ("data.invoice.id=inv_1%", vec![5]),
        ("data.who=o'brien", vec![5]),
        ("data.invoice.id=nothing", vec![]),
        ("data.missing.id=inv_1", vec![]),
        ("source=tight", vec![0, 1, 2, 3, 4, 5]),
    ] {
        assert_eq!(
            listed(store, field(text)).await,
            newest_first(&want),
            "{text}"
        );
    }
    let kind = |k: &str| EventFilter {
        kind: Some(k.into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        listed(store, kind("tight.invoice_*")).await,
        newest_first(&[3])
    );
    assert_eq!(
        listed(store, kind("*.invoice_paid")).await,
        newest_first(&[3])
    );
    assert_eq!(listed(store, kind("?ight.invoice*")).await.len(), 6);
    assert_eq!(
        listed(store, kind("TIGHT.*")).await,
        newest_first(&[]),
        "case counts"
    );
    assert_eq!(
        listed(store, kind("tight.invoice[_]paid")).await,
        newest_first(&[]),
        "[ is a character"
    );
    // `_` and `%` are not wildcards.
    assert_eq!(
        listed(store, kind("tight.invoiceX*")).await,
        newest_first(&[])
    );
    let state = |s: &str| EventFilter {
        state: Some(s.into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(listed(store, state("routed")).await, newest_first(&[]));
    assert_eq!(listed(store, state("dead")).await, newest_first(&[]));
    assert_eq!(listed(store, state("pending")).await.len(), 6);

    // Pages of two, newest first, by `before`; then forward by `after`.
    let mut pages = Vec::new();
    let mut before = None;
    for _ in 0..4 {
        let page = listed(
            store,
            EventFilter {
                before: before.clone(),
                limit: 2,
                ..Default::default()
            },
        )
        .await;
        before = page.last().cloned();
        pages.extend(page);
    }
    assert_eq!(pages, newest_first(&[0, 1, 2, 3, 4, 5]));
    let forward = listed(
        store,
        EventFilter {
            after: Some(ids[3].clone()),
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(forward, vec![ids[4].clone(), ids[5].clone()]);
    let window = listed(
        store,
        EventFilter {
            after: Some(ids[1].clone()),
            before: Some(ids[4].clone()),
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(window, newest_first(&[2, 3]));
}

/// A search reads at most a window of events and says where it stopped.
async fn searches_go_back_a_window_at_a_time<S: Store>(store: &S) {
    let ids = six_events(store).await;
    let mut filter = field("data.invoice.amount=10");
    let mut found = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..5 {
        let page = ops::event_page(store, filter.clone(), 2).await.unwrap();
        found.extend(page.events.into_iter().map(|e| e.id));
        match page.searched_to {
            Some(to) => {
                stops.push(to.clone());
                filter.before = Some(to);
            }
            None => break,
        }
    }
    assert_eq!(found, vec![ids[0].clone()]);
    assert_eq!(stops, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    // Not selective: no window, no stop.
    let page = ops::event_page(
        store,
        EventFilter {
            limit: 3,
            ..Default::default()
        },
        2,
    )
    .await
    .unwrap();
    assert_eq!((page.events.len(), page.searched_to), (3, None));
}

#[tokio::test]
async fn the_embedded_store_lists_by_every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    every_filter_lists_what_it_says(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    searches_go_back_a_window_at_a_time(&store).await;
}

#[tokio::test]
async fn postgres_lists_by_every_filter() {
    let store = PgStore::connect(PgOptions::new(fresh_database()))
        .await
        .unwrap();
    every_filter_lists_what_it_says(&store).await;
    let store = PgStore::connect(PgOptions::new(fresh_database()))
        .await
        .unwrap();
    searches_go_back_a_window_at_a_time(&store).await;
}

/// Four dead letters (three of `notify`, two of them for a timeout, one of
/// `slack`), counted and redriven by filter.
async fn dead_letters_by_filter<S: Pipeline + Operations>(store: &S) {
    use switchyard::store::{DeadFilter, Finish, FinishedAttempt, NewJob, Routing};
    let e = event(&switchyard::event::new_id(), "dead");
    store
        .ingest(
            request(&switchyard::event::new_id()),
            std::slice::from_ref(&e),
            60_000,
        )
        .await
        .unwrap();
    let jobs = [
        ("notify", "timeout after 5 s"),
        ("notify", "timeout after 9 s"),
        ("notify", "550 no such user"),
        ("slack", "timeout"),
    ];
    store
        .record_routing(Routing {
            event_id: e.id.clone(),
            rule_runs: json!([]),
            rules_version: 1,
            jobs: jobs
                .iter()
                .enumerate()
                .map(|(i, (action, _))| NewJob {
                    id: switchyard::event::new_id(),
                    rule: "r".into(),
                    call_index: i,
                    action: action.to_string(),
                    params: json!({}),
                    idempotency_key: format!("{}:{i}", e.id),
                    order_key: None,
                })
                .collect(),
            routed_at_ms: switchyard::store::now_ms(),
            claim_with: None,
        })
        .await
        .unwrap();
    let now = switchyard::store::now_ms();
    let claimed = store.claim_jobs(now, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    for c in claimed {
        let message = jobs[c
            .idempotency_key
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()]
        .1;
        store
            .finish_attempt(FinishedAttempt {
                job_id: c.id.clone(),
                attempt: c.attempt,
                started_at_ms: now,
                finished_at_ms: now,
                finish: Finish::Dead {
                    message: message.into(),
                },
            })
            .await
            .unwrap();
    }
    let filter = |action: Option<&str>, error: Option<&str>| DeadFilter {
        action: action.map(str::to_string),
        error: error.map(str::to_string),
    };
    assert_eq!(store.count_dead(filter(None, None)).await.unwrap(), 4);
    assert_eq!(
        store
            .count_dead(filter(Some("notify"), None))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .count_dead(filter(Some("notify"), Some("timeout")))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_dead(filter(None, Some("timeout")))
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.count_dead(filter(None, Some("%"))).await.unwrap(), 0);
    // In chunks: one, then the other, then none is left.
    let notify_timeouts = filter(Some("notify"), Some("timeout"));
    assert_eq!(
        store
            .redrive_matching(notify_timeouts.clone(), 1, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .redrive_matching(notify_timeouts.clone(), 5, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .redrive_matching(notify_timeouts, 5, now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count_dead(filter(None, None)).await.unwrap(), 2);
    assert_eq!(store.waiting().await.unwrap().dead_letters, 2);
    assert!(store
        .waiting()
        .await
        .unwrap()
        .oldest_pending_job_ms
        .is_some());
}

#[tokio::test]
async fn the_embedded_store_redrives_dead_letters_by_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    dead_letters_by_filter(&store).await;
}

#[tokio::test]
async fn postgres_redrives_dead_letters_by_filter() {
    let store = PgStore::connect(PgOptions::new(fresh_database()))
        .await
        .unwrap();
    dead_letters_by_filter(&store).await;
}
