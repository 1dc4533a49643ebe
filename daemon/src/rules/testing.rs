//! `switchyard rules test`: running rules against events with no side
//! effects, and checking a rules folder's test cases.
//!
//! A test case is a JSON file in `<rules_dir>/tests/`:
//!
//! ```json
//! {
//!   "description": "a client viewing an invoice emails the owner",
//!   "event": {"type": "tight.invoiceViewed", "data": {"eventData": {"entityId": "inv_1"}}},
//!   "expect": [
//!     {"rule": "invoice-viewed", "action": "notify-owner", "params": {"invoice": "inv_1"}}
//!   ]
//! }
//! ```
//!
//! `event` may be a whole envelope or only its `type` and `data` (the rest
//! is filled in: `source` is the type's first segment); instead of `event`,
//! `"sample": {"source": "tight", "event": "invoiceViewed"}` uses the
//! provider's own sample, verified and normalized as a real delivery would
//! be. `expect` lists every action call, in order; `params` checks the
//! parameters it names (nested objects likewise) and ignores the others.
//! A rule that fails makes the case fail unless it says `"error": true`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{RuleRun, RuleSet, Rules};
use crate::event::{rfc3339, Event};

/// Turns a JSON event (a whole envelope, or just `type` and `data`) into
/// an [`Event`], filling in what is missing.
pub fn event_from_json(value: Value) -> Result<Event, String> {
    let Value::Object(mut m) = value else {
        return Err("an event is a JSON object".into());
    };
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the event has no \"type\"")?
        .to_string();
    let provider = kind.split('.').next().unwrap_or("test").to_string();
    let now = rfc3339(time::OffsetDateTime::now_utc());
    let mut fill = |k: &str, v: Value| {
        m.entry(k.to_string()).or_insert(v);
    };
    fill("id", json!("01TESTEVENT0000000000000000"));
    fill("source", json!(provider));
    fill("provider", json!(provider));
    fill("time", json!(now));
    fill("received_at", json!(now));
    fill("dedup_key", json!("test"));
    fill("data", json!({}));
    serde_json::from_value(Value::Object(m)).map_err(|e| format!("not an event: {e}"))
}

/// One expected action call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub rule: String,
    pub action: String,
    #[serde(default)]
    pub params: Option<Value>,
}

/// A test case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub event: Option<Value>,
    #[serde(default)]
    pub sample: Option<SampleRef>,
    pub expect: Vec<Expected>,
    /// The case expects some rule to fail.
    #[serde(default)]
    pub error: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRef {
    pub source: String,
    pub event: String,
}

/// Whether `actual` has every member `expected` names, recursively.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev))),
        (a, e) => a == e,
    }
}

/// Compares the calls of `runs` with `expect`; the mismatches, in words.
pub fn compare(runs: &[RuleRun], case: &Case) -> Vec<String> {
    let mut out = Vec::new();
    let failed: Vec<&RuleRun> = runs.iter().filter(|r| r.error.is_some()).collect();
    if !case.error {
        for r in &failed {
            out.push(format!(
                "rule {} failed: {}",
                r.rule,
                r.error.as_deref().unwrap_or("")
            ));
        }
    } else if failed.is_empty() {
        out.push("expected a rule to fail, none did".into());
    }
    let calls: Vec<(&str, &str, &Value)> = runs
        .iter()
        .flat_map(|r| {
            r.calls
                .iter()
                .map(move |c| (r.rule.as_str(), c.action.as_str(), &c.params))
        })
        .collect();
    for i in 0..calls.len().max(case.expect.len()) {
        match (calls.get(i), case.expect.get(i)) {
            (Some((rule, action, params)), Some(e)) => {
                if *rule != e.rule || *action != e.action {
                    out.push(format!(
                        "call {}: expected {} → {}, got {rule} → {action}",
                        i + 1,
                        e.rule,
                        e.action
                    ));
                } else if let Some(want) = &e.params {
                    if !contains(params, want) {
                        out.push(format!(
                            "call {} ({rule} → {action}): params {} do not have {}",
                            i + 1,
                            params,
                            want
                        ));
                    }
                }
            }
            (Some((rule, action, params)), None) => out.push(format!(
                "unexpected call {}: {rule} → {action} {params}",
                i + 1
            )),
            (None, Some(e)) => {
                out.push(format!("missing call {}: {} → {}", i + 1, e.rule, e.action))
            }
            (None, None) => {}
        }
    }
    out
}

/// What routing one event would do, for people to read.
pub fn describe(runs: &[RuleRun], event: &Event, known: &dyn Fn(&str) -> bool) -> String {
    let mut s = format!("event {} ({})\n", event.kind, event.id);
    if runs.is_empty() {
        s.push_str("  no rule wants this event type\n");
        return s;
    }
    for r in runs {
        match &r.error {
            Some(e) => s.push_str(&format!("  rule {}: FAILED: {e}\n", r.rule)),
            None if r.calls.is_empty() => {
                s.push_str(&format!("  rule {}: matched, no actions\n", r.rule))
            }
            None => s.push_str(&format!("  rule {}: matched\n", r.rule)),
        }
        for c in &r.calls {
            let unknown = if known(&c.action) {
                ""
            } else {
                "   (no such action in the config: it would be dropped)"
            };
            s.push_str(&format!("    → {} {}{unknown}\n", c.action, c.params));
        }
    }
    s
}

/// Runs the rules on one event with no side effects.
pub fn run(rules: &Rules, event: &Event) -> (std::sync::Arc<RuleSet>, Vec<RuleRun>) {
    let set = rules.current();
    let runs = set.route(&rules.engine, &rules.limits, event);
    (set, runs)
}

/// A case's event from its `event` member (samples are the caller's work).
pub fn case_event(case: &Case) -> Option<Result<Event, String>> {
    case.event.clone().map(event_from_json)
}

/// A test case file's name, and the case or why it could not be read.
pub type LoadedCase = (String, Result<Case, String>);

/// Reads every `*.json` test case under `<rules_dir>/tests/`, in name order.
pub fn load_cases(dir: &std::path::Path) -> Result<Vec<LoadedCase>, String> {
    let tests = dir.join("tests");
    let entries = match std::fs::read_dir(&tests) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", tests.display())),
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            let case = std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Case>(&t).map_err(|e| e.to_string()));
            (name, case)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked_by_subset() {
        let a = json!({"a": 1, "b": {"c": 2, "d": 3}});
        assert!(contains(&a, &json!({"b": {"c": 2}})));
        assert!(!contains(&a, &json!({"b": {"c": 3}})));
        assert!(!contains(&a, &json!({"x": 1})));
    }

    #[test]
    fn minimal_events_are_filled_in() {
        let e = event_from_json(json!({"type": "tight.invoiceViewed"})).unwrap();
        assert_eq!(e.source, "tight");
        assert!(event_from_json(json!({"data": {}})).is_err());
    }
}
