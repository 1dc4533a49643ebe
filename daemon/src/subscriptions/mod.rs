//! The providers' side of the webhooks: which subscriptions a source
//! declares, what its provider holds, and what it takes to make them match.
//!
//! Owns: the comparison ([`plan`]) and carrying it out ([`apply`]), for
//! `switchyard subscriptions plan|apply|list` and for the watcher
//! (`watch.rs`), which checks each source with `watch = "…"` periodically,
//! switches on again what the provider switched off after failed
//! deliveries (`reenable = true`), and announces what it found
//! (`switchyard.subscription.disabled`, `.reenabled`).
//!
//! The provider plugin does each step against its provider's API (the
//! `subscriptions` entry point, ABI 1.4); what to do is decided here, the
//! same way for every provider:
//! - a declared subscription matches a listed one with the same events; it
//!   is as declared when its target URL and `spec` are too;
//! - a listed subscription is *Switchyard's* when its target URL's path is
//!   `/hooks/<source>` (or below it), whatever its host: so a changed
//!   `public_url` moves them, and nothing else is ever deleted unless asked
//!   (`--prune`);
//! - a move makes the new subscription before it deletes the old, so no
//!   delivery falls between them (one may arrive twice: deduplicated).
//!
//! May use: config, event, host, metrics.

pub mod watch;

use std::fmt::Write as _;
use std::time::Duration;

use switchyard_plugin_api::{Subscription, SubscriptionCall, SubscriptionError, SubscriptionState};

use crate::host::Instance;

/// Where a provider's API is reached.
pub trait Provider {
    fn call(&self, call: &SubscriptionCall) -> Result<Vec<Subscription>, SubscriptionError>;
}

/// A source's provider as its subscriptions are managed: the provider
/// plugin's instance, how long one call may take (the source's
/// `api_timeout`), and the source's credentials, scrubbed from every
/// message the plugin returns — a provider's error body may echo the API
/// key or tokens it was sent, and these messages are printed, logged and
/// shown in the dashboard. (The plugin scrubs what only it knows, such as
/// a session token it was handed.)
pub struct SourceApi<'a> {
    pub instance: &'a Instance,
    pub timeout: Duration,
    pub credentials: &'a [String],
}

impl Provider for SourceApi<'_> {
    fn call(&self, call: &SubscriptionCall) -> Result<Vec<Subscription>, SubscriptionError> {
        self.instance
            .subscriptions(call, self.timeout)
            .map_err(|e| e.map_message(|m| switchyard_plugin_api::redact(&m, self.credentials)))
    }
}

/// A source's target URL: `<public_url>/hooks/<source>`.
pub fn target_url(public_url: &str, source: &str) -> String {
    format!("{}/hooks/{source}", public_url.trim_end_matches('/'))
}

/// One thing to do, or to leave, about one subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Declared, missing at the provider.
    Create(Subscription),
    /// Switchyard's, for the declared events, but to another URL or with
    /// other settings: `new` is made, then `old` deleted.
    Move {
        old: Subscription,
        new: Subscription,
    },
    /// As declared, but switched off after failed deliveries.
    Enable(Subscription),
    /// Switchyard's, no longer declared.
    Delete(Subscription),
    /// Not Switchyard's, deleted because asked (`--prune`).
    Prune(Subscription),
    /// As declared and active.
    Keep(Subscription),
    /// As declared, off for a reason left to a person (by hand, misuse).
    Disabled(Subscription),
    /// Not Switchyard's: left alone.
    Foreign(Subscription),
}

impl Step {
    /// Whether `apply` changes something at the provider for it.
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Step::Create(_)
                | Step::Move { .. }
                | Step::Enable(_)
                | Step::Delete(_)
                | Step::Prune(_)
        )
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Step::Create(_) => "create",
            Step::Move { .. } => "move",
            Step::Enable(_) => "enable",
            Step::Delete(_) => "delete",
            Step::Prune(_) => "prune",
            Step::Keep(_) => "keep",
            Step::Disabled(_) => "disabled",
            Step::Foreign(_) => "foreign",
        }
    }

    /// The subscription as it is at the provider, when it is there.
    pub fn listed(&self) -> Option<&Subscription> {
        match self {
            Step::Create(_) => None,
            Step::Move { old, .. } => Some(old),
            Step::Enable(s)
            | Step::Delete(s)
            | Step::Prune(s)
            | Step::Keep(s)
            | Step::Disabled(s)
            | Step::Foreign(s) => Some(s),
        }
    }
}

/// What makes a source's subscriptions at its provider as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub source: String,
    pub target_url: String,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.changes()).count()
    }
}

/// Whether a listed subscription is Switchyard's for `source`: its target
/// URL's path is `/hooks/<source>` or below it.
pub fn is_ours(target_url: &str, source: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(target_url) else {
        return false;
    };
    let path = url.path().trim_end_matches('/');
    let mount = format!("/hooks/{source}");
    path.ends_with(&mount) || path.contains(&format!("{mount}/"))
}

fn same_events(a: &Subscription, b: &Subscription) -> bool {
    let norm = |s: &Subscription| {
        let mut e: Vec<String> = s.events.iter().map(|e| e.to_ascii_lowercase()).collect();
        e.sort();
        e.dedup();
        e
    };
    norm(a) == norm(b)
}

fn as_declared(listed: &Subscription, wanted: &Subscription) -> bool {
    listed.target_url == wanted.target_url && listed.spec == wanted.spec
}

/// Compares what a source declares with what its provider lists.
pub fn plan(
    source: &str,
    target_url: &str,
    desired: Vec<Subscription>,
    listed: Vec<Subscription>,
    prune: bool,
) -> Plan {
    let (mut ours, foreign): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .partition(|s| is_ours(&s.target_url, source));
    let mut steps = Vec::new();
    for wanted in desired {
        // The best of Switchyard's with these events: one as declared,
        // then an active one, then any.
        let rank = |s: &Subscription| {
            (
                !as_declared(s, &wanted),
                s.state != SubscriptionState::Active,
            )
        };
        let found = ours
            .iter()
            .enumerate()
            .filter(|(_, s)| same_events(s, &wanted))
            .min_by_key(|(_, s)| rank(s))
            .map(|(i, _)| i);
        steps.push(match found.map(|i| ours.remove(i)) {
            None => Step::Create(wanted),
            Some(old) if !as_declared(&old, &wanted) => Step::Move { old, new: wanted },
            Some(s) => match s.state {
                SubscriptionState::Active => Step::Keep(s),
                SubscriptionState::Failing => Step::Enable(s),
                SubscriptionState::Disabled => Step::Disabled(s),
            },
        });
    }
    steps.extend(ours.into_iter().map(Step::Delete));
    steps.extend(foreign.into_iter().map(|s| {
        if prune {
            Step::Prune(s)
        } else {
            Step::Foreign(s)
        }
    }));
    Plan {
        source: source.to_string(),
        target_url: target_url.to_string(),
        steps,
    }
}

/// Asks the provider what it holds and plans against it.
pub fn plan_with(
    provider: &dyn Provider,
    source: &str,
    target_url: &str,
    prune: bool,
) -> Result<Plan, SubscriptionError> {
    let desired = provider.call(&SubscriptionCall::Desired {
        target_url: target_url.to_string(),
    })?;
    let listed = provider.call(&SubscriptionCall::List)?;
    Ok(plan(source, target_url, desired, listed, prune))
}

/// One step carried out, or why not.
#[derive(Debug)]
pub struct Done {
    pub step: Step,
    /// The subscription as the provider has it now (made, switched on) —
    /// for a move whose delete failed too: both deliver.
    pub now: Option<Subscription>,
    pub error: Option<SubscriptionError>,
}

impl Done {
    /// A move that made the new subscription but could not delete the old
    /// one: the provider delivers twice (deduplicated here) until the next
    /// `apply` deletes it.
    pub fn half_done(&self) -> bool {
        matches!(self.step, Step::Move { .. }) && self.now.is_some() && self.error.is_some()
    }

    /// What was done and what was not, as people read it.
    pub fn outcome(&self) -> String {
        let id = |s: &Subscription| s.id.clone().unwrap_or_else(|| "?".into());
        match (&self.step, &self.now, &self.error) {
            (Step::Move { old, .. }, Some(made), Some(e)) => format!(
                "{}: created {} for the new target; deleting {} failed: {e}; both deliver until the next apply deletes {}",
                describe(&self.step),
                id(made),
                id(old),
                id(old),
            ),
            (_, _, Some(e)) => format!("{}: {e}", describe(&self.step)),
            (_, Some(now), None) => format!(
                "{} -> id {} ({})",
                describe(&self.step),
                id(now),
                now.state.as_str()
            ),
            (_, None, None) => describe(&self.step),
        }
    }
}

/// What an `apply` did, counted: steps done, moves half done (made, old
/// one not deleted), steps failed (nothing changed at the provider).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub changed: usize,
    pub half_done: usize,
    pub failed: usize,
}

impl Tally {
    pub fn of(done: &[Done]) -> Tally {
        let mut t = Tally::default();
        for d in done {
            match (&d.error, d.half_done()) {
                (None, _) => t.changed += 1,
                (Some(_), true) => t.half_done += 1,
                (Some(_), false) => t.failed += 1,
            }
        }
        t
    }

    pub fn clean(&self) -> bool {
        self.half_done == 0 && self.failed == 0
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} changed", self.changed)?;
        if self.half_done > 0 {
            write!(f, ", {} half done", self.half_done)?;
        }
        write!(f, ", {} failed", self.failed)
    }
}

/// Carries out every step that changes something; goes on past a failed
/// one (each is independent) and reports each. A move makes the new
/// subscription first; when its delete then fails, the new one is kept and
/// reported with the failure ([`Done::half_done`]).
pub fn apply(provider: &dyn Provider, plan: &Plan) -> Vec<Done> {
    plan.steps
        .iter()
        .filter(|s| s.changes())
        .map(|step| {
            let id = |s: &Subscription| s.id.clone().unwrap_or_default();
            let one = |call: SubscriptionCall| provider.call(&call).map(|mut v| v.pop());
            let (now, error) = match step {
                Step::Create(new) => split(one(SubscriptionCall::Create {
                    subscription: new.clone(),
                })),
                Step::Move { old, new } => match one(SubscriptionCall::Create {
                    subscription: new.clone(),
                }) {
                    Err(e) => (None, Some(e)),
                    Ok(made) => match provider.call(&SubscriptionCall::Delete { id: id(old) }) {
                        Ok(_) => (made, None),
                        // Made, but not said what it is: the old one's
                        // failure still says both deliver.
                        Err(e) => (made.or_else(|| Some(new.clone())), Some(e)),
                    },
                },
                Step::Enable(s) => split(one(SubscriptionCall::Enable { id: id(s) })),
                Step::Delete(s) | Step::Prune(s) => {
                    split(one(SubscriptionCall::Delete { id: id(s) }).map(|_| None))
                }
                _ => (None, None),
            };
            Done {
                step: step.clone(),
                now,
                error,
            }
        })
        .collect()
}

fn split(
    result: Result<Option<Subscription>, SubscriptionError>,
) -> (Option<Subscription>, Option<SubscriptionError>) {
    match result {
        Ok(now) => (now, None),
        Err(e) => (None, Some(e)),
    }
}

/// A target URL as shown: the password in it and the query's values hidden
/// (they may be the callback's credentials).
pub fn shown(target_url: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(target_url) else {
        return target_url.to_string();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let hidden: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=***")).collect();
        url.set_query(Some(&hidden.join("&")));
    }
    url.to_string()
}

fn what(s: &Subscription) -> String {
    let mut out = s.events.join(",");
    if let Some(id) = &s.id {
        let _ = write!(out, " (id {id})");
    }
    out
}

/// What a step is about, as people read it (its verb aside).
pub fn detail(step: &Step) -> String {
    match step {
        Step::Create(s) | Step::Keep(s) => what(s),
        Step::Move { old, new } if old.target_url != new.target_url => format!(
            "{}: {} -> {}",
            what(old),
            shown(&old.target_url),
            shown(&new.target_url)
        ),
        Step::Move { old, new } => format!("{}: {} -> {}", what(old), old.spec, new.spec),
        Step::Enable(s) => format!("{}: {}", what(s), s.status),
        Step::Delete(s) => format!("{}: no longer declared", what(s)),
        Step::Prune(s) => format!("{}: {}, not Switchyard's", what(s), shown(&s.target_url)),
        Step::Disabled(s) => format!(
            "{}: {}, left alone (switch it on at the provider)",
            what(s),
            s.status
        ),
        Step::Foreign(s) => format!(
            "{}: {}, not Switchyard's (--prune deletes it)",
            what(s),
            shown(&s.target_url)
        ),
    }
}

/// One line of a plan, as `plan` and `apply` print it.
pub fn describe(step: &Step) -> String {
    format!("{:<9}{}", step.verb(), detail(step))
}

#[cfg(test)]
mod tests;
