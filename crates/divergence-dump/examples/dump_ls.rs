//! List the tensors of a dump (name, stored dtype, original dtype, shape) and read each one;
//! with `--time`, report how long reading all tensors took. Usage:
//! `cargo run --release -p divergence-dump --example dump_ls -- FILE... [--time]`, or
//! `... -- --copy SRC DST` to read SRC and write its f32/f64 tensors to DST (timed).

use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, src, dst] = args.as_slice() {
        if flag == "--copy" {
            copy(Path::new(src), Path::new(dst));
            return;
        }
    }
    let time = args.iter().any(|a| a == "--time");
    for f in args.iter().filter(|a| *a != "--time") {
        let t0 = Instant::now();
        let dump = match divergence_dump::Dump::open(Path::new(f)) {
            Ok(d) => d,
            Err(e) => {
                println!("error: {e}");
                continue;
            }
        };
        let mut elems = 0usize;
        for name in dump.names() {
            match dump.read(name) {
                Ok(t) => {
                    elems += t.values.len();
                    if !time {
                        println!(
                            "{name}\t{}\t{:?}\t{:?}",
                            t.dtype,
                            dump.original_dtype(name),
                            t.shape
                        );
                    }
                }
                Err(e) => println!("error: {e}"),
            }
        }
        if time {
            println!(
                "{f}: {} tensors, {elems} elements in {:.3} s",
                dump.names().len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

fn copy(src: &Path, dst: &Path) {
    let t0 = Instant::now();
    let run = || -> Result<(), divergence_dump::DumpError> {
        let dump = divergence_dump::Dump::open(src)?;
        let mut w = divergence_dump::DumpWriter::create(dst)?;
        for name in dump.names() {
            let t = dump.read(name)?;
            match &t.values {
                divergence_dump::Values::F32(v) => {
                    w.add(name, &t.shape, divergence_dump::TensorData::F32(v))?
                }
                divergence_dump::Values::F64(v) => {
                    w.add(name, &t.shape, divergence_dump::TensorData::F64(v))?
                }
            }
        }
        w.finish(dump.meta().cloned().unwrap_or_default())
    };
    match run() {
        Ok(()) => println!(
            "copied {} -> {} in {:.3} s",
            src.display(),
            dst.display(),
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => println!("error: {e}"),
    }
}
