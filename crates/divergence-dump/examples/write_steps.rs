//! The time to write a decode dump, stacked or per step (docs/gpu.md, "With the stacked
//! writer"): a 64-token prefill and `STEPS` decode steps of 0.6B-shaped probes (595
//! probes of 128-3072 values per token, and the logits, 151,936 per token), bf16, written
//! with [`DumpWriter`] as `divergence run` writes them (each probe a fresh buffer, like a
//! probe copied from the device). Prints the time of the adds every 64 steps and the total.
//!
//!     cargo run --release -p divergence-dump --example write_steps -- 256 stacked /tmp/w.npz
//!     cargo run --release -p divergence-dump --example write_steps -- 256 per-step /tmp/w.npz
use std::time::Instant;

use divergence_dump::{DumpWriter, Meta, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: write_steps STEPS stacked|per-step OUT.npz";
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let [_, steps, layout, path] = args.as_slice() else {
        return Err(usage.into());
    };
    let (Some(steps), Some(layout)) = (steps.to_str(), layout.to_str()) else {
        return Err(usage.into());
    };
    let steps: usize = steps.parse()?;
    let stacked = match layout {
        "stacked" => true,
        "per-step" => false,
        other => return Err(format!("layout {other}: stacked or per-step").into()),
    };
    const VOCAB: usize = 151_936;
    let t = Instant::now();
    let mut w = DumpWriter::create(std::path::Path::new(path))?;
    if stacked {
        w.stack_steps();
    }
    let sizes: Vec<usize> = (0..595)
        .map(|i| [1024, 2048, 1024, 3072, 128][i % 5])
        .collect();
    let data: Vec<half::bf16> = (0..64 * VOCAB)
        .map(|i| half::bf16::from_f32(i as f32 * 1e-3))
        .collect();
    for s in 0..=steps {
        let tokens = if s == 0 { 64 } else { 1 };
        let name = |base: &str| {
            if s == 0 {
                base.to_string()
            } else {
                format!("{base}@{s}")
            }
        };
        for (k, &n) in sizes.iter().enumerate() {
            let probe = data[..tokens * n].to_vec();
            w.add(
                &name(&format!("model.layers.{k}.p")),
                &[1, tokens, n],
                TensorData::BF16(&probe),
            )?;
        }
        let logits = data[..tokens * VOCAB].to_vec();
        w.add(
            &name("lm_head"),
            &[1, tokens, VOCAB],
            TensorData::BF16(&logits),
        )?;
        if s % 64 == 0 {
            eprintln!("step {s}: {:.2} s", t.elapsed().as_secs_f64());
        }
    }
    let adds = t.elapsed().as_secs_f64();
    w.finish(Meta::default())?;
    eprintln!("adds {adds:.2} s, total {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}
