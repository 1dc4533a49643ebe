//! The standalone HTTP server `switchyard run` uses: the webhook filter at
//! the root, `/healthz`, `/readyz` and `/metrics`, a JSON 404 for anything else, SIGHUP to reload the rules,
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;

use sd_notify::NotifyState;
use warp::http::StatusCode;
use warp::Filter;

use crate::app::Switchyard;
use crate::config::{Config, Problem, Problems};

/// Binds `config.listen`, serves until `shutdown` completes, then drains.
/// `on_bound` learns the bound address (useful with port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), Problems> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            Problems(vec![Problem::new(
                "listen",
                format!("cannot listen on {}: {e}", config.listen),
            )])
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let app = Switchyard::start(config).await?;
    let fallback = warp::any().map(|| {
        warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"error": "not found"})),
            StatusCode::NOT_FOUND,
        )
    });
    let app = std::sync::Arc::new(app);
    app.watch_plugins();
    let routes = app.filter().or(app.service_filter()).or(fallback);
    // Listen for SIGHUP before saying we are up: its default would kill us.
    let hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| {
            Problems(vec![Problem::new(
                "signals",
                format!("cannot listen for SIGHUP: {e}"),
            )])
        })?;
    let hangups = tokio::spawn(reload_on_sighup(app.clone(), hup));
    let admin = match app.config().admin.clone() {
        Some(admin) => {
            let listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .map_err(|e| {
                    Problems(vec![Problem::new(
                        "admin.listen",
                        format!("cannot listen on {}: {e}", admin.listen),
                    )])
                })?;
            let admin_addr = listener.local_addr().unwrap_or(admin.listen);
            tracing::info!(admin_addr = %admin_addr, "admin API on http://{admin_addr}/v1/");
            let routes = crate::admin::filter(app.clone(), admin.token);
            Some(tokio::spawn(warp::serve(routes).incoming(listener).run()))
        }
        None => None,
    };
    let watchdog = tokio::spawn(watchdog(app.clone()));
    tracing::info!(%addr, "listening for webhooks on http://{addr}/hooks/<source>");
    on_bound(addr);
    let status = format!(
        "accepting webhooks on {addr}; {} rules",
        app.rules().current().rules().len()
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    tracing::info!("stopped accepting webhooks; finishing routed work");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing routed work"),
    ]);
    hangups.abort();
    watchdog.abort();
    if let Some(admin) = admin {
        admin.abort();
        let _ = admin.await;
    }
    let _ = hangups.await;
    let _ = watchdog.await;
    app.shutdown().await;
    Ok(())
}

/// SIGHUP reloads the configuration, the plugins and the rules.
async fn reload_on_sighup(app: std::sync::Arc<Switchyard>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration, plugins and rules");
        let now = NotifyState::monotonic_usec_now().ok();
        let mut states = vec![NotifyState::Reloading];
        states.extend(now);
        notify(&states);
        let status = match app.reload("SIGHUP").await {
            Ok(()) => "reloaded".to_string(),
            Err(p) => format!(
                "reload refused, still running the previous configuration: {}",
                p.0.len()
            ),
        };
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }
}

/// Tells systemd (when it started us with Type=notify) how things are.
fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// With `WatchdogSec=`, pings systemd at half the period — but only while
/// the daemon can really take webhooks (the store takes a write): a wedged
/// daemon stops pinging and systemd restarts it.
async fn watchdog(app: std::sync::Arc<Switchyard>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(std::time::Duration::from_millis(50));
    loop {
        match app.ready().await {
            Ok(()) => notify(&[NotifyState::Watchdog]),
            Err(why) => tracing::error!("not pinging the watchdog: {why}"),
        }
        tokio::time::sleep(every).await;
    }
}
