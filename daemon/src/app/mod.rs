//! Assembling the stages into a running router.
//!
//! Owns: [`Switchyard`], the value an embedding program (or `switchyard run`)
//! holds: it loads plugins, builds sources and actions, compiles rules,
//! opens the store, starts the background tasks (router, dispatcher,
//! pruner), and hands out the warp filter to mount.
//! Also [`check`], which does all of that without serving (`build.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warp::reply::Response;
use warp::Filter;

mod build;
mod catalog;
pub mod config;
pub mod notices;
mod prune;

pub use build::{
    build, build_topology, catalog_for, check, open_store, unknown_actions, Built, CheckReport,
};
pub use config::Config;

use crate::config::{Problem, Problems};
use crate::dispatch::{Dispatcher, RetryPolicy};
use crate::host::CallPool;
use crate::ingress::{self, Ingress};
use crate::router::{ActionTable, Router};
use crate::rules::Rules;
use crate::store::{BacklogGauge, Store};

/// A running Switchyard: everything behind the webhook filter.
pub struct Switchyard {
    /// The configuration now live; a reload swaps it.
    config: Arc<ArcSwap<Config>>,
    ingress: Arc<Ingress>,
    rules: Arc<Rules>,
    /// Reloads the rules when their folder changes, until dropped.
    _watcher: Option<crate::rules::watch::RulesWatcher>,
    metrics: Arc<crate::metrics::Metrics>,
    store: Arc<dyn Store>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// Wakes the dispatcher (after a redrive or an enable).
    dispatch_wake: Arc<tokio::sync::Notify>,
    /// For swapping the actions on a reload.
    dispatcher: Dispatcher,
    /// The router's view of the actions, swapped on a reload.
    router_actions: Arc<ArcSwap<ActionTable>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads when a plugin library is added or replaced, once started.
    plugin_watcher: std::sync::Mutex<Option<crate::rules::watch::RulesWatcher>>,
    /// The last check of each source's subscriptions at its provider.
    subscription_checks: Arc<crate::subscriptions::watch::Checks>,
    /// Each source's event types, swapped on a reload.
    catalog: Arc<ArcSwap<crate::catalog::Catalog>>,
}

/// The store's commit times into the metrics, when it tells them.
fn observe_commits(store: &Arc<dyn Store>, metrics: &Arc<crate::metrics::Metrics>) {
    if let Some(timing) = store.commit_timing() {
        let metrics = metrics.clone();
        timing.observe_commits(Box::new(move |took| {
            metrics.store_commit_seconds.observe(took.as_secs_f64())
        }));
    }
}

/// Work another process left (its jobs, a replay) wakes the stage that
/// takes it, when the store can tell.
fn wake_on_others_work(store: &Arc<dyn Store>, dispatcher: &Dispatcher, router: &Router) {
    if let Some(shared) = store.shared() {
        let (jobs, events) = (dispatcher.wake.clone(), router.wake.clone());
        shared.on_work(Arc::new(move |work| match work {
            crate::store::Work::Jobs => jobs.notify_one(),
            crate::store::Work::Events => events.notify_one(),
        }));
    }
}

/// The configured actions as the router takes them.
fn action_table(config: &Config) -> ActionTable {
    config
        .actions
        .iter()
        .map(|(name, a)| (name.clone(), a.order_by.clone()))
        .collect()
}

/// The settings a reload cannot change while running that `new` changes.
fn restart_only(current: &Config, new: &Config) -> Vec<&'static str> {
    let admin_listen = |c: &Config| c.admin.as_ref().map(|a| a.listen);
    [
        ("listen", current.listen != new.listen),
        ("data_dir", current.data_dir != new.data_dir),
        ("rules_dir", current.rules_dir != new.rules_dir),
        (
            "store",
            current.store.path != new.store.path
                || current.store.url != new.store.url
                || current.store.password != new.store.password,
        ),
        ("admin", admin_listen(current) != admin_listen(new)),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect()
}

/// The sources whose provider's subscriptions are watched, as configured now.
fn watched(
    config: &Config,
    live: &std::collections::BTreeMap<String, Arc<ingress::Source>>,
) -> Vec<crate::subscriptions::watch::Watched> {
    let Some(public_url) = config.public_url.as_deref() else {
        return Vec::new();
    };
    config
        .sources
        .iter()
        .filter_map(|(name, sc)| {
            Some(crate::subscriptions::watch::Watched {
                source: name.clone(),
                instance: live.get(name)?.instance.clone(),
                every: sc.watch?,
                reenable: sc.reenable,
                target_url: crate::subscriptions::target_url(public_url, name),
                timeout: sc.api_timeout,
                credentials: sc.credentials.clone(),
            })
        })
        .collect()
}

impl Switchyard {
    /// Builds everything from a config, opens the store, and starts the
    /// background tasks (router, dispatcher, pruner) on the current runtime.
    pub async fn start(config: Config) -> Result<Switchyard, Problems> {
        // Libraries load from copies, so a plugin replaced later loads anew.
        crate::host::load_copies_into(config.data_dir.join(".plugins"));
        let cfg = config.clone();
        let built = tokio::task::spawn_blocking(move || build(&cfg))
            .await
            .map_err(|e| Problems(vec![Problem::new("startup", e.to_string())]))??;
        for w in &built.warnings {
            tracing::warn!("{w}");
        }
        for p in unknown_actions(&built.rules, &config) {
            tracing::warn!("{p}; such calls are logged and dropped");
        }
        if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
            return Err(Problems(vec![Problem::new(
                config.data_dir.display().to_string(),
                format!("cannot create data_dir: {e}"),
            )]));
        }
        let store: Arc<dyn Store> = open_store(&config, true).await?;
        Self::start_with(config, built, store).await
    }

    /// As [`start`](Self::start), with a store of the caller's.
    pub async fn start_with(
        config: Config,
        built: Built,
        store: Arc<dyn Store>,
    ) -> Result<Switchyard, Problems> {
        match crate::telemetry::start(&config.telemetry) {
            Ok(_) => {}
            Err(e) => tracing::error!("traces are not sent: {e}"),
        }
        let pool = CallPool::new(config.plugin_concurrency);
        let rules = Arc::new(built.rules);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        observe_commits(&store, &metrics);
        let (stop, stop_rx) = watch::channel(false);
        let gauge = Arc::new(BacklogGauge::default());
        if let Ok(b) = store.backlog().await {
            gauge.set(b);
        }
        let (inbox_tx, inbox) = tokio::sync::mpsc::channel(crate::router::INBOX);
        let overflowed = Arc::new(AtomicBool::new(false));
        // Switchyard's own events, routed like a provider's.
        let notices = notices::Notices::new(
            store.clone(),
            inbox_tx.clone(),
            overflowed.clone(),
            gauge.clone(),
            config.store.dedup_window.as_millis() as i64,
        );
        rules.set_announce(notices.announcer());
        let dispatcher = Dispatcher::new(
            crate::dispatch::actions(&config.actions, built.topology.actions),
            pool.clone(),
            store.clone(),
            RetryPolicy {
                schedule: config.delivery.retry_schedule.clone(),
                jitter: config.delivery.jitter,
            },
            config.delivery.concurrency,
            metrics.clone(),
        )
        .with_announce(notices.announcer());
        let router_actions = Arc::new(ArcSwap::from_pointee(action_table(&config)));
        let (catalog, recorder) = catalog::start(
            built.catalog,
            store.clone(),
            &config,
            notices.announcer(),
            stop_rx.clone(),
        )
        .await;
        let router = Router {
            rules: rules.clone(),
            store: store.clone(),
            inbox,
            overflowed: overflowed.clone(),
            dispatch: dispatcher.wake.clone(),
            handoff: dispatcher.handoff(),
            gauge: gauge.clone(),
            actions: router_actions.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
            metrics: metrics.clone(),
            catalog: catalog.catalog.clone(),
            counter: catalog.counter,
        };
        wake_on_others_work(&store, &dispatcher, &router);
        let mut tasks = vec![
            router.spawn(stop_rx.clone()),
            dispatcher.clone().spawn(stop_rx.clone()),
            prune::spawn_pruner(store.clone(), config.store.retention, stop_rx),
            recorder,
        ];
        let sources = crate::ingress::sources(&config.sources, built.topology.sources, &pool);
        let links = crate::ingress::Links {
            pool,
            store: store.clone(),
            router: inbox_tx,
            router_overflowed: overflowed,
            gauge,
            metrics: metrics.clone(),
        };
        let ingress = Arc::new(Ingress::new(config.ingress_limits(), sources, links));
        tracing::info!(
            sources = ingress.sources().len(),
            rules = rules.current().rules().len(),
            store = %config.store.place(),
            "switchyard ready"
        );
        let config = Arc::new(ArcSwap::from_pointee(config));
        let subscription_checks = Arc::new(crate::subscriptions::watch::Checks::default());
        {
            let (config, live, pool) = (config.clone(), ingress.clone(), ingress.pool.clone());
            tasks.push(crate::subscriptions::watch::spawn(
                Arc::new(move || watched(&config.load(), &live.sources())),
                pool,
                notices.announcer(),
                metrics.clone(),
                subscription_checks.clone(),
                stop.subscribe(),
            ));
        }
        let watcher = match crate::rules::watch::watch(rules.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!("{e}; rules change only on SIGHUP");
                None
            }
        };
        Ok(Switchyard {
            config,
            ingress,
            rules,
            store,
            tasks: std::sync::Mutex::new(tasks),
            stop,
            _watcher: watcher,
            metrics,
            dispatch_wake: dispatcher.wake.clone(),
            dispatcher,
            router_actions,
            reloading: tokio::sync::Mutex::new(()),
            plugin_watcher: std::sync::Mutex::new(None),
            subscription_checks,
            catalog: catalog.catalog,
        })
    }

    /// Watches plugin_dir: a library added or replaced there triggers a
    /// reload, so the sources and actions that name it go live with it.
    pub fn watch_plugins(self: &Arc<Self>) {
        let dir = self.config().plugin_dir.clone();
        let app = Arc::downgrade(self);
        let runtime = tokio::runtime::Handle::current();
        let watcher = crate::rules::watch::watch_folder(&dir, crate::host::is_library, move || {
            if let Some(app) = app.upgrade() {
                let _ = runtime.block_on(app.reload("a plugin library changed"));
            }
        });
        match watcher {
            Ok(w) => {
                *self
                    .plugin_watcher
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(w)
            }
            Err(e) => tracing::error!("{e}; plugins change only on reload"),
        }
    }

    /// The configuration now live.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Reloads the config file, the plugins and the rules (see
    /// [`reload_with`](Self::reload_with)). A config that does not load
    /// leaves everything running as it was and says why. An instance
    /// started without a config file reloads its rules.
    pub async fn reload(&self, why: &str) -> Result<(), Problems> {
        let Some(path) = self.config().path.clone() else {
            let _one = self.reloading.lock().await;
            self.reload_rules_now(why).await;
            return Ok(());
        };
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| Problems(vec![Problem::new("reload", e.to_string())]))?;
        match loaded {
            Ok((config, warnings)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                self.reload_with(config, why).await
            }
            Err(problems) => Err(self.refused(why, problems)),
        }
    }

    /// Makes `config` live with the plugins it names and the rules, together:
    /// sources and actions added, changed or removed take effect; requests
    /// and attempts in flight finish on what they started with. A plugin
    /// that does not load leaves everything running as it was and says why.
    /// Settings that need a new listener or store (`listen`, `data_dir`,
    /// `[store]`, `[admin]`) take effect at the next start.
    pub async fn reload_with(&self, config: Config, why: &str) -> Result<(), Problems> {
        let _one = self.reloading.lock().await;
        let (config, built) = tokio::task::spawn_blocking(move || {
            let built = build_topology(&config);
            (config, built)
        })
        .await
        .map_err(|e| Problems(vec![Problem::new("reload", e.to_string())]))?;
        let (registry, topology, warnings) = built.map_err(|p| self.refused(why, p))?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        for refused in &registry.refused {
            tracing::warn!("plugin refused: {refused}");
        }
        for what in restart_only(&self.config(), &config) {
            tracing::warn!("{what} changed: it takes effect at the next start");
        }
        let before = self.catalog.load();
        let types = catalog::catalog_of(&config, &topology, Some(&before))
            .map_err(|p| self.refused(why, Problems(p)))?;
        self.catalog.store(Arc::new(types));
        let (sources, actions) = (topology.sources.len(), topology.actions.len());
        self.ingress.set_sources(crate::ingress::sources(
            &config.sources,
            topology.sources,
            &self.ingress.pool,
        ));
        self.dispatcher
            .set_actions(crate::dispatch::actions(&config.actions, topology.actions));
        self.router_actions.store(Arc::new(action_table(&config)));
        self.config.store(Arc::new(config));
        tracing::info!(
            sources,
            actions,
            "configuration and plugins reloaded ({why})"
        );
        self.reload_rules_now(why).await;
        self.dispatcher.wake.notify_one();
        self.count_reload("done");
        Ok(())
    }

    /// A refused reload, logged and counted.
    fn refused(&self, why: &str, problems: Problems) -> Problems {
        for p in &problems.0 {
            tracing::error!("reload refused ({why}); the running configuration stays: {p}");
        }
        self.count_reload("refused");
        problems
    }

    fn count_reload(&self, outcome: &str) {
        let label = crate::metrics::OutcomeLabel {
            outcome: outcome.to_string(),
        };
        self.metrics.config_reloads.get_or_create(&label).inc();
    }

    /// The last check of each source's subscriptions at its provider.
    pub fn subscription_checks(&self) -> &crate::subscriptions::watch::Checks {
        &self.subscription_checks
    }

    /// The pool plugin calls run on.
    pub fn call_pool(&self) -> &CallPool {
        &self.ingress.pool
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Each source's event types now.
    pub fn catalog(&self) -> Arc<crate::catalog::Catalog> {
        self.catalog.load_full()
    }

    /// Has the dispatcher look for due jobs now.
    pub fn wake_dispatcher(&self) {
        self.dispatch_wake.notify_one();
    }

    /// The sources now served.
    /// The most recent refused webhooks (in memory only).
    pub fn rejections(&self) -> Vec<crate::ingress::rejections::Rejection> {
        self.ingress.rejections.recent()
    }

    pub fn sources(&self) -> Arc<std::collections::BTreeMap<String, Arc<crate::ingress::Source>>> {
        self.ingress.sources()
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let set = self.rules.current();
        self.metrics.rules_version.set(set.version as i64);
        self.metrics.rules_broken.set(set.broken.len() as i64);
        // The rules count their reloads themselves: the counters catch up.
        let catch_up = |counter: &prometheus_client::metrics::counter::Counter,
                        total: &AtomicU64| {
            let total = total.load(Ordering::Relaxed);
            let counted = counter.get();
            if total > counted {
                counter.inc_by(total - counted);
            }
        };
        catch_up(
            &self.metrics.rules_reload_failures,
            &self.rules.failed_reloads,
        );
        catch_up(&self.metrics.rules_reloads, &self.rules.reloads);
        if let Some(t) = crate::telemetry::get() {
            let (exported, dropped) = t.counts();
            for (counter, total) in [
                (&self.metrics.trace_spans_exported, exported),
                (&self.metrics.trace_spans_dropped, dropped),
            ] {
                catch_up(counter, &AtomicU64::new(total));
            }
        }
        self.metrics.render()
    }

    /// Whether the daemon can take webhooks: not stopping, and the store
    /// takes writes. The reason when not.
    pub async fn ready(&self) -> Result<(), String> {
        if self.ingress.stopping.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err("store: no answer within 2 s".into()),
        }
    }

    /// `GET /healthz` (the process serves), `GET /readyz` (it can take
    /// webhooks: 503 otherwise) and `GET /metrics` (Prometheus text).
    pub fn service_filter(
        self: &Arc<Self>,
    ) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
        use warp::Reply as _;
        let health = warp::path("healthz")
            .and(warp::path::end())
            .and(warp::get())
            .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
        let app = self.clone();
        let ready = warp::path("readyz")
            .and(warp::path::end())
            .and(warp::get())
            .and_then(move || {
                let app = app.clone();
                async move {
                    let resp = match app.ready().await {
                        Ok(()) => warp::reply::json(&serde_json::json!({"status": "ready"}))
                            .into_response(),
                        Err(why) => warp::reply::with_status(
                            warp::reply::json(
                                &serde_json::json!({"status": "not ready", "reason": why}),
                            ),
                            warp::http::StatusCode::SERVICE_UNAVAILABLE,
                        )
                        .into_response(),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
        let app = self.clone();
        let metrics = warp::path("metrics")
            .and(warp::path::end())
            .and(warp::get())
            .then(move || {
                let app = app.clone();
                async move {
                    // The rate gauges, as of now.
                    app.live_rates().await;
                    warp::reply::with_header(
                        app.render_metrics(),
                        "content-type",
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .into_response()
                }
            });
        health.or(ready).unify().or(metrics).unify()
    }

    /// Compiles the rules folder again now (what a change to it, or SIGHUP,
    /// does), off the async threads.
    async fn reload_rules_now(&self, why: &str) {
        let why = why.to_string();
        let rules = self.rules.clone();
        let _ =
            tokio::task::spawn_blocking(move || crate::rules::watch::reload_and_log(&rules, &why))
                .await;
    }

    /// Every action's rate as it stands (lowered, budget left, time to
    /// drain), and the rate gauges set to it.
    pub async fn live_rates(
        &self,
    ) -> std::collections::BTreeMap<String, crate::dispatch::rate::LiveRate> {
        let live = self.dispatcher.live_rates().await;
        for (action, rate) in &live {
            let label = crate::metrics::ActionLabel {
                action: action.clone(),
            };
            let m = &self.metrics;
            m.action_rate
                .get_or_create(&label)
                .set(rate.per_s.unwrap_or(0.0));
            m.action_budget_left
                .get_or_create(&label)
                .set(rate.budget_left.map_or(-1, i64::from));
            m.action_drain_seconds
                .get_or_create(&label)
                .set(rate.drain_ms.unwrap_or(0) as f64 / 1e3);
        }
        live
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The webhook filter (`hooks/{source}`), to mount under any path.
    pub fn filter(&self) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
        ingress::filter(self.ingress.clone())
    }

    /// Stops accepting webhooks (the filter answers 503 from then on), lets
    /// the router finish its batch and the dispatcher its attempts in flight.
    /// What is left stays in the store and resumes at the next start.
    pub async fn shutdown(&self) {
        self.ingress.stopping.store(true, Ordering::Relaxed);
        self.plugin_watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!("a background task ended badly: {e}");
            }
        }
        if let Some(shared) = self.store.shared() {
            if let Err(e) = shared.leave().await {
                tracing::warn!("store: could not hand back this instance's work at once: {e}");
            }
        }
        // The last spans go to the collector (at most a few seconds).
        let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
    }
}
