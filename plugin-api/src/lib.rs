//! # switchyard-plugin-api
//!
//! The stable plugin ABI of Switchyard, and the safe Rust side of it.
//!
//! What this crate owns:
//! - [`ffi`]: the `repr(C)` mirror of `include/switchyard_plugin.h`, which is
//!   the source of truth for the ABI (a plugin may be written in C against it).
//! - The safe traits a Rust plugin implements: [`Provider`] (verify and parse
//!   incoming webhooks, and optionally manage its provider's subscriptions)
//!   and [`Action`] (carry out a job).
//! - The export macros [`export_provider!`] and [`export_action!`], which build
//!   the plugin table and wrap every entry point in `catch_unwind`, so a panic
//!   in a plugin becomes an error status for that one call.
//!
//! It depends on nothing of the daemon; the daemon's plugin host depends on it.

mod action;
pub mod ffi;
mod host;
mod provider;
mod subscription;
mod text;

#[doc(hidden)]
pub mod export;

pub use action::{
    Action, BatchOutcome, BatchOutput, BatchStatus, FailureDetail, Job, Outcome, TraceContext,
};
pub use host::Host;
pub use provider::{
    Answer, CreateOutput, EventDraft, EventType, Order, Provider, RejectKind, Rejection, Request,
    SampleError, SampleRequest, VerifyOutput,
};
pub use serde_json;
pub use subscription::{
    Subscription, SubscriptionCall, SubscriptionError, SubscriptionState, SubscriptionsOutput,
};
pub use text::{carries_credential, parse_query, percent_encode, redact, REDACTED};

/// Exports a [`Provider`] implementation as a Switchyard plugin.
///
/// ```ignore
/// switchyard_plugin_api::export_provider!("tight", TightProvider);
/// ```
#[macro_export]
macro_rules! export_provider {
    ($name:literal, $ty:ty) => {
        #[no_mangle]
        pub extern "C" fn switchyard_plugin_v1() -> *const $crate::ffi::SyPlugin {
            static TABLE: $crate::ffi::SyPlugin = $crate::ffi::SyPlugin {
                struct_size: ::std::mem::size_of::<$crate::ffi::SyPlugin>(),
                abi_major: $crate::ffi::ABI_MAJOR,
                abi_minor: $crate::ffi::ABI_MINOR,
                role: $crate::ffi::ROLE_PROVIDER,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr()
                    as *const ::std::ffi::c_char,
                create: Some($crate::export::create_provider::<$ty>),
                destroy: Some($crate::export::destroy::<$ty>),
                verify: Some($crate::export::verify::<$ty>),
                execute: None,
                sample: Some($crate::export::sample::<$ty>),
                execute_batch: None,
                subscriptions: Some($crate::export::subscriptions::<$ty>),
            };
            &TABLE
        }
    };
}

/// Exports an [`Action`] implementation as a Switchyard plugin.
///
/// ```ignore
/// switchyard_plugin_api::export_action!("file", FileAction);
/// ```
#[macro_export]
macro_rules! export_action {
    ($name:literal, $ty:ty) => {
        #[no_mangle]
        pub extern "C" fn switchyard_plugin_v1() -> *const $crate::ffi::SyPlugin {
            static TABLE: $crate::ffi::SyPlugin = $crate::ffi::SyPlugin {
                struct_size: ::std::mem::size_of::<$crate::ffi::SyPlugin>(),
                abi_major: $crate::ffi::ABI_MAJOR,
                abi_minor: $crate::ffi::ABI_MINOR,
                role: $crate::ffi::ROLE_ACTION,
                name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
                version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr()
                    as *const ::std::ffi::c_char,
                create: Some($crate::export::create_action::<$ty>),
                destroy: Some($crate::export::destroy::<$ty>),
                verify: None,
                execute: Some($crate::export::execute::<$ty>),
                sample: None,
                execute_batch: if <$ty as $crate::Action>::BATCHES {
                    Some($crate::export::execute_batch::<$ty>)
                } else {
                    None
                },
                subscriptions: None,
            };
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_percent_decoded() {
        let pairs = parse_query("token=a%2Fb+c&x=&flag&bad=%zz&end=%4");
        assert_eq!(
            pairs,
            vec![
                ("token".into(), "a/b c".into()),
                ("x".into(), "".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        assert_eq!(percent_encode("aZ9-_.~"), "aZ9-_.~");
        assert_eq!(percent_encode("a/b c+d=é"), "a%2Fb%20c%2Bd%3D%C3%A9");
        let round: Vec<_> = parse_query(&format!("t={}", percent_encode("s3cret tok/+&=")));
        assert_eq!(round, vec![("t".to_string(), "s3cret tok/+&=".to_string())]);
    }

    #[test]
    fn the_verify_document_of_1_5_only_adds() {
        // A document as every minor before 1.5 wrote it reads as events.
        let old: VerifyOutput =
            serde_json::from_str(r#"{"events":[{"type":"ping","data":{}}]}"#).unwrap();
        assert_eq!(
            old,
            VerifyOutput::events(vec![EventDraft::new("ping", serde_json::json!({}))])
        );
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"events":[{"type":"ping","data":{}}]}"#
        );
        let shake = VerifyOutput::handshake(
            EventDraft::new("handshake.slack", serde_json::json!({})),
            Answer::text("c").header("X-A", "1"),
        );
        assert_eq!(
            serde_json::to_value(&shake).unwrap(),
            serde_json::json!({"events": [{"type": "handshake.slack", "data": {}}],
                "handshake": true,
                "answer": {"status": 200, "content_type": "text/plain; charset=utf-8",
                           "body": "c", "headers": [["X-A", "1"]]}})
        );
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let headers = [("tight-verification", &b" tok "[..])];
        let req = Request {
            method: "POST",
            path: "",
            query: "",
            headers: &headers,
            remote_addr: "",
            body: b"",
        };
        assert_eq!(req.header_str("Tight-Verification"), Some("tok"));
        assert_eq!(req.header("missing"), None);
    }
}
