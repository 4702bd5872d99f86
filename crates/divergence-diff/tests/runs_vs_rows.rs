//! The passes that go run by run over a compact report's decode steps read as the per-row
//! algorithms they replaced, on the same compact rows: the amplification section against its
//! per-row way (a `RowSource` that hides `parts()`), the growths against a copy of
//! `local_growths` as it was before (9166a8c), on rows with several runs per probe, runs laid
//! out in reverse step order, steps kept whole in a run's place under names that are not
//! `base@s`, norms without projections or a layer. (Written by a review, 2026-12-03, which
//! found a projection paired by its place in its run under another name.)
use divergence_diff::amplification::{amplification, NormWeightGains};
use divergence_diff::origin::{class_noise_floor, local_growths};
use divergence_diff::rows::{Row, RowSource};
use divergence_diff::*;
use divergence_names::dataflow::Dataflow;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The rows without `parts()`: every pass takes its per-row way (the old algorithm).
struct NoParts<'a>(&'a Rows);
impl RowSource for NoParts<'_> {
    fn row_count(&self) -> usize {
        self.0.len()
    }
    fn row_at(&self, i: usize) -> Row<'_> {
        self.0.row(i)
    }
}

/// `origin::cache_reads` as of b80db20 (a map of (layer, step), every row visited): each
/// decode step's attention output and the largest error its layer's cache holds from the
/// steps before.
fn old_cache_reads(ops: &dyn RowSource, measure: Measure) -> BTreeMap<usize, f64> {
    use divergence_names::Op;
    let mut written: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut read: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..ops.row_count() {
        let row = ops.row_at(i);
        let base = row.base();
        if !["attn_out", "cache_k", "cache_v", "rope_k", "v_proj"]
            .iter()
            .any(|end| base.ends_with(end))
        {
            continue;
        }
        let (step, Some(layer)) = (row.step(), row.layer()) else {
            continue;
        };
        let writes = match Op::of(base) {
            Op::CacheK | Op::CacheV => true,
            Op::Rope(QkKind::K) | Op::VProj => step == 0,
            Op::AttnOut => {
                if step > 0 {
                    read.push((i, layer, step));
                }
                false
            }
            _ => false,
        };
        if let (true, Some(e)) = (writes, measure.value(row)) {
            let w = written.entry((layer, step)).or_insert(e);
            *w = w.max(e);
        }
    }
    let mut before: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut last: Option<(usize, f64)> = None;
    for (&(layer, step), &e) in &written {
        let m = match last {
            Some((l, m)) if l == layer => m.max(e),
            _ => e,
        };
        before.insert((layer, step), m);
        last = Some((layer, m));
    }
    read.into_iter()
        .filter_map(|(i, layer, step)| {
            let (_, &e) = before.range((layer, 0)..(layer, step)).next_back()?;
            Some((i, e))
        })
        .collect()
}

/// `local_growths` as of 9166a8c, with the cache reads of b80db20.
fn old_growths(ops: &dyn RowSource, flow: &Dataflow, measure: Measure) -> Vec<Option<f64>> {
    let len = ops.row_count();
    let reads = old_cache_reads(ops, measure);
    (0..len)
        .map(|i| {
            let row = ops.row_at(i);
            let own = measure.value(row)?;
            let floor = match measure {
                Measure::RelErr => class_noise_floor(row.tensor().pair_class()),
                Measure::NoiseRatio => 1.0,
            };
            let inputs = flow.inputs(i);
            let carried = if inputs.is_empty() {
                0.0
            } else {
                inputs
                    .iter()
                    .filter_map(|j| (j < len).then(|| measure.value(ops.row_at(j))).flatten())
                    .reduce(f64::max)?
            };
            let carried = reads.get(&i).map_or(carried, |&c| carried.max(c));
            Some(own / carried.max(floor)).filter(|g| g.is_finite())
        })
        .collect()
}

fn xorshift(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SHAPE: [usize; 1] = [4];
fn side(v: &[f32]) -> Side<'static> {
    Side {
        shape: &SHAPE,
        values: ValuesRef::F32(Box::leak(v.to_vec().into_boxed_slice())),
        dtype: "float32",
    }
}

struct Knobs {
    steps: usize,
    layers: usize,
    fillers: usize,
    shuffle: bool,
    reverse: bool,
    p_alias: f64,
    p_split: f64,
    cache: bool,
}

fn build(seed: u64, k: &Knobs) -> Rows {
    let mut rnd = xorshift(seed);
    let mut probes = Vec::new();
    for l in 0..k.layers {
        let no_proj = rnd() < 0.2;
        for op in ["q_proj", "k_proj"] {
            if !no_proj {
                probes.push(format!("model.layers.{l}.self_attn.{op}"));
            }
        }
        // What a decode step's attention reads from its layer's cache (`cache_reads`).
        if k.cache {
            for op in ["v_proj", "rope_k", "cache_k", "cache_v", "attn_out"] {
                probes.push(format!("model.layers.{l}.self_attn.{op}"));
            }
        }
        for j in 0..k.fillers {
            probes.push(format!("model.layers.{l}.self_attn.f{j}"));
        }
        for op in ["q_norm", "k_norm"] {
            probes.push(format!("model.layers.{l}.self_attn.{op}"));
        }
        probes.push(format!("model.layers.{l}.mlp"));
    }
    probes.push("norm_without_layer.self_attn.k_norm".to_string());
    probes.push("lm_head".to_string());
    let held: Vec<Vec<bool>> = probes
        .iter()
        .map(|_| (0..=k.steps).map(|_| rnd() > 0.1).collect())
        .collect();
    let mut at = vec![vec![usize::MAX; k.steps + 1]; probes.len()];
    let mut row = 0;
    let step_order: Vec<usize> = if k.reverse {
        (0..=k.steps).rev().collect()
    } else {
        (0..=k.steps).collect()
    };
    for &s in &step_order {
        let mut order: Vec<usize> = (0..probes.len()).collect();
        if k.shuffle {
            for i in (1..order.len()).rev() {
                let j = (rnd() * (i + 1) as f64) as usize;
                order.swap(i, j.min(i));
            }
        }
        for p in order {
            if held[p][s] {
                at[p][s] = row;
                row += 1;
            }
        }
    }
    let cfg = DiffConfig::default();
    let mut b = RowsBuilder::new(row);
    let n = SHAPE[0];
    for (p, name) in probes.iter().enumerate() {
        let mut s = 0;
        while s <= k.steps {
            if !held[p][s] {
                s += 1;
                continue;
            }
            let from = s;
            while s <= k.steps && held[p][s] && (s == from || rnd() > k.p_split) {
                s += 1;
            }
            let segment: Vec<usize> = (from..s).collect();
            let (mut o, mut r) = (Vec::new(), Vec::new());
            for _ in &segment {
                let eps = [0.0, 1e-7, 1e-4, 1e-1][(rnd() * 4.0) as usize % 4];
                for _ in 0..n {
                    let v = (rnd() * 8.0 - 4.0) as f32;
                    r.push(v);
                    o.push(v + (eps * (rnd() * 2.0 - 1.0)) as f32);
                }
                if rnd() < 0.1 {
                    let last = o.len() - 1;
                    o[last] = f32::NAN;
                }
            }
            // Names as given to a run: now and then one that is not `base@s` (kept plain in
            // the run's place): a leading zero, or another probe's name.
            let names: Vec<Name> = segment
                .iter()
                .map(|&st| {
                    let x = rnd();
                    Name::from(if st > 0 && x < k.p_alias / 2.0 {
                        format!("{name}@0{st}")
                    } else if st > 0 && x < k.p_alias {
                        format!("alias.{p}.{st}")
                    } else if st == 0 {
                        name.clone()
                    } else {
                        format!("{name}@{st}")
                    })
                })
                .collect();
            let rows_at: Vec<usize> = segment.iter().map(|&st| at[p][st]).collect();
            if rnd() < 0.7 {
                b.put_run(
                    &rows_at,
                    compare_step_run(StepNames::Given(&names), side(&o), side(&r), &cfg),
                );
            } else {
                for (kk, nm) in names.iter().enumerate() {
                    b.put(
                        rows_at[kk],
                        compare(
                            nm,
                            Some(side(&o[kk * n..(kk + 1) * n])),
                            Some(side(&r[kk * n..(kk + 1) * n])),
                            &cfg,
                        ),
                    );
                }
            }
        }
    }
    b.finish()
}

fn check(rows: &Rows) -> Result<usize, TestCaseError> {
    let mut gains = NormWeightGains::new();
    gains.insert((0, QkKind::K), 3.0);
    let new = amplification(rows, 2.0, &gains);
    let old = amplification(&NoParts(rows), 2.0, &gains);
    prop_assert_eq!(&new, &old);
    let flow = Dataflow::of_steps(rows.len(), &|i| rows.row(i).split(), &|i| {
        rows.row(i).name()
    });
    // The report's own dataflow, worked out from its runs, is the one read from its rows.
    let from_runs = rows.dataflow();
    prop_assert_eq!(from_runs.len(), flow.len());
    for i in 0..rows.len() {
        prop_assert_eq!(
            from_runs.inputs(i).to_vec(),
            flow.inputs(i).to_vec(),
            "row {}",
            i
        );
        prop_assert_eq!(from_runs.is_fallback(i), flow.is_fallback(i), "row {}", i);
    }
    for m in [Measure::RelErr, Measure::NoiseRatio] {
        let bits = |v: Vec<Option<f64>>| {
            v.into_iter()
                .map(|g| g.map(f64::to_bits))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(
            bits(local_growths(rows, &flow, m)),
            bits(old_growths(&NoParts(rows), &flow, m))
        );
    }
    // How many of the section's rows are compact steps (the run-by-run way).
    Ok(new
        .rows
        .iter()
        .filter(|a| {
            (0..rows.len())
                .any(|i| rows.row(i).run().is_some() && rows.row(i).is_named(&a.norm.whole()))
        })
        .count())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn runs_read_as_the_old_per_row_algorithms(
        seed in any::<u64>(),
        steps in 1usize..8,
        layers in 1usize..3,
        fillers in prop::sample::select(vec![0usize, 1, 20]),
        shuffle in any::<bool>(),
        reverse in any::<bool>(),
        p_alias in prop::sample::select(vec![0.0f64, 0.15]),
        p_split in prop::sample::select(vec![0.0f64, 0.3]),
        cache in any::<bool>(),
    ) {
        let rows = build(seed, &Knobs { steps, layers, fillers, shuffle, reverse, p_alias, p_split, cache });
        check(&rows)?;
    }
}

/// The generator exercises the run-by-run way (not vacuous).
#[test]
fn compact_norm_steps_are_there() {
    let mut total = 0;
    for seed in 1..40u64 {
        let rows = build(
            seed,
            &Knobs {
                steps: 6,
                layers: 2,
                fillers: 1,
                shuffle: seed % 2 == 0,
                reverse: seed % 3 == 0,
                p_alias: 0.0,
                p_split: 0.3,
                cache: seed % 2 == 1,
            },
        );
        total += check(&rows).unwrap();
    }
    assert!(total > 100, "{total}");
}

/// The generator's cache probes give decode attention outputs a cache to read, kept compact
/// (the run-by-run way of `cache_reads`), whose error is above the step's own inputs' now and
/// then (not vacuous); and the prefill's `rope_k` and `v_proj` are now and then compared as the
/// first step of a run (that step is kept whole in the run's place, as every step 0 is:
/// `is_step_name`).
#[test]
fn compact_cache_reads_are_there() {
    let (mut compact, mut larger, mut prefill_runs) = (0, 0, 0);
    for seed in 1..40u64 {
        let rows = build(
            seed,
            &Knobs {
                steps: 6,
                layers: 2,
                fillers: 0,
                shuffle: seed % 2 == 0,
                reverse: seed % 3 == 0,
                p_alias: 0.0,
                p_split: 0.3,
                cache: true,
            },
        );
        check(&rows).unwrap();
        prefill_runs += rows.parts().map_or(0, |p| {
            p.runs
                .iter()
                .filter(|r| {
                    r.first() == 0
                        && r.steps() > 1
                        && (r.base().ends_with("rope_k") || r.base().ends_with("v_proj"))
                })
                .count()
        });
        let flow = Dataflow::of_steps(rows.len(), &|i| rows.row(i).split(), &|i| {
            rows.row(i).name()
        });
        for (i, e) in old_cache_reads(&NoParts(&rows), Measure::RelErr) {
            compact += usize::from(rows.row(i).run().is_some());
            let own = flow
                .inputs(i)
                .iter()
                .filter_map(|j| Measure::RelErr.value(rows.row(j)))
                .fold(0.0, f64::max);
            larger += usize::from(e > own);
        }
    }
    assert!(
        compact > 50 && larger > 20 && prefill_runs > 10,
        "{compact} {larger} {prefill_runs}"
    );
}

/// A prompt of one token, whose `rope_k` and `v_proj` are compared with their decode steps as
/// one run each (step 0 first): the run keeps step 0 whole, a plain row in its place (no step
/// 0 is kept compact), and the prefill's keys, off by 10%, are still what decode step 1's
/// attention reads from the cache, so `attn_out@1`, off by 1e-3 by itself, did not grow the
/// error. (A review's N1, session 44: no test reached `cache_reads`' `run.first() == 0`
/// branch; no run reaches it, its step 0 being a plain row.)
#[test]
fn a_run_from_the_prefill_gives_its_cache_write() {
    const L: &str = "model.layers.0.self_attn.";
    let r: Vec<f32> = vec![1.0, -2.0, 0.5, 3.0];
    let off = |f: f32| r.iter().map(|v| v * f).collect::<Vec<f32>>();
    let (exact, keys, attn) = (off(1.0), off(1.1), off(1.001));
    // (name, step, ours): execution order, step 0 then step 1.
    let rows: Vec<(String, usize, &[f32])> = vec![
        ("model.layers.0.input_layernorm".into(), 0, &exact),
        (format!("{L}q_proj"), 0, &exact),
        (format!("{L}k_proj"), 0, &exact),
        (format!("{L}v_proj"), 0, &exact),
        (format!("{L}rope_q"), 0, &exact),
        (format!("{L}rope_k"), 0, &keys),
        (format!("{L}attn_out"), 0, &exact),
        ("model.layers.0.input_layernorm@1".into(), 1, &exact),
        (format!("{L}q_proj@1"), 1, &exact),
        (format!("{L}k_proj@1"), 1, &exact),
        (format!("{L}v_proj@1"), 1, &exact),
        (format!("{L}rope_q@1"), 1, &exact),
        (format!("{L}rope_k@1"), 1, &exact),
        (format!("{L}cache_k@1"), 1, &exact),
        (format!("{L}cache_v@1"), 1, &exact),
        (format!("{L}attn_out@1"), 1, &attn),
    ];
    let cfg = DiffConfig::default();
    let mut b = RowsBuilder::new(rows.len());
    for (i, (name, _, ours)) in rows.iter().enumerate() {
        let base = name.split('@').next().unwrap_or(name);
        let in_run = base.ends_with("rope_k") || base.ends_with("v_proj");
        if in_run && !name.contains('@') {
            let at: Vec<usize> = rows
                .iter()
                .enumerate()
                .filter(|(_, (n, ..))| n.split('@').next() == Some(base))
                .map(|(j, _)| j)
                .collect();
            let names: Vec<Name> = at.iter().map(|&j| Name::from(rows[j].0.as_str())).collect();
            let o: Vec<f32> = at.iter().flat_map(|&j| rows[j].2.to_vec()).collect();
            let rf: Vec<f32> = at.iter().flat_map(|_| r.clone()).collect();
            b.put_run(
                &at,
                compare_step_run(StepNames::Given(&names), side(&o), side(&rf), &cfg),
            );
        } else if !in_run {
            b.put(i, compare(name, Some(side(ours)), Some(side(&r)), &cfg));
        }
    }
    let rows_built = b.finish();
    let runs = rows_built.parts().map_or(0, |p| {
        p.runs
            .iter()
            .filter(|r| r.first() == 0 && r.steps() == 2)
            .count()
    });
    assert_eq!(runs, 2, "rope_k and v_proj kept as runs from step 0");
    for (i, (name, step, _)) in rows.iter().enumerate() {
        let kept = rows_built.row(i).run().is_some();
        let in_run = name.contains("rope_k") || name.contains("v_proj");
        assert_eq!(kept, in_run && *step > 0, "{name}");
    }
    check(&rows_built).unwrap();
    let flow = Dataflow::of_steps(rows_built.len(), &|i| rows_built.row(i).split(), &|i| {
        rows_built.row(i).name()
    });
    let g = local_growths(&rows_built, &flow, Measure::RelErr);
    let at = rows.len() - 1;
    // 1e-3 over the prefill keys' 0.1: no growth (without the cache read, 1e-3 over f32's
    // floor of 1e-6: ~1,000).
    assert!(
        g[at].is_some_and(|g| (g - 0.01).abs() < 1e-3),
        "{:?}",
        g[at]
    );
}
