#![no_main]
//! The tight provider's verify and normalization on arbitrary requests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_tight::fuzz_one(data));
