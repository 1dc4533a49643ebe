//! Statements as the store runs them: each SQL text prepared once per
//! connection and reused (parsed and planned once, not at every call —
//! which the database otherwise spends more on than on running them).

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::map_err;
use crate::store::StoreResult;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query(&statement, params).await.map_err(map_err)
}

pub(super) async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Row> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query_one(&statement, params).await.map_err(map_err)
}

pub(super) async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.query_opt(&statement, params).await.map_err(map_err)
}

pub(super) async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    let statement = client.prepare_cached(sql).await.map_err(map_err)?;
    client.execute(&statement, params).await.map_err(map_err)
}
