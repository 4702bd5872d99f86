//! Layout changes on decoded values, in C order: the few primitive steps every map rule lowers
//! to ([`Step`]: permute axes, reshape, narrow one axis) and how several sources combine
//! ([`Combine`]). Pure and generic over the element type; shapes are checked when a rule is
//! resolved ([`crate::resolve`]), so applying a step to the shape it was resolved for cannot fail.

use std::ops::Add;

/// One primitive layout step, with concrete sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Output axis `i` is input axis `perm[i]`.
    Permute(Vec<usize>),
    /// Same elements, same order, another shape (same element count).
    Reshape(Vec<usize>),
    /// Keep `len` entries of `axis` from `start` on.
    Narrow {
        axis: usize,
        start: usize,
        len: usize,
    },
}

/// How the values of several sources make one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Element-wise sum (same shapes): row-parallel partial sums, a (hidden, residual) pair.
    Sum,
    /// Concatenation along an axis (the other axes equal): column-parallel shards.
    Concat(usize),
}

impl Step {
    /// The shape after this step, or why it does not apply to `shape`.
    pub fn shape(&self, shape: &[usize]) -> Result<Vec<usize>, String> {
        match self {
            Step::Permute(perm) => {
                let mut seen = vec![false; shape.len()];
                if perm.len() != shape.len()
                    || perm
                        .iter()
                        .any(|&a| a >= shape.len() || std::mem::replace(&mut seen[a], true))
                {
                    return Err(format!(
                        "permutation {perm:?} does not fit {} axes",
                        shape.len()
                    ));
                }
                Ok(perm.iter().map(|&a| shape[a]).collect())
            }
            Step::Reshape(to) => {
                let (a, b) = (numel(shape), numel(to));
                if a != b {
                    return Err(format!(
                        "cannot reshape {} ({}) to {} ({})",
                        fmt_shape(shape),
                        elements(a),
                        fmt_shape(to),
                        elements(b)
                    ));
                }
                Ok(to.clone())
            }
            Step::Narrow { axis, start, len } => {
                let Some(&dim) = shape.get(*axis) else {
                    return Err(format!("axis {axis} out of range for {} axes", shape.len()));
                };
                if start.checked_add(*len).is_none_or(|end| end > dim) {
                    return Err(format!(
                        "entries {start}..{} of axis {axis} do not exist (size {dim})",
                        start.saturating_add(*len)
                    ));
                }
                let mut out = shape.to_vec();
                out[*axis] = *len;
                Ok(out)
            }
        }
    }

    /// Applies the step to values of `shape` (which [`Step::shape`] accepted).
    pub fn apply<T: Copy>(&self, shape: &[usize], data: Vec<T>) -> Vec<T> {
        match self.gather(shape) {
            None => data,
            Some(g) => {
                let mut out = Vec::with_capacity(numel(&g.shape));
                g.runs(|base, inner, stride| {
                    if stride == 1 {
                        out.extend_from_slice(&data[base..base + inner]);
                    } else {
                        out.extend((0..inner).map(|j| data[base + j * stride]));
                    }
                });
                out
            }
        }
    }

    /// What this step reads from values of `shape`, as a `Gather`; `None` when it keeps the
    /// values as they are (a reshape, an identity permutation).
    pub fn gather(&self, shape: &[usize]) -> Option<Gather> {
        match self {
            Step::Reshape(_) => None,
            Step::Permute(perm) => {
                if perm.iter().enumerate().all(|(i, &a)| i == a) {
                    return None;
                }
                let strides = strides(shape);
                Some(Gather {
                    shape: perm.iter().map(|&a| shape[a]).collect(),
                    strides: perm.iter().map(|&a| strides[a]).collect(),
                    offset: 0,
                })
            }
            Step::Narrow { axis, start, len } => {
                let strides = strides(shape);
                let mut out_shape = shape.to_vec();
                out_shape[*axis] = *len;
                Some(Gather {
                    shape: out_shape,
                    offset: start * strides[*axis],
                    strides,
                })
            }
        }
    }
}

/// The elements at `offset + sum(index[i] * strides[i])` for every index of `shape`, in C
/// order: what a [`Step`] reads ([`Step::gather`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Gather {
    /// Calls `run(base, inner, stride)` for each innermost run in C order: the run's elements
    /// are `base + j * stride` for `j < inner` (a unit stride: a contiguous run to copy).
    pub fn runs(&self, mut run: impl FnMut(usize, usize, usize)) {
        if numel(&self.shape) == 0 {
            return;
        }
        let Some((&inner, outer_shape)) = self.shape.split_last() else {
            run(self.offset, 1, 1);
            return;
        };
        let inner_stride = self.strides[self.shape.len() - 1];
        let mut idx = vec![0usize; outer_shape.len()];
        loop {
            let base = self.offset
                + idx
                    .iter()
                    .zip(&self.strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            run(base, inner, inner_stride);
            // Odometer over the outer axes.
            let mut axis = outer_shape.len();
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                idx[axis] += 1;
                if idx[axis] < outer_shape[axis] {
                    break;
                }
                idx[axis] = 0;
            }
        }
    }
}

impl Combine {
    /// The combined shape of `shapes` (at least one), or why they do not combine.
    pub fn shape(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>, String> {
        let first = shapes.first().ok_or("no source")?;
        match *self {
            Combine::Sum => {
                if let Some(other) = shapes.iter().find(|s| *s != first) {
                    return Err(format!(
                        "a sum needs equal shapes, not {} and {}",
                        fmt_shape(first),
                        fmt_shape(other)
                    ));
                }
                Ok(first.clone())
            }
            Combine::Concat(axis) => {
                if axis >= first.len() {
                    return Err(format!("axis {axis} out of range for {} axes", first.len()));
                }
                let mut total = 0usize;
                for s in shapes {
                    let same_rest = s.len() == first.len()
                        && s.iter()
                            .zip(first)
                            .enumerate()
                            .all(|(i, (a, b))| i == axis || a == b);
                    if !same_rest {
                        return Err(format!(
                            "cannot concatenate {} and {} along axis {axis}",
                            fmt_shape(first),
                            fmt_shape(s)
                        ));
                    }
                    total = total.saturating_add(s[axis]);
                }
                let mut out = first.clone();
                out[axis] = total;
                Ok(out)
            }
        }
    }

    /// Combines the sources (shapes accepted by [`Combine::shape`]).
    pub fn apply<T: Copy + Add<Output = T>>(&self, parts: Vec<(Vec<usize>, Vec<T>)>) -> Vec<T> {
        let mut parts = parts.into_iter();
        let Some((shape, mut acc)) = parts.next() else {
            return Vec::new();
        };
        match *self {
            Combine::Sum => {
                for (_, p) in parts {
                    for (a, b) in acc.iter_mut().zip(p) {
                        *a = *a + b;
                    }
                }
                acc
            }
            Combine::Concat(axis) => {
                // Blocks of `inner` elements per outer index, one after the other per part.
                let outer: usize = shape[..axis].iter().product();
                let mut all = vec![(shape, acc)];
                all.extend(parts);
                let total: usize = all.iter().map(|(_, d)| d.len()).sum();
                let mut out = Vec::with_capacity(total);
                for o in 0..outer {
                    for (s, d) in &all {
                        let block = s[axis..].iter().product::<usize>();
                        out.extend_from_slice(&d[o * block..(o + 1) * block]);
                    }
                }
                acc = out;
                acc
            }
        }
    }
}

/// Elements of a shape (saturating: shapes here come from files already checked).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// `[2, 3, 4]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// `1 element`, `4 elements`.
fn elements(n: usize) -> String {
    match n {
        1 => "1 element".to_string(),
        n => format!("{n} elements"),
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iota(n: usize) -> Vec<i64> {
        (0..n as i64).collect()
    }

    #[test]
    fn permute_is_a_transpose() {
        let p = Step::Permute(vec![1, 0]);
        assert_eq!(p.shape(&[2, 3]).unwrap(), vec![3, 2]);
        assert_eq!(p.apply(&[2, 3], iota(6)), vec![0, 3, 1, 4, 2, 5]);
        assert!(Step::Permute(vec![0, 0]).shape(&[2, 2]).is_err());
        assert!(Step::Permute(vec![0]).shape(&[2, 2]).is_err());
    }

    #[test]
    fn a_reshape_of_other_elements_says_how_many() {
        assert_eq!(
            Step::Reshape(vec![]).shape(&[4]).unwrap_err(),
            "cannot reshape [4] (4 elements) to [] (1 element)"
        );
        assert_eq!(
            Step::Reshape(vec![]).shape(&[1]).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn narrow_keeps_a_slice() {
        let n = Step::Narrow {
            axis: 1,
            start: 1,
            len: 2,
        };
        assert_eq!(n.shape(&[2, 4]).unwrap(), vec![2, 2]);
        assert_eq!(n.apply(&[2, 4], iota(8)), vec![1, 2, 5, 6]);
        let bad = Step::Narrow {
            axis: 1,
            start: 3,
            len: 2,
        };
        assert!(bad.shape(&[2, 4]).unwrap_err().contains("do not exist"));
    }

    #[test]
    fn concat_and_sum() {
        let parts = vec![(vec![2, 1], vec![0, 1]), (vec![2, 2], vec![10, 11, 12, 13])];
        let c = Combine::Concat(1);
        assert_eq!(c.shape(&[vec![2, 1], vec![2, 2]]).unwrap(), vec![2, 3]);
        assert_eq!(c.apply(parts), vec![0, 10, 11, 1, 12, 13]);
        let s = Combine::Sum;
        assert!(s.shape(&[vec![2], vec![3]]).is_err());
        assert_eq!(
            s.apply(vec![(vec![2], vec![1, 2]), (vec![2], vec![10, 20])]),
            vec![11, 22]
        );
    }

    proptest! {
        /// Splitting an axis into parts and concatenating them back is the identity; so is a
        /// permutation followed by its inverse.
        #[test]
        fn split_concat_and_permute_round_trip(
            dims in proptest::collection::vec(1usize..5, 1..4),
            cut in 0usize..5,
            seed in 0u64..1000,
        ) {
            let data = iota(numel(&dims));
            let axis = seed as usize % dims.len();
            let cut = cut.min(dims[axis]);
            let a = Step::Narrow { axis, start: 0, len: cut };
            let b = Step::Narrow { axis, start: cut, len: dims[axis] - cut };
            let (sa, sb) = (a.shape(&dims).unwrap(), b.shape(&dims).unwrap());
            let joined = Combine::Concat(axis)
                .apply(vec![(sa, a.apply(&dims, data.clone())), (sb, b.apply(&dims, data.clone()))]);
            prop_assert_eq!(&joined, &data);
            // A rotation of the axes and its inverse.
            let n = dims.len();
            let k = seed as usize % n;
            let perm: Vec<usize> = (0..n).map(|i| (i + k) % n).collect();
            let mut inv = vec![0; n];
            for (i, &p) in perm.iter().enumerate() { inv[p] = i; }
            let p = Step::Permute(perm);
            let ps = p.shape(&dims).unwrap();
            let back = Step::Permute(inv).apply(&ps, p.apply(&dims, data.clone()));
            prop_assert_eq!(back, data);
        }
    }
}
