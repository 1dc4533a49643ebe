//! Ordered actions (`order_by`): the jobs of one key run one at a time,
//! in the order their events were taken in — kept by the store, so that a
//! restart or a retry keeps it.

use switchyard::event::Event;
use switchyard::store::Finish;

use super::*;

/// Routes `e` to one job of the ordered action for `key`, offered for
/// claiming with its routing: an ordered job never is.
pub async fn route(s: &dyn Store, e: &Event, key: &str) {
    let claimed = s
        .record_routing(routing(e, vec![job(&e.id, 0, "ordered", Some(key))], true))
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "an ordered job waits its turn in the store"
    );
}

/// Five deliveries taken in one after the other: `o4` is customer L's,
/// the others customer K's.
async fn five(s: &dyn Store) -> Vec<Event> {
    let now = now_ms();
    let evs: Vec<Event> = (1..=5)
        .map(|i| event(&id_at(now, i), &format!("ko{i}")))
        .collect();
    for e in &evs {
        take_in(s, e, now).await;
    }
    evs
}

fn key(i: usize) -> &'static str {
    if i == 3 {
        "L"
    } else {
        "K"
    }
}

pub async fn jobs_of_one_key_run_one_at_a_time_in_the_order_their_events_came(f: Fixture) {
    let s = f.store();
    let evs = five(s).await;
    let id = |i: usize| evs[i].id.as_str();
    // o2 and o4 are routed first: o1 is not yet.
    route(s, &evs[1], "K").await;
    route(s, &evs[3], "L").await;
    assert!(
        s.claim_jobs(now_ms() + 1, 10).await.unwrap().is_empty(),
        "no ordered job runs before every event taken in before its own is routed"
    );
    for i in [0, 2, 4] {
        route(s, &evs[i], key(i)).await;
    }
    let first = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(
        events_of(&first),
        [id(0), id(3)],
        "each key's first, and only that"
    );
    assert!(
        s.claim_jobs(now_ms() + 1, 10).await.unwrap().is_empty(),
        "K and L each have a job running"
    );
    assert_eq!(
        s.next_due().await.unwrap(),
        None,
        "a due job waiting for its key's turn is not due work"
    );
    let o1 = first.iter().find(|j| j.event_id == id(0)).unwrap();
    s.finish_attempt(attempt(o1, done())).await.unwrap();
    let second = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(events_of(&second), [id(1)]);
    // o2 fails and waits a minute for its retry: it does not hold K up.
    let retry_at = now_ms() + 60_000;
    let retry = Finish::Retry {
        message: "503".into(),
        next_at_ms: retry_at,
    };
    s.finish_attempt(attempt(&second[0], retry)).await.unwrap();
    let third = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(events_of(&third), [id(2)]);
    s.finish_attempt(attempt(&third[0], done())).await.unwrap();
    let fourth = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(events_of(&fourth), [id(4)]);
    // Once due, the retry is K's next again, but not while o5 runs.
    assert!(s.claim_jobs(retry_at + 1, 10).await.unwrap().is_empty());
    s.finish_attempt(attempt(&fourth[0], done())).await.unwrap();
    let later = s.claim_jobs(retry_at + 1, 10).await.unwrap();
    assert_eq!(events_of(&later), [id(1)]);
    assert_eq!(later[0].attempt, 2);
}

pub async fn an_ordered_job_is_never_claimed_with_its_routing(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    let jobs = vec![
        job(&e.id, 0, "ordered", Some("K")),
        job(&e.id, 1, "free", None),
    ];
    let claimed = s.record_routing(routing(&e, jobs, true)).await.unwrap();
    let actions: Vec<&str> = claimed.iter().map(|j| j.action.as_str()).collect();
    assert_eq!(actions, ["free"], "the unordered job runs at once");
    assert_eq!(claimed[0].order_key, None);
    let next = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(next[0].order_key.as_deref(), Some("K"), "with its key");
    let actions: Vec<&str> = next.iter().map(|j| j.action.as_str()).collect();
    assert_eq!(
        actions,
        ["ordered"],
        "the ordered one is claimed in its turn"
    );
}

pub async fn order_is_kept_across_a_restart(mut f: Fixture) {
    let evs = five(f.store()).await;
    for (i, e) in evs.iter().enumerate() {
        route(f.store(), e, key(i)).await;
    }
    let first = f.store().claim_jobs(now_ms() + 1, 1).await.unwrap();
    assert_eq!(events_of(&first), [evs[0].id.as_str()]);
    f.crash_and_reopen().await;
    let s = f.store();
    // K's first job was running: until it is handed back, none of K's runs.
    let claimed = claim_until_handed_back(s).await;
    let k: Vec<&ClaimedJob> = claimed.iter().filter(|j| j.event_id != evs[3].id).collect();
    assert_eq!(k.len(), 1, "{claimed:?}");
    assert_eq!(
        (k[0].event_id.as_str(), k[0].attempt),
        (evs[0].id.as_str(), 2),
        "K's first, again"
    );
    s.finish_attempt(attempt(k[0], done())).await.unwrap();
    let next = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(events_of(&next), [evs[1].id.as_str()], "then K's second");
}
