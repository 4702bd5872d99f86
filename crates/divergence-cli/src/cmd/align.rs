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
    /// Every pair (`Pair::compared` says whether it is compared).
    pub pairs: Vec<Pair>,
    /// Why nothing was inferred (too many tensors to align), for the report's warnings.
    pub skipped: Option<String>,
    /// The probes left over on each side that no compared pair holds (ours', the
    /// reference's): their rows are only in one file.
    pub unpaired: (Vec<String>, Vec<String>),
}

/// True when fewer than half of the smaller dump's names are in both (after the prefix rule).
pub fn few_in_common(
    plan: &divergence_diff::OrderPlan,
    ours: &divergence_map::MappedDump<'_>,
    reference: &Dump,
) -> bool {
    // The same names on both sides (the common case, checked without hashing them).
    let (o, r) = (ours.names(), reference.names());
    if o == r {
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
/// When both dumps have decode steps, a probe with steps is one tensor to align, not one per
/// step: it is weighed by its prefill tensor (else its first step), and its rule names the
/// probe, so that it maps every step (docs/mapping.md, "Decode steps"); the probes left
/// unpaired are then weighed by their first step, and aligned once more (a probe whose
/// prefill one side alone dumps). Aligned step by step, a 64-step decode of the 0.6B-shaped
/// model (38,489 names a side) was past the bound and nothing was inferred, and a small one
/// made a rule per step. When one side has no decode steps, each name is its own probe
/// (`x@4` of a one-pass dump is not a step of `x` that the other side could hold).
pub fn infer(ours: &Dump, reference: &Dump) -> Option<Inferred> {
    let by_probe = has_steps(ours) && has_steps(reference);
    let (ours_probes, ref_probes) = (probes(ours, by_probe), probes(reference, by_probe));
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
            unpaired: Default::default(),
            skipped: Some(format!(
                "few probe names in common, and too many to align by content ({} x {} probes left; at most {} pairs of them are weighed): nothing inferred; give a map (--map)",
                ours_left.len(),
                ref_left.len(),
                divergence_diff::align::MAX_CELLS
            )),
        });
    }
    let weigh = |left: &[Probe], first_step: bool| -> Vec<(String, Name)> {
        left.iter()
            .filter_map(|p| {
                let t = if first_step {
                    p.first_step.clone()?
                } else {
                    p.tensor.clone()
                };
                Some((p.base.clone(), t))
            })
            .collect()
    };
    let align = |o: &[(String, Name)], r: &[(String, Name)]| {
        let (o, r) = rayon::join(|| stats(ours, o), || stats(reference, r));
        divergence_diff::align(&o, &r)
    };
    let mut pairs = align(&weigh(&ours_left, false), &weigh(&ref_left, false));
    if by_probe {
        // The probes no compared pair holds, by their first decode step.
        let held = |side: fn(&Pair) -> &str| -> HashSet<String> {
            pairs
                .iter()
                .filter(|p| p.compared)
                .map(|p| side(p).to_string())
                .collect()
        };
        let (o_held, r_held) = (held(|p| &p.ours), held(|p| &p.reference));
        let o2: Vec<Probe> = ours_left
            .iter()
            .filter(|p| !o_held.contains(&p.base))
            .cloned()
            .collect();
        let r2: Vec<Probe> = ref_left
            .iter()
            .filter(|p| !r_held.contains(&p.base))
            .cloned()
            .collect();
        let (o2, r2) = (weigh(&o2, true), weigh(&r2, true));
        if !o2.is_empty() && !r2.is_empty() {
            let more: Vec<Pair> = align(&o2, &r2).into_iter().filter(|p| p.compared).collect();
            let o_more: HashSet<&str> = more.iter().map(|p| p.ours.as_str()).collect();
            let r_more: HashSet<&str> = more.iter().map(|p| p.reference.as_str()).collect();
            // a guess of the first pass (not compared) gives way to a pair of the second
            pairs.retain(|p| {
                p.compared
                    || !(o_more.contains(p.ours.as_str()) || r_more.contains(p.reference.as_str()))
            });
            pairs.extend(more);
        }
        // The names' word on the pairs of both passes at once (the second has few confident
        // pairs of its own to tell whether the names speak: a review found a swap of k and v
        // among its probes paired by values, an ok row).
        divergence_diff::align::heed_names(
            &mut pairs,
            ours_left.iter().map(|p| p.base.as_str()),
            ref_left.iter().map(|p| p.base.as_str()),
        );
    }
    // Nothing pairs (no count of one side's leftovers on the other: another prompt length, a
    // head count wrong everywhere; or every pair was of two ops by the names): said, rather
    // than nothing (a review found such a pair of
    // dumps passed with no warning, and --suggest-map said they needed no map).
    if pairs.is_empty() {
        let names = |left: &[Probe]| left.iter().map(|p| p.base.clone()).collect();
        return Some(Inferred {
            toml: String::new(),
            pairs: Vec::new(),
            skipped: Some(format!(
                "few probe names in common, and none of the {} probes left of ours pairs by \
                 content with one of the {} left of the reference (no element count in \
                 common in execution order, or only pairs the names call two ops): nothing \
                 inferred, their rows are in one file only; give a map (--map)",
                ours_left.len(),
                ref_left.len()
            )),
            unpaired: (names(&ours_left), names(&ref_left)),
        });
    }
    let mut toml = String::from(
        "# Inferred by `divergence diff` from execution order, element counts and value statistics\n",
    );
    for p in pairs.iter().filter(|p| p.compared) {
        toml.push_str(&rule(p, None));
    }
    // What no compared pair holds: a probe whose values are all wrong pairs by no statistic
    // (found by a bad-input hunt: the cache slots of `cache-overwrite`, empty at every step,
    // were left on both sides, and the first divergence moved to the op after them).
    let held: (HashSet<&str>, HashSet<&str>) = pairs
        .iter()
        .filter(|p| p.compared)
        .map(|p| (p.ours.as_str(), p.reference.as_str()))
        .unzip();
    let unpaired = |left: &[Probe], held: &HashSet<&str>| -> Vec<String> {
        left.iter()
            .filter(|p| !held.contains(p.base.as_str()))
            .map(|p| p.base.clone())
            .collect()
    };
    let unpaired = (unpaired(&ours_left, &held.0), unpaired(&ref_left, &held.1));
    Some(Inferred {
        toml,
        pairs,
        skipped: None,
        unpaired,
    })
}

/// `name` as a map's `from` or `to` that names it literally: its braces doubled (a map
/// pattern reads `{X}` as a capture), as a TOML string ([`toml_string`]).
fn name_string(name: &str) -> String {
    toml_string(&divergence_map::escape_braces(name))
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
    let how = match kind(p) {
        PairKind::Same => "same values".to_string(),
        PairKind::Close(d) => format!("statistics within {:.1}%", d * 100.0),
        PairKind::LastSegment => {
            "element count and the name's last segment, not the values".to_string()
        }
        PairKind::OrderOnly => "element count and execution order only".to_string(),
    };
    let mut s = format!(
        "\n[[rule]]\nfrom = {}\nto = {}\nnote = \"inferred by content: {how}\"\n",
        name_string(&p.ours),
        name_string(&p.reference)
    );
    if let Some(t) = transform {
        s.push_str(t);
        s.push('\n');
    }
    s
}

/// What paired two probes, as a rule's note and the report's warning say it: one reading for
/// both, so that they cannot tell a pair apart differently.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PairKind {
    Same,
    /// Statistics within this relative difference.
    Close(f64),
    /// The element count and the names' last dotted segment, the values differing:
    /// `top.embed_tokens` with `model.embed_tokens` ("execution order only" read as a guess).
    LastSegment,
    /// The element count and the place in execution order alone.
    OrderOnly,
}

fn kind(p: &Pair) -> PairKind {
    let leaf = |n: &str| n.rsplit('.').next().unwrap_or(n).to_owned();
    match (p.confidence, p.stats_diff) {
        (Confidence::Same, _) => PairKind::Same,
        (Confidence::Close, Some(d)) => PairKind::Close(d),
        _ if leaf(&p.ours) == leaf(&p.reference) => PairKind::LastSegment,
        _ => PairKind::OrderOnly,
    }
}

/// A probe to align: its name (a decode step's without the step), the tensor that stands for
/// it (its prefill's, else its first step's), and its first step's.
#[derive(Clone)]
struct Probe {
    base: String,
    tensor: Name,
    first_step: Option<Name>,
}

/// True when `dump` holds a decode step (`x@s`, s >= 1).
fn has_steps(dump: &Dump) -> bool {
    dump.names()
        .par_iter()
        .any(|n| divergence_names::split_step(n).1 > 0)
}

/// The probes of `dump` in execution order (each at its first name), each with the tensors
/// that stand for it; with `by_probe` false, each name is a probe of its own.
fn probes(dump: &Dump, by_probe: bool) -> Vec<Probe> {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Probe> = Vec::new();
    // each probe's lowest step, and lowest decode step
    let mut lowest: Vec<(usize, usize)> = Vec::new();
    for name in order(dump) {
        let (base, step) = match by_probe {
            true => divergence_names::split_step(&name),
            false => (&*name, 0),
        };
        match at.get(base) {
            Some(&i) => {
                if step < lowest[i].0 {
                    lowest[i].0 = step;
                    out[i].tensor = name.clone();
                }
                if step > 0 && step < lowest[i].1 {
                    lowest[i].1 = step;
                    out[i].first_step = Some(name.clone());
                }
            }
            None => {
                at.insert(base.to_string(), out.len());
                lowest.push((step, if step > 0 { step } else { usize::MAX }));
                out.push(Probe {
                    base: base.to_string(),
                    tensor: name.clone(),
                    first_step: (step > 0).then(|| name.clone()),
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

/// The statistics of each probe `(name, tensor that stands for it)`, under the probe's name.
fn stats(dump: &Dump, probes: &[(String, Name)]) -> Vec<TensorStats> {
    probes
        .par_iter()
        .map(|(probe, n)| {
            let shape = dump.shape(n).unwrap_or_default();
            let numel: u64 = shape.iter().map(|&d| d as u64).product();
            let dims = shape.iter().copied().filter(|&d| d != 1).collect();
            let small = dump.is_zero_copy(n) || numel.saturating_mul(8) <= STATS_MAX_BYTES;
            let values = small
                .then(|| dump.view(n).ok())
                .flatten()
                .map(|t| ValueStats::of(t.values()));
            TensorStats {
                name: probe.clone(),
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
    // Counted as their rules' notes read them.
    let count = |f: fn(PairKind) -> bool| inf.pairs.iter().filter(|p| f(kind(p))).count();
    let named = count(|k| k == PairKind::LastSegment);
    let by_name = if named > 0 {
        format!(", {named} by count and the name's last segment")
    } else {
        String::new()
    };
    let compared = inf.pairs.iter().filter(|p| p.compared).count();
    let (o, r) = &inf.unpaired;
    let unpaired = if o.is_empty() && r.is_empty() {
        String::new()
    } else {
        let list = |names: &[String]| {
            let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            let more = if names.len() > 3 { ", ..." } else { "" };
            divergence_names::one_line(&format!("{}{more}", shown.join(", "))).into_owned()
        };
        let side = |names: &[String], whose: &str| {
            (!names.is_empty())
                .then(|| format!("{} probes of {whose} ({})", names.len(), list(names)))
        };
        let sides: Vec<String> = [side(o, "ours"), side(r, "the reference")]
            .into_iter()
            .flatten()
            .collect();
        format!(
            "; in no compared pair, their rows in one file only: {} (a probe whose values are all wrong, such as a cache slot never written, matches no probe of the other side by its statistics; the first divergence may lie in such a probe: a map (--map) pairs them)",
            sides.join(" and ")
        )
    };
    format!(
        "few probe names in common: {} pairs aligned by content (execution order, element counts, value statistics): {} with the same values, {} close{by_name}, {} by count and order only; {compared} compared, their rows say `inferred by content` (mapped){unpaired}; --suggest-map FILE writes them as a map to check",
        inf.pairs.len(),
        count(|k| k == PairKind::Same),
        count(|k| matches!(k, PairKind::Close(_))),
        count(|k| k == PairKind::OrderOnly)
    )
}

/// Whether a probe of ours has a prefill tensor, and which decode steps it holds.
#[derive(Debug, Default, Clone)]
pub struct ProbeSteps {
    pub prefill: bool,
    /// Its decode steps' numbers.
    pub steps: Vec<usize>,
}

/// The `--suggest-map` file: the inferred pairs (those not compared commented out) and the
/// layout rules of the shape mismatches a layout change explains; with the number of rules
/// left out past [`divergence_map::MAX_RULES`] (a map of more is refused by `--map`: 12,000
/// per-tensor layout rules were written, found by a bad-input hunt). A probe's rules are
/// written or left out together (its prefill's rule without the rule that keeps it from its
/// steps would fail the map).
///
/// `layouts` holds every shape mismatch: our name, the row's, and the layout change that
/// explains it, if one does. A probe's decode steps are one rule, `x@{S}` (their tensors hold
/// one token where the prefill's hold the prompt: another reshape), when every step is a
/// shape mismatch and every change found is the same (a step whose values differ as well is
/// re-laid out and then shows its error); a rule for `x` alone maps every step too, and a
/// prefill's re-layout applied to its steps failed the map that the file suggested. `probes`
/// says which of our probes have a prefill, and their steps.
pub fn suggestion(
    inf: Option<&Inferred>,
    layouts: &[(String, String, Option<String>)],
    composed: &[(String, String)],
    probes: &HashMap<&str, ProbeSteps>,
) -> (String, usize) {
    let mut s = String::from(
        "# Suggested by `divergence diff --suggest-map` (docs/mapping.md): check every rule, then\n# pass this file back with --map.\n",
    );
    let by_probe = probe_layouts(layouts);
    let mut done: HashSet<(&str, &str)> = HashSet::new();
    let (mut rules, mut left_out) = (0usize, 0usize);
    let mut push = |group: Vec<String>, s: &mut String| {
        if rules + group.len() > divergence_map::MAX_RULES {
            left_out += group.len();
        } else {
            rules += group.len();
            group.iter().for_each(|text| s.push_str(text));
        }
    };
    let none = ProbeSteps::default();
    let steps_of = |probe: &str| probes.get(probe).unwrap_or(&none);
    if let Some(inf) = inf {
        for p in &inf.pairs {
            // A pair a map cannot hold as a rule (ours' probe onto a decode step's name of
            // the reference's, where only the reference has steps): said, not written as a
            // rule `--map` refuses (a review: the file did not pass back).
            if let Some(problem) = divergence_map::target_problem(&p.reference, &p.ours) {
                s.push_str(&format!(
                    "\n# not a rule a map may hold ({}):\n# from = {}\n# to = {}\n",
                    divergence_names::one_line(&problem),
                    toml_string(&p.ours),
                    toml_string(&p.reference)
                ));
                done.insert((&p.ours, &p.reference));
                continue;
            }
            let layout = by_probe.get(&p.ours, &p.reference);
            let prefill = layout.and_then(|l| l.prefill);
            let ours = steps_of(&p.ours);
            let (steps, all) = step_rules(&p.ours, &p.reference, prefill, layout, &ours.steps);
            // a probe without a prefill whose every step has a rule of its own: its probe
            // rule would match nothing (an error when passed back)
            let mut group = Vec::new();
            if ours.prefill || !all {
                group.push(rule(p, prefill));
            }
            group.extend(steps);
            done.insert((&p.ours, &p.reference));
            if p.compared {
                push(group, &mut s);
            } else {
                for text in group {
                    s.push_str(
                        "\n# not compared (paired by element count and place, not the values: check it)",
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
        if done.contains(&(from, to)) {
            continue;
        }
        let mut group = Vec::new();
        if let Some(t) = layout.prefill {
            group.push(layout_rule(from, to, t));
        }
        let (steps, _) = step_rules(
            from,
            to,
            layout.prefill,
            Some(layout),
            &steps_of(from).steps,
        );
        group.extend(steps);
        if !group.is_empty() {
            push(group, &mut s);
        }
    }
    // Rows a rule of the given map made (split, permuted, combined) whose values agree under
    // a layout change: a rule of this file cannot hold it (it would need composing with the
    // map's own), so the file says which transform each needs (a newcomer's run: they were
    // left out, and the file said that no layout change was found).
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let composed: Vec<(&str, &str)> = composed
        .iter()
        .map(|(name, t)| (divergence_names::split_step(name).0, t.as_str()))
        .filter(|&key| seen.insert(key))
        .collect();
    if !composed.is_empty() {
        let n = composed.len();
        s.push_str(&format!(
            "\n# {n} {} made by the map's own rules {} the reference's under a layout change that \
             a rule of this file cannot hold (it would need composing with yours): add it to the \
             transform of the rule that makes {} (docs/mapping.md):\n",
            if n == 1 { "probe" } else { "probes" },
            if n == 1 { "matches" } else { "match" },
            if n == 1 { "it" } else { "each" },
        ));
        const LISTED: usize = 20;
        for (name, t) in composed.iter().take(LISTED) {
            s.push_str(&format!("#   {}: {t}\n", divergence_names::one_line(name)));
        }
        if n > LISTED {
            s.push_str(&format!("#   ... and {} more\n", n - LISTED));
        }
    }
    // No rule: said, with why, rather than a file that --map refuses without a word (a
    // bad-input hunt, 2026-12-04); "these dumps need no map" only where nothing was left to
    // pair by content (a review found it said with every probe left unpaired).
    if rules == 0 && left_out == 0 {
        let why = match inf {
            Some(Inferred {
                skipped: Some(why), ..
            }) => format!("{why}."),
            Some(inf) if !inf.pairs.is_empty() => "no pair found by content is sure enough \
                 to compare (those paired by element count and place, not the values, are the \
                 comments above): check them, and write the rules by hand (docs/mapping.md)."
                .to_string(),
            _ if !composed.is_empty() => "the probes pair by their names, and the only \
                 layout changes found are in rows the given map makes (above): change its \
                 rules (--map refuses a file without a rule)."
                .to_string(),
            _ => "the probes pair by their names (as they are, or by the prefix rule the \
                 report's warning names; a probe only in one file is a row of the report), \
                 and no layout change was found: these dumps need no map (--map refuses a \
                 file without a rule)."
                .to_string(),
        };
        s.push_str("\n# No rule: ");
        s.push_str(&why);
        s.push('\n');
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
        name_string(from),
        name_string(to)
    )
}

/// The shape mismatches of one probe: the layout change of its prefill, if one explains it,
/// and its decode steps' (`None`: none explains that step).
#[derive(Default)]
struct ProbeLayout<'a> {
    prefill: Option<&'a str>,
    steps: Vec<(usize, Option<&'a str>)>,
}

/// The shape mismatches by probe (`(ours, reference)` without their step), in the rows' order.
struct ByProbe<'a> {
    keys: Vec<(&'a str, &'a str)>,
    map: HashMap<(&'a str, &'a str), ProbeLayout<'a>>,
}

impl<'a> ByProbe<'a> {
    fn get<'s>(&'s self, from: &'s str, to: &'s str) -> Option<&'s ProbeLayout<'s>> {
        // (the map's names outlive `'s`: it is read as a map of shorter-lived names)
        let map: &'s HashMap<(&'s str, &'s str), ProbeLayout<'s>> = &self.map;
        map.get(&(from, to))
    }

    fn order(&self) -> Vec<(&(&'a str, &'a str), &ProbeLayout<'a>)> {
        self.keys
            .iter()
            .filter_map(|k| Some((k, self.map.get(k)?)))
            .collect()
    }
}

fn probe_layouts(layouts: &[(String, String, Option<String>)]) -> ByProbe<'_> {
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
        let entry = by.map.entry(key).or_insert_with(|| {
            by.keys.push(key);
            ProbeLayout::default()
        });
        match step {
            0 => entry.prefill = entry.prefill.or(transform.as_deref()),
            s => entry.steps.push((s, transform.as_deref())),
        }
    }
    by
}

/// The rules for the decode steps of probe `from` -> `to`, of which ours holds `numbers`, and
/// whether they name every step. What most steps need is one rule, `from@{S}` -> `to@{S}`:
/// the layout change found most often (a shape mismatch that no change explains, a step whose
/// values differ too, takes it and then shows its error), or, when most steps are not shape
/// mismatches, the steps as they are (needed only when the prefill is re-laid out: its rule
/// would re-lay them out too). The other steps get a rule each, before it (the first rule
/// that names a step wins). Nothing when no step needs a rule of its own.
fn step_rules(
    from: &str,
    to: &str,
    prefill: Option<&str>,
    layout: Option<&ProbeLayout<'_>>,
    numbers: &[usize],
) -> (Vec<String>, bool) {
    let steps = numbers.len();
    let mismatched = layout.map(|l| l.steps.as_slice()).unwrap_or_default();
    // How many steps each change explains, the most first (ties: in order of first step).
    let mut changes: Vec<(&str, usize)> = Vec::new();
    for &(_, t) in mismatched {
        if let Some(t) = t {
            match changes.iter_mut().find(|(c, _)| *c == t) {
                Some((_, n)) => *n += 1,
                None => changes.push((t, 1)),
            }
        }
    }
    changes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let unexplained = mismatched.iter().filter(|(_, t)| t.is_none()).count();
    let as_is = steps.saturating_sub(mismatched.len());
    // The change most steps need (the unexplained mismatches with it), else none.
    let main = changes
        .first()
        .filter(|(_, n)| n + unexplained > as_is)
        .map(|&(t, _)| t);
    let every = |transform: &str, note: &str| {
        format!(
            "\n[[rule]]\nfrom = {}\nto = {}\n{transform}note = \"{note}\"\n",
            toml_string(&format!("{}@{{S}}", divergence_map::escape_braces(from))),
            toml_string(&format!("{}@{{S}}", divergence_map::escape_braces(to)))
        )
    };
    let one = |step: usize, t: Option<&str>| match t {
        Some(t) => layout_rule(&format!("{from}@{step}"), &format!("{to}@{step}"), t),
        None => format!(
            "\n[[rule]]\nfrom = {}\nto = {}\nnote = \"a decode step as it is\"\n",
            name_string(&format!("{from}@{step}")),
            name_string(&format!("{to}@{step}"))
        ),
    };
    match main {
        Some(main) => {
            // the steps as they are, and those of another change, each named; then the rest
            let changed: HashSet<usize> = mismatched.iter().map(|&(s, _)| s).collect();
            let mut rules: Vec<String> = numbers
                .iter()
                .filter(|s| !changed.contains(s))
                .map(|&s| one(s, None))
                .collect();
            rules.extend(
                mismatched
                    .iter()
                    .filter(|&&(_, t)| t.is_some_and(|t| t != main))
                    .map(|&(s, t)| one(s, t)),
            );
            rules.push(every(
                &format!("{main}\n"),
                "layout change found by divergence diff, the decode steps",
            ));
            (rules, true)
        }
        None => {
            let mut rules: Vec<String> = mismatched
                .iter()
                .filter(|(_, t)| t.is_some())
                .map(|&(s, t)| one(s, t))
                .collect();
            if prefill.is_some() && steps > rules.len() {
                rules.push(every(
                    "",
                    "the decode steps of the rule above that no rule re-lays out, as they are",
                ));
                return (rules, true);
            }
            let all = steps > 0 && rules.len() == steps;
            (rules, all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "transform = [{ permute = [1, 0] }]";
    const T: &str = "transform = [{ reshape = [4, 2] }, { permute = [1, 0] }]";

    fn stepped(steps: std::ops::RangeInclusive<usize>) -> ProbeSteps {
        ProbeSteps {
            prefill: true,
            steps: steps.collect(),
        }
    }

    #[test]
    fn a_pair_by_its_names_last_segment_says_so() {
        let pair = |ours: &str, reference: &str| Pair {
            ours: ours.into(),
            reference: reference.into(),
            confidence: Confidence::OrderOnly,
            stats_diff: Some(0.9),
            compared: true,
        };
        assert!(rule(&pair("top.embed_tokens", "model.embed_tokens"), None).contains(
            "note = \"inferred by content: element count and the name's last segment, not the values\""
        ));
        assert!(rule(&pair("blk.0.x", "model.layers.0.y"), None)
            .contains("note = \"inferred by content: element count and execution order only\""));
        // The report's warning counts them as their notes say (it counted the first as "by
        // count and order only" too).
        let inferred = |pairs: Vec<Pair>| Inferred {
            toml: String::new(),
            pairs,
            skipped: None,
            unpaired: (Vec::new(), Vec::new()),
        };
        let both = summary(&inferred(vec![
            pair("top.embed_tokens", "model.embed_tokens"),
            pair("blk.0.x", "model.layers.0.y"),
            pair("blk.0.z", "model.layers.0.w"),
        ]));
        assert!(
            both.contains(
                "0 close, 1 by count and the name's last segment, 2 by count and order only; 3 compared"
            ),
            "{both}"
        );
        let none = summary(&inferred(vec![pair("blk.0.x", "model.layers.0.y")]));
        assert!(
            none.contains("0 close, 1 by count and order only; 1 compared"),
            "{none}"
        );
    }

    #[test]
    fn what_most_steps_need_is_one_rule_and_the_others_a_rule_each() {
        // the prefill and 9,999 of 10,001 steps re-laid out: the prefill's rule, the two
        // steps as they are, then one rule for the rest (a rule per step went past 10,000)
        let mut layouts = vec![("p".to_string(), "p".to_string(), Some(P.to_string()))];
        layouts
            .extend((1..=9_999).map(|s| (format!("p@{s}"), format!("p@{s}"), Some(T.to_string()))));
        let probes = HashMap::from([("p", stepped(1..=10_001))]);
        let (text, left_out) = suggestion(None, &layouts, &[], &probes);
        assert_eq!(left_out, 0);
        let rules: Vec<&str> = text.split("[[rule]]").skip(1).collect();
        assert_eq!(rules.len(), 4, "{text}");
        assert!(
            rules[0].contains("from = \"p\"") && rules[0].contains(P),
            "{text}"
        );
        assert!(
            rules[1].contains("from = \"p@10000\"\nto = \"p@10000\"\nnote"),
            "{text}"
        );
        assert!(rules[2].contains("from = \"p@10001\""), "{text}");
        assert!(
            rules[3].contains("from = \"p@{S}\"") && rules[3].contains(T),
            "{text}"
        );
        // a step no change explains (its values differ too) takes the steps' change
        let mut layouts = vec![("q@1".to_string(), "q@1".to_string(), None)];
        layouts.extend((2..=3).map(|s| (format!("q@{s}"), format!("q@{s}"), Some(T.to_string()))));
        let probes = HashMap::from([("q", stepped(1..=3))]);
        let (text, _) = suggestion(None, &layouts, &[], &probes);
        assert_eq!(text.matches("[[rule]]").count(), 1, "{text}");
        assert!(text.contains("from = \"q@{S}\""), "{text}");
    }

    #[test]
    fn a_probes_rules_are_written_or_left_out_together() {
        // 5,001 probes, each a prefill re-laid out and a step as it is: two rules each, and
        // the last probe's two left out, never its prefill's rule without the other
        let names: Vec<String> = (0..5_001).map(|i| format!("p{i}")).collect();
        let layouts: Vec<(String, String, Option<String>)> = names
            .iter()
            .map(|n| (n.clone(), n.clone(), Some(P.to_string())))
            .collect();
        let probes: HashMap<&str, ProbeSteps> =
            names.iter().map(|n| (n.as_str(), stepped(1..=1))).collect();
        let (text, left_out) = suggestion(None, &layouts, &[], &probes);
        assert_eq!(left_out, 2);
        assert_eq!(text.matches("[[rule]]").count(), divergence_map::MAX_RULES);
        assert!(text.contains("from = \"p4999@{S}\"") && !text.contains("\"p5000\""));
        assert!(text.ends_with("2 more rules left out: a map holds at most 10000 rules. Fix what these show, then suggest again.\n"), "{}", &text[text.len() - 200..]);
    }

    /// Rows the given map computes that a layout change would explain get no rule of their
    /// own (it would need composing with the map's): the file lists each probe's transform
    /// once (its decode steps with it), and never says that no layout change was found (a
    /// newcomer's run: those rows were left out, and the file said so).
    #[test]
    fn rows_the_map_computes_are_listed_with_their_transform() {
        let probes = HashMap::new();
        let composed: Vec<(String, String)> = ["x", "x@1", "x@2", "y"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    (if n.starts_with('x') { P } else { T }).to_string(),
                )
            })
            .collect();
        let (text, left_out) = suggestion(None, &[], &composed, &probes);
        assert_eq!(left_out, 0);
        assert!(
            text.contains("# 2 probes made by the map's own rules match the reference's under a layout change"),
            "{text}"
        );
        assert!(
            text.contains(&format!("#   x: {P}\n#   y: {T}\n")),
            "{text}"
        );
        assert!(!text.contains("no layout change was found"), "{text}");
        assert!(
            text.contains("the only layout changes found are in rows the given map makes"),
            "{text}"
        );
        // With rules of its own beside them, both.
        let layouts = vec![("p".to_string(), "p".to_string(), Some(P.to_string()))];
        let probes = HashMap::from([(
            "p",
            ProbeSteps {
                prefill: true,
                steps: Vec::new(),
            },
        )]);
        let (text, _) = suggestion(None, &layouts, &composed[..1], &probes);
        assert_eq!(text.matches("[[rule]]").count(), 1, "{text}");
        assert!(
            text.contains("# 1 probe made by the map's own rules matches"),
            "{text}"
        );
        assert!(!text.contains("# No rule"), "{text}");
    }

    /// A file without a rule says why: nothing to map, nothing sure enough to compare, or too
    /// many probes to align (a review found "these dumps need no map" said of the last two).
    #[test]
    fn a_file_without_a_rule_says_why() {
        let probes = HashMap::new();
        let (text, _) = suggestion(None, &[], &[], &probes);
        assert!(text.contains("these dumps need no map"), "{text}");
        let guess = Inferred {
            toml: String::new(),
            pairs: vec![Pair {
                ours: "a".into(),
                reference: "b".into(),
                confidence: Confidence::OrderOnly,
                stats_diff: Some(1.0),
                compared: false,
            }],
            skipped: None,
            unpaired: (vec!["a".into()], vec!["b".into()]),
        };
        let (text, _) = suggestion(Some(&guess), &[], &[], &probes);
        assert!(!text.contains("need no map"), "{text}");
        assert!(
            text.contains("# No rule: no pair found by content is sure enough to compare"),
            "{text}"
        );
        assert!(text.contains("# not compared"), "{text}");
        let skipped = Inferred {
            pairs: Vec::new(),
            skipped: Some("too many to align: nothing inferred".into()),
            ..guess
        };
        let (text, _) = suggestion(Some(&skipped), &[], &[], &probes);
        assert!(
            text.ends_with("# No rule: too many to align: nothing inferred.\n"),
            "{text}"
        );
    }
}
