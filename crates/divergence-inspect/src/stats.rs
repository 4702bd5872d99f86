//! Streaming statistics over the raw little-endian bytes of a safetensors tensor.
//!
//! Values are decoded one at a time to f64 (floats by the exact widening of
//! `divergence-values`, the one `diff` and the dump reader use; integers and bool by value)
//! and never collected: a tensor is cut into chunks of [`CHUNK_ELEMS`] elements, each chunk is
//! reduced in two cache-hot passes (sum / min / max / non-finite counts, then the sum of
//! squared deviations from the chunk mean), and chunks are merged with Chan et al.'s parallel
//! variance formula. Chunks run on rayon ([`fold_chunks`], as `diff`'s kernel); the merge is
//! sequential in chunk order, so results are bit-for-bit reproducible.

use divergence_values::elem::{Bf16Le, F16Le, F32Le, F64Le};
use divergence_values::{fold_chunks, Elem};
use safetensors::Dtype;

use crate::report::TensorStats;

/// Elements per chunk: small enough to stay in cache between the two passes.
pub(crate) const CHUNK_ELEMS: usize = 1 << 18;

/// Partial statistics of a run of values.
#[derive(Debug, Clone, Copy)]
struct Partial {
    count: u64,
    finite: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
}

impl Partial {
    const EMPTY: Partial = Partial {
        count: 0,
        finite: 0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        nan: 0,
        pos_inf: 0,
        neg_inf: 0,
    };

    /// Chan et al. pairwise merge of mean and M2.
    fn merge(self, other: Partial) -> Partial {
        let finite = self.finite + other.finite;
        let (mean, m2) = if self.finite == 0 {
            (other.mean, other.m2)
        } else if other.finite == 0 {
            (self.mean, self.m2)
        } else {
            let (na, nb, n) = (self.finite as f64, other.finite as f64, finite as f64);
            let delta = other.mean - self.mean;
            (
                self.mean + delta * nb / n,
                self.m2 + other.m2 + delta * delta * na * nb / n,
            )
        };
        Partial {
            count: self.count + other.count,
            finite,
            mean,
            m2,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            nan: self.nan + other.nan,
            pos_inf: self.pos_inf + other.pos_inf,
            neg_inf: self.neg_inf + other.neg_inf,
        }
    }

    fn finish(self) -> TensorStats {
        let some = |x: f64| (self.finite > 0).then_some(x);
        TensorStats {
            count: self.count,
            nan: self.nan,
            pos_inf: self.pos_inf,
            neg_inf: self.neg_inf,
            min: some(self.min),
            max: some(self.max),
            mean: some(self.mean),
            std: some((self.m2 / self.finite.max(1) as f64).max(0.0).sqrt()),
            max_abs: some(self.min.abs().max(self.max.abs())),
        }
    }
}

/// Two passes over one chunk of `W`-byte elements decoded by `decode`.
fn chunk_stats<const W: usize>(bytes: &[u8], decode: impl Fn([u8; W]) -> f64) -> Partial {
    // `chunks_exact(W)` yields exactly W bytes, so the conversion never fails; a constant
    // W lets the compiler drop the check.
    let values = || {
        bytes
            .chunks_exact(W)
            .map(|raw| decode(<[u8; W]>::try_from(raw).unwrap_or([0; W])))
    };
    let mut p = Partial::EMPTY;
    let mut sum = 0.0f64;
    for x in values() {
        p.count += 1;
        if x.is_finite() {
            p.finite += 1;
            sum += x;
            p.min = p.min.min(x);
            p.max = p.max.max(x);
        } else if x.is_nan() {
            p.nan += 1;
        } else if x > 0.0 {
            p.pos_inf += 1;
        } else {
            p.neg_inf += 1;
        }
    }
    if p.finite == 0 {
        return p;
    }
    p.mean = sum / p.finite as f64;
    if !p.mean.is_finite() {
        // The sum overflowed (F64 values near f64::MAX): fall back to a running mean.
        let mut mean = 0.0f64;
        let mut k = 0.0f64;
        for x in values() {
            if x.is_finite() {
                k += 1.0;
                mean += (x - mean) / k;
            }
        }
        p.mean = mean;
    }
    let mut m2 = 0.0f64;
    for x in values() {
        if x.is_finite() {
            let d = x - p.mean;
            m2 += d * d;
        }
    }
    p.m2 = m2;
    p
}

/// Reduces one chunk of raw bytes.
type ChunkFn = fn(&[u8]) -> Partial;

/// Element width in bytes and decoder for the dtypes whose values we read; `None` for the
/// others (FP8, FP6, FP4, complex).
fn chunk_fn(dtype: Dtype) -> Option<(usize, ChunkFn)> {
    let f: (usize, ChunkFn) = match dtype {
        Dtype::BOOL => (1, |b| {
            chunk_stats(b, |[r]: [u8; 1]| f64::from(u8::from(r != 0)))
        }),
        Dtype::U8 => (1, |b| chunk_stats(b, |[r]: [u8; 1]| f64::from(r))),
        Dtype::I8 => (1, |b| chunk_stats(b, |r| f64::from(i8::from_le_bytes(r)))),
        Dtype::I16 => (2, |b| chunk_stats(b, |r| f64::from(i16::from_le_bytes(r)))),
        Dtype::U16 => (2, |b| chunk_stats(b, |r| f64::from(u16::from_le_bytes(r)))),
        Dtype::F16 => (2, |b| chunk_stats(b, F16Le::wide)),
        Dtype::BF16 => (2, |b| chunk_stats(b, Bf16Le::wide)),
        Dtype::I32 => (4, |b| chunk_stats(b, |r| f64::from(i32::from_le_bytes(r)))),
        Dtype::U32 => (4, |b| chunk_stats(b, |r| f64::from(u32::from_le_bytes(r)))),
        Dtype::F32 => (4, |b| chunk_stats(b, F32Le::wide)),
        Dtype::I64 => (8, |b| chunk_stats(b, |r| i64::from_le_bytes(r) as f64)),
        Dtype::U64 => (8, |b| chunk_stats(b, |r| u64::from_le_bytes(r) as f64)),
        Dtype::F64 => (8, |b| chunk_stats(b, F64Le::wide)),
        _ => return None,
    };
    Some(f)
}

/// Statistics of a tensor's raw bytes, or `None` for a dtype we do not decode.
/// Chunks are reduced in parallel (rayon) and merged in order.
pub(crate) fn tensor_stats(dtype: Dtype, data: &[u8]) -> Option<TensorStats> {
    let (width, f) = chunk_fn(dtype)?;
    let stats = fold_chunks(
        data.len() / width,
        CHUNK_ELEMS,
        Partial::EMPTY,
        |c| f(&data[c.start * width..c.end * width]),
        Partial::merge,
    );
    Some(stats.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Plain-loop oracle.
    fn oracle(v: &[f64]) -> (f64, f64, f64, f64) {
        let fin: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let n = fin.len() as f64;
        let mean = fin.iter().sum::<f64>() / n;
        let var = fin.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let min = fin.iter().copied().fold(f64::INFINITY, f64::min);
        let max = fin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max, mean, var.sqrt())
    }

    #[test]
    fn f32_stats_match_oracle_across_chunks() {
        // More than two chunks, with an offset mean to exercise the merge.
        let n = CHUNK_ELEMS * 2 + 12345;
        let v: Vec<f32> = (0..n)
            .map(|i| 1000.0 + ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
            .collect();
        let s = tensor_stats(Dtype::F32, &bytes_f32(&v)).expect("f32 is supported");
        let wide: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
        let (min, max, mean, std) = oracle(&wide);
        assert_eq!(s.count, n as u64);
        assert_eq!(s.min, Some(min));
        assert_eq!(s.max, Some(max));
        assert!(
            (s.mean.unwrap() - mean).abs() < 1e-9,
            "{:?} vs {mean}",
            s.mean
        );
        assert!((s.std.unwrap() - std).abs() < 1e-9, "{:?} vs {std}", s.std);
        assert_eq!(s.non_finite(), 0);
    }

    #[test]
    fn non_finite_values_are_counted_not_averaged() {
        let v = [
            1.0f32,
            f32::NAN,
            3.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let s = tensor_stats(Dtype::F32, &bytes_f32(&v)).unwrap();
        assert_eq!((s.nan, s.pos_inf, s.neg_inf), (2, 1, 1));
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        assert_eq!(s.max_abs, Some(3.0));
    }

    #[test]
    fn all_nan_has_no_moments() {
        let s = tensor_stats(Dtype::F32, &bytes_f32(&[f32::NAN; 3])).unwrap();
        assert_eq!(s.nan, 3);
        assert_eq!((s.min, s.max, s.mean, s.std), (None, None, None, None));
    }

    #[test]
    fn bf16_f16_and_integers_decode_exactly() {
        let bf: Vec<u8> = [half::bf16::from_f32(-2.5), half::bf16::from_f32(96.5)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let s = tensor_stats(Dtype::BF16, &bf).unwrap();
        assert_eq!((s.min, s.max), (Some(-2.5), Some(96.5)));

        let h: Vec<u8> = [half::f16::from_f32(0.5), half::f16::INFINITY]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let s = tensor_stats(Dtype::F16, &h).unwrap();
        assert_eq!((s.max, s.pos_inf), (Some(0.5), 1));

        let i: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = tensor_stats(Dtype::I64, &i).unwrap();
        assert_eq!((s.min, s.max, s.mean), (Some(-3.0), Some(7.0), Some(2.0)));

        let s = tensor_stats(Dtype::I8, &[0xFF, 0x02]).unwrap();
        assert_eq!((s.min, s.max), (Some(-1.0), Some(2.0)));
    }

    /// Fixed inputs of every float dtype and one integer dtype (more than two chunks, NaN,
    /// Inf, subnormal f16), compared bit for bit with the statistics computed before the
    /// widening moved to `divergence-values`.
    #[test]
    fn results_match_stored_values_bit_for_bit() {
        let n = CHUNK_ELEMS * 2 + 1001;
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 32) as u32
        };
        let mut f: Vec<f32> = (0..n)
            .map(|_| (next() as i32 >> 8) as f32 * 2f32.powi(-17) + 3.0)
            .collect();
        f[10] = f32::NAN;
        f[n - 1] = f32::NEG_INFINITY;
        let f32_bytes = bytes_f32(&f);
        let f64_bytes: Vec<u8> = f
            .iter()
            .flat_map(|&x| (f64::from(x) * 1.25).to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = f
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let f16_bytes: Vec<u8> = (0..n)
            .flat_map(|i| {
                let bits = next() as u16;
                let bits = if i % 4096 == 0 { bits } else { bits & 0xbbff };
                bits.to_le_bytes()
            })
            .collect();
        let i32_bytes: Vec<u8> = (0..n).flat_map(|_| (next() as i32).to_le_bytes()).collect();
        let got: Vec<(Dtype, [u64; 9])> = [
            (Dtype::F32, &f32_bytes),
            (Dtype::F64, &f64_bytes),
            (Dtype::BF16, &bf16_bytes),
            (Dtype::F16, &f16_bytes),
            (Dtype::I32, &i32_bytes),
        ]
        .into_iter()
        .map(|(dtype, bytes)| {
            let t = tensor_stats(dtype, bytes).expect("decoded dtype");
            let b = |x: Option<f64>| x.map_or(u64::MAX, f64::to_bits);
            (
                dtype,
                [
                    t.count,
                    t.nan,
                    t.pos_inf,
                    t.neg_inf,
                    b(t.min),
                    b(t.max),
                    b(t.mean),
                    b(t.std),
                    b(t.max_abs),
                ],
            )
        })
        .collect();
        // count, nan, +inf, -inf, then the bits of min, max, mean, std, max |x|
        #[rustfmt::skip]
        let want: Vec<(Dtype, [u64; 9])> = vec![
            (Dtype::F32, [525289, 1, 0, 1, 13857153838806466560, 4634415106690646016, 4614112490647881181, 4630402736556596209, 4634415106690646016]),
            (Dtype::F64, [525289, 1, 0, 1, 13858438069193015296, 4635593779129090048, 4615845008609847125, 4631704216368370376, 4635593779129090048]),
            (Dtype::BF16, [525289, 1, 0, 1, 13857118656581861376, 4634379938424684544, 4614092193382724966, 4630389005086063349, 4634379938424684544]),
            (Dtype::F16, [525289, 3, 0, 0, 13901688459925389312, 4676733126326616064, 4589255866966382312, 4639390261899105724, 4678316423070613504]),
            (Dtype::I32, [525289, 0, 0, 0, 13970166021177212928, 4746793994560733184, 13927407706010493687, 4742980018293301918, 4746793994560733184]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn fp8_is_not_decoded() {
        assert!(tensor_stats(Dtype::F8_E4M3, &[0, 1, 2]).is_none());
    }
}
