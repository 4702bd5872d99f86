//! Decoding with a KV cache (`divergence run --decode N`), on the committed tiny checkpoint.
//!
//! - Self-consistency: decode step `s` of prompt P plus ids D gives the probes of a one-pass
//!   prefill over `P + D[..s]` at its last position (the token axis cut to that position),
//!   within f32 noise (bf16: within a measured bound), and each layer's `cache_k@s` /
//!   `cache_v@s` are that prefill's `rope_k` / `v_proj` at the new token's slot.
//! - Step 0 of a decode run is the one-pass run, bit for bit (names, order, values).
//! - Every KV-cache fault: the prefill is bit-identical to the clean decode run, and the first
//!   probe (execution order) that differs from the clean decode run is the documented one.
//! - Bad input (`run_to_dump`): a clear error each.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::*;
use divergence_dump::{Dump, DumpWriter, Meta, TensorData};
use divergence_qwen3::{
    read_ids_file, run_to_dump, step_name, Checkpoint, DecodeIds, DecodeOptions, DeviceKind,
    FaultSpec, Faults, MemoryRecorder, ModelOptions, Policy, Precision, Probes, Qwen3, Recorded,
    RunOptions,
};

/// The decode ids of these tests (inside the tiny vocabulary of 512).
const DECODE: [u32; 4] = [11, 222, 333, 44];

fn prompt() -> Vec<u32> {
    read_ids_file(&tiny_model_dir().join("ids.txt")).unwrap_or_else(|e| panic!("{e}"))
}

fn load(dtype: DType, policy: Policy, faults: &[&str]) -> Qwen3 {
    let ckpt = Checkpoint::open(&tiny_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let specs: Vec<FaultSpec> = faults
        .iter()
        .map(|f| f.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    Qwen3::load(
        &ckpt,
        &Device::Cpu,
        &ModelOptions {
            dtype,
            policy,
            faults: Faults::new(specs),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Prefill over `prompt`, then one decode step per id of `decode`, every probe recorded.
fn decode_run(model: &Qwen3, prompt: &[u32], decode: &[u32]) -> MemoryRecorder {
    let mut rec = MemoryRecorder::default();
    {
        let mut probes = Probes::on(&mut rec);
        let mut cache = model
            .new_cache(prompt.len() + decode.len())
            .unwrap_or_else(|e| panic!("{e}"));
        model
            .prefill(prompt, &mut cache, &mut probes)
            .unwrap_or_else(|e| panic!("{e}"));
        for &id in decode {
            model
                .decode_step(id, &mut cache, &mut probes)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    rec
}

/// One prefill over `ids`, every probe recorded.
fn one_pass(model: &Qwen3, ids: &[u32]) -> MemoryRecorder {
    let mut rec = MemoryRecorder::default();
    model
        .forward(ids, &mut Probes::on(&mut rec))
        .unwrap_or_else(|e| panic!("{e}"));
    rec
}

/// The values of `p` at the last position of its token axis: the axis where `p` has `t`
/// elements and the decode probe (`like`) 1, every other axis equal.
fn last_position(p: &Recorded, like: &[usize], t: usize) -> Vec<f32> {
    assert_eq!(p.shape.len(), like.len(), "{}: rank", p.name);
    let axis = (0..like.len())
        .find(|&i| {
            like[i] == 1
                && p.shape[i] == t
                && (0..like.len()).all(|j| j == i || like[j] == p.shape[j])
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: {:?} has no token axis of {t} for {like:?}",
                p.name, p.shape
            )
        });
    let outer: usize = p.shape[..axis].iter().product();
    let inner: usize = p.shape[axis + 1..].iter().product();
    let v = p.data.to_f32();
    (0..outer)
        .flat_map(|o| v[(o * t + t - 1) * inner..(o * t + t) * inner].to_vec())
        .collect()
}

/// (relative L2 error, max abs error / max |reference|) of `ours` against `reference`.
fn rel_errors(ours: &[f32], reference: &[f32]) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len());
    let (mut num, mut den, mut max_err, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(reference) {
        let d = a as f64 - b as f64;
        num += d * d;
        den += (b as f64) * (b as f64);
        max_err = max_err.max(d.abs());
        max_ref = max_ref.max((b as f64).abs());
    }
    (
        (num / den.max(f64::MIN_POSITIVE)).sqrt(),
        max_err / max_ref.max(f64::MIN_POSITIVE),
    )
}

/// Splits a probe name into its plain name and step.
fn split_step(name: &str) -> (&str, usize) {
    match name.rsplit_once('@') {
        Some((base, s)) => (base, s.parse().unwrap_or_else(|_| panic!("{name}: step"))),
        None => (name, 0),
    }
}

/// Checks decode step `s` against one-pass prefills of `P + D[..s]`; returns the worst
/// (rel L2, rel max) over every probe of every step, and the probe it was at.
fn self_consistency(dtype: DType, policy: Policy) -> (f64, f64, String) {
    let model = load(dtype, policy, &[]);
    let p = prompt();
    let decoded = decode_run(&model, &p, &DECODE);
    let mut worst = (0.0f64, 0.0f64, String::new());
    let mut compared = 0;
    for s in 1..=DECODE.len() {
        let mut ids = p.clone();
        ids.extend_from_slice(&DECODE[..s]);
        let t = ids.len();
        let full = one_pass(&model, &ids);
        for probe in decoded.probes.iter().filter(|r| split_step(&r.name).1 == s) {
            let base = split_step(&probe.name).0;
            // cache_k / cache_v: the prefill's rope_k / v_proj at the new token's slot.
            let (source, like) = if let Some(layer) = base.strip_suffix(".cache_k") {
                (format!("{layer}.rope_k"), probe.shape.clone())
            } else if let Some(layer) = base.strip_suffix(".cache_v") {
                let v = full
                    .get(&format!("{layer}.v_proj"))
                    .unwrap_or_else(|| panic!("{layer}.v_proj"));
                (format!("{layer}.v_proj"), vec![1, 1, v.shape[2]])
            } else {
                (base.to_string(), probe.shape.clone())
            };
            let reference = full
                .get(&source)
                .unwrap_or_else(|| panic!("{source} missing from the one-pass run"));
            let want = last_position(reference, &like, t);
            let (rel, max) = rel_errors(&probe.data.to_f32(), &want);
            if rel.max(max) > worst.0.max(worst.1) {
                worst = (rel, max, probe.name.clone());
            }
            compared += 1;
        }
    }
    // 81 probes plus 2 cache probes per layer (4 layers) per step
    assert_eq!(compared, DECODE.len() * (81 + 8));
    worst
}

#[test]
fn decode_steps_equal_one_pass_prefills_f32() {
    // Measured (CPU, x86-64): torch worst rel L2 9.2e-7 / rel max 1.4e-6, fused 1.3e-6 /
    // 2.0e-6: f32 summation-order noise.
    for policy in [Policy::Torch, Policy::Fused] {
        let (rel, max, at) = self_consistency(DType::F32, policy);
        eprintln!("f32 {policy:?}: worst rel L2 {rel:.3e}, rel max {max:.3e} at {at}");
        assert!(
            rel < 1e-5 && max < 1e-5,
            "{policy:?}: {rel:e} {max:e} at {at}"
        );
    }
}

#[test]
fn decode_steps_equal_one_pass_prefills_bf16() {
    // Measured on the tiny fixture (CPU, x86-64): torch worst rel L2 1.9e-8 / rel max 4.8e-8,
    // fused 1.5e-5 / 4.5e-5 (a one-row matmul sums in another order than the T-row one; bf16
    // rounding absorbs most of it, an occasional flip of one ulp remains). The bound allows
    // flips of one bf16 ulp (2^-8 relative) on other CPUs' kernels, far below a real bug.
    for policy in [Policy::Torch, Policy::Fused] {
        let (rel, max, at) = self_consistency(DType::BF16, policy);
        eprintln!("bf16 {policy:?}: worst rel L2 {rel:.3e}, rel max {max:.3e} at {at}");
        assert!(
            rel < 2e-3 && max < 1e-2,
            "{policy:?}: {rel:e} {max:e} at {at}"
        );
    }
}

#[test]
fn step_0_is_the_one_pass_run_bit_for_bit_and_steps_follow_in_order() {
    for (dtype, policy) in [
        (DType::F32, Policy::Torch),
        (DType::BF16, Policy::Torch),
        (DType::F16, Policy::Fused),
    ] {
        let model = load(dtype, policy, &[]);
        let p = prompt();
        let decoded = decode_run(&model, &p, &DECODE);
        let plain = one_pass(&model, &p);
        let n0 = plain.probes.len();
        assert_eq!(
            &decoded.probes[..n0],
            plain.probes.as_slice(),
            "{dtype:?} {policy:?}"
        );
        // Then each step: the prefill's names with @s, cache_k and cache_v after each rope_k.
        let mut want: Vec<String> = Vec::new();
        for s in 1..=DECODE.len() {
            for name in plain.names() {
                want.push(step_name(name, s).into_owned());
                if let Some(layer) = name.strip_suffix(".rope_k") {
                    want.push(format!("{layer}.cache_k@{s}"));
                    want.push(format!("{layer}.cache_v@{s}"));
                }
            }
        }
        let got: Vec<&str> = decoded.names()[n0..].to_vec();
        assert_eq!(got, want, "{dtype:?} {policy:?}");
        // shapes: the one-pass shapes with a token axis of 1
        let lm = decoded.get("lm_head@4").expect("lm_head@4");
        assert_eq!(lm.shape, vec![1, 1, 512]);
        let ck = decoded
            .get("model.layers.3.self_attn.cache_k@2")
            .expect("cache_k@2");
        assert_eq!(ck.shape, vec![1, 2, 1, 32]);
        let cos = decoded.get("model.rotary_emb@1").expect("rotary_emb@1");
        assert_eq!(cos.shape, vec![1, 1, 32]);
        if dtype == DType::BF16 {
            assert!(matches!(lm.data, divergence_qwen3::HostData::BF16(_)));
            assert!(matches!(ck.data, divergence_qwen3::HostData::BF16(_)));
        }
    }
}

/// The first probe (execution order) whose values differ at all between two runs, after
/// checking that both recorded the same names.
fn first_difference(clean: &MemoryRecorder, faulty: &MemoryRecorder) -> Option<String> {
    assert_eq!(
        clean.names().iter().map(|n| &**n).collect::<Vec<_>>(),
        faulty.names()
    );
    clean
        .probes
        .iter()
        .zip(&faulty.probes)
        .find(|(a, b)| a.data != b.data)
        .map(|(a, _)| a.name.clone())
}

/// Runs `fault` and checks: the prefill is bit-identical to the clean decode run, the first
/// probe that differs is `want`, and the error reaches the last step's logits.
fn check_fault(dtype: DType, policy: Policy, fault: &str, want: &str) {
    let p = prompt();
    let clean = decode_run(&load(dtype, policy, &[]), &p, &DECODE);
    let faulty = decode_run(&load(dtype, policy, &[fault]), &p, &DECODE);
    let n0 = clean
        .probes
        .iter()
        .take_while(|r| !r.name.contains('@'))
        .count();
    assert_eq!(
        clean.probes[..n0],
        faulty.probes[..n0],
        "--inject {fault} ({dtype:?} {policy:?}): the prefill changed"
    );
    let first = first_difference(&clean, &faulty);
    assert_eq!(
        first.as_deref(),
        Some(want),
        "--inject {fault} ({dtype:?} {policy:?})"
    );
    let last = format!("lm_head@{}", DECODE.len());
    assert_ne!(
        clean.get(&last).map(|r| &r.data),
        faulty.get(&last).map(|r| &r.data),
        "--inject {fault}: the logits of the last step are unchanged"
    );
}

const CACHE_K0: &str = "model.layers.0.self_attn.cache_k@1";

/// Every KV-cache fault with where it enters (the fault.rs table).
const FAULTS: [(&str, &str); 9] = [
    ("decode-pos=1", "model.rotary_emb@1"),
    ("decode-pos=-3", "model.rotary_emb@1"),
    ("decode-pos-frozen", "model.rotary_emb@2"),
    ("cache-pre-rope", CACHE_K0),
    ("cache-pre-norm", CACHE_K0),
    ("cache-overwrite", CACHE_K0),
    ("cache-overwrite=last", CACHE_K0),
    ("cache-dtype=bf16", CACHE_K0),
    ("decode-mask", "model.layers.0.self_attn.attn_out@1"),
];

#[test]
fn every_cache_fault_enters_where_documented_f32() {
    for (fault, want) in FAULTS {
        check_fault(DType::F32, Policy::Torch, fault, want);
    }
    check_fault(DType::F32, Policy::Torch, "cache-dtype=f16", CACHE_K0);
    // @LAYERS on a cache fault: it enters in that layer
    check_fault(
        DType::F32,
        Policy::Torch,
        "cache-pre-norm@2",
        "model.layers.2.self_attn.cache_k@1",
    );
    check_fault(
        DType::F32,
        Policy::Torch,
        "decode-mask@1-3",
        "model.layers.1.self_attn.attn_out@1",
    );
}

#[test]
fn every_cache_fault_enters_where_documented_in_bf16_and_fused() {
    for (dtype, policy) in [(DType::BF16, Policy::Torch), (DType::F32, Policy::Fused)] {
        for (fault, want) in FAULTS {
            if fault.starts_with("cache-dtype") && dtype == DType::BF16 {
                continue;
            }
            check_fault(dtype, policy, fault, want);
        }
    }
    // a bf16 cache under f16 activations (fewer mantissa bits)
    check_fault(DType::F16, Policy::Torch, "cache-dtype=bf16", CACHE_K0);
}

#[test]
fn cache_faults_hold_what_they_say() {
    let p = prompt();
    let clean = decode_run(&load(DType::F32, Policy::Torch, &[]), &p, &DECODE);
    let get = |rec: &MemoryRecorder, name: &str| -> Vec<f32> {
        rec.get(name)
            .unwrap_or_else(|| panic!("{name}"))
            .data
            .to_f32()
    };
    // cache-overwrite: the new token's slot keeps its zeros
    let over = decode_run(
        &load(DType::F32, Policy::Torch, &["cache-overwrite=last"]),
        &p,
        &DECODE,
    );
    assert!(get(&over, CACHE_K0).iter().all(|&x| x == 0.0));
    assert!(get(&over, "model.layers.0.self_attn.cache_v@1")
        .iter()
        .all(|&x| x == 0.0));
    // cache-pre-rope: the cache holds k_norm's output (before RoPE) at the new slot
    let pre = decode_run(
        &load(DType::F32, Policy::Torch, &["cache-pre-rope"]),
        &p,
        &DECODE,
    );
    let k_norm = pre
        .get("model.layers.0.self_attn.k_norm@1")
        .expect("k_norm@1");
    // k_norm is [1, 1, kv, hd], the cache slot [1, kv, 1, hd]: the same order
    assert_eq!(get(&pre, CACHE_K0), k_norm.data.to_f32());
    // cache-pre-norm: the cache holds rotated k_proj, not rotated k_norm
    let pre_norm = decode_run(
        &load(DType::F32, Policy::Torch, &["cache-pre-norm"]),
        &p,
        &DECODE,
    );
    assert_ne!(get(&pre_norm, CACHE_K0), get(&clean, CACHE_K0));
    // cache-dtype=bf16: k rounded to bf16
    let rounded = decode_run(
        &load(DType::F32, Policy::Torch, &["cache-dtype=bf16"]),
        &p,
        &DECODE,
    );
    let want: Vec<f32> = get(&clean, CACHE_K0)
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect();
    assert_eq!(get(&rounded, CACHE_K0), want);
    // decode-pos-frozen: step 2 rotates at position t, like step 1
    let frozen = decode_run(
        &load(DType::F32, Policy::Torch, &["decode-pos-frozen"]),
        &p,
        &DECODE,
    );
    assert_eq!(
        get(&frozen, "model.rotary_emb@2"),
        get(&clean, "model.rotary_emb@1")
    );
    // decode-pos=1: step 1 rotates at position t + 1, where the clean step 2 does
    let shifted = decode_run(
        &load(DType::F32, Policy::Torch, &["decode-pos=1"]),
        &p,
        &DECODE,
    );
    assert_eq!(
        get(&shifted, "model.rotary_emb@1"),
        get(&clean, "model.rotary_emb@2")
    );
    // decode-mask: where it enters (layer 0, step 1) the cache itself is right; the wrong
    // attention output then reaches every later layer's k and v.
    let masked = decode_run(
        &load(DType::F32, Policy::Torch, &["decode-mask"]),
        &p,
        &DECODE,
    );
    for name in [CACHE_K0, "model.layers.0.self_attn.cache_v@1"] {
        assert_eq!(get(&masked, name), get(&clean, name), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// run_to_dump: metadata, --decode-from, errors.

fn options(out: &Path, decode: Option<DecodeOptions>, faults: &[&str]) -> RunOptions {
    RunOptions {
        model_dir: tiny_model_dir(),
        input_ids: prompt(),
        device: DeviceKind::Cpu,
        precision: Precision::F32,
        policy: Policy::Torch,
        faults: faults
            .iter()
            .map(|f| f.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect(),
        out: Some(out.to_path_buf()),
        repeat: 1,
        replay: None,
        decode,
        max_memory: None,
    }
}

fn given(steps: Option<usize>, ids: &[u32]) -> Option<DecodeOptions> {
    Some(DecodeOptions {
        steps,
        ids: DecodeIds::Given(ids.to_vec()),
    })
}

fn from(path: &Path) -> Option<DecodeOptions> {
    Some(DecodeOptions {
        steps: None,
        ids: DecodeIds::From(path.to_path_buf()),
    })
}

/// A dump with only metadata `extra` (and `input_ids`) set, and one tensor.
fn write_ref(path: &Path, input_ids: Option<Vec<i64>>, extra: serde_json::Value) {
    let mut w = DumpWriter::create(path).unwrap_or_else(|e| panic!("{e}"));
    w.add("x", &[1], TensorData::F32(&[0.0]))
        .unwrap_or_else(|e| panic!("{e}"));
    let extra = match extra {
        serde_json::Value::Object(m) => m.into_iter().collect(),
        _ => Default::default(),
    };
    w.finish(Meta {
        input_ids,
        extra,
        ..Meta::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_decode_dump_records_its_steps_and_decode_from_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("decode.npz");
    let summary = run_to_dump(&options(&out, given(Some(3), &DECODE[..3]), &[]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.decode_steps, 3);
    assert_eq!(summary.probes, 81 + 3 * 89);
    let dump = Dump::open(&out).unwrap_or_else(|e| panic!("{e}"));
    let meta = dump.meta().expect("metadata");
    assert_eq!(meta.extra["decode_steps"], serde_json::json!(3));
    assert_eq!(meta.extra["decode_ids"], serde_json::json!([11, 222, 333]));
    assert_eq!(meta.extra["decode_source"], serde_json::json!("given"));
    let prompt_ids: Vec<i64> = prompt().iter().map(|&i| i as i64).collect();
    assert_eq!(meta.input_ids.as_deref(), Some(prompt_ids.as_slice()));
    assert_eq!(meta.order.len(), summary.probes);
    assert_eq!(&*meta.order[81], "model.embed_tokens@1");
    assert_eq!(meta.order.last().map(|n| &**n), Some("lm_head@3"));
    assert_eq!(
        dump.original_dtype("model.layers.0.self_attn.cache_k@1")
            .as_deref(),
        Some("float32")
    );
    // Stored stacked: one `@steps` member per probe, read back as the steps.
    assert_eq!(
        meta.dtypes
            .get("model.layers.0.self_attn.cache_k@steps")
            .map(String::as_str),
        Some("float32")
    );
    assert_eq!(dump.names().len(), summary.probes);
    assert_eq!(
        dump.shape("model.layers.0.self_attn.cache_k@3"),
        dump.shape("model.layers.0.self_attn.cache_k@1")
    );

    // --decode-from that dump: the same ids and steps, decode_source copied
    let again = dir.path().join("again.npz");
    run_to_dump(&options(&again, from(&out), &[])).unwrap_or_else(|e| panic!("{e}"));
    let meta2 = Dump::open(&again)
        .unwrap_or_else(|e| panic!("{e}"))
        .meta()
        .cloned()
        .expect("metadata");
    assert_eq!(meta2.extra["decode_ids"], meta.extra["decode_ids"]);
    assert_eq!(meta2.order, meta.order);

    // a reference's own decode_source is copied
    let reference = dir.path().join("ref.npz");
    write_ref(
        &reference,
        Some(prompt_ids.clone()),
        serde_json::json!({"decode_ids": [5, 6], "decode_source": "greedy", "decode_steps": 2}),
    );
    let third = dir.path().join("third.npz");
    let s = run_to_dump(&options(&third, from(&reference), &[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.decode_steps, 2);
    let meta3 = Dump::open(&third)
        .unwrap_or_else(|e| panic!("{e}"))
        .meta()
        .cloned()
        .expect("metadata");
    assert_eq!(meta3.extra["decode_source"], serde_json::json!("greedy"));
    assert_eq!(meta3.extra["decode_ids"], serde_json::json!([5, 6]));

    // without --decode, no decode metadata
    let plain = dir.path().join("plain.npz");
    run_to_dump(&options(&plain, None, &[])).unwrap_or_else(|e| panic!("{e}"));
    let meta4 = Dump::open(&plain)
        .unwrap_or_else(|e| panic!("{e}"))
        .meta()
        .cloned()
        .expect("metadata");
    assert!(meta4.extra.is_empty(), "{:?}", meta4.extra);
    assert_eq!(meta4.order.len(), 81);

    // --repeat times the whole prefill + decode, probes off
    let timed = RunOptions {
        out: None,
        repeat: 2,
        ..options(&plain, given(None, &DECODE), &[])
    };
    let s = run_to_dump(&timed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.forward_times.len(), s.decode_steps), (2, 4));
}

#[test]
fn bad_decode_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.npz");
    let err =
        |opts: RunOptions| -> String { run_to_dump(&opts).expect_err("must fail").to_string() };
    let prompt_ids: Vec<i64> = prompt().iter().map(|&i| i as i64).collect();

    let e = err(options(&out, given(Some(2), &[1, 2, 3]), &[]));
    assert!(
        e.contains("--decode 2: --decode-ids has 3 decode ids"),
        "{e}"
    );
    let e = err(options(&out, given(None, &[1, 512]), &[]));
    assert!(
        e.contains("--decode-ids: decode token id 512 is outside the vocabulary"),
        "{e}"
    );
    let e = err(options(&out, given(None, &[]), &[]));
    assert!(e.contains("no decode ids"), "{e}");

    // --decode-from: no decode_ids, other input_ids, no input_ids, bad ids, not a dump
    let no_ids = dir.path().join("no_ids.npz");
    write_ref(&no_ids, Some(prompt_ids.clone()), serde_json::json!({}));
    let e = err(options(&out, from(&no_ids), &[]));
    assert!(
        e.contains("no_ids.npz: its metadata has no decode_ids"),
        "{e}"
    );
    let other = dir.path().join("other.npz");
    write_ref(
        &other,
        Some(vec![1, 2]),
        serde_json::json!({"decode_ids": [3]}),
    );
    let e = err(options(&out, from(&other), &[]));
    assert!(
        e.contains("recorded other input_ids (2 tokens) than this prompt (16 tokens)"),
        "{e}"
    );
    let unchecked = dir.path().join("unchecked.npz");
    write_ref(&unchecked, None, serde_json::json!({"decode_ids": [3]}));
    let e = err(options(&out, from(&unchecked), &[]));
    assert!(e.contains("records no input_ids"), "{e}");
    for (bad, what) in [
        (
            serde_json::json!({"decode_ids": [3, -1]}),
            "decode_ids: -1 is not a token id",
        ),
        (
            serde_json::json!({"decode_ids": "3"}),
            "decode_ids is not a list of token ids",
        ),
        (serde_json::json!({"decode_ids": []}), "no decode ids"),
        // the metadata contradicts itself: `diff` refuses such a reference too
        (
            serde_json::json!({"decode_ids": [3, 4], "decode_steps": 1}),
            "metadata says 1 decode steps but holds 2 decode_ids",
        ),
        (
            serde_json::json!({"decode_ids": [3, 4], "decode_steps": "two"}),
            "metadata decode_steps is \"two\", not a step count",
        ),
    ] {
        let path = dir.path().join("bad.npz");
        write_ref(&path, Some(prompt_ids.clone()), bad);
        let e = err(options(&out, from(&path), &[]));
        assert!(e.contains(what), "{e}");
    }
    let e = err(options(&out, from(&dir.path().join("missing.npz")), &[]));
    assert!(
        e.contains("--decode-from") && e.contains("missing.npz"),
        "{e}"
    );
    let reference = dir.path().join("ref.npz");
    write_ref(
        &reference,
        Some(prompt_ids.clone()),
        serde_json::json!({"decode_ids": [3, 4]}),
    );
    let e = err(RunOptions {
        decode: Some(DecodeOptions {
            steps: Some(3),
            ids: DecodeIds::From(reference.clone()),
        }),
        ..options(&out, None, &[])
    });
    assert!(
        e.contains("--decode 3:") && e.contains("has 2 decode ids"),
        "{e}"
    );

    // --replay with --decode
    let e = err(RunOptions {
        replay: Some(fixtures().join("ref").join("tiny-qwen3.f32.eager.npz")),
        ..options(&out, given(None, &[3]), &[])
    });
    assert!(
        e.contains("--replay: cannot be combined with --decode"),
        "{e}"
    );

    // decode faults without --decode
    for fault in ["decode-mask", "cache-pre-rope@1", "decode-pos=2"] {
        let e = err(options(&out, None, &[fault]));
        assert!(e.contains("acts only on decode steps"), "{fault}: {e}");
    }
    // a negative decode position
    let e = err(options(&out, given(None, &[3]), &["decode-pos=-17"]));
    assert!(
        e.contains("decode-pos=-17") && e.contains("negative position"),
        "{e}"
    );
    assert!(!out.exists(), "a failed run wrote {}", out.display());
    // -16 is position 0: fine
    run_to_dump(&options(&out, given(None, &[3]), &["decode-pos=-16"]))
        .unwrap_or_else(|e| panic!("{e}"));
    // cache-dtype that is not lower precision than the activations
    for (precision, fault) in [
        (Precision::BF16, "cache-dtype=bf16"),
        (Precision::BF16, "cache-dtype=f16"),
        (Precision::F16, "cache-dtype=f16"),
    ] {
        let e = err(RunOptions {
            precision,
            ..options(&out, given(None, &[3]), &[fault])
        });
        assert!(e.contains("not lower precision"), "{fault}: {e}");
    }
}

#[test]
fn the_cache_refuses_misuse() {
    let model = load(DType::F32, Policy::Torch, &[]);
    let p = prompt();
    let mut probes = Probes::off();
    let mut cache = model
        .new_cache(p.len() + 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = model
        .decode_step(3, &mut cache, &mut probes)
        .expect_err("not prefilled")
        .to_string();
    assert!(e.contains("needs a prefilled cache"), "{e}");
    model
        .prefill(&p, &mut cache, &mut probes)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cache.len(), cache.prompt_len()), (p.len(), p.len()));
    let e = model
        .prefill(&p, &mut cache, &mut probes)
        .expect_err("twice")
        .to_string();
    assert!(e.contains("already holds 16 tokens"), "{e}");
    model
        .decode_step(3, &mut cache, &mut probes)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = model
        .decode_step(3, &mut cache, &mut probes)
        .expect_err("full")
        .to_string();
    assert!(e.contains("the cache is full (17 tokens)"), "{e}");
    let mut small = model.new_cache(2).unwrap_or_else(|e| panic!("{e}"));
    let e = model
        .prefill(&p, &mut small, &mut probes)
        .expect_err("too small")
        .to_string();
    assert!(e.contains("does not fit a cache of 2 tokens"), "{e}");
    let mut cache = model
        .new_cache(p.len() + 1)
        .unwrap_or_else(|e| panic!("{e}"));
    model
        .prefill(&p, &mut cache, &mut probes)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = model
        .decode_step(600, &mut cache, &mut probes)
        .expect_err("vocab")
        .to_string();
    assert!(
        e.contains("decode ids: token id 600 is outside the vocabulary"),
        "{e}"
    );
}
