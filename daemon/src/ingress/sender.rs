//! Who sent a request: the peer, or behind trusted proxies the address they
//! name; and whether a source allows it.

use std::net::IpAddr;

use warp::http::HeaderMap;

/// The sender of a request: the peer, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not a trusted proxy
/// (read from the right: only what trusted proxies appended is believed).
pub fn sender_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut sender = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                sender = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A hop that is not an address: stop at what is known.
            Err(_) => break,
        }
    }
    Some(sender)
}

/// Whether `allow` (a source's `allow_ips`; empty allows all) lets `sender` in.
pub fn allowed(sender: Option<IpAddr>, allow: &[ipnet::IpNet]) -> bool {
    allow.is_empty() || sender.is_some_and(|ip| allow.iter().any(|net| net.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let ip = |s: &str| Some(s.parse().unwrap());
        // A direct sender: its header is ignored.
        assert_eq!(
            sender_address(ip("3.3.3.3"), &headers(&["1.1.1.1"]), &trusted),
            ip("3.3.3.3")
        );
        // Through a trusted proxy: the nearest untrusted hop.
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["1.1.1.1"]), &trusted),
            ip("1.1.1.1")
        );
        // A spoofed first hop is not believed: the proxy appended the real one.
        assert_eq!(
            sender_address(
                ip("10.0.0.2"),
                &headers(&["6.6.6.6, 2.2.2.2, 10.0.0.9"]),
                &trusted
            ),
            ip("2.2.2.2")
        );
        assert_eq!(
            sender_address(ip("127.0.0.1"), &headers(&["5.5.5.5", "2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&[]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["garbage"]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            sender_address(ip("10.0.0.2"), &headers(&["1.1.1.1"]), &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn an_empty_allow_list_allows_all() {
        let ip = "1.2.3.4".parse().ok();
        assert!(allowed(ip, &[]));
        assert!(allowed(None, &[]));
        assert!(allowed(ip, &["1.2.3.0/24".parse().unwrap()]));
        assert!(!allowed(ip, &["10.0.0.0/8".parse().unwrap()]));
        assert!(!allowed(None, &["10.0.0.0/8".parse().unwrap()]));
    }
}
