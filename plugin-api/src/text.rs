//! Text helpers plugins share: query strings, percent-encoding, and
//! keeping credentials out of what is shown or stored.

/// Splits and percent-decodes a query string (`a=1&b=x%20y`, `+` is a
/// space), as `application/x-www-form-urlencoded`.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters: a value
/// safe in a query string or a path segment.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// What a credential is replaced with wherever it would be shown.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of each credential, as is or
/// percent-encoded, replaced by [`REDACTED`]. Credentials shorter than four
/// bytes are left (they would blot out ordinary words). The one scrubber of
/// the host and the plugins: a message built from what a provider's API
/// answered, a stored request, a log line.
pub fn redact(text: &str, credentials: &[impl AsRef<str>]) -> String {
    let mut out = text.to_string();
    for c in credentials.iter().map(AsRef::as_ref) {
        if c.len() < 4 {
            continue;
        }
        if out.contains(c) {
            out = out.replace(c, REDACTED);
        }
        let encoded = percent_encode(c);
        if encoded != c && out.contains(encoded.as_str()) {
            out = out.replace(encoded.as_str(), REDACTED);
        }
    }
    out
}

/// Whether a credential (of four bytes or more) appears in `text`, as is or
/// percent-encoded.
pub fn carries_credential(text: &str, credentials: &[impl AsRef<str>]) -> bool {
    credentials.iter().map(AsRef::as_ref).any(|c| {
        if c.len() < 4 {
            return false;
        }
        if text.contains(c) {
            return true;
        }
        let encoded = percent_encode(c);
        encoded != c && text.contains(encoded.as_str())
    })
}
