//! The hot loop: one pass over both sides' values, accumulating every metric in f64.
//!
//! The kernel is generic over the element types of the two sides and monomorphized for every
//! combination of [`ValuesRef`] variants, so the inner loop never branches on the type. The
//! little-endian byte variants let a caller hand over a tensor straight from a memory-mapped
//! file, at any alignment, without decoding it into a new buffer first. Values
//! are processed in blocks of [`BLOCK`] elements with [`LANES`] independent accumulators per metric
//! (which the compiler vectorizes); a block whose sums come out non-finite is redone with a careful
//! per-element loop that counts NaN/Inf and skips them. Slices longer than the configured chunk length
//! are split into chunks processed in parallel with rayon; the per-chunk accumulators are merged in
//! chunk order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// One side's values: decoded (`f32`, `f64`) or raw little-endian elements borrowed as they are
/// stored (`*Le`, any alignment), row-major.
#[derive(Debug, Clone, Copy)]
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

impl ValuesRef<'_> {
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
}

/// Number of independent accumulators per metric in the fast loop.
pub const LANES: usize = 8;
/// Elements per block: the unit of the finite fast path and of the max-index rescan.
pub const BLOCK: usize = 2048;
/// Default number of elements per rayon task (see `DiffConfig::chunk_len`).
pub const DEFAULT_CHUNK_LEN: usize = 1 << 18;

/// The tolerance parameters the kernel needs for the element-wise counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Params {
    pub rtol: f64,
    pub atol: f64,
    pub rel_guard: f64,
}

/// Raw sums of one comparison; merged across blocks and chunks.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Accumulator {
    /// Elements seen.
    pub n: u64,
    /// Elements finite on both sides (the ones every metric is computed over).
    pub n_finite: u64,
    pub sum_o2: f64,
    pub sum_r2: f64,
    pub sum_d2: f64,
    pub sum_abs_d: f64,
    pub dot: f64,
    pub max_abs_d: f64,
    /// Flat index of the first element attaining `max_abs_d`.
    pub max_abs_d_index: Option<u64>,
    pub max_rel: f64,
    /// Elements with `|o - r| > atol + rtol * |r|`.
    pub n_outside: u64,
    pub nan_o: u64,
    pub inf_o: u64,
    pub nan_r: u64,
    pub inf_r: u64,
    /// Positions where the non-finite masks differ (one side non-finite, or NaN vs Inf, or +Inf vs -Inf).
    pub nonfinite_mismatch: u64,
}

impl Accumulator {
    /// Folds `other` (which covers later elements) into `self`.
    pub fn merge(&mut self, other: &Accumulator) {
        self.n += other.n;
        self.n_finite += other.n_finite;
        self.sum_o2 += other.sum_o2;
        self.sum_r2 += other.sum_r2;
        self.sum_d2 += other.sum_d2;
        self.sum_abs_d += other.sum_abs_d;
        self.dot += other.dot;
        if let Some(idx) = other.max_abs_d_index {
            if self.max_abs_d_index.is_none() || other.max_abs_d > self.max_abs_d {
                self.max_abs_d = other.max_abs_d;
                self.max_abs_d_index = Some(idx);
            }
        }
        if other.max_rel > self.max_rel {
            self.max_rel = other.max_rel;
        }
        self.n_outside += other.n_outside;
        self.nan_o += other.nan_o;
        self.inf_o += other.inf_o;
        self.nan_r += other.nan_r;
        self.inf_r += other.inf_r;
        self.nonfinite_mismatch += other.nonfinite_mismatch;
    }
}

/// An element type the kernel reads: `Raw` is how one element sits in the slice, `wide` widens
/// it to f64 exactly. Implemented by marker types so that two encodings with the same raw
/// layout (say f16 and bf16, both `[u8; 2]`) stay distinct.
trait Elem: Copy + Send + Sync {
    type Raw: Copy + Send + Sync;
    fn wide(raw: Self::Raw) -> f64;
}

#[derive(Clone, Copy)]
struct F32;
#[derive(Clone, Copy)]
struct F64;
#[derive(Clone, Copy)]
struct F32Le;
#[derive(Clone, Copy)]
struct F64Le;
#[derive(Clone, Copy)]
struct Bf16Le;
#[derive(Clone, Copy)]
struct F16Le;

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
        f64::from(f32::from_bits(u32::from(u16::from_le_bytes(raw)) << 16))
    }
}

impl Elem for F16Le {
    type Raw = [u8; 2];
    #[inline(always)]
    fn wide(raw: [u8; 2]) -> f64 {
        f64::from(f16_to_f32(u16::from_le_bytes(raw)))
    }
}

/// Exact binary16 -> binary32, written with integer operations and selects so that it
/// vectorizes (a table or per-element CPU-feature check would not), and without arithmetic on
/// subnormal floats (slow on x86): normal numbers get their exponent rebiased (15 -> 127),
/// subnormals are `mantissa * 2^-24` (an exact integer conversion and a power-of-two scale),
/// Inf and NaN keep their mantissa bits under an all-ones exponent.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let exp = h & 0x7c00;
    let man = u32::from(h & 0x03ff);
    let normal = f32::from_bits((u32::from(h & 0x7fff) << 13) + (112 << 23));
    let subnormal = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
    let special = f32::from_bits(0x7f80_0000 | (man << 13));
    let magnitude = if exp == 0 {
        subnormal
    } else if exp == 0x7c00 {
        special
    } else {
        normal
    };
    f32::from_bits(magnitude.to_bits() | (u32::from(h & 0x8000) << 16))
}

/// Compares two equally long value slices. `chunk_len` is the rayon task size.
pub(crate) fn accumulate(
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    params: &Params,
    chunk_len: usize,
) -> Accumulator {
    fn with_ref<A: Elem>(o: &[A::Raw], r: ValuesRef<'_>, p: &Params, c: usize) -> Accumulator {
        match r {
            ValuesRef::F32(r) => run::<A, F32>(o, r, p, c),
            ValuesRef::F64(r) => run::<A, F64>(o, r, p, c),
            ValuesRef::F32Le(r) => run::<A, F32Le>(o, r, p, c),
            ValuesRef::F64Le(r) => run::<A, F64Le>(o, r, p, c),
            ValuesRef::Bf16Le(r) => run::<A, Bf16Le>(o, r, p, c),
            ValuesRef::F16Le(r) => run::<A, F16Le>(o, r, p, c),
        }
    }
    let (p, c) = (params, chunk_len);
    match ours {
        ValuesRef::F32(o) => with_ref::<F32>(o, reference, p, c),
        ValuesRef::F64(o) => with_ref::<F64>(o, reference, p, c),
        ValuesRef::F32Le(o) => with_ref::<F32Le>(o, reference, p, c),
        ValuesRef::F64Le(o) => with_ref::<F64Le>(o, reference, p, c),
        ValuesRef::Bf16Le(o) => with_ref::<Bf16Le>(o, reference, p, c),
        ValuesRef::F16Le(o) => with_ref::<F16Le>(o, reference, p, c),
    }
}

fn run<A: Elem, B: Elem>(o: &[A::Raw], r: &[B::Raw], p: &Params, chunk_len: usize) -> Accumulator {
    let n = o.len().min(r.len());
    let chunk = chunk_len.max(1);
    if n <= chunk {
        return chunk_acc::<A, B>(&o[..n], &r[..n], 0, p);
    }
    let parts: Vec<Accumulator> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let start = c * chunk;
            let end = (start + chunk).min(n);
            chunk_acc::<A, B>(&o[start..end], &r[start..end], start as u64, p)
        })
        .collect();
    let mut acc = Accumulator::default();
    for part in &parts {
        acc.merge(part);
    }
    acc
}

/// One chunk, on the widest vector unit available: the same code compiled for AVX-512F or AVX2
/// when the CPU has it (runtime detection), else for the baseline target. All compute the same
/// IEEE operations in the same order (lane count is fixed by [`LANES`], not by the vector width;
/// no FMA contraction), so results do not depend on the CPU.
fn chunk_acc<A: Elem, B: Elem>(o: &[A::Raw], r: &[B::Raw], base: u64, p: &Params) -> Accumulator {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { chunk_acc_avx512::<A, B>(o, r, base, p) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { chunk_acc_avx2::<A, B>(o, r, base, p) };
        }
    }
    chunk_acc_portable::<A, B>(o, r, base, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chunk_acc_avx512<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
) -> Accumulator {
    chunk_acc_portable::<A, B>(o, r, base, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_acc_avx2<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
) -> Accumulator {
    chunk_acc_portable::<A, B>(o, r, base, p)
}

#[inline(always)]
fn chunk_acc_portable<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
) -> Accumulator {
    let mut acc = Accumulator::default();
    for (i, (ob, rb)) in o.chunks(BLOCK).zip(r.chunks(BLOCK)).enumerate() {
        let block_base = base + (i * BLOCK) as u64;
        if !fast_block::<A, B>(ob, rb, block_base, p, &mut acc) {
            slow_block::<A, B>(ob, rb, block_base, p, &mut acc);
        }
    }
    acc
}

/// The vectorizable path for blocks where every value is finite. Returns false (and leaves `acc`
/// untouched) when the block holds a NaN or Inf.
#[inline(always)]
fn fast_block<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
    acc: &mut Accumulator,
) -> bool {
    let mut o2 = [0.0f64; LANES];
    let mut r2 = [0.0f64; LANES];
    let mut d2 = [0.0f64; LANES];
    let mut sad = [0.0f64; LANES];
    let mut dot = [0.0f64; LANES];
    let mut mx = [0.0f64; LANES];
    let mut mr = [0.0f64; LANES];
    let mut out = [0u64; LANES];
    let (rtol, atol, guard) = (p.rtol, p.atol, p.rel_guard);
    let oc = o.chunks_exact(LANES);
    let rc = r.chunks_exact(LANES);
    let (orem, rrem) = (oc.remainder(), rc.remainder());
    for (ob, rb) in oc.zip(rc) {
        for j in 0..LANES {
            let x = A::wide(ob[j]);
            let y = B::wide(rb[j]);
            let d = x - y;
            let a = d.abs();
            let ay = y.abs();
            o2[j] += x * x;
            r2[j] += y * y;
            d2[j] += d * d;
            sad[j] += a;
            dot[j] += x * y;
            mx[j] = if a > mx[j] { a } else { mx[j] };
            let rel = a / if ay > guard { ay } else { guard };
            mr[j] = if rel > mr[j] { rel } else { mr[j] };
            out[j] += u64::from(a > atol + rtol * ay);
        }
    }
    for (x, y) in orem.iter().zip(rrem) {
        let (x, y) = (A::wide(*x), B::wide(*y));
        let d = x - y;
        let a = d.abs();
        let ay = y.abs();
        o2[0] += x * x;
        r2[0] += y * y;
        d2[0] += d * d;
        sad[0] += a;
        dot[0] += x * y;
        mx[0] = if a > mx[0] { a } else { mx[0] };
        let rel = a / if ay > guard { ay } else { guard };
        mr[0] = if rel > mr[0] { rel } else { mr[0] };
        out[0] += u64::from(a > atol + rtol * ay);
    }
    let so2: f64 = o2.iter().sum();
    let sr2: f64 = r2.iter().sum();
    // A NaN or Inf in either side makes its sum of squares non-finite: the careful path then
    // separates the non-finite elements. (An f64 value above ~1e154 also overflows the sums;
    // compare() reports such an op by its max |ours - ref| instead of the norm-wise rule.)
    if !(so2.is_finite() && sr2.is_finite()) {
        return false;
    }
    let len = o.len() as u64;
    acc.n += len;
    acc.n_finite += len;
    acc.sum_o2 += so2;
    acc.sum_r2 += sr2;
    acc.sum_d2 += d2.iter().sum::<f64>();
    acc.sum_abs_d += sad.iter().sum::<f64>();
    acc.dot += dot.iter().sum::<f64>();
    acc.n_outside += out.iter().sum::<u64>();
    let bmr = mr.iter().fold(0.0f64, |m, &v| if v > m { v } else { m });
    if bmr > acc.max_rel {
        acc.max_rel = bmr;
    }
    let bmx = mx.iter().fold(0.0f64, |m, &v| if v > m { v } else { m });
    if len > 0 && (acc.max_abs_d_index.is_none() || bmx > acc.max_abs_d) {
        // Rescan this block for the first element attaining the maximum (rare: only when it grows).
        let at = o
            .iter()
            .zip(r)
            .position(|(&x, &y)| (A::wide(x) - B::wide(y)).abs() == bmx)
            .unwrap_or(0);
        acc.max_abs_d = bmx;
        acc.max_abs_d_index = Some(base + at as u64);
    }
    true
}

/// The careful per-element path: counts NaN/Inf per side and skips positions not finite on both.
fn slow_block<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
    acc: &mut Accumulator,
) {
    for (i, (&x, &y)) in o.iter().zip(r).enumerate() {
        let (x, y) = (A::wide(x), B::wide(y));
        acc.n += 1;
        let (fx, fy) = (x.is_finite(), y.is_finite());
        if !fx {
            if x.is_nan() {
                acc.nan_o += 1;
            } else {
                acc.inf_o += 1;
            }
        }
        if !fy {
            if y.is_nan() {
                acc.nan_r += 1;
            } else {
                acc.inf_r += 1;
            }
        }
        if !(fx && fy) {
            let same = (x.is_nan() && y.is_nan()) || (!fx && !fy && x == y);
            if !same {
                acc.nonfinite_mismatch += 1;
            }
            continue;
        }
        let d = x - y;
        let a = d.abs();
        let ay = y.abs();
        acc.n_finite += 1;
        acc.sum_o2 += x * x;
        acc.sum_r2 += y * y;
        acc.sum_d2 += d * d;
        acc.sum_abs_d += a;
        acc.dot += x * y;
        if acc.max_abs_d_index.is_none() || a > acc.max_abs_d {
            acc.max_abs_d = a;
            acc.max_abs_d_index = Some(base + i as u64);
        }
        let rel = a / ay.max(p.rel_guard);
        if rel > acc.max_rel {
            acc.max_rel = rel;
        }
        if a > p.atol + p.rtol * ay {
            acc.n_outside += 1;
        }
    }
}

/// Per-side statistics for rows where the two sides cannot be aligned (shape mismatch, one side only).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SideStats {
    /// Sum of squares of the finite values.
    pub sum_sq: f64,
    pub nan: u64,
    pub inf: u64,
}

pub(crate) fn side_stats(values: ValuesRef<'_>) -> SideStats {
    fn go<A: Elem>(v: &[A::Raw]) -> SideStats {
        v.par_chunks(DEFAULT_CHUNK_LEN)
            .map(|c| {
                let mut s = SideStats::default();
                for &x in c {
                    let x = A::wide(x);
                    if x.is_finite() {
                        s.sum_sq += x * x;
                    } else if x.is_nan() {
                        s.nan += 1;
                    } else {
                        s.inf += 1;
                    }
                }
                s
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(SideStats::default(), |a, b| SideStats {
                sum_sq: a.sum_sq + b.sum_sq,
                nan: a.nan + b.nan,
                inf: a.inf + b.inf,
            })
    }
    match values {
        ValuesRef::F32(v) => go::<F32>(v),
        ValuesRef::F64(v) => go::<F64>(v),
        ValuesRef::F32Le(v) => go::<F32Le>(v),
        ValuesRef::F64Le(v) => go::<F64Le>(v),
        ValuesRef::Bf16Le(v) => go::<Bf16Le>(v),
        ValuesRef::F16Le(v) => go::<F16Le>(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        rtol: 0.1,
        atol: 0.01,
        rel_guard: 1e-6,
    };

    #[test]
    fn hand_computed_sums() {
        // o = [1, 2, 3], r = [1, 2.5, 2]: d = [0, -0.5, 1]
        let o = [1.0f32, 2.0, 3.0];
        let r = [1.0f64, 2.5, 2.0];
        let a = accumulate(ValuesRef::F32(&o), ValuesRef::F64(&r), &P, 1024);
        assert_eq!(a.n, 3);
        assert_eq!(a.n_finite, 3);
        assert_eq!(a.sum_o2, 14.0);
        assert_eq!(a.sum_r2, 1.0 + 6.25 + 4.0);
        assert_eq!(a.sum_d2, 1.25);
        assert_eq!(a.sum_abs_d, 1.5);
        assert_eq!(a.dot, 1.0 + 5.0 + 6.0);
        assert_eq!(a.max_abs_d, 1.0);
        assert_eq!(a.max_abs_d_index, Some(2));
        // rel errors: 0, 0.5/2.5 = 0.2, 1/2 = 0.5
        assert_eq!(a.max_rel, 0.5);
        // tolerance per element: 0.01 + 0.1*|r| = [0.11, 0.26, 0.21] -> outside: idx 1 and 2
        assert_eq!(a.n_outside, 2);
    }

    #[test]
    fn chunked_equals_single_pass_and_keeps_first_max_index() {
        let o: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32).collect();
        let r: Vec<f32> = (0..10_000).map(|i| (i % 5) as f32).collect();
        let one = accumulate(ValuesRef::F32(&o), ValuesRef::F32(&r), &P, usize::MAX);
        let many = accumulate(ValuesRef::F32(&o), ValuesRef::F32(&r), &P, 333);
        assert_eq!(one.n, many.n);
        assert_eq!(one.max_abs_d, many.max_abs_d);
        assert_eq!(one.max_abs_d_index, many.max_abs_d_index);
        // first element where |i%7 - i%5| == 6 is i=6 (6 vs 1 -> 5)? compute directly
        let expect = (0..10_000usize)
            .map(|i| ((i % 7) as f64 - (i % 5) as f64).abs())
            .enumerate()
            .fold(
                (0usize, -1.0f64),
                |(bi, bm), (i, v)| if v > bm { (i, v) } else { (bi, bm) },
            );
        assert_eq!(one.max_abs_d_index, Some(expect.0 as u64));
        assert_eq!(one.max_abs_d, expect.1);
        assert!((one.sum_d2 - many.sum_d2).abs() < 1e-9 * one.sum_d2);
    }

    #[test]
    fn nonfinite_classification() {
        let n = f32::NAN;
        let i = f32::INFINITY;
        let o = [n, 1.0, i, i, 2.0, n];
        let r = [n, n, i, -i, 2.0, i];
        let a = accumulate(ValuesRef::F32(&o), ValuesRef::F32(&r), &P, 1024);
        assert_eq!((a.nan_o, a.inf_o, a.nan_r, a.inf_r), (2, 2, 2, 3));
        // equal: NaN/NaN (0), +Inf/+Inf (2); mismatch: 1 (finite vs NaN), 3 (+Inf vs -Inf), 5 (NaN vs Inf)
        assert_eq!(a.nonfinite_mismatch, 3);
        assert_eq!(a.n_finite, 1);
        assert_eq!(a.sum_o2, 4.0);
        assert_eq!(a.max_abs_d_index, Some(4));
    }

    #[test]
    fn dispatched_and_portable_paths_agree_bit_for_bit() {
        let o: Vec<f32> = (0..5000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let mut r: Vec<f64> = o.iter().map(|&x| f64::from(x) * 1.001 + 1e-4).collect();
        r[777] = f64::NAN;
        let dispatched = chunk_acc::<F32, F64>(&o, &r, 10, &P);
        let portable = chunk_acc_portable::<F32, F64>(&o, &r, 10, &P);
        assert_eq!(dispatched, portable);
        assert_eq!(dispatched.nonfinite_mismatch, 1);
        // Each vector build this CPU can run, not only the one dispatch picks.
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                let avx2 = unsafe { chunk_acc_avx2::<F32, F64>(&o, &r, 10, &P) };
                assert_eq!(avx2, portable);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                let avx512 = unsafe { chunk_acc_avx512::<F32, F64>(&o, &r, 10, &P) };
                assert_eq!(avx512, portable);
            }
        }
    }

    /// Little-endian bytes of each element, after `pad` leading bytes (to misalign them).
    fn le_bytes<const N: usize>(pad: usize, elems: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
        let mut out = vec![0xAA; pad];
        elems.for_each(|e| out.extend_from_slice(&e));
        out
    }

    #[test]
    fn borrowed_bytes_match_decoded_values_at_any_alignment() {
        let mut o: Vec<f32> = (0..5000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let mut r: Vec<f64> = o.iter().map(|&x| f64::from(x) * 1.001 + 1e-4).collect();
        o[12] = f32::INFINITY;
        r[4000] = f64::NAN;
        let decoded = accumulate(ValuesRef::F32(&o), ValuesRef::F64(&r), &P, 1000);
        for pad in 0..8 {
            let ob = le_bytes(pad, o.iter().map(|x| x.to_le_bytes()));
            let rb = le_bytes(pad + 3, r.iter().map(|x| x.to_le_bytes()));
            let (oc, _) = ob[pad..].as_chunks::<4>();
            let (rc, _) = rb[pad + 3..].as_chunks::<8>();
            let borrowed = accumulate(ValuesRef::F32Le(oc), ValuesRef::F64Le(rc), &P, 1000);
            assert_eq!(borrowed, decoded, "pad {pad}");
            let mixed = accumulate(ValuesRef::F32(&o), ValuesRef::F64Le(rc), &P, 1000);
            assert_eq!(mixed, decoded, "pad {pad}");
        }
        assert_eq!(
            side_stats(ValuesRef::F32(&o)),
            side_stats(ValuesRef::F32Le(
                le_bytes(0, o.iter().map(|x| x.to_le_bytes()))
                    .as_chunks::<4>()
                    .0
            ))
        );
    }

    #[test]
    fn bf16_bytes_widen_exactly() {
        // bf16 is the top 16 bits of an f32: these values are exact in bf16.
        let vals = [
            1.0f32,
            -2.5,
            0.0078125,
            96.5,
            -0.0,
            2f32.powi(127),
            f32::NAN,
        ];
        let bits = le_bytes(
            1,
            vals.iter()
                .map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()),
        );
        let (b, _) = bits[1..].as_chunks::<2>();
        let from_bytes = accumulate(ValuesRef::Bf16Le(b), ValuesRef::F32(&vals), &P, 1024);
        let from_f32 = accumulate(ValuesRef::F32(&vals), ValuesRef::F32(&vals), &P, 1024);
        assert_eq!(from_bytes, from_f32);
        assert_eq!(from_bytes.sum_d2, 0.0);
        assert_eq!(from_bytes.nan_o, 1);
    }

    #[test]
    fn f16_widening_is_exact_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn f16_bytes_match_decoded_values() {
        let mut vals: Vec<half::f16> = (0..3000)
            .map(|i| half::f16::from_f32(((i as f32) * 0.37).sin() * 60.0))
            .collect();
        vals[5] = half::f16::from_bits(0x0001); // the smallest subnormal
        vals[6] = half::f16::NEG_INFINITY;
        vals[7] = half::f16::NAN;
        let r: Vec<f32> = vals.iter().map(|x| x.to_f32() * 1.01).collect();
        let decoded: Vec<f32> = vals.iter().map(|x| x.to_f32()).collect();
        let bytes = le_bytes(3, vals.iter().map(|x| x.to_le_bytes()));
        let (b, _) = bytes[3..].as_chunks::<2>();
        let from_bytes = accumulate(ValuesRef::F16Le(b), ValuesRef::F32(&r), &P, 1000);
        let from_f32 = accumulate(ValuesRef::F32(&decoded), ValuesRef::F32(&r), &P, 1000);
        assert_eq!(from_bytes, from_f32);
        assert_eq!((from_bytes.nan_o, from_bytes.inf_o), (1, 1));
    }

    #[test]
    fn side_stats_counts() {
        let v = [3.0f64, f64::NAN, 4.0, f64::NEG_INFINITY];
        let s = side_stats(ValuesRef::F64(&v));
        assert_eq!(
            s,
            SideStats {
                sum_sq: 25.0,
                nan: 1,
                inf: 1
            }
        );
    }
}
