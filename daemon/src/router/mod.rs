//! The router: runs the rules on each stored, unrouted event and records
//! the routing with the jobs it decided on, in one transaction.
//!
//! Owns: the router task. It takes the events ingress committed from an
//! in-memory inbox, and reads unrouted events from the store at start, when
//! the inbox overflowed, and about once a second (what a restart, an
//! overflow or a replay left unrouted); it checks each against its type's
//! schema in the catalog (counting what arrived and drifted; a strict
//! source's drifted event is held for an operator instead of routed,
//! unless an operator released it), runs the rules off the
//! async threads, and records each event's rule runs and jobs together: an
//! event is either unrouted, or routed with all of its jobs. Jobs the
//! dispatcher has room for are stored already claimed and handed to it in
//! memory, saving a claim round trip through the store.
//! Calls: `catalog` (to check), `rules` (to decide) and `store`; wakes the dispatcher and hands
//! it jobs through the `Notify` and handoff it is given, importing no later
//! stage.

use std::collections::{HashMap, HashSet};

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use serde_json::Value;

use crate::catalog::{Catalog, Counter, Verdict};
use crate::event::new_id;
use crate::rules::{RuleRun, Rules};
use crate::store::{
    now_ms, BacklogGauge, ClaimedJob, Envelope, NewJob, PendingEvent, Pipeline, Routing,
};

/// Room in the inbox from ingress; beyond it, events wait in the store.
pub const INBOX: usize = 4096;
/// Events taken from the store per round.
const BATCH: usize = 256;
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The router's connections.
pub struct Router {
    pub rules: Arc<Rules>,
    pub store: Arc<dyn Pipeline>,
    /// Events ingress stored, handed over in memory (when there is room).
    pub inbox: mpsc::Receiver<PendingEvent>,
    /// Set by ingress when the inbox was full: the store has events the
    /// inbox does not.
    pub overflowed: Arc<AtomicBool>,
    /// Woken after jobs were stored.
    pub dispatch: Arc<Notify>,
    /// Where jobs claimed with their routing go straight to the dispatcher.
    pub handoff: mpsc::Sender<ClaimedJob>,
    pub gauge: Arc<BacklogGauge>,
    /// The actions configured now (calls to another are logged and
    /// dropped), as data: the assembler swaps it on a reload.
    pub actions: Arc<ArcSwap<ActionTable>>,
    /// Woken when the store has events the inbox did not bring (another
    /// process's replay, a stopped instance's events).
    pub wake: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each source's event types: every event is checked against its
    /// type's schema before the rules run; a strict source's drifted
    /// event is held instead. Swapped on a reload.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Where what was checked is counted, for the catalog's recorder.
    pub counter: Arc<Counter>,
}

/// The configured actions as routing sees them: by name, the parameter
/// (`order_by`) whose value orders an action's jobs, if any.
pub type ActionTable = HashMap<String, Option<String>>;

/// The idempotency key of a job: `{event}:{rule}:{call}`, and for a replay
/// (the event's `n`th routing) `{event}:{rule}:{call}:replay{n}`.
pub fn idempotency_key(event_id: &str, rule: &str, index: usize, routings: u32) -> String {
    if routings == 0 {
        format!("{event_id}:{rule}:{index}")
    } else {
        format!(
            "{event_id}:{rule}:{index}{}{routings}",
            crate::store::REPLAY_MARK
        )
    }
}

impl Router {
    /// Starts the router. It routes until `stop` turns true, finishing the
    /// batch in hand; what is left stays unrouted in the store for next time.
    pub fn spawn(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_refresh = Instant::now() - IDLE_POLL;
            // The store is read at start (what a restart left unrouted), when
            // the inbox overflowed, and about once a second (replays).
            let mut last_scan: Option<Instant> = None;
            loop {
                if *stop.borrow() {
                    break;
                }
                if last_refresh.elapsed() >= IDLE_POLL {
                    if let Ok(b) = self.store.backlog().await {
                        self.gauge.set(b);
                        self.metrics.unrouted_events.set(b.unrouted_events as i64);
                        self.metrics.pending_jobs.set(b.pending_jobs as i64);
                    }
                    last_refresh = Instant::now();
                }
                let mut batch = Vec::new();
                while batch.len() < BATCH {
                    match self.inbox.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let scan = last_scan.is_none_or(|t| t.elapsed() >= IDLE_POLL)
                    || (batch.is_empty() && self.overflowed.swap(false, Ordering::Relaxed));
                let mut more = batch.len() == BATCH;
                if scan {
                    last_scan = Some(Instant::now());
                    match self.store.pending_events(BATCH).await {
                        Ok(stored) => {
                            more |= stored.len() == BATCH;
                            if more {
                                // Not all read: read again next round.
                                self.overflowed.store(true, Ordering::Relaxed);
                            }
                            let known: HashSet<String> =
                                batch.iter().map(|p| p.event.id.clone()).collect();
                            batch.extend(
                                stored.into_iter().filter(|p| !known.contains(&p.event.id)),
                            );
                        }
                        Err(e) => tracing::error!("cannot read unrouted events: {e}"),
                    }
                }
                if !batch.is_empty() {
                    self.route_batch(batch).await;
                }
                if more {
                    continue;
                }
                let next = tokio::select! {
                    p = self.inbox.recv() => p,
                    _ = self.wake.notified() => {
                        self.overflowed.store(true, Ordering::Relaxed);
                        None
                    }
                    _ = tokio::time::sleep(IDLE_POLL) => None,
                    _ = stop.wait_for(|s| *s) => None,
                };
                if let Some(p) = next {
                    self.route_batch(vec![p]).await;
                }
            }
        })
    }

    async fn route_batch(&self, batch: Vec<PendingEvent>) {
        // Each event's trace (its `traceparent`), when tracing is on: a
        // routing is a child of the webhook's span, a replay's its own
        // trace linked to it.
        let started = std::time::SystemTime::now();
        let traces: Vec<_> = match crate::telemetry::get() {
            Some(_) => batch
                .iter()
                .map(|p| {
                    (
                        crate::telemetry::of_extensions(&p.event.extensions),
                        p.routings,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let rules = self.rules.clone();
        let known = self.actions.load_full();
        let metrics = self.metrics.clone();
        let catalog = self.catalog.load_full();
        let counter = self.counter.clone();
        let routed = tokio::task::spawn_blocking(move || {
            // Each event checked against its type's schema first: a strict
            // source's drifted event is held for an operator, unrouted
            // (unless an operator released it).
            let mut learned = Vec::new();
            let verdicts: Vec<Verdict> = batch
                .iter()
                .map(|p| catalog.check(&p.event, &mut learned))
                .collect();
            let checked: Vec<_> = batch.iter().map(|p| &p.event).zip(&verdicts).collect();
            counter.add(&checked, learned);
            let mut holds = Vec::new();
            // One version of the rules for the whole batch, recorded with
            // each event: a reload never splits an event's routing.
            let set = rules.current();
            let routings = batch
                .iter()
                .zip(verdicts)
                .enumerate()
                .filter_map(|(i, (p, verdict))| {
                    if let Verdict::Drifted(drift) = &verdict {
                        if !p.released && catalog.strict(&p.event.source) {
                            holds.push((p.event.id.clone(), held_because(drift)));
                            return None;
                        }
                    }
                    let runs = set.route(&rules.engine, &rules.limits, &p.event);
                    for run in &runs {
                        metrics.rule_run(&run.rule, run.error.is_none(), run.elapsed_us);
                        // Logged here, for live events only: a playground
                        // or `rules test` run of a broken rule is shown to
                        // whoever ran it, not written as a live failure.
                        if let Some(error) = &run.error {
                            tracing::warn!(rule = %run.rule, event_id = %p.event.id, "rule failed: {error}");
                        }
                    }
                    Some((i, routing(p, set.version, runs, known.as_ref())))
                })
                .collect::<Vec<_>>();
            (routings, holds)
        })
        .await;
        let (routings, holds) = match routed {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("routing failed: {e}");
                return;
            }
        };
        self.hold(holds).await;
        let (positions, mut routings): (Vec<usize>, Vec<Routing>) = routings.into_iter().unzip();
        // Jobs the dispatcher has room for are claimed in the routing's own
        // transaction and handed over in memory; the rest wait in the store.
        let mut permits = Vec::with_capacity(routings.len());
        for r in &mut routings {
            let reserved = match r.jobs.len() {
                0 => None,
                n => self.handoff.try_reserve_many(n).ok(),
            };
            if reserved.is_none() {
                r.claim_with = None;
            }
            permits.push(reserved);
        }
        let summaries: Vec<_> = routings
            .iter()
            .map(|r| {
                let runs = r.rule_runs.as_array().map_or(0, Vec::len);
                (r.event_id.clone(), r.jobs.len(), runs)
            })
            .collect();
        let version = routings.first().map_or(0, |r| r.rules_version);
        let results = join_all(routings.into_iter().map(|r| self.store.record_routing(r))).await;
        let mut waiting = 0;
        let mut routed = 0;
        for ((((event_id, n, runs), result), reserved), i) in summaries
            .into_iter()
            .zip(results)
            .zip(permits)
            .zip(positions)
        {
            if let (Some(t), Some((cx, routings))) = (crate::telemetry::get(), traces.get(i)) {
                trace_routing(
                    t,
                    cx.as_ref(),
                    *routings,
                    started,
                    runs,
                    n,
                    version,
                    &result,
                );
            }
            match result {
                Ok(claimed) => {
                    routed += 1;
                    tracing::info!(%event_id, jobs = n, "event routed");
                    waiting += n - claimed.len();
                    if let Some(reserved) = reserved {
                        for (permit, job) in reserved.zip(claimed) {
                            permit.send(job);
                        }
                    }
                }
                Err(e) => tracing::error!(%event_id, "cannot record routing (will retry): {e}"),
            }
        }
        self.gauge.routed(routed);
        if waiting > 0 {
            self.dispatch.notify_one();
        }
    }
}

impl Router {
    /// Holds strict sources' drifted events for an operator.
    async fn hold(&self, holds: Vec<(String, String)>) {
        // Together, as a batch's routings are: the store's writer takes
        // them in one commit, not one each.
        let now = now_ms();
        let results = join_all(
            holds
                .iter()
                .map(|(event_id, why)| self.store.hold_event(event_id.clone(), why.clone(), now)),
        )
        .await;
        for ((event_id, why), result) in holds.iter().zip(results) {
            match result {
                Ok(true) => {
                    self.gauge.routed(1);
                    tracing::warn!(%event_id, "event held for an operator: {why} (switchyard events release {event_id})");
                }
                Ok(false) => {}
                Err(e) => tracing::error!(%event_id, "cannot hold the event (will retry): {e}"),
            }
        }
    }
}

/// Why a drifted event is held: its first drifts, in a line.
fn held_because(drift: &[crate::catalog::Drift]) -> String {
    let mut parts: Vec<String> = drift
        .iter()
        .take(3)
        .map(|d| match d.path.as_str() {
            "" => format!("{}: {}", d.kind.as_str(), d.detail),
            path => format!("{} {path}: {}", d.kind.as_str(), d.detail),
        })
        .collect();
    if drift.len() > 3 {
        parts.push(format!("and {} more", drift.len() - 3));
    }
    format!("schema drift ({})", parts.join("; "))
}

/// An event's routing as a span: a child of its webhook's, or (a replay)
/// a trace of its own linked to it.
#[allow(clippy::too_many_arguments)]
fn trace_routing(
    t: &crate::telemetry::Telemetry,
    webhook: Option<&opentelemetry::trace::SpanContext>,
    routings: u32,
    started: std::time::SystemTime,
    rules_run: usize,
    jobs: usize,
    version: u64,
    result: &crate::store::StoreResult<Vec<crate::store::ClaimedJob>>,
) {
    use crate::telemetry::Parent;
    use opentelemetry::trace::Span as _;
    use opentelemetry::KeyValue;
    let (name, parent) = match webhook {
        Some(cx) if routings > 0 => ("route (replay)", Parent::Linked(cx)),
        Some(cx) => ("route", Parent::Child(cx)),
        None if routings > 0 => ("route (replay)", Parent::Root),
        None => ("route", Parent::Root),
    };
    let mut span = t.start(
        name,
        opentelemetry::trace::SpanKind::Internal,
        parent,
        Some(started),
        vec![
            KeyValue::new("switchyard.rules_run", rules_run as i64),
            KeyValue::new("switchyard.jobs", jobs as i64),
            KeyValue::new("switchyard.rules_version", version as i64),
            KeyValue::new("switchyard.routing", i64::from(routings) + 1),
        ],
    );
    if let Err(e) = result {
        span.set_status(crate::telemetry::Status::error(e.to_string()));
    }
    span.end();
}

fn routing(
    p: &PendingEvent,
    rules_version: u64,
    runs: Vec<RuleRun>,
    actions: &ActionTable,
) -> Routing {
    let event = &p.event;
    let mut jobs = Vec::new();
    for run in &runs {
        for (index, call) in run.calls.iter().enumerate() {
            let Some(order_by) = actions.get(&call.action) else {
                tracing::error!(
                    event_id = %event.id, rule = %run.rule, action = %call.action,
                    "rule called an action that the config does not define; add [actions.{}] or fix the rule",
                    call.action
                );
                continue;
            };
            jobs.push(NewJob {
                order_key: order_key(&call.params, order_by.as_deref()),
                id: new_id(),
                rule: run.rule.clone(),
                call_index: index,
                action: call.action.clone(),
                params: call.params.clone(),
                idempotency_key: idempotency_key(&event.id, &run.rule, index, p.routings),
            });
        }
    }
    let claim_with = if jobs.is_empty() {
        None
    } else {
        // Written once as the JSON the action is handed, never as a tree.
        serde_json::value::to_raw_value(event)
            .ok()
            .map(Envelope::from)
    };
    Routing {
        event_id: event.id.clone(),
        rule_runs: serde_json::to_value(&runs).unwrap_or_default(),
        rules_version,
        jobs,
        routed_at_ms: now_ms(),
        claim_with,
    }
}

/// The ordering key of a job's parameters: its `order_by` parameter, as
/// text (none if the parameter is missing, null, or not a scalar).
fn order_key(params: &Value, order_by: Option<&str>) -> Option<String> {
    match params.get(order_by?)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
