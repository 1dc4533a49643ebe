//! `[delivery]` (how jobs are retried, how many run at once) and the
//! dispatch part of each `[actions.NAME]` table (deadline, concurrency,
//! circuit breaker, ordering, rate). The rest of an action's table is its
//! plugin's settings.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::rate::Rate;
use crate::config::{de, settings, Problem};

/// The `[delivery]` section; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Delay before each retry; its length + 1 is the most attempts a job gets.
    #[serde(deserialize_with = "de::durations")]
    pub retry_schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    /// Most jobs running at once, across actions.
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let (m, h) = (60, 3600);
        DeliveryConfig {
            retry_schedule: [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .map(Duration::from_secs)
                .to_vec(),
            jitter: 0.2,
            concurrency: 64,
        }
    }
}

impl DeliveryConfig {
    /// What is wrong with the values (each message names its key).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..1.0).contains(&self.jitter) {
            problems.push("delivery.jitter must be at least 0 and below 1".to_string());
        }
        if self.concurrency == 0 {
            problems.push("delivery.concurrency must be at least 1".to_string());
        }
        problems
    }
}

/// An `[actions.NAME]` table.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    pub name: String,
    pub plugin: String,
    /// The plugin's own settings (the table without the keys below),
    /// secrets resolved.
    pub settings: Value,
    /// Where the table starts (`file:line`), for messages.
    pub location: String,
    /// Deadline of one execute call.
    pub timeout: Option<Duration>,
    /// Most jobs of this action running at once.
    pub concurrency: usize,
    /// Consecutive retryable failures that open the circuit breaker (0: never).
    pub breaker_failures: u32,
    /// How long an open breaker pauses the action.
    pub breaker_cooldown: Duration,
    /// A parameter whose value orders jobs: jobs with the same value run
    /// one at a time, in order.
    pub order_by: Option<String>,
    /// Jobs per period at most (`rate`, `burst`, `rate_key`).
    pub rate: Option<Rate>,
}

/// The keys of an action's table that dispatch reads.
#[derive(Deserialize)]
struct Keys {
    plugin: String,
    timeout_ms: Option<u64>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_breaker_failures")]
    breaker_failures: u32,
    #[serde(
        default = "default_breaker_cooldown",
        deserialize_with = "de::duration"
    )]
    breaker_cooldown: Duration,
    order_by: Option<String>,
    rate: Option<String>,
    burst: Option<u32>,
    rate_key: Option<String>,
    #[serde(flatten)]
    settings: serde_json::Map<String, Value>,
}

fn default_concurrency() -> usize {
    8
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl ActionConfig {
    /// Reads an action's table (secrets already resolved) found at `location`.
    pub fn from_table(name: &str, table: Value, location: &str) -> Result<Self, Vec<Problem>> {
        let scope = format!("actions.{name}");
        let keys: Keys = settings::section(table, &scope, location).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let mut bad = |message: String| problems.push(Problem::new(location, message));
        if keys.timeout_ms == Some(0) {
            bad(format!("{scope}.timeout_ms must be at least 1"));
        }
        if keys.concurrency == 0 {
            bad(format!("{scope}.concurrency must be at least 1"));
        }
        if keys.breaker_cooldown.is_zero() {
            bad(format!(
                "{scope}.breaker_cooldown must be a duration such as \"30s\" or \"5m\""
            ));
        }
        if keys.order_by.as_deref() == Some("") {
            bad(format!("{scope}.order_by must name a parameter"));
        }
        let rate = keys.rate.as_deref().and_then(|text| {
            Rate::from_settings(text, keys.burst, keys.rate_key.clone())
                .map_err(|why| bad(format!("{scope}.rate: {why}")))
                .ok()
        });
        if keys.burst == Some(0) {
            bad(format!("{scope}.burst must be at least 1"));
        }
        if keys.rate.is_none() && (keys.burst.is_some() || keys.rate_key.is_some()) {
            bad(format!(
                "{scope}.burst and rate_key need a rate (rate = \"50/s\")"
            ));
        }
        if keys.rate_key.as_deref() == Some("") {
            bad(format!("{scope}.rate_key must name a parameter"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ActionConfig {
            name: name.to_string(),
            plugin: keys.plugin,
            settings: Value::Object(keys.settings),
            location: location.to_string(),
            timeout: keys.timeout_ms.map(Duration::from_millis),
            concurrency: keys.concurrency,
            breaker_failures: keys.breaker_failures,
            breaker_cooldown: keys.breaker_cooldown,
            order_by: keys.order_by,
            rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(table: Value) -> Result<ActionConfig, Vec<String>> {
        ActionConfig::from_table("a", table, "switchyard.toml:3")
            .map_err(|p| p.into_iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn a_rate_reads_with_its_burst_and_key() {
        let a = action(serde_json::json!({"plugin": "http", "rate": "50/s"})).unwrap();
        let rate = a.rate.unwrap();
        assert_eq!((rate.count, rate.period_ms, rate.burst), (50, 1_000, 50));
        assert_eq!(rate.key, None);
        let a = action(serde_json::json!({
            "plugin": "slack", "rate": "20/m", "burst": 2, "rate_key": "channel"
        }))
        .unwrap();
        let rate = a.rate.unwrap();
        assert_eq!((rate.count, rate.period_ms, rate.burst), (20, 60_000, 2));
        assert_eq!(rate.key.as_deref(), Some("channel"));
        assert!(!a.settings.as_object().unwrap().contains_key("rate"));
    }

    #[test]
    fn a_bad_rate_is_named() {
        let e = action(serde_json::json!({"plugin": "http", "rate": "50 per second"})).unwrap_err();
        assert!(
            e[0].contains("actions.a.rate") && e[0].contains("\"50/s\""),
            "{e:?}"
        );
        let e = action(serde_json::json!({"plugin": "http", "burst": 5})).unwrap_err();
        assert!(e[0].contains("need a rate"), "{e:?}");
        let e =
            action(serde_json::json!({"plugin": "http", "rate": "5/s", "burst": 0})).unwrap_err();
        assert!(e[0].contains("burst must be at least 1"), "{e:?}");
    }
}
