//! A schema learned from what arrives, for a source that learns
//! (`learn_schemas = true`) and a type its catalog does not describe (the
//! generic plugin's sources, above all): the first [`LEARN_FROM`] events of
//! the type are merged into one schema — each value's JSON types, an
//! object's properties (required: those every event had; closed, so a
//! property none of them had is drift later), an array's items — and
//! from then on the type's events are checked against it.
//!
//! Bounded: at most [`MAX_DEPTH`] levels and [`MAX_PROPERTIES`] properties
//! an object are described; deeper or wider, the object is left open.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// Events a schema is learned from.
pub const LEARN_FROM: u64 = 20;
const MAX_DEPTH: usize = 12;
const MAX_PROPERTIES: usize = 200;

/// What the events so far said of one place in them.
#[derive(Debug, Default, Clone)]
pub struct Shape {
    types: BTreeSet<&'static str>,
    /// Objects: each property's shape, and in how many objects it was.
    properties: BTreeMap<String, (Shape, u64)>,
    objects: u64,
    /// Too deep or too wide to describe: left open.
    open: bool,
    items: Option<Box<Shape>>,
}

impl Shape {
    /// Adds one value to what is known.
    pub fn add(&mut self, v: &Value) {
        self.add_at(v, 0);
    }

    fn add_at(&mut self, v: &Value, depth: usize) {
        self.types.insert(super::drift::json_type(v));
        if depth >= MAX_DEPTH {
            self.open = true;
            return;
        }
        match v {
            Value::Object(map) => {
                self.objects += 1;
                for (k, item) in map {
                    if !self.properties.contains_key(k) && self.properties.len() >= MAX_PROPERTIES {
                        self.open = true;
                        continue;
                    }
                    let (shape, seen) = self.properties.entry(k.clone()).or_default();
                    shape.add_at(item, depth + 1);
                    *seen += 1;
                }
            }
            Value::Array(items) => {
                let shape = self.items.get_or_insert_with(Default::default);
                for item in items.iter().take(MAX_PROPERTIES) {
                    shape.add_at(item, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// The JSON Schema of what was seen.
    pub fn schema(&self) -> Value {
        let mut types: Vec<&str> = self.types.iter().copied().collect();
        // An integer seen beside a fraction is a number.
        if types.contains(&"number") {
            types.retain(|t| *t != "integer");
        }
        let mut out = Map::new();
        match types.as_slice() {
            [] => {}
            [one] => {
                out.insert("type".into(), json!(one));
            }
            many => {
                out.insert("type".into(), json!(many));
            }
        }
        if self.types.contains("object") {
            let properties: Map<String, Value> = self
                .properties
                .iter()
                .map(|(k, (s, _))| (k.clone(), s.schema()))
                .collect();
            let required: Vec<&String> = self
                .properties
                .iter()
                .filter(|(_, (_, seen))| *seen == self.objects)
                .map(|(k, _)| k)
                .collect();
            out.insert("properties".into(), Value::Object(properties));
            if !required.is_empty() {
                out.insert("required".into(), json!(required));
            }
            if !self.open {
                out.insert("additionalProperties".into(), json!(false));
            }
        }
        if let Some(items) = &self.items {
            if !items.types.is_empty() {
                out.insert("items".into(), items.schema());
            }
        }
        Value::Object(out)
    }
}

impl Shape {
    /// The schema learned, as a document (with its `$schema`).
    pub fn learned(&self) -> Value {
        let mut schema = self.schema();
        if let Value::Object(m) = &mut schema {
            m.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
        }
        schema
    }
}

/// A schema from a list of examples.
pub fn schema_of<'a>(examples: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut shape = Shape::default();
    for e in examples {
        shape.add(e);
    }
    shape.learned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_types_required_properties_and_items() {
        let a = json!({"id": 1, "name": "a", "tags": ["x"], "owner": {"id": "u1"}});
        let b = json!({"id": 2, "tags": [], "owner": {"id": "u2", "admin": true}, "score": 1.5});
        let c =
            json!({"id": 3, "name": null, "tags": ["y", "z"], "owner": {"id": "u3"}, "score": 2});
        let schema = schema_of([&a, &b, &c]);
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["id", "owner", "tags"]));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["id"]["type"], "integer");
        assert_eq!(
            schema["properties"]["name"]["type"],
            json!(["null", "string"])
        );
        assert_eq!(schema["properties"]["score"]["type"], "number");
        assert_eq!(schema["properties"]["tags"]["items"]["type"], "string");
        assert_eq!(schema["properties"]["owner"]["required"], json!(["id"]));
        let v = jsonschema::validator_for(&schema).unwrap();
        for e in [&a, &b, &c] {
            assert!(v.is_valid(e), "{e}");
        }
        assert!(!v.is_valid(&json!({"id": "4", "tags": [], "owner": {"id": "u"}})));
    }

    #[test]
    fn deep_and_wide_objects_are_left_open() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({"a": deep});
        }
        let wide: Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!(i))).collect();
        let schema = schema_of([&deep, &Value::Object(wide)]);
        assert!(schema.get("additionalProperties").is_none());
        assert!(jsonschema::validator_for(&schema).is_ok());
    }
}
