//! What a rule reads from `event`, found in its compiled script, and the
//! reads that cannot exist for the types it wants: `switchyard check`,
//! `rules test` and the playground warn of them.
//!
//! A read is a chain of `.key`, `?.key`, `["key"]` and `[n]` from `event`,
//! or from a variable set to such a chain before it (`let data =
//! event.data;` … `data?.eventData?.entityId`). What follows a computed
//! key or a method call is not followed. An envelope field that does not
//! exist (`event.subjet`) is reported; a read into `event.data` is checked
//! against the schemas of every type the rule's `EVENTS` match, in the
//! catalog, and reported when none of them can have it. A rule whose
//! types the catalog does not describe is not checked.

use std::collections::HashMap;

use rhai::{ASTNode, Expr, Position, Stmt};

use super::Rule;
use crate::catalog::paths::{self, Seg};
use crate::catalog::Catalog;
use crate::config::Problem;

/// The envelope's fields (`event.*`).
const ENVELOPE: [&str; 12] = [
    "id",
    "source",
    "type",
    "subject",
    "time",
    "data",
    "provider",
    "dedup_key",
    "received_at",
    "extensions",
    "order",
    "handshake",
];

/// One read of `event`: its steps from `event`, each where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub steps: Vec<(Seg, Position)>,
}

impl Read {
    /// `event.data.eventData.entityId`, `event.data.lines[].sku`.
    pub fn text(&self) -> String {
        let mut out = String::from("event");
        for (seg, _) in &self.steps {
            match seg {
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index => out.push_str("[]"),
            }
        }
        out
    }
}

/// A step of a chain: a property or a constant index.
fn step(e: &Expr) -> Option<(Seg, Position)> {
    match e {
        Expr::Property(p, pos) => Some((Seg::Key(p.2.to_string()), *pos)),
        Expr::StringConstant(s, pos) => Some((Seg::Key(s.to_string()), *pos)),
        Expr::IntegerConstant(_, pos) => Some((Seg::Index, *pos)),
        _ => None,
    }
}

/// The steps after a chain's root (rhai nests them to the right).
fn rest(e: &Expr, out: &mut Vec<(Seg, Position)>) {
    match e {
        Expr::Dot(b, _, _) | Expr::Index(b, _, _) => {
            if let Some(s) = step(&b.lhs) {
                out.push(s);
                rest(&b.rhs, out);
            }
        }
        other => out.extend(step(other)),
    }
}

/// A chain from a variable: its name and steps.
fn chain(e: &Expr) -> Option<(String, Vec<(Seg, Position)>)> {
    let (Expr::Dot(b, _, _) | Expr::Index(b, _, _)) = e else {
        return None;
    };
    let Expr::Variable(v, _, _) = &b.lhs else {
        return None;
    };
    let mut steps = Vec::new();
    rest(&b.rhs, &mut steps);
    Some((v.1.to_string(), steps))
}

impl Rule {
    /// Every read of `event` in this rule, in the order written.
    pub fn event_reads(&self) -> Vec<Read> {
        // Variables set to a read of `event`: what they stand for.
        let mut aliases: HashMap<String, Vec<(Seg, Position)>> = HashMap::new();
        let mut reads = Vec::new();
        let resolve = |aliases: &HashMap<String, Vec<(Seg, Position)>>, e: &Expr| {
            let (root, steps) = chain(e)?;
            let mut full = match root.as_str() {
                "event" => Vec::new(),
                other => aliases.get(other)?.clone(),
            };
            full.extend(steps);
            Some(full)
        };
        self.ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Stmt(Stmt::Var(v, _, _))) => {
                    let (name, value, _) = v.as_ref();
                    let value_steps = match value {
                        Expr::Variable(x, _, _) if x.1 == "event" => Some(Vec::new()),
                        Expr::Variable(x, _, _) => aliases.get(x.1.as_str()).cloned(),
                        other => resolve(&aliases, other),
                    };
                    match value_steps {
                        Some(steps) => aliases.insert(name.name.to_string(), steps),
                        None => aliases.remove(name.name.as_str()),
                    };
                }
                Some(ASTNode::Expr(e @ (Expr::Dot(..) | Expr::Index(..)))) => {
                    // Only a chain's head: its inner links start from a
                    // property, not a variable.
                    if let Some(steps) = resolve(&aliases, e).filter(|s| !s.is_empty()) {
                        reads.push(Read { steps });
                    }
                }
                _ => {}
            }
            true
        });
        reads
    }
}

/// A warning for each read of `rule` that cannot exist for the types it
/// wants, `file:line:col` at the step that cannot be taken.
pub fn check(rule: &Rule, catalog: &Catalog) -> Vec<Problem> {
    let types = catalog.matching(rule.wants());
    let mut out = Vec::new();
    for read in rule.event_reads() {
        let at = |i: usize| {
            let pos = read.steps[i].1;
            format!(
                "{}:{}:{}",
                rule.path.display(),
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0)
            )
        };
        let first = match &read.steps[0].0 {
            Seg::Key(k) => k.as_str(),
            Seg::Index => "[]",
        };
        if !ENVELOPE.contains(&first) {
            let envelope = paths::Impossible {
                at: 0,
                known: ENVELOPE.iter().map(|k| k.to_string()).collect(),
                is: None,
            };
            let hint = match envelope.suggestion(first) {
                Some(s) => format!("an event has {s}"),
                None => format!("an event has {}", ENVELOPE.join(", ")),
            };
            out.push(Problem::new(
                at(0),
                format!("reads {}; {hint}", read.text()),
            ));
            continue;
        }
        if first != "data" || types.is_empty() || read.steps.len() < 2 {
            continue;
        }
        let path: Vec<Seg> = read.steps[1..].iter().map(|(s, _)| s.clone()).collect();
        let mut failures = Vec::new();
        for t in &types {
            match paths::check(&t.schema, &path) {
                Ok(()) => {
                    failures.clear();
                    break;
                }
                Err(e) => failures.push((t, e)),
            }
        }
        // The deepest failure says the most.
        let Some((t, e)) = failures.into_iter().max_by_key(|(_, e)| e.at) else {
            continue;
        };
        let (step, _) = &read.steps[e.at + 1];
        let name = match step {
            Seg::Key(k) => k.as_str(),
            Seg::Index => "[]",
        };
        let whose = match e.at {
            0 => t.name.clone(),
            n => format!(
                "{}'s {}",
                t.name,
                Read {
                    steps: read.steps[..n + 1].to_vec()
                }
                .text()
                .trim_start_matches("event.")
            ),
        };
        let hint = match (e.suggestion(name), &e.is) {
            (Some(s), _) => format!("{whose} has {s}"),
            (None, Some(is)) => format!("{whose} is {is}"),
            (None, None) if e.known.is_empty() => format!("{whose} has no fields"),
            (None, None) => format!(
                "{whose} has {}",
                e.known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        out.push(Problem::new(
            at(e.at + 1),
            format!("reads {}; {hint}", read.text()),
        ));
    }
    out
}
