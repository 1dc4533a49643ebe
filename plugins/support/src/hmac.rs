//! HMAC over bytes, and checking a received signature against it.

use ::hmac::{Hmac, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{decode_base64, decode_hex};

/// The hash under an HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// HMAC of the concatenation of `parts` under `key`.
pub fn mac(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + ::hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// How a signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hex in either case.
    #[default]
    Hex,
    /// Base64, standard or url-safe, padded or not.
    Base64,
    /// Whichever of the two decodes to the digest's length.
    Any,
}

/// Decodes a received signature to bytes of the expected length.
pub fn decode_signature(text: &str, encoding: Encoding, len: usize) -> Option<Vec<u8>> {
    let text = text.trim();
    let hex = || decode_hex(text).filter(|b| b.len() == len);
    let b64 = || decode_base64(text).filter(|b| b.len() == len);
    match encoding {
        Encoding::Hex => hex(),
        Encoding::Base64 => b64(),
        Encoding::Any => hex().or_else(b64),
    }
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Whether `received` (text in `encoding`) is the HMAC of `parts`.
pub fn verify(
    alg: Algorithm,
    key: &[u8],
    parts: &[&[u8]],
    received: &str,
    encoding: Encoding,
) -> bool {
    match decode_signature(received, encoding, alg.output_len()) {
        Some(sig) => equal(&mac(alg, key, parts), &sig),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        let m = mac(
            Algorithm::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            hex(&m),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let m = mac(
            Algorithm::Sha512,
            b"Jefe",
            &[b"what do ya want for nothing?"],
        );
        assert!(
            hex(&m).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554")
        );
        // RFC 2202 test case 2 for SHA-1.
        let m = mac(Algorithm::Sha1, b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(hex(&m), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn signatures_decode_by_encoding() {
        let m = mac(Algorithm::Sha256, b"k", &[b"body"]);
        let h = hex(&m);
        let b = crate::base64(&m);
        assert!(verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &h,
            Encoding::Hex
        ));
        assert!(verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &h.to_uppercase(),
            Encoding::Hex
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &b,
            Encoding::Hex
        ));
        assert!(verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &b,
            Encoding::Base64
        ));
        assert!(verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &b,
            Encoding::Any
        ));
        assert!(verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &h,
            Encoding::Any
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"k",
            &[b"Body"],
            &h,
            Encoding::Any
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"k2",
            &[b"body"],
            &h,
            Encoding::Any
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            &h[..62],
            Encoding::Any
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"k",
            &[b"body"],
            "",
            Encoding::Any
        ));
    }
}
