//! The per-element update of the pairwise statistics ([`Lanes::step`]), written once for every
//! path of the diff kernel: the vectorized fast loop and its remainder, and the careful loop
//! that skips non-finite elements, in each of its CPU builds.

/// The tolerance parameters the pairwise step needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    /// Relative tolerance: an element is outside when `|o - r| > atol + rtol * |r|`.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Denominator floor of the relative error `|o - r| / max(|r|, rel_guard)`.
    pub rel_guard: f64,
}

/// `L` independent running accumulators per pairwise metric, as a struct of arrays: a loop
/// that steps lane `j` for `j in 0..L` keeps every metric's lanes in one vector register.
/// Adding the lanes up is the caller's (the order of that sum is part of the result).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lanes<const L: usize> {
    /// Σ ours².
    pub sum_o2: [f64; L],
    /// Σ ref².
    pub sum_r2: [f64; L],
    /// Σ (ours - ref)².
    pub sum_d2: [f64; L],
    /// Σ |ours - ref|.
    pub sum_abs_d: [f64; L],
    /// Σ ours · ref.
    pub dot: [f64; L],
    /// max |ours - ref|.
    pub max_abs_d: [f64; L],
    /// max |ours - ref| / max(|ref|, rel_guard).
    pub max_rel: [f64; L],
    /// Elements outside the tolerance.
    pub n_outside: [u64; L],
}

impl<const L: usize> Lanes<L> {
    /// All sums, maxima and counts zero.
    pub const ZERO: Self = Lanes {
        sum_o2: [0.0; L],
        sum_r2: [0.0; L],
        sum_d2: [0.0; L],
        sum_abs_d: [0.0; L],
        dot: [0.0; L],
        max_abs_d: [0.0; L],
        max_rel: [0.0; L],
        n_outside: [0; L],
    };

    /// Folds the pair `(x, y)` = (ours, ref), both finite, into lane `j`; returns
    /// `|x - y|`. Every operation is one IEEE f64 operation (no FMA contraction) and the
    /// maxima are selects, so any build of a loop over it gives the same bits.
    #[inline(always)]
    pub fn step(&mut self, j: usize, x: f64, y: f64, tol: &Tol) -> f64 {
        let d = x - y;
        let a = d.abs();
        let ay = y.abs();
        self.sum_o2[j] += x * x;
        self.sum_r2[j] += y * y;
        self.sum_d2[j] += d * d;
        self.sum_abs_d[j] += a;
        self.dot[j] += x * y;
        self.max_abs_d[j] = if a > self.max_abs_d[j] {
            a
        } else {
            self.max_abs_d[j]
        };
        let rel = a / if ay > tol.rel_guard {
            ay
        } else {
            tol.rel_guard
        };
        self.max_rel[j] = if rel > self.max_rel[j] {
            rel
        } else {
            self.max_rel[j]
        };
        self.n_outside[j] += u64::from(a > tol.atol + tol.rtol * ay);
        a
    }
}

impl<const L: usize> Default for Lanes<L> {
    fn default() -> Self {
        Self::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tol = Tol {
        rtol: 0.1,
        atol: 0.01,
        rel_guard: 1e-6,
    };

    #[test]
    fn hand_computed_lane() {
        // o = [1, 2, 3], r = [1, 2.5, 2]: d = [0, -0.5, 1]
        let mut l = Lanes::<1>::ZERO;
        let a: Vec<f64> = [(1.0, 1.0), (2.0, 2.5), (3.0, 2.0)]
            .into_iter()
            .map(|(x, y)| l.step(0, x, y, &TOL))
            .collect();
        assert_eq!(a, [0.0, 0.5, 1.0]);
        assert_eq!(l.sum_o2, [14.0]);
        assert_eq!(l.sum_r2, [1.0 + 6.25 + 4.0]);
        assert_eq!(l.sum_d2, [1.25]);
        assert_eq!(l.sum_abs_d, [1.5]);
        assert_eq!(l.dot, [1.0 + 5.0 + 6.0]);
        assert_eq!(l.max_abs_d, [1.0]);
        // relative errors 0, 0.5 / 2.5, 1 / 2; tolerances 0.11, 0.26, 0.21
        assert_eq!(l.max_rel, [0.5]);
        assert_eq!(l.n_outside, [2]);
    }

    #[test]
    fn lanes_are_independent_and_the_guard_floors_the_denominator() {
        let mut l = Lanes::<4>::default();
        l.step(2, 1e-9, 0.0, &TOL);
        assert_eq!(l.max_rel, [0.0, 0.0, 1e-9 / 1e-6, 0.0]);
        assert_eq!(l.n_outside, [0; 4]);
        l.step(3, 5.0, -5.0, &TOL);
        assert_eq!(l.max_abs_d, [0.0, 0.0, 1e-9, 10.0]);
        assert_eq!(l.dot, [0.0, 0.0, 0.0, -25.0]);
        assert_eq!(l.n_outside, [0, 0, 0, 1]);
    }
}
