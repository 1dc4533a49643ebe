//! Building the parts before anything runs: loading the plugins, making
//! the sources and actions, compiling the rules, opening the store; and
//! [`check`], which builds everything and reports every problem without
//! serving.

use std::path::Path;
use std::sync::Arc;

use super::config::{self, Config};
use crate::config::{Problem, Problems};
use crate::host::{self, PluginUse, Registry, Topology};
use crate::rules::{self, Limits, RuleSet, Rules};
use crate::store::{PgOptions, PgStore, SqliteStore, Store, StoreError, StoreOptions};

/// Everything `check` and `start` build before anything runs.
pub struct Built {
    pub registry: Registry,
    pub topology: Topology,
    pub rules: Rules,
    /// Each source's event types.
    pub catalog: crate::catalog::Catalog,
    /// Things worth saying that do not stop the daemon.
    pub warnings: Vec<Problem>,
}

/// Loads the plugins in `plugin_dir`; a library refused is a warning.
fn load_plugins(config: &Config) -> Result<(Registry, Vec<Problem>), Problems> {
    let registry = Registry::load_dir(&config.plugin_dir).map_err(|p| Problems(vec![p]))?;
    let warnings = registry
        .refused
        .iter()
        .map(|r| Problem::new("plugin_dir", format!("plugin refused: {r}")))
        .collect();
    Ok((registry, warnings))
}

/// The plugin instances of the config's sources and actions.
fn instances(config: &Config, registry: &Registry) -> Result<Topology, Vec<Problem>> {
    host::build(
        config.sources.values().map(|s| PluginUse {
            name: &s.name,
            plugin: &s.plugin,
            settings: &s.settings,
            location: &s.location,
        }),
        config.actions.values().map(|a| PluginUse {
            name: &a.name,
            plugin: &a.plugin,
            settings: &a.settings,
            location: &a.location,
        }),
        registry,
    )
}

/// Loads the plugins and builds the sources and actions (no rules): what a
/// reload makes anew. Also returns warnings. Blocking.
pub fn build_topology(config: &Config) -> Result<(Registry, Topology, Vec<Problem>), Problems> {
    let (registry, warnings) = load_plugins(config)?;
    let topology = instances(config, &registry).map_err(Problems)?;
    Ok((registry, topology, warnings))
}

/// The catalog of a config's sources, made from its plugins (what the CLI
/// shows when no daemon runs).
pub fn catalog_for(config: &Config) -> Result<crate::catalog::Catalog, Problems> {
    let (_, topology, _) = build_topology(config)?;
    super::catalog::catalog_of(config, &topology, None).map_err(Problems)
}

/// Sources with `watch` whose provider plugin manages no subscriptions
/// (no API, or none declared): the watcher would have nothing to check.
fn unwatchable(config: &Config, topology: &Topology) -> Vec<Problem> {
    use switchyard_plugin_api::{SubscriptionCall, SubscriptionError};
    let Some(public_url) = config.public_url.as_deref() else {
        return Vec::new();
    };
    config
        .sources
        .iter()
        .filter(|(_, sc)| sc.watch.is_some())
        .filter_map(|(name, sc)| {
            let call = SubscriptionCall::Desired {
                target_url: crate::subscriptions::target_url(public_url, name),
            };
            let instance = topology.sources.get(name)?;
            match instance.subscriptions(&call, sc.api_timeout) {
                Err(SubscriptionError::Unsupported(why)) => Some(Problem::new(
                    &sc.location,
                    format!("sources.{name}.watch has nothing to watch: {why}"),
                )),
                _ => None,
            }
        })
        .collect()
}

/// Loads plugins, builds the sources and actions and compiles the rules,
/// collecting every problem. Blocking (plugins' `create` runs here).
pub fn build(config: &Config) -> Result<Built, Problems> {
    let mut problems = Vec::new();
    let (registry, mut warnings) = load_plugins(config)?;
    let topology = match instances(config, &registry) {
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
    let catalog = match &topology {
        Some(t) => match super::catalog::catalog_of(config, t, None) {
            Ok(c) => Some(c),
            Err(p) => {
                problems.extend(p);
                None
            }
        },
        None => None,
    };
    match (topology, set, catalog) {
        (Some(topology), Some(set), Some(catalog)) if problems.is_empty() => {
            warnings.extend(unwatchable(config, &topology));
            if set.rules().is_empty() {
                warnings.push(Problem::new(
                    config.rules_dir.display().to_string(),
                    "no *.rhai rules: events will be accepted but nothing will happen",
                ));
            }
            Ok(Built {
                registry,
                topology,
                rules: Rules::new(engine, limits, config.rules_dir.clone(), set),
                catalog,
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
    // Reads of event fields the rule's types cannot have.
    for rule in built.rules.current().rules() {
        warnings.extend(crate::rules::reads::check(rule, &built.catalog));
    }
    let unknown = unknown_actions(&built.rules, &partial.config);
    if !unknown.is_empty() {
        return Err(Problems(unknown));
    }
    let mut summary = Vec::new();
    for p in built.registry.plugins.values() {
        summary.push(format!(
            "plugin {} {} ({}, ABI {}) from {}",
            p.name,
            p.version,
            p.role,
            p.abi(),
            p.path.display()
        ));
    }
    for (name, instance) in &built.topology.sources {
        summary.push(format!(
            "source {name}: POST /hooks/{name} via {}",
            instance.plugin().name
        ));
    }
    for (name, instance) in &built.topology.actions {
        summary.push(format!("action {name}: {}", instance.plugin().name));
    }
    for rule in built.rules.current().rules() {
        summary.push(format!(
            "rule {}: wants {}",
            rule.name,
            rule.patterns.join(", ")
        ));
    }
    summary.push(check_store(&partial.config)?);
    summary.push(check_telemetry(&partial.config.telemetry));
    Ok(CheckReport { summary, warnings })
}

/// The traces' line of `switchyard check`: where they go (the config's or
/// the environment's collector) and how many, or off.
fn check_telemetry(t: &crate::telemetry::TelemetryConfig) -> String {
    let env = |k: &str| std::env::var(k).ok();
    match t.traces_url(env) {
        None => "telemetry: off (no OTLP collector named)".into(),
        Some(url) => format!(
            "telemetry: traces to {url} as {}, {}% of webhooks",
            t.service(env),
            t.ratio(env) * 100.0
        ),
    }
}

/// The store's line of `switchyard check`: the embedded store's file, or
/// whether the shared store answers and at which schema.
fn check_store(config: &Config) -> Result<String, Problems> {
    let Some(url) = &config.store.url else {
        return Ok(format!(
            "store: embedded at {}",
            config.store.path.display()
        ));
    };
    let problem = |e: String| Problems(vec![Problem::new(config.store.place(), e)]);
    let options = pg_options(config, url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| problem(format!("cannot start a runtime to reach the database: {e}")))?;
    let said = runtime
        .block_on(crate::store::postgres::probe(&options))
        .map_err(|e| problem(e.to_string()))?;
    Ok(format!(
        "store: PostgreSQL at {}: {said}",
        config.store.place()
    ))
}

/// Calls to actions the config does not define, where a rule names the
/// action literally (`action("notify-owner", …)`): each a problem at its rule.
pub fn unknown_actions(rules: &Rules, config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for rule in rules.current().rules() {
        for name in rule.literal_actions() {
            if !config.actions.contains_key(&name) {
                problems.push(Problem::new(
                    rule.path.display().to_string(),
                    format!(
                        "calls action {name:?}, which the config does not define (actions: {})",
                        config
                            .actions
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    problems
}

/// How the config reaches a shared store (its password resolved).
fn pg_options(config: &Config, url: &str) -> PgOptions {
    let mut options = PgOptions::new(url);
    options.connections = config.store.connections;
    options.ca_file = config.store.ca_file.clone();
    options.password = config
        .store
        .password
        .as_ref()
        .and_then(|p| p.value())
        .map(str::to_string);
    options
}

/// Opens the store a config names: PostgreSQL with `[store] url`, joining
/// the instances there when `join` (a daemon; the CLI only reads and asks),
/// else the embedded store.
pub async fn open_store(config: &Config, join: bool) -> Result<Arc<dyn Store>, Problems> {
    let problem = |e: StoreError| Problems(vec![Problem::new(config.store.place(), e.to_string())]);
    if let Some(url) = &config.store.url {
        let mut options = pg_options(config, url);
        options.join = join;
        options.listen = !config.store.poll_only;
        let store = PgStore::connect(options).await.map_err(problem)?;
        return Ok(Arc::new(store));
    }
    SqliteStore::open(
        &config.store.path,
        StoreOptions {
            durability: config.store.durability,
            max_size_bytes: config.store.max_size_bytes(),
            ..StoreOptions::default()
        },
    )
    .map(|s| Arc::new(s) as Arc<dyn Store>)
    .map_err(problem)
}
