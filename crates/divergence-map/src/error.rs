//! [`MapError`]: what can be wrong with a map, one lowercase line naming the map and the rule.

use thiserror::Error;

/// A map that cannot be used: every message names the map (its file or preset) and, where one
/// rule is at fault, the rule (`rule 3 (from = "Qcur-{L}")`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The TOML does not parse, has fields this version does not know, holds no rule, or asks
    /// for more than a bound (rules, pattern matches).
    #[error("{map}: {message}")]
    Syntax { map: String, message: String },
    /// One rule is inconsistent on its own (a capture used in `to` but not in `from`, a split
    /// with as many sizes as targets, ...).
    #[error("{map}: {rule}: {message}")]
    Rule {
        map: String,
        rule: String,
        message: String,
    },
    /// A rule does not fit a tensor it matched (sizes that don't add up, an axis out of range,
    /// an unknown model size).
    #[error("{map}: {rule}: `{tensor}` {shape}: {message}")]
    Tensor {
        map: String,
        rule: String,
        tensor: String,
        shape: String,
        message: String,
    },
    /// Two tensors mapped onto one name.
    #[error("{map}: `{name}` is made twice: by {first} and by {second}")]
    Collision {
        map: String,
        name: String,
        first: String,
        second: String,
    },
    /// A rule of a user map matched no tensor (a preset's rules may match nothing). `hint`:
    /// empty, or `: ` and what the rule likely meant (a stacked member's name, `x@steps`).
    #[error(
        "{map}: {rule} matches no tensor of {dump}{hint} (mark it `optional = true` if that is expected)"
    )]
    Unused {
        map: String,
        rule: String,
        dump: String,
        hint: String,
    },
    /// A `to` of a user map's rule that names no tensor of the reference: every tensor it made
    /// is missing there (a preset's rules, an `all_optional` map's and an `optional` rule's
    /// may: a warning lists those). `detail`: what the rule made, ` (it made `x` and N more)`,
    /// where those names are not `to` itself (captures filled in, decode steps), then
    /// `: did you mean `y`?` with the reference's closest name; either may be absent.
    #[error(
        "{map}: {rule}: `to = \"{to}\"` names no tensor of {reference}{detail} (mark it `optional = true` if that is expected)"
    )]
    NoTarget {
        map: String,
        rule: String,
        to: String,
        reference: String,
        detail: String,
    },
}
