//! `divergence diff --prefill-vs-decode A B`: a port checked against itself, without a
//! reference. One dump is a single prefill over T tokens; the other a prefill over the first
//! T - k of them plus k decode steps fed the remaining k (docs/dump-format.md, "Decode steps").
//! Position p of the full prefill must agree, within the dtype's noise, with the same position
//! in the stepped run: the prefill's positions with its step 0, position T - k + s - 1 with
//! step s.
//!
//! The full prefill is turned into a dump with the stepped dump's names: each probe of the
//! stepped run reads the matching token slice of the full prefill's probe (a narrow along the
//! token axis, streamed from the file like a split part), `cache_k@s` the full prefill's
//! `rope_k` at that position and `cache_v@s` its `v_proj` there, re-laid out as the cache holds
//! it. The usual diff then finds the first (step, op) where the two runs part.

use std::path::Path;

use anyhow::{bail, Result};
use divergence_dump::Dump;
use divergence_map::{MappedDump, Resolved, Step, Virtual};
use divergence_names::{split_step, Op};

use crate::cmd::steps::Selection;

/// The two sides: the stepped run (ours), the full prefill under its names (the reference),
/// and what to tell the reader.
pub struct Pair<'a> {
    pub stepped: MappedDump<'a>,
    pub full: MappedDump<'a>,
    pub stepped_path: &'a Path,
    pub full_path: &'a Path,
    pub warnings: Vec<String>,
    /// How the positions line up (a note, not a warning: it is what was asked for).
    pub notes: Vec<String>,
    /// Where the rows' order came from: the stepped run's metadata, else its file (it is
    /// given to the full prefill's side, which the plan would otherwise take for the
    /// reference's metadata; found by a bad-input hunt).
    pub order_source: divergence_diff::OrderSource,
}

/// The metadata's `input_ids`.
fn input_ids(dump: &Dump) -> Option<Vec<i64>> {
    dump.meta()?.input_ids.clone()
}

/// The metadata's `decode_ids` (checked by [`check_meta`] first: a malformed list is an error
/// there, not "missing").
fn decode_ids(dump: &Dump) -> Option<Vec<i64>> {
    dump.meta()?.decode_ids().ok().flatten()
}

/// The decode metadata of both dumps read as a plain diff reads it (found by a bad-input hunt:
/// `decode_ids: [5.0, 6.0]` was called missing and `decode_steps: "2"` ignored here, where a
/// plain diff refuses both): an error naming the file.
fn check_meta(dump: &Dump, path: &Path) -> Result<()> {
    if let Some(m) = dump.meta() {
        let at = |e: String| anyhow::anyhow!("{}: {e}", path.display());
        // Metadata that contradicts itself, as a plain diff refuses it (a bad-input hunt:
        // `--prefill-vs-decode` took it without a word).
        let ids = m.decode_ids().map_err(at)?;
        crate::cmd::steps::ids_match_steps(m.decode_steps().map_err(at)?, ids.as_deref(), path)?;
    }
    Ok(())
}

fn max_step(dump: &Dump) -> usize {
    dump.names()
        .iter()
        .map(|n| split_step(n).1)
        .max()
        .unwrap_or(0)
}

/// Pairs the dumps (either order: the one with decode steps is the stepped run).
/// With `--steps` (`sel`), only the selected steps of the stepped run are sliced, and the
/// full prefill must cover (and agree on) the tokens up to the last of them only.
pub fn pair<'a>(
    a: &'a Dump,
    a_path: &'a Path,
    b: &'a Dump,
    b_path: &'a Path,
    sel: Option<&Selection>,
) -> Result<Pair<'a>> {
    check_meta(a, a_path)?;
    check_meta(b, b_path)?;
    let (sa, sb) = (max_step(a), max_step(b));
    let (full, full_path, stepped, stepped_path, k) = match (sa, sb) {
        (0, 0) => {
            // Steps stored where they cannot be read as steps (a deflated `@steps` member):
            // that is why (found by a bad-input hunt).
            let why = [(a, a_path), (b, b_path)].into_iter().find_map(|(d, p)| {
                let problem = crate::cmd::steps::unfolding_problem(d)?;
                Some(format!(" ({}: {problem})", p.display()))
            });
            bail!(
                "--prefill-vs-decode: neither {} nor {} has decode steps{}: give one prefill over T tokens and one prefill over T - k tokens plus k decode steps (probes named `name@1`, ...)",
                a_path.display(),
                b_path.display(),
                why.unwrap_or_default()
            )
        }
        (0, k) => (a, a_path, b, b_path, k),
        (k, 0) => (b, b_path, a, a_path, k),
        _ => bail!(
            "--prefill-vs-decode: {} and {} both have decode steps: one of them must be a single prefill over all the tokens",
            a_path.display(),
            b_path.display()
        ),
    };
    // The full prefill promising decode steps it does not hold: a decode dump cut short, not
    // one prefill (a bad-input hunt: taken without a word, where a plain diff refuses it).
    if let Some(n) = full.meta().and_then(|m| m.decode_steps().ok().flatten()) {
        if n > 0 {
            bail!(
                "{}: metadata says {n} decode steps, but step 1 has no probe: a decode dump cut short, not one prefill over all the tokens",
                full_path.display()
            );
        }
    }
    let mut warnings = Vec::new();
    let present: std::collections::BTreeSet<usize> =
        stepped.names().iter().map(|n| split_step(n).1).collect();
    if let Some(missing) = (1..=k).find(|s| !present.contains(s)) {
        bail!(
            "{}: has probes of decode step {k} but none of step {missing}",
            stepped_path.display()
        );
    }
    // The steps the metadata promises, before the token counts (found by a bad-input hunt: a
    // file of 2 steps whose metadata promises 3 was refused for its token count).
    if let Some(n) = stepped.meta().and_then(|m| m.decode_steps().ok().flatten()) {
        if n < k as u64 {
            bail!(
                "{}: metadata says {n} decode steps, but it has probes of step {k}",
                stepped_path.display()
            );
        }
        // Fewer steps than promised: a run cut short, whose steps may still be selected.
        if n > k as u64 && sel.is_none() {
            bail!(
                "{}: metadata says {n} decode steps, but step {} has no probe (a truncated dump?; or compare the steps it holds: --steps 0-{k})",
                stepped_path.display(),
                k + 1
            );
        }
    }
    let keep = |s: usize| sel.is_none_or(|sel| sel.contains(s));
    // The last step compared: the tokens up to it are what the two runs must share.
    let last = (0..=k).rev().find(|&s| keep(s)).unwrap_or(0);
    // Token counts: from input_ids, else from the first residual-stream probe's shape (the
    // one reading of a plain diff's warning, `diff::token_rows`).
    let rows = |d: &Dump| crate::cmd::diff::token_rows(d).map(|(_, _, n)| n);
    let t_full = input_ids(full).map(|v| v.len()).or_else(|| rows(full));
    let t_pre = input_ids(stepped)
        .map(|v| v.len())
        .or_else(|| rows(stepped));
    let (Some(t_full), Some(t_pre)) = (t_full, t_pre) else {
        bail!(
            "--prefill-vs-decode: the token counts are unknown (no input_ids in the metadata and no model.embed_tokens, model.layers.0.input_layernorm, model.layers.0 or model.norm probe)"
        );
    };
    // Each dump's prefill holds as many positions as its input_ids (found by a bad-input
    // hunt: a full dump of 6 ids whose embeddings held 5 positions of width 6 was sliced along
    // its width, and the rows reported shapes that are in neither file).
    for (d, path) in [(full, full_path), (stepped, stepped_path)] {
        let (Some(ids), Some((name, shape, n))) = (input_ids(d), crate::cmd::diff::token_rows(d))
        else {
            continue;
        };
        if n != ids.len() {
            bail!(
                "{}: {name} {shape:?} holds {n} positions, but the metadata's input_ids hold {} tokens",
                path.display(),
                ids.len()
            );
        }
    }
    // (A longer full prefill would do as well, its positions being causal; one of the same
    // tokens is what was asked for. Under --steps it must reach the last selected step.)
    if sel.is_none() && t_pre + k != t_full {
        // A shorter prefill still covers the steps up to its last position, as far as both
        // runs saw the same tokens (a hunt: the advice was then refused for other tokens).
        let agree = match (input_ids(full), input_ids(stepped), decode_ids(stepped)) {
            (Some(f), Some(p), d) => {
                let fed: Vec<i64> = p.iter().chain(d.iter().flatten()).copied().collect();
                let known = if d.is_some() { fed.len() } else { p.len() };
                let same = crate::cmd::steps::first_difference(&f, &fed);
                if same < known.min(f.len()) {
                    same
                } else {
                    t_full
                }
            }
            _ => t_full,
        };
        let some = match agree.min(t_full).checked_sub(t_pre) {
            Some(0) => " (or compare the prefill alone: --steps 0)".to_string(),
            Some(n) if n < k => format!(" (or compare the steps it covers: --steps 0-{n})"),
            _ => String::new(),
        };
        bail!(
            "--prefill-vs-decode: {} is a prefill of {t_full} tokens, but {} has {t_pre} prompt tokens + {k} decode steps = {}: they must cover the same tokens{some}",
            full_path.display(),
            stepped_path.display(),
            t_pre + k
        );
    }
    if sel.is_some() && t_pre + last > t_full {
        bail!(
            "--prefill-vs-decode: {} is a prefill of {t_full} tokens, but the steps selected of {} reach step {last}, at position {} ({t_pre} prompt tokens + {last} decode steps: {} tokens)",
            full_path.display(),
            stepped_path.display(),
            t_pre + last - 1,
            t_pre + last
        );
    }
    match (
        input_ids(full),
        input_ids(stepped),
        decode_ids(stepped),
    ) {
        (Some(f), Some(p), Some(d)) => {
            // (Under --steps, the tokens of the steps selected: a run may have recorded the
            // steps it meant to decode.)
            if (sel.is_none() && d.len() != k) || d.len() < last {
                bail!(
                    "{}: records {} decode_ids for {k} decode steps",
                    stepped_path.display(),
                    d.len()
                );
            }
            let fed: Vec<i64> = p.iter().chain(d.iter()).copied().collect();
            let shared = t_pre + last;
            if let Some(at) = f
                .iter()
                .zip(&fed)
                .take(shared)
                .position(|(x, y)| x != y)
            {
                // The steps before the position where the runs part still compare (a hunt).
                let before = match at.checked_sub(t_pre) {
                    Some(0) => " (or compare the prefill alone: --steps 0)".to_string(),
                    Some(n) => format!(" (or compare the steps before it: --steps 0-{n})"),
                    None => String::new(),
                };
                bail!(
                    "--prefill-vs-decode: the runs saw other tokens: position {at} is {} in {} and {} in {} (its prompt + decode_ids){before}",
                    f[at],
                    full_path.display(),
                    fed[at],
                    stepped_path.display()
                );
            }
        }
        // Without decode_ids, the prompt is still checked (a hunt: another prompt passed).
        (Some(f), Some(p), None)
            if crate::cmd::steps::first_difference(&f, &p) < f.len().min(p.len()) =>
        {
            let at = crate::cmd::steps::first_difference(&f, &p);
            bail!(
                "--prefill-vs-decode: the runs saw other tokens: position {at} is {} in {} and {} in {} (its prompt)",
                f[at],
                full_path.display(),
                p[at],
                stepped_path.display()
            );
        }
        _ => warnings.push(format!(
            "prefill-vs-decode: the tokens cannot be checked (input_ids / decode_ids missing from the metadata): make sure {} was fed {}'s prompt and decode tokens",
            full_path.display(),
            stepped_path.display()
        )),
    }
    let mut tensors = Vec::new();
    let mut unsliced = Vec::new();
    // The token axis of each probe outside the dump contract whose prefill fits its slice
    // exactly, and so does the one position of a decode step before the last, on the same
    // axis: a step of it that does not fit is then the port's wrong shape. Not evidence: the
    // last step alone (attention weights over the cache fit there, where the cache is as
    // long as the full prefill), nor decode steps alone (attention weights over a cache
    // padded to a multiple fit at some steps; their prefill never fits).
    type Fits<'n> = std::collections::HashMap<&'n str, usize>;
    let (mut prefill_fits, mut step_fits): (Fits<'_>, Fits<'_>) = Default::default();
    // Under `--steps`, the steps left out that the decode hints read around a selected one
    // (its window, and the prefill) are sliced too, for the hints alone: no row, no warning
    // (a held-out check: `--steps 2-3` lost the hint that reads step 1).
    let window = divergence_diff::hints::DECODE_SHIFT_STEPS + 1;
    let near = |s: usize| sel.is_some_and(|sel| s == 0 || sel.near(s, window));
    let mut for_hints = Vec::new();
    for name in stepped.names() {
        let (base, step) = split_step(name);
        if !keep(step) {
            if near(step) {
                let shape = stepped.shape(name).unwrap_or_default();
                for_hints.extend(slice(full, name, base, step, shape, t_full, t_pre, None));
            }
            continue;
        }
        let Some(shape) = stepped.shape(name) else {
            continue;
        };
        match slice(full, name, base, step, shape, t_full, t_pre, None) {
            Some(v) => {
                if let (true, Some(&Step::Narrow { axis, .. })) =
                    (step < k && v.shape == shape, v.steps.first())
                {
                    let fits = if step == 0 {
                        &mut prefill_fits
                    } else {
                        &mut step_fits
                    };
                    fits.entry(base).or_insert(axis);
                }
                tensors.push(v);
            }
            None => unsliced.push(&**name),
        }
    }
    let fitted: Fits<'_> = prefill_fits
        .into_iter()
        .filter(|(base, axis)| step_fits.get(base) == Some(axis))
        .collect();
    // Found by a bad-input hunt: `mlp_out@2` of another width than `mlp_out@1`, which fits,
    // was "only in ours" and the diff passed.
    let mut misfits = Vec::new();
    unsliced.retain(|name| {
        let (base, step) = split_step(name);
        let made = fitted.get(base).and_then(|&axis| {
            let shape = stepped.shape(name)?;
            slice(full, name, base, step, shape, t_full, t_pre, Some(axis))
        });
        match made {
            Some(v) => {
                misfits.push(v);
                false
            }
            None => true,
        }
    });
    tensors.extend(misfits);
    let (absent, unfit): (Vec<&str>, Vec<&str>) = unsliced.iter().partition(|name| {
        source_of(split_step(name).0).is_none_or(|source| full.shape(&source).is_none())
    });
    let list = |names: &[&str]| {
        let shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        format!("{shown}{}", if names.len() > 5 { ", ..." } else { "" })
    };
    if !absent.is_empty() {
        warnings.push(format!(
            "prefill-vs-decode: {} probes of {} have no slice in {} (no probe of that name there, or for a cache slot none of its source, rope_k or v_proj): {}; they are listed as only in ours",
            absent.len(),
            stepped_path.display(),
            full_path.display(),
            list(&absent)
        ));
    }
    if !unfit.is_empty() {
        warnings.push(format!(
            "prefill-vs-decode: {} probes of {} have no slice in {}: no slice of that probe fits them (e.g. attention weights, whose decode shape follows the cache's length, or logits of the last position only on both sides): {}; they are listed as only in ours",
            unfit.len(),
            stepped_path.display(),
            full_path.display(),
            list(&unfit)
        ));
    }
    // A probe the stepped run holds at its prefill or at other decode steps but not at a
    // decode step is a row only in the full prefill there, as a missing probe is in any diff
    // (found by a bad-input hunt: a stepped dump whose decode steps held the embeddings alone
    // passed as "no divergence", missing 0 in every step).
    // (Counted before the rows only in the full prefill: those compare nothing.)
    let compared_steps: std::collections::BTreeSet<usize> =
        tensors.iter().map(|v| split_step(&v.name).1).collect();
    // Held to the steps the stepped file may unfold into, and at least MIN_MISSING_ROWS (a
    // hunt: 400 probes held at the prefill alone and 16,384 empty steps, 218 KB, made 6.5
    // million rows in 11 GB; a review: a small selective dump of 22 probes and 1,000 steps was
    // refused at the unfold budget's floor of 16,384).
    let budget = divergence_dump::unfolded_step_budget(
        std::fs::metadata(stepped_path).map_or(0, |m| m.len()),
    )
    .max(MIN_MISSING_ROWS);
    let missing = match missing_steps(stepped, full, k, &keep, (t_full, t_pre), budget) {
        Ok(missing) => missing,
        Err(rows) => bail!(
            "--prefill-vs-decode: {} lacks probes at decode steps that it holds at its prefill or at other steps: up to {rows} rows only in {}, more than the {budget} its size allows (a decode step per {} bytes, at least {MIN_MISSING_ROWS}); compare fewer steps with --steps",
            stepped_path.display(),
            full_path.display(),
            divergence_dump::BYTES_PER_UNFOLDED_STEP,
        ),
    };
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|v| v.name.as_str()).collect();
        let probes: std::collections::HashSet<&str> =
            names.iter().map(|n| split_step(n).0).collect();
        warnings.push(format!(
            "prefill-vs-decode: {} rows ({} probes) that {} holds at its prefill or at other decode steps are missing at a decode step: {}; they are listed as only in {}",
            missing.len(),
            probes.len(),
            stepped_path.display(),
            list(&names),
            full_path.display()
        ));
    }
    // A probe of the full prefill the stepped run lacks at every step, or at its prefill
    // alone, is "only in ref" too (found by a bad-input hunt: it had no row, and the pair
    // passed with missing 0 at every step, where the mirror case is "only in ours"): one row
    // each, as the one tensor the full prefill holds, at the prefill.
    let (lacking, unlisted) = full_only(stepped, full, &keep, (t_full, t_pre));
    if !lacking.is_empty() || !unlisted.is_empty() {
        let names: Vec<&str> = lacking
            .iter()
            .map(|v| v.name.as_str())
            .chain(unlisted.iter().copied())
            .collect();
        // (Either every one has its row, or none: the prefill is not selected.)
        let rows = if unlisted.is_empty() {
            "they are listed as only in"
        } else {
            "not listed, the prefill not being compared: they are only in"
        };
        warnings.push(format!(
            "prefill-vs-decode: {} probes of {} are missing from {} (at every step, or at its prefill): {}; {rows} {}",
            names.len(),
            full_path.display(),
            stepped_path.display(),
            list(&names),
            full_path.display()
        ));
    }
    let mut missing = missing;
    missing.extend(lacking);
    let extra: Vec<divergence_diff::Name> = missing
        .iter()
        .map(|v| divergence_diff::Name::from(v.name.as_str()))
        .collect();
    if let Some(s) = (0..=k).find(|&s| keep(s) && !compared_steps.contains(&s)) {
        bail!(
            "--prefill-vs-decode: no probe of {} step {s} has a slice in {}: nothing of that step could be compared",
            stepped_path.display(),
            full_path.display()
        );
    }
    tensors.extend(missing);
    let sliced: std::collections::HashSet<String> =
        tensors.iter().map(|v| v.name.clone()).collect();
    tensors.extend(for_hints);
    let label = format!("prefill-vs-decode slices of {}", full_path.display());
    let Some(resolved) = Resolved::from_tensors(tensors, label) else {
        bail!("{}: repeated probe names", stepped_path.display());
    };
    let recorded = stepped
        .meta()
        .map(|m| m.order.clone())
        .filter(|o| !o.is_empty());
    // A safetensors file without our metadata keeps no order (its writer sorts the names): the
    // probes go in the canonical forward order, step by step, as a plain diff does (a
    // bad-input hunt: `lm_head` sorted first was "the first divergence").
    let lost = recorded.is_none() && stepped.format() == divergence_dump::Format::Safetensors;
    let order_source = if recorded.is_some() {
        divergence_diff::OrderSource::SteppedMeta
    } else if lost {
        divergence_diff::OrderSource::Canonical
    } else {
        divergence_diff::OrderSource::SteppedFile
    };
    let mut order: Vec<divergence_diff::Name> = recorded
        .as_deref()
        .unwrap_or_else(|| stepped.names())
        .iter()
        .filter(|n| sliced.contains(&n[..]))
        .cloned()
        .collect();
    if lost {
        // (The canonical order is step by step: its key starts with the step.)
        divergence_names::dataflow::canonical_sort(&mut order);
        warnings.push(format!(
            "{} has no recorded order (safetensors without metadata): its probes are compared in the canonical forward order, step by step",
            divergence_names::one_line(&stepped_path.display().to_string())
        ));
    }
    let order = with_missing(order, extra);
    let notes = vec![format!(
            "prefill-vs-decode: {} (a prefill of {} + {}) against {} (one prefill of {}), position by position: step 0 = positions 0 to {}, step s = position {t_pre} + s - 1",
            stepped_path.display(),
            crate::cmd::counted(t_pre, "token", "tokens"),
            crate::cmd::counted(k, "decode step", "decode steps"),
            full_path.display(),
            crate::cmd::counted(t_full, "token", "tokens"),
            t_pre.saturating_sub(1)
        )];
    Ok(Pair {
        stepped: MappedDump::plain(stepped),
        full: MappedDump::new(full, resolved).with_order(order),
        stepped_path,
        full_path,
        warnings,
        notes,
        order_source,
    })
}

/// The full prefill's slices of the probes `stepped` lacks at a kept decode step (of `k`)
/// though it holds them at its prefill or another decode step: each shaped as the probe is at
/// the first decode step listed that holds it, or, held at the prefill alone, as its prefill's
/// slice narrowed to one position (whether the prefill is selected or not). A probe the full
/// prefill has no slice of gets no row. In step order, each step's in the order the dump first
/// lists the probes.
///
/// `Err(rows)` when it would make more than `budget` rows: how many, counted before any is
/// made.
fn missing_steps(
    stepped: &Dump,
    full: &Dump,
    k: usize,
    keep: &dyn Fn(usize) -> bool,
    (t_full, t_pre): (usize, usize),
    budget: usize,
) -> Result<Vec<Virtual>, usize> {
    use std::collections::{HashMap, HashSet};
    let mut bases: Vec<&str> = Vec::new();
    let mut known: HashSet<&str> = HashSet::new();
    let mut shape_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut held: HashSet<(&str, usize)> = HashSet::new();
    for name in stepped.names() {
        let (base, step) = split_step(name);
        if known.insert(base) {
            bases.push(base);
        }
        held.insert((base, step));
        if step > 0 && !shape_of.contains_key(base) {
            if let Some(shape) = stepped.shape(name) {
                shape_of.insert(base, shape.to_vec());
            }
        }
    }
    // Held at the prefill alone: its slice's token axis narrowed to one position.
    for &base in &bases {
        if shape_of.contains_key(base) || !held.contains(&(base, 0)) {
            continue;
        }
        let Some(v) = stepped
            .shape(base)
            .and_then(|shape| slice(full, base, base, 0, shape, t_full, t_pre, None))
        else {
            continue;
        };
        let Some(&Step::Narrow { axis, .. }) = v.steps.first() else {
            continue;
        };
        let mut shape = v.shape;
        if let Some(n) = shape.get_mut(axis) {
            *n = 1;
            shape_of.insert(base, shape);
        }
    }
    // The rows it makes, counted first: each probe with a shape, at each kept step it lacks.
    let kept = (1..=k).filter(|&s| keep(s)).count();
    let mut held_kept: HashMap<&str, usize> = HashMap::new();
    for &(base, s) in &held {
        if (1..=k).contains(&s) && keep(s) {
            *held_kept.entry(base).or_default() += 1;
        }
    }
    let rows = shape_of.keys().fold(0usize, |n, base| {
        n.saturating_add(kept.saturating_sub(held_kept.get(base).copied().unwrap_or(0)))
    });
    if rows > budget {
        return Err(rows);
    }
    let mut out = Vec::new();
    for s in (1..=k).filter(|&s| keep(s)) {
        for &base in &bases {
            let Some(shape) = shape_of.get(base).filter(|_| !held.contains(&(base, s))) else {
                continue;
            };
            let name = divergence_names::step_name(base, s);
            out.extend(slice(full, &name, base, s, shape, t_full, t_pre, None));
        }
    }
    Ok(out)
}

/// The probes of the full prefill that `stepped` lacks at every step, or at its prefill alone
/// though it holds them at decode steps (a cache slot, held at decode steps only, is no probe
/// of a full prefill): one row each at the prefill where it is kept (`keep(0)`, a prompt of at
/// least one token): a probe of the dump contract held at decode steps as the prefill's slice
/// on its token axis, any other probe whole (its token axis is not known by name: attention
/// weights have two of T, and with T heads three). In the full prefill's order; the names of
/// those left without a row (the prefill not kept) second.
fn full_only<'f>(
    stepped: &Dump,
    full: &'f Dump,
    keep: &dyn Fn(usize) -> bool,
    (t_full, t_pre): (usize, usize),
) -> (Vec<Virtual>, Vec<&'f str>) {
    use std::collections::HashSet;
    let mut held: HashSet<&str> = HashSet::new();
    let mut prefill: HashSet<&str> = HashSet::new();
    for name in stepped.names() {
        let (base, step) = split_step(name);
        held.insert(base);
        if step == 0 {
            prefill.insert(base);
        }
    }
    let prefill_kept = keep(0) && t_pre > 0;
    let (mut rows, mut unlisted) = (Vec::new(), Vec::new());
    for name in full.names() {
        let op = Op::of(name);
        if matches!(op, Op::CacheK | Op::CacheV) || prefill.contains(&**name) {
            continue;
        }
        let absent = !held.contains(&**name);
        let Some(src_shape) = full.shape(name) else {
            continue;
        };
        if !prefill_kept {
            unlisted.push(&**name);
            continue;
        }
        // The prefill's slice of a contract probe the stepped run holds at decode steps.
        let axis = token_axis(op, src_shape.len())
            .filter(|&a| !absent && src_shape.get(a) == Some(&t_full));
        let sliced = axis.and_then(|axis| {
            let mut shape = src_shape.to_vec();
            shape[axis] = t_pre;
            slice(full, name, name, 0, &shape, t_full, t_pre, None)
        });
        let why = if absent {
            "the stepped run holds it at no step"
        } else {
            "its token axis is not known by name"
        };
        rows.push(sliced.unwrap_or_else(|| Virtual {
            name: name.to_string(),
            sources: vec![name.to_string()],
            shape: src_shape.to_vec(),
            combine: None,
            steps: Vec::new(),
            rule: Some("prefill-vs-decode".to_string()),
            how: Some(format!("the full prefill's {name}, whole: {why}")),
            problem: None,
        }));
    }
    (rows, unlisted)
}

/// The fewest rows [`missing_steps`] may make whatever the stepped file's size (~1.7 KB a row:
/// ~220 MB): above the unfold budget's floor, for a small dump that holds few probes at its
/// steps.
const MIN_MISSING_ROWS: usize = 1 << 17;

/// `order` with each of `extra` (names of decode steps) placed after the last name of its step
/// (at the end when its step has none).
fn with_missing(
    order: Vec<divergence_diff::Name>,
    extra: Vec<divergence_diff::Name>,
) -> Vec<divergence_diff::Name> {
    if extra.is_empty() {
        return order;
    }
    let mut last = std::collections::HashMap::new();
    for (i, n) in order.iter().enumerate() {
        last.insert(split_step(n).1, i);
    }
    let mut by_step: std::collections::BTreeMap<usize, Vec<divergence_diff::Name>> =
        Default::default();
    let mut tail = Vec::new();
    for n in extra {
        let s = split_step(&n).1;
        if last.contains_key(&s) {
            by_step.entry(s).or_default().push(n);
        } else {
            tail.push(n);
        }
    }
    let mut out = Vec::with_capacity(order.len() + by_step.values().map(Vec::len).sum::<usize>());
    for (i, n) in order.into_iter().enumerate() {
        let s = split_step(&n).1;
        out.push(n);
        if last.get(&s) == Some(&i) {
            out.extend(by_step.remove(&s).unwrap_or_default());
        }
    }
    out.extend(tail);
    out
}

/// The full prefill's slice that `name` (of step `step`, shape `shape`) must equal, or `None`
/// when the full prefill has no such probe. When the shapes do not fit (a port's wrong shape on
/// either side), for a probe of the dump contract the slice along its token axis, or the whole
/// probe when it has no axis of `t_full` tokens: the diff then reports the row's shape
/// mismatch, never a probe "only in ours" and a pass (the exceptions: at the function's end).
/// `seen_axis`: for a probe outside the contract, the token axis its prefill and another step
/// fit on ([`pair`]), which makes it a shape mismatch too.
#[allow(clippy::too_many_arguments)]
fn slice(
    full: &Dump,
    name: &str,
    base: &str,
    step: usize,
    shape: &[usize],
    t_full: usize,
    t_pre: usize,
    seen_axis: Option<usize>,
) -> Option<Virtual> {
    let op = Op::of(base);
    let (start, len) = match step {
        // Logits of the prompt's last positions only (an engine that keeps the sampled
        // positions'): the full prefill's same positions.
        0 => match shape
            .last()
            .and_then(|&vocab| divergence_diff::last_logit_rows(name, shape, &[t_pre, vocab]))
        {
            Some(l) => (t_pre - l.kept, l.kept),
            None => (0, t_pre),
        },
        _ => (t_pre + step - 1, 1),
    };
    // A step past the full prefill's positions has no slice there (the decode hints read the
    // steps around a selected one: a held-out check's `--steps 0-2` of a 4-step run against
    // the prompt + 2 tokens panicked reading step 3's).
    if start.checked_add(len).is_none_or(|end| end > t_full) {
        return None;
    }
    let source = source_of(base)?;
    let src_shape = full.shape(&source)?.to_vec();
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
    let positions = if len == 1 {
        format!("position {start}")
    } else {
        format!("positions {start}..{}", start + len)
    };
    let virt = |steps: Vec<Step>, shape: Vec<usize>, how: String| Virtual {
        name: name.to_string(),
        sources: vec![source.clone()],
        shape,
        combine: None,
        steps,
        rule: Some("prefill-vs-decode".to_string()),
        how: Some(how),
        problem: None,
    };
    let narrow = |axis: usize| {
        let mut out = src_shape.clone();
        out[axis] = len;
        (vec![Step::Narrow { axis, start, len }], out)
    };
    if op == Op::CacheV {
        // v_proj [B, T, kv*D] at the position -> [B, 1, kv, D] -> [B, kv, 1, D], the cache's
        // layout; a step's slot may drop its size-1 token axis ([B, kv, D]), as any decode
        // probe may (a bad-input hunt: 48 clean `cache_v@s` rows read as shape mismatches).
        let slot = match *shape {
            [b, kv, 1, d] | [b, kv, d] => Some((b, kv, d)),
            _ => None,
        };
        if let Some((b, kv, d)) = slot {
            if kv
                .checked_mul(d)
                .is_some_and(|n| src_shape == [b, t_full, n])
            {
                let (mut steps, _) = narrow(1);
                steps.push(Step::Reshape(vec![b, 1, kv, d]));
                steps.push(Step::Permute(vec![0, 2, 1, 3]));
                let how = format!("{positions} of the full prefill's {source}");
                return Some(virt(steps, vec![b, kv, 1, d], how));
            }
        }
    } else {
        // The token axis: where the full prefill has T and, once narrowed to `len`, the
        // shapes agree exactly; else up to size-1 axes (a port may drop the size-1 token axis
        // of a decode step), the op's own token axis first when several fit (4 heads and 4
        // tokens: rope_q [B, H, T, D] fits at H and at T).
        let narrowed = |i: usize| {
            let mut n = src_shape.clone();
            n[i] = len;
            n
        };
        let axes: Vec<usize> = (0..src_shape.len())
            .filter(|&i| src_shape[i] == t_full && squeeze(&narrowed(i)) == squeeze(shape))
            .collect();
        let own = token_axis(op, src_shape.len());
        let fits = axes
            .iter()
            .copied()
            .find(|&i| narrowed(i) == shape)
            .or_else(|| own.filter(|a| axes.contains(a)))
            .or_else(|| axes.first().copied());
        if let Some(axis) = fits {
            let (steps, out) = narrow(axis);
            let how = format!("{positions} of the full prefill's {source}");
            return Some(virt(steps, out, how));
        }
    }
    // The shapes do not fit. A probe of the dump contract (its token axis known) is then a
    // shape mismatch: the full prefill's token axis at the same positions, or its whole probe
    // when it has no axis of T tokens and another shape. Any other probe (its decode shape may
    // depend on the cache's length: attention weights), or a whole probe of the same shape (the
    // logits of the last position only, on both sides), has no slice: "only in ours"; but
    // one whose prefill and another step fit on an axis (`seen_axis`) is sliced there.
    let axis = match op {
        Op::Other => seen_axis.filter(|&a| src_shape.get(a) == Some(&t_full)),
        _ => own_or_first(token_axis(op, src_shape.len()), &src_shape, t_full),
    };
    match axis {
        Some(axis) => {
            let (steps, out) = narrow(axis);
            let seen = if op == Op::Other {
                ", as its prefill and other steps"
            } else {
                ""
            };
            let how = format!(
                "{positions} of the full prefill's {source} (axis {axis}{seen}; the shapes do not fit)"
            );
            Some(virt(steps, out, how))
        }
        None if op == Op::Other => None,
        None => {
            if squeeze(&src_shape) == squeeze(shape) {
                return None;
            }
            let how =
                format!("the full prefill's {source}, whole: it has no axis of {t_full} tokens");
            Some(virt(Vec::new(), src_shape.clone(), how))
        }
    }
}

/// The full prefill's probe a stepped probe `base` is a slice of: itself, but for the cache
/// slots, `rope_k` (`cache_k`) and `v_proj` (`cache_v`) of the layer.
fn source_of(base: &str) -> Option<String> {
    match Op::of(base) {
        Op::CacheK => divergence_names::sibling(base, Op::Rope(divergence_names::QkKind::K)),
        Op::CacheV => divergence_names::sibling(base, Op::VProj),
        _ => Some(base.to_string()),
    }
}

/// The token axis of a probe of the dump contract, by its layout: q / k after RoPE and the
/// cache slots are `[B, heads, T, head_dim]`, the others `[B, T, ...]`; `None` for any other
/// probe.
fn token_axis(op: Op, rank: usize) -> Option<usize> {
    match op {
        Op::Other => None,
        Op::Rope(_) | Op::CacheK | Op::CacheV => rank.checked_sub(2),
        _ => (rank >= 2).then_some(1),
    }
}

/// `own` when the full prefill has T tokens there, else its first axis of T.
fn own_or_first(own: Option<usize>, src_shape: &[usize], t_full: usize) -> Option<usize> {
    own.filter(|&a| src_shape.get(a) == Some(&t_full))
        .or_else(|| src_shape.iter().position(|&n| n == t_full))
}
