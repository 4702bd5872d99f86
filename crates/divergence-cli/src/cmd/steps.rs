//! Decode steps in `divergence diff`: the checks that keep a decode comparison from passing
//! silently (docs/dump-format.md, "Decode steps").
//!
//! A dump with decode steps names the probes of step `s` `name@s` and records `decode_steps`
//! and `decode_ids` in its metadata. Before anything is compared, [`check`] refuses (exit 2,
//! one line naming the file) a pair whose sides were fed other decode tokens, whose step counts
//! differ, or where a step the metadata promises has no probe; a step present on one side
//! only is an error too (its rows would all be `only_ours` / `only_ref`, which alone do not
//! fail a diff).
//!
//! `--steps` ([`Selection`]) compares some steps only: the plan keeps their rows, and the checks
//! ask of the selected steps what they ask of all (both sides hold them, fed the same tokens up
//! to the last of them), so that a port that decoded its own tokens can be compared up to the
//! step where its tokens part from the reference's.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};
use divergence_dump::Dump;
use divergence_map::MappedDump;
use divergence_names::split_step;
use rayon::prelude::*;

/// Which two dumps [`check`] is given: the pair `diff` compares, or the truth run and the
/// reference (`--truth`); only the pair's error may point to `--prefill-vs-decode`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    Compared,
    Truth,
}

/// `--steps`: the decode steps a diff compares (0 = the prefill), as ascending runs, the last
/// of which may have no end (`5-`). Parsed by [`crate::cmd::parse::steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `(first, last)`, inclusive, ascending and apart; `None`: no end.
    runs: Vec<(usize, Option<usize>)>,
}

impl Selection {
    /// Most runs one selection may list.
    pub const MAX_RUNS: usize = 64;

    /// The selection of these runs: ascending, apart (checked by the parser).
    pub(crate) fn new(runs: Vec<(usize, Option<usize>)>) -> Selection {
        Selection { runs }
    }

    /// Whether a decode step (>= 1) is selected, not the prefill alone.
    pub fn any_decode_step(&self) -> bool {
        self.runs.iter().any(|&(lo, hi)| lo >= 1 || hi != Some(0))
    }

    /// Whether step `s` is selected.
    pub fn contains(&self, s: usize) -> bool {
        self.runs
            .iter()
            .any(|&(lo, hi)| s >= lo && hi.is_none_or(|hi| s <= hi))
    }

    /// Whether step `s` is within `w` steps of a selected one (or selected).
    pub fn near(&self, s: usize, w: usize) -> bool {
        self.runs.iter().any(|&(lo, hi)| {
            lo <= s.saturating_add(w) && hi.is_none_or(|hi| s <= hi.saturating_add(w))
        })
    }

    /// The selection as the flag takes it: `0-22`, `0,4-8`, `5-`.
    pub fn text(&self) -> String {
        let run = |&(lo, hi): &(usize, Option<usize>)| match hi {
            None => format!("{lo}-"),
            Some(hi) => crate::cmd::diff::run_text(&(lo, hi)),
        };
        self.runs.iter().map(run).collect::<Vec<_>>().join(",")
    }

    /// The selection names steps of `held` (what `files`, named in the error, hold): every
    /// step of its bounded runs, and one step at least.
    pub fn check(&self, held: &BTreeSet<usize>, files: &str) -> Result<()> {
        let absent = self.absent_from(held);
        // (Dumps of no tensor hold no step: "the steps held are )" said nothing; a bad-input
        // hunt.)
        let hold = match held.is_empty() {
            true => "none: the files hold no tensor".to_string(),
            false => crate::cmd::diff::ranges_at_most(held, 8),
        };
        if !absent.is_empty() {
            let (steps, _) = steps_word(&absent);
            bail!(
                "--steps {}: no decode {steps} {} in {files} (0 = the prefill; the steps held are {hold})",
                self.text(),
                crate::cmd::diff::runs_at_most(&absent, 8)
            );
        }
        if !held.iter().any(|&s| self.contains(s)) {
            bail!(
                "--steps {}: none of the steps held in {files} is selected (0 = the prefill; the steps held are {hold})",
                self.text()
            );
        }
        Ok(())
    }

    /// The selection's steps up to `last`, if any.
    fn up_to(&self, last: usize) -> Option<Selection> {
        let runs: Vec<(usize, Option<usize>)> = self
            .runs
            .iter()
            .filter(|&&(lo, _)| lo <= last)
            .map(|&(lo, hi)| (lo, Some(hi.map_or(last, |hi| hi.min(last)))))
            .collect();
        (!runs.is_empty()).then_some(Selection { runs })
    }

    /// The parts of the run `(lo, hi)` that the selection selects.
    fn clip(&self, (lo, hi): (usize, usize)) -> Vec<(usize, usize)> {
        self.runs
            .iter()
            .map(|&(a, b)| (lo.max(a), b.map_or(hi, |b| hi.min(b))))
            .filter(|&(a, b)| a <= b)
            .collect()
    }

    /// The steps of its bounded runs that are not in `held`, as runs (walked over `held`, not
    /// over every number of a run: `--steps 0-4000000000` is one run).
    fn absent_from(&self, held: &BTreeSet<usize>) -> Vec<(usize, usize)> {
        let mut absent = Vec::new();
        for &(lo, hi) in &self.runs {
            let Some(hi) = hi else { continue };
            let mut next = lo;
            for &s in held.range(lo..=hi) {
                if s > next {
                    absent.push((next, s - 1));
                }
                next = s + 1;
            }
            if next <= hi {
                absent.push((next, hi));
            }
        }
        absent
    }
}

/// What one side says about its steps.
struct Steps {
    /// Steps that have at least one probe (0 = the prefill).
    present: BTreeSet<usize>,
    /// Metadata `decode_steps`, when recorded.
    declared: Option<u64>,
    /// Metadata `decode_ids`, when recorded.
    ids: Option<Vec<i64>>,
    /// The metadata's `input_ids` (the prompt), when recorded.
    prompt: Option<Vec<i64>>,
    /// A stacked member (`x@steps`) stayed one entry, not read as steps
    /// ([`unfolding_problem`] says why).
    stacked_left: bool,
}

fn steps_of(dump: &MappedDump<'_>, path: &Path) -> Result<Steps> {
    // In parallel, then sorted: a decode dump has ~150,000 names (most steps repeat). The same
    // pass sees a stacked member left whole, so that its reason is looked for only then. A
    // step kept in a stacked member is known without its name: its name is `base@step`
    // ([`Dump::step_slot_at`]; a dump under no map has the dump's names).
    let of_name = |n: &str| match divergence_names::stacked_base(n) {
        Some(_) => usize::MAX,
        None => split_step(n).1,
    };
    let names = dump.names();
    let plain = dump.resolved().is_none().then(|| dump.dump());
    // Step-major names repeat each step in a row: each chunk keeps a step once per run of it,
    // so that what is sorted is small (no vector of ~150,000 steps). Names held by their parts
    // (a dump's own, unfolded by rule) are the prefill's, then steps 1 to n of every base.
    const CHUNK: usize = 4096;
    let mut steps: Vec<usize> = match names.parts() {
        Some(parts) => {
            let decoded = if parts.bases.is_empty() {
                0
            } else {
                parts.steps
            };
            parts
                .prefill
                .iter()
                .map(|n| of_name(n))
                .chain(1..=decoded)
                .collect()
        }
        None => names
            .par_chunks(CHUNK)
            .enumerate()
            .flat_map_iter(|(c, chunk)| {
                let mut kept: Vec<usize> = Vec::new();
                for (k, name) in chunk.iter().enumerate() {
                    let s = match plain.and_then(|d| d.step_slot_at(c * CHUNK + k)) {
                        Some((_, step)) => step,
                        None => of_name(name),
                    };
                    if kept.last() != Some(&s) {
                        kept.push(s);
                    }
                }
                kept
            })
            .collect(),
    };
    steps.par_sort_unstable();
    steps.dedup();
    let stacked_left = steps.last() == Some(&usize::MAX);
    if stacked_left {
        // Such a member's own name is a step-0 name, as it was counted before.
        steps.pop();
    }
    let mut present: BTreeSet<usize> = steps.into_iter().collect();
    if stacked_left {
        present.insert(0);
    }
    let at = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    let (declared, ids) = match dump.meta() {
        Some(m) => (m.decode_steps().map_err(at)?, m.decode_ids().map_err(at)?),
        None => (None, None),
    };
    let prompt = dump.meta().and_then(|m| m.input_ids.clone());
    Ok(Steps {
        present,
        declared,
        ids,
        prompt,
        stacked_left,
    })
}

/// Why a stacked member (`x@steps`) of `dump` was not unfolded into its steps, when one was
/// not: the reason steps are missing is then that, not a truncated file. (A scan of every
/// name: asked where one is known to be left whole, or on the way to an error.)
pub(crate) fn unfolding_problem(dump: &Dump) -> Option<String> {
    let name = dump
        .names()
        .iter()
        .find(|n| divergence_names::stacked_base(n).is_some())?;
    let e = dump.view(name).err()?;
    // The error starts with the file and the member, which the message names already.
    let text = e.to_string();
    let detail = text.rsplit_once("': ").map_or(text.as_str(), |(_, d)| d);
    let line = format!("{name} was not read as steps: {detail}");
    Some(divergence_names::one_line(&line).into_owned())
}

/// `1-3, 5`.
fn ranges(steps: impl IntoIterator<Item = usize>) -> String {
    let set: BTreeSet<usize> = steps.into_iter().collect();
    crate::cmd::diff::ranges(&set)
}

/// `step` / `steps` and `has` / `have` for these runs of steps.
fn steps_word(runs: &[(usize, usize)]) -> (&'static str, &'static str) {
    match runs {
        [(lo, hi)] if lo == hi => ("step", "has"),
        _ => ("steps", "have"),
    }
}

/// A selection an error advises ([`comparable`]): `--steps X`, or `e.g. --steps X`.
struct Advice {
    steps: String,
    how: AdviceHow,
}

/// What an [`Advice`] covers.
#[derive(Clone, Copy)]
enum AdviceHow {
    /// The steps both dumps of the pair hold with the same tokens.
    Pair,
    /// Narrowed by the third dump of the comparison (`--truth`): the steps all three hold
    /// with the same tokens.
    AllThree,
    /// The pair's, where the third dump passes no selection (its own check says why): to be
    /// compared without it.
    WithoutThird,
}

impl Advice {
    /// "compare the steps both hold with the same tokens: --steps X", or what the advice
    /// covers instead; said without the third dump where it passes no selection.
    fn text(&self) -> String {
        let steps = &self.steps;
        match self.how {
            AdviceHow::Pair => format!("compare the steps both hold with the same tokens: {steps}"),
            AdviceHow::AllThree => format!(
                "compare the steps all three dumps hold with the same tokens, the truth run included: {steps}"
            ),
            AdviceHow::WithoutThird => format!(
                "without --truth (whose check passes no selection here), compare the steps both hold with the same tokens: {steps}"
            ),
        }
    }

    /// The same for the steps before the one where the tokens part: "compare the steps
    /// before it (--steps X)".
    fn before_it(&self) -> String {
        let steps = &self.steps;
        match self.how {
            AdviceHow::Pair => format!("compare the steps before it ({steps})"),
            AdviceHow::AllThree => {
                format!("compare the steps before it that the truth run holds with the same tokens too ({steps})")
            }
            AdviceHow::WithoutThird => format!(
                "without --truth (whose check passes no selection here), compare the steps before it ({steps})"
            ),
        }
    }
}

/// What an error says to compare instead ([`comparable`]'s `advice`), after `lead` (` (or `,
/// `; or `, or nothing); empty where there is no advice.
fn compare_instead(advice: Option<&Advice>, lead: &str) -> String {
    let close = if lead.contains('(') { ")" } else { "" };
    advice
        .map(|a| format!("{lead}{}{close}", a.text()))
        .unwrap_or_default()
}

/// A step past `decode_steps` where `counts` takes it: the metadata contradicts the file (and
/// promises no token for it).
fn check_past_promise(
    side: &Steps,
    path: &Path,
    advice: Option<&Advice>,
    counts: impl Fn(usize) -> bool,
) -> Result<()> {
    let Some(n) = side.declared else {
        return Ok(());
    };
    if let Some(&extra) = side.present.iter().find(|&&s| s as u64 > n && counts(s)) {
        bail!(
            "{}: metadata says {n} decode steps, but it has probes of step {extra}{}",
            path.display(),
            compare_instead(advice, " (or ")
        );
    }
    Ok(())
}

/// Whether the check of `a` against `b` passes some selection: neither's metadata contradicts
/// itself, and no stacked member of either was left whole where either holds a decode step
/// (with the prefill alone on both sides, `--steps 0` passes).
fn some_selection_passes(a: &Steps, b: &Steps) -> bool {
    let contradicts =
        |s: &Steps| matches!((s.declared, &s.ids), (Some(n), Some(ids)) if ids.len() as u64 != n);
    let decodes = |s: &Steps| s.present.range(1..).next().is_some();
    let left = (a.stacked_left || b.stacked_left) && (decodes(a) || decodes(b));
    !contradicts(a) && !contradicts(b) && !left
}

/// Why a side's stacked members were left whole, where they were.
/// Metadata that contradicts itself: `decode_steps` and a count of `decode_ids` that differ
/// (an error naming the file), for a pair's check and `--prefill-vs-decode`'s alike.
pub(crate) fn ids_match_steps(
    declared: Option<u64>,
    ids: Option<&[i64]>,
    path: &Path,
) -> Result<()> {
    if let (Some(n), Some(ids)) = (declared, ids) {
        if ids.len() as u64 != n {
            bail!(
                "{}: metadata says {n} decode steps but holds {} decode_ids",
                path.display(),
                ids.len()
            );
        }
    }
    Ok(())
}

fn left_whole(side: &Steps, dump: &MappedDump<'_>) -> Option<String> {
    side.stacked_left
        .then(|| unfolding_problem(dump.dump()))
        .flatten()
}

/// A dump that names its prefill probes `x@0` where the other dump names them `x`: an error
/// naming the file, how many, the first, and the contract. `x@0` is a plain name in the dump
/// contract (docs/dump-format.md, "Decode steps"), so such a port's prefill rows were all
/// `only_ours` / `only_ref` while its decode steps passed, exit 0 (a newcomer's run of
/// docs/decode.md: the docs call the prefill step 0).
fn prefill_named_step_zero(a: (&MappedDump<'_>, &Path), b: (&MappedDump<'_>, &Path)) -> Result<()> {
    for ((x, x_path), (y, y_path)) in [(a, b), (b, a)] {
        let mut first = None;
        let mut n = 0usize;
        // A stacked member's steps are named `base@s` from step 1: only the names stored as
        // themselves can end in `@0` (a decode dump's few hundred, not its ~150,000).
        let names = x.names();
        let own = x
            .resolved()
            .is_none()
            .then(|| x.dump().own_positions())
            .flatten();
        let listed: Box<dyn Iterator<Item = std::borrow::Cow<'_, str>> + '_> = match &own {
            Some(own) => Box::new(own.iter().filter_map(|&i| names.name(i as usize))),
            None => Box::new(names.iter().map(|n| std::borrow::Cow::Borrowed(&**n))),
        };
        for name in listed {
            let Some(base) = name.strip_suffix("@0").filter(|b| !b.is_empty()) else {
                continue;
            };
            // (a dump that holds `x` too names its prefill plainly: its `x@0` is a plain
            // name of its own, as the contract says; a review)
            if y.contains(base) && !y.contains(&name) && !x.contains(base) {
                n += 1;
                first.get_or_insert_with(|| base.to_string());
            }
        }
        if let Some(base) = first {
            let (count, are) = if n == 1 {
                ("1 prefill probe".to_string(), "is")
            } else {
                (format!("{n} prefill probes"), "are")
            };
            let base = divergence_names::one_line(&base);
            bail!(
                "{}: {count} {are} named with @0 (the first, {base}@0, is {base} in {}): the prefill's tensors keep their plain names, only decode step s >= 1 is written name@s (docs/dump-format.md, \"Decode steps\")",
                x_path.display(),
                y_path.display()
            );
        }
    }
    Ok(())
}

/// Checks a dump pair's decode steps, of `sel` where `--steps` gives one; returns warnings
/// (one line each) for what cannot be checked. Errors are one line naming the file and the
/// problem, and, where some steps can be compared, the selection that compares them
/// ([`comparable`]), over `also` too where the comparison has a third dump (`--truth`; where
/// the third passes no selection, the pair's, said to be compared without it: [`Advice`]).
pub fn check(
    ours: &MappedDump<'_>,
    ours_path: &Path,
    reference: &MappedDump<'_>,
    ref_path: &Path,
    pair: Pair,
    sel: Option<&Selection>,
    also: Option<&MappedDump<'_>>,
) -> Result<Vec<String>> {
    // Under a selection without the prefill, its names do not matter.
    if sel.is_none_or(|s| s.contains(0)) {
        prefill_named_step_zero((ours, ours_path), (reference, ref_path))?;
    }
    let ((o, r), third) = rayon::join(
        || {
            rayon::join(
                || steps_of(ours, ours_path),
                || steps_of(reference, ref_path),
            )
        },
        || also.map(|d| steps_of(d, Path::new("")).ok()),
    );
    let (o, r) = (o?, r?);
    let mut warnings = Vec::new();
    // A dump's metadata contradicting itself is an error whether or not it holds steps.
    for (side, path) in [(&o, ours_path), (&r, ref_path)] {
        ids_match_steps(side.declared, side.ids.as_deref(), path)?;
    }
    // What an error advises: a selection that can be compared (the same whichever check
    // speaks). With a third dump in the comparison (`--truth`), the steps it holds with the
    // same tokens too (its own check would refuse others: a hunt); where its own check
    // refuses every selection (metadata that contradicts itself, steps it cannot read as
    // steps), the pair's, to be compared without it (a review: such advice was refused).
    let pair_advice = comparable(&[&o, &r], sel);
    let advice_of = |steps: String, how| Advice { steps, how };
    let all_three = match &third {
        Some(Some(t)) if some_selection_passes(t, &r) => comparable(&[&o, &r, t], sel),
        _ => None,
    };
    let advice = match (&third, all_three) {
        (None, _) => pair_advice.map(|s| advice_of(s, AdviceHow::Pair)),
        (Some(_), Some(s)) if Some(&s) == pair_advice.as_ref() => {
            Some(advice_of(s, AdviceHow::Pair))
        }
        (Some(_), Some(s)) => Some(advice_of(s, AdviceHow::AllThree)),
        // The truth passes no selection that this pair does: the pair's, without it (the
        // truth's own check, with ours as the third dump, has none to give then).
        (Some(_), None) if pair == Pair::Compared => {
            pair_advice.map(|s| advice_of(s, AdviceHow::WithoutThird))
        }
        (Some(_), None) => None,
    };
    if let Some(sel) = sel {
        let files = format!("{} and {}", ours_path.display(), ref_path.display());
        sel.check(&o.present.union(&r.present).copied().collect(), &files)
            .map_err(|e| {
                // Steps missing because a stacked member could not be read as steps: that is
                // why (a review: "no decode step 1-3" hid it).
                match left_whole(&o, ours).or_else(|| left_whole(&r, reference)) {
                    Some(why) => anyhow::anyhow!("{e}; {why}"),
                    None => e,
                }
            })?;
    }
    let promise = |side: &Steps, path: &Path, dump: &MappedDump<'_>| match sel {
        None => check_declared(side, path, dump, advice.as_ref()),
        // Under --steps, what the metadata promises is asked of the selected steps only (a
        // port that stopped early may have recorded the steps it meant to decode).
        Some(sel) => check_promised(side, path, dump, sel, advice.as_ref()),
    };
    // A stacked member of either side that could not be read as steps: an error naming it.
    let steps_left_whole = || -> Result<()> {
        for (side, path, dump) in [(&o, ours_path, ours), (&r, ref_path, reference)] {
            if let Some(problem) = left_whole(side, dump) {
                bail!(
                    "{}: {problem}: its decode steps cannot be compared",
                    path.display()
                );
            }
        }
        Ok(())
    };
    if o.present.iter().all(|&s| s == 0) && r.present.iter().all(|&s| s == 0) {
        // Steps the metadata promises and neither side holds (found by a bad-input hunt: both
        // sides' `@steps` members deflated, or dropped, passed as a clean prefill): the same
        // error as when the other side holds them.
        promise(&o, ours_path, ours)?;
        promise(&r, ref_path, reference)?;
        // Neither side's stacked members readable as steps, and no metadata that promises
        // them (a bad-input hunt: both deflated passed, exit 0, with ours' steps 3x the
        // reference's): the error of one side's (below), unless the prefill alone is selected.
        if sel.is_none_or(Selection::any_decode_step) {
            steps_left_whole()?;
        }
        // Found by a bad-input hunt: one-pass dumps recording other decode_ids passed without
        // a word. Nothing of a decode is compared, so it is said, not refused; so is a pair
        // that records decode_ids and holds none of their steps.
        match (&o.ids, &r.ids) {
            (Some(a), Some(b)) if a != b => warnings.push(format!(
                "{} and {} record other decode_ids but hold no decode step: only the prefill is compared",
                ours_path.display(),
                ref_path.display()
            )),
            (a, b) => {
                let recorded: Vec<(String, usize)> = [(a, ours_path), (b, ref_path)]
                    .into_iter()
                    .filter_map(|(ids, p)| Some((p.display().to_string(), ids.as_ref()?.len())))
                    .filter(|&(_, n)| n > 0)
                    .collect();
                if let Some((_, n)) = recorded.first() {
                    let files: Vec<&str> = recorded.iter().map(|(p, _)| p.as_str()).collect();
                    let why = left_whole(&o, ours)
                        .or_else(|| left_whole(&r, reference))
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    let records = if files.len() == 1 { "records" } else { "record" };
                    warnings.push(format!(
                        "{} {records} {n} decode_ids but no decode step is in either dump{why}: only the prefill is compared",
                        files.join(" and ")
                    ));
                }
            }
        }
        return Ok(warnings);
    }
    // A stacked member that could not be read as steps, where the pair has steps: its steps
    // are missing on that side (found by a bad-input hunt: one of two members deflated, its
    // steps `only_ref` rows, exit 0, where every member deflated was an error).
    steps_left_whole()?;
    // The steps compared: every one held, or those `--steps` selects.
    let selected = |side: &Steps| -> BTreeSet<usize> {
        side.present
            .iter()
            .copied()
            .filter(|&s| sel.is_none_or(|sel| sel.contains(s)))
            .collect()
    };
    let (o_sel, r_sel) = (selected(&o), selected(&r));
    // A probe that lacks decode steps its file's other probes hold: those steps of it are
    // missing from that file (found by a bad-input hunt: a stacked member of fewer steps than
    // the others, both files short alike, was compared on neither side and nothing was said;
    // one file short is a row each, only in the other). Either layout, and both mixed.
    for (sel, path, dump) in [(&o_sel, ours_path, ours), (&r_sel, ref_path, reference)] {
        if let Some(w) = short_probes(dump.dump(), path, sel) {
            // (once where both sides are one file)
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    let or_compare = compare_instead(advice.as_ref(), " (or ");
    for (side, path, dump) in [(&o, ours_path, ours), (&r, ref_path, reference)] {
        // As plan_order says of the per-step layout (found by a bad-input hunt: an order with
        // the `@steps` members first was put in step order without a word).
        if dump.dump().order_resorted() {
            warnings.push(format!(
                "{}: the metadata order lists decode steps out of order (a later step's probe, or a stacked `@steps` member, before an earlier step's): the rows are in step order (the prefill first)",
                path.display()
            ));
        }
        promise(side, path, dump)?;
        // Without decode_steps, the ids must still be one per step (else the next check would
        // call a missing id "other decode tokens"). No stacked member is left whole here
        // (refused above): the steps are what the file holds. (Under --steps, check_promised
        // asked it of the selected steps.)
        let last = side.present.last().copied().unwrap_or(0);
        if let (None, Some(ids), true, None) = (side.declared, &side.ids, last > 0, sel) {
            if ids.len() != last {
                bail!(
                    "{}: records {} decode_ids for {last} decode steps{or_compare}",
                    path.display(),
                    ids.len(),
                );
            }
            // One id per step promises every step up to the last (found by a bad-input hunt:
            // steps 1 and 3 of 3 decode_ids passed as a clean decode, step 2 never named).
            if let Some(text) = gaps(&side.present, |run| vec![run]) {
                bail!(
                    "{}: records {last} decode_ids, one per decode step, but {text} missing: dump every step{or_compare}",
                    path.display()
                );
            }
        }
    }
    // Under --steps, the steps selected are held on both sides or the check below says which
    // are not: other step counts matter no further.
    if let (Some(a), Some(b), None) = (o.declared, r.declared, sel) {
        if a != b {
            bail!(
                "{} has {a} decode steps and {} has {b}: dump the same number of steps on both sides{or_compare}",
                ours_path.display(),
                ref_path.display(),
            );
        }
    }
    // The last step compared: the tokens must agree up to the one it was fed.
    let last = o_sel
        .last()
        .copied()
        .max(r_sel.last().copied())
        .unwrap_or(0);
    match (&o.ids, &r.ids) {
        (Some(a), Some(b)) if a != b => {
            let at = first_difference(a, b);
            let part = at + 1;
            // Step `part` was fed the first other token, and every later step holds it in its
            // cache: the steps before it still compare like with like. Where one side decoded
            // fewer steps (its ids a prefix of the other's), the check of missing steps below
            // says so, if they are compared.
            if let (Some(ours), Some(reference)) = (a.get(at), b.get(at)) {
                if last < part {
                    warnings.push(format!(
                        "{} and {} were fed other decode tokens from step {part} on ({ours} vs {reference}): outside --steps, not compared",
                        ours_path.display(),
                        ref_path.display(),
                    ));
                } else {
                    let before = advice
                        .as_ref()
                        .map(|a| format!(", or {}", a.before_it()))
                        .unwrap_or_default();
                    // The truth run is what must be made again, not the port (a newcomer's
                    // run: the advice named `run --decode-from` for a truth of other tokens).
                    let remedy = match pair {
                        Pair::Compared => "teacher-force the port with the reference's decode_ids (divergence run --decode-from REF)",
                        Pair::Truth => "make the truth run with the reference's decode_ids (scripts/dump_reference.py --truth-out beside the reference, or --decode-ids with the reference's)",
                    };
                    bail!(
                        "{} and {} were fed other decode tokens (step {part}: {ours} vs {reference}): {remedy}{before}",
                        ours_path.display(),
                        ref_path.display(),
                    );
                }
            }
        }
        (Some(_), Some(_)) => {}
        // No decode step compared (`--steps 0`): no token to check.
        _ if last == 0 => {}
        (a, b) => {
            let missing: Vec<String> = [(a, ours_path), (b, ref_path)]
                .iter()
                .filter(|(ids, _)| ids.is_none())
                .map(|(_, p)| p.display().to_string())
                .collect();
            let records = if missing.len() == 1 {
                "records"
            } else {
                "record"
            };
            warnings.push(format!(
                "decode tokens cannot be checked: {} {records} no decode_ids; make sure both sides were fed the same tokens",
                missing.join(" and ")
            ));
        }
    }
    let only = |a: &BTreeSet<usize>, b: &BTreeSet<usize>| -> Vec<usize> {
        a.iter().filter(|s| !b.contains(s)).copied().collect()
    };
    for (missing, has, lacks, lacking, has_side) in [
        (only(&r_sel, &o_sel), ref_path, ours_path, &o, &r),
        (only(&o_sel, &r_sel), ours_path, ref_path, &r, &o),
    ] {
        if !missing.is_empty() {
            let what = if missing == [0] {
                "of the prefill (step 0)".to_string()
            } else {
                format!("of decode step {}", ranges(missing.iter().copied()))
            };
            // A one-pass dump against a decode run: most likely a self-consistency check
            // without its flag (found by a UX review: the error gave no pointer to it), unless
            // it saw the prompt alone (then its prefill compares with --steps 0).
            let one_pass = pair == Pair::Compared
                && lacking.present.iter().eq([0].iter())
                && lacking.declared.is_none();
            let prompt_alone = lacking.prompt.is_some() && lacking.prompt == has_side.prompt;
            let hint = if one_pass && missing != [0] && !prompt_alone {
                format!(
                    "; or, if {} is one pass over the prompt and the decode tokens, compare it with --prefill-vs-decode",
                    lacks.display()
                )
            } else {
                or_compare.clone()
            };
            bail!(
                "{} has no probe {what} that {} has: dump the same steps on both sides{hint}",
                lacks.display(),
                has.display()
            );
        }
    }
    // Both sides hold the same steps by now. Steps below the last that neither holds, where no
    // metadata promises them (no decode_steps, no decode_ids), are not compared: said, not
    // refused (a port may dump some steps only). Under --steps, the parts of such gaps that
    // it selects (a bounded run's were refused by the selection's check).
    if let Some(text) = gaps(&o_sel, |run| match sel {
        None => vec![run],
        Some(sel) => sel.clip(run),
    }) {
        let last = o_sel.last().copied().unwrap_or(0);
        warnings.push(format!(
            "{text} in neither {} nor {} (steps 1-{last}): not compared",
            ours_path.display(),
            ref_path.display()
        ));
    }
    Ok(warnings)
}

/// The index of the first decode token that differs between `a` and `b` (the shorter one's
/// length where one is the other's start): step `index + 1` is the first fed another token.
/// (Of any two token lists: a prompt's first other position, too.)
pub(crate) fn first_difference(a: &[i64], b: &[i64]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// The last decode step both sides were fed the same tokens for, where both record their
/// `decode_ids` (`None` otherwise): steps past it may have been fed other tokens (the decode
/// hints read none of them).
pub fn same_tokens_through(ours: &MappedDump<'_>, reference: &MappedDump<'_>) -> Option<usize> {
    let ids = |d: &MappedDump<'_>| d.meta()?.decode_ids().ok().flatten();
    Some(first_difference(&ids(ours)?, &ids(reference)?))
}

/// The selection that can be compared where the one asked (or every step) cannot, as
/// `--steps X` (`e.g. --steps X` where none of the one asked can): the steps every side holds
/// (the pair's two, and the third dump of the comparison where there is one: the truth run),
/// of `sel` where given, up to the last one all were fed the same tokens for (step s was fed
/// decode token s) and within the tokens each side records; its first 8 runs, or its first run
/// alone where it has more. `None` where no step is left.
fn comparable(sides: &[&Steps], sel: Option<&Selection>) -> Option<String> {
    // Other prompts: no step compares (a hunt: the advice was refused for other input_ids).
    let prompts: Vec<&Vec<i64>> = sides.iter().filter_map(|s| s.prompt.as_ref()).collect();
    if prompts.windows(2).any(|w| w[0] != w[1]) {
        return None;
    }
    let mut limit = usize::MAX;
    let ids: Vec<&Vec<i64>> = sides.iter().filter_map(|s| s.ids.as_ref()).collect();
    for (k, a) in ids.iter().enumerate() {
        limit = limit.min(a.len());
        for b in &ids[k + 1..] {
            limit = limit.min(first_difference(a, b));
        }
    }
    // Steps past a side's `decode_steps` are not promised: none is advised (a hunt).
    for n in sides.iter().filter_map(|s| s.declared) {
        limit = limit.min(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let of = |sel: Option<&Selection>| -> Option<String> {
        let (first, rest) = sides.split_first()?;
        let common: BTreeSet<usize> = first
            .present
            .iter()
            .copied()
            .filter(|s| rest.iter().all(|side| side.present.contains(s)))
            .filter(|&s| s <= limit && sel.is_none_or(|sel| sel.contains(s)))
            .collect();
        let mut runs = crate::cmd::diff::runs(&common);
        if runs.len() > 8 {
            runs.truncate(1);
        }
        let text: Vec<String> = runs.iter().map(crate::cmd::diff::run_text).collect();
        (!text.is_empty()).then(|| text.join(","))
    };
    match sel {
        None => of(None).map(|s| format!("--steps {s}")),
        Some(_) => of(sel)
            .map(|s| format!("--steps {s}"))
            .or_else(|| of(None).map(|s| format!("e.g. --steps {s}"))),
    }
}

/// Under `--steps`, what a side's metadata promises is asked of the selected steps: each one it
/// promises (1 to `decode_steps`, else one per `decode_id`) is held, none is past
/// `decode_steps`, and each selected decode step's token is recorded where tokens are.
fn check_promised(
    side: &Steps,
    path: &Path,
    dump: &MappedDump<'_>,
    sel: &Selection,
    advice: Option<&Advice>,
) -> Result<()> {
    let promised = side
        .declared
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .or(side.ids.as_ref().map(Vec::len));
    let or_compare = compare_instead(advice, "; or ");
    if let Some(wanted) = promised.and_then(|n| sel.up_to(n)) {
        let absent: Vec<(usize, usize)> = wanted
            .absent_from(&side.present)
            .into_iter()
            .filter(|&(_, hi)| hi >= 1)
            .map(|(lo, hi)| (lo.max(1), hi))
            .collect();
        if !absent.is_empty() {
            let n = promised.unwrap_or(0);
            let promise = if side.declared.is_some() {
                format!("metadata says {n} decode steps")
            } else {
                format!("records {n} decode_ids, one per decode step")
            };
            let (steps, have) = steps_word(&absent);
            let why = left_whole(side, dump).unwrap_or_else(|| "a truncated dump?".to_string());
            bail!(
                "{}: {promise}, but selected decode {steps} {} {have} no probe ({why}{or_compare})",
                path.display(),
                crate::cmd::diff::runs_at_most(&absent, 8)
            );
        }
    }
    // (A step past `decode_steps` that is selected: its token is not promised either.)
    check_past_promise(side, path, advice, |s| sel.contains(s))?;
    let last = side.present.iter().rev().find(|&&s| sel.contains(s));
    if let (Some(ids), Some(&s)) = (&side.ids, last) {
        if s > ids.len() {
            bail!(
                "{}: records {} decode_ids: selected decode step {} was fed a token it does not record ({})",
                path.display(),
                ids.len(),
                ids.len() + 1,
                match compare_instead(advice, "") {
                    text if text.is_empty() => "select the steps it records".to_string(),
                    text => text,
                }
            );
        }
    }
    Ok(())
}

/// With `decode_steps` recorded, steps 1 to it all hold a probe and no step past it does; the
/// error says why steps are missing where a stacked member was left whole, and the selection
/// that can be compared (`advice`, [`comparable`]).
fn check_declared(
    side: &Steps,
    path: &Path,
    dump: &MappedDump<'_>,
    advice: Option<&Advice>,
) -> Result<()> {
    let Some(n) = side.declared else {
        return Ok(());
    };
    // Steps 1..=n all present: n of the present decode steps are at most n (the check below),
    // so counting them is enough, whatever n is.
    let have = side
        .present
        .range(1..)
        .take_while(|&&s| s as u64 <= n)
        .count() as u64;
    if have < n {
        let first = (1..).find(|s| !side.present.contains(s)).unwrap_or(1);
        let why = left_whole(side, dump).unwrap_or_else(|| "a truncated dump?".to_string());
        bail!(
            "{}: metadata says {n} decode steps, but step {first} has no probe ({} of {n} steps missing; {why}{})",
            path.display(),
            n - have,
            compare_instead(advice, "; or ")
        );
    }
    check_past_promise(side, path, advice, |_| true)
}

/// Per probe ([`short_probes`]): where it was first seen and how many wanted steps it holds.
type Counts<'a> = foldhash::HashMap<&'a str, ((u8, usize), usize)>;

/// `counts` with `n` more steps of probe `base`, first seen at `at` or before.
fn add<'a>(mut counts: Counts<'a>, (base, at, n): (&'a str, (u8, usize), usize)) -> Counts<'a> {
    let e = counts.entry(base).or_insert((at, 0));
    e.0 = e.0.min(at);
    e.1 += n;
    counts
}

/// `a` and `b` added up.
fn merge<'a>(a: Counts<'a>, b: Counts<'a>) -> Counts<'a> {
    b.into_iter()
        .fold(a, |m, (base, (at, n))| add(m, (base, at, n)))
}

/// A warning naming the probes of `dump` that hold some decode step of `steps` (the decode
/// steps compared of that file: each held by some probe) but not all of them: how many, and
/// the first of them (the stacked members first, each part in the file's order) with the steps
/// it lacks. A probe's steps are those of its stacked member (`x@steps`) and its per-step
/// entries (`x@s`) together.
fn short_probes(dump: &Dump, path: &Path, steps: &BTreeSet<usize>) -> Option<String> {
    let wanted: BTreeSet<usize> = steps.range(1..).copied().collect();
    let (&first, &last) = (wanted.first()?, wanted.last()?);
    // Each probe's steps, as (base, first step, last step): its stacked member's (none for a
    // member of 0 steps), then its entries stored as themselves (a per-step dump has ~150,000:
    // counted, not collected; a name is in a dump once, so no step is counted twice).
    let members = || {
        (0..dump.member_count())
            .filter_map(|m| dump.member_info(m))
            .map(|(name, n)| (divergence_names::stacked_base(name).unwrap_or(name), 1, n))
    };
    let names = dump.names();
    // The positions of the entries stored as themselves: known apart in a stacked dump.
    let own_at: Vec<usize> = match dump.own_positions() {
        Some(own) => own.into_iter().map(|i| i as usize).collect(),
        None => (0..names.len())
            .filter(|&i| dump.step_slot_at(i).is_none())
            .collect(),
    };
    // Steps `from..=to` within the wanted ones' span, if any.
    let within = |from: usize, to: usize| {
        let (from, to) = (from.max(first), to.min(last));
        (from <= to).then_some(from..=to)
    };
    // How many wanted steps `from..=to` holds (counted, where they are one run as a rule).
    let dense = wanted.len() == last - first + 1;
    let held = |from: usize, to: usize| match within(from, to) {
        None => 0,
        Some(r) if dense => r.end() - r.start() + 1,
        Some(r) => wanted.range(r).count(),
    };
    // Per probe: where it was first seen (the members first, then the rest, each in the
    // file's order) and how many wanted steps it holds; the names in parallel, chunk by chunk.
    let mut count = members()
        .enumerate()
        .map(|(k, (base, from, to))| (base, (0u8, k), held(from, to)))
        .fold(Counts::default(), add);
    const CHUNK: usize = 4096;
    let own_counts = own_at
        .par_chunks(CHUNK)
        .map(|chunk| {
            chunk
                .iter()
                .filter_map(|&i| match names.step_of(i)? {
                    (base, s @ 1..) => Some((base, (1u8, i), held(s, s))),
                    _ => None,
                })
                .fold(Counts::default(), add)
        })
        .reduce(Counts::default, merge);
    count = merge(count, own_counts);
    let mut short: Vec<(&str, (u8, usize))> = count
        .into_iter()
        .filter(|&(_, (_, n))| n < wanted.len())
        .map(|(base, (at, _))| (base, at))
        .collect();
    short.sort_unstable_by_key(|&(_, at)| at);
    let (&(base, _), more) = (short.first()?, short.len() - 1);
    // The steps the first of them lacks.
    let mut lacks = wanted.clone();
    let own_steps = own_at
        .iter()
        .filter_map(|&i| names.step_of(i))
        .map(|(b, s)| (b, s, s));
    for (b, from, to) in members().chain(own_steps) {
        if let Some(r) = within(from, to).filter(|_| b == base) {
            lacks.retain(|s| !r.contains(s));
        }
    }
    let (probes, first_of) = match more {
        0 => ("a probe lacks".to_string(), ""),
        m => (format!("{} probes lack", m + 1), "the first, "),
    };
    let lacked = crate::cmd::diff::ranges_at_most(&lacks, 8);
    let step_word = if lacks.len() == 1 { "step" } else { "steps" };
    // A probe named `@3` has an empty base: said so (the warning read `(: decode steps ...)`).
    let base = if base.is_empty() {
        "'' (an empty name)"
    } else {
        base
    };
    Some(format!(
        "{}: {probes} decode steps the file's other probes hold ({first_of}{base}: decode {step_word} {lacked}): those steps are missing from this file",
        path.display()
    ))
}

/// The decode steps below the last present one that are not present, as runs (`decode step 2`,
/// `decode steps 2-4, 7 are`), at most 8 of them named; walked over the present steps, not
/// over every number below the last (a step may be named `x@999999999`). Each run is named as
/// `counts` makes it (the parts of it a selection holds).
fn gaps(
    present: &BTreeSet<usize>,
    counts: impl Fn((usize, usize)) -> Vec<(usize, usize)>,
) -> Option<String> {
    const MAX_GAPS: usize = 8;
    let steps: Vec<usize> = present.range(1..).copied().collect();
    let runs: Vec<(usize, usize)> = std::iter::once(0)
        .chain(steps.iter().copied())
        .zip(steps.iter().copied())
        .filter(|&(a, b)| b > a + 1)
        .flat_map(|(a, b)| counts((a + 1, b - 1)))
        .collect();
    let first = runs.first()?;
    let mut text: Vec<String> = runs
        .iter()
        .take(MAX_GAPS)
        .map(crate::cmd::diff::run_text)
        .collect();
    if runs.len() > MAX_GAPS {
        text.push(format!("and {} more runs", runs.len() - MAX_GAPS));
    }
    let single = runs.len() == 1 && first.0 == first.1;
    Some(if single {
        format!("decode step {} is", text.join(", "))
    } else {
        format!("decode steps {} are", text.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_of_dumps_that_hold_no_step_says_so() {
        let sel = crate::cmd::parse::steps("0").unwrap();
        let err = sel.check(&BTreeSet::new(), "a.npz and b.npz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--steps 0: no decode step 0 in a.npz and b.npz (0 = the prefill; the steps held are none: the files hold no tensor)"
        );
    }

    #[test]
    fn gaps_are_named_as_runs_whatever_the_step_numbers() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        let gaps = |p: &BTreeSet<usize>| super::gaps(p, |run| vec![run]);
        assert_eq!(gaps(&set(&[0, 1, 2, 3])), None);
        assert_eq!(gaps(&set(&[0])), None);
        assert_eq!(gaps(&set(&[0, 1, 3])).as_deref(), Some("decode step 2 is"));
        assert_eq!(gaps(&set(&[2, 3])).as_deref(), Some("decode step 1 is"));
        assert_eq!(
            gaps(&set(&[0, 1, 5, 7])).as_deref(),
            Some("decode steps 2-4, 6 are")
        );
        // The largest step number a name holds is one run, not a billion steps to walk.
        assert_eq!(
            gaps(&set(&[0, 1, 999_999_999])).as_deref(),
            Some("decode steps 2-999999998 are")
        );
        let many: Vec<usize> = (0..40).map(|i| 2 * i).collect();
        let text = gaps(&set(&many)).unwrap();
        assert_eq!(
            text,
            "decode steps 1, 3, 5, 7, 9, 11, 13, 15, and 31 more runs are"
        );
    }
}
