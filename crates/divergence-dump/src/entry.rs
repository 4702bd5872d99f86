//! One tensor inside a dump file: where its bytes are ([`Source`]), what they are
//! ([`EntryInfo`]), and how to turn them into a [`Tensor`] ([`read_entry`]).
//!
//! Everything here works on a shared `&[u8]` (the memory map) and owns no mutable state, so
//! any number of threads can read entries of the same dump at once.

use std::io::{self, Read};

use divergence_values::ValuesRef;
use flate2::read::DeflateDecoder;
use flate2::CrcReader;

use crate::convert::{alloc_values, decode_into, fortran_to_c, Endian};
use crate::dtype::{DType, Tensor, TensorView};
use crate::error::{DumpError, Location};
use crate::npy::{self, NpyLayout};
use crate::npz::{ZipMember, METHOD_DEFLATE, METHOD_STORED};

/// Where the bytes of a tensor are.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Uncompressed element bytes at `start..start + len` of the file.
    Bytes { start: usize, len: usize },
    /// A deflated npz member; the npy header (`header_len` bytes) comes first in the stream,
    /// and the stream holds exactly `total_len` bytes (header and elements, as the npy header
    /// implies and the zip directory repeats): inflating stops the moment it yields more.
    Deflate {
        start: usize,
        compressed_len: usize,
        header_len: usize,
        total_len: u64,
        crc32: u32,
    },
}

/// Shape, dtype and location of a readable tensor.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub endian: Endian,
    pub fortran: bool,
    pub n_elems: usize,
    pub source: Source,
}

/// A tensor listed in a dump. A problem found at open time (object array, unsupported dtype,
/// corrupt header, short data) is kept in `info` and returned by every read of the entry, so
/// one bad entry does not make the whole dump unreadable.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub at: Location,
    pub info: Result<EntryInfo, DumpError>,
}

/// Largest deflate expansion ratio (the format's theoretical limit is about 1032:1).
const MAX_DEFLATE_RATIO: u64 = 1040;

/// Chunk size for streamed inflation (a multiple of every element size).
const CHUNK: usize = 1 << 18;

fn short_data(at: &Location, l: &NpyLayout, have: u64) -> DumpError {
    DumpError::DataSize {
        at: at.clone(),
        have,
        shape: l.shape.clone(),
        dtype: l.dtype,
        need: l.data_len() as u64,
    }
}

fn info_from_layout(l: NpyLayout, source: Source) -> EntryInfo {
    EntryInfo {
        shape: l.shape,
        dtype: l.dtype,
        endian: l.endian,
        fortran: l.fortran,
        n_elems: l.n_elems,
        source,
    }
}

/// Describe uncompressed npy bytes that start at `offset` of the file.
pub(crate) fn npy_info(bytes: &[u8], offset: usize, at: &Location) -> Result<EntryInfo, DumpError> {
    let l = npy::parse_header(bytes, at)?;
    let have = bytes.len().saturating_sub(l.header_len);
    if have < l.data_len() {
        return Err(short_data(at, &l, have as u64));
    }
    let start = offset + l.header_len;
    let len = l.data_len();
    Ok(info_from_layout(l, Source::Bytes { start, len }))
}

/// Describe one npz member (parses its npy header; inflates just the header if deflated).
pub(crate) fn member_info(
    file: &[u8],
    m: &ZipMember,
    at: &Location,
) -> Result<EntryInfo, DumpError> {
    if m.encrypted {
        return Err(DumpError::UnsupportedEntry {
            at: at.clone(),
            detail: "encrypted zip entries are not supported".into(),
        });
    }
    let raw = m.raw(file);
    match m.method {
        METHOD_STORED => npy_info(raw, m.data_start, at),
        METHOD_DEFLATE => {
            let corrupt = |detail: String| DumpError::CorruptData { at: at.clone(), detail };
            let bound = (raw.len() as u64).saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024);
            if m.uncompressed_size > bound {
                return Err(corrupt(format!(
                    "claims {} bytes uncompressed from {} compressed",
                    m.uncompressed_size,
                    raw.len()
                )));
            }
            let mut z = DeflateDecoder::new(raw);
            let mut head = vec![0u8; npy::PREAMBLE_MAX];
            let got = read_full(&mut z, &mut head).map_err(|e| corrupt(e.to_string()))?;
            head.truncate(got);
            let header_len = npy::header_len(&head, at)?;
            if header_len > head.len() {
                let old = head.len();
                head.resize(header_len, 0);
                let got = read_full(&mut z, head.get_mut(old..).unwrap_or_default())
                    .map_err(|e| corrupt(e.to_string()))?;
                head.truncate(old + got);
            }
            let l = npy::parse_header(&head, at)?;
            let have = m.uncompressed_size.saturating_sub(header_len as u64);
            if have < l.data_len() as u64 {
                return Err(short_data(at, &l, have));
            }
            // numpy writes exactly header + elements; a directory that claims more would have
            // us inflate bytes nobody reads (a deflate bomb hides behind such a claim).
            let implied = header_len as u64 + l.data_len() as u64;
            if m.uncompressed_size > implied {
                return Err(corrupt(format!(
                    "the zip directory says {} bytes uncompressed, the npy header implies {implied}",
                    m.uncompressed_size
                )));
            }
            let source = Source::Deflate {
                start: m.data_start,
                compressed_len: m.compressed_size,
                header_len,
                total_len: m.uncompressed_size,
                crc32: m.crc32,
            };
            Ok(info_from_layout(l, source))
        }
        other => Err(DumpError::UnsupportedEntry {
            at: at.clone(),
            detail: format!("unsupported zip compression method {other} (numpy writes stored (0) or deflate (8))"),
        }),
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The raw (uncompressed, not yet decoded) element bytes of an entry; used for `__meta__`.
pub(crate) fn raw_bytes(
    file: &[u8],
    info: &EntryInfo,
    at: &Location,
) -> Result<Vec<u8>, DumpError> {
    let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
    let mut out = Vec::new();
    stream(file, info, at, need, |chunk| {
        out.extend_from_slice(chunk);
    })?;
    Ok(out)
}

/// The first `need` of the `len` uncompressed bytes at `start`, or a size error when the file
/// holds fewer.
fn stored_bytes<'a>(
    file: &'a [u8],
    info: &EntryInfo,
    at: &Location,
    start: usize,
    len: usize,
    need: usize,
) -> Result<&'a [u8], DumpError> {
    file.get(start..start.saturating_add(len))
        .and_then(|b| b.get(..need))
        .ok_or_else(|| DumpError::DataSize {
            at: at.clone(),
            have: len as u64,
            shape: info.shape.clone(),
            dtype: info.dtype,
            need: need as u64,
        })
}

/// Hand the `need` element bytes of an entry to `f`, in chunks of whole elements.
fn stream(
    file: &[u8],
    info: &EntryInfo,
    at: &Location,
    need: usize,
    mut f: impl FnMut(&[u8]),
) -> Result<(), DumpError> {
    match info.source {
        Source::Bytes { start, len } => {
            f(stored_bytes(file, info, at, start, len, need)?);
            Ok(())
        }
        Source::Deflate {
            start,
            compressed_len,
            header_len,
            total_len,
            crc32,
        } => {
            let corrupt = |detail: String| DumpError::CorruptData {
                at: at.clone(),
                detail,
            };
            let raw = file
                .get(start..start.saturating_add(compressed_len))
                .unwrap_or_default();
            let mut z = CrcReader::new(DeflateDecoder::new(raw));
            let skipped = io::copy(&mut (&mut z).take(header_len as u64), &mut io::sink())
                .map_err(|e| corrupt(e.to_string()))?;
            let mut buf = vec![0u8; CHUNK.min(need)];
            let mut done = 0usize;
            while done < need {
                let n = CHUNK.min(need - done);
                let chunk = buf.get_mut(..n).unwrap_or_default();
                let got = read_full(&mut z, chunk).map_err(|e| corrupt(e.to_string()))?;
                if got < n {
                    return Err(corrupt(format!(
                        "deflate stream ends after {} of {} bytes",
                        skipped as usize + done + got,
                        total_len
                    )));
                }
                f(chunk);
                done += n;
            }
            // The stream must end here: inflate at most one byte more, never the rest of a
            // stream that lies about its size (a deflate bomb stops after one byte, not 64 GiB).
            let total = skipped + done as u64;
            let rest = total_len.saturating_sub(total);
            let tail = io::copy(&mut (&mut z).take(rest + 1), &mut io::sink())
                .map_err(|e| corrupt(e.to_string()))?;
            if tail > rest {
                return Err(corrupt(format!(
                    "inflates past the {total_len} bytes the npy header and the zip directory declare (a deflate bomb?); stopped there"
                )));
            }
            if total + tail != total_len {
                return Err(corrupt(format!(
                    "inflated to {} bytes, the zip directory says {total_len}",
                    total + tail
                )));
            }
            if z.crc().sum() != crc32 {
                return Err(corrupt(format!(
                    "crc-32 mismatch (computed {:08x}, stored {crc32:08x})",
                    z.crc().sum()
                )));
            }
            Ok(())
        }
    }
}

/// An entry's values without a copy where the stored bytes are usable as they are (uncompressed,
/// little-endian, C order, f32 / f64 / f16 / bf16); every other entry is decoded by
/// [`read_entry`].
pub(crate) fn view_entry<'a>(
    file: &'a [u8],
    info: &EntryInfo,
    at: &Location,
) -> Result<TensorView<'a>, DumpError> {
    let c_order = !info.fortran || info.shape.len() < 2;
    let borrowable = matches!(
        info.dtype,
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    );
    let (Source::Bytes { start, len }, Endian::Little, true, true) =
        (&info.source, info.endian, c_order, borrowable)
    else {
        return read_entry(file, info, at).map(TensorView::decoded);
    };
    let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
    let bytes = stored_bytes(file, info, at, *start, *len, need)?;
    let values = match info.dtype {
        DType::F32 => ValuesRef::F32Le(bytes.as_chunks().0),
        DType::F64 => ValuesRef::F64Le(bytes.as_chunks().0),
        DType::F16 => ValuesRef::F16Le(bytes.as_chunks().0),
        _ => ValuesRef::Bf16Le(bytes.as_chunks().0),
    };
    Ok(TensorView::stored(info.shape.clone(), info.dtype, values))
}

/// Read and decode an entry into a C-order [`Tensor`].
pub(crate) fn read_entry(
    file: &[u8],
    info: &EntryInfo,
    at: &Location,
) -> Result<Tensor, DumpError> {
    let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
    let mut values =
        alloc_values(info.dtype, info.n_elems).map_err(|_| DumpError::OutOfMemory {
            at: at.clone(),
            bytes: need as u64,
        })?;
    stream(file, info, at, need, |chunk| {
        decode_into(&mut values, chunk, info.dtype, info.endian)
    })?;
    if info.fortran {
        values = fortran_to_c(values, &info.shape);
    }
    Ok(Tensor {
        shape: info.shape.clone(),
        dtype: info.dtype,
        values,
    })
}
