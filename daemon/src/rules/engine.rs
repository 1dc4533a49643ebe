//! The sandboxed rhai engine the rules run in: its limits, the functions a
//! rule may call (`action`, `log`, the time and text helpers), and one
//! rule's run on one event under a deadline.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope};
use serde_json::Value;

use super::{ActionCall, Rule, RuleRun};

/// Sandbox limits for every rule run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Most action calls one run may make.
    pub max_actions: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 100_000,
            max_actions: 100,
            timeout: Duration::from_millis(250),
        }
    }
}

struct RunState {
    deadline: Instant,
    calls: Vec<ActionCall>,
    max_actions: usize,
    rule: String,
    event_id: String,
}

thread_local! {
    /// The run in progress on this thread; rules run synchronously, one at a
    /// time per thread, so the engine's callbacks find their run here.
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn record_action(name: &str, params: Map) -> RhaiResult<()> {
    let params: Value = rhai::serde::from_dynamic(&Dynamic::from_map(params))?;
    RUN.with(|run| {
        let mut run = run.borrow_mut();
        let Some(state) = run.as_mut() else {
            return Err("action() called outside a rule run".into());
        };
        if state.calls.len() >= state.max_actions {
            return Err(format!("more than {} action calls in one run", state.max_actions).into());
        }
        state.calls.push(ActionCall {
            action: name.to_string(),
            params,
        });
        Ok(())
    })
}

fn log_line(message: &str) {
    RUN.with(|run| match run.borrow().as_ref() {
        Some(s) => tracing::info!(rule = %s.rule, event_id = %s.event_id, "rule log: {message}"),
        None => tracing::info!("rule log: {message}"),
    })
}

/// Builds the sandboxed engine all rules compile and run on.
pub fn engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(0)
        .disable_symbol("eval");
    engine.on_progress(|ops| {
        if ops % 256 != 0 {
            return None;
        }
        RUN.with(|run| match run.borrow().as_ref() {
            Some(s) if Instant::now() >= s.deadline => Some(Dynamic::from("deadline exceeded")),
            _ => None,
        })
    });
    engine.on_print(log_line);
    engine.on_debug(|text, _source, pos| log_line(&format!("{text} ({pos})")));
    engine.register_fn("action", |name: &str, params: Map| {
        record_action(name, params)
    });
    engine.register_fn("action", |name: &str| record_action(name, Map::new()));
    engine.register_fn("log", |message: &str| log_line(message));
    engine.register_fn("log", |value: Dynamic| log_line(&value.to_string()));
    register_helpers(&mut engine);
    engine
}

/// Time and text helpers for rules (rhai's own string functions —
/// `contains`, `starts_with`, `split`, `to_upper`, `replace`, … — are there too).
fn register_helpers(engine: &mut Engine) {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    let parse = |s: &str| OffsetDateTime::parse(s.trim(), &Rfc3339).ok();
    // now() → "2025-04-01T11:31:04.123Z"; now_unix() → seconds.
    engine.register_fn("now", || crate::event::rfc3339(OffsetDateTime::now_utc()));
    engine.register_fn("now_unix", || OffsetDateTime::now_utc().unix_timestamp());
    // parse_time("2025-04-01T11:31:04.1Z") → Unix seconds, or () if not a time.
    engine.register_fn("parse_time", move |s: &str| -> Dynamic {
        parse(s).map_or(Dynamic::UNIT, |t| Dynamic::from(t.unix_timestamp()))
    });
    // format_time(unix seconds) → RFC 3339 (UTC).
    engine.register_fn("format_time", |secs: i64| -> Dynamic {
        OffsetDateTime::from_unix_timestamp(secs)
            .map_or(Dynamic::UNIT, |t| Dynamic::from(crate::event::rfc3339(t)))
    });
    // age_secs(time text) → seconds from then to now, or () if not a time.
    engine.register_fn("age_secs", move |s: &str| -> Dynamic {
        parse(s).map_or(Dynamic::UNIT, |t| {
            Dynamic::from((OffsetDateTime::now_utc() - t).whole_seconds())
        })
    });
    // json(value) → compact JSON text, for messages.
    engine.register_fn("json", |v: Dynamic| -> String {
        rhai::serde::from_dynamic::<Value>(&v)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok())
            .unwrap_or_default()
    });
}

pub(super) fn run_rule(
    engine: &Engine,
    limits: &Limits,
    rule: &Rule,
    event_id: &str,
    event: Dynamic,
) -> RuleRun {
    let start = Instant::now();
    RUN.with(|run| {
        *run.borrow_mut() = Some(RunState {
            deadline: start + limits.timeout,
            calls: Vec::new(),
            max_actions: limits.max_actions,
            rule: rule.name.clone(),
            event_id: event_id.to_string(),
        })
    });
    let mut scope = Scope::new();
    scope.push_constant("event", event);
    let result = engine.run_ast_with_scope(&mut scope, &rule.ast);
    let state = RUN.with(|run| run.borrow_mut().take());
    let calls = state.map(|s| s.calls).unwrap_or_default();
    let elapsed_us = start.elapsed().as_micros() as u64;
    match result {
        Ok(()) => RuleRun {
            rule: rule.name.clone(),
            error: None,
            calls,
            elapsed_us,
        },
        Err(e) => {
            let error = match *e {
                EvalAltResult::ErrorTerminated(..) => format!(
                    "stopped: ran past its {} ms deadline",
                    limits.timeout.as_millis()
                ),
                ref other => other.to_string(),
            };
            RuleRun {
                rule: rule.name.clone(),
                error: Some(error),
                calls: Vec::new(),
                elapsed_us,
            }
        }
    }
}
