//! Tightknit's event types, each with a JSON Schema of its `data` (the
//! body), from Tightknit's webhook documentation: the calendar event
//! (un)registration payload, in its legacy form (`action`
//! `event_registration_status_change` with `status`) and its newer one
//! (`action` `calendar_event.user_registered`, a `user` with more fields).
//! Both forms arrive under the new names.
//!
//! Closed: the top level, `event` and `source`, as documented whole. Open:
//! `user`, which the newer form extends ("profile_id, slack_user_id,
//! slack_is_admin, …").

use serde_json::{json, Value};
use switchyard_plugin_api::EventType;

use crate::{LEGACY_ACTION, REGISTERED, UNREGISTERED};

fn body(action: &str, status: &str) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "action": {"enum": [action, LEGACY_ACTION]},
            "status": {"const": status},
            "date": {"type": "string"},
            "custom_metadata": {"type": ["string", "null"]},
            "event": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "slug": {"type": "string"}
                },
                "required": ["id", "title", "slug"],
                "additionalProperties": false
            },
            "source": {
                "type": "object",
                "properties": {
                    "slack_workspace_id": {"type": "string"},
                    "slack_channel_id": {"type": "string"}
                },
                "required": ["slack_workspace_id"],
                "additionalProperties": false
            },
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "first_name": {"type": "string"},
                    "last_name": {"type": "string"},
                    "real_name": {"type": "string"},
                    "display_name": {"type": "string"},
                    "email": {"type": "string"},
                    "profile_id": {"type": "string"},
                    "slack_user_id": {"type": "string"},
                    "slack_is_admin": {"type": "boolean"},
                    "profile_fields": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "label": {"type": "string"},
                                "value": {"type": "string"}
                            },
                            "required": ["label", "value"]
                        }
                    }
                },
                "required": ["id", "first_name", "last_name", "real_name", "display_name", "email"]
            }
        },
        "required": ["version", "action", "date", "event", "source", "user"],
        "additionalProperties": false
    })
}

/// Every event type Tightknit's documents name.
pub fn catalog() -> Vec<EventType> {
    vec![
        EventType::new(
            REGISTERED,
            "A user registered for a calendar event.",
            body(REGISTERED, "registered"),
        ),
        EventType::new(
            UNREGISTERED,
            "A user un-registered from a calendar event.",
            body(UNREGISTERED, "unregistered"),
        ),
    ]
}
