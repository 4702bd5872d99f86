//! The strings of a report made safe for the text renderers: names, file names, metadata
//! dtypes and map notes are user data, and a dump may name a tensor `a\n## heading` or put a
//! terminal escape (`\x1b]0;...\x07`, `\x1b[2J`) in it (found by a bad-input hunt: they reached
//! the terminal and broke out of the Markdown table unchanged).
//!
//! [`text_safe`] gives the report itself when no string needs a change (the usual case: one
//! scan, in parallel over the rows' views, nothing copied, no compact decode step built), else
//! a copy with every control character escaped as `divergence_names::one_line` does (a compact
//! copy stays compact: its runs' probe names are escaped, no step is built). The
//! Markdown renderer escapes Markdown's own markup where it writes free text (`markdown::text`:
//! a name cannot become a link, an image or HTML) and writes names as code spans, where `<` is
//! inert. JSON needs none of this (it escapes itself) and the HTML page escapes every string
//! where it writes it.

use std::borrow::Cow;

use divergence_diff::{Report, Row};

fn needs(s: &str) -> bool {
    // Printable ASCII first, byte by byte; characters only past it. The scan of every row
    // costs 2-3 ms on the 64-step pair on 2 cores (38,489 rows, one string each to reach: the
    // output phase 2.4-2.9 ms without it, 4.4-6.5 ms with it), ~1% of the run.
    divergence_names::needs_one_line(s)
}

fn fix(s: &mut String) {
    if let std::borrow::Cow::Owned(fixed) = divergence_names::one_line(s) {
        *s = fixed;
    }
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
        for s in &$($m)? r.notes {
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
            if let Some(e) = &$($m)? x.earlier {
                f(&$($m)? e.name);
            }
            for u in &$($m)? x.unmeasured_inputs {
                f(&$($m)? u.name);
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
    }};
}

/// Visits the names of a report's head held by their parts ([`divergence_diff::StepName`]: the
/// amplification section's, a row per norm and step), as [`head_strings`] visits its strings:
/// one list for the check and the fix. A step name's step is ASCII digits: its base is what
/// may need a change.
macro_rules! head_step_names {
    ($r:expr, $f:expr $(, $m:tt)?) => {{
        let r = $r;
        let f = $f;
        for a in &$($m)? r.amplification.rows {
            f(&$($m)? a.proj);
            f(&$($m)? a.norm);
        }
    }};
}

/// A row's user-provided strings, as [`head_strings`] visits the head's (its name, dtype
/// names and truth problem aside, which may be shared with other rows: [`row_needs`] and
/// [`fix_all`] visit them).
macro_rules! row_strings {
    ($o:expr, $f:expr $(, $m:tt)?) => {{
        let o = $o;
        let f = $f;
        for s in [
            &$($m)? o.reason,
            &$($m)? o.mapped,
        ] {
            if let Some(s) = s {
                f(s);
            }
        }
    }};
}

/// A row's dtype names (a dump's metadata may give any string), as an array of the two
/// fields of its tensor info: read by [`dtypes`], changed by [`fix_all`], from this one list.
macro_rules! row_dtypes {
    ($t:expr $(, $m:tt)?) => {
        [&$($m)? $t.dtype_ours, &$($m)? $t.dtype_ref]
    };
}

/// Whether any string of the head needs a change.
fn head_needs(r: &Report) -> bool {
    let mut any = false;
    head_strings!(r, &mut |s: &String| any |= needs(s));
    head_step_names!(r, &mut |s: &divergence_diff::StepName| any |=
        needs(s.base()));
    any
}

/// Whether any string of a row needs a change.
fn row_needs(o: &divergence_diff::OpResult) -> bool {
    let mut any = false;
    row_strings!(o, &mut |s: &String| any |= needs(s));
    any || needs(&o.name) || dtypes(&o.tensor).any(needs) || truth_problem_needs(o)
}

/// Whether a row's truth problem (it names a file) needs a change.
fn truth_problem_needs(o: &divergence_diff::OpResult) -> bool {
    o.truth.truth_problem.as_deref().is_some_and(needs)
}

/// A row's dtype names (a dump's metadata may give any string).
fn dtypes(tensor: &divergence_diff::TensorInfo) -> impl Iterator<Item = &str> {
    row_dtypes!(tensor).into_iter().filter_map(|d| d.as_deref())
}

/// Whether any string of a row needs a change, read through its view ([`Row`]), so that a
/// compact decode step is not built: a plain row is [`row_needs`]; a step's name is its
/// probe's name, `@` and its step number, it has no map note, and its reason is written from
/// its numbers alone, so its probe's name, its dtype names and its truth problem are all the
/// user text it holds.
fn view_needs(row: Row<'_>) -> bool {
    match row {
        Row::Plain(o) => row_needs(o),
        Row::Step(..) => {
            needs(row.base())
                || dtypes(row.tensor()).any(needs)
                || row.truth().truth_problem.as_deref().is_some_and(needs)
        }
    }
}

/// Whether any string of the report needs a change: its head, then every row through its
/// view (in parallel; a compact report's rows are not built, and a run of decode steps is
/// asked once: what [`view_needs`] reads of a step its run's steps share).
fn dirty(report: &Report) -> bool {
    head_needs(report) || report.ops.any_shared(view_needs)
}

/// Makes every string of `report` safe, in place. A compact report stays compact: its runs'
/// probe names and the rows their steps are made from are changed, no step is built
/// ([`divergence_diff::Rows::edit_text`]; an escape leaves `@` and digits as they are).
fn fix_all(report: &mut Report) {
    head_strings!(&mut *report, &mut |s: &mut String| fix(s), mut);
    head_step_names!(
        &mut *report,
        &mut |s: &mut divergence_diff::StepName| if needs(s.base()) {
            s.edit_base(fix)
        },
        mut
    );
    report.ops.edit_text(&fix_row, &fix_name);
}

/// A name made safe (a new allocation only when it changes).
fn fix_name(name: &mut divergence_diff::Name) {
    if needs(name) {
        let mut s = name.to_string();
        fix(&mut s);
        *name = divergence_diff::Name::from(s);
    }
}

/// Every string of a row made safe.
fn fix_row(o: &mut divergence_diff::OpResult) {
    row_strings!(&mut *o, &mut |s: &mut String| fix(s), mut);
    fix_name(&mut o.name);
    if truth_problem_needs(o) {
        if let Some(p) = o.truth_mut().truth_problem.as_mut() {
            fix(p);
        }
    }
    // The tensor info may be shared with other rows: copied only when it changes.
    if dtypes(&o.tensor).any(needs) {
        let t = o.tensor_mut();
        for d in row_dtypes!(t, mut).into_iter().flatten() {
            if needs(d) {
                let mut s = d.to_string();
                fix(&mut s);
                *d = Cow::Owned(s);
            }
        }
    }
}

/// `report`, or a copy whose strings are safe for text when one is not. A clean report is
/// neither copied nor built (its rows are read through [`Row`]); a dirty one is copied, and
/// its copy changed in place ([`fix_all`]: a compact report's steps are not built).
pub(crate) fn text_safe(report: &Report) -> Cow<'_, Report> {
    if !dirty(report) {
        return Cow::Borrowed(report);
    }
    let mut safe = report.clone();
    fix_all(&mut safe);
    Cow::Owned(safe)
}

/// [`text_safe`] in place, for a report the caller owns (the terminal view).
pub(crate) fn make_text_safe(report: &mut Report) {
    if dirty(report) {
        fix_all(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        let mut t = "a\n## h\u{1b}[2J<img src=x>".to_string();
        fix(&mut t);
        // Markdown markup is the Markdown renderer's to escape (`markdown::text`).
        assert_eq!(t, "a\\n## h\\u{1b}[2J<img src=x>");
        let mut clean = "model.layers.0.mlp".to_string();
        fix(&mut clean);
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
        let mut hostile = report("x\n## h\u{1b}[2J", "ref\u{1b}]0;t\u{7}");
        hostile.ops[0].tensor_mut().dtype_ours = Some(divergence_diff::dtype_name("f\u{1b}[2J32"));
        // A truth problem names a file: user text, held apart (it may be shared by rows).
        hostile.ops[1].truth_mut().truth_problem = Some("t\u{1b}[2J.npz lacks it".to_string());
        assert!(hostile.first_divergence.is_some());
        {
            let fixed = text_safe(&hostile);
            assert!(matches!(fixed, Cow::Owned(_)));
            let mut left = 0;
            let mut count = |s: &String| left += usize::from(needs(s));
            head_strings!(&*fixed, &mut count);
            head_step_names!(&*fixed, &mut |s: &divergence_diff::StepName| count(
                &s.whole()
            ));
            for o in &fixed.ops {
                row_strings!(o, &mut count);
                count(&o.name.to_string());
                dtypes(&o.tensor).for_each(|d| count(&d.to_string()));
                if let Some(p) = &o.truth.truth_problem {
                    count(p);
                }
            }
            assert_eq!(left, 0);
            assert_eq!(
                fixed.ops[1].truth.truth_problem.as_deref(),
                Some(r"t\u{1b}[2J.npz lacks it")
            );
            assert_eq!(&*fixed.ops[1].name, r"x\n## h\u{1b}[2J.only");
            assert!(matches!(text_safe(&fixed), Cow::Borrowed(_)));
            let mut again = hostile.clone();
            make_text_safe(&mut again);
            assert_eq!(&again, &*fixed);
        }
        let plain = report("model.layers.0.mlp", "ref.npz");
        assert!(matches!(text_safe(&plain), Cow::Borrowed(_)));
        // A dtype from a dump's metadata is user text too (held apart from the other strings:
        // the usual ones are static).
        let mut odd = plain.clone();
        odd.ops[0].tensor_mut().dtype_ref = Some(divergence_diff::dtype_name("bf\u{1b}[2J16"));
        let fixed = text_safe(&odd);
        assert!(matches!(fixed, Cow::Owned(_)));
        assert_eq!(
            fixed.ops[0].tensor.dtype_ref.as_deref(),
            Some(r"bf\u{1b}[2J16")
        );
        // An amplification row's names, held by their base and step: the base is made safe,
        // the step kept (a decode step's pair is listed by its step).
        let mut amp = plain.clone();
        amp.amplification
            .rows
            .push(divergence_diff::AmplificationRow {
                layer: 0,
                kind: divergence_diff::QkKind::K,
                proj: divergence_diff::StepName::new("m.k\u{1b}[2J_proj".into(), 3),
                norm: divergence_diff::StepName::new("m.k\u{1b}[2J_norm".into(), 3),
                proj_rel_err: None,
                norm_rel_err: None,
                ratio: None,
                proj_abs_err: None,
                norm_abs_err: None,
                abs_err_gain: None,
                weight_gain: None,
                verdict: None,
                marked: false,
            });
        let fixed = text_safe(&amp);
        assert!(matches!(fixed, Cow::Owned(_)));
        let row = &fixed.amplification.rows[0];
        assert_eq!(row.norm.to_string(), r"m.k\u{1b}[2J_norm@3");
        assert_eq!(
            (row.proj.base(), row.proj.step()),
            (r"m.k\u{1b}[2J_proj", 3)
        );
        // A name that is no step name stays one once escaped (an escape ends in no digit).
        let mut odd = amp.clone();
        odd.amplification.rows[0].norm = divergence_diff::StepName::parse("m@\u{1b}5");
        let fixed = text_safe(&odd);
        let norm = &fixed.amplification.rows[0].norm;
        assert_eq!((norm.base(), norm.step()), (r"m@\u{1b}5", 0));
        assert_eq!(fixed.ops[0].tensor.dtype_ours.as_deref(), Some("float32"));
        // So is a truth problem alone.
        let mut problem = plain.clone();
        problem.ops[0].truth_mut().truth_problem = Some("t\u{1b}[2J".to_string());
        let fixed = text_safe(&problem);
        assert!(matches!(fixed, Cow::Owned(_)));
        assert_eq!(
            fixed.ops[0].truth.truth_problem.as_deref(),
            Some(r"t\u{1b}[2J")
        );
    }
}
