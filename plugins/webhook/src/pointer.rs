//! JSON pointers into a webhook's body: a value as text, every value a
//! pointer with `*` segments reaches, and setting one (for samples).

use serde_json::{Map, Value};

/// The value at `pointer` as text: a non-empty string, a number or a bool.
pub fn text(body: &Value, pointer: &str) -> Option<String> {
    scalar(body.pointer(pointer)?)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every value `pointer` reaches, a `*` segment standing for each element
/// of an array (`/value/*/clientState`: each notification's clientState).
pub fn all<'a>(body: &'a Value, pointer: &str) -> Vec<&'a Value> {
    let mut at = vec![body];
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = at
            .into_iter()
            .flat_map(|v| -> Vec<&'a Value> {
                match (v, token.as_str()) {
                    (Value::Array(items), "*") => items.iter().collect(),
                    (Value::Array(items), t) => t
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| items.get(i))
                        .into_iter()
                        .collect(),
                    (Value::Object(map), t) => map.get(t).into_iter().collect(),
                    _ => Vec::new(),
                }
            })
            .collect();
    }
    at
}

/// Sets a value at a JSON pointer, creating what is missing on the way:
/// objects, or an array of one element for a `*` segment (an index of an
/// array that is there is followed).
pub fn set(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = tokens.split_last() else {
        *cur = value;
        return;
    };
    for t in path {
        let index = if t == "*" {
            Some(0)
        } else {
            t.parse::<usize>().ok()
        };
        let follow = matches!((&*cur, index), (Value::Array(items), Some(i)) if i < items.len());
        cur = if follow {
            &mut cur.as_array_mut().expect("array")[index.expect("index")]
        } else if t == "*" {
            *cur = Value::Array(vec![Value::Object(Map::new())]);
            &mut cur.as_array_mut().expect("array")[0]
        } else {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            cur.as_object_mut()
                .expect("object")
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new()))
        };
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut()
        .expect("object")
        .insert(last.clone(), value);
}

/// Whether a setting is a JSON pointer (empty, or starting with `/`).
pub fn check(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "webhook settings: {p:?} is not a JSON pointer (they start with /, e.g. \"/type\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_star_reaches_every_element() {
        let body = json!({"value": [{"cs": "a"}, {"cs": "b"}, {"x": 1}], "n": 3});
        let got: Vec<_> = all(&body, "/value/*/cs");
        assert_eq!(got, vec![&json!("a"), &json!("b")]);
        assert_eq!(all(&body, "/value/1/cs"), vec![&json!("b")]);
        assert!(all(&body, "/n/*").is_empty());
        assert_eq!(all(&body, ""), vec![&body]);
        assert_eq!(text(&body, "/n").as_deref(), Some("3"));
    }

    #[test]
    fn set_makes_what_is_missing() {
        let mut v = json!({});
        set(&mut v, "/value/*/clientState", json!("s"));
        set(&mut v, "/value/0/changeType", json!("created"));
        set(&mut v, "/a/b", json!(1));
        assert_eq!(
            v,
            json!({"value": [{"clientState": "s", "changeType": "created"}], "a": {"b": 1}})
        );
        assert_eq!(all(&v, "/value/*/clientState"), vec![&json!("s")]);
    }
}
