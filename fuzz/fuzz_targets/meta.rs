//! cargo-fuzz target `meta`: the body is `harness::meta` (fuzz/harness.rs).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::meta(data));
