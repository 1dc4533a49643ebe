//! The value formats the stages' config sections share, as serde
//! deserializers: durations written as text (`"30s"`, `"5m"`, `"7d"`, parsed
//! by humantime) and IP addresses or networks (`"10.0.0.1"`,
//! `"10.0.0.0/8"`, IPv6). Use them with `#[serde(deserialize_with = …)]`;
//! their errors name the value and the format expected, and the loader adds
//! the file, line and key.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Parses `"30s"`, `"5m"`, `"7d"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"30s\", \"5m\", \"7d\" ({e})"))
}

/// Parses an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A duration written as text.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(D::Error::custom)
}

/// A list of durations written as text.
pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .enumerate()
        .map(|(i, text)| parse_duration(text).map_err(|e| D::Error::custom(format!("[{i}]: {e}"))))
        .collect()
}

/// A list of addresses or networks.
pub fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|item| {
            parse_net(item).ok_or_else(|| {
                D::Error::custom(format!(
                    "{item:?} is not an IP address or network (a.b.c.d, a.b.c.d/n, IPv6)"
                ))
            })
        })
        .collect()
}
