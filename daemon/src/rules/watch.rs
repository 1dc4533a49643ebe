//! Hot reload: watching `rules_dir` and making each change live.
//!
//! The folder is watched, not the files, so that an editor saving by
//! writing a temporary file and renaming it over the rule is seen; events
//! are debounced (a save is often several events) and only rule files count
//! (`*.rhai`, not `.#x.rhai`, `x.rhai~` or swap files). Each change compiles
//! the folder again and swaps the rule set whole (see [`Rules::reload`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};

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

/// Watches a folder (not its subfolders) and calls `on_change`, on the
/// watcher's own thread, after a burst of changes to files `relevant` accepts.
pub fn watch_folder(
    dir: &std::path::Path,
    relevant: fn(&std::path::Path) -> bool,
    on_change: impl Fn() + Send + 'static,
) -> Result<RulesWatcher, String> {
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let mut debouncer =
        new_debouncer(DEBOUNCE, tx).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("switchyard-watch".into())
        .spawn(move || {
            // The debouncer lives as long as this thread.
            let _debouncer = debouncer;
            while !stopping.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Ok(events)) => {
                        if events.iter().any(|e| relevant(&e.path)) {
                            on_change();
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("watching a folder: {e}"),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .map_err(|e| format!("cannot start the rules watcher: {e}"))?;
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
