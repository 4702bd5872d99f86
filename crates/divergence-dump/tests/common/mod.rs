//! Shared helpers for the integration tests: paths of the committed test data and comparison
//! of read values against `tests/data/expected.json` (written by `make_test_data.py`).

#![allow(dead_code)]

use std::path::PathBuf;

use divergence_dump::{Tensor, Values};

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(data("expected.json")).expect("tests/data/expected.json");
    serde_json::from_str(&text).expect("expected.json is json")
}

/// A JSON number, or "nan" / "inf" / "-inf".
pub fn json_f64(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::Number(n) => n.as_f64().expect("number"),
        serde_json::Value::String(s) => s.parse().expect("nan/inf string"),
        other => panic!("not a number: {other}"),
    }
}

/// Bitwise-equal as f64, with all NaNs equal.
pub fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

pub fn assert_values(label: &str, got: &Values, want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let got = got.to_f64_vec();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(same(*g, *w), "{label}[{i}]: got {g:e}, want {w:e}");
    }
}

/// Compare a read tensor with an `expected.json` tensor description.
pub fn assert_tensor(label: &str, t: &Tensor, want: &serde_json::Value) {
    let shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape, shape, "{label}: shape");
    assert_eq!(
        t.dtype.name(),
        want["dtype"].as_str().unwrap(),
        "{label}: dtype"
    );
    let values: Vec<f64> = want["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_f64)
        .collect();
    assert_values(label, &t.values, &values);
}

/// Values as bit patterns, so that NaN equals NaN.
pub fn bits(v: &Values) -> Vec<u64> {
    v.to_f64_vec().iter().map(|x| x.to_bits()).collect()
}

/// A tensor read with `Dump::chunks`, `per` elements at a time, its pieces concatenated (to the
/// end, so that a deflated member's end and CRC-32 are checked).
pub fn chunked(
    dump: &divergence_dump::Dump,
    name: &str,
    per: usize,
) -> Result<Values, divergence_dump::DumpError> {
    let mut c = dump.chunks(name, per)?;
    let mut out: Option<Values> = None;
    while let Some(piece) = c.next_piece()? {
        assert!(
            piece.len() <= per.max(1),
            "{name}: a piece longer than {per}"
        );
        let v: Values = piece.into();
        match (&mut out, v) {
            (None, v) => out = Some(v),
            (Some(Values::F32(a)), Values::F32(b)) => a.extend(b),
            (Some(Values::F64(a)), Values::F64(b)) => a.extend(b),
            _ => panic!("{name}: pieces of different value types"),
        }
    }
    Ok(out.unwrap_or(Values::F32(Vec::new())))
}

/// npy 1.0 bytes with the header dict `dict` (padded as numpy pads it) and `data` after it.
pub fn npy_with(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut text = dict.as_bytes().to_vec();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// Names as plain strings, to compare a dump's names or its metadata order with a literal list.
pub fn strs(names: &[divergence_names::Name]) -> Vec<&str> {
    names.iter().map(|n| &**n).collect()
}
