//! Raw bytes <-> values: decoding stored elements (either byte order) into widened [`Values`],
//! Fortran-to-C reordering, and encoding [`TensorData`] as little-endian bytes for the writers.
//!
//! Decoding is written as `chunks_exact(N).map(from_le_bytes)` extended into a pre-reserved
//! `Vec`, which the compiler turns into a plain copy loop (a `memcpy` for f32/f64 little-endian),
//! so a tensor costs about one pass over its bytes.

use std::collections::TryReserveError;

use divergence_values::{bf16_to_f32, f16_to_f32};

use crate::dtype::{DType, TensorData, Values};

/// Byte order of stored elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endian {
    Little,
    Big,
}

/// An empty `Values` of the right variant for `dtype`, with room for `n` elements.
pub(crate) fn alloc_values(dtype: DType, n: usize) -> Result<Values, TryReserveError> {
    if dtype.widens_to_f64() {
        let mut v = Vec::new();
        v.try_reserve_exact(n)?;
        Ok(Values::F64(v))
    } else {
        let mut v = Vec::new();
        v.try_reserve_exact(n)?;
        Ok(Values::F32(v))
    }
}

#[inline(always)]
fn ext<const N: usize, T>(out: &mut Vec<T>, bytes: &[u8], f: impl Fn([u8; N]) -> T) {
    out.extend(
        bytes
            .chunks_exact(N)
            .map(|c| f(<[u8; N]>::try_from(c).unwrap_or([0; N]))),
    );
}

/// Append the elements stored in `bytes` (a whole number of elements) to `out`.
///
/// `out` must be the variant [`alloc_values`] gives for `dtype`; a mismatch appends nothing
/// (it cannot happen inside this crate).
pub(crate) fn decode_into(out: &mut Values, bytes: &[u8], dtype: DType, endian: Endian) {
    let big = endian == Endian::Big;
    match out {
        Values::F32(v) => match (dtype, big) {
            (DType::F32, false) => ext(v, bytes, f32::from_le_bytes),
            (DType::F32, true) => ext(v, bytes, f32::from_be_bytes),
            (DType::F16, false) => ext(v, bytes, |b| f16_to_f32(u16::from_le_bytes(b))),
            (DType::F16, true) => ext(v, bytes, |b| f16_to_f32(u16::from_be_bytes(b))),
            (DType::BF16, false) => ext(v, bytes, |b| bf16_to_f32(u16::from_le_bytes(b))),
            (DType::BF16, true) => ext(v, bytes, |b| bf16_to_f32(u16::from_be_bytes(b))),
            (DType::I16, false) => ext(v, bytes, |b| f32::from(i16::from_le_bytes(b))),
            (DType::I16, true) => ext(v, bytes, |b| f32::from(i16::from_be_bytes(b))),
            (DType::I8, _) => v.extend(bytes.iter().map(|&b| f32::from(b as i8))),
            (DType::U8, _) => v.extend(bytes.iter().map(|&b| f32::from(b))),
            (DType::Bool, _) => v.extend(bytes.iter().map(|&b| if b != 0 { 1.0f32 } else { 0.0 })),
            _ => {}
        },
        Values::F64(v) => match (dtype, big) {
            (DType::F64, false) => ext(v, bytes, f64::from_le_bytes),
            (DType::F64, true) => ext(v, bytes, f64::from_be_bytes),
            (DType::I64, false) => ext(v, bytes, |b| i64::from_le_bytes(b) as f64),
            (DType::I64, true) => ext(v, bytes, |b| i64::from_be_bytes(b) as f64),
            (DType::I32, false) => ext(v, bytes, |b| f64::from(i32::from_le_bytes(b))),
            (DType::I32, true) => ext(v, bytes, |b| f64::from(i32::from_be_bytes(b))),
            _ => {}
        },
    }
}

/// Reorder values stored in Fortran (column-major) order for `shape` into C order.
pub(crate) fn fortran_to_c(values: Values, shape: &[usize]) -> Values {
    match values {
        Values::F32(v) => Values::F32(permute(v, shape)),
        Values::F64(v) => Values::F64(permute(v, shape)),
    }
}

fn permute<T: Copy + Default>(src: Vec<T>, shape: &[usize]) -> Vec<T> {
    let ndim = shape.len();
    if ndim < 2 || src.len() < 2 {
        return src; // 0-d, 1-d and single-element arrays read the same in both orders
    }
    // Fortran strides: axis 0 is contiguous.
    let mut fstride = vec![1usize; ndim];
    for k in 1..ndim {
        fstride[k] = fstride[k - 1].saturating_mul(shape[k - 1]);
    }
    let mut idx = vec![0usize; ndim];
    let mut off = 0usize;
    let mut out = Vec::with_capacity(src.len());
    for _ in 0..src.len() {
        out.push(src.get(off).copied().unwrap_or_default());
        // Advance the C-order multi-index (last axis fastest), keeping `off` in step.
        for k in (0..ndim).rev() {
            idx[k] += 1;
            off += fstride[k];
            if idx[k] < shape[k] {
                break;
            }
            off -= fstride[k] * shape[k];
            idx[k] = 0;
        }
    }
    out
}

/// The dtype a tensor is stored with in npz (bf16 becomes f32, npy has no bf16).
pub(crate) fn npz_storage_dtype(data: &TensorData<'_>) -> DType {
    npz_storage(data.dtype())
}

/// [`npz_storage_dtype`] of a tensor given in `dtype`.
pub(crate) fn npz_storage(dtype: DType) -> DType {
    match dtype {
        DType::BF16 => DType::F32,
        d => d,
    }
}

/// Write the little-endian bytes of `data` to `sink` in bounded chunks (no full copy).
///
/// With `bf16_as_f32`, bf16 elements are written as exact f32 (for npz).
pub(crate) fn encode_le(
    data: &TensorData<'_>,
    bf16_as_f32: bool,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 14; // elements per chunk
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 8);
    macro_rules! each {
        ($slice:expr, $f:expr) => {{
            for chunk in $slice.chunks(CHUNK) {
                buf.clear();
                for x in chunk {
                    buf.extend_from_slice(&$f(*x));
                }
                sink(&buf)?;
            }
        }};
    }
    match *data {
        TensorData::F64(s) => each!(s, f64::to_le_bytes),
        TensorData::F32(s) => each!(s, f32::to_le_bytes),
        TensorData::F16(s) => each!(s, half::f16::to_le_bytes),
        TensorData::BF16(s) if bf16_as_f32 => each!(s, |x: half::bf16| x.to_f32().to_le_bytes()),
        TensorData::BF16(s) => each!(s, half::bf16::to_le_bytes),
        TensorData::I64(s) => each!(s, i64::to_le_bytes),
        TensorData::I32(s) => each!(s, i32::to_le_bytes),
        TensorData::U8(s) => {
            if !s.is_empty() {
                sink(s)?;
            }
        }
        TensorData::Bool(s) => each!(s, |b: bool| [u8::from(b)]),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_2x3_to_c() {
        // a = [[0,1,2],[3,4,5]] stored column-major: 0,3,1,4,2,5
        let f = Values::F32(vec![0., 3., 1., 4., 2., 5.]);
        assert_eq!(
            fortran_to_c(f, &[2, 3]),
            Values::F32(vec![0., 1., 2., 3., 4., 5.])
        );
    }

    #[test]
    fn fortran_3d_to_c() {
        // shape [2,3,4], value = C-order linear index; Fortran position of (i,j,k) = i + 2j + 6k
        let shape = [2usize, 3, 4];
        let mut f = vec![0f64; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    f[i + 2 * j + 6 * k] = (i * 12 + j * 4 + k) as f64;
                }
            }
        }
        let c = fortran_to_c(Values::F64(f), &shape);
        assert_eq!(c, Values::F64((0..24).map(|x| x as f64).collect()));
    }

    #[test]
    fn decode_both_endians() {
        let mut out = alloc_values(DType::I32, 2).unwrap();
        decode_into(
            &mut out,
            &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe],
            DType::I32,
            Endian::Big,
        );
        assert_eq!(out, Values::F64(vec![1.0, -2.0]));
        let mut out = alloc_values(DType::BF16, 1).unwrap();
        decode_into(
            &mut out,
            &half::bf16::from_f32(1.5).to_le_bytes(),
            DType::BF16,
            Endian::Little,
        );
        assert_eq!(out, Values::F32(vec![1.5]));
    }
}
