//! [`Piece`]: consecutive elements of a tensor, borrowed where they are stored: a slice of one
//! [`ValuesRef`], or a run of a strided gather ([`Gather`], one part of a tensor split along
//! an axis, as a name map reads a fused `qkv_proj`) read in place, without copying it out.

use crate::values::ValuesRef;

/// One part of a C-order tensor split along an axis, seen as a flat tensor of its own:
/// element `s` of the part is element `(s / take) * stride + offset + s % take` of the whole
/// (`stride`: the elements of one index of the axes before the split one; `offset` and
/// `take`: where the part starts in such a row, and how many it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    pub stride: usize,
    pub offset: usize,
    pub take: usize,
}

impl Gather {
    /// Elements of the part in a whole of `whole` elements (0 when the gather does not fit
    /// a row: `offset + take > stride`).
    pub fn len(&self, whole: usize) -> usize {
        if self.take == 0 || self.offset + self.take > self.stride {
            return 0;
        }
        whole / self.stride * self.take
    }
}

/// Where a piece's elements are in the values it borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Consecutive, from this element on.
    Flat(usize),
    /// Elements `start..` of a [`Gather`].
    Gather { gather: Gather, start: usize },
}

impl At {
    /// The longest consecutive run of stored elements from the piece's element `k` on, at
    /// most `max` long, as a range of the borrowed values (empty when `max` is 0).
    #[inline]
    pub fn run(&self, k: usize, max: usize) -> std::ops::Range<usize> {
        match *self {
            At::Flat(start) => start + k..start + k + max,
            At::Gather { .. } if max == 0 => 0..0,
            At::Gather { gather: g, start } => {
                let s = start + k;
                let (row, within) = (s / g.take, s % g.take);
                let n = (g.take - within).min(max);
                let at = row * g.stride + g.offset + within;
                at..at + n
            }
        }
    }

    /// The same place, `k` elements further on.
    #[inline]
    pub fn skip(&self, k: usize) -> At {
        match *self {
            At::Flat(start) => At::Flat(start + k),
            At::Gather { gather, start } => At::Gather {
                gather,
                start: start + k,
            },
        }
    }
}

/// `len` consecutive elements of a tensor, borrowed from `values` where [`At`] says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piece<'a> {
    values: ValuesRef<'a>,
    at: At,
    len: usize,
}

impl<'a> From<ValuesRef<'a>> for Piece<'a> {
    fn from(values: ValuesRef<'a>) -> Piece<'a> {
        Piece {
            values,
            at: At::Flat(0),
            len: values.len(),
        }
    }
}

impl<'a> Piece<'a> {
    /// Elements `start..start + len` of `gather` over `whole`; `None` when they are not all in
    /// it.
    pub fn gathered(
        whole: ValuesRef<'a>,
        gather: Gather,
        start: usize,
        len: usize,
    ) -> Option<Piece<'a>> {
        let end = start.checked_add(len)?;
        (end <= gather.len(whole.len())).then_some(Piece {
            values: whole,
            at: At::Gather { gather, start },
            len,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values borrowed (all of them, not only the piece's: see [`Piece::at`]).
    pub fn values(&self) -> ValuesRef<'a> {
        self.values
    }

    /// Where the piece's elements are in [`Piece::values`].
    pub fn at(&self) -> At {
        self.at
    }

    /// The elements in `range` of the piece (panics past the end, as slicing does).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Piece<'a> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "piece range {range:?} out of 0..{}",
            self.len
        );
        Piece {
            values: self.values,
            at: self.at.skip(range.start),
            len: range.end - range.start,
        }
    }

    /// The piece as consecutive values: itself when it is one run, else its runs copied in
    /// order into `buf` (widened to f64, exact for every encoding).
    pub fn flat<'b>(&self, buf: &'b mut Vec<f64>) -> ValuesRef<'b>
    where
        'a: 'b,
    {
        let first = self.at.run(0, self.len);
        if first.len() == self.len {
            return self.values.slice(first);
        }
        buf.clear();
        buf.reserve(self.len);
        let mut k = 0;
        while k < self.len {
            let r = self.at.run(k, self.len - k);
            k += r.len();
            buf.extend(self.values.slice(r).to_f64_vec());
        }
        ValuesRef::F64(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A [3, 2, 5] tensor split along axis 1 into parts of 1: part 1 is `[3, 1, 5]`.
    #[test]
    fn a_gather_reads_the_part_in_order() {
        let whole: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let g = Gather {
            stride: 10,
            offset: 5,
            take: 5,
        };
        assert_eq!(g.len(whole.len()), 15);
        let part = Piece::gathered(ValuesRef::F32(&whole), g, 0, 15).unwrap();
        let mut buf = Vec::new();
        let want: Vec<f64> = [5, 6, 7, 8, 9, 15, 16, 17, 18, 19, 25, 26, 27, 28, 29]
            .iter()
            .map(|&i| i as f64)
            .collect();
        assert_eq!(part.flat(&mut buf).to_f64_vec(), want);
        // Any sub-range, including ones that start inside a run.
        for a in 0..=15 {
            for b in a..=15 {
                let mut buf = Vec::new();
                assert_eq!(part.slice(a..b).flat(&mut buf).to_f64_vec(), want[a..b]);
            }
        }
        // One run needs no copy.
        let mut buf = Vec::new();
        assert!(matches!(part.slice(6..9).flat(&mut buf), ValuesRef::F32(_)));
        assert!(buf.is_empty());
        assert!(Piece::gathered(ValuesRef::F32(&whole), g, 10, 6).is_none());
        let bad = Gather {
            stride: 10,
            offset: 6,
            take: 5,
        };
        assert_eq!(bad.len(30), 0);
    }
}
