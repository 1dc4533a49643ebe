//! The operators' side: lists and filters, paging, one event's detail,
//! replay, dead letters and redrive, what the dashboard counts.

use serde_json::{json, Value};
use switchyard::admin::ops;
use switchyard::event::new_id;
use switchyard::store::{DeadFilter, EventFilter, FieldMatch, Finish, StoreError};

use super::*;

/// Takes in six events with different data; returns their ids, oldest first.
async fn six_events(store: &dyn Store) -> Vec<String> {
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
        let mut e = event(&new_id(), &format!("key{i}"));
        e.data = d;
        if i == 3 {
            e.kind = "tight.invoice_paid".into();
        }
        store
            .ingest(request(&new_id(), now_ms()), &[e.clone()], 60_000)
            .await
            .unwrap();
        ids.push(e.id);
        // Distinct milliseconds, so that ids sort as taken in.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    ids
}

async fn listed(store: &dyn Store, filter: EventFilter) -> Vec<String> {
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

pub async fn every_filter_lists_what_it_says(f: Fixture) {
    let store = f.store();
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

/// Pages by id, and a search that reads at most a window of events and
/// says where it stopped (the `n`th newest id).
pub async fn pages_of_events_and_the_nth_newest(f: Fixture) {
    let store = f.store();
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

/// Four dead letters (and one of another event, redriven alone first) (three of `notify`, two of them for a timeout, one of
/// `slack`), counted and redriven by filter.
pub async fn dead_letters_are_redriven_one_all_or_by_filter(f: Fixture) {
    let store = f.store();
    let e = event(&new_id(), "dead");
    store
        .ingest(
            request(&new_id(), now_ms()),
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
                    id: new_id(),
                    rule: "r".into(),
                    call_index: i,
                    action: action.to_string(),
                    params: json!({}),
                    idempotency_key: format!("{}:{i}", e.id),
                    order_key: None,
                })
                .collect(),
            routed_at_ms: now_ms(),
            claim_with: None,
        })
        .await
        .unwrap();
    let now = now_ms();
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

pub async fn an_event_shows_its_request_routing_jobs_and_attempts(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    let mut r = request(&new_id(), now_ms());
    r.headers.push(("x-signature".into(), "[redacted]".into()));
    r.body = bytes::Bytes::from_static(b"{\"invoice\":\"inv_9\"}");
    s.ingest(r.clone(), std::slice::from_ref(&e), 60_000)
        .await
        .unwrap();
    let shown = s.show_event(e.id.clone()).await.unwrap();
    assert_eq!((shown.state.as_str(), shown.routings), ("pending", 0));
    assert_eq!((shown.routed_at_ms, shown.rules_version), (None, None));
    assert_eq!(shown.envelope["id"], Value::from(e.id.clone()));
    assert_eq!(shown.envelope["data"], e.data);
    let q = &shown.request;
    assert_eq!((q.id.as_str(), q.method.as_str()), (r.id.as_str(), "POST"));
    assert_eq!((q.path.as_str(), q.query.as_str()), ("/hooks/tight", "a=1"));
    assert_eq!(q.headers, r.headers);
    assert_eq!(q.body, "{\"invoice\":\"inv_9\"}");
    assert_eq!(q.verdict, "accepted");
    let jobs = vec![job(&e.id, 0, "notify", None)];
    let claimed = s.record_routing(routing(&e, jobs, true)).await.unwrap();
    s.finish_attempt(attempt(
        &claimed[0],
        Finish::Dead {
            message: "550".into(),
        },
    ))
    .await
    .unwrap();
    let shown = s.show_event(e.id.clone()).await.unwrap();
    assert_eq!((shown.state.as_str(), shown.routings), ("routed", 1));
    assert!(shown.routed_at_ms.is_some());
    let j = &shown.jobs[0];
    assert_eq!(
        (j.rule.as_str(), j.call_index, j.action.as_str()),
        ("r", 0, "notify")
    );
    assert_eq!(j.params["call"], 0);
    assert_eq!(j.idempotency_key, format!("{}:r:0", e.id));
    assert_eq!((j.state.as_str(), j.attempts), ("dead", 1));
    assert_eq!(j.attempt_log.len(), 1);
    assert_eq!(
        (j.attempt_log[0].n, j.attempt_log[0].outcome.as_str()),
        (1, "dead")
    );
    // Listed with its counts; dead by its job.
    let listed = s
        .list_events(EventFilter {
            state: Some("dead".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].jobs, listed[0].jobs_dead), (1, 1));
    assert_eq!(
        (listed[0].kind.as_str(), listed[0].state.as_str()),
        ("tight.invoiceViewed", "routed")
    );
    assert!(matches!(
        s.show_event("01JF0000000000000000000000".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn a_replay_routes_an_event_again(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    s.record_routing(routing(&e, vec![job(&e.id, 0, "a", None)], false))
        .await
        .unwrap();
    s.replay(e.id.clone()).await.unwrap();
    let pending = s.pending_events(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].event.id.as_str(), pending[0].routings),
        (e.id.as_str(), 1)
    );
    // Routed again with the replay's keys: its jobs are added to the first.
    let mut again = job(&e.id, 0, "a", None);
    again.idempotency_key.push_str(":replay1");
    s.record_routing(routing(&e, vec![again], false))
        .await
        .unwrap();
    let shown = s.show_event(e.id.clone()).await.unwrap();
    assert_eq!((shown.routings, shown.jobs.len()), (2, 2));
    // A stale event is replayed on purpose too.
    let stale_first = versioned(&new_id(), "v1", "obj", 2);
    let stale = versioned(&new_id(), "v2", "obj", 1);
    take_in(s, &stale_first, now_ms()).await;
    take_in(s, &stale, now_ms()).await;
    s.replay(stale.id.clone()).await.unwrap();
    let ids: Vec<String> = s
        .pending_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.id)
        .collect();
    assert!(ids.contains(&stale.id), "{ids:?}");
    assert!(matches!(
        s.replay("01JF0000000000000000000000".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn the_dashboard_counts_what_waits(f: Fixture) {
    let s = f.store();
    let none = s.waiting().await.unwrap();
    assert_eq!((none.oldest_pending_job_ms, none.dead_letters), (None, 0));
    let (e1, e2) = (event(&new_id(), "k1"), event(&new_id(), "k2"));
    take_in(s, &e1, now_ms()).await;
    take_in(s, &e2, now_ms()).await;
    let mut first = routing(&e1, vec![job(&e1.id, 0, "a", None)], false);
    first.routed_at_ms = 1_000;
    s.record_routing(first).await.unwrap();
    let mut second = routing(
        &e2,
        vec![job(&e2.id, 0, "a", None), job(&e2.id, 1, "b", None)],
        false,
    );
    second.routed_at_ms = 2_000;
    s.record_routing(second).await.unwrap();
    assert_eq!(
        s.waiting().await.unwrap().oldest_pending_job_ms,
        Some(1_000)
    );
    assert_eq!(s.waiting().await.unwrap().running_jobs, 0);
    let claimed = s.claim_jobs(1_000, 1).await.unwrap();
    assert_eq!(s.waiting().await.unwrap().running_jobs, 1, "claimed");
    s.finish_attempt(attempt(
        &claimed[0],
        Finish::Dead {
            message: "x".into(),
        },
    ))
    .await
    .unwrap();
    let w = s.waiting().await.unwrap();
    assert_eq!(
        (w.oldest_pending_job_ms, w.running_jobs, w.dead_letters),
        (Some(2_000), 0, 1)
    );
    let dead = s.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, claimed[0].id);
    assert_eq!(dead[0].attempt_log[0].outcome, "dead");
    // One redriven by id: due now, a new series of attempts.
    assert_eq!(s.redrive(Some(dead[0].id.clone()), 5_000).await.unwrap(), 1);
    assert!(matches!(
        s.redrive(Some(dead[0].id.clone()), 5_000).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.waiting().await.unwrap().dead_letters, 0);
    let again = s.claim_jobs(1_999, 10).await.unwrap();
    assert!(again.is_empty(), "redriven to be due at 5,000");
    let again = s.claim_jobs(5_000, 10).await.unwrap();
    let redriven = again.iter().find(|j| j.id == claimed[0].id).unwrap();
    assert_eq!((redriven.attempt, redriven.series_attempt), (2, 1));
    // All of them at once.
    for j in &again {
        s.finish_attempt(attempt(
            j,
            Finish::Dead {
                message: "y".into(),
            },
        ))
        .await
        .unwrap();
    }
    assert_eq!(s.redrive(None, 6_000).await.unwrap(), again.len() as u64);
    assert_eq!(s.redrive(None, 6_000).await.unwrap(), 0);
}
