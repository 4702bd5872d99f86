//! Bad input gives a `DumpError` whose one-line message starts with the path and names the
//! problem; nothing panics.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::data;
use divergence_dump::{Dump, DumpError, DumpWriter, Meta, TensorData};

fn open_err(path: &Path) -> String {
    match Dump::open(path) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => {
            assert_eq!(e.path(), path);
            e.to_string()
        }
    }
}

fn read_err(path: &Path, name: &str) -> String {
    let d = Dump::open(path).unwrap_or_else(|e| panic!("{e}"));
    match d.read(name) {
        Ok(_) => panic!("{}: reading '{name}' should fail", path.display()),
        Err(e) => {
            assert_eq!(e.path(), path);
            e.to_string()
        }
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A .npy file with the given header dict and data bytes.
fn npy_with(dict: &str, data: &[u8]) -> Vec<u8> {
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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_zip() {
    let f = data("truncated.npz");
    assert_eq!(
        open_err(&f),
        format!("{}: truncated zip archive (no end of central directory record; the file was cut short)", p(&f))
    );
}

#[test]
fn corrupt_npy_header_names_the_entry() {
    let f = data("corrupt_header.npz");
    assert_eq!(
        read_err(&f, "foo"),
        format!(
            "{}: entry 'foo.npy': corrupt npy header (dict is missing key 'descr')",
            p(&f)
        )
    );
    // the intact entry still reads
    let d = Dump::open(&f).unwrap();
    assert_eq!(d.read("ok").unwrap().values.to_f64_vec(), vec![1.0]);
}

#[test]
fn pickled_object_array() {
    let f = data("pickle.npz");
    assert_eq!(
        read_err(&f, "a"),
        format!(
            "{}: entry 'a.npy': object arrays (pickles) are not supported",
            p(&f)
        )
    );
}

#[test]
fn unsupported_dtypes() {
    let f = data("complex.npz");
    assert!(read_err(&f, "c").starts_with(&format!(
        "{}: entry 'c.npy': unsupported dtype '<c16' (supported: ",
        p(&f)
    )));
    let f = data("st_unsupported.safetensors");
    assert!(read_err(&f, "u16")
        .starts_with(&format!("{}: entry 'u16': unsupported dtype 'U16'", p(&f))));
    assert_eq!(
        Dump::open(&f)
            .unwrap()
            .read("ok")
            .unwrap()
            .values
            .to_f64_vec(),
        vec![1.0]
    );
}

#[test]
fn missing_file() {
    let f = data("does-not-exist.npz");
    assert_eq!(open_err(&f), format!("{}: no such file", p(&f)));
}

#[test]
fn directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dump.npz");
    std::fs::create_dir(&f).unwrap();
    assert_eq!(
        open_err(&f),
        format!("{}: is a directory, not a dump file", p(&f))
    );
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["e.npz", "e.npy", "e.safetensors", "e.bin"] {
        let f = write(dir.path(), name, b"");
        assert_eq!(
            open_err(&f),
            format!("{}: empty file (0 bytes), not a dump", p(&f))
        );
    }
}

#[test]
fn random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // deterministic pseudo-random bytes (xorshift)
    let mut x = 0x2545F4914F6CDD1Du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let f = write(dir.path(), "r.npz", &bytes);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: not a zip archive (a .npz must be a zip file written by numpy.savez)",
            p(&f)
        )
    );
    let f = write(dir.path(), "r.bin", &bytes);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: unknown file format (not a .npz zip archive, a .npy array or a .safetensors file)",
            p(&f)
        )
    );
    let f = write(dir.path(), "r.npy", &bytes);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: corrupt npy header (no npy magic string; not a numpy array)",
            p(&f)
        )
    );
    let f = write(dir.path(), "r.safetensors", &bytes);
    assert!(open_err(&f).starts_with(&format!("{}: invalid safetensors file (", p(&f))));
}

#[test]
fn overflowing_shape_in_npy_and_npz() {
    let dir = tempfile::tempdir().unwrap();
    let npy = npy_with(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
        &[0; 16],
    );
    let f = write(dir.path(), "huge.npy", &npy);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: shape [1099511627776, 1099511627776] is too large (the element count overflows)",
            p(&f)
        )
    );
    // large but not overflowing: the file is simply too short (no allocation is attempted)
    let npy2 = npy_with(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1048576, 1048576), }",
        &[0; 16],
    );
    let f = write(dir.path(), "big.npy", &npy2);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: data is 16 bytes, shape [1048576, 1048576] of float64 needs 8796093022208",
            p(&f)
        )
    );
    // a dimension beyond u64
    let npy3 = npy_with(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000000000,), }",
        &[],
    );
    let f = write(dir.path(), "beyond.npy", &npy3);
    assert!(open_err(&f).contains("is too large"));

    // the same inside an npz, stored and deflated
    let f = dir.path().join("huge.npz");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&f).unwrap());
        for (name, method) in [
            ("s.npy", zip::CompressionMethod::Stored),
            ("d.npy", zip::CompressionMethod::Deflated),
        ] {
            let o = zip::write::SimpleFileOptions::default().compression_method(method);
            z.start_file(name, o).unwrap();
            z.write_all(&npy).unwrap();
        }
        z.finish().unwrap();
    }
    for (name, entry) in [("s", "s.npy"), ("d", "d.npy")] {
        assert_eq!(
            read_err(&f, name),
            format!("{}: entry '{entry}': shape [1099511627776, 1099511627776] is too large (the element count overflows)", p(&f))
        );
    }
    // safetensors with an overflowing shape
    let header =
        br#"{"x":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0; 16]);
    let f = write(dir.path(), "huge.safetensors", &st);
    assert!(open_err(&f).starts_with(&format!("{}: invalid safetensors file (overflow", p(&f))));
}

#[test]
fn data_shorter_than_shape() {
    let f = data("short.npz");
    assert_eq!(
        read_err(&f, "y"),
        format!(
            "{}: entry 'y.npy': data is 12 bytes, shape [4] of float32 needs 16",
            p(&f)
        )
    );
    let f = data("short.npy");
    assert_eq!(
        open_err(&f),
        format!("{}: data is 12 bytes, shape [4] of float32 needs 16", p(&f))
    );
}

#[test]
fn duplicate_entries() {
    let f = data("duplicate.npz");
    assert_eq!(
        open_err(&f),
        format!(
            "{}: duplicate entry 'a.npy' (tensor name 'a' appears twice)",
            p(&f)
        )
    );
    let f = data("duplicate_suffix.npz");
    assert_eq!(
        open_err(&f),
        format!(
            "{}: duplicate entry 'b' (tensor name 'b' appears twice)",
            p(&f)
        )
    );
}

#[test]
fn bad_metadata() {
    let f = data("bad_meta.npz");
    assert!(open_err(&f).starts_with(&format!(
        "{}: invalid divergence metadata (metadata is not a valid json object: ",
        p(&f)
    )));
}

#[test]
fn damaged_deflate_data() {
    let f = data("bad_deflate.npz");
    let d = Dump::open(&f);
    // depending on where the damage lands it shows when reading the header or the data
    let msg = match d {
        Err(e) => e.to_string(),
        Ok(d) => d.read("x").unwrap_err().to_string(),
    };
    assert!(
        msg.starts_with(&format!(
            "{}: entry 'x.npy': corrupt compressed data (",
            p(&f)
        )),
        "{msg}"
    );
}

#[test]
fn unknown_tensor_name() {
    let f = data("savez.npz");
    let d = Dump::open(&f).unwrap();
    assert_eq!(
        d.read("nope").unwrap_err().to_string(),
        format!("{}: no tensor named 'nope'", p(&f))
    );
    assert_eq!(
        d.read("__meta__").unwrap_err().to_string(),
        format!("{}: no tensor named '__meta__'", p(&f))
    );
}

#[test]
fn messages_are_one_lowercase_line_without_period() {
    let dir = tempfile::tempdir().unwrap();
    let errs: Vec<DumpError> = vec![
        Dump::open(&data("truncated.npz")).unwrap_err(),
        Dump::open(&dir.path().join("x.npz")).unwrap_err(),
        Dump::open(&data("duplicate.npz")).unwrap_err(),
        Dump::open(&data("pickle.npz"))
            .unwrap()
            .read("a")
            .unwrap_err(),
        DumpWriter::create(&dir.path().join("x.txt")).unwrap_err(),
    ];
    for e in errs {
        let m = e.to_string();
        let after_path = m
            .strip_prefix(&p(e.path()))
            .unwrap()
            .strip_prefix(": ")
            .unwrap();
        assert!(!m.contains('\n') && !m.ends_with('.'), "{m}");
        assert!(after_path.starts_with(|c: char| c.is_lowercase()), "{m}");
    }
}

#[test]
fn writer_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("out.txt");
    assert_eq!(
        DumpWriter::create(&f).unwrap_err().to_string(),
        format!(
            "{}: cannot write a dump with this extension (use .npz or .safetensors)",
            p(&f)
        )
    );
    for ext in ["npz", "safetensors"] {
        let f = dir.path().join(format!("out.{ext}"));
        let mut w = DumpWriter::create(&f).unwrap();
        w.add("a", &[2], TensorData::F32(&[1.0, 2.0])).unwrap();
        assert_eq!(
            w.add("a", &[1], TensorData::F32(&[1.0]))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: tensor 'a' was already added (names must be unique)",
                p(&f)
            )
        );
        assert_eq!(
            w.add("b", &[2, 2], TensorData::I64(&[1, 2, 3]))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: tensor 'b': 3 values given, shape [2, 2] needs 4",
                p(&f)
            )
        );
        assert_eq!(
            w.add("__meta__", &[1], TensorData::U8(&[1]))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: invalid tensor name '__meta__' (reserved for metadata)",
                p(&f)
            )
        );
        assert_eq!(
            w.add("", &[], TensorData::U8(&[1]))
                .unwrap_err()
                .to_string(),
            format!("{}: invalid tensor name '' (empty)", p(&f))
        );
        let huge = [usize::MAX, 2];
        assert!(w
            .add("h", &huge, TensorData::U8(&[]))
            .unwrap_err()
            .to_string()
            .contains("needs more than fit in memory"));
        // the failed adds left the writer usable
        w.add("c", &[], TensorData::Bool(&[true])).unwrap();
        w.finish(Meta::default()).unwrap();
        let d = Dump::open(&f).unwrap();
        assert_eq!(d.names().len(), 2);
        assert_eq!(d.meta().unwrap().order, vec!["a", "c"]);
    }
    let missing_dir = dir.path().join("no/such/dir/out.npz");
    assert!(DumpWriter::create(&missing_dir)
        .unwrap_err()
        .to_string()
        .starts_with(&format!("{}: cannot write dump (", p(&missing_dir))));
}

#[test]
fn duplicate_safetensors_keys() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&1f32.to_le_bytes());
    let f = write(dir.path(), "dup.safetensors", &st);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: duplicate entry 'a' (tensor name 'a' appears twice)",
            p(&f)
        )
    );
}
