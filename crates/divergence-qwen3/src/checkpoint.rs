//! A Hugging Face checkpoint directory: `config.json` plus `model.safetensors` or shards listed
//! in `model.safetensors.index.json`.
//!
//! Only the safetensors headers are read here (names, dtypes, shapes, and which file holds
//! which tensor), so that a missing or misshapen tensor is reported by name and file before any
//! weight is loaded. The weights themselves are mmap'd by candle's `VarBuilder`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::error::Error;

/// Where one tensor lives and what it looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub file: PathBuf,
    /// safetensors dtype name ("BF16", "F32", ...).
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// An opened (not yet loaded) checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    /// config.json as written, for the dump's `model` metadata.
    pub config_json: serde_json::Value,
    pub files: Vec<PathBuf>,
    pub tensors: HashMap<String, TensorInfo>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
}

impl Checkpoint {
    /// Opens `dir`: parses config.json, finds the safetensors files, reads their headers.
    pub fn open(dir: &Path) -> Result<Checkpoint, Error> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = Config::from_json_str(&text, &config_path)?;
        let config_json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| Error::Config {
                path: config_path.clone(),
                message: format!("invalid JSON: {err}"),
            })?;

        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files = if single.is_file() {
            vec![single]
        } else if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
                path: index_path.clone(),
                source,
            })?;
            let index: ShardIndex = serde_json::from_str(&text).map_err(|err| Error::Config {
                path: index_path.clone(),
                message: format!("not a safetensors shard index: {err}"),
            })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for shard in index.weight_map.values() {
                let path = dir.join(shard);
                if !files.contains(&path) {
                    if !path.is_file() {
                        return Err(Error::Config {
                            path: index_path.clone(),
                            message: format!("shard {shard} does not exist"),
                        });
                    }
                    files.push(path);
                }
            }
            files
        } else {
            return Err(Error::NoWeights {
                dir: dir.to_path_buf(),
            });
        };

        let mut tensors = HashMap::new();
        for file in &files {
            for (name, entry) in read_header(file)? {
                tensors.insert(
                    name,
                    TensorInfo {
                        file: file.clone(),
                        dtype: entry.dtype,
                        shape: entry.shape,
                    },
                );
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config_path,
            config,
            config_json,
            files,
            tensors,
        })
    }

    /// Checks that `name` exists with `shape` and a float dtype.
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo, Error> {
        let info = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            dir: self.dir.clone(),
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch {
                path: info.file.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        if !matches!(info.dtype.as_str(), "BF16" | "F16" | "F32" | "F64") {
            return Err(Error::TensorDType {
                path: info.file.clone(),
                name: name.to_string(),
                dtype: info.dtype.clone(),
            });
        }
        Ok(info)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Reads the JSON header of a safetensors file (8-byte little-endian length, then JSON).
fn read_header(path: &Path) -> Result<Vec<(String, HeaderEntry)>, Error> {
    let bad = |message: String| Error::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file_len = file
        .metadata()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("file shorter than the 8-byte header length".to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > file_len.saturating_sub(8) || len > 100_000_000 {
        return Err(bad(format!("header length {len} exceeds the file size")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|err| bad(format!("truncated header: {err}")))?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|err| bad(format!("invalid header JSON: {err}")))?;
    let mut out = Vec::new();
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|err| bad(format!("tensor {name}: invalid header entry: {err}")))?;
        out.push((name, entry));
    }
    Ok(out)
}
