//! [`MappedDump`]: a dump seen through a resolved map. Names are the map's; a renamed tensor is
//! read as it is stored (zero-copy or streamed, like any other); a computed one (split, combined,
//! re-laid out) is read whole from its sources and transformed, one tensor at a time, so memory
//! is bounded by the largest tensor and its sources, never by the dump.

use std::collections::HashMap;
use std::path::Path;

use divergence_dump::{
    Chunks, DType, Dump, DumpError, Format, Location, Meta, Tensor, TensorView, Values,
};

use divergence_names::{Name, NameList};
use divergence_values::{Elem, Gather, Piece, ValuesRef, Visit};

use crate::array::Step;
use crate::resolve::{Resolved, Virtual};

/// A dump under a map (or under none: [`MappedDump::plain`]).
pub struct MappedDump<'a> {
    dump: &'a Dump,
    resolved: Option<Resolved>,
    /// Shared with the dump when there is no map (a decode dump has tens of thousands).
    names: NameList,
    /// Shared with the dump's metadata when there is no map.
    meta_order: Option<NameList>,
}

impl<'a> MappedDump<'a> {
    /// The dump as it is.
    pub fn plain(dump: &'a Dump) -> MappedDump<'a> {
        MappedDump {
            dump,
            names: dump.names().clone(),
            meta_order: dump
                .meta()
                .filter(|m| !m.order.is_empty())
                .map(|m| m.order.clone()),
            resolved: None,
        }
    }

    /// The dump under `resolved` (made by [`crate::resolve`] from this dump's names).
    pub fn new(dump: &'a Dump, resolved: Resolved) -> MappedDump<'a> {
        let names: NameList = resolved
            .tensors
            .iter()
            .map(|v| Name::from(v.name.as_str()))
            .collect();
        // The recorded order, in the map's names: a tensor made from a source takes the
        // source's place (the parts of a split in their order); other sources of a combination
        // are dropped.
        let mut by_source: HashMap<&str, Vec<&str>> = HashMap::new();
        for v in &resolved.tensors {
            by_source
                .entry(v.sources[0].as_str())
                .or_default()
                .push(v.name.as_str());
        }
        let meta_order = dump
            .meta()
            .map(|m| &m.order)
            .filter(|o| !o.is_empty())
            .map(|order| {
                order
                    .iter()
                    .flat_map(|n| by_source.get(&**n).into_iter().flatten())
                    .map(|&s| Name::from(s))
                    .collect::<NameList>()
            });
        MappedDump {
            dump,
            names,
            meta_order,
            resolved: Some(resolved),
        }
    }

    /// The same, with `order` as its recorded execution order (names of this mapped dump;
    /// `diff --prefill-vs-decode` gives the full prefill the stepped dump's order).
    pub fn with_order(mut self, order: Vec<Name>) -> MappedDump<'a> {
        self.meta_order = Some(order.into());
        self
    }

    /// The underlying dump.
    pub fn dump(&self) -> &'a Dump {
        self.dump
    }

    /// The resolved map, when there is one.
    pub fn resolved(&self) -> Option<&Resolved> {
        self.resolved.as_ref()
    }

    /// How the tensor `name` was made, when a map rule made it.
    pub fn mapping(&self, name: &str) -> Option<&Virtual> {
        self.resolved
            .as_ref()?
            .get(name)
            .filter(|v| v.rule.is_some())
    }

    pub fn path(&self) -> &Path {
        self.dump.path()
    }

    pub fn format(&self) -> Format {
        self.dump.format()
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.dump.meta()
    }

    /// Names in the dump's order, the map's names.
    pub fn names(&self) -> &NameList {
        &self.names
    }

    /// The recorded execution order in the map's names.
    pub fn meta_order(&self) -> Option<&NameList> {
        self.meta_order.as_ref()
    }

    fn source(&self, name: &str) -> Option<Source<'_>> {
        match &self.resolved {
            None => self.dump.position(name).map(Source::Stored),
            Some(r) => {
                let v = r.get(name)?;
                if v.is_transformed() {
                    Some(Source::Computed(v))
                } else {
                    self.dump.position(&v.sources[0]).map(Source::Stored)
                }
            }
        }
    }

    /// The tensor `name`, looked up once: [`Entry`] answers what the other methods answer by
    /// name (`diff` asks several things of every row, and a decode dump has 150,000).
    pub fn get(&self, name: &str) -> Option<Entry<'_, 'a>> {
        self.source(name).map(|source| Entry { dump: self, source })
    }

    /// The `i`-th tensor of [`MappedDump::names`], found by position (what
    /// [`MappedDump::get`] finds by name; `None` past the end).
    pub fn get_at(&self, i: usize) -> Option<Entry<'_, 'a>> {
        let source = match &self.resolved {
            None => (i < self.dump.names().len()).then_some(Source::Stored(i))?,
            Some(r) => {
                let v = r.tensors.get(i)?;
                if v.is_transformed() {
                    Source::Computed(v)
                } else {
                    Source::Stored(self.dump.position(&v.sources[0])?)
                }
            }
        };
        Some(Entry { dump: self, source })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.source(name).is_some()
    }

    /// True when the values are computed from other tensors (read whole, never streamed).
    pub fn is_computed(&self, name: &str) -> bool {
        self.get(name).is_some_and(|e| e.is_computed())
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self.source(name)? {
            Source::Stored(i) => self.dump.shape_at(i).map(<[usize]>::to_vec),
            Source::Computed(v) => Some(v.shape.clone()),
        }
    }

    pub fn dtype(&self, name: &str) -> Option<DType> {
        match self.source(name)? {
            Source::Stored(i) => self.dump.dtype_at(i),
            Source::Computed(v) => self.dump.dtype(&v.sources[0]),
        }
    }

    /// The dtype before export (the first source's, for a computed tensor).
    pub fn original_dtype(&self, name: &str) -> Option<String> {
        self.get(name)?.original_dtype()
    }

    pub fn is_zero_copy(&self, name: &str) -> bool {
        self.get(name).is_some_and(|e| e.is_zero_copy())
    }

    /// The tensor's values: [`Dump::view`] of a renamed tensor; a computed one computed whole
    /// (from its sources' stored bytes where they are in place, else read whole first).
    pub fn view(&self, name: &str) -> Result<TensorView<'a>, DumpError> {
        match self.get(name) {
            Some(e) => e.view(),
            None => self.dump.view(name),
        }
    }

    /// True when the tensor is one part of a split (one source, one narrowing step): it can be
    /// streamed ([`MappedDump::pieces`]) without computing it whole.
    pub fn is_part(&self, name: &str) -> bool {
        self.get(name).is_some_and(|e| e.is_part())
    }

    /// A split part of a source stored in place (zero-copy): read in place
    /// ([`MappedDump::pieces`]). A part of a deflated source is computed whole instead
    /// ([`MappedDump::view`]).
    fn streamable(&self, v: &Virtual) -> bool {
        part_of(v).is_some_and(|(source, ..)| self.dump.is_zero_copy(source))
    }

    /// A source stored in place (zero-copy) whose values fit f32 exactly.
    fn in_place_f32(&self, source: &str) -> bool {
        self.dump.is_zero_copy(source)
            && self.dump.dtype(source).is_some_and(|d| !d.widens_to_f64())
    }

    /// The tensor `per` elements at a time: [`Dump::chunks`] of a renamed tensor, or a split
    /// part of a source stored in place, read where it is stored (each piece a [`Piece`] of a
    /// strided [`Gather`] over the source's bytes: no copy; pieces start at multiples of
    /// `per`, as the diff's bit-identical streaming needs). A computed tensor of another kind
    /// is read whole by [`MappedDump::view`] instead.
    pub fn pieces(&self, name: &str, per: usize) -> Result<Pieces<'a>, DumpError> {
        match self.get(name) {
            Some(e) => e.pieces(per),
            None => self.dump.chunks(name, per).map(Pieces::Stored),
        }
    }

    fn compute(&self, v: &Virtual) -> Result<Tensor, DumpError> {
        let unsupported = |detail: String| DumpError::UnsupportedEntry {
            at: Location {
                path: std::sync::Arc::from(self.dump.path()),
                entry: None,
            },
            detail,
        };
        // A tensor the map could not make: reading it says why (the message names the tensor).
        if let Some(problem) = &v.problem {
            return Err(unsupported(problem.clone()));
        }
        // Its steps against its sources' shapes as they are: a virtual tensor made outside a
        // map's resolution is checked here too (a held-out check: `--prefill-vs-decode`'s
        // slice of a step past the full prefill's positions, a narrow past its source's end,
        // panicked where its values were gathered).
        self.shape_of(v)
            .map_err(|e| unsupported(format!("{}: {e}", v.name)))?;
        // One part of a split, read straight from the stored bytes: only that part is copied
        // (the parts of a fused qkv_proj are three rows, each reading a third).
        if let Some((source, axis, start, len)) = part_of(v) {
            let dtype = self.dump.dtype(source);
            if dtype.is_some_and(|d| !d.widens_to_f64()) {
                let view = self.dump.view(source)?;
                let values = narrow_f32(view.values(), &view.shape, axis, start, len);
                if let (Some(values), Some(dtype)) = (values, dtype) {
                    return Ok(Tensor {
                        shape: v.shape.clone(),
                        dtype,
                        values: Values::F32(values),
                    });
                }
            }
        }
        if let Some(t) = self.compute_in_place(v)? {
            return Ok(t);
        }
        self.compute_decoded(v)
    }

    /// The shape of `v` from its sources' shapes, combined and put through its steps, or why
    /// they do not give one (a source missing, a narrow past an axis' end, ...).
    fn shape_of(&self, v: &Virtual) -> Result<Vec<usize>, String> {
        let shapes = v
            .sources
            .iter()
            .map(|s| {
                self.dump
                    .shape(s)
                    .map(<[usize]>::to_vec)
                    .ok_or_else(|| format!("no source {s}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut shape = match (v.combine, shapes.as_slice()) {
            (Some(c), _) => c.shape(&shapes)?,
            (None, [one]) => one.clone(),
            (None, _) => {
                return Err(format!(
                    "{} sources and no way to combine them",
                    shapes.len()
                ))
            }
        };
        for step in &v.steps {
            shape = step.shape(&shape)?;
        }
        Ok(shape)
    }

    /// [`MappedDump::compute`] from every source read (decoded) whole.
    fn compute_decoded(&self, v: &Virtual) -> Result<Tensor, DumpError> {
        let mut parts = Vec::with_capacity(v.sources.len());
        for s in &v.sources {
            parts.push(self.dump.read(s)?);
        }
        let dtype = parts[0].dtype;
        // A half-precision sum is rounded back, as the engine's own add would be.
        let half = self
            .dump
            .original_dtype(&v.sources[0])
            .and_then(|d| Half::of(&d));
        let wide = parts.iter().any(|t| matches!(t.values, Values::F64(_)));
        let values = if wide {
            let parts: Vec<(Vec<usize>, Vec<f64>)> = parts
                .into_iter()
                .map(|t| (t.shape, to_f64(t.values)))
                .collect();
            Values::F64(apply(v, parts, |x| x))
        } else {
            let parts: Vec<(Vec<usize>, Vec<f32>)> = parts
                .into_iter()
                .map(|t| match t.values {
                    Values::F32(d) => (t.shape, d),
                    Values::F64(d) => (t.shape, d.into_iter().map(|x| x as f32).collect()),
                })
                .collect();
            let round = |x: f32| half.map_or(x, |h| h.round(x));
            Values::F32(apply(v, parts, round))
        };
        Ok(Tensor {
            shape: v.shape.clone(),
            dtype,
            values,
        })
    }
}

impl MappedDump<'_> {
    /// [`MappedDump::compute`] straight from the stored bytes, when every source is stored in
    /// place (zero-copy) with values that fit f32 exactly: a sum adds the sources' bytes into
    /// one buffer (rounded once at the end, as [`apply`] rounds), a single source's first layout
    /// step gathers from its bytes; the remaining steps run on the result. The same values as
    /// reading every source whole first, without the copies (bit for bit, but for a signalling
    /// NaN of a half-precision source, which widening makes quiet). `None`: not such a tensor,
    /// or a first step that moves the last axis (runs of one element: decoding first is faster).
    fn compute_in_place(&self, v: &Virtual) -> Result<Option<Tensor>, DumpError> {
        let single = v.combine.is_none() && v.sources.len() == 1;
        let sum = v.combine == Some(crate::array::Combine::Sum) && v.sources.len() > 1;
        if !(single || sum) || !v.sources.iter().all(|s| self.in_place_f32(s)) {
            return Ok(None);
        }
        let mut views = Vec::with_capacity(v.sources.len());
        for s in &v.sources {
            views.push(self.dump.view(s)?);
        }
        let Some(dtype) = self.dump.dtype(&v.sources[0]) else {
            return Ok(None);
        };
        let first = &views[0];
        let n = first.values().len();
        if views
            .iter()
            .any(|w| w.values().len() != n || w.shape != first.shape)
        {
            return Ok(None);
        }
        let mut shape = first.shape.clone();
        let mut steps = v.steps.iter();
        let mut data = Vec::with_capacity(n);
        if sum {
            let half = self
                .dump
                .original_dtype(&v.sources[0])
                .and_then(|d| Half::of(&d));
            extend_f32(&mut data, first.values(), 0, n);
            let last = views.len() - 1;
            for (k, w) in views.iter().enumerate().skip(1) {
                add_f32(&mut data, w.values(), if k == last { half } else { None });
            }
        } else {
            // The first step that moves values reads the stored bytes; reshapes before it
            // only rename the shape.
            let mut gathered = false;
            for step in steps.by_ref() {
                let next = step.shape(&shape).unwrap_or_default();
                if let Some(g) = step.gather(&shape) {
                    // Runs of one element (the last axis moved): decoding first is faster.
                    if g.strides.last().is_some_and(|&s| s != 1) {
                        return Ok(None);
                    }
                    g.runs(|base, inner, _| extend_f32(&mut data, first.values(), base, inner));
                    gathered = true;
                    shape = next;
                    break;
                }
                shape = next;
            }
            if !gathered {
                extend_f32(&mut data, first.values(), 0, n);
            }
        }
        for step in steps {
            let next = step.shape(&shape).unwrap_or_default();
            data = step.apply(&shape, data);
            shape = next;
        }
        Ok(Some(Tensor {
            shape: v.shape.clone(),
            dtype,
            values: Values::F32(data),
        }))
    }
}

/// `acc[i] += values[i]` (widened to f32, exact for f32 / bf16 / f16), rounded to `half` when
/// given: the f32 sum [`apply`] computes, without decoding `values` first.
fn add_f32(acc: &mut [f32], values: ValuesRef<'_>, half: Option<Half>) {
    struct Add<'o>(&'o mut [f32], Option<Half>);
    impl Visit for Add<'_> {
        type Out = ();
        fn visit<E: Elem>(self, raw: &[E::Raw]) {
            let it = self.0.iter_mut().zip(raw);
            match self.1 {
                None => it.for_each(|(a, &x)| *a += E::wide(x) as f32),
                Some(h) => it.for_each(|(a, &x)| *a = h.round(*a + E::wide(x) as f32)),
            }
        }
    }
    values.visit(Add(acc, half));
}

#[derive(Clone, Copy)]
enum Source<'r> {
    /// Read as stored: the tensor at this position of the dump ([`Dump::position`]).
    Stored(usize),
    /// Computed from sources.
    Computed(&'r Virtual),
}

/// One tensor of a [`MappedDump`], looked up once ([`MappedDump::get`]).
#[derive(Clone, Copy)]
pub struct Entry<'m, 'a> {
    dump: &'m MappedDump<'a>,
    source: Source<'m>,
}

impl<'m, 'a> Entry<'m, 'a> {
    /// True when the values are computed from other tensors (read whole, never streamed).
    pub fn is_computed(&self) -> bool {
        matches!(self.source, Source::Computed(_))
    }

    /// True when the tensor is one part of a split of a source stored in place: read in
    /// place, piece by piece ([`Entry::pieces`]).
    pub fn is_part(&self) -> bool {
        matches!(self.source, Source::Computed(v) if self.dump.streamable(v))
    }

    /// Where a stored tensor is a decode step of a stacked member
    /// ([`Dump::step_slot_at`]: the member of [`MappedDump::dump`] and the step); `None` for a
    /// computed tensor or one stored as itself.
    pub fn step_slot(&self) -> Option<(usize, usize)> {
        match self.source {
            Source::Stored(i) => self.dump.dump.step_slot_at(i),
            Source::Computed(_) => None,
        }
    }

    /// Why the map made nothing for this tensor ([`crate::Virtual::problem`]: a preset's rule
    /// that does not fit the dump's tensor); `None` for every other tensor.
    pub fn problem(&self) -> Option<&'m str> {
        match self.source {
            Source::Computed(v) => v.problem.as_deref(),
            Source::Stored(_) => None,
        }
    }

    /// Its shape (a computed tensor's as the map makes it).
    pub fn shape(&self) -> Option<&'m [usize]> {
        match self.source {
            Source::Stored(i) => self.dump.dump.shape_at(i),
            Source::Computed(v) => Some(&v.shape),
        }
    }

    /// True when [`Entry::view`] borrows the stored bytes.
    pub fn is_zero_copy(&self) -> bool {
        match self.source {
            Source::Stored(i) => self.dump.dump.is_zero_copy_at(i),
            Source::Computed(_) => false,
        }
    }

    /// The dtype before export (the first source's, for a computed tensor).
    pub fn original_dtype(&self) -> Option<String> {
        self.original_dtype_str().map(str::to_string)
    }

    /// [`Entry::original_dtype`], borrowed from the dump.
    pub fn original_dtype_str(&self) -> Option<&'a str> {
        let dump: &'a Dump = self.dump.dump;
        match self.source {
            Source::Stored(i) => dump.original_dtype_str_at(i),
            Source::Computed(v) => match dump.position(&v.sources[0]) {
                Some(i) => dump.original_dtype_str_at(i),
                // A name only the metadata lists.
                None => dump.meta()?.dtypes.get(&v.sources[0]).map(String::as_str),
            },
        }
    }

    /// [`MappedDump::view`].
    pub fn view(&self) -> Result<TensorView<'a>, DumpError> {
        match self.source {
            Source::Stored(i) => self.dump.dump.view_at(i),
            Source::Computed(v) => self.dump.compute(v).map(TensorView::from),
        }
    }

    /// [`MappedDump::pieces`]: a stored tensor or a split part; any other computed tensor is
    /// read whole ([`Entry::view`]), and asking for its pieces is an error.
    pub fn pieces(&self, per: usize) -> Result<Pieces<'a>, DumpError> {
        let m = self.dump;
        match self.source {
            Source::Stored(i) => m.dump.chunks_at(i, per).map(Pieces::Stored),
            Source::Computed(v) => match part_of(v).filter(|_| m.streamable(v)) {
                Some((source, axis, start, len)) => {
                    // (a narrow past the source's end, as `compute` refuses it)
                    m.shape_of(v).map_err(|e| DumpError::UnsupportedEntry {
                        at: Location {
                            path: std::sync::Arc::from(m.dump.path()),
                            entry: None,
                        },
                        detail: format!("{}: {e}", v.name),
                    })?;
                    let view = m.dump.view(source)?;
                    let dim = view.shape.get(axis).copied().unwrap_or(0);
                    let inner: usize = view.shape[axis.min(view.shape.len())..]
                        .iter()
                        .skip(1)
                        .product();
                    let gather = Gather {
                        stride: dim * inner,
                        offset: start * inner,
                        take: len * inner,
                    };
                    Ok(Pieces::Part(Part {
                        shape: v.shape.clone(),
                        len: gather.len(view.values().len()),
                        view,
                        gather,
                        per: per.max(1),
                        done: 0,
                    }))
                }
                // Computed whole ([`Entry::view`]), never streamed: no stored tensor stands
                // for it (one of the same name would be the untransformed values).
                None => Err(DumpError::NoSuchTensor {
                    path: m.dump.path().to_path_buf(),
                    name: v.name.clone(),
                }),
            },
        }
    }
}

fn to_f64(v: Values) -> Vec<f64> {
    match v {
        Values::F32(d) => d.into_iter().map(f64::from).collect(),
        Values::F64(d) => d,
    }
}

/// Combine (then round a sum with `round`) and run the steps.
fn apply<T: Copy + std::ops::Add<Output = T>>(
    v: &Virtual,
    parts: Vec<(Vec<usize>, Vec<T>)>,
    round: impl Fn(T) -> T,
) -> Vec<T> {
    let (mut shape, mut data) = match v.combine {
        Some(c) => {
            let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.0.clone()).collect();
            let shape = c.shape(&shapes).unwrap_or_default();
            let mut data = c.apply(parts);
            if c == crate::array::Combine::Sum {
                data.iter_mut().for_each(|x| *x = round(*x));
            }
            (shape, data)
        }
        None => parts.into_iter().next().unwrap_or_default(),
    };
    for step in &v.steps {
        let next = step.shape(&shape).unwrap_or_default();
        data = step.apply(&shape, data);
        shape = next;
    }
    data
}

/// Round-to-nearest-even to a half-precision format, back in f32.
#[derive(Clone, Copy)]
enum Half {
    Bf16,
    F16,
}

impl Half {
    fn of(dtype: &str) -> Option<Half> {
        match dtype.strip_prefix("torch.").unwrap_or(dtype) {
            "bfloat16" => Some(Half::Bf16),
            "float16" => Some(Half::F16),
            _ => None,
        }
    }

    fn round(self, x: f32) -> f32 {
        match self {
            Half::Bf16 => half::bf16::from_f32(x).to_f32(),
            Half::F16 => half::f16::from_f32(x).to_f32(),
        }
    }
}

/// Entries `start..start + len` of `axis` of a C-order tensor of `shape`, widened to f32 (exact
/// for f32 / bf16 / f16 storage); `None` when the shape does not fit the values.
fn narrow_f32(
    values: ValuesRef<'_>,
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> Option<Vec<f32>> {
    let dim = *shape.get(axis)?;
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    if start + len > dim || outer * dim * inner != values.len() {
        return None;
    }
    let (block, from, take) = (dim * inner, start * inner, len * inner);
    let mut out = Vec::with_capacity(outer * take);
    for o in 0..outer {
        extend_f32(&mut out, values, o * block + from, take);
    }
    Some(out)
}

/// A split part's source and narrowing: `(source, axis, start, len)`.
fn part_of(v: &Virtual) -> Option<(&str, usize, usize, usize)> {
    match (v.sources.as_slice(), v.combine, v.steps.as_slice()) {
        ([source], None, [Step::Narrow { axis, start, len }]) => {
            Some((source.as_str(), *axis, *start, *len))
        }
        _ => None,
    }
}

/// A tensor handed out piece by piece ([`MappedDump::pieces`]).
pub enum Pieces<'a> {
    /// Stored under another name: the dump's own [`Chunks`].
    Stored(Chunks<'a>),
    /// One part of a split, read in place from its source.
    Part(Part<'a>),
}

impl Pieces<'_> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Pieces::Stored(c) => c.shape(),
            Pieces::Part(p) => &p.shape,
        }
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        match self {
            Pieces::Stored(c) => c.len(),
            Pieces::Part(p) => p.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the pieces are a split part's, read in place.
    pub fn is_part(&self) -> bool {
        matches!(self, Pieces::Part(_))
    }

    /// The next piece, `None` at the end (see [`Chunks::next_piece`]).
    pub fn next_piece(&mut self) -> Result<Option<Piece<'_>>, DumpError> {
        match self {
            Pieces::Stored(c) => Ok(c.next_piece()?.map(Piece::from)),
            Pieces::Part(p) => Ok(p.next_piece()),
        }
    }
}

/// A split part read piece by piece from its source's view, in place: element `k` of the part
/// is element `k` of the [`Gather`] over the source.
pub struct Part<'a> {
    shape: Vec<usize>,
    view: TensorView<'a>,
    gather: Gather,
    /// Elements in the part.
    len: usize,
    per: usize,
    done: usize,
}

impl Part<'_> {
    fn next_piece(&mut self) -> Option<Piece<'_>> {
        let n = self.per.min(self.len - self.done);
        if n == 0 {
            return None;
        }
        let start = self.done;
        self.done += n;
        // Always in range: `len` is the gather's length over these values.
        Piece::gathered(self.view.values(), self.gather, start, n)
    }
}

/// Appends elements `at..at + n` of `values`, widened to f32 (exact for f32 / bf16 / f16).
fn extend_f32(out: &mut Vec<f32>, values: ValuesRef<'_>, at: usize, n: usize) {
    if let ValuesRef::F32Le(raw) = values {
        out.extend(raw[at..at + n].iter().map(|b| f32::from_le_bytes(*b)));
        return;
    }
    struct Ext<'o>(&'o mut Vec<f32>, usize, usize);
    impl Visit for Ext<'_> {
        type Out = ();
        fn visit<E: Elem>(self, raw: &[E::Raw]) {
            self.0.extend(
                raw[self.1..self.1 + self.2]
                    .iter()
                    .map(|&x| E::wide(x) as f32),
            );
        }
    }
    values.visit(Ext(out, at, n));
}

#[cfg(test)]
mod tests {
    use divergence_dump::{DumpWriter, TensorData};

    use super::*;
    use crate::{resolve, Map, Sizes};

    /// `dump` under `map` (its names and shapes resolved as `diff` resolves them).
    fn under<'a>(dump: &'a Dump, map: &Map) -> MappedDump<'a> {
        let tensors: Vec<(String, Option<Vec<usize>>)> = dump
            .names()
            .iter()
            .map(|n| (n.to_string(), dump.shape(n).map(<[usize]>::to_vec)))
            .collect();
        MappedDump::new(
            dump,
            resolve(map, &tensors, &Sizes::default(), "d.npz").unwrap(),
        )
    }

    /// Every kind of computed tensor, read in place ([`MappedDump::compute_in_place`]) and
    /// decoded first ([`MappedDump::compute_decoded`]): the same bits.
    #[test]
    fn in_place_computation_is_the_decoded_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let mut w = DumpWriter::create(&path).unwrap();
        let vals = |seed: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / 7e8 - 3.0)
                .collect()
        };
        let mut meta = Meta::default();
        for (name, shape, seed) in [
            ("s.0", vec![6, 10], 1),
            ("s.1", vec![6, 10], 2),
            ("s.2", vec![6, 10], 3),
            ("h.0", vec![6, 10], 4),
            ("h.1", vec![6, 10], 5),
            ("rope", vec![6, 4, 5], 7),
            ("flat", vec![6, 20], 8),
            ("last", vec![6, 20], 9),
        ] {
            let n = shape.iter().product();
            w.add(name, &shape, TensorData::F32(&vals(seed, n)))
                .unwrap();
            if name.starts_with('h') {
                meta.dtypes.insert(name.to_string(), "bfloat16".to_string());
            }
        }
        w.finish(meta).unwrap();
        let dump = Dump::open(&path).unwrap();
        let map = Map::parse(
            r#"
[[rule]]
from = ["s.0", "s.1", "s.2"]
to = "sum3"
combine = "sum"
[[rule]]
from = ["h.0", "h.1"]
to = "sum_bf16"
combine = "sum"
[[rule]]
from = "rope"
to = "rope_heads_first"
transform = [{ permute = [1, 0, 2] }]
[[rule]]
from = "flat"
to = "flat_t"
transform = [{ reshape = [6, 4, 5] }, { permute = [1, 0, 2] }, { reshape = [4, 30] }, { transpose = [0, 1] }]
[[rule]]
from = "last"
to = "last_moved"
transform = [{ permute = [1, 0] }]
"#,
            "t.toml",
        )
        .unwrap();
        let mapped = under(&dump, &map);
        for name in ["sum3", "sum_bf16", "rope_heads_first", "flat_t"] {
            let v = mapped.mapping(name).unwrap();
            let fast = mapped.compute_in_place(v).unwrap().expect(name);
            let slow = mapped.compute_decoded(v).unwrap();
            assert_eq!(fast.shape, slow.shape, "{name}");
            let bits = |t: &Tensor| match &t.values {
                Values::F32(d) => d.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                Values::F64(_) => panic!("{name}: f64"),
            };
            assert_eq!(bits(&fast), bits(&slow), "{name}");
        }
        // A first step that moves the last axis is left to the decoded path.
        let v = mapped.mapping("last_moved").unwrap();
        assert!(mapped.compute_in_place(v).unwrap().is_none());
        let Values::F32(d) = mapped.compute(v).unwrap().values else {
            panic!()
        };
        assert_eq!(d.len(), 120);
        // The bf16 sums were rounded, the f32 one was not.
        let v = mapped.mapping("sum_bf16").unwrap();
        let Values::F32(d) = mapped.compute_in_place(v).unwrap().unwrap().values else {
            panic!()
        };
        assert!(d.iter().all(|x| x.to_bits() & 0xffff == 0));
    }

    /// A tensor made by code (not resolved from a map) whose narrow runs past its source's
    /// end is an error to read, whole or piece by piece, never a panic (a held-out check:
    /// `--prefill-vs-decode`'s slice of a step past the full prefill's positions).
    #[test]
    fn a_narrow_past_its_sources_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let mut w = DumpWriter::create(&path).unwrap();
        w.add("x", &[1, 4, 6], TensorData::F32(&[1.0; 24])).unwrap();
        w.finish(Meta::default()).unwrap();
        let dump = Dump::open(&path).unwrap();
        let virt = |name: &str, start: usize, more: Vec<Step>| Virtual {
            name: name.into(),
            sources: vec!["x".into()],
            shape: vec![1, 1, 6],
            combine: None,
            steps: [
                vec![Step::Narrow {
                    axis: 1,
                    start,
                    len: 1,
                }],
                more,
            ]
            .concat(),
            rule: None,
            how: None,
            problem: None,
        };
        let relaid = || {
            vec![
                Step::Reshape(vec![1, 1, 2, 3]),
                Step::Permute(vec![0, 2, 1, 3]),
            ]
        };
        let mapped = MappedDump::new(
            &dump,
            Resolved::from_tensors(
                vec![
                    virt("in", 3, vec![]),
                    virt("past", 4, vec![]),
                    virt("past_relaid", 5, relaid()),
                    virt("in_relaid", 2, relaid()),
                ],
                "test",
            )
            .unwrap(),
        );
        for name in ["in", "in_relaid"] {
            assert!(mapped.view(name).is_ok(), "{name}");
        }
        assert!(mapped.pieces("in", 4).is_ok());
        for name in ["past", "past_relaid"] {
            let e = mapped.view(name).expect_err(name).to_string();
            assert!(
                e.contains(&format!("{name}: entries")) && e.contains("do not exist (size 4)"),
                "{e}"
            );
        }
        let e = mapped.pieces("past", 4).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("past: entries")),
            "{e:?}"
        );
    }

    /// [`MappedDump::get_at`] finds the tensor [`MappedDump::get`] finds by name, for every
    /// position of [`MappedDump::names`], with a map (renamed, computed and untouched tensors)
    /// and without one; nothing past the end.
    #[test]
    fn by_position_is_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let mut w = DumpWriter::create(&path).unwrap();
        for name in ["a.0", "a.1", "b", "c", "d@1"] {
            w.add(name, &[2, 3], TensorData::F32(&[1.0; 6])).unwrap();
        }
        w.finish(Meta::default()).unwrap();
        let dump = Dump::open(&path).unwrap();
        let same = |m: &MappedDump<'_>| {
            for (i, name) in m.names().iter().enumerate() {
                let (at, by) = (m.get_at(i).unwrap(), m.get(name).unwrap());
                match (at.source, by.source) {
                    (Source::Stored(x), Source::Stored(y)) => assert_eq!(x, y, "{name}"),
                    (Source::Computed(x), Source::Computed(y)) => {
                        assert!(std::ptr::eq(x, y), "{name}")
                    }
                    _ => panic!("{name}: stored by one, computed by the other"),
                }
            }
            assert!(m.get_at(m.names().len()).is_none());
        };
        let plain = MappedDump::plain(&dump);
        assert_eq!(plain.names().len(), 5);
        same(&plain);
        let map = Map::parse(
            r#"
[[rule]]
from = ["a.0", "a.1"]
to = "a"
combine = "sum"
[[rule]]
from = "c"
to = "renamed"
"#,
            "t.toml",
        )
        .unwrap();
        let mapped = under(&dump, &map);
        assert!(mapped.names().iter().any(|n| &**n == "renamed"));
        assert!(mapped.get("a").is_some_and(|e| e.is_computed()));
        same(&mapped);
    }
}
