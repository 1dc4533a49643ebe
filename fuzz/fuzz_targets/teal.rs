#![no_main]
//! The teal provider's verify and normalization on arbitrary requests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_teal::fuzz_one(data));
