//! Retention: the pruner, sweeping what is older than `[store]
//! retention` in bounded steps (`store::sweep`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{now_ms, sweep, Pipeline};

/// How often old events are pruned: a tenth of the retention, between a
/// second and ten minutes.
fn prune_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Steps of one sweep, at most: a bound on the loop, far above what a
/// sweep needs (each step looks at a window of rows).
const SWEEP_STEPS: usize = 1_000_000;

pub fn spawn_pruner(
    store: Arc<dyn Pipeline>,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            let before = now - retention.as_millis() as i64;
            // Step by step, each a short transaction of its own: ingest's
            // writes queued meanwhile go in between (the writer takes at
            // most one step per group).
            let stopping = || *stop.borrow();
            let (total, done) = sweep(&*store, before, now, SWEEP_STEPS, &stopping).await;
            if let Err(e) = done {
                tracing::warn!("pruning failed (tried again at the next round): {e}");
            }
            if total.any() {
                tracing::info!(
                    events = total.events,
                    requests = total.requests,
                    dedup_keys = total.dedup_keys,
                    versions = total.versions,
                    journal_segments = total.segments,
                    steps = total.steps,
                    "pruned"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(prune_every(retention)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    })
}
