//! Decode steps in `divergence diff`: the checks that keep a decode comparison from passing
//! silently (docs/dump-format.md, "Decode steps").
//!
//! A dump with decode steps names the probes of step `s` `name@s` and records `decode_steps`
//! and `decode_ids` in its metadata. Before anything is compared, [`check`] refuses (exit 2,
//! one line naming the file) a pair whose sides were fed other decode tokens, whose step counts
//! differ, or where a step the metadata promises has no probe; a step present on one side
//! only is an error too (its rows would all be `only_ours` / `only_ref`, which alone do not
//! fail a diff).

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

/// What one side says about its steps.
struct Steps {
    /// Steps that have at least one probe (0 = the prefill).
    present: BTreeSet<usize>,
    /// Metadata `decode_steps`, when recorded.
    declared: Option<u64>,
    /// Metadata `decode_ids`, when recorded.
    ids: Option<Vec<i64>>,
    /// A stacked member (`x@steps`) stayed one entry, not read as steps
    /// ([`unfolding_problem`] says why).
    stacked_left: bool,
}

fn steps_of(dump: &MappedDump<'_>, path: &Path) -> Result<Steps> {
    // In parallel, then sorted: a decode dump has ~150,000 names (most steps repeat). The same
    // pass sees a stacked member left whole, so that its reason is looked for only then.
    let mut steps: Vec<usize> = dump
        .names()
        .par_iter()
        .with_min_len(1024)
        .map(|n| match divergence_names::stacked_base(n) {
            Some(_) => usize::MAX,
            None => split_step(n).1,
        })
        .collect();
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
    Ok(Steps {
        present,
        declared,
        ids,
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

/// Checks a dump pair's decode steps; returns warnings (one line each) for what cannot be
/// checked. Errors are one line naming the file and the problem.
pub fn check(
    ours: &MappedDump<'_>,
    ours_path: &Path,
    reference: &MappedDump<'_>,
    ref_path: &Path,
    pair: Pair,
) -> Result<Vec<String>> {
    let (o, r) = rayon::join(
        || steps_of(ours, ours_path),
        || steps_of(reference, ref_path),
    );
    let (o, r) = (o?, r?);
    let mut warnings = Vec::new();
    // A dump's metadata contradicting itself is an error whether or not it holds steps.
    for (side, path) in [(&o, ours_path), (&r, ref_path)] {
        if let (Some(n), Some(ids)) = (side.declared, &side.ids) {
            if ids.len() as u64 != n {
                bail!(
                    "{}: metadata says {n} decode steps but holds {} decode_ids",
                    path.display(),
                    ids.len()
                );
            }
        }
    }
    if o.present.iter().all(|&s| s == 0) && r.present.iter().all(|&s| s == 0) {
        // Steps the metadata promises and neither side holds (found by a bad-input hunt: both
        // sides' `@steps` members deflated, or dropped, passed as a clean prefill): the same
        // error as when the other side holds them.
        check_declared(&o, ours_path, ours)?;
        check_declared(&r, ref_path, reference)?;
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
                    let left = |side: &Steps, dump: &MappedDump<'_>| {
                        side.stacked_left.then(|| unfolding_problem(dump.dump())).flatten()
                    };
                    let why = left(&o, ours)
                        .or_else(|| left(&r, reference))
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
    for (side, path, dump) in [(&o, ours_path, ours), (&r, ref_path, reference)] {
        if let Some(problem) = side
            .stacked_left
            .then(|| unfolding_problem(dump.dump()))
            .flatten()
        {
            bail!(
                "{}: {problem}: its decode steps cannot be compared",
                path.display()
            );
        }
    }
    for (side, path, dump) in [(&o, ours_path, ours), (&r, ref_path, reference)] {
        // As plan_order says of the per-step layout (found by a bad-input hunt: an order with
        // the `@steps` members first was put in step order without a word).
        if dump.dump().order_resorted() {
            warnings.push(format!(
                "{}: the metadata order lists decode steps out of order (a stacked `@steps` member before an earlier step's probe): the rows are in step order (the prefill first)",
                path.display()
            ));
        }
        check_declared(side, path, dump)?;
        // Without decode_steps, the ids must still be one per step (else the next check would
        // call a missing id "other decode tokens"). No stacked member is left whole here
        // (refused above): the steps are what the file holds.
        let last = side.present.last().copied().unwrap_or(0);
        if let (None, Some(ids), true) = (side.declared, &side.ids, last > 0) {
            if ids.len() != last {
                bail!(
                    "{}: records {} decode_ids for {last} decode steps",
                    path.display(),
                    ids.len()
                );
            }
            // One id per step promises every step up to the last (found by a bad-input hunt:
            // steps 1 and 3 of 3 decode_ids passed as a clean decode, step 2 never named).
            if let Some(text) = gaps(&side.present) {
                bail!(
                    "{}: records {last} decode_ids, one per decode step, but {text} missing: dump every step (or, to compare some steps only, record no decode_ids: the tokens then go unchecked)",
                    path.display()
                );
            }
        }
    }
    if let (Some(a), Some(b)) = (o.declared, r.declared) {
        if a != b {
            bail!(
                "{} has {a} decode steps and {} has {b}: dump the same number of steps on both sides",
                ours_path.display(),
                ref_path.display()
            );
        }
    }
    match (&o.ids, &r.ids) {
        (Some(a), Some(b)) if a != b => {
            let at = a
                .iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            let token = |v: &[i64]| v.get(at).map_or("none".to_string(), |t| t.to_string());
            bail!(
                "{} and {} were fed other decode tokens (step {}: {} vs {}): teacher-force the port with the reference's decode_ids (divergence run --decode-from REF)",
                ours_path.display(),
                ref_path.display(),
                at + 1,
                token(a),
                token(b)
            );
        }
        (Some(_), Some(_)) => {}
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
    let only = |a: &Steps, b: &Steps| -> Vec<usize> {
        a.present
            .iter()
            .filter(|s| !b.present.contains(s))
            .copied()
            .collect()
    };
    for (missing, has, lacks, lacking) in [
        (only(&r, &o), ref_path, ours_path, &o),
        (only(&o, &r), ours_path, ref_path, &r),
    ] {
        if !missing.is_empty() {
            let what = if missing == [0] {
                "of the prefill (step 0)".to_string()
            } else {
                format!("of decode step {}", ranges(missing.iter().copied()))
            };
            // A one-pass dump against a decode run: most likely a self-consistency check
            // without its flag (found by a UX review: the error gave no pointer to it).
            let one_pass = pair == Pair::Compared
                && lacking.present.iter().eq([0].iter())
                && lacking.declared.is_none();
            let hint = if one_pass && missing != [0] {
                format!(
                    "; or, if {} is one pass over the prompt and the decode tokens, compare it with --prefill-vs-decode",
                    lacks.display()
                )
            } else {
                String::new()
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
    // refused (a port may dump some steps only).
    if let Some(text) = gaps(&o.present) {
        let last = o.present.last().copied().unwrap_or(0);
        warnings.push(format!(
            "{text} in neither {} nor {} (steps 1-{last}): not compared",
            ours_path.display(),
            ref_path.display()
        ));
    }
    Ok(warnings)
}

/// With `decode_steps` recorded, steps 1 to it all hold a probe and no step past it does; the
/// error says why steps are missing where a stacked member was left whole.
fn check_declared(side: &Steps, path: &Path, dump: &MappedDump<'_>) -> Result<()> {
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
        let why = side
            .stacked_left
            .then(|| unfolding_problem(dump.dump()))
            .flatten()
            .unwrap_or_else(|| "a truncated dump?".to_string());
        bail!(
            "{}: metadata says {n} decode steps, but step {first} has no probe ({} of {n} steps missing; {why})",
            path.display(),
            n - have
        );
    }
    if let Some(&extra) = side.present.iter().find(|&&s| s as u64 > n) {
        bail!(
            "{}: metadata says {n} decode steps, but it has probes of step {extra}",
            path.display()
        );
    }
    Ok(())
}

/// The decode steps below the last present one that are not present, as runs (`decode step 2`,
/// `decode steps 2-4, 7 are`), at most 8 of them named; walked over the present steps, not
/// over every number below the last (a step may be named `x@999999999`).
fn gaps(present: &BTreeSet<usize>) -> Option<String> {
    const MAX_GAPS: usize = 8;
    let steps: Vec<usize> = present.range(1..).copied().collect();
    let runs: Vec<(usize, usize)> = std::iter::once(0)
        .chain(steps.iter().copied())
        .zip(steps.iter().copied())
        .filter(|&(a, b)| b > a + 1)
        .map(|(a, b)| (a + 1, b - 1))
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
    fn gaps_are_named_as_runs_whatever_the_step_numbers() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
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
