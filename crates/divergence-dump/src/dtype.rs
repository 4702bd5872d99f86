//! Element types: the storage [`DType`] of a tensor, the widened [`Values`] a reader returns, a
//! read [`Tensor`], a [`TensorView`] (whose values are a [`ValuesRef`], borrowed from the file
//! where they can be), and the borrowed [`TensorData`] a writer accepts.
//!
//! Widening is exact except for 64-bit integers: f16, bf16, i16, i8, u8 and bool become f32;
//! f64 and i32 become f64; i64 becomes f64 (exact up to 2^53). f16 and bf16 widen with
//! `divergence-values`' functions, the ones the diff kernel uses on stored bytes.

use std::fmt;

use divergence_values::{bf16_to_f32, f16_to_f32, ValuesRef};

/// How a tensor is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// All dtypes, for iteration in tests and docs.
    pub const ALL: [DType; 10] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    /// The torch-style name without `torch.`: `"float32"`, `"bfloat16"`, `"bool"`, ...
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// Inverse of [`DType::name`]; also accepts a `torch.` prefix.
    pub fn from_name(s: &str) -> Option<DType> {
        let s = s.strip_prefix("torch.").unwrap_or(s);
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Explicit mantissa bits of a float dtype; `None` for integers and bool.
    pub fn mantissa_bits(self) -> Option<u32> {
        match self {
            DType::F64 => Some(52),
            DType::F32 => Some(23),
            DType::F16 => Some(10),
            DType::BF16 => Some(7),
            _ => None,
        }
    }

    /// True when a metadata dtype (`meta.dtypes`: what the tensor was before export) claims
    /// more precision than these stored bytes hold: a float finer than the stored float
    /// (`float64` over float32 data), or a float over integer data. Such a claim is a
    /// metadata error (a bf16 tensor is stored as float32 and says `bfloat16`: coarser, fine),
    /// and trusting it would, say, take float32 data for a float64 truth. Names the dump does
    /// not know (`float8_e4m3fn`) are not judged.
    pub fn claim_exceeds(self, claim: &str) -> bool {
        self.exceeded_by(DType::claimed(claim))
    }

    /// The dtype a metadata dtype name claims (`torch.` prefix allowed), `None` for names the
    /// dump does not know.
    pub(crate) fn claimed(claim: &str) -> Option<DType> {
        DType::from_name(claim.strip_prefix("torch.").unwrap_or(claim))
    }

    /// [`DType::claim_exceeds`] of a name already parsed ([`DType::claimed`]).
    pub(crate) fn exceeded_by(self, claimed: Option<DType>) -> bool {
        let claimed = match claimed {
            Some(d) => d.mantissa_bits(),
            None => return false,
        };
        match (claimed, self.mantissa_bits()) {
            (Some(c), Some(s)) => c > s,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Bytes per element in storage.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether [`Values`] for this dtype are `F64` (f64, i64, i32) rather than `F32`.
    pub fn widens_to_f64(self) -> bool {
        matches!(self, DType::F64 | DType::I64 | DType::I32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tensor values in C (row-major) order, widened to f32 or f64.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (exact for both variants).
    pub fn get(&self, i: usize) -> Option<f64> {
        match self {
            Values::F32(v) => v.get(i).map(|&x| f64::from(x)),
            Values::F64(v) => v.get(i).copied(),
        }
    }

    /// All elements as f64 (a copy; exact).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::F64(v) => v.clone(),
        }
    }
}

/// One tensor read from a dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape in C order; `[]` for a 0-d array (one element).
    pub shape: Vec<usize>,
    /// The dtype the file stores (see `Dump::original_dtype` for the dtype before export).
    pub dtype: DType,
    pub values: Values,
}

impl<'a> From<&'a Values> for ValuesRef<'a> {
    fn from(v: &'a Values) -> ValuesRef<'a> {
        match v {
            Values::F32(v) => ValuesRef::F32(v),
            Values::F64(v) => ValuesRef::F64(v),
        }
    }
}

impl From<ValuesRef<'_>> for Values {
    /// A decoded copy: f16 and bf16 widen exactly to f32.
    fn from(v: ValuesRef<'_>) -> Values {
        match v {
            ValuesRef::F32(v) => Values::F32(v.to_vec()),
            ValuesRef::F64(v) => Values::F64(v.to_vec()),
            ValuesRef::F32Le(v) => Values::F32(v.iter().map(|b| f32::from_le_bytes(*b)).collect()),
            ValuesRef::F64Le(v) => Values::F64(v.iter().map(|b| f64::from_le_bytes(*b)).collect()),
            ValuesRef::Bf16Le(v) => Values::F32(
                v.iter()
                    .map(|b| bf16_to_f32(u16::from_le_bytes(*b)))
                    .collect(),
            ),
            ValuesRef::F16Le(v) => Values::F32(
                v.iter()
                    .map(|b| f16_to_f32(u16::from_le_bytes(*b)))
                    .collect(),
            ),
        }
    }
}

/// One tensor as `Dump::view` gives it, borrowing from the dump where it can: the stored bytes
/// themselves when they can be used as they are (uncompressed, little-endian, C order, f32 /
/// f64 / f16 / bf16; at whatever alignment the file has), else a decoded buffer it owns.
/// Either way [`TensorView::values`] hands out the values as a [`ValuesRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// Shape in C order; `[]` for a 0-d array (one element).
    pub shape: Vec<usize>,
    /// The dtype the file stores.
    pub dtype: DType,
    data: ViewData<'a>,
}

/// Where a [`TensorView`]'s values are.
#[derive(Debug, Clone, PartialEq)]
enum ViewData<'a> {
    /// Borrowed from the file: one of the little-endian `*Le` variants.
    Stored(ValuesRef<'a>),
    /// Decoded and widened (deflated members, big-endian or Fortran-order arrays, integers,
    /// bool).
    Decoded(Values),
}

/// A decoded tensor as a view (what a mapped tensor, computed from others, is).
impl<'a> From<Tensor> for TensorView<'a> {
    fn from(t: Tensor) -> Self {
        TensorView::decoded(t)
    }
}

impl<'a> TensorView<'a> {
    /// A view of stored bytes.
    pub(crate) fn stored(shape: Vec<usize>, dtype: DType, values: ValuesRef<'a>) -> Self {
        TensorView {
            shape,
            dtype,
            data: ViewData::Stored(values),
        }
    }

    /// A view of a decoded tensor.
    pub(crate) fn decoded(t: Tensor) -> Self {
        TensorView {
            shape: t.shape,
            dtype: t.dtype,
            data: ViewData::Decoded(t.values),
        }
    }

    /// The values: the stored bytes or the decoded buffer.
    pub fn values(&self) -> ValuesRef<'_> {
        match &self.data {
            ViewData::Stored(v) => *v,
            ViewData::Decoded(v) => v.into(),
        }
    }

    /// The elements `range` of the values, as a tensor of `shape` (as many elements): borrowed
    /// still where the values are, else copied. `None` when `range` is not within the values
    /// or `shape` does not hold its elements.
    pub fn narrowed(
        &self,
        shape: &[usize],
        range: std::ops::Range<usize>,
    ) -> Option<TensorView<'a>> {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        if range.start > range.end || range.end > self.values().len() || range.len() != n {
            return None;
        }
        let data = match &self.data {
            ViewData::Stored(v) => ViewData::Stored(v.slice(range)),
            ViewData::Decoded(v) => ViewData::Decoded(ValuesRef::from(v).slice(range).into()),
        };
        Some(TensorView {
            shape: shape.to_vec(),
            dtype: self.dtype,
            data,
        })
    }

    /// True when the values are borrowed from the file (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, ViewData::Stored(_))
    }

    /// The values decoded, as [`Dump::read`](crate::Dump::read) gives them (a copy).
    pub fn to_values(&self) -> Values {
        self.values().into()
    }
}

/// Borrowed tensor data handed to `DumpWriter::add`, in C order.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    U8(&'a [u8]),
    Bool(&'a [bool]),
}

impl TensorData<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of the data as given (before any npz bf16 -> f32 conversion).
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F64(_) => DType::F64,
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }
}

/// Number of elements of `shape` (1 for `[]`), or `None` on overflow.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrowed_view_holds_the_range_borrowed_or_copied() {
        let bytes: Vec<[u8; 4]> = (0..12).map(|i| (i as f32).to_le_bytes()).collect();
        let stored = TensorView::stored(vec![3, 4], DType::F32, ValuesRef::F32Le(&bytes));
        let last = stored.narrowed(&[1, 4], 8..12).unwrap();
        assert!(last.is_borrowed());
        assert_eq!(last.shape, vec![1, 4]);
        assert_eq!(last.values().to_f64_vec(), vec![8.0, 9.0, 10.0, 11.0]);
        let decoded = TensorView::decoded(Tensor {
            shape: vec![3, 4],
            dtype: DType::F32,
            values: ValuesRef::F32Le(&bytes).into(),
        });
        let mid = decoded.narrowed(&[4], 4..8).unwrap();
        assert!(!mid.is_borrowed());
        assert_eq!(mid.values().to_f64_vec(), vec![4.0, 5.0, 6.0, 7.0]);
        // past the end, a shape that does not hold the range
        assert!(stored.narrowed(&[4], 10..14).is_none());
        assert!(stored.narrowed(&[2, 4], 8..12).is_none());
    }

    #[test]
    fn a_claim_of_more_precision_than_the_bytes_hold_is_caught() {
        // the export's own claims: coarser than the storage, or equal
        assert!(!DType::F32.claim_exceeds("bfloat16"));
        assert!(!DType::F32.claim_exceeds("torch.float16"));
        assert!(!DType::F64.claim_exceeds("float64"));
        assert!(!DType::I64.claim_exceeds("int64"));
        // more than the bytes hold
        assert!(DType::F32.claim_exceeds("float64"));
        assert!(DType::BF16.claim_exceeds("float16"));
        assert!(DType::I64.claim_exceeds("float64"));
        assert!(DType::Bool.claim_exceeds("float32"));
        // not judged: names the dump does not know
        assert!(!DType::F32.claim_exceeds("float8_e4m3fn"));
    }

    #[test]
    fn a_view_hands_out_its_values_borrowed_or_decoded() {
        let bytes = [
            half::f16::from_f32(1.5).to_le_bytes(),
            half::f16::NEG_INFINITY.to_le_bytes(),
            // a signalling NaN widens to a quiet one, as `half` (and `Dump::read`) give it
            0x7d01u16.to_le_bytes(),
        ];
        let stored = TensorView::stored(vec![3], DType::F16, ValuesRef::F16Le(&bytes));
        assert!(stored.is_borrowed());
        assert_eq!(stored.values(), ValuesRef::F16Le(&bytes));
        let Values::F32(wide) = stored.to_values() else {
            panic!("f16 widens to f32")
        };
        let want: Vec<u32> = bytes
            .iter()
            .map(|b| half::f16::from_le_bytes(*b).to_f32().to_bits())
            .collect();
        assert_eq!(wide.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);

        let decoded = TensorView::decoded(Tensor {
            shape: vec![2],
            dtype: DType::I32,
            values: Values::F64(vec![-3.0, 7.0]),
        });
        assert!(!decoded.is_borrowed());
        assert_eq!(decoded.values(), ValuesRef::F64(&[-3.0, 7.0]));
        assert_eq!(decoded.to_values(), Values::F64(vec![-3.0, 7.0]));
        assert_eq!(ValuesRef::from(&decoded.to_values()).len(), 2);
    }
}
