//! The pipeline's side: ingest, routing, claims, attempts, gates.

use std::collections::HashSet;

use serde_json::Value;
use switchyard::event::new_id;
use switchyard::store::{ActionState, Backlog, Finish, Ingested, StoreError};

use super::*;

pub async fn ingest_stores_each_event_once_within_the_dedup_window(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let (e1, e2, e3) = (new_id(), new_id(), new_id());
    let got = s
        .ingest(
            request(&new_id(), now),
            &[event(&e1, "k1"), event(&e2, "k2")],
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(got, [Ingested::New(e1.clone()), Ingested::New(e2.clone())]);
    // The same delivery again: its event is the first one's duplicate.
    let again = s
        .ingest(request(&new_id(), now), &[event(&e3, "k1")], 60_000)
        .await
        .unwrap();
    assert_eq!(again, [Ingested::Duplicate(e1.clone())]);
    assert_eq!(s.backlog().await.unwrap().unrouted_events, 2);
    assert_eq!(s.show_event(e1.clone()).await.unwrap().duplicates, 1);
    assert!(matches!(
        s.show_event(e3).await,
        Err(StoreError::NotFound(_))
    ));
    // A window of nothing: the key counts for no time at all.
    let (e4, e5) = (new_id(), new_id());
    let first = s
        .ingest(request(&new_id(), now), &[event(&e4, "k4")], 0)
        .await
        .unwrap();
    let second = s
        .ingest(request(&new_id(), now), &[event(&e5, "k4")], 0)
        .await
        .unwrap();
    assert_eq!(first, [Ingested::New(e4)]);
    assert_eq!(second, [Ingested::New(e5)]);
    // Keys are per source.
    let mut other = event(&new_id(), "k2");
    other.source = "teal".into();
    let mut r = request(&new_id(), now);
    r.source = "teal".into();
    let got = s.ingest(r, &[other.clone()], 60_000).await.unwrap();
    assert_eq!(got, [Ingested::New(other.id)]);
}

pub async fn an_object_version_not_newer_than_the_last_is_stored_stale(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let mut ids = Vec::new();
    let mut results = Vec::new();
    for (i, (object, version)) in [
        ("product:1", 5),
        ("product:1", 5),
        ("product:1", 4),
        ("product:2", 1),
        ("product:1", 7),
        ("product:1", 6),
    ]
    .into_iter()
    .enumerate()
    {
        let id = id_at(now, i as u128);
        let e = versioned(&id, &format!("k{i}"), object, version);
        results.push(take_in(s, &e, now).await);
        ids.push(id);
    }
    let expected = [
        Ingested::New(ids[0].clone()),
        Ingested::Stale(ids[1].clone()),
        Ingested::Stale(ids[2].clone()),
        Ingested::New(ids[3].clone()),
        Ingested::New(ids[4].clone()),
        Ingested::Stale(ids[5].clone()),
    ];
    assert_eq!(results, expected);
    let pending: Vec<String> = s
        .pending_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.id)
        .collect();
    assert_eq!(pending, [ids[0].clone(), ids[3].clone(), ids[4].clone()]);
    // Kept, for `events show` and a deliberate replay.
    assert_eq!(s.show_event(ids[2].clone()).await.unwrap().state, "stale");
}

pub async fn a_handshake_is_stored_but_never_routed(f: Fixture) {
    let s = f.store();
    let mut e = event(&new_id(), "challenge");
    e.handshake = true;
    assert_eq!(
        take_in(s, &e, now_ms()).await,
        Ingested::Handshake(e.id.clone())
    );
    assert!(s.pending_events(10).await.unwrap().is_empty());
    assert_eq!(s.backlog().await.unwrap(), Backlog::default());
    assert_eq!(s.show_event(e.id).await.unwrap().state, "handshake");
}

pub async fn pending_events_come_oldest_first_with_their_routings(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    // Taken in newest first: the store gives them back by id.
    let ids: Vec<String> = (0..5).map(|i| id_at(now, i)).collect();
    for id in ids.iter().rev() {
        take_in(s, &event(id, id), now).await;
    }
    let pending = s.pending_events(3).await.unwrap();
    let got: Vec<&str> = pending.iter().map(|p| p.event.id.as_str()).collect();
    assert_eq!(got, [&ids[0], &ids[1], &ids[2]], "oldest first, limited");
    assert!(pending.iter().all(|p| p.routings == 0));
    assert_eq!(pending[0].event.data["n"], Value::from(ids[0].clone()));
    s.record_routing(routing(&pending[0].event, vec![], false))
        .await
        .unwrap();
    s.replay(ids[0].clone()).await.unwrap();
    let again = s.pending_events(1).await.unwrap();
    assert_eq!(
        (again[0].event.id.as_str(), again[0].routings),
        (ids[0].as_str(), 1)
    );
}

pub async fn a_routing_is_recorded_once_with_its_jobs(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    let jobs = vec![job(&e.id, 0, "audit", None), job(&e.id, 1, "audit", None)];
    let first = routing(&e, jobs.clone(), false);
    assert!(s.record_routing(first.clone()).await.unwrap().is_empty());
    // The same routing again (a router that ran it twice), and another
    // routing with new job ids but the same calls: nothing more.
    assert!(s.record_routing(first).await.unwrap().is_empty());
    let mut other = jobs.clone();
    other.iter_mut().for_each(|j| j.id = new_id());
    assert!(s
        .record_routing(routing(&e, other, true))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.backlog().await.unwrap(),
        Backlog {
            unrouted_events: 0,
            pending_jobs: 2
        }
    );
    let detail = s.show_event(e.id.clone()).await.unwrap();
    assert_eq!((detail.state.as_str(), detail.routings), ("routed", 1));
    assert_eq!(detail.rules_version, Some(7));
    assert_eq!(detail.rule_runs[0]["rule"], "r");
    let mut stored: Vec<&str> = detail.jobs.iter().map(|j| j.id.as_str()).collect();
    stored.sort();
    let mut made: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    made.sort();
    assert_eq!(stored, made);
}

pub async fn jobs_claimed_with_their_routing_are_running_already(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    let jobs = vec![job(&e.id, 0, "audit", None), job(&e.id, 1, "notify", None)];
    let claimed = s.record_routing(routing(&e, jobs, true)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        assert_eq!((c.attempt, c.series_attempt), (1, 1));
        assert_eq!(c.event_id, e.id);
        let envelope: Value = serde_json::from_str(c.event.get()).unwrap();
        assert_eq!(envelope["id"], Value::from(e.id.clone()));
    }
    assert!(
        s.claim_jobs(now_ms() + 1, 10).await.unwrap().is_empty(),
        "running: not claimed again"
    );
    assert_eq!(s.backlog().await.unwrap().pending_jobs, 0);
    for c in &claimed {
        s.finish_attempt(attempt(c, done())).await.unwrap();
    }
    let detail = s.show_event(e.id).await.unwrap();
    assert!(detail
        .jobs
        .iter()
        .all(|j| j.state == "done" && j.attempts == 1));
}

pub async fn claims_take_due_jobs_once_and_never_overlap(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let mut all = HashSet::new();
    for i in 0..6 {
        let e = event(&id_at(now, i), &format!("k{i}"));
        take_in(s, &e, now).await;
        let jobs: Vec<_> = (0..5).map(|c| job(&e.id, c, "audit", None)).collect();
        all.extend(jobs.iter().map(|j| j.id.clone()));
        s.record_routing(routing(&e, jobs, false)).await.unwrap();
    }
    // Due at their routing: not before.
    assert!(s.claim_jobs(now - 60_000, 10).await.unwrap().is_empty());
    let later = now_ms() + 1;
    let (a, b, c) = tokio::join!(
        s.claim_jobs(later, 7),
        s.claim_jobs(later, 7),
        s.claim_jobs(later, 7)
    );
    let mut seen = HashSet::new();
    for batch in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert!(batch.len() <= 7, "a claim takes at most its limit");
        for j in batch {
            assert_eq!(j.attempt, 1);
            assert!(seen.insert(j.id.clone()), "{} claimed twice", j.id);
        }
    }
    assert_eq!(seen.len(), 21);
    let rest = s.claim_jobs(later, 100).await.unwrap();
    seen.extend(rest.iter().map(|j| j.id.clone()));
    assert_eq!(seen, all, "every job claimed, each once");
    assert!(s.claim_jobs(later, 100).await.unwrap().is_empty());
}

pub async fn attempts_end_done_retried_or_dead_with_their_log(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    let jobs: Vec<_> = (0..3).map(|c| job(&e.id, c, "notify", None)).collect();
    s.record_routing(routing(&e, jobs.clone(), false))
        .await
        .unwrap();
    let claimed = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let by_id = |id: &str| claimed.iter().find(|c| c.id == id).unwrap();
    let retry_at = now_ms() + 60_000;
    s.finish_attempt(attempt(
        by_id(&jobs[0].id),
        Finish::Done {
            result: Some("\"sent\"".into()),
        },
    ))
    .await
    .unwrap();
    s.finish_attempt(attempt(
        by_id(&jobs[1].id),
        Finish::Retry {
            message: "503 from the target".into(),
            next_at_ms: retry_at,
        },
    ))
    .await
    .unwrap();
    s.finish_attempt(attempt(
        by_id(&jobs[2].id),
        Finish::Dead {
            message: "410 Gone".into(),
        },
    ))
    .await
    .unwrap();
    let detail = s.show_event(e.id.clone()).await.unwrap();
    let stored = |id: &str| detail.jobs.iter().find(|j| j.id == id).unwrap();
    let (ok, retried, dead) = (
        stored(&jobs[0].id),
        stored(&jobs[1].id),
        stored(&jobs[2].id),
    );
    assert_eq!((ok.state.as_str(), ok.attempts), ("done", 1));
    assert_eq!(ok.attempt_log[0].message.as_deref(), Some("\"sent\""));
    assert_eq!(
        (retried.state.as_str(), retried.next_at_ms),
        ("pending", retry_at)
    );
    assert_eq!(retried.last_error.as_deref(), Some("503 from the target"));
    assert_eq!(retried.attempt_log[0].outcome, "retry");
    assert_eq!(
        (dead.state.as_str(), dead.attempt_log[0].outcome.as_str()),
        ("dead", "dead")
    );
    assert_eq!(dead.last_error.as_deref(), Some("410 Gone"));
    // The retry is due at its time, not before; its second attempt counts on.
    assert!(s.claim_jobs(retry_at - 1, 10).await.unwrap().is_empty());
    let second = s.claim_jobs(retry_at, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].attempt, second[0].series_attempt), (2, 2));
    s.finish_attempt(attempt(&second[0], done())).await.unwrap();
    let log = &s.show_event(e.id).await.unwrap().jobs;
    let retried = log.iter().find(|j| j.id == jobs[1].id).unwrap();
    let outcomes: Vec<&str> = retried
        .attempt_log
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["retry", "done"]);
    assert_eq!(
        retried.last_error.as_deref(),
        Some("503 from the target"),
        "the last error stays once done"
    );
}

pub async fn a_released_job_is_due_again_without_using_an_attempt(f: Fixture) {
    let s = f.store();
    let e = event(&new_id(), "k");
    take_in(s, &e, now_ms()).await;
    s.record_routing(routing(&e, vec![job(&e.id, 0, "paused", None)], false))
        .await
        .unwrap();
    let claimed = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    let until = now_ms() + 30_000;
    s.release_job(claimed[0].id.clone(), until).await.unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(until));
    assert!(s.claim_jobs(until - 1, 10).await.unwrap().is_empty());
    let again = s.claim_jobs(until, 10).await.unwrap();
    assert_eq!(again[0].attempt, 1, "the pause used no attempt");
}

pub async fn a_crashed_process_s_running_jobs_are_handed_back(mut f: Fixture) {
    let e = event(&new_id(), "k");
    take_in(f.store(), &e, now_ms()).await;
    let claimed = f
        .store()
        .record_routing(routing(&e, vec![job(&e.id, 0, "audit", None)], true))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    f.crash_and_reopen().await;
    let s = f.store();
    let again = claim_until_handed_back(s).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (claimed[0].id.as_str(), 2),
        "the lost attempt counts"
    );
}

pub async fn next_due_and_backlog_count_what_waits(f: Fixture) {
    let s = f.store();
    assert_eq!(s.next_due().await.unwrap(), None);
    assert_eq!(s.backlog().await.unwrap(), Backlog::default());
    let (e1, e2) = (event(&new_id(), "k1"), event(&new_id(), "k2"));
    take_in(s, &e1, now_ms()).await;
    take_in(s, &e2, now_ms()).await;
    let mut r = routing(
        &e1,
        vec![job(&e1.id, 0, "a", None), job(&e1.id, 1, "a", None)],
        false,
    );
    r.routed_at_ms = now_ms() + 5_000;
    let due = r.routed_at_ms;
    s.record_routing(r).await.unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(due));
    assert_eq!(
        s.backlog().await.unwrap(),
        Backlog {
            unrouted_events: 1,
            pending_jobs: 2
        }
    );
    let claimed = s.claim_jobs(due, 1).await.unwrap();
    assert_eq!(
        s.backlog().await.unwrap().pending_jobs,
        1,
        "running is not waiting"
    );
    s.finish_attempt(attempt(&claimed[0], done()))
        .await
        .unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(due));
}

pub async fn gates_are_stored_and_enabling_an_action_makes_its_jobs_due(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    assert!(s.action_states().await.unwrap().is_empty());
    let open = ActionState {
        action: "slack".into(),
        state: "open".into(),
        until_ms: Some(now + 60_000),
        failures: 5,
        reason: Some("5 failures in a row".into()),
        updated_at_ms: now,
    };
    s.save_action_state(open.clone()).await.unwrap();
    let gone = ActionState {
        action: "hook".into(),
        state: "disabled".into(),
        until_ms: None,
        failures: 1,
        reason: Some("410 Gone".into()),
        updated_at_ms: now,
    };
    s.save_action_state(gone.clone()).await.unwrap();
    assert_eq!(
        s.action_states().await.unwrap(),
        [gone.clone(), open.clone()]
    );
    // Saved again: replaced, not added.
    let closed = ActionState {
        state: "closed".into(),
        until_ms: None,
        failures: 0,
        reason: None,
        ..open
    };
    s.save_action_state(closed.clone()).await.unwrap();
    assert_eq!(s.action_states().await.unwrap(), [gone, closed]);
    // A job of the disabled action waits far ahead; enabling makes it due.
    let e = event(&new_id(), "k");
    take_in(s, &e, now).await;
    s.record_routing(routing(&e, vec![job(&e.id, 0, "hook", None)], false))
        .await
        .unwrap();
    let claimed = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
    let far = now_ms() + 86_400_000;
    s.release_job(claimed[0].id.clone(), far).await.unwrap();
    let enabled_at = now_ms();
    assert_eq!(s.enable_action("hook".into(), enabled_at).await.unwrap(), 1);
    let states = s.action_states().await.unwrap();
    let hook = states.iter().find(|a| a.action == "hook").unwrap();
    assert_eq!(ActionState::shown(Some(hook), now_ms()), "closed");
    assert_eq!(s.claim_jobs(enabled_at, 10).await.unwrap().len(), 1);
}

pub async fn ping_says_the_store_can_write(f: Fixture) {
    f.store().ping().await.unwrap();
}

pub async fn what_was_taken_in_survives_a_restart(mut f: Fixture) {
    let e = event(&new_id(), "k");
    take_in(f.store(), &e, now_ms()).await;
    f.crash_and_reopen().await;
    let s = f.store();
    // The same delivery again is still a duplicate (keys held in memory
    // were kept too).
    let again = event(&new_id(), "k");
    assert_eq!(
        take_in(s, &again, now_ms()).await,
        Ingested::Duplicate(e.id.clone())
    );
    assert_eq!(s.show_event(e.id.clone()).await.unwrap().duplicates, 1);
    // The event still waits for routing, here: at once for a store of one
    // process, once the crashed one's heartbeat is stale for a shared one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut pending = Vec::new();
    while pending.is_empty() && std::time::Instant::now() < deadline {
        pending = s.pending_events(10).await.unwrap();
        if pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event.id, e.id);
    assert_eq!(pending[0].event.data, e.data);
}

pub async fn events_of_one_request_are_decided_in_their_order(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let ids: Vec<String> = (0..5).map(|i| id_at(now, i)).collect();
    let events = [
        versioned(&ids[0], "a", "obj", 5),
        versioned(&ids[1], "a", "obj", 6),
        versioned(&ids[2], "b", "obj", 4),
        versioned(&ids[3], "c", "obj", 9),
        event(&ids[4], "d"),
    ];
    let got = s
        .ingest(request(&new_id(), now), &events, 60_000)
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            Ingested::New(ids[0].clone()),
            Ingested::Duplicate(ids[0].clone()),
            Ingested::Stale(ids[2].clone()),
            Ingested::New(ids[3].clone()),
            Ingested::New(ids[4].clone()),
        ],
        "a key seen earlier in the request is a duplicate; a version not newer than an earlier one's is stale"
    );
    // A request all of whose events are duplicates is one; one with any
    // event of its own is accepted.
    let dup = s
        .ingest(request(&new_id(), now), &[event(&new_id(), "d")], 60_000)
        .await
        .unwrap();
    let Ingested::Duplicate(original) = &dup[0] else {
        panic!("{dup:?}")
    };
    assert_eq!(original, &ids[4]);
    let shown = s.show_event(ids[0].clone()).await.unwrap();
    assert_eq!(shown.request.verdict, "accepted");
    assert_eq!(shown.duplicates, 1);
}

pub async fn claims_take_the_longest_due_first(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let mut made = Vec::new();
    for (i, due) in [3_000, 1_000, 2_000].into_iter().enumerate() {
        let e = event(&id_at(now, i as u128), &format!("k{i}"));
        take_in(s, &e, now).await;
        let mut r = routing(&e, vec![job(&e.id, 0, "a", None)], false);
        r.routed_at_ms = now + due;
        made.push((due, r.jobs[0].id.clone()));
        s.record_routing(r).await.unwrap();
    }
    made.sort();
    let mut order = Vec::new();
    for _ in 0..3 {
        let claimed = s.claim_jobs(now + 5_000, 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        order.push(claimed[0].id.clone());
    }
    let expected: Vec<String> = made.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, expected, "due first, one at a time");
}

/// What a backend says it can do beyond the pipeline, it does: a store
/// that times its commits tells of each; a store shared by instances lists
/// this one, and once it leaves hands its work back at once.
pub async fn capabilities_said_are_kept(f: Fixture) {
    let s = f.store();
    assert!(
        s.commit_timing().is_some() || s.shared().is_some(),
        "each backend has one of the two today"
    );
    if let Some(timing) = s.commit_timing() {
        let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = told.clone();
        timing.observe_commits(Box::new(move |_| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        take_in(s, &event(&new_id(), "timed"), now_ms()).await;
        assert!(told.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
    if let Some(shared) = s.shared() {
        let instances = shared.instances().await.unwrap();
        let this: Vec<_> = instances.iter().filter(|i| i.this).collect();
        assert_eq!(this.len(), 1, "{instances:?}");
        assert!(this[0].alive);
        // A job it runs goes back at once when it leaves.
        let e = event(&new_id(), "k");
        take_in(s, &e, now_ms()).await;
        let claimed = s
            .record_routing(routing(&e, vec![job(&e.id, 0, "a", None)], true))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        shared.leave().await.unwrap();
        assert_eq!(s.backlog().await.unwrap().pending_jobs, 1, "handed back");
        let left = shared.instances().await.unwrap();
        assert!(left.iter().all(|i| !i.this), "{left:?}");
    }
}

/// JSON holding any character a webhook's JSON may carry — U+0000 among
/// them, which PostgreSQL's `jsonb` refuses — is taken in, routed and
/// read back as it came: the event, the request's headers, the rule runs,
/// the jobs' parameters.
pub async fn json_with_any_character_is_kept_as_it_came(f: Fixture) {
    let s = f.store();
    let odd = "nul \u{0} bell \u{7} quote \" and \u{2028}";
    let id = new_id();
    let mut e = event(&id, "k-odd");
    e.data = serde_json::json!({ "note": odd });
    let mut r = request(&new_id(), now_ms());
    r.headers.push(("x-note".into(), "tab\there".into()));
    assert_eq!(
        s.ingest(r, std::slice::from_ref(&e), 60_000).await.unwrap(),
        [Ingested::New(id.clone())]
    );
    let pending = s.pending_events(10).await.unwrap();
    assert_eq!(pending[0].event.data["note"], odd);
    let mut j = job(&id, 0, "notify", None);
    j.params = serde_json::json!({ "text": odd });
    let mut routed = routing(&e, vec![j], true);
    routed.rule_runs = serde_json::json!([{ "rule": "r", "log": [odd] }]);
    let claimed = s.record_routing(routed).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].params["text"], odd);
    let shown = s.show_event(id).await.unwrap();
    assert_eq!(shown.envelope["data"]["note"], odd);
    assert_eq!(shown.rule_runs[0]["log"][0], odd);
    assert_eq!(shown.jobs[0].params["text"], odd);
    assert!(shown
        .request
        .headers
        .iter()
        .any(|(name, value)| name == "x-note" && value == "tab\there"));
}
