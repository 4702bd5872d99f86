//! Dataflow of the HF Llama-family forward pass: which probe feeds which, and the canonical
//! execution order of a dump that records none.
//!
//! The table is written once, at the level of [`Op`]s (Qwen3, Qwen2, Llama and Mistral share it;
//! models without q_norm / k_norm simply lack those probes):
//!
//! ```text
//! input_layernorm(L)      <- resid(L)            resid(L) = the output of the closest earlier
//!                                                layer with probes (layers.L-1), else embed_tokens
//! q_proj, k_proj, v_proj  <- input_layernorm
//! q_norm / k_norm         <- q_proj / k_proj
//! rope_q / rope_k         <- q_norm / k_norm, rotary_emb
//! cache_k / cache_v       <- rope_k / v_proj   (decode steps: the KV cache's new slot)
//! attn_out                <- rope_q, cache_k, cache_v (absent: rope_k, v_proj)
//! o_proj                  <- attn_out
//! self_attn               <- o_proj
//! attn_residual           <- resid(L), self_attn
//! post_attention_layernorm<- attn_residual
//! gate_proj, up_proj      <- post_attention_layernorm
//! act_fn                  <- gate_proj
//! down_proj               <- act_fn, up_proj
//! mlp                     <- down_proj
//! layers.L                <- attn_residual, mlp
//! norm                    <- layers.(last)
//! model (last_hidden)     <- norm
//! lm_head                 <- model
//! embed_tokens, rotary_emb: sources (token ids, positions)
//! ```
//!
//! It is resolved against the names a dump actually has: an input that was not dumped is
//! replaced by *its* inputs, recursively (a Llama dump has no `k_norm`, so `rope_k <- k_proj`;
//! a dump without `attn_residual` gives `post_attention_layernorm <- layers.L-1, self_attn`).
//! A name this table does not know takes the op before it in execution order as its input.
//!
//! Decode steps (`name@s`, [`crate::split_step`]) are resolved step by step: a probe's inputs
//! are probes of its own step (the cache slots of earlier steps are not probes of this step;
//! an error they carry shows at the earlier step first).
//!
//! Resolved input sets are bounded: a probe keeps at most [`MAX_INPUTS`] inputs, the latest
//! ones in execution order (the nearest producers, which are what "the error was born here,
//! its inputs are clean" compares against). Bridging a missing probe through the residual
//! stream can otherwise reach every earlier probe: a dump with one `model.layers.N.mlp` per
//! layer and no layer outputs gives layer N's ops all N earlier `mlp`s as inputs, O(L²) inputs
//! in all (a hostile or malformed dump: 20,000 layers took gigabytes). A realistic dump, whose
//! layer outputs `model.layers.N` or residuals are dumped, has a handful of inputs per probe and
//! resolves exactly; the bound only cuts sets larger than it. Sets are shared between the
//! nodes that resolve to them (never copied), and the layers' outputs are resolved in layer
//! order first, so that resolution recurses through one layer at a time whatever the order.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use rayon::prelude::*;

use crate::{natural_cmp, split_layer, Op, QkKind};

/// The most inputs a probe keeps: the latest ones (in execution order) of its resolved set.
///
/// A realistic dump resolves to at most a few inputs per probe (`attn_out <- rope_q, rope_k,
/// v_proj, rotary_emb` when nothing between them was dumped); a dump of only the attention
/// and MLP outputs of each layer (no layer outputs, no residuals) bridges the residual stream
/// through every earlier branch output, two per layer: 256 keeps that exact up to 128 layers
/// (Llama-3.1-405B has 126), and beyond it keeps the nearest 128 layers' producers. Larger sets only come from sparse or
/// hostile dumps, where keeping them all costs O(L²) (see the module docs).
pub const MAX_INPUTS: usize = 256;

/// Most layers whose dataflow is resolved from the table: more, and every probe takes the one
/// before it in execution order as its input. Past the sanity cap of a config's
/// `num_hidden_layers` (10,000, `divergence inspect`); real models have at most a few hundred.
/// At the bound, resolving keeps ~75 MB (~2.3 KB a layer).
pub const MAX_LAYERS: usize = 1 << 15;

/// A resolved set of probe indices, ascending, at most [`MAX_INPUTS`] long; shared between the
/// nodes that resolve to the same set.
type Set = Rc<[usize]>;

/// The latest [`MAX_INPUTS`] probes of the union of `sets`, without `exclude`, ascending.
/// Because each set already holds the latest of its own, this is the latest of the union of
/// the unbounded sets too.
fn merge(sets: &[Set], exclude: Option<usize>) -> Vec<usize> {
    let mut v: Vec<usize> = sets.iter().flat_map(|s| s.iter().copied()).collect();
    v.sort_unstable();
    v.dedup();
    if let Some(x) = exclude {
        v.retain(|&j| j != x);
    }
    let extra = v.len().saturating_sub(MAX_INPUTS);
    v.drain(..extra);
    v
}

/// A node of the forward pass: an op, in a layer or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Global(Op),
    InLayer(Op, usize),
}

/// The decoder layers a dump has probes in.
struct Layers {
    present: BTreeSet<usize>,
}

impl Layers {
    fn last(&self) -> Option<usize> {
        self.present.last().copied()
    }

    /// The residual stream entering layer `l`: the output of the closest earlier layer that
    /// has probes (the layer before it in a full dump), else the embeddings. Skipping layers
    /// without probes keeps resolution shallow whatever the indices (`layers.1000000` alone).
    fn resid(&self, l: usize) -> Node {
        match self.present.range(..l).next_back() {
            Some(&m) => Node::InLayer(Op::Layer, m),
            None => Node::Global(Op::EmbedTokens),
        }
    }
}

/// The structural inputs of a node (before resolution against the names present).
fn structural_inputs(node: Node, layers: &Layers) -> Vec<Node> {
    use QkKind::{K, Q};
    let resid = |layer: usize| layers.resid(layer);
    match node {
        Node::Global(op) => match op {
            Op::FinalNorm => layers
                .last()
                .map(|l| vec![Node::InLayer(Op::Layer, l)])
                .unwrap_or_default(),
            Op::Backbone => vec![Node::Global(Op::FinalNorm)],
            Op::LmHead => vec![Node::Global(Op::Backbone)],
            _ => Vec::new(),
        },
        Node::InLayer(op, l) => {
            let at = |op| Node::InLayer(op, l);
            match op {
                Op::InputLayernorm => vec![resid(l)],
                Op::QkProj(_) | Op::VProj => vec![at(Op::InputLayernorm)],
                Op::QkNorm(k) => vec![at(Op::QkProj(k))],
                Op::Rope(k) => vec![at(Op::QkNorm(k)), Node::Global(Op::RotaryEmb)],
                Op::CacheK => vec![at(Op::Rope(K))],
                Op::CacheV => vec![at(Op::VProj)],
                Op::AttnOut => vec![at(Op::Rope(Q)), at(Op::CacheK), at(Op::CacheV)],
                Op::OProj => vec![at(Op::AttnOut)],
                Op::SelfAttn => vec![at(Op::OProj)],
                Op::AttnResidual => vec![resid(l), at(Op::SelfAttn)],
                Op::PostAttentionLayernorm => vec![at(Op::AttnResidual)],
                Op::GateProj | Op::UpProj => vec![at(Op::PostAttentionLayernorm)],
                Op::ActFn => vec![at(Op::GateProj)],
                Op::DownProj => vec![at(Op::ActFn), at(Op::UpProj)],
                Op::Mlp => vec![at(Op::DownProj)],
                Op::Layer => vec![at(Op::AttnResidual), at(Op::Mlp)],
                _ => Vec::new(),
            }
        }
    }
}

/// Which probes feed which, for one dump's names in execution order.
///
/// Kept as resolutions and the runs of the order they resolve: a decode dump's steps (each a
/// run of the order with the probes of the step before it) share one resolution, which each
/// step reads shifted to its own indices. Nothing is kept per probe of such a step (a decode
/// dump has ~150,000 probes; copying the resolution into each step's indices took a few ms and
/// ~7 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataflow {
    /// The distinct resolutions, each over its own probes (inputs as indices among them).
    tables: Vec<Table>,
    /// The runs of the order, ascending and back to back from 0: `(start, table)`, probes
    /// `start..start + tables[table].len()` resolved by that table, shifted by `start`.
    runs: Vec<(usize, usize)>,
    /// Number of probes.
    len: usize,
}

/// One resolution: probe `k`'s inputs are `flat[offsets[k]..offsets[k + 1]]` (one allocation
/// for all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Table {
    offsets: Vec<usize>,
    flat: Vec<usize>,
    fallback: Vec<bool>,
}

impl Table {
    fn inputs(&self, k: usize) -> &[usize] {
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.flat.get(a..b).unwrap_or_default(),
            _ => &[],
        }
    }

    fn is_fallback(&self, k: usize) -> bool {
        self.fallback.get(k).copied().unwrap_or(false)
    }

    fn len(&self) -> usize {
        self.fallback.len()
    }
}

/// The inputs of one probe ([`Dataflow::inputs`]): indices into the order, ascending.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// As its resolution has them.
    ids: &'a [usize],
    /// Where that resolution's probes start in the order.
    shift: usize,
}

/// A run of the order resolved by one resolution ([`Dataflow::spans`]).
#[derive(Debug, Clone)]
pub struct Span<'a> {
    /// The probes of the run.
    pub range: std::ops::Range<usize>,
    table: Option<&'a Table>,
}

impl<'a> Span<'a> {
    /// [`Dataflow::inputs`] of probe `i` of this span, without looking for its run (none for
    /// a probe outside it).
    pub fn inputs(&self, i: usize) -> Inputs<'a> {
        match self.table {
            Some(table) if self.range.contains(&i) => Inputs {
                ids: table.inputs(i - self.range.start),
                shift: self.range.start,
            },
            _ => Inputs { ids: &[], shift: 0 },
        }
    }
}

impl<'a> Inputs<'a> {
    /// The indices, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = usize> + ExactSizeIterator + 'a {
        let shift = self.shift;
        self.ids.iter().map(move |&j| j + shift)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }
}

impl Dataflow {
    /// Resolves the table against `order` (every probe name once, in execution order), each
    /// decode step on its own. A step whose probes are those of the step before it (the same
    /// names without the step, in the same order: every decode step of a usual dump) shares
    /// that step's resolution, moved to its own indices.
    pub fn new<S: AsRef<str> + Sync>(order: &[S]) -> Dataflow {
        Dataflow::of_steps(
            order.len(),
            &|i| crate::split_step(order[i].as_ref()),
            &|i| std::borrow::Cow::Borrowed(order[i].as_ref()),
        )
    }

    /// [`Dataflow::new`] of `len` probes given by parts: `split(i)` is probe `i`'s name
    /// without its step, and its step (what [`crate::split_step`] gives of its name), and
    /// `name(i)` its whole name. Whole names are asked only of the steps that resolve on their
    /// own, not of those that share the step before them (a decode report writes most step
    /// names only when asked).
    pub fn of_steps<'a>(
        len: usize,
        split: &(dyn Fn(usize) -> (&'a str, usize) + Sync),
        name: &(dyn Fn(usize) -> std::borrow::Cow<'a, str> + Sync),
    ) -> Dataflow {
        // Each probe's step (its base name is asked again where needed: a vector of both
        // for a decode dump's ~150,000 probes was ~4 MB of fresh memory).
        let steps: Vec<usize> = (0..len)
            .into_par_iter()
            .with_min_len(1024)
            .map(|i| split(i).1)
            .collect();
        Dataflow::of_known_steps(steps, split, name, &|_, _| None)
    }

    /// [`Dataflow::of_steps`] with each probe's step known (`steps[i]`, what `split(i).1`
    /// gives), and `same_base(a, b)` saying where it can whether probes `a` and `b` share
    /// their base (`None`: their bases are compared). A decode report knows both from its
    /// runs of steps without reading a row (~150,000 rows read three times took 5-6 ms of
    /// `assemble` on one thread: session 54). The caller's contract: `steps[i] == split(i).1`,
    /// and `same_base(a, b)` answers `Some(x)` only where `x == (split(a).0 == split(b).0)`.
    pub fn of_known_steps<'a>(
        steps: Vec<usize>,
        split: &(dyn Fn(usize) -> (&'a str, usize) + Sync),
        name: &(dyn Fn(usize) -> std::borrow::Cow<'a, str> + Sync),
        same_base: &(dyn Fn(usize, usize) -> Option<bool> + Sync),
    ) -> Dataflow {
        let len = steps.len();
        if steps.iter().all(|&s| s == 0) {
            let names: Vec<std::borrow::Cow<'a, str>> = (0..len).map(name).collect();
            let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
            return Dataflow::one_step(&names);
        }
        // Steps in order (a decode dump's): each step's probes are a run of the order, found
        // where the step changes.
        if steps.is_sorted() {
            let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
            for (i, &s) in steps.iter().enumerate() {
                match runs.last_mut() {
                    Some(r) if steps[r.start] == s => r.end = i + 1,
                    _ => runs.push(i..i + 1),
                }
            }
            let (tables, shared) = Dataflow::resolve_steps(
                runs.len(),
                &|g| Box::new(runs[g].clone()),
                split,
                name,
                same_base,
            );
            return Dataflow {
                runs: runs
                    .iter()
                    .zip(&shared)
                    .map(|(r, &t)| (r.start, t))
                    .collect(),
                tables,
                len,
            };
        }
        // The probes of each step, steps in order. A decode dump lists each step's probes
        // together: the map is only asked when the step changes.
        let mut by_step: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        let mut run: Option<(usize, Vec<usize>)> = None;
        for (i, &s) in steps.iter().enumerate() {
            match &mut run {
                Some((step, idx)) if *step == s => idx.push(i),
                _ => {
                    if let Some((step, idx)) = run.take() {
                        by_step.entry(step).or_default().extend(idx);
                    }
                    run = Some((s, vec![i]));
                }
            }
        }
        if let Some((step, idx)) = run {
            by_step.entry(step).or_default().extend(idx);
        }
        let groups: Vec<Vec<usize>> = by_step.into_values().collect();
        let (tables, shared) = Dataflow::resolve_steps(
            groups.len(),
            &|g| Box::new(groups[g].iter().copied()),
            split,
            name,
            same_base,
        );
        let mut out = Table {
            offsets: Vec::with_capacity(len + 1),
            flat: Vec::new(),
            fallback: Vec::with_capacity(len),
        };
        out.offsets.push(0);
        let mut of_probe: Vec<(usize, usize)> = vec![(0, 0); len];
        for (g, idx) in groups.iter().enumerate() {
            for (k, &i) in idx.iter().enumerate() {
                of_probe[i] = (g, k);
            }
        }
        for (g, k) in of_probe {
            let (idx, table) = (&groups[g], &tables[shared[g]]);
            out.flat.extend(table.inputs(k).iter().map(|&j| idx[j]));
            out.offsets.push(out.flat.len());
            out.fallback.push(table.is_fallback(k));
        }
        Dataflow::whole(out)
    }

    /// The distinct resolutions of the steps, `members(g)` the probes of step `g` in order,
    /// and each step's table among them: a step whose probes are those of the step before it
    /// (the same names without the step, in the same order) shares its table; the others are
    /// resolved in parallel, in their own indices.
    fn resolve_steps<'a, 'g>(
        groups: usize,
        members: &(dyn Fn(usize) -> Box<dyn ExactSizeIterator<Item = usize> + 'g> + Sync),
        split: &(dyn Fn(usize) -> (&'a str, usize) + Sync),
        name: &(dyn Fn(usize) -> std::borrow::Cow<'a, str> + Sync),
        same_base: &(dyn Fn(usize, usize) -> Option<bool> + Sync),
    ) -> (Vec<Table>, Vec<usize>) {
        let same_as_before: Vec<bool> = (0..groups)
            .into_par_iter()
            .map(|g| {
                g > 0 && {
                    let (before, this) = (members(g - 1), members(g));
                    before.len() == this.len()
                        && before.zip(this).all(|(a, b)| {
                            same_base(a, b).unwrap_or_else(|| {
                                // A probe's steps share their base (a run of decode steps:
                                // one string), which needs no look at its bytes.
                                let (a, b) = (split(a).0, split(b).0);
                                std::ptr::eq(a, b) || a == b
                            })
                        })
                }
            })
            .collect();
        let subs: Vec<Option<Dataflow>> = (0..groups)
            .into_par_iter()
            .zip(&same_as_before)
            .map(|(g, &same)| {
                (!same).then(|| {
                    let names: Vec<std::borrow::Cow<'a, str>> = members(g).map(name).collect();
                    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
                    Dataflow::one_step(&names)
                })
            })
            .collect();
        let mut shared: Vec<usize> = Vec::with_capacity(subs.len());
        let mut tables: Vec<Table> = Vec::new();
        for sub in subs {
            // The first step always has its own resolution.
            match (sub, shared.last()) {
                (Some(sub), _) => {
                    shared.push(tables.len());
                    tables.push(sub.into_table());
                }
                (None, Some(&last)) => shared.push(last),
                (None, None) => {}
            }
        }
        (tables, shared)
    }

    /// One table for the whole order.
    fn whole(table: Table) -> Dataflow {
        Dataflow {
            len: table.len(),
            runs: vec![(0, 0)],
            tables: vec![table],
        }
    }

    /// The table of a dataflow made of one ([`Dataflow::one_step`]).
    fn into_table(self) -> Table {
        self.tables.into_iter().next().unwrap_or_default()
    }

    /// Where probe `i` is: its table and its index in it, and the run's start.
    fn locate(&self, i: usize) -> Option<(&Table, usize, usize)> {
        if i >= self.len {
            return None;
        }
        let r = self
            .runs
            .partition_point(|&(start, _)| start <= i)
            .checked_sub(1)?;
        let (start, t) = self.runs[r];
        Some((self.tables.get(t)?, i - start, start))
    }

    fn one_step(order: &[&str]) -> Dataflow {
        let mut nodes: HashMap<Node, usize> = HashMap::new();
        let mut node_of = Vec::with_capacity(order.len());
        let mut present = BTreeSet::new();
        for (i, name) in order.iter().enumerate() {
            let op = Op::of(name);
            let node = match (op, split_layer(name)) {
                (Op::Other, _) => None,
                (_, Some(s)) => Some(Node::InLayer(op, s.layer)),
                (_, None) => Some(Node::Global(op)),
            };
            if let Some(Node::InLayer(_, l)) = node {
                present.insert(l);
            }
            if let Some(n) = node {
                // The first probe of a node wins (a dump has each name once; two prefixes for
                // one op would be odd, and the earlier is the better guess).
                nodes.entry(n).or_insert(i);
            }
            node_of.push(node);
        }
        // More layers than a model has: the table is not resolved (resolving it keeps every op
        // of every layer, ~2.3 KB a layer: 1,048,576 names `model.layers.{i}.mlp` took 2.3 GB;
        // a bad-input hunt, 2026-12-04); each probe takes the one before it, as a name the
        // table does not know does.
        if present.len() > MAX_LAYERS {
            node_of.iter_mut().for_each(|n| *n = None);
            present.clear();
        }
        let layers = Layers { present };
        let mut memo: HashMap<Node, Set> = HashMap::new();
        // Each layer's output in layer order: a layer's resolution then stops at the one
        // before it (already known), so recursion stays one layer deep however many layers
        // the dump has and in whatever order it lists them. The table is acyclic, so the
        // order of resolution does not change any result.
        for &l in &layers.present {
            resolve(Node::InLayer(Op::Layer, l), &nodes, &layers, &mut memo);
        }
        let mut out = Table {
            offsets: Vec::with_capacity(order.len() + 1),
            flat: Vec::with_capacity(order.len() * 2),
            fallback: Vec::with_capacity(order.len()),
        };
        out.offsets.push(0);
        for (i, node) in node_of.iter().enumerate() {
            let resolved = match node {
                Some(n) => {
                    let sets: Vec<Set> = structural_inputs(*n, &layers)
                        .into_iter()
                        .map(|input| resolve(input, &nodes, &layers, &mut memo))
                        .collect();
                    merge(&sets, Some(i))
                }
                None => Vec::new(),
            };
            let is_source = matches!(node, Some(Node::Global(Op::EmbedTokens | Op::RotaryEmb)));
            if resolved.is_empty() && !is_source && i > 0 {
                out.flat.push(i - 1);
                out.fallback.push(true);
            } else {
                out.flat.extend(resolved);
                out.fallback.push(false);
            }
            out.offsets.push(out.flat.len());
        }
        Dataflow::whole(out)
    }

    /// The indices (into the order given to [`Dataflow::new`]) of the probes that feed probe
    /// `i`, ascending; empty for sources (`embed_tokens`, `rotary_emb`, the first probe). At
    /// most [`MAX_INPUTS`]: the latest ones when more feed it (a sparse or hostile dump).
    pub fn inputs(&self, i: usize) -> Inputs<'_> {
        match self.locate(i) {
            Some((table, k, shift)) => Inputs {
                ids: table.inputs(k),
                shift,
            },
            None => Inputs { ids: &[], shift: 0 },
        }
    }

    /// The runs of the order that each read one resolution, ascending and back to back from 0
    /// to `len` (past the probes, a span without inputs): for a pass over every probe that
    /// reads each one's inputs without looking for its run ([`Span::inputs`] is
    /// [`Dataflow::inputs`]).
    pub fn spans(&self, len: usize) -> Vec<Span<'_>> {
        let mut out: Vec<Span<'_>> = Vec::with_capacity(self.runs.len() + 1);
        for (r, &(start, t)) in self.runs.iter().enumerate() {
            let end = self.runs.get(r + 1).map_or(self.len, |&(next, _)| next);
            out.push(Span {
                range: start.min(len)..end.min(len),
                table: self.tables.get(t),
            });
        }
        let covered = out.last().map_or(0, |s| s.range.end);
        if covered < len {
            out.push(Span {
                range: covered..len,
                table: None,
            });
        }
        out.retain(|s| !s.range.is_empty());
        out
    }

    /// True when probe `i`'s input is only a guess: the op before it in execution order (its
    /// name is not in the table, or nothing that feeds it was dumped).
    pub fn is_fallback(&self, i: usize) -> bool {
        self.locate(i)
            .is_some_and(|(table, k, _)| table.is_fallback(k))
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no probes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The present probes that carry `node`'s value: the node's own probe, else (recursively) those
/// of its inputs; the latest [`MAX_INPUTS`] of them. Memoized per node; a node whose inputs
/// resolve to one set (a chain of missing ops, or inputs bridged to the same probes) shares
/// that set instead of copying it.
fn resolve(
    node: Node,
    nodes: &HashMap<Node, usize>,
    layers: &Layers,
    memo: &mut HashMap<Node, Set>,
) -> Set {
    if let Some(v) = memo.get(&node) {
        return Rc::clone(v);
    }
    if let Some(&i) = nodes.get(&node) {
        let v: Set = Rc::from([i]);
        memo.insert(node, Rc::clone(&v));
        return v;
    }
    // Mark as in progress (empty) so that a malformed graph can never recurse forever.
    memo.insert(node, Rc::from([]));
    let mut sets: Vec<Set> = structural_inputs(node, layers)
        .into_iter()
        .map(|input| resolve(input, nodes, layers, memo))
        .filter(|s| !s.is_empty())
        .collect();
    sets.dedup_by(|a, b| Rc::ptr_eq(a, b) || a == b);
    let v: Set = match sets.len() {
        0 => Rc::from([]),
        1 => sets.swap_remove(0),
        _ => {
            let merged = merge(&sets, None);
            // Share an input's set when the others add nothing to it.
            match sets.iter().find(|s| s[..] == merged[..]) {
                Some(s) => Rc::clone(s),
                None => Rc::from(merged),
            }
        }
    };
    memo.insert(node, Rc::clone(&v));
    v
}

/// Where a name sits in a canonical forward pass: (stage, layer, rank). Stage 0: embeddings and
/// RoPE table; 1: decoder layers in index order; 2: final norm, base-model output, lm_head;
/// 3: names outside layers that the table does not know.
fn canonical_key(name: &str) -> (usize, u8, usize, u8) {
    let (base, step) = crate::split_step(name);
    let (stage, layer, rank) = canonical_key_of_step(base);
    (step, stage, layer, rank)
}

fn canonical_key_of_step(name: &str) -> (u8, usize, u8) {
    use QkKind::{K, Q};
    let op = Op::of(name);
    if let Some(s) = split_layer(name) {
        let rank = match op {
            Op::InputLayernorm => 0,
            Op::QkProj(Q) => 1,
            Op::QkNorm(Q) => 2,
            Op::QkProj(K) => 3,
            Op::QkNorm(K) => 4,
            Op::VProj => 5,
            Op::Rope(Q) => 6,
            Op::Rope(K) => 7,
            Op::CacheK => 8,
            Op::CacheV => 9,
            Op::AttnOut => 10,
            Op::OProj => 11,
            Op::SelfAttn => 12,
            Op::AttnResidual => 13,
            Op::PostAttentionLayernorm => 14,
            Op::GateProj => 15,
            Op::ActFn => 16,
            Op::UpProj => 17,
            Op::DownProj => 18,
            Op::Mlp => 19,
            Op::Layer => 21,
            // Unknown ops of a layer: after its known ones, before the layer's output.
            _ => 20,
        };
        return (1, s.layer, rank);
    }
    match op {
        Op::EmbedTokens => (0, 0, 0),
        Op::RotaryEmb => (0, 0, 1),
        Op::FinalNorm => (2, 0, 0),
        Op::Backbone => (2, 0, 1),
        Op::LmHead => (2, 0, 2),
        _ => (3, 0, 0),
    }
}

/// The canonical execution order of the HF Llama family (what `scripts/dump_reference.py`
/// records), for dumps that record none: decode steps in order (the prefill first), and in
/// each step embeddings first, layers in index order with their
/// ops in forward order, then the final norm and `lm_head`; ties (unknown names) in natural
/// order. A total order, consistent with string equality.
pub fn canonical_cmp(a: &str, b: &str) -> Ordering {
    canonical_key(a)
        .cmp(&canonical_key(b))
        .then_with(|| natural_cmp(a, b))
}

/// Sorts `names` by [`canonical_cmp`], each name's key made once, not once a comparison (a key
/// reads the whole name: 48,000 names of 2,000 digits, a 99 MB header with no recorded order,
/// took 22 s to sort; session 31). Stable, as `sort_by(canonical_cmp)`.
pub fn canonical_sort<T: AsRef<str>>(names: &mut Vec<T>) {
    let mut keyed: Vec<((usize, u8, usize, u8), T)> = std::mem::take(names)
        .into_iter()
        .map(|n| (canonical_key(n.as_ref()), n))
        .collect();
    keyed.sort_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| natural_cmp(a.as_ref(), b.as_ref())));
    names.extend(keyed.into_iter().map(|(_, n)| n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The sort with keys made once is the sort by [`canonical_cmp`] (ties in order).
        #[test]
        fn canonical_sort_is_the_sort_by_canonical_cmp(
            names in proptest::collection::vec(
                "(model\\.)?(layers\\.(0|2|10)\\.)?(self_attn\\.k_norm|mlp|norm|x1|x10|lm_head|embed_tokens)?(@[1-3])?",
                0..40,
            ),
        ) {
            let mut want = names.clone();
            want.sort_by(|a, b| canonical_cmp(a, b));
            let mut got = names;
            canonical_sort(&mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn canonical_cmp_is_a_total_order(
            a in "(model\\.)?(layers\\.[0-2]\\.)?(self_attn\\.k_norm|mlp|norm|x|lm_head|embed_tokens)?",
            b in "(model\\.)?(layers\\.[0-2]\\.)?(self_attn\\.k_norm|mlp|norm|x|lm_head|embed_tokens)?",
            c in "(model\\.)?(layers\\.[0-2]\\.)?(self_attn\\.k_norm|mlp|norm|x|lm_head|embed_tokens)?",
        ) {
            prop_assert_eq!(canonical_cmp(&a, &b), canonical_cmp(&b, &a).reverse());
            prop_assert_eq!(canonical_cmp(&a, &b) == Ordering::Equal, a == b);
            if canonical_cmp(&a, &b) != Ordering::Greater && canonical_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(canonical_cmp(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn dataflow_never_panics_and_stays_in_bounds(names in proptest::collection::vec(
            "(model\\.)?(layers\\.[0-3]\\.)?(self_attn\\.(k_norm|k_proj|rope_k|attn_out)|mlp|attn_residual|norm|x)?", 0..30)
        ) {
            let df = Dataflow::new(&names);
            prop_assert_eq!(df.len(), names.len());
            spans_read_as_inputs(&df, names.len() + 2);
            for i in 0..names.len() {
                prop_assert!(df.inputs(i).iter().all(|j| j < names.len() && j != i));
            }
        }
    }

    /// The spans cover `0..len` back to back, and each gives its probes' inputs as
    /// [`Dataflow::inputs`] does (none past the probes).
    fn spans_read_as_inputs(df: &Dataflow, len: usize) {
        let spans = df.spans(len);
        let mut next = 0;
        for span in &spans {
            assert_eq!(span.range.start, next, "back to back");
            assert!(!span.range.is_empty());
            next = span.range.end;
            for i in span.range.clone() {
                assert_eq!(span.inputs(i).to_vec(), df.inputs(i).to_vec(), "probe {i}");
            }
        }
        assert_eq!(next, len);
    }

    /// The probe order `scripts/dump_reference.py` writes for a 2-layer Qwen3.
    fn qwen3(layers: usize) -> Vec<String> {
        let mut v = vec![
            "model.embed_tokens".to_string(),
            "model.rotary_emb".to_string(),
        ];
        for l in 0..layers {
            for op in [
                "input_layernorm",
                "self_attn.q_proj",
                "self_attn.q_norm",
                "self_attn.k_proj",
                "self_attn.k_norm",
                "self_attn.v_proj",
                "self_attn.rope_q",
                "self_attn.rope_k",
                "self_attn.attn_out",
                "self_attn.o_proj",
                "self_attn",
                "attn_residual",
                "post_attention_layernorm",
                "mlp.gate_proj",
                "mlp.act_fn",
                "mlp.up_proj",
                "mlp.down_proj",
                "mlp",
            ] {
                v.push(format!("model.layers.{l}.{op}"));
            }
            v.push(format!("model.layers.{l}"));
        }
        v.extend(["model.norm", "model", "lm_head"].map(String::from));
        v
    }

    fn inputs_of(order: &[String], name: &str) -> Vec<String> {
        let df = Dataflow::new(order);
        let i = order.iter().position(|n| n == name).unwrap();
        df.inputs(i).iter().map(|j| order[j].clone()).collect()
    }

    /// A decode dump: the prefill, then `steps` decode steps with their cache probes.
    fn qwen3_decode(layers: usize, steps: usize) -> Vec<String> {
        let mut v = qwen3(layers);
        for s in 1..=steps {
            for name in qwen3(layers) {
                let cache = name.ends_with(".self_attn.rope_k");
                let prefix = name.trim_end_matches(".rope_k").to_string();
                v.push(format!("{name}@{s}"));
                if cache {
                    v.push(format!("{prefix}.cache_k@{s}"));
                    v.push(format!("{prefix}.cache_v@{s}"));
                }
            }
        }
        v
    }

    #[test]
    fn more_layers_than_a_model_has_are_not_resolved_from_the_table() {
        // A layer each: at the bound, structural (a layer's mlp is fed by the one before's
        // output); one more, every probe takes the one before it, as a guess.
        let names = |layers: usize| -> Vec<String> {
            (0..layers)
                .flat_map(|l| {
                    [
                        format!("model.layers.{l}.post_attention_layernorm"),
                        format!("model.layers.{l}.mlp"),
                    ]
                })
                .collect()
        };
        let at = names(MAX_LAYERS);
        let d = Dataflow::new(&at);
        // mlp <- down_proj <- ... <- post_attention_layernorm of its layer
        assert!(!d.is_fallback(3));
        let past = names(MAX_LAYERS + 1);
        let d = Dataflow::new(&past);
        assert!((1..past.len()).all(|i| d.is_fallback(i)));
        assert_eq!(d.inputs(3).iter().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn decode_steps_flow_within_their_step() {
        let o = qwen3_decode(2, 2);
        assert_eq!(inputs_of(&o, "model.embed_tokens@1"), Vec::<String>::new());
        assert_eq!(
            inputs_of(&o, "model.layers.0.input_layernorm@2"),
            ["model.embed_tokens@2"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.self_attn.cache_k@1"),
            ["model.layers.1.self_attn.rope_k@1"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.self_attn.attn_out@1"),
            [
                "model.layers.1.self_attn.rope_q@1",
                "model.layers.1.self_attn.cache_k@1",
                "model.layers.1.self_attn.cache_v@1"
            ]
        );
        // the prefill has no cache probes: attention reads rope_k / v_proj as before
        assert_eq!(
            inputs_of(&o, "model.layers.0.self_attn.attn_out"),
            [
                "model.layers.0.self_attn.v_proj",
                "model.layers.0.self_attn.rope_q",
                "model.layers.0.self_attn.rope_k"
            ]
        );
        assert_eq!(inputs_of(&o, "lm_head@2"), ["model@2"]);
        // the canonical order is the recorded one
        let mut sorted = o.clone();
        sorted.reverse();
        sorted.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(sorted, o);
    }

    /// Every step resolved on its own, as [`Dataflow::new`] did before steps could share a
    /// resolution: probe name -> its inputs' names, and whether they are a guess.
    fn each_step_alone(order: &[String]) -> Vec<(Vec<String>, bool)> {
        let mut out = vec![(Vec::new(), false); order.len()];
        let steps: BTreeSet<usize> = order.iter().map(|n| crate::split_step(n).1).collect();
        for s in steps {
            let idx: Vec<usize> = (0..order.len())
                .filter(|&i| crate::split_step(&order[i]).1 == s)
                .collect();
            let names: Vec<&str> = idx.iter().map(|&i| order[i].as_str()).collect();
            let df = Dataflow::one_step(&names);
            for (k, &i) in idx.iter().enumerate() {
                let inputs = df.inputs(k).iter().map(|j| order[idx[j]].clone());
                out[i] = (inputs.collect(), df.is_fallback(k));
            }
        }
        out
    }

    #[test]
    fn steps_that_repeat_share_one_resolution_and_it_equals_their_own() {
        let resolved = |o: &[String]| {
            let df = Dataflow::new(o);
            assert_eq!(df.len(), o.len());
            spans_read_as_inputs(&df, o.len() + 3);
            (0..o.len())
                .map(|i| {
                    let inputs = df.inputs(i).iter().map(|j| o[j].clone());
                    (inputs.collect::<Vec<_>>(), df.is_fallback(i))
                })
                .collect::<Vec<_>>()
        };
        // Identical steps (shared), then steps that differ: step 2 lacks a probe (the layer
        // that reads it falls back to what precedes it), step 3 has its probes in another
        // order (the table, not the order, says who feeds whom), step 4 is step 1 again.
        let mut o = qwen3_decode(2, 2);
        let step = |s: usize| -> Vec<String> {
            qwen3_decode(2, 1)
                .into_iter()
                .filter(|n| n.ends_with("@1"))
                .map(|n| n.replace("@1", &format!("@{s}")))
                .collect()
        };
        assert_eq!(resolved(&o), each_step_alone(&o));
        let mut o3 = step(3);
        o3.retain(|n| !n.starts_with("model.layers.0.self_attn.k_norm"));
        let mut o4 = step(4);
        o4.swap(3, 4);
        o.extend(o3);
        o.extend(o4);
        o.extend(step(5));
        assert_eq!(resolved(&o), each_step_alone(&o));
        let rope_k = |s: usize| format!("model.layers.0.self_attn.rope_k@{s}");
        let at = |n: &str| o.iter().position(|x| x == n).unwrap();
        assert_eq!(
            resolved(&o)[at(&rope_k(3))].0,
            ["model.rotary_emb@3", "model.layers.0.self_attn.k_proj@3"]
        );
        assert_eq!(
            resolved(&o)[at(&rope_k(5))].0,
            ["model.rotary_emb@5", "model.layers.0.self_attn.k_norm@5"]
        );
        // Steps whose probes are not listed together (here, everything reversed).
        let mut mixed = o.clone();
        mixed.reverse();
        assert_eq!(resolved(&mixed), each_step_alone(&mixed));
        // Steps listed in turn, probe by probe (each step's probes not a run of the order).
        let turns: Vec<String> = (0..step(1).len())
            .flat_map(|k| [step(1)[k].clone(), step(2)[k].clone()])
            .collect();
        assert_eq!(resolved(&turns), each_step_alone(&turns));
        // Past the probes: nothing.
        let df = Dataflow::new(&o);
        assert!(df.inputs(o.len()).is_empty() && !df.is_fallback(o.len()));
        // Some probes are guesses (a name the table does not know), and they stay so.
        let mut odd = o.clone();
        odd.insert(5, "model.layers.0.self_attn.odd".to_string());
        odd.push("model.layers.0.self_attn.odd@5".to_string());
        let alone = each_step_alone(&odd);
        assert!(alone.iter().filter(|(_, guess)| *guess).count() >= 2);
        assert_eq!(resolved(&odd), alone);
        // A dump of only decode steps (no prefill) shares too.
        let only: Vec<String> = (1..=3).flat_map(step).collect();
        assert_eq!(resolved(&only), each_step_alone(&only));
    }

    #[test]
    fn qwen3_table() {
        let o = qwen3(2);
        assert_eq!(inputs_of(&o, "model.embed_tokens"), Vec::<String>::new());
        assert_eq!(inputs_of(&o, "model.rotary_emb"), Vec::<String>::new());
        assert_eq!(
            inputs_of(&o, "model.layers.0.input_layernorm"),
            ["model.embed_tokens"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.input_layernorm"),
            ["model.layers.0"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.self_attn.k_norm"),
            ["model.layers.1.self_attn.k_proj"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.self_attn.k_proj"),
            ["model.layers.1.input_layernorm"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.0.self_attn.rope_k"),
            ["model.rotary_emb", "model.layers.0.self_attn.k_norm"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.0.self_attn.attn_out"),
            [
                "model.layers.0.self_attn.v_proj",
                "model.layers.0.self_attn.rope_q",
                "model.layers.0.self_attn.rope_k"
            ]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.attn_residual"),
            ["model.layers.0", "model.layers.1.self_attn"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.mlp.down_proj"),
            ["model.layers.1.mlp.act_fn", "model.layers.1.mlp.up_proj"]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1"),
            ["model.layers.1.attn_residual", "model.layers.1.mlp"]
        );
        assert_eq!(inputs_of(&o, "model.norm"), ["model.layers.1"]);
        assert_eq!(inputs_of(&o, "model"), ["model.norm"]);
        assert_eq!(inputs_of(&o, "lm_head"), ["model"]);
        let df = Dataflow::new(&o);
        assert!((0..o.len()).all(|i| !df.is_fallback(i)));
        // every input comes earlier in the exporter's order
        assert!((0..o.len()).all(|i| df.inputs(i).iter().all(|j| j < i)));
    }

    #[test]
    fn missing_probes_are_bridged_by_their_inputs() {
        // A Llama-style dump: no q_norm/k_norm, no contract leaves, no base-model output.
        let o: Vec<String> = qwen3(2)
            .into_iter()
            .filter(|n| {
                !(n.ends_with("_norm")
                    || n.ends_with("rope_q")
                    || n.ends_with("rope_k")
                    || n.ends_with("attn_out")
                    || n.ends_with("attn_residual")
                    || n == "model")
            })
            .collect();
        assert_eq!(
            inputs_of(&o, "model.layers.0.self_attn.o_proj"),
            // attn_out <- rope_q, rope_k, v_proj; rope <- (k_norm <- k_proj), rotary_emb
            [
                "model.rotary_emb",
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.v_proj"
            ]
        );
        assert_eq!(
            inputs_of(&o, "model.layers.1.post_attention_layernorm"),
            ["model.layers.0", "model.layers.1.self_attn"]
        );
        assert_eq!(inputs_of(&o, "lm_head"), ["model.norm"]);
    }

    #[test]
    fn unknown_names_fall_back_to_the_previous_op() {
        let o: Vec<String> = [
            "model.embed_tokens",
            "my.custom.op",
            "model.layers.0.input_layernorm",
        ]
        .map(String::from)
        .to_vec();
        let df = Dataflow::new(&o);
        assert_eq!(df.inputs(1).to_vec(), [0]);
        assert!(df.is_fallback(1));
        assert_eq!(df.inputs(2).to_vec(), [0]);
        assert!(!df.is_fallback(2));
        assert_eq!(df.inputs(0).to_vec(), [] as [usize; 0]);
        assert_eq!(df.inputs(99).to_vec(), [] as [usize; 0]);
        assert!(Dataflow::new::<String>(&[]).is_empty());
    }

    #[test]
    fn huge_or_sparse_layer_indices_resolve_without_deep_recursion() {
        // One probe at layer 10^6 (or usize::MAX): its residual input is the embedding, not
        // a walk down a million absent layers (which overflowed the stack).
        for big in ["1000000", "18446744073709551615"] {
            let o: Vec<String> = [
                "model.embed_tokens".to_string(),
                format!("model.layers.{big}.input_layernorm"),
                "model.norm".to_string(),
            ]
            .to_vec();
            assert_eq!(
                inputs_of(&o, &format!("model.layers.{big}.input_layernorm")),
                ["model.embed_tokens"]
            );
            // layers.N's output is not dumped: bridged by its residual (the embedding) and
            // its attention / MLP path (back to input_layernorm).
            assert_eq!(
                inputs_of(&o, "model.norm"),
                [
                    "model.embed_tokens".to_string(),
                    format!("model.layers.{big}.input_layernorm")
                ]
            );
        }
        // Sparse layers: layer 7's residual input is layer 3's output.
        let o: Vec<String> = ["model.layers.3", "model.layers.7.input_layernorm"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            inputs_of(&o, "model.layers.7.input_layernorm"),
            ["model.layers.3"]
        );
    }

    #[test]
    fn many_layers_with_one_probe_each_resolve_in_bounded_size() {
        // One `mlp` per layer, no layer outputs: the residual stream bridges every earlier
        // `mlp` into each layer (O(L²) inputs unbounded); each keeps the latest MAX_INPUTS.
        let n = 20_000;
        let mut o: Vec<String> = (0..n).map(|l| format!("model.layers.{l}.mlp")).collect();
        let df = Dataflow::new(&o);
        let total: usize = (0..n).map(|i| df.inputs(i).len()).sum();
        assert_eq!(total, (0..n).map(|i| i.min(MAX_INPUTS)).sum::<usize>());
        assert!(total <= MAX_INPUTS * n);
        for i in [0, 1, MAX_INPUTS, MAX_INPUTS + 1, n - 1] {
            let latest: Vec<usize> = (i.saturating_sub(MAX_INPUTS)..i).collect();
            assert_eq!(df.inputs(i).to_vec(), latest, "probe {i}");
        }
        assert!((0..n).all(|i| !df.is_fallback(i)));
        // Listed last layer first: the same bound, and no recursion down 20,000 layers.
        o.reverse();
        o.push("model.norm".to_string());
        let df = Dataflow::new(&o);
        assert!((0..o.len()).all(|i| df.inputs(i).len() <= MAX_INPUTS));
        assert_eq!(df.inputs(n).len(), MAX_INPUTS);
        assert!((0..o.len()).map(|i| df.inputs(i).len()).sum::<usize>() <= MAX_INPUTS * o.len());
    }

    #[test]
    fn sets_up_to_the_bound_are_exact_and_larger_ones_keep_the_latest() {
        // Only the attention and MLP outputs of each layer: layer L's `mlp` is fed by every
        // earlier branch output, 2L + 1 probes.
        let dump = |layers: usize| -> Vec<String> {
            (0..layers)
                .flat_map(|l| {
                    [
                        format!("model.layers.{l}.self_attn"),
                        format!("model.layers.{l}.mlp"),
                    ]
                })
                .collect()
        };
        let exact = |l: usize| -> Vec<usize> { (0..2 * l + 1).collect() };
        // Exact up to 128 layers (Llama-3.1-405B has 126).
        let o = dump(128);
        let df = Dataflow::new(&o);
        for l in 0..128 {
            assert_eq!(df.inputs(2 * l + 1).to_vec(), exact(l), "layer {l}");
        }
        assert_eq!(df.inputs(255).len(), 255);
        let o = dump(200);
        let df = Dataflow::new(&o);
        for l in 0..200 {
            let all = exact(l);
            let latest = &all[all.len().saturating_sub(MAX_INPUTS)..];
            assert_eq!(df.inputs(2 * l + 1).to_vec(), latest, "layer {l}");
        }
    }

    #[test]
    fn prefixless_names_work_too() {
        let o: Vec<String> = [
            "embed_tokens",
            "layers.0.input_layernorm",
            "layers.0.self_attn.k_proj",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(inputs_of(&o, "layers.0.input_layernorm"), ["embed_tokens"]);
        assert_eq!(
            inputs_of(&o, "layers.0.self_attn.k_proj"),
            ["layers.0.input_layernorm"]
        );
    }

    #[test]
    fn canonical_order_restores_the_exporters_order() {
        let o = qwen3(12);
        let mut sorted = o.clone();
        sorted.sort_by(|a, b| natural_cmp(a, b)); // what a safetensors file gives back
        assert_eq!(sorted[0], "lm_head");
        sorted.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(sorted, o);
        assert_eq!(canonical_cmp("x.unknown", "lm_head"), Ordering::Greater);
        assert_eq!(
            canonical_cmp("model.layers.0.self_attn.weird", "model.layers.0"),
            Ordering::Less
        );
    }
}
