//! For a provider's tests: its catalog's schemas compile, and an event it
//! made from a document's example matches its type's schema — the
//! documents' examples are the catalog's test vectors.

use serde_json::Value;
use switchyard_plugin_api::{EventDraft, EventType};

/// Compiles every schema of `catalog`; panics naming the first that does
/// not, or a type listed twice.
pub fn assert_compiles(catalog: &[EventType]) {
    let mut seen = std::collections::HashSet::new();
    for t in catalog {
        assert!(seen.insert(&t.name), "{} is listed twice", t.name);
        if let Err(e) = jsonschema::validator_for(&t.schema) {
            panic!("the schema of {} does not compile: {e}", t.name);
        }
    }
}

/// The problems `data` has against the schema of `kind`: each as
/// `path: message`. Panics when the catalog has no such type.
pub fn problems(catalog: &[EventType], kind: &str, data: &Value) -> Vec<String> {
    let t = catalog
        .iter()
        .find(|t| t.name == kind)
        .unwrap_or_else(|| panic!("the catalog has no type {kind}"));
    let validator = jsonschema::validator_for(&t.schema).expect("compiles");
    validator
        .iter_errors(data)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every event matches its type's schema; panics listing what does not.
pub fn assert_events_match(catalog: &[EventType], events: &[EventDraft]) {
    assert!(!events.is_empty(), "no events to check");
    for ev in events {
        let found = problems(catalog, &ev.kind, &ev.data);
        assert!(
            found.is_empty(),
            "{} does not match its schema: {found:?}\n{}",
            ev.kind,
            ev.data
        );
    }
}
