//! Fuzz-style property tests: random bytes, truncations and byte flips of valid dumps are fed to
//! `Dump::open` and `read` of every name. Each must return `Ok` or `Err`, never panic, and every
//! error message must start with the file path.

mod common;

use std::path::Path;

use common::{bits, chunked, data};
use divergence_dump::Dump;
use proptest::prelude::*;

const VALID: &[&str] = &[
    "savez.npz",
    "savez_compressed.npz",
    "with_meta.npz",
    "with_meta_compressed.npz",
    "zip64.npz",
    "zip64_compressed.npz",
    "versions.npz",
    "single_v1.npy",
    "single_fortran.npy",
    "st_meta.safetensors",
];

/// Open and read everything; panics only if an error message does not name the file.
fn exercise(path: &Path) {
    let prefix = format!("{}: ", path.display());
    match Dump::open(path) {
        Err(e) => assert!(e.to_string().starts_with(&prefix), "{e}"),
        Ok(d) => {
            for name in d.names() {
                let _ = d.shape(name);
                let _ = d.original_dtype(name);
                match (d.read(name), d.view(name)) {
                    (Ok(t), Ok(v)) => {
                        let n: usize = t.shape.iter().product();
                        assert_eq!(n, t.values.len(), "{name}: shape and values disagree");
                        assert_eq!(v.values().len(), n, "{name}: view has the wrong length");
                        assert_eq!(
                            bits(&v.to_values()),
                            bits(&t.values),
                            "{name}: view vs read"
                        );
                    }
                    (Err(e), Err(ev)) => {
                        assert!(e.to_string().starts_with(&prefix), "{e}");
                        assert_eq!(e.to_string(), ev.to_string(), "{name}: view vs read error");
                    }
                    (t, v) => panic!("{name}: read {:?} but view {:?}", t.err(), v.err()),
                }
                // The streamed read gives the same values, or the same error.
                match (d.read(name), chunked(&d, name, 3)) {
                    (Ok(t), Ok(c)) => {
                        assert_eq!(bits(&c), bits(&t.values), "{name}: chunks vs read")
                    }
                    (Err(e), Err(ec)) => assert_eq!(
                        e.to_string(),
                        ec.to_string(),
                        "{name}: chunks vs read error"
                    ),
                    (t, c) => panic!("{name}: read {:?} but chunks {:?}", t.err(), c.err()),
                }
            }
        }
    }
}

fn with_file(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    exercise(&path);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), ext in 0usize..4) {
        let name = ["x.npz", "x.npy", "x.safetensors", "x.bin"][ext];
        with_file(name, &bytes);
    }

    #[test]
    fn magic_prefixed_random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512), kind in 0usize..4) {
        let magic: &[u8] = [&b"PK\x03\x04"[..], b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\x40\x00\x00\x00\x00\x00\x00\x00{"][kind];
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&tail);
        with_file("x.bin", &bytes);
    }

    #[test]
    fn truncated_valid_files_never_panic(file in 0usize..VALID.len(), cut in any::<prop::sample::Index>()) {
        let name = VALID[file];
        let bytes = std::fs::read(data(name)).unwrap();
        let len = cut.index(bytes.len() + 1);
        with_file(name, &bytes[..len]);
    }

    #[test]
    fn corrupted_valid_files_never_panic(
        file in 0usize..VALID.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let name = VALID[file];
        let mut bytes = std::fs::read(data(name)).unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        with_file(name, &bytes);
    }
}

#[test]
fn every_truncation_of_a_small_npz_never_panics() {
    let bytes = std::fs::read(data("with_meta_compressed.npz")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    for len in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        exercise(&path);
    }
}
