//! Admin: what people ask of a running Switchyard, and the API they ask it
//! through.
//!
//! Owns: [`ops`], the operations (events, replay, dead letters, redrive,
//! actions, enable) over a store and the config, which the CLI also runs on
//! the store when no daemon runs, and [`types`], the catalog's (event
//! types, their schemas and drift; releasing held events); and [`api`], the admin API on its own
//! listener (bearer token) serving them with the daemon's status, reload
//! and metrics; [`stream`], its stream of events as they are stored (what
//! `switchyard listen` reads); and [`ui`], the dashboard on the same listener (its own
//! sign-in sessions). Calls: `config`, `store`, `ingress::answer` (the
//! JSON answers, errors as `{"error": …}`), and the running
//! [`Switchyard`] (`app`) for status and reload.
//!
//! [`Switchyard`]: crate::app::Switchyard

pub mod api;
pub mod ops;
pub mod stream;
pub mod types;
pub mod ui;

pub use api::{filter, local_filter};
