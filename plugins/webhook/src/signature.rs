//! The `hmac` scheme: an HMAC of a signed content made of the raw body
//! and, optionally, a timestamp, read from a header in the configured form.

use switchyard_plugin_api::{Rejection, Request};
use switchyard_plugin_support::hmac::{self, equal, Algorithm, Encoding};
use switchyard_plugin_support::{base64, hex, Secret};

#[derive(Debug)]
pub struct HmacCheck {
    pub secrets: Vec<Secret>,
    pub algorithm: Algorithm,
    pub header: String,
    pub encoding: Encoding,
    pub prefix: Option<String>,
    pub key: Option<String>,
    pub timestamp_key: Option<String>,
    pub timestamp_header: Option<String>,
    pub content: String,
}

impl HmacCheck {
    pub fn uses_timestamp(&self) -> bool {
        self.content.contains("{timestamp}")
            || self.timestamp_key.is_some()
            || self.timestamp_header.is_some()
    }

    /// The signed content: the template with `{timestamp}` and `{body}` filled.
    pub fn content(&self, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + self.content.len());
        let mut rest = self.content.as_str();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{body}") {
                out.extend_from_slice(body);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{timestamp}") {
                out.extend_from_slice(timestamp.as_bytes());
                rest = r;
            } else {
                let c = rest.chars().next().expect("not empty");
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mac = hmac::mac(
            self.algorithm,
            self.secrets[0].bytes(),
            &[&self.content(timestamp, body)],
        );
        let text = match self.encoding {
            Encoding::Base64 => base64(&mac),
            Encoding::Hex | Encoding::Any => hex(&mac),
        };
        let text = format!("{}{text}", self.prefix.as_deref().unwrap_or(""));
        match (&self.key, &self.timestamp_key) {
            (Some(k), Some(t)) => format!("{t}={timestamp},{k}={text}"),
            (Some(k), None) => format!("{k}={text}"),
            _ => text,
        }
    }

    pub fn verify(&self, request: &Request<'_>, now: i64, tolerance: i64) -> Result<(), Rejection> {
        let header = request
            .header_str(&self.header)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Rejection::unauthenticated(format!("missing {} header", self.header)))?;
        // The candidate signatures, and the timestamp if the header holds one.
        let (candidates, mut timestamp): (Vec<&str>, Option<&str>) = match &self.key {
            Some(key) => {
                let pairs: Vec<(&str, &str)> = header
                    .split(',')
                    .filter_map(|p| p.trim().split_once('='))
                    .collect();
                let sigs = pairs
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| *v)
                    .collect();
                let ts = self
                    .timestamp_key
                    .as_ref()
                    .and_then(|t| pairs.iter().find(|(k, _)| k == t).map(|(_, v)| *v));
                (sigs, ts)
            }
            None => (header.split_whitespace().collect(), None),
        };
        if let Some(h) = &self.timestamp_header {
            timestamp = request.header_str(h);
        }
        let timestamp = if self.uses_timestamp() {
            let ts = timestamp
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Rejection::unauthenticated("missing signature timestamp"))?;
            let at: i64 = ts.parse().map_err(|_| {
                Rejection::unauthenticated("signature timestamp is not a Unix time")
            })?;
            if (now - at).abs() > tolerance {
                return Err(Rejection::expired(format!(
                    "signature timestamp is {}s from now, tolerance is {tolerance}s",
                    now - at
                )));
            }
            ts
        } else {
            ""
        };
        let content = self.content(timestamp, request.body);
        let len = self.algorithm.output_len();
        let received: Vec<Vec<u8>> = candidates
            .iter()
            .filter_map(|c| match &self.prefix {
                Some(p) => c.strip_prefix(p.as_str()),
                None => Some(c),
            })
            .filter_map(|c| hmac::decode_signature(c, self.encoding, len))
            .collect();
        if received.is_empty() {
            return Err(Rejection::unauthenticated(format!(
                "{} holds no signature in the configured form",
                self.header
            )));
        }
        for secret in &self.secrets {
            let expected = hmac::mac(self.algorithm, secret.bytes(), &[&content]);
            let mut matched = false;
            for sig in &received {
                matched |= equal(&expected, sig);
            }
            if matched {
                return Ok(());
            }
        }
        Err(Rejection::unauthenticated(format!(
            "{} does not match the body under any configured secret",
            self.header
        )))
    }
}
