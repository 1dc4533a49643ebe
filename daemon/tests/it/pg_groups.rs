//! The PostgreSQL store's group commit against a real server: what
//! concurrent callers hand over is done in one transaction, each caller
//! gets its own answer, and one the database refuses fails alone.

use futures_util::future::join_all;

use crate::pg::{query, sql};
use crate::pg_store::{event, instances, request, routing};
use switchyard::event::Event;
use switchyard::store::{now_ms, Finish, FinishedAttempt, Ingested, Operations, PgStore, Pipeline};

/// How many transactions the rows of `table` were written by (rows written
/// in one transaction share its `xmin`), and how many rows there are.
fn transactions_and_rows(url: &str, table: &str) -> (usize, usize) {
    let mut counts = (0, 0);
    query(
        url,
        &format!("SELECT count(DISTINCT xmin::text), count(*) FROM {table}"),
        |r| {
            let n = |i: usize| r[i].as_deref().unwrap_or("0").parse().unwrap();
            counts = (n(0), n(1));
        },
    );
    counts
}

/// Makes the database refuse the rows of `table` for which `condition`
/// (on `NEW`) holds, with `message`: a statement failing inside a group.
fn refuse(url: &str, table: &str, condition: &str, message: &str) {
    sql(
        url,
        &format!(
            "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF {condition} THEN RAISE EXCEPTION '{message}'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                 FOR EACH ROW EXECUTE FUNCTION refuse_{table}();"
        ),
    );
}

/// `n` events (`e00`, `e01`…, keys `k0`, `k1`…).
fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event(&format!("e{i:02}"), &format!("k{i}")))
        .collect()
}

/// `n` events taken in by `store` one after another (requests `r00`…).
async fn taken_in(store: &PgStore, n: usize) -> Vec<Event> {
    let events = events(n);
    for (i, e) in events.iter().enumerate() {
        store
            .ingest(
                request(&format!("r{i:02}")),
                std::slice::from_ref(e),
                60_000,
            )
            .await
            .unwrap();
    }
    events
}

#[tokio::test]
async fn requests_arriving_together_are_committed_together_each_answered() {
    let (url, stores) = instances(1).await;
    let events = events(40);
    let results = join_all(events.iter().enumerate().map(|(i, e)| {
        stores[0].ingest(
            request(&format!("r{i:02}")),
            std::slice::from_ref(e),
            60_000,
        )
    }))
    .await;
    for (e, r) in events.iter().zip(results) {
        assert_eq!(r.unwrap(), vec![Ingested::New(e.id.clone())]);
    }
    let (transactions, rows) = transactions_and_rows(&url, "requests");
    assert_eq!(rows, 40);
    assert!(
        transactions < 40,
        "40 requests waiting together took {transactions} transactions"
    );
    assert_eq!(stores[0].backlog().await.unwrap().unrouted_events, 40);
}

#[tokio::test]
async fn a_delivery_twice_in_one_group_is_one_event_and_the_other_its_duplicate() {
    let (_url, stores) = instances(1).await;
    let (first, again) = (event("e1", "same-key"), event("e2", "same-key"));
    let other = event("e3", "other-key");
    let results = join_all([
        stores[0].ingest(request("r1"), std::slice::from_ref(&first), 60_000),
        stores[0].ingest(request("r2"), std::slice::from_ref(&again), 60_000),
        stores[0].ingest(request("r3"), std::slice::from_ref(&other), 60_000),
    ])
    .await;
    let mut results: Vec<Ingested> = results.into_iter().map(|r| r.unwrap().remove(0)).collect();
    assert_eq!(results.pop(), Some(Ingested::New("e3".into())));
    results.sort_by_key(|r| matches!(r, Ingested::Duplicate(_)));
    match &results[..] {
        [Ingested::New(new), Ingested::Duplicate(of)] => assert_eq!(new, of),
        other => panic!("{other:?}"),
    }
    assert_eq!(stores[0].backlog().await.unwrap().unrouted_events, 2);
}

#[tokio::test]
async fn a_request_the_database_refuses_fails_alone_and_its_group_is_kept() {
    let (url, stores) = instances(1).await;
    refuse(
        &url,
        "requests",
        "NEW.query = 'poison'",
        "this request is refused",
    );
    let events = events(30);
    let results = join_all(events.iter().enumerate().map(|(i, e)| {
        let mut r = request(&format!("r{i:02}"));
        if i == 17 {
            r.query = "poison".into();
        }
        stores[0].ingest(r, std::slice::from_ref(e), 60_000)
    }))
    .await;
    for (i, (e, r)) in events.iter().zip(results).enumerate() {
        match (i, r) {
            (17, Err(err)) => assert!(err.to_string().contains("this request is refused"), "{err}"),
            (17, Ok(r)) => panic!("the refused request was taken in: {r:?}"),
            (_, r) => assert_eq!(r.unwrap(), vec![Ingested::New(e.id.clone())]),
        }
    }
    assert_eq!(transactions_and_rows(&url, "requests").1, 29);
    assert_eq!(stores[0].backlog().await.unwrap().unrouted_events, 29);
    // The lanes go on.
    let after = event("after", "k-after");
    let taken = stores[0]
        .ingest(request("r-after"), std::slice::from_ref(&after), 60_000)
        .await
        .unwrap();
    assert_eq!(taken, vec![Ingested::New("after".into())]);
}

#[tokio::test]
async fn two_instances_taking_the_same_deliveries_in_groups_make_one_event_each() {
    let (_url, stores) = instances(2).await;
    let stores = &stores;
    let keys: Vec<String> = (0..30).map(|i| format!("delivery-{i}")).collect();
    // The same deliveries, to each instance, in opposite orders.
    let a = keys.iter().enumerate().map(|(i, k)| {
        let e = event(&format!("a{i:02}"), k);
        async move {
            stores[0]
                .ingest(
                    request(&format!("ra{i:02}")),
                    std::slice::from_ref(&e),
                    60_000,
                )
                .await
        }
    });
    let b = keys.iter().enumerate().rev().map(|(i, k)| {
        let e = event(&format!("b{i:02}"), k);
        async move {
            stores[1]
                .ingest(
                    request(&format!("rb{i:02}")),
                    std::slice::from_ref(&e),
                    60_000,
                )
                .await
        }
    });
    let (a, b) = tokio::join!(join_all(a), join_all(b));
    let mut new = 0;
    for result in a.into_iter().chain(b) {
        match result.unwrap().remove(0) {
            Ingested::New(_) => new += 1,
            Ingested::Duplicate(of) => assert!(!of.is_empty()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(new, 30, "each delivery is one event");
    assert_eq!(stores[0].backlog().await.unwrap().unrouted_events, 30);
}

#[tokio::test]
async fn routings_and_attempts_booked_together_and_a_refused_routing_fails_alone() {
    let (url, stores) = instances(1).await;
    refuse(
        &url,
        "jobs",
        "NEW.idempotency_key = 'e07:r:0'",
        "this job is refused",
    );
    let events = taken_in(&stores[0], 20).await;
    let keys: Vec<String> = events.iter().map(|e| format!("{}:r:0", e.id)).collect();
    let routed = join_all(
        events
            .iter()
            .zip(&keys)
            .map(|(e, k)| stores[0].record_routing(routing(e, &[k.as_str()], true))),
    )
    .await;
    let mut claimed = Vec::new();
    for (i, r) in routed.into_iter().enumerate() {
        match (i, r) {
            (7, Err(err)) => assert!(err.to_string().contains("this job is refused"), "{err}"),
            (7, Ok(jobs)) => panic!("the refused routing was recorded: {jobs:?}"),
            (_, r) => claimed.extend(r.unwrap()),
        }
    }
    assert_eq!(
        claimed.len(),
        19,
        "each routed event's job, claimed with it"
    );
    assert_eq!(
        stores[0].backlog().await.unwrap().unrouted_events,
        1,
        "only the refused routing's event waits"
    );
    let (transactions, rows) = transactions_and_rows(&url, "jobs");
    assert_eq!(rows, 19);
    assert!(transactions <= 19);
    let finished = join_all(claimed.iter().map(|job| {
        stores[0].finish_attempt(FinishedAttempt {
            job_id: job.id.clone(),
            attempt: job.attempt,
            started_at_ms: now_ms(),
            finished_at_ms: now_ms(),
            finish: Finish::Done {
                result: Some(format!("done {}", job.idempotency_key)),
            },
        })
    }))
    .await;
    for f in finished {
        f.unwrap();
    }
    let (transactions, attempts) = transactions_and_rows(&url, "attempts");
    assert_eq!(attempts, 19, "every attempt recorded");
    assert!(
        transactions < 19,
        "19 attempts finishing together took {transactions} transactions"
    );
    let mut done = 0;
    query(
        &url,
        "SELECT count(*) FROM jobs WHERE state = 'done'",
        |r| done = r[0].as_deref().unwrap().parse().unwrap(),
    );
    assert_eq!(done, 19);
}

#[tokio::test]
async fn routings_made_together_claim_each_its_own_jobs_once() {
    let (url, stores) = instances(1).await;
    let events = taken_in(&stores[0], 24).await;
    // Two jobs an event; every other event's jobs claimed with it.
    let routings: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let keys = [format!("{}:r:0", e.id), format!("{}:r:1", e.id)];
            routing(e, &[keys[0].as_str(), keys[1].as_str()], i % 2 == 0)
        })
        .collect();
    let routed = join_all(
        routings
            .iter()
            .cloned()
            .map(|r| stores[0].record_routing(r)),
    )
    .await;
    for (i, (e, claimed)) in events.iter().zip(routed).enumerate() {
        let claimed = claimed.unwrap();
        match i % 2 {
            0 => {
                assert_eq!(claimed.len(), 2, "{}", e.id);
                assert!(claimed.iter().all(|j| j.event_id == e.id && j.attempt == 1));
            }
            _ => assert!(claimed.is_empty(), "{}: {claimed:?}", e.id),
        }
    }
    let (transactions, jobs) = transactions_and_rows(&url, "jobs");
    assert_eq!(jobs, 48);
    assert!(
        transactions < 24,
        "24 routings together took {transactions} transactions"
    );
    assert_eq!(stores[0].backlog().await.unwrap().unrouted_events, 0);
    // Routed again (together): nothing new, nothing claimed twice.
    let again = join_all(routings.into_iter().map(|r| stores[0].record_routing(r))).await;
    assert!(again.into_iter().all(|r| r.unwrap().is_empty()));
    assert_eq!(transactions_and_rows(&url, "jobs").1, 48);
    // The unclaimed ones are there to claim, once.
    let claimed = stores[0].claim_jobs(now_ms() + 1, 100).await.unwrap();
    assert_eq!(claimed.len(), 24);
    let shown = stores[0].show_event("e01".into()).await.unwrap();
    assert_eq!((shown.state.as_str(), shown.jobs.len()), ("routed", 2));
}
