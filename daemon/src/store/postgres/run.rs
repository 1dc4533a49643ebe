//! Statements as the store runs them: each SQL text prepared once per
//! connection and reused (parsed and planned once, not at every call —
//! which the database otherwise spends more on than on running them).

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::map_err;
use crate::store::StoreResult;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Where a recorded task's statements go.
pub(super) type Recorder = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

tokio::task_local! {
    /// The statements run by the task being recorded ([`recording`]).
    static RECORDED: Recorder;
}

/// The recorder of the current task, if it is being recorded: handed to a
/// task doing the work on its behalf (`group.rs`).
pub(super) fn current_recorder() -> Option<Recorder> {
    RECORDED.try_with(|r| r.clone()).ok()
}

/// Runs `f` recording into `recorder`, if there is one.
pub(super) async fn recorded_by<T>(
    recorder: Option<Recorder>,
    f: impl std::future::Future<Output = T>,
) -> T {
    match recorder {
        Some(r) => RECORDED.scope(r, f).await,
        None => f.await,
    }
}

/// Runs `f`, and hands back with its output the text of every statement
/// the store ran for it (in this task): what the store's plan test plans.
#[doc(hidden)]
pub async fn recording<T>(f: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
    let recorded = Recorder::default();
    let out = RECORDED.scope(recorded.clone(), f).await;
    let statements = recorded.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (out, statements.into_iter().collect())
}

fn record(sql: &str) {
    let _ = RECORDED.try_with(|r| {
        r.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string())
    });
}

pub(super) async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    record(sql);
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query(&statement, params).await.map_err(map_err)
}

pub(super) async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Row> {
    record(sql);
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query_one(&statement, params).await.map_err(map_err)
}

pub(super) async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    record(sql);
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query_opt(&statement, params).await.map_err(map_err)
}

pub(super) async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    record(sql);
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.execute(&statement, params).await.map_err(map_err)
}
