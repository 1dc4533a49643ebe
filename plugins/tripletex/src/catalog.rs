//! Tripletex's event types, each with a JSON Schema of its `data` (the
//! body), from Tripletex's webhook documentation: `{"subscriptionId",
//! "event": "object.verb", "id", "value"}`, `value` the object (filtered
//! by the subscription's `fields`, so open) and null for a `*.delete`.
//! Names are as the plugin makes them: lower case (`closegroup.create`).

use serde_json::{json, Value};
use switchyard_plugin_api::EventType;

use crate::EVENTS;

fn body(event: &str) -> Value {
    let value = if event.ends_with(".delete") {
        json!({"type": "null", "description": "A delete carries only the object's id."})
    } else {
        json!({
            "type": ["object", "null"],
            "description": "The object, with the fields the subscription asks for.",
            "properties": {
                "id": {"type": "integer"},
                "version": {"type": "integer"}
            }
        })
    };
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "subscriptionId": {"type": "integer"},
            "event": {"type": "string"},
            "id": {"type": "integer", "description": "The object's id."},
            "value": value
        },
        "required": ["subscriptionId", "event", "id", "value"],
        "additionalProperties": false
    })
}

fn describe(event: &str) -> String {
    let (object, verb) = event.split_once('.').unwrap_or((event, ""));
    match (object, verb) {
        ("invoice", "charged") => "A new invoice has been created and charged.".into(),
        ("notification", "sent") => {
            "A notification was sent to the employee (owner of the token).".into()
        }
        ("voucherstatus", "ready") => {
            "A new voucher is ready to be processed from the voucher reception.".into()
        }
        (o, v) => format!("A {o} was {v}d."),
    }
}

/// Every event type Tripletex's documents name.
pub fn catalog() -> Vec<EventType> {
    EVENTS
        .iter()
        .map(|e| EventType::new(*e, describe(e), body(e)))
        .collect()
}
