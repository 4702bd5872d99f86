//! One module per subcommand (its clap arguments and its `run` function), plus what they
//! share: the output flags ([`output`]), the check that outputs are not inputs ([`outputs`])
//! and the value parsers ([`parse`]).

pub mod align;
pub mod diff;
pub mod inspect;
pub mod map;
pub mod output;
pub mod outputs;
pub mod parse;
pub mod prefill_decode;
pub mod rows;
pub mod run;
pub mod steps;
pub mod timings;

/// `n` and the word for it, one or many (`1 token`, `3 tokens`).
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
