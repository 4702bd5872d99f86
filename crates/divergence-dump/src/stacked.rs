//! Decode steps stored stacked: one member `<name>@steps` holds every decode step of probe
//! `<name>` along a new leading axis (step s at index s - 1), and reads as the per-step tensors
//! `<name>@1` .. `<name>@N` of the per-step layout (docs/dump-format.md, "Decode steps").
//!
//! Expansion happens once, at open, on headers only: step s of a stored C-order member is the
//! byte range `s - 1` of its data, so each step stays a zero-copy view of the map. A stacked
//! member that cannot be sliced that way (deflated, Fortran order, no leading axis), or that
//! would take the dump past its budget of unfolded steps ([`Budget::for_file`]: one per
//! [`BYTES_PER_UNFOLDED_STEP`] bytes of the file, within [`MIN_UNFOLDED_ENTRIES`] and
//! [`MAX_UNFOLDED_ENTRIES`]), stays one
//! entry under its own name with an error that says why, so `diff` reports its steps missing
//! instead of reading something else.

pub use divergence_names::{stacked_base, STACKED_SUFFIX};
use divergence_names::{step_name_shared, Name, NameList, SteppedNames};
use rayon::prelude::*;

use crate::entry::{Entry, EntryInfo, Source};
use crate::error::{DumpError, Location};
use crate::meta::Meta;

/// Most steps one stacked member may expand to (a decode of a million tokens; a step costs
/// ~150 bytes with its name, by the sizes of its parts).
pub const MAX_STACKED_STEPS: usize = 1 << 20;

/// Most per-step entries the stacked members of one dump may unfold into, and most shape
/// dimensions those entries may have in all: what opening a dump may allocate for them is
/// bounded by the first (a step takes ~150 bytes with its name, by the sizes of its parts:
/// ~0.3 GiB), whatever its headers claim (a member of a million empty steps is a few hundred
/// bytes of zip). The second dates from when each step held a copy of its shape; steps share
/// their member's since, and it stays as the documented limit. A 256-step decode of the
/// 0.6B-shaped model unfolds into 152,345 entries of 3-4 dimensions. Members past the budget
/// are unreadable, with the reason.
pub const MAX_UNFOLDED_ENTRIES: usize = 1 << 21;
const MAX_UNFOLDED_DIMS: usize = 1 << 23;

/// Bytes of the file per unfolded step: a dump unfolds at most one step per this many bytes
/// of its file (but always [`MIN_UNFOLDED_ENTRIES`]). A real decode step's probe holds
/// kilobytes (the 0.6B-shaped model's: 4-12 KB; the tiny fixture's: ~390 bytes in f32, 1.3 KB
/// a step on average); without it a file of a few hundred bytes, two members of a million empty
/// steps, unfolded 2,097,152 rows that `diff` compared and reported in 12 s and 2.5 GB. A step
/// costs `diff` ~1 KB (its entry in each dump and its row): at 64 bytes of file a step, a diff
/// of two 32 MiB files of 524,288 empty steps each peaks at 605 MB, 9.5x the files (a bad-input
/// hunt measured 1.78 GB, 27x, at 16 bytes a step).
pub const BYTES_PER_UNFOLDED_STEP: u64 = 64;
/// The budget of unfolded steps of any dump, however small its file: ~25 MB of entries and
/// report rows for a diff of two such files.
pub const MIN_UNFOLDED_ENTRIES: usize = 1 << 14;

/// The budget of [`unfold`] (the constants above; smaller in tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub entries: usize,
    pub dims: usize,
}

impl Budget {
    /// The budget of a dump whose file has `len` bytes: one step per
    /// [`BYTES_PER_UNFOLDED_STEP`], at least [`MIN_UNFOLDED_ENTRIES`], at most
    /// [`MAX_UNFOLDED_ENTRIES`].
    pub fn for_file(len: u64) -> Budget {
        let by_size = usize::try_from(len / BYTES_PER_UNFOLDED_STEP).unwrap_or(usize::MAX);
        Budget {
            entries: by_size.clamp(MIN_UNFOLDED_ENTRIES, MAX_UNFOLDED_ENTRIES),
            dims: MAX_UNFOLDED_DIMS,
        }
    }
}

/// How many decode steps a dump of `file_len` bytes may unfold into: one per
/// [`BYTES_PER_UNFOLDED_STEP`] bytes, within [`MIN_UNFOLDED_ENTRIES`] and
/// [`MAX_UNFOLDED_ENTRIES`]; the budget a reader of its steps holds what it makes of them to
/// (`diff --prefill-vs-decode`'s rows for steps the file lacks).
pub fn unfolded_step_budget(file_len: u64) -> usize {
    Budget::for_file(file_len).entries
}

/// What one name (or entry) of a dump is, for the step-major order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A prefill (step 0) tensor.
    Prefill,
    /// One decode step of the per-step layout, `x@s`.
    Step(usize),
    /// A stacked member holding steps `1..=n`.
    Stacked(usize),
}

impl Kind {
    /// A name that is not a stacked member: the prefill's, or one step's (`x@s`).
    fn of_name(name: &str) -> Kind {
        match divergence_names::split_step(name).1 {
            0 => Kind::Prefill,
            s => Kind::Step(s),
        }
    }
}

/// The step-major order of `kinds` as (index into `kinds`, step): every prefill item in its
/// order, then step 1 of every item that has one (a per-step `x@1`, or the first step of a
/// stacked member) in the order the items are listed, then step 2, and so on. This is the
/// execution order of a decode dump, whichever layout (or mix) stores it.
fn step_major(kinds: &[Kind]) -> Vec<(usize, usize)> {
    // Made at its length (~150,000 for 256 decode steps): growing it copied it and touched
    // twice the fresh memory.
    let len = kinds.iter().fold(0usize, |n, k| {
        n.saturating_add(match *k {
            Kind::Stacked(steps) => steps,
            Kind::Prefill | Kind::Step(_) => 1,
        })
    });
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(len);
    let mut per_step: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let mut stacked: Vec<(usize, usize)> = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        match *k {
            Kind::Prefill => out.push((i, 0)),
            Kind::Step(s) => per_step.entry(s).or_default().push(i),
            Kind::Stacked(n) => stacked.push((i, n)),
        }
    }
    let most = stacked.iter().map(|&(_, n)| n).max().unwrap_or(0);
    // The steps to walk: 1..=most, and any step only the per-step items have.
    let beyond: Vec<usize> = per_step.range(most + 1..).map(|(&s, _)| s).collect();
    let no_items = Vec::new();
    // The stacked members that still have step s: shrinks as s grows, so the walk costs the
    // entries it makes, not steps x members.
    let mut active = stacked;
    for s in (1..=most).chain(beyond) {
        let singles = per_step.get(&s).unwrap_or(&no_items);
        active.retain(|&(_, n)| n >= s);
        let mut stacks = active.iter().map(|&(i, _)| i).peekable();
        let mut singles = singles.iter().copied().peekable();
        // Merge by position in the list.
        loop {
            let next = match (stacks.peek(), singles.peek()) {
                (Some(&a), Some(&b)) if a < b => stacks.next(),
                (Some(_), None) => stacks.next(),
                (_, Some(_)) => singles.next(),
                (None, None) => break,
            };
            if let Some(i) = next {
                out.push((i, s));
            }
        }
    }
    out
}

/// The entries of a dump with every stacked member replaced by its steps, in step-major order
/// ([`step_major`]): the prefill's entries in file order, then step 1 of every entry that has
/// one, and so on. `Err(entries)`, unchanged, when no member is stacked. The unfolded entries
/// are made by the caller where they go ([`Unfolded::name`], [`Unfolded::at`],
/// [`Unfolded::info`]: a 256-step decode has ~150,000, made in parallel, never moved).
pub(crate) fn unfold(entries: Vec<Entry>, cap: Budget) -> Result<Unfolded, Vec<Entry>> {
    if !entries.iter().any(|e| stacked_base(&e.name).is_some()) {
        return Err(entries);
    }
    let mut kinds = Vec::with_capacity(entries.len());
    let mut items: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut member_of: Vec<Option<u32>> = Vec::with_capacity(entries.len());
    // Members unfolded so far.
    let mut members = 0usize;
    // What the members unfolded so far cost, in entries and in their shapes' dimensions.
    let mut spent = (0usize, 0usize);
    for e in entries {
        let cost = |n: usize| {
            let rank = e
                .info
                .as_ref()
                .map_or(0, |i| i.shape.len().saturating_sub(1));
            (
                spent.0.saturating_add(n),
                spent.1.saturating_add(n.saturating_mul(rank.max(1))),
            )
        };
        let within = |n: usize| -> Result<usize, DumpError> {
            let (entries, dims) = cost(n);
            if entries > cap.entries || dims > cap.dims {
                return Err(DumpError::UnsupportedEntry {
                    at: e.at.clone(),
                    detail: format!(
                        "its {n} decode steps would take the dump past {} unfolded steps (or {} dimensions) in all \
                         (one step per {BYTES_PER_UNFOLDED_STEP} bytes of the file, at least {MIN_UNFOLDED_ENTRIES}, at most {MAX_UNFOLDED_ENTRIES}; \
                         steps stored one array per name, `name@s`, are not counted)",
                        cap.entries, cap.dims
                    ),
                });
            }
            Ok(n)
        };
        let kind = match stacked_base(&e.name).map(|_| sliceable(&e).and_then(within)) {
            Some(Ok(n)) => {
                spent = cost(n);
                let member = u32::try_from(members).ok();
                members += 1;
                items.push(e);
                member_of.push(member);
                kinds.push(Kind::Stacked(n));
                continue;
            }
            Some(Err(err)) => {
                items.push(Entry {
                    info: Err(err),
                    ..e
                });
                member_of.push(None);
                kinds.push(Kind::Prefill);
                continue;
            }
            None => Kind::of_name(&e.name),
        };
        items.push(e);
        member_of.push(None);
        kinds.push(kind);
    }
    let order = Order::of(&kinds);
    Ok(Unfolded {
        items,
        kinds,
        member_of,
        order,
    })
}

/// [`step_major`]'s order of a dump's items, as (item, step) by position: listed, or where
/// it follows a rule, the rule. Both of our tools' decode dumps follow it (every probe's steps
/// stacked, as many in each): a 256-step decode of the 0.6B-shaped model has ~150,000
/// positions, which a list holds in 2.4 MB of fresh memory a dump.
#[derive(Debug)]
enum Order {
    /// [`step_major`] as it is.
    Listed(Vec<(usize, usize)>),
    /// The prefill's items in their order, then step 1 of every member in theirs, then step 2,
    /// ..., to step `steps`: no per-step item, every member of `steps` steps.
    Regular {
        prefill: Vec<usize>,
        members: Vec<usize>,
        steps: usize,
    },
}

impl Order {
    /// The order of `kinds`.
    fn of(kinds: &[Kind]) -> Order {
        let mut counts = kinds.iter().filter_map(|k| match *k {
            Kind::Stacked(n) => Some(Some(n)),
            Kind::Step(_) => Some(None),
            Kind::Prefill => None,
        });
        let steps = match counts.next() {
            Some(Some(n)) if counts.all(|c| c == Some(n)) => n,
            _ => return Order::Listed(step_major(kinds)),
        };
        let (mut prefill, mut members) = (Vec::new(), Vec::new());
        for (i, k) in kinds.iter().enumerate() {
            match k {
                Kind::Prefill => prefill.push(i),
                _ => members.push(i),
            }
        }
        Order::Regular {
            prefill,
            members,
            steps,
        }
    }

    fn len(&self) -> usize {
        match self {
            Order::Listed(v) => v.len(),
            Order::Regular {
                prefill,
                members,
                steps,
            } => prefill.len() + members.len() * steps,
        }
    }

    /// The item and step at position `k`.
    fn get(&self, k: usize) -> Option<(usize, usize)> {
        match self {
            Order::Listed(v) => v.get(k).copied(),
            Order::Regular {
                prefill,
                members,
                steps,
            } => match k.checked_sub(prefill.len()) {
                None => Some((prefill[k], 0)),
                Some(j) if !members.is_empty() && j / members.len() < *steps => {
                    Some((members[j % members.len()], 1 + j / members.len()))
                }
                Some(_) => None,
            },
        }
    }
}

/// [`unfold`]'s result: entry `k` of the unfolded dump is step `s` of item `i`, where
/// `order.get(k)` is `(i, s)`.
pub(crate) struct Unfolded {
    items: Vec<Entry>,
    kinds: Vec<Kind>,
    member_of: Vec<Option<u32>>,
    order: Order,
}

impl Unfolded {
    /// How many entries the unfolded dump has.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when `other` unfolds into the same names in the same places: the same items (by
    /// name, in order), each stacked or not alike, with as many steps. Then `name(k)` and
    /// `slot(k)` are the same for both (two dumps of one model, [`crate::Dump::open_pair`]):
    /// the order and the members' numbers are made from the kinds alone.
    pub fn same_names(&self, other: &Unfolded) -> bool {
        self.kinds == other.kinds
            && self.items.len() == other.items.len()
            && self
                .items
                .iter()
                .zip(&other.items)
                .all(|(a, b)| a.name == b.name)
    }

    /// True when `order` lists exactly the items, in their order, and [`expand_order`] would
    /// give each of them the kind unfolding gave it (checked, not assumed): the order then
    /// unfolds into this dump's own names, `name(k)` for every `k`, in the same places
    /// ([`expand_order`]'s `as_listed`). The metadata order of a dump as both tools write it.
    pub fn lists_items(&self, order: &[Name]) -> bool {
        if order.len() != self.items.len() {
            return false;
        }
        // As `expand_order` reads a name: a member's name is its steps, as many as the last
        // member of that name has (two items may share a name: `x@steps.npy` and `x@steps`
        // in one zip).
        let members: std::collections::HashMap<&str, usize> = self
            .items
            .iter()
            .zip(self.kinds.iter().zip(&self.member_of))
            .filter_map(|(item, (kind, member))| match (kind, member) {
                (&Kind::Stacked(steps), Some(_)) => Some((item.name.as_str(), steps)),
                _ => None,
            })
            .collect();
        order
            .iter()
            .zip(&self.items)
            .zip(&self.kinds)
            .all(|((n, item), kind)| {
                let listed = match members.get(&**n) {
                    Some(&steps) => Kind::Stacked(steps),
                    None => Kind::of_name(n),
                };
                **n == *item.name && listed == *kind
            })
    }

    /// The item and step of entry `k`, and the item's step count when it is stacked.
    fn at_k(&self, k: usize) -> Option<(&Entry, usize, Option<usize>)> {
        let (i, s) = self.order.get(k)?;
        let item = self.items.get(i)?;
        match self.kinds.get(i)? {
            &Kind::Stacked(n) => Some((item, s, Some(n))),
            _ => Some((item, s, None)),
        }
    }

    /// The name of entry `k` (`x@s` for step s of a stacked `x@steps`).
    pub fn name(&self, k: usize) -> Name {
        match self.at_k(k) {
            Some((item, s, Some(_))) => {
                step_name_shared(stacked_base(&item.name).unwrap_or(&item.name), s)
            }
            Some((item, _, None)) => Name::from(item.name.as_str()),
            None => Name::from(""),
        }
    }

    /// Every entry's name ([`Unfolded::name`]), in order: held by their parts where the order
    /// follows its rule ([`NameList::stepped`]: the prefill's names and each member's base,
    /// not ~150,000 step names), listed otherwise.
    pub fn names(&self) -> NameList {
        let name = |i: usize| self.items.get(i).map_or("", |e| e.name.as_str());
        match &self.order {
            Order::Regular {
                prefill,
                members,
                steps,
            } => NameList::stepped(SteppedNames {
                prefill: prefill.iter().map(|&i| Name::from(name(i))).collect(),
                bases: members
                    .iter()
                    .map(|&i| Name::from(stacked_base(name(i)).unwrap_or(name(i))))
                    .collect(),
                steps: *steps,
            }),
            Order::Listed(_) => (0..self.len())
                .into_par_iter()
                .with_min_len(1024)
                .map(|k| self.name(k))
                .collect(),
        }
    }

    /// Where entry `k` is described: an item as it is, or one step of a member.
    pub fn slot(&self, k: usize) -> Slot {
        let Some((i, s)) = self.order.get(k) else {
            return Slot::Item(usize::MAX);
        };
        match (self.kinds.get(i), self.member_of.get(i).copied().flatten()) {
            (Some(Kind::Stacked(_)), Some(member)) => Slot::Step {
                member,
                // At most MAX_STACKED_STEPS.
                step: u32::try_from(s).unwrap_or(u32::MAX),
            },
            _ => Slot::Item(i),
        }
    }

    /// The layout of entry `k`, or why it cannot be read.
    #[cfg(test)]
    pub fn info(&self, k: usize) -> Result<EntryInfo, DumpError> {
        match self.at_k(k) {
            Some((item, s, Some(n))) => step_info(item, n, s),
            Some((item, _, None)) => item.info.clone(),
            None => Err(DumpError::NoSuchTensor {
                path: Default::default(),
                name: format!("#{k}"),
            }),
        }
    }

    /// The items ([`Slot::Item`] indexes them) and the members ([`Slot::Step`]'s `member`).
    pub fn into_parts(self) -> (Vec<Entry>, Vec<Member>) {
        let members = self
            .items
            .iter()
            .zip(&self.kinds)
            .zip(&self.member_of)
            .filter_map(|((item, kind), member)| match (kind, member) {
                (&Kind::Stacked(n), Some(_)) => Some(Member::of(item, n)),
                _ => None,
            })
            .collect();
        (self.items, members)
    }
}

/// Where one entry of an unfolded dump is described ([`Unfolded::slot`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    /// An item as it is: a prefill tensor, a per-step one, or a member that could not be
    /// unfolded.
    Item(usize),
    /// Step `step` (1-based) of member `member`.
    Step { member: u32, step: u32 },
}

/// A stacked member unfolded into its steps: one layout for every step, and where each step's
/// bytes are.
#[derive(Debug)]
pub(crate) struct Member {
    /// The member's name (with the suffix).
    pub name: String,
    pub steps: usize,
    pub at: Location,
    /// The layout of every step, with step 1's bytes.
    pub step: Result<EntryInfo, DumpError>,
    /// The member's data: start and length in the file, and bytes per step.
    start: usize,
    len: usize,
    step_bytes: usize,
}

impl Member {
    fn of(item: &Entry, steps: usize) -> Member {
        let (start, len) = match item.info.as_ref().map(|i| i.source) {
            Ok(Source::Bytes { start, len }) => (start, len),
            // `unfold` stacks only stored members.
            _ => (0, 0),
        };
        let step = step_info(item, steps, 1);
        let step_bytes = step
            .as_ref()
            .map_or(0, |i| i.n_elems.saturating_mul(i.dtype.size_bytes()));
        Member {
            name: item.name.clone(),
            steps,
            at: item.at.clone(),
            step,
            start,
            len,
            step_bytes,
        }
    }

    /// Where the bytes of step `s` (1-based) are: the s-th of the member's equal ranges, as
    /// [`step_info`] gives it.
    pub fn source_of(&self, s: u32) -> Source {
        let offset = (s as usize)
            .saturating_sub(1)
            .saturating_mul(self.step_bytes);
        Source::Bytes {
            start: self.start.saturating_add(offset),
            len: self.step_bytes.min(self.len.saturating_sub(offset)),
        }
    }
}

/// The number of steps of a stacked member that can be sliced into its steps, or why not.
fn sliceable(e: &Entry) -> Result<usize, DumpError> {
    let info = e.info.as_ref().map_err(Clone::clone)?;
    let bad = |detail: &str| DumpError::UnsupportedEntry {
        at: e.at.clone(),
        detail: format!("a stacked decode-step member ({STACKED_SUFFIX}) {detail}"),
    };
    let Some(&steps) = info.shape.first() else {
        return Err(bad("needs a leading step axis, this one is a scalar"));
    };
    if steps > MAX_STACKED_STEPS {
        return Err(bad(&format!(
            "has {steps} steps, more than the {MAX_STACKED_STEPS} allowed"
        )));
    }
    if info.fortran && info.shape.iter().skip(1).any(|&d| d > 1) && steps > 1 {
        return Err(bad(
            "must be stored in C order (its steps are not contiguous in Fortran order)",
        ));
    }
    if !matches!(info.source, Source::Bytes { .. }) {
        return Err(bad(
            "must be stored uncompressed (np.savez, not np.savez_compressed): a deflated member cannot be read one step at a time",
        ));
    }
    Ok(steps)
}

/// The layout of step `s` (1-based) of a stacked member of `steps` steps: the member's shape
/// without the leading axis, and the s-th of `steps` equal ranges of the member's data.
fn step_info(e: &Entry, steps: usize, s: usize) -> Result<EntryInfo, DumpError> {
    let info = e.info.as_ref().map_err(Clone::clone)?;
    let (start, len) = match info.source {
        Source::Bytes { start, len } => (start, len),
        // `unfold` stacks only stored members.
        Source::Deflate { .. } => (0, 0),
    };
    let per_elems = info.n_elems.checked_div(steps).unwrap_or(0);
    let per_bytes = per_elems.saturating_mul(info.dtype.size_bytes());
    let offset = s.saturating_sub(1).saturating_mul(per_bytes);
    Ok(EntryInfo {
        shape: info.shape.get(1..).unwrap_or_default().to_vec(),
        dtype: info.dtype,
        endian: info.endian,
        // A member of one step is that step, in the member's order: Fortran order stays
        // Fortran order without the leading axis of 1 (a bad-input hunt found such a step read
        // as C order, its elements scrambled). A member of more steps stored in Fortran order
        // was refused unless its steps have at most one element each, where order is moot.
        fortran: info.fortran && steps <= 1,
        n_elems: per_elems,
        source: Source::Bytes {
            start: start.saturating_add(offset),
            // What the member's data holds from there on, at most one step (a member shorter
            // than its header says is refused at open; this keeps a slice in bounds anyway).
            len: per_bytes.min(len.saturating_sub(offset)),
        },
    })
}

/// The metadata's `order` with every stacked member's name replaced by its steps, in the
/// step-major order [`unfold`] gives the entries. Only the members the dump unfolded unfold
/// here (their step counts are bounded, [`MAX_UNFOLDED_ENTRIES`]); any other `@steps` name
/// (a member that could not be unfolded, or one the file lacks) stays as it is listed.
/// True when the recorded order listed a later step before an earlier one (a member counts
/// as its first step), among the names the dump holds (`present`; a name the order alone
/// lists is no step of the file: found by a bad-input hunt, an undumped `model.norm` listed
/// after the members was called steps out of order): the step-major order then differs from
/// it, and the caller says so as it does for the per-step layout.
/// `as_listed`: the order lists the dump's items as they are ([`Unfolded::lists_items`]); it
/// then unfolds into `names` themselves, which it shares whole instead of making them again
/// or copying the list (the same result, tested; ~150,000 names for each dump of a 256-step
/// decode: a copy counted a reference of each, on names the other dump's thread counted at
/// the same time).
pub(crate) fn expand_order(
    meta: &mut Meta,
    members: &[Member],
    names: &NameList,
    present: &dyn Fn(&str) -> bool,
    as_listed: bool,
) -> bool {
    if members.is_empty() {
        return false;
    }
    let known: std::collections::HashMap<&str, usize> =
        members.iter().map(|m| (m.name.as_str(), m.steps)).collect();
    // A member the order lists again unfolds at its first listing only: each listing unfolded
    // every step (a bad-input hunt: 1,000 listings of one member of 16,384 empty steps, 12 KB
    // of file, took 1.3 GB; 100,000 listings 7.8 GB). A plain name listed twice is one entry
    // each, which the diff's plan drops.
    let listed_again = {
        let mut seen = std::collections::HashSet::new();
        meta.order
            .iter()
            .any(|n| known.contains_key(&**n) && !seen.insert(&**n))
    };
    if listed_again {
        let mut seen = std::collections::HashSet::new();
        meta.order
            .to_mut()
            .retain(|n| !known.contains_key(&**n) || seen.insert(n.clone()));
    }
    let kinds: Vec<Kind> = meta
        .order
        .iter()
        .map(|n| match known.get(&**n) {
            Some(&steps) => Kind::Stacked(steps),
            None => Kind::of_name(n),
        })
        .collect();
    let first_step = |k: &Kind| match *k {
        Kind::Prefill => 0,
        Kind::Step(s) => s,
        Kind::Stacked(_) => 1,
    };
    // A name listed again says nothing of the order (a bad-input hunt: an order that repeated
    // `model.embed_tokens` at its end was said to list decode steps out of order).
    let mut seen = std::collections::HashSet::new();
    let held: Vec<usize> = kinds
        .iter()
        .zip(&meta.order)
        .filter(|(k, n)| matches!(k, Kind::Stacked(_)) || present(n))
        .filter(|(_, n)| seen.insert(&***n))
        .map(|(k, _)| first_step(k))
        .collect();
    let resorted = held.windows(2).any(|w| w[1] < w[0]);
    if as_listed {
        meta.order = names.clone();
        return resorted;
    }
    let order = std::mem::take(&mut meta.order);
    // A name is the dump's own where the dump lists it at the same place (both tools write
    // the order in file order): one allocation per name, not one more per dump.
    meta.order = step_major(&kinds)
        .into_par_iter()
        .with_min_len(1024)
        .enumerate()
        .filter_map(|(k, (i, s))| {
            let n = order.get(i)?;
            Some(match (stacked_base(n), kinds.get(i)) {
                (Some(base), Some(Kind::Stacked(_))) => match names.get(k) {
                    Some(same) if divergence_names::split_step(same) == (base, s) => same.clone(),
                    _ => step_name_shared(base, s),
                },
                _ => match names.get(k) {
                    Some(same) if **same == **n => same.clone(),
                    _ => n.clone(),
                },
            })
        })
        .collect();
    resorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::Endian;
    use crate::dtype::DType;

    fn entry(name: &str, shape: &[usize]) -> Entry {
        let n: usize = shape.iter().product();
        Entry {
            name: name.to_string(),
            at: Location::entry(std::path::Path::new("d.npz"), &format!("{name}.npy")),
            info: Ok(EntryInfo {
                shape: shape.to_vec(),
                dtype: DType::F32,
                endian: Endian::Little,
                fortran: false,
                n_elems: n,
                source: Source::Bytes {
                    start: 0,
                    len: n * 4,
                },
            }),
        }
    }

    /// An order that lists the items as they are unfolds into the dump's names whichever way
    /// [`expand_order`] takes (`as_listed` copies them); any other order is not taken for one.
    #[test]
    fn an_order_listing_the_items_unfolds_into_the_names_either_way() {
        let cap = Budget {
            entries: 12,
            dims: 1_000,
        };
        let items = || {
            vec![
                entry("a", &[2]),
                entry("x@steps", &[3, 2]),
                entry("b@1", &[1]),
                entry("b", &[2]),
                entry("y@steps", &[2, 1]),
                // past the budget: stays one entry, under its own name
                entry("z@steps", &[100, 1]),
                entry("b@3", &[1]),
                entry("c@2", &[1]),
            ]
        };
        let listed: Vec<Name> = items()
            .iter()
            .map(|e| Name::from(e.name.as_str()))
            .collect();
        let mut reversed = listed.clone();
        reversed.reverse();
        let mut swapped = listed.clone();
        swapped.swap(1, 4);
        let orders = [
            (listed.clone(), true),
            (reversed, false),
            (swapped, false),
            (listed[1..].to_vec(), false),
            ([listed.clone(), vec![Name::from("d")]].concat(), false),
            (Vec::new(), false),
        ];
        // Two items of one name (`x@steps.npy` and `x@steps` in a zip, found by a review):
        // the one of no steps is a member too, and the order reads both as it (no steps): not
        // the items as they are.
        let twice = || {
            vec![
                entry("a", &[4]),
                entry("x@steps", &[3, 4]),
                entry("x@steps", &[0, 4]),
            ]
        };
        let listed_twice: Vec<Name> = ["a", "x@steps", "x@steps"].map(Name::from).to_vec();
        let cases = orders
            .into_iter()
            .map(|(order, as_items)| (items(), order, as_items))
            .chain([(twice(), listed_twice, false)]);
        for (items, order, as_items) in cases {
            let u = unfold(items, cap).unwrap_or_else(|_| panic!("stacked"));
            let names: NameList = (0..u.len()).map(|k| u.name(k)).collect();
            assert_eq!(u.lists_items(&order), as_items, "{order:?}");
            let members = u.into_parts().1;
            let present = |n: &str| names.iter().any(|m| **m == *n);
            let expand = |as_listed: bool| {
                let mut meta = Meta {
                    order: order.clone().into(),
                    ..Meta::default()
                };
                let resorted = expand_order(&mut meta, &members, &names, &present, as_listed);
                (meta.order, resorted)
            };
            let made = expand(false);
            if as_items {
                assert_eq!(made.0, names, "the order unfolds into the names");
                let shared = expand(true);
                assert_eq!(shared, made);
                assert!(shared.0.shares(&names), "the names' own list, not a copy");
            }
        }
    }

    /// A member listed again in the order unfolds once, at its first listing: each listing
    /// unfolded every step (a bad-input hunt: 1,000 listings of 16,384 steps, 1.3 GB).
    #[test]
    fn a_member_listed_again_unfolds_once() {
        let cap = Budget {
            entries: 1 << 20,
            dims: 1 << 20,
        };
        let u = unfold(vec![entry("a", &[2]), entry("x@steps", &[1_000, 0])], cap)
            .unwrap_or_else(|_| panic!("stacked"));
        let names: NameList = (0..u.len()).map(|k| u.name(k)).collect();
        let members = u.into_parts().1;
        let present = |n: &str| names.iter().any(|m| **m == *n);
        let mut order = vec![Name::from("a")];
        order.extend(std::iter::repeat_n(Name::from("x@steps"), 1_000));
        order.push(Name::from("a"));
        let mut meta = Meta {
            order: order.into(),
            ..Meta::default()
        };
        // and the order is not out of step order for listing `a` again after the steps
        assert!(!expand_order(&mut meta, &members, &names, &present, false));
        // the prefill's `a` and the plain name listed again (one entry each: the plan drops
        // the second), then the steps once
        assert_eq!(meta.order.len(), 2 + 1_000);
        assert_eq!([&*meta.order[0], &*meta.order[1]], ["a", "a"]);
        assert_eq!(&*meta.order[2], "x@1");
        assert_eq!(&*meta.order[1_001], "x@1000");
    }

    #[test]
    fn the_budget_grows_with_the_file_within_its_bounds() {
        let entries = |len| Budget::for_file(len).entries;
        assert_eq!(entries(0), MIN_UNFOLDED_ENTRIES);
        assert_eq!(entries(300), MIN_UNFOLDED_ENTRIES);
        assert_eq!(entries(64 << 20), 1 << 20);
        // the 256-step decode of the 0.6B-shaped model: 1.3 GB per dump, 152,345 steps
        assert!(entries(1_300_000_000) >= 152_345);
        // the tiny fixture's decode dump: 792 KB, 616 entries (16,384 at least anyway); a
        // dump of such steps by the thousand: 1.3 KB a step on average
        assert!(entries(1_300 * 100_000) >= 100_000);
        assert_eq!(entries(1 << 40), MAX_UNFOLDED_ENTRIES);
        assert_eq!(entries(u64::MAX), MAX_UNFOLDED_ENTRIES);
        assert_eq!(Budget::for_file(1).dims, MAX_UNFOLDED_DIMS);
    }

    #[test]
    fn members_past_the_budget_stay_unreadable_with_the_reason() {
        // Headers may claim a million empty steps in a few hundred bytes: what unfolding
        // allocates is bounded by the dump's budget, not by the headers.
        let cap = Budget {
            entries: 10,
            dims: 1_000,
        };
        let entries = vec![
            entry("a", &[2]),
            entry("x@steps", &[4, 1, 2]),
            entry("y@steps", &[6, 3]),
            entry("z@steps", &[1_000_000, 0]),
            entry("w@steps", &[2, 1]),
        ];
        let u = unfold(entries, cap).unwrap_or_else(|_| panic!("stacked"));
        let members = |u: Unfolded| {
            u.into_parts()
                .1
                .into_iter()
                .map(|m| (m.name, m.steps))
                .collect::<Vec<_>>()
        };
        let names: Vec<String> = (0..u.len()).map(|k| u.name(k).to_string()).collect();
        assert_eq!(names.len(), 1 + 2 + 10);
        assert_eq!(&names[..5], ["a", "z@steps", "w@steps", "x@1", "y@1"]);
        for k in [1, 2] {
            let e = u.info(k).unwrap_err().to_string();
            assert!(e.contains("past 10 unfolded steps"), "{e}");
            assert!(e.starts_with("d.npz"), "{e}");
        }
        // x (4) and y (6) fill the budget; z would pass it, so would w after them.
        assert_eq!(
            members(u),
            [("x@steps".to_string(), 4), ("y@steps".to_string(), 6)]
        );
        // The dimensions count too: 3 steps of rank 400 pass 1,000.
        let cap = Budget {
            entries: 1_000,
            dims: 1_000,
        };
        let wide = vec![1usize; 401];
        let mut shape = vec![3usize];
        shape.extend(&wide[1..]);
        let u = unfold(vec![entry("v@steps", &shape)], cap).unwrap_or_else(|_| panic!("stacked"));
        assert!(u.info(0).is_err());
        assert!(members(u).is_empty());
    }

    #[test]
    fn a_member_gives_each_step_the_bytes_step_info_gives_it() {
        let bytes = |s: Source| match s {
            Source::Bytes { start, len } => (start, len),
            Source::Deflate { .. } => panic!("deflated"),
        };
        for (shape, short) in [
            (vec![5, 3, 2], 0),
            (vec![4, 7], 9),
            (vec![3], 0),
            (vec![2, 0], 0),
        ] {
            let mut e = entry("x@steps", &shape);
            if let Ok(info) = e.info.as_mut() {
                // A member shorter than its header says (refused at open; kept in bounds here).
                if let Source::Bytes { start, len } = info.source {
                    info.source = Source::Bytes {
                        start: start + 100,
                        len: len.saturating_sub(short),
                    };
                }
            }
            let n = shape[0];
            let m = Member::of(&e, n);
            let layout = m.step.as_ref().unwrap();
            for s in 1..=n {
                let want = step_info(&e, n, s).unwrap();
                assert_eq!(
                    bytes(m.source_of(s as u32)),
                    bytes(want.source),
                    "{shape:?} step {s}"
                );
                assert_eq!(layout.shape, want.shape);
                assert_eq!(layout.n_elems, want.n_elems);
            }
        }
    }

    /// Where every member has as many steps and no item is a per-step one, the order is
    /// worked out, not listed, and gives what [`step_major`] lists; any other mix is listed.
    #[test]
    fn a_regular_order_is_the_step_major_one() {
        use Kind::{Prefill as P, Stacked as S, Step as T};
        let cases: [(&[Kind], bool); 8] = [
            (&[P, S(3), P, S(3), S(3), P], true),
            (&[S(2), S(2)], true),
            (&[P, P], false),
            (&[P, S(0), S(0)], true),
            (&[S(1)], true),
            (&[P, S(3), S(2)], false),
            (&[P, S(2), T(1), S(2)], false),
            (&[T(1), T(2)], false),
        ];
        for (kinds, regular) in cases {
            let order = Order::of(kinds);
            assert_eq!(matches!(order, Order::Regular { .. }), regular, "{kinds:?}");
            let listed = step_major(kinds);
            assert_eq!(order.len(), listed.len(), "{kinds:?}");
            let got: Vec<_> = (0..order.len() + 2).map(|k| order.get(k)).collect();
            let want: Vec<_> = (0..listed.len() + 2)
                .map(|k| listed.get(k).copied())
                .collect();
            assert_eq!(got, want, "{kinds:?}");
        }
    }

    /// [`Unfolded::names`] gives [`Unfolded::name`] of every entry: held by their parts where
    /// the order is regular (members of one step count, a member that could not be unfolded
    /// among the prefill's names as it is), listed where it is not.
    #[test]
    fn the_names_are_each_entrys_name_held_by_parts_where_regular() {
        let cap = Budget {
            entries: 100,
            dims: 1_000,
        };
        let regular = vec![
            entry("e", &[2]),
            entry("x@steps", &[3, 2]),
            entry("lm_head", &[1, 4]),
            entry("k@5@steps", &[3, 2]),
            // Not sliceable into steps: left whole, a prefill name.
            entry("bad@steps", &[]),
        ];
        let uneven = vec![
            entry("e", &[2]),
            entry("x@steps", &[3, 2]),
            entry("y@steps", &[2, 2]),
        ];
        for (entries, by_parts) in [(regular, true), (uneven, false)] {
            let Ok(u) = unfold(entries, cap) else {
                panic!("unfolded")
            };
            let names = u.names();
            assert_eq!(names.parts().is_some(), by_parts);
            let each: Vec<Name> = (0..u.len()).map(|k| u.name(k)).collect();
            assert_eq!(names.len(), each.len());
            for (k, n) in each.iter().enumerate() {
                assert!(names.name_is(k, n), "{k}: {n}");
            }
            assert!(names == each);
        }
    }

    #[test]
    fn step_major_costs_the_entries_it_makes() {
        // One member of a million steps beside many short ones: the walk is linear in what it
        // makes (a walk over every member at every step would take ~1e10 steps here).
        let mut kinds = vec![Kind::Prefill, Kind::Stacked(1_000_000)];
        kinds.extend(std::iter::repeat_n(Kind::Stacked(2), 10_000));
        kinds.push(Kind::Step(3));
        let t = std::time::Instant::now();
        let order = step_major(&kinds);
        assert_eq!(order.len(), 1 + 1_000_000 + 20_000 + 1);
        assert_eq!(order[..3], [(0, 0), (1, 1), (2, 1)]);
        // step 3: the long member, then the per-step item listed after it
        let at3 = order.iter().position(|&(_, s)| s == 3).unwrap_or(0);
        assert_eq!(order[at3..at3 + 2], [(1, 3), (10_002, 3)]);
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
}
