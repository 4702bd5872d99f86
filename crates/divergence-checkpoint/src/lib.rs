//! `divergence_checkpoint`: locate, open and validate a Hugging Face checkpoint
//! (`config.json` + `*.safetensors`) for every command: `divergence run` (the Qwen3 model),
//! `divergence inspect` and `divergence diff --model`.
//!
//! - [`Layout::locate`]: which files are read, by one rule (transformers' order:
//!   `model.safetensors`, else `model.safetensors.index.json`, else every `*.safetensors`; or
//!   one `.safetensors` path), with the files it leaves out in [`Layout::ignored`].
//! - [`Weights::open`]: the shards memory-mapped and their headers counted against their caps,
//!   then parsed by the `safetensors` crate; tensor bytes are borrowed from the maps, never
//!   copied.
//! - [`Config`]: config.json parsed once, leniently, with the transformers 5.17 defaults of
//!   each [`Family`] and its RoPE resolution.
//!
//! Invariant: [`Error`] is only for input that cannot be read (and for
//! [`Weights::check`]); everything else (a malformed config field, a duplicate tensor, an index
//! that disagrees with its shards, an ignored file) is data for the caller to report or reject.

mod config;
mod error;
mod layout;
mod weights;

use std::path::Path;

pub use crate::config::{
    sanity_cap, Config, Dims, Family, FieldIssue, DEFAULT_ROPE_THETA, QWEN3_DEFAULT_HEAD_DIM,
    REQUIRED, SANITY_CAPS,
};
pub use crate::error::Error;
pub use crate::layout::{
    file_kind, Ignored, Index, Layout, Source, CONFIG_FILE, INDEX_FILE, MAX_INDEX_BYTES,
    MAX_INDEX_ITEMS, SINGLE_FILE,
};
pub use crate::weights::{Anomaly, Shard, TensorInfo, Weights};
pub use safetensors::Dtype;

/// A located checkpoint with its config.json parsed and its shards mapped.
#[derive(Debug)]
pub struct Checkpoint {
    pub layout: Layout,
    pub config: Config,
    pub weights: Weights,
}

impl Checkpoint {
    /// Reads the config.json (required) of the checkpoint at `path` (directory or one
    /// `.safetensors` file), then locates and maps its shards. Config errors come first.
    pub fn open(path: &Path) -> Result<Checkpoint, Error> {
        let config = Config::load(&Layout::config_path(path)?)?;
        let layout = Layout::locate(path)?;
        let weights = Weights::open(&layout)?;
        Ok(Checkpoint {
            layout,
            config,
            weights,
        })
    }
}
