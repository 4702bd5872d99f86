//! Writer -> reader round trips for every `TensorData` type in npz and safetensors (0-d and
//! empty shapes included), metadata round trips, and the written files checked with real
//! `numpy.load` / `safetensors` from the project venv.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_tensor, same};
use divergence_dump::{DType, Dump, DumpWriter, Format, Meta, TensorData, Values};
use half::{bf16, f16};

/// Owned test tensors: (name, shape, data) covering every TensorData variant.
struct Case {
    name: &'static str,
    shape: Vec<usize>,
    data: Owned,
}

enum Owned {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl Owned {
    fn view(&self) -> TensorData<'_> {
        match self {
            Owned::F64(v) => TensorData::F64(v),
            Owned::F32(v) => TensorData::F32(v),
            Owned::F16(v) => TensorData::F16(v),
            Owned::BF16(v) => TensorData::BF16(v),
            Owned::I64(v) => TensorData::I64(v),
            Owned::I32(v) => TensorData::I32(v),
            Owned::U8(v) => TensorData::U8(v),
            Owned::Bool(v) => TensorData::Bool(v),
        }
    }

    /// The exact widened values a reader must return.
    fn expected(&self) -> Vec<f64> {
        match self {
            Owned::F64(v) => v.clone(),
            Owned::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Owned::F16(v) => v.iter().map(|&x| f64::from(x.to_f32())).collect(),
            Owned::BF16(v) => v.iter().map(|&x| f64::from(x.to_f32())).collect(),
            Owned::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Owned::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Owned::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Owned::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }
}

fn cases() -> Vec<Case> {
    let f = |v: &[f32]| v.to_vec();
    vec![
        Case {
            name: "f64",
            shape: vec![2, 3],
            data: Owned::F64(vec![
                1.5,
                -2.0,
                1e-310,
                f64::MAX,
                f64::NEG_INFINITY,
                f64::NAN,
            ]),
        },
        Case {
            name: "f32",
            shape: vec![4],
            data: Owned::F32(f(&[0.1, -0.0, f32::MIN_POSITIVE, 3.4e38])),
        },
        Case {
            name: "f16",
            shape: vec![1, 3],
            data: Owned::F16(
                [0.1f32, 65504.0, -6e-8]
                    .iter()
                    .map(|&x| f16::from_f32(x))
                    .collect(),
            ),
        },
        Case {
            name: "model.layers.0.self_attn.k_norm",
            shape: vec![2, 2],
            data: Owned::BF16(
                [0.1f32, 96.5, -1e-20, 3e38]
                    .iter()
                    .map(|&x| bf16::from_f32(x))
                    .collect(),
            ),
        },
        Case {
            name: "i64",
            shape: vec![3],
            data: Owned::I64(vec![i64::MIN, -1, 1 << 53]),
        },
        Case {
            name: "i32",
            shape: vec![2],
            data: Owned::I32(vec![i32::MIN, i32::MAX]),
        },
        Case {
            name: "u8",
            shape: vec![3],
            data: Owned::U8(vec![0, 128, 255]),
        },
        Case {
            name: "bool",
            shape: vec![2],
            data: Owned::Bool(vec![true, false]),
        },
        Case {
            name: "scalar_f32",
            shape: vec![],
            data: Owned::F32(vec![42.5]),
        },
        Case {
            name: "scalar_bf16",
            shape: vec![],
            data: Owned::BF16(vec![bf16::from_f32(-3.0)]),
        },
        Case {
            name: "empty",
            shape: vec![0],
            data: Owned::F32(vec![]),
        },
        Case {
            name: "empty_3x0",
            shape: vec![3, 0],
            data: Owned::I64(vec![]),
        },
        Case {
            name: "empty_u8",
            shape: vec![0, 2],
            data: Owned::U8(vec![]),
        },
        Case {
            name: "empty_bf16",
            shape: vec![2, 0, 5],
            data: Owned::BF16(vec![]),
        },
    ]
}

fn meta() -> Meta {
    let mut m = Meta {
        input_ids: Some(vec![9707, 11, 1879]),
        producer: Some(serde_json::json!({"name": "test", "dtype": "bfloat16"})),
        model: Some(serde_json::json!({"hidden_size": 1024, "rope_theta": 1000000.0})),
        ..Meta::default()
    };
    m.dtypes.insert("f32".into(), "bfloat16".into()); // caller-set entries are kept
    m.extra.insert("note".into(), serde_json::json!("kept"));
    m
}

fn write(path: &Path) {
    let mut w = DumpWriter::create(path).unwrap();
    for c in cases() {
        w.add(c.name, &c.shape, c.data.view()).unwrap();
    }
    w.finish(meta()).unwrap();
}

fn check(path: &Path, format: Format) -> Dump {
    let d = Dump::open(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.format(), format);
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    if format == Format::Npz {
        assert_eq!(
            common::strs(d.names()),
            names.as_slice(),
            "npz keeps add order"
        );
    } else {
        let mut got = common::strs(d.names());
        got.sort();
        names.sort();
        assert_eq!(got, names);
    }
    for c in &cases {
        let t = d.read(c.name).unwrap();
        assert_eq!(t.shape, c.shape, "{}", c.name);
        let want = c.data.expected();
        let got = t.values.to_f64_vec();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(same(*g, *w), "{}[{i}]: got {g:e} want {w:e}", c.name);
        }
        let given = c.data.view().dtype();
        let stored = match (format, given) {
            (Format::Npz, DType::BF16) => DType::F32,
            (_, d) => d,
        };
        assert_eq!(t.dtype, stored, "{}", c.name);
        let want_original = if c.name == "f32" {
            "bfloat16"
        } else {
            given.name()
        };
        assert_eq!(
            d.original_dtype(c.name).as_deref(),
            Some(want_original),
            "{}",
            c.name
        );
    }
    // widening variant
    assert!(matches!(d.read("i32").unwrap().values, Values::F64(_)));
    assert!(matches!(d.read("u8").unwrap().values, Values::F32(_)));

    let m = d.meta().unwrap();
    let mut want = meta();
    want.format = "divergence-dump/1".into();
    want.order = cases.iter().map(|c| c.name.into()).collect();
    for c in &cases {
        want.dtypes
            .entry(c.name.into())
            .or_insert_with(|| c.data.view().dtype().name().into());
    }
    assert_eq!(m, &want);
    d
}

#[test]
fn npz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ours.npz");
    write(&f);
    let d = check(&f, Format::Npz);
    assert_eq!(d.dtype("model.layers.0.self_attn.k_norm"), Some(DType::F32));
    assert_eq!(
        d.original_dtype("model.layers.0.self_attn.k_norm")
            .as_deref(),
        Some("bfloat16")
    );
}

#[test]
fn safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ours.safetensors");
    write(&f);
    let d = check(&f, Format::Safetensors);
    assert_eq!(
        d.dtype("model.layers.0.self_attn.k_norm"),
        Some(DType::BF16)
    );
    assert_eq!(d.dtype("f16"), Some(DType::F16));
}

#[test]
fn explicit_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("o.npz");
    let mut w = DumpWriter::create(&f).unwrap();
    w.add("b", &[1], TensorData::F32(&[1.0])).unwrap();
    w.add("a", &[1], TensorData::F32(&[2.0])).unwrap();
    w.finish(Meta {
        order: vec!["a".into(), "b".into()].into(),
        format: "other".into(),
        ..Meta::default()
    })
    .unwrap();
    let d = Dump::open(&f).unwrap();
    assert_eq!(common::strs(&d.meta().unwrap().order), vec!["a", "b"]);
    assert_eq!(d.meta().unwrap().format, "divergence-dump/1");
    assert_eq!(common::strs(d.names()), ["b", "a"]);
}

#[test]
fn empty_dump_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["npz", "safetensors"] {
        let f = dir.path().join(format!("e.{ext}"));
        DumpWriter::create(&f)
            .unwrap()
            .finish(Meta::default())
            .unwrap();
        let d = Dump::open(&f).unwrap();
        assert!(d.names().is_empty());
        assert_eq!(d.meta().unwrap().format, "divergence-dump/1");
    }
}

/// The venv python (`DIVERGENCE_PYTHON` or `<repo>/.venv/bin/python`).
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DIVERGENCE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    p.exists().then_some(p)
}

const LOAD_PY: &str = r#"
import json, math, sys
import numpy as np
path = sys.argv[1]
def enc(x):
    x = float(x)
    return "nan" if math.isnan(x) else ("inf" if x == math.inf else ("-inf" if x == -math.inf else x))
out = {"tensors": {}, "names": []}
if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            a = z[k]
            if k == "__meta__":
                out["meta"] = json.loads(a.tobytes().decode("utf-8"))
                continue
            out["names"].append(k)
            out["tensors"][k] = {"shape": list(a.shape), "dtype": a.dtype.name,
                                 "values": [enc(v) for v in a.reshape(-1).tolist()]}
else:
    import torch
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        out["meta"] = json.loads(f.metadata()["divergence"])
        for k in f.keys():
            t = f.get_tensor(k)
            out["names"].append(k)
            out["tensors"][k] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                                 "values": [enc(v) for v in t.reshape(-1).to(torch.float64).tolist()]}
print(json.dumps(out))
"#;

/// Load a written file with numpy (npz) or safetensors+torch and compare with what we read.
fn check_with_python(path: &Path) {
    let Some(py) = python() else {
        // CI sets up the venv before the Rust tests (scripts/test.sh): there this must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no python venv to check {} with numpy",
            path.display()
        );
        eprintln!(
            "SKIPPED: no python venv (set DIVERGENCE_PYTHON) to check {} with numpy",
            path.display()
        );
        return;
    };
    let out = Command::new(&py)
        .arg("-c")
        .arg(LOAD_PY)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = Dump::open(path).unwrap();
    let py_names: Vec<&str> = got["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut ours = common::strs(d.names());
    if d.format() == Format::Safetensors {
        ours.sort();
        let mut p = py_names.clone();
        p.sort();
        assert_eq!(ours, p);
    } else {
        assert_eq!(ours, py_names);
    }
    for name in d.names() {
        let t = d.read(name).unwrap();
        assert_tensor(name, &t, &got["tensors"][&**name]);
    }
    let py_meta: Meta = serde_json::from_value(got["meta"].clone()).unwrap();
    assert_eq!(Some(&py_meta), d.meta());
    let _: BTreeMap<String, String> = py_meta.dtypes;
}

#[test]
fn written_npz_loads_with_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ours.npz");
    write(&f);
    check_with_python(&f);
}

#[test]
fn written_safetensors_loads_with_safetensors_torch() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ours.safetensors");
    write(&f);
    check_with_python(&f);
}
