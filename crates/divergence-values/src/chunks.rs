//! [`fold_chunks`]: the deterministic parallel reduction under the streaming kernels.

use std::ops::Range;

use rayon::prelude::*;

/// Reduces the index range `0..len` in chunks of `chunk_len` (at least 1) indices: each chunk
/// by `f`, on rayon when there is more than one, the results folded by `merge` into `init` in
/// chunk order, so the result does not depend on the number of threads. A range of one chunk
/// (or none) is `merge(init, f(0..len))`, on the calling thread.
///
/// `init` may be the running result of earlier ranges: folding a long range at once, or its
/// chunk-aligned pieces one after the other (each with the previous result as `init`), gives
/// the same result, bit for bit. That is how a tensor streamed chunk by chunk from a
/// compressed file is reduced exactly as if it were in memory.
pub fn fold_chunks<R, F, M>(len: usize, chunk_len: usize, init: R, f: F, mut merge: M) -> R
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
    M: FnMut(R, R) -> R,
{
    let chunk = chunk_len.max(1);
    if len <= chunk {
        return merge(init, f(0..len));
    }
    let parts: Vec<R> = (0..len.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let start = c * chunk;
            f(start..(start + chunk).min(len))
        })
        .collect();
    parts.into_iter().fold(init, merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range_once_in_order() {
        for (len, chunk) in [(0, 4), (3, 4), (4, 4), (5, 4), (17, 4), (10, 0), (1000, 7)] {
            let got = fold_chunks(
                len,
                chunk,
                Vec::new(),
                |r| vec![r],
                |mut a, mut b| {
                    a.append(&mut b);
                    a
                },
            );
            let flat: Vec<usize> = got.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, (0..len).collect::<Vec<_>>(), "{len} / {chunk}");
            assert!(got.iter().all(|r| r.len() <= chunk.max(1)));
        }
    }

    #[test]
    fn pieces_fold_like_the_whole() {
        // A non-associative merge (floating sums) shows any change of grouping.
        let x: Vec<f64> = (0..1000)
            .map(|i| 1.0 / (1.0 + i as f64).powf(1.7))
            .collect();
        let sum = |r: Range<usize>| x[r].iter().sum::<f64>();
        let whole = fold_chunks(x.len(), 64, 0.0, sum, |a, b| a + b);
        let mut pieces = 0.0;
        for start in (0..x.len()).step_by(64) {
            let end = (start + 64).min(x.len());
            pieces = fold_chunks(
                end - start,
                64,
                pieces,
                |r| sum(start + r.start..start + r.end),
                |a, b| a + b,
            );
        }
        assert_eq!(whole.to_bits(), pieces.to_bits());
    }
}
