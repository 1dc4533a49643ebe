//! `[admin]`: the admin listener, where the admin API (status, events,
//! replay, dead letters, actions, reload) and the dashboard (`/ui`) are
//! served, and the tokens that open them (the bearer token, or a read-only
//! one for the dashboard). The admin routes themselves are `admin`'s.

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
    /// A token that looks, not acts: it signs in to the dashboard, and the
    /// API takes it for every GET (`switchyard listen`) and answers a
    /// write with it 403 (resolved; never logged).
    #[serde(default)]
    pub read_only_token: Option<String>,
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
        if let Some(read_only) = &self.read_only_token {
            if read_only.len() < 16 {
                problems.push("admin.read_only_token must be at least 16 characters".to_string());
            }
            if *read_only == self.token {
                problems.push("admin.read_only_token must differ from admin.token".to_string());
            }
        }
        if self.max_connections == 0 {
            problems.push("admin.max_connections must be at least 1".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_only_token_is_long_and_not_the_admin_token() {
        let config = |read_only: &str| AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: "admin-token-0123456789".into(),
            read_only_token: Some(read_only.into()),
            max_connections: 4,
        };
        assert!(config("viewer-token-0123456789").check().is_empty());
        assert_eq!(config("short").check().len(), 1);
        let same = config("admin-token-0123456789").check();
        assert!(same[0].contains("must differ"), "{same:?}");
    }
}
