//! Hot reload: watching a folder and making each change live —
//! `rules_dir` for rules ([`watch`]), and, through [`watch_folder`], the
//! plugin folder (`app`: a library dropped in is loaded).
//!
//! The folder is watched, not the files, so that an editor saving by
//! writing a temporary file and renaming it over the rule is seen; events
//! are debounced (a save is often several events) and only rule files count
//! (`*.rhai`, not `.#x.rhai`, `x.rhai~` or swap files), and only changes
//! (reading a file is not one). Each change compiles
//! the folder again and swaps the rule set whole (see [`Rules::reload`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use std::time::Instant;

use notify::{Event, EventKind, RecursiveMode, Watcher as _};

use super::{is_rule_file, Rules};

/// How long the folder must be quiet before a reload: a save is done.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the rules folder until dropped.
pub struct RulesWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RulesWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching `rules.dir`.
pub fn watch(rules: Arc<Rules>) -> Result<RulesWatcher, String> {
    let dir = rules.dir.clone();
    watch_folder(&dir, is_rule_file, move || {
        reload_and_log(&rules, "a rule file changed")
    })
}

/// Whether an event changes a file (as opposed to reading it: loading a
/// library or compiling a rule opens and reads files, and reacting to that
/// would reload forever).
fn changes_content(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // A file written and closed: the end of a save.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Watches a folder (not its subfolders) and calls `on_change`, on the
/// watcher's own thread, once changes to files `relevant` accepts have
/// stopped for `DEBOUNCE` (a save is often several events). Reads of those
/// files are not changes.
pub fn watch_folder(
    dir: &std::path::Path,
    relevant: fn(&std::path::Path) -> bool,
    on_change: impl Fn() + Send + 'static,
) -> Result<RulesWatcher, String> {
    let (tx, rx) = std::sync::mpsc::channel::<notify::Result<Event>>();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("switchyard-watch".into())
        .spawn(move || {
            // The watcher lives as long as this thread.
            let _watcher = watcher;
            let mut due: Option<Instant> = None;
            while !stopping.load(Ordering::Relaxed) {
                let wait = due
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(200))
                    .min(Duration::from_millis(200));
                match rx.recv_timeout(wait) {
                    Ok(Ok(event)) => {
                        if changes_content(&event.kind) && event.paths.iter().any(|p| relevant(p)) {
                            due = Some(Instant::now() + DEBOUNCE);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("watching a folder: {e}"),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if due.is_some_and(|d| Instant::now() >= d) {
                    due = None;
                    on_change();
                }
            }
        })
        .map_err(|e| format!("cannot start a folder watcher: {e}"))?;
    Ok(RulesWatcher {
        stop,
        thread: Some(thread),
    })
}

/// Reloads the rules and says what happened: the new version, and every
/// file that does not compile (whose last good version stays live).
pub fn reload_and_log(rules: &Rules, why: &str) {
    let started = std::time::Instant::now();
    match rules.reload() {
        Ok(r) => {
            let ms = started.elapsed().as_millis() as u64;
            if r.changed {
                tracing::info!(
                    version = r.version,
                    rules = r.rules,
                    ms,
                    "rules reloaded ({why})"
                );
            }
            for p in &r.broken {
                tracing::error!(
                    location = %p.location,
                    "rule does not compile; its last good version (if any) stays live: {}",
                    p.message
                );
            }
        }
        Err(p) => tracing::error!("cannot reload rules: {p}"),
    }
}
