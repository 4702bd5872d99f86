//! "Did you mean ...?": the known name closest to one a person typed, by edit distance. The
//! one such helper of the workspace: a map's `to` that names no tensor of the reference
//! (`divergence-map`) and an unknown `--inject` fault (`divergence-qwen3`) both ask it.

/// The candidate closest to `typed` by edit distance (Levenshtein, on characters), when it is
/// close enough to be what was meant: at most a third of `typed`'s length away (at least 1,
/// at most [`MAX_DISTANCE`]). Ties go to the earlier candidate; `typed` itself is never
/// suggested (a name that is there needs no suggestion).
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed: Vec<char> = typed.chars().collect();
    // A name this long is no typo (npz members may be named with 65,535 bytes; a review found
    // a 60,000-character name against 100 others would take minutes).
    if typed.len() > MAX_TYPED {
        return None;
    }
    let bound = (typed.len() / 3).clamp(1, MAX_DISTANCE);
    let mut best: Option<(usize, &str)> = None;
    let (mut row, mut chars) = (Vec::new(), Vec::new());
    for c in candidates {
        // The best distance so far bounds the next: only a strictly closer one replaces it.
        let within = best.map_or(bound, |(d, _)| d.saturating_sub(1));
        // (counted without collecting a name far longer than `typed`)
        if c.chars()
            .take(typed.len() + within + 1)
            .count()
            .abs_diff(typed.len())
            > within
        {
            continue;
        }
        chars.clear();
        chars.extend(c.chars());
        match distance_within(&typed, &chars, within, &mut row) {
            Some(0) | None => {}
            Some(d) => best = Some((d, c)),
        }
    }
    best.map(|(_, c)| c)
}

/// Longest name, in characters, [`closest`] finds a suggestion for.
pub const MAX_TYPED: usize = 256;

/// The farthest a suggestion may be from what was typed: past a few edits it is another name,
/// not a typo of it.
pub const MAX_DISTANCE: usize = 8;

/// Levenshtein distance between `a` and `b` when it is at most `k` (`None` past it): the
/// cells within `k` of the diagonal only, one row of the table (`row`, reused), stopping at the
/// first row whose every cell is past `k`. O(k) a character of `b`, not O(a.len()).
fn distance_within(a: &[char], b: &[char], k: usize, row: &mut Vec<usize>) -> Option<usize> {
    // Outside the band: never the minimum of a cell inside it, and no overflow when 1 is added.
    const FAR: usize = usize::MAX / 2;
    let (m, n) = (a.len(), b.len());
    if m.abs_diff(n) > k {
        return None;
    }
    row.clear();
    row.extend((0..=m).map(|i| if i <= k { i } else { FAR }));
    for j in 1..=n {
        let lo = j.saturating_sub(k).max(1);
        let hi = (j + k).min(m);
        // Row j - 1's cell at lo - 1, then row j's (the first column, or outside the band).
        let mut diagonal = row[lo - 1];
        row[lo - 1] = if lo == 1 { j } else { FAR };
        let mut least = row[lo - 1];
        for i in lo..=hi {
            let above = row[i];
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let v = (diagonal + cost).min(above + 1).min(row[i - 1] + 1);
            row[i] = v;
            diagonal = above;
            least = least.min(v);
        }
        // The next row reads this row's cell past the band as its `above`: outside it.
        if hi < m {
            row[hi + 1] = FAR;
        }
        if least > k {
            return None;
        }
    }
    (row[m] <= k).then_some(row[m])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let d = |a: &str, b: &str| {
            let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            distance_within(&a, &b, 100, &mut Vec::new()).unwrap()
        };
        assert_eq!(d("", ""), 0);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("q_prj", "q_proj"), 1);
        assert_eq!(d("skip-v-norm", "skip-k-norm"), 1);
        assert_eq!(d("ü", "u"), 1);
    }

    #[test]
    fn suggests_the_closest_close_name() {
        let known = ["embed-scale", "skip-k-norm", "skip-q-norm", "rope-theta"];
        assert_eq!(closest("rope_theta", known), Some("rope-theta"));
        // A tie: the earlier candidate.
        assert_eq!(closest("skip-v-norm", known), Some("skip-k-norm"));
        assert_eq!(closest("skip-q-nrm", known), Some("skip-q-norm"));
        // Too far from everything: no suggestion, and never the name itself.
        assert_eq!(closest("bogus", known), None);
        assert_eq!(closest("rope-theta", known), None);
        assert_eq!(closest("", known), None);
        assert_eq!(closest("x", ["y"]), Some("y"));
        assert_eq!(closest("x", ["yz"]), None);
        let long = "model.layers.0.self_attn.q_prj";
        assert_eq!(
            closest(
                long,
                [
                    "model.layers.0.self_attn.k_proj",
                    "model.layers.0.self_attn.q_proj"
                ]
            ),
            Some("model.layers.0.self_attn.q_proj")
        );
    }

    /// The whole table, for the banded one to be checked against.
    fn full(a: &[char], b: &[char]) -> usize {
        let mut row: Vec<usize> = (0..=a.len()).collect();
        for (j, cb) in b.iter().enumerate() {
            let mut diagonal = row[0];
            row[0] = j + 1;
            for (i, ca) in a.iter().enumerate() {
                let above = row[i + 1];
                row[i + 1] = (diagonal + usize::from(ca != cb))
                    .min(above + 1)
                    .min(row[i] + 1);
                diagonal = above;
            }
        }
        row[a.len()]
    }

    #[test]
    fn the_band_gives_the_whole_tables_distance_within_it() {
        // Every pair of strings over a 3-letter alphabet up to length 6 in a fixed pseudo-random
        // walk, at every band 0..=8: the distance where it is within the band, else None.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let word = |next: &mut dyn FnMut() -> u64| -> Vec<char> {
            let n = (next() % 7) as usize;
            (0..n)
                .map(|_| ['a', 'b', 'c'][(next() % 3) as usize])
                .collect()
        };
        let mut row = Vec::new();
        for _ in 0..3000 {
            let (a, b) = (word(&mut next), word(&mut next));
            let d = full(&a, &b);
            for k in 0..=8 {
                let want = (d <= k).then_some(d);
                assert_eq!(
                    distance_within(&a, &b, k, &mut row),
                    want,
                    "{a:?} {b:?} k={k}"
                );
            }
        }
    }

    #[test]
    fn a_name_too_long_to_be_a_typo_gets_no_suggestion() {
        let long = "x".repeat(60_000);
        let near = format!("{long}y");
        assert_eq!(closest(&long, [near.as_str()]), None);
        let at = "x".repeat(MAX_TYPED);
        let near = format!("{at}y");
        assert_eq!(closest(&at, [near.as_str()]), Some(near.as_str()));
    }
}
