//! `DIVERGENCE_TIMINGS=1`: when each phase of `diff` ends, in milliseconds since the command
//! started, on stderr (and for `run --out`, where the time of writing the dump went). For
//! profiling one run (docs/performance.md); under `--watch` the clock keeps the first run's
//! start, and under `--tui` the lines land on the view. Off, it costs one environment lookup.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();

fn start() -> Option<Instant> {
    *START.get_or_init(|| {
        std::env::var_os("DIVERGENCE_TIMINGS")
            .filter(|v| !v.is_empty() && v != "0")
            .map(|_| Instant::now())
    })
}

/// Are timings on? (`run` prints where its dump's time went.)
pub fn on() -> bool {
    start().is_some()
}

/// Starts the clock, when timings are on.
pub fn begin() {
    start();
}

/// `divergence timings: PHASE done at T ms (cpu U user + S sys ms; F page faults; anon A MB)`,
/// when timings are on: the wall clock since the start and the process's CPU time so far (all
/// threads; the system part is mostly page faults), which tell a phase that waits or contends
/// from one that works, and its page faults and anonymous memory so far (what the phases
/// allocated: a decode report's rows, the names of its steps).
pub fn mark(phase: &str) {
    if let Some(t) = start() {
        let (user, sys, faults) = cpu_ms();
        crate::exit::say(&format!(
            "divergence timings: {phase} done at {:.1} ms (cpu {user:.0} user + {sys:.0} sys ms; \
             {faults} page faults{})",
            t.elapsed().as_secs_f64() * 1e3,
            anon_mb()
        ));
    }
}

/// The process's anonymous memory now (`RssAnon`, Linux), as "; anon 5.2 MB"; empty where
/// unknown. What the phases allocated, beside the mapped dumps (which are file pages).
fn anon_mb() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(String::new, |kb| format!("; anon {:.1} MB", kb / 1024.0))
}

/// The process's user and system CPU time so far, in milliseconds, and its page faults (minor
/// and major).
fn cpu_ms() -> (f64, f64, libc::c_long) {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } == 0;
    if !ok {
        return (0.0, 0.0, 0);
    }
    // SAFETY: initialized by the successful call above (and zeroed before it).
    let u = unsafe { u.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    (ms(u.ru_utime), ms(u.ru_stime), u.ru_minflt + u.ru_majflt)
}

/// [`mark`]s its phase when dropped (a phase with several ways out).
pub struct MarkOnDrop(pub &'static str);

impl Drop for MarkOnDrop {
    fn drop(&mut self) {
        mark(self.0);
    }
}
