//! `[store]`: where and how events are kept, how long, and how much may
//! wait before ingress pushes back.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::de;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before a commit returns (`synchronous = FULL`): an acknowledged
    /// webhook survives a crash of the daemon, the OS or the power.
    #[default]
    Full,
    /// No fsync per commit (`synchronous = NORMAL`): survives a crash of the
    /// daemon; a power loss may take the last commits.
    Relaxed,
}

/// A database password: a secret reference until the config is loaded,
/// then its value. Never shown (`Debug` says it is there, not what it is).
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Password(pub serde_json::Value);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// The value, once resolved.
    pub fn value(&self) -> Option<&str> {
        self.0.as_str()
    }
}

/// The `[store]` section; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The database file; a relative path is under `data_dir` (the loader
    /// anchors it).
    pub path: PathBuf,
    /// `postgres://user@host:port/database`: the store several instances
    /// share. Without it, the embedded store (`path`).
    pub url: Option<String>,
    /// The PostgreSQL password, as a secret reference (`{ env = "…" }`,
    /// `{ file = "…" }`, `{ credential = "…" }`).
    pub password: Option<Password>,
    /// With `url`: find the other instances' work by polling only (about
    /// once a second), not LISTEN/NOTIFY — for a transaction-mode pooler
    /// (PgBouncer's `pool_mode = transaction`), which cannot hold a LISTEN.
    pub poll_only: bool,
    /// With `url`: connections this instance holds at most (besides the
    /// one it listens on).
    pub connections: usize,
    /// With `url` and `?sslmode=require`: certificates (PEM) trusted besides
    /// the system's to sign the database's. A relative path is from the
    /// config file's folder (the loader anchors it).
    pub ca_file: Option<PathBuf>,
    pub durability: Durability,
    /// Largest size of the store in MiB, database and journal together;
    /// ingests beyond fail as "full" and ingress answers 503.
    pub max_size_mb: Option<u64>,
    /// Routed events and finished jobs older than this are pruned.
    #[serde(deserialize_with = "de::duration")]
    pub retention: Duration,
    /// A delivery with a dedup key seen within this window is not routed again.
    #[serde(deserialize_with = "de::duration")]
    pub dedup_window: Duration,
    /// Beyond this many events waiting for rules, ingress answers 503.
    pub max_unrouted_events: u64,
    /// Beyond this many jobs waiting to run, ingress answers 503.
    pub max_pending_jobs: u64,
    /// How long a webhook's acknowledgement waits for the store to commit
    /// it; beyond, 503 with `Retry-After` (a store that does not answer —
    /// a frozen database, a stalled disk — must not pile up connections).
    /// A commit that lands later is not lost: the provider's retry is then
    /// a duplicate, answered 2xx and not routed again.
    #[serde(deserialize_with = "de::duration")]
    pub write_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("switchyard.db"),
            url: None,
            password: None,
            poll_only: false,
            connections: 8,
            ca_file: None,
            durability: Durability::Full,
            max_size_mb: None,
            retention: Duration::from_secs(30 * 86_400),
            dedup_window: Duration::from_secs(7 * 86_400),
            max_unrouted_events: 10_000,
            max_pending_jobs: 100_000,
            write_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// The URL with any password in it masked, for logs and messages.
    pub fn url_shown(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        Some(match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((user, host)) if user.contains(':') => {
                    let name = user.split(':').next().unwrap_or("");
                    format!("{scheme}://{name}:***@{host}")
                }
                _ => url.to_string(),
            },
            None => url.to_string(),
        })
    }

    /// Where the store is, as the log and `switchyard check` say it.
    pub fn place(&self) -> String {
        self.url_shown()
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The size bound in bytes.
    pub fn max_size_bytes(&self) -> Option<u64> {
        self.max_size_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }
}
