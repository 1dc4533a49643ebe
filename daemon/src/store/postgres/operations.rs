//! What the PostgreSQL store gives the operators' side, which is written
//! once for both backends (`store/sql.rs`): reads and transactions on the
//! pool, the others told of the work a command leaves (`NOTIFY`). Any
//! instance answers for the whole cluster: they share the tables.

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, Json, ToSql, Type};

use super::{map_err, notify, run, PgStore};
use crate::store::sql::{SqlBackend, SqlRow, SqlValue, Statement};
use crate::store::{Dialect, RequestRecord, StoreError, StoreFuture, StoreResult, Work};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// Bound as the statement's parameter wants it: an integer as `int4`,
/// `int8` or `bool`, text as text or JSON.
impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            SqlValue::Text(s) if matches!(*ty, Type::JSON | Type::JSONB) => {
                Json(serde_json::from_str::<serde_json::Value>(s)?).to_sql(ty, out)
            }
            SqlValue::Text(s) => s.to_sql(ty, out),
            SqlValue::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A row's values, read as their columns' types say.
fn row(r: &tokio_postgres::Row) -> StoreResult<SqlRow> {
    let cell = |i: usize| -> Result<SqlValue, tokio_postgres::Error> {
        let ty = r.columns()[i].type_();
        Ok(match *ty {
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.into(),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(i64::from).into(),
            Type::BYTEA => r
                .try_get::<_, Option<Vec<u8>>>(i)?
                .map_or(SqlValue::Null, SqlValue::Bytes),
            Type::JSON | Type::JSONB => r
                .try_get::<_, Option<serde_json::Value>>(i)?
                .map(|v| v.to_string())
                .into(),
            _ => r.try_get::<_, Option<String>>(i)?.into(),
        })
    };
    (0..r.len())
        .map(cell)
        .collect::<Result<_, _>>()
        .map(SqlRow)
        .map_err(map_err)
}

fn bound(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl SqlBackend for PgStore {
    const DIALECT: Dialect = Dialect::Postgres;

    fn rows(&self, read: Statement) -> StoreFuture<'_, Vec<SqlRow>> {
        Box::pin(async move {
            let client = self.client().await?;
            // A text built per call (an operator's filters and limits) is
            // not prepared once per connection: the cache would keep texts
            // without end for the connection's life.
            let params = bound(&read.params);
            let rows = if read.fixed() {
                run::query(&client, &read.sql, &params).await?
            } else {
                client.query(&*read.sql, &params).await.map_err(map_err)?
            };
            rows.iter().map(row).collect()
        })
    }

    fn writes(&self, writes: Vec<Statement>, work: Option<Work>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(map_err)?;
            let mut changed = Vec::with_capacity(writes.len());
            for w in &writes {
                let params = bound(&w.params);
                changed.push(if w.fixed() {
                    run::execute(&tx, &w.sql, &params).await?
                } else {
                    tx.execute(&*w.sql, &params).await.map_err(map_err)?
                });
            }
            if let Some(work) = work.filter(|_| changed.iter().any(|&n| n > 0)) {
                notify(&tx, work).await?;
            }
            tx.commit().await.map_err(map_err)?;
            Ok(changed)
        })
    }

    fn request_record(&self, request_id: String) -> StoreFuture<'_, RequestRecord> {
        Box::pin(async move {
            let client = self.client().await?;
            let r = run::query_opt(
                &client,
                "SELECT id, method, path, query, headers::text, body, verdict
                 FROM requests WHERE id = $1",
                &[&request_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no request {request_id}")))?;
            let headers: String = r.get(4);
            let body: Vec<u8> = r.get(5);
            Ok(RequestRecord {
                id: r.get(0),
                method: r.get(1),
                path: r.get(2),
                query: r.get(3),
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: String::from_utf8_lossy(&body).into_owned(),
                verdict: r.get(6),
            })
        })
    }

    /// Routed again by this instance (the one asked).
    fn replay_statement(&self, event_id: String) -> Statement {
        Statement::new(
            "UPDATE events SET state = 'pending', owner = $2 WHERE id = $1",
            vec![event_id.into(), self.instance.clone().into()],
        )
    }
}
