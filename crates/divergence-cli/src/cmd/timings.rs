//! `DIVERGENCE_TIMINGS=1`: when each phase of `diff` ends, in milliseconds since the command
//! started, on stderr. For profiling one run (docs/performance.md); under `--watch` the clock
//! keeps the first run's start, and under `--tui` the lines land on the view. Off, it costs one
//! environment lookup.

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

/// Starts the clock, when timings are on.
pub fn begin() {
    start();
}

/// `divergence timings: PHASE done at T ms`, when timings are on.
pub fn mark(phase: &str) {
    if let Some(t) = start() {
        eprintln!(
            "divergence timings: {phase} done at {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// [`mark`]s its phase when dropped (a phase with several ways out).
pub struct MarkOnDrop(pub &'static str);

impl Drop for MarkOnDrop {
    fn drop(&mut self) {
        mark(self.0);
    }
}
