//! The one error type of this crate: a checkpoint that cannot be located, read or used.
//!
//! Every variant names the file (and the tensor) it is about, and displays as one lowercase
//! line, so the commands can print it as is (`error: m/config.json: invalid json: ...`).

use std::path::PathBuf;

use safetensors::Dtype;

/// Why a checkpoint could not be opened, or does not fit what a caller needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path given does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },

    /// The path exists but is neither a directory nor a `.safetensors` file.
    #[error("{}: not a model directory (expected a directory with config.json and *.safetensors)", path.display())]
    NotAModel { path: PathBuf },

    /// The model directory has no `config.json`.
    #[error("{}: not found (a model directory needs config.json)", path.display())]
    MissingConfig { path: PathBuf },

    /// Reading a file failed. (The I/O error is part of the message, not a separate cause, so
    /// that a printed error chain stays one line without repeating it.)
    #[error("{}: {}", path.display(), lowercase(&error.to_string()))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A JSON file (`config.json`, `model.safetensors.index.json`) does not parse.
    #[error("{}: invalid json: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A JSON file parses but does not have the expected structure.
    #[error("{}: {message}", path.display())]
    BadJson { path: PathBuf, message: String },

    /// The directory holds no `*.safetensors` file.
    #[error("{}: no *.safetensors files in the model directory", path.display())]
    NoSafetensors { path: PathBuf },

    /// A safetensors file is empty, truncated, has a bad header or inconsistent offsets.
    #[error("{}: corrupt safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    /// The shard index names a file that does not exist.
    #[error("{}: names shard {shard}, which does not exist", index.display())]
    MissingShard { index: PathBuf, shard: String },

    /// A file the layout rule reads (`model.safetensors`, the index, a `*.safetensors` of the
    /// directory) is a directory, a fifo or a device. Told from its metadata: it is never
    /// opened (opening a fifo blocks; a device such as /dev/zero has no size).
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// The shard index names a file that is a directory, a fifo or a device.
    #[error("{}: names shard {shard}, which is {kind}, not a regular file", index.display())]
    ShardNotRegularFile {
        index: PathBuf,
        shard: String,
        kind: &'static str,
    },

    /// A caller needs a tensor the checkpoint does not have.
    #[error("{}: missing tensor {name} (expected shape {expected:?})", dir.display())]
    MissingTensor {
        dir: PathBuf,
        name: String,
        expected: Vec<usize>,
    },

    /// A tensor has another shape than config.json implies.
    #[error("{}: tensor {name} has shape {found:?}, config.json implies {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor has a dtype a caller cannot load as floats (ints, f8, ...).
    #[error("{}: tensor {name} has unsupported dtype {dtype:?}", path.display())]
    TensorDType {
        path: PathBuf,
        name: String,
        dtype: Dtype,
    },
}

/// Error texts of std and safetensors start uppercase ("No such file or directory"); ours are
/// lowercase.
pub(crate) fn lowercase(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Turns a safetensors error into a short lowercase description.
pub(crate) fn describe_safetensors(err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooSmall => "file too small to hold a safetensors header".to_string(),
        E::HeaderTooLarge => {
            "header length is larger than the 100000000 bytes the safetensors format allows"
                .to_string()
        }
        E::InvalidHeaderLength => "header length points past the end of the file".to_string(),
        E::InvalidHeader(_) => "header is not valid utf-8".to_string(),
        E::InvalidHeaderDeserialization(e) => format!("header is not valid json ({e})"),
        E::MetadataIncompleteBuffer => {
            "the data section does not end where the header's offsets do (a truncated file, or bytes after the last tensor)".to_string()
        }
        E::InvalidOffset(name) => format!("tensor {name} has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte size".to_string(),
        other => lowercase(&other.to_string()),
    }
}
