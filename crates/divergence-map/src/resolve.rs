//! A [`Map`] applied to one dump's tensor names and shapes: which tensor each name of the
//! mapped dump is made from, and by which steps ([`Virtual`]). Pure (names and shapes in, a plan
//! out); every shape is checked here, so reading a mapped tensor later cannot fail for the map's
//! sake.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::array::{fmt_shape, numel, Combine, Step};
use crate::error::MapError;
use crate::spec::{fill, short, CombineSpec, DimSpec, Map, Rule, StepSpec, MAX_RANK};
use divergence_names::{one_line, split_step, stacked_base, step_name};

/// Model sizes a rule may name (`heads*head_dim`), from a config. `None`: not known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub hidden: Option<usize>,
    pub heads: Option<usize>,
    pub kv_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub intermediate: Option<usize>,
    pub vocab: Option<usize>,
}

impl Sizes {
    fn get(&self, name: &str) -> Option<usize> {
        match name {
            "hidden" => self.hidden,
            "heads" => self.heads,
            "kv_heads" => self.kv_heads,
            "head_dim" => self.head_dim,
            "intermediate" => self.intermediate,
            "vocab" => self.vocab,
            _ => None,
        }
    }
}

/// One tensor of the mapped dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Virtual {
    /// Its name (the reference's naming).
    pub name: String,
    /// The dump's tensors it is made from (one for a rename, several for a combination).
    pub sources: Vec<String>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How several sources combine (`None` for one).
    pub combine: Option<Combine>,
    /// Layout steps after combining (empty for a rename).
    pub steps: Vec<Step>,
    /// The rule that made it (`None`: kept as it is).
    pub rule: Option<String>,
    /// One line saying how it was made, for the report row: `rule 3 (from = "...") [vLLM
    /// fuses q, k, v]: part 1 of 3 of model.layers.0.self_attn.qkv_proj.0 [16, 256] along axis 1`.
    pub how: Option<String>,
    /// Why it could not be made: a preset's rule that does not fit this tensor (a preset meets
    /// every engine's odd tensor, and one must not stop the report). Its row is a
    /// `shape_mismatch` that says why (a divergence: a port's tensor the layout does not
    /// explain is never a silent pass), reading it fails with this line, and its `shape` is
    /// the source's (what the dump holds); `None` for every tensor made.
    pub problem: Option<String>,
}

impl Virtual {
    /// True when the values must be computed (sources combined or re-laid out), not just read
    /// under another name.
    pub fn is_transformed(&self) -> bool {
        self.sources.len() > 1 || !self.steps.is_empty() || self.problem.is_some()
    }
}

/// The mapped dump: every tensor, in the dump's order.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub tensors: Vec<Virtual>,
    index: HashMap<String, usize>,
    /// The map's label (`map.toml`, `preset vllm`).
    pub label: String,
    /// Things to know (a secondary source missing in a preset, ...), one line each.
    pub warnings: Vec<String>,
    /// For each of `tensors`, the rule that made it and which of its `to` names (`(rule, to)`
    /// indices into the map), `None` for a tensor kept as it is; empty for a mapped dump made by
    /// code ([`Resolved::from_tensors`]). What [`Resolved::targets_not_in`] reads.
    made_by: Vec<Option<(u32, u32)>>,
}

/// A `to` of a rule that made tensors, none of which the reference holds
/// ([`Resolved::targets_not_in`]): a typo, most likely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTarget {
    /// The rule's index in [`Map::rules`].
    pub rule: usize,
    /// The index of the `to` name in the rule's [`Rule::to`].
    pub to: usize,
    /// The names it made, in the dump's order (at least one).
    pub made: Vec<String>,
}

impl Resolved {
    /// The mapped tensor `name`.
    pub fn get(&self, name: &str) -> Option<&Virtual> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A mapped dump made by code rather than by a map file (`diff --prefill-vs-decode`):
    /// `tensors` in the dump's order, their shapes already checked by the caller. `None` when
    /// a name repeats.
    pub fn from_tensors(tensors: Vec<Virtual>, label: impl Into<String>) -> Option<Resolved> {
        let mut index = HashMap::with_capacity(tensors.len());
        for (i, v) in tensors.iter().enumerate() {
            if index.insert(v.name.clone(), i).is_some() {
                return None;
            }
        }
        Some(Resolved {
            tensors,
            index,
            label: label.into(),
            warnings: Vec::new(),
            made_by: Vec::new(),
        })
    }

    /// How many tensors a rule made (renamed or transformed).
    pub fn mapped_count(&self) -> usize {
        self.tensors.iter().filter(|v| v.rule.is_some()).count()
    }

    /// The `to` names of `map`'s rules (the map this was resolved with) that made tensors of
    /// which `found` holds none, in rule order: `found` says whether the reference has a name.
    /// A `from` that matches nothing is an error of [`resolve`]'s; this is its other half, a
    /// `to` that names nothing of the reference, which [`MapError::NoTarget`] says. A preset,
    /// an `all_optional` map and an `optional` rule are never asked (their rules may name
    /// what a dump does not hold), nor a rule that made nothing.
    pub fn targets_not_in(
        &self,
        map: &Map,
        found: impl Fn(&str) -> bool + Sync,
    ) -> Vec<MissingTarget> {
        if map.preset {
            return Vec::new();
        }
        // Per target: the tensors it made, and whether one of them is found.
        let mut made: HashMap<(usize, usize), (Vec<usize>, bool)> = HashMap::new();
        let hits: Vec<bool> = self
            .tensors
            .par_iter()
            .zip(&self.made_by)
            .map(|(v, by)| by.is_some() && found(&v.name))
            .collect();
        for (k, (by, hit)) in self.made_by.iter().zip(hits).enumerate() {
            let Some((rule, to)) = *by else { continue };
            let (rule, to) = (rule as usize, to as usize);
            if map.rules.get(rule).is_none_or(|r| r.optional) {
                continue;
            }
            let entry = made.entry((rule, to)).or_default();
            entry.1 |= hit;
            if !entry.1 {
                entry.0.push(k);
            }
        }
        let mut missing: Vec<MissingTarget> = made
            .into_iter()
            .filter(|(_, (_, hit))| !hit)
            .map(|((rule, to), (made, _))| MissingTarget {
                rule,
                to,
                made: made
                    .into_iter()
                    .map(|k| self.tensors[k].name.clone())
                    .collect(),
            })
            .collect();
        missing.sort_by_key(|m| (m.rule, m.to));
        missing
    }
}

impl MissingTarget {
    /// The error that says so: the map, the rule, its `to`, a name it made and, when
    /// `reference_names` (the reference's) holds one close to it, "did you mean".
    pub fn error<'a>(
        &self,
        map: &Map,
        reference_names: impl IntoIterator<Item = &'a str>,
        reference: &str,
    ) -> MapError {
        let rule = &map.rules[self.rule];
        let to = &rule.to[self.to];
        let first = self.made.first().map_or("", String::as_str);
        let made = match self.made.len() {
            // (A `to` without captures makes its one name, braces undoubled.)
            _ if first == fill(to, &[]) => String::new(),
            0 | 1 => format!(" (it made `{}`)", short(first)),
            n => format!(" (it made `{}` and {} more)", short(first), n - 1),
        };
        // Compared by probe (`x@3` as `x`), each of the reference's probes once: a decode
        // dump has tens of thousands of names and a few hundred probes.
        let (base, step) = split_step(first);
        let mut seen = std::collections::HashSet::new();
        let bases = reference_names
            .into_iter()
            .map(|n| split_step(n).0)
            .filter(|b| seen.insert(*b));
        let hint = divergence_names::near::closest(base, bases).map_or_else(String::new, |b| {
            format!(": did you mean `{}`?", short(&step_name(b, step)))
        });
        MapError::NoTarget {
            map: map.label.clone(),
            rule: rule.label.clone(),
            to: divergence_names::one_line(&short(to)).into_owned(),
            reference: reference.to_string(),
            detail: divergence_names::one_line(&format!("{made}{hint}")).into_owned(),
        }
    }
}

/// A rule's claim on a tensor: the rule's index and the captures.
type Claim = (usize, Vec<(String, String)>);

/// Most pattern matches one map may ask of one dump (rules with captures × distinct base
/// names, plus the rules that name a step × decode steps' names). Measured just under the
/// bound (2,000 rules with captures × 4,999 names of 185 characters that the literal ends do
/// not turn away, each rejected by the regex): 2.9-3.2 s, release build, 2 cores; the time of a
/// match grows with the name's length. The presets have at
/// most 20 rules with captures: ~12,000 matches for a 0.6B-shaped decode dump whatever its
/// steps (~600 probes; a probe a `last` rule names is matched once per size of its last axes,
/// which for Qcur / Kcur / Vcur stay the same from step to step), 2,000,000 for 100,000
/// probes.
pub const MAX_MATCHES: u64 = 10_000_000;

/// Applies `map` to a dump's tensors (`(name, shape)` in the dump's order). `dump` names the
/// dump in messages.
pub fn resolve(
    map: &Map,
    tensors: &[(String, Option<Vec<usize>>)],
    sizes: &Sizes,
    dump: &str,
) -> Result<Resolved, MapError> {
    // Shapes of the tensors whose headers could be read.
    let shapes: HashMap<&str, &[usize]> = tensors
        .iter()
        .filter_map(|(n, s)| Some((n.as_str(), s.as_deref()?)))
        .collect();
    let all: HashMap<&str, ()> = tensors.iter().map(|(n, _)| (n.as_str(), ())).collect();
    // Pass 1: the first rule whose first pattern matches (and whose rank fits) claims a name.
    // A tensor whose header cannot be read can only be renamed (its row says why it cannot be
    // read): a rule that must know its shape passes it by.
    // Rules without captures (a map inferred by content is all of them) are looked up by name;
    // the others are matched in order, only while they come before the literal candidate.
    // Rules `<probe>@{S}` name the decode steps of one probe: looked up by the probe of each
    // step's name, like a literal (a suggested map writes one per re-laid-out probe; matched,
    // they counted against the bound below, and `{S}` took names such as `k_norm@v` too).
    let mut literal: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut steps_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut patterned: Vec<usize> = Vec::new();
    for (i, r) in map.rules.iter().enumerate() {
        if r.from[0].captures.is_empty() {
            // (A pattern without a capture names one name: its text with braces undoubled.)
            let name = r.from[0].literal().unwrap_or(&r.from[0].text);
            literal.entry(name).or_default().push(i);
        } else if let Some(probe) = r.from[0].probe_of_steps() {
            steps_of.entry(probe).or_default().push(i);
        } else {
            patterned.push(i);
        }
    }
    // A probe of a decode step (`name@s`) is matched by its base name and keeps its step:
    // the rule's targets and other sources are those of the same step. Only a rule whose
    // pattern holds an `@` (`x@1`, `{A}@2`) can name the step itself and is tried on the full
    // name first; the others see the base name alone (a capture never swallows the step), so
    // each distinct base (with its rank: a rule may ask for one) is matched once, however many
    // steps it has. `steps[k]` is the step re-appended to tensor k's targets (0: none).
    let step_rules: Vec<usize> = patterned
        .iter()
        .copied()
        .filter(|&i| map.rules[i].from[0].text.contains('@'))
        .collect();
    // Each rule's `last` sizes, worked out once (`Err`: a model size not known or an overflow,
    // an error where the rule names a tensor, below; `None`: the rule asks for none).
    let last_of: Vec<Option<Result<Vec<usize>, String>>> = map
        .rules
        .iter()
        .map(|r| {
            (!r.last.is_empty()).then(|| {
                r.last
                    .iter()
                    .map(|d| {
                        size(d, sizes).and_then(|v| {
                            usize::try_from(v).map_err(|_| format!("`last` holds {v}, no size"))
                        })
                    })
                    .collect()
            })
        })
        .collect();
    let fits = |i: usize, dims: Option<Dims<'_>>| {
        let r = &map.rules[i];
        match dims {
            Some((n, tail)) => {
                r.rank.is_none_or(|k| k == n)
                    && match &last_of[i] {
                        None => true,
                        Some(Ok(v)) => tail.ends_with(v),
                        Some(Err(_)) => false,
                    }
            }
            None => r.rank.is_none() && r.last.is_empty() && !r.needs_shape(),
        }
    };
    // The first rule of `patterned` that matches `name` and comes before the literal
    // candidates (a rule naming `name`, or, for a decode step's `name`, its probe's steps),
    // else the first of those.
    let find = |name: &str, rank: Option<Dims<'_>>, patterned: &[usize]| -> Option<Claim> {
        let (base, step) = split_step(name);
        let of_steps = (step > 0)
            .then(|| steps_of.get(base))
            .flatten()
            .and_then(|v| v.iter().copied().find(|&i| fits(i, rank)))
            .map(|i| {
                let cap = map.rules[i].from[0].captures[0].clone();
                (i, vec![(cap, name[base.len() + 1..].to_string())])
            });
        let named = literal
            .get(name)
            .and_then(|v| v.iter().copied().find(|&i| fits(i, rank)))
            .map(|i| (i, Vec::new()));
        let lit = match (named, of_steps) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let pat = patterned
            .iter()
            .copied()
            .take_while(|&i| lit.as_ref().is_none_or(|l| i < l.0))
            .filter(|&i| fits(i, rank))
            .find_map(|i| map.rules[i].from[0].matches(name).map(|c| (i, c)));
        pat.or(lit)
    };
    // Which probes a rule with `last` names: their keys hold their last axes too (a decode
    // step's attention weights grow by a key each step: without `last`, one key for every
    // step, matched once). Bounded first: each such rule against each distinct probe.
    let tail_len = map.rules.iter().map(|r| r.last.len()).max().unwrap_or(0);
    let last_rules: Vec<usize> = (0..map.rules.len())
        .filter(|&i| !map.rules[i].last.is_empty())
        .collect();
    let mut base_index: HashMap<&str, usize> = HashMap::new();
    let mut bases: Vec<&str> = Vec::new();
    if !last_rules.is_empty() {
        for (full, _) in tensors {
            let base = split_step(full).0;
            base_index.entry(base).or_insert_with(|| {
                bases.push(base);
                bases.len() - 1
            });
        }
    }
    let tail_work = (last_rules.len() as u128) * (bases.len() as u128);
    let over = |work: u128, what: String| {
        MapError::Syntax {
        map: map.label.clone(),
        message: format!(
            "{what}: {work} pattern matches, more matching than the bound ({MAX_MATCHES}); name tensors literally (looked up, not matched) or with fewer patterns"
        ),
    }
    };
    if tail_work > MAX_MATCHES as u128 {
        return Err(over(
            tail_work,
            format!(
                "{} rules with `last` × {} names of {dump}",
                last_rules.len(),
                bases.len()
            ),
        ));
    }
    let tailed: Vec<bool> = bases
        .par_iter()
        .map(|b| last_rules.iter().any(|&i| names_any(&map.rules[i], b)))
        .collect();
    // The distinct (base name, rank and, where a `last` rule names it, last axes) keys, in the
    // dump's order.
    let mut key_of: HashMap<(&str, Option<Dims<'_>>), usize> = HashMap::new();
    let mut keys: Vec<(&str, Option<Dims<'_>>)> = Vec::new();
    let mut stepped = 0usize;
    let key_index: Vec<(usize, usize)> = tensors
        .iter()
        .map(|(full, shape)| {
            let (base, step) = split_step(full);
            stepped += usize::from(step > 0);
            let tailed = base_index.get(base).is_some_and(|&b| tailed[b]);
            let dims = shape.as_deref().map(|s| {
                (
                    s.len(),
                    if tailed {
                        tail_of(s, tail_len)
                    } else {
                        &[][..]
                    },
                )
            });
            let key = (base, dims);
            let i = *key_of.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            });
            (i, step)
        })
        .collect();
    // Matching is bounded: every rule with captures against every distinct base name, and
    // the step-naming rules against every decode step's name.
    let work = (patterned.len() as u128) * (keys.len() as u128)
        + (step_rules.len() as u128) * (stepped as u128)
        + tail_work;
    if work > MAX_MATCHES as u128 {
        return Err(over(
            work,
            format!(
                "{} rules with captures × {} names of {dump}{}",
                patterned.len(),
                keys.len(),
                match step_rules.len() {
                    0 => String::new(),
                    n => format!(" + {n} rules naming a step × {stepped} decode steps' names"),
                }
            ),
        ));
    }
    // A rule whose `last` cannot be worked out (a model size not known, an overflow) and that
    // names a tensor of the dump is an error, as a transform's sizes are: passed over, its
    // tensors went to the next rules by another layout (the llama.cpp preset without a
    // config: false divergences at every step, a review and a hunt).
    for (i, why) in last_of.iter().enumerate().filter_map(|(i, l)| match l {
        Some(Err(why)) => Some((i, why)),
        _ => None,
    }) {
        let rule = &map.rules[i];
        let affordable = (keys.len() as u128) <= (MAX_MATCHES as u128).saturating_sub(work);
        let named = affordable.then(|| {
            keys.iter()
                .find(|(base, d)| d.is_some() && names_any(rule, base))
                .map(|(base, _)| *base)
                .or_else(|| {
                    // A rule naming steps (`x@3`, `{A}@2`) is matched on the steps' own names.
                    let steps = rule.from[0].text.contains('@');
                    tensors
                        .iter()
                        .filter(|_| steps)
                        .find(|(full, shape)| {
                            shape.is_some()
                                && split_step(full).1 > 0
                                && rule.from[0].matches(full).is_some()
                        })
                        .map(|(full, _)| full.as_str())
                })
        });
        let Some(base) = named else {
            return Err(MapError::Rule {
                map: map.label.clone(),
                rule: rule.label.clone(),
                message: format!("`last` {why}"),
            });
        };
        if let Some(base) = base {
            return Err(MapError::Rule {
                map: map.label.clone(),
                rule: rule.label.clone(),
                message: format!("`{}`: `last` {why}", short(base)),
            });
        }
    }
    // Names are matched in parallel (a decode dump has tens of thousands).
    let by_key: Vec<Option<Claim>> = keys
        .par_iter()
        .map(|&(base, rank)| find(base, rank, &patterned))
        .collect();
    let (steps, claims): (Vec<usize>, Vec<Option<Claim>>) = tensors
        .par_iter()
        .zip(&key_index)
        .map(|((full, shape), &(key, step))| {
            if step > 0 {
                let dims = shape.as_deref().map(|s| (s.len(), tail_of(s, tail_len)));
                if let Some(c) = find(full, dims, &step_rules) {
                    return (0, Some(c));
                }
            }
            (step, by_key[key].clone())
        })
        .unzip();
    // Pass 2: the other sources of combining rules.
    let mut secondary: HashMap<String, String> = HashMap::new();
    let mut warnings = Vec::new();
    let mut sources_of: Vec<Option<Vec<String>>> = vec![None; tensors.len()];
    for (k, claim) in claims.iter().enumerate() {
        let Some((ri, caps)) = claim else { continue };
        let rule = &map.rules[*ri];
        let mut sources = vec![tensors[k].0.clone()];
        let mut missing = None;
        for p in &rule.from[1..] {
            let s = step_name(&fill(&p.text, caps), steps[k]);
            if !all.contains_key(s.as_str()) {
                missing = Some(s);
                break;
            }
            if !shapes.contains_key(s.as_str()) {
                warnings.push(format!(
                    "{}: `{s}` cannot be read, so `{}` is not mapped",
                    rule.label, tensors[k].0
                ));
                missing = None;
                sources.clear();
                break;
            }
            sources.push(s);
        }
        if let Some(m) = missing {
            let msg = format!(
                "{}: `{}` is not in {dump}, so `{}` is not mapped",
                rule.label, m, tensors[k].0
            );
            if map.preset || rule.optional {
                warnings.push(msg);
                continue;
            }
            return Err(MapError::Rule {
                map: map.label.clone(),
                rule: rule.label.clone(),
                message: format!("`{m}` (for `{}`) is not in {dump}", tensors[k].0),
            });
        }
        if sources.is_empty() {
            continue;
        }
        for s in &sources[1..] {
            secondary.insert(s.clone(), rule.label.clone());
        }
        sources_of[k] = Some(sources);
    }
    // A probe no rule claimed (nor took as another source) whose name a rule with a `rank` or
    // a `last` names at another shape: said, not left in silence (a bad-input hunt: llama.cpp's
    // Qcur with a leading size-1 axis, 4 axes where the preset's rules asked 2 or 3, was left
    // unmapped and a planted bug passed). Per distinct name (a decode step with its probe); a
    // literal rule looked up, a pattern matched only within what is left of the matching bound
    // (a review: 10,000 ranked literal rules matched against 20,000 names took 239 s). A
    // `last` of unknown sizes is said below instead.
    let shaped = |i: usize| {
        let r = &map.rules[i];
        r.rank.is_some() || matches!(last_of[i], Some(Ok(_)))
    };
    // What a rule asks of a tensor's shape, as the warning says it.
    let asks = |i: usize| -> String {
        let r = &map.rules[i];
        let last = match &last_of[i] {
            Some(Ok(v)) if v.len() == 1 => format!("a last axis of {}", v[0]),
            Some(Ok(v)) => format!("last axes {v:?}"),
            _ => String::new(),
        };
        match (r.rank, last.is_empty()) {
            (Some(n), true) => format!("{n} axes"),
            (Some(n), false) => format!("{n} axes with {last}"),
            (None, _) => last,
        }
    };
    if (0..map.rules.len()).any(shaped) {
        let mut first_of: Vec<Option<usize>> = vec![None; keys.len()];
        for (k, (full, shape)) in tensors.iter().enumerate() {
            let key = key_index[k].0;
            if claims[k].is_none()
                && shape.is_some()
                && !secondary.contains_key(full)
                && first_of[key].is_none()
            {
                first_of[key] = Some(k);
            }
        }
        let unclaimed: Vec<usize> = first_of.iter().flatten().copied().collect();
        let ranked: Vec<usize> = patterned.iter().copied().filter(|&i| shaped(i)).collect();
        let matched = (ranked.len() as u128) * (unclaimed.len() as u128)
            <= (MAX_MATCHES as u128).saturating_sub(work);
        let missed: Vec<String> = unclaimed
            .par_iter()
            .filter_map(|&k| {
                let (full, shape) = &tensors[k];
                let base = split_step(full).0;
                let mut rules: Vec<usize> = literal
                    .get(base)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&i| shaped(i))
                    .collect();
                if matched {
                    rules.extend(
                        ranked
                            .iter()
                            .filter(|&&i| map.rules[i].from[0].matches(base).is_some()),
                    );
                }
                let mut asked: Vec<String> = Vec::new();
                for i in rules {
                    let a = asks(i);
                    if !asked.contains(&a) {
                        asked.push(a);
                    }
                }
                (!asked.is_empty()).then(|| {
                    format!(
                        "{full} {:?} (its rules ask for {})",
                        shape.as_deref().unwrap_or_default(),
                        asked.join(" or ")
                    )
                })
            })
            .collect();
        if let Some(first) = missed.first() {
            let (n, more) = match missed.len() {
                1 => ("1 probe".to_string(), String::new()),
                n => (format!("{n} probes"), format!(" and {} more", n - 1)),
            };
            warnings.push(format!(
                "{n} of {dump} match a rule's `from` but not the shape it asks for (`rank`, `last`), so they are not mapped: {first}{more} (a dumper that keeps size-1 axes: drop them, or give a rule of this shape)"
            ));
        }
    }
    // Pass 3: the mapped tensors, in the dump's order.
    let mut out = Resolved {
        label: map.label.clone(),
        ..Resolved::default()
    };
    let mut used = vec![false; map.rules.len()];
    // Each claimed tensor lowered in parallel; the errors are then taken in the dump's order,
    // as a loop over the names would meet them.
    let lowered: Vec<Option<Result<Vec<Virtual>, MapError>>> = (0..tensors.len())
        .into_par_iter()
        .map(|k| match (&claims[k], &sources_of[k]) {
            (Some((ri, caps)), Some(sources)) => Some(
                lower(map, &map.rules[*ri], caps, sources, &shapes, sizes)
                    .or_else(|e| match e {
                        // A preset's rule that does not fit this tensor: a row that says so.
                        MapError::Tensor { .. } if map.preset => {
                            Ok(unmade(&map.rules[*ri], caps, sources, &shapes, &e))
                        }
                        e => Err(e),
                    })
                    .map(|mut made| {
                        for v in &mut made {
                            v.name = step_name(&v.name, steps[k]);
                        }
                        made
                    }),
            ),
            _ => None,
        })
        .collect();
    let made_by = |v: &Virtual| match (&v.rule, &v.problem) {
        (None, _) => format!("`{}` kept as it is", v.name),
        (Some(r), None) => format!("{r} from `{}`", v.sources[0]),
        (Some(r), Some(_)) => format!("{r}, which did not fit `{}`", v.sources[0]),
    };
    for (k, ((name, shape), lowered)) in tensors.iter().zip(lowered).enumerate() {
        let by = claims[k].as_ref().map(|(ri, _)| *ri as u32);
        let made = match (&claims[k], lowered) {
            (Some((ri, _)), Some(made)) => {
                if let Some(by) = secondary.get(name) {
                    return Err(MapError::Rule {
                        map: map.label.clone(),
                        rule: map.rules[*ri].label.clone(),
                        message: format!("`{name}` is also a source of {by}"),
                    });
                }
                used[*ri] = true;
                made?
            }
            _ if secondary.contains_key(name) => continue,
            _ => vec![Virtual {
                name: name.clone(),
                sources: vec![name.clone()],
                shape: shape.clone().unwrap_or_default(),
                combine: None,
                steps: Vec::new(),
                rule: None,
                how: None,
                problem: None,
            }],
        };
        for (j, v) in made.into_iter().enumerate() {
            if let Some(&first) = out.index.get(&v.name) {
                let earlier = &out.tensors[first];
                let (mut a, mut b) = (made_by(earlier), made_by(&v));
                // Two parts of one split named alike read the same: say which parts (a
                // newcomer's run: "by rule 1 (...) from `x` and by rule 1 (...) from `x`").
                if a == b {
                    if let (Some(x), Some(y)) = (&earlier.how, &v.how) {
                        (a, b) = (x.clone(), y.clone());
                    }
                }
                return Err(MapError::Collision {
                    map: map.label.clone(),
                    name: v.name.clone(),
                    first: a,
                    second: b,
                });
            }
            out.index.insert(v.name.clone(), out.tensors.len());
            out.tensors.push(v);
            out.made_by.push(by.map(|ri| (ri, j as u32)));
        }
    }
    if !map.preset {
        if let Some(i) = (0..map.rules.len()).find(|&i| !used[i] && !map.rules[i].optional) {
            let from = &map.rules[i].from[0].text;
            // A name it matched whose shape it refused (`rank`, `last`): said (a newcomer's
            // check: "matches no tensor" sent them hunting for a typo).
            let shaped = (shaped(i) && (keys.len() as u128) <= MAX_MATCHES as u128)
                .then(|| {
                    tensors.iter().find(|(full, shape)| {
                        shape.is_some() && names_any(&map.rules[i], split_step(full).0)
                    })
                })
                .flatten();
            let hint = match (stacked_base(from), shaped) {
                (Some(probe), _) => format!(
                    ": a stacked member (`@steps`) is matched by its probe's name (`from = \"{}\"`), and each decode step follows its probe",
                    short(probe)
                ),
                (None, Some((full, shape))) => format!(
                    " of the shape it asks for ({}): `{}` {} is named by its `from`",
                    asks(i),
                    short(full),
                    fmt_shape(shape.as_deref().unwrap_or_default())
                ),
                (None, None) => String::new(),
            };
            return Err(MapError::Unused {
                map: map.label.clone(),
                rule: map.rules[i].label.clone(),
                dump: dump.to_string(),
                hint,
            });
        }
    }
    let unmade: Vec<&str> = out
        .tensors
        .iter()
        .filter(|v| v.problem.is_some())
        .map(|v| v.sources[0].as_str())
        .collect();
    if let Some(first) = unmade.first() {
        let more = match unmade.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        let (whose, rows) = match unmade.len() {
            1 => ("its rule", "its row is a shape mismatch that says why"),
            _ => (
                "their rules",
                "their rows are shape mismatches that say why",
            ),
        };
        warnings.push(format!(
            "{}: `{}`{more} did not fit {whose}, which made nothing: {rows}",
            map.label,
            short(first),
        ));
    }
    out.warnings = warnings;
    Ok(out)
}

/// The tensors a preset's rule would have made from `sources` had it fitted them (`error`
/// says why not): named as the rule names them, each with the problem
/// ([`Virtual::problem`]), so that each pairs with the reference's tensor and its row says
/// what went wrong.
fn unmade(
    rule: &Rule,
    caps: &[(String, String)],
    sources: &[String],
    shapes: &HashMap<&str, &[usize]>,
    error: &MapError,
) -> Vec<Virtual> {
    let shape = shapes
        .get(sources[0].as_str())
        .map_or_else(Vec::new, |s| s.to_vec());
    let problem = format!("the map made nothing: {error}");
    rule.to
        .iter()
        .map(|t| Virtual {
            name: fill(t, caps),
            sources: sources.to_vec(),
            shape: shape.clone(),
            combine: None,
            steps: Vec::new(),
            rule: Some(rule.label.clone()),
            how: Some(format!("{}: did not fit {}", rule.label, sources[0])),
            problem: Some(problem.clone()),
        })
        .collect()
}

/// A tensor's rank and its last axes' sizes (as many as a rule's `last` lists, none where no
/// such rule names it): what a rule's `rank` and `last` ask of it.
type Dims<'t> = (usize, &'t [usize]);

/// Whether `rule`'s first pattern names probe `base` (by name, as a probe's steps, or by
/// matching it).
fn names_any(rule: &Rule, base: &str) -> bool {
    let p = &rule.from[0];
    p.literal() == Some(base)
        || p.probe_of_steps() == Some(base)
        || (!p.captures.is_empty() && p.matches(base).is_some())
}

/// The last `n` axes of `shape` (all of them where it has fewer).
fn tail_of(shape: &[usize], n: usize) -> &[usize] {
    &shape[shape.len() - n.min(shape.len())..]
}

/// Negative axes count from the end.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// The value of a size expression, or why not.
fn size(d: &DimSpec, sizes: &Sizes) -> Result<i64, String> {
    match d {
        DimSpec::Int(n) => Ok(*n),
        DimSpec::Expr(e) => {
            let mut v: i64 = 1;
            for term in e.split('*').map(str::trim) {
                let t = match term.parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => sizes.get(term).ok_or_else(|| {
                        format!("needs the model size `{term}`: give --model DIR, or a dump whose metadata records the model config")
                    })? as i64,
                };
                v = v
                    .checked_mul(t)
                    .ok_or_else(|| format!("\"{e}\" overflows"))?;
            }
            Ok(v)
        }
    }
}

/// The tensors one rule makes from one match.
fn lower(
    map: &Map,
    rule: &Rule,
    caps: &[(String, String)],
    sources: &[String],
    shapes: &HashMap<&str, &[usize]>,
    sizes: &Sizes,
) -> Result<Vec<Virtual>, MapError> {
    let src_shape = |s: &String| shapes.get(s.as_str()).map_or_else(Vec::new, |s| s.to_vec());
    let fail = |message: String| MapError::Tensor {
        map: map.label.clone(),
        rule: rule.label.clone(),
        tensor: sources[0].clone(),
        shape: fmt_shape(&src_shape(&sources[0])),
        message,
    };
    // What does not depend on this tensor (a model size the rule needs and nothing gives, a
    // size expression that overflows) fails the rule itself, also in a preset: the same line.
    let unsized_rule = |message: String| MapError::Rule {
        map: map.label.clone(),
        rule: rule.label.clone(),
        message: format!(
            "`{}` {}: {message}",
            sources[0],
            fmt_shape(&src_shape(&sources[0]))
        ),
    };
    let mut shape = src_shape(&sources[0]);
    let combine = match &rule.combine {
        None => None,
        Some(spec) => {
            let c = match spec {
                CombineSpec::Concat { concat } => Combine::Concat(
                    axis(*concat, shape.len())
                        .ok_or_else(|| fail(format!("concat axis {concat} out of range")))?,
                ),
                CombineSpec::Name(_) => Combine::Sum,
            };
            let all: Vec<Vec<usize>> = sources.iter().map(src_shape).collect();
            shape = c.shape(&all).map_err(&fail)?;
            Some(c)
        }
    };
    // At most MAX_RANK axes at every step (a rule's steps are few, MAX_STEPS): the shapes
    // kept stay small.
    let too_many_axes = |shape: &[usize]| {
        fail(format!(
            "{} axes, more than the {MAX_RANK} a rule's tensor may have",
            shape.len()
        ))
    };
    if rule.needs_shape() && shape.len() > MAX_RANK {
        return Err(too_many_axes(&shape));
    }
    let mut steps = Vec::new();
    let mut push = |step: Step, shape: &mut Vec<usize>| -> Result<(), MapError> {
        *shape = step.shape(shape).map_err(&fail)?;
        if shape.len() > MAX_RANK {
            return Err(too_many_axes(shape));
        }
        steps.push(step);
        Ok(())
    };
    for spec in &rule.transform {
        let rank = shape.len();
        let ax = |a: i64, rank: usize| {
            axis(a, rank).ok_or_else(|| fail(format!("axis {a} out of range for {rank} axes")))
        };
        match spec {
            StepSpec::Permute(p) => {
                let perm = p
                    .iter()
                    .map(|&a| ax(a, rank))
                    .collect::<Result<Vec<_>, _>>()?;
                push(Step::Permute(perm), &mut shape)?;
            }
            StepSpec::Transpose([a, b]) => {
                let (a, b) = (ax(*a, rank)?, ax(*b, rank)?);
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(a, b);
                push(Step::Permute(perm), &mut shape)?;
            }
            StepSpec::Reshape(dims) => {
                let mut to = Vec::with_capacity(dims.len());
                let mut infer = None;
                for (i, d) in dims.iter().enumerate() {
                    match size(d, sizes).map_err(&unsized_rule)? {
                        0 => to.push(*shape.get(i).ok_or_else(|| {
                            fail(format!("reshape keeps axis {i} (0), which does not exist"))
                        })?),
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            to.push(1);
                        }
                        n if n > 0 => to.push(n as usize),
                        n => return Err(fail(format!("bad reshape size {n}"))),
                    }
                }
                // Sizes from the user: a product that overflows is an error, not a wrap (a
                // zero axis would otherwise hide it).
                if to
                    .iter()
                    .filter(|&&d| d != 0)
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .is_none()
                {
                    return Err(fail(format!("reshape sizes {} overflow", fmt_dims(dims))));
                }
                if let Some(i) = infer {
                    let known = numel(&to);
                    let total = numel(&shape);
                    if known == 0 || !total.is_multiple_of(known) {
                        return Err(fail(format!(
                            "cannot infer axis {i} of {} from {total} elements",
                            fmt_dims(dims)
                        )));
                    }
                    to[i] = total / known;
                }
                push(Step::Reshape(to), &mut shape)?;
            }
            StepSpec::Squeeze(a) => {
                let a = ax(*a, rank)?;
                if shape[a] != 1 {
                    return Err(fail(format!(
                        "cannot squeeze axis {a} of size {} (only size 1)",
                        shape[a]
                    )));
                }
                let mut to = shape.clone();
                to.remove(a);
                push(Step::Reshape(to), &mut shape)?;
            }
            StepSpec::Unsqueeze(a) => {
                let a = ax(*a, rank + 1)?;
                let mut to = shape.clone();
                to.insert(a, 1);
                push(Step::Reshape(to), &mut shape)?;
            }
            StepSpec::Select { axis: a, index } => {
                let a = ax(*a, rank)?;
                push(
                    Step::Narrow {
                        axis: a,
                        start: *index,
                        len: 1,
                    },
                    &mut shape,
                )?;
                let mut to = shape.clone();
                to.remove(a);
                push(Step::Reshape(to), &mut shape)?;
            }
        }
    }
    let names: Vec<String> = rule.to.iter().map(|t| fill(t, caps)).collect();
    let note = rule
        .note
        .as_ref()
        .map_or_else(String::new, |n| format!(" [{n}]"));
    let transformed = if steps.is_empty() && combine.is_none() {
        String::new()
    } else {
        format!(", transformed to {}", fmt_shape(&shape))
    };
    let from = if sources.len() > 1 {
        let how = match combine {
            Some(Combine::Concat(a)) => format!("concatenated along axis {a}"),
            _ => "summed".to_string(),
        };
        format!("{} {how}", sources.join(" + "))
    } else {
        format!("{} {}", sources[0], fmt_shape(&src_shape(&sources[0])))
    };
    let Some(split) = &rule.split else {
        let how = if steps.is_empty() && combine.is_none() {
            format!("{}{note}: renamed from {from}", rule.label)
        } else {
            format!("{}{note}: from {from}", rule.label)
        };
        return Ok(vec![Virtual {
            name: names[0].clone(),
            sources: sources.to_vec(),
            shape,
            combine,
            steps,
            rule: Some(rule.label.clone()),
            how: Some(how),
            problem: None,
        }]);
    };
    let a = axis(split.axis, shape.len())
        .ok_or_else(|| fail(format!("split axis {} out of range", split.axis)))?;
    let mut lens = split
        .sizes
        .iter()
        .map(|d| size(d, sizes).map_err(&unsized_rule))
        .collect::<Result<Vec<i64>, _>>()?;
    // Checked sums: sizes come from the user (`i64::MAX` twice must not wrap into a fit).
    let total = |v: &[i64]| v.iter().try_fold(0i64, |acc, &n| acc.checked_add(n));
    if let Some(i) = lens.iter().position(|&n| n == -1) {
        let known: Vec<i64> = lens.iter().copied().filter(|&n| n != -1).collect();
        lens[i] = total(&known).map_or(-1, |t| shape[a] as i64 - t);
    }
    // A part of no size (as `-1` leaves it when the others fill the axis) is no part: said so,
    // even where the sizes add up (`[0, 8]` was said not to add up to 8). A negative one is
    // sizes that do not add up.
    if let Some(i) = lens.iter().position(|&n| n == 0) {
        return Err(fail(format!(
            "split sizes {} (= {:?}): part {} ({}) would have size {}; every part needs at least 1 along axis {a} of {} (size {})",
            fmt_dims(&split.sizes),
            lens,
            i + 1,
            one_line(names.get(i).map_or("", |n| n.as_str())),
            lens[i],
            fmt_shape(&shape),
            shape[a]
        )));
    }
    if lens.iter().any(|&n| n < 0) || total(&lens) != Some(shape[a] as i64) {
        return Err(fail(format!(
            "split sizes {} (= {:?}) do not add up to axis {a} of {} (size {})",
            fmt_dims(&split.sizes),
            lens,
            fmt_shape(&shape),
            shape[a]
        )));
    }
    let mut start = 0usize;
    let parts = names.len();
    let mut out = Vec::with_capacity(parts);
    for (i, (name, len)) in names.into_iter().zip(lens).enumerate() {
        let len = len as usize;
        let mut steps = steps.clone();
        let narrow = Step::Narrow {
            axis: a,
            start,
            len,
        };
        let part_shape = narrow.shape(&shape).map_err(&fail)?;
        steps.push(narrow);
        out.push(Virtual {
            name,
            sources: sources.to_vec(),
            shape: part_shape,
            combine,
            steps,
            rule: Some(rule.label.clone()),
            how: Some(format!(
                "{}{note}: part {} of {parts} of {from}{transformed}, entries {start}..{} of axis {a}",
                rule.label,
                i + 1,
                start + len
            )),
            problem: None,
        });
        start += len;
    }
    Ok(out)
}

fn fmt_dims(d: &[DimSpec]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| match d {
            DimSpec::Int(n) => n.to_string(),
            DimSpec::Expr(e) => format!("\"{e}\""),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize]) -> (String, Option<Vec<usize>>) {
        (name.to_string(), Some(shape.to_vec()))
    }

    const SIZES: Sizes = Sizes {
        hidden: Some(64),
        heads: Some(4),
        kv_heads: Some(2),
        head_dim: Some(32),
        intermediate: Some(192),
        vocab: Some(512),
    };

    fn map(text: &str) -> Map {
        Map::parse(text, "m.toml").unwrap()
    }

    /// A tensor a ranked rule's pattern names at another rank is said, not left unmapped in
    /// silence (a bad-input hunt: llama.cpp's Qcur with ggml's 4 axes, a planted bug passed).
    #[test]
    fn a_name_ranked_rules_match_at_another_rank_is_said() {
        // (The llama.cpp preset's rules of `rank` before it told its layouts apart by `last`.)
        let m = map(
            "all_optional = true\n[[rule]]\nfrom = \"Qcur-{L}\"\nrank = 2\nto = \"q{L}\"\n\n[[rule]]\nfrom = \"Qcur-{L}\"\nrank = 3\nto = \"r{L}\"\n\n[[rule]]\nfrom = \"Kcur-{L}\"\nrank = 3\nto = \"k{L}\"\n",
        );
        let warned = |dump: &[(String, Option<Vec<usize>>)]| {
            let r = resolve(&m, dump, &SIZES, "ours.npz").unwrap();
            r.warnings
                .iter()
                .find(|w| w.contains("not the shape it asks for"))
                .cloned()
        };
        assert_eq!(
            warned(&[t("Qcur-0", &[16, 128]), t("Qcur-1", &[16, 4, 32])]),
            None
        );
        let w = warned(&[t("Qcur-0", &[1, 16, 4, 32]), t("Kcur-0", &[1, 16, 2, 32])]).unwrap();
        assert!(
            w.starts_with("2 probes of ours.npz match a rule's `from` but not the shape it asks for (`rank`, `last`)")
                && w.contains("Qcur-0 [1, 16, 4, 32] (its rules ask for 2 axes or 3 axes) and 1 more"),
            "{w}"
        );
        // Another rule's other source is mapped, not "not mapped" (a review).
        let m = map(
            "[[rule]]\nfrom = [\"h.{L}.a\", \"h.{L}.b\"]\nto = \"x.{L}\"\ncombine = \"sum\"\n\n[[rule]]\nfrom = \"h.{L}.{P}\"\nrank = 3\nto = \"y.{L}.{P}\"\n",
        );
        let dump = [t("h.0.a", &[4]), t("h.0.b", &[4]), t("h.0.c", &[2, 2, 2])];
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        assert!(
            !r.warnings.iter().any(|w| w.contains("`rank`, `last`")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_fused_qkv_splits_into_three_named_parts() {
        let m = crate::preset("vllm").unwrap().unwrap();
        let dump = [
            t("model.embed_tokens", &[16, 64]),
            t("model.layers.0.self_attn.qkv_proj.0", &[16, 256]),
            t("model.layers.0.0", &[16, 64]),
            t("model.layers.0.1", &[16, 64]),
        ];
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        let names: Vec<&str> = r.tensors.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.embed_tokens",
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.v_proj",
                "model.layers.0",
            ]
        );
        let k = r.get("model.layers.0.self_attn.k_proj").unwrap();
        assert_eq!(k.shape, vec![16, 64]);
        assert_eq!(
            k.steps,
            vec![Step::Narrow {
                axis: 1,
                start: 128,
                len: 64
            }]
        );
        assert!(k.how.as_deref().unwrap().contains("part 2 of 3"));
        let layer = r.get("model.layers.0").unwrap();
        assert_eq!(layer.sources.len(), 2);
        assert_eq!(layer.combine, Some(Combine::Sum));
        assert!(!r.get("model.embed_tokens").unwrap().is_transformed());
        // Without the model sizes the split cannot be sized: the error says what to give.
        let e = resolve(&m, &dump, &Sizes::default(), "ours.npz").unwrap_err();
        assert!(
            e.to_string().contains("needs the model size `heads`"),
            "{e}"
        );
    }

    /// A preset's rule that does not fit one tensor (llama.cpp's `Vcur` with no element, whose
    /// `[0, -1]` cannot be inferred) makes that tensor's row a shape mismatch, named as the rule
    /// names it and saying why, instead of stopping the report; the warning names it. A user's
    /// map that does the same is an error (the rule is theirs to fix), and so is a preset's
    /// rule that needs a model size nothing gives (every tensor it matches would fail).
    #[test]
    fn a_preset_rule_that_does_not_fit_a_tensor_makes_a_shape_mismatch_row() {
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let dump = [
            t("inp_embd", &[16, 64]),
            t("Vcur-0", &[3, 1, 32]),
            t("Vcur-1", &[16, 2, 32]),
        ];
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        let v0 = r.get("model.layers.0.self_attn.v_proj").unwrap();
        let problem = v0.problem.as_deref().unwrap();
        assert!(problem.contains("cannot infer axis 0"), "{problem}");
        assert!(problem.contains("`Vcur-0` [3, 1, 32]"), "{problem}");
        assert!(
            v0.is_transformed(),
            "read through the map, never as the stored tensor"
        );
        let v1 = r.get("model.layers.1.self_attn.v_proj").unwrap();
        assert_eq!(
            (v1.problem.as_deref(), v1.shape.as_slice()),
            (None, &[16, 64][..])
        );
        let warning = r
            .warnings
            .iter()
            .find(|w| w.contains("did not fit"))
            .unwrap();
        assert!(
            warning.contains("`Vcur-0` did not fit its rule"),
            "{warning}"
        );

        let user = map(
            "[[rule]]\nfrom = \"Vcur-{L}\"\nto = \"model.layers.{L}.self_attn.v_proj\"\ntransform = [{ reshape = [-1, 64] }]\n",
        );
        let e = resolve(&user, &dump, &SIZES, "ours.npz").unwrap_err();
        assert!(e.to_string().contains("cannot infer axis 0"), "{e}");
    }

    #[test]
    fn decode_steps_keep_their_step_through_a_map() {
        let m = crate::preset("vllm").unwrap().unwrap();
        let dump = [
            t("model.layers.0.self_attn.qkv_proj.0", &[16, 256]),
            t("model.layers.0.0", &[16, 64]),
            t("model.layers.0.1", &[16, 64]),
            t("model.layers.0.self_attn.qkv_proj.0@2", &[1, 256]),
            t("model.layers.0.0@2", &[1, 64]),
            t("model.layers.0.1@2", &[1, 64]),
        ];
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        let names: Vec<&str> = r.tensors.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.v_proj",
                "model.layers.0",
                "model.layers.0.self_attn.q_proj@2",
                "model.layers.0.self_attn.k_proj@2",
                "model.layers.0.self_attn.v_proj@2",
                "model.layers.0@2",
            ]
        );
        // the sum of step 2 adds step 2's tensors
        let layer = r.get("model.layers.0@2").unwrap();
        assert_eq!(layer.sources, ["model.layers.0.0@2", "model.layers.0.1@2"]);
        assert_eq!(layer.shape, [1, 64]);
    }

    #[test]
    fn sizes_that_do_not_add_up_name_the_rule_and_tensor() {
        let m = map("[[rule]]\nfrom = \"qkv{L}\"\nto = [\"q{L}\", \"k{L}\"]\nsplit = { axis = -1, sizes = [\"heads*head_dim\", \"heads*head_dim\"] }\n");
        let e = resolve(&m, &[t("qkv0", &[16, 192])], &SIZES, "ours.npz")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.toml: rule 1 (from = \"qkv{L}\"): `qkv0` [16, 192]: split sizes [\"heads*head_dim\", \"heads*head_dim\"] (= [128, 128]) do not add up to axis 1 of [16, 192] (size 192)"
        );
    }

    #[test]
    fn a_part_of_size_zero_is_said_to_be_one_even_where_the_sizes_add_up() {
        // [0, 8] on an axis of 8 was said not to add up (a bad-input hunt).
        for (sizes, size) in [("[0, 8]", "0"), ("[8, 0]", "0"), ("[0, -1]", "0")] {
            let m = map(&format!(
                "[[rule]]\nfrom = \"qkv{{L}}\"\nto = [\"q{{L}}\", \"k{{L}}\"]\nsplit = {{ axis = -1, sizes = {sizes} }}\n"
            ));
            let e = resolve(&m, &[t("qkv0", &[1, 3, 8])], &SIZES, "ours.npz")
                .unwrap_err()
                .to_string();
            assert!(!e.contains("do not add up"), "{e}");
            assert!(e.contains(&format!("would have size {size}; every part needs at least 1 along axis 2 of [1, 3, 8] (size 8)")), "{e}");
        }
    }

    #[test]
    fn sizes_from_the_user_never_overflow() {
        let m = map("[[rule]]\nfrom = \"qkv{L}\"\nto = [\"q{L}\", \"k{L}\"]\nsplit = { axis = -1, sizes = [9223372036854775807, 9223372036854775807] }\n");
        let e = resolve(&m, &[t("qkv0", &[16, 192])], &SIZES, "d").unwrap_err();
        assert!(e.to_string().contains("do not add up"), "{e}");
        let m = map("[[rule]]\nfrom = \"e\"\nto = \"x\"\ntransform = [{ reshape = [0, 1099511627776, 1099511627776] }]\n");
        let e = resolve(&m, &[t("e", &[0, 4])], &SIZES, "d").unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
    }

    #[test]
    fn two_tensors_onto_one_name_is_an_error() {
        let m = map("[[rule]]\nfrom = \"a{X}\"\nto = \"b\"\n");
        let e = resolve(&m, &[t("a1", &[2]), t("a2", &[2])], &SIZES, "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`b` is made twice"), "{e}");
        let m = map("[[rule]]\nfrom = \"a\"\nto = \"b\"\n");
        let e = resolve(&m, &[t("a", &[2]), t("b", &[2])], &SIZES, "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`b` kept as it is"), "{e}");
        // Two parts of one split named alike: which parts (they read the same before).
        let m = map("[[rule]]\nfrom = \"qkv{L}\"\nto = [\"q{L}\", \"k{L}\", \"k{L}\"]\nsplit = { axis = -1, sizes = [128, 32, 32] }\n");
        let e = resolve(&m, &[t("qkv0", &[16, 192])], &SIZES, "d")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`k0` is made twice: by rule 1 (from = \"qkv{L}\"): part 2 of 3 of qkv0")
                && e.contains("and by rule 1 (from = \"qkv{L}\"): part 3 of 3 of qkv0"),
            "{e}"
        );
    }

    #[test]
    fn a_user_rule_that_matches_nothing_is_an_error_unless_optional() {
        let m = map("[[rule]]\nfrom = \"nope\"\nto = \"b\"\n");
        let e = resolve(&m, &[t("a", &[2])], &SIZES, "ours.npz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.toml: rule 1 (from = \"nope\") matches no tensor of ours.npz (mark it `optional = true` if that is expected)"
        );
        let m = map("[[rule]]\nfrom = \"nope\"\nto = \"b\"\noptional = true\n");
        assert!(resolve(&m, &[t("a", &[2])], &SIZES, "ours.npz").is_ok());
    }

    /// The other half: a `to` whose every name is missing from the reference is found, with
    /// the names it made, and said with the reference's closest name; one name found is
    /// enough, and an optional rule, an `all_optional` map and a preset are never asked.
    #[test]
    fn a_target_the_reference_lacks_is_found_unless_optional() {
        let reference = [
            "model.norm",
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.0.self_attn.q_proj@1",
            "model.layers.0.mlp",
        ];
        let found = |n: &str| reference.contains(&n);
        let dump = [
            t("blk.0.q", &[2]),
            t("blk.1.q", &[2]),
            t("blk.0.q@1", &[2]),
            t("norm", &[2]),
            t("fused.0", &[4]),
        ];
        let text = "[[rule]]\nfrom = \"norm\"\nto = \"model.norm\"\n\n\
            [[rule]]\nfrom = \"blk.{L}.q\"\nto = \"model.layers.{L}.self_attn.q_prj\"\n\n\
            [[rule]]\nfrom = \"fused.{L}\"\nto = [\"model.layers.{L}.mlp\", \"model.layers.{L}.mpl2\"]\n\
            split = { axis = 0, sizes = [2, 2] }\n";
        let m = map(text);
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        let missing = r.targets_not_in(&m, found);
        assert_eq!(
            missing,
            [
                MissingTarget {
                    rule: 1,
                    to: 0,
                    made: vec![
                        "model.layers.0.self_attn.q_prj".into(),
                        "model.layers.1.self_attn.q_prj".into(),
                        "model.layers.0.self_attn.q_prj@1".into(),
                    ],
                },
                MissingTarget {
                    rule: 2,
                    to: 1,
                    made: vec!["model.layers.0.mpl2".into()],
                },
            ]
        );
        assert_eq!(
            missing[0].error(&m, reference, "ref.npz").to_string(),
            "m.toml: rule 2 (from = \"blk.{L}.q\"): `to = \"model.layers.{L}.self_attn.q_prj\"` names no tensor of ref.npz (it made `model.layers.0.self_attn.q_prj` and 2 more): did you mean `model.layers.0.self_attn.q_proj`? (mark it `optional = true` if that is expected)"
        );
        assert_eq!(
            missing[1].error(&m, reference, "ref.npz").to_string(),
            "m.toml: rule 3 (from = \"fused.{L}\"): `to = \"model.layers.{L}.mpl2\"` names no tensor of ref.npz (it made `model.layers.0.mpl2`): did you mean `model.layers.0.mlp`? (mark it `optional = true` if that is expected)"
        );
        // A literal `to` is not repeated; nothing close, no suggestion.
        let m = map("[[rule]]\nfrom = \"norm\"\nto = \"zzzzzzzzzz\"\n");
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        assert_eq!(
            r.targets_not_in(&m, found)[0].error(&m, reference, "ref.npz").to_string(),
            "m.toml: rule 1 (from = \"norm\"): `to = \"zzzzzzzzzz\"` names no tensor of ref.npz (mark it `optional = true` if that is expected)"
        );
        // Optional: the rule, the whole map, a preset.
        for text in [
            text.replace("q_prj\"\n", "q_prj\"\noptional = true\n")
                .replace("mpl2\"]\n", "mpl2\"]\noptional = true\n"),
            format!("all_optional = true\n{text}"),
        ] {
            let m = map(&text);
            let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
            assert_eq!(r.targets_not_in(&m, found), [], "{text}");
        }
        let m = crate::preset("vllm").unwrap().unwrap();
        let dump = [t("model.layers.0.self_attn.qkv_proj.0", &[16, 256])];
        let r = resolve(&m, &dump, &SIZES, "ours.npz").unwrap();
        assert_eq!(r.targets_not_in(&m, |_| false), []);
        // A mapped dump made by code has no rule to ask about.
        let made = Resolved::from_tensors(r.tensors.clone(), "code").unwrap();
        assert_eq!(made.targets_not_in(&map(text), |_| false), []);
    }

    #[test]
    fn rank_picks_the_rule() {
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let r = resolve(
            &m,
            &[t("Qcur-0", &[16, 128]), t("Qcur-1", &[16, 4, 32])],
            &SIZES,
            "d",
        )
        .unwrap();
        assert!(r.get("model.layers.0.self_attn.q_proj").is_some());
        let rope = r.get("model.layers.1.self_attn.rope_q").unwrap();
        assert_eq!(rope.shape, vec![4, 16, 32]);
    }

    /// llama.cpp's `Qcur` after RoPE and after the matmul, told apart by the last axis whatever
    /// the rank: a prompt's `[T, heads*head_dim]` and one token's `[heads, head_dim]` (the outer
    /// size-1 dims dropped) have one rank; ggml's 4 axes kept, both have 4.
    #[test]
    fn the_last_axis_picks_the_rule() {
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let dump = [
            t("Qcur-0", &[16, 128]),
            t("Qcur-1", &[16, 4, 32]),
            t("Qcur-1@1", &[4, 32]),
            t("Qcur-2", &[1, 16, 4, 32]),
            t("Qcur-2@1", &[1, 1, 4, 32]),
            t("Qcur-3@1", &[1, 1, 1, 128]),
            t("Kcur-0@1", &[2, 32]),
            t("Vcur-0@1", &[2, 32]),
            t("Vcur-1@1", &[64]),
        ];
        let r = resolve(&m, &dump, &SIZES, "d").unwrap();
        let made = |name: &str| r.get(name).map(|v| v.shape.clone());
        assert_eq!(made("model.layers.0.self_attn.q_proj"), Some(vec![16, 128]));
        assert_eq!(
            made("model.layers.1.self_attn.rope_q"),
            Some(vec![4, 16, 32])
        );
        assert_eq!(
            made("model.layers.1.self_attn.rope_q@1"),
            Some(vec![4, 1, 32])
        );
        assert_eq!(
            made("model.layers.2.self_attn.rope_q"),
            Some(vec![4, 16, 32])
        );
        assert_eq!(
            made("model.layers.2.self_attn.rope_q@1"),
            Some(vec![4, 1, 32])
        );
        assert_eq!(
            made("model.layers.3.self_attn.q_proj@1"),
            Some(vec![1, 1, 1, 128])
        );
        assert_eq!(
            made("model.layers.0.self_attn.rope_k@1"),
            Some(vec![2, 1, 32])
        );
        assert_eq!(made("model.layers.0.self_attn.v_proj@1"), Some(vec![1, 64]));
        assert_eq!(made("model.layers.1.self_attn.v_proj@1"), Some(vec![64]));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // One kv head (MQA): the projection's last axis is head_dim too; the axis before it
        // tells them apart (a review and a hunt: the projection was compared with rope_k),
        // but for one token with the size-1 dims dropped, `[head_dim]` either way: RoPE's.
        let mqa = Sizes {
            kv_heads: Some(1),
            ..SIZES
        };
        let dump = [
            t("Kcur-0", &[16, 32]),
            t("Kcur-1", &[16, 1, 32]),
            t("Kcur-2", &[1, 1, 16, 32]),
            t("Kcur-3", &[1, 16, 1, 32]),
            t("Kcur-0@1", &[32]),
            t("Vcur-0", &[16, 32]),
            t("Vcur-1", &[16, 1, 32]),
        ];
        let r = resolve(&m, &dump, &mqa, "d").unwrap();
        let made = |name: &str| r.get(name).map(|v| v.shape.clone());
        assert_eq!(made("model.layers.0.self_attn.k_proj"), Some(vec![16, 32]));
        assert_eq!(
            made("model.layers.1.self_attn.rope_k"),
            Some(vec![1, 16, 32])
        );
        assert_eq!(
            made("model.layers.2.self_attn.k_proj"),
            Some(vec![1, 1, 16, 32])
        );
        assert_eq!(
            made("model.layers.3.self_attn.rope_k"),
            Some(vec![1, 16, 32])
        );
        assert_eq!(
            made("model.layers.0.self_attn.rope_k@1"),
            Some(vec![1, 1, 32])
        );
        assert_eq!(made("model.layers.0.self_attn.v_proj"), Some(vec![16, 32]));
        assert_eq!(made("model.layers.1.self_attn.v_proj"), Some(vec![16, 32]));
    }

    /// A strict rule whose name matched and whose shape did not says so (a newcomer's check:
    /// "matches no tensor" alone sent them hunting for a typo).
    #[test]
    fn a_strict_rule_refusing_a_shape_says_so() {
        let m = map("[[rule]]\nfrom = \"blk.{L}.q_rope\"\nto = \"x.{L}\"\nrank = 2\n");
        let e = resolve(&m, &[t("blk.0.q_rope", &[16, 4, 32])], &SIZES, "ours.npz")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.toml: rule 1 (from = \"blk.{L}.q_rope\") matches no tensor of ours.npz of the shape it asks for (2 axes): `blk.0.q_rope` [16, 4, 32] is named by its `from` (mark it `optional = true` if that is expected)"
        );
    }

    /// A `last` size the model does not say is an error naming the rule and a tensor it names
    /// (passed over, the tensors went to the next rules by another layout: false divergences);
    /// a rule naming no tensor of the dump is no error.
    #[test]
    fn a_last_size_not_known_is_an_error() {
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let sizes = Sizes {
            head_dim: None,
            ..SIZES
        };
        let dump = [t("attn_norm-0", &[16, 64]), t("Qcur-1", &[16, 4, 32])];
        let e = resolve(&m, &dump, &sizes, "d").unwrap_err().to_string();
        assert_eq!(
            e,
            "preset llama.cpp: rule 4 (from = \"Qcur-{L}\"): `Qcur-1`: `last` needs the model size `head_dim`: give --model DIR, or a dump whose metadata records the model config"
        );
        let r = resolve(&m, &[t("attn_norm-0", &[16, 64])], &sizes, "d").unwrap();
        assert!(r.get("model.layers.0.input_layernorm").is_some());
        // An overflow is said as such (it read "matches no tensor": a hunt).
        let m =
            map("[[rule]]\nfrom = \"x.{N}\"\nto = \"y.{N}\"\nlast = \"9223372036854775807*2\"\n");
        let e = resolve(&m, &[t("x.0", &[2])], &SIZES, "d")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`x.0`: `last` \"9223372036854775807*2\" overflows"),
            "{e}"
        );
        // A rule naming a step is asked of the steps' names (a review).
        let m = map("[[rule]]\nfrom = \"x@{S}2\"\nto = \"y\"\nlast = \"head_dim\"\n");
        let dump = [t("x", &[2]), t("x@12", &[2])];
        let e = resolve(&m, &dump, &sizes, "d").unwrap_err().to_string();
        assert!(
            e.contains("`x@12`: `last` needs the model size `head_dim`"),
            "{e}"
        );
    }

    #[test]
    fn an_unreadable_tensor_is_only_renamed() {
        let m = crate::preset("transformer-lens").unwrap().unwrap();
        let r = resolve(
            &m,
            &[
                ("blocks.0.attn.hook_q".to_string(), None),
                ("blocks.0.hook_mlp_out".to_string(), None),
            ],
            &SIZES,
            "d",
        )
        .unwrap();
        // hook_q needs its shape (a reshape): kept as it is; hook_mlp_out is a rename.
        assert!(r.get("blocks.0.attn.hook_q").is_some());
        assert!(r.get("model.layers.0.mlp").is_some());
    }

    #[test]
    fn a_shape_may_not_grow_past_the_rank_bound() {
        // 40 unsqueezes: within the step bound, past the rank bound at the 31st.
        let steps = vec!["{ unsqueeze = 0 }"; 40].join(", ");
        let m = map(&format!(
            "[[rule]]\nfrom = \"e\"\nto = \"x\"\ntransform = [{steps}]\n"
        ));
        let e = resolve(&m, &[t("e", &[2, 3])], &SIZES, "d")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.toml: rule 1 (from = \"e\"): `e` [2, 3]: 33 axes, more than the 32 a rule's tensor may have"
        );
        // A source of more axes than that is refused before any step.
        let m = map("[[rule]]\nfrom = \"e\"\nto = \"x\"\ntransform = [{ squeeze = 0 }]\n");
        let e = resolve(&m, &[t("e", &[1; 40])], &SIZES, "d").unwrap_err();
        assert!(e.to_string().contains("40 axes, more than the 32"), "{e}");
        // A plain rename does not care.
        let m = map("[[rule]]\nfrom = \"e\"\nto = \"x\"\n");
        assert!(resolve(&m, &[t("e", &[1; 40])], &SIZES, "d").is_ok());
    }

    /// `n` decode steps of one probe (`base@1` ... `base@n`) after its prefill `base`.
    fn steps_of(base: &str, n: usize) -> Vec<(String, Option<Vec<usize>>)> {
        (0..=n)
            .map(|s| (step_name(base, s), Some(vec![1, 4])))
            .collect()
    }

    /// `n` optional rules with captures on both sides (`{A}q7{B}` -> `{A}r7{B}`): each must be
    /// matched against every name.
    fn patterned_rules(n: usize) -> Map {
        let text: String = (0..n)
            .map(|i| {
                format!(
                    "[[rule]]\nfrom = \"{{A}}q{i}{{B}}\"\nto = \"{{A}}r{i}{{B}}\"\noptional = true\n"
                )
            })
            .collect();
        map(&text)
    }

    #[test]
    fn a_decode_step_is_matched_by_its_base_once_per_base() {
        // 1,000 rules with captures against 20,000 steps of one probe: one base to match, far
        // under the bound (matched per step's name, 20 million matches, past it).
        let m = patterned_rules(1000);
        let dump = steps_of("opq7x", 20_000);
        let r = resolve(&m, &dump, &SIZES, "d").unwrap();
        assert_eq!(r.tensors.len(), 20_001);
        assert_eq!(r.tensors[0].name, "opr7x");
        assert_eq!(r.tensors[20_000].name, "opr7x@20000");
        assert_eq!(r.tensors[20_000].sources, ["opq7x@20000"]);
    }

    #[test]
    fn a_capture_never_swallows_the_decode_step() {
        // llama.cpp's `Qcur-{L}`: `Qcur-0@2` is layer 0 at step 2, not a layer called `0@2`.
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let r = resolve(
            &m,
            &[t("Qcur-0", &[16, 128]), t("Qcur-0@2", &[1, 128])],
            &SIZES,
            "d",
        )
        .unwrap();
        let names: Vec<&str> = r.tensors.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.q_proj@2"
            ]
        );
        // A rule that names the step itself still wins for that step.
        let m = map("[[rule]]\nfrom = \"{A}@2\"\nto = \"{A}.two@2\"\n[[rule]]\nfrom = \"{A}\"\nto = \"{A}.any\"\n");
        let r = resolve(&m, &steps_of("p", 3), &SIZES, "d").unwrap();
        let names: Vec<&str> = r.tensors.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["p.any", "p.any@1", "p.two@2", "p.any@3"]);
    }

    #[test]
    fn a_rule_for_a_probes_steps_is_looked_up_and_names_steps_only() {
        // `p3@{S}` names the steps of probe p3: its prefill and a name that only looks like a
        // step (`p3@v`) are left to the other rules; 2,000 such rules against 20,000 steps'
        // names are lookups, not 40 million matches past the bound.
        let text: String = (0..2000)
            .map(|i| {
                format!("[[rule]]\nfrom = \"p{i}@{{S}}\"\nto = \"q{i}@{{S}}\"\noptional = true\n")
            })
            .collect();
        let m = map(&(text + "[[rule]]\nfrom = \"{A}\"\nto = \"{A}.any\"\n"));
        let mut dump = steps_of("p3", 20_000);
        dump.push(t("p3@v", &[1, 4]));
        let r = resolve(&m, &dump, &SIZES, "d").unwrap();
        assert_eq!(r.tensors[0].name, "p3.any");
        assert_eq!(r.tensors[1].name, "q3@1");
        assert_eq!(r.tensors[20_000].name, "q3@20000");
        assert_eq!(r.tensors[20_000].sources, ["p3@20000"]);
        assert_eq!(r.tensors[20_001].name, "p3@v.any");
        // A rule before it that names the step itself still wins.
        let m = map("[[rule]]\nfrom = \"p@2\"\nto = \"p.two@2\"\n[[rule]]\nfrom = \"p@{S}\"\nto = \"p.s@{S}\"\n");
        let r = resolve(&m, &steps_of("p", 3), &SIZES, "d").unwrap();
        let names: Vec<&str> = r.tensors.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["p", "p.s@1", "p.two@2", "p.s@3"]);
    }

    #[test]
    fn matching_past_the_bound_is_refused_before_it_starts() {
        let m = patterned_rules(2000);
        let dump: Vec<_> = (0..5001).map(|i| t(&format!("op{i}"), &[2])).collect();
        let e = resolve(&m, &dump, &SIZES, "ours.npz")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.toml: 2000 rules with captures × 5001 names of ours.npz: 10002000 pattern matches, more matching than the bound (10000000); name tensors literally (looked up, not matched) or with fewer patterns"
        );
        // The presets stay far under it against a decode dump, their bases being few: 600,000
        // steps' names here (matched per name, 20 rules × 600,000 would pass the bound; two
        // million, the most a dump unfolds, resolve alike in 20 s of a debug build).
        let m = crate::preset("llama.cpp").unwrap().unwrap();
        let mut dump = Vec::new();
        for l in 0..28 {
            for p in [
                "attn_norm",
                "Qcur",
                "Kcur",
                "Vcur",
                "kqv_out",
                "ffn_inp",
                "l_out",
            ] {
                dump.push(format!("{p}-{l}"));
            }
        }
        let per_step = dump.len();
        let steps = 600_000 / per_step;
        let names: Vec<_> = (0..=steps)
            .flat_map(|s| dump.iter().map(move |b| (step_name(b, s), None)))
            .collect();
        assert!(names.len() > 590_000);
        let r = resolve(&m, &names, &SIZES, "d").unwrap();
        assert_eq!(r.tensors.len(), names.len());
        assert_eq!(
            r.tensors[names.len() - 1].name,
            format!("model.layers.27@{steps}")
        );
    }

    #[test]
    fn a_stacked_member_name_in_from_gets_a_hint() {
        let m = map("[[rule]]\nfrom = \"x@steps\"\nto = \"y\"\n");
        let e = resolve(&m, &steps_of("x", 2), &SIZES, "ours.npz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.toml: rule 1 (from = \"x@steps\") matches no tensor of ours.npz: a stacked member (`@steps`) is matched by its probe's name (`from = \"x\"`), and each decode step follows its probe (mark it `optional = true` if that is expected)"
        );
    }
}
