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
use crate::dtype::{DType, Tensor, TensorView, Values};
use crate::error::{DumpError, Location};
use crate::npy::{self, NpyLayout};
use crate::npz::{ZipMember, METHOD_DEFLATE, METHOD_STORED};

/// Where the bytes of a tensor are.
#[derive(Debug, Clone, Copy)]
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

/// A tensor's layout and where its bytes are: its entry's own source, or, for one step of a
/// stacked member, the step's part of the member's (the layout shared by every step).
pub(crate) type Layout<'a> = (&'a EntryInfo, Source);

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
    if let Some(detail) = &m.damage {
        return Err(DumpError::DamagedEntry {
            at: at.clone(),
            detail: detail.clone(),
        });
    }
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
    stream(file, (info, info.source), at, need, |chunk| {
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
    (info, source): Layout<'_>,
    at: &Location,
    need: usize,
    mut f: impl FnMut(&[u8]),
) -> Result<(), DumpError> {
    match source {
        Source::Bytes { start, len } => {
            f(stored_bytes(file, info, at, start, len, need)?);
            Ok(())
        }
        Source::Deflate { .. } => {
            let mut z = Inflate::open(file, source, at)?;
            let mut buf = vec![0u8; CHUNK.min(need)];
            let mut done = 0usize;
            while done < need {
                let n = CHUNK.min(need - done);
                let chunk = buf.get_mut(..n).unwrap_or_default();
                z.fill(chunk)?;
                f(chunk);
                done += n;
            }
            z.finish()
        }
    }
}

/// A deflated member's element bytes, inflated in order into the caller's buffers; the npy
/// header is skipped at [`Inflate::open`], and [`Inflate::finish`] checks that the stream ends
/// where the zip directory says (inflating at most one byte more: a deflate bomb stops after
/// one byte, not 64 GiB) and its CRC-32.
struct Inflate<'a> {
    z: CrcReader<DeflateDecoder<&'a [u8]>>,
    at: &'a Location,
    /// Bytes inflated so far (the npy header included).
    inflated: u64,
    total_len: u64,
    crc32: u32,
}

impl<'a> Inflate<'a> {
    fn open(file: &'a [u8], source: Source, at: &'a Location) -> Result<Inflate<'a>, DumpError> {
        let Source::Deflate {
            start,
            compressed_len,
            header_len,
            total_len,
            crc32,
        } = source
        else {
            return Err(corrupt(at, "not a deflated member".to_string()));
        };
        let raw = file
            .get(start..start.saturating_add(compressed_len))
            .unwrap_or_default();
        let mut z = CrcReader::new(DeflateDecoder::new(raw));
        let skipped = io::copy(&mut (&mut z).take(header_len as u64), &mut io::sink())
            .map_err(|e| corrupt(at, e.to_string()))?;
        Ok(Inflate {
            z,
            at,
            inflated: skipped,
            total_len,
            crc32,
        })
    }

    /// Fills `buf` with the next bytes, or fails if the stream ends first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), DumpError> {
        let got = read_full(&mut self.z, buf).map_err(|e| corrupt(self.at, e.to_string()))?;
        self.inflated += got as u64;
        if got < buf.len() {
            return Err(corrupt(
                self.at,
                format!(
                    "deflate stream ends after {} of {} bytes",
                    self.inflated, self.total_len
                ),
            ));
        }
        Ok(())
    }

    /// Replaces `buf`'s contents with the next `len` bytes (no zero-filling first), or fails
    /// if the stream ends first.
    fn fill_vec(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), DumpError> {
        buf.clear();
        buf.reserve_exact(len);
        let got = (&mut self.z)
            .take(len as u64)
            .read_to_end(buf)
            .map_err(|e| corrupt(self.at, e.to_string()))?;
        self.inflated += got as u64;
        if got < len {
            return Err(corrupt(
                self.at,
                format!(
                    "deflate stream ends after {} of {} bytes",
                    self.inflated, self.total_len
                ),
            ));
        }
        Ok(())
    }

    /// Checks the end of the stream and its CRC-32, once every element byte was read.
    fn finish(mut self) -> Result<(), DumpError> {
        let (at, total_len, total) = (self.at, self.total_len, self.inflated);
        let rest = total_len.saturating_sub(total);
        let tail = io::copy(&mut (&mut self.z).take(rest + 1), &mut io::sink())
            .map_err(|e| corrupt(at, e.to_string()))?;
        if tail > rest {
            return Err(corrupt(at, format!(
                "inflates past the {total_len} bytes the npy header and the zip directory declare (a deflate bomb?); stopped there"
            )));
        }
        if total + tail != total_len {
            return Err(corrupt(
                at,
                format!(
                    "inflated to {} bytes, the zip directory says {total_len}",
                    total + tail
                ),
            ));
        }
        let sum = self.z.crc().sum();
        if sum != self.crc32 {
            return Err(corrupt(
                at,
                format!(
                    "crc-32 mismatch (computed {sum:08x}, stored {:08x})",
                    self.crc32
                ),
            ));
        }
        Ok(())
    }
}

fn corrupt(at: &Location, detail: String) -> DumpError {
    DumpError::CorruptData {
        at: at.clone(),
        detail,
    }
}

/// Largest Fortran-order tensor reordered in memory, in decoded bytes: such a tensor cannot be
/// streamed in C order, so it is the one read whose memory grows with the tensor.
pub const MAX_REORDER_BYTES: u64 = 1 << 30;

/// An entry's values in C order, a piece at a time ([`crate::Dump::chunks`]): sliced from the
/// memory map (borrowed where the bytes are usable as they are, else decoded piece by piece)
/// or inflated piece by piece from a deflated member, so memory is one piece whatever the
/// tensor's size. Fortran-order tensors (2-d and up) are the exception: they are reordered
/// whole, up to [`MAX_REORDER_BYTES`].
pub struct Chunks<'a> {
    info: &'a EntryInfo,
    /// Elements per piece.
    per: usize,
    /// Elements handed out.
    done: usize,
    src: ChunkSource<'a>,
    /// Inflated bytes of the current piece.
    raw: Vec<u8>,
    /// Decoded values of the current piece.
    values: Values,
}

// One value per probe in flight: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum ChunkSource<'a> {
    /// The element bytes in the map.
    Stored(&'a [u8]),
    /// A deflate stream, `None` once finished.
    Deflate(Option<Inflate<'a>>),
    /// A tensor decoded whole (Fortran order).
    Whole(Values),
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(
        file: &'a [u8],
        (info, source): Layout<'a>,
        at: &'a Location,
        per: usize,
    ) -> Result<Chunks<'a>, DumpError> {
        let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
        let fortran = info.fortran && info.shape.len() >= 2 && info.n_elems > 1;
        let src = if fortran {
            ChunkSource::Whole(read_entry(file, (info, source), at)?.values)
        } else {
            match source {
                Source::Bytes { start, len } => {
                    ChunkSource::Stored(stored_bytes(file, info, at, start, len, need)?)
                }
                Source::Deflate { .. } => {
                    ChunkSource::Deflate(Some(Inflate::open(file, source, at)?))
                }
            }
        };
        Ok(Chunks {
            info,
            per: per.max(1),
            done: 0,
            src,
            raw: Vec::new(),
            values: Values::F32(Vec::new()),
        })
    }

    /// Shape in C order.
    pub fn shape(&self) -> &[usize] {
        &self.info.shape
    }

    /// The dtype the file stores.
    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.info.n_elems
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.info.n_elems == 0
    }

    /// The next piece of values (`per` elements, fewer in the last), or `None` after the last.
    /// A deflated member is checked (its end and CRC-32) when `None` is returned: read to the
    /// end before trusting what was read.
    pub fn next_piece(&mut self) -> Result<Option<ValuesRef<'_>>, DumpError> {
        let info = self.info;
        let n = self.per.min(info.n_elems - self.done);
        if n == 0 {
            if let ChunkSource::Deflate(z) = &mut self.src {
                if let Some(z) = z.take() {
                    z.finish()?;
                }
            }
            return Ok(None);
        }
        let (from, size) = (self.done, info.dtype.size_bytes());
        self.done += n;
        let bytes: &[u8] = match &mut self.src {
            ChunkSource::Whole(v) => {
                return Ok(Some(match v {
                    Values::F32(v) => ValuesRef::F32(v.get(from..from + n).unwrap_or_default()),
                    Values::F64(v) => ValuesRef::F64(v.get(from..from + n).unwrap_or_default()),
                }));
            }
            ChunkSource::Stored(b) => b.get(from * size..(from + n) * size).unwrap_or_default(),
            ChunkSource::Deflate(z) => {
                let Some(z) = z.as_mut() else {
                    return Ok(None);
                };
                z.fill_vec(&mut self.raw, n * size)?;
                &self.raw
            }
        };
        Ok(Some(piece_values(bytes, info, &mut self.values)))
    }
}

/// The values of whole elements `bytes`: borrowed when they are little-endian floats, else
/// decoded into `buf`.
fn piece_values<'b>(bytes: &'b [u8], info: &EntryInfo, buf: &'b mut Values) -> ValuesRef<'b> {
    if info.endian == Endian::Little {
        match info.dtype {
            DType::F32 => return ValuesRef::F32Le(bytes.as_chunks().0),
            DType::F64 => return ValuesRef::F64Le(bytes.as_chunks().0),
            DType::F16 => return ValuesRef::F16Le(bytes.as_chunks().0),
            DType::BF16 => return ValuesRef::Bf16Le(bytes.as_chunks().0),
            _ => {}
        }
    }
    let n = bytes.len() / info.dtype.size_bytes().max(1);
    *buf = match std::mem::replace(buf, Values::F32(Vec::new())) {
        Values::F32(mut v) if !info.dtype.widens_to_f64() => {
            v.clear();
            v.reserve(n);
            Values::F32(v)
        }
        Values::F64(mut v) if info.dtype.widens_to_f64() => {
            v.clear();
            v.reserve(n);
            Values::F64(v)
        }
        _ => alloc_values(info.dtype, n).unwrap_or(Values::F32(Vec::new())),
    };
    decode_into(buf, bytes, info.dtype, info.endian);
    (&*buf).into()
}

/// True when the stored bytes of an entry are its values as they are: uncompressed,
/// little-endian, C order, f32 / f64 / f16 / bf16.
pub(crate) fn is_zero_copy(info: &EntryInfo) -> bool {
    let c_order = !info.fortran || info.shape.len() < 2;
    let float = matches!(
        info.dtype,
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    );
    matches!(info.source, Source::Bytes { .. }) && info.endian == Endian::Little && c_order && float
}

/// An entry's values without a copy where the stored bytes are usable as they are (uncompressed,
/// little-endian, C order, f32 / f64 / f16 / bf16); every other entry is decoded by
/// [`read_entry`].
pub(crate) fn view_entry<'a>(
    file: &'a [u8],
    (info, source): Layout<'_>,
    at: &Location,
) -> Result<TensorView<'a>, DumpError> {
    let Source::Bytes { start, len } = source else {
        return read_entry(file, (info, source), at).map(TensorView::decoded);
    };
    if !is_zero_copy(info) {
        return read_entry(file, (info, source), at).map(TensorView::decoded);
    }
    let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
    let bytes = stored_bytes(file, info, at, start, len, need)?;
    let values = stored_values(bytes, info.dtype);
    Ok(TensorView::stored(info.shape.clone(), info.dtype, values))
}

/// Stored little-endian float bytes of `dtype` (one of the zero-copy dtypes,
/// [`is_zero_copy`]) as the values they hold, borrowed.
pub(crate) fn stored_values(bytes: &[u8], dtype: DType) -> ValuesRef<'_> {
    match dtype {
        DType::F32 => ValuesRef::F32Le(bytes.as_chunks().0),
        DType::F64 => ValuesRef::F64Le(bytes.as_chunks().0),
        DType::F16 => ValuesRef::F16Le(bytes.as_chunks().0),
        _ => ValuesRef::Bf16Le(bytes.as_chunks().0),
    }
}

/// Read and decode an entry into a C-order [`Tensor`].
pub(crate) fn read_entry(
    file: &[u8],
    (info, source): Layout<'_>,
    at: &Location,
) -> Result<Tensor, DumpError> {
    let need = info.n_elems.saturating_mul(info.dtype.size_bytes());
    let decoded =
        (info.n_elems as u64).saturating_mul(if info.dtype.widens_to_f64() { 8 } else { 4 });
    if info.fortran && info.shape.len() >= 2 && decoded > MAX_REORDER_BYTES {
        return Err(DumpError::UnsupportedEntry {
            at: at.clone(),
            detail: format!(
                "a Fortran-order array of {decoded} decoded bytes, more than the {} MiB reordered in memory; save it in C order (numpy.ascontiguousarray)",
                MAX_REORDER_BYTES >> 20
            ),
        });
    }
    let mut values =
        alloc_values(info.dtype, info.n_elems).map_err(|_| DumpError::OutOfMemory {
            at: at.clone(),
            bytes: need as u64,
        })?;
    stream(file, (info, source), at, need, |chunk| {
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
