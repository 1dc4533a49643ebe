#![no_main]
//! The tightknit provider's verify and normalization on arbitrary requests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_tightknit::fuzz_one(data));
