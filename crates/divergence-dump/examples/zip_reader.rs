//! Our zip member reader (`npz.rs`) against the `zip` crate on one `.npz`, for the measurement
//! in docs/performance.md ("Reading npz members: our reader or the zip crate").
//!
//! ```text
//! cargo run --release -p divergence-dump --example zip_reader -- DUMP.npz [RUNS]
//! ```
//!
//! Three ways to get at the members, each timed (median and min of RUNS, page cache warm):
//!   - `ours`: `npz::read_members` (central directory and local headers, over the memory map);
//!     stored members are slices of the map, deflated ones are inflated from their slice;
//!   - `zip-read`: `zip::ZipArchive` over a cursor on the same map; members are read through
//!     `by_index` (a copy into a buffer, CRC-32 checked);
//!   - `zip-dir`: `zip::ZipArchive` for the directory only, then `by_index_raw(..).data_start()`
//!     and the map sliced by hand (the zero-copy way to use the crate).
//!
//! And three tasks: `open` (the directory), `headers` (open, then the first 128 bytes of every
//! member: the npy header numpy writes), `all` (open, then every byte of every member, folded
//! into a checksum so that each byte is really touched).
//! The machine and load the numbers in docs/performance.md were taken under are stated there.

use std::fs::File;
use std::hint::black_box;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use divergence_dump::internals::{read_members, ZipMember, METHOD_DEFLATE, METHOD_STORED};
use flate2::read::DeflateDecoder;
use memmap2::Mmap;

const HEADER: usize = 128;
const CHUNK: usize = 1 << 18;

/// Fold bytes into a checksum (a wrapping sum of the bytes: the same however the stream is cut
/// into chunks, and vectorised, so that it costs about what touching the bytes costs).
fn fold(acc: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(acc, |a, &b| a.wrapping_add(u64::from(b)))
}

/// Read `r` to its end in chunks, folding every byte.
fn fold_reader(mut acc: u64, r: &mut impl Read, buf: &mut [u8]) -> u64 {
    loop {
        match r.read(buf) {
            Ok(0) => return acc,
            Ok(n) => acc = fold(acc, buf.get(..n).unwrap_or_default()),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn ours_member(map: &[u8], m: &ZipMember, limit: usize, buf: &mut [u8]) -> u64 {
    let raw = m.raw(map);
    match m.method {
        METHOD_STORED => fold(0, raw.get(..limit.min(raw.len())).unwrap_or_default()),
        METHOD_DEFLATE => {
            let mut z = DeflateDecoder::new(raw).take(limit as u64);
            fold_reader(0, &mut z, buf)
        }
        other => panic!("method {other}"),
    }
}

fn ours(map: &[u8], path: &Path, limit: Option<usize>) -> u64 {
    let members = read_members(path, map).expect("our reader");
    let Some(limit) = limit else {
        return members.len() as u64;
    };
    let mut buf = vec![0u8; CHUNK];
    members
        .iter()
        .fold(0, |a, m| a ^ ours_member(map, m, limit, &mut buf))
}

fn zip_read(map: &[u8], limit: Option<usize>) -> u64 {
    let mut z = zip::ZipArchive::new(Cursor::new(map)).expect("zip crate");
    let Some(limit) = limit else {
        return z.len() as u64;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut acc = 0;
    for i in 0..z.len() {
        let f = z.by_index(i).expect("member");
        acc ^= fold_reader(0, &mut f.take(limit as u64), &mut buf);
    }
    acc
}

fn zip_dir(map: &[u8], limit: Option<usize>) -> u64 {
    let mut z = zip::ZipArchive::new(Cursor::new(map)).expect("zip crate");
    let Some(limit) = limit else {
        return z.len() as u64;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut acc = 0;
    for i in 0..z.len() {
        let f = z.by_index_raw(i).expect("member");
        let start = f.data_start().expect("data start") as usize;
        let raw = map
            .get(start..start + f.compressed_size() as usize)
            .expect("in file");
        acc ^= match f.compression() {
            zip::CompressionMethod::Stored => fold(0, raw.get(..limit.min(raw.len())).unwrap()),
            _ => fold_reader(
                0,
                &mut DeflateDecoder::new(raw).take(limit as u64),
                &mut buf,
            ),
        };
    }
    acc
}

fn time(runs: usize, mut f: impl FnMut() -> u64) -> (Duration, Duration, u64) {
    let check = black_box(f()); // untimed warm-up
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(black_box(f()), check);
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[0], check)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--errors") {
        // What each reader says about damaged files (the "same errors" question).
        for f in args.skip(1) {
            let path = PathBuf::from(&f);
            let bytes = std::fs::read(&path).expect("read");
            let ours = read_members(&path, &bytes).map(|m| m.len());
            let theirs = zip::ZipArchive::new(Cursor::new(&bytes[..])).map(|z| z.len());
            println!("{f}\n  ours: {ours:?}\n  zip:  {theirs:?}");
        }
        return;
    }
    let path = PathBuf::from(args.next().expect("usage: zip_reader DUMP.npz [RUNS]"));
    let runs: usize = args.next().map_or(10, |r| r.parse().expect("RUNS"));
    let file = File::open(&path).expect("open");
    // SAFETY: read-only map of a file nobody rewrites during the benchmark.
    let map = unsafe { Mmap::map(&file) }.expect("mmap");
    let n = read_members(&path, &map).expect("npz").len();
    println!(
        "{}: {} members, {:.0} MB, {runs} runs each (median / min, ms)",
        path.display(),
        n,
        map.len() as f64 / 1e6
    );
    println!("| task | ours | zip-read | zip-dir |");
    println!("| --- | ---: | ---: | ---: |");
    for (task, limit) in [
        ("open", None),
        ("headers", Some(HEADER)),
        ("all", Some(usize::MAX)),
    ] {
        let (om, omin, oc) = time(runs, || ours(&map, &path, limit));
        let (zm, zmin, zc) = time(runs, || zip_read(&map, limit));
        let (dm, dmin, dc) = time(runs, || zip_dir(&map, limit));
        assert!(oc == zc && zc == dc, "the readers disagree on {task}");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {task} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |",
            ms(om),
            ms(omin),
            ms(zm),
            ms(zmin),
            ms(dm),
            ms(dmin)
        );
    }
}
