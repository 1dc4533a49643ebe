//! `[admin]`: the admin API (status, events, replay, dead letters, actions,
//! reload) on its own listener, behind a bearer token.

use std::net::SocketAddr;

use serde::Deserialize;

/// The admin listener's connection bound unless `[admin] max_connections`
/// says otherwise: a few operators and a scraper.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

/// The `[admin]` section (its token resolved from a secret reference).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the API listens, such as `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// The bearer token (resolved; never logged).
    pub token: String,
    /// Connections at once on the admin listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    DEFAULT_ADMIN_MAX_CONNECTIONS
}

impl AdminConfig {
    /// What is wrong with the values (each message names its key).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.token.len() < 16 {
            problems.push(
                "admin.token must be at least 16 characters (e.g. { credential = \"admin-token\" })"
                    .to_string(),
            );
        }
        if self.max_connections == 0 {
            problems.push("admin.max_connections must be at least 1".to_string());
        }
        problems
    }
}
