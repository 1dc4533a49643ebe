//! Rules: user-written rhai scripts that decide what happens to an event.
//!
//! Owns: the sandboxed rhai engine (`engine.rs`), compiling the rules folder into a
//! [`RuleSet`] (an index from event types to the rules that want them), and
//! running the matching rules for one event. A rule decides by calling
//! `action("name", #{ ... })`; the calls come back as [`ActionCall`]s, and
//! turning them into jobs is the caller's business.
//! Calls: `event`, config's `Problem` and the `catalog` (to check reads):
//! no stage.
//! `reads.rs` finds what a rule reads from `event` and checks it against
//! the catalog's schemas of the types it wants.
//! `testing.rs` is `switchyard rules test`'s side (events from files, test
//! cases); `watch.rs` reloads the folder when it changes.
//!
//! ## A rule file
//! ```rhai
//! // rules/invoice-viewed.rhai
//! const EVENTS = ["tight.invoiceViewed", "tight.INVOICE_VIEWED"];
//!
//! action("notify-owner", #{
//!     subject: `Invoice ${event.subject} was viewed`,
//!     company: event.data?.company?.id,
//! });
//! ```
//! `EVENTS` lists glob patterns (`*` matches anything, dots included) of the
//! event types the rule wants; the rest of the file runs once per matching
//! event with `event` (the envelope as a map) in scope.
//!
//! ## Sandbox
//! Operation, call-depth, expression-depth, string, array and map limits, and
//! a wall-clock deadline per run (checked as the script makes progress). No
//! file, network or process access exists in the engine; `eval` is disabled.
//! A rule that fails or overruns is stopped and reported; the other rules for
//! the same event still run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use globset::{Glob, GlobSet, GlobSetBuilder};
use rhai::{Engine, AST};
use serde::Serialize;
use serde_json::Value;

use crate::config::Problem;
use crate::event::Event;

/// One action a rule asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionCall {
    pub action: String,
    pub params: Value,
}

/// The result of running one rule on one event.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRun {
    pub rule: String,
    /// None if the run completed; else why it was stopped.
    pub error: Option<String>,
    /// The calls made, in order. A failed run's calls are discarded: a rule
    /// either completes and its decisions stand, or it decides nothing.
    pub calls: Vec<ActionCall>,
    pub elapsed_us: u64,
}

/// One compiled rule.
pub struct Rule {
    /// The file's stem: `invoice-viewed` for `invoice-viewed.rhai`.
    pub name: String,
    pub path: PathBuf,
    pub patterns: Vec<String>,
    ast: AST,
    /// A hash of the source text: a reload recompiles only changed files.
    digest: u64,
}

impl Rule {
    /// The actions this rule calls by a literal name
    /// (`action("notify-owner", …)`), found in its compiled script: calls
    /// in comments or strings do not count, a computed name cannot be known.
    pub fn literal_actions(&self) -> Vec<String> {
        use rhai::{ASTNode, Expr, Stmt};
        let mut names = Vec::new();
        self.ast.walk(&mut |path: &[ASTNode]| {
            // A call is a statement of its own, or an expression in one.
            let call = match path.last() {
                Some(ASTNode::Stmt(Stmt::FnCall(call, _))) => call,
                Some(ASTNode::Expr(Expr::FnCall(call, _))) => call,
                _ => return true,
            };
            if call.name == "action" && call.namespace.is_empty() {
                if let Some(Expr::StringConstant(name, _)) = call.args.first() {
                    names.push(name.to_string());
                }
            }
            true
        });
        names
    }
}

impl Rule {
    /// Whether the rule wants events of a type (its `EVENTS`): a test
    /// whose patterns are compiled once, for asking of many types.
    pub fn wants(&self) -> impl Fn(&str) -> bool + '_ {
        let mut builder = GlobSetBuilder::new();
        for p in &self.patterns {
            if let Ok(glob) = Glob::new(p) {
                builder.add(glob);
            }
        }
        let globs = builder.build().unwrap_or_else(|_| GlobSet::empty());
        move |kind| self.patterns.iter().any(|p| p == kind) || globs.is_match(kind)
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("patterns", &self.patterns)
            .finish()
    }
}

/// Every rule of a folder, indexed by the event types they want.
pub struct RuleSet {
    /// Counts the rule sets a process has made live (1 at start); recorded
    /// with every routing, so each event says which version routed it.
    pub version: u64,
    /// Files that failed to compile when this set was made. Those that had
    /// compiled before are still here in their last good version.
    pub broken: Vec<Problem>,
    rules: Vec<Arc<Rule>>,
    /// Exact event types → rule indexes.
    exact: HashMap<String, Vec<usize>>,
    /// Patterns with wildcards, matched in one pass.
    globs: GlobSet,
    glob_rule: Vec<usize>,
    /// The rules each event type seen so far matched: an event costs a
    /// hash lookup, not a pass over the globs (bounded; cleared when full).
    seen: RwLock<HashMap<String, Arc<[usize]>>>,
}

/// Most event types whose matching rules a rule set remembers.
const SEEN_TYPES: usize = 4096;

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.rules).finish()
    }
}

impl RuleSet {
    /// An empty set: no rule wants anything.
    pub fn empty() -> RuleSet {
        RuleSet {
            version: 0,
            broken: Vec::new(),
            rules: Vec::new(),
            exact: HashMap::new(),
            globs: GlobSet::empty(),
            glob_rule: Vec::new(),
            seen: RwLock::default(),
        }
    }

    /// Compiles every `*.rhai` file in `dir`, reporting every problem with
    /// its file:line:col. Strict: any problem is an error (at start, with no
    /// earlier version to fall back on).
    pub fn load_dir(engine: &Engine, dir: &Path) -> Result<RuleSet, Vec<Problem>> {
        let (rules, problems) = scan(engine, dir, None).map_err(|p| vec![p])?;
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut set = RuleSet::from_rules(rules).map_err(|p| vec![p])?;
        set.version = 1;
        Ok(set)
    }

    /// Compiles `dir` again after a change, reusing the unchanged rules of
    /// `self`. A file that fails to compile keeps its last good version from
    /// `self` (or stays out, if it never compiled) and is listed in
    /// `broken`; a deleted file's rule is gone. None when nothing changed.
    pub fn reload(&self, engine: &Engine, dir: &Path) -> Result<Option<RuleSet>, Problem> {
        let (rules, problems) = scan(engine, dir, Some(self))?;
        let same = rules.len() == self.rules.len()
            && rules
                .iter()
                .zip(&self.rules)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && problems == self.broken;
        if same {
            return Ok(None);
        }
        let mut set = RuleSet::from_rules(rules)?;
        set.version = self.version + 1;
        set.broken = problems;
        Ok(Some(set))
    }

    /// Indexes compiled rules.
    pub fn from_rules(rules: Vec<Arc<Rule>>) -> Result<RuleSet, Problem> {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut builder = GlobSetBuilder::new();
        let mut glob_rule = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for pattern in &rule.patterns {
                if pattern.contains(['*', '?', '[', '{']) {
                    let glob = Glob::new(pattern).map_err(|e| {
                        Problem::new(
                            rule.path.display().to_string(),
                            format!("EVENTS pattern {pattern:?}: {e}"),
                        )
                    })?;
                    builder.add(glob);
                    glob_rule.push(i);
                } else {
                    exact.entry(pattern.clone()).or_default().push(i);
                }
            }
        }
        let globs = builder
            .build()
            .map_err(|e| Problem::new("rules", e.to_string()))?;
        Ok(RuleSet {
            version: 0,
            broken: Vec::new(),
            rules,
            exact,
            globs,
            glob_rule,
            seen: RwLock::default(),
        })
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The rules that want an event type, in rule-name order, each once.
    pub fn matching(&self, kind: &str) -> Arc<[usize]> {
        if let Some(hit) = self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kind)
        {
            return hit.clone();
        }
        let hits: Arc<[usize]> = self.match_index(kind).into();
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SEEN_TYPES {
            seen.clear();
        }
        seen.insert(kind.to_string(), hits.clone());
        hits
    }

    fn match_index(&self, kind: &str) -> Vec<usize> {
        let mut hits: Vec<usize> = self.exact.get(kind).cloned().unwrap_or_default();
        if !self.glob_rule.is_empty() {
            hits.extend(
                self.globs
                    .matches(kind)
                    .into_iter()
                    .map(|g| self.glob_rule[g]),
            );
        }
        hits.sort_unstable();
        hits.dedup();
        hits
    }

    /// Runs every rule that wants this event. Synchronous and CPU-bound:
    /// call it from a blocking thread.
    pub fn route(&self, engine: &Engine, limits: &Limits, event: &Event) -> Vec<RuleRun> {
        let matching = self.matching(&event.kind);
        if matching.is_empty() {
            return Vec::new();
        }
        let event_value = match rhai::serde::to_dynamic(event) {
            Ok(v) => v,
            Err(e) => {
                return vec![RuleRun {
                    rule: "*".into(),
                    error: Some(format!("event cannot be handed to rules: {e}")),
                    calls: Vec::new(),
                    elapsed_us: 0,
                }]
            }
        };
        matching
            .iter()
            .map(|&i| {
                run_rule(
                    engine,
                    limits,
                    &self.rules[i],
                    &event.id,
                    event_value.clone(),
                )
            })
            .collect()
    }
}

/// Whether a file in the rules folder is a rule: `*.rhai`, and not an
/// editor's lock, backup or swap file (`.#x.rhai`, `.x.rhai.swp`, `x.rhai~`).
pub fn is_rule_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".rhai") && !name.starts_with('.') && !name.starts_with('#')
}

fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Reads and compiles every rule file of `dir`, in name order. With a
/// `previous` set, unchanged files reuse their compiled rule and a file that
/// fails keeps its previous version. Errs only when the folder cannot be read.
fn scan(
    engine: &Engine,
    dir: &Path,
    previous: Option<&RuleSet>,
) -> Result<(Vec<Arc<Rule>>, Vec<Problem>), Problem> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Problem::new(
            dir.display().to_string(),
            format!("cannot read rules_dir: {e}"),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_rule_file(p) && p.is_file())
        .collect();
    paths.sort();
    let before: HashMap<&Path, &Arc<Rule>> = previous
        .map(|set| set.rules.iter().map(|r| (r.path.as_path(), r)).collect())
        .unwrap_or_default();
    let mut rules = Vec::with_capacity(paths.len());
    let mut problems = Vec::new();
    for path in paths {
        let old = before.get(path.as_path()).copied();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::new(
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                ));
                rules.extend(old.cloned());
                continue;
            }
        };
        if let Some(old) = old.filter(|r| r.digest == digest(&text)) {
            rules.push(old.clone());
            continue;
        }
        match compile(engine, &path, &text) {
            Ok(rule) => rules.push(Arc::new(rule)),
            Err(p) => {
                problems.push(p);
                rules.extend(old.cloned());
            }
        }
    }
    Ok((rules, problems))
}

/// Compiles one rule file.
pub fn compile(engine: &Engine, path: &Path, text: &str) -> Result<Rule, Problem> {
    let file = path.display().to_string();
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("rule")
        .to_string();
    let ast = engine.compile(text).map_err(|e| {
        let pos = e.position();
        let location = match (pos.line(), pos.position()) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.clone(),
        };
        Problem::new(location, e.err_type().to_string())
    })?;
    let declared = ast
        .iter_literal_variables(true, false)
        .find(|(n, _, _)| *n == "EVENTS")
        .map(|(_, _, v)| v);
    let missing = || {
        Problem::new(
            &file,
            "declare the event types this rule wants, e.g. const EVENTS = [\"tight.invoiceViewed\"];",
        )
    };
    let declared = declared.ok_or_else(missing)?;
    let patterns: Vec<String> = if declared.is_string() {
        vec![declared.into_string().unwrap_or_default()]
    } else if declared.is_array() {
        declared
            .into_array()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.into_string().map_err(|_| ()))
            .collect::<Result<_, _>>()
            .map_err(|_| Problem::new(&file, "EVENTS must hold only strings"))?
    } else {
        return Err(Problem::new(
            &file,
            "EVENTS must be a string or an array of strings",
        ));
    };
    if patterns.is_empty() || patterns.iter().any(String::is_empty) {
        return Err(Problem::new(
            &file,
            "EVENTS must name at least one non-empty pattern",
        ));
    }
    for p in &patterns {
        if let Err(e) = Glob::new(p) {
            return Err(Problem::new(&file, format!("EVENTS pattern {p:?}: {e}")));
        }
    }
    Ok(Rule {
        name,
        path: path.to_path_buf(),
        patterns,
        ast,
        digest: digest(text),
    })
}

/// The live rules: the engine, limits and the current rule set, swapped
/// whole by a reload.
pub struct Rules {
    pub engine: Engine,
    pub limits: Limits,
    /// The folder the rules come from.
    pub dir: PathBuf,
    current: ArcSwap<RuleSet>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// Reloads that found a file that does not compile.
    pub failed_reloads: AtomicU64,
    /// Reloads run (the folder compiled again), changed or not.
    pub reloads: AtomicU64,
    /// Where a file that does not compile is announced
    /// (`switchyard.rules.broken`), once set.
    announce: std::sync::OnceLock<crate::event::Announce>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// The version live after it.
    pub version: u64,
    /// Whether a new set went live.
    pub changed: bool,
    pub rules: usize,
    /// Files that do not compile (their last good version, if any, is live).
    pub broken: Vec<Problem>,
}

impl Rules {
    pub fn new(engine: Engine, limits: Limits, dir: PathBuf, set: RuleSet) -> Rules {
        Rules {
            engine,
            limits,
            dir,
            current: ArcSwap::from_pointee(set),
            reloading: Mutex::new(()),
            failed_reloads: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            announce: std::sync::OnceLock::new(),
        }
    }

    /// Announces each file a reload finds broken from now on.
    pub fn set_announce(&self, announce: crate::event::Announce) {
        let _ = self.announce.set(announce);
    }

    /// The live rule set. Route a batch with one snapshot: every event is
    /// routed by exactly one version.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Routes one event with the live set; returns the version used too.
    pub fn route(&self, event: &Event) -> (u64, Vec<RuleRun>) {
        let set = self.current();
        (set.version, set.route(&self.engine, &self.limits, event))
    }

    /// Compiles the folder again and makes the result live (see
    /// [`RuleSet::reload`]). Blocking: compiling takes a while for many rules.
    pub fn reload(&self) -> Result<Reloaded, Problem> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let live = self.current();
        let was_broken = live.broken.clone();
        let next = live.reload(&self.engine, &self.dir)?;
        let changed = next.is_some();
        let set = match next {
            Some(set) => {
                let set = Arc::new(set);
                self.current.store(set.clone());
                set
            }
            None => live,
        };
        if !set.broken.is_empty() {
            self.failed_reloads.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(announce) = self.announce.get() {
            // Newly broken files only; the dedup key makes one event of the
            // same problem announced again within the window.
            for p in set.broken.iter().filter(|p| !was_broken.contains(p)) {
                announce(crate::event::Notice {
                    kind: "switchyard.rules.broken",
                    subject: p.location.clone(),
                    data: serde_json::json!({"location": p.location, "message": p.message}),
                    dedup_key: format!("broken:{}:{}", p.location, p.message),
                });
            }
        }
        Ok(Reloaded {
            version: set.version,
            changed,
            rules: set.rules().len(),
            broken: set.broken.clone(),
        })
    }
}

mod engine;
pub mod reads;
pub mod testing;
pub mod watch;

use engine::run_rule;
pub use engine::{engine, Limits};

#[cfg(test)]
mod tests;
