//! Execution order: which op comes first.
//!
//! [`plan_order`] is a pure function of what the two dumps say about themselves: the reference's
//! metadata order wins, else ours', else the files' entry order (the reference's, then names only in
//! ours). Names present in the files but absent from the chosen metadata order are appended (and
//! warned about). A safetensors file without metadata has lost its order (its keys are sorted), so
//! its names are put in the canonical forward order of the HF Llama family
//! ([`divergence_names::dataflow::canonical_cmp`]: `model.embed_tokens` first, `lm_head` last),
//! or naturally sorted (`layers.2` < `layers.10`) when no name is one the table knows, with a
//! warning either way. Decode steps run in order whatever the source: an order that lists a
//! later step's probe before an earlier step's is put in step order (the prefill first, each
//! step's probes in the order found), with a warning.
//!
//! Two naming rules live here too: two single-tensor files (`.npy`, each named after its file)
//! are the same probe whatever their names, and dumps whose names differ by one leading prefix
//! (`layers.0.mlp` vs `model.layers.0.mlp`) are matched after that prefix; the row takes the
//! reference's name and [`OrderPlan::ours_name`] gives the name to read from ours.

use std::collections::{BTreeSet, HashSet};

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use divergence_names::{Name, NameList};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A set of names with a fast hasher.
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// A name and its hash, computed beforehand (in parallel): the set's own hashing is then a copy.
#[derive(Debug, Clone, Copy)]
struct Hashed<'a> {
    hash: u64,
    name: &'a str,
}

impl PartialEq for Hashed<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for Hashed<'_> {}

impl Hash for Hashed<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of [`Hashed`] keys: the precomputed hash as it is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Hashed`; anything else still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// The hash of [`Hashed`] names.
const HASH: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x6469_7665_7267_656e);

fn hash_all<'a, S: AsRef<str> + Sync>(names: &'a [S]) -> Vec<Hashed<'a>> {
    names
        .par_iter()
        .with_min_len(1024)
        .map(|n| {
            let name = n.as_ref();
            Hashed {
                hash: HASH.hash_one(name),
                name,
            }
        })
        .collect()
}

/// Distinct names numbered in the order first given, for the order planner. Hashing and lookups
/// run in parallel; only the insertions are serial (a decode dump has tens of thousands of
/// names).
struct Present<'a> {
    ids: HashMap<Hashed<'a>, u32, BuildHasherDefault<PassThrough>>,
    names: Vec<&'a str>,
}

impl<'a> Present<'a> {
    fn of(lists: &[&'a [Name]]) -> Present<'a> {
        let total = lists.iter().map(|l| l.len()).sum();
        let mut ids = HashMap::with_capacity_and_hasher(total, BuildHasherDefault::default());
        let mut names = Vec::with_capacity(total);
        for list in lists {
            for h in hash_all(list) {
                ids.entry(h).or_insert_with(|| {
                    names.push(h.name);
                    (names.len() - 1) as u32
                });
            }
        }
        Present { ids, names }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// The distinct names, in the order first given.
    fn names(&self) -> &[&'a str] {
        &self.names
    }

    fn contains(&self, name: &str) -> bool {
        self.ids.contains_key(&Hashed {
            hash: HASH.hash_one(name),
            name,
        })
    }

    /// Each name's number, `None` for a name not in the set (looked up in parallel).
    fn ids<S: AsRef<str> + Sync>(&self, names: &[S]) -> Vec<Option<u32>> {
        hash_all(names)
            .par_iter()
            .with_min_len(1024)
            .map(|h| self.ids.get(h).copied())
            .collect()
    }
}

/// What one dump says about its probes.
#[derive(Debug, Clone, Copy)]
pub struct DumpNames<'a> {
    /// The metadata `"order"` (execution order), when the dump carries one.
    pub meta_order: Option<&'a NameList>,
    /// Probe names in file order (never `__meta__`).
    pub names: &'a NameList,
    /// False when the file order is meaningless (safetensors keys are stored sorted).
    pub file_order_preserved: bool,
    /// The dump is one tensor named after its file (a `.npy`): two such dumps are compared
    /// with each other whatever their names.
    pub single_tensor_file: bool,
}

/// Where the execution order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSource {
    /// The reference's metadata `"order"`.
    RefMeta,
    /// Our metadata `"order"` (the reference has none).
    OursMeta,
    /// The reference file's entry order (npz), then names only in ours.
    RefFile,
    /// Our file's entry order (the reference's file order is lost), then names only in the reference.
    OursFile,
    /// No order anywhere: the canonical forward order of the HF Llama family
    /// ([`divergence_names::dataflow::canonical_cmp`]: embeddings, layers in index order with
    /// their ops in forward order, final norm, lm_head), unknown names after, naturally sorted.
    Canonical,
    /// No order anywhere and no name the canonical order knows: natural sort of all names.
    NaturalSort,
    /// `--prefill-vs-decode`: the stepped run's metadata `"order"` (the order its full
    /// prefill's slices are compared in, by design).
    SteppedMeta,
    /// `--prefill-vs-decode`: the stepped run's file entry order (it records none).
    SteppedFile,
}

impl OrderSource {
    /// A short human description ("reference metadata").
    pub fn describe(self) -> &'static str {
        match self {
            OrderSource::RefMeta => "reference metadata",
            OrderSource::OursMeta => "our metadata (the reference has none)",
            OrderSource::RefFile => "reference file entry order",
            OrderSource::OursFile => "our file entry order (the reference's is lost)",
            OrderSource::Canonical => "canonical Llama-family forward order (no order recorded)",
            OrderSource::NaturalSort => "natural sort of names (no order recorded)",
            OrderSource::SteppedMeta => "the stepped run's metadata",
            OrderSource::SteppedFile => "the stepped run's file entry order (it records none)",
        }
    }
}

/// The planned execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlan {
    /// Every probe name of either dump, once, in execution order (shared with the dumps'
    /// lists: [`Name`]; the reference's recorded order itself where both dumps list its names
    /// in its order, [`NameList`]).
    pub order: NameList,
    /// Where the order came from.
    pub source: OrderSource,
    /// Things the user should know (appended names, lost order, ...), one line each.
    pub warnings: Vec<String>,
    /// Probes whose name in ours differs from the row's name: `(row name, name in ours)`,
    /// sorted by row name (each row once). A pair of single-tensor files
    /// ([`DumpNames::single_tensor_file`]) makes one; dumps whose names differ by a leading
    /// prefix make one per mapped probe.
    pub renamed_in_ours: Vec<(String, String)>,
    /// True when row `i` of [`OrderPlan::order`] is the `i`-th name of both dumps' name lists
    /// (the same names in the same order, [`DumpNames::names`]): a caller may then find a
    /// row's tensors by position instead of by name (a decode dump has 150,000 rows).
    pub aligned: bool,
}

impl OrderPlan {
    /// The name to read from ours for the row `name` of [`OrderPlan::order`]: `name` itself,
    /// except for a renamed probe ([`OrderPlan::renamed_in_ours`]).
    /// Found by binary search: a prefixed decode dump renames every one of its 150,000 rows.
    pub fn ours_name<'a>(&'a self, name: &'a str) -> &'a str {
        match self
            .renamed_in_ours
            .binary_search_by(|(row, _)| row.as_str().cmp(name))
        {
            Ok(k) => self.renamed_in_ours[k].1.as_str(),
            Err(_) => name,
        }
    }

    /// The layers (`layers.N`) that some probe of either dump belongs to, ascending: what
    /// `--layer` can pick.
    pub fn layers(&self) -> BTreeSet<usize> {
        self.order
            .iter()
            .filter_map(|name| divergence_names::layer_index(name))
            .collect()
    }
}

/// Natural order of names (`layers.2` < `layers.10`), from [`divergence_names`].
pub use divergence_names::natural_cmp;

use divergence_names::dataflow::canonical_sort;

/// Names in the dump's file order, or in canonical forward order when that order is lost.
fn file_order<'a>(d: &DumpNames<'a>) -> Vec<&'a Name> {
    let mut v: Vec<&Name> = d.names.iter().collect();
    if !d.file_order_preserved {
        canonical_sort(&mut v);
    }
    v
}

fn list_some<N: AsRef<str>>(names: &[N]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    s
}

/// How ours' names map onto the reference's when they differ by a leading prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Prefix {
    /// The reference's names are ours' with this prefix in front (`model.` + `layers.0.mlp`).
    Add(String),
    /// Ours' names are the reference's with this prefix in front.
    Strip(String),
}

impl Prefix {
    /// Ours' name `n` in the reference's naming, when the prefix applies to it.
    fn apply(&self, n: &str) -> Option<String> {
        match self {
            Prefix::Add(p) => Some(format!("{p}{n}")),
            Prefix::Strip(p) => n.strip_prefix(p.as_str()).map(str::to_string),
        }
    }
}

/// Most dotted parts a name prefix [`prefix_mapping`] finds may have (`base_model.model.` is
/// two; a wrapper module or two more).
const MAX_PREFIX_PARTS: usize = 8;
/// Longest name prefix [`prefix_mapping`] finds, in bytes.
const MAX_PREFIX_BYTES: usize = 256;

/// A leading dotted prefix that, added to or stripped from ours' names, makes more of them
/// match the reference's than match as they are, and at least half of the smaller dump: the
/// dumps of one model written with and without `model.` (or an extra wrapper module). `None`
/// when the names already match, or when no one prefix explains them. A prefix is at most
/// [`MAX_PREFIX_PARTS`] dotted parts and [`MAX_PREFIX_BYTES`] bytes: each one tried hashes the
/// rest of the name, and every dot of a name tried took a name of 800,000 dots 53 s (a
/// bad-input hunt, 2026-12-04).
fn prefix_mapping(ours: &[Name], reference: &[Name]) -> Option<Prefix> {
    // Whether the names already match, hashed and looked up in parallel (a decode dump has
    // tens of thousands of names).
    let (in_ref, in_ours) = (Present::of(&[reference]), Present::of(&[ours]));
    let common = in_ours
        .names()
        .par_iter()
        .filter(|n| in_ref.contains(n))
        .count();
    let smaller = in_ours.len().min(in_ref.len());
    if smaller == 0 || common * 2 >= smaller {
        return None;
    }
    let ours_set: FastSet<&str> = ours.iter().map(|n| &**n).collect();
    let ref_set: FastSet<&str> = reference.iter().map(|n| &**n).collect();
    let mut counts: std::collections::HashMap<Prefix, usize> = std::collections::HashMap::new();
    for (names, other, add) in [(&ref_set, &ours_set, true), (&ours_set, &ref_set, false)] {
        for n in names.iter() {
            let prefixes = n
                .match_indices('.')
                .take(MAX_PREFIX_PARTS)
                .take_while(|&(i, _)| i < MAX_PREFIX_BYTES);
            for (i, _) in prefixes {
                if other.contains(&n[i + 1..]) {
                    let p = n[..=i].to_string();
                    let key = if add {
                        Prefix::Add(p)
                    } else {
                        Prefix::Strip(p)
                    };
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
    }
    let mut ranked: Vec<(Prefix, usize)> = counts.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    let (best, count) = ranked.first().cloned()?;
    // Two prefixes that explain as many names (one layer's probes against a whole model) are
    // no evidence for either: no mapping.
    if ranked.get(1).is_some_and(|(_, c)| *c == count) {
        return None;
    }
    (count > common && count * 2 >= smaller).then_some(best)
}

/// Plans the execution order of the union of both dumps' probes. Pure; see the module doc.
///
/// Dumps whose names differ by a leading prefix (`layers.0.mlp` vs `model.layers.0.mlp`, see
/// `prefix_mapping`) are matched in the reference's naming: each mapped probe is a row under
/// the reference's name, [`OrderPlan::ours_name`] gives ours' name, and a warning says so.
///
/// Decode steps run in order: a recorded order that lists a later step's probe before an
/// earlier step's is put in step order (the prefill first, the recorded order kept within each
/// step), with a warning, so that the first divergence is the earliest (step, op).
pub fn plan_order(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> OrderPlan {
    plan_order_from(ours, reference, None)
}

/// [`plan_order`] of an order that came from elsewhere than the plan can tell, `source`:
/// `diff --prefill-vs-decode` gives the full prefill (the reference's side) the stepped
/// run's order, its metadata's or its file's, and the plan and its warnings say so.
pub fn plan_order_from(
    ours: &DumpNames<'_>,
    reference: &DumpNames<'_>,
    source: Option<OrderSource>,
) -> OrderPlan {
    let mut plan = plan_as_recorded(ours, reference);
    let step = |n: &Name| divergence_names::split_step(n).1;
    if !plan.order.in_step_order() {
        // Said when the order as recorded lists them out of order; names a metadata order
        // lacks are appended after it (a warning of their own), and their steps put in place
        // need no other word (found by a bad-input hunt: `--prefill-vs-decode` against a
        // full dump without `lm_head` appended `lm_head`, `lm_head@1`, ... after the last
        // step, and was said to list decode steps out of order).
        // A file order counts as recorded too: the names only in the other dump appended
        // after it are the other dump's, in no order of this one (a bad-input hunt: a probe
        // only in ours at step 1, appended after the reference's step 2, was said to be listed
        // out of order by a reference whose file is in step order).
        let recorded: Option<&[Name]> = match plan.source {
            OrderSource::RefMeta => reference.meta_order.map(|m| &m[..]),
            OrderSource::OursMeta => ours.meta_order.map(|m| &m[..]),
            OrderSource::RefFile => Some(&reference.names[..]),
            OrderSource::OursFile => Some(&ours.names[..]),
            _ => None,
        };
        let listed_out_of_order = recorded.is_none_or(|m| !m.iter().map(step).is_sorted());
        // Stable: within a step, the order stays the recorded one.
        plan.order.to_mut().par_sort_by_key(step);
        // Row `i` is no longer the `i`-th name of the files.
        plan.aligned = false;
        if listed_out_of_order {
            plan.warnings.push(format!(
                "the execution order ({}) lists decode steps out of order: the rows are in step order (the prefill first), each step's probes in that order",
                source.unwrap_or(plan.source).describe()
            ));
        }
    }
    if let Some(source) = source {
        plan.source = source;
    }
    plan
}

/// [`plan_order`] before the decode steps are checked to run in order.
fn plan_as_recorded(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> OrderPlan {
    if let Some(plan) = same_names(ours, reference) {
        return plan;
    }
    if !(ours.single_tensor_file && reference.single_tensor_file) {
        if let Some(prefix) = prefix_mapping(ours.names, reference.names) {
            let ref_set: HashSet<&str> = reference.names.iter().map(|n| &**n).collect();
            let ours_set: HashSet<&str> = ours.names.iter().map(|n| &**n).collect();
            // Ours' name in the reference's naming, when that name exists in the reference; a
            // name the reference already has keeps it, and no name maps onto one ours has.
            let map = |n: &Name| -> Name {
                if ref_set.contains(&**n) {
                    return n.clone();
                }
                prefix
                    .apply(n)
                    .filter(|m| ref_set.contains(m.as_str()) && !ours_set.contains(m.as_str()))
                    .map_or_else(|| n.clone(), Name::from)
            };
            let names: NameList = ours.names.iter().map(map).collect();
            let meta: Option<NameList> = ours.meta_order.map(|m| m.iter().map(map).collect());
            let renamed: Vec<(String, String)> = names
                .iter()
                .zip(ours.names)
                .filter(|(row, o)| row != o)
                .map(|(row, o)| (row.to_string(), o.to_string()))
                .collect();
            let mapped = DumpNames {
                meta_order: meta.as_ref(),
                names: &names,
                ..*ours
            };
            let mut plan = plan_named(&mapped, reference);
            let example = renamed.first().map_or_else(String::new, |(row, o)| {
                format!(" (ours' `{o}` is ref's `{row}`)")
            });
            let how = match &prefix {
                Prefix::Add(p) => format!("without the prefix `{p}` the reference's names have"),
                Prefix::Strip(p) => format!("with an extra prefix `{p}`"),
            };
            plan.warnings.insert(
                0,
                format!(
                    "our dump names its probes {how}: {} probes matched by name after that prefix{example}",
                    renamed.len()
                ),
            );
            let mut renamed = renamed;
            renamed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            plan.renamed_in_ours = renamed;
            return plan;
        }
    }
    plan_named(ours, reference)
}

/// [`plan_order`] of the common case where it has nothing to reconcile: the same names in the
/// same order in both files, which is the order the reference's metadata records (two dumps
/// made from one probe list, such as ours and the exporter's, one pass or decode steps). The
/// plan is then that order, as [`plan_named`] makes it (tested), without hashing every name
/// of a decode dump three times; `None` otherwise.
fn same_names(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> Option<OrderPlan> {
    let base = reference.meta_order.filter(|m| !m.is_empty())?;
    // One list (a dump's names are its metadata's order, and both dumps' where they list the
    // same names: `Dump::open_pair`) is the same names without a look at them; else name by
    // name, one allocation being one name (`Arc<str>`'s `==` compares the bytes: 2 x 150,000
    // names of a 256-step decode pair, ~5 ms of one thread).
    // (`NameList`'s `==`: one list, or two held by the same parts, without a look at the
    // names; else in parallel, name by name.)
    let plain = !(ours.single_tensor_file || reference.single_tensor_file);
    (plain && base == reference.names && ours.names == reference.names).then(|| OrderPlan {
        // Shared, not copied (150,000 names at 256 decode steps).
        order: base.clone(),
        source: OrderSource::RefMeta,
        warnings: Vec::new(),
        renamed_in_ours: Vec::new(),
        aligned: true,
    })
}

/// [`plan_order`] once both dumps use one naming.
fn plan_named(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> OrderPlan {
    if ours.single_tensor_file && reference.single_tensor_file {
        if let ([o], [r]) = (&ours.names[..], &reference.names[..]) {
            // Two single-tensor files (named after their files) are one probe: the row takes
            // the reference's name.
            let renamed_in_ours = if o == r {
                Vec::new()
            } else {
                vec![(r.to_string(), o.to_string())]
            };
            return OrderPlan {
                order: vec![r.clone()].into(),
                source: OrderSource::RefFile,
                warnings: Vec::new(),
                renamed_in_ours,
                aligned: true,
            };
        }
    }
    // Every name once, numbered (the reference's first); hashed in parallel (a decode dump has
    // tens of thousands of names).
    let present = Present::of(&[reference.names, ours.names]);
    let mut warnings = Vec::new();
    let mut pushed = vec![false; present.len()];
    let mut order: Vec<Name> = Vec::with_capacity(present.len());
    // Pushes the names of `names` not pushed yet (ids from `Present::ids`).
    let mut push_ids = |names: &[&Name], ids: &[Option<u32>], order: &mut Vec<Name>| {
        for (name, id) in names.iter().zip(ids) {
            if let Some(seen) = id.and_then(|i| pushed.get_mut(i as usize)) {
                if !*seen {
                    *seen = true;
                    order.push((*name).clone());
                }
            }
        }
    };

    let meta = match (reference.meta_order, ours.meta_order) {
        (Some(m), _) if !m.is_empty() => {
            Some((m, OrderSource::RefMeta, "the reference's", ours.meta_order))
        }
        (_, Some(m)) if !m.is_empty() => Some((m, OrderSource::OursMeta, "our", None)),
        _ => None,
    };

    let source = if let Some((base, source, whose, other_meta)) = meta {
        let base_ids = present.ids(base);
        let absent: Vec<Name> = base
            .iter()
            .zip(&base_ids)
            .filter(|(_, id)| id.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let base: Vec<&Name> = base.iter().collect();
        push_ids(&base, &base_ids, &mut order);
        let before = order.len();
        // Extras: the reference file's names, then our metadata order, then our file's names
        // (none when the metadata order listed them all).
        if order.len() < present.len() {
            let extras: Vec<&Name> = file_order(reference)
                .into_iter()
                .chain(other_meta.map_or(&[][..], |m| &m[..]))
                .chain(file_order(ours))
                .collect();
            let ids = present.ids(&extras);
            push_ids(&extras, &ids, &mut order);
        }
        // Said: the names the metadata order's own file holds and its order lacks. A name
        // only the other file holds is in no order of this one's (a map's product such as
        // vLLM's `act_and_mul`, only in ours, was named in the map's warning, in this one and
        // in the only-in-ours list).
        let own_file = match source {
            OrderSource::RefMeta => reference.names,
            _ => ours.names,
        };
        let extra: Vec<Name> = match order.len() > before {
            true => {
                let own = Present::of(&[own_file]);
                order[before..]
                    .iter()
                    .filter(|n| own.contains(n))
                    .cloned()
                    .collect()
            }
            false => Vec::new(),
        };
        if !extra.is_empty() {
            let extra = &extra[..];
            // Names of decode steps are then put in their step (`plan_order_from`'s sort by
            // step, stable): each at the end of its step, not of the order (a bad-input hunt).
            let stepped = extra.iter().any(|n| divergence_names::split_step(n).1 > 0);
            warnings.push(format!(
                "{} probe(s) present in the files but missing from {whose} metadata order were appended at the end{}: {}",
                extra.len(),
                if stepped {
                    " of their decode step (0 = the prefill)"
                } else {
                    ""
                },
                list_some(extra)
            ));
        }
        if !absent.is_empty() {
            warnings.push(format!(
                "{} name(s) in {whose} metadata order are in neither file: {}",
                absent.len(),
                list_some(&absent)
            ));
        }
        source
    } else if reference.file_order_preserved || !ours.file_order_preserved {
        let lost = !reference.file_order_preserved;
        let mut names: Vec<&Name> = file_order(reference)
            .into_iter()
            .chain(file_order(ours))
            .collect();
        let known = names
            .iter()
            .any(|n| divergence_names::Op::of(n) != divergence_names::Op::Other);
        if lost && known {
            canonical_sort(&mut names);
        } else if lost {
            names.sort_by(|a, b| natural_cmp(a, b));
        }
        let ids = present.ids(&names);
        push_ids(&names, &ids, &mut order);
        if lost {
            if known {
                warnings.push(
                    "neither dump records its execution order (safetensors without metadata keeps keys sorted): \
                     ops are in the canonical Llama-family forward order (embeddings, layers, final norm, lm_head; \
                     unknown names after, in natural order)"
                        .to_string(),
                );
                OrderSource::Canonical
            } else {
                warnings.push(
                    "neither dump records its execution order (safetensors without metadata keeps keys sorted): \
                     ops are in natural name order, so the \"first\" divergence may not be the earliest op"
                        .to_string(),
                );
                OrderSource::NaturalSort
            }
        } else {
            let only_in_ours = || {
                let in_ref: FastSet<&str> = reference.names.iter().map(|n| &**n).collect();
                ours.names.iter().any(|n| !in_ref.contains(&**n))
            };
            if !ours.file_order_preserved && only_in_ours() {
                warnings.push(
                    "our dump has no recorded order (safetensors without metadata): names only in ours are \
                     appended in canonical forward order"
                        .to_string(),
                );
            }
            OrderSource::RefFile
        }
    } else {
        let names: Vec<&Name> = file_order(ours)
            .into_iter()
            .chain(file_order(reference))
            .collect();
        let ids = present.ids(&names);
        push_ids(&names, &ids, &mut order);
        warnings.push(
            "the reference dump has no recorded order (safetensors without metadata): using our file's entry order"
                .to_string(),
        );
        OrderSource::OursFile
    };
    let aligned = order.as_slice() == &reference.names[..] && order.as_slice() == &ours.names[..];
    OrderPlan {
        order: order.into(),
        source,
        warnings,
        renamed_in_ours: Vec::new(),
        aligned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `names` as a list that lives as long as the test.
    fn nl(names: &[Name]) -> &'static NameList {
        Box::leak(Box::new(NameList::from(names.to_vec())))
    }

    fn s(v: &[&str]) -> Vec<Name> {
        v.iter().map(|&x| Name::from(x)).collect()
    }

    /// A dump's names as the planner sees them (file order kept, several tensors).
    /// (The order is copied into a list that lives as long as the test.)
    fn dn<'a>(meta: Option<&'a [Name]>, names: &'a [Name]) -> DumpNames<'a> {
        let meta = meta.map(nl);
        DumpNames {
            meta_order: meta,
            names: nl(names),
            file_order_preserved: true,
            single_tensor_file: false,
        }
    }

    /// A single-tensor `.npy` file's name.
    fn npy(names: &[Name]) -> DumpNames<'_> {
        DumpNames {
            single_tensor_file: true,
            ..dn(None, names)
        }
    }

    /// The shortcut for two dumps with one name list gives the general path's plan; it does
    /// not apply as soon as the lists or the recorded order differ.
    #[test]
    fn a_prefix_is_found_within_its_bounds_only() {
        let names =
            |v: &[String]| -> Vec<Name> { v.iter().map(|n| Name::from(n.as_str())).collect() };
        let base: Vec<String> = (0..4).map(|i| format!("layers.{i}.mlp")).collect();
        // `base_model.model.`: two parts
        let ours: Vec<String> = base
            .iter()
            .map(|n| format!("base_model.model.{n}"))
            .collect();
        assert_eq!(
            prefix_mapping(&names(&ours), &names(&base)),
            Some(Prefix::Strip("base_model.model.".into()))
        );
        // eight parts at most: a ninth is not tried
        let deep = |parts: usize| -> Vec<String> {
            base.iter()
                .map(|n| format!("{}{n}", "w.".repeat(parts)))
                .collect()
        };
        assert!(prefix_mapping(&names(&deep(8)), &names(&base)).is_some());
        assert_eq!(prefix_mapping(&names(&deep(9)), &names(&base)), None);
        // a name of 200,000 dots is tried at its first eight (each try hashes the rest of it:
        // every dot tried took 800,000 dots 53 s)
        let long = vec![format!("port.{}0", "a.".repeat(200_000))];
        let reference = vec![format!("{}0", "a.".repeat(200_000))];
        let t = std::time::Instant::now();
        assert_eq!(
            prefix_mapping(&names(&long), &names(&reference)),
            Some(Prefix::Strip("port.".into()))
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn the_same_names_in_the_same_order_plan_as_the_general_path() {
        let names = s(&[
            "model.embed_tokens",
            "model.layers.0",
            "lm_head",
            "model.layers.0@1",
        ]);
        let swapped = s(&[
            "model.layers.0",
            "model.embed_tokens",
            "lm_head",
            "model.layers.0@1",
        ]);
        let (o, r) = (dn(Some(&names), &names), dn(Some(&names), &names));
        assert!(same_names(&o, &r).is_some());
        assert_eq!(plan_order(&o, &r), plan_named(&o, &r));
        for (o, r) in [
            (dn(Some(&names), &swapped), dn(Some(&names), &names)),
            (dn(None, &names), dn(Some(&swapped), &names)),
            (dn(None, &names), dn(None, &names)),
        ] {
            assert!(same_names(&o, &r).is_none());
        }
    }

    /// Names a metadata order lacks, appended after it, are put in their steps without the
    /// out-of-order warning: the recorded order was in step order.
    #[test]
    fn appended_names_are_put_in_their_steps_without_an_order_warning() {
        let names = s(&["x", "y", "x@1", "y@1", "x@2", "y@2"]);
        let recorded = s(&["x", "x@1", "x@2"]);
        let (o, r) = (dn(Some(&recorded), &names), dn(Some(&recorded), &names));
        let plan = plan_order(&o, &r);
        assert_eq!(plan.order, s(&["x", "y", "x@1", "y@1", "x@2", "y@2"]));
        // Said as they are placed: at the end of their step (it said "at the end" alone).
        assert!(plan.warnings.iter().any(|w| w.starts_with(
            "3 probe(s) present in the files but missing from the reference's metadata order were appended at the end of their decode step (0 = the prefill): "
        )), "{:?}", plan.warnings);
        // One pass: at the end.
        let one = s(&["x", "y"]);
        let listed = s(&["x"]);
        let (o1, r1) = (dn(Some(&listed), &one), dn(Some(&listed), &one));
        assert!(plan_order(&o1, &r1).warnings.iter().any(|w| w
            .contains("missing from the reference's metadata order were appended at the end: ")));
        assert!(
            !plan.warnings.iter().any(|w| w.contains("out of order")),
            "{:?}",
            plan.warnings
        );
    }

    /// A recorded order that lists decode steps out of order is put in step order (the
    /// prefill first, each step's probes in the recorded order), with a warning; rows are then
    /// found by name. A recorded order in step order is kept as it is, without a warning.
    #[test]
    fn decode_steps_are_planned_in_step_order() {
        let said_out_of_order = |plan: &OrderPlan| {
            plan.warnings
                .iter()
                .any(|w| w.contains("lists decode steps out of order"))
        };
        let names = s(&["x", "x@1", "x@2", "y", "y@1", "y@2"]);
        let shuffled = s(&["y@2", "x@2", "y@1", "x@1", "y", "x"]);
        let (o, r) = (dn(Some(&shuffled), &names), dn(Some(&shuffled), &names));
        let plan = plan_order(&o, &r);
        assert_eq!(plan.order, s(&["y", "x", "y@1", "x@1", "y@2", "x@2"]));
        assert!(!plan.aligned);
        assert!(said_out_of_order(&plan), "{:?}", plan.warnings);
        let stepped = s(&["y", "x", "y@1", "x@1", "y@2", "x@2"]);
        let (o, r) = (dn(Some(&stepped), &stepped), dn(Some(&stepped), &stepped));
        let plan = plan_order(&o, &r);
        assert_eq!(plan.order, stepped);
        assert!(plan.aligned);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        // The prefill listed after a step of its own probe.
        let late = s(&["x@1", "x"]);
        let two = s(&["x", "x@1"]);
        let plan = plan_order(&dn(Some(&late), &two), &dn(Some(&late), &two));
        assert_eq!(plan.order, s(&["x", "x@1"]));
        // Without metadata, a reference file in step order: a probe only in ours, appended
        // after it, is put in its step without a word (a bad-input hunt); a reference file
        // out of step order is said.
        let ours = s(&["a", "a@1", "extra@1", "a@2"]);
        let file = s(&["a", "a@1", "a@2"]);
        let plan = plan_order(&dn(None, &ours), &dn(None, &file));
        assert_eq!(plan.source, OrderSource::RefFile);
        assert_eq!(plan.order, s(&["a", "a@1", "extra@1", "a@2"]));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let file = s(&["a@1", "a", "a@2"]);
        let plan = plan_order(&dn(None, &ours), &dn(None, &file));
        assert!(said_out_of_order(&plan), "{:?}", plan.warnings);
    }

    /// `aligned` is set exactly when row `i` is the `i`-th name of the reference and its name
    /// in ours ([`OrderPlan::ours_name`]) the `i`-th of ours: the same lists (with a recorded
    /// order or without), a prefix only ours has, lists in other orders, an extra name, and a
    /// pair of single-tensor files.
    #[test]
    fn aligned_means_row_i_is_the_ith_name_of_both() {
        let names = s(&[
            "model.embed_tokens",
            "model.layers.0.mlp",
            "model.norm",
            "lm_head",
        ]);
        let prefixed = s(&[
            "x.model.embed_tokens",
            "x.model.layers.0.mlp",
            "x.model.norm",
            "x.lm_head",
        ]);
        let swapped = s(&[
            "model.layers.0.mlp",
            "model.embed_tokens",
            "model.norm",
            "lm_head",
        ]);
        let extra = s(&[
            "model.embed_tokens",
            "model.layers.0.mlp",
            "model.norm",
            "lm_head",
            "more",
        ]);
        let (one, other) = (s(&["a"]), s(&["b"]));
        let cases = [
            (dn(Some(&names), &names), dn(Some(&names), &names), true),
            (dn(None, &names), dn(None, &names), true),
            (dn(None, &prefixed), dn(Some(&names), &names), true),
            (dn(None, &swapped), dn(Some(&names), &names), false),
            (dn(None, &names), dn(Some(&swapped), &swapped), false),
            (dn(None, &extra), dn(Some(&names), &names), false),
            (npy(&one), npy(&one), true),
            (npy(&other), npy(&one), true),
        ];
        for (k, (o, r, want)) in cases.iter().enumerate() {
            let plan = plan_order(o, r);
            let holds = plan.order.len() == r.names.len()
                && plan.order.len() == o.names.len()
                && plan
                    .order
                    .iter()
                    .enumerate()
                    .all(|(i, row)| *row == r.names[i] && plan.ours_name(row) == &*o.names[i]);
            assert_eq!(holds, *want, "case {k}: {:?}", plan.order);
            assert_eq!(plan.aligned, holds, "case {k}");
        }
    }

    #[test]
    fn ref_meta_order_wins_and_extras_are_appended() {
        let ref_names = s(&["c", "a", "b", "r_extra"]);
        let ours_names = s(&["a", "b", "c", "o_extra"]);
        let ref_meta: NameList = s(&["a", "b", "c", "ghost"]).into();
        let ours_meta: NameList = s(&["c", "b", "a", "o_extra"]).into();
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&ours_meta),
                names: nl(&ours_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: Some(&ref_meta),
                names: nl(&ref_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::RefMeta);
        assert_eq!(plan.order, s(&["a", "b", "c", "r_extra", "o_extra"]));
        assert_eq!(plan.warnings.len(), 2);
        // Said: the reference's own name its order lacks; `o_extra`, only in ours, is in no
        // order of the reference's (it is an only-in-ours row, said as such).
        assert!(
            plan.warnings[0].contains("1 probe(s)"),
            "{:?}",
            plan.warnings
        );
        assert!(
            plan.warnings[0].ends_with(": r_extra"),
            "{:?}",
            plan.warnings
        );
        assert!(plan.warnings[1].contains("ghost"));
    }

    #[test]
    fn ours_meta_when_ref_has_none() {
        let ref_names = s(&["b", "a"]);
        let ours_names = s(&["a", "b"]);
        let ours_meta: NameList = s(&["b", "a"]).into();
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&ours_meta),
                names: nl(&ours_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: nl(&ref_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::OursMeta);
        assert_eq!(plan.order, s(&["b", "a"]));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn file_order_fallback() {
        let ref_names = s(&["z", "a", "m"]);
        let ours_names = s(&["a", "only_ours", "z"]);
        let empty = NameList::default();
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&empty),
                names: nl(&ours_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: nl(&ref_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::RefFile);
        assert_eq!(plan.order, s(&["z", "a", "m", "only_ours"]));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn lost_order_natural_sort_with_warning() {
        let ref_names = s(&["layers.10.x", "layers.2.x", "embed"]);
        let ours_names = s(&["layers.10.x", "layers.2.x", "embed", "layers.3.x"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: None,
                names: nl(&ours_names),
                file_order_preserved: false,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: nl(&ref_names),
                file_order_preserved: false,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::NaturalSort);
        assert_eq!(
            plan.order,
            s(&["embed", "layers.2.x", "layers.3.x", "layers.10.x"])
        );
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("natural name order"));
    }

    #[test]
    fn lost_order_of_llama_names_is_the_canonical_forward_order() {
        // safetensors keeps keys sorted: lm_head would come first, and be "the first divergence".
        let sorted = s(&[
            "lm_head",
            "model.embed_tokens",
            "model.layers.0",
            "model.layers.0.input_layernorm",
            "model.layers.0.mlp",
            "model.layers.0.self_attn.k_norm",
            "model.layers.0.self_attn.k_proj",
            "model.layers.10.input_layernorm",
            "model.layers.2.input_layernorm",
            "model.norm",
            "x.custom",
        ]);
        let names = DumpNames {
            meta_order: None,
            names: nl(&sorted),
            file_order_preserved: false,
            single_tensor_file: false,
        };
        let plan = plan_order(&names, &names);
        assert_eq!(plan.source, OrderSource::Canonical);
        assert_eq!(
            plan.order,
            s(&[
                "model.embed_tokens",
                "model.layers.0.input_layernorm",
                "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.k_norm",
                "model.layers.0.mlp",
                "model.layers.0",
                "model.layers.2.input_layernorm",
                "model.layers.10.input_layernorm",
                "model.norm",
                "lm_head",
                "x.custom",
            ])
        );
        assert!(plan.warnings[0].contains("canonical Llama-family forward order"));
    }

    #[test]
    fn ours_file_order_when_ref_lost_it() {
        let ref_names = s(&["a", "b", "r"]);
        let ours_names = s(&["b", "a"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: None,
                names: nl(&ours_names),
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: nl(&ref_names),
                file_order_preserved: false,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::OursFile);
        assert_eq!(plan.order, s(&["b", "a", "r"]));
        assert_eq!(plan.warnings.len(), 1);
    }

    /// The planner with metadata orders equals the plain set-based definition: every name of
    /// the chosen metadata order present in a file, once, in its order; then the reference
    /// file's names, our metadata order, our file's names; names of the metadata order in no
    /// file listed as absent.
    mod against_naive {
        use super::*;
        use proptest::prelude::*;

        fn naive(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> (Vec<Name>, usize, usize) {
            let present: HashSet<&Name> = ours.names.iter().chain(reference.names).collect();
            let (base, other, own) = match (reference.meta_order, ours.meta_order) {
                (Some(m), o) if !m.is_empty() => (m, o, reference.names),
                (_, Some(m)) => (m, None, ours.names),
                _ => unreachable!(),
            };
            let mut seen = HashSet::new();
            let mut order = Vec::new();
            let absent = base.iter().filter(|n| !present.contains(n)).count();
            for n in base {
                if present.contains(n) && seen.insert(n) {
                    order.push(n.clone());
                }
            }
            let before = order.len();
            for n in reference
                .names
                .iter()
                .chain(other.map_or(&[][..], |m| &m[..]))
                .chain(ours.names)
            {
                if present.contains(n) && seen.insert(n) {
                    order.push(n.clone());
                }
            }
            // Said: those the metadata order's own file holds.
            let appended = order[before..].iter().filter(|n| own.contains(n)).count();
            (order, appended, absent)
        }

        fn names(max: usize) -> impl Strategy<Value = Vec<Name>> {
            // Distinct names of a dump, in file order, from a small pool so that the sides share
            // some; names with a step suffix among them.
            proptest::collection::btree_set(0u8..40, 0..max).prop_flat_map(|set| {
                let v: Vec<Name> = set
                    .into_iter()
                    .map(|i| {
                        Name::from(if i % 5 == 0 {
                            format!("model.layers.{i}@1")
                        } else {
                            format!("model.layers.{i}")
                        })
                    })
                    .collect();
                Just(v).prop_shuffle()
            })
        }

        proptest! {
            #[test]
            fn meta_orders_plan_as_defined(
                o in names(30),
                r in names(30),
                ref_meta in proptest::collection::vec(0u8..45, 1..40),
                ours_meta in proptest::option::of(proptest::collection::vec(0u8..45, 0..40)),
            ) {
                let as_names = |v: &[u8]| -> Vec<Name> {
                    v.iter().map(|&i| Name::from(if i % 5 == 0 { format!("model.layers.{i}@1") } else { format!("model.layers.{i}") })).collect()
                };
                let rm: NameList = as_names(&ref_meta).into();
                let om: Option<NameList> = ours_meta.as_deref().map(as_names).map(NameList::from);
                let ours = DumpNames { meta_order: om.as_ref(), names: nl(&o), file_order_preserved: true, single_tensor_file: false };
                let reference = DumpNames { meta_order: Some(&rm), names: nl(&r), file_order_preserved: true, single_tensor_file: false };
                let plan = plan_named(&ours, &reference);
                let (order, appended, absent) = naive(&ours, &reference);
                prop_assert_eq!(&plan.order, &order);
                prop_assert_eq!(plan.source, OrderSource::RefMeta);
                let warned = |w: &str| plan.warnings.iter().filter(|x| x.contains(w)).count();
                prop_assert_eq!(warned("were appended at the end"), usize::from(appended > 0));
                prop_assert_eq!(warned("are in neither file"), usize::from(absent > 0));
                if appended > 0 {
                    let w = plan.warnings.iter().find(|x| x.contains("were appended")).unwrap();
                    prop_assert!(w.starts_with(&format!("{appended} probe(s)")), "{}", w);
                }
                if absent > 0 {
                    let w = plan.warnings.iter().find(|x| x.contains("neither file")).unwrap();
                    prop_assert!(w.starts_with(&format!("{absent} name(s)")), "{}", w);
                }
            }
        }
    }
}
