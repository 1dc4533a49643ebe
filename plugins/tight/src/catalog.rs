//! Tight's event types, each with a JSON Schema of its `data` (the body as
//! Tight sent it), written from Tight's webhook documentation (the
//! "Entity update webhooks" and "Lifecycle webhooks" examples, the entity
//! table) and marked where they are inferred.
//!
//! What is closed (`additionalProperties: false`) is what the documents
//! show whole: the body's top level, `editor`, `company`, and the
//! `eventData` of `bankAccountCreated` (documented) and of the invoice
//! events (inferred: `entityId`, `invoiceNumber`, `clientName`, as the
//! samples send). An entity's `data` is "the full detail of the entity",
//! and other lifecycle events' `eventData` is "data relevant to the
//! event": open. The legacy forms (`LIFECYCLE_EVENT`, `ENTITY_UPDATE` with
//! `entities`) are described too, since both still arrive.

use serde_json::{json, Value};
use switchyard_plugin_api::EventType;

use crate::{ENTITIES, LEGACY_EVENTS, LIFECYCLE_EVENTS};

fn editor() -> Value {
    json!({
        "type": "object",
        "properties": {"userId": {"type": "string"}},
        "required": ["userId"],
        "additionalProperties": false
    })
}

fn company() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "apiCompanyId": {"type": "string"}
        },
        "required": ["id"],
        "additionalProperties": false
    })
}

/// A lifecycle event's `eventData`: what the documents show of it.
fn event_data(event: &str) -> Value {
    if event == "bankAccountCreated" {
        return json!({
            "type": "object",
            "properties": {
                "entityId": {"type": "string"},
                "apiName": {"type": "string"},
                "type": {"type": "string"}
            },
            "required": ["entityId"],
            "additionalProperties": false
        });
    }
    if event.starts_with("invoice") {
        return json!({
            "type": "object",
            "description": "Inferred: the invoice's id (entityId), its number and its client's name.",
            "properties": {
                "entityId": {"type": "string"},
                "invoiceNumber": {"type": "string"},
                "clientName": {"type": "string"}
            },
            "required": ["entityId"],
            "additionalProperties": false
        });
    }
    json!({
        "type": "object",
        "description": "Data relevant to the event; entityId names the entity it is about.",
        "properties": {"entityId": {"type": "string"}}
    })
}

fn lifecycle(event: &str) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "editor": editor(),
            "company": company(),
            "type": {"const": "LIFECYCLE"},
            "event": {"const": event},
            "datetime": {"type": "string", "description": "RFC 3339, 1 to 9 fractional digits"},
            "eventData": event_data(event)
        },
        "required": ["editor", "company", "type", "event", "datetime", "eventData"],
        "additionalProperties": false
    })
}

fn legacy_lifecycle(event: &str) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "userId": {"type": "string"},
            "type": {"const": "LIFECYCLE_EVENT"},
            "event": {"const": event},
            "eventData": {"type": "object", "properties": {"entityId": {"type": "string"}}}
        },
        "required": ["userId", "type", "event"],
        "additionalProperties": false
    })
}

/// An entity's update: the current form with the entity whole, or the
/// legacy form that lists the entities that changed.
fn entity_update() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "if": {"required": ["entities"]},
        "then": {
            "properties": {
                "userId": {"type": "string"},
                "type": {"const": "ENTITY_UPDATE"},
                "entities": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["userId", "type", "entities"],
            "additionalProperties": false
        },
        "else": {
            "properties": {
                "editor": editor(),
                "company": company(),
                "type": {"const": "ENTITY_UPDATE"},
                "url": {"type": "string", "description": "The entity's API path, e.g. /v6/banks/transactions/btn_936723"},
                "data": {
                    "type": "object",
                    "description": "The full detail of the entity that was updated.",
                    "properties": {"id": {"type": "string"}}
                }
            },
            "required": ["editor", "company", "type", "url", "data"],
            "additionalProperties": false
        }
    })
}

/// Every event type Tight's documents name.
pub fn catalog() -> Vec<EventType> {
    let mut types = Vec::new();
    for event in LIFECYCLE_EVENTS {
        types.push(EventType::new(
            event,
            format!("LIFECYCLE: {event}."),
            lifecycle(event),
        ));
    }
    for event in LEGACY_EVENTS {
        types.push(EventType::new(
            event,
            format!("Legacy LIFECYCLE_EVENT: {event}."),
            legacy_lifecycle(event),
        ));
    }
    let entity = entity_update();
    for (name, resource) in ENTITIES {
        types.push(EventType::new(
            format!("entity.{name}"),
            format!("ENTITY_UPDATE of a {name}: fetch it again with GET {resource}."),
            entity.clone(),
        ));
    }
    // The documents' own example is a bank transaction
    // (/v6/banks/transactions/…), which the entity table does not list.
    types.push(EventType::new(
        "entity.bankTransaction",
        "ENTITY_UPDATE of a bank transaction: fetch it again with GET /banks/transactions.",
        entity,
    ));
    types
}
