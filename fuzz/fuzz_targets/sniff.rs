//! cargo-fuzz target `sniff`: the body is `harness::sniff` (fuzz/harness.rs).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::sniff(data));
