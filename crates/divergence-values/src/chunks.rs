//! [`fold_chunks`]: the deterministic parallel reduction under the streaming kernels.

use std::ops::Range;

use rayon::prelude::*;

/// Reduces the index range `0..len` in chunks of `chunk_len` (at least 1) indices: each chunk
/// by `f`, on rayon when there is more than one, the results folded by `merge` from `init` in
/// chunk order, so the result does not depend on the number of threads. A range of one chunk
/// (or none) is `f(0..len)` itself, on the calling thread; `merge(init, x)` must equal `x`.
pub fn fold_chunks<R, F, M>(len: usize, chunk_len: usize, init: R, f: F, merge: M) -> R
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
    M: FnMut(R, R) -> R,
{
    let chunk = chunk_len.max(1);
    if len <= chunk {
        return f(0..len);
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
}
