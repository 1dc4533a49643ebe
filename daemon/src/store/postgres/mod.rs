//! The shared backend: PostgreSQL, for several instances on one database.
//!
//! Owns: the connection pool, the schema's migrations (`migrations/`,
//! embedded, applied at start under a transaction-scoped advisory lock so
//! that two instances starting at once apply each migration once), this
//! instance's row and heartbeat, named leases with a time to live (the
//! leader's), and the [`Pipeline`] (`pipeline.rs`) and [`Operations`]
//! (`operations.rs`) over the same tables as the embedded store; ingest is
//! `ingest.rs`, the job queue (claims, ordered claims, fenced attempts)
//! `jobs.rs`, work of concurrent callers done in groups `group.rs` (ingest)
//! and `book.rs` (routings, attempts), statements prepared per connection
//! `sql.rs`; TLS to the
//! database (`?sslmode=require`, certificates verified) is `tls.rs`.
//!
//! ## How instances share the work
//! - **Ingest** is one transaction holding the raw request, its verdict and
//!   its events; the acknowledgement waits for its commit. Requests arriving
//!   together share one transaction and one commit (`group.rs`), as do
//!   routings and attempts' records (`book.rs`). Dedup keys and
//!   object versions are primary keys: a delivery that reaches two
//!   instances at once is one event, whichever commits first.
//! - **Routing**: the instance that took an event in routes it (its
//!   `owner`); the events of an instance whose heartbeat stopped are taken
//!   over by the next instance that looks for pending events. Two routings
//!   of one event make one set of jobs: the routing marks the event only
//!   while it is pending, and jobs are unique by idempotency key.
//! - **Jobs** are claimed with `FOR UPDATE SKIP LOCKED` under a lease (owner,
//!   expiry, renewed by the owner's heartbeat); an attempt is recorded only
//!   by the job's owner while it is running (fenced), so a job handed back
//!   from a dead instance is never recorded twice.
//! - **Ordered jobs** (`order_by`) are never claimed with their routing:
//!   one claim at a time across instances (an advisory transaction lock)
//!   takes each key's next job, when no job of the key runs, none before
//!   it is due, and every event taken in before its own (`events.seq`) is
//!   routed (`jobs.rs`).
//! - **Wake-ups** (`wake.rs`): work left for the others (jobs stored
//!   unclaimed, handed back, redriven, an ordered job's successor, a
//!   replay) is announced with `NOTIFY`; each instance LISTENs on a
//!   connection of its own. Polling stays the fallback.
//! - **Leases** (`leases`): a row with an owner and an expiry, taken with one
//!   upsert — not a session advisory lock, which a transaction-mode pooler
//!   would lose. The leader runs retention.
//!
//! Lease and heartbeat times are the database's clock (`clock_timestamp()`):
//! instances whose clocks differ still agree on when a lease ran out.

mod book;
mod group;
mod ingest;
mod jobs;
mod operations;
mod pipeline;
mod run;
mod sql;
mod tls;
mod wake;

pub use run::recording;
use wake::{listen, notify, NOTICE_EVERY_MS};

use std::time::Duration;

use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::error::SqlState;

use super::{StoreError, StoreResult, Work};

/// The database's clock, in Unix milliseconds, as SQL.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The migrations, in order; each runs once, in the transaction that
/// records it. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_order_keys.sql")),
    (3, include_str!("migrations/0003_retention_indexes.sql")),
    (4, include_str!("migrations/0004_json_as_text.sql")),
    (5, include_str!("migrations/0005_rate_budgets.sql")),
    (6, include_str!("migrations/0006_rate_budgets_time.sql")),
    (7, include_str!("migrations/0007_catalog.sql")),
];

/// Groups of requests taken in at once, each on a connection of the
/// synchronous pool: two, so that one group commits while the next
/// gathers.
const INGEST_LANES: usize = 2;

/// The most requests one ingest group takes (one transaction).
const INGEST_GROUP: usize = 64;

/// Groups of routings and attempts' records booked at once, each on a
/// connection of the relaxed pool (which claims use too).
const BOOK_LANES: usize = 2;

/// The most routings and attempts one bookkeeping group takes.
const BOOK_GROUP: usize = 128;

/// The advisory lock ordered jobs are claimed under, by one instance at a
/// time (see `claim_ordered`).
const ORDER_LOCK: i64 = 0x7377_6f72_6465_7273;

/// The advisory lock key migrations are applied under ("switchyard" in
/// ASCII, folded into 63 bits).
const MIGRATION_LOCK: i64 = 0x7377_6974_6368_7961;

/// How an instance joins the shared store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (a password in it is used as given).
    pub url: String,
    /// The password, when not in the URL (from a secret reference).
    pub password: Option<String>,
    /// Connections this instance holds at most (besides the one it
    /// listens on): half for ingest and operators' commands, half for the
    /// pipeline's bookkeeping, at least two each. Few is fast: more
    /// connections than the database's cores only queue inside it.
    pub connections: usize,
    /// How often this instance beats and renews its leases.
    pub heartbeat: Duration,
    /// An instance silent this long is taken for dead: its jobs and events
    /// are handed to the others.
    pub dead_after: Duration,
    /// Whether this is an instance (a daemon: it migrates the schema,
    /// beats, and takes work) or a client of the others (the CLI).
    pub join: bool,
    /// Certificates (PEM) trusted besides the system's when the URL asks
    /// for TLS (`sslmode=require`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether to hear of the others' work by LISTEN/NOTIFY (on a
    /// connection of its own), or only poll: behind a transaction-mode
    /// pooler, which cannot hold a LISTEN.
    pub listen: bool,
}

impl PgOptions {
    /// The driver's settings: the URL, the password if given apart, and a
    /// 10 s deadline to connect.
    fn config(&self) -> StoreResult<tokio_postgres::Config> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Other(format!("[store] url: {e}")))?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(10));
        Ok(config)
    }

    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            password: None,
            connections: 8,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            join: true,
            listen: true,
            ca_file: None,
        }
    }
}

pub struct PgStore {
    pool: Pool,
    /// Requests taken in together (`ingest.rs`, `group.rs`).
    ingest: group::Group<ingest::Intake, Vec<super::Ingested>>,
    /// Routings and attempts' records booked together (`book.rs`).
    book: group::Group<book::Entry, book::Booked>,
    relaxed: Pool,
    /// This instance's id (a ULID, new at each start).
    instance: String,
    lease_ms: i64,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Where to LISTEN for the others' work (none: poll only).
    listen: Option<(tokio_postgres::Config, tls::Tls)>,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When this instance last told the others of jobs it stored unclaimed
    /// (ms; see `notice_due`).
    last_notice: std::sync::atomic::AtomicI64,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let listener = self.listener.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = listener.take() {
            h.abort();
        }
    }
}

pub(super) fn map_err(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("the database connection is closed: {e}"));
    }
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::TOO_MANY_CONNECTIONS => {
            StoreError::Unavailable(e.to_string())
        }
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57") => {
            // Connection exceptions and operator interventions (shutdown).
            StoreError::Unavailable(e.to_string())
        }
        // The database's own message says what went wrong (`e` alone says
        // only "db error").
        Some(_) => StoreError::Other(
            e.as_db_error()
                .map(|d| d.to_string())
                .unwrap_or_else(|| e.to_string()),
        ),
        // Not the server's: the connection, or a value that did not fit.
        None => {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            StoreError::Unavailable(format!("{e}{cause}"))
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map_err(e),
        e => StoreError::Unavailable(format!("no database connection: {e}")),
    }
}

impl PgStore {
    /// Connects, applies the migrations this version knows, and registers
    /// this instance; starts its heartbeat on the current tokio runtime.
    pub async fn connect(options: PgOptions) -> StoreResult<PgStore> {
        let mut config = options.config()?;
        config.application_name("switchyard");
        let tls = tls::Tls::for_config(&config, options.ca_file.as_deref())?;
        let pool = |config: tokio_postgres::Config, size: usize| {
            Pool::builder(tls.manager(config))
                .max_size(size.max(2))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| StoreError::Other(format!("cannot make the connection pool: {e}")))
        };
        // A startup option, not a SET per transaction: no round trip more.
        // (PgBouncer passes it on only when `options` is in its
        // `ignore_startup_parameters`; otherwise these commit synchronously.)
        let mut relaxed = config.clone();
        let options_given = relaxed.get_options().unwrap_or_default().to_string();
        relaxed.options(format!("{options_given} -c synchronous_commit=off").trim());
        let listen = (options.join && options.listen).then(|| (config.clone(), tls.clone()));
        let half = options.connections / 2;
        let (pool, relaxed) = (
            pool(config, half)?,
            pool(relaxed, options.connections - half)?,
        );
        {
            let mut client = pool.get().await.map_err(pool_err)?;
            match options.join {
                true => migrate(&mut client).await.map(|_| ())?,
                false => check_schema(&client).await?,
            }
        }
        if options.join {
            // Every connection opened, and the pipeline's statements
            // prepared on it, before the first webhook: a new backend costs
            // the database a fork, cold caches and a plan per statement,
            // which the first webhooks would otherwise wait for.
            warm(&pool, half.max(2), &[ingest::INGEST_ONE]).await?;
            let hot = [
                sql::ROUTE.as_str(),
                sql::PENDING_EVENTS.as_str(),
                sql::NEXT_DUE,
                sql::CLAIM.as_str(),
                sql::CLAIM_ORDERED.as_str(),
                sql::ORDERED_DUE,
                sql::TAKE_ORDER_LOCK,
                sql::FINISH,
            ];
            warm(&relaxed, (options.connections - half).max(2), &hot).await?;
        }
        let instance = crate::event::new_id();
        let lease_ms = options.dead_after.as_millis() as i64;
        let ingest = {
            let (pool, instance) = (pool.clone(), instance.clone());
            group::Group::start("ingest", INGEST_LANES, INGEST_GROUP, move |items| {
                ingest::ingest_group(pool.clone(), instance.clone(), items)
            })
        };
        let book = {
            let booker = book::Booker {
                pool: relaxed.clone(),
                instance: instance.clone(),
                lease_ms,
            };
            group::Group::start("bookkeeping", BOOK_LANES, BOOK_GROUP, move |entries| {
                booker.clone().book(entries)
            })
        };
        if !options.join {
            return Ok(PgStore {
                pool,
                ingest,
                book,
                relaxed,
                instance,
                lease_ms,
                heartbeat: None,
                listen: None,
                listener: Default::default(),
                last_notice: Default::default(),
            });
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        {
            let client = pool.get().await.map_err(pool_err)?;
            run::execute(
                &client,
                &format!(
                    "INSERT INTO instances (id, host, version, started_at, heartbeat_at)
                         VALUES ($1, $2, $3, {DB_NOW_MS}, {DB_NOW_MS})"
                ),
                &[&instance, &host, &env!("CARGO_PKG_VERSION")],
            )
            .await?;
        }
        let mut store = PgStore {
            pool,
            ingest,
            book,
            relaxed,
            instance,
            lease_ms,
            heartbeat: None,
            listen,
            listener: Default::default(),
            last_notice: Default::default(),
        };
        store.heartbeat = Some(tokio::spawn(beat(
            store.pool.clone(),
            store.instance.clone(),
            options.heartbeat,
            lease_ms,
        )));
        Ok(store)
    }

    /// This instance's id, as `instances` and the leases name it.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// A connection whose commits do not wait for the database's WAL flush
    /// (`synchronous_commit = off`): for the pipeline's own bookkeeping
    /// (routing, claims, attempts, gates), as the embedded store commits
    /// it without a sync. A crash of the database may lose its last
    /// fraction of a second of these — an event is routed again with the
    /// same idempotency keys, a job runs again — never an acknowledged
    /// webhook: ingest commits synchronously.
    async fn relaxed(&self) -> StoreResult<deadpool_postgres::Object> {
        self.relaxed.get().await.map_err(pool_err)
    }

    /// Takes or renews the lease `name` for `ttl`; says whether this
    /// instance holds it.
    pub async fn hold_lease(&self, name: &str, ttl: Duration) -> StoreResult<bool> {
        hold(&self.pool, &self.instance, name, ttl.as_millis() as i64).await
    }

    /// Says goodbye: this instance's row goes, its leases and running jobs
    /// are handed back at once rather than after `dead_after`.
    pub async fn hand_back(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        for statement in [
            "UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL
             WHERE owner = $1 AND state = 'running'",
            "UPDATE events SET owner = NULL WHERE owner = $1 AND state = 'pending'",
            "DELETE FROM leases WHERE owner = $1",
            "DELETE FROM instances WHERE id = $1",
        ] {
            run::execute(&tx, statement, &[&self.instance]).await?;
        }
        notify(&tx, Work::Jobs).await?;
        notify(&tx, Work::Events).await?;
        tx.commit().await.map_err(map_err)
    }

    /// Whether to tell the others of jobs stored unclaimed now: at most
    /// every `NOTICE_EVERY_MS` per instance, so that a busy instance does
    /// not make every commit queue on the database's notification lock
    /// (the others poll besides).
    fn notice_due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = super::now_ms();
        let last = self.last_notice.load(Ordering::Relaxed);
        now - last >= NOTICE_EVERY_MS
            && self
                .last_notice
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Opens `n` connections of `pool` at once (they stay in it) and prepares
/// `statements` on each.
async fn warm(pool: &Pool, n: usize, statements: &[&str]) -> StoreResult<()> {
    let held = futures_util::future::join_all((0..n).map(|_| pool.get())).await;
    for connection in held {
        let connection = connection.map_err(pool_err)?;
        for statement in statements {
            connection
                .prepare_cached(statement)
                .await
                .map_err(map_err)?;
        }
    }
    Ok(())
}

/// Applies the migrations this version knows and the database lacks, under
/// an advisory lock held for the transaction: a second instance starting at
/// the same time waits, then finds them applied. Refuses a database that a
/// newer version has migrated further.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> StoreResult<Vec<i32>> {
    let tx = client.transaction().await.map_err(map_err)?;
    run::execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(map_err)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
        return Err(StoreError::Other(format!(
            "the database's schema is at version {newer}, made by a newer Switchyard; this one \
             knows up to {known}: upgrade this instance"
        )));
    }
    let mut ran = Vec::new();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Other(format!("migration {version} failed: {}", map_err(e)))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(map_err)?;
        ran.push(*version);
    }
    tx.commit().await.map_err(map_err)?;
    if !ran.is_empty() {
        tracing::info!(migrations = ?ran, "database schema migrated");
    }
    Ok(ran)
}

/// What `switchyard check` says of a shared store: it connects (once, no
/// pool) and reads the schema's version and the instances alive; it
/// changes nothing.
pub async fn probe(options: &PgOptions) -> StoreResult<String> {
    let config = options.config()?;
    let tls = tls::Tls::for_config(&config, options.ca_file.as_deref())?;
    let tls::Connected { client, driver, .. } = tls.connect(&config).await.map_err(map_err)?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let read = async {
        // A table named in a statement must exist even where it is not
        // read: whether the schema is there first.
        let made: bool = client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await?
            .get(0);
        if !made {
            return Ok((None, 0));
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT MAX(version) FROM schema_migrations),
                            (SELECT count(*) FROM instances
                             WHERE heartbeat_at > {DB_NOW_MS} - $1)"
                ),
                &[&(options.dead_after.as_millis() as i64)],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((row.get(0), row.get(1)))
    };
    let read = read.await;
    drop(client);
    let _ = driver.await;
    let (at, alive): (Option<i32>, i64) = read.map_err(map_err)?;
    Ok(match at {
        None => format!(
            "reachable; no schema yet (the first instance to start makes it, version {known})"
        ),
        Some(v) if v > known => {
            return Err(StoreError::Other(format!(
                "the database's schema is at version {v}, made by a newer Switchyard; this one \
                 knows up to {known}: upgrade this instance"
            )))
        }
        Some(v) if v < known => format!(
            "reachable; schema version {v} (this version migrates it to {known} at start); \
             {alive} instance(s) alive"
        ),
        Some(v) => format!("reachable; schema version {v}; {alive} instance(s) alive"),
    })
}

/// A client's check that the database holds the schema this version
/// knows (the instances migrate it; a client never does).
async fn check_schema(client: &tokio_postgres::Client) -> StoreResult<()> {
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(map_err)?
        .get(0);
    let at: Option<i32> = match exists {
        false => None,
        true => client
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .await
            .map_err(map_err)?
            .get(0),
    };
    match at {
        Some(v) if v == known => Ok(()),
        Some(v) => Err(StoreError::Other(format!(
            "the database's schema is at version {v}; this Switchyard knows {known}: use the \
             version the instances run"
        ))),
        None => Err(StoreError::Other(
            "the database has no Switchyard schema yet: start an instance on it first".into(),
        )),
    }
}

/// The heartbeat: this instance's row, the leases of its running jobs, and
/// the jobs of instances that stopped beating handed back.
async fn beat(pool: Pool, instance: String, every: Duration, lease_ms: i64) {
    // The instance registered itself at connect: the first beat is one
    // period later.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = beat_once(&pool, &instance, lease_ms).await {
            tracing::warn!("store: heartbeat failed (tried again): {e}");
        }
    }
}

pub(super) async fn beat_once(pool: &Pool, instance: &str, lease_ms: i64) -> StoreResult<u64> {
    let client = pool.get().await.map_err(pool_err)?;
    run::execute(
        &client,
        &format!(
            "INSERT INTO instances (id, host, version, started_at, heartbeat_at)
                 VALUES ($1, '', $2, {DB_NOW_MS}, {DB_NOW_MS})
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at"
        ),
        &[&instance, &env!("CARGO_PKG_VERSION")],
    )
    .await?;
    run::execute(
        &client,
        &format!(
            // A job another transaction holds (a group finishing it) is
            // skipped, not waited for: its lease is renewed at the next beat
            // if it still runs (leases outlast several beats), and the
            // heartbeat never waits in a circle with a group.
            "UPDATE jobs SET lease_until = {DB_NOW_MS} + $2
                 WHERE id IN (SELECT id FROM jobs WHERE owner = $1 AND state = 'running'
                              ORDER BY id FOR UPDATE SKIP LOCKED)"
        ),
        &[&instance, &lease_ms],
    )
    .await?;
    // The leader's lease is held (or taken over) here too, so that which
    // instance leads is known between its chores.
    hold(pool, instance, LEADER, lease_ms).await?;
    rescue(&client, lease_ms).await
}

/// The leader's lease: held while renewed, taken over once it runs out.
pub(super) const LEADER: &str = "leader";

/// Takes or renews the lease `name` for `ttl_ms`; says whether `instance`
/// holds it.
async fn hold(pool: &Pool, instance: &str, name: &str, ttl_ms: i64) -> StoreResult<bool> {
    let client = pool.get().await.map_err(pool_err)?;
    let row = run::query_opt(
        &client,
        &format!(
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, {DB_NOW_MS} + $3)
                 ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
                 WHERE leases.owner = EXCLUDED.owner OR leases.until < {DB_NOW_MS}
                 RETURNING owner"
        ),
        &[&name, &instance, &ttl_ms],
    )
    .await?;
    Ok(row.is_some())
}

/// Hands back the running jobs whose lease ran out (their owner stopped
/// beating): pending again, due as they were (the attempt they were on may
/// have reached the target: actions run at least once). Forgets instances
/// silent for ten leases.
async fn rescue(client: &deadpool_postgres::Object, lease_ms: i64) -> StoreResult<u64> {
    let n = run::execute(client, &sql::RECOVER, &[]).await?;
    if n > 0 {
        tracing::warn!(
            jobs = n,
            "handed back jobs whose instance stopped beating; they run again"
        );
        notify(client, Work::Jobs).await?;
    }
    run::execute(
        client,
        &format!("DELETE FROM instances WHERE heartbeat_at < {DB_NOW_MS} - $1::bigint * 10"),
        &[&lease_ms],
    )
    .await?;
    Ok(n)
}
