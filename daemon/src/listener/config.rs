//! `[http]`: what one connection to either listener may take, and how many
//! at once — the bounds that keep a client from holding the daemon's
//! sockets and memory.

use std::time::Duration;

use serde::Deserialize;

use crate::config::de;

/// The `[http]` section. Every key is optional; the defaults suit a
/// receiver on the internet behind a proxy or not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// From a connection's start, or the first byte of a later request, to
    /// the end of the request head; a slower client is closed.
    #[serde(deserialize_with = "de::duration")]
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body: 408, then closed.
    #[serde(deserialize_with = "de::duration")]
    pub body_timeout: Duration,
    /// A keep-alive connection without a request for this long is closed.
    #[serde(deserialize_with = "de::duration")]
    pub idle_timeout: Duration,
    /// An answer the client takes no byte of for this long: closed.
    #[serde(deserialize_with = "de::duration")]
    pub write_timeout: Duration,
    /// Connections at once; beyond, new ones get 503 and are closed. Also
    /// bounded by the open-file limit (see `listener`).
    pub max_connections: usize,
    /// Connections one client address holds at once (an IPv6 one: its
    /// /64); beyond, its new ones get 503 and are closed. 0: no bound (the
    /// default: behind a proxy, every connection is the proxy's).
    pub max_connections_per_client: usize,
    /// Header lines in one request (431 beyond).
    pub max_headers: usize,
    /// Bytes of request line and headers together (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_client: 0,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
        }
    }
}

impl HttpLimits {
    /// What is wrong with the values (each message names its key).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value < Duration::from_millis(100) {
                problems.push(format!("http.{key} must be at least 100ms"));
            }
        }
        for (key, value, least) in [
            ("max_connections", self.max_connections, 1),
            ("max_headers", self.max_headers, 1),
            // The request line, a Host header and room for a signature.
            ("max_header_bytes", self.max_header_bytes, 1024),
        ] {
            if value < least {
                problems.push(format!("http.{key} must be at least {least}"));
            }
        }
        problems
    }
}
