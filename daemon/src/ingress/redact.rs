//! Redaction: what of a request is never stored or shown. The usual
//! credential headers (`Authorization`, `Cookie`, API-key headers), the
//! headers the source's verification reads (`token_header`,
//! `signature_header`) and its `redact_headers` are replaced whole, whatever
//! they hold (an old, rotated token too); so is any other header that
//! carries one of the source's credentials; credential-looking query
//! parameters, and every value of the source's credentials wherever else it
//! appears (path, query; as sent or percent-encoded) become `[redacted]`
//! before the request is written or shown. The body is kept as sent: it is what the signature covers and
//! what a replay re-verifies.

use crate::host::OwnedRequest;
use crate::store::StoredRequest;

/// Header names whose values are credentials and never stored.
const SECRET_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// Query parameter names whose values are credentials.
const SECRET_PARAMS: [&str; 7] = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "signature",
];

pub use switchyard_plugin_api::{carries_credential, redact as redact_values, REDACTED};

/// Redacts credentials in headers: the usual ones and `extra` names (a
/// source's configured auth header), compared case-insensitively.
pub fn redact_headers(headers: &[(String, Vec<u8>)], extra: &[String]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let secret = SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
                || extra.iter().any(|s| name.eq_ignore_ascii_case(s));
            let value = if secret {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value).into_owned()
            };
            (name.clone(), value)
        })
        .collect()
}

/// Redacts credential-looking query parameters, keeping the rest as sent.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let k = key.to_ascii_lowercase();
            if SECRET_PARAMS.contains(&k.as_str()) || k.contains("token") || k.contains("secret") {
                format!("{key}={REDACTED}")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The request as the store keeps it, credentials redacted.
pub fn stored_request(
    req: &OwnedRequest,
    source: &str,
    received_at_ms: i64,
    redact_headers: &[String],
    credentials: &[String],
) -> StoredRequest {
    StoredRequest {
        id: crate::event::new_id(),
        source: source.to_string(),
        received_at_ms,
        method: req.method.clone(),
        path: redact_values(&req.path, credentials),
        query: redact_values(&redact_query(&req.query), credentials),
        headers: self::redact_headers(&req.headers, redact_headers)
            .into_iter()
            .map(|(n, v)| {
                // A header that carries a credential anywhere is replaced
                // whole: what is left around it would tell its length and
                // place (`Bearer [redacted]4`).
                let v = if carries_credential(&v, credentials) {
                    REDACTED.to_string()
                } else {
                    v
                };
                (n, v)
            })
            .collect(),
        body: req.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let headers = vec![
            ("authorization".to_string(), b"Basic abc".to_vec()),
            ("x-my-auth".to_string(), b"s3cret".to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ];
        let out = redact_headers(&headers, &["X-My-Auth".into()]);
        assert_eq!(out[0].1, REDACTED);
        assert_eq!(out[1].1, REDACTED);
        assert_eq!(out[2].1, "application/json");
        assert_eq!(
            redact_query("a=1&token=xyz&my_token=q&flag"),
            "a=1&token=[redacted]&my_token=[redacted]&flag"
        );
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn credentials_are_redacted_wherever_they_appear() {
        let creds = vec!["s3cret tok".to_string()];
        assert_eq!(redact_values("/a/s3cret tok", &creds), "/a/[redacted]");
        assert_eq!(
            redact_values("t=s3cret%20tok&x=1", &creds),
            "t=[redacted]&x=1"
        );
        assert_eq!(
            redact_values("Bearer s3cret tok", &creds),
            "Bearer [redacted]"
        );
        assert_eq!(redact_values("nothing", &creds), "nothing");
    }
}
