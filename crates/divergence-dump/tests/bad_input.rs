//! Bad input gives a `DumpError` whose one-line message starts with the path and names the
//! problem; nothing panics.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{data, npy_with};
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
            "{}: shape [1099511627776, 1099511627776] is too large (its dimensions other than 0 multiply past 2^61 elements, which numpy refuses too)",
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
            format!("{}: entry '{entry}': shape [1099511627776, 1099511627776] is too large (its dimensions other than 0 multiply past 2^61 elements, which numpy refuses too)", p(&f))
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
        "{}: invalid divergence metadata (metadata is not valid json: ",
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

/// A write that fails (here a full disk, `/dev/full`) is returned once, at the `add` or
/// `finish` where it happens; later calls fail too instead of writing a dump that reads as
/// complete, and the zip writer's own finalizing on drop writes nothing more (it printed its
/// error to stderr, glued to the CLI's error line: checked by hand with `--nocapture`).
#[cfg(target_os = "linux")]
#[test]
fn a_failed_npz_write_fails_every_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("full.npz");
    std::os::unix::fs::symlink("/dev/full", &f).unwrap();
    let mut w = DumpWriter::create(&f).unwrap();
    // More than the 1 MiB write buffer: the file is written, and the disk is full.
    let big = vec![0f32; 1 << 19];
    let first = w
        .add("a", &[big.len()], TensorData::F32(&big))
        .unwrap_err()
        .to_string();
    assert!(
        first.contains("No space left") || first.contains("no space left"),
        "{first}"
    );
    let later = w.add("b", &[1], TensorData::F32(&[1.0])).unwrap_err();
    assert!(
        later.to_string().contains("an earlier write failed"),
        "{later}"
    );
    let end = w.finish(Meta::default()).unwrap_err();
    assert!(end.to_string().contains("an earlier write failed"), "{end}");
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
    let f = dir.path().join("out");
    assert_eq!(
        DumpWriter::create(&f).unwrap_err().to_string(),
        format!(
            "{}: no extension to tell the dump's format by: the name must end in one (use .npz or .safetensors)",
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
        assert_eq!(common::strs(&d.meta().unwrap().order), vec!["a", "c"]);
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

// ---------------------------------------------------------------------------------------------
// issue #16: bombs, one-line errors, messages that mislead

/// Writes bits LSB-first, as deflate packs them.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn new() -> Bits {
        Bits {
            out: Vec::new(),
            acc: 0,
            n: 0,
        }
    }
    fn put(&mut self, value: u32, n: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, n: u32) {
        self.put(code.reverse_bits() >> (32 - n), n);
    }
    /// A literal byte in the fixed Huffman code.
    fn literal(&mut self, b: u8) {
        match b {
            0..=143 => self.code(0x30 + u32::from(b), 8),
            _ => self.code(0x190 + u32::from(b) - 144, 9),
        }
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A raw deflate stream (one fixed-Huffman block) that inflates to `prefix` followed by
/// `zeros` zero bytes (rounded up to a multiple of 258): 13 bits per 258 bytes of output.
fn zero_bomb(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let mut b = Bits::new();
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman codes
    for &x in prefix {
        b.literal(x);
    }
    b.literal(0);
    for _ in 0..zeros.div_ceil(258) {
        b.code(0b1100_0101, 8); // length code 285: 258 bytes
        b.code(0, 5); // distance code 0: distance 1
    }
    b.code(0, 7); // end of block
    b.finish()
}

/// A zip of deflated members `(name, compressed bytes, claimed uncompressed size)`, written by
/// hand so that the directory can lie.
fn raw_zip(members: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for &(name, data, claimed) in members {
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&8u16.to_le_bytes()); // deflate
            v.extend_from_slice(&[0; 4]); // time, date
            v.extend_from_slice(&0u32.to_le_bytes()); // crc (never reached)
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&claimed.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn deflate_bomb_stops_at_the_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    // shape (4,) of f32: the npy header implies 128 + 16 bytes, and the directory says so; the
    // stream goes on with 4 GiB of zeros (27 MB compressed with fixed Huffman codes).
    let npy = npy_with(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
        &[0; 16],
    );
    let bomb = zero_bomb(&npy, 4 << 30);
    let f = write(
        dir.path(),
        "bomb.npz",
        &raw_zip(&[("x.npy", &bomb, npy.len() as u32)]),
    );
    let start = std::time::Instant::now();
    let d = Dump::open(&f).unwrap();
    assert_eq!(d.shape("x"), Some(&[4usize][..]));
    let e = d.read("x").unwrap_err().to_string();
    let v = d.view("x").unwrap_err().to_string();
    let took = start.elapsed();
    assert_eq!(
        e,
        format!("{}: entry 'x.npy': corrupt compressed data (inflates past the 144 bytes the npy header and the zip directory declare (a deflate bomb?); stopped there)", p(&f))
    );
    assert_eq!(v, e);
    // inflating the 4 GiB takes seconds even in release builds; stopping takes microseconds
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");

    // a directory that claims more than the npy header implies is refused before inflating
    let f = write(
        dir.path(),
        "claims.npz",
        &raw_zip(&[("x.npy", &bomb, 1 << 30)]),
    );
    assert_eq!(
        read_err(&f, "x"),
        format!("{}: entry 'x.npy': corrupt compressed data (the zip directory says 1073741824 bytes uncompressed, the npy header implies 144)", p(&f))
    );
}

#[test]
fn metadata_bomb_is_refused_before_inflating() {
    let dir = tempfile::tempdir().unwrap();
    // __meta__ claiming 1 GB of JSON (the header and directory agree); the stream holds zeros
    let npy = npy_with(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000,), }",
        &[],
    );
    let bomb = zero_bomb(&npy, 1_000_000_000);
    let claimed = (npy.len() + 1_000_000_000) as u32;
    let f = write(
        dir.path(),
        "meta.npz",
        &raw_zip(&[("__meta__.npy", &bomb, claimed)]),
    );
    let start = std::time::Instant::now();
    assert_eq!(
        open_err(&f),
        format!("{}: invalid divergence metadata (__meta__ is 1000000000 bytes, more than the 64 MiB allowed for metadata)", p(&f))
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[cfg(unix)]
#[test]
fn fifo_and_devices_are_not_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.npz");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        // opening a FIFO for reading would block: it must not even be opened
        assert_eq!(
            open_err(&fifo),
            format!(
                "{}: not a regular file (a named pipe (fifo)), not a dump",
                p(&fifo)
            )
        );
    }
    let zero = Path::new("/dev/zero");
    if zero.exists() {
        assert_eq!(
            open_err(zero),
            "/dev/zero: not a regular file (a character device), not a dump"
        );
    }
    // A named pipe unlinked while open, reached through /proc/self/fd/N (its link reads
    // `... (deleted)`): still a named pipe (a review: a path that does not resolve read as a
    // shell's pipe).
    #[cfg(target_os = "linux")]
    if ok {
        use std::os::fd::AsRawFd;
        // Read and write: opening a FIFO so does not wait for the other end on Linux.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        std::fs::remove_file(&fifo).unwrap();
        let at = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
        if at.exists() {
            assert_eq!(
                open_err(&at),
                format!(
                    "{}: not a regular file (a named pipe (fifo)), not a dump",
                    p(&at)
                )
            );
        }
    }
    // A shell's pipe (`diff /dev/stdin ...` fed by `|`) is a pipe, not a named one.
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (reader, _writer) = std::io::pipe().unwrap();
        let at = PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
        if at.exists() {
            assert_eq!(
                open_err(&at),
                format!("{}: not a regular file (a pipe), not a dump", p(&at))
            );
        }
    }
}

#[test]
fn npy_header_syntax_errors_are_one_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let npy = npy_with(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), oops }",
        &[0; 12],
    );
    let f = write(dir.path(), "syntax.npy", &npy);
    let m = open_err(&f);
    assert!(
        m.starts_with(&format!(
            "{}: corrupt npy header (header is not a python dict literal (syntax error at column ",
            p(&f)
        )),
        "{m}"
    );
    assert!(m.contains("oops"), "{m}");
    assert!(!m.contains('\n') && !m.contains('^'), "{m}");

    // a long header is quoted around the error, not echoed in full
    let long = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': '{}', @ }}",
        "a".repeat(1800)
    );
    let f = write(dir.path(), "long.npy", &npy_with(&long, &[0; 12]));
    let m = open_err(&f);
    assert!(!m.contains('\n'), "{m}");
    assert!(m.len() < p(&f).len() + 200, "{} chars: {m}", m.len());
    assert!(m.contains("@"), "{m}");
}

#[test]
fn too_many_dimensions_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let dims = vec!["1"; 150_000].join(", ");
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // a v2 header (the dict is longer than 65535 bytes)
    let mut text = dict.into_bytes();
    while !(12 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut npy = b"\x93NUMPY\x02\x00".to_vec();
    npy.extend_from_slice(&(text.len() as u32).to_le_bytes());
    npy.extend_from_slice(&text);
    npy.extend_from_slice(&[0; 4]);
    let f = write(dir.path(), "dims.npy", &npy);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: shape has 150000 dimensions, more than the 32768 this reader accepts",
            p(&f)
        )
    );
}

#[test]
fn a_dimension_beyond_64_bits_is_printed_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let npy = npy_with(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1180591620717411303424), }",
        &[],
    );
    let f = write(dir.path(), "dim.npy", &npy);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: dimension 1180591620717411303424 in 'shape' is too large (it overflows 64 bits)",
            p(&f)
        )
    );
}

#[test]
fn a_bad_descr_is_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let npy = npy_with(
        "{'descr': 'zz9', 'fortran_order': False, 'shape': (3,), }",
        &[0; 12],
    );
    let f = write(dir.path(), "descr.npy", &npy);
    let m = open_err(&f);
    assert!(
        m.starts_with(&format!(
            "{}: corrupt npy header (invalid 'descr' 'zz9' (",
            p(&f)
        )),
        "{m}"
    );
}

#[test]
fn a_single_npy_is_a_file_not_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&1000u16.to_le_bytes());
    npy.extend_from_slice(b"{'descr': '<f4', ");
    let f = write(dir.path(), "cut.npy", &npy);
    let m = open_err(&f);
    assert_eq!(
        m,
        format!(
            "{}: corrupt npy header (header is cut short: needs 1010 bytes, the file has 27)",
            p(&f)
        )
    );
    assert!(!m.contains("entry"), "{m}");
}

fn safetensors_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    st.extend_from_slice(data);
    st
}

/// Tensors that share their data offsets (empty ones) are listed by name, the same on every
/// open: the `safetensors` crate breaks such ties in its hash map's order, and the first of
/// two empty stacked members an error named changed from run to run (a bad-input case).
#[test]
fn empty_safetensors_tensors_are_listed_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"m":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#;
    let f = write(
        dir.path(),
        "empty.safetensors",
        &safetensors_with(header, &[0; 4]),
    );
    for _ in 0..20 {
        let d = Dump::open(&f).unwrap();
        let names: Vec<&str> = d.names().iter().map(|n| &**n).collect();
        assert_eq!(names, ["m", "z", "x", "a", "b"]);
    }
}

#[test]
fn safetensors_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[2],"data_offsets":[4,8]}}"#,
            "tensor 'w': shape [2] of F32 needs 8 bytes, data_offsets [4, 8] give 4",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            "tensor 'b': data_offsets [8, 12] do not run from where the previous tensor ends (4)",
        ),
        (
            r#"{"w":{"dtype":"X99","shape":[1],"data_offsets":[0,4]}}"#,
            "tensor 'w': unknown dtype 'X99'",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            "tensor 'w': 'shape' is missing or not a list of non-negative integers",
        ),
        (
            r#"{"x":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}"#,
            "overflow computing the size of tensor 'x' (shape [1099511627776, 1099511627776] of F32)",
        ),
    ];
    for (i, (header, detail)) in cases.iter().enumerate() {
        let f = write(
            dir.path(),
            &format!("{i}.safetensors"),
            &safetensors_with(header, &[0; 8]),
        );
        assert_eq!(
            open_err(&f),
            format!("{}: invalid safetensors file ({detail})", p(&f))
        );
    }
}

#[test]
fn a_damaged_local_header_makes_its_member_unreadable_not_the_archive() {
    // Found by the bad-input suite (scripts/bad_inputs.py, zip_damage): a flipped byte in a
    // member's local header used to fail the whole file; the central directory is sound, so
    // the other members must still be read.
    let mut buf = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut buf));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in ["a.npy", "b.npy"] {
            z.start_file(name, stored).unwrap();
            let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
            z.write_all(&npy_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                &data,
            ))
            .unwrap();
        }
        z.finish().unwrap();
    }
    // The first local header is at offset 0.
    buf[0] ^= 0xFF;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npz");
    std::fs::write(&path, &buf).unwrap();
    let d = Dump::open(&path).unwrap();
    assert_eq!(common::strs(d.names()), ["a", "b"]);
    let e = d.read("a").unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: entry 'a.npy': damaged zip entry (bad local header signature)",
            path.display()
        )
    );
    assert_eq!(d.read("b").unwrap().values.len(), 2);
}

#[test]
fn a_safetensors_header_past_its_cap_is_refused_unread() {
    // A header that claims 246 MB, past the format's 100 MB: in a file that held it, it was
    // parsed whole to say what was wrong (3.9 GB; a bad-input hunt, and the bad-input suite's
    // `bomb/st_header_over_cap_parsed`). The length alone refuses it, read or not.
    let dir = tempfile::tempdir().unwrap();
    let mut st = 246_000_055u64.to_le_bytes().to_vec();
    st.extend_from_slice(br#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#);
    let f = write(dir.path(), "big.safetensors", &st);
    assert_eq!(
        open_err(&f),
        format!(
            "{}: invalid safetensors file (header too large: the header claims 246000055 bytes, more than the 100000000 the format allows)",
            p(&f)
        )
    );
}

#[test]
fn more_tensors_than_a_dump_may_hold_are_refused_before_they_are_read() {
    // Empty tensors cost the file ~60 bytes each and `diff` ~20 us: 1.65 million under the
    // header cap took 46 s and 2.6 GB (a bad-input hunt).
    let dir = tempfile::tempdir().unwrap();
    let n = divergence_dump::MAX_ENTRIES + 1;
    let mut header = String::from("{");
    for i in 0..n {
        header.push_str(&format!(
            r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}},"#
        ));
    }
    header.pop();
    header.push('}');
    let f = write(
        dir.path(),
        "many.safetensors",
        &safetensors_with(&header, &[]),
    );
    assert_eq!(
        open_err(&f),
        format!(
            "{}: holds 1048577 tensors, more than the 1048576 a dump may hold (decode steps stored stacked, `name@steps`, count as one each: docs/reliability.md, section Caps)",
            p(&f)
        )
    );
}

#[test]
fn tensors_are_counted_however_the_header_spells_them() {
    // A tensor as a list, `"t":["F32",[0],[0,0]]`, has no `data_offsets` key and an escaped
    // key is not its bytes: the first count, of those bytes, let 1,048,577 such tensors through
    // (31.8 s and 1.5 GB; a review). The header's fields are counted instead.
    let dir = tempfile::tempdir().unwrap();
    let n = divergence_dump::MAX_ENTRIES + 1;
    let mut header = String::from(r#"{"__metadata__":{"k":"v"},"#);
    for i in 0..n {
        if i % 2 == 0 {
            header.push_str(&format!(r#""t{i}":["F32",[0],[0,0]],"#));
        } else {
            header.push_str(&format!(
                r#""t{i}":{{"dtype":"F32","shape":[0],"data_\u006fffsets":[0,0]}},"#
            ));
        }
    }
    header.pop();
    header.push('}');
    let f = write(
        dir.path(),
        "spelled.safetensors",
        &safetensors_with(&header, &[]),
    );
    assert!(
        open_err(&f).starts_with(&format!("{}: holds 1048577 tensors, more than", p(&f))),
        "{}",
        open_err(&f)
    );
}

#[test]
fn a_header_of_too_many_items_is_refused_before_it_is_parsed() {
    // One list of zeros under the header cap: 1.7 GB to be refused as a tensor without a dtype
    // (a review). Refused by its items now: one tensor allows 64 and 65,536 spare.
    let dir = tempfile::tempdir().unwrap();
    let mut header = String::from(r#"{"x":[0"#);
    header.push_str(&",0".repeat(16 * divergence_dump::MAX_ENTRIES));
    header.push_str("]}");
    let f = write(
        dir.path(),
        "items.safetensors",
        &safetensors_with(&header, &[]),
    );
    assert_eq!(
        open_err(&f),
        format!(
            "{}: invalid safetensors file (the header holds 16777218 json items (list elements and object fields), more than the 65600 its tensors allow)",
            p(&f)
        )
    );
}
