//! Settings of one diff run: [`DiffConfig`], the config struct `compare` and `assemble` take.
//!
//! Its own module (not `lib.rs`) so that the engine's modules import it sideways, never from
//! the crate root.

use crate::metrics;
use crate::tolerance::Tolerance;

/// Default ratio above which an amplification row is marked.
pub const DEFAULT_AMPLIFICATION_THRESHOLD: f64 = 10.0;

/// Settings of one diff run (a config struct rather than boolean parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffConfig {
    /// How ops are judged (CLI: `--rtol`, `--atol`, `--exact`; see [`Tolerance::from_flags`]).
    pub tolerance: Tolerance,
    /// `norm rel err / proj rel err` above which an amplification row is marked (default 10).
    pub amplification_threshold: f64,
    /// Elements per rayon task in the metrics loop; a tensor longer than this is split into chunks
    /// processed in parallel. A tuning knob only: results do not depend on it beyond f64 rounding.
    pub chunk_len: usize,
    /// With a truth: ops the reference is far from after inputs it is already noisy at are judged
    /// by the noise ratio ([`crate::compare::judge_noisy_reference`]; default on). Off where the
    /// truth is not known to be of the reference's weights (the CLI: the two do not both record
    /// one model source): those ops stay with the presets.
    pub judge_noisy_reference: bool,
    /// Our logits of the last positions only are compared with the reference's last rows
    /// ([`crate::last_logit_rows`], by the caller; default on). Off where the sides line
    /// their positions up otherwise (the CLI's `--prefill-vs-decode`).
    pub last_logit_rows: bool,
}

impl DiffConfig {
    /// The elements every piece but the last must hold a multiple of, when a tensor is fed to
    /// a [`crate::ProbeFold`] piece by piece: [`metrics::BLOCK`] (2,048) when `chunk_len` is a
    /// multiple of it (the default), else `chunk_len`. Any such pieces give the row of the
    /// whole tensor at once, bit for bit.
    pub fn piece_unit(&self) -> usize {
        metrics::Chunked::<metrics::SideStats>::unit(self.chunk_len)
    }
}

impl Default for DiffConfig {
    fn default() -> Self {
        DiffConfig {
            tolerance: Tolerance::Auto,
            amplification_threshold: DEFAULT_AMPLIFICATION_THRESHOLD,
            chunk_len: metrics::DEFAULT_CHUNK_LEN,
            judge_noisy_reference: true,
            last_logit_rows: true,
        }
    }
}
