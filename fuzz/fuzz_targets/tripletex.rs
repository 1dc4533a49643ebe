#![no_main]
//! The tripletex provider's verify and normalization on arbitrary requests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_tripletex::fuzz_one(data));
