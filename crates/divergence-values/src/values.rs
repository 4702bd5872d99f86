//! [`ValuesRef`], one tensor's values borrowed, and [`Visit`], the one place that maps its
//! variants to their [`Elem`] encodings.

use crate::widen::{elem, Elem};

/// One tensor's values in C (row-major) order: decoded (`f32`, `f64`) or raw little-endian
/// elements borrowed as they are stored (`*Le`, at any alignment: an npz member's data in a
/// memory map is rarely 4-byte aligned, hence byte arrays rather than `&[f32]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValuesRef<'a> {
    /// Values stored as (or widened exactly to) `f32`.
    F32(&'a [f32]),
    /// Values stored as (or widened to) `f64`.
    F64(&'a [f64]),
    /// IEEE binary32 elements, little-endian bytes.
    F32Le(&'a [[u8; 4]]),
    /// IEEE binary64 elements, little-endian bytes.
    F64Le(&'a [[u8; 8]]),
    /// bfloat16 elements (the top half of a binary32), little-endian bytes.
    Bf16Le(&'a [[u8; 2]]),
    /// IEEE binary16 elements, little-endian bytes.
    F16Le(&'a [[u8; 2]]),
}

/// A computation generic over the element encoding, run by [`ValuesRef::visit`] on the
/// variant's slice: the kernel is monomorphized per encoding and its loop never branches on
/// the type. Nest two visitors for a pair of sides.
pub trait Visit {
    /// What the computation returns.
    type Out;
    /// Runs on the elements of one encoding.
    fn visit<E: Elem>(self, raw: &[E::Raw]) -> Self::Out;
}

impl<'a> ValuesRef<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ValuesRef::F32(v) => v.len(),
            ValuesRef::F64(v) => v.len(),
            ValuesRef::F32Le(v) => v.len(),
            ValuesRef::F64Le(v) => v.len(),
            ValuesRef::Bf16Le(v) => v.len(),
            ValuesRef::F16Le(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in `range` (panics past the end, as slicing does).
    pub fn slice(&self, range: std::ops::Range<usize>) -> ValuesRef<'a> {
        match *self {
            ValuesRef::F32(v) => ValuesRef::F32(&v[range]),
            ValuesRef::F64(v) => ValuesRef::F64(&v[range]),
            ValuesRef::F32Le(v) => ValuesRef::F32Le(&v[range]),
            ValuesRef::F64Le(v) => ValuesRef::F64Le(&v[range]),
            ValuesRef::Bf16Le(v) => ValuesRef::Bf16Le(&v[range]),
            ValuesRef::F16Le(v) => ValuesRef::F16Le(&v[range]),
        }
    }

    /// Runs `v` on this variant's slice with its [`Elem`] encoding.
    #[inline]
    pub fn visit<V: Visit>(self, v: V) -> V::Out {
        match self {
            ValuesRef::F32(s) => v.visit::<elem::F32>(s),
            ValuesRef::F64(s) => v.visit::<elem::F64>(s),
            ValuesRef::F32Le(s) => v.visit::<elem::F32Le>(s),
            ValuesRef::F64Le(s) => v.visit::<elem::F64Le>(s),
            ValuesRef::Bf16Le(s) => v.visit::<elem::Bf16Le>(s),
            ValuesRef::F16Le(s) => v.visit::<elem::F16Le>(s),
        }
    }

    /// Every element widened exactly to f64, in one monomorphized pass (for the few tensors a
    /// caller needs in memory, e.g. the cause hints of `divergence-diff`).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        struct Collect;
        impl Visit for Collect {
            type Out = Vec<f64>;
            fn visit<E: Elem>(self, raw: &[E::Raw]) -> Vec<f64> {
                raw.iter().map(|&x| E::wide(x)).collect()
            }
        }
        self.visit(Collect)
    }

    /// Element `i`, widened exactly to f64 (`None` past the end).
    pub fn get(&self, i: usize) -> Option<f64> {
        struct Get(usize);
        impl Visit for Get {
            type Out = Option<f64>;
            fn visit<E: Elem>(self, raw: &[E::Raw]) -> Option<f64> {
                raw.get(self.0).map(|&x| E::wide(x))
            }
        }
        self.visit(Get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_f64_vec_is_get_of_every_element() {
        let x = [1.5f32, -0.25, f32::NAN, 3.0];
        let bf: Vec<[u8; 2]> = x
            .iter()
            .map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        for v in [ValuesRef::F32(&x), ValuesRef::Bf16Le(&bf)] {
            let all = v.to_f64_vec();
            assert_eq!(all.len(), v.len());
            for (i, a) in all.iter().enumerate() {
                let g = v.get(i).unwrap();
                assert!(a.to_bits() == g.to_bits(), "{i}: {a} vs {g}");
            }
        }
    }

    #[test]
    fn every_variant_reads_the_same_values() {
        let x = [1.5f32, -0.25, 3.0];
        let f32le: Vec<[u8; 4]> = x.iter().map(|v| v.to_le_bytes()).collect();
        let w: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let f64le: Vec<[u8; 8]> = w.iter().map(|v| v.to_le_bytes()).collect();
        let bf: Vec<[u8; 2]> = x
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let h: Vec<[u8; 2]> = x
            .iter()
            .map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        for v in [
            ValuesRef::F32(&x),
            ValuesRef::F64(&w),
            ValuesRef::F32Le(&f32le),
            ValuesRef::F64Le(&f64le),
            ValuesRef::Bf16Le(&bf),
            ValuesRef::F16Le(&h),
        ] {
            assert_eq!(v.len(), 3, "{v:?}");
            assert!(!v.is_empty());
            let got: Vec<Option<f64>> = (0..4).map(|i| v.get(i)).collect();
            assert_eq!(got, [Some(1.5), Some(-0.25), Some(3.0), None], "{v:?}");
        }
        assert!(ValuesRef::F16Le(&[]).is_empty());
    }
}
