//! What the CLI's integration test files share: the workspace root (fixture paths are relative
//! to it) and a run of the real binary. Not every file uses both.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: fixture paths are relative to it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Runs `divergence ARGS...` from the workspace root: (exit code, stdout, stderr).
pub fn divergence(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run divergence");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// `src`'s members rewritten into `dst` with deflate, as `numpy.savez_compressed` stores them.
pub fn deflated_copy(src: &std::path::Path, dst: &std::path::Path) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        out.start_file(member.name().unwrap().to_string(), opts)
            .unwrap();
        std::io::copy(&mut member, &mut out).unwrap();
    }
    out.finish().unwrap();
    let mut check = zip::ZipArchive::new(std::fs::File::open(dst).unwrap()).unwrap();
    let first = check.by_index(0).unwrap();
    assert_eq!(first.compression(), zip::CompressionMethod::Deflated);
}

/// An `.npy` of f32 `values` written by hand (magic, version 1.0, header padded to 64 bytes,
/// then the data) with `shape` (Python tuple text: `(3,)`), in Fortran or C order as given.
pub fn npy_f32(fortran: bool, shape: &str, values: &[f32]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': {order}, 'shape': {shape}, }}").into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend(values.iter().flat_map(|x| x.to_le_bytes()));
    out
}

/// A JSON report's warnings, one line each.
pub fn warnings(report: &serde_json::Value) -> Vec<&str> {
    report["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}
