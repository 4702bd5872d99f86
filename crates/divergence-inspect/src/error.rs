//! The one error type of this crate: input that cannot be inspected at all.
//!
//! Everything that *can* be reported (a NaN, a missing tensor, a transposed weight) is a
//! [`Finding`](crate::Finding) inside the report, not an error. An [`InspectError`] means the
//! checkpoint could not be read: a missing directory, no `config.json`, unparsable JSON, a
//! corrupt safetensors file. Its `Display` is one lowercase line that names the file.

use std::path::PathBuf;

/// Why a checkpoint could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
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
    #[error("{}: {}", path.display(), lowercase_io(error))]
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

    /// A safetensors file is truncated, has a bad header or inconsistent offsets.
    #[error("{}: corrupt safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    /// The shard index names a file that does not exist.
    #[error("{}: names shard {shard}, which does not exist", index.display())]
    MissingShard { index: PathBuf, shard: String },
}

/// `std::io::Error` displays as "No such file or directory (os error 2)"; our messages are
/// lowercase.
fn lowercase_io(err: &std::io::Error) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Turns a safetensors error into a short lowercase description.
pub(crate) fn describe_safetensors(err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooSmall => "file too small to hold a safetensors header".to_string(),
        E::HeaderTooLarge => "header length is larger than the file allows".to_string(),
        E::InvalidHeaderLength => "header length points past the end of the file".to_string(),
        E::InvalidHeader(_) => "header is not valid utf-8".to_string(),
        E::InvalidHeaderDeserialization(e) => format!("header is not valid json ({e})"),
        E::MetadataIncompleteBuffer => {
            "data section is shorter than the header says (truncated file?)".to_string()
        }
        E::InvalidOffset(name) => format!("tensor {name} has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte size".to_string(),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}
