//! The strings of a report made safe for the text renderers: names, file names, metadata
//! dtypes and map notes are user data, and a dump may name a tensor `a\n## heading` or put a
//! terminal escape (`\x1b]0;...\x07`, `\x1b[2J`) in it (found by a bad-input hunt: they reached
//! the terminal and broke out of the Markdown table unchanged).
//!
//! [`text_safe`] gives the report itself when no string needs a change (the usual case: one
//! scan, in parallel over the rows, nothing copied), else a copy with every control character
//! escaped as `divergence_names::one_line` does; for Markdown also `<` as `&lt;` (GitHub
//! renders raw HTML in step summaries; with line breaks escaped, a `>` cannot start a quote). JSON needs none of this (it escapes itself)
//! and the HTML page escapes every string where it writes it.

use std::borrow::Cow;

use divergence_diff::Report;
use rayon::prelude::*;

/// Where the text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Terminal,
    Markdown,
}

fn bad(c: char, d: Dialect) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || (d == Dialect::Markdown && c == '<')
}

fn needs(s: &str, d: Dialect) -> bool {
    // Printable ASCII first, byte by byte; characters only past it. The scan of every row
    // costs 2-3 ms on the 64-step pair on 2 cores (38,489 rows, one string each to reach: the
    // output phase 2.4-2.9 ms without it, 4.4-6.5 ms with it), ~1% of the run.
    let plain = |b: &u8| (0x20..0x7f).contains(b) && !(d == Dialect::Markdown && *b == b'<');
    !s.as_bytes().iter().all(plain) && s.chars().any(|c| bad(c, d))
}

fn fix(s: &mut String, d: Dialect) {
    if !needs(s, d) {
        return;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' if d == Dialect::Markdown => out.push_str("&lt;"),
            c if bad(c, d) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    *s = out;
}

/// Visits every user-provided string of a report's head (all but the rows), as `&String` or,
/// given `mut`, as `&mut String`: one list of fields for the check ([`head_needs`], which must
/// not copy the report) and the fix ([`fix_all`]), so that the two cannot drift apart.
macro_rules! head_strings {
    ($r:expr, $f:expr $(, $m:tt)?) => {{
        let r = $r;
        let f = $f;
        f(&$($m)? r.ours);
        f(&$($m)? r.reference);
        for s in &$($m)? r.warnings {
            f(s);
        }
        if let Some(x) = &$($m)? r.first_divergence {
            f(&$($m)? x.name);
            f(&$($m)? x.reason);
        }
        if let Some(x) = &$($m)? r.origin {
            f(&$($m)? x.name);
            for l in &$($m)? x.chain {
                f(&$($m)? l.name);
            }
        }
        for h in &$($m)? r.hints {
            f(&$($m)? h.op);
            f(&$($m)? h.message);
        }
        if let Some(x) = &$($m)? r.positions {
            f(&$($m)? x.op);
        }
        if let Some(x) = &$($m)? r.tokens {
            f(&$($m)? x.op);
        }
        if let Some(x) = &$($m)? r.first_difference {
            f(&$($m)? x.name);
        }
        for st in &$($m)? r.steps {
            if let Some(s) = &$($m)? st.worst_op {
                f(s);
            }
            if let Some(s) = &$($m)? st.first_divergence {
                f(s);
            }
        }
        for s in &$($m)? r.only_ours {
            f(s);
        }
        for s in &$($m)? r.only_ref {
            f(s);
        }
        for a in &$($m)? r.amplification.rows {
            f(&$($m)? a.proj);
            f(&$($m)? a.norm);
        }
    }};
}

/// A row's user-provided strings, as [`head_strings`] visits the head's.
macro_rules! row_strings {
    ($o:expr, $f:expr $(, $m:tt)?) => {{
        let o = $o;
        let f = $f;
        f(&$($m)? o.name);
        for s in [
            &$($m)? o.reason,
            &$($m)? o.mapped,
            &$($m)? o.tensor.dtype_ours,
            &$($m)? o.tensor.dtype_ref,
            &$($m)? o.truth.truth_problem,
        ] {
            if let Some(s) = s {
                f(s);
            }
        }
    }};
}

/// Whether any string of the head needs a change.
fn head_needs(r: &Report, d: Dialect) -> bool {
    let mut any = false;
    head_strings!(r, &mut |s: &String| any |= needs(s, d));
    any
}

/// Whether any string of a row needs a change.
fn row_needs(o: &divergence_diff::OpResult, d: Dialect) -> bool {
    let mut any = false;
    row_strings!(o, &mut |s: &String| any |= needs(s, d));
    any
}

fn dirty(report: &Report, d: Dialect) -> bool {
    head_needs(report, d)
        || report
            .ops
            .par_iter()
            .with_min_len(4096)
            .any(|o| row_needs(o, d))
}

fn fix_all(report: &mut Report, d: Dialect) {
    head_strings!(&mut *report, &mut |s: &mut String| fix(s, d), mut);
    report
        .ops
        .par_iter_mut()
        .with_min_len(4096)
        .for_each(|o| row_strings!(o, &mut |s: &mut String| fix(s, d), mut));
}

/// `report`, or a copy whose strings are safe for `d` when one is not.
pub(crate) fn text_safe(report: &Report, d: Dialect) -> Cow<'_, Report> {
    if !dirty(report, d) {
        return Cow::Borrowed(report);
    }
    let mut safe = report.clone();
    fix_all(&mut safe, d);
    Cow::Owned(safe)
}

/// [`text_safe`] in place, for a report the caller owns (the terminal view).
pub(crate) fn make_text_safe(report: &mut Report, d: Dialect) {
    if dirty(report, d) {
        fix_all(report, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_markdown_html_are_escaped_where_needed() {
        let hostile = "a\n## h\u{1b}[2J<img src=x>";
        let mut t = hostile.to_string();
        fix(&mut t, Dialect::Terminal);
        assert_eq!(t, "a\\n## h\\u{1b}[2J<img src=x>");
        let mut m = hostile.to_string();
        fix(&mut m, Dialect::Markdown);
        assert_eq!(m, "a\\n## h\\u{1b}[2J&lt;img src=x>");
        let mut clean = "model.layers.0.mlp".to_string();
        fix(&mut clean, Dialect::Markdown);
        assert_eq!(clean, "model.layers.0.mlp");
    }

    /// The check and the fix visit the same strings (one macro each for the head and the
    /// rows): a report with hostile names in its rows, its first divergence, its warnings and
    /// its one-sided lists is dirty, and its fixed copy is clean, with no control character
    /// left in any of them.
    #[test]
    fn the_fixed_copy_is_clean_and_the_clean_report_is_not_copied() {
        use divergence_diff::{assemble, compare, DiffConfig, OrderSource, ReportContext, Side};
        let cfg = DiffConfig::default();
        let (a, b): (&[f32], &[f32]) = (&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 9.0]);
        let side = |v: &'static [f32]| Side {
            shape: &[4],
            values: divergence_diff::ValuesRef::F32(v),
            dtype: "float32",
        };
        let report = |name: &str, reference: &str| {
            let rows = vec![
                compare(name, Some(side(a)), Some(side(b)), &cfg),
                compare(&format!("{name}.only"), Some(side(a)), None, &cfg),
            ];
            let mut ctx = ReportContext::new(name, reference, OrderSource::RefFile);
            ctx.warnings.push(format!("about {name}"));
            assemble(rows, ctx, &cfg)
        };
        let hostile = report("x\n## h\u{1b}[2J", "ref\u{1b}]0;t\u{7}");
        assert!(hostile.first_divergence.is_some());
        for d in [Dialect::Terminal, Dialect::Markdown] {
            let fixed = text_safe(&hostile, d);
            assert!(matches!(fixed, Cow::Owned(_)));
            let mut left = 0;
            let mut count = |s: &String| left += usize::from(s.chars().any(|c| bad(c, d)));
            head_strings!(&*fixed, &mut count);
            for o in &fixed.ops {
                row_strings!(o, &mut count);
            }
            assert_eq!(left, 0);
            assert_eq!(fixed.ops[1].name, r"x\n## h\u{1b}[2J.only");
            assert!(matches!(text_safe(&fixed, d), Cow::Borrowed(_)));
            let mut again = hostile.clone();
            make_text_safe(&mut again, d);
            assert_eq!(&again, &*fixed);
        }
        let plain = report("model.layers.0.mlp", "ref.npz");
        assert!(matches!(
            text_safe(&plain, Dialect::Markdown),
            Cow::Borrowed(_)
        ));
    }
}
