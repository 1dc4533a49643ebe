//! `switchyard run`: the daemon, until SIGTERM or Ctrl-C.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use switchyard::app::config;

pub fn run(path: &Path) -> Result<ExitCode> {
    let (config, warnings) = config::load(path).map_err(|p| anyhow!("{p}"))?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        switchyard::server::run(config, shutdown_signal(), |_| {})
            .await
            .map_err(|p| anyhow!("{p}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C. The handlers are in place when this returns, before
/// the daemon says it is up: a signal right after start stops it cleanly.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("interrupted: shutting down"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
