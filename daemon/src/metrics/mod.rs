//! Metrics in the Prometheus text format, and what they count.
//!
//! Owns: the registry and every metric family. Ingress, the router, the
//! dispatcher and the store writer record into it; `/metrics` renders it.
//! `recent.rs` keeps the last hour by minute for the dashboard.

pub mod recent;

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub call: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub listener: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub source: String,
    pub outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.1 ms … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the daemon keeps.
pub struct Metrics {
    registry: Registry,
    pub accepted: Family<SourceLabel, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub duplicates: Family<SourceLabel, Counter>,
    pub stale: Family<SourceLabel, Counter>,
    pub handshakes: Family<SourceLabel, Counter>,
    pub ingest_seconds: Histograms<SourceLabel>,
    pub store_commit_seconds: Histogram,
    pub rule_runs: Family<RuleLabels, Counter>,
    pub rule_seconds: Histogram,
    pub action_attempts: Family<ActionLabels, Counter>,
    pub action_seconds: Histograms<ActionLabel>,
    pub dead_letters: Family<ActionLabel, Counter>,
    /// Jobs put back to wait for their action's rate.
    pub action_deferred: Family<ActionLabel, Counter>,
    /// Times a destination's refusals lowered its action's rate.
    pub action_rate_lowered: Family<ActionLabel, Counter>,
    /// Jobs a second an action's rate allows now (configured or lowered).
    pub action_rate: Family<ActionLabel, Gauge<f64, AtomicU64>>,
    /// Jobs an action's rate lets go at once now (-1: a budget per key).
    pub action_budget_left: Family<ActionLabel, Gauge>,
    /// How long an action's jobs waiting for its rate take to go.
    pub action_drain_seconds: Family<ActionLabel, Gauge<f64, AtomicU64>>,
    /// 0 closed, 1 open or half-open, 2 disabled.
    pub action_paused: Family<ActionLabel, Gauge>,
    pub plugin_calls: Family<PluginLabels, Counter>,
    pub unrouted_events: Gauge<i64, AtomicI64>,
    pub pending_jobs: Gauge<i64, AtomicI64>,
    pub rules_version: Gauge<i64, AtomicI64>,
    pub rules_broken: Gauge<i64, AtomicI64>,
    pub rules_reload_failures: Counter<u64, AtomicU64>,
    /// Reloads of the rules run, changed or not.
    pub rules_reloads: Counter<u64, AtomicU64>,
    /// Spans sent to the trace collector, and spans dropped (a full queue,
    /// a collector that did not take them).
    pub trace_spans_exported: Counter<u64, AtomicU64>,
    pub trace_spans_dropped: Counter<u64, AtomicU64>,
    /// Reloads of the configuration and plugins (done, refused).
    pub config_reloads: Family<OutcomeLabel, Counter>,
    /// The watcher's checks of a provider's subscriptions (ok, failed).
    pub subscription_checks: Family<CheckLabels, Counter>,
    /// Declared subscriptions found off at the last check.
    pub subscriptions_off: Family<SourceLabel, Gauge>,
    pub subscriptions_reenabled: Family<SourceLabel, Counter>,
    connections_open: Family<ListenerLabel, Gauge>,
    connections_refused: Family<ListenerLabel, Counter>,
    connections_timed_out: Family<TimeoutLabels, Counter>,
    /// The last hour by minute, for the dashboard.
    pub recent: recent::Recent,
}

/// Registers each `"name", "help" => metric;` in a registry.
macro_rules! registered {
    ($registry:expr, $($name:literal, $help:literal => $metric:expr;)*) => {
        $($registry.register($name, $help, $metric.clone());)*
    };
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            accepted: Family::default(),
            rejected: Family::default(),
            duplicates: Family::default(),
            stale: Family::default(),
            handshakes: Family::default(),
            ingest_seconds: Family::new_with_constructor(latency),
            store_commit_seconds: latency(),
            rule_runs: Family::default(),
            rule_seconds: latency(),
            action_attempts: Family::default(),
            action_seconds: Family::new_with_constructor(latency),
            dead_letters: Family::default(),
            action_deferred: Family::default(),
            action_rate_lowered: Family::default(),
            action_rate: Family::default(),
            action_budget_left: Family::default(),
            action_drain_seconds: Family::default(),
            action_paused: Family::default(),
            plugin_calls: Family::default(),
            unrouted_events: Gauge::default(),
            pending_jobs: Gauge::default(),
            rules_version: Gauge::default(),
            rules_broken: Gauge::default(),
            rules_reload_failures: Counter::default(),
            rules_reloads: Counter::default(),
            trace_spans_exported: Counter::default(),
            trace_spans_dropped: Counter::default(),
            config_reloads: Family::default(),
            subscription_checks: Family::default(),
            subscriptions_off: Family::default(),
            subscriptions_reenabled: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            recent: Default::default(),
            registry: Registry::default(),
        };
        m.register_all(&mut registry);
        Metrics { registry, ..m }
    }

    /// Every family in `registry`, by name (prefixed `switchyard_`) with
    /// its help text.
    fn register_all(&self, registry: &mut Registry) {
        let m = self;
        registered!(registry,
            "webhooks_accepted",
            "Webhooks verified and stored, per source" => m.accepted;
            "webhooks_rejected",
            "Webhooks refused, per source and reason" => m.rejected;
            "webhooks_duplicate",
            "Deliveries already seen (answered 2xx, not routed)" => m.duplicates;
            "events_stale",
            "Events older than their object's last version (stored, not routed)" => m.stale;
            "webhooks_handshakes",
            "Handshakes answered: a provider checking the endpoint (stored, not routed)" => m.handshakes;
            "ingest_seconds",
            "From a webhook's body being read to its answer" => m.ingest_seconds;
            "store_commit_seconds",
            "One group commit of the store" => m.store_commit_seconds;
            "rule_runs",
            "Rule runs, per rule and outcome (ok, error)" => m.rule_runs;
            "rule_seconds",
            "Time of one rule run" => m.rule_seconds;
            "action_attempts",
            "Action attempts, per action and outcome" => m.action_attempts;
            "action_seconds",
            "Time of one action attempt" => m.action_seconds;
            "dead_letters",
            "Jobs moved to dead letters, per action" => m.dead_letters;
            "action_deferred",
            "Jobs put back to wait for their action's rate (a slot reserved), per action" => m.action_deferred;
            "action_rate_lowered",
            "Times a destination's refusals for load (429) halved its action's rate, per action" => m.action_rate_lowered;
            "action_rate",
            "Jobs a second an action's rate allows now: as configured, or lowered by its destination's refusals (0: no rate)" => m.action_rate;
            "action_budget_left",
            "Jobs an action's rate lets go at once now, of its burst (-1: a budget per key)" => m.action_budget_left;
            "action_drain_seconds",
            "How long the jobs waiting for an action's rate take to go, at the rate" => m.action_drain_seconds;
            "action_paused",
            "0 running, 1 circuit open, 2 disabled (410 Gone), 3 paused by an operator, 4 throttled (the target's Retry-After)" => m.action_paused;
            "subscription_checks",
            "Checks of a provider's subscriptions, per source and outcome (ok, failed)" => m.subscription_checks;
            "subscriptions_off",
            "Subscriptions of a source found disabled at the provider at the last check" => m.subscriptions_off;
            "subscriptions_reenabled",
            "Subscriptions switched on again after the provider disabled them" => m.subscriptions_reenabled;
            "plugin_calls",
            "Plugin calls, per plugin, call and outcome" => m.plugin_calls;
            "unrouted_events",
            "Events stored and not yet routed" => m.unrouted_events;
            "pending_jobs",
            "Jobs waiting to run" => m.pending_jobs;
            "rules_version",
            "The version of the live rule set" => m.rules_version;
            "rules_broken",
            "Rule files that do not compile (their last good version runs)" => m.rules_broken;
            "rules_reload_failures",
            "Reloads that found a rule file that does not compile" => m.rules_reload_failures;
            "rules_reloads",
            "Reloads of the rules run (the folder compiled again), changed or not" => m.rules_reloads;
            "trace_spans_exported",
            "Spans sent to the trace collector (OTLP)" => m.trace_spans_exported;
            "trace_spans_dropped",
            "Spans dropped: the queue to the collector was full, or the collector did not take them" => m.trace_spans_dropped;
            "config_reloads",
            "Reloads of the configuration and plugins, per outcome (done, refused)" => m.config_reloads;
            "connections_open",
            "Connections open, per listener" => m.connections_open;
            "connections_refused",
            "Connections answered 503 and closed at once: the listener's max_connections were open" => m.connections_refused;
            "connections_timed_out",
            "Connections closed by a deadline, per listener and phase (head, body, idle, write)" => m.connections_timed_out;
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn source(&self, source: &str) -> SourceLabel {
        SourceLabel {
            source: source.to_string(),
        }
    }

    /// A refused webhook (`now_ms`: when, for the last hour's counts).
    pub fn reject(&self, source: &str, reason: &str, now_ms: i64) {
        self.recent
            .count(now_ms, recent::Kind::Webhook, source, reason, 1);
        self.rejected
            .get_or_create(&RejectLabels {
                source: source.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn rule_run(&self, rule: &str, ok: bool, elapsed_us: u64) {
        self.rule_runs
            .get_or_create(&RuleLabels {
                rule: rule.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.rule_seconds.observe(elapsed_us as f64 / 1e6);
    }

    fn listener(listener: &str) -> ListenerLabel {
        ListenerLabel {
            listener: listener.to_string(),
        }
    }

    /// The open-connections gauge of a listener.
    pub fn connections_open(&self, listener: &str) -> Gauge {
        self.connections_open
            .get_or_create(&Self::listener(listener))
            .clone()
    }

    /// The counter of connections a listener refused over its bound.
    pub fn connections_refused(&self, listener: &str) -> Counter {
        self.connections_refused
            .get_or_create(&Self::listener(listener))
            .clone()
    }

    /// The counter of a listener's connections closed by one deadline.
    pub fn connection_timeout(&self, listener: &str, phase: &str) -> Counter {
        self.connections_timed_out
            .get_or_create(&TimeoutLabels {
                listener: listener.to_string(),
                phase: phase.to_string(),
            })
            .clone()
    }

    pub fn plugin_call(&self, plugin: &str, call: &str, outcome: &str) {
        self.plugin_calls
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
                call: call.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
