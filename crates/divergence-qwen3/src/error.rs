//! The one error type of this crate.
//!
//! Every variant names the file or tensor it is about, so the CLI can print it as a single
//! line (`error: fixtures/tiny-qwen3/config.json: missing field hidden_size`).

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (config.json, the shard index, the ids file).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// config.json (or the shard index) is not the JSON we expect.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The checkpoint directory has no weights at all.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    /// A safetensors file could not be opened or parsed.
    #[error("{path}: cannot read safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// The model needs a tensor the checkpoint does not have.
    #[error("{dir}: missing tensor {name} (expected shape {expected:?})")]
    MissingTensor {
        dir: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor {name} has shape {found:?}, config.json implies {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor has a dtype we cannot load (ints, f8, ...).
    #[error("{path}: tensor {name} has unsupported dtype {dtype}")]
    TensorDType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// The config asks for something this port does not implement.
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// A `--inject` value that does not parse, or does not fit this model.
    #[error("{0}")]
    Fault(#[from] crate::fault::FaultParseError),
    /// A fault that parses but does not apply to this checkpoint.
    #[error("--inject {spec}: {message}")]
    FaultTarget { spec: String, message: String },
    /// Bad input ids (empty, out of the vocabulary, unparsable ids file).
    #[error("{source_name}: {message}")]
    InputIds {
        source_name: String,
        message: String,
    },
    /// The requested device cannot be used.
    #[error("{0}")]
    Device(String),
    /// Writing the dump failed.
    #[error(transparent)]
    Dump(#[from] divergence_dump::DumpError),
    /// A tensor operation failed while running the model.
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Attaches a short context (the op or tensor name) to candle errors.
pub(crate) trait CandleContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Candle {
            context: context(),
            source,
        })
    }
}
