//! `Dump` is shared by reference across threads: all names read concurrently from several
//! threads give exactly what sequential reads give.

mod common;

use std::collections::BTreeMap;

use common::data;
use divergence_dump::{Dump, DumpWriter, Meta, Tensor, TensorData};

fn concurrent_matches_sequential(dump: &Dump) {
    let sequential: BTreeMap<String, Tensor> = dump
        .names()
        .iter()
        .map(|n| (n.to_string(), dump.read(n).unwrap()))
        .collect();
    let threads = 8;
    let results: Vec<Vec<(String, Tensor)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    // each thread walks the names from a different start, so reads overlap
                    let names = dump.names();
                    (0..names.len() * 2)
                        .map(|i| {
                            let n = &names[(i + t) % names.len()];
                            (n.to_string(), dump.read(n).unwrap())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), threads);
    for per_thread in results {
        for (name, t) in per_thread {
            let want = &sequential[&name];
            assert_eq!(t.shape, want.shape, "{name}");
            assert_eq!(t.dtype, want.dtype, "{name}");
            // compare bit patterns (NaN-safe)
            let g: Vec<u64> = t.values.to_f64_vec().iter().map(|x| x.to_bits()).collect();
            let w: Vec<u64> = want
                .values
                .to_f64_vec()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(g, w, "{name}");
        }
    }
}

#[test]
fn concurrent_reads_of_numpy_files() {
    for f in ["savez.npz", "savez_compressed.npz", "st_meta.safetensors"] {
        concurrent_matches_sequential(&Dump::open(&data(f)).unwrap());
    }
}

#[test]
fn concurrent_reads_of_larger_tensors() {
    // tensors bigger than the inflate chunk, stored and safetensors
    let dir = tempfile::tempdir().unwrap();
    for ext in ["npz", "safetensors"] {
        let f = dir.path().join(format!("big.{ext}"));
        let mut w = DumpWriter::create(&f).unwrap();
        for i in 0..4 {
            let v: Vec<f32> = (0..100_000)
                .map(|j| (i * 100_000 + j) as f32 * 0.25)
                .collect();
            w.add(
                &format!("model.layers.{i}"),
                &[400, 250],
                TensorData::F32(&v),
            )
            .unwrap();
        }
        w.finish(Meta::default()).unwrap();
        concurrent_matches_sequential(&Dump::open(&f).unwrap());
    }
}
