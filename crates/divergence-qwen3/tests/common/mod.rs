//! Shared helpers of the integration tests: run the model on the committed tiny-qwen3
//! fixture and compare every probe with a committed transformers dump.

#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Device};
use divergence_dump::{Dump, Values};
use divergence_qwen3::{
    read_ids_file, Checkpoint, Faults, MemoryRecorder, ModelOptions, Policy, Probes, Qwen3,
};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn tiny_model_dir() -> PathBuf {
    fixtures().join("tiny-qwen3")
}

pub fn reference(name: &str) -> Dump {
    let path = fixtures().join("ref").join(name);
    Dump::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the tiny model with every probe recorded in memory.
pub fn run_tiny(dtype: DType, policy: Policy, faults: Faults) -> MemoryRecorder {
    let dir = tiny_model_dir();
    let ckpt = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let ids = read_ids_file(&dir.join("ids.txt")).unwrap_or_else(|e| panic!("{e}"));
    let model = Qwen3::load(
        &ckpt,
        &Device::Cpu,
        &ModelOptions {
            dtype,
            policy,
            faults,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rec = MemoryRecorder::default();
    model
        .forward(&ids, &mut Probes::on(&mut rec))
        .unwrap_or_else(|e| panic!("{e}"));
    rec
}

/// Per-probe comparison of ours against the reference.
#[derive(Debug, Clone)]
pub struct ProbeCmp {
    pub name: String,
    pub rel_l2: f64,
    pub max_abs: f64,
    pub bit_exact: bool,
    /// Elements that differ at all.
    pub n_diff: usize,
    pub n: usize,
}

pub fn values_f64(v: &Values) -> Vec<f64> {
    match v {
        Values::F32(x) => x.iter().map(|&a| a as f64).collect(),
        Values::F64(x) => x.clone(),
    }
}

/// Compares every probe; panics if the name lists (in order) or shapes differ.
pub fn compare(ours: &MemoryRecorder, reference: &Dump) -> Vec<ProbeCmp> {
    let ref_order = reference
        .meta()
        .map(|m| m.order.clone())
        .unwrap_or_else(|| reference.names().to_vec().into());
    let our_names: Vec<std::sync::Arc<str>> = ours.names().iter().map(|&s| s.into()).collect();
    assert_eq!(
        our_names, ref_order,
        "probe names/order differ from the reference"
    );
    let mut out = Vec::new();
    for p in &ours.probes {
        let r = reference.read(&p.name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.shape, r.shape, "shape of {}", p.name);
        let a: Vec<f64> = p.data.to_f32().iter().map(|&x| x as f64).collect();
        let b = values_f64(&r.values);
        let mut num = 0.0;
        let mut den = 0.0;
        let mut max_abs: f64 = 0.0;
        let mut n_diff = 0;
        for (x, y) in a.iter().zip(&b) {
            let d = x - y;
            num += d * d;
            den += y * y;
            max_abs = max_abs.max(d.abs());
            if x != y {
                n_diff += 1;
            }
        }
        let rel_l2 = if den > 0.0 {
            (num / den).sqrt()
        } else {
            num.sqrt()
        };
        out.push(ProbeCmp {
            name: p.name.clone(),
            rel_l2,
            max_abs,
            bit_exact: n_diff == 0,
            n_diff,
            n: a.len(),
        });
    }
    out
}

/// Fraction of positions whose argmax over the vocabulary agrees.
pub fn top1_agreement(ours: &MemoryRecorder, reference: &Dump) -> (usize, usize) {
    let p = ours.get("lm_head").expect("lm_head probe");
    let r = reference.read("lm_head").unwrap_or_else(|e| panic!("{e}"));
    let vocab = *p.shape.last().expect("logits rank");
    let a = p.data.to_f32();
    let b = values_f64(&r.values);
    let argmax = |row: &mut dyn Iterator<Item = f64>| -> usize {
        let mut best = (0usize, f64::NEG_INFINITY);
        for (i, v) in row.enumerate() {
            if v > best.1 {
                best = (i, v);
            }
        }
        best.0
    };
    let rows = a.len() / vocab;
    let mut agree = 0;
    for t in 0..rows {
        let ia = argmax(&mut a[t * vocab..(t + 1) * vocab].iter().map(|&x| x as f64));
        let ib = argmax(&mut b[t * vocab..(t + 1) * vocab].iter().copied());
        if ia == ib {
            agree += 1;
        }
    }
    (agree, rows)
}

pub fn print_table(title: &str, cmp: &[ProbeCmp]) {
    eprintln!("== {title}");
    for c in cmp {
        eprintln!(
            "{:<48} rel_l2 {:>10.3e}  max_abs {:>10.3e}  {}",
            c.name,
            c.rel_l2,
            c.max_abs,
            if c.bit_exact {
                "bit-exact".to_string()
            } else {
                format!("{}/{} differ", c.n_diff, c.n)
            }
        );
    }
}
