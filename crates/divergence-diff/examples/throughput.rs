//! Rough throughput check of the metrics loop (not a benchmark with a committed method):
//! `cargo run --release -p divergence-diff --example throughput -- [millions of elements, default 100]`.
//! Compares two f32 slices (and f32 vs f64, f16 / bf16 bytes vs f32) and prints GB/s of input read.

use std::time::Instant;

use divergence_diff::{compare, DiffConfig, Side, Status, ValuesRef};

/// Compares `ours` with `reference` (both of shape `[n]`) once; returns seconds and the status.
fn timed(ours: (ValuesRef<'_>, &str), reference: (ValuesRef<'_>, &str)) -> (f64, Status) {
    let shape = [ours.0.len()];
    let side = |(values, dtype)| Side {
        shape: &shape,
        values,
        dtype,
    };
    let t = Instant::now();
    let row = compare(
        "x",
        Some(side(ours)),
        Some(side(reference)),
        &DiffConfig::default(),
    );
    (t.elapsed().as_secs_f64(), row.status)
}

fn main() {
    let millions: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let n = millions * 1_000_000;
    let a: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 * 0.01).sin()).collect();
    let b: Vec<f32> = a.iter().map(|x| x * 1.0001).collect();
    let b32 = (ValuesRef::F32(&b), "float32");
    for round in 0..3 {
        let (s, status) = timed((ValuesRef::F32(&a), "float32"), b32);
        let gb = (2 * n * 4) as f64 / 1e9;
        println!(
            "round {round}: f32/f32 {n} elements/side: {s:.3} s, {:.2} GB/s ({} threads), status {}",
            gb / s,
            rayon::current_num_threads(),
            status
        );
    }
    // Baseline: the cheapest pass over the same bytes (sum of squares of both sides, 8 lanes, rayon).
    use rayon::prelude::*;
    let t = Instant::now();
    let base: f64 = a
        .par_chunks(1 << 18)
        .zip(b.par_chunks(1 << 18))
        .map(|(x, y)| {
            let mut acc = [0.0f64; 8];
            for (xc, yc) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
                for j in 0..8 {
                    let (p, q) = (f64::from(xc[j]), f64::from(yc[j]));
                    acc[j] += p * p + q * q;
                }
            }
            acc.iter().sum::<f64>()
        })
        .sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "baseline read-only pass: {s:.3} s, {:.2} GB/s (sum {base:.3e})",
        (2 * n * 4) as f64 / 1e9 / s
    );
    let b64: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
    let (s, _) = timed(
        (ValuesRef::F32(&a), "float32"),
        (ValuesRef::F64(&b64), "float64"),
    );
    println!("f32/f64: {s:.3} s, {:.2} GB/s", (n * 12) as f64 / 1e9 / s);
    // f16 and bf16 stored bytes (as borrowed from a memory-mapped dump) vs f32.
    let h: Vec<[u8; 2]> = a
        .iter()
        .map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf: Vec<[u8; 2]> = a
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    for (label, ours) in [
        ("f16", (ValuesRef::F16Le(&h), "float16")),
        ("bf16", (ValuesRef::Bf16Le(&bf), "bfloat16")),
    ] {
        let (s, _) = timed(ours, b32);
        println!(
            "{label} bytes/f32: {s:.3} s, {:.2} GB/s",
            (n * 6) as f64 / 1e9 / s
        );
    }
}
