//! # switchyard-plugin-support
//!
//! What several plugins do the same way, written once (the daemon's
//! `switchyard listen` signs with it too):
//!
//! - [`Secret`]: a configured secret as bytes (`utf8`, `base64`, or a
//!   Standard Webhooks `whsec_` secret);
//! - [`hmac`]: HMAC-SHA1/256/512 and constant-time comparison of a received
//!   signature in hex or base64;
//! - [`standard_webhooks`]: verifying and signing the Standard Webhooks
//!   (Svix) scheme, with several secrets for rotation;
//! - [`dedup_key`]: a stable key from the parts that identify a delivery;
//! - [`fuzz`]: fuzzer bytes as a request, for the fuzz targets;
//! - [`http`]: what an HTTP answer means for an action's job;
//! - [`message`]: what a queue action (redis, amqp, nats) sends for a job,
//!   and the client certificate it may show its broker;
//! - `api` (feature `api`): a provider's management API, for the plugins
//!   that manage their provider's subscriptions;
//! - `catalog_check` (feature `catalog-check`, for tests): a provider's
//!   catalog compiles, and its documents' examples match their schemas.
//!
//! It is linked into each plugin library; it is not part of the ABI.

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "catalog-check")]
pub mod catalog_check;
pub mod fuzz;
pub mod hmac;
pub mod http;
pub mod message;
pub mod standard_webhooks;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// How a configured secret string becomes key bytes.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    /// The string's UTF-8 bytes (the default).
    #[default]
    Utf8,
    /// Standard base64 of the key bytes.
    Base64,
    /// `whsec_` followed by base64 (Standard Webhooks); the prefix is optional.
    Whsec,
}

/// A secret's key bytes. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Decodes a configured secret. `what` names the setting in errors (the
    /// secret itself never appears in one).
    pub fn decode(text: &str, encoding: SecretEncoding, what: &str) -> Result<Secret, String> {
        let bytes = match encoding {
            SecretEncoding::Utf8 => text.as_bytes().to_vec(),
            SecretEncoding::Base64 => decode_base64(text.trim())
                .ok_or_else(|| format!("{what} is not valid base64 (encoding = \"base64\")"))?,
            SecretEncoding::Whsec => {
                let t = text.trim();
                decode_base64(t.strip_prefix("whsec_").unwrap_or(t)).ok_or_else(|| {
                    format!("{what} is not a Standard Webhooks secret (whsec_ followed by base64)")
                })?
            }
        };
        if bytes.is_empty() {
            return Err(format!("{what} is empty"));
        }
        Ok(Secret(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Base64 in any of its common spellings: standard or url-safe alphabet,
/// padded or not. None if none decodes.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
}

pub use switchyard_plugin_api::percent_encode;

/// A secret token sent in the query parameter `param`, else as the last
/// segment of the request's path (`/hooks/{source}/{token}`).
pub fn token_in_query_or_path(
    request: &switchyard_plugin_api::Request<'_>,
    param: &str,
) -> Option<String> {
    request
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == param)
        .map(|(_, v)| v)
        .or_else(|| {
            request
                .path
                .trim_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
}

/// Standard padded base64.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Hex in either case; None unless every character is a hex digit and the
/// length is even.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    ::hex::decode(s).ok()
}

/// A stable dedup key: SHA-256 (hex) over the parts, each ended by a NUL so
/// that `("ab", "c")` and `("a", "bc")` differ.
pub fn dedup_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize())
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The current time as RFC 3339 UTC with milliseconds, for samples.
pub fn rfc3339_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rfc3339_from_ms(ms)
}

/// RFC 3339 UTC with milliseconds from Unix milliseconds
/// (`2021-02-25T15:02:10.123Z`).
pub fn rfc3339_from_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_per_encoding_and_never_show() {
        let s = Secret::decode("abc", SecretEncoding::Utf8, "secret").unwrap();
        assert_eq!(s.bytes(), b"abc");
        assert_eq!(format!("{s:?}"), "Secret(3 bytes)");
        let b = Secret::decode("AAEC", SecretEncoding::Base64, "secret").unwrap();
        assert_eq!(b.bytes(), &[0, 1, 2]);
        let w = Secret::decode("whsec_AAEC", SecretEncoding::Whsec, "secret").unwrap();
        assert_eq!(w.bytes(), &[0, 1, 2]);
        let err =
            Secret::decode("not base64!", SecretEncoding::Base64, "signing_secret").unwrap_err();
        assert!(
            err.contains("signing_secret") && !err.contains("not base64!"),
            "{err}"
        );
        assert!(Secret::decode("", SecretEncoding::Utf8, "secret").is_err());
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn dedup_keys_separate_their_parts() {
        assert_ne!(dedup_key(&["ab", "c"]), dedup_key(&["a", "bc"]));
        assert_eq!(dedup_key(&["x"]), dedup_key(&["x"]));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_ms(1_614_265_330_123),
            "2021-02-25T15:02:10.123Z"
        );
        assert_eq!(rfc3339_from_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
