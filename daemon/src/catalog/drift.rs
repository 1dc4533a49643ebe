//! What a schema's complaint about an event means as drift: a property the
//! documentation requires and the event lacks, a value of another JSON
//! type, a property the documentation does not list, another value than
//! the one documented — each at a path into the event's data, array
//! indexes written `*` so that one drift in a list is one drift.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

/// How an event differs from its type's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftKind {
    /// The catalog does not list the event's type.
    UnknownType,
    /// A property the schema requires is absent.
    Missing,
    /// A value is of another JSON type than documented.
    TypeChanged,
    /// A property a closed object does not list.
    Added,
    /// Anything else the schema refuses (another constant, a value out of
    /// its range or list).
    Invalid,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::UnknownType => "unknown_type",
            DriftKind::Missing => "missing",
            DriftKind::TypeChanged => "type_changed",
            DriftKind::Added => "added",
            DriftKind::Invalid => "invalid",
        }
    }
}

/// One difference between an event and its type's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// A JSON pointer into the event's data, indexes as `*`; empty for
    /// the type itself.
    pub path: String,
    pub kind: DriftKind,
    /// What differs, without the event's values (they may be personal).
    pub detail: String,
}

/// `/lines/0/sku` → `/lines/*/sku`: a drift in a list is one drift.
fn general(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A property's name as a JSON pointer segment.
fn segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A value's JSON Schema type (`integer` for a whole number).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.to_string(),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// The drift in one schema error (an object with several properties it
/// does not list is one drift each).
pub fn of_error(e: &jsonschema::ValidationError<'_>, out: &mut Vec<Drift>) {
    let at = general(e.instance_path().as_str());
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(Drift {
                path: format!("{at}/{}", segment(name)),
                kind: DriftKind::Missing,
                detail: "documented as required, absent".into(),
            });
        }
        ValidationErrorKind::Type { kind } => out.push(Drift {
            path: at,
            kind: DriftKind::TypeChanged,
            detail: format!(
                "documented as {}, sent as {}",
                expected(kind),
                json_type(e.instance())
            ),
        }),
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                out.push(Drift {
                    path: format!("{at}/{}", segment(name)),
                    kind: DriftKind::Added,
                    detail: "not in the documentation".into(),
                });
            }
        }
        ValidationErrorKind::FalseSchema => out.push(Drift {
            path: at,
            kind: DriftKind::Added,
            detail: "not in the documentation".into(),
        }),
        other => out.push(Drift {
            path: at,
            kind: DriftKind::Invalid,
            // The keyword, never the value the event sent.
            detail: format!("does not meet the schema's {}", other.keyword()),
        }),
    }
}

/// Every drift in `data` against `validator` (none: it matches).
pub fn check(validator: &jsonschema::Validator, data: &Value) -> Vec<Drift> {
    let mut out = Vec::new();
    if validator.is_valid(data) {
        return out;
    }
    for e in validator.iter_errors(data) {
        of_error(&e, &mut out);
    }
    out.sort_by(|a, b| (&a.path, a.kind.as_str()).cmp(&(&b.path, b.kind.as_str())));
    out.dedup_by(|a, b| a.path == b.path && a.kind == b.kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drift(schema: Value, data: Value) -> Vec<(String, &'static str, String)> {
        let v = jsonschema::validator_for(&schema).unwrap();
        check(&v, &data)
            .into_iter()
            .map(|d| (d.path, d.kind.as_str(), d.detail))
            .collect()
    }

    #[test]
    fn each_kind_of_drift_is_named_at_its_path() {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "lines": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}},
                    "additionalProperties": false
                }},
                "kind": {"const": "LIFECYCLE"}
            },
            "required": ["id", "kind"],
            "additionalProperties": false
        });
        assert!(drift(schema.clone(), json!({"id": "a", "kind": "LIFECYCLE"})).is_empty());
        let found = drift(
            schema,
            json!({"kind": "OTHER", "lines": [{"sku": 1}, {"sku": 2, "qty": 3}], "extra~/x": true}),
        );
        assert_eq!(
            found,
            vec![
                (
                    "/extra~0~1x".into(),
                    "added",
                    "not in the documentation".into()
                ),
                (
                    "/id".into(),
                    "missing",
                    "documented as required, absent".into()
                ),
                (
                    "/kind".into(),
                    "invalid",
                    "does not meet the schema's const".into()
                ),
                (
                    "/lines/*/qty".into(),
                    "added",
                    "not in the documentation".into()
                ),
                (
                    "/lines/*/sku".into(),
                    "type_changed",
                    "documented as string, sent as integer".into()
                ),
            ]
        );
    }

    #[test]
    fn a_drift_never_quotes_the_value() {
        let schema = json!({"type": "object", "properties": {"email": {"type": "integer"}, "plan": {"enum": ["a", "b"]}}});
        let found = drift(
            schema,
            json!({"email": "ada@example.com", "plan": "secret-plan"}),
        );
        assert_eq!(found.len(), 2);
        for (_, _, detail) in found {
            assert!(
                !detail.contains("ada@") && !detail.contains("secret-plan"),
                "{detail}"
            );
        }
    }
}
