//! Wake-ups between instances: `NOTIFY` when work is left for the others,
//! and a connection of its own per instance that `LISTEN`s and wakes the
//! stage the work is for. Polling stays the fallback (and the only way
//! with `poll_only`, behind a transaction-mode pooler).

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::tls::{Connected, Tls};
use super::{map_err, run};
use crate::store::{OnWork, StoreResult, Work};

/// The channel instances tell each other of work on (`jobs`, `events`).
const CHANNEL: &str = "switchyard_work";

/// The least time between two notices of unclaimed jobs from one instance.
pub(super) const NOTICE_EVERY_MS: i64 = 50;

/// Tells every listening instance (itself too) of `work`, when the
/// transaction or statement it runs in commits.
pub(super) async fn notify(client: &impl GenericClient, work: Work) -> StoreResult<()> {
    let payload = match work {
        Work::Jobs => "jobs",
        Work::Events => "events",
    };
    run::execute(client, "SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await?;
    Ok(())
}

/// Hears the others' notices on a connection of its own and passes them to
/// `wake`; reconnects (after 0.5 s, doubling up to 10 s) when it is lost.
/// After each (re)connection it wakes both stages once: what was told
/// while it was not listening is looked for.
pub(super) async fn listen(config: tokio_postgres::Config, tls: Tls, wake: OnWork) {
    let mut pause = Duration::from_millis(500);
    loop {
        match listen_once(&config, &tls, &wake).await {
            Ok(()) => {
                tracing::warn!("store: the connection listening for work closed; polling meanwhile")
            }
            Err(e) => tracing::warn!(
                "store: cannot listen for work ({}); polling meanwhile",
                map_err(e)
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &Tls,
    wake: &OnWork,
) -> Result<(), tokio_postgres::Error> {
    let Connected {
        client,
        mut notices,
        driver,
    } = tls.connect(config).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    wake(Work::Jobs);
    wake(Work::Events);
    while let Some(payload) = notices.recv().await {
        match payload.as_str() {
            "jobs" => wake(Work::Jobs),
            "events" => wake(Work::Events),
            _ => {}
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}
