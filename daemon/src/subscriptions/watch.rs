//! The watcher: each source with `watch = "…"` has its provider's
//! subscriptions checked that often (the first time at start). A
//! declared subscription found off is announced
//! (`switchyard.subscription.disabled`) and counted; one the provider
//! switched off after failed deliveries (Tripletex's
//! `DISABLED_TOO_MANY_ERRORS`) is switched on again when the source says
//! `reenable = true` (`switchyard.subscription.reenabled`). Drift (a
//! declared subscription missing, or pointing elsewhere) is logged: making
//! and deleting subscriptions is `switchyard subscriptions apply`'s, never
//! a background task's.
//!
//! On several instances each one checks; a notice's dedup key is the
//! subscription's id and the provider's revision of it, so one disabling
//! is one event however many see it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_plugin_api::{Subscription, SubscriptionCall, SubscriptionError, SubscriptionState};
use tokio::sync::watch;

use super::{plan_with, shown, Provider, Step, CALL_TIMEOUT};
use crate::event::{Announce, Notice};
use crate::host::{CallPool, Instance};
use crate::metrics::{CheckLabels, Metrics, SourceLabel};

/// One source to watch, as the config says now.
#[derive(Clone)]
pub struct Watched {
    pub source: String,
    pub instance: Arc<Instance>,
    pub every: Duration,
    pub reenable: bool,
    pub target_url: String,
}

/// What one check found and did.
#[derive(Debug, Default)]
pub struct Checked {
    /// Declared subscriptions found off, and whether each was switched on.
    pub off: Vec<(
        Subscription,
        Option<Result<Subscription, SubscriptionError>>,
    )>,
    /// Steps `apply` would take besides switching on.
    pub drift: Vec<String>,
}

/// One check of one source (blocking: it calls the provider's API).
pub fn check(provider: &dyn Provider, w: &Watched) -> Result<Checked, SubscriptionError> {
    let plan = plan_with(provider, &w.source, &w.target_url, false)?;
    let mut checked = Checked::default();
    for step in &plan.steps {
        match step {
            Step::Enable(s) => {
                let again = w.reenable.then(|| {
                    let id = s.id.clone().unwrap_or_default();
                    provider
                        .call(&SubscriptionCall::Enable { id })
                        .and_then(|mut v| {
                            v.pop().ok_or_else(|| {
                                SubscriptionError::Permanent("enable answered nothing".into())
                            })
                        })
                });
                checked.off.push((s.clone(), again));
            }
            Step::Disabled(s) => checked.off.push((s.clone(), None)),
            Step::Move { old, .. } if old.state != SubscriptionState::Active => {
                checked.off.push((old.clone(), None));
                checked.drift.push(super::describe(step));
            }
            s if s.changes() => checked.drift.push(super::describe(s)),
            _ => {}
        }
    }
    Ok(checked)
}

/// Runs the watcher until `stop`; `sources` says what to watch now (it
/// follows reloads).
pub fn spawn(
    sources: Arc<dyn Fn() -> Vec<Watched> + Send + Sync>,
    pool: CallPool,
    announce: Announce,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let now = Instant::now();
            for w in sources() {
                if due.get(&w.source).is_some_and(|at| *at > now) {
                    continue;
                }
                due.insert(w.source.clone(), now + w.every);
                let one = w.clone();
                // A provider's API that hangs does not hold up a shutdown.
                let result = tokio::select! {
                    r = pool.call(CALL_TIMEOUT * 4, move || check(one.instance.as_ref(), &one)) => r,
                    _ = stop.changed() => return,
                };
                let result = match result {
                    Ok(r) => r,
                    Err(e) => Err(SubscriptionError::Retryable(e.to_string())),
                };
                report(&w, result, &announce, &metrics);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

fn report(
    w: &Watched,
    result: Result<Checked, SubscriptionError>,
    announce: &Announce,
    metrics: &Metrics,
) {
    let source = w.source.as_str();
    let checked = match result {
        Ok(c) => c,
        Err(e) => {
            metrics
                .subscription_checks
                .get_or_create(&CheckLabels {
                    source: source.into(),
                    outcome: "failed".into(),
                })
                .inc();
            tracing::warn!(source, "cannot check the provider's subscriptions: {e}");
            return;
        }
    };
    metrics
        .subscription_checks
        .get_or_create(&CheckLabels {
            source: source.into(),
            outcome: "ok".into(),
        })
        .inc();
    let label = SourceLabel {
        source: source.into(),
    };
    let mut still_off = 0;
    for (s, again) in &checked.off {
        let id = s.id.clone().unwrap_or_default();
        let revision = s.revision.clone().unwrap_or_else(|| s.status.clone());
        let reenabled = matches!(again, Some(Ok(_)));
        tracing::warn!(source, id, status = %s.status, events = %s.events.join(","), reenabled,
            "a subscription is off at the provider");
        announce(Notice {
            kind: "switchyard.subscription.disabled",
            subject: format!("{source}/{id}"),
            data: json!({
                "source": source, "id": id, "events": s.events, "status": s.status,
                "state": s.state.as_str(), "target_url": shown(&s.target_url),
                "reenable": w.reenable && s.state == SubscriptionState::Failing,
            }),
            dedup_key: format!("subscription.disabled:{source}:{id}:{revision}"),
        });
        match again {
            Some(Ok(now)) => {
                metrics.subscriptions_reenabled.get_or_create(&label).inc();
                tracing::info!(source, id, status = %now.status, "switched the subscription on again");
                announce(Notice {
                    kind: "switchyard.subscription.reenabled",
                    subject: format!("{source}/{id}"),
                    data: json!({
                        "source": source, "id": id, "events": now.events,
                        "was": s.status, "status": now.status,
                        "target_url": shown(&now.target_url),
                    }),
                    dedup_key: format!("subscription.reenabled:{source}:{id}:{revision}"),
                });
            }
            Some(Err(e)) => {
                still_off += 1;
                tracing::error!(source, id, "cannot switch the subscription on again: {e}");
            }
            None => still_off += 1,
        }
    }
    metrics
        .subscriptions_off
        .get_or_create(&label)
        .set(still_off);
    if !checked.drift.is_empty() {
        tracing::warn!(
            source,
            "the provider's subscriptions differ from the config ({}); `switchyard subscriptions apply` makes them match",
            checked.drift.join("; ")
        );
    }
}
