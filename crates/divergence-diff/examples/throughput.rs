//! Rough throughput check of the metrics loop (not a benchmark with a committed method):
//! `cargo run --release -p divergence-diff --example throughput -- [millions of elements, default 100]`.
//! Compares two f32 slices (and f32 vs f64) and prints GB/s of input read.

use std::time::Instant;

use divergence_diff::{compare, DiffConfig, Side, ValuesRef};

fn main() {
    let millions: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let n = millions * 1_000_000;
    let a: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 * 0.01).sin()).collect();
    let b: Vec<f32> = a.iter().map(|x| x * 1.0001).collect();
    let cfg = DiffConfig::default();
    let shape = [n];
    for round in 0..3 {
        let t = Instant::now();
        let row = compare(
            "x",
            Some(Side {
                shape: &shape,
                values: ValuesRef::F32(&a),
                dtype: "float32",
            }),
            Some(Side {
                shape: &shape,
                values: ValuesRef::F32(&b),
                dtype: "float32",
            }),
            &cfg,
        );
        let s = t.elapsed().as_secs_f64();
        let gb = (2 * n * 4) as f64 / 1e9;
        println!(
            "round {round}: f32/f32 {n} elements/side: {s:.3} s, {:.2} GB/s ({} threads), status {}",
            gb / s,
            rayon::current_num_threads(),
            row.status
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
    let t = Instant::now();
    let _ = compare(
        "x",
        Some(Side {
            shape: &shape,
            values: ValuesRef::F32(&a),
            dtype: "float32",
        }),
        Some(Side {
            shape: &shape,
            values: ValuesRef::F64(&b64),
            dtype: "float64",
        }),
        &cfg,
    );
    let s = t.elapsed().as_secs_f64();
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
    for (label, values) in [
        ("f16", ValuesRef::F16Le(&h)),
        ("bf16", ValuesRef::Bf16Le(&bf)),
    ] {
        let t = Instant::now();
        let _ = compare(
            "x",
            Some(Side {
                shape: &shape,
                values,
                dtype: label,
            }),
            Some(Side {
                shape: &shape,
                values: ValuesRef::F32(&b),
                dtype: "float32",
            }),
            &cfg,
        );
        let s = t.elapsed().as_secs_f64();
        println!(
            "{label} bytes/f32: {s:.3} s, {:.2} GB/s",
            (n * 6) as f64 / 1e9 / s
        );
    }
}
