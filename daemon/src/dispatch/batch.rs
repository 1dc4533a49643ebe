//! Batch calls: the jobs of an action whose plugin takes several in one
//! call (ABI 1.3 `execute_batch`) wait in its queue while a call runs; the
//! next call takes them all, up to [`BATCH_MAX`], on one pool thread.
//!
//! An action's `concurrency` counts jobs in flight, however they are
//! batched: a call of n jobs holds n of its slots, and takes at most
//! `concurrency` jobs (a plugin may run a batch's jobs all at once — the
//! http action sends its requests in parallel). A plugin whose batch is
//! one operation at its destination says so (ABI 1.7: the file action,
//! one write and one sync): its call holds one slot, whatever it carries.
//!
//! One task makes an action's calls while they are quick. When every call
//! running has taken longer than [`SLOW_CALL`] (a slow target, a stuck
//! request), another task starts on what waits, up to the action's
//! concurrency, so one slow call does not hold up the jobs behind it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;

use super::Dispatcher;
use crate::store::{now_ms, ClaimedJob};

/// The most jobs handed to an action in one `execute_batch` call.
pub const BATCH_MAX: usize = 256;

/// A call running longer than this lets another task take the jobs
/// waiting behind it.
pub const SLOW_CALL: Duration = Duration::from_millis(5);

/// Jobs waiting for their action's next batch call, with their slots.
#[derive(Default)]
pub(super) struct BatchQueue {
    jobs: Vec<(ClaimedJob, OwnedSemaphorePermit)>,
    /// The tasks making calls for this action: when each one's call began
    /// (`None` between calls).
    tasks: HashMap<u64, Option<Instant>>,
    next_task: u64,
    /// Whether a task waits to look again once the running calls are slow.
    looking: bool,
}

/// What the jobs waiting in a queue need now.
pub(super) enum Next {
    /// A new task, registered under this id, to make calls.
    Task(u64),
    /// A look again at this instant (every call is running, none slow yet).
    LookAt(Instant),
    /// Nothing: a task will take them.
    Nothing,
}

impl BatchQueue {
    fn next(&mut self, concurrency: usize) -> Next {
        if self.jobs.is_empty() || self.tasks.len() >= concurrency.max(1) {
            return Next::Nothing;
        }
        let mut youngest = None;
        for call in self.tasks.values() {
            match call {
                // Between calls: it takes the jobs next.
                None => return Next::Nothing,
                Some(began) => youngest = youngest.max(Some(*began)),
            }
        }
        match youngest {
            Some(began) if began.elapsed() < SLOW_CALL => {
                if std::mem::replace(&mut self.looking, true) {
                    Next::Nothing
                } else {
                    Next::LookAt(began + SLOW_CALL)
                }
            }
            // No task, or every call is slow.
            _ => {
                let id = self.next_task;
                self.next_task += 1;
                self.tasks.insert(id, None);
                Next::Task(id)
            }
        }
    }
}

impl Dispatcher {
    /// The action's concurrency: at most this many jobs in flight.
    fn concurrency(&self, action: &str) -> usize {
        self.actions().get(action).map_or(1, |a| a.concurrency)
    }

    /// Queues a job for its action's next batch call (at most
    /// `concurrency` calls at once), and says what the queue needs now.
    pub(super) fn enqueue_batch(
        &self,
        job: ClaimedJob,
        permit: OwnedSemaphorePermit,
        concurrency: usize,
    ) -> Next {
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let queue = batches.entry(job.action.clone()).or_default();
        queue.jobs.push((job, permit));
        queue.next(concurrency)
    }

    /// Serves what the queue needs: a task making calls, or a look again
    /// once the running calls have been slow.
    pub(super) async fn serve(&self, action: String, mut next: Next) {
        loop {
            match next {
                Next::Task(id) => return self.run_batches(&action, id).await,
                Next::Nothing => return,
                Next::LookAt(at) => {
                    tokio::time::sleep_until(at.into()).await;
                    let concurrency = self.concurrency(&action);
                    let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(queue) = batches.get_mut(&action) else {
                        return;
                    };
                    queue.looking = false;
                    next = queue.next(concurrency);
                }
            }
        }
    }

    /// Makes batch calls for an action until its queue is empty.
    async fn run_batches(&self, action: &str, id: u64) {
        loop {
            let batch: Vec<_> = {
                let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = batches.get_mut(action) else {
                    return;
                };
                if queue.jobs.is_empty() {
                    queue.tasks.remove(&id);
                    return;
                }
                queue.tasks.insert(id, Some(Instant::now()));
                // A call holds a slot per job (requests in flight at the
                // destination): at most `concurrency` of them, unless a
                // batch is one operation there (`Action::jobs_per_call`).
                let per_call = self.actions().get(action).map_or(1, |a| a.jobs_per_call());
                let n = queue.jobs.len().min(BATCH_MAX).min(per_call);
                queue.jobs.drain(..n).collect()
            };
            let (jobs, _permits): (Vec<ClaimedJob>, Vec<_>) = batch.into_iter().unzip();
            let started = now_ms();
            let handle = self.actions().get(action).cloned();
            let outcomes = self.execute.batch(action, handle, &jobs).await;
            if let Some(queue) = self
                .batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(action)
            {
                queue.tasks.insert(id, None);
            }
            let finished = now_ms();
            // Recorded together: the store's writer takes them in one commit.
            join_all(
                jobs.into_iter()
                    .zip(outcomes)
                    .map(|(job, outcome)| self.record(job, outcome, started, finished)),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    /// A queue of `jobs` waiting, and tasks whose calls began at these
    /// instants (`None`: between calls).
    fn queue_with(jobs: usize, calls: &[Option<Instant>]) -> BatchQueue {
        let slots = Arc::new(Semaphore::new(64));
        let mut queue = BatchQueue::default();
        for n in 0..jobs {
            let job = ClaimedJob {
                id: format!("j{n}"),
                event_id: "e".into(),
                event: serde_json::value::to_raw_value(&serde_json::json!({}))
                    .unwrap()
                    .into(),
                rule: "r".into(),
                action: "a".into(),
                params: serde_json::json!({}),
                idempotency_key: format!("k{n}"),
                attempt: 1,
                series_attempt: 1,
                order_key: None,
                rate_slot: None,
            };
            queue
                .jobs
                .push((job, slots.clone().try_acquire_owned().unwrap()));
        }
        for began in calls {
            let id = queue.next_task;
            queue.next_task += 1;
            queue.tasks.insert(id, *began);
        }
        queue
    }

    /// A call that began long ago (slow), and one that has not yet begun by
    /// the clock (young, however long the test takes).
    fn slow() -> Option<Instant> {
        Instant::now().checked_sub(Duration::from_secs(1))
    }
    fn young() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(3600))
    }

    #[test]
    fn waiting_jobs_get_a_task_only_when_none_is_quick() {
        // No task yet: one starts, registered between calls.
        let mut q = queue_with(1, &[]);
        assert!(matches!(q.next(4), Next::Task(0)));
        assert_eq!(q.tasks.get(&0), Some(&None));
        // A task between calls takes them.
        let mut q = queue_with(3, &[None, slow()]);
        assert!(matches!(q.next(4), Next::Nothing));
        // Every call slow: another task.
        let mut q = queue_with(3, &[slow(), slow()]);
        assert!(matches!(q.next(4), Next::Task(2)));
        // ... but never more than the action's concurrency.
        let mut q = queue_with(3, &[slow(), slow()]);
        assert!(matches!(q.next(2), Next::Nothing));
        // Nothing waits: nothing to do.
        let mut q = queue_with(0, &[slow()]);
        assert!(matches!(q.next(4), Next::Nothing));
    }

    #[test]
    fn a_young_call_gets_one_look_again_when_it_turns_slow() {
        let began = young().unwrap();
        let mut q = queue_with(2, &[slow(), Some(began)]);
        match q.next(4) {
            // When the youngest call turns slow.
            Next::LookAt(at) => assert_eq!(at, began + SLOW_CALL),
            _ => panic!("expected a look again"),
        }
        // One look at a time.
        assert!(matches!(q.next(4), Next::Nothing));
        q.looking = false;
        assert!(matches!(q.next(4), Next::LookAt(_)));
    }
}
