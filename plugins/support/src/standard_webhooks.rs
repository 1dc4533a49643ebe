//! Standard Webhooks (<https://www.standardwebhooks.com>), the scheme Svix
//! delivers with.
//!
//! Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: space-separated `v1,<base64>` entries, one per active
//! secret. Svix sends the same values as `svix-id`, `svix-timestamp` and
//! `svix-signature`. The signed content is `{id}.{timestamp}.{body}`,
//! HMAC-SHA256 under the secret's bytes (base64 after `whsec_`).

use switchyard_plugin_api::{Rejection, Request};

use crate::hmac::{equal, mac, Algorithm};
use crate::{base64, decode_base64, Secret};

/// The headers of a Standard Webhooks delivery, as found on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> Headers<'a> {
    /// Reads the `webhook-*` headers, else the `svix-*` ones. None when
    /// neither set is complete.
    pub fn find(request: &Request<'a>) -> Option<Headers<'a>> {
        ["webhook", "svix"].iter().find_map(|prefix| {
            Some(Headers {
                id: request.header_str(&format!("{prefix}-id"))?,
                timestamp: request.header_str(&format!("{prefix}-timestamp"))?,
                signature: request.header_str(&format!("{prefix}-signature"))?,
            })
        })
    }

    /// Whether the request carries any of the headers (a partial set is an
    /// error, not an unsigned request).
    pub fn any_present(request: &Request<'_>) -> bool {
        ["webhook", "svix"].iter().any(|p| {
            ["id", "timestamp", "signature"]
                .iter()
                .any(|h| request.header(&format!("{p}-{h}")).is_some())
        })
    }
}

/// Checks a delivery: the timestamp within `tolerance_secs` of `now` in
/// either direction, and one `v1` signature made with one of `secrets`.
pub fn verify(
    secrets: &[Secret],
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Rejection> {
    if headers.id.is_empty() {
        return Err(Rejection::unauthenticated("empty webhook-id"));
    }
    let ts: i64 = headers
        .timestamp
        .parse()
        .map_err(|_| Rejection::unauthenticated("webhook-timestamp is not a Unix time"))?;
    if now - ts > tolerance_secs {
        return Err(Rejection::expired(format!(
            "webhook-timestamp is {}s old, tolerance is {tolerance_secs}s",
            now - ts
        )));
    }
    if ts - now > tolerance_secs {
        return Err(Rejection::expired(format!(
            "webhook-timestamp is {}s in the future, tolerance is {tolerance_secs}s",
            ts - now
        )));
    }
    let received: Vec<Vec<u8>> = headers
        .signature
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(decode_base64)
        .filter(|sig| sig.len() == 32)
        .collect();
    if received.is_empty() {
        return Err(Rejection::unauthenticated(
            "webhook-signature holds no v1 signature",
        ));
    }
    let content: [&[u8]; 5] = [
        headers.id.as_bytes(),
        b".",
        headers.timestamp.as_bytes(),
        b".",
        body,
    ];
    for secret in secrets {
        let expected = mac(Algorithm::Sha256, secret.bytes(), &content);
        // Every pair is compared, so the time taken does not say which matched.
        let mut matched = false;
        for sig in &received {
            matched |= equal(&expected, sig);
        }
        if matched {
            return Ok(());
        }
    }
    Err(Rejection::unauthenticated(
        "no webhook-signature matches a configured secret",
    ))
}

/// The `webhook-signature` value for a message: `v1,<base64>`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let m = mac(
        Algorithm::Sha256,
        secret.bytes(),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!("v1,{}", base64(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretEncoding;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Secret {
        Secret::decode(SECRET, SecretEncoding::Whsec, "secret").unwrap()
    }

    fn headers(sig: &str) -> Headers<'_> {
        Headers {
            id: ID,
            timestamp: "1614265330",
            signature: sig,
        }
    }

    #[test]
    fn the_published_vector() {
        assert_eq!(sign(&secret(), ID, TS, BODY), SIG);
        verify(&[secret()], &headers(SIG), BODY, TS, 300).unwrap();
    }

    #[test]
    fn rotation_and_several_entries() {
        let other = Secret::from_bytes(b"another key".to_vec());
        let two = format!("v1,AAAA {SIG} v2,whatever");
        verify(&[other.clone(), secret()], &headers(&two), BODY, TS, 300).unwrap();
        let err = verify(&[other], &headers(SIG), BODY, TS, 300).unwrap_err();
        assert_eq!(err.kind, switchyard_plugin_api::RejectKind::Unauthenticated);
    }

    #[test]
    fn tampering_and_time() {
        use switchyard_plugin_api::RejectKind::*;
        let s = [secret()];
        let kind = |h: Headers<'_>, body: &[u8], now: i64| {
            verify(&s, &h, body, now, 300).unwrap_err().kind
        };
        assert_eq!(
            kind(headers(SIG), br#"{"test": 2432232315}"#, TS),
            Unauthenticated
        );
        assert_eq!(kind(headers(SIG), BODY, TS + 301), Expired);
        assert_eq!(kind(headers(SIG), BODY, TS - 301), Expired);
        assert_eq!(kind(headers("v1,"), BODY, TS), Unauthenticated);
        assert_eq!(
            kind(headers(&SIG.replace("v1,", "v2,")), BODY, TS),
            Unauthenticated
        );
        let mut h = headers(SIG);
        h.id = "msg_other";
        assert_eq!(kind(h, BODY, TS), Unauthenticated);
        let mut h = headers(SIG);
        h.timestamp = "1614265331";
        assert_eq!(kind(h, BODY, TS), Unauthenticated);
        h.timestamp = "soon";
        assert_eq!(kind(h, BODY, TS), Unauthenticated);
        verify(&s, &headers(SIG), BODY, TS + 300, 300).unwrap();
        verify(&s, &headers(SIG), BODY, TS - 300, 300).unwrap();
    }
}
