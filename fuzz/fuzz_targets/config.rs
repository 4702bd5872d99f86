//! cargo-fuzz target `config`: the body is `harness::config` (fuzz/harness.rs).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config(data));
