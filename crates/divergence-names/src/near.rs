//! "Did you mean ...?": the known name closest to one a person typed, by edit distance. The
//! one such helper of the workspace: a map's `to` that names no tensor of the reference
//! (`divergence-map`) and an unknown `--inject` fault (`divergence-qwen3`) both ask it.

/// The candidate closest to `typed` by edit distance (Levenshtein, on characters), when it is
/// close enough to be what was meant: at most a third of `typed`'s length away (at least 1,
/// at most [`MAX_DISTANCE`]). Ties go to the earlier candidate; `typed` itself is never
/// suggested (a name that is there needs no suggestion).
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed: Vec<char> = typed.chars().collect();
    let bound = (typed.len() / 3).clamp(1, MAX_DISTANCE);
    let mut best: Option<(usize, &str)> = None;
    let mut row = Vec::new();
    for c in candidates {
        // The best distance so far bounds the next: only a strictly closer one replaces it.
        let within = best.map_or(bound, |(d, _)| d.saturating_sub(1));
        let n = c.chars().count();
        if n.abs_diff(typed.len()) > within {
            continue;
        }
        match distance(&typed, c, &mut row) {
            0 => {}
            d if d <= within => best = Some((d, c)),
            _ => {}
        }
    }
    best.map(|(_, c)| c)
}

/// The farthest a suggestion may be from what was typed: past a few edits it is another name,
/// not a typo of it.
pub const MAX_DISTANCE: usize = 8;

/// Levenshtein distance between `a` and `b` (one row of the table, `row`, reused).
fn distance(a: &[char], b: &str, row: &mut Vec<usize>) -> usize {
    row.clear();
    row.extend(0..=a.len());
    for (j, cb) in b.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = j + 1;
        for (i, &ca) in a.iter().enumerate() {
            let above = row[i + 1];
            let cost = usize::from(ca != cb);
            row[i + 1] = (diagonal + cost).min(above + 1).min(row[i] + 1);
            diagonal = above;
        }
    }
    row[a.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let d = |a: &str, b: &str| distance(&a.chars().collect::<Vec<_>>(), b, &mut Vec::new());
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
}
