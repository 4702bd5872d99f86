//! Comparing the rows of a plan, in parallel, into the report's rows ([`Rows`]).
//!
//! Each probe is compared on its own ([`compare_probe`]; [`stream_probe`] for what is not stored
//! in place), except the decode steps of a probe that both dumps keep in a stacked member
//! (docs/dump-format.md, "Decode steps"), or, under no name map, each in an array of its own
//! (the per-step layout): those are compared in one call per run of steps
//! ([`divergence_diff::compare_step_pieces_into`], one pass over both sides), which keeps them
//! compact (a `StepRun`: what the steps share; each step's sums written to its row's cell,
//! [`RowsBuilder::sink`], once its run is compared), the other rows placed by index
//! ([`RowsBuilder`]);
//! the steps of a run a name map made are rows ([`divergence_diff::compare_step_run`]), each
//! saying how. Without such runs, every row is written straight to its place in the plan's
//! order ([`Slots`]). The rows are the same, bit for bit, either way (tested);
//! the one call spends once what each step's own call spent (the lookups, the dispatch, the
//! row's shapes and tolerance), reads both members front to back instead of a member away
//! from the last row, and makes no row until one is read whole (docs/performance.md, "Decode
//! steps").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use divergence_diff::{
    DiffConfig, Head, Needs, OpResult, OrderPlan, ProbeFold, Rows, RowsBuilder, Side, Status,
    StepNames, StepParts, StepSide, StepSums, StepValues, Which,
};
use divergence_dump::{Dump, DumpError, TensorView};
use divergence_map::{Entry, MappedDump, Pieces};
use rayon::prelude::*;

/// Most jobs one rayon task runs in a row: rows differ in cost by five orders of magnitude
/// (a prefill's ~1 MB against a decode step's ~4 KB), and a thread must never hold a long run
/// of the large ones while the others wait (rayon splits by count; 64 steps on 16 cores:
/// compare 43-49 ms without a cap, 22-24 with one; docs/performance.md).
const JOBS_PER_TASK: usize = 8;

/// Most compact steps of a run a rayon task keeps before writing them to their cells (~100 KB;
/// [`compare_all`]): a decode run's steps all at once, a run of thousands in parts (in
/// tests, the tests' runs of 6 steps in parts too).
const STEPS_HELD: usize = if cfg!(test) { 4 } else { 1024 };

/// Compares every row of `plan` (in parallel) and returns the rows in the plan's order.
pub(crate) fn compare_all(
    plan: &OrderPlan,
    ours: &MappedDump<'_>,
    reference: &MappedDump<'_>,
    truth: Option<&MappedDump<'_>>,
    cfg: &DiffConfig,
) -> Rows {
    let n = plan.order.len();
    let entries = |i: usize| entries_at(plan, ours, reference, i);
    let one = |i: usize| compare_row(plan, ours, reference, truth, cfg, i);
    let jobs = if truth.is_some() {
        // Each row reads the truth's tensor too: one by one.
        (0..n).map(Job::Row).collect()
    } else {
        // Row `i` is position `i` of both dumps, which share their names: the dumps' own
        // members make the runs.
        let unmapped = ours.resolved().is_none() && reference.resolved().is_none();
        let by_member = plan.aligned && unmapped && ours.dump().shares_names(reference.dump());
        // Steps stored apart make runs under the dumps' own names only.
        let apart = unmapped.then_some(plan);
        jobs(
            n,
            &entries,
            (ours.dump(), reference.dump()),
            cfg,
            by_member,
            apart,
        )
    };
    if !jobs.iter().any(|job| matches!(job, Job::Steps(_))) {
        // Every row on its own: written in place, by index.
        let mut ops: Vec<OpResult> = Vec::with_capacity(n);
        huge_pages(&ops);
        let slots = Slots::new(&mut ops, n);
        jobs.par_iter()
            .with_max_len(JOBS_PER_TASK)
            .for_each(|job| match job {
                Job::Row(i) => slots.put(*i, one(*i)),
                Job::Steps(run) => run.rows.iter().for_each(|&i| slots.put(i, one(i))),
            });
        // Every job has written its rows (`jobs` names every index once; `finish` checks).
        slots.finish();
        return Rows::from(ops);
    }
    // Runs of decode steps, kept compact where their rows need no more than their sums
    // ([`Rows`]): each compact step written to its row's cell after its run is compared (at
    // most `STEPS_HELD` at a time), the other rows placed by index once every job is done.
    let mut rows = RowsBuilder::new(n);
    let how = |i: usize| {
        ours.mapping(plan.ours_name(&plan.order[i]))
            .and_then(|v| v.how.clone())
    };
    // A run is opened for each run of steps that no name map made (whose rows need not say
    // how): its compact steps go to the sink. (Each row's map looked up in parallel; none
    // without a map, which makes nothing.)
    let mapped = ours.resolved().is_some();
    let unmapped: Vec<bool> = jobs
        .par_iter()
        .map(|job| match job {
            Job::Steps(run) => !mapped || run.rows.iter().all(|&i| how(i).is_none()),
            Job::Row(_) => false,
        })
        .collect();
    let numbers: Vec<Option<u32>> = unmapped
        .iter()
        .map(|&unmapped| unmapped.then(|| rows.open_run()))
        .collect();
    // The sink borrows the builder while the jobs run.
    let done: Vec<Done> = {
        let sink = rows.sink();
        jobs.par_iter()
            .zip(&numbers)
            .with_max_len(JOBS_PER_TASK)
            .map_init(Vec::new, |compact, (job, number)| match (job, *number) {
                (Job::Row(i), _) => Done::Row(*i, one(*i)),
                (Job::Steps(run), Some(r)) => {
                    // A run's compact steps are written to their cells once it is compared,
                    // one after the other, not one between each two steps' sums: a step's
                    // cell is a step's probes away from the last (~57 KB in a decode
                    // report), and writing them after the run cut the 256-step pair's compare
                    // phase by 6-9% of its CPU in four rounds (docs/performance.md). At most
                    // `STEPS_HELD` at a time: a run of tiny probes may hold 2^18 steps, whose
                    // cells the builder already holds. (The buffer is the rayon task's, reused
                    // by its jobs.)
                    compact.clear();
                    compact.reserve(run.rows.len().min(STEPS_HELD));
                    let put = |compact: &mut Vec<(usize, StepSums)>| {
                        for &(k, sums) in compact.iter() {
                            sink.put_step(run.rows[k], r, k, sums);
                        }
                        compact.clear();
                    };
                    let mut emit = |k: usize, sums: StepSums| {
                        compact.push((k, sums));
                        if compact.len() == STEPS_HELD {
                            put(compact);
                        }
                    };
                    let steps = |names: StepNames<'_>,
                                 ours: StepSide<'_, '_>,
                                 reference: StepSide<'_, '_>| {
                        divergence_diff::compare_step_pieces_into(
                            names, ours, reference, cfg, &mut emit,
                        )
                    };
                    let done = match compare_run(run, plan, ours, reference, steps) {
                        Some(steps) => Done::Run(r, &run.rows, steps),
                        None => {
                            // Given up before any step was compared: no step is held (each
                            // row is written once, here).
                            debug_assert!(compact.is_empty());
                            Done::Rows(run.rows.iter().map(|&i| (i, one(i))).collect())
                        }
                    };
                    put(compact);
                    done
                }
                (Job::Steps(run), None) => {
                    // A name map made our steps: each row says how.
                    // (Only a stacked member's steps: runs of steps stored apart are made
                    // without a map.)
                    let steps = |names: StepNames<'_>,
                                 ours: StepSide<'_, '_>,
                                 reference: StepSide<'_, '_>| {
                        let (ours, reference) = (joined(ours)?, joined(reference)?);
                        Some(divergence_diff::compare_step_run(
                            names, ours, reference, cfg,
                        ))
                    };
                    match compare_run(run, plan, ours, reference, steps).flatten() {
                        Some(steps) => Done::Rows(
                            steps
                                .into_rows()
                                .into_iter()
                                .map(|(k, mut row)| {
                                    let i = run.rows[k];
                                    row.mapped = how(i);
                                    (i, row)
                                })
                                .collect(),
                        ),
                        None => Done::Rows(run.rows.iter().map(|&i| (i, one(i))).collect()),
                    }
                }
            })
            .collect()
    };
    for d in done {
        match d {
            Done::Row(i, row) => rows.put(i, row),
            Done::Run(r, at, steps) => rows.close_run(r, at, steps),
            Done::Rows(list) => list.into_iter().for_each(|(i, row)| rows.put(i, row)),
        }
    }
    // Every job has written its rows (`jobs` names every index once; `finish` checks).
    rows.finish()
}

/// What one job made: a row, an open run of steps (its number; rows at these indices), or rows
/// by index.
enum Done<'j> {
    Row(usize, OpResult),
    Run(u32, &'j [usize], StepParts),
    Rows(Vec<(usize, OpResult)>),
}

/// Row `i`'s tensors in ours and in the reference (`None`: not in that dump).
fn entries_at<'m, 'a>(
    plan: &OrderPlan,
    ours: &'m MappedDump<'a>,
    reference: &'m MappedDump<'a>,
    i: usize,
) -> (Option<Entry<'m, 'a>>, Option<Entry<'m, 'a>>) {
    // Found by position when the plan allows it: no hashing of 150,000 names per side.
    if plan.aligned {
        (ours.get_at(i), reference.get_at(i))
    } else {
        match plan.order.name(i) {
            Some(name) => (ours.get(plan.ours_name(&name)), reference.get(&name)),
            None => (None, None),
        }
    }
}

/// Row `i` of the plan compared on its own.
fn compare_row(
    plan: &OrderPlan,
    ours: &MappedDump<'_>,
    reference: &MappedDump<'_>,
    truth: Option<&MappedDump<'_>>,
    cfg: &DiffConfig,
    i: usize,
) -> OpResult {
    let name = plan.order.name(i).unwrap_or_default();
    let (oe, re) = entries_at(plan, ours, reference, i);
    let mut row = compare_probe(&name, oe, re, truth, cfg);
    row.mapped = ours
        .mapping(plan.ours_name(&name))
        .and_then(|v| v.how.clone());
    row
}

/// What one rayon task compares: one row, or a run of a probe's decode steps.
#[derive(Debug, PartialEq)]
enum Job {
    /// The row at this index of the plan.
    Row(usize),
    /// Consecutive decode steps of one probe ([`Run`]).
    Steps(Run),
}

/// Consecutive decode steps of one probe: stored in a stacked member on both sides, or apart
/// (the per-step layout, an array per step).
#[derive(Debug, PartialEq)]
struct Run {
    /// The rows (indices of the plan), in step order.
    rows: Vec<usize>,
    /// Where the steps are.
    source: RunSource,
}

/// Where a run's steps are ([`Run`]).
#[derive(Debug, PartialEq)]
enum RunSource {
    /// Steps `first..` (1-based) of a stacked member on each side (ours, the reference's).
    Members {
        members: (usize, usize),
        first: usize,
    },
    /// Each step its own tensor on each side, found by its row ([`entries_at`]).
    Apart,
}

/// The jobs of a plan of `n` rows, whose entries `entries(i)` gives: a row of each probe, but
/// runs of consecutive decode steps for the rows both of whose sides are steps of stacked
/// members (the same step on both sides), at most a chunk of elements per run (so that a member
/// of large steps, the logits, is still split across threads). In the order of their first
/// rows. Every index below `n` is in exactly one job (checked; on a failed check, one job per
/// row). Little work per row (a decode dump has 150,000 rows, and one thread goes through
/// them while the others wait): the rows are looked at in parallel, then bucketed by our
/// member (a counting sort, [`slot_rows`]), or, `by_member` (row `i` is position `i` of two
/// dumps that share their names), taken from where our dump keeps each member's steps
/// ([`member_rows`], no pass over the rows); only the jobs (a run per member, a row per
/// prefill probe) are sorted; both members of a run must borrow their steps in place (else row by row, each
/// row a task of its own), and what a run needs of each of its rows beyond that (one dtype
/// per side) is checked by the run itself ([`compare_run`]). With `apart` (the plan, under no
/// name map), the rows left are also made runs where they are a probe's consecutive steps
/// stored apart ([`apart_rows`]: one pass over their names).
fn jobs<'m, 'a: 'm>(
    n: usize,
    entries: &(dyn Fn(usize) -> (Option<Entry<'m, 'a>>, Option<Entry<'m, 'a>>) + Sync),
    (ours, reference): (&Dump, &Dump),
    cfg: &DiffConfig,
    by_member: bool,
    apart: Option<&OrderPlan>,
) -> Vec<Job> {
    // Each of our members' rows, in step order, with the reference's member and the first step.
    let candidates = match by_member.then(|| member_rows(n, ours)).flatten() {
        Some(rows) => rows,
        None => slot_rows(n, entries),
    };
    let mut in_run = vec![false; n];
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for MemberRows {
        om,
        rm,
        first,
        rows,
    } in candidates
    {
        // Members whose steps can be borrowed as they are, or row by row (a big-endian or
        // integer member is read step by step, each step's row a task of its own).
        let step_len =
            |dump: &Dump, m: usize| dump.member_steps(m, first..first + 1).map(|(_, v)| v.len());
        let (Some(o), Some(r)) = (step_len(ours, om), step_len(reference, rm)) else {
            continue;
        };
        // At most a chunk of elements per run (at least one step), by the larger side.
        let per_run = (cfg.chunk_len / o.max(r).max(1)).max(1);
        for (k, part) in rows.chunks(per_run).enumerate() {
            part.iter().for_each(|&i| in_run[i] = true);
            let run = Run {
                rows: part.to_vec(),
                source: RunSource::Members {
                    members: (om, rm),
                    first: first + k * per_run,
                },
            };
            jobs.push((part[0], Job::Steps(run)));
        }
    }
    // The per-step layout's steps (rows left by the members): a run where both sides hold
    // the same element count at the first step; what else a run needs of each step (a
    // zero-copy view on both sides, one shape and dtype per side) is checked by the run
    // ([`compare_apart`]), which else goes row by row.
    if let Some(plan) = apart {
        for rows in apart_rows(plan, &in_run) {
            let Some(&first) = rows.first() else {
                continue;
            };
            let numel = |e: Option<Entry<'m, 'a>>| {
                e.filter(|e| e.is_zero_copy())
                    .and_then(|e| e.shape())
                    .map(|s| s.iter().product::<usize>())
            };
            let (oe, re) = entries(first);
            let (Some(o), Some(r)) = (numel(oe), numel(re)) else {
                continue;
            };
            let per_run = (cfg.chunk_len / o.max(r).max(1)).max(1);
            for part in rows.chunks(per_run).filter(|p| p.len() > 1) {
                part.iter().for_each(|&i| in_run[i] = true);
                let run = Run {
                    rows: part.to_vec(),
                    source: RunSource::Apart,
                };
                jobs.push((part[0], Job::Steps(run)));
            }
        }
    }
    jobs.extend((0..n).filter(|&i| !in_run[i]).map(|i| (i, Job::Row(i))));
    jobs.par_sort_unstable_by_key(|(first, _)| *first);
    let jobs: Vec<Job> = jobs.into_iter().map(|(_, job)| job).collect();
    // Every index exactly once, or one job per row (never a row left unwritten).
    let mut seen = vec![false; n];
    let mut partition = true;
    for job in &jobs {
        let rows: &[usize] = match job {
            Job::Row(i) => std::slice::from_ref(i),
            Job::Steps(run) => &run.rows,
        };
        for &i in rows {
            partition &= i < n && !std::mem::replace(&mut seen[i], true);
        }
    }
    if partition && seen.iter().all(|&s| s) {
        jobs
    } else {
        (0..n).map(Job::Row).collect()
    }
}

/// The rows of one of our members whose steps can make runs ([`jobs`]): its reference member
/// is one, its steps consecutive from `first`, the rows in step order.
struct MemberRows {
    om: usize,
    rm: usize,
    first: usize,
    rows: Vec<usize>,
}

/// [`jobs`]' members by the rows' slots: the rows looked at in parallel, then bucketed by our
/// member (a counting sort); a member whose rows are not one reference member's consecutive
/// steps is left out (its rows are compared one by one).
fn slot_rows<'m, 'a: 'm>(
    n: usize,
    entries: &(dyn Fn(usize) -> (Option<Entry<'m, 'a>>, Option<Entry<'m, 'a>>) + Sync),
) -> Vec<MemberRows> {
    // Per row: our member, the reference's, the step (the same on both sides).
    let slots: Vec<Option<(u32, u32, u32)>> = (0..n)
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| {
            let (oe, re) = entries(i);
            let ((om, so), (rm, sr)) = (oe?.step_slot()?, re?.step_slot()?);
            if so != sr {
                return None;
            }
            let small = |x: usize| u32::try_from(x).ok();
            Some((small(om)?, small(rm)?, small(so)?))
        })
        .collect();
    // The rows of each of our members, in the plan's order (a counting sort).
    let members = slots
        .iter()
        .flatten()
        .map(|s| s.0 as usize + 1)
        .max()
        .unwrap_or(0);
    let mut start = vec![0usize; members + 1];
    for s in slots.iter().flatten() {
        start[s.0 as usize + 1] += 1;
    }
    for m in 0..members {
        start[m + 1] += start[m];
    }
    let mut at = start.clone();
    let mut bucketed = vec![0usize; start[members]];
    for (i, s) in slots.iter().enumerate() {
        if let Some((om, ..)) = s {
            bucketed[at[*om as usize]] = i;
            at[*om as usize] += 1;
        }
    }
    (0..members)
        .filter_map(|om| {
            let rows = &bucketed[start[om]..start[om + 1]];
            let &(_, rm, first) = rows.first().and_then(|&i| slots[i].as_ref())?;
            // One member on the reference's side, steps one after the other: else row by row.
            let consecutive = rows.iter().enumerate().all(|(k, &i)| {
                slots[i].is_some_and(|(_, r, s)| r == rm && s as usize == first as usize + k)
            });
            consecutive.then(|| MemberRows {
                om,
                rm: rm as usize,
                first: first as usize,
                rows: rows.to_vec(),
            })
        })
        .collect()
}

/// [`jobs`]' members where row `i` is position `i` of both dumps, which share their names
/// ([`Dump::shares_names`]): each member's steps are where the dump's index keeps them
/// ([`Dump::member_positions`]), with no pass over the rows (a decode dump has ~150,000).
/// The same members as [`slot_rows`] (tested); `None` where the dump's index does not keep
/// them.
fn member_rows(n: usize, ours: &Dump) -> Option<Vec<MemberRows>> {
    (0..ours.member_count())
        .map(|m| {
            let positions = ours.member_positions(m)?;
            let rows: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
            rows.iter().all(|&i| i < n).then_some(MemberRows {
                om: m,
                rm: m,
                first: 1,
                rows,
            })
        })
        .filter(|m| m.as_ref().is_none_or(|m| !m.rows.is_empty()))
        .collect()
}

/// The rows of [`jobs`]' runs of steps stored apart: per probe (the base of a row's name in
/// `plan`, rows not `in_run` and of a decode step), its rows in the plan's order cut where a
/// step does not follow the one before; each list of two rows or more. One pass over the
/// names left by the members' runs (the per-step layout's: every step's).
fn apart_rows(plan: &OrderPlan, in_run: &[bool]) -> Vec<Vec<usize>> {
    let mut probes: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    // (Each name split where it is held: a decode dump's step names are held by their parts,
    // and the members' runs leave only the prefill's rows.)
    for i in (0..plan.order.len()).filter(|&i| in_run.get(i).is_some_and(|&r| !r)) {
        match plan.order.step_of(i) {
            None | Some((_, 0)) => {}
            Some((base, step)) => probes.entry(base).or_default().push((step, i)),
        }
    }
    let mut runs = Vec::new();
    for steps in probes.into_values() {
        let mut run: Vec<usize> = Vec::new();
        let mut last = None;
        for (step, i) in steps {
            if last.is_none_or(|l: usize| l.checked_add(1) != Some(step)) {
                if run.len() > 1 {
                    runs.push(std::mem::take(&mut run));
                }
                run.clear();
            }
            run.push(i);
            last = Some(step);
        }
        if run.len() > 1 {
            runs.push(run);
        }
    }
    runs
}

/// Compares a run of decode steps in one call: `compare` is given the steps' names and both
/// sides ([`divergence_diff::compare_step_pieces_into`], or
/// [`divergence_diff::compare_step_run`]); `None` when the steps cannot be borrowed in place
/// (a stacked member's in one piece, [`Dump::member_steps`]; steps stored apart each as a view,
/// [`compare_apart`]): then compare them row by row, which says why a step cannot be read.
fn compare_run<'a, T>(
    run: &Run,
    plan: &OrderPlan,
    ours: &MappedDump<'a>,
    reference: &MappedDump<'a>,
    compare: impl for<'v> FnOnce(StepNames<'_>, StepSide<'v, 'v>, StepSide<'v, 'v>) -> T,
) -> Option<T> {
    let (members, first) = match run.source {
        RunSource::Members { members, first } => (members, first),
        RunSource::Apart => return compare_apart(run, plan, ours, reference, compare),
    };
    let steps = first..first + run.rows.len();
    let (om, rm) = members;
    let (Some((o_shape, o_values)), Some((r_shape, r_values))) = (
        ours.dump().member_steps(om, steps.clone()),
        reference.dump().member_steps(rm, steps),
    ) else {
        return None;
    };
    // One dtype per side for the whole run: the member's, where the dump knows it is every
    // step's; else each row's asked, or row by row.
    let members = (
        ours.dump().member_original_dtype_str(om),
        reference.dump().member_original_dtype_str(rm),
    );
    let (o_dtype, r_dtype) = match members {
        (Some(o), Some(r)) => (o, r),
        _ => {
            let dtypes = |i: usize| {
                let (oe, re) = entries_at(plan, ours, reference, i);
                let name = |e: Option<Entry<'_, 'a>>| e.and_then(|e| e.original_dtype_str());
                (name(oe), name(re))
            };
            let first = dtypes(run.rows[0]);
            if !run.rows[1..].iter().all(|&i| dtypes(i) == first) {
                return None;
            }
            first
        }
    };
    let (o_dtype, r_dtype) = (o_dtype.unwrap_or_default(), r_dtype.unwrap_or_default());
    // The steps' names: the plan's rows. Under our dump's own names (no map, rows in the
    // dumps' order), the run's rows are a stacked member's consecutive steps ([`jobs`]), which
    // the dump names `base@s` as a run writes them back: only the names of rows a step needs
    // built are asked for (a decode dump's ~150,000 names are not touched; cloning and
    // checking each took ~9 ms of its compare phase). Else each name is checked.
    let name = |k: usize| plan.order.shared(run.rows[k]).unwrap_or_default();
    let given: Vec<divergence_diff::Name>;
    let names = if plan.aligned && ours.resolved().is_none() {
        StepNames::WrittenBack {
            len: run.rows.len(),
            name: &name,
        }
    } else {
        given = (0..run.rows.len()).map(name).collect();
        StepNames::Given(&given)
    };
    let side = |shape, values, dtype| StepSide {
        shape,
        values: StepValues::Joined(values),
        dtype,
    };
    Some(compare(
        names,
        side(o_shape, o_values, o_dtype),
        side(r_shape, r_values, r_dtype),
    ))
}

/// A run's side as one [`Side`]: a stacked member's steps, one after the other.
fn joined<'a>(side: StepSide<'_, 'a>) -> Option<Side<'a>> {
    match side.values {
        StepValues::Joined(values) => Some(Side {
            shape: side.shape,
            values,
            dtype: side.dtype,
        }),
        StepValues::Apart(_) => None,
    }
}

/// [`compare_run`] of steps stored apart (the per-step layout): each row's tensors as
/// [`compare_probe`] would read them alone (both sides present, borrowed in place, no map),
/// with one shape and one dtype per side; `None` otherwise (then row by row, as before runs
/// of such steps were made). The names are the plan's, each checked by the run.
fn compare_apart<'a, T>(
    run: &Run,
    plan: &OrderPlan,
    ours: &MappedDump<'a>,
    reference: &MappedDump<'a>,
    compare: impl for<'v> FnOnce(StepNames<'_>, StepSide<'v, 'v>, StepSide<'v, 'v>) -> T,
) -> Option<T> {
    let mut views: [Vec<TensorView<'a>>; 2] = Default::default();
    let mut dtypes: [Option<&'a str>; 2] = [None; 2];
    for &i in &run.rows {
        let (oe, re) = entries_at(plan, ours, reference, i);
        for (k, e) in [oe?, re?].into_iter().enumerate() {
            if !e.is_zero_copy() || e.is_computed() || e.problem().is_some() {
                return None;
            }
            let dtype = e.original_dtype_str().unwrap_or_default();
            if *dtypes[k].get_or_insert(dtype) != dtype {
                return None;
            }
            let view = e.view().ok()?;
            if views[k].first().is_some_and(|v| v.shape != view.shape) {
                return None;
            }
            views[k].push(view);
        }
    }
    let [o, r] = &views;
    let (o_values, r_values): (Vec<_>, Vec<_>) = (
        o.iter().map(|t| t.values()).collect(),
        r.iter().map(|t| t.values()).collect(),
    );
    let names: Vec<divergence_diff::Name> =
        run.rows.iter().map(|&i| plan.order[i].clone()).collect();
    fn side<'v>(
        views: &'v [TensorView<'_>],
        values: &'v [divergence_diff::ValuesRef<'v>],
        dtype: Option<&'v str>,
    ) -> StepSide<'v, 'v> {
        StepSide {
            shape: views.first().map_or(&[][..], |t| t.shape.as_slice()),
            values: StepValues::Apart(values),
            dtype: dtype.unwrap_or_default(),
        }
    }
    Some(compare(
        StepNames::Given(&names),
        side(o, &o_values, dtypes[0]),
        side(r, &r_values, dtypes[1]),
    ))
}

/// The spare capacity of a row vector, filled in place by many threads: row `i` is written to
/// index `i` by whichever thread computes it (a decode step's rows are computed by probe but
/// stored by step), without a second copy of the rows. Each index is marked when written: a
/// second write of one index panics, and the vector gets its length only once every index is
/// written ([`Slots::finish`]), so that no bug in planning the jobs can expose a row that
/// was never written.
struct Slots<'v> {
    rows: &'v mut Vec<OpResult>,
    ptr: *mut OpResult,
    written: Vec<AtomicBool>,
}

// SAFETY: shared across threads only to `put` rows, which writes each slot through `ptr` at
// most once (marked in `written` before the write, so two threads never write one slot);
// `rows` itself is touched by `finish` alone, which takes the `Slots`; the rows are `Send`.
unsafe impl Sync for Slots<'_> {}

impl<'v> Slots<'v> {
    /// The first `n` slots of `rows`, which must be empty with room for `n`.
    fn new(rows: &'v mut Vec<OpResult>, n: usize) -> Slots<'v> {
        assert!(rows.is_empty() && rows.capacity() >= n);
        let ptr = rows.as_mut_ptr();
        Slots {
            rows,
            ptr,
            written: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Writes row `i`. Panics past the slots or on a second write of `i`.
    fn put(&self, i: usize, row: OpResult) {
        let written = self.written.get(i).expect("a row index within the plan");
        assert!(
            !written.swap(true, Ordering::Relaxed),
            "row {i} written twice"
        );
        // SAFETY: `i` is within the vector's capacity (`written` has one flag per slot, and
        // `new` checked the capacity), and no other write of slot `i` happens: its flag was
        // unset until the swap above.
        unsafe { self.ptr.add(i).write(row) };
    }

    /// Gives the vector its rows, once every slot has been written (else panics: the rows
    /// written leak, none is read uninitialized or dropped twice). Called after the writing
    /// threads have joined.
    fn finish(self) {
        assert!(
            self.written.iter().all(|w| w.load(Ordering::Relaxed)),
            "a row was never written"
        );
        // SAFETY: every one of the first `written.len()` slots holds a row (checked above).
        unsafe { self.rows.set_len(self.written.len()) };
    }
}

/// Asks the kernel to back the spare capacity of `rows` with huge pages (the aligned 2 MiB
/// regions inside it; `MADV_HUGEPAGE`, where transparent huge pages are on `madvise` or
/// `always`): the rows of a decode report take ~100 MB, which 16 threads would otherwise fault
/// in 4 KiB at a time while they compare (256 steps on the GPU machine's host: 3-6% less wall
/// time, docs/performance.md). A hint: nothing changes where the kernel declines it, or on
/// another system than Linux.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn huge_pages<T>(rows: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let start = rows.as_ptr() as usize;
    let end = start.saturating_add(rows.capacity().saturating_mul(std::mem::size_of::<T>()));
    let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if to > from {
        // SAFETY: madvise only advises the kernel about pages of this process's allocation
        // (the range lies inside `rows`' buffer); it reads and writes no memory, and its
        // failure is ignored.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn huge_pages<T>(_rows: &[T]) {}

/// Reads one probe from each side (whichever exist) and compares them. Never fails: a probe
/// that cannot be read becomes an `unreadable` row naming the file and the problem.
/// `oe` and `re` are the row's tensors in ours and in the reference (`None`: not in that dump),
/// found once by the caller.
/// Stored little-endian floats are compared straight from the memory maps ([`Dump::view`]):
/// no copy, no allocation, and the kernel splits a large tensor across threads. A probe with
/// any other side (deflated, big-endian, integer, damaged) is streamed ([`stream_probe`]).
fn compare_probe(
    name: &str,
    oe: Option<Entry<'_, '_>>,
    re: Option<Entry<'_, '_>>,
    truth: Option<&MappedDump<'_>>,
    cfg: &DiffConfig,
) -> OpResult {
    // A tensor our map could not make (a preset's rule that does not fit it): a divergence
    // that says why, whatever the other sides hold.
    if let Some(problem) = oe.and_then(|e| e.problem()) {
        fn head<'m>(e: Entry<'m, '_>) -> Option<Head<'m>> {
            Some(Head {
                shape: e.shape()?,
                dtype: e.original_dtype_str().unwrap_or_default(),
            })
        }
        let ours = oe.and_then(head).unwrap_or(Head {
            shape: &[],
            dtype: "",
        });
        return divergence_diff::not_made(name, problem, ours, re.and_then(head));
    }
    let te = truth.map(|t| t.get(name));
    // A tensor a name map computes is never zero-copy: one part of a split is read in place
    // from its source's bytes ([`MappedDump::pieces`]).
    let in_place = |e: Option<Entry<'_, '_>>| e.is_none_or(|e| e.is_zero_copy());
    // Any other tensor a name map computes cannot be streamed: it is read whole from its
    // sources, and so are the other sides of its row (memory: that row's tensors,
    // docs/mapping.md).
    // (Either side: `--prefill-vs-decode` computes the reference's.)
    let whole = |e: Option<Entry<'_, '_>>| e.is_some_and(|e| e.is_computed() && !e.is_part());
    let computed = whole(oe) || whole(re);
    let all_in_place = in_place(oe) && in_place(re) && te.is_none_or(in_place);
    if !(computed || all_in_place) {
        return stream_probe(name, oe, re, te, cfg);
    }
    // Sides stored in place are views of the maps, nothing to read: a rayon join per row would
    // cost more than both (a decode dump has 150,000 rows); a computed side is computed.
    let (o, r) = if computed {
        rayon::join(|| read_side(oe), || read_side(re))
    } else {
        (read_side(oe), read_side(re))
    };
    let o = match o.transpose() {
        Ok(t) => t,
        Err(msg) => return divergence_diff::unreadable(name, Which::Ours, msg),
    };
    let r = match r.transpose() {
        Ok(t) => t,
        Err(msg) => return divergence_diff::unreadable(name, Which::Ref, msg),
    };
    // Logits of the last positions only (an engine that keeps the sampled positions', vLLM
    // and llama.cpp in prefill): compared with the reference's last rows (and the truth's,
    // of the reference's shape); the report says so (`diff::last_rows_of`). Not a
    // reference computed from other rows (`--prefill-vs-decode`'s: its positions are set).
    let last = match (&o, &r) {
        (Some(o), Some(r)) if cfg.last_logit_rows && re.is_some_and(|e| !e.is_computed()) => {
            divergence_diff::last_logit_rows(name, &o.0.shape, &r.0.shape)
        }
        _ => None,
    };
    fn sliced<'a>(
        t: &'a (TensorView<'_>, &str),
        last: Option<(divergence_diff::LastRows, &'a [usize], &[usize])>,
    ) -> Side<'a> {
        let s = side(t);
        match last {
            Some((l, ours, reference)) if divergence_diff::shapes_align(s.shape, reference) => {
                l.reference_side(ours, s)
            }
            _ => s,
        }
    }
    let last = match (&o, &r, last) {
        (Some(o), Some(r), Some(l)) => Some((l, o.0.shape.as_slice(), r.0.shape.as_slice())),
        _ => None,
    };
    let against = |t| sliced(t, last);
    let Some(te) = te else {
        return divergence_diff::compare(name, o.as_ref().map(side), r.as_ref().map(against), cfg);
    };
    // Read the truth only for a pair that both sides have.
    let t = if o.is_some() && r.is_some() {
        read_side(te)
    } else {
        None
    };
    match t.transpose() {
        // A truth of neither the reference's shape nor ours' is said against both, as the
        // streamed path says it (a bad-input hunt: "differs from ref" named ours' shape, the
        // reference's cut to ours').
        Ok(Some(t))
            if last.is_some_and(|(_, ours, reference)| {
                let ts = side(&t).shape;
                !divergence_diff::shapes_align(ts, reference)
                    && !divergence_diff::shapes_align(ts, ours)
            }) =>
        {
            let (ours_shape, ref_shape) = last.map(|(_, o, r)| (o, r)).unwrap_or_default();
            truth_unread(
                divergence_diff::compare(name, o.as_ref().map(side), r.as_ref().map(against), cfg),
                &format!(
                    "shape {:?} differs from ref {ref_shape:?} and from ours {ours_shape:?}",
                    side(&t).shape
                ),
            )
        }
        Ok(t) => divergence_diff::compare_with_truth(
            name,
            o.as_ref().map(side),
            r.as_ref().map(against),
            t.as_ref().map(against),
            cfg,
        ),
        Err(msg) => truth_unread(
            divergence_diff::compare(name, o.as_ref().map(side), r.as_ref().map(against), cfg),
            &msg,
        ),
    }
}

/// One side of a streamed probe: its pieces and original dtype.
type Stream<'a> = (Pieces<'a>, String);

/// [`compare_probe`] in bounded memory: every side read piece by piece ([`Dump::chunks`], one
/// [`DiffConfig::chunk_len`] of elements at a time; a split part in place, a strided
/// [`divergence_diff::Piece`] over its source; the sides in lockstep) into a [`ProbeFold`],
/// whose row equals
/// [`divergence_diff::compare_with_truth`]'s on the whole tensors. Memory: one piece per side,
/// whatever the tensors' sizes (a Fortran-order tensor excepted, see
/// [`divergence_dump::MAX_REORDER_BYTES`]). No rayon call here: a thread waiting in rayon may
/// start another probe, so a streamed probe that never waits in rayon is the whole of what its
/// thread holds (docs/reliability.md, "Memory"); pieces of at most one chunk keep the fold
/// from calling rayon. A tensor of several chunk-sized pieces reads the reference's on a
/// scoped thread beside ours'. Probes run in parallel across the rayon threads.
fn stream_probe(
    name: &str,
    ours: Option<Entry<'_, '_>>,
    reference: Option<Entry<'_, '_>>,
    truth: Option<Option<Entry<'_, '_>>>,
    cfg: &DiffConfig,
) -> OpResult {
    fn open<'a>(e: Option<Entry<'_, 'a>>, per: usize) -> Option<Result<Stream<'a>, String>> {
        let e = e?;
        let dtype = e.original_dtype().unwrap_or_default();
        Some(e.pieces(per).map(|c| (c, dtype)).map_err(|e| e.to_string()))
    }
    fn as_head(h: &Option<(Vec<usize>, String)>) -> Option<Head<'_>> {
        h.as_ref().map(|(shape, dtype)| Head {
            shape: shape.as_slice(),
            dtype: dtype.as_str(),
        })
    }
    let per = cfg.chunk_len;
    let mut o = match open(ours, per).transpose() {
        Ok(o) => o,
        Err(msg) => return divergence_diff::unreadable(name, Which::Ours, msg),
    };
    let mut r = match open(reference, per).transpose() {
        Ok(r) => r,
        Err(msg) => return divergence_diff::unreadable(name, Which::Ref, msg),
    };
    let head = |s: &Option<Stream<'_>>| {
        s.as_ref()
            .map(|(c, dtype)| (c.shape().to_vec(), dtype.clone()))
    };
    let (ho, hr) = (head(&o), head(&r));
    // Logits of the last positions only against the reference's of every position
    // (`compare_probe` says why): the reference streamed through, its last rows compared in
    // lockstep with ours, piece by piece (bounded memory whatever their size: a pair past
    // 2^25 values held them whole before, and past that was a shape mismatch, the same pair
    // stored compared in place; a bad-input hunt). (A streamed reference is one of the
    // dump's own tensors, never computed.)
    if let (Some((oc, od)), Some((rc, rd)), true) = (&mut o, &mut r, cfg.last_logit_rows) {
        if let Some(l) = divergence_diff::last_logit_rows(name, oc.shape(), rc.shape()) {
            return last_rows_in_lockstep(name, l, (oc, od), (rc, rd), truth, cfg);
        }
    }
    let mut fold = ProbeFold::new(name, as_head(&ho), as_head(&hr), cfg);
    // The truth, read only for a pair that both sides have; a truth that cannot be opened or
    // read leaves the presets' verdict, with the reason (`ProbeFold::truth_failed`).
    let mut t: Option<Stream<'_>> = None;
    if let (Some(truth), true) = (truth, o.is_some() && r.is_some()) {
        match open(truth, per) {
            None => fold = fold.with_truth(None),
            Some(Ok(ts)) => {
                let ht = Some((ts.0.shape().to_vec(), ts.1.clone()));
                fold = fold.with_truth(as_head(&ht));
                t = Some(ts);
            }
            Some(Err(msg)) => {
                fold = fold.with_truth(None);
                truth_failed(&mut fold, msg);
            }
        }
    }
    let failed =
        |which: Which, e: DumpError| divergence_diff::unreadable(name, which, e.to_string());
    match fold.needs() {
        Needs::Nothing => {}
        Needs::Ours | Needs::Ref | Needs::Apart => {
            for (side, which) in [(&mut o, Which::Ours), (&mut r, Which::Ref)] {
                let Some((c, _)) = side else { continue };
                loop {
                    match c.next_piece() {
                        Ok(Some(v)) => fold.push_side(which, v),
                        Ok(None) => break,
                        Err(e) => return failed(which, e),
                    }
                }
            }
        }
        Needs::Pair { truth: want_truth } => {
            let (Some((oc, _)), Some((rc, _))) = (&mut o, &mut r) else {
                return fold.finish();
            };
            let mut tc = t.as_mut().map(|(c, _)| c).filter(|_| want_truth);
            // A tensor of several pieces inflates the reference's pieces on a thread of its
            // own, beside ours': a dump of a few huge members keeps two cores busy (measured,
            // docs/performance.md). A scoped thread, not rayon: a thread waiting in rayon may
            // start another probe (and its buffers) meanwhile. Not beside a split part: it is
            // read in place, with nothing to inflate.
            let beside = !oc.is_part() && !rc.is_part() && oc.len() > per;
            loop {
                let (po, pr) = if beside {
                    std::thread::scope(|s| {
                        let theirs = s.spawn(|| rc.next_piece());
                        let mine = oc.next_piece();
                        let theirs = theirs
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        (mine, theirs)
                    })
                } else {
                    (oc.next_piece(), rc.next_piece())
                };
                let po = match po {
                    Ok(p) => p,
                    Err(e) => return failed(Which::Ours, e),
                };
                let pr = match pr {
                    Ok(p) => p,
                    Err(e) => return failed(Which::Ref, e),
                };
                // The truth's piece; its end (CRC-32) is checked with the sides' last `None`.
                let pt = match tc.as_mut().map(|c| c.next_piece()) {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        truth_failed(&mut fold, e.to_string());
                        tc = None;
                        None
                    }
                    None => None,
                };
                match (po, pr) {
                    (Some(po), Some(pr)) => fold.push_pair(po, pr, pt),
                    // Aligned shapes hold equally many elements: both end together (a fold
                    // fed unevenly reports it).
                    _ => break,
                }
            }
        }
    }
    fold.finish()
}

/// [`stream_probe`] of logits that keep the last positions only ([`divergence_diff::LastRows`]
/// `l`): ours' pieces in order, the reference's (and a truth of its shape) from its first
/// kept row on, in pieces as long as ours' ([`Offset`]), into one [`ProbeFold`] of ours'
/// shape: the row `compare_probe` makes of the same pair stored, bit for bit (each side
/// widened exactly to f64, as the comparison widens it). A truth of ours' shape is read from
/// its start; of another, it is said.
fn last_rows_in_lockstep(
    name: &str,
    l: divergence_diff::LastRows,
    (oc, od): (&mut Pieces<'_>, &str),
    (rc, rd): (&mut Pieces<'_>, &str),
    truth: Option<Option<Entry<'_, '_>>>,
    cfg: &DiffConfig,
) -> OpResult {
    let failed = |which, e: DumpError| divergence_diff::unreadable(name, which, e.to_string());
    let shape = oc.shape().to_vec();
    let ref_shape = rc.shape().to_vec();
    let head = |dtype| Head {
        shape: &shape,
        dtype,
    };
    let mut fold = ProbeFold::new(name, Some(head(od)), Some(head(rd)), cfg);
    let mut opened: Option<Stream<'_>> = None;
    // The truth's values in pieces as long as ours': of the reference's shape from its first
    // kept row, of ours' from its start.
    let mut tside: Option<Offset<'_, '_>> = None;
    if let Some(truth) = truth {
        match truth.map(|e| {
            e.pieces(cfg.chunk_len)
                .map(|c| (c, e.original_dtype().unwrap_or_default()))
        }) {
            None => fold = fold.with_truth(None),
            Some(Err(e)) => {
                fold = fold.with_truth(None);
                truth_failed(&mut fold, e);
            }
            Some(Ok(t)) => opened = Some(t),
        }
    }
    if let Some((tc, td)) = &mut opened {
        fold = fold.with_truth(Some(head(td)));
        if divergence_diff::shapes_align(tc.shape(), &ref_shape) {
            tside = Some(Offset::new(tc, l.range().start));
        } else if divergence_diff::shapes_align(tc.shape(), &shape) {
            tside = Some(Offset::new(tc, 0));
        } else {
            let why = format!(
                "shape {:?} differs from ref {ref_shape:?} and from ours {shape:?}",
                tc.shape()
            );
            truth_failed(&mut fold, why);
        }
    }
    let mut rr = Offset::new(rc, l.range().start);
    let want_truth = match fold.needs() {
        Needs::Pair { truth } => truth,
        // Two float heads of one shape are always a pair; anything else is decided already.
        _ => return fold.finish(),
    };
    loop {
        let po = match oc.next_piece() {
            Ok(p) => p,
            Err(e) => return failed(Which::Ours, e),
        };
        let Some(po) = po else { break };
        let n = po.len();
        let pr = match rr.take(n) {
            Ok(v) => v,
            Err(e) => return failed(Which::Ref, e),
        };
        let pt = match (want_truth, &mut tside) {
            (true, Some(t)) => match t.take(n) {
                Ok(v) => Some(divergence_diff::Piece::from(
                    divergence_diff::ValuesRef::F64(v),
                )),
                Err(e) => {
                    truth_failed(&mut fold, e);
                    tside = None;
                    None
                }
            },
            _ => None,
        };
        fold.push_pair(po, divergence_diff::ValuesRef::F64(pr), pt);
    }
    // Each read to its end: a member's checksum is checked there.
    if let Err(e) = rr.finish() {
        return failed(Which::Ref, e);
    }
    let ended = tside.as_mut().map_or(Ok(()), Offset::finish);
    if let Err(e) = ended {
        truth_failed(&mut fold, e);
    }
    fold.finish()
}

/// The truth could not be read or used (`why`): the fold keeps the presets' verdict and says
/// so, in one line ([`ProbeFold::truth_failed`]).
fn truth_failed(fold: &mut ProbeFold, why: impl std::fmt::Display) {
    fold.truth_failed(divergence_names::one_line(&format!("truth: {why}")).into_owned());
}

/// A streamed tensor's values from element `skip` on, widened exactly to f64, `n` at a time
/// ([`Offset::take`]): the rows a reference keeps past ours' first (or a truth's, from its
/// start), in pieces as long as ours'. Holds at most two of the tensor's pieces.
struct Offset<'a, 'p> {
    pieces: &'p mut Pieces<'a>,
    /// Elements still to pass over.
    skip: usize,
    /// Widened values read and not taken yet, from `from`.
    held: Vec<f64>,
    from: usize,
    out: Vec<f64>,
}

impl<'a, 'p> Offset<'a, 'p> {
    fn new(pieces: &'p mut Pieces<'a>, skip: usize) -> Offset<'a, 'p> {
        Offset {
            pieces,
            skip,
            held: Vec::new(),
            from: 0,
            out: Vec::new(),
        }
    }

    /// The next `n` values (fewer at the tensor's end).
    fn take(&mut self, n: usize) -> Result<&[f64], DumpError> {
        let mut buf = Vec::new();
        while self.held.len() - self.from < n {
            let Some(p) = self.pieces.next_piece()? else {
                break;
            };
            let len = p.len();
            let pass = self.skip.min(len);
            self.skip -= pass;
            if pass < len {
                if self.from > 0 {
                    self.held.drain(..self.from);
                    self.from = 0;
                }
                let v = p.slice(pass..len).flat(&mut buf).to_f64_vec();
                self.held.extend(v);
            }
        }
        let to = (self.from + n).min(self.held.len());
        self.out.clear();
        self.out.extend_from_slice(&self.held[self.from..to]);
        self.from = to;
        Ok(&self.out)
    }

    /// Reads the rest (none, where the kept rows are the last), to the member's end.
    fn finish(&mut self) -> Result<(), DumpError> {
        while self.pieces.next_piece()?.is_some() {}
        Ok(())
    }
}

/// `row` (compared without the truth) with why the truth could not judge it, where it would
/// have: an `ok` or `diverged` row.
fn truth_unread(mut row: OpResult, msg: &str) -> OpResult {
    if matches!(row.status, Status::Ok | Status::Diverged) {
        let why = divergence_names::one_line(&format!("truth: {msg}")).into_owned();
        row.truth_mut().truth_problem = Some(why);
    }
    row
}

/// The elements `range` of a streamed tensor, widened exactly to f32 (a float32, bfloat16 or
/// float16 tensor: half the memory of f64, a bad-input hunt measured 1 GB of RSS for a
/// compressed pair of 2^25 logits and a truth) or to f64 (a float64 one); the others read
/// (the member's checksum is checked at its end) and let go.
pub(crate) fn stream_range(
    pieces: &mut Pieces<'_>,
    range: std::ops::Range<usize>,
) -> Result<divergence_dump::Values, DumpError> {
    use divergence_diff::ValuesRef;
    use divergence_dump::Values;
    let mut out = Values::F32(Vec::with_capacity(range.len()));
    let (mut at, mut buf) = (0usize, Vec::new());
    while let Some(p) = pieces.next_piece()? {
        let (from, to) = (at.max(range.start), (at + p.len()).min(range.end));
        if from < to {
            let v = p.slice(from - at..to - at).flat(&mut buf);
            // An f64 piece (float64, or integers widened) holds the whole in f64.
            if let (ValuesRef::F64(_) | ValuesRef::F64Le(_), Values::F32(held)) = (v, &out) {
                out = Values::F64(held.iter().map(|&x| f64::from(x)).collect());
            }
            let wide = v.to_f64_vec();
            match &mut out {
                // Exact: every value of a float32, bfloat16 or float16 piece is an f32.
                Values::F32(o) => o.extend(wide.iter().map(|&x| x as f32)),
                Values::F64(o) => o.extend(wide),
            }
        }
        at += p.len();
    }
    Ok(out)
}

/// One side of a probe: `None` when the dump lacks the name, else its view (borrowed where the
/// bytes allow, decoded otherwise) and original dtype, or the read error's one line.
pub(crate) fn read_side<'a>(
    e: Option<Entry<'_, 'a>>,
) -> Option<Result<(TensorView<'a>, &'a str), String>> {
    // A damaged entry is still listed (its read fails): only a name absent from the file
    // makes this side missing.
    let e = e?;
    let dtype = e.original_dtype_str().unwrap_or_default();
    Some(e.view().map(|t| (t, dtype)).map_err(|e| e.to_string()))
}

pub(crate) fn side<'a>((tensor, dtype): &'a (TensorView<'_>, &str)) -> Side<'a> {
    Side {
        shape: &tensor.shape,
        values: tensor.values(),
        dtype,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use divergence_diff::{plan_order, DumpNames, Tolerance};
    use divergence_dump::{Dump, DumpWriter, Meta, TensorData};

    use super::*;

    const STEPS: usize = 6;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32 / 4e9;
                x - 0.5
            })
            .collect()
    }

    /// A decode dump: a prefill and `STEPS` steps of several probes, stacked or in the
    /// per-step layout, ours or the reference (`ours`: slightly off, a NaN in one step, a
    /// probe of its own, a squeezed shape, an f32 tensor where the reference has bf16).
    fn write(path: &Path, ours: bool, stacked: bool) {
        let mut w = DumpWriter::create(path).unwrap();
        if stacked {
            w.stack_steps();
        }
        let mut order = Vec::new();
        let mut dtypes = Vec::new();
        let off = if ours { 3 } else { 0 };
        let mut add = |w: &mut DumpWriter, name: String, shape: &[usize], v: &[f32], bf16: bool| {
            if bf16 {
                let b: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
                w.add(&name, shape, TensorData::BF16(&b)).unwrap();
            } else {
                w.add(&name, shape, TensorData::F32(v)).unwrap();
            }
            order.push(name.clone());
            dtypes.push((name, if bf16 { "bfloat16" } else { "float32" }));
        };
        let mut int_names = Vec::new();
        for step in 0..=STEPS {
            let at = |base: &str| match step {
                0 => base.to_string(),
                s => format!("{base}@{s}"),
            };
            let t = if step == 0 { 4 } else { 1 };
            let mut mlp = values(t * 40, 7 + step as u32 * 11 + off);
            if ours && step == 3 {
                mlp[5] = f32::NAN;
            }
            add(&mut w, at("model.layers.0.mlp"), &[1, t, 40], &mlp, false);
            let shape: &[usize] = if ours { &[1, t, 9] } else { &[t, 9] };
            add(
                &mut w,
                at("model.layers.0.self_attn"),
                shape,
                &values(t * 9, 5),
                false,
            );
            // f32 in ours, bf16 in the reference.
            add(
                &mut w,
                at("model.layers.1.mlp"),
                &[1, t, 17],
                &values(t * 17, 2),
                !ours,
            );
            if ours {
                add(&mut w, at("extra"), &[1, t, 3], &values(t * 3, 1), false);
            }
            // Integers: their stacked member is not borrowed in place (decoded step by step),
            // so its steps are compared row by row, each a job of its own.
            let ints: Vec<i32> = (0..t as i32 * 5).map(|i| i * (step as i32 + 1)).collect();
            let name = at("model.layers.2.mlp.router");
            w.add(&name, &[1, t, 5], TensorData::I32(&ints)).unwrap();
            int_names.push(name);
        }
        order.extend(int_names);
        let mut meta = Meta {
            order: order.into_iter().map(divergence_diff::Name::from).collect(),
            input_ids: Some(vec![1, 2, 3, 4]),
            ..Meta::default()
        };
        for (name, dtype) in dtypes {
            meta.dtypes.insert(name, dtype.to_string());
        }
        w.finish(meta).unwrap();
    }

    fn names<'a>(dump: &'a MappedDump<'_>) -> DumpNames<'a> {
        DumpNames {
            meta_order: dump.meta_order(),
            names: dump.names(),
            file_order_preserved: true,
            single_tensor_file: false,
        }
    }

    /// Ours and the reference ([`write`]), opened (the folder holds them while it lives).
    fn pair(stacked: bool) -> (tempfile::TempDir, Dump, Dump) {
        let dir = tempfile::tempdir().unwrap();
        let (o, r) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
        write(&o, true, stacked);
        write(&r, false, stacked);
        let (od, rd) = (Dump::open(&o).unwrap(), Dump::open(&r).unwrap());
        (dir, od, rd)
    }

    /// The rows of a decode dump pair, with runs of steps compared in one call, are the rows of
    /// every probe compared on its own, bit for bit; and the runs are there (so that this test
    /// compares something): every float probe both sides have, stacked or stored apart (the
    /// per-step layout), in a plan aligned or not.
    #[test]
    fn runs_of_steps_give_the_rows_of_each_step_alone() {
        for stacked in [true, false] {
            runs_give_the_rows_of_each_step_alone(stacked);
        }
    }

    fn runs_give_the_rows_of_each_step_alone(stacked: bool) {
        let (_dir, od, rd) = pair(stacked);
        let (ours, reference) = (MappedDump::plain(&od), MappedDump::plain(&rd));
        for tolerance in [
            Tolerance::default(),
            Tolerance::from_flags(true, None, None, None),
        ] {
            let cfg = DiffConfig {
                tolerance,
                ..DiffConfig::default()
            };
            let plan = plan_order(&names(&ours), &names(&reference));
            assert!(!plan.aligned, "ours has a probe of its own");
            let n = plan.order.len();
            let entries = |i: usize| entries_at(&plan, &ours, &reference, i);
            let planned = jobs(n, &entries, (&od, &rd), &cfg, false, Some(&plan));
            let runs = planned
                .iter()
                .filter(|j| matches!(j, Job::Steps(run) if run.rows.len() == STEPS))
                .count();
            assert_eq!(
                runs, 3,
                "the three float probes both sides have ({stacked})"
            );
            let apart = planned
                .iter()
                .filter(|j| matches!(j, Job::Steps(run) if run.source == RunSource::Apart))
                .count();
            assert_eq!(apart, if stacked { 0 } else { 3 });
            let int_rows = planned
                .iter()
                .filter(|j| matches!(j, Job::Row(i) if plan.order[*i].contains("router@")))
                .count();
            assert_eq!(int_rows, STEPS, "the integer member's steps, row by row");
            let together = compare_all(&plan, &ours, &reference, None, &cfg);
            // The float steps are kept compact (a run's row), in either layout.
            let compact = (0..n).filter(|&i| together.row(i).run().is_some()).count();
            assert_eq!(compact, 3 * STEPS - 1, "all but the NaN step ({stacked})");
            let alone: Vec<OpResult> = (0..n)
                .map(|i| compare_row(&plan, &ours, &reference, None, &cfg, i))
                .collect();
            assert_eq!(together.len(), n);
            let json = |rows: &[OpResult]| serde_json::to_string(rows).unwrap();
            assert_eq!(json(&together), json(&alone));
            // The faults are there to be found: a NaN at step 3, ours' own probe.
            let status = |name: &str| together.iter().find(|r| &*r.name == name).unwrap().status;
            assert_eq!(status("model.layers.0.mlp@3"), Status::Nonfinite);
            assert_eq!(status("extra@2"), Status::OnlyOurs);
        }
    }

    /// Steps stored apart that a run cannot take as one (a step whose metadata dtype differs
    /// in mid-run: judged by another tolerance) give the rows of each step alone (a review
    /// found no test failing without the dtype check of [`compare_apart`]).
    #[test]
    fn apart_steps_of_two_dtypes_give_the_rows_of_each_step_alone() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &Path, ours: bool| {
            let mut w = DumpWriter::create(path).unwrap();
            let mut meta = Meta::default();
            for s in 1..=5usize {
                let name = format!("model.layers.0.b@{s}");
                let off = if ours { 1e-3 } else { 0.0 };
                let v: Vec<f32> = values(40, s as u32).iter().map(|x| x + 1.0 + off).collect();
                w.add(&name, &[1, 1, 40], TensorData::F32(&v)).unwrap();
                let dtype = if ours && s == 4 {
                    "bfloat16"
                } else {
                    "float32"
                };
                meta.dtypes.insert(name.clone(), dtype.to_string());
                meta.order.to_mut().push(divergence_diff::Name::from(name));
            }
            w.finish(meta).unwrap();
        };
        let (o, r) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
        write(&o, true);
        write(&r, false);
        let (od, rd) = (Dump::open(&o).unwrap(), Dump::open(&r).unwrap());
        let (ours, reference) = (MappedDump::plain(&od), MappedDump::plain(&rd));
        let cfg = DiffConfig::default();
        let plan = plan_order(&names(&ours), &names(&reference));
        let n = plan.order.len();
        let together = compare_all(&plan, &ours, &reference, None, &cfg);
        let alone: Vec<OpResult> = (0..n)
            .map(|i| compare_row(&plan, &ours, &reference, None, &cfg, i))
            .collect();
        let json = |rows: &[OpResult]| serde_json::to_string(rows).unwrap();
        assert_eq!(json(&together), json(&alone));
    }

    /// Every index of the plan is in exactly one job, whatever the layout.
    #[test]
    fn the_dumps_members_make_the_jobs_the_rows_slots_make() {
        // Two dumps of one layout, opened together (their names shared), in a plan aligned
        // with them: the members the dumps keep make the same jobs as the rows' slots, large
        // runs or small, integer member row by row included.
        let dir = tempfile::tempdir().unwrap();
        let (o, r) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
        write(&o, false, true);
        write(&r, false, true);
        let (od, rd) = Dump::open_pair(&o, &r);
        let (od, rd) = (od.unwrap(), rd.unwrap());
        assert!(od.shares_names(&rd));
        let (ours, reference) = (MappedDump::plain(&od), MappedDump::plain(&rd));
        let plan = plan_order(&names(&ours), &names(&reference));
        assert!(plan.aligned);
        let n = plan.order.len();
        let entries = |i: usize| entries_at(&plan, &ours, &reference, i);
        assert!(member_rows(n, &od).is_some_and(|m| m.len() == od.member_count()));
        for chunk_len in [1, 40, 1 << 18] {
            let cfg = DiffConfig {
                chunk_len,
                ..DiffConfig::default()
            };
            let by_slots = jobs(n, &entries, (&od, &rd), &cfg, false, Some(&plan));
            assert!(by_slots.iter().any(|j| matches!(j, Job::Steps(_))));
            let by_member = jobs(n, &entries, (&od, &rd), &cfg, true, Some(&plan));
            assert_eq!(by_member, by_slots);
        }
        // Opened apart, they do not share their names (compare_all then goes by the slots).
        assert!(!Dump::open(&o)
            .unwrap()
            .shares_names(&Dump::open(&r).unwrap()));
    }

    #[test]
    fn jobs_cover_every_row_once() {
        for stacked in [true, false] {
            jobs_cover_every_row_once_in(stacked);
        }
    }

    fn jobs_cover_every_row_once_in(stacked: bool) {
        let (_dir, od, rd) = pair(stacked);
        let (ours, reference) = (MappedDump::plain(&od), MappedDump::plain(&rd));
        // Runs of one step each, then of the whole member.
        for chunk_len in [1, 40, 1 << 18] {
            let cfg = DiffConfig {
                chunk_len,
                ..DiffConfig::default()
            };
            let plan = plan_order(&names(&ours), &names(&reference));
            let n = plan.order.len();
            let entries = |i: usize| entries_at(&plan, &ours, &reference, i);
            let mut seen = vec![0; n];
            for job in jobs(n, &entries, (&od, &rd), &cfg, false, Some(&plan)) {
                match job {
                    Job::Row(i) => seen[i] += 1,
                    Job::Steps(run) => {
                        assert!(run.rows.len() <= (chunk_len / 40).max(1).max(chunk_len / 9));
                        run.rows.iter().for_each(|&i| seen[i] += 1);
                    }
                }
            }
            assert!(seen.iter().all(|&k| k == 1), "{seen:?}");
        }
    }

    /// A streamed range is held in f32 where that is exact (float32, bfloat16, float16: half
    /// the memory of f64; a bad-input hunt measured 1 GB for compressed last-row logits) and
    /// in f64 for float64, the same values either way, across pieces.
    #[test]
    fn a_streamed_range_is_held_in_f32_where_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let f: Vec<f32> = (0..50).map(|i| i as f32 * 0.37 - 4.0).collect();
        let d: Vec<f64> = f.iter().map(|&x| f64::from(x) + 1e-12).collect();
        let mut w = DumpWriter::create(&path).unwrap();
        w.add("f32", &[50], TensorData::F32(&f)).unwrap();
        w.add("f64", &[50], TensorData::F64(&d)).unwrap();
        w.finish(Meta::default()).unwrap();
        let dump = Dump::open(&path).unwrap();
        let mapped = MappedDump::plain(&dump);
        // Pieces of 8: the range 13..41 spans five of them.
        let range = |name: &str| {
            let mut pieces = mapped.get(name).unwrap().pieces(8).unwrap();
            stream_range(&mut pieces, 13..41).unwrap()
        };
        assert_eq!(
            range("f32"),
            divergence_dump::Values::F32(f[13..41].to_vec())
        );
        assert_eq!(
            range("f64"),
            divergence_dump::Values::F64(d[13..41].to_vec())
        );
    }
}
