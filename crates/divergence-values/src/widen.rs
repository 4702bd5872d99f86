//! Exact widening of stored elements: bf16 and f16 bit patterns to `f32`, and every encoding
//! [`ValuesRef`](crate::ValuesRef) can hold to `f64` ([`Elem`]).
//!
//! Both conversions are integer operations and selects, no table and no per-element CPU
//! feature check, so a loop over them vectorizes; neither does arithmetic on subnormal floats
//! (slow on x86).

/// Exact bfloat16 -> binary32: a bf16 is the top half of a binary32 (NaN payloads are kept).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Exact binary16 -> binary32. Normal numbers get their exponent rebiased (15 -> 127),
/// subnormals are `mantissa * 2^-24` (an exact integer conversion and a power-of-two scale),
/// Inf keeps a zero mantissa under an all-ones exponent, and a NaN keeps its payload with the
/// quiet bit set, as IEEE 754 conversion, x86's F16C and the `half` crate do: the result is
/// bit-identical to `half::f16::to_f32` for all 65536 patterns.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let exp = h & 0x7c00;
    let man = u32::from(h & 0x03ff);
    let normal = f32::from_bits((u32::from(h & 0x7fff) << 13) + (112 << 23));
    let subnormal = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
    let quiet = if man != 0 { 0x0040_0000 } else { 0 };
    let special = f32::from_bits(0x7f80_0000 | quiet | (man << 13));
    let magnitude = if exp == 0 {
        subnormal
    } else if exp == 0x7c00 {
        special
    } else {
        normal
    };
    f32::from_bits(magnitude.to_bits() | (u32::from(h & 0x8000) << 16))
}

/// An element encoding: `Raw` is how one element sits in a slice, [`Elem::wide`] widens it to
/// f64 exactly. Implemented by the marker types of [`elem`], one per
/// [`ValuesRef`](crate::ValuesRef) variant, so that two encodings with the same raw layout
/// (f16 and bf16, both `[u8; 2]`) stay distinct and a kernel generic over `Elem` is
/// monomorphized per encoding, without a branch on the type in its loop.
pub trait Elem: Copy + Send + Sync + 'static {
    /// One stored element.
    type Raw: Copy + Send + Sync;
    /// The element's value, exactly.
    fn wide(raw: Self::Raw) -> f64;
}

/// The marker types of the [`Elem`] encodings, named like the [`ValuesRef`](crate::ValuesRef)
/// variants.
pub mod elem {
    use super::{bf16_to_f32, f16_to_f32, Elem};

    /// Decoded `f32`.
    #[derive(Debug, Clone, Copy)]
    pub struct F32;
    /// Decoded `f64`.
    #[derive(Debug, Clone, Copy)]
    pub struct F64;
    /// IEEE binary32, little-endian bytes.
    #[derive(Debug, Clone, Copy)]
    pub struct F32Le;
    /// IEEE binary64, little-endian bytes.
    #[derive(Debug, Clone, Copy)]
    pub struct F64Le;
    /// bfloat16, little-endian bytes.
    #[derive(Debug, Clone, Copy)]
    pub struct Bf16Le;
    /// IEEE binary16, little-endian bytes.
    #[derive(Debug, Clone, Copy)]
    pub struct F16Le;

    impl Elem for F32 {
        type Raw = f32;
        #[inline(always)]
        fn wide(raw: f32) -> f64 {
            f64::from(raw)
        }
    }

    impl Elem for F64 {
        type Raw = f64;
        #[inline(always)]
        fn wide(raw: f64) -> f64 {
            raw
        }
    }

    impl Elem for F32Le {
        type Raw = [u8; 4];
        #[inline(always)]
        fn wide(raw: [u8; 4]) -> f64 {
            f64::from(f32::from_le_bytes(raw))
        }
    }

    impl Elem for F64Le {
        type Raw = [u8; 8];
        #[inline(always)]
        fn wide(raw: [u8; 8]) -> f64 {
            f64::from_le_bytes(raw)
        }
    }

    impl Elem for Bf16Le {
        type Raw = [u8; 2];
        #[inline(always)]
        fn wide(raw: [u8; 2]) -> f64 {
            f64::from(bf16_to_f32(u16::from_le_bytes(raw)))
        }
    }

    impl Elem for F16Le {
        type Raw = [u8; 2];
        #[inline(always)]
        fn wide(raw: [u8; 2]) -> f64 {
            f64::from(f16_to_f32(u16::from_le_bytes(raw)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::elem::*;
    use super::*;

    #[test]
    fn f16_widening_is_exact_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
        }
    }

    #[test]
    fn bf16_widening_is_exact_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::bf16::from_bits(h).to_f32();
            let got = bf16_to_f32(h);
            if want.is_nan() {
                // `half` quiets a signalling bf16 NaN; the widening keeps the bits, as torch's
                // bf16 -> f32 does: the payload is the bf16 one either way.
                assert!(got.is_nan(), "{h:#06x}");
                assert_eq!(got.to_bits() >> 16, u32::from(h), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn every_encoding_widens_to_the_same_f64() {
        for x in [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            96.5,
            2f32.powi(-133),
            f32::INFINITY,
        ] {
            let w = f64::from(x);
            assert_eq!(F32::wide(x).to_bits(), w.to_bits());
            assert_eq!(F64::wide(w).to_bits(), w.to_bits());
            assert_eq!(F32Le::wide(x.to_le_bytes()).to_bits(), w.to_bits());
            assert_eq!(F64Le::wide(w.to_le_bytes()).to_bits(), w.to_bits());
            let bf = half::bf16::from_f32(x);
            assert_eq!(Bf16Le::wide(bf.to_le_bytes()), bf.to_f64());
            let h = half::f16::from_f32(x);
            assert_eq!(F16Le::wide(h.to_le_bytes()).to_bits(), h.to_f64().to_bits());
        }
        assert!(F16Le::wide(half::f16::NAN.to_le_bytes()).is_nan());
        assert!(Bf16Le::wide(half::bf16::NAN.to_le_bytes()).is_nan());
    }
}
