//! Files written by real numpy / safetensors / torch (`tests/data/make_test_data.py`) read back
//! with the exact values numpy and torch report (`tests/data/expected.json`).

mod common;

use common::{assert_tensor, bits, chunked, data, expected};
use divergence_dump::{DType, Dump, Format, Meta, Values};

fn check_file(file: &str) -> Dump {
    let exp = expected();
    let want = &exp["files"][file];
    assert!(want.is_object(), "{file} missing from expected.json");
    let dump = Dump::open(&data(file)).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = want["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        common::strs(dump.names()),
        names.as_slice(),
        "{file}: names in file order"
    );
    for name in &names {
        let t = dump.read(name).unwrap_or_else(|e| panic!("{e}"));
        assert_tensor(&format!("{file}:{name}"), &t, &want["tensors"][name]);
        assert_eq!(dump.shape(name), Some(t.shape.as_slice()));
        assert_eq!(dump.dtype(name), Some(t.dtype));
        // The zero-copy view holds the same values as the decoded read.
        let v = dump.view(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&v.shape, v.dtype), (&t.shape, t.dtype), "{file}:{name}");
        assert_eq!(
            bits(&v.to_values()),
            bits(&t.values),
            "{file}:{name}: view vs read"
        );
        // The streamed read, in pieces of every size, too.
        for per in [1, 5, 1 << 18] {
            let c = chunked(&dump, name, per).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                bits(&c),
                bits(&t.values),
                "{file}:{name}: chunks({per}) vs read"
            );
        }
    }
    match &want["meta"] {
        serde_json::Value::Null => assert!(dump.meta().is_none(), "{file}: no meta expected"),
        m => {
            let want_meta: Meta = serde_json::from_value(m.clone()).unwrap();
            assert_eq!(dump.meta(), Some(&want_meta), "{file}: meta");
        }
    }
    dump
}

#[test]
fn numpy_savez_all_dtypes_and_layouts() {
    let d = check_file("savez.npz");
    assert_eq!(d.format(), Format::Npz);
    assert!(!d.names().iter().any(|n| n.contains("__meta__")));
    assert_eq!(d.dtype("bool"), Some(DType::Bool));
    assert_eq!(d.dtype("be_f16"), Some(DType::F16));
    assert_eq!(d.shape("scalar"), Some(&[][..]));
    assert_eq!(d.shape("empty_3x0"), Some(&[3, 0][..]));
    // i64 and i32 widen to f64, narrow types to f32
    assert!(matches!(d.read("i64").unwrap().values, Values::F64(_)));
    assert!(matches!(d.read("i32").unwrap().values, Values::F64(_)));
    assert!(matches!(d.read("i16").unwrap().values, Values::F32(_)));
    assert!(matches!(d.read("f16").unwrap().values, Values::F32(_)));
}

/// Which tensors `Dump::view` borrows from the map, and which it decodes.
fn borrowed(dump: &Dump, name: &str) -> bool {
    dump.view(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .is_borrowed()
}

#[test]
fn view_borrows_exactly_the_stored_little_endian_c_order_floats() {
    let d = Dump::open(&data("savez.npz")).unwrap();
    for name in [
        "f64",
        "f32",
        "f16",
        "scalar",
        "empty",
        "model.layers.0.self_attn.k_norm",
    ] {
        assert!(borrowed(&d, name), "savez.npz:{name} should be borrowed");
    }
    // Integers widen, big-endian swaps, Fortran order transposes: all decoded.
    for name in [
        "i64", "i32", "bool", "fortran", "be_f32", "be_f64", "be_f16",
    ] {
        assert!(!borrowed(&d, name), "savez.npz:{name} should be decoded");
    }
    let d = Dump::open(&data("savez_compressed.npz")).unwrap();
    assert!(!borrowed(&d, "f32"), "deflated members are decoded");
    let d = Dump::open(&data("st_meta.safetensors")).unwrap();
    assert!(
        borrowed(&d, "model.embed_tokens"),
        "bf16 in safetensors is borrowed"
    );
    assert!(borrowed(&d, "lm_head"));
    assert!(
        borrowed(&d, "model.layers.0.self_attn.q_norm"),
        "f16 in safetensors is borrowed"
    );
    assert!(!borrowed(&d, "input_ids"));
}

#[test]
fn fortran_order_is_transposed_to_c() {
    let d = Dump::open(&data("savez.npz")).unwrap();
    let t = d.read("fortran").unwrap();
    assert_eq!(t.shape, vec![2, 3, 4]);
    // np.arange(24).reshape(2,3,4) * 0.5 in C order
    let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    assert_eq!(t.values, Values::F32(want));
}

#[test]
fn numpy_savez_compressed() {
    let d = check_file("savez_compressed.npz");
    assert_eq!(d.format(), Format::Npz);
}

#[test]
fn metadata_entry_in_npz() {
    for f in ["with_meta.npz", "with_meta_compressed.npz"] {
        let d = check_file(f);
        let m = d.meta().unwrap();
        assert_eq!(m.format, "divergence-dump/1");
        assert_eq!(
            common::strs(&m.order),
            vec!["model.embed_tokens", "model.layers.0"]
        );
        assert_eq!(m.input_ids, Some(vec![9707, 11, 1879]));
        assert_eq!(m.model.as_ref().unwrap()["hidden_size"], 4);
        // unknown fields are kept
        assert_eq!(m.extra["custom_field"], serde_json::json!([1, 2]));
        assert_eq!(
            d.original_dtype("model.layers.0").as_deref(),
            Some("bfloat16")
        );
        assert_eq!(d.dtype("model.layers.0"), Some(DType::F32));
        assert_eq!(
            common::strs(d.names()),
            ["model.embed_tokens", "model.layers.0"]
        );
    }
}

#[test]
fn single_npy_files() {
    for f in [
        "single_v1.npy",
        "single_v2.npy",
        "single_v3.npy",
        "single_fortran.npy",
        "single_be.npy",
        "single_scalar.npy",
    ] {
        let d = check_file(f);
        assert_eq!(d.format(), Format::Npy);
        assert_eq!(d.names().len(), 1);
    }
    let d = Dump::open(&data("single_fortran.npy")).unwrap();
    assert_eq!(
        d.read("single_fortran").unwrap().values,
        Values::F64((0..12).map(f64::from).collect())
    );
}

#[test]
fn npz_with_version_2_and_3_members() {
    check_file("versions.npz");
}

#[test]
fn safetensors_with_and_without_metadata() {
    let d = check_file("st_meta.safetensors");
    assert_eq!(d.format(), Format::Safetensors);
    assert_eq!(d.dtype("model.embed_tokens"), Some(DType::BF16));
    assert_eq!(d.dtype("model.layers.0.self_attn.q_norm"), Some(DType::F16));
    assert_eq!(d.dtype("input_ids"), Some(DType::I64));
    assert_eq!(&*d.meta().unwrap().order[0], "model.embed_tokens");
    let d = check_file("st_nometa.safetensors");
    assert!(d.meta().is_none());
    assert_eq!(
        d.original_dtype("model.embed_tokens").as_deref(),
        Some("bfloat16")
    );
}

#[test]
fn unknown_extension_is_sniffed() {
    let d = check_file("st_sniff.bin");
    assert_eq!(d.format(), Format::Safetensors);
    // copies of npz / npy files under other names
    let dir = tempfile::tempdir().unwrap();
    for (src, dst, fmt) in [
        ("savez.npz", "a.dat", Format::Npz),
        ("single_v1.npy", "b.dat", Format::Npy),
    ] {
        let p = dir.path().join(dst);
        std::fs::copy(data(src), &p).unwrap();
        let d = Dump::open(&p).unwrap();
        assert_eq!(d.format(), fmt);
    }
    let d = Dump::open(&dir.path().join("b.dat")).unwrap();
    assert_eq!(common::strs(d.names()), ["b"]);
}

#[test]
fn one_bad_entry_does_not_hide_the_others() {
    let d = Dump::open(&data("pickle.npz")).unwrap();
    assert_eq!(common::strs(d.names()), ["good", "a"]);
    assert_eq!(d.read("good").unwrap().values, Values::F64(vec![1.0, 2.0]));
    assert_eq!(d.shape("a"), None);
    assert_eq!(d.dtype("a"), None);
}

#[test]
fn zip64_end_records_and_central_directory_fields() {
    // written by numpy with zipfile's zip64 limits lowered, so this small archive has the
    // structure of one over 4 GiB (zip64 end records, zip64 sizes and offsets)
    check_file("zip64.npz");
    check_file("zip64_compressed.npz");
}
