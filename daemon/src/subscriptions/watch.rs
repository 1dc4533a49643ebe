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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use switchyard_plugin_api::{Subscription, SubscriptionCall, SubscriptionError, SubscriptionState};
use tokio::sync::watch;

use super::{describe, detail, plan_with, shown, Plan, Provider, SourceApi, Step};
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
    /// The source's `api_timeout` and credentials (see [`SourceApi`]).
    pub timeout: Duration,
    pub credentials: Vec<String>,
}

impl Watched {
    /// The source's provider, as a check reaches it.
    pub fn api(&self) -> SourceApi<'_> {
        SourceApi {
            instance: &self.instance,
            timeout: self.timeout,
            credentials: &self.credentials,
        }
    }
}

/// What one check found and did.
#[derive(Debug)]
pub struct Checked {
    pub plan: Plan,
    /// Declared subscriptions found off, and whether each was switched on.
    pub off: Vec<(
        Subscription,
        Option<Result<Subscription, SubscriptionError>>,
    )>,
}

impl Checked {
    /// Steps `apply` would take besides switching on: the provider's side
    /// has drifted from the config.
    pub fn drift(&self) -> Vec<String> {
        self.plan
            .steps
            .iter()
            .filter(|s| s.changes() && !matches!(s, Step::Enable(_)))
            .map(describe)
            .collect()
    }
}

/// One check of one source (blocking: it calls the provider's API).
pub fn check(provider: &dyn Provider, w: &Watched) -> Result<Checked, SubscriptionError> {
    let plan = plan_with(provider, &w.source, &w.target_url, false)?;
    let mut off = Vec::new();
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
                off.push((s.clone(), again));
            }
            Step::Disabled(s) => off.push((s.clone(), None)),
            Step::Move { old, .. } if old.state != SubscriptionState::Active => {
                off.push((old.clone(), None))
            }
            _ => {}
        }
    }
    Ok(Checked { plan, off })
}

/// Runs the watcher until `stop`; `sources` says what to watch now (it
/// follows reloads).
pub fn spawn(
    sources: Arc<dyn Fn() -> Vec<Watched> + Send + Sync>,
    pool: CallPool,
    announce: Announce,
    metrics: Arc<Metrics>,
    checks: Arc<Checks>,
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
                    r = pool.call(w.timeout * 4, move || check(&one.api(), &one)) => r,
                    _ = stop.changed() => return,
                };
                let result = match result {
                    Ok(r) => r,
                    Err(e) => Err(SubscriptionError::Retryable(e.to_string())),
                };
                checks.record(last_check(&w.source, &w.target_url, &result, false));
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
            let outcome = match e {
                SubscriptionError::Unsupported(_) => "not_managed",
                _ => "failed",
            };
            let counter = metrics.subscription_checks.get_or_create(&CheckLabels {
                source: source.into(),
                outcome: outcome.into(),
            });
            // A provider without an API says so once, not every time.
            if outcome == "failed" || counter.get() == 0 {
                tracing::warn!(source, "cannot check the provider's subscriptions: {e}");
            }
            counter.inc();
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
    let drift = checked.drift();
    if !drift.is_empty() {
        tracing::warn!(
            source,
            "the provider's subscriptions differ from the config ({}); `switchyard subscriptions apply` makes them match",
            drift.join("; ")
        );
    }
}

/// One line of a check, for people: what, and about what.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub verb: &'static str,
    pub text: String,
}

/// The last check of a source's subscriptions (the watcher's, or one asked
/// for), as the dashboard and the admin API show it.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    pub source: String,
    pub at_ms: i64,
    /// Where the provider should post (credentials hidden).
    pub target_url: String,
    pub lines: Vec<Line>,
    /// Steps `apply` would take (or took, when `applied`).
    pub changes: usize,
    pub applied: bool,
    /// Why there is no plan: the provider's API failed.
    pub error: Option<String>,
    /// Why there is no plan: the provider has no API, or the source
    /// declares no subscriptions (what to do instead).
    pub not_managed: Option<String>,
}

/// The last check of each source.
#[derive(Default)]
pub struct Checks(Mutex<BTreeMap<String, LastCheck>>);

impl Checks {
    pub fn record(&self, check: LastCheck) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(check.source.clone(), check);
    }

    pub fn get(&self, source: &str) -> Option<LastCheck> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(source).cloned()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A check's result as a [`LastCheck`].
pub fn last_check(
    source: &str,
    target_url: &str,
    result: &Result<Checked, SubscriptionError>,
    applied: bool,
) -> LastCheck {
    let mut check = LastCheck {
        source: source.to_string(),
        at_ms: now_ms(),
        target_url: shown(target_url),
        lines: Vec::new(),
        changes: 0,
        applied,
        error: None,
        not_managed: None,
    };
    match result {
        Ok(c) => {
            check.changes = c.plan.changes();
            check.lines = c
                .plan
                .steps
                .iter()
                .map(|step| {
                    let mut text = detail(step);
                    let again = c.off.iter().find(|(s, _)| Some(s) == step.listed());
                    match again {
                        Some((_, Some(Ok(_)))) => text.push_str(" (switched on again)"),
                        Some((_, Some(Err(e)))) => {
                            text.push_str(&format!(" (switching on failed: {e})"))
                        }
                        _ => {}
                    }
                    Line {
                        verb: step.verb(),
                        text,
                    }
                })
                .collect();
        }
        Err(SubscriptionError::Unsupported(how)) => check.not_managed = Some(how.clone()),
        Err(e) => check.error = Some(e.to_string()),
    }
    check
}
