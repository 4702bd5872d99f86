//! Alignment by content for `diff` (docs/mapping.md, "Alignment by content"): when the dumps
//! share few names and no map was given, pair the tensors left over on both sides by execution
//! order, element count and value statistics ([`divergence_diff::align()`]), and write the pairs
//! as a map: the same TOML a user would write, applied like `--map`, and what `--suggest-map`
//! saves (with the layout transforms the rows found).

use std::collections::{HashMap, HashSet};

use divergence_diff::{Confidence, Name, Pair, TensorStats, ValueStats};
use divergence_dump::Dump;
use rayon::prelude::*;

/// Largest tensor whose statistics are computed (decoded bytes); a larger one is paired by its
/// count and place only.
const STATS_MAX_BYTES: u64 = 256 << 20;

/// The pairs to compare, as a map's TOML, and every proposed pair (for `--suggest-map`).
pub struct Inferred {
    /// Rules for the pairs that are compared.
    pub toml: String,
    /// Every pair, with whether it is compared.
    pub pairs: Vec<(Pair, bool)>,
    /// Why nothing was inferred (too many tensors to align), for the report's warnings.
    pub skipped: Option<String>,
    /// Pairs that would be compared but that no map can state (a name with `{` or `}`).
    pub left_out: usize,
}

/// True when fewer than half of the smaller dump's names are in both (after the prefix rule).
pub fn few_in_common(
    plan: &divergence_diff::OrderPlan,
    ours: &divergence_map::MappedDump<'_>,
    reference: &Dump,
) -> bool {
    // The same names on both sides (the common case, checked without hashing them).
    let (o, r) = (ours.names(), reference.names());
    if o.len() == r.len() && o.par_iter().with_min_len(4096).zip(r).all(|(x, y)| x == y) {
        return false;
    }
    // In parallel: a decode dump has tens of thousands of names.
    let common = plan
        .order
        .par_iter()
        .filter(|n| reference.contains(n) && ours.contains(plan.ours_name(n)))
        .count();
    let smaller = ours.names().len().min(reference.names().len());
    smaller > 0 && common * 2 < smaller
}

/// Pairs the probes of each side that the other lacks (`None` when there is nothing to pair).
/// A probe with decode steps is one tensor to align, not one per step: it is weighed by its
/// prefill tensor (else its first step), and its rule names the probe, so that it maps every
/// step (docs/mapping.md, "Decode steps"). Aligned step by step, a 64-step decode of the
/// 0.6B-shaped model (38,489 names a side) was past the bound and nothing was inferred, and a
/// small one made a rule per step.
pub fn infer(ours: &Dump, reference: &Dump) -> Option<Inferred> {
    let (ours_probes, ref_probes) = (probes(ours), probes(reference));
    let ref_names: HashSet<&str> = ref_probes.iter().map(|p| &*p.base).collect();
    let ours_names: HashSet<&str> = ours_probes.iter().map(|p| &*p.base).collect();
    let ours_left: Vec<Probe> = ours_probes
        .iter()
        .filter(|p| !ref_names.contains(&*p.base))
        .cloned()
        .collect();
    let ref_left: Vec<Probe> = ref_probes
        .iter()
        .filter(|p| !ours_names.contains(&*p.base))
        .cloned()
        .collect();
    if ours_left.is_empty() || ref_left.is_empty() {
        return None;
    }
    // Too many to align: said before any tensor is read.
    if ours_left.len().saturating_mul(ref_left.len()) > divergence_diff::align::MAX_CELLS {
        return Some(Inferred {
            toml: String::new(),
            pairs: Vec::new(),
            left_out: 0,
            skipped: Some(format!(
                "few probe names in common, and too many to align by content ({} x {} probes left; at most {} pairs of them are weighed): nothing inferred; give a map (--map)",
                ours_left.len(),
                ref_left.len(),
                divergence_diff::align::MAX_CELLS
            )),
        });
    }
    let (o, r) = rayon::join(|| stats(ours, &ours_left), || stats(reference, &ref_left));
    let pairs = divergence_diff::align(&o, &r);
    if pairs.is_empty() {
        return None;
    }
    // A pair a map cannot state is not compared (and counted as left out).
    let mut left_out = 0;
    let out: Vec<(Pair, bool)> = pairs
        .into_iter()
        .map(|p| {
            let fits = usable(&p.ours) && usable(&p.reference);
            left_out += usize::from(p.compared && !fits);
            let c = p.compared && fits;
            (p, c)
        })
        .collect();
    let mut toml = String::from(
        "# Inferred by `divergence diff` from execution order, element counts and value statistics\n",
    );
    for (p, compared) in &out {
        if *compared {
            toml.push_str(&rule(p, None));
        }
    }
    Some(Inferred {
        toml,
        pairs: out,
        skipped: None,
        left_out,
    })
}

/// A name a map pattern can hold as it is: no capture braces (a map pattern reads `{X}` as a
/// capture and has no escape for them). Quotes, backslashes and control characters are
/// escaped in the TOML ([`toml_string`]).
fn usable(name: &str) -> bool {
    !name.contains(['{', '}'])
}

/// `name` as a TOML basic string: quoted, with `"`, `\` and control characters escaped.
fn toml_string(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// One `[[rule]]` for a pair, optionally with a layout transform (a TOML fragment).
pub fn rule(p: &Pair, transform: Option<&str>) -> String {
    let how = match (p.confidence, p.stats_diff) {
        (Confidence::Same, _) => "same values".to_string(),
        (Confidence::Close, Some(d)) => format!("statistics within {:.1}%", d * 100.0),
        _ => "element count and execution order only".to_string(),
    };
    let mut s = format!(
        "\n[[rule]]\nfrom = {}\nto = {}\nnote = \"inferred by content: {how}\"\n",
        toml_string(&p.ours),
        toml_string(&p.reference)
    );
    if let Some(t) = transform {
        s.push_str(t);
        s.push('\n');
    }
    s
}

/// A probe to align: its name (a decode step's without the step) and the tensor that stands
/// for it (its prefill's, else its first step's).
#[derive(Clone)]
struct Probe {
    base: String,
    tensor: Name,
}

/// The probes of `dump` in execution order (each at its first name), each with the tensor
/// that stands for it.
fn probes(dump: &Dump) -> Vec<Probe> {
    let mut at: std::collections::HashMap<String, usize> = Default::default();
    let mut out: Vec<Probe> = Vec::new();
    let mut steps: Vec<usize> = Vec::new();
    for name in order(dump) {
        let (base, step) = divergence_names::split_step(&name);
        match at.get(base) {
            Some(&i) => {
                if step < steps[i] {
                    steps[i] = step;
                    out[i].tensor = name.clone();
                }
            }
            None => {
                at.insert(base.to_string(), out.len());
                steps.push(step);
                out.push(Probe {
                    base: base.to_string(),
                    tensor: name.clone(),
                });
            }
        }
    }
    out
}

/// Names in execution order: the metadata's, else the file's (natural order for a
/// safetensors file, whose keys are stored sorted: `op_2` before `op_10`).
fn order(dump: &Dump) -> Vec<Name> {
    let names: HashSet<&str> = dump.names().iter().map(|n| &**n).collect();
    match dump.meta().map(|m| &m.order).filter(|o| !o.is_empty()) {
        Some(o) => {
            let mut v: Vec<Name> = o
                .iter()
                .filter(|n| names.contains(&***n))
                .cloned()
                .collect();
            let seen: HashSet<&str> = v.iter().map(|n| &**n).collect::<HashSet<_>>();
            let extra: Vec<Name> = dump
                .names()
                .iter()
                .filter(|n| !seen.contains(&***n))
                .cloned()
                .collect();
            v.extend(extra);
            v
        }
        None if dump.format() == divergence_dump::Format::Safetensors => {
            let mut v = dump.names().to_vec();
            v.sort_by(|a, b| divergence_names::natural_cmp(a, b));
            v
        }
        None => dump.names().to_vec(),
    }
}

/// The statistics of each probe, from the tensor that stands for it, under the probe's name.
fn stats(dump: &Dump, probes: &[Probe]) -> Vec<TensorStats> {
    probes
        .par_iter()
        .map(|p| {
            let n: &str = &p.tensor;
            let shape = dump.shape(n).unwrap_or_default();
            let numel: u64 = shape.iter().map(|&d| d as u64).product();
            let dims = shape.iter().copied().filter(|&d| d != 1).collect();
            let small = dump.is_zero_copy(n) || numel.saturating_mul(8) <= STATS_MAX_BYTES;
            let values = small
                .then(|| dump.view(n).ok())
                .flatten()
                .map(|t| ValueStats::of(t.values()));
            TensorStats {
                name: p.base.clone(),
                numel,
                dims,
                values,
            }
        })
        .collect()
}

/// The report warning of an inferred alignment.
pub fn summary(inf: &Inferred) -> String {
    if let Some(why) = &inf.skipped {
        return why.clone();
    }
    let count = |c: Confidence| inf.pairs.iter().filter(|(p, _)| p.confidence == c).count();
    let compared = inf.pairs.iter().filter(|(_, c)| *c).count();
    let left_out = match inf.left_out {
        0 => String::new(),
        n => format!(
            "; {n} left out, their names holding `{{` or `}}`, which a map pattern reads as a capture"
        ),
    };
    format!(
        "few probe names in common: {} pairs aligned by content (execution order, element counts, value statistics): {} with the same values, {} close, {} by count and order only; {compared} compared, their rows say `inferred by content` (mapped){left_out}; --suggest-map FILE writes them as a map to check",
        inf.pairs.len(),
        count(Confidence::Same),
        count(Confidence::Close),
        count(Confidence::OrderOnly)
    )
}

/// The `--suggest-map` file: the inferred pairs (those not compared commented out) and the
/// layout rules of the shape mismatches a layout change explains; with the number of rules
/// left out past [`divergence_map::MAX_RULES`] (a map of more is refused by `--map`: 12,000
/// per-tensor layout rules were written, found by a bad-input hunt).
///
/// A probe's decode steps are one rule, `x@{S}` (their tensors hold one token where the
/// prefill's hold the prompt: another reshape): a rule for `x` alone maps every step too, and
/// a prefill's re-layout applied to its steps failed the map that the file suggested.
/// `stepped` counts the decode steps of each of our probes that has some.
pub fn suggestion(
    inf: Option<&Inferred>,
    layouts: &[(String, String, String)],
    stepped: &HashMap<&str, usize>,
) -> (String, usize) {
    let mut s = String::from(
        "# Suggested by `divergence diff --suggest-map` (docs/mapping.md): check every rule, then\n# pass this file back with --map.\n",
    );
    let by_probe = probe_layouts(layouts);
    let mut done: HashSet<(&str, &str)> = HashSet::new();
    let (mut rules, mut left_out) = (0usize, 0usize);
    let mut push = |text: String, s: &mut String| {
        if rules == divergence_map::MAX_RULES {
            left_out += 1;
        } else {
            rules += 1;
            s.push_str(&text);
        }
    };
    if let Some(inf) = inf {
        for (p, compared) in &inf.pairs {
            if !(usable(&p.ours) && usable(&p.reference)) {
                continue;
            }
            let layout = by_probe.get(&p.ours, &p.reference);
            let prefill = layout.and_then(|l| l.prefill);
            let steps = stepped.get(p.ours.as_str()).copied().unwrap_or(0);
            let texts = std::iter::once(rule(p, prefill)).chain(step_rules(
                &p.ours,
                &p.reference,
                prefill,
                layout,
                steps,
            ));
            done.insert((&p.ours, &p.reference));
            for text in texts {
                if *compared {
                    push(text, &mut s);
                } else {
                    s.push_str(
                        "\n# not compared (paired by element count and order only: check it)",
                    );
                    for line in text.lines().filter(|l| !l.is_empty()) {
                        s.push_str("\n# ");
                        s.push_str(line);
                    }
                    s.push('\n');
                }
            }
        }
    }
    for (&(from, to), layout) in &by_probe.order() {
        if done.contains(&(from, to)) || !(usable(from) && usable(to)) {
            continue;
        }
        if let Some(t) = layout.prefill {
            push(layout_rule(from, to, t), &mut s);
        }
        let steps = stepped.get(from).copied().unwrap_or(0);
        for text in step_rules(from, to, layout.prefill, Some(layout), steps) {
            push(text, &mut s);
        }
    }
    if left_out > 0 {
        s.push_str(&format!(
            "\n# {left_out} more rules left out: a map holds at most {} rules. Fix what these \
             show, then suggest again.\n",
            divergence_map::MAX_RULES
        ));
    }
    (s, left_out)
}

/// A layout rule, `from` -> `to` with `transform`.
fn layout_rule(from: &str, to: &str, transform: &str) -> String {
    format!(
        "\n[[rule]]\nfrom = {}\nto = {}\n{transform}\nnote = \"layout change found by divergence diff\"\n",
        toml_string(from),
        toml_string(to)
    )
}

/// The layout changes found for one probe: its prefill's, and its decode steps'.
#[derive(Default)]
struct ProbeLayout<'a> {
    prefill: Option<&'a str>,
    /// `(step, transform)` of each step with a layout change, in the rows' order.
    steps: Vec<(usize, &'a str)>,
}

/// The layout rows by probe (`(ours, reference)` without their step), in the rows' order.
struct ByProbe<'a> {
    keys: Vec<(&'a str, &'a str)>,
    map: HashMap<(String, String), ProbeLayout<'a>>,
}

impl<'a> ByProbe<'a> {
    fn get(&self, from: &str, to: &str) -> Option<&ProbeLayout<'a>> {
        self.map.get(&(from.to_string(), to.to_string()))
    }

    fn order(&self) -> Vec<(&(&'a str, &'a str), &ProbeLayout<'a>)> {
        self.keys
            .iter()
            .filter_map(|k| Some((k, self.get(k.0, k.1)?)))
            .collect()
    }
}

fn probe_layouts(layouts: &[(String, String, String)]) -> ByProbe<'_> {
    let mut by = ByProbe {
        keys: Vec::new(),
        map: Default::default(),
    };
    for (from, to, transform) in layouts {
        let ((fb, fs), (tb, ts)) = (
            divergence_names::split_step(from),
            divergence_names::split_step(to),
        );
        // A step mapped onto another step of the reference: a rule of its own.
        let (key, step) = if fs == ts {
            ((fb, tb), fs)
        } else {
            ((from.as_str(), to.as_str()), 0)
        };
        let entry = by
            .map
            .entry((key.0.to_string(), key.1.to_string()))
            .or_insert_with(|| {
                by.keys.push(key);
                ProbeLayout::default()
            });
        if step == 0 {
            entry.prefill = Some(transform);
        } else {
            entry.steps.push((step, transform));
        }
    }
    by
}

/// The rules for the decode steps of probe `from` -> `to`, of which ours holds `steps`: one
/// rule `from@{S}` -> `to@{S}` with the steps' layout change when each of them has the same
/// one (else a rule per step that has one); or, when the probe's prefill is re-laid out
/// (`prefill`) and its steps are not, the steps renamed alone (the prefill's rule would
/// re-lay them out too). None when the probe's own rule, if any, maps its steps as they are.
fn step_rules(
    from: &str,
    to: &str,
    prefill: Option<&str>,
    layout: Option<&ProbeLayout<'_>>,
    steps: usize,
) -> Vec<String> {
    let changed = layout.map(|l| l.steps.as_slice()).unwrap_or_default();
    let every = |transform: &str, note: &str| {
        format!(
            "\n[[rule]]\nfrom = {}\nto = {}\n{transform}note = \"{note}\"\n",
            toml_string(&format!("{from}@{{S}}")),
            toml_string(&format!("{to}@{{S}}"))
        )
    };
    match changed.first() {
        None if prefill.is_some() && steps > 0 => vec![every(
            "",
            "the decode steps of the rule above, as they are (one token each)",
        )],
        None => Vec::new(),
        Some(&(_, first)) if changed.len() == steps && changed.iter().all(|&(_, t)| t == first) => {
            vec![every(
                &format!("{first}\n"),
                "layout change found by divergence diff, every decode step",
            )]
        }
        Some(_) => {
            let mut rules: Vec<String> = changed
                .iter()
                .map(|&(step, t)| {
                    layout_rule(&format!("{from}@{step}"), &format!("{to}@{step}"), t)
                })
                .collect();
            // the steps without a change, shielded from the prefill's
            if prefill.is_some() && changed.len() < steps {
                rules.push(every(
                    "",
                    "the other decode steps of the rule above, as they are",
                ));
            }
            rules
        }
    }
}
