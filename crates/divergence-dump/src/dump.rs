//! [`Dump`]: an opened dump file (npz, npy or safetensors) whose tensors are read one at a time.
//!
//! `open` memory-maps the file, parses the directory (zip central directory, npy header or
//! safetensors header) and every tensor header once, and keeps per-tensor offsets. `read` then
//! decodes one tensor from the map; it takes `&self` and touches no shared mutable state, so
//! `Dump` is `Send + Sync` and many threads can read from it at once. `open_pair` opens two
//! files at once, and where they unfold into the same names (ours and the reference), makes
//! the names and their index once for both.

use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use crate::dtype::{DType, Tensor, TensorView};
use crate::entry::{self, Chunks, Entry, Source};
use crate::error::{DumpError, Location};
use crate::meta::{Meta, MAX_META_BYTES, META_ENTRY};
use crate::npy;
use crate::npz;
use crate::safetensors;
use crate::stacked;
use divergence_names::{Name, NameList};
use divergence_values::ValuesRef;

/// The container format of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip of `.npy` members, as written by `numpy.savez` / `numpy.savez_compressed`.
    Npz,
    /// A single `.npy` array: a dump with one tensor named after the file stem.
    Npy,
    /// A safetensors file.
    Safetensors,
}

/// An opened dump. See the module docs.
#[derive(Debug)]
pub struct Dump {
    path: PathBuf,
    format: Format,
    map: Mmap,
    /// The names, where each is kept, and their index (shared by the two dumps of
    /// [`Dump::open_pair`] when they have the same names).
    listing: Arc<Listing>,
    /// The entries stored as themselves (every entry of a dump without stacked members).
    entries: Vec<Stored>,
    /// The stacked members unfolded into steps: one layout for all their steps.
    members: Vec<stacked::Member>,
    meta: Option<Meta>,
    /// Per entry, the index in `dtype_names` of its `meta.dtypes` value (resolved once at open:
    /// a decode dump asks for tens of thousands).
    original: Vec<Option<u16>>,
    /// Per stacked member, the `original` entry of its steps.
    member_original: Vec<MemberDtype>,
    /// The distinct values of `meta.dtypes`.
    dtype_names: Vec<String>,
    /// What each of `dtype_names` claims ([`DType::claimed`]), parsed once.
    dtype_claims: Vec<Option<DType>>,
    /// [`Dump::order_resorted`].
    order_resorted: bool,
}

/// Most tensors one dump may hold: npz members (the metadata's included) or safetensors
/// tensors, counted from the zip directory or the header before any is read. A tensor costs
/// `diff` ~20 µs of CPU and ~1.5 KB whatever its size (its entry, its row, its name in the
/// plan and the output): a 99 MB safetensors file of 1.65 million empty tensors, under the
/// header cap, took 46 s and 2.6 GB (a bad-input hunt, 2026-12-04). A 256-step decode of the
/// 0.6B-shaped model stored one array a step (`x@s`) has ~150,000; stored stacked
/// (`x@steps`) its steps count once a probe, and unfold under their own budget
/// ([`crate::MAX_STACKED_STEPS`], docs/reliability.md). The checkpoint's shards have the same
/// cap ([`divergence_names::json::MAX_TENSORS`]).
pub const MAX_ENTRIES: usize = divergence_names::json::MAX_TENSORS;

impl Dump {
    /// Open a dump. The format comes from the extension (`.npz`, `.npy`, `.safetensors`, any
    /// case); for other extensions it is sniffed from the first bytes.
    pub fn open(path: &Path) -> Result<Dump, DumpError> {
        let file = Headers::read(path)?;
        let listing = Arc::new(Listing::of(&file.layout));
        file.finish(listing)
    }

    /// [`Dump::open`] both files at once. Where they unfold into the same names in the same
    /// places (ours and the reference, dumped by the same tool: a decode dump's ~150,000 step
    /// names), the names, where each is kept and their index are made once and shared, not
    /// once per dump (docs/performance.md, "Decode steps"). Each result is the one
    /// [`Dump::open`] gives for its file.
    pub fn open_pair(a: &Path, b: &Path) -> (Result<Dump, DumpError>, Result<Dump, DumpError>) {
        let alone = |file: Result<Headers, DumpError>| {
            file.and_then(|f| {
                let listing = Arc::new(Listing::of(&f.layout));
                f.finish(listing)
            })
        };
        match rayon::join(|| Headers::read(a), || Headers::read(b)) {
            (Ok(fa), Ok(fb)) if fa.layout.same_names(&fb.layout) => {
                let listing = Arc::new(Listing::of(&fa.layout));
                let shared = Arc::clone(&listing);
                rayon::join(|| fa.finish(listing), || fb.finish(shared))
            }
            (fa, fb) => rayon::join(|| alone(fa), || alone(fb)),
        }
    }

    /// True when the metadata's `order` listed a later decode step before an earlier one in a
    /// dump with stacked steps: [`Dump::meta`]'s order is the step-major one, not as recorded.
    pub fn order_resorted(&self) -> bool {
        self.order_resorted
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Tensor names in file order (npz member order, safetensors data order), except that a dump
    /// with decode steps stored stacked lists them step-major (the prefill's tensors, then every
    /// tensor of step 1, ...; docs/dump-format.md, "Decode steps"); never `__meta__`.
    ///
    /// A decode dump's step names are held by their parts ([`NameList::step_of`],
    /// [`NameList::name_is`]): the slice is made whole where a caller reads it as one.
    pub fn names(&self) -> &NameList {
        &self.listing.names
    }

    /// True if the dump lists this tensor, even one whose entry cannot be read.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Where the dump lists this tensor in [`Dump::names`] (even one whose entry cannot be
    /// read): the handle of the `*_at` methods, which a caller asking several things about one
    /// tensor looks up once (a decode dump has 150,000 names, and every row asks a few).
    pub fn position(&self, name: &str) -> Option<usize> {
        match &self.listing.index {
            Ok(index) => index.get(&self.listing.names, name),
            // Not a dump `open` returns.
            Err(_) => None,
        }
    }

    /// Shape of a tensor; `None` if there is no such tensor or its header is unreadable.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.info(name).map(|i| i.shape.as_slice())
    }

    /// Stored dtype of a tensor; `None` if there is no such tensor or its header is unreadable.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.info(name).map(|i| i.dtype)
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// The dtype before export: `meta.dtypes[name]` if present, else the stored dtype's name.
    pub fn original_dtype(&self, name: &str) -> Option<String> {
        match self.position(name) {
            Some(i) => self.original_dtype_at(i),
            // A name only the metadata lists.
            None => self.meta.as_ref()?.dtypes.get(name).cloned(),
        }
    }

    /// [`Dump::original_dtype`] of the tensor at [`Dump::position`] `i`.
    pub fn original_dtype_at(&self, i: usize) -> Option<String> {
        self.original_dtype_str_at(i).map(str::to_string)
    }

    /// [`Dump::original_dtype_at`], borrowed (no copy: `diff` asks for every row's, and a
    /// decode dump has ~150,000).
    ///
    /// A metadata dtype that claims more precision than the stored bytes hold
    /// ([`DType::claim_exceeds`]) is not used: the stored dtype is the answer.
    pub fn original_dtype_str_at(&self, i: usize) -> Option<&str> {
        let stored = self.info_at(i).map(|i| i.dtype);
        self.original_dtype_of(Some(i), stored, self.original.get(i).copied().flatten())
    }

    /// [`Dump::original_dtype_str_at`] of every step of stacked member `member`
    /// ([`Dump::step_slot_at`]) when it is the same for all of them, asked once: `Some(answer)`,
    /// or `None` when it may differ from step to step (the metadata lists some steps on their
    /// own), when the dump's distinct metadata dtypes are too many to intern (more than
    /// 65,535: each step is looked up by name) or there is no such member. `diff` compares a
    /// member's steps in one call and
    /// needs one dtype per side (asking each of a decode dump's ~150,000 steps was ~4% of its
    /// CPU time, perf on 2 cores).
    pub fn member_original_dtype_str(&self, member: usize) -> Option<Option<&str>> {
        let MemberDtype::Same(id) = *self.member_original.get(member)? else {
            return None;
        };
        // Past what u16 holds, the dtypes are looked up by name: step by step.
        if self.dtype_names.len() > usize::from(u16::MAX) {
            return None;
        }
        let stored = self
            .members
            .get(member)?
            .step
            .as_ref()
            .ok()
            .map(|i| i.dtype);
        // Every step's layout is its member's: `stored` is each step's `info_at`.
        Some(self.original_dtype_of(None, stored, id))
    }

    /// The answer of [`Dump::original_dtype_str_at`] for entry `i` (`None`: a member's steps,
    /// all of them interned), whose stored dtype is `stored` and interned metadata dtype
    /// `interned`.
    fn original_dtype_of(
        &self,
        i: Option<usize>,
        stored: Option<DType>,
        interned: Option<u16>,
    ) -> Option<&str> {
        let honest = |claim: &'_ str| stored.is_none_or(|s| !s.claim_exceeds(claim));
        if let Some(d) = interned {
            let d = usize::from(d);
            if let Some(claim) = self.dtype_names.get(d) {
                // Parsed at open: every row asks (a decode dump has ~150,000).
                let claimed = self.dtype_claims.get(d).copied().flatten();
                if stored.is_none_or(|s| !s.exceeded_by(claimed)) {
                    return Some(claim.as_str());
                }
            }
        } else if self.dtype_names.len() > usize::from(u16::MAX) {
            // Not all interned (see `original_dtypes`); a stacked step has its member's.
            let i = i?;
            let name = self.listing.names.name(i)?;
            let dtypes = self.meta.as_ref().map(|m| &m.dtypes);
            let member = || {
                let (base, step) = self.listing.names.step_of(i)?;
                (step > 0).then(|| format!("{base}{}", stacked::STACKED_SUFFIX))
            };
            if let Some(d) = dtypes.and_then(|d| d.get(&*name).or_else(|| d.get(&member()?))) {
                if honest(d) {
                    return Some(d.as_str());
                }
            }
        }
        stored.map(DType::name)
    }

    /// Read and decode one tensor (C order, widened values).
    pub fn read(&self, name: &str) -> Result<Tensor, DumpError> {
        let (layout, at) = self.readable(name)?;
        entry::read_entry(&self.map, layout, at)
    }

    /// One tensor without a copy where possible: the stored bytes, borrowed from the memory
    /// map, for uncompressed little-endian C-order f32 / f64 / f16 / bf16 tensors; decoded like
    /// [`Dump::read`] otherwise. The fast path of `divergence diff`.
    pub fn view(&self, name: &str) -> Result<TensorView<'_>, DumpError> {
        let (layout, at) = self.readable(name)?;
        entry::view_entry(&self.map, layout, at)
    }

    /// [`Dump::view`] of the tensor at [`Dump::position`] `i`.
    pub fn view_at(&self, i: usize) -> Result<TensorView<'_>, DumpError> {
        let (layout, at) = self.readable_at(i)?;
        entry::view_entry(&self.map, layout, at)
    }

    /// One tensor's values in C order, `per` elements at a time ([`Chunks::next_piece`]): the
    /// bounded-memory read. A deflated member is inflated piece by piece (memory: one piece,
    /// whatever its size); stored bytes are sliced from the map, borrowed where they need no
    /// decoding. The values and errors are those of [`Dump::read`].
    pub fn chunks(&self, name: &str, per: usize) -> Result<Chunks<'_>, DumpError> {
        let (layout, at) = self.readable(name)?;
        Chunks::new(&self.map, layout, at, per)
    }

    /// [`Dump::chunks`] of the tensor at [`Dump::position`] `i`.
    pub fn chunks_at(&self, i: usize, per: usize) -> Result<Chunks<'_>, DumpError> {
        let (layout, at) = self.readable_at(i)?;
        Chunks::new(&self.map, layout, at, per)
    }

    /// True when [`Dump::view`] of this tensor borrows its bytes from the file (stored,
    /// little-endian, C order, f32 / f64 / f16 / bf16): reading it costs no memory.
    pub fn is_zero_copy(&self, name: &str) -> bool {
        self.info(name).is_some_and(entry::is_zero_copy)
    }

    /// [`Dump::is_zero_copy`] of the tensor at [`Dump::position`] `i`.
    pub fn is_zero_copy_at(&self, i: usize) -> bool {
        self.info_at(i).is_some_and(entry::is_zero_copy)
    }

    /// [`Dump::shape`] of the tensor at [`Dump::position`] `i`.
    pub fn shape_at(&self, i: usize) -> Option<&[usize]> {
        self.info_at(i).map(|i| i.shape.as_slice())
    }

    /// [`Dump::dtype`] of the tensor at [`Dump::position`] `i`.
    pub fn dtype_at(&self, i: usize) -> Option<DType> {
        self.info_at(i).map(|i| i.dtype)
    }

    /// Where the tensor at [`Dump::position`] `i` is a decode step kept in a stacked member
    /// (docs/dump-format.md, "Decode steps"): the member (for [`Dump::member_steps`]) and the
    /// step (1-based). `None` for a tensor stored as itself.
    pub fn step_slot_at(&self, i: usize) -> Option<(usize, usize)> {
        match *self.listing.slots.get(i)? {
            Slot::Own(_) => None,
            Slot::Step { member, step } => Some((member as usize, step as usize)),
        }
    }

    /// True when `other` was opened with this dump ([`Dump::open_pair`]) and shares its names:
    /// the same names in the same places, each a step of the same member or neither.
    pub fn shares_names(&self, other: &Dump) -> bool {
        Arc::ptr_eq(&self.listing, &other.listing)
    }

    /// Where the steps of stacked member `member` ([`Dump::step_slot_at`]) are in
    /// [`Dump::names`], step 1 first, each step once: known without a pass over the names
    /// when the dump's index is kept by member (a dump with stacked steps and no repeated
    /// name); `None` otherwise, or past the members.
    pub fn member_positions(&self, member: usize) -> Option<&[u32]> {
        match &self.listing.index {
            Ok(NameIndex::Steps(index)) if member < self.members.len() => {
                match (index.offsets.get(member), index.offsets.get(member + 1)) {
                    (Some(&from), Some(&to)) => index.positions.get(from as usize..to as usize),
                    // Past the members the index counted: the last ones, of no steps.
                    _ => Some(&[]),
                }
            }
            _ => None,
        }
    }

    /// How many stacked members were unfolded into steps ([`Dump::step_slot_at`]).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The positions of the entries stored as themselves (no step of a stacked member), in
    /// ascending order, where the dump's index keeps them apart (a dump with stacked steps and
    /// no repeated name: a few hundred of its ~150,000 names, without a pass over them);
    /// `None` otherwise ([`Dump::step_slot_at`] says of each position).
    pub fn own_positions(&self) -> Option<Vec<u32>> {
        match &self.listing.index {
            Ok(NameIndex::Steps(index)) => {
                let mut own: Vec<u32> = index.own.iter().copied().collect();
                own.sort_unstable();
                Some(own)
            }
            _ => None,
        }
    }

    /// The name (`x@steps`) and step count of stacked member `member` ([`Dump::step_slot_at`]),
    /// or `None` past the members.
    pub fn member_info(&self, member: usize) -> Option<(&str, usize)> {
        self.members.get(member).map(|m| (m.name.as_str(), m.steps))
    }

    /// Steps `steps` (1-based) of stacked member `member` ([`Dump::step_slot_at`]) as one run
    /// of values borrowed from the map, step after step, with one step's shape: what
    /// [`Dump::view_at`] gives for each of those steps, one after the other, without a copy or
    /// a lookup per step. `None` when they cannot be borrowed so (a member that is not
    /// zero-copy or is damaged, steps out of its range or past its bytes): read the steps one
    /// by one, and [`Dump::view_at`] says why one fails.
    pub fn member_steps(
        &self,
        member: usize,
        steps: std::ops::Range<usize>,
    ) -> Option<(&[usize], ValuesRef<'_>)> {
        let m = self.members.get(member)?;
        let info = m.step.as_ref().ok()?;
        if steps.is_empty() || steps.start == 0 || steps.end > m.steps + 1 {
            return None;
        }
        if !entry::is_zero_copy(info) {
            return None;
        }
        let first = u32::try_from(steps.start).ok()?;
        let last = u32::try_from(steps.end - 1).ok()?;
        let (
            Source::Bytes { start, .. },
            Source::Bytes {
                start: last_start,
                len,
            },
        ) = (m.source_of(first), m.source_of(last))
        else {
            return None;
        };
        let step_bytes = info.n_elems.checked_mul(info.dtype.size_bytes())?;
        // Every step must hold its whole bytes, as each step's own view checks.
        if len < step_bytes {
            return None;
        }
        let bytes = self.map.get(start..last_start.checked_add(step_bytes)?)?;
        Some((
            info.shape.as_slice(),
            entry::stored_values(bytes, info.dtype),
        ))
    }

    /// The layout and location of a named entry, or why it cannot be read (not in the dump,
    /// or damaged: the error found at open time).
    fn readable(&self, name: &str) -> Result<(entry::Layout<'_>, &Location), DumpError> {
        let i = self.position(name).ok_or_else(|| DumpError::NoSuchTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        self.readable_at(i)
    }

    /// [`Dump::readable`] of the tensor at [`Dump::position`] `i`.
    fn readable_at(&self, i: usize) -> Result<(entry::Layout<'_>, &Location), DumpError> {
        let missing = || DumpError::NoSuchTensor {
            path: self.path.clone(),
            name: format!("#{i}"),
        };
        match *self.listing.slots.get(i).ok_or_else(missing)? {
            Slot::Own(j) => {
                let e = self.entries.get(j).ok_or_else(missing)?;
                let info = e.info.as_ref().map_err(Clone::clone)?;
                Ok(((info, info.source), &e.at))
            }
            Slot::Step { member, step } => {
                let m = self.members.get(member as usize).ok_or_else(missing)?;
                let info = m.step.as_ref().map_err(Clone::clone)?;
                Ok(((info, m.source_of(step)), &m.at))
            }
        }
    }

    fn info(&self, name: &str) -> Option<&entry::EntryInfo> {
        self.info_at(self.position(name)?)
    }

    /// The layout of the tensor at `i` (a step's: its member's step layout, whose source is
    /// step 1's; [`Dump::readable_at`] has the step's own).
    fn info_at(&self, i: usize) -> Option<&entry::EntryInfo> {
        match *self.listing.slots.get(i)? {
            Slot::Own(j) => self.entries.get(j)?.info.as_ref().ok(),
            Slot::Step { member, .. } => self.members.get(member as usize)?.step.as_ref().ok(),
        }
    }
}

/// A dump file read up to its names: the map, the format, the metadata and the entries as
/// they unfold ([`Layout`]).
struct Headers {
    path: PathBuf,
    format: Format,
    map: Mmap,
    meta: Option<Meta>,
    layout: Layout,
}

/// A dump's entries: as stored, or with stacked decode steps unfolded ([`stacked::unfold`]).
enum Layout {
    Plain(Vec<Entry>),
    Unfolded(stacked::Unfolded),
}

impl Layout {
    /// True when both give the same names in the same places ([`Listing::of`]).
    fn same_names(&self, other: &Layout) -> bool {
        match (self, other) {
            (Layout::Plain(a), Layout::Plain(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
            }
            (Layout::Unfolded(a), Layout::Unfolded(b)) => a.same_names(b),
            _ => false,
        }
    }
}

/// A dump's names, where each is kept and their index: what two dumps of one layout share
/// ([`Dump::open_pair`]).
#[derive(Debug)]
struct Listing {
    /// Shared whole with the metadata's execution order where that lists the same names
    /// ([`stacked::expand_order`]'s `as_listed`).
    names: NameList,
    /// Per name, where its layout is kept.
    slots: Vec<Slot>,
    /// `Err(i)`: `names[i]` repeats an earlier name (the dump is refused).
    index: Result<NameIndex, usize>,
}

impl Listing {
    fn of(layout: &Layout) -> Listing {
        let (names, slots) = match layout {
            Layout::Plain(entries) => {
                let names: NameList = entries
                    .par_iter()
                    .with_min_len(1024)
                    .map(|e| Name::from(e.name.as_str()))
                    .collect();
                let slots = (0..entries.len()).map(Slot::Own).collect();
                (names, slots)
            }
            Layout::Unfolded(u) => {
                // A step is a slot (its member and step) and a name held by its parts
                // ([`stacked::Unfolded::names`]): its layout is its member's, made once (a
                // 256-step decode has ~150,000 steps).
                let n = u.len();
                rayon::join(
                    || u.names(),
                    || {
                        (0..n)
                            .into_par_iter()
                            .with_min_len(1024)
                            .map(|k| match u.slot(k) {
                                stacked::Slot::Item(i) => Slot::Own(i),
                                stacked::Slot::Step { member, step } => Slot::Step { member, step },
                            })
                            .collect::<Vec<Slot>>()
                    },
                )
            }
        };
        let index = NameIndex::of(&names, &slots);
        Listing {
            names,
            slots,
            index,
        }
    }
}

impl Headers {
    /// Maps the file and parses its directory and every tensor header; the stacked decode
    /// steps unfolded, their names not made yet.
    fn read(path: &Path) -> Result<Headers, DumpError> {
        let md = std::fs::metadata(path).map_err(|e| DumpError::io(path, &e))?;
        if md.is_dir() {
            return Err(DumpError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        // Before opening: opening a FIFO blocks, and a device such as /dev/zero reports 0 bytes.
        if !md.is_file() {
            return Err(DumpError::NotRegularFile {
                path: path.to_path_buf(),
                kind: file_kind(path, &md.file_type()),
            });
        }
        if md.len() == 0 {
            return Err(DumpError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(|e| DumpError::io(path, &e))?;
        // SAFETY: the map is read-only; if another process truncates the file while we hold
        // the map, reads fault (SIGBUS) - the usual caveat of memory-mapped readers.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DumpError::io(path, &e))?;
        if map.is_empty() {
            return Err(DumpError::EmptyFile {
                path: path.to_path_buf(),
            });
        }

        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("npz") => Format::Npz,
            Some("npy") => Format::Npy,
            Some("safetensors") => Format::Safetensors,
            _ => sniff(&map).ok_or_else(|| DumpError::UnknownFormat {
                path: path.to_path_buf(),
            })?,
        };

        let (entries, meta) = match format {
            Format::Npz => open_npz(path, &map)?,
            Format::Npy => {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let at = Location::file(path);
                // A single .npy has nothing else in it: a header problem is the file's problem.
                let info = entry::npy_info(&map, 0, &at)?;
                (
                    vec![Entry {
                        name,
                        at,
                        info: Ok(info),
                    }],
                    None,
                )
            }
            Format::Safetensors => safetensors::read_entries(path, &map)?,
        };

        // Decode steps stored stacked become one entry per step (docs/dump-format.md); a single
        // .npy is one tensor whatever its name.
        let layout = match format {
            Format::Npy => Layout::Plain(entries),
            _ => match stacked::unfold(entries, stacked::Budget::for_file(map.len() as u64)) {
                Ok(u) => Layout::Unfolded(u),
                Err(entries) => Layout::Plain(entries),
            },
        };
        Ok(Headers {
            path: path.to_path_buf(),
            format,
            map,
            meta,
            layout,
        })
    }

    /// The dump, with `listing` as its names ([`Listing::of`] its layout, or of a layout of
    /// the same names).
    fn finish(self, listing: Arc<Listing>) -> Result<Dump, DumpError> {
        let Headers {
            path,
            format,
            map,
            meta,
            layout,
        } = self;
        // The metadata order lists the items as they are (stacked layouts only).
        let mut as_listed = false;
        let (entries, members): (Vec<Stored>, Vec<stacked::Member>) = match layout {
            Layout::Plain(entries) => (
                entries
                    .into_iter()
                    .map(|Entry { at, info, .. }| Stored { at, info })
                    .collect(),
                Vec::new(),
            ),
            Layout::Unfolded(u) => {
                as_listed = meta.as_ref().is_some_and(|m| u.lists_items(&m.order));
                let (items, members) = u.into_parts();
                let entries = items
                    .into_iter()
                    .map(|Entry { at, info, .. }| Stored { at, info })
                    .collect();
                (entries, members)
            }
        };
        let (names, slots) = (&listing.names, &listing.slots);
        let index = match &listing.index {
            Ok(index) => index,
            Err(i) => {
                let i = *i;
                let name = names.name(i).map_or_else(String::new, |n| n.into_owned());
                // The entry that holds position k, and the step it holds when it is a stacked
                // member's (its own name is then not the tensor name said twice).
                let held = |k: usize| -> (Option<&str>, Option<u32>) {
                    let (at, step) = match slots.get(k) {
                        Some(&Slot::Own(j)) => (entries.get(j).map(|e| &e.at), None),
                        Some(&Slot::Step { member, step }) => {
                            (members.get(member as usize).map(|m| &m.at), Some(step))
                        }
                        None => (None, None),
                    };
                    (at.and_then(|at| at.entry.as_deref()), step)
                };
                let (entry, step) = held(i);
                // The earlier position of the same name (only on this error's path).
                let first = names.iter().take(i).position(|n| **n == *name).map(held);
                let held = match (first, step) {
                    (Some((before, before_step)), _) if before_step.is_some() || step.is_some() => {
                        let say = |e: Option<&str>, s: Option<u32>| {
                            let e = e.unwrap_or(&name);
                            match s {
                                Some(s) => format!("step {s} of entry '{e}'"),
                                None => format!("entry '{e}'"),
                            }
                        };
                        format!(": {} and {}", say(before, before_step), say(entry, step))
                    }
                    _ => String::new(),
                };
                return Err(DumpError::DuplicateEntry {
                    path: path.clone(),
                    entry: entry.map_or_else(|| name.clone(), str::to_string),
                    name,
                    held,
                });
            }
        };
        let mut meta = meta;
        let order_resorted = meta.as_mut().is_some_and(|m| {
            stacked::expand_order(
                m,
                &members,
                names,
                &|n| index.get(names, n).is_some(),
                as_listed,
            )
        });
        let (original, member_original, dtype_names) =
            original_dtypes(meta.as_ref(), index, names, (slots, &members));
        Ok(Dump {
            path,
            format,
            map,
            listing,
            entries,
            members,
            meta,
            original,
            member_original,
            dtype_claims: dtype_names.iter().map(|n| DType::claimed(n)).collect(),
            dtype_names,
            order_resorted,
        })
    }
}

/// What a file that is neither a regular file nor a directory is, for the error message.
fn file_kind(path: &Path, t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            // A shell's pipe reached through `/dev/stdout` or `/proc/self/fd/N`: its link
            // reads `pipe:[N]` (a bad-input hunt: `run --out /dev/stdout | cat` was said to be
            // a named pipe).
            return match anonymous_pipe(path) {
                true => "a pipe",
                false => "a named pipe (fifo)",
            };
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = t;
    "a special file"
}

/// Whether `path` leads, through its links, to an anonymous pipe (a link that reads `pipe:[N]`,
/// as `/proc/self/fd/N` of a shell's pipe does). Links followed 40 deep at most.
#[cfg(unix)]
fn anonymous_pipe(path: &Path) -> bool {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&p) else {
            return false;
        };
        if target.to_str().is_some_and(|t| t.starts_with("pipe:[")) {
            return true;
        }
        p = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    false
}

/// Guess the format from the first bytes.
fn sniff(buf: &[u8]) -> Option<Format> {
    if npz::has_zip_magic(buf) {
        Some(Format::Npz)
    } else if buf.starts_with(npy::MAGIC) {
        Some(Format::Npy)
    } else if safetensors::looks_like_safetensors(buf) {
        Some(Format::Safetensors)
    } else {
        None
    }
}

/// Per entry, its `meta.dtypes` value as an index into the distinct values (see [`Dump`]).
/// The names are looked up in parallel; the map is read once, in order. The steps of a stacked
/// member (`stacked`: per entry, the member it came from, and the members' names) take the
/// member's value.
fn original_dtypes(
    meta: Option<&Meta>,
    index: &NameIndex,
    names: &NameList,
    stacked: (&[Slot], &[stacked::Member]),
) -> (Vec<Option<u16>>, Vec<MemberDtype>, Vec<String>) {
    let mut original = vec![None; names.len()];
    let (slots, members) = stacked;
    // Without metadata dtypes every step of a member has none.
    let mut member_original = vec![MemberDtype::Same(None); members.len()];
    let mut distinct: Vec<String> = Vec::new();
    let Some(meta) = meta.filter(|m| !m.dtypes.is_empty()) else {
        return (original, member_original, distinct);
    };
    let pairs: Vec<(&String, &String)> = meta.dtypes.iter().collect();
    let found: Vec<Option<usize>> = pairs
        .par_iter()
        .with_min_len(1024)
        .map(|(name, _)| index.get(names, name))
        .collect();
    // The index of `dtype` in `distinct`, added if new; `None` past what u16 holds (those are
    // looked up in the metadata). Few distinct values (the dtypes of one run): the last one
    // found is checked first.
    let mut intern = |dtype: &String| {
        let d = match distinct.iter().rposition(|n| n == dtype) {
            Some(d) => d,
            None => {
                distinct.push(dtype.clone());
                distinct.len() - 1
            }
        };
        u16::try_from(d).ok()
    };
    for ((_, dtype), i) in pairs.iter().zip(found) {
        let Some(i) = i else { continue };
        if let (Some(d), Some(slot)) = (intern(dtype), original.get_mut(i)) {
            *slot = Some(d);
        }
        // A step listed on its own: its member's steps may differ (unless the member's own
        // entry, below, overrides them all).
        if let Some(Slot::Step { member, .. }) = slots.get(i) {
            if let Some(m) = member_original.get_mut(*member as usize) {
                *m = MemberDtype::Mixed;
            }
        }
    }
    if !members.is_empty() {
        let member_dtype: Vec<Option<u16>> = members
            .iter()
            .map(|m| intern(meta.dtypes.get(&m.name)?))
            .collect();
        for (m, d) in member_original.iter_mut().zip(&member_dtype) {
            if d.is_some() {
                *m = MemberDtype::Same(*d);
            }
        }
        original
            .par_iter_mut()
            .with_min_len(4096)
            .zip(slots)
            .for_each(|(d, slot)| {
                if let Slot::Step { member, .. } = slot {
                    if let Some(m) = member_dtype.get(*member as usize).copied().flatten() {
                        *d = Some(m);
                    }
                }
            });
    }
    (original, member_original, distinct)
}

/// The original dtype (an entry of `Dump::dtype_names`, or none) of the steps of one stacked
/// member.
#[derive(Debug, Clone, Copy)]
enum MemberDtype {
    /// Every step's.
    Same(Option<u16>),
    /// The metadata lists some steps on their own (and not the member): they may differ.
    Mixed,
}

/// Where the layout of the tensor at one position of [`Dump::names`] is kept.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// `Dump::entries[i]`.
    Own(usize),
    /// Step `step` (1-based) of `Dump::members[member]`.
    Step { member: u32, step: u32 },
}

/// A tensor's location and layout once its name has moved to [`Dump::names`].
#[derive(Debug)]
struct Stored {
    at: Location,
    info: Result<entry::EntryInfo, DumpError>,
}

/// The hash of [`NameIndex`].
const NAME_HASH: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x6475_6d70_6e61_6d65);

/// Name -> position in [`Dump::names`], without a second copy of the names.
#[derive(Debug)]
enum NameIndex {
    /// Every name hashed: built from hashes computed in parallel, in [`INDEX_SHARDS`] tables
    /// (by the hash's top bits) built in parallel.
    Names(Vec<hashbrown::HashTable<u32>>),
    /// A dump with stacked decode steps: its other names hashed, and its members by base,
    /// each with where its steps are ([`StepIndex`]).
    Steps(StepIndex),
}

/// [`NameIndex::Steps`]: the names a dump holds as they are (the prefill's, per-step ones,
/// members that stayed whole) in one table, and the stacked members by base name in another;
/// step `s` of member `m` is at `positions[offsets[m] + s - 1]`. A 256-step decode of the
/// 0.6B-shaped model hashes ~1,100 names instead of ~150,000 (~5 ms of its opening).
#[derive(Debug)]
struct StepIndex {
    own: hashbrown::HashTable<u32>,
    /// Member numbers, by the base name of their steps.
    bases: hashbrown::HashTable<u32>,
    offsets: Vec<u32>,
    positions: Vec<u32>,
}

impl StepIndex {
    /// The index of these names, where `slots` say which are steps of which member; `None`
    /// where a name repeats (or the slots do not number each member's steps 1..n once, which
    /// a dump's unfolding never gives): [`NameIndex::new`] then says which one.
    fn new(names: &NameList, slots: &[Slot]) -> Option<StepIndex> {
        let len = u32::try_from(names.len()).ok()?;
        if slots.len() != names.len() {
            return None;
        }
        // Each member's step count (its last step: checked below to be each step once).
        let mut counts: Vec<u32> = Vec::new();
        for slot in slots {
            if let Slot::Step { member, step } = *slot {
                let m = member as usize;
                if counts.len() <= m {
                    counts.resize(m + 1, 0);
                }
                counts[m] = counts[m].max(step);
            }
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u32;
        offsets.push(0);
        for &c in &counts {
            total = total.checked_add(c)?;
            offsets.push(total);
        }
        let mut positions = vec![len; total as usize];
        let mut own = hashbrown::HashTable::new();
        let hash = |n: &str| NAME_HASH.hash_one(n);
        for (k, slot) in (0..len).zip(slots) {
            match *slot {
                Slot::Step { member, step } => {
                    let at = offsets[member as usize] as usize + step.checked_sub(1)? as usize;
                    let p = positions.get_mut(at)?;
                    if *p != len {
                        return None;
                    }
                    *p = k;
                }
                Slot::Own(_) => {
                    // Not a step of a member: held as it is (borrowed).
                    let name = names.name(k as usize)?;
                    let same = |&j: &u32| names.name_is(j as usize, &name);
                    let rehash = |&j: &u32| names.name(j as usize).map_or(0, |n| hash(&n));
                    match own.entry(hash(&name), same, rehash) {
                        hashbrown::hash_table::Entry::Occupied(_) => return None,
                        hashbrown::hash_table::Entry::Vacant(v) => {
                            v.insert(k);
                        }
                    }
                }
            }
        }
        if positions.contains(&len) {
            return None;
        }
        // Each member's steps are named `base@s` (the dump names them so); two members of one
        // base would repeat names.
        let base = |m: usize| member_base(&offsets, &positions, names, m);
        let mut bases = hashbrown::HashTable::new();
        // (A member of no steps has no name.)
        for m in (0..counts.len()).filter(|&m| counts[m] > 0) {
            let b = base(m)?;
            let same = |&j: &u32| base(j as usize) == Some(b);
            let rehash = |&j: &u32| hash(base(j as usize).unwrap_or_default());
            match bases.entry(hash(b), same, rehash) {
                hashbrown::hash_table::Entry::Occupied(_) => return None,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(u32::try_from(m).ok()?);
                }
            }
        }
        let index = StepIndex {
            own,
            bases,
            offsets,
            positions,
        };
        // A name held as it is that is also a member's step (`x@3` beside `x@steps`).
        let step_too = |j: &u32| {
            names
                .step_of(*j as usize)
                .is_some_and(|(base, step)| step > 0 && index.step(names, base, step).is_some())
        };
        if index.own.iter().any(step_too) {
            return None;
        }
        Some(index)
    }

    /// The base name of member `m`'s steps.
    fn base<'n>(&self, names: &'n NameList, m: usize) -> Option<&'n str> {
        member_base(&self.offsets, &self.positions, names, m)
    }

    /// Where step `step` of the member of base `base` is.
    fn step(&self, names: &NameList, base: &str, step: usize) -> Option<usize> {
        let h = NAME_HASH.hash_one(base);
        let m = *self
            .bases
            .find(h, |&m| self.base(names, m as usize) == Some(base))? as usize;
        let (from, to) = (
            *self.offsets.get(m)? as usize,
            *self.offsets.get(m + 1)? as usize,
        );
        let at = from.checked_add(step.checked_sub(1)?)?;
        (at < to).then(|| self.positions.get(at).map(|&p| p as usize))?
    }

    fn get(&self, names: &NameList, name: &str) -> Option<usize> {
        let h = NAME_HASH.hash_one(name);
        if let Some(&j) = self.own.find(h, |&j| names.name_is(j as usize, name)) {
            return Some(j as usize);
        }
        let (base, step) = divergence_names::split_step(name);
        let k = self.step(names, base, step)?;
        // As it is written: `split_step` reads a step only so, and the dump names its steps so.
        names.name_is(k, name).then_some(k)
    }
}

/// Tables of a [`NameIndex`].
const INDEX_SHARDS: usize = 16;

/// The table of a [`NameIndex`] that holds names of hash `h`.
fn shard_of(h: u64) -> usize {
    (h >> 60) as usize % INDEX_SHARDS
}

/// [`StepIndex::base`], of its parts.
fn member_base<'n>(
    offsets: &[u32],
    positions: &[u32],
    names: &'n NameList,
    m: usize,
) -> Option<&'n str> {
    let (from, to) = (*offsets.get(m)?, *offsets.get(m + 1)?);
    let first = *positions.get(from as usize).filter(|_| from < to)?;
    Some(names.step_of(first as usize)?.0)
}

impl NameIndex {
    /// The index of `names`, `slots` saying where each is kept: by member for a dump with
    /// stacked steps ([`StepIndex`]), else every name hashed. `Err(i)`: `names[i]` repeats an
    /// earlier name (the first such `i`).
    fn of(names: &NameList, slots: &[Slot]) -> Result<NameIndex, usize> {
        let stepped = slots.iter().any(|s| matches!(s, Slot::Step { .. }));
        match stepped.then(|| StepIndex::new(names, slots)).flatten() {
            Some(index) => Ok(NameIndex::Steps(index)),
            None => NameIndex::new(names),
        }
    }

    /// Every name hashed. `Err(i)`: `names[i]` repeats an earlier name (the first such `i`).
    fn new(names: &[Name]) -> Result<NameIndex, usize> {
        let hashes: Vec<u64> = names
            .par_iter()
            .with_min_len(1024)
            .map(|n| NAME_HASH.hash_one(&**n))
            .collect();
        // A dump cannot hold 2^32 tensors (its zip or safetensors header would not): indices
        // are u32. Each chunk of names split by table, in order: each table then goes through
        // its own names, not through every hash (16 passes over the 150,000 hashes of a decode
        // dump, where the machine has fewer than 16 cores).
        if u32::try_from(names.len()).is_err() {
            return Err(names.len() - 1);
        }
        const CHUNK: usize = 8192;
        let by_chunk: Vec<Vec<Vec<u32>>> = hashes
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut out = vec![Vec::new(); INDEX_SHARDS];
                // Below u32::MAX (checked above).
                let first = (c * CHUNK) as u32;
                for (i, &h) in (first..).zip(chunk) {
                    out[shard_of(h)].push(i);
                }
                out
            })
            .collect();
        // Equal names have equal hashes, so a repeat is found in its name's table; each table
        // takes its names in order, so its first repeat is the first of its names.
        let shards: Vec<Result<hashbrown::HashTable<u32>, usize>> = (0..INDEX_SHARDS)
            .into_par_iter()
            .map(|shard| {
                let mut table = hashbrown::HashTable::with_capacity(
                    names.len() / INDEX_SHARDS + names.len() / (4 * INDEX_SHARDS) + 16,
                );
                for &k in by_chunk.iter().flat_map(|c| &c[shard]) {
                    let i = k as usize;
                    let h = hashes.get(i).copied().unwrap_or_default();
                    let same = |&j: &u32| names.get(j as usize) == names.get(i);
                    let rehash = |&j: &u32| hashes.get(j as usize).copied().unwrap_or_default();
                    match table.entry(h, same, rehash) {
                        hashbrown::hash_table::Entry::Occupied(_) => return Err(i),
                        hashbrown::hash_table::Entry::Vacant(v) => {
                            v.insert(k);
                        }
                    }
                }
                Ok(table)
            })
            .collect();
        if let Some(first) = shards.iter().filter_map(|s| s.as_ref().err()).min() {
            return Err(*first);
        }
        Ok(NameIndex::Names(shards.into_iter().flatten().collect()))
    }

    fn get(&self, names: &NameList, name: &str) -> Option<usize> {
        match self {
            NameIndex::Names(shards) => {
                let h = NAME_HASH.hash_one(name);
                shards
                    .get(shard_of(h))?
                    .find(h, |&j| names.name_is(j as usize, name))
                    .map(|&j| j as usize)
            }
            NameIndex::Steps(index) => index.get(names, name),
        }
    }
}

/// Members per rayon task when parsing the npy headers of an npz (a decode dump has tens of
/// thousands of small members).
const MEMBERS_PER_TASK: usize = 512;

fn open_npz(path: &Path, map: &[u8]) -> Result<(Vec<Entry>, Option<Meta>), DumpError> {
    let members = npz::read_members(path, map)?;
    let shared: Arc<Path> = Arc::from(path);
    // The metadata first (its JSON is parsed beside the headers), then every other member's
    // header, in parallel, in file order.
    let mut meta_member = None;
    for m in &members {
        if npz_name(m) == Some(META_ENTRY) {
            if meta_member.is_some() {
                return Err(DumpError::DuplicateEntry {
                    path: path.to_path_buf(),
                    entry: m.name.clone(),
                    name: META_ENTRY.to_string(),
                    held: String::new(),
                });
            }
            meta_member = Some(m);
        }
    }
    let (meta, entries) = rayon::join(
        || {
            meta_member
                .map(|m| {
                    let at = Location::in_file(&shared, &m.name);
                    read_meta(path, map, entry::member_info(map, m, &at), &at)
                })
                .transpose()
        },
        || {
            members
                .par_chunks(MEMBERS_PER_TASK)
                .flat_map_iter(|chunk| {
                    chunk.iter().filter_map(|m| {
                        let name = npz_name(m).filter(|&n| n != META_ENTRY)?;
                        let at = Location::in_file(&shared, &m.name);
                        let info = entry::member_info(map, m, &at);
                        Some(Entry {
                            name: name.to_string(),
                            at,
                            info,
                        })
                    })
                })
                .collect::<Vec<Entry>>()
        },
    );
    Ok((entries, meta?))
}

/// The tensor name of an npz member (`.npy` stripped); `None` for a directory entry.
fn npz_name(m: &npz::ZipMember) -> Option<&str> {
    if m.name.ends_with('/') && m.uncompressed_size == 0 {
        return None;
    }
    Some(m.name.strip_suffix(".npy").unwrap_or(&m.name))
}

fn read_meta(
    path: &Path,
    map: &[u8],
    info: Result<entry::EntryInfo, DumpError>,
    at: &Location,
) -> Result<Meta, DumpError> {
    // numpy's natural `np.array(json.dumps(meta))` is a unicode string ('<U31'): said as what
    // the metadata must be, not as a tensor dtype we do not read (a UX review).
    // (np.array(meta_dict): a pickled object)
    let found = match &info {
        Err(DumpError::UnsupportedDtype { dtype, .. }) => Some(format!("dtype '{dtype}'")),
        Err(DumpError::ObjectArray { .. }) => Some("a pickled object array".to_string()),
        _ => None,
    };
    if let Some(found) = found {
        return Err(DumpError::BadMeta {
            path: path.to_path_buf(),
            detail: format!(
                "{META_ENTRY} must be a 1-d uint8 array of utf-8 json \
                 (np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)), found {found}"
            ),
        });
    }
    let info = info?;
    if !matches!(info.dtype, DType::U8 | DType::I8) || info.shape.len() != 1 {
        return Err(DumpError::BadMeta {
            path: path.to_path_buf(),
            detail: format!(
                "{META_ENTRY} must be a 1-d uint8 array of utf-8 json, found {} with shape {:?}",
                info.dtype, info.shape
            ),
        });
    }
    if info.n_elems > MAX_META_BYTES {
        return Err(DumpError::BadMeta {
            path: path.to_path_buf(),
            detail: format!(
                "{META_ENTRY} is {} bytes, more than the {} MiB allowed for metadata",
                info.n_elems,
                MAX_META_BYTES >> 20
            ),
        });
    }
    let bytes = entry::raw_bytes(map, &info, at)?;
    Meta::from_json(&bytes).map_err(|detail| DumpError::BadMeta {
        path: path.to_path_buf(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_index_finds_every_name_and_the_first_repeat() {
        // More names than three of the chunks the tables are filled from (8192 each).
        let names: NameList = (0..20_000)
            .map(|i| Name::from(format!("model.layers.{i}.mlp@7")))
            .collect();
        let index = NameIndex::new(&names).unwrap();
        let NameIndex::Names(shards) = &index else {
            panic!("every name hashed")
        };
        assert!(shards.iter().all(|t| !t.is_empty()), "every shard used");
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.get(&names, n), Some(i));
        }
        assert_eq!(index.get(&names, "model.layers.20000.mlp@7"), None);
        assert_eq!(index.get(&names, ""), None);
        // Repeats in different shards and chunks: the first in order is reported, whatever
        // its shard and chunk.
        for (mid, late, early) in [
            (2000, 4000, 3),
            (2000, 4500, 4001),
            (9000, 17_000, 3),
            (9000, 19_000, 8500),
            (16_000, 16_500, 16_200),
        ] {
            let mut names = names.to_vec();
            names[mid] = names[mid - 1000].clone();
            names[late] = names[early].clone();
            assert_eq!(NameIndex::new(&names).unwrap_err(), mid, "{late} {early}");
            names[mid] = Name::from("unique");
            assert_eq!(NameIndex::new(&names).unwrap_err(), late);
        }
    }

    /// The index by member ([`StepIndex`]) finds what hashing every name finds, names and
    /// others, and refuses the same first repeat (by leaving it to [`NameIndex::new`]).
    #[test]
    fn the_step_index_answers_as_every_name_hashed() {
        // A dump's names in step-major order: `Own` names as they are, `(base, step, member)`
        // for a member's step.
        enum N {
            Own(&'static str),
            Step(&'static str, u32, u32),
        }
        let layout = |list: &[N]| -> (Vec<Name>, Vec<Slot>) {
            list.iter()
                .enumerate()
                .map(|(j, n)| match *n {
                    N::Own(name) => (Name::from(name), Slot::Own(j)),
                    N::Step(base, step, member) => (
                        divergence_names::step_name_shared(base, step as usize),
                        Slot::Step { member, step },
                    ),
                })
                .unzip()
        };
        use N::{Own, Step};
        let cases: Vec<(Vec<N>, bool)> = vec![
            // Members of one length.
            (
                vec![
                    Own("a"),
                    Own("b"),
                    Step("x", 1, 0),
                    Step("y", 1, 1),
                    Step("x", 2, 0),
                    Step("y", 2, 1),
                    Step("x", 3, 0),
                    Step("y", 3, 1),
                ],
                true,
            ),
            // Of other lengths, beside per-step names held as they are, a base that ends in
            // `@<digits>` and names that read as its steps' but are not.
            (
                vec![
                    Own("a"),
                    Own("z@2"),
                    Own("x@steps"),
                    Step("x", 1, 0),
                    Step("z@2", 1, 1),
                    Own("c@1"),
                    Step("x", 2, 0),
                    Step("z@2", 2, 1),
                    Own("c@2"),
                    Own("z@2@02"),
                    Step("z@2", 3, 1),
                    Step("z@2", 4, 1),
                ],
                true,
            ),
            // A name held as it is that is also a member's step.
            (
                vec![Own("a"), Own("x@2"), Step("x", 1, 0), Step("x", 2, 0)],
                false,
            ),
            // A name twice; two members of one base.
            (vec![Own("a"), Step("x", 1, 0), Own("a")], false),
            (vec![Step("x", 1, 0), Step("x", 1, 1)], false),
            // Steps not numbered 1..n once (never made by unfolding).
            (vec![Own("a"), Step("x", 2, 0)], false),
        ];
        let asked = [
            "", "a", "x", "x@0", "x@1", "x@01", "x@3", "x@4", "x@steps", "y@1@1", "z@2", "z@2@1",
            "z@2@4", "z@2@5", "z@2@02", "c@1", "c@3", "b@1",
        ];
        // The first case's names held by their parts, as a dump of a regular order holds
        // them ([`crate::stacked::Unfolded::names`]): the same answers.
        let stepped = NameList::stepped(divergence_names::SteppedNames {
            prefill: vec![Name::from("a"), Name::from("b")],
            bases: vec![Name::from("x"), Name::from("y")],
            steps: 3,
        });
        let first_slots = layout(&cases[0].0).1;
        let lists = cases.into_iter().map(|(list, by_member)| {
            let (names, slots) = layout(&list);
            (NameList::from(names), slots, by_member)
        });
        for (names, slots, by_member) in std::iter::once((stepped, first_slots, true)).chain(lists)
        {
            let of = NameIndex::of(&names, &slots);
            if names.parts().is_some() {
                if let Ok(of) = &of {
                    for n in asked {
                        of.get(&names, n);
                    }
                }
                assert!(!names.is_made(), "the index made the names");
            }
            let all = NameIndex::new(&names);
            assert_eq!(
                matches!(of, Ok(NameIndex::Steps(_))),
                by_member,
                "{names:?}"
            );
            match (of, all) {
                (Ok(of), Ok(all)) => {
                    for n in names.iter().map(|n| &**n).chain(asked) {
                        assert_eq!(of.get(&names, n), all.get(&names, n), "{n} of {names:?}");
                    }
                    for (i, n) in names.iter().enumerate() {
                        assert_eq!(of.get(&names, n), Some(i));
                    }
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{names:?}"),
                (of, all) => panic!("{names:?}: {:?} against {:?}", of.is_ok(), all.is_ok()),
            }
        }
    }
}
