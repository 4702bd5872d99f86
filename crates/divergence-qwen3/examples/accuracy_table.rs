//! Prints the per-probe accuracy table of docs/accuracy.md: our candle Qwen3 on the committed
//! tiny-qwen3 fixture against the committed transformers dumps, for f32 / bf16 and the torch /
//! fused policies.
//!
//!     cargo run -p divergence-qwen3 --example accuracy_table
//!
//! Relative L2 error = ||ours - ref||₂ / ||ref||₂ over all elements (f64), "exact" = every
//! element equal. The same numbers are asserted by tests/reference.rs.

use std::path::PathBuf;

use candle_core::{DType, Device};
use divergence_dump::{Dump, Values};
use divergence_qwen3::{
    read_ids_file, Checkpoint, Faults, MemoryRecorder, ModelOptions, Policy, Probes, Qwen3,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let dir = root.join("tiny-qwen3");
    let ckpt = Checkpoint::open(&dir)?;
    let ids = read_ids_file(&dir.join("ids.txt"))?;
    let run = |dtype: DType, policy: Policy| -> Result<MemoryRecorder, divergence_qwen3::Error> {
        let model = Qwen3::load(
            &ckpt,
            &Device::Cpu,
            &ModelOptions {
                dtype,
                policy,
                faults: Faults::none(),
            },
        )?;
        let mut rec = MemoryRecorder::default();
        model.forward(&ids, &mut Probes::on(&mut rec))?;
        Ok(rec)
    };
    let ref32 = Dump::open(&root.join("ref/tiny-qwen3.f32.eager.npz"))?;
    let ref16 = Dump::open(&root.join("ref/tiny-qwen3.bf16.eager.npz"))?;
    let columns = [
        ("f32 torch", run(DType::F32, Policy::Torch)?, &ref32),
        ("f32 fused", run(DType::F32, Policy::Fused)?, &ref32),
        ("bf16 torch", run(DType::BF16, Policy::Torch)?, &ref16),
        ("bf16 fused", run(DType::BF16, Policy::Fused)?, &ref16),
    ];
    print!("| probe |");
    for (label, _, _) in &columns {
        print!(" {label} |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(columns.len()));
    let names: Vec<String> = columns[0].1.names().iter().map(|s| s.to_string()).collect();
    let mut top1 = Vec::new();
    for (_, rec, reference) in &columns {
        top1.push(top1_agreement(rec, reference)?);
    }
    for name in &names {
        print!("| `{name}` |");
        for (_, rec, reference) in &columns {
            let ours = rec.get(name).ok_or("missing probe")?.data.to_f32();
            let r = reference.read(name)?;
            let theirs: Vec<f64> = match &r.values {
                Values::F32(v) => v.iter().map(|&x| x as f64).collect(),
                Values::F64(v) => v.clone(),
            };
            let (mut num, mut den, mut differ) = (0.0f64, 0.0f64, 0usize);
            for (a, b) in ours.iter().zip(&theirs) {
                let d = *a as f64 - b;
                num += d * d;
                den += b * b;
                differ += usize::from(d != 0.0);
            }
            if differ == 0 {
                print!(" exact |");
            } else {
                print!(" {:.2e} ({differ}/{}) |", (num / den).sqrt(), ours.len());
            }
        }
        println!();
    }
    print!("| **top-1 agreement** |");
    for (agree, rows) in &top1 {
        print!(" {agree}/{rows} |");
    }
    println!();
    Ok(())
}

fn top1_agreement(
    rec: &MemoryRecorder,
    reference: &Dump,
) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let p = rec.get("lm_head").ok_or("no lm_head probe")?;
    let vocab = *p.shape.last().ok_or("scalar logits")?;
    let ours = p.data.to_f32();
    let theirs: Vec<f64> = match reference.read("lm_head")?.values {
        Values::F32(v) => v.into_iter().map(f64::from).collect(),
        Values::F64(v) => v,
    };
    let argmax = |xs: &mut dyn Iterator<Item = f64>| {
        xs.enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    };
    let rows = ours.len() / vocab;
    let mut agree = 0;
    for t in 0..rows {
        let a = argmax(&mut ours[t * vocab..(t + 1) * vocab].iter().map(|&x| x as f64));
        let b = argmax(&mut theirs[t * vocab..(t + 1) * vocab].iter().copied());
        agree += usize::from(a == b);
    }
    Ok((agree, rows))
}
