//! Where a run of decode steps' comparison spends more than one tensor of the same values: a
//! measuring tool for issue #13 item 8 (docs/performance.md, "Decode steps", session 35).
//!
//! It opens two dumps with stacked decode steps (the same members in the same order, as
//! `divergence run` and the exporter write them) and compares every member's steps, member
//! after member, in one of four ways, in turn, `ROUNDS` times (default 12):
//!
//! - `whole`: the member's steps as one tensor (`compare`): what one pass's bytes cost;
//! - `steps`: a run of steps in one call (`compare_step_pieces_into`), each step's sums
//!   dropped as they come: the kernel per step;
//! - `cells`: the same, each step's sums written to its row's cell as it comes (rows
//!   step-major: a step's cell is every member away from the last), as `diff` did before
//!   session 35;
//! - `after`: the same, the run's sums written to their cells once the run is compared, as
//!   `diff` does since (idealised: one buffer for every run, no cap on what it holds).
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p divergence-cli --example steps_sink -- OURS REF
//! ```
//!
//! It prints the minimum and the median wall time of each way (the comparisons alone: no
//! opening, no report). One thread reads CPU time per byte.

use std::path::Path;
use std::time::Instant;

use divergence_diff::{
    compare, compare_step_pieces_into, DiffConfig, Name, RowsBuilder, Side, StepNames, StepSide,
    StepSums, StepValues, ValuesRef,
};
use divergence_dump::Dump;

const WAYS: [&str; 4] = ["whole", "steps", "cells", "after"];

/// Bytes per stored value.
fn width(v: ValuesRef<'_>) -> usize {
    match v {
        ValuesRef::F32(_) | ValuesRef::F32Le(_) => 4,
        ValuesRef::F64(_) | ValuesRef::F64Le(_) => 8,
        ValuesRef::Bf16Le(_) | ValuesRef::F16Le(_) => 2,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ours, reference] = [0, 1].map(|i| {
        let path = args.get(i).expect("usage: steps_sink OURS REF");
        Dump::open(Path::new(path)).unwrap_or_else(|e| panic!("{e}"))
    });
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12)
        .max(1);
    // Each member both dumps can lend whole: (member, steps).
    let members: Vec<(usize, usize)> = (0..ours.member_count())
        .filter_map(|m| {
            let (name, steps) = ours.member_info(m)?;
            let same = reference.member_info(m).is_some_and(|r| r == (name, steps));
            let lent = ours.member_steps(m, 1..steps + 1).is_some()
                && reference.member_steps(m, 1..steps + 1).is_some();
            (same && lent && steps > 0).then_some((m, steps))
        })
        .collect();
    let most = members.iter().map(|&(_, s)| s).max().unwrap_or(0);
    let rows = members.len() * most;
    // One tensor per run, as `diff` makes its jobs: a chunk's elements at most (DiffConfig's
    // default chunk length), so no comparison splits across threads.
    let cfg = DiffConfig::default();
    let name = |k: usize| Name::from(format!("x@{}", k + 1));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); WAYS.len()];
    let mut bytes = 0usize;
    for round in 0..rounds {
        for w in (0..WAYS.len()).map(|w| (w + round) % WAYS.len()) {
            let way = WAYS[w];
            let mut cells = RowsBuilder::new(rows);
            let runs: Vec<u32> = members.iter().map(|_| cells.open_run()).collect();
            let sink = cells.sink();
            let mut after: Vec<(usize, StepSums)> = Vec::new();
            let t = Instant::now();
            let mut seen = 0usize;
            for (j, &(m, steps)) in members.iter().enumerate() {
                let (Some((os, ov)), Some((rs, rv))) = (
                    ours.member_steps(m, 1..steps + 1),
                    reference.member_steps(m, 1..steps + 1),
                ) else {
                    continue;
                };
                let row = |k: usize| k * members.len() + j;
                // The dtype `diff` judges the member by (its tolerance; no effect on the work).
                let dtype = ours
                    .member_original_dtype_str(m)
                    .flatten()
                    .unwrap_or("float32");
                let n: usize = os.iter().product();
                let per_run = (cfg.chunk_len / n.max(1)).max(1);
                for first in (0..steps).step_by(per_run) {
                    let len = per_run.min(steps - first);
                    let span = first * n..(first + len) * n;
                    let (o, r) = (ov.slice(span.clone()), rv.slice(span));
                    seen += o.len() * width(o) + r.len() * width(r);
                    if way == "whole" {
                        let shape = [len * n];
                        let side = |values| Side {
                            shape: &shape,
                            values,
                            dtype,
                        };
                        std::hint::black_box(compare("x", Some(side(o)), Some(side(r)), &cfg));
                        continue;
                    }
                    let side = |shape, values| StepSide {
                        shape,
                        values: StepValues::Joined(values),
                        dtype,
                    };
                    let at = |k: usize| row(first + k);
                    after.clear();
                    let mut emit = |k: usize, sums: StepSums| match way {
                        "cells" => sink.put_step(at(k), runs[j], first + k, sums),
                        "after" => after.push((k, sums)),
                        _ => {
                            std::hint::black_box(sums);
                        }
                    };
                    let name = |k: usize| name(first + k);
                    std::hint::black_box(compare_step_pieces_into(
                        StepNames::WrittenBack { len, name: &name },
                        side(os, o),
                        side(rs, r),
                        &cfg,
                        &mut emit,
                    ));
                    for &(k, sums) in &after {
                        sink.put_step(at(k), runs[j], first + k, sums);
                    }
                }
            }
            times[w].push(t.elapsed().as_secs_f64() * 1e3);
            bytes = seen;
        }
    }
    println!(
        "{} members, {rows} steps, {:.2} GB compared a way",
        members.len(),
        bytes as f64 / 1e9
    );
    for (way, t) in WAYS.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{way:6} min {:7.1} ms  median {:7.1} ms",
            t[0],
            t[t.len() / 2]
        );
    }
}
