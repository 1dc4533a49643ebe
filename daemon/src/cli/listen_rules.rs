//! `switchyard listen --rules DIR`: a local rules folder run on the live
//! stream, in the rules' sandbox (the playground's: no action runs, the
//! engine's limits hold), printed beside what the live rules did with the
//! same event — try a rule on production traffic without deploying it.
//! The folder is compiled again before each event as the daemon's hot
//! reload does it ([`Rules::reload`]: unchanged files reused, a file that
//! does not compile keeps its last good version), so an edit shows on the
//! next event.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use switchyard::rules::{testing, Limits, RuleSet, Rules};

/// The local rules.
pub struct LocalRules {
    rules: Rules,
}

impl LocalRules {
    pub fn new(dir: &Path) -> anyhow::Result<LocalRules> {
        if !dir.is_dir() {
            anyhow::bail!("--rules {}: not a folder", dir.display());
        }
        let limits = Limits::default();
        let engine = switchyard::rules::engine(&limits);
        let empty = RuleSet::from_rules(Vec::new()).map_err(|p| anyhow::anyhow!("{p}"))?;
        let local = LocalRules {
            rules: Rules::new(engine, limits, dir.to_path_buf(), empty),
        };
        local.fresh();
        Ok(local)
    }

    /// The rules, compiled again if the folder changed; says what changed
    /// and which files do not compile.
    fn fresh(&self) -> &Rules {
        match self.rules.reload() {
            Ok(r) if r.changed => {
                println!(
                    "rules: {} rule(s) from {}",
                    r.rules,
                    self.rules.dir.display()
                );
                for p in &r.broken {
                    println!("rules: {p} (its last good version, if any, stays)");
                }
            }
            Ok(_) => {}
            Err(p) => println!("rules: cannot read {}: {p}", self.rules.dir.display()),
        }
        &self.rules
    }

    /// What the local rules would do with the event, for people to read,
    /// and their calls.
    pub fn describe(&self, envelope: &Value) -> (String, Vec<Call>) {
        let event = match testing::event_from_json(envelope.clone()) {
            Ok(e) => e,
            Err(e) => {
                return (
                    format!("  local the event does not read as one ({e})\n"),
                    Vec::new(),
                )
            }
        };
        let (_, runs) = testing::run(self.fresh(), &event);
        let text = testing::describe(&runs, &event, &|_| true);
        // Its first line names the event, which the caller has printed.
        let text = text
            .lines()
            .skip(1)
            .map(|l| format!("  local {}\n", l.trim_start()))
            .collect();
        let mut calls: Vec<Call> = runs
            .iter()
            .flat_map(|r| {
                r.calls.iter().map(|c| Call {
                    rule: r.rule.clone(),
                    action: c.action.clone(),
                    params: c.params.clone(),
                })
            })
            .collect();
        // In the order the live jobs are read: by rule, then call.
        calls.sort_by(|a, b| a.rule.cmp(&b.rule));
        (text, calls)
    }
}

/// One action call of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub rule: String,
    pub action: String,
    pub params: Value,
}

/// A line saying whether the local calls are the live ones, and if not,
/// where they part.
pub fn verdict(local: &[Call], live: &[Call]) -> String {
    if local == live {
        return "  =     the same calls\n".into();
    }
    for (i, (l, v)) in local.iter().zip(live).enumerate() {
        if l == v {
            continue;
        }
        if (l.rule.as_str(), l.action.as_str()) != (v.rule.as_str(), v.action.as_str()) {
            return format!(
                "  ≠     call {}: local {} → {}, live {} → {}\n",
                i + 1,
                l.rule,
                l.action,
                v.rule,
                v.action
            );
        }
        let keys = |p: &Value| {
            p.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut all = keys(&l.params);
        all.extend(keys(&v.params));
        all.sort();
        all.dedup();
        let differ: Vec<String> = all
            .into_iter()
            .filter(|k| l.params.get(k) != v.params.get(k))
            .collect();
        return format!(
            "  ≠     call {} ({} → {}) differs in {}\n",
            i + 1,
            l.rule,
            l.action,
            differ.join(", ")
        );
    }
    format!(
        "  ≠     {} local call(s), {} live\n",
        local.len(),
        live.len()
    )
}

/// What the live rules did with an event: its jobs (rule, action,
/// parameters) once it is routed, read from the admin API, for people to
/// read and as calls (`None`: not known); waits up to `wait` for the
/// routing.
pub async fn live_calls(
    client: &reqwest::Client,
    from: &str,
    token: &str,
    id: &str,
    wait: Duration,
) -> (String, Option<Vec<Call>>) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let answer = client
            .get(format!("{from}/v1/events/{id}"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let detail: Value = match answer {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            Ok(r) => {
                return (
                    format!("  live  cannot read the event ({})\n", r.status()),
                    None,
                )
            }
            Err(e) => return (format!("  live  cannot read the event ({e})\n"), None),
        };
        let state = detail["state"].as_str().unwrap_or_default();
        if state == "pending" && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if state == "pending" {
            return ("  live  not routed yet\n".into(), None);
        }
        let mut jobs: Vec<&Value> = detail["jobs"]
            .as_array()
            .map(|j| j.iter().collect())
            .unwrap_or_default();
        jobs.sort_by_key(|j| {
            (
                j["rule"].as_str().unwrap_or_default().to_string(),
                j["call_index"].as_u64(),
            )
        });
        let calls: Vec<Call> = jobs
            .iter()
            .map(|j| Call {
                rule: j["rule"].as_str().unwrap_or_default().to_string(),
                action: j["action"].as_str().unwrap_or_default().to_string(),
                params: j["params"].clone(),
            })
            .collect();
        if calls.is_empty() {
            return (format!("  live  {state}, no actions\n"), Some(calls));
        }
        let text = calls
            .iter()
            .map(|c| format!("  live  rule {}: → {} {}\n", c.rule, c.action, c.params))
            .collect();
        return (text, Some(calls));
    }
}

/// The local config's actions, made from its plugins: what the local
/// rules' calls run on with `--run-actions` (and only then).
pub struct LocalActions {
    actions: std::collections::BTreeMap<String, std::sync::Arc<switchyard::host::Instance>>,
    timeouts: std::collections::BTreeMap<String, Duration>,
}

impl LocalActions {
    pub fn load(config: &Path) -> anyhow::Result<LocalActions> {
        let (config, _) =
            switchyard::app::config::load(config).map_err(|p| anyhow::anyhow!("{p}"))?;
        let (_, topology, _) =
            switchyard::app::build_topology(&config).map_err(|p| anyhow::anyhow!("{p}"))?;
        let timeouts = config
            .actions
            .iter()
            .map(|(name, a)| {
                let deadline = a
                    .timeout
                    .unwrap_or(switchyard::dispatch::DEFAULT_ACTION_TIMEOUT);
                (name.clone(), deadline)
            })
            .collect();
        Ok(LocalActions {
            actions: topology.actions,
            timeouts,
        })
    }

    /// Runs each call on the local action of its name, one after another;
    /// a line each with its outcome.
    pub async fn run(&self, calls: &[Call], envelope: &Value) -> String {
        let mut out = String::new();
        for (i, call) in calls.iter().enumerate() {
            let Some(instance) = self.actions.get(&call.action).cloned() else {
                out.push_str(&format!(
                    "  ran   {}: no such action in the local config\n",
                    call.action
                ));
                continue;
            };
            let id = envelope["id"].as_str().unwrap_or_default();
            let job = switchyard_plugin_api::Job {
                id: format!("listen-{id}-{i}"),
                idempotency_key: format!("listen:{id}:{}:{i}", call.rule),
                action: call.action.clone(),
                rule: call.rule.clone(),
                attempt: 1,
                params: call.params.clone(),
                event: envelope.clone(),
                trace: None,
            };
            let json = serde_json::to_vec(&job).unwrap_or_default();
            let timeout = self
                .timeouts
                .get(&call.action)
                .copied()
                .unwrap_or(switchyard::dispatch::DEFAULT_ACTION_TIMEOUT);
            let outcome =
                tokio::task::spawn_blocking(move || instance.execute(&json, timeout)).await;
            use switchyard_plugin_api::Outcome;
            let said = match outcome {
                Ok(Ok(Outcome::Done(result))) => match result {
                    Some(r) => format!("done {r}"),
                    None => "done".into(),
                },
                Ok(Ok(Outcome::Retryable(m) | Outcome::RetryAfter(m, _))) => {
                    format!("failed (retryable): {m}")
                }
                Ok(Ok(Outcome::Permanent(m) | Outcome::Gone(m))) => format!("failed: {m}"),
                Ok(Err(e)) => format!("the plugin failed: {e}"),
                Err(e) => format!("the plugin call failed: {e}"),
            };
            out.push_str(&format!(
                "  ran   {} → {}: {said}\n",
                call.rule, call.action
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(rule: &str, action: &str, params: Value) -> Call {
        Call {
            rule: rule.into(),
            action: action.into(),
            params,
        }
    }

    #[test]
    fn the_verdict_names_where_the_calls_part() {
        let live = [call(
            "viewed",
            "audit",
            json!({"invoice": "i", "type": "t"}),
        )];
        assert_eq!(verdict(&live, &live), "  =     the same calls\n");
        let edited = [call(
            "viewed",
            "audit",
            json!({"invoice": "i", "edited": true}),
        )];
        assert_eq!(
            verdict(&edited, &live),
            "  ≠     call 1 (viewed → audit) differs in edited, type\n"
        );
        let other = [call("viewed", "email", json!({}))];
        assert!(verdict(&other, &live).contains("local viewed → email, live viewed → audit"));
        assert_eq!(verdict(&[], &live), "  ≠     0 local call(s), 1 live\n");
    }
}
