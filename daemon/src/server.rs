//! The standalone HTTP server `switchyard run` uses: the webhook filter at
//! the root, `/healthz`, `/readyz` and `/metrics`, a JSON 404 for anything else, SIGHUP to reload the rules,
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;

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
    let routes = app.filter().or(app.service_filter()).or(fallback);
    let hangups = tokio::spawn(reload_on_sighup(app.clone()));
    tracing::info!(%addr, "listening for webhooks on http://{addr}/hooks/<source>");
    on_bound(addr);
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    tracing::info!("stopped accepting webhooks; finishing routed work");
    hangups.abort();
    let _ = hangups.await;
    app.shutdown().await;
    Ok(())
}

/// SIGHUP reloads the rules.
async fn reload_on_sighup(app: std::sync::Arc<Switchyard>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading rules");
        app.reload_rules("SIGHUP").await;
    }
}
