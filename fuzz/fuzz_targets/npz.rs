//! cargo-fuzz target `npz`: the body is `harness::npz` (fuzz/harness.rs).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::npz(data));
