//! The plugin host: loads plugin libraries, makes the configured sources and
//! actions out of them, and calls them safely.
//!
//! Owns: the plugin registry (name → loaded library), plugin instances, and
//! the [`CallPool`] every plugin call runs on: a bounded set of blocking
//! threads, each call with a deadline, so a slow or stuck plugin costs a
//! permit, never an async worker thread; and [`Lane`]s (`lane.rs`), which
//! run a source's verifications on the pool's threads with fewer thread
//! wake-ups under load.
//! Calls: the plugin ABI; imports nothing of the daemon but `config`'s
//! `Problem`. Told what to build as [`PluginUse`]s, it knows no stage's
//! config.

mod instance;
mod lane;
mod library;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

pub use instance::{ExecOutcome, Instance, OwnedRequest, PluginError};
pub use lane::Lane;
pub use library::{is_library, load, load_copies_into, LoadError, Plugin, Role};

use crate::config::Problem;

/// Every plugin found in a folder, and the libraries that were refused.
#[derive(Debug, Default)]
pub struct Registry {
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    pub refused: Vec<LoadError>,
}

impl Registry {
    /// Loads every shared library in `dir` (not recursive), in name order.
    pub fn load_dir(dir: &Path) -> Result<Registry, Problem> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Problem::new(
                dir.display().to_string(),
                format!("cannot read plugin_dir: {e}"),
            )
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_library(p))
            .collect();
        paths.sort();
        let mut registry = Registry::default();
        let mut kept = Vec::new();
        for path in &paths {
            registry.add(library::load_keeping(path, &mut kept));
        }
        for removed in library::prune_copies(&kept) {
            tracing::info!(path = %removed.display(), "removed a plugin copy no library in plugin_dir has");
        }
        Ok(registry)
    }

    /// Adds a load result: a plugin, or a refusal to report.
    pub fn add(&mut self, result: Result<Arc<Plugin>, LoadError>) {
        match result {
            Ok(plugin) => {
                if let Some(other) = self.plugins.get(&plugin.name) {
                    self.refused.push(LoadError::Duplicate {
                        path: plugin.path.clone(),
                        name: plugin.name.clone(),
                        other: other.path.clone(),
                    });
                } else {
                    tracing::info!(
                        plugin = %plugin.name,
                        version = %plugin.version,
                        role = %plugin.role,
                        abi = %plugin.abi(),
                        table_size = plugin.table_size,
                        path = %plugin.path.display(),
                        "plugin loaded"
                    );
                    self.plugins.insert(plugin.name.clone(), plugin);
                }
            }
            Err(e) => self.refused.push(e),
        }
    }

    fn find(&self, name: &str, role: Role) -> Result<Arc<Plugin>, String> {
        match self.plugins.get(name) {
            Some(p) if p.role == role => Ok(p.clone()),
            Some(p) => Err(format!(
                "plugin {name:?} is an {} plugin, not an {role} plugin",
                p.role
            )),
            None => {
                let known: Vec<&str> = self
                    .plugins
                    .values()
                    .filter(|p| p.role == role)
                    .map(|p| p.name.as_str())
                    .collect();
                let mut message = format!(
                    "no {role} plugin named {name:?} in plugin_dir (loaded {role}s: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
                // The library may be there but refused: say so here, since
                // this error stops the daemon before warnings are printed.
                for refused in &self.refused {
                    message.push_str(&format!("; refused: {refused}"));
                }
                Err(message)
            }
        }
    }
}

/// A `[sources.NAME]` or `[actions.NAME]` table as the host sees it: which
/// plugin to make an instance of, with what settings.
#[derive(Debug, Clone, Copy)]
pub struct PluginUse<'a> {
    pub name: &'a str,
    pub plugin: &'a str,
    pub settings: &'a serde_json::Value,
    /// Where the table is (`file:line`), for messages.
    pub location: &'a str,
}

/// The plugin instances of the configured sources and actions. What
/// ingress keeps beside a source's instance (allowed senders, redaction)
/// and what dispatch keeps beside an action's (limits, gate) are theirs.
pub struct Topology {
    pub sources: BTreeMap<String, Arc<Instance>>,
    pub actions: BTreeMap<String, Arc<Instance>>,
}

/// Makes an instance for every source and action; reports every problem.
/// Plugins' `create` runs here, synchronously (call it off the runtime).
pub fn build<'a>(
    sources: impl IntoIterator<Item = PluginUse<'a>>,
    actions: impl IntoIterator<Item = PluginUse<'a>>,
    registry: &Registry,
) -> Result<Topology, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut make = |uses: &mut dyn Iterator<Item = PluginUse<'a>>, role: Role| {
        let mut made = BTreeMap::new();
        for u in uses {
            match instantiate(registry, u.plugin, role, u.name, u.settings) {
                Ok(instance) => {
                    made.insert(u.name.to_string(), Arc::new(instance));
                }
                Err(e) => {
                    let kind = match role {
                        Role::Provider => "sources",
                        Role::Action => "actions",
                    };
                    problems.push(Problem::new(u.location, format!("{kind}.{}: {e}", u.name)));
                }
            }
        }
        made
    };
    let sources = make(&mut sources.into_iter(), Role::Provider);
    let actions = make(&mut actions.into_iter(), Role::Action);
    if problems.is_empty() {
        Ok(Topology { sources, actions })
    } else {
        Err(problems)
    }
}

/// Finds a plugin of a role and creates an instance of it named `name`.
pub fn instantiate(
    registry: &Registry,
    plugin: &str,
    role: Role,
    name: &str,
    settings: &serde_json::Value,
) -> Result<Instance, String> {
    let plugin = registry.find(plugin, role)?;
    let label = match role {
        Role::Provider => format!("source {name}"),
        Role::Action => format!("action {name}"),
    };
    Instance::create(plugin, &label, settings).map_err(|e| e.to_string())
}

/// The bounded blocking pool plugin calls run on.
#[derive(Clone)]
pub struct CallPool {
    permits: Arc<Semaphore>,
}

impl CallPool {
    pub fn new(max_concurrent: usize) -> CallPool {
        CallPool {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// A permit now, if one is free.
    pub fn try_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A permit once one is free.
    pub async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Runs `f` on a blocking thread within `deadline` (waiting for a free
    /// permit counts). A call that overruns is abandoned, not killed: it keeps
    /// its permit until it returns, so stuck plugins use up the pool rather
    /// than an unbounded number of threads.
    pub async fn call<T, F>(&self, deadline: Duration, f: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let start = Instant::now();
        let permit = tokio::time::timeout(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PluginError::Busy(deadline))?
            .map_err(|_| PluginError::Busy(deadline))?;
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        });
        match tokio::time::timeout(deadline.saturating_sub(start.elapsed()), handle).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(join)) => Err(PluginError::Panicked(join.to_string())),
            Err(_) => Err(PluginError::Timeout(deadline)),
        }
    }
}
