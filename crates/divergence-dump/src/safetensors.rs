//! Reading `.safetensors` files: the header is parsed and validated by the `safetensors` crate
//! over the memory map; each tensor becomes an [`Entry`] pointing at its bytes.
//!
//! Tensors are listed in data-offset order (the file does not keep insertion order; writers such
//! as `safetensors.torch.save_file` sort by dtype and name). Metadata is the JSON string under
//! key `"divergence"` of the header's `__metadata__` map; other `__metadata__` keys are ignored.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::convert::Endian;
use crate::dtype::DType;
use crate::entry::{Entry, EntryInfo, Source};
use crate::error::{DumpError, Location};
use crate::meta::{Meta, SAFETENSORS_META_KEY};

/// Header size field length.
const N_LEN: usize = 8;

/// Whether `buf` parses as a safetensors file (used to sniff files with other extensions).
pub(crate) fn looks_like_safetensors(buf: &[u8]) -> bool {
    buf.get(N_LEN) == Some(&b'{') && SafeTensors::read_metadata(buf).is_ok()
}

/// Parse the header of the safetensors file `buf` into entries and metadata.
pub(crate) fn read_entries(
    path: &Path,
    buf: &[u8],
) -> Result<(Vec<Entry>, Option<Meta>), DumpError> {
    let (header, metadata) =
        SafeTensors::read_metadata(buf).map_err(|e| DumpError::Safetensors {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let data_start = N_LEN + header; // read_metadata checked that the header fits in the file
                                     // JSON objects may repeat a key and the safetensors crate keeps the last one silently.
    if let Some(dup) = buf.get(N_LEN..data_start).and_then(duplicate_key) {
        return Err(DumpError::DuplicateEntry {
            path: path.to_path_buf(),
            entry: dup.clone(),
            name: dup,
        });
    }

    let meta = match metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(SAFETENSORS_META_KEY))
    {
        Some(json) => {
            Some(
                Meta::from_json(json.as_bytes()).map_err(|detail| DumpError::BadMeta {
                    path: path.to_path_buf(),
                    detail,
                })?,
            )
        }
        None => None,
    };

    let mut entries = Vec::new();
    for name in metadata.offset_keys() {
        let at = Location::entry(path, &name);
        let Some(ti) = metadata.info(&name) else {
            continue;
        };
        let dtype = match ti.dtype {
            Dtype::F64 => Ok(DType::F64),
            Dtype::F32 => Ok(DType::F32),
            Dtype::F16 => Ok(DType::F16),
            Dtype::BF16 => Ok(DType::BF16),
            Dtype::I64 => Ok(DType::I64),
            Dtype::I32 => Ok(DType::I32),
            Dtype::I16 => Ok(DType::I16),
            Dtype::I8 => Ok(DType::I8),
            Dtype::U8 => Ok(DType::U8),
            Dtype::BOOL => Ok(DType::Bool),
            other => Err(DumpError::UnsupportedDtype {
                at: at.clone(),
                dtype: other.to_string(),
            }),
        };
        let (start, end) = ti.data_offsets;
        // read_metadata validated offsets, sizes and the total length; keep the checks cheap
        // and panic-free anyway.
        let info = dtype.and_then(|dtype| {
            let n_elems =
                crate::dtype::element_count(&ti.shape).ok_or_else(|| DumpError::ShapeTooLarge {
                    at: at.clone(),
                    shape: ti.shape.iter().map(|&d| d as u64).collect(),
                })?;
            let len = end.saturating_sub(start);
            let need = n_elems.checked_mul(dtype.size_bytes());
            if need != Some(len) || data_start.saturating_add(end) > buf.len() {
                return Err(DumpError::DataSize {
                    at: at.clone(),
                    have: len as u64,
                    shape: ti.shape.clone(),
                    dtype,
                    need: need.map_or(u64::MAX, |n| n as u64),
                });
            }
            Ok(EntryInfo {
                shape: ti.shape.clone(),
                dtype,
                endian: Endian::Little,
                fortran: false,
                n_elems,
                source: Source::Bytes {
                    start: data_start + start,
                    len,
                },
            })
        });
        entries.push(Entry { name, at, info });
    }
    Ok((entries, meta))
}

/// The first key that appears twice at the top level of the JSON header, if any.
fn duplicate_key(header: &[u8]) -> Option<String> {
    struct Keys(Option<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a json object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut dup = None;
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        if dup.is_none() && !seen.insert(k.clone()) {
                            dup = Some(k);
                        }
                    }
                    Ok(Keys(dup))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(header)
        .ok()
        .and_then(|k| k.0)
}
