//! The one error type of this crate.
//!
//! Every variant names the file or tensor it is about, so the CLI can print it as a single
//! line (`error: fixtures/tiny-qwen3/config.json: missing field hidden_size`).

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (the ids file).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// config.json is not a Qwen3 config this port can run.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The checkpoint cannot be located or read, or lacks a tensor the model needs
    /// (`divergence_checkpoint`'s message, unchanged).
    #[error(transparent)]
    Checkpoint(#[from] divergence_checkpoint::Error),
    /// candle could not map the safetensors files.
    #[error("{path}: cannot read safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// The config asks for something this port does not implement.
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// `--replay REF`: the reference dump cannot be read or does not fit this model and input.
    #[error("--replay: {0}")]
    Replay(String),
    /// `--decode`: the decode ids or the cache cannot be used (a `--decode-from` dump without
    /// `decode_ids`, a step count that disagrees with the ids, a full cache).
    #[error("{0}")]
    Decode(String),
    /// A `--inject` value that does not parse, or does not fit this model.
    #[error("--inject {0}")]
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
    /// The run would allocate more than `run` allows ([`crate::memory::limit`]): too
    /// many tokens for this config (path: its config.json).
    #[error("{path}: {message}")]
    TooLarge { path: PathBuf, message: String },
    /// The requested device cannot be used.
    #[error("{0}")]
    Device(String),
    /// Writing the dump failed.
    #[error(transparent)]
    Dump(#[from] divergence_dump::DumpError),
    /// The dump's writer thread could not start, or was asked for more after it stopped on
    /// an error (reported then).
    #[error("{path}: dump writer: {message}")]
    Writer { path: PathBuf, message: String },
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
