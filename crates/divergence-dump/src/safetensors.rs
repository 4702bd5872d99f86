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
use crate::error::{brief, DumpError, Location};
use crate::meta::{Meta, MAX_META_BYTES, SAFETENSORS_META_KEY};
// The largest header read (the `safetensors` crate's own limit) is checked from the length
// field before the header is touched: until 2026-12-04 a header past it was parsed whole to say
// what was wrong with it (246 MB of header took 3.9 GB).
use divergence_names::json::{HeaderPast, MAX_HEADER_BYTES};

/// Header size field length.
const N_LEN: usize = 8;

/// The header length the file's first 8 bytes declare.
fn declared_len(buf: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(..N_LEN)?.try_into().ok()?))
}

/// Whether `buf` parses as a safetensors file (used to sniff files with other extensions),
/// parsed only within the caps [`read_entries`] holds it to.
pub(crate) fn looks_like_safetensors(buf: &[u8]) -> bool {
    buf.get(N_LEN) == Some(&b'{')
        && declared_len(buf).is_some_and(|n| n <= MAX_HEADER_BYTES)
        && divergence_names::json::safetensors_header(buf, crate::MAX_ENTRIES).is_none()
        && SafeTensors::read_metadata(buf).is_ok()
}

/// Parse the header of the safetensors file `buf` into entries and metadata.
pub(crate) fn read_entries(
    path: &Path,
    buf: &[u8],
) -> Result<(Vec<Entry>, Option<Meta>), DumpError> {
    let bad = |detail: String| DumpError::Safetensors {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(n) = declared_len(buf) {
        if n > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header too large: the header claims {n} bytes, more than the {MAX_HEADER_BYTES} the format allows"
            )));
        }
        // Tensors (the header's fields, however written: a key may be escaped, a tensor a
        // list) and the header's items are counted before it is parsed: the parse costs each
        // item ~35-70 bytes (a 99 MB header of one list of zeros took 1.7 GB to be refused)
        // and each tensor ~700.
        match divergence_names::json::safetensors_header(buf, crate::MAX_ENTRIES) {
            Some(HeaderPast::Tensors(count)) => {
                return Err(DumpError::TooManyTensors {
                    path: path.to_path_buf(),
                    count,
                    max: crate::MAX_ENTRIES,
                })
            }
            Some(HeaderPast::Items { items, allowed }) => {
                return Err(bad(format!(
                    "the header holds {items} json items (list elements and object fields), more than the {allowed} its tensors allow"
                )))
            }
            None => {}
        }
    }
    let (header, metadata) =
        SafeTensors::read_metadata(buf).map_err(|e| DumpError::Safetensors {
            path: path.to_path_buf(),
            detail: diagnose(buf).unwrap_or_else(|| brief(&e.to_string(), 200)),
        })?;
    let tensors = metadata.offset_keys().len();
    if tensors > crate::MAX_ENTRIES {
        return Err(DumpError::TooManyTensors {
            path: path.to_path_buf(),
            count: tensors,
            max: crate::MAX_ENTRIES,
        });
    }
    let data_start = N_LEN + header; // read_metadata checked that the header fits in the file
                                     // JSON objects may repeat a key and the safetensors crate keeps the last one silently.
    if let Some(dup) = buf.get(N_LEN..data_start).and_then(duplicate_key) {
        return Err(DumpError::DuplicateEntry {
            path: path.to_path_buf(),
            entry: dup.clone(),
            name: dup,
            held: String::new(),
        });
    }

    let meta = match metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(SAFETENSORS_META_KEY))
    {
        Some(json) if json.len() > MAX_META_BYTES => {
            let mib = MAX_META_BYTES >> 20;
            let detail = format!(
                "'{SAFETENSORS_META_KEY}' is {} bytes, more than the {mib} MiB allowed for metadata",
                json.len()
            );
            return Err(DumpError::BadMeta {
                path: path.to_path_buf(),
                detail,
            });
        }
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

    // In offset order, and tensors that share their offsets (empty ones) by name: the crate
    // breaks such ties in its hash map's order, which changes from run to run (found by a
    // bad-input case naming the first of two empty stacked members: a or b at random).
    // (The crate's order is by offsets: only runs of equal offsets are sorted, one lookup a
    // name.)
    let mut names = metadata.offset_keys();
    let offsets: Vec<Option<(usize, usize)>> = names
        .iter()
        .map(|name| metadata.info(name).map(|ti| ti.data_offsets))
        .collect();
    let mut start = 0;
    while start < names.len() {
        let end = start
            + offsets[start..]
                .iter()
                .take_while(|&&o| o == offsets[start])
                .count();
        if let Some(run) = names.get_mut(start..end) {
            run.sort_unstable();
        }
        start = end;
    }
    let mut entries = Vec::new();
    for name in names {
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

/// A one-line reason for a file the safetensors crate refused, naming the tensor at fault: the
/// crate's own errors for shapes and offsets do not name it, and its error for an unknown dtype
/// lists every valid one. Repeats the crate's checks in its order (tensors sorted by offsets).
/// `None` when the header is not a JSON object or nothing tensor-specific is wrong: the crate's
/// message is used then.
fn diagnose(buf: &[u8]) -> Option<String> {
    use serde_json::Value;

    let n = declared_len(buf).filter(|&n| n <= MAX_HEADER_BYTES)?;
    let n = usize::try_from(n).ok()?;
    let header = buf.get(N_LEN..N_LEN.checked_add(n)?)?;
    let data_len = buf.len() - N_LEN - n;
    let map: serde_json::Map<String, Value> = serde_json::from_slice(header).ok()?;
    let mut tensors = Vec::with_capacity(map.len());
    for (name, v) in &map {
        if name == "__metadata__" {
            continue;
        }
        let q = brief(name, 60);
        let field = |key: &str| v.get(key).cloned().unwrap_or(Value::Null);
        let dtype: Dtype = match field("dtype") {
            Value::String(d) => match serde_json::from_value(Value::String(d.clone())) {
                Ok(dtype) => dtype,
                Err(_) => return Some(format!("tensor '{q}': unknown dtype '{}'", brief(&d, 20))),
            },
            _ => return Some(format!("tensor '{q}': 'dtype' is missing or not a string")),
        };
        let Ok(shape) = serde_json::from_value::<Vec<usize>>(field("shape")) else {
            return Some(format!(
                "tensor '{q}': 'shape' is missing or not a list of non-negative integers"
            ));
        };
        let Ok((start, end)) = serde_json::from_value::<(usize, usize)>(field("data_offsets"))
        else {
            return Some(format!(
                "tensor '{q}': 'data_offsets' is missing or not two non-negative integers"
            ));
        };
        tensors.push((q, dtype, shape, start, end));
    }
    tensors.sort_by_key(|t| (t.3, t.4));
    let mut at = 0usize;
    for (q, dtype, shape, start, end) in tensors {
        if start != at || end < start {
            return Some(format!(
                "tensor '{q}': data_offsets [{start}, {end}] do not run from where the previous tensor ends ({at})"
            ));
        }
        at = end;
        let bits = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return Some(format!(
                "overflow computing the size of tensor '{q}' (shape {shape:?} of {dtype})"
            ));
        };
        let need = bits.div_ceil(8);
        if end - start != need {
            return Some(format!(
                "tensor '{q}': shape {shape:?} of {dtype} needs {need} bytes, data_offsets [{start}, {end}] give {}",
                end - start
            ));
        }
    }
    (at != data_len)
        .then(|| format!("the tensors cover {at} bytes of data, the file holds {data_len}"))
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
