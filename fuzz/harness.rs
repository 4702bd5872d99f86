//! The bodies of the fuzz targets, one plain function per target, shared by the cargo-fuzz
//! binaries (`fuzz/fuzz_targets/*.rs`) and by the stable test that replays the committed corpora
//! in CI (`crates/divergence-cli/tests/fuzz_corpus.rs`); docs/fuzzing.md.
//!
//! Each function panics exactly when a guarantee of the readers is broken, for any input:
//! - no panic, no unbounded allocation (the fuzzer's limits catch those);
//! - every error displays as one line (no `\n` or `\r`) that starts with the file path;
//! - `Dump::read`, `Dump::view` and `Dump::chunks` (pieces of 1 to 7 elements, read to the end)
//!   agree on every entry: all `Ok` with the same shape, dtype and values (bit for bit), or all
//!   `Err` with the same message; `shape`, `dtype` and `original_dtype` agree with them;
//! - a sniffed file (unknown extension) reads exactly as the same bytes under the extension of
//!   the format it was sniffed as;
//! - metadata that parses survives `to_json` and parsing again unchanged;
//! - a config.json never yields a size above its sanity cap.
//!
//! Files are written under /dev/shm (else the temp dir), one path per process and thread,
//! reused for every input and unlinked as soon as it is opened (the dump keeps its map).

#![allow(dead_code)] // each fuzz binary uses one of these functions

use std::path::{Path, PathBuf};

use divergence_checkpoint::{sanity_cap, Config, Family, REQUIRED};
use divergence_dump::{DType, Dump, DumpError, Format, Meta, Values, META_ENTRY};

/// `Dump::open` of `data` as a `.npz` file, then every entry.
pub fn npz(data: &[u8]) {
    dump(data, Some(Format::Npz));
}

/// `Dump::open` of `data` as a single `.npy` array, then its entry.
pub fn npy(data: &[u8]) {
    dump(data, Some(Format::Npy));
}

/// `Dump::open` of `data` as a `.safetensors` file, then every entry.
pub fn safetensors(data: &[u8]) {
    dump(data, Some(Format::Safetensors));
}

/// `Dump::open` of `data` under an unknown extension (the format is sniffed), then the same
/// bytes under the extension of every format: the sniffed read must equal one of them.
pub fn sniff(data: &[u8]) {
    dump(data, None);
}

/// `Meta::from_json`: a one-line error, or metadata that survives a round trip.
pub fn meta(data: &[u8]) {
    match Meta::from_json(data) {
        Err(e) => assert_one_line(&e, ""),
        Ok(m) => check_meta(&m),
    }
}

/// `Config::parse` of config.json text (invalid UTF-8 replaced): a one-line error naming the
/// file, or a config whose every size is within its sanity cap.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz/config.json");
    match Config::parse(&text, path) {
        Err(e) => assert_one_line(&e.to_string(), "fuzz/config.json: "),
        Ok(c) => check_config(&c),
    }
}

fn ext(format: Option<Format>) -> &'static str {
    match format {
        Some(Format::Npz) => "npz",
        Some(Format::Npy) => "npy",
        Some(Format::Safetensors) => "safetensors",
        None => "bin",
    }
}

/// `<dir>/divergence-fuzz-<pid>-<thread>.<ext>`: per process and thread (the replay test runs
/// targets on several threads), the same stem for every extension.
fn temp_path(extension: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STEM: PathBuf = {
            let shm = Path::new("/dev/shm");
            let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
            let thread = NEXT.fetch_add(1, Ordering::Relaxed);
            dir.join(format!("divergence-fuzz-{}-{thread}", std::process::id()))
        };
    }
    STEM.with(|s| s.with_extension(extension))
}

/// Write `data` under `format`'s extension and open it; the file is gone again on return.
fn open(data: &[u8], format: Option<Format>) -> (PathBuf, Result<Dump, String>) {
    let path = temp_path(ext(format));
    std::fs::write(&path, data).expect("cannot write the fuzz input file");
    let opened = Dump::open(&path);
    std::fs::remove_file(&path).expect("cannot remove the fuzz input file");
    let opened = opened.map_err(|e| {
        assert_eq!(e.path(), path, "the error's path is not the file's: {e}");
        e.to_string()
    });
    (path, opened)
}

/// What reading one entry gave: shape, dtype and value bits, or the error message.
type Read = Result<(Vec<usize>, DType, Vec<u64>), String>;

fn dump(data: &[u8], format: Option<Format>) {
    let per = 1 + data.len() % 7; // elements per piece of `Dump::chunks`
    let (path, opened) = open(data, format);
    let prefix = format!("{}: ", path.display());
    let d = match opened {
        Err(e) => {
            assert_one_line(&e, &prefix);
            if format.is_none() {
                sniffed_error_matches(data, &e, &prefix);
            }
            return;
        }
        Ok(d) => d,
    };
    if let Some(f) = format {
        assert_eq!(d.format(), f);
    }
    assert_eq!(d.path(), path);
    if let Some(m) = d.meta() {
        check_meta(m);
    }
    let reads: Vec<Read> = d
        .names()
        .iter()
        .map(|name| read_entry(&d, name, &prefix, per))
        .collect();

    match d.format() {
        Format::Npz => assert!(
            d.names().iter().all(|n| &**n != META_ENTRY),
            "{META_ENTRY} listed as a tensor"
        ),
        Format::Npy => assert_eq!(d.names().len(), 1, "a .npy holds one tensor"),
        Format::Safetensors => {}
    }
    let missing = "\u{1}no such tensor\u{1}";
    if !d.contains(missing) {
        let e = d
            .read(missing)
            .expect_err("read of a missing tensor")
            .to_string();
        assert_one_line(&e, &prefix);
    }

    if format.is_none() {
        // The same bytes under the sniffed format's own extension read the same.
        let (p2, again) = open(data, Some(d.format()));
        let again = again.unwrap_or_else(|e| panic!("sniffed as {:?} but {e}", d.format()));
        assert_eq!(again.names(), d.names());
        assert_eq!(again.meta(), d.meta());
        let prefix2 = format!("{}: ", p2.display());
        for (name, first) in d.names().iter().zip(&reads) {
            let second = read_entry(&again, name, &prefix2, per);
            assert_eq!(
                strip(first, &prefix),
                strip(&second, &prefix2),
                "{name}: sniffed vs by extension"
            );
        }
    }
}

/// A read result with the path prefix taken off its error, for comparing two files.
fn strip<'a>(r: &'a Read, prefix: &str) -> Result<&'a (Vec<usize>, DType, Vec<u64>), &'a str> {
    r.as_ref().map_err(|e| e.strip_prefix(prefix).unwrap_or(e))
}

/// A file that failed to open under an unknown extension failed with an error one of the
/// formats gives under its own extension (the sniffer added nothing of its own but "unknown
/// format").
fn sniffed_error_matches(data: &[u8], error: &str, prefix: &str) {
    let tail = error.strip_prefix(prefix).unwrap_or(error);
    if tail.starts_with("unknown file format") {
        return;
    }
    let mut seen = Vec::new();
    for f in [Format::Npz, Format::Npy, Format::Safetensors] {
        let (p, r) = open(data, Some(f));
        if let Err(e) = r {
            let p = format!("{}: ", p.display());
            if e.strip_prefix(&p) == Some(tail) {
                return;
            }
            seen.push(e);
        }
    }
    panic!("sniffed open failed with {error:?}, no format gives that: {seen:?}");
}

/// Read, view and stream one entry, checking that they and the dump's own description agree.
fn read_entry(d: &Dump, name: &str, prefix: &str, per: usize) -> Read {
    assert!(d.contains(name));
    let shape = d.shape(name).map(<[usize]>::to_vec);
    let dtype = d.dtype(name);
    assert_eq!(shape.is_some(), dtype.is_some(), "{name}: shape vs dtype");
    assert!(d.original_dtype(name).is_some() || dtype.is_none());
    match (d.read(name), d.view(name)) {
        (Ok(t), Ok(v)) => {
            assert_eq!(Some(&t.shape), shape.as_ref(), "{name}: read vs shape()");
            assert_eq!(Some(t.dtype), dtype, "{name}: read vs dtype()");
            assert_eq!(v.shape, t.shape, "{name}: view vs read shape");
            assert_eq!(v.dtype, t.dtype, "{name}: view vs read dtype");
            let n = element_count(&t.shape);
            assert_eq!(Some(t.values.len()), n, "{name}: shape and values disagree");
            assert_eq!(v.values().len(), t.values.len(), "{name}: view length");
            assert_eq!(
                matches!(t.values, Values::F64(_)),
                t.dtype.widens_to_f64(),
                "{name}: {} decoded to the wrong width",
                t.dtype
            );
            let bits = value_bits(&t.values);
            assert_eq!(value_bits(&v.to_values()), bits, "{name}: view vs read");
            match chunked(d, name, per) {
                Ok(c) => assert_eq!(c, bits, "{name}: chunks vs read"),
                Err(e) => panic!("{name}: read is Ok but chunks fails: {e}"),
            }
            Ok((t.shape, t.dtype, bits))
        }
        (Err(e), Err(ev)) => {
            let (e, ev) = (e.to_string(), ev.to_string());
            assert_one_line(&e, prefix);
            assert_eq!(e, ev, "{name}: read and view fail differently");
            match chunked(d, name, per) {
                Ok(_) => panic!("{name}: read fails ({e}) but chunks is Ok"),
                Err(ec) => assert_eq!(ec.to_string(), e, "{name}: chunks vs read error"),
            }
            Err(e)
        }
        (t, v) => panic!("{name}: read {:?} but view {:?}", t.err(), v.err()),
    }
}

/// `Dump::chunks` of one entry, `per` elements a piece, read to the end: the value bits.
fn chunked(d: &Dump, name: &str, per: usize) -> Result<Vec<u64>, DumpError> {
    let mut c = d.chunks(name, per)?;
    let (len, shape, dtype) = (c.len(), c.shape().to_vec(), c.dtype());
    assert_eq!(
        Some(shape.as_slice()),
        d.shape(name),
        "{name}: chunks shape"
    );
    assert_eq!(Some(dtype), d.dtype(name), "{name}: chunks dtype");
    let mut bits = Vec::new();
    while let Some(piece) = c.next_piece()? {
        assert!(
            (1..=per).contains(&piece.len()),
            "{name}: a piece of {} elements, asked for {per}",
            piece.len()
        );
        bits.extend(value_bits(&Values::from(piece)));
    }
    assert_eq!(
        bits.len(),
        len,
        "{name}: chunks gave the wrong number of elements"
    );
    Ok(bits)
}

/// Elements of a shape (0 if any dimension is 0), `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Values as f64 bit patterns (exact for both widths).
fn value_bits(v: &Values) -> Vec<u64> {
    match v {
        Values::F32(v) => v.iter().map(|&x| f64::from(x).to_bits()).collect(),
        Values::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
    }
}

/// Metadata reads back as written, floats included bit for bit (serde_json's
/// `float_roundtrip`, enabled by divergence-dump since fuzzing found `1e-86` reading back one
/// ulp off: docs/fuzzing.md, "Findings").
fn check_meta(m: &Meta) {
    let json = m.to_json();
    let again = Meta::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("metadata written as {json} does not read back: {e}"));
    assert!(
        again == *m,
        "metadata changed in a round trip through {json}: {again:?} vs {m:?}"
    );
}

fn check_config(c: &Config) {
    let sizes = [
        ("hidden_size", c.hidden_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
        ("head_dim", c.head_dim),
        ("intermediate_size", c.intermediate_size),
        ("vocab_size", c.vocab_size),
        ("max_position_embeddings", c.max_position_embeddings),
    ];
    for (key, value) in sizes {
        if let Some(n) = value {
            let cap = sanity_cap(key).unwrap_or_else(|| panic!("{key} has no sanity cap"));
            assert!(n > 0 && n <= cap, "{key} = {n} passed, its cap is {cap}");
        }
    }
    for issue in &c.issues {
        assert_one_line(&issue.to_string(), &format!("{} is ", issue.key));
    }
    assert!(c.rms_norm_eps.is_finite() && c.rope_theta.is_finite());
    assert_eq!(
        c.family,
        c.model_type.as_deref().and_then(Family::from_model_type)
    );
    assert!(c.missing_required().iter().all(|k| REQUIRED.contains(k)));
    let cap = |key| sanity_cap(key).unwrap_or(0);
    let families = [
        None,
        Some(Family::Qwen3),
        Some(Family::Qwen2),
        Some(Family::Llama),
        Some(Family::Mistral),
    ];
    for family in families {
        let kv = c.num_kv_heads(family);
        let head_dim = c.head_dim(family);
        assert!(kv.is_none_or(|k| k <= cap("num_key_value_heads").max(cap("num_attention_heads"))));
        assert!(head_dim.is_none_or(|d| d <= cap("head_dim").max(cap("hidden_size"))));
        if let Some(dims) = c.dims(family) {
            assert_eq!(Some(dims.kv_heads), kv);
            assert_eq!(Some(dims.head_dim), head_dim);
            assert_eq!(Some(dims.layers), c.num_hidden_layers);
        }
    }
}

/// One line (no `\n` or `\r`) that starts with `prefix`.
fn assert_one_line(message: &str, prefix: &str) {
    assert!(
        !message.contains(['\n', '\r']),
        "error of more than one line: {message:?}"
    );
    assert!(
        message.starts_with(prefix),
        "error does not start with {prefix:?}: {message:?}"
    );
}
