//! Ingest into the PostgreSQL store: a request and its events in one
//! transaction, acknowledged after its commit, with the dedup keys and the
//! object versions (the stale-event guard) as the database's primary keys.
//!
//! Requests arriving together are taken in together (`group.rs`): one
//! transaction for the group, its requests' statements pipelined, one
//! commit. A request of one event is one statement ([`INGEST_ONE`]); of
//! several, a few. A group that fails on a statement is done again a
//! request at a time, so that one request's bad value or a deadlock with
//! another instance's group fails no one else.

use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use super::group::retry_alone;
use super::{map_err, pool_err, run};
use crate::event::Event;
use crate::store::{Ingested, StoreResult, StoredRequest};

/// The ingest of a request of one event, as one statement (one round
/// trip, its own transaction): the dedup key taken (or not), the object's
/// version raised (or not), the request with its verdict, the event, and a
/// duplicate's original counted. Returns whether the key was taken, whether
/// the event is fresh (not stale), and a duplicate's original (none only if
/// the original committed after this statement began: read again then).
pub(super) const INGEST_ONE: &str = "
WITH d AS (
    INSERT INTO dedup (source, key, event_id, expires_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (source, key) DO UPDATE
        SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
        WHERE dedup.expires_at <= $5
    RETURNING event_id),
v AS (
    INSERT INTO versions (source, key, version, event_id, updated_at)
    SELECT $1, $6, $7, $3, $5 WHERE $6::text IS NOT NULL AND EXISTS (SELECT 1 FROM d)
    ON CONFLICT (source, key) DO UPDATE SET
        version = EXCLUDED.version, event_id = EXCLUDED.event_id,
        updated_at = EXCLUDED.updated_at
    WHERE EXCLUDED.version > versions.version
    RETURNING 1),
r AS (
    INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
    VALUES ($8, $1, $5, $9, $10, $11, $12, $13,
            CASE WHEN EXISTS (SELECT 1 FROM d) THEN 'accepted' ELSE 'duplicate' END)),
e AS (
    INSERT INTO events (id, request_id, source, type, received_at, envelope, state, owner)
    SELECT $3, $8, $1, $14, $5, $15,
           CASE WHEN $6::text IS NULL OR EXISTS (SELECT 1 FROM v) THEN 'pending' ELSE 'stale' END,
           $16
    WHERE EXISTS (SELECT 1 FROM d)),
b AS (
    UPDATE events SET duplicates = duplicates + 1
    WHERE id = (SELECT event_id FROM dedup WHERE source = $1 AND key = $2)
      AND NOT EXISTS (SELECT 1 FROM d)
    RETURNING id)
SELECT EXISTS (SELECT 1 FROM d), $6::text IS NULL OR EXISTS (SELECT 1 FROM v),
       (SELECT id FROM b)";

/// One request to take in, as a group's work holds it.
pub(super) struct Intake {
    pub(super) request: StoredRequest,
    pub(super) events: Vec<(Event, Box<RawValue>)>,
    pub(super) dedup_window_ms: i64,
}

impl Intake {
    /// A request of one event that is not a handshake: one statement. (A
    /// handshake is rare: the general path records it.)
    fn single(&self) -> bool {
        self.events.len() == 1 && !self.events[0].0.handshake
    }

    /// The order groups take their requests in: by the first event's dedup
    /// key, so that two instances' groups taking the same keys (a delivery
    /// sent to both) take them in one order and do not deadlock.
    fn lock_order(&self) -> (&str, &str) {
        self.events
            .first()
            .map_or(("", ""), |(e, _)| (e.source.as_str(), e.dedup_key.as_str()))
    }
}

/// The ingest lanes' work (see `group.rs`): a group of requests in one
/// transaction, or one by one if that fails on a statement. Each request
/// is answered with what became of its events.
pub(super) async fn ingest_group(
    pool: Pool,
    instance: String,
    items: Vec<Intake>,
) -> Vec<StoreResult<Vec<Ingested>>> {
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let e = pool_err(e);
            return items.iter().map(|_| Err(e.clone())).collect();
        }
    };
    if items.len() > 1 {
        match together(&mut client, &instance, &items).await {
            Ok(results) => return results.into_iter().map(Ok).collect(),
            Err(e) if retry_alone(&e) => {
                tracing::debug!(
                    "store: a group of {} requests failed ({e}); each alone",
                    items.len()
                )
            }
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        }
    }
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        results.push(alone(&mut client, &instance, item).await);
    }
    results
}

/// A group in one transaction: the requests of one event pipelined, then
/// the others; one commit.
async fn together(
    client: &mut Object,
    instance: &str,
    items: &[Intake],
) -> StoreResult<Vec<Vec<Ingested>>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| items[*a].lock_order().cmp(&items[*b].lock_order()));
    let (singles, others): (Vec<usize>, Vec<usize>) =
        order.into_iter().partition(|i| items[*i].single());
    let tx = client.transaction().await.map_err(map_err)?;
    let mut results: Vec<Option<Vec<Ingested>>> = vec![None; items.len()];
    let decided = futures_util::future::try_join_all(
        singles
            .iter()
            .map(|i| ingest_one(&tx, instance, &items[*i])),
    )
    .await?;
    for (i, ingested) in singles.into_iter().zip(decided) {
        results[i] = Some(ingested);
    }
    for i in others {
        results[i] = Some(ingest_many(&tx, instance, &items[i]).await?);
    }
    tx.commit().await.map_err(map_err)?;
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// One request in a transaction of its own.
async fn alone(client: &mut Object, instance: &str, item: &Intake) -> StoreResult<Vec<Ingested>> {
    if item.single() {
        return ingest_one(&*client, instance, item).await;
    }
    let tx = client.transaction().await.map_err(map_err)?;
    let results = ingest_many(&tx, instance, item).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(results)
}

/// A request of one event: one statement (see [`INGEST_ONE`]).
async fn ingest_one(
    client: &impl GenericClient,
    instance: &str,
    item: &Intake,
) -> StoreResult<Vec<Ingested>> {
    let request = &item.request;
    let (ev, envelope) = &item.events[0];
    let now = request.received_at_ms;
    let (order_key, version) = match &ev.order {
        Some(o) => (Some(o.key.as_str()), Some(o.version)),
        None => (None, None),
    };
    let row = run::query_one(
        client,
        INGEST_ONE,
        &[
            &ev.source,
            &ev.dedup_key,
            &ev.id,
            &(now + item.dedup_window_ms),
            &now,
            &order_key,
            &version,
            &request.id,
            &request.method,
            &request.path,
            &request.query,
            &Json(&request.headers),
            &request.body.as_ref(),
            &ev.kind,
            &Json(envelope),
            &instance,
        ],
    )
    .await?;
    let (taken, fresh, original): (bool, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    Ok(vec![match (taken, fresh) {
        (true, true) => Ingested::New(ev.id.clone()),
        (true, false) => Ingested::Stale(ev.id.clone()),
        (false, _) => match original {
            Some(original) => Ingested::Duplicate(original),
            // The original committed while this statement ran: its
            // snapshot did not see it; the next statement's does.
            None => Ingested::Duplicate(count_duplicate(client, ev).await?),
        },
    }])
}

/// Counts a duplicate of the event holding `ev`'s dedup key; returns
/// that event's id.
async fn count_duplicate(client: &impl GenericClient, ev: &Event) -> StoreResult<String> {
    let row = run::query_opt(
        client,
        "UPDATE events SET duplicates = duplicates + 1
             WHERE id = (SELECT event_id FROM dedup WHERE source = $1 AND key = $2)
             RETURNING id",
        &[&ev.source, &ev.dedup_key],
    )
    .await?;
    Ok(row.map(|r| r.get(0)).unwrap_or_default())
}

/// A request of several events (or a handshake), in the transaction `tx`:
/// what becomes of each decided first (the keys and versions are rows of
/// their own), then the request written with its verdict, then the events.
async fn ingest_many(
    tx: &Transaction<'_>,
    instance: &str,
    item: &Intake,
) -> StoreResult<Vec<Ingested>> {
    let (request, events) = (&item.request, &item.events);
    let now = request.received_at_ms;
    let results = decide(tx, events, now, now + item.dedup_window_ms).await?;
    let all_duplicates =
        !events.is_empty() && results.iter().all(|r| matches!(r, Ingested::Duplicate(_)));
    let verdict = if all_duplicates {
        "duplicate"
    } else {
        "accepted"
    };
    run::execute(tx, "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &request.id,
            &request.source,
            &now,
            &request.method,
            &request.path,
            &request.query,
            &Json(&request.headers),
            &request.body.as_ref(),
            &verdict,
        ],).await?;
    write_events(tx, instance, &request.id, now, events, &results).await?;
    Ok(results)
}

/// The events' rows: each new, stale or handshake event with its state
/// and this instance as its owner; a duplicate counted on its original.
async fn write_events(
    tx: &Transaction<'_>,
    instance: &str,
    request_id: &str,
    now: i64,
    events: &[(Event, Box<RawValue>)],
    results: &[Ingested],
) -> StoreResult<()> {
    let insert_event = tx
        .prepare_cached(
            "INSERT INTO events (id, request_id, source, type, received_at, envelope, state, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(map_err)?;
    let bump = tx
        .prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = $1")
        .await
        .map_err(map_err)?;
    for ((ev, envelope), result) in events.iter().zip(results) {
        let state = match result {
            Ingested::Duplicate(original) => {
                tx.execute(&bump, &[original]).await.map_err(map_err)?;
                continue;
            }
            Ingested::Stale(_) => "stale",
            Ingested::Handshake(_) => "handshake",
            Ingested::New(_) => "pending",
        };
        tx.execute(
            &insert_event,
            &[
                &ev.id,
                &request_id,
                &ev.source,
                &ev.kind,
                &now,
                &Json(envelope),
                &state,
                &instance,
            ],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// What becomes of each event, in order: a duplicate (another holds its
/// dedup key until it expires), a handshake, stale (its object has a newer
/// version already), or new. Takes the keys and versions as it goes.
async fn decide(
    tx: &Transaction<'_>,
    events: &[(Event, Box<RawValue>)],
    now: i64,
    until: i64,
) -> StoreResult<Vec<Ingested>> {
    let take_key = tx
        .prepare_cached(
            "INSERT INTO dedup (source, key, event_id, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, key) DO UPDATE
                 SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                 WHERE dedup.expires_at <= $5
             RETURNING event_id",
        )
        .await
        .map_err(map_err)?;
    let holder = tx
        .prepare_cached("SELECT event_id FROM dedup WHERE source = $1 AND key = $2")
        .await
        .map_err(map_err)?;
    let set_version = tx
        .prepare_cached(
            "INSERT INTO versions (source, key, version, event_id, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, key) DO UPDATE SET
                 version = EXCLUDED.version, event_id = EXCLUDED.event_id,
                 updated_at = EXCLUDED.updated_at
             WHERE EXCLUDED.version > versions.version
             RETURNING 1",
        )
        .await
        .map_err(map_err)?;
    let mut results = Vec::with_capacity(events.len());
    for (ev, _) in events {
        let taken = tx
            .query_opt(
                &take_key,
                &[&ev.source, &ev.dedup_key, &ev.id, &until, &now],
            )
            .await
            .map_err(map_err)?;
        if taken.is_none() {
            let original: Option<String> = tx
                .query_opt(&holder, &[&ev.source, &ev.dedup_key])
                .await
                .map_err(map_err)?
                .map(|r| r.get(0));
            results.push(Ingested::Duplicate(original.unwrap_or_default()));
            continue;
        }
        if ev.handshake {
            results.push(Ingested::Handshake(ev.id.clone()));
            continue;
        }
        let fresh = match &ev.order {
            None => true,
            Some(order) => tx
                .query_opt(
                    &set_version,
                    &[&ev.source, &order.key, &order.version, &ev.id, &now],
                )
                .await
                .map_err(map_err)?
                .is_some(),
        };
        results.push(match fresh {
            true => Ingested::New(ev.id.clone()),
            false => Ingested::Stale(ev.id.clone()),
        });
    }
    Ok(results)
}
