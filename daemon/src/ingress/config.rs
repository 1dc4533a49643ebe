//! The ingress part of each `[sources.NAME]` table (which plugin verifies
//! it, who may send, which headers are credentials) and the top-level keys
//! ingress reads (`max_body_bytes`, `trusted_proxies`). The rest of a
//! source's table is its plugin's settings.

use serde::Deserialize;
use serde_json::Value;

use crate::config::rate::Rate;
use crate::config::{de, settings, Problem};

/// Default body limit for one webhook: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A `[sources.NAME]` table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub plugin: String,
    /// The plugin's own settings, secrets resolved, as JSON.
    pub settings: Value,
    /// Where the table starts, for messages (`file:line`).
    pub location: String,
    /// Header names whose values are credentials: stored as `[redacted]`
    /// (beside the usual ones, such as `Authorization`).
    pub redact_headers: Vec<String>,
    /// Sender addresses or networks allowed; empty allows all (403 otherwise).
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Requests per period at most, in all (`rate`, `burst`) and from
    /// each sender (`rate_per_sender`): 429 past either.
    pub rate: Option<Rate>,
    pub rate_per_sender: Option<Rate>,
    /// Credential values from the settings (secrets, tokens, passwords):
    /// wherever a request carries one, it is redacted before storing.
    pub credentials: Vec<String>,
    /// How often the provider's subscriptions are checked, if at all, and
    /// whether one the provider switched off after failed deliveries is
    /// switched on again: read by the subscriptions stage.
    pub watch: Option<std::time::Duration>,
    pub reenable: bool,
    /// How long one call to the provider's subscriptions API may take
    /// (`api_timeout`, 30 s unless set): `subscriptions plan|apply|list`,
    /// the watcher and the dashboard's check say "timed out after …" past it.
    pub api_timeout: std::time::Duration,
    /// An event that drifted from its type's schema waits (state `held`)
    /// for an operator to release it, rather than being routed: read by
    /// the catalog.
    pub strict: bool,
    /// Types the provider's catalog does not describe get a schema learned
    /// from their first events (`learn_schemas`).
    pub learn_schemas: bool,
}

/// One call to a provider's subscriptions API, unless `api_timeout` says.
pub const DEFAULT_API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The keys of a source's table that ingress reads.
#[derive(Deserialize)]
struct Keys {
    plugin: String,
    #[serde(default)]
    redact_headers: Vec<String>,
    #[serde(default, deserialize_with = "de::nets")]
    allow_ips: Vec<ipnet::IpNet>,
    rate: Option<String>,
    burst: Option<u32>,
    rate_per_sender: Option<String>,
    #[serde(default, deserialize_with = "watch_every")]
    watch: Option<std::time::Duration>,
    #[serde(default)]
    reenable: bool,
    #[serde(default = "default_api_timeout", deserialize_with = "api_timeout")]
    api_timeout: std::time::Duration,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    learn_schemas: bool,
    #[serde(flatten)]
    settings: serde_json::Map<String, Value>,
}

impl SourceConfig {
    /// Reads a source's table (secrets already resolved) found at `location`.
    pub fn from_table(name: &str, table: Value, location: &str) -> Result<Self, Vec<Problem>> {
        let scope = format!("sources.{name}");
        let keys: Keys = settings::section(table, &scope, location).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let mut read = |key: &str, text: &Option<String>, burst: Option<u32>| {
            Rate::from_settings(text.as_deref()?, burst, None)
                .map_err(|why| {
                    problems.push(Problem::new(location, format!("{scope}.{key}: {why}")))
                })
                .ok()
        };
        let rate = read("rate", &keys.rate, keys.burst);
        let rate_per_sender = read("rate_per_sender", &keys.rate_per_sender, None);
        if keys.burst.is_some() && keys.rate.is_none() {
            problems.push(Problem::new(
                location,
                format!("{scope}.burst needs a rate (rate = \"100/s\")"),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let settings = Value::Object(keys.settings);
        let mut redact_headers = keys.redact_headers;
        redact_headers.extend(verification_headers(&settings));
        Ok(SourceConfig {
            name: name.to_string(),
            plugin: keys.plugin,
            credentials: credential_values(&settings),
            settings,
            location: location.to_string(),
            redact_headers,
            allow_ips: keys.allow_ips,
            rate,
            rate_per_sender,
            watch: keys.watch,
            reenable: keys.reenable,
            api_timeout: keys.api_timeout,
            strict: keys.strict,
            learn_schemas: keys.learn_schemas,
        })
    }
}

fn default_api_timeout() -> std::time::Duration {
    DEFAULT_API_TIMEOUT
}

/// `api_timeout = "30s"`: between a second and ten minutes.
fn api_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let t = de::duration(d)?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600)).contains(&t) {
        return Err(serde::de::Error::custom(
            "api_timeout must be between 1s and 10m",
        ));
    }
    Ok(t)
}

/// `watch = "15m"`: at least a second.
fn watch_every<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let every = de::duration(d)?;
    if every < std::time::Duration::from_secs(1) {
        return Err(serde::de::Error::custom("watch must be at least 1s"));
    }
    Ok(Some(every))
}

/// Setting names whose values are credentials: a request carrying one of
/// these values (in a header, the query or the path) has it redacted
/// before it is stored.
///
/// Broader than the config's literal-secret warning (any name holding
/// `key`, `apikey` or `private_key_pem` too): redacting a value that was
/// not secret costs nothing, a warning about one is noise. Neither takes a
/// setting that names a place (`token_header`) for a credential.
fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !crate::config::names_a_place(&k)
        && (["secret", "token", "password", "header_value", "key"]
            .iter()
            .any(|w| k.contains(w))
            || crate::config::looks_like_secret_key(&k))
}

/// Setting names whose values name a header the source's verification
/// reads (the generic plugin's token or signature header): its value is
/// replaced whole wherever a request is shown or kept — a delivery with an
/// old token, refused, must not show it.
const VERIFICATION_HEADER_KEYS: [&str; 3] = ["token_header", "signature_header", "auth_header"];

fn verification_headers(settings: &Value) -> Vec<String> {
    VERIFICATION_HEADER_KEYS
        .iter()
        .filter_map(|k| settings.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// The credential values among a plugin's settings (strings, or lists of
/// them), in nested tables too (a source's `[subscription]` holds its API
/// key or tokens).
fn credential_values(settings: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_credentials(settings, &mut out);
    out
}

fn collect_credentials(settings: &Value, out: &mut Vec<String>) {
    let Value::Object(map) = settings else {
        return;
    };
    for (k, v) in map {
        match v {
            Value::Object(_) => collect_credentials(v, out),
            _ if !is_credential_key(k) => {}
            Value::String(s) if s.len() >= 4 => out.push(s.clone()),
            Value::Array(items) => out.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| s.len() >= 4)
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{credential_values, is_credential_key};

    #[test]
    fn credentials_are_named_broadly_and_places_are_not_credentials() {
        for k in [
            "secret",
            "secrets",
            "token",
            "api_key",
            "apikey",
            "private_key_pem",
            "password",
            "auth_header_value",
        ] {
            assert!(is_credential_key(k), "{k}");
        }
        for k in [
            "token_header",
            "signature_header",
            "token_param",
            "token_pointer",
            "signature_key",
            "timestamp_key",
            "event_type",
        ] {
            assert!(!is_credential_key(k), "{k}");
        }
    }

    #[test]
    fn credentials_in_nested_tables_are_found() {
        let settings = serde_json::json!({
            "secret": "whsec_abcd",
            "subscription": {"api_url": "https://api.example", "api_key": "teal-key-1234",
                             "consumer_token": "ct-5678", "events": ["a.b"]},
        });
        let mut found = credential_values(&settings);
        found.sort();
        assert_eq!(found, ["ct-5678", "teal-key-1234", "whsec_abcd"]);
    }
}
