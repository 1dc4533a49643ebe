//! The shared store's per-key ordering (`order_by`) across instances, and
//! the notices by which instances wake each other (LISTEN/NOTIFY).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::contract::{self, attempt, done, order::route};
use crate::pg_store::{event, instances};
use switchyard::event::Event;
use switchyard::store::{
    now_ms, NewJob, Operations, PgOptions, PgStore, Pipeline, Routing, Shared, Work,
};

/// Takes `e` in at `store`, as a delivery of its own, now.
async fn take_in(store: &PgStore, e: &Event) {
    contract::take_in(store, e, now_ms()).await;
}

#[tokio::test]
async fn instances_claiming_at_once_never_run_one_key_twice_at_a_time() {
    const TOTAL: usize = 30;
    let (_url, s) = instances(3).await;
    let s: Vec<Arc<PgStore>> = s.into_iter().map(Arc::new).collect();
    let mut order = Vec::new();
    for i in 0..TOTAL {
        let e = event(&format!("c{i:02}"), &format!("kc{i}"));
        take_in(&s[i % 3], &e).await;
        route(s[(i + 1) % 3].as_ref(), &e, "K").await;
        order.push(e.id);
    }
    let running = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = s
        .iter()
        .map(|store| {
            let (store, running, ran, finished) = (
                store.clone(),
                running.clone(),
                ran.clone(),
                finished.clone(),
            );
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while finished.load(Ordering::SeqCst) < TOTAL {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the jobs did not all run"
                    );
                    let jobs = store.claim_jobs(now_ms() + 1, 5).await.unwrap();
                    assert!(jobs.len() <= 1, "one job of a key at a time: {jobs:?}");
                    for job in jobs {
                        assert!(
                            !running.swap(true, Ordering::SeqCst),
                            "{} was claimed while another job of its key ran",
                            job.event_id
                        );
                        ran.lock().unwrap().push(job.event_id.clone());
                        tokio::task::yield_now().await;
                        running.store(false, Ordering::SeqCst);
                        store.finish_attempt(attempt(&job, done())).await.unwrap();
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(*ran.lock().unwrap(), order, "in the order the events came");
}

/// Waits (up to 10 s) for `wanted` among what `heard` hears.
async fn hear(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Work>, wanted: Work) {
    let wait = async {
        while let Some(w) = heard.recv().await {
            if w == wanted {
                return;
            }
        }
        panic!("the listener stopped");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no notice of {wanted:?} within 10 s"));
}

#[tokio::test]
async fn work_left_by_one_process_wakes_the_instances_listening() {
    let (url, s) = instances(2).await;
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    Shared::on_work(
        &s[1],
        Arc::new(move |w| {
            let _ = tx.send(w);
        }),
    );
    // Once listening, it looks for what it may have missed: the marker that
    // it listens.
    hear(&mut heard, Work::Events).await;
    while heard.try_recv().is_ok() {}
    // Jobs stored unclaimed at one instance (its dispatcher had no room).
    let e = event("n1", "kn1");
    take_in(&s[0], &e).await;
    let routing = Routing {
        event_id: e.id.clone(),
        rule_runs: json!([]),
        rules_version: 1,
        jobs: vec![NewJob {
            id: switchyard::event::new_id(),
            rule: "r".into(),
            call_index: 0,
            action: "notify".into(),
            params: json!({}),
            idempotency_key: "n1:r:0".into(),
            order_key: None,
        }],
        routed_at_ms: now_ms(),
        claim_with: None,
    };
    s[0].record_routing(routing).await.unwrap();
    hear(&mut heard, Work::Jobs).await;
    // A replay by the CLI (a client of the instances, not one of them).
    let mut options = PgOptions::new(url);
    options.join = false;
    let cli = PgStore::connect(options).await.unwrap();
    cli.replay(e.id.clone()).await.unwrap();
    hear(&mut heard, Work::Events).await;
    let taken = s[1].pending_events(10).await.unwrap();
    assert_eq!(
        taken.len(),
        1,
        "the replayed event is the instance's to route"
    );
    assert_eq!(taken[0].routings, 1);
}
