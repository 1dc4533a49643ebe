#![no_main]
//! The webhook provider's handshakes (every preset and the pointer form) on
//! arbitrary requests: the unsigned checks parse them before anything is
//! verified.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_webhook::fuzz_handshakes(data));
