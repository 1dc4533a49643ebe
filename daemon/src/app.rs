//! Assembling the stages into a running router.
//!
//! Owns: [`Switchyard`], the value an embedding program (or `switchyard run`)
//! holds: it loads plugins, builds sources and actions, compiles rules,
//! starts the background router, and hands out the warp filter to mount.
//! Also [`check`], which does all of that without serving.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use warp::reply::Response;
use warp::Filter;

use crate::config::{self, Config, Problem, Problems};
use crate::dispatch::Dispatcher;
use crate::host::{self, CallPool, Registry, Topology};
use crate::ingress::{self, Ingress};
use crate::router;
use crate::rules::{self, Limits, RuleSet, Rules};

/// A running Switchyard: everything behind the webhook filter.
pub struct Switchyard {
    config: Config,
    ingress: Arc<Ingress>,
    rules: Arc<Rules>,
    router: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// Everything `check` and `start` build before anything runs.
pub struct Built {
    pub registry: Registry,
    pub topology: Topology,
    pub rules: Rules,
    /// Things worth saying that do not stop the daemon.
    pub warnings: Vec<Problem>,
}

/// Loads plugins, builds the sources and actions and compiles the rules,
/// collecting every problem. Blocking (plugins' `create` runs here).
pub fn build(config: &Config) -> Result<Built, Problems> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let registry = match Registry::load_dir(&config.plugin_dir) {
        Ok(r) => r,
        Err(p) => return Err(Problems(vec![p])),
    };
    for refused in &registry.refused {
        warnings.push(Problem::new(
            "plugin_dir",
            format!("plugin refused: {refused}"),
        ));
    }
    let topology = match host::build(config, &registry) {
        Ok(t) => Some(t),
        Err(p) => {
            problems.extend(p);
            None
        }
    };
    let limits = Limits {
        timeout: config.rule_timeout,
        ..Limits::default()
    };
    let engine = rules::engine(&limits);
    let set = match RuleSet::load_dir(&engine, &config.rules_dir) {
        Ok(set) => Some(set),
        Err(p) => {
            problems.extend(p);
            None
        }
    };
    match (topology, set) {
        (Some(topology), Some(set)) if problems.is_empty() => {
            if set.rules().is_empty() {
                warnings.push(Problem::new(
                    config.rules_dir.display().to_string(),
                    "no *.rhai rules: events will be accepted but nothing will happen",
                ));
            }
            Ok(Built {
                registry,
                topology,
                rules: Rules {
                    engine,
                    limits,
                    set: Arc::new(set),
                },
                warnings,
            })
        }
        _ => Err(Problems(problems)),
    }
}

/// What `switchyard check` reports.
pub struct CheckReport {
    pub summary: Vec<String>,
    pub warnings: Vec<Problem>,
}

/// Validates a config file, loads its plugins and compiles its rules.
pub fn check(path: &Path) -> Result<CheckReport, Problems> {
    let partial = config::load_partial(path)?;
    let mut warnings = partial.warnings;
    let built = match build(&partial.config) {
        Ok(built) if partial.problems.is_empty() => built,
        Ok(_) => return Err(Problems(partial.problems)),
        Err(more) => {
            let mut all = partial.problems;
            all.extend(more.0);
            return Err(Problems(all));
        }
    };
    warnings.extend(built.warnings);
    let mut summary = Vec::new();
    for p in built.registry.plugins.values() {
        summary.push(format!(
            "plugin {} {} ({}) from {}",
            p.name,
            p.version,
            p.role,
            p.path.display()
        ));
    }
    for (name, s) in &built.topology.sources {
        summary.push(format!(
            "source {name}: POST /hooks/{name} via {}",
            s.provider()
        ));
    }
    for (name, a) in &built.topology.actions {
        summary.push(format!("action {name}: {}", a.instance.plugin().name));
    }
    for rule in built.rules.set.rules() {
        summary.push(format!(
            "rule {}: wants {}",
            rule.name,
            rule.patterns.join(", ")
        ));
    }
    Ok(CheckReport { summary, warnings })
}

impl Switchyard {
    /// Builds everything from a config and starts the background router on
    /// the current tokio runtime.
    pub async fn start(config: Config) -> Result<Switchyard, Problems> {
        let cfg = config.clone();
        let built = tokio::task::spawn_blocking(move || build(&cfg))
            .await
            .map_err(|e| Problems(vec![Problem::new("startup", e.to_string())]))??;
        for w in &built.warnings {
            tracing::warn!("{w}");
        }
        if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
            return Err(Problems(vec![Problem::new(
                config.data_dir.display().to_string(),
                format!("cannot create data_dir: {e}"),
            )]));
        }
        let pool = CallPool::new(config.plugin_concurrency);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let rules = Arc::new(built.rules);
        let dispatcher =
            Dispatcher::new(built.topology.actions, pool.clone(), config.queue_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let router = router::spawn(rules.clone(), dispatcher, rx, stop_rx);
        let ingress = Arc::new(Ingress {
            sources: built.topology.sources,
            pool,
            plugin_timeout: config.plugin_timeout,
            max_body_bytes: config.max_body_bytes,
            queue: tx,
        });
        tracing::info!(
            sources = ingress.sources.len(),
            rules = rules.set.rules().len(),
            "switchyard ready"
        );
        Ok(Switchyard {
            config,
            ingress,
            rules,
            router,
            stop,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// The webhook filter (`hooks/{source}`), to mount under any path.
    pub fn filter(&self) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
        ingress::filter(self.ingress.clone())
    }

    /// Stops accepting webhooks (the filter answers 503 from now on), routes
    /// what was already accepted and waits for the jobs that started.
    /// Best called after the HTTP server has stopped taking requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.router.await {
            tracing::error!("router ended badly: {e}");
        }
    }
}
