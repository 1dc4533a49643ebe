//! A provider that panics when the body says `panic`, sleeps when it says
//! `sleep`, and otherwise accepts the request as one `ping` event. It exists
//! for the host's tests: a panic must become an error for that one request,
//! and a plugin that overruns its deadline must not hold the daemon up.

use std::time::Duration;

use switchyard_plugin_api::{serde_json::Value, EventDraft, Host, Provider, Rejection, Request};

pub struct Panicky;

impl Provider for Panicky {
    fn create(_host: Host, config: Value) -> Result<Self, String> {
        if config.get("panic_on_create").and_then(Value::as_bool) == Some(true) {
            panic!("asked to panic on create");
        }
        Ok(Panicky)
    }

    fn verify(&self, request: &Request<'_>) -> Result<Vec<EventDraft>, Rejection> {
        match request.body {
            b"panic" => panic!("asked to panic"),
            b"sleep" => {
                std::thread::sleep(Duration::from_secs(5));
                Ok(vec![EventDraft::new("slept", Value::Null)])
            }
            _ => Ok(vec![EventDraft::new("ping", Value::Null)]),
        }
    }
}

switchyard_plugin_api::export_provider!("panicky", Panicky);
