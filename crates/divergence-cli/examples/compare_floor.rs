//! What the compare phase of `diff` costs with less of its per-row work: a measuring tool for
//! issue #13 item 8 (decode steps at one pass's speed per byte; docs/performance.md, "Decode
//! steps", "The floor of per-step rows").
//!
//! It compares two dumps with the same names in the same order (what `divergence run` and the
//! exporter write) through the engine's own `compare`, stored tensors only (zero-copy views),
//! in one of two orders and keeping the rows or not:
//!
//! - `step`: row `i` after row `i - 1`, as `diff` does (a decode dump's rows are step-major:
//!   every probe of step 1, then of step 2, ...: each row is a member away from the last);
//! - `member`: every step of a probe before the next probe (each member read front to back);
//! - `rows`: the rows collected into one vector, as `diff` does; `sum`: each row dropped once
//!   made (no row vector), only a sum kept so that nothing is optimized away.
//!
//! ```text
//! cargo run --release -p divergence-cli --example compare_floor -- OURS REF step|member rows|sum
//! ```
//!
//! It prints the wall and CPU time (user + system, from `getrusage`) of the comparisons alone
//! (opening and ordering not included). Run it with `RAYON_NUM_THREADS=1` to read CPU per row.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use divergence_diff::{compare, DiffConfig, OpResult, Side};
use divergence_dump::Dump;
use rayon::prelude::*;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ours, reference, order, keep] = args.as_slice() else {
        bail!("usage: compare_floor OURS REF step|member rows|sum");
    };
    let open = |p: &str| Dump::open(Path::new(p)).with_context(|| format!("{p}: cannot open"));
    let (o, r) = (open(ours)?, open(reference)?);
    if o.names() != r.names() {
        bail!("the two dumps must list the same names in the same order");
    }
    let n = o.names().len();
    let mut rows: Vec<usize> = (0..n).collect();
    match order.as_str() {
        "step" => {}
        "member" => rows.sort_by(|&a, &b| {
            let key = |i: usize| divergence_names::split_step(&o.names()[i]);
            key(a).cmp(&key(b))
        }),
        other => bail!("order {other:?}: step or member"),
    }
    let cfg = DiffConfig::default();
    let one = |i: usize| -> OpResult {
        let name = &o.names()[i];
        let (Ok(vo), Ok(vr)) = (o.view_at(i), r.view_at(i)) else {
            return divergence_diff::unreadable(name, divergence_diff::Which::Ours, "read".into());
        };
        let [od, rd] = [&o, &r].map(|d| d.original_dtype_str_at(i).unwrap_or("float32"));
        let ours = Side {
            shape: &vo.shape,
            values: vo.values(),
            dtype: od,
        };
        let theirs = Side {
            shape: &vr.shape,
            values: vr.values(),
            dtype: rd,
        };
        compare(name, Some(ours), Some(theirs), &cfg)
    };
    let (start, cpu0) = (Instant::now(), cpu_ms());
    let kept = match keep.as_str() {
        "rows" => {
            let mut out: Vec<OpResult> = Vec::with_capacity(n);
            rows.par_iter()
                .with_max_len(64)
                .map(|&i| one(i))
                .collect_into_vec(&mut out);
            let kept = out.len();
            std::mem::forget(out);
            format!("{kept} rows kept")
        }
        "sum" => {
            let s: f64 = rows
                .par_iter()
                .with_max_len(64)
                .map(|&i| one(i).rule.diff_l2.unwrap_or(0.0))
                .sum();
            format!("no rows kept (sum of diff_l2 {s:.6e})")
        }
        other => bail!("{other:?}: rows or sum"),
    };
    let (wall, cpu) = (start.elapsed().as_secs_f64() * 1e3, cpu_ms() - cpu0);
    println!(
        "{order} {keep}: {wall:.1} ms wall, {cpu:.0} ms cpu, {n} rows ({:.2} us cpu per row), {kept}",
        cpu * 1e3 / n as f64
    );
    // As `diff` does: the kernel reclaims the maps at exit.
    std::mem::forget((o, r));
    Ok(())
}

/// CPU time of this process so far (user + system), in ms.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}
