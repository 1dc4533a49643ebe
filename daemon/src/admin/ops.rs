//! Operations: what a person asks of Switchyard — list and show events,
//! replay one, list and redrive dead letters, list actions and enable one.
//!
//! Owns: each operation over a store and the config, with its answer as a
//! serializable value and its refusals as [`OpError`]. The admin API serves
//! them over HTTP (and the status and reload of a running daemon beside
//! them); the CLI calls the admin API of a running daemon, or these
//! functions on the store when none runs — one path, the same answers.
//! Calls: `config`, `store`; for [`status`], the running `app`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::app::{Config, Switchyard};
use crate::dispatch::rate::LiveRate;
use crate::store::{
    now_ms, ActionState, DeadFilter, EventDetail, EventFilter, EventSummary, JobRecord, Store,
    StoreError,
};

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such event, job or action (404).
    #[error("{0}")]
    NotFound(String),
    /// The request does not say what to do (400).
    #[error("{0}")]
    Invalid(String),
    /// The store failed (503).
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => OpError::NotFound(m),
            other => OpError::Store(other),
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// An action as operators see it: its plugin and its gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    pub name: String,
    pub plugin: String,
    /// `closed`, `open`, `half-open`, `throttled`, `disabled` or `paused`.
    pub state: String,
    /// Its rate limit as configured (`10/s, burst 3 per customer`), if any.
    #[serde(default)]
    pub rate: Option<String>,
    /// Its jobs waiting for the rate (each due at the slot reserved for it).
    #[serde(default)]
    pub waiting_for_rate: u64,
    /// Jobs a second it may go at now, when its destination's refusals
    /// (429) lowered its rate; it comes back as the destination accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_lowered_to: Option<f64>,
    /// Jobs its rate lets go at once now (of its burst).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_left: Option<u32>,
    /// How long the jobs waiting for its rate take to go, at the rate (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<i64>,
    pub failures: u32,
    pub until_ms: Option<i64>,
    pub reason: Option<String>,
}

impl ActionRow {
    /// Its rate as shown: `10/s`, `10/s, lowered to 2.5/s`, or `-`.
    pub fn rate_shown(&self) -> String {
        match (&self.rate, self.rate_lowered_to) {
            (Some(rate), Some(to)) => format!("{rate}, lowered to {}", per_second(to)),
            (None, Some(to)) => format!("lowered to {}", per_second(to)),
            (Some(rate), None) => rate.clone(),
            (None, None) => "-".into(),
        }
    }

    /// Jobs its budget lets go at once now, or `-` (no rate, a budget per
    /// key, or no daemon running to ask).
    pub fn budget_shown(&self) -> String {
        self.budget_left
            .map_or_else(|| "-".into(), |n| n.to_string())
    }

    /// How long its jobs waiting for the rate take to go: `1m40s`, or `-`.
    pub fn drain_shown(&self) -> String {
        match self.drain_ms {
            Some(ms) if ms > 0 => {
                let s = (ms + 999) / 1_000;
                match s {
                    0..60 => format!("{s}s"),
                    60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
                    _ => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
                }
            }
            _ => "-".into(),
        }
    }
}

/// `2.5/s`, `12/s`, `30/m`.
fn per_second(per_s: f64) -> String {
    if per_s >= 10.0 {
        format!("{per_s:.0}/s")
    } else if per_s >= 1.0 {
        format!("{per_s:.1}/s")
    } else {
        format!("{:.1}/m", per_s * 60.0)
    }
}

/// Every configured action with its gate as stored, as of `now_ms`, and
/// its rate as the running daemon holds it (`live`; empty without one).
pub fn action_rows(
    config: &Config,
    states: &[ActionState],
    waiting: &[(String, u64)],
    live: &BTreeMap<String, LiveRate>,
    now_ms: i64,
) -> Vec<ActionRow> {
    config
        .actions
        .iter()
        .map(|(name, a)| {
            let st = states.iter().find(|s| &s.action == name);
            let live = live.get(name).cloned().unwrap_or_default();
            let waiting_for_rate = waiting
                .iter()
                .find(|(action, _)| action == name)
                .map_or(0, |(_, n)| *n);
            ActionRow {
                rate_lowered_to: live.lowered_to,
                budget_left: live.budget_left,
                drain_ms: live.drain_ms.filter(|_| waiting_for_rate > 0),
                name: name.clone(),
                plugin: a.plugin.clone(),
                rate: a.rate.as_ref().map(ToString::to_string),
                waiting_for_rate,
                state: ActionState::shown(st, now_ms).to_string(),
                failures: st.map_or(0, |s| s.failures),
                until_ms: st.and_then(|s| s.until_ms),
                reason: st.and_then(|s| s.reason.clone()),
            }
        })
        .collect()
}

pub async fn list_events(store: &dyn Store, filter: EventFilter) -> OpResult<Vec<EventSummary>> {
    Ok(store.list_events(filter).await?)
}

/// A page of events, found by a search of at most `window` events.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// Where the search stopped when the page is not full: older events
    /// may still match (page on with `before` this id).
    pub searched_to: Option<String>,
}

/// Lists events as [`list_events`] does, but a filter that must read far
/// to fill a page (a rare source, a payload field) reads at most the
/// newest `window` events within its bounds: a page costs the same on a
/// store of a million events as of a hundred thousand, and says where it
/// stopped so that the next search goes on from there.
pub async fn event_page(
    store: &dyn Store,
    mut filter: EventFilter,
    window: usize,
) -> OpResult<EventPage> {
    let floor = if filter.is_selective() && !filter.oldest_first() {
        store.nth_newest_id(filter.clone(), window).await?
    } else {
        None
    };
    filter.floor = floor.clone();
    let events = store.list_events(filter.clone()).await?;
    let searched_to = floor.filter(|_| events.len() < filter.limit);
    Ok(EventPage {
        events,
        searched_to,
    })
}

pub async fn show_event(store: &dyn Store, id: String) -> OpResult<EventDetail> {
    Ok(store.show_event(id).await?)
}

/// The answer to a replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayed {
    pub replayed: String,
}

/// Routes a stored event again through the current rules. A handshake
/// (the provider checking the endpoint) is never routed, so never replayed.
pub async fn replay(store: &dyn Store, id: String) -> OpResult<Replayed> {
    if store.show_event(id.clone()).await?.state == "handshake" {
        return Err(OpError::Invalid(format!(
            "event {id} is a handshake (its provider checking the endpoint): it is kept for the record and never routed"
        )));
    }
    store.replay(id.clone()).await?;
    tracing::info!(event_id = %id, "event will be routed again (replay)");
    Ok(Replayed { replayed: id })
}

pub async fn dead_letters(store: &dyn Store, limit: usize) -> OpResult<Vec<JobRecord>> {
    Ok(store.dead_letters(limit).await?)
}

/// Which dead letters to redrive: `{"id": "…"}`, or `{"all": true}` with
/// optionally `"action"` and `"error"` (a text the last error contains).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Redrive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(flatten)]
    pub matching: DeadFilter,
}

/// Dead letters redriven per store statement when redriving by a filter.
pub const REDRIVE_CHUNK: usize = 500;

/// How many dead letters match.
pub async fn count_dead(store: &dyn Store, filter: DeadFilter) -> OpResult<u64> {
    Ok(store.count_dead(filter).await?)
}

/// Sends the dead letters matching `filter` back to the queue, a chunk per
/// statement, telling `progress` the running total after each; stops when
/// none is left or after `at_most` (what was counted before, so that jobs
/// dying again meanwhile are not taken round and round).
pub async fn redrive_matching(
    store: &dyn Store,
    filter: DeadFilter,
    at_most: u64,
    mut progress: impl FnMut(u64),
) -> OpResult<u64> {
    let mut done = 0;
    while done < at_most {
        let chunk = (at_most - done).min(REDRIVE_CHUNK as u64) as usize;
        let n = store
            .redrive_matching(filter.clone(), chunk, now_ms())
            .await?;
        if n == 0 {
            break;
        }
        done += n;
        progress(done);
    }
    tracing::info!(
        action = filter.action.as_deref().unwrap_or("(any)"),
        error = filter.error.as_deref().unwrap_or("(any)"),
        redriven = done,
        "dead letters sent back to the queue"
    );
    Ok(done)
}

/// The answer to a redrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redriven {
    pub redriven: u64,
}

/// Sends dead letters back to the queue, due now.
pub async fn redrive(store: &dyn Store, which: Redrive) -> OpResult<Redriven> {
    let target =
        match (which.id, which.all) {
            (Some(id), false) if which.matching == DeadFilter::default() => Some(id),
            (None, true) if which.matching != DeadFilter::default() => {
                let at_most = store.count_dead(which.matching.clone()).await?;
                let n = redrive_matching(store, which.matching, at_most, |_| {}).await?;
                return Ok(Redriven { redriven: n });
            }
            (None, true) => None,
            _ => return Err(OpError::Invalid(
                "give {\"id\": \"…\"} or {\"all\": true} (with \"action\" and \"error\" to choose)"
                    .into(),
            )),
        };
    let n = store.redrive(target.clone(), now_ms()).await?;
    tracing::info!(
        job_id = target.as_deref().unwrap_or("(all)"),
        redriven = n,
        "dead letters sent back to the queue"
    );
    Ok(Redriven { redriven: n })
}

/// What a running daemon runs: its version, sources, rules (with broken
/// files), actions and their gates, and the backlog.
pub async fn status(app: &crate::app::Switchyard) -> serde_json::Value {
    use serde_json::json;
    let set = app.rules().current();
    let states = app.store().action_states().await.unwrap_or_default();
    let backlog = app.store().backlog().await.ok();
    let running = app.store().waiting().await.ok().map(|w| w.running_jobs);
    let config = app.config();
    let instances = match app.store().shared() {
        Some(shared) => shared.instances().await,
        None => Ok(Vec::new()),
    };
    let waiting = app.store().waiting_for_rate().await.unwrap_or_default();
    let live = app.live_rates().await;
    let actions = action_rows(&config, &states, &waiting, &live, now_ms());
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "sources": app.sources().iter().map(|(name, s)| json!({"name": name, "plugin": s.provider()})).collect::<Vec<_>>(),
        "rules": {
            "version": set.version,
            "count": set.rules().len(),
            "broken": set.broken.iter().map(|p| json!({"location": p.location, "message": p.message})).collect::<Vec<_>>(),
        },
        "actions": actions,
        "backlog": backlog.map(|b| json!({
            "unrouted_events": b.unrouted_events,
            "pending_jobs": b.pending_jobs,
            "running_jobs": running,
        })),
        "store": match &config.store.url {
            None => json!({"kind": "embedded", "at": config.store.place()}),
            Some(_) => json!({
                "kind": "postgres",
                "at": config.store.place(),
                "instances": match instances {
                    Ok(list) => json!(list),
                    Err(e) => json!({"error": e.to_string()}),
                },
            }),
        },
    })
}

/// Every configured action with its gate.
pub async fn actions(store: &dyn Store, config: &Config) -> OpResult<Vec<ActionRow>> {
    let states = store.action_states().await?;
    let waiting = store.waiting_for_rate().await?;
    Ok(action_rows(
        config,
        &states,
        &waiting,
        &BTreeMap::new(),
        now_ms(),
    ))
}

/// Every configured action with its gate, and its rate as the running
/// daemon holds it (lowered, budget left, time to drain).
pub async fn live_actions(app: &Switchyard) -> OpResult<Vec<ActionRow>> {
    let states = app.store().action_states().await?;
    let waiting = app.store().waiting_for_rate().await?;
    let live = app.live_rates().await;
    Ok(action_rows(
        &app.config(),
        &states,
        &waiting,
        &live,
        now_ms(),
    ))
}

/// The answer to enabling an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enabled {
    pub enabled: String,
    /// Jobs that were waiting for it and are due now.
    pub jobs_due: u64,
}

/// The answer to pausing an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paused {
    pub paused: String,
}

/// Pauses an action by hand: its jobs wait (none lost, no attempt used)
/// until it is enabled again. `who` is kept as the reason.
pub async fn pause_action(
    store: &dyn Store,
    config: &Config,
    name: String,
    who: &str,
) -> OpResult<Paused> {
    if !config.actions.contains_key(&name) {
        return Err(OpError::NotFound(format!("no action {name:?}")));
    }
    store
        .save_action_state(ActionState {
            action: name.clone(),
            state: "paused".into(),
            until_ms: None,
            failures: 0,
            reason: Some(format!("paused by the {who}")),
            updated_at_ms: now_ms(),
        })
        .await?;
    tracing::info!(action = %name, who, "action paused");
    Ok(Paused { paused: name })
}

/// Closes an action's gate (after a 410, an open breaker or a pause); its
/// waiting jobs are due now.
pub async fn enable_action(store: &dyn Store, config: &Config, name: String) -> OpResult<Enabled> {
    if !config.actions.contains_key(&name) {
        return Err(OpError::NotFound(format!("no action {name:?}")));
    }
    let n = store.enable_action(name.clone(), now_ms()).await?;
    tracing::info!(action = %name, jobs_due = n, "action enabled");
    Ok(Enabled {
        enabled: name,
        jobs_due: n,
    })
}

/// Checks a source's subscriptions at its provider now (and with `apply`
/// makes them match first), on the plugin call pool; the result is the
/// source's last check, which the dashboard and `GET /v1/subscriptions`
/// show. A failure of the provider's API is in the result, not an error.
pub async fn check_subscriptions(
    app: &crate::app::Switchyard,
    source: String,
    apply: bool,
) -> OpResult<crate::subscriptions::watch::LastCheck> {
    use crate::subscriptions::{self as subs, watch};
    let config = app.config();
    let (instance, credentials) = app
        .sources()
        .get(&source)
        .map(|s| (s.instance.clone(), s.credentials.clone()))
        .ok_or_else(|| OpError::NotFound(format!("no source {source:?}")))?;
    let timeout = config
        .sources
        .get(&source)
        .map_or(crate::ingress::DEFAULT_API_TIMEOUT, |sc| sc.api_timeout);
    let public_url = config.public_url.clone().ok_or_else(|| {
        OpError::Invalid(
            "set public_url in the config: each source's webhooks go to <public_url>/hooks/<source>"
                .into(),
        )
    })?;
    let target = subs::target_url(&public_url, &source);
    let (name, url) = (source.clone(), target.clone());
    let result = app
        .call_pool()
        .call(timeout * 8, move || {
            let provider = subs::SourceApi {
                instance: &instance,
                timeout,
                credentials: &credentials,
            };
            let plan = subs::plan_with(&provider, &name, &url, false)?;
            if !apply {
                return Ok((plan, Vec::new()));
            }
            let failed: Vec<String> = subs::apply(&provider, &plan)
                .into_iter()
                .filter(|d| d.error.is_some())
                .map(|d| d.outcome())
                .collect();
            Ok((subs::plan_with(&provider, &name, &url, false)?, failed))
        })
        .await
        .unwrap_or_else(|e| {
            Err(switchyard_plugin_api::SubscriptionError::Retryable(
                e.to_string(),
            ))
        });
    let (result, failed) = match result {
        Ok((plan, failed)) => (
            Ok(watch::Checked {
                plan,
                off: Vec::new(),
            }),
            failed,
        ),
        Err(e) => (Err(e), Vec::new()),
    };
    let mut check = watch::last_check(&source, &target, &result, apply);
    if !failed.is_empty() {
        check.error = Some(failed.join("; "));
    }
    app.subscription_checks().record(check.clone());
    Ok(check)
}

/// Every source's last check of its subscriptions, in source order; a
/// source not checked yet has none.
pub fn subscription_checks(
    app: &crate::app::Switchyard,
) -> Vec<(String, Option<crate::subscriptions::watch::LastCheck>)> {
    app.config()
        .sources
        .keys()
        .map(|name| (name.clone(), app.subscription_checks().get(name)))
        .collect()
}
