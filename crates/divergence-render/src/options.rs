//! [`TableOptions`]: what the table and Markdown views show (filters, compact view, colour,
//! width). Resolved by the caller (the CLI) once; the renderers only read it.

use regex::Regex;

/// Options of the table and Markdown views (a config struct, not boolean parameters).
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// ANSI colors (the CLI sets this when stdout is a terminal). Without color the first
    /// divergence is still marked with `>>`.
    pub color: bool,
    /// Show every op instead of the compact view (context around the first divergence).
    pub all: bool,
    /// Only ops of this layer (names containing `layers.N`) in the ops table and amplification.
    pub layer: Option<usize>,
    /// Only ops whose name matches this regex (unanchored: `k_norm` matches any name containing
    /// it; `.` matches any character, so write `layers\.3\.` or use `layer`). The caller parses
    /// it, so an invalid pattern is the caller's error, never a silent fallback.
    pub grep: Option<Regex>,
    /// Ops shown before and after the first divergence in the compact view.
    pub context: usize,
    /// Fit the table view to this many columns (the terminal's width); `None` never wraps
    /// (stable output for pipes and snapshots). Text lines wrap between words; the ops table
    /// drops columns, first cosine, then dtype, shape, ||ref||, ||ours||, out tol and `#`,
    /// then wraps the op name, and only below 16 characters for the name drops max|o-r| and
    /// status; the mark, the op name and rel err always stay. No table wraps a number. The
    /// Markdown view ignores it.
    pub width: Option<u16>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            color: false,
            all: false,
            layer: None,
            grep: None,
            context: 3,
            width: None,
        }
    }
}
