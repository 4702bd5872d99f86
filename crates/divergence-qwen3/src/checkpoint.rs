//! A checkpoint opened for this model: [`divergence_checkpoint`] locates the files (the rule
//! every command shares), parses config.json and the safetensors headers; this module adds
//! the Qwen3 view of the config ([`Config`], strict) and refuses what it cannot load
//! unambiguously (a tensor stored twice).
//!
//! Only headers are read here (names, dtypes, shapes, and which file holds which tensor), so
//! that a missing or misshapen tensor is reported by name and file before any weight is
//! loaded. The weights themselves are mmap'd by candle's `VarBuilder`.

use std::path::{Path, PathBuf};

use divergence_checkpoint::{Anomaly, Ignored, Layout, TensorInfo, Weights};

use crate::config::{invalid, Config};
use crate::error::Error;

/// An opened (not yet loaded) checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    /// config.json as written, for the dump's `model` metadata.
    pub config_json: serde_json::Value,
    /// The safetensors files, in reading order.
    pub files: Vec<PathBuf>,
    /// Files of the directory that are not read (e.g. an index next to `model.safetensors`).
    pub ignored: Vec<Ignored>,
    weights: Weights,
}

impl Checkpoint {
    /// Opens `path` (a directory, or one `.safetensors` file with config.json next to it):
    /// locates the files, parses and validates config.json, reads the headers.
    pub fn open(path: &Path) -> Result<Checkpoint, Error> {
        // config.json first: a config this model cannot run is reported before the weights.
        let parsed =
            divergence_checkpoint::Config::load(&Layout::config_path(path)?).map_err(invalid)?;
        let config = Config::from_parsed(&parsed)?;
        let layout = Layout::locate(path)?;
        let weights = Weights::open(&layout)?;
        if let Some(dup) = weights
            .anomalies()
            .iter()
            .find(|a| matches!(a, Anomaly::Duplicate { .. }))
        {
            return Err(Error::Config {
                path: layout.dir.clone(),
                message: format!("tensor {} is {dup}", dup.tensor()),
            });
        }
        Ok(Checkpoint {
            dir: layout.dir,
            config_path: layout.config,
            config,
            config_json: parsed.json,
            files: layout.shards,
            ignored: layout.ignored,
            weights,
        })
    }

    /// Checks that `name` exists with `shape` and a float dtype; returns its file.
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<&Path, Error> {
        let info: &TensorInfo = self.weights.check(name, shape)?;
        Ok(self.weights.file(info))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(name)
    }
}
