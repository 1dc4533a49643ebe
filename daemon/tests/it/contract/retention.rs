//! Retention: a sweep in bounded steps removes what is old and finished —
//! every terminal state — and keeps what is still to do.

use switchyard::store::{EventFilter, Finish, Ingested, StoreError};

use super::*;

/// Taken in at `at_ms` under the id `id`.
/// The `n`th event taken in at `at_ms`, with a request of its own.
async fn old(s: &dyn Store, n: u128, at_ms: i64) -> Event {
    let e = event(&id_at(at_ms, n), &format!("k{n}"));
    s.ingest(
        request(&id_at(at_ms, 1 << 40 | n), at_ms),
        std::slice::from_ref(&e),
        1_000,
    )
    .await
    .unwrap();
    e
}

pub async fn every_terminal_state_is_pruned_and_what_is_still_to_do_is_kept(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let t = now - 100_000;
    let ids: Vec<String> = (0..8).map(|i| id_at(t, i)).collect();
    let take = |i: usize, at: i64| {
        let e = event(&ids[i], &format!("k{i}"));
        async move {
            s.ingest(
                request(&id_at(at, 200 + i as u128), at),
                std::slice::from_ref(&e),
                1_000,
            )
            .await
            .unwrap();
            e
        }
    };
    // 0 routed, no jobs; 1 its job done; 2 its job dead; 5 its job to retry;
    // 6 never routed.
    let mut evs = Vec::new();
    for i in [0, 1, 2, 5, 6] {
        evs.push((i, take(i, t).await));
    }
    let ev = |i: usize| evs.iter().find(|(n, _)| *n == i).unwrap().1.clone();
    s.record_routing(routing(&ev(0), vec![], false))
        .await
        .unwrap();
    for (i, finish) in [
        (1, done()),
        (
            2,
            Finish::Dead {
                message: "gone".into(),
            },
        ),
        (
            5,
            Finish::Retry {
                message: "later".into(),
                next_at_ms: now + 3_600_000,
            },
        ),
    ] {
        let claimed = s
            .record_routing(routing(&ev(i), vec![job(&ids[i], 0, "a", None)], true))
            .await
            .unwrap();
        s.finish_attempt(attempt(&claimed[0], finish))
            .await
            .unwrap();
    }
    // 3 stale; 4 a handshake.
    s.ingest(
        request(&id_at(t, 103), t),
        &[versioned(&new_id(), "v-new", "obj", 9)],
        1_000,
    )
    .await
    .unwrap();
    let stale = versioned(&ids[3], "k3", "obj", 1);
    let got = s
        .ingest(
            request(&id_at(t, 104), t),
            std::slice::from_ref(&stale),
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(got, [Ingested::Stale(ids[3].clone())]);
    let mut handshake = event(&ids[4], "k4");
    handshake.handshake = true;
    s.ingest(
        request(&id_at(t, 105), t),
        std::slice::from_ref(&handshake),
        1_000,
    )
    .await
    .unwrap();
    // A duplicate delivery: a request of no event of its own.
    let dup = s
        .ingest(
            request(&id_at(t, 106), t),
            &[event(&new_id(), "k0")],
            60_000,
        )
        .await
        .unwrap();
    assert!(matches!(dup[0], Ingested::Duplicate(_)));
    // A recent event, routed and done: not old enough.
    let recent = event(&new_id(), "recent");
    take_in(s, &recent, now).await;
    s.record_routing(routing(&recent, vec![], false))
        .await
        .unwrap();

    let pruned = swept(s, t + 1_000, now).await;
    // 0 to 4 go; the versioned event that made 3 stale is pending: kept.
    assert_eq!(
        pruned.events, 5,
        "routed (no jobs, done, dead), stale, handshake: {pruned:?}"
    );
    assert_eq!(pruned.requests, 6, "theirs and the duplicate's: {pruned:?}");
    for (i, id) in ids.iter().enumerate().take(5) {
        assert!(
            matches!(s.show_event(id.clone()).await, Err(StoreError::NotFound(_))),
            "event {i} pruned"
        );
    }
    for id in [&ids[5], &ids[6], &recent.id] {
        s.show_event(id.clone()).await.expect("kept");
    }
    assert!(
        s.dead_letters(10).await.unwrap().is_empty(),
        "the dead job went with its event"
    );
    let listed = s
        .list_events(EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        4,
        "5, 6, the versioned one and the recent one"
    );
    // Once 5's job is done, it goes at the next sweep.
    let claimed = s.claim_jobs(now + 3_600_000, 10).await.unwrap();
    s.finish_attempt(attempt(&claimed[0], done()))
        .await
        .unwrap();
    let pruned = swept(s, t + 1_000, now).await;
    assert_eq!((pruned.events, pruned.requests), (1, 1), "{pruned:?}");
    assert!(s.show_event(ids[5].clone()).await.is_err());
}

pub async fn expired_dedup_keys_and_old_versions_go(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let t = now - 100_000;
    let first = versioned(&id_at(t, 1), "key", "obj", 5);
    s.ingest(
        request(&id_at(t, 2), t),
        std::slice::from_ref(&first),
        1_000,
    )
    .await
    .unwrap();
    s.record_routing(routing(&first, vec![], false))
        .await
        .unwrap();
    // Kept within its window: a key that expires later stays.
    let kept = event(&new_id(), "kept");
    s.ingest(
        request(&new_id(), now),
        std::slice::from_ref(&kept),
        3_600_000,
    )
    .await
    .unwrap();
    let pruned = swept(s, t + 1_000, now).await;
    assert_eq!((pruned.dedup_keys, pruned.versions), (1, 1), "{pruned:?}");
    // The same delivery, and an older version of the object, are new again.
    let again = versioned(&new_id(), "key", "obj", 1);
    assert_eq!(
        take_in(s, &again, now).await,
        Ingested::New(again.id.clone())
    );
    let dup = event(&new_id(), "kept");
    assert_eq!(take_in(s, &dup, now).await, Ingested::Duplicate(kept.id));
}

pub async fn a_sweep_goes_in_bounded_steps_over_many_rows(f: Fixture) {
    let s = f.store();
    let now = now_ms();
    let t = now - 100_000;
    const N: usize = 300;
    for i in 0..N {
        let e = old(s, i as u128, t).await;
        s.record_routing(routing(&e, vec![], false)).await.unwrap();
    }
    // Two steps take at most two windows of events.
    let (partial, done) = switchyard::store::sweep(s, t + 1_000, now, 2, &|| false).await;
    done.unwrap();
    assert!(partial.next.is_some(), "not done in two steps");
    assert!(
        partial.events > 0 && partial.events < N as u64,
        "{partial:?}"
    );
    let rest = swept(s, t + 1_000, now).await;
    assert_eq!(partial.events + rest.events, N as u64);
    assert_eq!(partial.requests + rest.requests, N as u64);
    assert!(rest.steps > 3, "in windows: {rest:?}");
    assert!(s
        .list_events(EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}
