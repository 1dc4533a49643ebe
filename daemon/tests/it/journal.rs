//! The embedded store's journal through the store: what a power cut takes
//! from the database is applied again from it, damage is passed over and
//! said, segments go once retention has pruned what they held, a full
//! disk refuses new work and keeps what it had. (The journal's own format:
//! `daemon/src/store/sqlite/journal/tests.rs`.)

use std::path::Path;

use serde_json::json;
use switchyard::store::{
    now_ms, EventFilter, FieldMatch, Ingested, NewJob, Operations, Pipeline, Routing, SqliteStore,
    StoreError, StoreOptions, StoredRequest,
};

use crate::contract::{event, request, swept};

/// A routing that wanted no action.
fn no_jobs(event_id: &str, at: i64) -> Routing {
    Routing {
        event_id: event_id.into(),
        rule_runs: json!([]),
        rules_version: 1,
        jobs: vec![],
        routed_at_ms: at,
        claim_with: None,
    }
}

#[tokio::test]
async fn a_full_store_is_unavailable_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("s.db"),
        StoreOptions {
            max_size_bytes: Some(256 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let mut req = request(&format!("r{i}"), now_ms());
        req.body = bytes::Bytes::from(vec![b'x'; 4096]);
        match store
            .ingest(req, &[event(&format!("e{i}"), &format!("k{i}"))], 60_000)
            .await
        {
            Ok(_) => accepted.push(format!("e{i}")),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(!accepted.is_empty());
    for id in &accepted {
        assert!(store.show_event(id.clone()).await.is_ok(), "{id} survives");
    }
}

fn signed_request(id: &str, body: &str) -> StoredRequest {
    let mut r = request(id, now_ms());
    r.body = bytes::Bytes::from(body.to_string());
    r
}

/// Ingests one request per event id, each with its own body.
async fn ingest_all(store: &SqliteStore, ids: &[&str]) {
    for id in ids {
        let r = store
            .ingest(
                signed_request(&format!("r-{id}"), &format!("{{\"body\":\"{id}\"}}")),
                &[event(id, &format!("k-{id}"))],
                60_000,
            )
            .await
            .unwrap();
        assert_eq!(r, vec![Ingested::New(id.to_string())]);
    }
}

/// Takes the store's files as they are now, and puts them back later: what
/// a power cut does to the database's last commits (`synchronous = NORMAL`)
/// while the journal, synced, keeps them.
fn database_copy(dir: &Path) -> impl Fn() {
    let db = dir.join("s.db");
    let copy = dir.join("s.db.copy");
    assert!(
        !dir.join("s.db-wal").exists()
            || std::fs::metadata(dir.join("s.db-wal")).unwrap().len() == 0
    );
    std::fs::copy(&db, &copy).unwrap();
    move || {
        std::fs::copy(&copy, &db).unwrap();
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let _ = std::fs::remove_file(db.with_extension("db-shm"));
    }
}

#[tokio::test]
async fn commits_the_database_lost_are_applied_again_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let open = || SqliteStore::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    let store = open();
    ingest_all(&store, &["a1", "a2"]).await;
    store.close();
    let restore = database_copy(dir.path());
    let store = open();
    assert_eq!(store.recovery().applied, 0);
    ingest_all(&store, &["b1", "b2", "b3"]).await;
    store.close();
    restore();
    let store = open();
    assert_eq!(store.recovery().applied, 3, "{:?}", store.recovery());
    assert!(store.recovery().damage.is_empty());
    for id in ["a1", "a2", "b1", "b2", "b3"] {
        let detail = store.show_event(id.into()).await.unwrap();
        assert_eq!(detail.state, "pending", "{id}");
        assert_eq!(detail.request.body, format!("{{\"body\":\"{id}\"}}"));
        assert_eq!(detail.request.headers[0].0, "content-type");
    }
    // The keys came back too: a repeat is a duplicate of the recovered event.
    let r = store
        .ingest(
            signed_request("r-again", "{}"),
            &[event("b2-again", "k-b2")],
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![Ingested::Duplicate("b2".into())]);
    // Opening again applies nothing twice.
    store.close();
    let store = open();
    assert_eq!(store.recovery().applied, 0);
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 5);
}

#[tokio::test]
async fn a_torn_tail_and_a_damaged_record_are_passed_over_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let open = || SqliteStore::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    let store = open();
    ingest_all(&store, &["a1"]).await;
    store.close();
    let restore = database_copy(dir.path());
    let store = open();
    ingest_all(&store, &["b1", "b2", "b3"]).await;
    store.close();
    restore();
    // The journal's only segment: damage b2's record (a byte of its body),
    // and leave half a frame at its end, as a crash mid-write would.
    let journal = dir.path().join("journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let record = record_holding(&bytes, b"{\"body\":\"b2\"}").expect("b2's record in the journal");
    bytes[record.start + record.len() / 2] ^= 0x20;
    // Half a frame where the records end (over the zeros written ahead).
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    // (Its last byte not zero: the zeros ahead would hide it.)
    let mut half_a_frame = bytes[..40].to_vec();
    half_a_frame[39] = 0xff;
    bytes[end..end + 40].copy_from_slice(&half_a_frame);
    std::fs::write(&segment, &bytes).unwrap();

    let store = open();
    let recovery = store.recovery().clone();
    assert_eq!(recovery.applied, 2, "{recovery:?}");
    let said: Vec<String> = recovery.damage.iter().map(|d| d.to_string()).collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said.iter().any(|s| s.contains("torn tail of 40 bytes")),
        "{said:?}"
    );
    assert!(said.iter().any(|s| s.contains("are lost")), "{said:?}");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), end as u64);
    for id in ["a1", "b1", "b3"] {
        assert!(store.show_event(id.into()).await.is_ok(), "{id}");
    }
    assert!(matches!(
        store.show_event("b2".into()).await,
        Err(StoreError::NotFound(_))
    ));
    // Writing goes on after the last good record.
    ingest_all(&store, &["c1"]).await;
    assert_eq!(
        store.show_event("c1".into()).await.unwrap().request.body,
        "{\"body\":\"c1\"}"
    );
}

/// Where, in a journal segment's bytes, the payload of the record holding
/// `needle` is (in its JSON or its body, compressed or not): read frame by
/// frame, as the journal lays them out.
pub(crate) fn record_holding(segment: &[u8], needle: &[u8]) -> Option<std::ops::Range<usize>> {
    let holds = |text: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    let mut at = 0;
    while at + 16 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 16 + len > segment.len() {
            return None;
        }
        let payload = &segment[at + 16..at + 16 + len];
        let found = match payload[0] {
            // Compressed: [2][frame length][frame][the JSON's end].
            2 => {
                let frame_len = u32::from_le_bytes(payload[1..5].try_into().unwrap()) as usize;
                let plain = zstd::stream::decode_all(&payload[5..5 + frame_len]).unwrap();
                holds(&plain) || holds(&payload[5 + frame_len..])
            }
            _ => holds(payload),
        };
        if found {
            return Some(at + 16..at + 16 + len);
        }
        at += 16 + len;
    }
    None
}

#[tokio::test]
async fn journal_segments_go_once_retention_has_pruned_every_request_in_them() {
    let (dir, store) = small_segments();
    let segments = || segment_files(dir.path());
    let old = now_ms() - 100_000;
    let id = |n: u128| crate::contract::id_at(old, n);
    // Old requests, each its own group: several segments fill up.
    for n in 0..12u128 {
        let mut req = request(&id(1000 + n), old);
        // Bytes that do not compress: each request fills its share of a
        // segment.
        req.body = bytes::Bytes::from(
            (0..1500)
                .map(|_| fastrand::alphanumeric() as u8)
                .collect::<Vec<u8>>(),
        );
        store
            .ingest(req, &[event(&id(n), &format!("k{n}"))], 1_000)
            .await
            .unwrap();
    }
    let before = segments();
    assert!(before.len() >= 4, "{before:?}");
    // All but the last event are routed; the last stays pending, so its
    // request (and its segment) is kept.
    for n in 0..11u128 {
        store.record_routing(no_jobs(&id(n), old)).await.unwrap();
    }
    let pruned = swept(&store, old + 1, now_ms()).await;
    assert_eq!((pruned.events, pruned.requests), (11, 11));
    // The sweep frees the segments once their requests are gone.
    assert!(pruned.segments > 0, "{pruned:?}");
    // Their files are deleted on a thread of their own, soon after.
    let mut after = segments();
    for _ in 0..100 {
        if after.len() < before.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        after = segments();
    }
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    // The kept event's request still reads from its segment.
    let kept = store.show_event(id(11)).await.unwrap();
    assert_eq!(kept.request.body.len(), 1500);
    assert!(!kept.request.body.contains("not available"));
    // And a restart finds the journal whole.
    store.close();
    let store = SqliteStore::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    assert!(store.recovery().damage.is_empty(), "{:?}", store.recovery());
    assert_eq!(
        store.show_event(id(11)).await.unwrap().request.body.len(),
        1500
    );
}

/// An event's envelope is kept once, in its request's journal record: its
/// row holds where that record is, and every read finds the envelope
/// there — shown, filtered on, waiting for routing, carried by a claimed
/// job — across segments started after a reader last looked. A record
/// that is gone leaves its event listed, with no envelope, said in the log.
#[tokio::test]
async fn an_events_envelope_is_kept_once_in_its_journal_record() {
    let (dir, store) = small_segments();
    let id = |i: usize| format!("01JF0000000000000000000E{i:02}");
    for i in 0..24 {
        let mut e = event(&id(i), &format!("k{i}"));
        // Text that does not compress: the records fill several segments.
        let mut x = i as u64 + 1;
        let note: String = (0..1200)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (x >> 59) as u8)
            })
            .collect();
        e.data = json!({"n": i, "note": note});
        let r = store
            .ingest(request(&format!("r{i}"), now_ms()), &[e], 60_000)
            .await
            .unwrap();
        assert_eq!(r, vec![Ingested::New(id(i))]);
        // Read as it comes in: the reader's segments grow meanwhile.
        let shown = store.show_event(id(i)).await.unwrap();
        assert_eq!(shown.envelope["data"]["n"], i, "{}", shown.envelope);
    }
    assert!(
        segment_files(dir.path()).len() > 3,
        "records in several segments"
    );
    let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    let rows: Vec<(String, Option<i64>)> = conn
        .prepare("SELECT envelope, journal_seq FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 24);
    assert!(
        rows.iter().all(|(e, seq)| e.is_empty() && seq.is_some()),
        "the rows hold no envelope, only where it is: {rows:?}"
    );
    let field = |text: &str| EventFilter {
        field: Some(FieldMatch::parse(text).unwrap()),
        limit: 50,
        ..EventFilter::default()
    };
    let found = store.list_events(field("data.n=7")).await.unwrap();
    assert_eq!(
        found.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [id(7)]
    );
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 24);
    assert_eq!(pending[5].event.data["n"], 5);
    // A job claimed later (a retry, an ordered one) carries its event.
    store
        .record_routing(Routing {
            jobs: vec![NewJob {
                id: "01JF00000000000000000000J1".into(),
                rule: "r".into(),
                call_index: 0,
                action: "a".into(),
                params: json!({}),
                idempotency_key: format!("{}:r:0", id(3)),
                order_key: None,
            }],
            ..no_jobs(&id(3), now_ms())
        })
        .await
        .unwrap();
    let claimed = store.claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let carried: serde_json::Value = serde_json::from_str(claimed[0].event.get()).unwrap();
    assert_eq!(carried["data"]["n"], 3);
    // The first segment removed by hand: its events are still listed and
    // shown, with a null envelope; the others are as they were.
    let first = dir
        .path()
        .join("journal")
        .join(&segment_files(dir.path())[0]);
    std::fs::remove_file(first).unwrap();
    let all = store
        .list_events(EventFilter {
            limit: 50,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 24);
    let lost = store.show_event(id(0)).await.unwrap();
    assert!(lost.envelope.is_null(), "{}", lost.envelope);
    assert_eq!(lost.state, "pending");
    assert_eq!(
        store.show_event(id(23)).await.unwrap().envelope["data"]["n"],
        23
    );
    let found = store.list_events(field("data.n=20")).await.unwrap();
    assert_eq!(found.len(), 1, "a filter reads past what is gone");
}

/// A store whose journal starts a new segment every 4 KiB.
fn small_segments() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("s.db"),
        StoreOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    (dir, store)
}

/// The journal's segment files in a store's folder, sorted.
fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut s: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    s.sort();
    s
}
