//! The tensors of a checkpoint: every shard memory-mapped, every header counted against its
//! caps (tensors and JSON items, as a dump's: `divergence_names::json::safetensors_header`) and
//! then parsed by the `safetensors` crate (`SafeTensors::read_metadata`, which also checks the
//! header size, the offsets and that the data section has the size the header says).
//!
//! Nothing is copied: [`Weights::data`] borrows a tensor's bytes from its shard's map. A
//! tensor stored in two shards is listed once, from the first shard in reading order; the
//! duplicate, and every disagreement between the shards and the index, is an [`Anomaly`] for
//! the caller to report (inspect) or reject (the model).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use divergence_names::natural_cmp;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{describe_safetensors, Error};
use crate::layout::{file_kind, file_name, Layout};

/// A memory-mapped safetensors file.
pub struct Shard {
    pub path: PathBuf,
    /// The file name, for messages and reports.
    pub file_name: String,
    map: Mmap,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl Shard {
    fn map(path: &Path) -> Result<Shard, Error> {
        let io = |error| Error::Io {
            path: path.to_path_buf(),
            error,
        };
        // Before opening: opening a fifo blocks, and a device such as /dev/zero has no size.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: path.to_path_buf(),
                kind: file_kind(path, &meta.file_type()),
            });
        }
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(Error::Safetensors {
                path: path.to_path_buf(),
                message: "empty file".to_string(),
            });
        }
        // SAFETY: the map is read-only. If another process truncates the file meanwhile we may
        // get SIGBUS; that is the accepted risk of every mmap-based safetensors reader (candle,
        // safetensors-rs).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Shard {
            path: path.to_path_buf(),
            file_name: file_name(path),
            map,
        })
    }
}

/// One tensor: where it is and what it looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Index into [`Weights::shards`].
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the shard file.
    range: Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of stored bytes.
    pub fn byte_len(&self) -> usize {
        self.range.len()
    }
}

/// Something the shards and the index disagree about. Readers keep going; whether it matters
/// is for the caller to say. Files are named by their file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// The same tensor name in two shards (the copy in `first` is the one listed).
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    /// The index names a tensor that no shard has.
    NotInShards {
        name: String,
        index_file: String,
        file: String,
        /// A `*.safetensors` file of the folder that holds it but is not read, because the
        /// index names no tensor in it (the index left that shard out).
        held_by: Option<String>,
    },
    /// The tensor is in another shard than the index says.
    WrongShard {
        name: String,
        index_file: String,
        file: String,
        actual: String,
    },
    /// A shard has a tensor the index does not list.
    NotInIndex {
        name: String,
        index_file: String,
        file: String,
    },
}

impl Anomaly {
    /// The tensor concerned.
    pub fn tensor(&self) -> &str {
        match self {
            Anomaly::Duplicate { name, .. }
            | Anomaly::NotInShards { name, .. }
            | Anomaly::WrongShard { name, .. }
            | Anomaly::NotInIndex { name, .. } => name,
        }
    }
}

/// What is wrong and what it means, without the tensor name.
impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anomaly::Duplicate { first, second, .. } => write!(
                f,
                "stored twice, in {first} and {second}: which copy a loader gets depends on the loader"
            ),
            Anomaly::NotInShards {
                index_file,
                file,
                held_by: None,
                ..
            } => write!(f, "{index_file} says it is in {file}, but no shard has it"),
            Anomaly::NotInShards {
                index_file,
                file,
                held_by: Some(held_by),
                ..
            } => write!(
                f,
                "{index_file} says it is in {file}, but no shard it names has it: \
                 {held_by} has it and is not read ({index_file} names no tensor in it)"
            ),
            Anomaly::WrongShard {
                index_file,
                file,
                actual,
                ..
            } => write!(f, "{index_file} says it is in {file}, but it is in {actual}"),
            Anomaly::NotInIndex {
                index_file, file, ..
            } => write!(
                f,
                "in {file} but not listed in {index_file}: loaders that follow the index will not load it"
            ),
        }
    }
}

/// For each tensor the index places in a shard that lacks it, the unread `*.safetensors` file
/// of the folder that has it, if one does: an index that leaves a shard out reports every
/// tensor of that shard as missing, and the fix is to name the shard, not to look for the
/// tensors. Headers only; a file that cannot be read as safetensors is passed over (it is
/// already listed as not read).
fn find_holders(layout: &Layout, anomalies: &mut [Anomaly]) {
    if !anomalies
        .iter()
        .any(|a| matches!(a, Anomaly::NotInShards { .. }))
    {
        return;
    }
    let mut holders: HashMap<String, String> = HashMap::new();
    for ignored in &layout.ignored {
        if ignored.path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let Ok(shard) = Shard::map(&ignored.path) else {
            continue;
        };
        // Held to the caps of a shard that is read (a review: a stray header of one list of
        // zeros was parsed here, 1.7 GB).
        if past_caps(&shard.map).is_some() {
            continue;
        }
        let Ok((_, metadata)) = SafeTensors::read_metadata(&shard.map) else {
            continue;
        };
        for (name, _) in metadata.tensors() {
            holders
                .entry(name)
                .or_insert_with(|| shard.file_name.clone());
        }
    }
    for a in anomalies {
        if let Anomaly::NotInShards { name, held_by, .. } = a {
            *held_by = holders.get(name.as_str()).cloned();
        }
    }
}

/// Every tensor of a checkpoint, over memory maps.
#[derive(Debug)]
pub struct Weights {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Natural name order.
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    anomalies: Vec<Anomaly>,
}

impl Weights {
    /// Maps every shard of `layout` and parses its header.
    pub fn open(layout: &Layout) -> Result<Weights, Error> {
        let shards = layout
            .shards
            .iter()
            .map(|p| Shard::map(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut anomalies = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut tensors = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            if let Some(message) = past_caps(&shard.map) {
                return Err(Error::Safetensors {
                    path: shard.path.clone(),
                    message,
                });
            }
            let (header_len, metadata) =
                SafeTensors::read_metadata(&shard.map).map_err(|e| Error::Safetensors {
                    path: shard.path.clone(),
                    message: unknown_dtype(&shard.map).unwrap_or_else(|| describe_safetensors(&e)),
                })?;
            let start = 8 + header_len;
            let mut names: Vec<(String, &safetensors::tensor::TensorInfo)> =
                metadata.tensors().into_iter().collect();
            names.sort_by_key(|a| a.1.data_offsets);
            for (name, info) in names {
                if let Some(&first) = by_name.get(&name) {
                    let first: &TensorInfo = &tensors[first];
                    anomalies.push(Anomaly::Duplicate {
                        name,
                        first: shards[first.shard].file_name.clone(),
                        second: shard.file_name.clone(),
                    });
                    continue;
                }
                by_name.insert(name.clone(), tensors.len());
                let (a, b) = info.data_offsets;
                tensors.push(TensorInfo {
                    name,
                    shard: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: start + a..start + b,
                });
            }
        }
        if let Some(index) = &layout.index {
            let index_file = index.file_name();
            for (name, file) in &index.weight_map {
                match by_name
                    .get(name)
                    .map(|&t| &shards[tensors[t].shard].file_name)
                {
                    None => anomalies.push(Anomaly::NotInShards {
                        name: name.clone(),
                        index_file: index_file.clone(),
                        file: file.clone(),
                        held_by: None,
                    }),
                    Some(actual) if actual != file => anomalies.push(Anomaly::WrongShard {
                        name: name.clone(),
                        index_file: index_file.clone(),
                        file: file.clone(),
                        actual: actual.clone(),
                    }),
                    Some(_) => {}
                }
            }
            for t in &tensors {
                if !index.weight_map.contains_key(&t.name) {
                    anomalies.push(Anomaly::NotInIndex {
                        name: t.name.clone(),
                        index_file: index_file.clone(),
                        file: shards[t.shard].file_name.clone(),
                    });
                }
            }
        }
        find_holders(layout, &mut anomalies);
        tensors.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Weights {
            dir: layout.dir.clone(),
            shards,
            tensors,
            by_name,
            anomalies,
        })
    }

    /// The mapped files, in reading order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Every tensor, in natural name order (`layers.2` before `layers.10`).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Duplicates and index disagreements, in the order found.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The file that holds `tensor`.
    pub fn file(&self, tensor: &TensorInfo) -> &Path {
        &self.shards[tensor.shard].path
    }

    /// The file name of the shard that holds `tensor`.
    pub fn file_name(&self, tensor: &TensorInfo) -> &str {
        &self.shards[tensor.shard].file_name
    }

    /// The stored bytes of `tensor` (little-endian, C order), borrowed from the map.
    pub fn data(&self, tensor: &TensorInfo) -> &[u8] {
        &self.shards[tensor.shard].map[tensor.range.clone()]
    }

    /// Checks that `name` exists with `shape` and a float dtype (BF16, F16, F32, F64): what a
    /// model needs before loading it.
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo, Error> {
        let info = self.get(name).ok_or_else(|| Error::MissingTensor {
            dir: self.dir.clone(),
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch {
                path: self.file(info).to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        if !matches!(
            info.dtype,
            Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64
        ) {
            return Err(Error::TensorDType {
                path: self.file(info).to_path_buf(),
                name: name.to_string(),
                dtype: info.dtype,
            });
        }
        Ok(info)
    }
}

/// Why the header of the shard `map` is not parsed: past [`divergence_names::json::MAX_TENSORS`]
/// tensors or the items they allow ([`divergence_names::json::safetensors_header`], the count
/// a dump's header is held to), counted in one pass over the bytes. A 99 MB header of one list
/// of zeros took 1.7 GB to be refused as invalid JSON (2026-12-04). `None` within the caps, or
/// when the length field is missing or past the format's limit (the crate's own error says
/// that).
fn past_caps(map: &[u8]) -> Option<String> {
    use divergence_names::json::{safetensors_header, HeaderPast, MAX_TENSORS};
    Some(match safetensors_header(map, MAX_TENSORS)? {
        HeaderPast::Tensors(n) => {
            format!("the header lists {n} tensors, more than the {MAX_TENSORS} a shard may hold")
        }
        HeaderPast::Items { items, allowed } => format!(
            "the header holds {items} json items (list elements and object fields), more than the {allowed} its tensors allow"
        ),
    })
}

/// `tensor 'X': unknown dtype 'Q4'` when the header names a dtype the safetensors crate does
/// not know (its own message is serde's list of every valid one, without the tensor; found by a
/// bad-input hunt). `None` when that is not the problem or the header cannot be read here.
fn unknown_dtype(map: &[u8]) -> Option<String> {
    // The `Dtype` variants of safetensors 0.8.
    const KNOWN: [&str; 22] = [
        "BOOL",
        "F4",
        "F6_E2M3",
        "F6_E3M2",
        "U8",
        "I8",
        "F8_E5M2",
        "F8_E4M3",
        "F8_E8M0",
        "F8_E4M3FNUZ",
        "F8_E5M2FNUZ",
        "I16",
        "U16",
        "F16",
        "BF16",
        "I32",
        "U32",
        "F32",
        "C64",
        "F64",
        "I64",
        "U64",
    ];
    let len = u64::from_le_bytes(map.get(..8)?.try_into().ok()?);
    // Past the crate's own header cap (its `MAX_HEADER_SIZE`), its error says so: a header
    // of 246 MB parsed here took 3.9 GB before this check (a bad-input hunt, 2026-12-04).
    if len > divergence_names::json::MAX_HEADER_BYTES {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    let header: serde_json::Value =
        serde_json::from_slice(map.get(8..8usize.checked_add(len)?)?).ok()?;
    header.as_object()?.iter().find_map(|(name, info)| {
        let dtype = info.get("dtype")?.as_str()?;
        (name != "__metadata__" && !KNOWN.contains(&dtype)).then(|| {
            let (name, dtype) = (
                divergence_names::one_line(name),
                divergence_names::one_line(dtype),
            );
            format!("tensor '{name}': unknown dtype '{dtype}'")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard of `header` (its length field, then the header; no data).
    fn shard(header: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header);
        out
    }

    /// The shared count (divergence-names' `json` tests hold its caps), said as a shard's.
    #[test]
    fn a_header_past_its_caps_is_refused_before_it_is_parsed() {
        let mut h = String::from("{\"x\":[0");
        h.push_str(&",0".repeat(70_000));
        h.push_str("]}");
        let e = past_caps(&shard(h.as_bytes())).expect("past the cap");
        assert_eq!(
            e,
            "the header holds 70002 json items (list elements and object fields), more than the 65600 its tensors allow"
        );
        let real = br#"{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        assert_eq!(past_caps(&shard(real)), None);
    }
}
