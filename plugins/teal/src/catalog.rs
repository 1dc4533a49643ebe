//! Teal's event types, each with a JSON Schema of its `data` (the body,
//! decrypted when it came encrypted), from Teal's webhook documentation:
//! the body's fields, `payload` only when the subscription sets
//! `include_payload`, a payslip's `document_external_id` and
//! `document_filename` (its `account_id` null), a bank statement's
//! `document_external_ids` and `payload.bank_statement_submissions`.
//!
//! The top level is closed: the documents list it whole. `payload` is "the
//! payroll data entry as json", open.

use serde_json::{json, Value};
use switchyard_plugin_api::EventType;

fn body(event: &str, payload: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "event": {"const": event},
            "user_id": {"type": "string"},
            "timestamp": {"type": "string", "description": "RFC 3339"},
            "entry_id": {"type": ["string", "null"]},
            "account_id": {"type": ["string", "null"], "description": "null for an uploaded payslip"},
            "document_external_id": {"type": ["string", "null"]},
            "document_filename": {"type": ["string", "null"]},
            "document_external_ids": {"type": "array", "items": {"type": "string"}},
            "payload": payload
        },
        "required": ["event", "user_id", "timestamp"],
        "additionalProperties": false
    })
}

/// Every event type Teal's documents name.
pub fn catalog() -> Vec<EventType> {
    vec![
        EventType::new(
            "user-payroll-submitted",
            "A user created an entry with new payroll data (or uploaded a payslip).",
            body(
                "user-payroll-submitted",
                json!({"type": "object", "description": "The payroll data entry (include_payload)."}),
            ),
        ),
        EventType::new(
            "user-bank-statement-submitted",
            "A user submitted bank statements.",
            body(
                "user-bank-statement-submitted",
                json!({
                    "type": "object",
                    "description": "The statements submitted (include_payload).",
                    "properties": {
                        "bank_statement_submissions": {"type": "array", "items": {"type": "object"}}
                    }
                }),
            ),
        ),
        EventType::new(
            "user-hmrc-data-submitted",
            "A user submitted HMRC data (may be deprecated).",
            body("user-hmrc-data-submitted", json!({"type": "object"})),
        ),
    ]
}
