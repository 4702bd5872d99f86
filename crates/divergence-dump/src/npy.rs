//! The `.npy` array format (versions 1.0, 2.0 and 3.0): parsing a header into an [`NpyLayout`]
//! and writing headers for the npz writer.
//!
//! Headers in the exact form numpy writes (`{'descr': '<f4', 'fortran_order': False, 'shape':
//! (2, 3), }`, keys in that order) take a hand-written fast path ([`parse_canonical`]): a dump
//! has hundreds of members, and the general parser below costs more than reading a small
//! tensor. Any other header, and any header the fast path has doubts about, goes to the general
//! path: the dict is parsed by `npyz` (dtype, order, shape). Because `npyz` multiplies the
//! shape without overflow checks, the shape is first checked there with the same Python-literal
//! parser (`py_literal`), so a header claiming shape `[2**40, 2**40]` is an error, not a panic.
//! The fast path only ever accepts what the general path accepts, with the same result (tested).
//! Format reference: numpy/lib/format.py (numpy 2.x).

use npyz::{Endianness, TypeChar};
use py_literal::Value;

use crate::convert::Endian;
use crate::dtype::DType;
use crate::error::{brief, lowercase_first, DumpError, Location};

/// The npy magic string.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header we accept (numpy itself refuses more than 10000 bytes by default).
const MAX_HEADER: usize = 1 << 20;

/// Most dimensions a shape may have. numpy stops at 64 (`NPY_MAXDIMS`); we accept far more
/// (a v2 header of tens of thousands of unit dimensions reads), but refuse to hand a header
/// beyond this to the literal parser, which cannot parse such a tuple (a 150,000-dimension
/// shape failed there as a "syntax error").
pub(crate) const MAX_DIMS: usize = 32_768;

/// Largest header text read by the general (literal) parser, for headers not in numpy's
/// canonical form; canonical headers are read up to [`MAX_HEADER`].
const MAX_GENERAL_HEADER: usize = 64 << 10;

/// Most opening brackets (`(`, `[`, `{`) in a header handed to the literal parser
/// (`py_literal`). Its grammar retries every alternative at every level of a literal that fails
/// to parse, so time grows about threefold per level of nesting (fuzzing found 118 bytes of `[`
/// that took over 10 s, and 12 `{` took 7 s; docs/fuzzing.md). numpy writes 2 (the dict and
/// the shape tuple) for every dtype this reader reads; a header with more is a structured
/// dtype, or not numpy's, and is refused without being parsed. Counted by [`brackets`].
const MAX_BRACKETS: usize = 2;

/// How much of an offending header an error quotes.
const QUOTE: usize = 80;

/// What the header says about the array that follows it.
#[derive(Debug, Clone, PartialEq)]
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
        let what = if at.entry.is_some() { "entry" } else { "file" };
        return Err(corrupt(
            at,
            format!(
                "header is cut short: needs {header_len} bytes, the {what} has {}",
                bytes.len()
            ),
        ));
    };
    let text =
        std::str::from_utf8(text).map_err(|_| corrupt(at, "header text is not valid utf-8"))?;
    let text = text.trim_end_matches(['\n', ' ', '\0']);
    if let Some((dtype, endian, fortran, shape)) = parse_canonical(text) {
        let n_elems = shape.iter().product::<usize>(); // checked in parse_canonical
        return Ok(NpyLayout {
            header_len,
            shape,
            n_elems,
            dtype,
            endian,
            fortran,
        });
    }
    parse_general(bytes, header_len, text, at)
}

/// The header dict in exactly the form `numpy.lib.format` writes it, keys in numpy's order:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` (`text` without its padding).
/// `None` for anything else, including dtypes we do not read and shapes whose byte count
/// could overflow: the general path then decides, and words the error.
fn parse_canonical(text: &str) -> Option<(DType, Endian, bool, Vec<usize>)> {
    let rest = text.strip_prefix("{'descr': '")?;
    let (descr, rest) = rest.split_once('\'')?;
    let (dtype, endian) = match descr.as_bytes() {
        [order @ (b'<' | b'>'), kind, size] => {
            let dtype = match (kind, size) {
                (b'f', b'8') => DType::F64,
                (b'f', b'4') => DType::F32,
                (b'f', b'2') => DType::F16,
                (b'i', b'8') => DType::I64,
                (b'i', b'4') => DType::I32,
                (b'i', b'2') => DType::I16,
                _ => return None,
            };
            let endian = if *order == b'<' {
                Endian::Little
            } else {
                Endian::Big
            };
            (dtype, endian)
        }
        b"|i1" => (DType::I8, Endian::Little),
        b"|u1" => (DType::U8, Endian::Little),
        b"|b1" => (DType::Bool, Endian::Little),
        _ => return None,
    };
    let rest = rest.strip_prefix(", 'fortran_order': ")?;
    let (fortran, rest) = if let Some(r) = rest.strip_prefix("False") {
        (false, r)
    } else {
        (true, rest.strip_prefix("True")?)
    };
    let rest = rest.strip_prefix(", 'shape': (")?;
    let (dims, rest) = rest.split_once(')')?;
    if rest != ", }" {
        return None;
    }
    // "()", "(3,)" or "(2, 3)": numbers separated by ", ", a trailing "," only for one dimension.
    let mut shape = Vec::new();
    let mut product_nonzero = 1usize;
    if !dims.is_empty() {
        let one = dims.strip_suffix(',');
        let list = one.unwrap_or(dims);
        for d in list.split(", ") {
            if d.is_empty() || d.len() > 19 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if d.len() > 1 && d.starts_with('0') {
                return None; // not a python int literal
            }
            let d: usize = d.parse().ok()?;
            if d != 0 {
                product_nonzero = product_nonzero.checked_mul(d)?;
            }
            shape.push(d);
        }
        if (shape.len() == 1) != one.is_some() {
            return None;
        }
        if shape.len() > MAX_DIMS {
            return None;
        }
    }
    // Keep byte counts (x8) in range, as `checked_shape` does.
    product_nonzero.checked_mul(8)?;
    Some((dtype, endian, fortran, shape))
}

/// Any header dict numpy can read: parsed by `py_literal` (shape, with overflow checks) and
/// `npyz` (dtype and order).
fn parse_general(
    bytes: &[u8],
    header_len: usize,
    text: &str,
    at: &Location,
) -> Result<NpyLayout, DumpError> {
    let (shape, descr) = checked_shape(text, at)?;
    let n_elems = shape.iter().product::<usize>(); // checked in checked_shape

    // The shape is sane, so npyz cannot overflow; let it read dtype and order.
    let header = npyz::NpyHeader::from_reader(bytes.get(..header_len).unwrap_or_default())
        .map_err(|e| {
            let msg = brief(&lowercase_first(&e.to_string()), QUOTE);
            match &descr {
                // npyz's "invalid type string: Invalid type-string" does not say which
                Some(d) if msg.contains("type string") || msg.contains("type-string") => corrupt(
                    at,
                    format!(
                        "invalid 'descr' '{}' ({})",
                        brief(d, 40),
                        msg.trim_end_matches('.')
                    ),
                ),
                _ => corrupt(at, msg),
            }
        })?;
    let npyz::DType::Plain(ts) = header.dtype() else {
        return Err(if header.uses_pickled_array() {
            DumpError::ObjectArray { at: at.clone() }
        } else {
            DumpError::UnsupportedDtype {
                at: at.clone(),
                dtype: brief(&header.dtype().descr(), QUOTE),
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

/// How many items the `'shape'` tuple of a header dict lists, counted without parsing the
/// dict (`None` when there is no recognisable `'shape': (...)`).
fn count_dims(text: &str) -> Option<usize> {
    let key = text.find("'shape'").or_else(|| text.find("\"shape\""))?;
    let rest = text
        .get(key + 7..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let close = match rest.chars().next()? {
        '(' => ')',
        '[' => ']',
        _ => return None,
    };
    let inner = rest.get(1..)?.split(close).next()?;
    Some(inner.split(',').filter(|d| !d.trim().is_empty()).count())
}

/// The opening brackets of `text`, not counting those inside plain string literals (`'...'` or
/// `"..."` on one line, without a backslash: strings every Python lexer reads the same way).
/// From the first other quote on (a triple quote, an escape, no closing quote) every bracket
/// counts: a string the count skipped but the parser does not would let nesting through (the
/// fuzzer found such headers while escapes were followed).
fn brackets(text: &str) -> usize {
    let is_open = |b: &u8| matches!(b, b'(' | b'[' | b'{');
    let bytes = text.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if matches!(c, b'\'' | b'"') {
            let rest = bytes.get(i + 1..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|&b| b == c || matches!(b, b'\\' | b'\n' | b'\r'));
            let triple = rest.starts_with(&[c, c]);
            match end {
                Some(n) if rest.get(n) == Some(&c) && !triple => i += n + 1,
                _ => return count + rest.iter().filter(|b| is_open(b)).count(),
            }
        } else if is_open(&c) {
            count += 1;
        }
        i += 1;
    }
    count
}

/// The `'descr'` of a header dict when it is a list (a structured dtype), as written, without
/// parsing it: from its `[` to the matching `]` (or the end of the text).
fn structured_descr(text: &str) -> Option<&str> {
    let key = text.find("'descr'").or_else(|| text.find("\"descr\""))?;
    let rest = text
        .get(key + 7..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if !rest.starts_with('[') {
        return None;
    }
    let mut depth = 0usize;
    let mut quote = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return rest.get(..=i);
                }
            }
            _ => {}
        }
    }
    Some(rest)
}

/// The header text around byte `col` (1-based column of a parse error), quoted briefly.
fn quote_around(text: &str, col: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = col.saturating_sub(QUOTE / 2).min(chars.len());
    let end = (start + QUOTE).min(chars.len());
    let window: String = chars.get(start..end).unwrap_or_default().iter().collect();
    let mut q = brief(&window, QUOTE + 3);
    if start > 0 {
        q.insert_str(0, "...");
    }
    if end < chars.len() && !q.ends_with("...") {
        q.push_str("...");
    }
    q
}

/// A py_literal parse error on one line: pest's caret diagram reduced to its column, and the
/// header quoted around it.
fn literal_error(e: &py_literal::ParseError, text: &str) -> String {
    if let py_literal::ParseError::Syntax(msg) = e {
        // pest: " --> 1:23\n  |\n1 | {'descr'...\n  |       ^---\n  |\n  = expected ..."
        let col = msg
            .split("-->")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|lc| lc.split(':').nth(1))
            .and_then(|c| c.parse::<usize>().ok());
        if let Some(col) = col {
            return format!(
                "header is not a python dict literal (syntax error at column {col}): '{}'",
                quote_around(text, col)
            );
        }
    }
    let what = match e {
        py_literal::ParseError::Syntax(_) => "syntax error".to_string(),
        other => brief(&other.to_string(), QUOTE),
    };
    format!(
        "header is not a python dict literal ({what}): '{}'",
        brief(text, QUOTE)
    )
}

/// Pull `'shape'` out of the header dict and check that no product of dimensions overflows
/// (zeros skipped, since npyz also computes strides from prefix products). Also returns the
/// `'descr'` string, if it is one, for error messages.
fn checked_shape(text: &str, at: &Location) -> Result<(Vec<usize>, Option<String>), DumpError> {
    if let Some(dims) = count_dims(text).filter(|&n| n > MAX_DIMS) {
        return Err(DumpError::TooManyDimensions {
            at: at.clone(),
            dims,
            max: MAX_DIMS,
        });
    }
    let brackets = brackets(text);
    if brackets > MAX_BRACKETS {
        return Err(match structured_descr(text) {
            Some(descr) => DumpError::UnsupportedDtype {
                at: at.clone(),
                dtype: brief(descr, QUOTE),
            },
            None => corrupt(
                at,
                format!(
                    "header is not a dict numpy writes ({brackets} opening brackets, numpy writes 2): '{}'",
                    brief(text, QUOTE)
                ),
            ),
        });
    }
    // The literal parser needs ~3 us per byte of a long header it rejects (fuzzing: a flat
    // 1 MB header took 3 s): headers not in numpy's own form are read up to a size that keeps
    // each under ~0.2 s. numpy writes its form (the fast path); its own reader refuses
    // headers over 10,000 bytes.
    if text.len() > MAX_GENERAL_HEADER {
        return Err(corrupt(
            at,
            format!(
                "header of {} bytes is not in the form numpy writes; such headers are read up to {MAX_GENERAL_HEADER} bytes: '{}'",
                text.len(),
                brief(text, QUOTE)
            ),
        ));
    }
    let value: Value = text
        .parse()
        .map_err(|e: py_literal::ParseError| corrupt(at, literal_error(&e, text)))?;
    let Value::Dict(items) = value else {
        return Err(corrupt(
            at,
            format!("header is not a python dict: '{}'", brief(text, QUOTE)),
        ));
    };
    let descr = items.iter().find_map(|(k, v)| match (k, v) {
        (Value::String(k), Value::String(d)) if k == "descr" => Some(d.clone()),
        _ => None,
    });
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
        let Ok(d) = text.parse::<u64>() else {
            return Err(DumpError::DimensionTooLarge {
                at: at.clone(),
                dim: brief(&text, 40),
            });
        };
        raw.push(d);
    }
    if raw.len() > MAX_DIMS {
        return Err(DumpError::TooManyDimensions {
            at: at.clone(),
            dims: raw.len(),
            max: MAX_DIMS,
        });
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
    Ok((shape, descr))
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

    /// Both paths on one header text (wrapped into a v1 header, padded like numpy pads).
    fn both_paths(dict: &str) -> (Option<NpyLayout>, Result<NpyLayout, String>) {
        let unpadded = 10 + dict.len() + 1;
        let padded = unpadded.div_ceil(64) * 64;
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&[1, 0]);
        h.extend_from_slice(&((padded - 10) as u16).to_le_bytes());
        h.extend_from_slice(dict.as_bytes());
        h.resize(padded - 1, b' ');
        h.push(b'\n');
        let text = std::str::from_utf8(&h[10..])
            .unwrap()
            .trim_end_matches(['\n', ' ']);
        let fast = parse_canonical(text).map(|(dtype, endian, fortran, shape)| NpyLayout {
            header_len: padded,
            n_elems: shape.iter().product(),
            shape,
            dtype,
            endian,
            fortran,
        });
        let general = parse_general(&h, padded, text, &at()).map_err(|e| e.to_string());
        (fast, general)
    }

    #[test]
    fn fast_path_agrees_with_the_general_parser() {
        let descrs = [
            "<f8", "<f4", "<f2", ">f8", ">f4", ">f2", "<i8", "<i4", "<i2", ">i8", ">i4", ">i2",
            "|i1", "|u1", "|b1",
        ];
        let shapes = [
            "()",
            "(0,)",
            "(3,)",
            "(128, 1024)",
            "(1, 128, 151936)",
            "(3, 0, 2)",
        ];
        for descr in descrs {
            for order in ["False", "True"] {
                for shape in shapes {
                    let dict = format!(
                        "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"
                    );
                    let (fast, general) = both_paths(&dict);
                    let fast = fast.unwrap_or_else(|| panic!("fast path refused {dict}"));
                    assert_eq!(Ok(fast), general, "{dict}");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, failure_persistence: None, ..Default::default() })]
        #[test]
        fn fast_path_agrees_on_random_shapes(
            dims in proptest::collection::vec(
                proptest::prop_oneof![0usize..5, 0usize..200_000, proptest::prelude::any::<usize>()],
                0..5,
            ),
            descr in proptest::sample::select(vec!["<f4", ">f8", "|u1", "<i2"]),
        ) {
            let shape = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
            };
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            let (fast, general) = both_paths(&dict);
            if let Some(fast) = fast {
                proptest::prop_assert_eq!(Ok(fast), general);
            } else {
                proptest::prop_assert!(general.is_err(), "fast path refused a good header: {}", dict);
            }
        }
    }

    #[test]
    fn fast_path_leaves_everything_else_to_the_general_parser() {
        for dict in [
            // other key order, spacing, dtypes, literals
            "{'shape': (3,), 'fortran_order': False, 'descr': '<f4', }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}",
            "{'descr':'<f4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '=f4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [3], }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (03,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,3), }",
            // overflowing shapes: the general path words the error
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }",
        ] {
            let (fast, _) = both_paths(dict);
            assert_eq!(fast, None, "{dict}");
        }
    }

    #[test]
    fn huge_shape_is_an_error_not_a_panic() {
        let h = write_header("<f8", &[1 << 40, 1 << 40]);
        let e = parse_header(&h, &at()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.npy: shape [1099511627776, 1099511627776] is too large (its dimensions other than 0 multiply past 2^61 elements, which numpy refuses too)"
        );
        // a zero dimension does not hide overflowing prefix products
        let h = write_header("<f8", &[0, 1 << 40, 1 << 40]);
        assert!(matches!(
            parse_header(&h, &at()),
            Err(DumpError::ShapeTooLarge { .. })
        ));
    }

    /// A v2 header of `dims` dimensions of 1: the dict in numpy's key order (`canonical`, the
    /// fast path) or another (the general parser).
    fn v2_ones(dims: usize, canonical: bool) -> Vec<u8> {
        let shape = vec!["1"; dims].join(", ");
        let dict = if canonical {
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}")
        } else {
            format!("{{'shape': ({shape}), 'fortran_order': False, 'descr': '<f4'}}")
        };
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&[2, 0]);
        h.extend_from_slice(&(dict.len() as u32 + 1).to_le_bytes());
        h.extend_from_slice(dict.as_bytes());
        h.push(b'\n');
        h.extend_from_slice(&[0; 4]);
        h
    }

    /// A v2 header whose dict is not in numpy's key order, so the general parser reads it.
    fn general_v2(dims: usize) -> Vec<u8> {
        v2_ones(dims, false)
    }

    #[test]
    fn the_dimension_limit_is_counted_before_any_parsing() {
        assert!(matches!(
            parse_header(&general_v2(MAX_DIMS + 1), &at()),
            Err(DumpError::TooManyDimensions { dims, max: MAX_DIMS, .. }) if dims == MAX_DIMS + 1
        ));
    }

    #[test]
    fn long_headers_are_read_in_numpys_form_only() {
        // Within the general parser's size: read.
        let l = parse_header(&general_v2(1000), &at()).unwrap();
        assert_eq!(l.shape.len(), 1000);
        // MAX_DIMS dimensions in another key order: over its size, refused at once (the
        // literal parser would take seconds on such input).
        let t = std::time::Instant::now();
        let e = parse_header(&general_v2(MAX_DIMS), &at())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not in the form numpy writes"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // The same shape in numpy's own form: read.
        let h = v2_ones(MAX_DIMS, true);
        assert_eq!(parse_header(&h, &at()).unwrap().shape.len(), MAX_DIMS);
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
