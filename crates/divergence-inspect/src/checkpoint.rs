//! Finding and mapping the safetensors files of a checkpoint.
//!
//! A checkpoint is a directory with `config.json` and either `model.safetensors.index.json`
//! (sharded: its `weight_map` names the shard of every tensor) or any number of
//! `*.safetensors` files (all of them are read). A single `.safetensors` file is accepted too,
//! with `config.json` looked up next to it. Files are memory-mapped; tensors are borrowed
//! slices of the maps, so nothing is copied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{describe_safetensors, InspectError};
use crate::names::natural_cmp;
use crate::report::{Finding, FindingKind, Severity};

/// Name of the shard index transformers writes.
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where a checkpoint's files are.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub config: PathBuf,
    /// The shard index, if the checkpoint has one: path and its weight_map.
    pub index: Option<(PathBuf, BTreeMap<String, String>)>,
    pub shards: Vec<PathBuf>,
}

/// Finds the files of the checkpoint at `path` (a directory or one `.safetensors` file).
/// Does not check that config.json exists: [`crate::inspect`] needs it, [`crate::norm_gains`]
/// does not.
pub(crate) fn locate(path: &Path) -> Result<Layout, InspectError> {
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InspectError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            InspectError::Io {
                path: path.to_path_buf(),
                error: source,
            }
        }
    })?;
    if meta.is_file() {
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(InspectError::NotAModel {
                path: path.to_path_buf(),
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok(Layout {
            config: dir.join("config.json"),
            index: None,
            shards: vec![path.to_path_buf()],
        });
    }
    if !meta.is_dir() {
        return Err(InspectError::NotAModel {
            path: path.to_path_buf(),
        });
    }
    let config = path.join("config.json");
    let index_path = path.join(INDEX_FILE);
    if index_path.is_file() {
        let weight_map = read_index(&index_path)?;
        let files: BTreeSet<&String> = weight_map.values().collect();
        let mut shards = Vec::with_capacity(files.len());
        for file in files {
            let shard = path.join(file);
            if !shard.is_file() {
                return Err(InspectError::MissingShard {
                    index: index_path,
                    shard: file.clone(),
                });
            }
            shards.push(shard);
        }
        if shards.is_empty() {
            return Err(InspectError::BadJson {
                path: index_path,
                message: "weight_map is empty".to_string(),
            });
        }
        return Ok(Layout {
            config,
            index: Some((index_path, weight_map)),
            shards,
        });
    }
    let entries = std::fs::read_dir(path).map_err(|source| InspectError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| InspectError::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) == Some("safetensors") && p.is_file() {
            shards.push(p);
        }
    }
    if shards.is_empty() {
        return Err(InspectError::NoSafetensors {
            path: path.to_path_buf(),
        });
    }
    shards.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(Layout {
        config,
        index: None,
        shards,
    })
}

fn read_index(path: &Path) -> Result<BTreeMap<String, String>, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| InspectError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: &str| InspectError::BadJson {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no weight_map object"))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(&format!("weight_map[{name:?}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(&format!(
                "weight_map[{name:?}] = {file:?} is not a file name in this directory"
            )));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

/// A memory-mapped shard.
pub(crate) struct Shard {
    pub path: PathBuf,
    pub file_name: String,
    map: Mmap,
}

/// Maps every shard of `layout`.
pub(crate) fn map_shards(layout: &Layout) -> Result<Vec<Shard>, InspectError> {
    layout
        .shards
        .iter()
        .map(|path| {
            let io = |error| InspectError::Io {
                path: path.clone(),
                error,
            };
            let file = File::open(path).map_err(io)?;
            let len = file.metadata().map_err(io)?.len();
            if len == 0 {
                return Err(InspectError::Safetensors {
                    path: path.clone(),
                    message: "empty file".to_string(),
                });
            }
            // SAFETY: the map is read-only and lives as long as the report is being built.
            // If another process truncates the file meanwhile we may get SIGBUS; that is the
            // accepted risk of every mmap-based safetensors reader (candle, safetensors-rs).
            let map = unsafe { Mmap::map(&file) }.map_err(io)?;
            let file_name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok(Shard {
                path: path.clone(),
                file_name,
                map,
            })
        })
        .collect()
}

/// One tensor, borrowed from its shard's map.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    pub name: String,
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// Parses every shard's header. Returns the tensors in natural name order (a tensor that is in
/// two shards appears once, from the first) and findings about duplicates and index mismatches.
pub(crate) fn entries<'a>(
    shards: &'a [Shard],
    index: Option<&(PathBuf, BTreeMap<String, String>)>,
) -> Result<(Vec<Entry<'a>>, Vec<Finding>), InspectError> {
    let mut findings = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let st = SafeTensors::deserialize(&shard.map).map_err(|e| InspectError::Safetensors {
            path: shard.path.clone(),
            message: describe_safetensors(&e),
        })?;
        for (name, view) in st.tensors() {
            if let Some(&first) = seen.get(&name) {
                findings.push(Finding {
                    severity: Severity::Error,
                    kind: FindingKind::DuplicateTensor,
                    tensor: Some(name.clone()),
                    message: format!(
                        "stored twice, in {} and {}: which copy a loader gets depends on the loader",
                        shards[first].file_name, shard.file_name
                    ),
                });
                continue;
            }
            seen.insert(name.clone(), i);
            out.push(Entry {
                name,
                shard: i,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data(),
            });
        }
    }
    if let Some((index_path, weight_map)) = index {
        let index_name = index_path.file_name().map_or_else(
            || INDEX_FILE.to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for (name, file) in weight_map {
            match seen.get(name) {
                None => findings.push(Finding {
                    severity: Severity::Error,
                    kind: FindingKind::IndexMismatch,
                    tensor: Some(name.clone()),
                    message: format!("{index_name} says it is in {file}, but no shard has it"),
                }),
                Some(&s) if shards[s].file_name != *file => findings.push(Finding {
                    severity: Severity::Warning,
                    kind: FindingKind::IndexMismatch,
                    tensor: Some(name.clone()),
                    message: format!(
                        "{index_name} says it is in {file}, but it is in {}",
                        shards[s].file_name
                    ),
                }),
                Some(_) => {}
            }
        }
        for e in &out {
            if !weight_map.contains_key(&e.name) {
                findings.push(Finding {
                    severity: Severity::Warning,
                    kind: FindingKind::IndexMismatch,
                    tensor: Some(e.name.clone()),
                    message: format!(
                        "in {} but not listed in {index_name}: loaders that follow the index will not load it",
                        shards[e.shard].file_name
                    ),
                });
            }
        }
    }
    out.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok((out, findings))
}
