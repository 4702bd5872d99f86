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
