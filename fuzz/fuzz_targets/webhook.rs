#![no_main]
//! The webhook provider's verify and normalization on arbitrary requests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_webhook::fuzz_one(data));
