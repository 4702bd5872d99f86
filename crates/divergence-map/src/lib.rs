//! Name maps and layout transforms: compare a dump that does not use transformers' names and
//! layouts (vLLM's fused projections, llama.cpp's graph names, TransformerLens' hooks, your own
//! engine's) with the reference, without a renaming script (docs/mapping.md).
//!
//! A map is TOML ([`Map::parse`]) or a built-in preset ([`preset`]): rules that rename tensors
//! by pattern (`Qcur-{L}` -> `model.layers.{L}.self_attn.q_proj`) and re-lay them out on the way
//! (split a fused tensor, permute / reshape / squeeze / select axes, combine several tensors by
//! concatenation or sum). [`resolve`] applies a map to one dump's names and shapes, checking
//! every shape (a pure function: names in, [`Resolved`] out); [`MappedDump`] then reads the dump
//! through it lazily, one tensor at a time.
//!
//! Errors ([`MapError`]) are one line naming the map and the rule.

mod array;
mod error;
mod mapped;
mod presets;
mod resolve;
mod spec;

pub use array::{Combine, Step};
pub use error::MapError;
pub use mapped::{Entry, MappedDump, Part, Pieces};
pub use presets::{preset, preset_text, PRESETS};
pub use resolve::{resolve, MissingTarget, Resolved, Sizes, Virtual, MAX_MATCHES};
pub use spec::{
    escape_braces, fill, target_problem, toml_tokens, Map, Rule, MAX_MAP_BYTES, MAX_MAP_TOKENS,
    MAX_PATTERNS, MAX_PATTERN_BYTES, MAX_RANK, MAX_RULES, MAX_STEPS, SIZE_NAMES,
};
