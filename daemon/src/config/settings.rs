//! A plugin's settings: the keys of a `[sources.NAME]` or `[actions.NAME]`
//! table that are not the daemon's own, handed to the plugin as JSON with
//! secret references resolved.

use serde_json::Value;

use super::problem::Problem;
use super::secret;

/// Converts a table to JSON, resolving secret references and warning about
/// literal secrets (by dotted name under `scope`, never by value).
pub fn resolve(
    table: toml::Table,
    scope: &str,
    location: &str,
    warnings: &mut Vec<Problem>,
) -> Result<Value, Vec<Problem>> {
    let mut value = toml_to_json(toml::Value::Table(table));
    for literal in secret::literal_secrets(&value, scope) {
        warnings.push(Problem::new(
            location,
            format!(
                "{literal} is a literal secret in the config file; \
                 prefer {{ env = \"VAR\" }} or {{ file = \"/path\" }}"
            ),
        ));
    }
    secret::resolve_secrets(&mut value, scope).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| Problem::new(location, e.to_string()))
            .collect::<Vec<_>>()
    })?;
    Ok(value)
}

/// TOML to JSON: dates become their text, a float JSON cannot hold null.
pub fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Reads a section's own keys out of its resolved JSON with serde; a
/// missing or mistyped key becomes a problem naming `scope`.
pub fn section<T: serde::de::DeserializeOwned>(
    value: Value,
    scope: &str,
    location: &str,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // serde_json appends " at line 0 column 0" to errors from a Value.
        let text = e.inner().to_string();
        let text = text.strip_suffix(" at line 0 column 0").unwrap_or(&text);
        let at = if key == "." {
            scope.to_string()
        } else {
            format!("{scope}.{key}")
        };
        Problem::new(location, format!("{at}: {text}"))
    })
}
