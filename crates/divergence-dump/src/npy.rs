//! The `.npy` array format (versions 1.0, 2.0 and 3.0): parsing a header into an [`NpyLayout`]
//! and writing headers for the npz writer.
//!
//! The header dict is parsed by `npyz` (dtype, order, shape). Because `npyz` multiplies the
//! shape without overflow checks, the shape is first checked here with the same Python-literal
//! parser (`py_literal`), so a header claiming shape `[2**40, 2**40]` is an error, not a panic.
//! Format reference: numpy/lib/format.py (numpy 2.x).

use npyz::{Endianness, TypeChar};
use py_literal::Value;

use crate::convert::Endian;
use crate::dtype::DType;
use crate::error::{DumpError, Location};

/// The npy magic string.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header we accept (numpy itself refuses more than 10000 bytes by default).
const MAX_HEADER: usize = 1 << 20;

/// What the header says about the array that follows it.
#[derive(Debug, Clone)]
pub(crate) struct NpyLayout {
    /// Bytes from the start of the npy data to the first element.
    pub header_len: usize,
    pub shape: Vec<usize>,
    pub n_elems: usize,
    pub dtype: DType,
    pub endian: Endian,
    pub fortran: bool,
}

impl NpyLayout {
    /// Bytes the elements take (fits: checked when the layout was built).
    pub fn data_len(&self) -> usize {
        self.n_elems.saturating_mul(self.dtype.size_bytes())
    }
}

fn corrupt(at: &Location, detail: impl Into<String>) -> DumpError {
    DumpError::CorruptNpyHeader {
        at: at.clone(),
        detail: detail.into(),
    }
}

/// Length of the whole header (magic, version, length field and dict) from the first
/// [`PREAMBLE_MAX`] bytes (fewer if the data is shorter).
pub(crate) fn header_len(start: &[u8], at: &Location) -> Result<usize, DumpError> {
    if start.len() < 8 || !start.starts_with(MAGIC) {
        return Err(corrupt(at, "no npy magic string; not a numpy array"));
    }
    let (major, minor) = (
        start.get(6).copied().unwrap_or(0),
        start.get(7).copied().unwrap_or(0),
    );
    let (pre, text) = match major {
        1 => match start.get(8..10) {
            Some(b) => (10usize, usize::from(u16::from_le_bytes([b[0], b[1]]))),
            None => return Err(corrupt(at, "header is cut short")),
        },
        2 | 3 => match start.get(8..12) {
            Some(b) => (
                12usize,
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            ),
            None => return Err(corrupt(at, "header is cut short")),
        },
        _ => {
            return Err(corrupt(
                at,
                format!("unsupported npy version {major}.{minor}"),
            ))
        }
    };
    if minor != 0 {
        return Err(corrupt(
            at,
            format!("unsupported npy version {major}.{minor}"),
        ));
    }
    if text > MAX_HEADER {
        return Err(corrupt(
            at,
            format!("header claims {text} bytes, more than the {MAX_HEADER} allowed"),
        ));
    }
    Ok(pre + text)
}

/// Bytes needed to call [`header_len`].
pub(crate) const PREAMBLE_MAX: usize = 12;

/// Parse the header at the start of `bytes` (which must hold at least the whole header).
pub(crate) fn parse_header(bytes: &[u8], at: &Location) -> Result<NpyLayout, DumpError> {
    let header_len = header_len(bytes, at)?;
    let pre = if bytes.get(6) == Some(&1) { 10 } else { 12 };
    let Some(text) = bytes.get(pre..header_len) else {
        return Err(corrupt(
            at,
            format!(
                "header is cut short: needs {header_len} bytes, entry has {}",
                bytes.len()
            ),
        ));
    };
    let text =
        std::str::from_utf8(text).map_err(|_| corrupt(at, "header text is not valid utf-8"))?;
    let text = text.trim_end_matches(['\n', ' ', '\0']);
    let shape = checked_shape(text, at)?;
    let n_elems = shape.iter().product::<usize>(); // checked in checked_shape

    // The shape is sane, so npyz cannot overflow; let it read dtype and order.
    let header = npyz::NpyHeader::from_reader(bytes.get(..header_len).unwrap_or_default())
        .map_err(|e| corrupt(at, crate::error::lowercase_first(&e.to_string())))?;
    let npyz::DType::Plain(ts) = header.dtype() else {
        return Err(if header.uses_pickled_array() {
            DumpError::ObjectArray { at: at.clone() }
        } else {
            DumpError::UnsupportedDtype {
                at: at.clone(),
                dtype: header.dtype().descr(),
            }
        });
    };
    let size = ts.size_field();
    let dtype = match (ts.type_char(), size) {
        (TypeChar::Object, _) => return Err(DumpError::ObjectArray { at: at.clone() }),
        (TypeChar::Float, 8) => DType::F64,
        (TypeChar::Float, 4) => DType::F32,
        (TypeChar::Float, 2) => DType::F16,
        (TypeChar::Int, 8) => DType::I64,
        (TypeChar::Int, 4) => DType::I32,
        (TypeChar::Int, 2) => DType::I16,
        (TypeChar::Int, 1) => DType::I8,
        (TypeChar::Uint, 1) => DType::U8,
        (TypeChar::Bool, 1) => DType::Bool,
        _ => {
            return Err(DumpError::UnsupportedDtype {
                at: at.clone(),
                dtype: ts.to_string(),
            })
        }
    };
    let endian = match ts.endianness() {
        Endianness::Big => Endian::Big,
        Endianness::Little | Endianness::Irrelevant => Endian::Little,
    };
    if n_elems.checked_mul(dtype.size_bytes()).is_none() {
        return Err(DumpError::ShapeTooLarge {
            at: at.clone(),
            shape: shape.iter().map(|&d| d as u64).collect(),
        });
    }
    Ok(NpyLayout {
        header_len,
        shape,
        n_elems,
        dtype,
        endian,
        fortran: header.order() == npyz::Order::Fortran,
    })
}

/// Pull `'shape'` out of the header dict and check that no product of dimensions overflows
/// (zeros skipped, since npyz also computes strides from prefix products).
fn checked_shape(text: &str, at: &Location) -> Result<Vec<usize>, DumpError> {
    let value: Value = text.parse().map_err(|e: py_literal::ParseError| {
        corrupt(at, format!("not a python dict literal: {e}"))
    })?;
    let Value::Dict(items) = value else {
        return Err(corrupt(at, "header is not a python dict"));
    };
    let shape = items
        .iter()
        .find(|(k, _)| matches!(k, Value::String(s) if s == "shape"))
        .map(|(_, v)| v)
        .ok_or_else(|| corrupt(at, "header has no 'shape'"))?;
    let (Value::Tuple(dims) | Value::List(dims)) = shape else {
        return Err(corrupt(at, "'shape' is not a tuple"));
    };
    let mut raw = Vec::with_capacity(dims.len().min(64));
    for d in dims {
        let Value::Integer(i) = d else {
            return Err(corrupt(
                at,
                "'shape' holds something that is not an integer",
            ));
        };
        let text = i.to_string();
        if text.starts_with('-') {
            return Err(corrupt(at, format!("negative dimension {text} in 'shape'")));
        }
        // A dimension beyond u64 is reported as too large, like an overflowing product.
        raw.push(text.parse::<u64>().unwrap_or(u64::MAX));
    }
    let too_large = || DumpError::ShapeTooLarge {
        at: at.clone(),
        shape: raw.clone(),
    };
    let mut shape = Vec::with_capacity(raw.len());
    let mut product_nonzero = 1usize;
    for &d in &raw {
        let d = usize::try_from(d).map_err(|_| too_large())?;
        if d != 0 {
            product_nonzero = product_nonzero.checked_mul(d).ok_or_else(too_large)?;
        }
        shape.push(d);
    }
    // Keep byte counts (x8) in range too.
    if product_nonzero.checked_mul(8).is_none() {
        return Err(too_large());
    }
    Ok(shape)
}

/// The npy `descr` for a stored dtype (bf16 has none: npz stores it as f32).
pub(crate) fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F64 => "<f8",
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => return None,
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
    })
}

/// A complete npy header for a C-order array, as `numpy.lib.format` writes it: version 1.0
/// when the header fits a u16 length, else 2.0; padded with spaces to a multiple of 64 bytes
/// and ended by `\n`.
pub(crate) fn write_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        0 => "()".to_string(),
        1 => format!("({},)", dims.join("")),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let build = |pre: usize| {
        let unpadded = pre + dict.len() + 1; // + '\n'
        let padded = unpadded.div_ceil(64) * 64;
        let text_len = padded - pre;
        let mut out = Vec::with_capacity(padded);
        out.extend_from_slice(MAGIC);
        if pre == 10 {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&(text_len as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(text_len as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(padded - 1, b' ');
        out.push(b'\n');
        out
    };
    let v1 = 10 + dict.len() + 1;
    if v1.div_ceil(64) * 64 - 10 <= usize::from(u16::MAX) {
        build(10)
    } else {
        build(12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at() -> Location {
        Location::file(Path::new("t.npy"))
    }

    #[test]
    fn written_header_parses_back() {
        for shape in [vec![], vec![0], vec![3], vec![2, 3], vec![3, 0, 2]] {
            let h = write_header("<f4", &shape);
            assert_eq!(h.len() % 64, 0);
            let l = parse_header(&h, &at()).unwrap();
            assert_eq!(l.header_len, h.len());
            assert_eq!(l.shape, shape);
            assert_eq!(l.dtype, DType::F32);
            assert!(!l.fortran);
        }
    }

    #[test]
    fn huge_shape_is_an_error_not_a_panic() {
        let h = write_header("<f8", &[1 << 40, 1 << 40]);
        let e = parse_header(&h, &at()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.npy: shape [1099511627776, 1099511627776] is too large (the element count overflows)"
        );
        // a zero dimension does not hide overflowing prefix products
        let h = write_header("<f8", &[0, 1 << 40, 1 << 40]);
        assert!(matches!(
            parse_header(&h, &at()),
            Err(DumpError::ShapeTooLarge { .. })
        ));
    }

    #[test]
    fn long_header_uses_version_2() {
        let shape = vec![1usize; 7000]; // "1, " x 7000 > 65535 bytes? no: 21000; make it longer
        let shape: Vec<usize> = shape
            .iter()
            .chain(std::iter::repeat_n(&1usize, 20000))
            .copied()
            .collect();
        let h = write_header("<f4", &shape);
        assert_eq!(h.get(6), Some(&2));
        let l = parse_header(&h, &at()).unwrap();
        assert_eq!(l.shape.len(), 27000);
    }
}
