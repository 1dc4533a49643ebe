//! Work of concurrent callers done together: the PostgreSQL store's group
//! commit. Each caller hands over an item and awaits its own result; a few
//! lanes (tasks of their own, each with one connection at a time) take
//! every item waiting, up to a bound, and do them as one unit — one
//! transaction, one commit, statements pipelined — as the embedded store's
//! writer groups the requests it finds waiting. Under light load a group
//! is one item, done as before; under heavy load the groups grow and the
//! database commits once per group instead of once per webhook.
//!
//! A group's work is done in a task of its own: a caller that stops
//! waiting (its deadline passed) takes nothing from the others of its
//! group, and a panic in a group answers its callers with an error and
//! leaves the lane running. What waits is bounded: while the database does
//! not answer (frozen, failing over), at most [`WAITING`] items queue and
//! the next caller is told at once that the store is unavailable; an item
//! whose caller stopped waiting before a lane took it is not done at all
//! (the webhook was answered 503 and will be sent again; a routing or an
//! attempt is done again from the store). The statements a caller's task records for
//! the plan tests (`run::recording`) are recorded in the group's task too.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::run::{self, Recorder};
use crate::store::{StoreError, StoreResult};

/// One caller's item, where its result goes, and the recorder of the
/// caller's task (if it records).
struct Item<T, R> {
    value: T,
    reply: oneshot::Sender<StoreResult<R>>,
    recorder: Option<Recorder>,
}

/// The most items waiting for a lane, per group.
pub(super) const WAITING: usize = 4096;

/// A queue of items and the lanes that do them in groups (see the module
/// doc). The lanes stop when the group is dropped.
pub(super) struct Group<T, R> {
    queue: mpsc::Sender<Item<T, R>>,
    name: &'static str,
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// Starts `lanes` lanes, each taking at most `most` items at a time and
    /// doing them with `work`, which answers each item in order.
    pub(super) fn start<W, F>(name: &'static str, lanes: usize, most: usize, work: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<StoreResult<R>>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(WAITING);
        let waiting = Arc::new(Mutex::new(waiting));
        let work = Arc::new(work);
        for _ in 0..lanes.max(1) {
            tokio::spawn(lane(name, waiting.clone(), most.max(1), work.clone()));
        }
        Group { queue, name }
    }

    /// Hands `value` to the next group and waits for its result.
    pub(super) async fn submit(&self, value: T) -> StoreResult<R> {
        let (reply, result) = oneshot::channel();
        let item = Item {
            value,
            reply,
            recorder: run::current_recorder(),
        };
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Unavailable(format!(
                    "the database is behind: {WAITING} {} items wait already",
                    self.name
                )))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable(format!(
                    "the store's {} lanes have stopped",
                    self.name
                )))
            }
        }
        result.await.unwrap_or_else(|_| {
            Err(StoreError::Other(format!(
                "the store's {} group ended without an answer",
                self.name
            )))
        })
    }
}

/// One lane: takes the items waiting (at least one, at most `most`), does
/// them, answers each; until the queue closes.
async fn lane<T, R, W, F>(
    name: &'static str,
    waiting: Arc<Mutex<mpsc::Receiver<Item<T, R>>>>,
    most: usize,
    work: Arc<W>,
) where
    W: Fn(Vec<T>) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<StoreResult<R>>> + Send + 'static,
{
    let mut items = Vec::with_capacity(most);
    loop {
        {
            let mut queue = waiting.lock().await;
            if queue.recv_many(&mut items, most).await == 0 {
                return;
            }
        }
        // Callers that stopped waiting: nobody is told, nothing is done.
        items.retain(|i| !i.reply.is_closed());
        if items.is_empty() {
            continue;
        }
        let recorder = items.iter().find_map(|i| i.recorder.clone());
        let (values, replies): (Vec<T>, Vec<_>) =
            items.drain(..).map(|i| (i.value, i.reply)).unzip();
        let n = values.len();
        let done = std::panic::AssertUnwindSafe(run::recorded_by(recorder, work(values)))
            .catch_unwind()
            .await;
        let mut results = match done {
            Ok(results) => results.into_iter(),
            Err(_) => {
                tracing::error!(
                    "store: a {name} group of {n} failed (a panic); its callers are told"
                );
                Vec::new().into_iter()
            }
        };
        for reply in replies {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Other(format!(
                    "the store's {name} group failed"
                )))
            });
            let _ = reply.send(result);
        }
    }
}

/// Whether a group that failed is worth doing again one item at a time: it
/// failed on a statement (one item's bad value, a deadlock between two
/// instances' groups), not on the database being away.
pub(super) fn retry_alone(e: &StoreError) -> bool {
    !matches!(e, StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn each_caller_gets_its_own_answer_and_waiting_callers_are_grouped() {
        let groups = Arc::new(AtomicUsize::new(0));
        let seen = groups.clone();
        let group = Arc::new(Group::start("test", 1, 64, move |values: Vec<u32>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                values.into_iter().map(|v| Ok(v * 2)).collect()
            }
        }));
        let calls = (0..200u32).map(|v| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(v).await })
        });
        let results = futures_util::future::join_all(calls).await;
        for (v, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap().unwrap(), v as u32 * 2);
        }
        let n = groups.load(Ordering::SeqCst);
        assert!(n < 200, "200 callers waiting together made {n} groups");
        assert!(n >= 200 / 64, "groups are bounded: {n}");
    }

    #[tokio::test]
    async fn a_panicking_group_answers_its_callers_and_the_lane_goes_on() {
        let group = Group::start("test", 1, 8, |values: Vec<u32>| async move {
            assert!(values[0] != 13, "unlucky");
            values.into_iter().map(Ok).collect::<Vec<_>>()
        });
        let err = group.submit(13).await.unwrap_err();
        assert!(err.to_string().contains("test group failed"), "{err}");
        assert_eq!(group.submit(7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_full_queue_says_so_at_once_and_an_abandoned_item_is_not_done() {
        let (release, held) = tokio::sync::watch::channel(false);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let group = Arc::new(Group::start("test", 1, 1, move |values: Vec<u32>| {
            log.lock().unwrap().extend(values.iter().copied());
            let mut held = held.clone();
            async move {
                // The database does not answer until released.
                let _ = held.wait_for(|released| *released).await;
                values.into_iter().map(Ok).collect()
            }
        }));
        // The first is taken by the lane, which hangs on it.
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.submit(0).await }
        });
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // One gives up waiting (its deadline passed) while it is queued.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), group.submit(1)).await;
        assert!(gave_up.is_err());
        // The queue fills (the abandoned item holds a place until a lane
        // takes it); the next caller is told at once.
        let queued: Vec<_> = (0..WAITING as u32 - 1)
            .map(|v| {
                let group = group.clone();
                tokio::spawn(async move { group.submit(100 + v).await })
            })
            .collect();
        for _ in 0..100_000 {
            if group.queue.capacity() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(group.queue.capacity(), 0);
        let refused = group.submit(7).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Unavailable(m) if m.contains("behind")),
            "{refused}"
        );
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (v, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await.unwrap().unwrap(), 100 + v as u32);
        }
        let seen = seen.lock().unwrap();
        assert!(!seen.contains(&1), "the abandoned item was done");
        assert_eq!(seen.len(), WAITING);
    }

    #[tokio::test]
    async fn a_group_answering_too_few_fails_the_rest_not_the_lane() {
        let group: Group<u32, u32> =
            Group::start("test", 1, 8, |_: Vec<u32>| async move { Vec::new() });
        assert!(group.submit(1).await.is_err());
        assert!(group.submit(2).await.is_err());
    }
}
