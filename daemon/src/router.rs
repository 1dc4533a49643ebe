//! The router: runs the rules on each accepted event and hands the actions
//! they decide on to dispatch as jobs.
//!
//! Owns: the background task between ingress and dispatch, fed through a
//! bounded queue (ingress answers 503 when it is full).
//! Calls: `rules` (to decide) and `dispatch` (to act). Never ingress.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::dispatch::{Dispatcher, Job};
use crate::event::Event;
use crate::rules::Rules;

/// The events of one accepted request, routed in order.
#[derive(Debug)]
pub struct Accepted {
    pub events: Vec<Arc<Event>>,
}

/// Starts the router. When `stop` turns true it closes the queue (senders
/// then fail at once), routes what was already queued, waits for the jobs it
/// started, and ends. It also ends if every sender is dropped.
pub fn spawn(
    rules: Arc<Rules>,
    dispatcher: Dispatcher,
    mut rx: mpsc::Receiver<Accepted>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut jobs = JoinSet::new();
        let mut stopping = false;
        loop {
            let batch = tokio::select! {
                batch = rx.recv() => batch,
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    rx.close();
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            for event in batch.events {
                route_one(&rules, &dispatcher, event, &mut jobs).await;
            }
            while jobs.try_join_next().is_some() {}
        }
        while jobs.join_next().await.is_some() {}
    })
}

async fn route_one(
    rules: &Arc<Rules>,
    dispatcher: &Dispatcher,
    event: Arc<Event>,
    jobs: &mut JoinSet<()>,
) {
    let (r, e) = (rules.clone(), event.clone());
    let runs = match tokio::task::spawn_blocking(move || r.route(&e)).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::error!(event_id = %event.id, "routing failed: {e}");
            return;
        }
    };
    let mut submitted = 0usize;
    for run in &runs {
        tracing::debug!(event_id = %event.id, rule = %run.rule, us = run.elapsed_us, error = ?run.error, calls = run.calls.len(), "rule ran");
        for (index, call) in run.calls.iter().enumerate() {
            if !dispatcher.has_action(&call.action) {
                tracing::error!(
                    event_id = %event.id, rule = %run.rule, action = %call.action,
                    "rule called an action that the config does not define; add [actions.{}] or fix the rule",
                    call.action
                );
                continue;
            }
            let job = Job::new(
                event.clone(),
                &run.rule,
                index,
                call.action.clone(),
                call.params.clone(),
            );
            dispatcher.submit(job, jobs).await;
            submitted += 1;
        }
    }
    tracing::info!(
        event_id = %event.id, source = %event.source, r#type = %event.kind,
        rules = runs.len(), jobs = submitted, "event routed"
    );
}
