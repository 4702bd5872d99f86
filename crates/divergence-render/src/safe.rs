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

/// Every user-provided string of the report but the rows', read or rewritten by `f`.
fn head_strings(r: &mut Report, f: &mut dyn FnMut(&mut String)) {
    f(&mut r.ours);
    f(&mut r.reference);
    r.warnings.iter_mut().for_each(&mut *f);
    if let Some(x) = r.first_divergence.as_mut() {
        f(&mut x.name);
        f(&mut x.reason);
    }
    if let Some(x) = r.origin.as_mut() {
        f(&mut x.name);
        x.chain.iter_mut().for_each(|l| f(&mut l.name));
    }
    for h in &mut r.hints {
        f(&mut h.op);
        f(&mut h.message);
    }
    if let Some(x) = r.positions.as_mut() {
        f(&mut x.op);
    }
    if let Some(x) = r.tokens.as_mut() {
        f(&mut x.op);
    }
    if let Some(x) = r.first_difference.as_mut() {
        f(&mut x.name);
    }
    for s in &mut r.steps {
        s.worst_op.iter_mut().for_each(&mut *f);
        s.first_divergence.iter_mut().for_each(&mut *f);
    }
    r.only_ours.iter_mut().for_each(&mut *f);
    r.only_ref.iter_mut().for_each(&mut *f);
    for a in &mut r.amplification.rows {
        f(&mut a.proj);
        f(&mut a.norm);
    }
}

/// A row's user-provided strings.
fn row_strings(o: &mut divergence_diff::OpResult, f: &mut dyn FnMut(&mut String)) {
    f(&mut o.name);
    o.reason.iter_mut().for_each(&mut *f);
    o.mapped.iter_mut().for_each(&mut *f);
    o.tensor.dtype_ours.iter_mut().for_each(&mut *f);
    o.tensor.dtype_ref.iter_mut().for_each(&mut *f);
    o.truth.truth_problem.iter_mut().for_each(&mut *f);
}

/// Whether any string [`head_strings`] visits needs a change (the same fields, read-only).
fn head_needs(r: &Report, d: Dialect) -> bool {
    let n = |s: &str| needs(s, d);
    let opt = |s: &Option<String>| s.as_deref().is_some_and(n);
    n(&r.ours)
        || n(&r.reference)
        || r.warnings.iter().any(|s| n(s))
        || r.first_divergence
            .as_ref()
            .is_some_and(|x| n(&x.name) || n(&x.reason))
        || r.origin
            .as_ref()
            .is_some_and(|x| n(&x.name) || x.chain.iter().any(|l| n(&l.name)))
        || r.hints.iter().any(|h| n(&h.op) || n(&h.message))
        || r.positions.as_ref().is_some_and(|x| n(&x.op))
        || r.tokens.as_ref().is_some_and(|x| n(&x.op))
        || r.first_difference.as_ref().is_some_and(|x| n(&x.name))
        || r.steps
            .iter()
            .any(|s| opt(&s.worst_op) || opt(&s.first_divergence))
        || r.only_ours.iter().chain(&r.only_ref).any(|s| n(s))
        || r.amplification
            .rows
            .iter()
            .any(|a| n(&a.proj) || n(&a.norm))
}

/// Whether any string [`row_strings`] visits needs a change.
fn row_needs(o: &divergence_diff::OpResult, d: Dialect) -> bool {
    let opt = |s: &Option<String>| s.as_deref().is_some_and(|s| needs(s, d));
    needs(&o.name, d)
        || opt(&o.reason)
        || opt(&o.mapped)
        || opt(&o.tensor.dtype_ours)
        || opt(&o.tensor.dtype_ref)
        || opt(&o.truth.truth_problem)
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
    head_strings(report, &mut |s| fix(s, d));
    report
        .ops
        .par_iter_mut()
        .with_min_len(4096)
        .for_each(|o| row_strings(o, &mut |s| fix(s, d)));
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
}
