//! `divergence-names`: what a probe or checkpoint tensor name says, in one place.
//!
//! Dumps name probes by their PyTorch module path (`model.layers.3.self_attn.k_norm`, plus the
//! extra leaves of the dump contract: `rope_q`, `rope_k`, `attn_out`, `attn_residual`), and
//! checkpoints name weights the same way with a `.weight` / `.bias` suffix. Every crate that
//! needs to know "which layer", "is this k_norm", "what is its projection" or "which name sorts
//! first" asks this crate, so the conventions of the HF Llama family (Qwen3, Qwen2, Llama,
//! Mistral) are written down once:
//!
//! - [`natural_cmp`]: `layers.2` < `layers.10` (the order of every sorted name list);
//! - [`split_step`]: the decode step of a name (`lm_head@3` is step 3, `lm_head` step 0, the
//!   prefill); every other function here reads a name's step suffix through it;
//! - [`layer_index`] / [`split_layer`]: the `layers.N` segment;
//! - [`Op`]: the op kind of a probe (or of a weight, with [`Param`]), [`QkKind`] for q / k;
//! - [`sibling`]: another op of the same layer (`k_norm` -> `k_proj`);
//! - [`one_line`]: a name or path from a file, with its control characters escaped;
//! - [`shown`]: names shown to a person: hidden characters, Markdown text and code spans;
//! - [`near::closest`]: the known name closest to a mistyped one ("did you mean ...?");
//! - [`json::counts`]: the items of a JSON text a file holds (metadata, a safetensors header),
//!   counted before it is parsed, for the caps on what a parse may allocate;
//! - [`dataflow`]: which probes feed which (`k_norm <- k_proj <- input_layernorm <- previous
//!   layer`), and the canonical execution order of a dump that records none.
//!
//! No dependencies beyond serde (for [`QkKind`]'s `"q"` / `"k"` JSON form); no I/O.

pub mod dataflow;
pub mod json;
pub mod near;
pub mod shown;

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `text` with its control characters (and the Unicode line / paragraph separators) escaped
/// as Rust does (`\n`, `\r`, `\u{1b}`): a file, member or tensor name may hold a newline, and
/// every error line and report `reason` stays one line. Borrowed when there is nothing to escape.
/// Bidirectional overrides and invisible characters ([`shown::is_hidden`]) are escaped too.
///
/// A backslash is left as it is: a name holding the text `\u{202e}` shows as the escape of a
/// right-to-left override would. Escaping it would make this not idempotent, and messages
/// embed names already escaped (a reason quoting an error that quotes a member's name) that
/// the renderers escape again: every such name would show its backslashes doubled.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !needs_one_line(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if shown::needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether [`one_line`] changes `text`. Printable ASCII is checked byte by byte first (the
/// usual name; a renderer asks this of every row).
pub fn needs_one_line(text: &str) -> bool {
    let plain = |b: &u8| (0x20..0x7f).contains(b);
    !text.as_bytes().iter().all(plain) && text.chars().any(shown::needs_escape)
}

/// Natural order of names: runs of digits compare as numbers (`layers.2` < `layers.10`), the
/// rest byte by byte. Total and consistent with equality of the strings (`01` and `1` compare
/// by length after the numeric value, so distinct strings never compare equal).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..la], &b[..lb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| la.cmp(&lb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|&&c| c == b'0').count();
    &d[k.min(d.len().saturating_sub(1))..]
}

/// The most digits a step is written with ([`split_step`] reads no longer one).
const STEP_DIGITS: usize = 9;

/// The smallest step [`split_step`] does not read back (one of `STEP_DIGITS + 1` digits).
const FIRST_UNREAD_STEP: usize = 10usize.pow(STEP_DIGITS as u32);

/// Splits a probe name into its base name and decode step: `model.layers.3.mlp@2` ->
/// (`model.layers.3.mlp`, 2); a name without a step suffix is step 0, the prefill
/// (`lm_head` -> (`lm_head`, 0)). The suffix is `@` and a decimal step >= 1 without leading
/// zeros (docs/dump-format.md, "Decode steps"); anything else (`x@0`, `x@01`, `x@`, `x@a`) is
/// part of the base name.
pub fn split_step(name: &str) -> (&str, usize) {
    // From the end: the trailing digits, then the `@` before them (the same as the last `@`
    // followed by digits only). A decode report splits every row's name several times: the
    // search for the last `@` was ~8% of `diff`'s CPU time on the 256-step pair of the
    // 0.6B-shaped model (perf, 2 cores, `--no-tokens`).
    let b = name.as_bytes();
    // Ten at most: a step has nine (a name of 2,000 trailing digits was read whole, each time
    // a sort compared it: 55% of 22 s; session 31).
    let digits = b
        .iter()
        .rev()
        .take(STEP_DIGITS + 1)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let at = b.len() - digits;
    if (1..=STEP_DIGITS).contains(&digits) && b[at] != b'0' && at > 0 && b[at - 1] == b'@' {
        let step = b[at..]
            .iter()
            .fold(0usize, |s, &c| s * 10 + usize::from(c - b'0'));
        // `@` and the digits are ASCII: `at - 1` is a character boundary.
        return (&name[..at - 1], step);
    }
    (name, 0)
}

/// Whether `name` is [`step_name`]`(base, step)` of a decode step (`step >= 1`), without
/// writing it: [`split_step`] reads a step back only as it is written (no leading zero, at most
/// nine digits).
pub fn is_step_name(name: &str, base: &str, step: usize) -> bool {
    step > 0 && split_step(name) == (base, step)
}

/// The decimal digits of `step`, written at the end of `buf`.
fn step_digits(step: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    let mut n = step;
    for d in buf.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// The name of probe `base` at decode step `step` (`base` itself for step 0). One allocation
/// of the right size, without `format!` ([`step_name_shared`] is what opening a stacked decode
/// dump uses).
pub fn step_name(base: &str, step: usize) -> String {
    if step == 0 {
        return base.to_string();
    }
    let mut buf = [0u8; 20];
    let digits = step_digits(step, &mut buf);
    let mut name = String::with_capacity(base.len() + 1 + digits.len());
    name.push_str(base);
    name.push('@');
    name.extend(digits.iter().map(|&d| char::from(d)));
    name
}

/// A probe name as the lists that repeat it hold it: a dump's names, its execution order, the
/// diff's plan and the rows of one probe's decode steps compared in one call share one
/// allocation per name (a 256-step decode dump has ~150,000 names; each was copied five times
/// before: docs/performance.md, "Decode steps").
pub type Name = std::sync::Arc<str>;

/// A probe's name at a decode step, held by its parts: the probe's [`Name`] (shared with the
/// rows of its steps) and the step, written out ([`step_name`]) only where it is shown. A
/// report's amplification section has one row per q/k norm and step (~14,300 for 256 steps of
/// a 28-layer model), each naming two probes: holding them by their parts took ~1.3 ms off
/// `assemble` on one thread (session 54). Reads and serializes as its whole name; made from a
/// whole name ([`StepName::parse`]) it is the name's base and step where the name is one as
/// [`step_name`] writes it, else the whole name at step 0, so that each name has one form
/// (`==` compares names).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StepName {
    base: Name,
    step: usize,
}

impl StepName {
    /// Probe `base` at step `step` (step 0: the prefill, whose name is `base`), read as
    /// [`StepName::parse`] reads the name written whole: `x@3` at step 0 is `x` at step 3, and
    /// a step of ten digits or more is no step to [`split_step`].
    pub fn new(base: Name, step: usize) -> StepName {
        match step {
            0 if split_step(&base).1 > 0 => StepName::parse(&base),
            FIRST_UNREAD_STEP.. => StepName::parse(&step_name(&base, step)),
            _ => StepName { base, step },
        }
    }

    /// The name `name`, by its parts where it is a step name as [`step_name`] writes it.
    pub fn parse(name: &str) -> StepName {
        let (base, step) = split_step(name);
        StepName {
            base: Name::from(base),
            step,
        }
    }

    /// The probe's name without the step.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The step (0: the prefill, or a name without one).
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether the whole name is `name`, without writing it.
    pub fn is(&self, name: &str) -> bool {
        split_step(name) == (&*self.base, self.step)
    }

    /// The whole name, written.
    pub fn whole(&self) -> String {
        step_name(&self.base, self.step)
    }

    /// Changes the base in place (text made safe for a terminal edits what a dump gave).
    pub fn edit_base(&mut self, f: impl FnOnce(&mut String)) {
        let mut base = self.base.to_string();
        f(&mut base);
        if *base != *self.base {
            *self = StepName::new(Name::from(base), self.step);
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        if self.step > 0 {
            write!(f, "@{}", self.step)?;
        }
        Ok(())
    }
}

/// The whole name, quoted (as a `String` field showed in assertion messages).
impl fmt::Debug for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.whole(), f)
    }
}

impl From<&str> for StepName {
    fn from(name: &str) -> StepName {
        StepName::parse(name)
    }
}

impl From<String> for StepName {
    fn from(name: String) -> StepName {
        StepName::parse(&name)
    }
}

impl Serialize for StepName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written whole, then given as one string (as a `String` field was: a gzip stream of
        // the JSON, HTML's packed rows, depends on how its bytes arrive).
        s.serialize_str(&self.whole())
    }
}

impl<'de> Deserialize<'de> for StepName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepName, D::Error> {
        Ok(StepName::parse(&String::deserialize(d)?))
    }
}

/// A list of [`Name`]s that several holders share whole: a dump's names, its metadata's
/// execution order and the diff's plan are one list where they are the same names in the same
/// order (a 256-step decode dump has ~150,000; copying the list for each holder cost a
/// reference count per name, on names two threads count at once). Reads as a slice;
/// [`NameList::to_mut`] copies the list first where another holder shares it.
///
/// A decode dump's step-major names ([`SteppedNames`]) are held by their parts: the prefill's
/// names and each stepped probe's base name, not ~150,000 step names. [`NameList::len`],
/// [`NameList::step_of`], [`NameList::name_is`] and [`NameList::name`] answer from the parts;
/// the slice (`Deref`) is made whole, once, where a caller asks for it ([`NameList::is_made`]).
#[derive(Clone, Default)]
pub struct NameList(std::sync::Arc<Held>);

/// How a [`NameList`] holds its names.
#[derive(Clone)]
enum Held {
    /// Every name, listed.
    Listed(Vec<Name>),
    /// Worked out from the parts; the names made whole on first use of the slice.
    Stepped {
        parts: SteppedNames,
        made: std::sync::OnceLock<Vec<Name>>,
    },
}

/// The names of a decode dump in step-major order, by their parts: the prefill's names
/// (positions `0..prefill.len()`), then `base@1` of every base in `bases`' order, then
/// `base@2` of each, ..., to `base@steps` (docs/dump-format.md, "Decode steps").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteppedNames {
    /// The prefill's names, as they are.
    pub prefill: Vec<Name>,
    /// The base names of the probes of every decode step, in a step's order.
    pub bases: Vec<Name>,
    /// How many decode steps (`1..=steps`).
    pub steps: usize,
}

impl SteppedNames {
    /// How many names.
    pub fn len(&self) -> usize {
        self.bases
            .len()
            .checked_mul(self.steps)
            .and_then(|n| n.checked_add(self.prefill.len()))
            .unwrap_or(usize::MAX)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name at position `k`, split as [`split_step`] splits it, without writing it: a
    /// prefill name as it is, a step `(base, step)`.
    pub fn step_of(&self, k: usize) -> Option<(&str, usize)> {
        match k.checked_sub(self.prefill.len()) {
            None => self.prefill.get(k).map(|n| split_step(n)),
            Some(j) => {
                let m = self.bases.len();
                if m == 0 || j / m >= self.steps {
                    return None;
                }
                Some((&*self.bases[j % m], 1 + j / m))
            }
        }
    }

    /// Every name, written.
    fn make(&self) -> Vec<Name> {
        use rayon::prelude::*;
        (0..self.len())
            .into_par_iter()
            .with_min_len(1024)
            .map(|k| match self.prefill.get(k) {
                Some(n) => n.clone(),
                // (Every position below `len` past the prefill is a step.)
                None => self.step_of(k).map_or_else(
                    || Name::from(""),
                    |(base, step)| step_name_shared(base, step),
                ),
            })
            .collect()
    }
}

impl NameList {
    /// The names `parts` give, held by their parts ([`SteppedNames`]).
    pub fn stepped(parts: SteppedNames) -> NameList {
        NameList(std::sync::Arc::new(Held::Stepped {
            parts,
            made: std::sync::OnceLock::new(),
        }))
    }

    /// The parts, where the list is held by them.
    pub fn parts(&self) -> Option<&SteppedNames> {
        match &*self.0 {
            Held::Stepped { parts, .. } => Some(parts),
            _ => None,
        }
    }

    /// How many names (without making them).
    pub fn len(&self) -> usize {
        match &*self.0 {
            Held::Listed(v) => v.len(),
            Held::Stepped { parts, .. } => parts.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// False while a list held by its parts has not been made whole (a test's check that a
    /// path reads the names by their parts); true for any other list.
    pub fn is_made(&self) -> bool {
        match &*self.0 {
            Held::Stepped { made, .. } => made.get().is_some(),
            _ => true,
        }
    }

    /// The name at position `k` split as [`split_step`] splits it (`x@3` -> (`x`, 3)), without
    /// making it.
    pub fn step_of(&self, k: usize) -> Option<(&str, usize)> {
        match &*self.0 {
            Held::Listed(v) => v.get(k).map(|n| split_step(n)),
            Held::Stepped { parts, .. } => parts.step_of(k),
        }
    }

    /// True when the name at position `k` is `name`, without making it. ([`split_step`] reads
    /// a step back only as [`step_name`] writes it, so a step's name is `name` exactly when
    /// `name` splits into its base and step.)
    pub fn name_is(&self, k: usize, name: &str) -> bool {
        match &*self.0 {
            Held::Listed(v) => v.get(k).is_some_and(|n| **n == *name),
            Held::Stepped { parts, .. } => match k.checked_sub(parts.prefill.len()) {
                None => parts.prefill.get(k).is_some_and(|n| **n == *name),
                Some(_) => parts
                    .step_of(k)
                    .is_some_and(|(base, step)| is_step_name(name, base, step)),
            },
        }
    }

    /// The name at position `k`: borrowed where it is held as it is, written where it is a
    /// step of a list held by its parts (and not made whole yet).
    pub fn name(&self, k: usize) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match &*self.0 {
            Held::Listed(v) => v.get(k).map(|n| Cow::Borrowed(&**n)),
            Held::Stepped { parts, made } => match made.get() {
                Some(v) => v.get(k).map(|n| Cow::Borrowed(&**n)),
                None => match parts.prefill.get(k) {
                    Some(n) => Some(Cow::Borrowed(&**n)),
                    None => parts
                        .step_of(k)
                        .map(|(base, step)| Cow::Owned(step_name(base, step))),
                },
            },
        }
    }

    /// The name at position `k` as a [`Name`]: shared where it is held as it is, made (one
    /// allocation) where it is a step of a list held by its parts and not made whole yet.
    pub fn shared(&self, k: usize) -> Option<Name> {
        match &*self.0 {
            Held::Listed(v) => v.get(k).cloned(),
            Held::Stepped { parts, made } => match made.get() {
                Some(v) => v.get(k).cloned(),
                None => match parts.prefill.get(k) {
                    Some(n) => Some(n.clone()),
                    None => parts
                        .step_of(k)
                        .map(|(base, step)| step_name_shared(base, step)),
                },
            },
        }
    }

    /// The list to change: this holder's own (copied first where it is shared; made whole
    /// first where it is held by its parts).
    pub fn to_mut(&mut self) -> &mut Vec<Name> {
        if !matches!(&*self.0, Held::Listed(_)) {
            let v = self.to_vec();
            self.0 = std::sync::Arc::new(Held::Listed(v));
        }
        let held = std::sync::Arc::make_mut(&mut self.0);
        match held {
            Held::Listed(v) => v,
            // Made `Listed` just above.
            _ => unreachable!("a NameList made Listed"),
        }
    }

    /// True when no name's decode step ([`split_step`]) is less than the name's before it:
    /// the prefill first, then step 1, and so on. A list held by its parts is so by
    /// construction; a listed one is checked, in parallel (each name parsed once).
    pub fn in_step_order(&self) -> bool {
        use rayon::prelude::*;
        let v = match &*self.0 {
            Held::Listed(v) => v,
            Held::Stepped { parts, .. } => {
                // The steps after the prefill are in order by construction; the prefill's
                // names hold no step suffix as a dump unfolds them, which is checked, not
                // assumed.
                let prefill: Vec<usize> = parts.prefill.iter().map(|n| split_step(n).1).collect();
                let decoded = parts.len() > parts.prefill.len();
                return prefill.is_sorted() && (!decoded || prefill.last().is_none_or(|&s| s <= 1));
            }
        };
        let step = |n: &Name| split_step(n).1;
        // Chunk by chunk, and each chunk's first against the one before it; no vector of the
        // steps (fresh memory costs).
        const CHUNK: usize = 4096;
        v.par_chunks(CHUNK).enumerate().all(|(c, chunk)| {
            let before = c
                .checked_mul(CHUNK)
                .and_then(|at| at.checked_sub(1))
                .and_then(|at| v.get(at))
                .map_or(0, step);
            chunk
                .iter()
                .try_fold(before, |last, n| {
                    let s = step(n);
                    (s >= last).then_some(s)
                })
                .is_some()
        })
    }

    /// True when both are one list (not only equal names).
    pub fn shares(&self, other: &NameList) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for Held {
    fn default() -> Held {
        Held::Listed(Vec::new())
    }
}

impl std::ops::Deref for NameList {
    type Target = [Name];
    fn deref(&self) -> &[Name] {
        match &*self.0 {
            Held::Listed(v) => v,
            Held::Stepped { parts, made } => {
                if let Some(v) = made.get() {
                    return v;
                }
                // Made in parallel outside the lock: a rayon thread waiting on the lock could
                // take up another task that reads the list and wait on itself (two threads
                // that race both make it; one keeps its list).
                let v = parts.make();
                made.get_or_init(|| v)
            }
        }
    }
}

impl PartialEq for NameList {
    fn eq(&self, other: &NameList) -> bool {
        if self.shares(other) {
            return true;
        }
        match (&*self.0, &*other.0) {
            (Held::Stepped { parts: a, .. }, Held::Stepped { parts: b, .. }) if a == b => true,
            _ => {
                // In parallel: a decode dump has tens of thousands of names.
                use rayon::prelude::*;
                self.len() == other.len()
                    && self
                        .par_iter()
                        .with_min_len(4096)
                        .zip(&**other)
                        .all(|(x, y)| x == y)
            }
        }
    }
}

impl Eq for NameList {}

impl fmt::Debug for NameList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Name>> for NameList {
    fn from(v: Vec<Name>) -> NameList {
        NameList(std::sync::Arc::new(Held::Listed(v)))
    }
}

impl FromIterator<Name> for NameList {
    fn from_iter<I: IntoIterator<Item = Name>>(iter: I) -> NameList {
        NameList::from(iter.into_iter().collect::<Vec<Name>>())
    }
}

impl rayon::iter::FromParallelIterator<Name> for NameList {
    fn from_par_iter<I: rayon::iter::IntoParallelIterator<Item = Name>>(iter: I) -> NameList {
        use rayon::iter::ParallelIterator;
        NameList::from(iter.into_par_iter().collect::<Vec<Name>>())
    }
}

impl PartialEq<Vec<Name>> for NameList {
    fn eq(&self, other: &Vec<Name>) -> bool {
        **self == **other
    }
}

impl PartialEq<NameList> for Vec<Name> {
    fn eq(&self, other: &NameList) -> bool {
        **self == **other
    }
}

impl<'a> IntoIterator for &'a NameList {
    type Item = &'a Name;
    type IntoIter = std::slice::Iter<'a, Name>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for NameList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NameList, D::Error> {
        Vec::<Name>::deserialize(d).map(NameList::from)
    }
}

/// [`step_name`] as a [`Name`]: one allocation (the name is written on the stack first when it
/// fits in 256 bytes, as every probe name of the dump contract does). What opening a stacked
/// decode dump makes its ~150,000 step names with.
pub fn step_name_shared(base: &str, step: usize) -> Name {
    const ROOM: usize = 256;
    if step == 0 {
        return Name::from(base);
    }
    let mut buf = [0u8; 20];
    let digits = step_digits(step, &mut buf);
    let len = base.len() + 1 + digits.len();
    if len > ROOM {
        return Name::from(step_name(base, step));
    }
    let mut name = [0u8; ROOM];
    name[..base.len()].copy_from_slice(base.as_bytes());
    name[base.len()] = b'@';
    name[base.len() + 1..len].copy_from_slice(digits);
    // `base` is a str and `@` and the digits are ASCII.
    match std::str::from_utf8(&name[..len]) {
        Ok(name) => Name::from(name),
        Err(_) => Name::from(step_name(base, step)),
    }
}

/// The suffix of a dump member that holds every decode step of one probe, stacked along a
/// leading axis (docs/dump-format.md, "Decode steps"): `model.layers.0.self_attn.k_norm@steps`.
pub const STACKED_SUFFIX: &str = "@steps";

/// The probe a stacked member holds the steps of: `x@steps` -> `x`; `None` for any other name.
pub fn stacked_base(name: &str) -> Option<&str> {
    name.strip_suffix(STACKED_SUFFIX).filter(|b| !b.is_empty())
}

/// A name split at its `layers.N` segment (the first one, as a whole dot-separated segment).
/// A decode step suffix (`@2`) is left out of `prefix` and `rest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSplit<'a> {
    /// Everything up to and including `layers.N` (`model.layers.3`).
    pub prefix: &'a str,
    /// N.
    pub layer: usize,
    /// What follows `layers.N.` (`self_attn.k_norm`), empty for the layer's own output.
    pub rest: &'a str,
}

/// Splits `name` at its `layers.N` segment: `model.layers.3.mlp` -> (`model.layers.3`, 3,
/// `mlp`). `None` when no dot-separated `layers` segment is followed by a decimal index
/// (`model.sublayers.3.x`, `layers.x`, `lm_head`). The segment is found by searching for
/// `layers.` (a decode report parses ~150,000 names several times; splitting every name at
/// every dot cost more).
pub fn split_layer(name: &str) -> Option<LayerSplit<'_>> {
    const KEY: &str = "layers.";
    let name = split_step(name).0;
    let mut from = 0;
    while let Some(k) = name.get(from..).and_then(|s| s.find(KEY)) {
        let at = from + k;
        // A whole segment: at the start, or right after a dot.
        if at == 0 || name.as_bytes().get(at - 1) == Some(&b'.') {
            let idx_start = at + KEY.len();
            let tail = name.get(idx_start..).unwrap_or("");
            let idx_len = tail.find('.').unwrap_or(tail.len());
            let idx = &tail[..idx_len];
            if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(layer) = idx.parse::<usize>() {
                    let prefix_end = idx_start + idx_len;
                    return Some(LayerSplit {
                        prefix: &name[..prefix_end],
                        layer,
                        rest: name.get(prefix_end + 1..).unwrap_or(""),
                    });
                }
            }
        }
        from = at + 1;
    }
    None
}

/// The layer index of a name containing a `layers.N` segment (`model.layers.3.mlp` -> 3).
pub fn layer_index(name: &str) -> Option<usize> {
    split_layer(name).map(|s| s.layer)
}

/// q or k: the two heads-side tensors that Qwen3 normalises before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QkKind {
    Q,
    K,
}

impl QkKind {
    /// `"q"` or `"k"`.
    pub fn as_str(self) -> &'static str {
        match self {
            QkKind::Q => "q",
            QkKind::K => "k",
        }
    }
}

impl fmt::Display for QkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A weight's parameter suffix in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Weight,
    Bias,
}

/// The op kind of a probe of the HF Llama-family naming (Qwen3, Qwen2, Llama, Mistral).
/// Names this crate does not know are [`Op::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `model.embed_tokens`.
    EmbedTokens,
    /// `model.rotary_emb` (the cos/sin table).
    RotaryEmb,
    /// `layers.N.input_layernorm`.
    InputLayernorm,
    /// `layers.N.self_attn.{q,k}_proj`.
    QkProj(QkKind),
    /// `layers.N.self_attn.v_proj`.
    VProj,
    /// `layers.N.self_attn.{q,k}_norm` (Qwen3).
    QkNorm(QkKind),
    /// `layers.N.self_attn.rope_{q,k}` (dump-contract leaf: q / k after RoPE).
    Rope(QkKind),
    /// `layers.N.self_attn.cache_k` (dump-contract leaf, decode steps: the KV cache's k at the
    /// new token's slot).
    CacheK,
    /// `layers.N.self_attn.cache_v` (the KV cache's v at the new token's slot).
    CacheV,
    /// `layers.N.self_attn.attn_out` (dump-contract leaf: attention before o_proj).
    AttnOut,
    /// `layers.N.self_attn.o_proj`.
    OProj,
    /// `layers.N.self_attn` (the attention block's output).
    SelfAttn,
    /// `layers.N.attn_residual` (dump-contract leaf: residual after attention).
    AttnResidual,
    /// `layers.N.post_attention_layernorm`.
    PostAttentionLayernorm,
    /// `layers.N.mlp.gate_proj`.
    GateProj,
    /// `layers.N.mlp.up_proj`.
    UpProj,
    /// `layers.N.mlp.act_fn`.
    ActFn,
    /// `layers.N.mlp.down_proj`.
    DownProj,
    /// `layers.N.mlp`.
    Mlp,
    /// `layers.N` (the decoder layer's output).
    Layer,
    /// `model.norm` (the final norm).
    FinalNorm,
    /// `model` (the base model's output, `last_hidden_state`: the final norm's output).
    Backbone,
    /// `lm_head`.
    LmHead,
    /// Anything else.
    Other,
}

impl Op {
    /// The op kind of a probe name (a module path, no `.weight` suffix).
    pub fn of(name: &str) -> Op {
        let name = split_step(name).0;
        if let Some(split) = split_layer(name) {
            return Op::in_layer(split.rest);
        }
        let last = name.rsplit('.').next().unwrap_or(name);
        match last {
            "embed_tokens" => Op::EmbedTokens,
            "rotary_emb" => Op::RotaryEmb,
            "norm" => Op::FinalNorm,
            "model" => Op::Backbone,
            "lm_head" => Op::LmHead,
            _ => Op::Other,
        }
    }

    /// The op kind and parameter of a checkpoint tensor name
    /// (`model.layers.0.self_attn.k_norm.weight` -> (`QkNorm(K)`, `Weight`)).
    pub fn of_param(name: &str) -> Option<(Op, Param)> {
        let (module, param) = if let Some(m) = name.strip_suffix(".weight") {
            (m, Param::Weight)
        } else if let Some(m) = name.strip_suffix(".bias") {
            (m, Param::Bias)
        } else {
            return None;
        };
        Some((Op::of(module), param))
    }

    fn in_layer(rest: &str) -> Op {
        use QkKind::{K, Q};
        match rest {
            "" => Op::Layer,
            "input_layernorm" => Op::InputLayernorm,
            "self_attn.q_proj" => Op::QkProj(Q),
            "self_attn.k_proj" => Op::QkProj(K),
            "self_attn.v_proj" => Op::VProj,
            "self_attn.q_norm" => Op::QkNorm(Q),
            "self_attn.k_norm" => Op::QkNorm(K),
            "self_attn.rope_q" => Op::Rope(Q),
            "self_attn.rope_k" => Op::Rope(K),
            "self_attn.cache_k" => Op::CacheK,
            "self_attn.cache_v" => Op::CacheV,
            "self_attn.attn_out" => Op::AttnOut,
            "self_attn.o_proj" => Op::OProj,
            "self_attn" => Op::SelfAttn,
            "attn_residual" => Op::AttnResidual,
            "post_attention_layernorm" => Op::PostAttentionLayernorm,
            "mlp.gate_proj" => Op::GateProj,
            "mlp.up_proj" => Op::UpProj,
            "mlp.act_fn" => Op::ActFn,
            "mlp.down_proj" => Op::DownProj,
            "mlp" => Op::Mlp,
            _ => Op::Other,
        }
    }

    /// The module path of this op relative to its decoder layer (`self_attn.k_norm`), for ops
    /// that live in a layer; `None` for the others.
    pub fn layer_path(self) -> Option<&'static str> {
        use QkKind::{K, Q};
        Some(match self {
            Op::Layer => "",
            Op::InputLayernorm => "input_layernorm",
            Op::QkProj(Q) => "self_attn.q_proj",
            Op::QkProj(K) => "self_attn.k_proj",
            Op::VProj => "self_attn.v_proj",
            Op::QkNorm(Q) => "self_attn.q_norm",
            Op::QkNorm(K) => "self_attn.k_norm",
            Op::Rope(Q) => "self_attn.rope_q",
            Op::Rope(K) => "self_attn.rope_k",
            Op::CacheK => "self_attn.cache_k",
            Op::CacheV => "self_attn.cache_v",
            Op::AttnOut => "self_attn.attn_out",
            Op::OProj => "self_attn.o_proj",
            Op::SelfAttn => "self_attn",
            Op::AttnResidual => "attn_residual",
            Op::PostAttentionLayernorm => "post_attention_layernorm",
            Op::GateProj => "mlp.gate_proj",
            Op::UpProj => "mlp.up_proj",
            Op::ActFn => "mlp.act_fn",
            Op::DownProj => "mlp.down_proj",
            Op::Mlp => "mlp",
            Op::EmbedTokens
            | Op::RotaryEmb
            | Op::FinalNorm
            | Op::Backbone
            | Op::LmHead
            | Op::Other => return None,
        })
    }

    /// True for the RMSNorms of a decoder layer and the final norm.
    pub fn is_norm(self) -> bool {
        matches!(
            self,
            Op::InputLayernorm | Op::PostAttentionLayernorm | Op::QkNorm(_) | Op::FinalNorm
        )
    }
}

/// The name of another op of the same decoder layer as `name`
/// (`sibling("model.layers.0.self_attn.k_norm", Op::QkProj(K))` ->
/// `model.layers.0.self_attn.k_proj`). `None` when `name` is in no layer or `op` lives outside
/// layers. The sibling is of the same decode step (`k_norm@2` -> `k_proj@2`).
pub fn sibling(name: &str, op: Op) -> Option<String> {
    let split = split_layer(name)?;
    let path = op.layer_path()?;
    let base = if path.is_empty() {
        split.prefix.to_string()
    } else {
        format!("{}.{path}", split.prefix)
    };
    Some(step_name(&base, split_step(name).1))
}

/// The prefix of a checkpoint's module paths: `""` when its names start at `layers.` /
/// `embed_tokens.` (a bare decoder, no `model.` anywhere), else `"model."` (the HF
/// `*ForCausalLM` layout, also the default when nothing tells).
pub fn model_prefix<'a>(names: impl IntoIterator<Item = &'a str>) -> &'static str {
    let (mut bare, mut prefixed) = (false, false);
    for n in names {
        bare |= n.starts_with("layers.") || n.starts_with("embed_tokens.");
        prefixed |= n.starts_with("model.");
    }
    if bare && !prefixed {
        ""
    } else {
        "model."
    }
}

/// What [`short_name`] calls a layer's own name (its output).
pub const LAYER_OUTPUT: &str = "(layer output)";

/// The op name relative to its layer (`model.layers.3.self_attn.k_norm` -> `self_attn.k_norm`),
/// `(layer output)` for the layer itself, the whole name outside layers. A decode step suffix
/// stays (`self_attn.k_norm@2`).
pub fn short_name(name: &str) -> &str {
    match split_layer(name) {
        Some(s) if s.rest.is_empty() => LAYER_OUTPUT,
        // `rest` ends the base name; the step suffix follows it.
        Some(s) => &name[split_step(name).0.len() - s.rest.len()..],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone is the same list; changing one holder's copies it first and leaves the others
    /// as they were.
    #[test]
    fn a_shared_name_list_is_copied_before_it_changes() {
        let mut a: NameList = ["x", "y"].map(Name::from).to_vec().into();
        let b = a.clone();
        assert!(a.shares(&b) && a == b);
        a.to_mut().push(Name::from("z"));
        assert!(!a.shares(&b));
        assert_eq!(b, ["x", "y"].map(Name::from).to_vec());
        assert_eq!(a, ["x", "y", "z"].map(Name::from).to_vec());
        // Its own list (no other holder) changes in place.
        let before = a.as_ptr();
        a.to_mut().truncate(1);
        assert_eq!((a.as_ptr(), a.len()), (before, 1));
    }

    proptest::proptest! {
        /// A name held by its parts reads, compares and serializes as the name written
        /// whole, whichever way it was made: from the name, or from a base and a step (bases
        /// that end in `@` and digits, empty bases, names with a leading-zero step).
        #[test]
        fn a_step_name_reads_as_its_name_written_whole(
            base in proptest::sample::select(vec!["a", "m.layers.0.k_norm", "", "k@5", "a@", "a@01", "@", "a@0"]),
            step in proptest::sample::select(vec![0usize, 1, 7, 10, 999_999_999, 1_000_000_000]),
            other in proptest::sample::select(vec!["a", "a@1", "k@5@7", "@1", "a@@1", "a@01", "a@0", "", "m.layers.0.k_norm@10"]),
        ) {
            let whole = step_name(base, step);
            let made = StepName::new(Name::from(base), step);
            let parsed = StepName::parse(&whole);
            proptest::prop_assert_eq!(made.to_string(), whole.clone());
            proptest::prop_assert_eq!(made.whole(), whole.clone());
            proptest::prop_assert_eq!(parsed.to_string(), whole.clone());
            proptest::prop_assert_eq!(&made, &parsed);
            proptest::prop_assert!(made.is(&whole));
            proptest::prop_assert_eq!(made.is(other), whole == other);
            proptest::prop_assert_eq!(made == StepName::parse(other), whole == other);
            proptest::prop_assert_eq!((made.base(), made.step()), split_step(&whole));
            // As a JSON string, both ways.
            let json = serde_json::to_string(&made).expect("a string");
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&whole).expect("a string"));
            let back: StepName = serde_json::from_str(&json).expect("a name");
            proptest::prop_assert_eq!(&back, &made);
            // A base edited in place reads as the edited name at the same step.
            let mut edited = made.clone();
            edited.edit_base(|b| b.push('x'));
            proptest::prop_assert_eq!(edited.to_string(), step_name(&format!("{}x", made.base()), made.step()));
        }
    }

    proptest::proptest! {
        /// A list held by its parts answers every question as the list of its names made
        /// whole does, without making them, and is equal to it.
        #[test]
        fn a_stepped_name_list_answers_as_its_names(
            prefill in proptest::collection::vec(
                proptest::sample::select(vec!["a", "b.c", "x@steps", "", "a@0", "a@1", "a@3", "b@2x"]),
                0..4,
            ),
            bases in proptest::collection::vec(
                proptest::sample::select(vec!["a", "k@5", "", "m.layers.0.x", "a@"]),
                0..4,
            ),
            steps in 0usize..4,
            probe in proptest::sample::select(vec!["a", "a@1", "a@2", "k@5@1", "@1", "a@@1", "x@steps", "a@01"]),
        ) {
            let parts = SteppedNames {
                prefill: prefill.iter().map(|&n| Name::from(n)).collect(),
                bases: bases.iter().map(|&n| Name::from(n)).collect(),
                steps,
            };
            let mut names: Vec<Name> = parts.prefill.clone();
            for s in 1..=steps {
                names.extend(parts.bases.iter().map(|b| Name::from(step_name(b, s))));
            }
            let listed = NameList::from(names.clone());
            let list = NameList::stepped(parts.clone());
            proptest::prop_assert_eq!(list.len(), names.len());
            proptest::prop_assert_eq!(list.in_step_order(), listed.in_step_order());
            for k in 0..names.len() + 2 {
                let n = names.get(k);
                proptest::prop_assert_eq!(list.step_of(k), n.map(|n| split_step(n)));
                let (name, shared) = (list.name(k), list.shared(k));
                proptest::prop_assert_eq!(name.as_deref(), n.map(|n| &**n));
                proptest::prop_assert_eq!(shared.as_deref(), n.map(|n| &**n));
                for other in names.iter().map(|n| &**n).chain([probe]) {
                    proptest::prop_assert_eq!(list.name_is(k, other), n.is_some_and(|n| &**n == other));
                }
            }
            proptest::prop_assert!(!list.is_made());
            // Equal to the listed one: by its parts where both are held so, else made.
            proptest::prop_assert!(list == NameList::stepped(parts.clone()));
            proptest::prop_assert!(!list.is_made());
            proptest::prop_assert!(list == listed);
            proptest::prop_assert!(list.is_made());
            proptest::prop_assert_eq!(&*list, &names[..]);
            let mut changed = list.clone();
            changed.to_mut().push(Name::from("z"));
            proptest::prop_assert_eq!(changed.len(), names.len() + 1);
            proptest::prop_assert!(list == listed);
        }
    }

    /// Steps of several digits (the property test's are one): each position's name and split
    /// as written, read back without making the list.
    #[test]
    fn a_stepped_name_list_of_many_steps_reads_each_step() {
        let parts = SteppedNames {
            prefill: vec![Name::from("e"), Name::from("lm_head")],
            bases: vec![Name::from("x@7"), Name::from("lm_head")],
            steps: 1_200,
        };
        let list = NameList::stepped(parts);
        assert_eq!(list.len(), 2 + 2 * 1_200);
        for k in 0..list.len() {
            let (base, step) = list.step_of(k).expect("in range");
            let name = list.name(k).expect("in range");
            assert_eq!(split_step(&name), (base, step));
            assert!(list.name_is(k, &name));
            if step > 0 {
                assert_eq!(&*name, step_name(base, step));
                assert_eq!(step, 1 + (k - 2) / 2);
                assert!(!list.name_is(k, &format!("{base}@0{step}")));
                assert!(!list.name_is(k, &step_name(base, step + 1)));
            }
        }
        assert_eq!(list.step_of(list.len()), None);
        assert!(!list.is_made() && list.in_step_order());
        assert_eq!(&*list[2 * 1_200 + 1], "lm_head@1200");
        assert!(list.is_made());
    }

    #[test]
    fn one_line_escapes_control_characters_only() {
        assert_eq!(one_line("model.layers.0"), "model.layers.0");
        assert!(matches!(one_line("ok"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            one_line("a\nb\r\u{1b}\u{2028}é"),
            "a\\nb\\r\\u{1b}\\u{2028}é"
        );
        // what shows other text than it holds: a right-to-left override, a zero-width space
        assert_eq!(
            one_line("lm_head\u{202e}daeh\u{200b}"),
            "lm_head\\u{202e}daeh\\u{200b}"
        );
        assert_eq!(one_line("مرحبا.层"), "مرحبا.层");
    }

    #[test]
    fn one_line_is_idempotent() {
        // messages embed names already escaped, and the renderers escape them again
        for text in ["a\nb\u{202e}", r"C:\dumps\ours.npz", r"x\u{1b}", "é\t"] {
            let once = one_line(text).into_owned();
            assert_eq!(one_line(&once), once.as_str(), "{text:?}");
            assert!(!needs_one_line(&once));
        }
    }
    use proptest::prelude::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "layers.10.a",
            "layers.2.b",
            "layers.2.a",
            "embed",
            "layers.1.z",
            "layers.1",
            "x01",
            "x1",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "embed",
                "layers.1",
                "layers.1.z",
                "layers.2.a",
                "layers.2.b",
                "layers.10.a",
                "x1",
                "x01"
            ]
        );
        assert_eq!(natural_cmp("a2", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Greater);
        assert_eq!(natural_cmp("a1", "a1"), Ordering::Equal);
    }

    /// [`split_step`] as it was defined: the last `@`, then digits only.
    fn split_step_by_search(name: &str) -> (&str, usize) {
        if let Some(at) = name.rfind('@') {
            let digits = &name[at + 1..];
            if !digits.is_empty()
                && digits.len() <= 9
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                if let Ok(step) = digits.parse::<usize>() {
                    return (&name[..at], step);
                }
            }
        }
        (name, 0)
    }

    proptest::proptest! {
        #[test]
        fn split_step_from_the_end_is_the_search_for_the_last_at(
            name in "[a@0-9.é]{0,14}|[a@]{0,3}[0-9]{8,12}"
        ) {
            proptest::prop_assert_eq!(split_step(&name), split_step_by_search(&name));
        }
    }

    #[test]
    fn decode_steps() {
        assert_eq!(
            split_step("model.layers.3.mlp@2"),
            ("model.layers.3.mlp", 2)
        );
        assert_eq!(split_step("lm_head@17"), ("lm_head", 17));
        assert_eq!(split_step("lm_head"), ("lm_head", 0));
        for odd in ["x@0", "x@01", "x@", "x@a", "x@1a", "x@-1", "x@9999999999"] {
            assert_eq!(split_step(odd), (odd, 0), "{odd}");
        }
        // Ten trailing digits or more are no step, however many.
        let long = format!("x@{}", "7".repeat(2000));
        assert_eq!(split_step(&long), (long.as_str(), 0));
        assert_eq!(split_step("a@b@3"), ("a@b", 3));
        assert_eq!(step_name("lm_head", 0), "lm_head");
        assert_eq!(step_name("lm_head", 4), "lm_head@4");
        // Written by hand (no `format!`): every step count's digits, split back the same.
        for s in [
            1usize,
            9,
            10,
            99,
            100,
            256,
            1_000_000,
            999_999_999,
            usize::MAX,
        ] {
            assert_eq!(step_name("model.x", s), format!("model.x@{s}"));
            assert_eq!(&*step_name_shared("model.x", s), format!("model.x@{s}"));
        }
        // Past the stack buffer, and a base with multi-byte characters.
        let long = "é".repeat(200);
        for s in [0, 7, 123_456] {
            assert_eq!(&*step_name_shared(&long, s), step_name(&long, s));
        }
        for s in 1..=2000 {
            assert_eq!(split_step(&step_name("a.b", s)), ("a.b", s));
        }
        assert_eq!(stacked_base("lm_head@steps"), Some("lm_head"));
        assert_eq!(stacked_base("@steps"), None);
        assert_eq!(stacked_base("lm_head@3"), None);
        assert_eq!(split_step("lm_head@steps"), ("lm_head@steps", 0));
        assert_eq!(layer_index("model.layers.3@2"), Some(3));
        assert_eq!(
            Op::of("model.layers.3.self_attn.k_norm@2"),
            Op::QkNorm(QkKind::K)
        );
        assert_eq!(Op::of("model.layers.3.self_attn.cache_k@2"), Op::CacheK);
        assert_eq!(Op::of("lm_head@9"), Op::LmHead);
        assert_eq!(
            sibling("model.layers.0.self_attn.k_norm@2", Op::QkProj(QkKind::K)).as_deref(),
            Some("model.layers.0.self_attn.k_proj@2")
        );
        assert_eq!(
            short_name("model.layers.0.self_attn.k_norm@2"),
            "self_attn.k_norm@2"
        );
        assert_eq!(short_name("model.layers.0@2"), "(layer output)");
    }

    #[test]
    fn layer_indices() {
        assert_eq!(layer_index("model.layers.3.self_attn.k_norm"), Some(3));
        assert_eq!(layer_index("layers.12"), Some(12));
        assert_eq!(layer_index("model.layers.7"), Some(7));
        assert_eq!(layer_index("model.sublayers.3.x"), None);
        assert_eq!(layer_index("model.layers.x"), None);
        assert_eq!(layer_index("model.layers."), None);
        assert_eq!(layer_index("model.layers"), None);
        assert_eq!(layer_index("lm_head"), None);
        assert_eq!(layer_index("model.layers.99999999999999999999999.x"), None);
        let s = split_layer("model.layers.3.self_attn.k_norm").unwrap();
        assert_eq!(
            (s.prefix, s.layer, s.rest),
            ("model.layers.3", 3, "self_attn.k_norm")
        );
        let s = split_layer("layers.0").unwrap();
        assert_eq!((s.prefix, s.layer, s.rest), ("layers.0", 0, ""));
    }

    #[test]
    fn op_kinds() {
        use QkKind::{K, Q};
        assert_eq!(Op::of("model.layers.3.self_attn.k_norm"), Op::QkNorm(K));
        assert_eq!(Op::of("layers.3.self_attn.q_proj"), Op::QkProj(Q));
        assert_eq!(Op::of("model.layers.0.self_attn.rope_k"), Op::Rope(K));
        assert_eq!(Op::of("model.layers.0"), Op::Layer);
        assert_eq!(Op::of("model.layers.0.mlp.act_fn"), Op::ActFn);
        assert_eq!(Op::of("model.embed_tokens"), Op::EmbedTokens);
        assert_eq!(Op::of("model.norm"), Op::FinalNorm);
        assert_eq!(Op::of("model"), Op::Backbone);
        assert_eq!(Op::of("lm_head"), Op::LmHead);
        assert_eq!(Op::of("model.layers.0.self_attn.k_normx"), Op::Other);
        assert_eq!(
            Op::of_param("model.layers.3.self_attn.k_norm.weight"),
            Some((Op::QkNorm(K), Param::Weight))
        );
        assert_eq!(
            Op::of_param("model.layers.3.self_attn.q_proj.bias"),
            Some((Op::QkProj(Q), Param::Bias))
        );
        assert_eq!(Op::of_param("model.layers.3.self_attn.q_proj"), None);
        assert!(Op::QkNorm(K).is_norm() && !Op::QkProj(K).is_norm());
    }

    #[test]
    fn model_prefixes() {
        assert_eq!(
            model_prefix(["layers.0.mlp.up_proj.weight", "embed_tokens.weight"]),
            ""
        );
        assert_eq!(
            model_prefix(["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]),
            "model."
        );
        assert_eq!(model_prefix(["layers.0.x", "model.norm.weight"]), "model.");
        assert_eq!(model_prefix([]), "model.");
    }

    #[test]
    fn siblings_and_short_names() {
        assert_eq!(
            sibling("model.layers.0.self_attn.k_norm", Op::QkProj(QkKind::K)).as_deref(),
            Some("model.layers.0.self_attn.k_proj")
        );
        assert_eq!(
            sibling("model.layers.4.mlp", Op::Layer).as_deref(),
            Some("model.layers.4")
        );
        assert_eq!(sibling("lm_head", Op::Layer), None);
        assert_eq!(sibling("model.layers.4.mlp", Op::LmHead), None);
        assert_eq!(
            short_name("model.layers.3.self_attn.k_norm"),
            "self_attn.k_norm"
        );
        assert_eq!(short_name("model.layers.3"), "(layer output)");
        assert_eq!(short_name("lm_head"), "lm_head");
    }

    #[test]
    fn every_layer_op_round_trips_through_its_path() {
        use QkKind::{K, Q};
        for op in [
            Op::Layer,
            Op::InputLayernorm,
            Op::QkProj(Q),
            Op::QkProj(K),
            Op::VProj,
            Op::QkNorm(Q),
            Op::QkNorm(K),
            Op::Rope(Q),
            Op::Rope(K),
            Op::AttnOut,
            Op::OProj,
            Op::SelfAttn,
            Op::AttnResidual,
            Op::PostAttentionLayernorm,
            Op::GateProj,
            Op::UpProj,
            Op::ActFn,
            Op::DownProj,
            Op::Mlp,
        ] {
            let name = sibling("model.layers.5.mlp", op).unwrap();
            assert_eq!(Op::of(&name), op, "{name}");
        }
    }

    /// `split_layer` as it was: every segment compared with `layers`.
    fn segment_walk(name: &str) -> Option<LayerSplit<'_>> {
        let name = split_step(name).0;
        let mut start = 0;
        for seg in name.split('.') {
            let seg_end = start + seg.len();
            if seg == "layers" {
                let idx_start = seg_end + 1;
                if idx_start <= name.len() {
                    let tail = &name[idx_start..];
                    let idx_len = tail.find('.').unwrap_or(tail.len());
                    let idx = &tail[..idx_len];
                    if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) {
                        if let Ok(layer) = idx.parse::<usize>() {
                            let prefix_end = idx_start + idx_len;
                            let rest = name.get(prefix_end + 1..).unwrap_or("");
                            return Some(LayerSplit {
                                prefix: &name[..prefix_end],
                                layer,
                                rest,
                            });
                        }
                    }
                }
            }
            start = seg_end + 1;
        }
        None
    }

    proptest! {
        #[test]
        fn natural_cmp_is_a_total_order(a in "[a-c0-2.]{0,6}", b in "[a-c0-2.]{0,6}", c in "[a-c0-2.]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }

        /// The search for `layers.` finds what walking every segment found (the definition
        /// before it), on names made of the pieces that matter and on any text.
        #[test]
        fn split_layer_is_the_segment_walk(
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["layers", "layers.", "xlayers", "layers2", "3", "03", "model", ".", "", "@7", "a.b", "99999999999999999999999"]),
                0..8,
            ),
            any_text in "\\PC{0,30}",
        ) {
            for name in [parts.join("."), parts.concat(), any_text] {
                let got = split_layer(&name).map(|s| (s.prefix, s.layer, s.rest));
                let want = segment_walk(&name).map(|s| (s.prefix, s.layer, s.rest));
                prop_assert_eq!(got, want, "{:?}", name);
            }
        }

        #[test]
        fn split_layer_never_panics(name in "\\PC{0,40}") {
            if let Some(s) = split_layer(&name) {
                prop_assert!(name.starts_with(s.prefix));
            }
        }
    }
}
