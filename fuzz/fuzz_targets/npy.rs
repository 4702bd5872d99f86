//! cargo-fuzz target `npy`: the body is `harness::npy` (fuzz/harness.rs).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::npy(data));
