//! A lane: plugin calls of one kind (a source's verifications) queued and
//! run by blocking threads that each take every call waiting before they
//! sleep.
//!
//! A call on the [`CallPool`] wakes a blocking thread and, when it is done,
//! the async task that waits for it: measured under load, those wake-ups
//! were ~20% of ingest's CPU. A lane keeps the pool's guarantees — each
//! call within its deadline (the caller stops waiting and answers 503), a
//! panic caught and reported, at most the pool's permits in threads — but
//! a thread that finds calls queued behind the one it ran takes them too,
//! so under load one wake-up serves many calls.
//!
//! A lane starts a thread when none is draining it, or when every one that
//! is has been in one call for longer than [`SLOW`]: a slow or stuck call
//! holds up only its own thread, and the calls behind it get another (while
//! the pool has permits). A call whose caller stopped waiting is skipped.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::{CallPool, PluginError};

/// A call running longer than this no longer counts as its thread being
/// about to take the next one.
pub const SLOW: Duration = Duration::from_millis(5);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// The threads draining the lane, and when each began the call it is in.
    drainers: HashMap<u64, Option<Instant>>,
    next_id: u64,
}

pub struct Lane {
    pool: CallPool,
    state: Mutex<State>,
}

impl Lane {
    pub fn new(pool: CallPool) -> Arc<Lane> {
        Arc::new(Lane {
            pool,
            state: Mutex::new(State::default()),
        })
    }

    /// Runs `f` on one of the lane's threads within `deadline`.
    pub async fn call<T, F>(self: &Arc<Self>, deadline: Duration, f: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let began = started.clone();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return; // its caller stopped waiting
            }
            began.store(true, Ordering::Relaxed);
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.queue.push_back(job);
            let busy = state
                .drainers
                .values()
                .all(|since| since.is_some_and(|t| t.elapsed() >= SLOW));
            busy.then(|| {
                state.next_id += 1;
                state.next_id
            })
        };
        if let Some(id) = start {
            self.start_drainer(id);
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(panic))) => Err(PluginError::Panicked(panic_message(&panic))),
            Ok(Err(_)) => Err(PluginError::Busy(deadline)),
            Err(_) if started.load(Ordering::Relaxed) => Err(PluginError::Timeout(deadline)),
            // Never begun: every thread was busy or the pool had no permit.
            Err(_) => Err(PluginError::Busy(deadline)),
        }
    }

    fn start_drainer(self: &Arc<Self>, id: u64) {
        // Counted at once (as between calls), so that the calls queued while
        // it waits for a permit do not each start another.
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drainers
            .insert(id, None);
        if let Some(permit) = self.pool.try_permit() {
            self.spawn_drainer(id, permit);
            return;
        }
        // The pool is full (slow actions or stuck calls hold its permits):
        // wait for one; the queued calls time out meanwhile if it is long.
        let lane = self.clone();
        tokio::spawn(async move {
            match lane.pool.permit().await {
                Some(permit) => lane.spawn_drainer(id, permit),
                None => {
                    lane.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .drainers
                        .remove(&id);
                }
            }
        });
    }

    fn spawn_drainer(self: &Arc<Self>, id: u64, permit: OwnedSemaphorePermit) {
        let lane = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            lane.drain(id);
        });
    }

    fn drain(&self, id: u64) {
        loop {
            let job = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match state.queue.pop_front() {
                    Some(job) => {
                        state.drainers.insert(id, Some(Instant::now()));
                        job
                    }
                    None => {
                        state.drainers.remove(&id);
                        return;
                    }
                }
            };
            job();
            if let Some(since) = self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drainers
                .get_mut(&id)
            {
                *since = None;
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_and_a_panic_is_an_error() {
        let lane = Lane::new(CallPool::new(4));
        let v = lane.call(Duration::from_secs(5), || 41 + 1).await.unwrap();
        assert_eq!(v, 42);
        let err = lane
            .call(Duration::from_secs(5), || -> u32 { panic!("plugin bug") })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PluginError::Panicked(m) if m.contains("plugin bug")),
            "{err}"
        );
        // The lane goes on after a panic.
        assert_eq!(lane.call(Duration::from_secs(5), || 7).await.unwrap(), 7);
    }

    /// Starts a call that blocks until the sender is used (or dropped),
    /// and returns once it has been in its call for longer than [`SLOW`].
    async fn stuck_call(
        lane: &Arc<Lane>,
        deadline: Duration,
    ) -> (
        tokio::task::JoinHandle<Result<(), PluginError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Mutex::new(stuck);
        let l = lane.clone();
        let call = tokio::spawn(async move {
            l.call(deadline, move || {
                let _ = stuck.lock().unwrap().recv();
            })
            .await
        });
        let began = Instant::now();
        while lane
            .state
            .lock()
            .unwrap()
            .drainers
            .values()
            .all(|s| s.is_none())
        {
            assert!(began.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(SLOW).await;
        (call, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_call_holds_up_only_its_own_thread() {
        let lane = Lane::new(CallPool::new(4));
        let (slow, release) = stuck_call(&lane, Duration::from_millis(300)).await;
        // Later calls get another thread.
        for n in 0..20 {
            assert_eq!(
                lane.call(Duration::from_secs(5), move || n).await.unwrap(),
                n
            );
        }
        // The stuck call's caller gets a timeout at its deadline.
        assert!(matches!(slow.await.unwrap(), Err(PluginError::Timeout(_))));
        release.send(()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_every_permit_held_by_stuck_calls_a_call_is_busy() {
        let lane = Lane::new(CallPool::new(1));
        let (first, release) = stuck_call(&lane, Duration::from_millis(200)).await;
        let err = lane
            .call(Duration::from_millis(50), || 1)
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::Busy(_)), "{err}");
        assert!(matches!(first.await.unwrap(), Err(PluginError::Timeout(_))));
        release.send(()).unwrap();
    }
}
