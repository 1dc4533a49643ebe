//! Secret references in plugin settings.
//!
//! Anywhere in a source's or action's settings, a value may be written as
//! `{ env = "VAR" }` (an environment variable), `{ file = "PATH" }` (a file,
//! trailing newline dropped) or `{ credential = "NAME" }` (a systemd
//! credential: the file NAME in `$CREDENTIALS_DIRECTORY`, as `LoadCredential=`
//! provides it) instead of a literal string. They are replaced
//! by their value before the plugin sees its settings. A secret's value never
//! appears in a message.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{key}: environment variable {var} is not set (or not UTF-8)")]
    MissingEnv { key: String, var: String },
    #[error("{key}: cannot read secret file {path}: {reason}")]
    File {
        key: String,
        path: String,
        reason: String,
    },
    #[error("{key}: the secret is empty")]
    Empty { key: String },
    #[error("{key}: credential {name}: {reason}")]
    Credential {
        key: String,
        name: String,
        reason: String,
    },
}

fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    let v = std::fs::read_to_string(path)?;
    let v = v.strip_suffix('\n').unwrap_or(&v);
    let v = v.strip_suffix('\r').unwrap_or(v);
    Ok(v.to_string())
}

/// Settings that name where a credential is (a header, a query parameter,
/// a JSON pointer, a key of a signature header) hold a name, not the
/// credential: `token_header = "X-Partner-Token"`.
pub fn names_a_place(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["_header", "_headers", "_param", "_pointer"]
        .iter()
        .any(|s| k.ends_with(s))
        || matches!(k.as_str(), "signature_key" | "timestamp_key")
}

/// Keys whose literal string values are secrets, by name.
pub fn looks_like_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if names_a_place(&k) {
        return false;
    }
    k.contains("secret")
        || k.contains("token")
        || k.contains("password")
        || k.contains("passwd")
        || k == "key"
        || k.ends_with("_key")
        || k.ends_with("-key")
        // A Slack incoming webhook's URL is its credential.
        || k == "webhook_url"
}

/// Dotted names of literal (non-reference) secrets under `scope`.
pub fn literal_secrets(value: &Value, scope: &str) -> Vec<String> {
    let mut found = Vec::new();
    walk_literals(value, scope, &mut found);
    found
}

fn walk_literals(value: &Value, path: &str, found: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let here = format!("{path}.{k}");
            match v {
                Value::String(s) if !s.is_empty() && looks_like_secret_key(k) => found.push(here),
                Value::Object(_) => walk_literals(v, &here, found),
                _ => {}
            }
        }
    }
}

/// Replaces every `{ env = … }` / `{ file = … }` table with its value.
pub fn resolve_secrets(value: &mut Value, scope: &str) -> Result<(), Vec<SecretError>> {
    let mut errors = Vec::new();
    resolve_at(value, scope, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn resolve_at(value: &mut Value, path: &str, errors: &mut Vec<SecretError>) {
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(var)) = map.get("env") {
                    match std::env::var(var) {
                        Ok(v) if !v.is_empty() => *value = Value::String(v),
                        Ok(_) => errors.push(SecretError::Empty { key: path.into() }),
                        Err(_) => errors.push(SecretError::MissingEnv {
                            key: path.into(),
                            var: var.clone(),
                        }),
                    }
                    return;
                }
                if let Some(Value::String(name)) = map.get("credential") {
                    let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
                    let valid =
                        !name.is_empty() && !name.contains('/') && name != "." && name != "..";
                    let read = match (dir, valid) {
                        (_, false) => Err("not a credential name".to_string()),
                        (None, _) => Err("$CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit provides it)".to_string()),
                        (Some(d), true) => read_secret_file(&std::path::Path::new(&d).join(name))
                            .map_err(|e| e.to_string()),
                    };
                    match read {
                        Ok(v) if v.is_empty() => {
                            errors.push(SecretError::Empty { key: path.into() })
                        }
                        Ok(v) => *value = Value::String(v),
                        Err(reason) => errors.push(SecretError::Credential {
                            key: path.into(),
                            name: name.clone(),
                            reason,
                        }),
                    }
                    return;
                }
                if let Some(Value::String(file)) = map.get("file") {
                    match read_secret_file(std::path::Path::new(file.as_str())) {
                        Ok(v) => {
                            if v.is_empty() {
                                errors.push(SecretError::Empty { key: path.into() });
                            } else {
                                *value = Value::String(v);
                            }
                        }
                        Err(e) => errors.push(SecretError::File {
                            key: path.into(),
                            path: file.clone(),
                            reason: e.to_string(),
                        }),
                    }
                    return;
                }
            }
            for (k, v) in map.iter_mut() {
                resolve_at(v, &format!("{path}.{k}"), errors);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve_at(v, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}
