//! The hot loop: one pass over both sides' values, accumulating every metric in f64.
//!
//! The kernel is generic over the element encodings of the two sides ([`Elem`]) and
//! monomorphized for every combination of [`ValuesRef`] variants (two nested [`Visit`]s), so
//! the inner loop never branches on the type. The little-endian byte variants let a caller
//! hand over a tensor straight from a memory-mapped file, at any alignment, without decoding it
//! into a new buffer first. Values are processed in blocks of [`BLOCK`] elements with [`LANES`]
//! independent accumulators per metric ([`Lanes`], which the compiler vectorizes); a block
//! whose sums come out non-finite is redone with a careful per-element loop that counts
//! NaN/Inf and skips them. Both loops update their sums with the same [`Lanes::step`]. Slices
//! longer than the configured chunk length are split into chunks processed in parallel with
//! rayon ([`fold_chunks`]); the per-chunk accumulators are merged in chunk order, so results do
//! not depend on the number of threads. Widening, the step and the chunking live in
//! `divergence-values`, shared with the dump reader and the checkpoint statistics.

use divergence_values::{fold_chunks, At, Elem, Lanes, Tol, Visit};

pub use divergence_values::{Gather, Piece, ValuesRef};

/// Number of independent accumulators per metric in the fast loop.
pub const LANES: usize = 8;
/// Elements per block: the unit of the finite fast path and of the max-index rescan.
pub const BLOCK: usize = 2048;
/// Default number of elements per rayon task (see `DiffConfig::chunk_len`).
pub const DEFAULT_CHUNK_LEN: usize = 1 << 18;

/// Defines `$name`, which runs `$portable` (an `#[inline(always)]` function of the same
/// signature) on the widest vector unit available: a copy compiled for AVX-512F (`$avx512`)
/// or AVX2 (`$avx2`) when the CPU has it (runtime detection), else the baseline build. Every
/// copy computes the same IEEE operations in the same order (the kernels' lane count is fixed
/// by [`LANES`], not by the vector width; no FMA contraction), so results do not depend on the
/// CPU. The kernels' one dispatch pattern, written once (`chunk_acc`, `steps_acc`,
/// `side_chunk`, and the token effect's `tokens::scan_rows`).
macro_rules! widest_unit {
    (
        $(#[$attr:meta])*
        fn $name:ident, $avx512:ident, $avx2:ident => $portable:ident
        [$($generics:tt)*] [$($params:tt)*]
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
    ) => {
        $(#[$attr])*
        fn $name<$($generics)*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { $avx512::<$($params)*>($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { $avx2::<$($params)*>($($arg),*) };
                }
            }
            $portable::<$($params)*>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $avx512<$($generics)*>($($arg: $ty),*) $(-> $ret)? {
            $portable::<$($params)*>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2<$($generics)*>($($arg: $ty),*) $(-> $ret)? {
            $portable::<$($params)*>($($arg),*)
        }
    };
}
pub(crate) use widest_unit;

/// The tolerance parameters the kernel needs for the element-wise counts.
pub(crate) type Params = Tol;

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

    /// The running sums as one lane, to continue them element by element.
    fn lane(&self) -> Lanes<1> {
        Lanes {
            sum_o2: [self.sum_o2],
            sum_r2: [self.sum_r2],
            sum_d2: [self.sum_d2],
            sum_abs_d: [self.sum_abs_d],
            dot: [self.dot],
            max_abs_d: [self.max_abs_d],
            max_rel: [self.max_rel],
            n_outside: [self.n_outside],
        }
    }

    /// Stores the sums of [`Accumulator::lane`] back.
    fn set_lane(&mut self, l: &Lanes<1>) {
        [self.sum_o2] = l.sum_o2;
        [self.sum_r2] = l.sum_r2;
        [self.sum_d2] = l.sum_d2;
        [self.sum_abs_d] = l.sum_abs_d;
        [self.dot] = l.dot;
        [self.max_abs_d] = l.max_abs_d;
        [self.max_rel] = l.max_rel;
        [self.n_outside] = l.n_outside;
    }
}

/// Compares two equally long value slices. `chunk_len` is the rayon task size.
#[cfg(test)]
pub(crate) fn accumulate(
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    params: &Params,
    chunk_len: usize,
) -> Accumulator {
    accumulate_into(
        Accumulator::default(),
        ours.into(),
        reference.into(),
        0,
        params,
        chunk_len,
    )
}

/// Continues `acc` (the sums of the elements before `base`) over two equally long pieces that
/// hold the elements from `base` on. With `base` a multiple of `chunk_len`, comparing a tensor
/// piece by piece gives the sums of comparing it at once, bit for bit ([`fold_chunks`]).
pub(crate) fn accumulate_into(
    acc: Accumulator,
    ours: Piece<'_>,
    reference: Piece<'_>,
    base: u64,
    params: &Params,
    chunk_len: usize,
) -> Accumulator {
    pair_visit(acc, ours, reference, base, params, How::Chunks(chunk_len))
}

/// Continues the sums of one open chunk (`acc`: its elements before `base`) over its next
/// elements, which start at a multiple of [`BLOCK`] from the chunk's start: the chunk's sums
/// as [`accumulate_into`] computes them, bit for bit, whatever the pieces ([`Chunked`]).
pub(crate) fn continue_chunk(
    acc: Accumulator,
    ours: Piece<'_>,
    reference: Piece<'_>,
    base: u64,
    params: &Params,
) -> Accumulator {
    pair_visit(acc, ours, reference, base, params, How::Continue)
}

/// How a pair's values are summed: as whole chunks of this many elements (in parallel,
/// merged in order), or as the continuation of one open chunk.
#[derive(Clone, Copy)]
enum How {
    Chunks(usize),
    Continue,
}

/// One side's elements as the kernel reads them: the raw values a [`Piece`] borrows and where
/// its elements are in them.
struct Src<'a, R> {
    raw: &'a [R],
    at: At,
}

impl<R> Clone for Src<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Src<'_, R> {}

impl<'a, R> Src<'a, R> {
    /// The same side from its element `k` on.
    #[inline(always)]
    fn skip(self, k: usize) -> Self {
        Src {
            raw: self.raw,
            at: self.at.skip(k),
        }
    }
}

/// Calls `f(j, ours, ref)` on the elements `0..n` of both sides, as runs of consecutive
/// stored elements on both (`j`: the run's first element): one run for two slices, several
/// where a side is a [`divergence_values::Gather`].
#[inline(always)]
fn for_runs<A, B>(o: Src<'_, A>, r: Src<'_, B>, n: usize, mut f: impl FnMut(usize, &[A], &[B])) {
    let mut j = 0;
    while j < n {
        let ro = o.at.run(j, n - j);
        let rr = r.at.run(j, ro.len());
        let k = rr.len();
        f(j, &o.raw[ro.start..ro.start + k], &r.raw[rr]);
        j += k;
    }
}

/// The lane of a block's element `j` in the fast loops ([`LANES`] of them): `j % LANES`, but
/// lane 0 for the block's last `len % LANES` elements (the remainder of its whole groups).
#[inline(always)]
fn lane_of(j: usize, full: usize) -> usize {
    if j < full {
        j % LANES
    } else {
        0
    }
}

/// The elements of one run (`xs`, `ys`), starting at element `j` of a block whose first
/// `full` elements are whole groups of [`LANES`], stepped into `l`: element by element up to a
/// group boundary, whole groups (the loop the compiler vectorizes), then element by element.
/// Each lane sees the block's elements in the order one pass over the whole block gives it, so
/// the sums do not depend on where the runs break (a block of one run only has the last
/// loop's remainder). No closures in this hot loop: a closure that is not inlined is compiled
/// without the caller's vector features (the rare paths, the careful loop and the max-index
/// rescan, do take closures through `for_runs`).
#[inline(always)]
fn pair_lanes<A: Elem, B: Elem, const TRACK: bool>(
    l: &mut Lanes<LANES>,
    first: &mut [u64; LANES],
    xs: &[A::Raw],
    ys: &[B::Raw],
    j: usize,
    full: usize,
    tol: &Tol,
) {
    let k = xs.len().min(ys.len());
    let head = ((LANES - j % LANES) % LANES).min(k);
    // With TRACK, `first[lane]` follows where each lane's maximum last grew: the block
    // element (by the element-by-element loops), or the stretch of whole groups it grew in
    // ([`IN_STRETCH`], by the groups' loop), which holds the lane's first element attaining its
    // maximum, as each lane sees its elements in order ([`fast_block`] asks for it).
    for i in 0..head {
        pair_one::<TRACK>(l, first, A::wide(xs[i]), B::wide(ys[i]), j + i, full, tol);
    }
    let groups = full.saturating_sub(j + head).min(k - head) / LANES * LANES;
    let body = head..head + groups;
    // Copies whose lanes are only indexed by constants, so that they live in vector registers
    // (the element-by-element loops index `l` at run time, which keeps it in memory).
    let mut v = *l;
    let mut f = *first;
    let (xs_body, ys_body) = (&xs[body.clone()], &ys[body.clone()]);
    if TRACK {
        // A lane's maximum compared once a stretch, not once a group: following the element
        // in the loop made a decode step's kernel ~10% slower than one tensor's, whose blocks
        // rescan only where their maximum grows (docs/performance.md, "Decode steps", session
        // 56). Whole stretches, then the rest as one shorter stretch (stretches cut by
        // `chunks` worked out each one's length: slower).
        let mut at = (j + head) as u64;
        let mut xi = xs_body.chunks_exact(STRETCH * LANES);
        let mut yi = ys_body.chunks_exact(STRETCH * LANES);
        for (sx, sy) in (&mut xi).zip(&mut yi) {
            let before = v.max_abs_d;
            pair_groups::<A, B>(&mut v, sx, sy, tol);
            note_stretch(&mut f, &v.max_abs_d, &before, at);
            at += (STRETCH * LANES) as u64;
        }
        let before = v.max_abs_d;
        pair_groups::<A, B>(&mut v, xi.remainder(), yi.remainder(), tol);
        note_stretch(&mut f, &v.max_abs_d, &before, at);
    } else {
        pair_groups::<A, B>(&mut v, xs_body, ys_body, tol);
    }
    *l = v;
    *first = f;
    for i in body.end..k {
        pair_one::<TRACK>(l, first, A::wide(xs[i]), B::wide(ys[i]), j + i, full, tol);
    }
}

/// [`pair_lanes`]' loop over whole groups of [`LANES`] elements (`xs` and `ys` hold whole
/// groups): group by group, each element in its lane, no branch (the loop the compiler
/// vectorizes).
#[inline(always)]
fn pair_groups<A: Elem, B: Elem>(v: &mut Lanes<LANES>, xs: &[A::Raw], ys: &[B::Raw], tol: &Tol) {
    for (xb, yb) in xs.chunks_exact(LANES).zip(ys.chunks_exact(LANES)) {
        for lane in 0..LANES {
            v.step(lane, A::wide(xb[lane]), B::wide(yb[lane]), tol);
        }
    }
}

/// Groups of [`LANES`] elements in a stretch of [`pair_lanes`]' tracked loop.
const STRETCH: usize = 8;

/// Marks a lane's `first` entry ([`pair_lanes`]) whose maximum last grew in the stretch of
/// whole groups that starts at block element `first & !IN_STRETCH`.
const IN_STRETCH: u64 = 1 << 63;

/// Marks in `first` the lanes whose maximum grew over a stretch (from `before` to `max`) as
/// grown in the stretch that starts at block element `at` ([`IN_STRETCH`]).
#[inline(always)]
fn note_stretch(first: &mut [u64; LANES], max: &[f64; LANES], before: &[f64; LANES], at: u64) {
    for lane in 0..LANES {
        first[lane] = if max[lane] > before[lane] {
            IN_STRETCH | at
        } else {
            first[lane]
        };
    }
}

/// The block element a lane's `first` entry names ([`pair_lanes`]): the element, or, in a
/// stretch ([`IN_STRETCH`]), the stretch's first element of `lane` whose difference is `max`,
/// the lane's maximum. Its maximum grew last in that stretch, so every element of the lane
/// before that one is below `max`, and the lane's first element attaining it is there.
#[inline(always)]
fn first_of_lane<A: Elem, B: Elem>(
    o: Src<'_, A::Raw>,
    r: Src<'_, B::Raw>,
    first: u64,
    lane: usize,
    max: f64,
    len: usize,
) -> u64 {
    if first & IN_STRETCH == 0 {
        return first;
    }
    let start = (first & !IN_STRETCH) as usize + lane;
    let end = (start + STRETCH * LANES).min(len);
    let (ro, rr) = (o.at.run(start, end - start), r.at.run(start, end - start));
    let mut e = start;
    if ro.len() == end - start && rr.len() == end - start {
        // Both sides' stretch stored in one run (always, but in a gathered view).
        let (xs, ys) = (&o.raw[ro], &r.raw[rr]);
        while e < end {
            if (A::wide(xs[e - start]) - B::wide(ys[e - start])).abs() == max {
                return e as u64;
            }
            e += LANES;
        }
    } else {
        while e < end {
            let (x, y) = (o.raw[o.at.run(e, 1).start], r.raw[r.at.run(e, 1).start]);
            if (A::wide(x) - B::wide(y)).abs() == max {
                return e as u64;
            }
            e += LANES;
        }
    }
    // Not reached: the stretch holds the element (the lane's maximum grew there).
    start as u64
}

/// One element of [`pair_lanes`]' element-by-element loops: block element `at`, in its lane.
#[inline(always)]
fn pair_one<const TRACK: bool>(
    l: &mut Lanes<LANES>,
    first: &mut [u64; LANES],
    x: f64,
    y: f64,
    at: usize,
    full: usize,
    tol: &Tol,
) {
    let lane = lane_of(at, full);
    let before = l.max_abs_d[lane];
    let a = l.step(lane, x, y, tol);
    if TRACK && a > before {
        first[lane] = at as u64;
    }
}

/// [`pair_lanes`] for one side's sum of squares.
#[inline(always)]
fn side_lanes<A: Elem>(lanes: &mut [f64; LANES], xs: &[A::Raw], j: usize, full: usize) {
    let k = xs.len();
    let head = ((LANES - j % LANES) % LANES).min(k);
    for (i, &x) in xs[..head].iter().enumerate() {
        let x = A::wide(x);
        lanes[lane_of(j + i, full)] += x * x;
    }
    let groups = full.saturating_sub(j + head).min(k - head) / LANES * LANES;
    let body = head..head + groups;
    let mut v = *lanes;
    for c in xs[body.clone()].chunks_exact(LANES) {
        for (lane, &x) in v.iter_mut().zip(c) {
            let x = A::wide(x);
            *lane += x * x;
        }
    }
    *lanes = v;
    for (i, &x) in xs.iter().enumerate().skip(body.end) {
        let x = A::wide(x);
        lanes[lane_of(j + i, full)] += x * x;
    }
}

/// Most bytes of a side [`prefetch`] asks for: a larger tensor streams, and the hardware
/// prefetcher keeps ahead of the loop.
const PREFETCH_MAX_BYTES: usize = 64 << 10;

/// Asks the CPU to start loading every cache line of a slice of at most
/// [`PREFETCH_MAX_BYTES`] at once (a hint: no effect on results, none on other CPUs).
#[inline(always)]
fn prefetch<R>(raw: &[R]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(raw);
        if bytes == 0 || bytes > PREFETCH_MAX_BYTES {
            return;
        }
        let p = raw.as_ptr().cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch is a hint that never faults; `p + off` is within the slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
        // SAFETY: as above; the slice's last byte.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(bytes - 1)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = raw;
}

fn pair_visit(
    acc: Accumulator,
    ours: Piece<'_>,
    reference: Piece<'_>,
    base: u64,
    params: &Params,
    how: How,
) -> Accumulator {
    /// Dispatch on ours' encoding, then on the reference's ([`Pair`]).
    struct Ours<'r, 'p> {
        acc: Accumulator,
        o_at: At,
        reference: Piece<'r>,
        n: usize,
        base: u64,
        p: &'p Params,
        how: How,
    }
    struct Pair<'o, 'p, A: Elem> {
        acc: Accumulator,
        o: Src<'o, A::Raw>,
        r_at: At,
        n: usize,
        base: u64,
        p: &'p Params,
        how: How,
    }
    impl Visit for Ours<'_, '_> {
        type Out = Accumulator;
        fn visit<A: Elem>(self, o: &[A::Raw]) -> Accumulator {
            let Ours {
                acc,
                o_at,
                reference,
                n,
                base,
                p,
                how,
            } = self;
            let o = Src { raw: o, at: o_at };
            reference.values().visit(Pair::<A> {
                acc,
                o,
                r_at: reference.at(),
                n,
                base,
                p,
                how,
            })
        }
    }
    impl<A: Elem> Visit for Pair<'_, '_, A> {
        type Out = Accumulator;
        fn visit<B: Elem>(self, r: &[B::Raw]) -> Accumulator {
            let r = Src {
                raw: r,
                at: self.r_at,
            };
            // A small tensor (a decode step's probe: 4-12 KB, cold, a member away from the
            // previous row's) is asked for whole before the loop reads it, so that its cache
            // lines load together instead of one miss at a time (docs/performance.md).
            prefetch(self.o.raw);
            prefetch(r.raw);
            match self.how {
                How::Chunks(chunk_len) => {
                    run::<A, B>(self.acc, self.o, r, self.n, self.base, self.p, chunk_len)
                }
                How::Continue => {
                    chunk_acc::<A, B, false>(self.acc, self.o, r, self.n, self.base, self.p)
                }
            }
        }
    }
    ours.values().visit(Ours {
        acc,
        o_at: ours.at(),
        n: ours.len().min(reference.len()),
        reference,
        base,
        p: params,
        how,
    })
}

fn run<A: Elem, B: Elem>(
    acc: Accumulator,
    o: Src<'_, A::Raw>,
    r: Src<'_, B::Raw>,
    n: usize,
    base: u64,
    p: &Params,
    chunk_len: usize,
) -> Accumulator {
    fold_chunks(
        n,
        chunk_len,
        acc,
        |c| {
            let (o, r) = (o.skip(c.start), r.skip(c.start));
            chunk_acc::<A, B, false>(
                Accumulator::default(),
                o,
                r,
                c.len(),
                base + c.start as u64,
                p,
            )
        },
        |mut acc, part| {
            acc.merge(&part);
            acc
        },
    )
}

widest_unit! {
    /// One chunk (`n` elements), on the widest vector unit available (`widest_unit!`: one
    /// inlined [`Lanes::step`] in every build).
    fn chunk_acc, chunk_acc_avx512, chunk_acc_avx2 => chunk_acc_portable
    [A: Elem, B: Elem, const TRACK: bool] [A, B, TRACK]
    (acc: Accumulator, o: Src<'_, A::Raw>, r: Src<'_, B::Raw>, n: usize, base: u64, p: &Params)
        -> Accumulator
}

#[inline(always)]
fn chunk_acc_portable<A: Elem, B: Elem, const TRACK: bool>(
    mut acc: Accumulator,
    o: Src<'_, A::Raw>,
    r: Src<'_, B::Raw>,
    n: usize,
    base: u64,
    p: &Params,
) -> Accumulator {
    let mut at = 0;
    while at < n {
        let len = BLOCK.min(n - at);
        let (ob, rb, block_base) = (o.skip(at), r.skip(at), base + at as u64);
        if !fast_block::<A, B, TRACK>(ob, rb, len, block_base, p, &mut acc) {
            for_runs(ob, rb, len, |j, os, rs| {
                slow_block::<A, B>(os, rs, block_base + j as u64, p, &mut acc);
            });
        }
        at += len;
    }
    acc
}

/// The vectorizable path for a block of `len` elements where every value is finite. Returns
/// false (and leaves `acc` untouched) when the block holds a NaN or Inf.
#[inline(always)]
fn fast_block<A: Elem, B: Elem, const TRACK: bool>(
    o: Src<'_, A::Raw>,
    r: Src<'_, B::Raw>,
    len: usize,
    base: u64,
    p: &Params,
    acc: &mut Accumulator,
) -> bool {
    let tol = *p;
    let mut l = Lanes::<LANES>::ZERO;
    let mut first = [0u64; LANES];
    let full = len - len % LANES;
    let mut j = 0;
    while j < len {
        let ro = o.at.run(j, len - j);
        let rr = r.at.run(j, ro.len());
        let k = rr.len();
        pair_lanes::<A, B, TRACK>(
            &mut l,
            &mut first,
            &o.raw[ro.start..ro.start + k],
            &r.raw[rr],
            j,
            full,
            &tol,
        );
        j += k;
    }
    let so2: f64 = l.sum_o2.iter().sum();
    let sr2: f64 = l.sum_r2.iter().sum();
    // A NaN or Inf in either side makes its sum of squares non-finite: the careful path then
    // separates the non-finite elements. (An f64 value above ~1e154 also overflows the sums;
    // compare() reports such an op by its max |ours - ref| instead of the norm-wise rule.)
    if !(so2.is_finite() && sr2.is_finite()) {
        return false;
    }
    let len = len as u64;
    acc.n += len;
    acc.n_finite += len;
    acc.sum_o2 += so2;
    acc.sum_r2 += sr2;
    acc.sum_d2 += l.sum_d2.iter().sum::<f64>();
    acc.sum_abs_d += l.sum_abs_d.iter().sum::<f64>();
    acc.dot += l.dot.iter().sum::<f64>();
    acc.n_outside += l.n_outside.iter().sum::<u64>();
    let bmr = l
        .max_rel
        .iter()
        .fold(0.0f64, |m, &v| if v > m { v } else { m });
    if bmr > acc.max_rel {
        acc.max_rel = bmr;
    }
    let bmx = l
        .max_abs_d
        .iter()
        .fold(0.0f64, |m, &v| if v > m { v } else { m });
    if TRACK && len > 0 && (acc.max_abs_d_index.is_none() || bmx > acc.max_abs_d) {
        // The lanes followed where their maxima grew: the block's first element attaining
        // `bmx` is the first such element of the lanes that reach it (each lane's own first,
        // found in its stretch where the groups' loop noted one; none grew when every
        // difference is 0, and then element 0 attains it).
        let block = len as usize;
        let mut at = u64::MAX;
        if bmx > 0.0 {
            for (lane, (&max, &f)) in l.max_abs_d.iter().zip(&first).enumerate() {
                if max == bmx {
                    at = at.min(first_of_lane::<A, B>(o, r, f, lane, bmx, block));
                }
            }
        }
        let at = if at == u64::MAX { 0 } else { at };
        acc.max_abs_d = bmx;
        acc.max_abs_d_index = Some(base + at);
    } else if len > 0 && (acc.max_abs_d_index.is_none() || bmx > acc.max_abs_d) {
        // Rescan this block for the first element attaining the maximum: only when it grows,
        // which is rare in a large tensor and once per tensor of one block (a decode step's
        // probes): a vectorized scan, run by run, without a closure (see `pair_lanes`).
        let mut at = None;
        let n = len as usize;
        let mut j = 0;
        while j < n && at.is_none() {
            let ro = o.at.run(j, n - j);
            let rr = r.at.run(j, ro.len());
            let k = rr.len();
            at = first_attaining::<A, B>(&o.raw[ro.start..ro.start + k], &r.raw[rr], bmx)
                .map(|i| j + i);
            j += k;
        }
        acc.max_abs_d = bmx;
        acc.max_abs_d_index = Some(base + at.unwrap_or(0) as u64);
    }
    true
}

/// The first `i` with `|x[i] - y[i]| == target` (the widened values, as the fast loop
/// computes them): groups of [`LANES`] tested without a branch per element, so that the loop
/// vectorizes, then the group that has it searched in order.
#[inline(always)]
fn first_attaining<A: Elem, B: Elem>(xs: &[A::Raw], ys: &[B::Raw], target: f64) -> Option<usize> {
    let k = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..k], &ys[..k]);
    let hit = |i: usize| (A::wide(xs[i]) - B::wide(ys[i])).abs() == target;
    let groups = k / LANES * LANES;
    for (g, (xb, yb)) in xs[..groups]
        .chunks_exact(LANES)
        .zip(ys[..groups].chunks_exact(LANES))
        .enumerate()
    {
        let mut any = false;
        for lane in 0..LANES {
            any |= (A::wide(xb[lane]) - B::wide(yb[lane])).abs() == target;
        }
        if any {
            return (g * LANES..g * LANES + LANES).find(|&i| hit(i));
        }
    }
    (groups..k).find(|&i| hit(i))
}

/// The careful per-element path: counts NaN/Inf per side and skips positions not finite on
/// both. Over consecutive slices one after the other, the same as over their concatenation.
fn slow_block<A: Elem, B: Elem>(
    o: &[A::Raw],
    r: &[B::Raw],
    base: u64,
    p: &Params,
    acc: &mut Accumulator,
) {
    // The sums continue element by element from the accumulator's, in one lane.
    let mut l = acc.lane();
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
        acc.n_finite += 1;
        let max_before = l.max_abs_d[0];
        let a = l.step(0, x, y, p);
        // The first finite element sets the maximum; later ones only a strictly larger one.
        if acc.max_abs_d_index.is_none() || a > max_before {
            l.max_abs_d[0] = a;
            acc.max_abs_d_index = Some(base + i as u64);
        }
    }
    acc.set_lane(&l);
}

/// The sums of `steps` runs of `n` consecutive elements of both sides, each run on its own
/// (run `k`: elements `k * n .. (k + 1) * n` of each): a probe's decode steps stored one after
/// the other in a stacked member. With `n` below the chunk length, run `k`'s sums are those of
/// [`Chunked::feed_pair`] and [`Chunked::total`] on that run alone, bit for bit (the same
/// blocks from the run's start, merged once into empty sums; tested). One dispatch on the
/// encodings for all the runs, and one pass front to back over both sides' values: what
/// comparing the steps one call at a time spends per call (the dispatch, the prefetch of a
/// cold tensor) is spent once. `emit(k, sums)` gets each run's sums in order.
pub(crate) fn step_sums(
    ours: ValuesRef<'_>,
    reference: ValuesRef<'_>,
    n: usize,
    steps: usize,
    params: &Params,
    emit: &mut dyn FnMut(usize, Accumulator),
) {
    struct Ours<'r, 'p, 'e> {
        reference: ValuesRef<'r>,
        n: usize,
        steps: usize,
        p: &'p Params,
        emit: &'e mut dyn FnMut(usize, Accumulator),
    }
    struct Pair<'o, 'p, 'e, A: Elem> {
        o: &'o [A::Raw],
        n: usize,
        steps: usize,
        p: &'p Params,
        emit: &'e mut dyn FnMut(usize, Accumulator),
    }
    impl Visit for Ours<'_, '_, '_> {
        type Out = ();
        fn visit<A: Elem>(self, o: &[A::Raw]) {
            let Ours {
                reference,
                n,
                steps,
                p,
                emit,
            } = self;
            reference.visit(Pair::<A> {
                o,
                n,
                steps,
                p,
                emit,
            });
        }
    }
    impl<A: Elem> Visit for Pair<'_, '_, '_, A> {
        type Out = ();
        fn visit<B: Elem>(self, r: &[B::Raw]) {
            let o = Src {
                raw: self.o,
                at: At::Flat(0),
            };
            let r = Src {
                raw: r,
                at: At::Flat(0),
            };
            // A step of one or two blocks (a decode step's probes but its logits) has its
            // maximum's index followed by the lanes: a rescan would read at least its first
            // block again. Longer steps rescan a block only where the maximum grows.
            if self.n <= 2 * BLOCK {
                steps_acc::<A, B, true>(o, r, self.n, self.steps, self.p, self.emit);
            } else {
                steps_acc::<A, B, false>(o, r, self.n, self.steps, self.p, self.emit);
            }
        }
    }
    // Both sides must hold every run: a short side is the caller's bug, never read past.
    let held = |len: usize| len.checked_div(n).unwrap_or(steps);
    let steps = steps.min(held(ours.len())).min(held(reference.len()));
    ours.visit(Ours {
        reference,
        n,
        steps,
        p: params,
        emit,
    });
}

widest_unit! {
    /// [`step_sums`]' loop over the steps of a run, on the widest vector unit available: one
    /// dispatch for the run (as [`chunk_acc`] for one chunk), so that every step's blocks are
    /// the same build's inlined loop and what a step costs past its elements is only its sums'
    /// tail (docs/performance.md, "Decode steps", session 54). Step `k`'s sums are
    /// [`chunk_acc`]'s on its `n` elements alone, merged once into empty sums, as
    /// `Chunked::total` closes a run shorter than a chunk: the same bits on every build
    /// (tested).
    fn steps_acc, steps_acc_avx512, steps_acc_avx2 => steps_acc_portable
    [A: Elem, B: Elem, const TRACK: bool] [A, B, TRACK]
    (
        o: Src<'_, A::Raw>,
        r: Src<'_, B::Raw>,
        n: usize,
        steps: usize,
        p: &Params,
        emit: &mut dyn FnMut(usize, Accumulator),
    )
}

#[inline(always)]
fn steps_acc_portable<A: Elem, B: Elem, const TRACK: bool>(
    o: Src<'_, A::Raw>,
    r: Src<'_, B::Raw>,
    n: usize,
    steps: usize,
    p: &Params,
    emit: &mut dyn FnMut(usize, Accumulator),
) {
    for k in 0..steps {
        let at = k * n;
        let run = chunk_acc_portable::<A, B, TRACK>(
            Accumulator::default(),
            o.skip(at),
            r.skip(at),
            n,
            0,
            p,
        );
        let mut sums = Accumulator::default();
        sums.merge(&run);
        emit(k, sums);
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

#[cfg(test)]
pub(crate) fn side_stats(values: ValuesRef<'_>) -> SideStats {
    side_stats_into(SideStats::default(), values.into(), DEFAULT_CHUNK_LEN)
}

/// Continues `stats` over the next values of a side ([`accumulate_into`]'s rule: pieces that
/// start at multiples of `chunk_len` give the statistics of the whole, bit for bit).
pub(crate) fn side_stats_into(stats: SideStats, values: Piece<'_>, chunk_len: usize) -> SideStats {
    side_visit(stats, values, How::Chunks(chunk_len))
}

/// Continues the statistics of one open chunk over its next values ([`continue_chunk`]'s
/// rule: they start at a multiple of [`BLOCK`] from the chunk's start).
pub(crate) fn continue_side_chunk(stats: SideStats, values: Piece<'_>) -> SideStats {
    side_visit(stats, values, How::Continue)
}

fn side_visit(stats: SideStats, values: Piece<'_>, how: How) -> SideStats {
    struct Go {
        stats: SideStats,
        at: At,
        n: usize,
        how: How,
    }
    impl Visit for Go {
        type Out = SideStats;
        fn visit<A: Elem>(self, v: &[A::Raw]) -> SideStats {
            let v = Src {
                raw: v,
                at: self.at,
            };
            match self.how {
                How::Chunks(chunk_len) => fold_chunks(
                    self.n,
                    chunk_len,
                    self.stats,
                    |c| side_chunk::<A>(SideStats::default(), v.skip(c.start), c.len()),
                    |mut a, b| {
                        a.merge_from(&b);
                        a
                    },
                ),
                How::Continue => side_chunk::<A>(self.stats, v, self.n),
            }
        }
    }
    values.values().visit(Go {
        stats,
        at: values.at(),
        n: values.len(),
        how,
    })
}

widest_unit! {
    /// One chunk (or the rest of one: `n` elements) of [`side_stats_into`], block by block
    /// ([`BLOCK`], as the pair kernel): [`LANES`] partial sums per block, vectorized where the
    /// CPU allows; a block whose sum is not finite is summed again element by element, skipping
    /// NaN / Inf. The order of operations is fixed by the code, so every CPU gets the same bits.
    fn side_chunk, side_chunk_avx512, side_chunk_avx2 => side_chunk_portable
    [A: Elem] [A]
    (stats: SideStats, v: Src<'_, A::Raw>, n: usize) -> SideStats
}

#[inline(always)]
fn side_chunk_portable<A: Elem>(mut s: SideStats, v: Src<'_, A::Raw>, n: usize) -> SideStats {
    let mut at = 0;
    while at < n {
        let len = BLOCK.min(n - at);
        let block = v.skip(at);
        at += len;
        let mut lanes = [0f64; LANES];
        let full = len - len % LANES;
        let mut j = 0;
        while j < len {
            let run = block.at.run(j, len - j);
            j += run.len();
            side_lanes::<A>(&mut lanes, &v.raw[run.clone()], j - run.len(), full);
        }
        let sum: f64 = lanes.iter().sum();
        if sum.is_finite() {
            s.sum_sq += sum;
            continue;
        }
        // A NaN or Inf (or squares past f64's range): element by element, finite ones only.
        for_runs(block, block, len, |_, xs, _| {
            for &x in xs {
                let x = A::wide(x);
                if x.is_finite() {
                    s.sum_sq += x * x;
                } else if x.is_nan() {
                    s.nan += 1;
                } else {
                    s.inf += 1;
                }
            }
        });
    }
    s
}

/// Sums of a tensor that arrives in pieces, merged as [`fold_chunks`] merges them: chunks of
/// `chunk_len` elements from the tensor's start, each summed block by block from zero, merged
/// in order. Every piece but the last must hold a multiple of [`Chunked::unit`] (a [`BLOCK`]
/// when chunks hold whole blocks, else a chunk): whole chunks go to the parallel kernel (a
/// piece of at most one chunk never calls rayon), the rest continues the open chunk. The sums
/// are then those of the whole tensor at once, bit for bit (tested).
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunked<T> {
    done: T,
    open: T,
    /// Elements in the open chunk.
    open_len: usize,
    /// Elements fed.
    seen: u64,
}

/// Sums that merge ([`Chunked`]).
pub(crate) trait Merge: Default {
    fn merge_from(&mut self, other: &Self);
}

impl Merge for Accumulator {
    fn merge_from(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl Merge for SideStats {
    fn merge_from(&mut self, other: &Self) {
        self.sum_sq += other.sum_sq;
        self.nan += other.nan;
        self.inf += other.inf;
    }
}

impl<T: Merge + Send> Chunked<T> {
    /// The elements a piece must hold a multiple of (the last piece excepted), with chunks of
    /// `chunk_len`: a [`BLOCK`] when chunks hold whole blocks, else a chunk.
    pub(crate) fn unit(chunk_len: usize) -> usize {
        let chunk = chunk_len.max(1);
        if chunk.is_multiple_of(BLOCK) {
            BLOCK
        } else {
            chunk
        }
    }

    /// Elements fed so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Feeds the next `n` elements: `whole(sums, range, base)` sums whole chunks onto the
    /// merged sums ([`accumulate_into`]), `open(sums, range, base)` continues the open chunk
    /// ([`continue_chunk`]); `range` is within the piece, `base` the tensor index of its start.
    pub(crate) fn feed(
        &mut self,
        n: usize,
        chunk_len: usize,
        mut whole: impl FnMut(T, std::ops::Range<usize>, u64) -> T + Send,
        mut open: impl FnMut(T, std::ops::Range<usize>, u64) -> T + Send,
    ) {
        let chunk = chunk_len.max(1);
        let mut at = 0;
        while at < n {
            let left = n - at;
            if self.open_len == 0 && left >= chunk {
                // Whole chunks, and a partial last one beside them (the open chunk's start).
                let k = left / chunk * chunk;
                let (done, base) = (std::mem::take(&mut self.done), self.seen);
                let (tail_base, tail) = (base + k as u64, at + k..n);
                let (done, tail) = if tail.is_empty() {
                    (whole(done, at..at + k, base), None)
                } else {
                    let (w, o) = (&mut whole, &mut open);
                    let (done, t) = rayon::join(
                        || w(done, at..at + k, base),
                        || o(T::default(), tail, tail_base),
                    );
                    (done, Some(t))
                };
                self.done = done;
                self.seen += left as u64;
                at = n;
                if let Some(t) = tail {
                    self.open = t;
                    self.open_len = left - k;
                }
                continue;
            }
            let k = (chunk - self.open_len).min(left);
            self.open = open(std::mem::take(&mut self.open), at..at + k, self.seen);
            at += k;
            self.seen += k as u64;
            self.open_len += k;
            if self.open_len == chunk {
                let o = std::mem::take(&mut self.open);
                self.done.merge_from(&o);
                self.open_len = 0;
            }
        }
    }

    /// The sums of everything fed.
    pub(crate) fn total(mut self) -> T {
        if self.open_len > 0 {
            self.done.merge_from(&self.open);
        }
        self.done
    }
}

impl Chunked<Accumulator> {
    /// Feeds the next elements of both sides (equally many; the shorter length counts).
    pub(crate) fn feed_pair(
        &mut self,
        ours: Piece<'_>,
        reference: Piece<'_>,
        params: &Params,
        chunk_len: usize,
    ) {
        let n = ours.len().min(reference.len());
        self.feed(
            n,
            chunk_len,
            |acc, r, base| {
                let (o, re) = (ours.slice(r.clone()), reference.slice(r));
                accumulate_into(acc, o, re, base, params, chunk_len)
            },
            |acc, r, base| {
                let (o, re) = (ours.slice(r.clone()), reference.slice(r));
                continue_chunk(acc, o, re, base, params)
            },
        );
    }
}

impl Chunked<SideStats> {
    /// Feeds the next elements of one side.
    pub(crate) fn feed_side(&mut self, values: Piece<'_>, chunk_len: usize) {
        self.feed(
            values.len(),
            chunk_len,
            |s, r, _| side_stats_into(s, values.slice(r), chunk_len),
            |s, r, _| continue_side_chunk(s, values.slice(r)),
        );
    }
}

#[cfg(test)]
mod tests {
    use divergence_values::elem::{Bf16Le, F32, F64};
    use divergence_values::{Gather, Piece};

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

    /// Every vector build of [`step_sums`]' loop over the steps gives each step the sums of
    /// [`chunk_acc`] on that step alone, merged once into empty sums: with the maximum's index
    /// followed by the lanes and rescanned, steps holding a NaN or an Inf (the careful path)
    /// beside finite ones, steps of one element, of one past a block and past two.
    #[test]
    fn each_build_of_the_steps_loop_gives_each_steps_own_sums() {
        let n_steps = 5;
        for n in [1, LANES + 3, BLOCK + 1, 2 * BLOCK + 5] {
            let o: Vec<f32> = (0..n * n_steps)
                .map(|i| match i {
                    _ if i == n + n / 2 => f32::NAN,
                    _ if i == 3 * n + n / 3 => f32::INFINITY,
                    _ => ((i * 7919) % 1013) as f32 / 97.0 - 5.0,
                })
                .collect();
            let r: Vec<f32> = (0..n * n_steps)
                .map(|i| ((i * 104_729) % 1009) as f32 / 101.0 - 5.0)
                .collect();
            let expect: Vec<Accumulator> = (0..n_steps)
                .map(|k| {
                    let (o, r) = (&o[k * n..(k + 1) * n], &r[k * n..(k + 1) * n]);
                    let one = chunk_acc_portable::<F32, F32, false>(
                        Accumulator::default(),
                        flat(o),
                        flat(r),
                        n,
                        0,
                        &P,
                    );
                    let mut sums = Accumulator::default();
                    sums.merge(&one);
                    sums
                })
                .collect();
            assert!(expect[1].nan_o == 1 && expect[3].inf_o == 1, "n {n}");
            type Build = for<'a, 'b, 'c, 'd> unsafe fn(
                Src<'a, f32>,
                Src<'b, f32>,
                usize,
                usize,
                &'c Params,
                &'d mut dyn FnMut(usize, Accumulator),
            );
            #[allow(unused_mut)]
            let mut builds: Vec<(&str, bool, Build)> = vec![
                ("portable", true, steps_acc_portable::<F32, F32, false>),
                (
                    "portable tracked",
                    true,
                    steps_acc_portable::<F32, F32, true>,
                ),
                ("dispatched", true, steps_acc::<F32, F32, false>),
                ("dispatched tracked", true, steps_acc::<F32, F32, true>),
            ];
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = std::arch::is_x86_feature_detected!("avx2");
                let avx512 = std::arch::is_x86_feature_detected!("avx512f");
                builds.extend([
                    ("avx2", avx2, steps_acc_avx2::<F32, F32, false> as Build),
                    ("avx2 tracked", avx2, steps_acc_avx2::<F32, F32, true>),
                    ("avx512", avx512, steps_acc_avx512::<F32, F32, false>),
                    ("avx512 tracked", avx512, steps_acc_avx512::<F32, F32, true>),
                ]);
            }
            for (name, runs, build) in builds {
                if !runs {
                    continue;
                }
                let mut got = Vec::new();
                // SAFETY: the CPU supports the build's features, checked just above.
                unsafe {
                    build(flat(&o), flat(&r), n, n_steps, &P, &mut |k, sums| {
                        got.push((k, sums))
                    })
                };
                let want: Vec<_> = expect.iter().cloned().enumerate().collect();
                assert_eq!(got, want, "{name}, n {n}");
            }
        }
    }

    /// The lanes that follow where their maxima grew ([`step_sums`]' blocks) find the element
    /// the rescan finds, the first attaining the maximum, whatever the ties: every length up
    /// to three groups past a block (the maximum in a block's last `len % LANES` elements, in
    /// a later block, every difference 0, one maximum in several lanes), f32 and bfloat16,
    /// every vector build this CPU runs.
    #[test]
    fn tracked_max_index_is_the_rescans() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |k: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % k
        };
        let bf = |v: &[f32]| -> Vec<[u8; 2]> {
            v.iter()
                .map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect()
        };
        let lens = (0..=3 * LANES + 3).chain(BLOCK - 9..=BLOCK + 2 * LANES + 1);
        let mut checked = 0;
        for len in lens {
            for pattern in 0..5u64 {
                let o: Vec<f32> = (0..len)
                    .map(|i| match pattern {
                        0 => 1.0,                                             // every difference 0
                        1 => next(3) as f32,                                  // many ties
                        2 => (i % 7) as f32,                                  // a periodic maximum
                        3 => (i == len.saturating_sub(1)) as u8 as f32 * 5.0, // the last only
                        _ => next(1000) as f32 / 7.0,
                    })
                    .collect();
                let r: Vec<f32> = (0..len)
                    .map(|i| if pattern == 0 { 1.0 } else { (i % 3) as f32 })
                    .collect();
                let rescan = chunk_acc_portable::<F32, F32, false>(
                    Accumulator::default(),
                    flat(&o),
                    flat(&r),
                    len,
                    3,
                    &P,
                );
                let tracked = chunk_acc::<F32, F32, true>(
                    Accumulator::default(),
                    flat(&o),
                    flat(&r),
                    len,
                    3,
                    &P,
                );
                assert_eq!(tracked, rescan, "len {len}, pattern {pattern}");
                // Ours gathered (rows of `take` of `take + 3`): the lanes' stretches in runs
                // that end inside a block, and a stretch read across two runs.
                for take in [61, 100] {
                    let stride = take + 3;
                    let mut whole = vec![f32::NAN; len.div_ceil(take) * stride];
                    for (i, &v) in o.iter().enumerate() {
                        whole[i / take * stride + 1 + i % take] = v;
                    }
                    let gather = Gather {
                        stride,
                        offset: 1,
                        take,
                    };
                    let gathered = Src {
                        raw: &whole[..],
                        at: At::Gather { gather, start: 0 },
                    };
                    let tracked = chunk_acc::<F32, F32, true>(
                        Accumulator::default(),
                        gathered,
                        flat(&r),
                        len,
                        3,
                        &P,
                    );
                    assert_eq!(tracked, rescan, "gathered, len {len}, pattern {pattern}");
                }
                let (ob, rb) = (bf(&o), bf(&r));
                let rescan = chunk_acc_portable::<Bf16Le, Bf16Le, false>(
                    Accumulator::default(),
                    flat(&ob),
                    flat(&rb),
                    len,
                    0,
                    &P,
                );
                let tracked = chunk_acc_portable::<Bf16Le, Bf16Le, true>(
                    Accumulator::default(),
                    flat(&ob),
                    flat(&rb),
                    len,
                    0,
                    &P,
                );
                assert_eq!(tracked, rescan, "bf16 len {len}, pattern {pattern}");
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2, checked just above.
                        let avx2 = unsafe {
                            chunk_acc_avx2::<Bf16Le, Bf16Le, true>(
                                Accumulator::default(),
                                flat(&ob),
                                flat(&rb),
                                len,
                                0,
                                &P,
                            )
                        };
                        assert_eq!(avx2, rescan, "avx2 len {len}, pattern {pattern}");
                    }
                }
                if len > 0 {
                    checked += 1;
                }
            }
        }
        assert!(checked > 200);
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

    /// Every short run length (1-9: runs that break inside a group of lanes and inside a
    /// block's last `len % LANES` elements), parts whose length is not a multiple of the lanes,
    /// several encodings, NaN / Inf, pieces that start anywhere in a run: a gathered piece
    /// sums exactly as the same elements copied out (the property test's random takes rarely
    /// break a run inside a block's remainder).
    #[test]
    fn gathered_runs_of_every_short_length_are_the_copied_out_elements() {
        let p = Params {
            rtol: 1e-3,
            atol: 1e-6,
            rel_guard: 1e-30,
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
        };
        let bf = |v: &[f32]| -> Vec<[u8; 2]> {
            v.iter()
                .map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect()
        };
        for take in 1..=9usize {
            for (before, after, extra) in [(0, 0, 0), (3, 1, 1), (1, 6, 2), (2, 2, 3)] {
                let stride = before + take + after;
                // Parts of 2,050-2,100 elements: one whole block and a partial one, whose
                // length modulo the lanes varies with `extra`.
                let rows = (2049 + take * 7) / take + 1 + extra;
                let n = rows * take;
                let mut whole: Vec<f32> = (0..rows * stride).map(|_| next()).collect();
                if take % 3 == 0 {
                    whole[stride + before] = f32::NAN;
                    whole[(rows - 1) * stride + before] = f32::INFINITY;
                }
                let g = Gather {
                    stride,
                    offset: before,
                    take,
                };
                let gathered = Piece::gathered(ValuesRef::F32(&whole), g, 0, n).unwrap();
                let mut buf = Vec::new();
                let copied: Vec<f32> = gathered
                    .flat(&mut buf)
                    .to_f64_vec()
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let r: Vec<f32> = copied.iter().map(|v| v + next() * 1e-3).collect();
                let (wb, cb, rb) = (bf(&whole), bf(&copied), bf(&r));
                // f64 values with full mantissas: every change of summation order shows in
                // the bits (f32 and bf16 squares and products are often summed exactly).
                let full = |v: &[f32]| -> Vec<f64> {
                    v.iter()
                        .enumerate()
                        .map(|(i, &x)| f64::from(x) * (1.0 + 1e-9 * (i % 97) as f64))
                        .collect()
                };
                let w64 = full(&whole);
                let c64: Vec<f64> = Piece::gathered(ValuesRef::F64(&w64), g, 0, n)
                    .unwrap()
                    .flat(&mut buf)
                    .to_f64_vec();
                let r64 = full(&r);
                let sides = [
                    (ValuesRef::F32(&whole), ValuesRef::F32(&copied)),
                    (ValuesRef::Bf16Le(&wb), ValuesRef::Bf16Le(&cb)),
                    (ValuesRef::F64(&w64), ValuesRef::F64(&c64)),
                ];
                for (w, c) in sides {
                    let gathered = Piece::gathered(w, g, 0, n).unwrap();
                    for refs in [
                        ValuesRef::F32(&r),
                        ValuesRef::Bf16Le(&rb),
                        ValuesRef::F64(&r64),
                    ] {
                        for start in [0, 1, take / 2 + 1, 5, 13, 2048] {
                            let (gp, cp) =
                                (gathered.slice(start..n), Piece::from(c).slice(start..n));
                            let rp = Piece::from(refs).slice(start..n);
                            let base = start as u64;
                            assert_eq!(
                                continue_chunk(Accumulator::default(), gp, rp, base, &p),
                                continue_chunk(Accumulator::default(), cp, rp, base, &p),
                                "take {take}, start {start}"
                            );
                            // Ours copied, the reference gathered: the other side's runs.
                            assert_eq!(
                                continue_chunk(Accumulator::default(), rp, gp, base, &p),
                                continue_chunk(Accumulator::default(), rp, cp, base, &p),
                            );
                            assert_eq!(
                                continue_side_chunk(SideStats::default(), gp),
                                continue_side_chunk(SideStats::default(), cp),
                            );
                        }
                        for chunk in [8, 2048, 4096] {
                            assert_eq!(
                                accumulate_into(
                                    Accumulator::default(),
                                    gathered,
                                    refs.into(),
                                    0,
                                    &p,
                                    chunk
                                ),
                                accumulate_into(
                                    Accumulator::default(),
                                    c.into(),
                                    refs.into(),
                                    0,
                                    &p,
                                    chunk
                                ),
                                "take {take}, chunk {chunk}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dispatched_and_portable_paths_agree_bit_for_bit() {
        let o: Vec<f32> = (0..5000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let mut r: Vec<f64> = o.iter().map(|&x| f64::from(x) * 1.001 + 1e-4).collect();
        r[777] = f64::NAN;
        let dispatched = chunk_acc::<F32, F64, false>(
            Accumulator::default(),
            flat(&o),
            flat(&r),
            o.len(),
            10,
            &P,
        );
        let portable = chunk_acc_portable::<F32, F64, false>(
            Accumulator::default(),
            flat(&o),
            flat(&r),
            o.len(),
            10,
            &P,
        );
        assert_eq!(dispatched, portable);
        // The same sums where the lanes follow their maxima instead of a rescan.
        let tracked = chunk_acc::<F32, F64, true>(
            Accumulator::default(),
            flat(&o),
            flat(&r),
            o.len(),
            10,
            &P,
        );
        assert_eq!(tracked, portable);
        let tracked = chunk_acc_portable::<F32, F64, true>(
            Accumulator::default(),
            flat(&o),
            flat(&r),
            o.len(),
            10,
            &P,
        );
        assert_eq!(tracked, portable);
        assert_eq!(dispatched.nonfinite_mismatch, 1);
        // Each vector build this CPU can run, with and without the tracked index, not only the
        // one dispatch picks.
        #[cfg(target_arch = "x86_64")]
        {
            type Build = for<'a, 'b, 'c> unsafe fn(
                Accumulator,
                Src<'a, f32>,
                Src<'b, f64>,
                usize,
                u64,
                &'c Params,
            ) -> Accumulator;
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let builds: [(&str, bool, Build); 4] = [
                ("avx2", avx2, chunk_acc_avx2::<F32, F64, false>),
                ("avx2 tracked", avx2, chunk_acc_avx2::<F32, F64, true>),
                ("avx512", avx512, chunk_acc_avx512::<F32, F64, false>),
                ("avx512 tracked", avx512, chunk_acc_avx512::<F32, F64, true>),
            ];
            for (name, runs, build) in builds {
                if runs {
                    // SAFETY: the CPU supports the build's features, checked just above.
                    let got = unsafe {
                        build(Accumulator::default(), flat(&o), flat(&r), o.len(), 10, &P)
                    };
                    assert_eq!(got, portable, "{name}");
                }
            }
        }
        // One side's norm too (`side_chunk`).
        let d = SideStats::default();
        let portable = side_chunk_portable::<F64>(d, flat(&r), r.len());
        assert_eq!(side_chunk::<F64>(d, flat(&r), r.len()), portable);
        assert_eq!(portable.nan, 1);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                assert_eq!(
                    unsafe { side_chunk_avx2::<F64>(d, flat(&r), r.len()) },
                    portable
                );
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                assert_eq!(
                    unsafe { side_chunk_avx512::<F64>(d, flat(&r), r.len()) },
                    portable
                );
            }
        }
    }

    /// A slice as the kernel reads it.
    fn flat<R>(raw: &[R]) -> Src<'_, R> {
        Src {
            raw,
            at: At::Flat(0),
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

    /// A deterministic pseudo-random stream (no libm, so the same bits on every platform).
    fn lcg(seed: u64) -> impl FnMut() -> u32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 32) as u32
        }
    }

    /// Every field of an accumulator as bits, for exact comparison with stored values.
    fn fingerprint(a: &Accumulator) -> Vec<u64> {
        vec![
            a.n,
            a.n_finite,
            a.sum_o2.to_bits(),
            a.sum_r2.to_bits(),
            a.sum_d2.to_bits(),
            a.sum_abs_d.to_bits(),
            a.dot.to_bits(),
            a.max_abs_d.to_bits(),
            a.max_abs_d_index.unwrap_or(u64::MAX),
            a.max_rel.to_bits(),
            a.n_outside,
            a.nan_o,
            a.inf_o,
            a.nan_r,
            a.inf_r,
            a.nonfinite_mismatch,
        ]
    }

    /// Results of the kernel on fixed inputs of every element type (several chunks and blocks,
    /// a lane remainder, subnormals, NaN and Inf), compared bit for bit with the values the
    /// kernel gave before it moved its widening and per-element step to `divergence-values`.
    #[test]
    fn results_match_stored_values_bit_for_bit() {
        const N: usize = 20_003;
        let mut next = lcg(42);
        let o: Vec<f32> = (0..N)
            .map(|_| (next() as i32 >> 8) as f32 * 2f32.powi(-17))
            .collect();
        let mut r: Vec<f64> = o
            .iter()
            .map(|&x| f64::from(x) * (1.0 + f64::from(next() >> 12) * 2f64.powi(-30)))
            .collect();
        r[9_000] = f64::NAN;
        r[15_000] = f64::NEG_INFINITY;
        // bf16: the top half of each f32; f16: random patterns (about 3% NaN / Inf, some
        // subnormals), at odd byte offsets.
        let bf: Vec<[u8; 2]> = o
            .iter()
            .map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let h: Vec<[u8; 2]> = (0..N)
            .map(|i| {
                let bits = next() as u16;
                // mostly moderate magnitudes, so that most blocks take the fast path
                let bits = if i % 512 == 0 { bits } else { bits & 0xbbff };
                bits.to_le_bytes()
            })
            .collect();
        let ob = le_bytes(1, o.iter().map(|x| x.to_le_bytes()));
        let rb = le_bytes(3, r.iter().map(|x| x.to_le_bytes()));
        let (o_le, _) = ob[1..].as_chunks::<4>();
        let (r_le, _) = rb[3..].as_chunks::<8>();
        let cases: [(&str, ValuesRef<'_>, ValuesRef<'_>); 5] = [
            ("f32/f64", ValuesRef::F32(&o), ValuesRef::F64(&r)),
            (
                "f32le/f64le",
                ValuesRef::F32Le(o_le),
                ValuesRef::F64Le(r_le),
            ),
            ("bf16/f32", ValuesRef::Bf16Le(&bf), ValuesRef::F32(&o)),
            ("f16/bf16", ValuesRef::F16Le(&h), ValuesRef::Bf16Le(&bf)),
            ("f64/f16", ValuesRef::F64(&r), ValuesRef::F16Le(&h)),
        ];
        let got: Vec<(&str, Vec<u64>, [u64; 3])> = cases
            .iter()
            .map(|&(label, a, b)| {
                let s = side_stats(a);
                (
                    label,
                    fingerprint(&accumulate(a, b, &P, 5_000)),
                    [s.sum_sq.to_bits(), s.nan, s.inf],
                )
            })
            .collect();
        // (case, fingerprint of accumulate(), side_stats() of ours: sum_sq bits, nan, inf;
        // side_stats in 8 lanes per block of BLOCK since 2026-12-01, which moved the last bits of
        // three sums)
        #[rustfmt::skip]
        let want: Vec<(&str, Vec<u64>, [u64; 3])> = vec![
            ("f32/f64", vec![20003, 20001, 4718043027652936581, 4718050057212316034, 4620944520898545376, 4644136791393058701, 4718046541298969140, 4589077994544177152, 12221, 4562136932013873330, 0, 0, 0, 1, 1, 2], [4718043077454020485, 0, 0]),
            ("f32le/f64le", vec![20003, 20001, 4718043027652936581, 4718050057212316034, 4620944520898545376, 4644136791393058701, 4718046541298969140, 4589077994544177152, 12221, 4562136932013873330, 0, 0, 0, 1, 1, 2], [4718043077454020485, 0, 0]),
            ("bf16/f32", vec![20003, 20003, 4718006424229533963, 4718043077454020483, 4642568943966775296, 4655038511907340288, 4718024718932111534, 4598174394911555584, 4583, 4575517037707324124, 0, 0, 0, 0, 0, 0], [4718006424229533963, 0, 0]),
            ("f16/bf16", vec![20003, 20001, 4751502470818202161, 4718005498998577419, 4751525724541383107, 4694719894799428608, 4702403753886296259, 4678922357056733184, 15872, 4654799284010757544, 19991, 2, 0, 0, 0, 2], [4751502470818202162, 2, 0]),
            ("f64/f16", vec![20003, 19999, 4718049124938619480, 4751502470817766552, 4751525866486304461, 4694736675073505113, 4702432905600943722, 4678922324115007888, 15872, 4723175809762486344, 19989, 1, 1, 2, 0, 4], [4718050057212316044, 1, 1]),
        ];
        assert_eq!(got, want);
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
