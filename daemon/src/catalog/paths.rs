//! Whether a path into an event's data can exist for a type: a rule that
//! reads `event.data.eventData.invoiceid` from `tight.invoiceViewed`,
//! whose `eventData` lists `entityId` and nothing else, reads a path no
//! such event has.
//!
//! A path cannot exist when, on the way, a closed object
//! (`additionalProperties: false`) does not list the next key, or a value
//! the schema says is not an object (or not an array) is read into. What
//! the schema leaves open can have anything. Branches (`anyOf`, `oneOf`,
//! `if`/`then`/`else`) allow a path when one of them does; `allOf` and
//! `$ref` (within the schema) when all do.

use std::collections::BTreeSet;

use serde_json::Value;

/// One step of a read: `.key` or `["key"]`, or `[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index,
}

/// Where a path cannot go on, and what it could read there instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impossible {
    /// The index of the step that cannot be taken.
    pub at: usize,
    /// The keys the schema lists there.
    pub known: BTreeSet<String>,
    /// What the value there is instead, when it is not an object/array.
    pub is: Option<String>,
}

impl Impossible {
    /// The listed key the step most likely meant (the same but for case,
    /// or a couple of letters off).
    pub fn suggestion(&self, key: &str) -> Option<&str> {
        let lower = key.to_lowercase();
        self.known
            .iter()
            .find(|k| k.to_lowercase() == lower)
            .or_else(|| {
                self.known
                    .iter()
                    .map(|k| (strsim::levenshtein(k, key), k))
                    .filter(|(d, k)| *d <= 2 && *d < k.len())
                    .min()
                    .map(|(_, k)| k)
            })
            .map(String::as_str)
    }
}

const MAX_DEPTH: usize = 32;

/// Whether `path` can exist in data valid against `schema`.
pub fn check(schema: &Value, path: &[Seg]) -> Result<(), Impossible> {
    at(schema, schema, path, 0, 0)
}

fn at(root: &Value, s: &Value, path: &[Seg], i: usize, depth: usize) -> Result<(), Impossible> {
    if i >= path.len() || depth > MAX_DEPTH {
        return Ok(());
    }
    let obj = match s {
        Value::Bool(true) => return Ok(()),
        Value::Object(o) => o,
        _ => {
            return Err(Impossible {
                at: i,
                known: BTreeSet::new(),
                is: None,
            })
        }
    };
    // Everything this schema says must hold at once.
    own(root, s, path, i, depth)?;
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        if let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            at(root, target, path, i, depth + 1)?;
        }
    }
    for part in obj
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        at(root, part, path, i, depth + 1)?;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(parts) = obj.get(key).and_then(Value::as_array) {
            any(root, parts.iter(), path, i, depth)?;
        }
    }
    if obj.contains_key("if") {
        let then = obj.get("then").unwrap_or(&Value::Bool(true));
        let otherwise = obj.get("else").unwrap_or(&Value::Bool(true));
        any(root, [then, otherwise].into_iter(), path, i, depth)?;
    }
    Ok(())
}

/// Possible when one of `parts` allows it; else what they all list.
fn any<'a>(
    root: &Value,
    parts: impl Iterator<Item = &'a Value>,
    path: &[Seg],
    i: usize,
    depth: usize,
) -> Result<(), Impossible> {
    let mut failed: Option<Impossible> = None;
    for part in parts {
        match at(root, part, path, i, depth + 1) {
            Ok(()) => return Ok(()),
            Err(e) => match &mut failed {
                Some(f) if f.at == e.at => f.known.extend(e.known),
                Some(f) if f.at > e.at => {}
                _ => failed = Some(e),
            },
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The types a schema allows, if it says.
fn types(s: &Value) -> Option<Vec<&str>> {
    match s.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// What the schema's own keywords (not its branches) say of the step.
fn own(root: &Value, s: &Value, path: &[Seg], i: usize, depth: usize) -> Result<(), Impossible> {
    let allowed = types(s);
    let constant = s.get("const").filter(|c| !c.is_object() && !c.is_array());
    let not = |want: &str| -> Result<(), Impossible> {
        let is = match (&allowed, constant) {
            (_, Some(c)) => Some(format!("the constant {c}")),
            (Some(ts), None) if !ts.contains(&want) => Some(ts.join(" or ")),
            _ => return Ok(()),
        };
        Err(Impossible {
            at: i,
            known: BTreeSet::new(),
            is,
        })
    };
    match &path[i] {
        Seg::Key(key) => {
            not("object")?;
            if let Some(next) = s.get("properties").and_then(|p| p.get(key)) {
                return at(root, next, path, i + 1, depth + 1);
            }
            if s.get("patternProperties").is_some() {
                return Ok(());
            }
            match s.get("additionalProperties") {
                Some(Value::Bool(false)) => Err(Impossible {
                    at: i,
                    known: s
                        .get("properties")
                        .and_then(Value::as_object)
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default(),
                    is: None,
                }),
                Some(next @ Value::Object(_)) => at(root, next, path, i + 1, depth + 1),
                _ => Ok(()),
            }
        }
        Seg::Index => {
            not("array")?;
            match s.get("items") {
                Some(next) => at(root, next, path, i + 1, depth + 1),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(path: &str) -> Vec<Seg> {
        path.split('.')
            .map(|k| match k {
                "[]" => Seg::Index,
                k => Seg::Key(k.to_string()),
            })
            .collect()
    }

    #[test]
    fn closed_objects_and_scalars_end_a_path() {
        let schema = json!({
            "type": "object",
            "properties": {
                "eventData": {"type": "object", "properties": {"entityId": {"type": "string"}},
                              "additionalProperties": false},
                "data": {"type": "object"},
                "type": {"const": "LIFECYCLE"},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {}}, "additionalProperties": false}}
            },
            "additionalProperties": false
        });
        assert_eq!(check(&schema, &keys("eventData.entityId")), Ok(()));
        assert_eq!(check(&schema, &keys("data.anything.at.all")), Ok(()));
        assert_eq!(check(&schema, &keys("lines.[].sku")), Ok(()));
        let e = check(&schema, &keys("eventData.entityid")).unwrap_err();
        assert_eq!((e.at, e.suggestion("entityid")), (1, Some("entityId")));
        let e = check(&schema, &keys("eventData.entityIdd")).unwrap_err();
        assert_eq!(e.suggestion("entityIdd"), Some("entityId"));
        assert_eq!(
            check(&schema, &keys("eventData.total"))
                .unwrap_err()
                .suggestion("total"),
            None
        );
        let e = check(&schema, &keys("type.name")).unwrap_err();
        assert_eq!(e.is.as_deref(), Some("the constant \"LIFECYCLE\""));
        assert_eq!(check(&schema, &keys("lines.[].qty")).unwrap_err().at, 2);
        assert_eq!(check(&schema, &keys("eventdata")).unwrap_err().at, 0);
    }

    #[test]
    fn branches_allow_what_one_of_them_does() {
        let schema = json!({
            "$defs": {"editor": {"type": "object", "properties": {"userId": {}}, "additionalProperties": false}},
            "type": "object",
            "if": {"required": ["entities"]},
            "then": {"properties": {"entities": {}, "userId": {}}, "additionalProperties": false},
            "else": {"properties": {"url": {}, "editor": {"$ref": "#/$defs/editor"}}, "additionalProperties": false}
        });
        assert_eq!(check(&schema, &keys("entities")), Ok(()));
        assert_eq!(check(&schema, &keys("url")), Ok(()));
        assert_eq!(check(&schema, &keys("editor.userId")), Ok(()));
        let e = check(&schema, &keys("editor.userid")).unwrap_err();
        assert_eq!(e.suggestion("userid"), Some("userId"));
        let e = check(&schema, &keys("uri")).unwrap_err();
        assert_eq!(e.known.len(), 4);
        assert_eq!(e.suggestion("uri"), Some("url"));
    }
}
