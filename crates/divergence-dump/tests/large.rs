//! A dump over 4 GiB (zip64 offsets written by the zip crate, read by our parser and by Python's
//! zipfile/numpy). Needs about 5 GiB of disk and 3 GiB of memory, so it is ignored by default:
//! `cargo test --release -p divergence-dump --test large -- --ignored`.

use std::path::Path;
use std::process::Command;

use divergence_dump::{Dump, DumpWriter, Meta, TensorData, Values};

#[test]
#[ignore = "writes a 5 GiB file; run with --ignored"]
fn npz_over_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.npz");
    let n = 1usize << 28; // 1 GiB of f32 per tensor, 5 tensors
    let mut v: Vec<f32> = vec![0.0; n];
    let mut w = DumpWriter::create(&f).unwrap();
    for t in 0..5 {
        v[0] = t as f32;
        v[n - 1] = -(t as f32);
        w.add(&format!("t{t}"), &[n / 1024, 1024], TensorData::F32(&v))
            .unwrap();
    }
    w.finish(Meta::default()).unwrap();
    drop(v);
    assert!(std::fs::metadata(&f).unwrap().len() > 5 << 30);

    let d = Dump::open(&f).unwrap();
    assert_eq!(
        d.names().iter().map(|n| &**n).collect::<Vec<_>>(),
        ["t0", "t1", "t2", "t3", "t4"]
    );
    for t in [0usize, 4] {
        let x = d.read(&format!("t{t}")).unwrap();
        let Values::F32(x) = x.values else {
            panic!("f32 expected")
        };
        assert_eq!((x[0], x[1], x[n - 1]), (t as f32, 0.0, -(t as f32)));
    }

    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if !py.exists() {
        eprintln!("SKIPPED the numpy check: no {}", py.display());
        return;
    }
    let script = "import sys, zipfile, numpy as np\n\
        z = zipfile.ZipFile(sys.argv[1]); i = z.getinfo('t4.npy'); assert i.header_offset > 2**32, i.header_offset\n\
        a = np.load(sys.argv[1])['t4']; assert a.shape == (262144, 1024) and a[0, 0] == 4 and a[-1, -1] == -4\n\
        print('ok', i.header_offset)";
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
