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

/// The `[store]` section; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The database file; a relative path is under `data_dir` (the loader
    /// anchors it).
    pub path: PathBuf,
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("switchyard.db"),
            durability: Durability::Full,
            max_size_mb: None,
            retention: Duration::from_secs(30 * 86_400),
            dedup_window: Duration::from_secs(7 * 86_400),
            max_unrouted_events: 10_000,
            max_pending_jobs: 100_000,
        }
    }
}

impl StoreConfig {
    /// The size bound in bytes.
    pub fn max_size_bytes(&self) -> Option<u64> {
        self.max_size_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }
}
