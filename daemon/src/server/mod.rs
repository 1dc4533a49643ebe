//! The standalone daemon `switchyard run` is: the webhook listener (the
//! webhook filter at the root, `/healthz`, `/readyz` and `/metrics`, a JSON
//! 404 for anything else), the admin listener when configured, the local
//! admin socket, SIGHUP to reload the configuration, plugins and rules, the
//! systemd notifications and watchdog, graceful shutdown.
//!
//! The top of the tree: it puts together the running [`Switchyard`]
//! (`app`), the admin routes over it (`admin`) and the [`listener`]s that
//! serve them (socket activation, connection deadlines and bounds, the
//! open-file limit raised at start).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use sd_notify::NotifyState;
use warp::http::StatusCode;
use warp::{Filter, Reply as _};

use crate::app::{Config, Switchyard};
use crate::config::{Problem, Problems};
use crate::listener::{self, activation, bind, socket, HttpLimits};

/// Listens on the sockets systemd passed (socket activation), else binds
/// `config.listen` (and `[admin] listen`); serves until `shutdown`
/// completes, then drains. `on_bound` learns the address (useful with
/// port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), Problems> {
    listener::raise_open_file_limit();
    // Before anything opens the store: another daemon may own it.
    let socket_path = socket::path(&config.data_dir);
    let local = socket::claim(&socket_path)?;
    let inherited = activation::take()?;
    let activated = inherited.webhooks.is_some();
    let listener = match inherited.webhooks {
        Some(socket) => activation::adopt(socket, config.listen, "listen")?,
        None => bind(config.listen, "listen")?,
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let limits = config.http.clone();
    let app = match Switchyard::start(config).await {
        Ok(app) => std::sync::Arc::new(app),
        Err(p) => {
            socket::release(&socket_path);
            return Err(p);
        }
    };
    app.watch_plugins();
    // Listen for SIGHUP before saying we are up: its default would kill us.
    let hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| {
            Problems(vec![Problem::new(
                "signals",
                format!("cannot listen for SIGHUP: {e}"),
            )])
        })?;
    let background = [
        tokio::spawn(reload_on_sighup(app.clone(), hup)),
        tokio::spawn(watchdog(app.clone())),
    ];
    let admin = serve_admin(&app, inherited.admin, &limits)?;
    let local = local.map(|local| {
        tracing::info!(path = %socket_path.display(), "admin API on the local socket");
        let routes = crate::admin::local_filter(app.clone());
        let bound = listener::DEFAULT_ADMIN_MAX_CONNECTIONS;
        spawn_admin(&app, local, "admin_socket", routes, bound, &limits)
    });
    let from = if activated {
        "the socket systemd passed"
    } else {
        "its own socket"
    };
    tracing::info!(%addr, "listening for webhooks on http://{addr}/hooks/<source> ({from})");
    on_bound(addr);
    let status = format!(
        "accepting webhooks on {addr}; {} rules",
        app.rules().current().rules().len()
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let routes = webhook_routes(&app);
    listener::serve(
        listener,
        "webhooks",
        routes,
        limits,
        app.metrics(),
        shutdown,
    )
    .await;
    tracing::info!("stopped accepting webhooks; finishing routed work");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing routed work"),
    ]);
    for task in background.into_iter().chain(admin).chain(local) {
        task.abort();
        let _ = task.await;
    }
    socket::release(&socket_path);
    app.shutdown().await;
    Ok(())
}

/// The webhook listener's routes: the webhook filter at the root,
/// `/healthz`, `/readyz`, `/metrics`, and a JSON 404 for anything else.
fn webhook_routes(
    app: &std::sync::Arc<Switchyard>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    app.filter()
        .or(app.service_filter())
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"error": "not found"})),
                    StatusCode::NOT_FOUND,
                )
                .into_response(),
            )
        })
        .unify()
}

/// The `[admin]` listener, on the socket systemd passed for it or its
/// own, when the config has `[admin]`.
fn serve_admin(
    app: &std::sync::Arc<Switchyard>,
    passed: Option<std::net::TcpListener>,
    limits: &HttpLimits,
) -> Result<Option<tokio::task::JoinHandle<()>>, Problems> {
    let Some(admin) = app.config().admin.clone() else {
        if passed.is_some() {
            tracing::warn!(
                "systemd passed an admin socket but the config has no [admin]: it is not served"
            );
        }
        return Ok(None);
    };
    let listener = match passed {
        Some(socket) => activation::adopt(socket, admin.listen, "admin.listen")?,
        None => bind(admin.listen, "admin.listen")?,
    };
    let admin_addr = listener.local_addr().unwrap_or(admin.listen);
    tracing::info!(admin_addr = %admin_addr, "admin API on http://{admin_addr}/v1/, dashboard on http://{admin_addr}/ui");
    let routes = crate::admin::filter(app.clone(), admin.token, admin.read_only_token);
    Ok(Some(spawn_admin(
        app,
        listener,
        "admin",
        routes,
        admin.max_connections,
        limits,
    )))
}

/// Serves the admin routes on a listener of their own until aborted.
fn spawn_admin<L, F>(
    app: &std::sync::Arc<Switchyard>,
    listener: L,
    name: &'static str,
    routes: F,
    max_connections: usize,
    limits: &HttpLimits,
) -> tokio::task::JoinHandle<()>
where
    L: listener::Accept + 'static,
    F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let limits = HttpLimits {
        max_connections,
        ..limits.clone()
    };
    let app = app.clone();
    tokio::spawn(async move {
        listener::serve(
            listener,
            name,
            routes,
            limits,
            app.metrics(),
            std::future::pending(),
        )
        .await
    })
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
