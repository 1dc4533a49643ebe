//! `[http] max_connections_per_client`: a bound on the connections one
//! client address holds at once (off by default: behind a reverse proxy
//! every connection comes from the proxy). A client past it gets 503 and
//! its connection is closed, as past `max_connections`, so that one
//! address cannot take the whole connection bound from the others. An
//! IPv6 client counts by its /64, the least a host is given.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// The connections each client holds.
#[derive(Clone, Default)]
pub struct PerClient {
    most: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its client; uncounted when dropped.
pub struct Held {
    client: Option<(IpAddr, PerClient)>,
}

/// The address a client counts by: its IPv4 address, its IPv6 /64.
fn client_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

impl PerClient {
    /// At most `most` connections per client; 0: no bound.
    pub fn new(most: usize) -> PerClient {
        PerClient {
            most,
            held: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `peer`: `None` when its client holds
    /// the most already.
    pub fn take(&self, peer: Option<SocketAddr>) -> Option<Held> {
        let (Some(peer), true) = (peer, self.most > 0) else {
            return Some(Held { client: None });
        };
        let client = client_of(peer);
        let mut held = self.lock();
        let n = held.entry(client).or_default();
        if *n >= self.most {
            return None;
        }
        *n += 1;
        Some(Held {
            client: Some((client, self.clone())),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((client, per_client)) = self.client.take() {
            let mut held = per_client.lock();
            if let Some(n) = held.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_it_back() {
        let per = PerClient::new(2);
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let first = per.take(Some(a)).unwrap();
        let _second = per.take(Some(a)).unwrap();
        assert!(per.take(Some(a)).is_none());
        // Another client is not held back.
        assert!(per.take(Some(b)).is_some());
        drop(first);
        assert!(per.take(Some(a)).is_some());
        // An IPv6 client counts by its /64.
        let v6 = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let _x = per.take(v6("[2001:db8::1]:1")).unwrap();
        let _y = per.take(v6("[2001:db8::ffff:2]:1")).unwrap();
        assert!(per.take(v6("[2001:db8::3]:1")).is_none());
        assert!(per.take(v6("[2001:db8:0:1::3]:1")).is_some());
        // Off, and a local socket: no bound.
        let off = PerClient::new(0);
        let held: Vec<_> = (0..100).map(|_| off.take(Some(a)).unwrap()).collect();
        assert_eq!(held.len(), 100);
        assert!(per.take(None).is_some());
        assert!(per.lock().len() <= 4, "emptied clients are forgotten");
    }
}
