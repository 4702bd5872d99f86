//! [`DumpWriter`]: writes a dump as `.npz` (streamed, stored members) or `.safetensors`
//! (buffered, written by `finish`).
//!
//! npz: each `add` writes one stored (uncompressed) zip member `name.npy` (npy 1.0, or 2.0 when
//! the header needs it) straight to the file, so the dump is never held in memory. bf16 has no
//! npy dtype and is stored as f32 (exact) with `meta.dtypes[name] = "bfloat16"`; f16 stays f16.
//! `finish` writes `__meta__.npy` and the zip central directory. The result loads with
//! `numpy.load`.
//!
//! safetensors: tensors keep their dtype (BF16 and F16 native) and are buffered until `finish`,
//! which writes the file with the metadata JSON under `__metadata__["divergence"]`.
//!
//! Decode steps ([`DumpWriter::stack_steps`]): a tensor named `x@s` (decode step s >= 1) is
//! appended to the buffered stack `x@steps` instead, written by `finish` as one member whose
//! leading axis is the step (docs/dump-format.md, "Decode steps"); memory: the decode steps'
//! bytes until then.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use divergence_names::Name;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::convert::{encode_le, npz_storage, npz_storage_dtype};
use crate::dtype::{element_count, DType, TensorData};
use crate::error::{lowercase_first, DumpError};
use crate::meta::{Meta, FORMAT_TAG, META_ENTRY, SAFETENSORS_META_KEY};
use crate::npy;
use crate::stacked::STACKED_SUFFIX;

/// Writes a dump; see the module docs. Call [`DumpWriter::finish`] to complete the file.
pub struct DumpWriter {
    path: PathBuf,
    inner: Inner,
    /// Set by the npz file's [`Sink`] at its first I/O error: every later `add` and `finish`
    /// fails too (the sink no longer writes).
    failed: Arc<AtomicBool>,
    /// Names in add order, with the dtype each was given in.
    added: Vec<(String, DType)>,
    seen: HashSet<String>,
    /// Decode steps are stacked (`Some`), with the stacks in first-add order.
    stacks: Option<Vec<Stack>>,
    /// Stack name (`x@steps`) -> index in `stacks`.
    stack_index: HashMap<String, usize>,
}

/// The decode steps of one probe so far, encoded as they will be stored.
struct Stack {
    /// `x@steps`.
    name: String,
    /// One step's shape.
    shape: Vec<usize>,
    /// The dtype the steps were given in (all the same).
    dtype: DType,
    steps: usize,
    bytes: Vec<u8>,
}

enum Inner {
    Npz(Box<ZipWriter<Sink<BufWriter<File>>>>),
    Safetensors(Vec<Buffered>),
}

/// The npz file under the zip writer. After its first I/O error it takes every byte and writes
/// none: the zip writer finalizes the archive again when it is dropped unfinished (as it is
/// when a write failed), and printed that second failure to stderr, glued to our error line
/// (`--out` on a full disk; found by a bad-input hunt). The first error is the one returned.
/// [`DumpWriter`] reads the same flag, so that nothing is written as if fine after a failure.
///
/// It keeps the position the zip writer believes it is at, and the end of what it wrote, after
/// a failure too (without I/O): the zip writer computes a member's size from them when it
/// closes the member on drop (a seek answered 0 made that subtraction wrap, a panic in a debug
/// build, found by a review).
struct Sink<W> {
    inner: W,
    failed: Arc<AtomicBool>,
    pos: u64,
    end: u64,
}

impl<W> Sink<W> {
    fn new(inner: W, failed: Arc<AtomicBool>) -> Sink<W> {
        Sink {
            inner,
            failed,
            pos: 0,
            end: 0,
        }
    }
    fn latch<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }
    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    fn moved_to(&mut self, pos: u64) -> u64 {
        self.pos = pos;
        self.end = self.end.max(pos);
        pos
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = if self.failed() {
            buf.len()
        } else {
            let r = self.inner.write(buf);
            self.latch(r)?
        };
        self.moved_to(self.pos.saturating_add(n as u64));
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed() {
            return Ok(());
        }
        let r = self.inner.flush();
        self.latch(r)
    }
}

impl<W: Seek> Seek for Sink<W> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        if !self.failed() {
            let r = self.inner.seek(to);
            let at = self.latch(r)?;
            return Ok(self.moved_to(at));
        }
        let at = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
        };
        match at {
            Some(at) => Ok(self.moved_to(at)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            )),
        }
    }
}

/// A tensor waiting for `finish` (safetensors).
struct Buffered {
    name: String,
    dtype: ::safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl ::safetensors::View for &Buffered {
    fn dtype(&self) -> ::safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

impl std::fmt::Debug for DumpWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpWriter")
            .field("path", &self.path)
            .field("tensors", &self.added.len())
            .finish()
    }
}

impl DumpWriter {
    /// Create (truncate) `path`; the format comes from the extension, `.npz` or `.safetensors`.
    pub fn create(path: &Path) -> Result<DumpWriter, DumpError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let is_npz = match ext.as_deref() {
            Some("npz") => true,
            Some("safetensors") => false,
            _ => {
                return Err(DumpError::UnsupportedExtension {
                    path: path.to_path_buf(),
                })
            }
        };
        let file = File::create(path).map_err(|e| write_err(path, &e))?;
        let failed = Arc::new(AtomicBool::new(false));
        let inner = if is_npz {
            Inner::Npz(Box::new(ZipWriter::new(Sink::new(
                BufWriter::with_capacity(1 << 20, file),
                Arc::clone(&failed),
            ))))
        } else {
            Inner::Safetensors(Vec::new())
        };
        Ok(DumpWriter {
            path: path.to_path_buf(),
            inner,
            failed,
            added: Vec::new(),
            seen: HashSet::new(),
            stacks: None,
            stack_index: HashMap::new(),
        })
    }

    /// From now on, store decode steps stacked: `add("x@s", ..)` for s = 1, 2, ... appends to
    /// the member `x@steps` (shape `[steps] + step shape`), written by [`DumpWriter::finish`].
    /// Every step of a probe must have the same shape and dtype, and come in order (1, 2, ...).
    pub fn stack_steps(&mut self) {
        self.stacks.get_or_insert_with(Vec::new);
    }

    /// Add a tensor (C order). Names must be unique and non-empty; `__meta__` is reserved.
    pub fn add(
        &mut self,
        name: &str,
        shape: &[usize],
        data: TensorData<'_>,
    ) -> Result<(), DumpError> {
        self.check_not_failed()?;
        self.check_name(name)?;
        let need = element_count(shape);
        if need != Some(data.len()) {
            return Err(DumpError::DataLength {
                path: self.path.clone(),
                name: name.to_string(),
                len: data.len(),
                shape: shape.to_vec(),
                need: need.map_or_else(|| "more than fit in memory".to_string(), |n| n.to_string()),
            });
        }
        if self.stacks.is_some() {
            let (base, step) = divergence_names::split_step(name);
            // (`@3` alone names no probe: it is stored as it is.)
            if step > 0 && !base.is_empty() {
                return self.add_step(name, base, step, shape, &data);
            }
        }
        match &mut self.inner {
            Inner::Npz(zip) => {
                let storage = npz_storage_dtype(&data);
                let data_len = (data.len() as u64).saturating_mul(storage.size_bytes() as u64);
                npz_member(zip, &self.path, name, storage, shape, data_len, |zip| {
                    encode_le(&data, true, |b| zip.write_all(b))
                })?;
            }
            Inner::Safetensors(tensors) => {
                let mut bytes = Vec::new();
                let n_bytes = data.len().saturating_mul(data.dtype().size_bytes());
                bytes
                    .try_reserve_exact(n_bytes)
                    .map_err(|_| DumpError::Write {
                        path: self.path.clone(),
                        detail: format!("cannot allocate {n_bytes} bytes for tensor '{name}'"),
                    })?;
                encode_le(&data, false, |b| {
                    bytes.extend_from_slice(b);
                    Ok(())
                })
                .map_err(|e| write_err(&self.path, &e))?;
                tensors.push(Buffered {
                    name: name.to_string(),
                    dtype: st_dtype(data.dtype()),
                    shape: shape.to_vec(),
                    bytes,
                });
            }
        }
        self.seen.insert(name.to_string());
        self.added.push((name.to_string(), data.dtype()));
        Ok(())
    }

    /// Appends decode step `step` of `base` to its stack (see [`DumpWriter::stack_steps`]).
    fn add_step(
        &mut self,
        name: &str,
        base: &str,
        step: usize,
        shape: &[usize],
        data: &TensorData<'_>,
    ) -> Result<(), DumpError> {
        let is_npz = matches!(self.inner, Inner::Npz(_));
        let stack_name = format!("{base}{STACKED_SUFFIX}");
        let path = &self.path;
        let bad = |detail: String| DumpError::Write {
            path: path.clone(),
            detail: format!("tensor '{name}': {detail}"),
        };
        let Some(stacks) = self.stacks.as_mut() else {
            return Ok(());
        };
        let k = match self.stack_index.get(&stack_name) {
            Some(&k) => k,
            None => {
                if self.seen.contains(&stack_name) {
                    return Err(DumpError::DuplicateName {
                        path: path.clone(),
                        name: stack_name,
                    });
                }
                if step != 1 {
                    return Err(bad(format!(
                        "decode step {step} comes first: stacked steps must come in order, 1, 2, ..."
                    )));
                }
                stacks.push(Stack {
                    name: stack_name.clone(),
                    shape: shape.to_vec(),
                    dtype: data.dtype(),
                    steps: 0,
                    bytes: Vec::new(),
                });
                self.seen.insert(stack_name.clone());
                self.stack_index.insert(stack_name, stacks.len() - 1);
                stacks.len() - 1
            }
        };
        let Some(stack) = stacks.get_mut(k) else {
            return Ok(());
        };
        if step != stack.steps + 1 {
            return Err(bad(format!(
                "decode step {step} comes after step {} of the same probe: stacked steps must come in order, 1, 2, ...",
                stack.steps
            )));
        }
        if stack.shape != shape || stack.dtype != data.dtype() {
            return Err(bad(format!(
                "shape {shape:?} {}, but step 1 was {:?} {}: stacked steps must all have one shape and dtype",
                data.dtype(),
                stack.shape,
                stack.dtype
            )));
        }
        let n_bytes = data.len().saturating_mul(
            if is_npz {
                npz_storage_dtype(data)
            } else {
                data.dtype()
            }
            .size_bytes(),
        );
        stack
            .bytes
            .try_reserve(n_bytes)
            .map_err(|_| bad(format!("cannot allocate {n_bytes} bytes")))?;
        encode_le(data, is_npz, |b| {
            stack.bytes.extend_from_slice(b);
            Ok(())
        })
        .map_err(|e| write_err(path, &e))?;
        stack.steps += 1;
        self.seen.insert(name.to_string());
        Ok(())
    }

    /// Writes the decode-step stacks as members (npz) or buffered tensors (safetensors).
    fn write_stacks(&mut self) -> Result<(), DumpError> {
        let Some(stacks) = self.stacks.take() else {
            return Ok(());
        };
        for stack in stacks {
            let mut shape = Vec::with_capacity(stack.shape.len() + 1);
            shape.push(stack.steps);
            shape.extend_from_slice(&stack.shape);
            let path = &self.path;
            match &mut self.inner {
                Inner::Npz(zip) => {
                    let storage = npz_storage(stack.dtype);
                    let data_len = stack.bytes.len() as u64;
                    npz_member(zip, path, &stack.name, storage, &shape, data_len, |zip| {
                        zip.write_all(&stack.bytes)
                    })?;
                }
                Inner::Safetensors(tensors) => tensors.push(Buffered {
                    name: stack.name.clone(),
                    dtype: st_dtype(stack.dtype),
                    shape,
                    bytes: stack.bytes,
                }),
            }
            // (`seen` has its name since its first step.)
            self.added.push((stack.name, stack.dtype));
        }
        Ok(())
    }

    /// Complete the file. Fills `meta.format` (`"divergence-dump/1"`), `meta.order` (add order)
    /// if empty, and `meta.dtypes[name]` (dtype as given to `add`) for every tensor not already
    /// in it; then writes the metadata and closes the file.
    pub fn finish(mut self, mut meta: Meta) -> Result<(), DumpError> {
        self.check_not_failed()?;
        self.write_stacks()?;
        meta.format = FORMAT_TAG.to_string();
        if meta.order.is_empty() {
            meta.order = self
                .added
                .iter()
                .map(|(n, _)| Name::from(n.as_str()))
                .collect();
        }
        for (name, dtype) in &self.added {
            meta.dtypes
                .entry(name.clone())
                .or_insert_with(|| dtype.name().to_string());
        }
        let json = meta.to_json();
        let path = self.path;
        match self.inner {
            Inner::Npz(mut zip) => {
                let bytes = json.as_bytes();
                let header = npy::write_header("|u1", &[bytes.len()]);
                let zerr = |e: zip::result::ZipError| DumpError::Write {
                    path: path.clone(),
                    detail: lowercase_first(&e.to_string()),
                };
                let opts =
                    SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
                zip.start_file(format!("{META_ENTRY}.npy"), opts)
                    .map_err(zerr)?;
                zip.write_all(&header).map_err(|e| write_err(&path, &e))?;
                zip.write_all(bytes).map_err(|e| write_err(&path, &e))?;
                let mut out = zip.finish().map_err(zerr)?;
                out.flush().map_err(|e| write_err(&path, &e))?;
                if out.failed() {
                    return Err(DumpError::Write {
                        path,
                        detail: "a write failed".to_string(),
                    });
                }
            }
            Inner::Safetensors(tensors) => {
                let info = HashMap::from([(SAFETENSORS_META_KEY.to_string(), json)]);
                let data = tensors.iter().map(|t| (t.name.as_str(), t));
                ::safetensors::serialize_to_file(data, Some(info), &path).map_err(|e| {
                    DumpError::Write {
                        path: path.clone(),
                        detail: e.to_string(),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// An earlier write failed (its error was returned then): the file is incomplete.
    fn check_not_failed(&self) -> Result<(), DumpError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(DumpError::Write {
                path: self.path.clone(),
                detail: "an earlier write failed; the file is incomplete".to_string(),
            });
        }
        Ok(())
    }

    fn check_name(&self, name: &str) -> Result<(), DumpError> {
        let invalid = |reason: &str| DumpError::InvalidName {
            path: self.path.clone(),
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name == META_ENTRY || name == "__metadata__" {
            return Err(invalid("reserved for metadata"));
        }
        if name.ends_with('/') || name.contains('\0') {
            return Err(invalid("must not end with '/' or contain NUL"));
        }
        if self.seen.contains(name) {
            return Err(DumpError::DuplicateName {
                path: self.path.clone(),
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

/// Writes one stored npz member `name.npy`: the npy header of `storage` and `shape`, then the
/// `data_len` element bytes `write_data` writes (zip64 when they could pass 4 GiB).
fn npz_member(
    zip: &mut ZipWriter<Sink<BufWriter<File>>>,
    path: &Path,
    name: &str,
    storage: DType,
    shape: &[usize],
    data_len: u64,
    write_data: impl FnOnce(&mut ZipWriter<Sink<BufWriter<File>>>) -> std::io::Result<()>,
) -> Result<(), DumpError> {
    let header = npy::write_header(npy::descr(storage).unwrap_or("<f4"), shape);
    let total = (header.len() as u64).saturating_add(data_len);
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(total >= u64::from(u32::MAX));
    let zerr = |e: zip::result::ZipError| DumpError::Write {
        path: path.to_path_buf(),
        detail: format!("tensor '{name}': {}", lowercase_first(&e.to_string())),
    };
    zip.start_file(format!("{name}.npy"), opts).map_err(zerr)?;
    zip.write_all(&header).map_err(|e| write_err(path, &e))?;
    write_data(zip).map_err(|e| write_err(path, &e))
}

fn st_dtype(d: DType) -> ::safetensors::Dtype {
    use ::safetensors::Dtype as S;
    match d {
        DType::F64 => S::F64,
        DType::F32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I64 => S::I64,
        DType::I32 => S::I32,
        DType::I16 => S::I16,
        DType::I8 => S::I8,
        DType::U8 => S::U8,
        DType::Bool => S::BOOL,
    }
}

fn write_err(path: &Path, e: &std::io::Error) -> DumpError {
    DumpError::Write {
        path: path.to_path_buf(),
        detail: lowercase_first(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A file that takes `room` bytes, then fails every write (a disk that fills up).
    struct FillsUp {
        data: Cursor<Vec<u8>>,
        room: usize,
    }

    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.room {
                return Err(std::io::Error::other("no space left on device"));
            }
            self.room -= buf.len();
            self.data.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FillsUp {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.data.seek(to)
        }
    }

    /// The disk fills up in the second member: the error is returned, and dropping the zip
    /// writer (which closes the member and writes the directory into the sink) neither panics
    /// (a debug assertion of the zip crate, when a seek after the failure answered 0) nor
    /// fails again.
    #[test]
    fn a_disk_that_fills_up_after_a_member_fails_once_and_drops_quietly() {
        let failed = Arc::new(AtomicBool::new(false));
        let file = FillsUp {
            data: Cursor::new(Vec::new()),
            room: 400,
        };
        let mut zip = ZipWriter::new(Sink::new(file, Arc::clone(&failed)));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        zip.start_file("a.npy", opts).unwrap();
        zip.write_all(&[1; 100]).unwrap();
        zip.start_file("b.npy", opts).unwrap();
        assert!(zip.write_all(&[2; 1000]).is_err());
        assert!(failed.load(Ordering::Relaxed));
        drop(zip);
    }
}
