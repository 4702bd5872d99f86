//! The map file: TOML rules (docs/mapping.md), parsed and checked on their own into a [`Map`]
//! before any dump is looked at. Name patterns with captures (`Qcur-{L}`, `{P...}` for a run
//! that may hold dots) compile to anchored regexes.

use std::collections::BTreeSet;

use regex::Regex;
use serde::Deserialize;

use crate::error::MapError;
use divergence_names::{split_step, STACKED_SUFFIX};

/// A parsed, self-consistent map: its rules in order (the first rule that matches a tensor
/// maps it).
#[derive(Debug, Clone)]
pub struct Map {
    /// What the map is called in messages: its file, or `preset vllm`.
    pub label: String,
    /// A built-in preset, or a map file that says `all_optional = true`: a rule that matches
    /// nothing is fine (an engine's dump need not hold every tensor the preset knows), and a
    /// rule that does not fit a tensor makes that row say so.
    pub preset: bool,
    pub description: Option<String>,
    pub rules: Vec<Rule>,
}

/// One rule, checked: patterns compiled, captures consistent.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `rule 3 (from = "Qcur-{L}")`: how messages and report rows name it.
    pub label: String,
    /// The first pattern finds the tensors; the others are filled in with its captures.
    pub from: Vec<Pattern>,
    /// One target, or one per split part.
    pub to: Vec<String>,
    /// Only tensors of this rank.
    pub rank: Option<usize>,
    /// Only tensors whose last axes have these sizes (numbers or model sizes: `last =
    /// "head_dim"`, `last = ["heads", "head_dim"]`; empty: any): one name, several layouts that
    /// the rank does not tell apart (llama.cpp's `Qcur` of one token, `[heads, head_dim]` after
    /// RoPE, has the rank of a prompt's projection).
    pub last: Vec<DimSpec>,
    pub combine: Option<CombineSpec>,
    pub transform: Vec<StepSpec>,
    pub split: Option<SplitSpec>,
    pub optional: bool,
    /// Why the rule exists, shown in the row (`vLLM fuses q, k and v`).
    pub note: Option<String>,
}

/// A name pattern: literal text with `{X}` (one or more characters, no dot) and `{X...}` (one
/// or more of any character) captures, each at most once.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    /// `None` for a pattern without a capture: the whole name, compared as text (a map inferred
    /// by content is all of them; a regex each cost ~28 KB, more for a long name).
    regex: Option<Regex>,
    /// The name a pattern without a capture names (`text` with its doubled braces single).
    literal: Option<String>,
    pub captures: Vec<String>,
    /// The literal text before the first capture and after the last: a name that does not
    /// start and end with them is turned away before the regex runs (most names, most rules).
    prefix: String,
    suffix: String,
}

/// A size in a reshape or split: a number, or a product of numbers and model sizes
/// (`"kv_heads*head_dim"`).
#[derive(Debug, Clone, PartialEq)]
pub enum DimSpec {
    Int(i64),
    Expr(String),
}

/// Said plainly: a size that is neither (serde's message named an internal type: "did not
/// match any variant of untagged enum DimSpec"), or a whole number past 2^63 - 1.
impl<'de> Deserialize<'de> for DimSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DimSpec, D::Error> {
        struct Size;
        impl serde::de::Visitor<'_> for Size {
            type Value = DimSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a whole number, or model sizes such as \"heads*head_dim\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<DimSpec, E> {
                Ok(DimSpec::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<DimSpec, E> {
                whole(n)
            }
            fn visit_i128<E: serde::de::Error>(self, n: i128) -> Result<DimSpec, E> {
                whole(n)
            }
            fn visit_u128<E: serde::de::Error>(self, n: u128) -> Result<DimSpec, E> {
                whole(n)
            }
            fn visit_str<E: serde::de::Error>(self, e: &str) -> Result<DimSpec, E> {
                Ok(DimSpec::Expr(e.to_string()))
            }
        }
        /// A whole number past `i64`'s range, said as such.
        fn whole<E: serde::de::Error, N: TryInto<i64> + std::fmt::Display + Copy>(
            n: N,
        ) -> Result<DimSpec, E> {
            n.try_into()
                .map(DimSpec::Int)
                .map_err(|_| E::custom(format!("size {n} is out of range (at most {})", i64::MAX)))
        }
        d.deserialize_any(Size)
    }
}

/// `last = "head_dim"` or `last = ["heads", "head_dim"]`.
#[derive(Debug, Clone, PartialEq)]
enum LastSpec {
    One(DimSpec),
    Many(Vec<DimSpec>),
}

/// A `last`, said plainly when it is neither a size nor a list of sizes (serde's message named
/// an internal type: "did not match any variant of untagged enum DimSpec", a hunt).
fn last_spec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LastSpec>, D::Error> {
    let bad = || {
        serde::de::Error::custom(
            "`last` is a size (a whole number, or model sizes such as \"head_dim\") or a list of them",
        )
    };
    // Each size read as any other ([`DimSpec`]'s own reading), its error said as `last`'s.
    let dim = |v: toml::Value| DimSpec::deserialize(v).map_err(|_| bad());
    match toml::Value::deserialize(d)? {
        toml::Value::Array(items) => items
            .into_iter()
            .map(dim)
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(LastSpec::Many(v))),
        v => dim(v).map(|d| Some(LastSpec::One(d))),
    }
}

/// How several `from` tensors make one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CombineSpec {
    /// `"sum"`.
    Name(String),
    /// `{ concat = AXIS }`.
    Concat { concat: i64 },
}

/// One layout step as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    /// `{ permute = [1, 0, 2] }`: output axis i is input axis permute[i].
    Permute(Vec<i64>),
    /// `{ transpose = [-2, -1] }`: swap two axes (exactly two: a longer list was cut to its
    /// first two without a word; a bad-input hunt).
    Transpose(#[serde(deserialize_with = "two_axes")] [i64; 2]),
    /// `{ reshape = [0, -1] }`: 0 keeps that axis' size, -1 is inferred (once), strings are
    /// model sizes.
    Reshape(Vec<DimSpec>),
    /// `{ squeeze = 0 }`: drop an axis of size 1.
    Squeeze(i64),
    /// `{ unsqueeze = 0 }`: insert an axis of size 1.
    Unsqueeze(i64),
    /// `{ select = { axis = 0, index = 1 } }`: one entry of an axis, the axis dropped (one of
    /// several outputs stacked).
    Select { axis: i64, index: usize },
}

/// A `transpose` list: exactly two axes.
fn two_axes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[i64; 2], D::Error> {
    let axes: Vec<i64> = serde::Deserialize::deserialize(d)?;
    <[i64; 2]>::try_from(axes.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "`transpose` swaps exactly two axes, not {} (`permute` lists them all)",
            axes.len()
        ))
    })
}

/// `split = { axis = -1, sizes = ["heads*head_dim", "kv_heads*head_dim", "kv_heads*head_dim"] }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub axis: i64,
    pub sizes: Vec<DimSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    description: Option<String>,
    /// `all_optional = true`: the map is read as a built-in preset is (`Map::preset`), so a
    /// copy of a preset file behaves as the preset (a newcomer's run: a copy of the llama.cpp
    /// preset failed on the first rule a dump did not need, then on the next).
    #[serde(default)]
    all_optional: bool,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// How many of its patterns hold a capture (`{` and `}` in order; checked when compiled),
    /// and their bytes together.
    fn captured(&self) -> (usize, usize) {
        let one = |s: &String| {
            s.find('{')
                .is_some_and(|i| s[i..].contains('}'))
                .then_some(s.len())
        };
        let all: Vec<usize> = match self {
            OneOrMany::One(s) => one(s).into_iter().collect(),
            OneOrMany::Many(v) => v.iter().filter_map(one).collect(),
        };
        (all.len(), all.iter().sum())
    }

    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    from: OneOrMany,
    to: OneOrMany,
    rank: Option<usize>,
    #[serde(default, deserialize_with = "last_spec")]
    last: Option<LastSpec>,
    combine: Option<CombineSpec>,
    #[serde(default)]
    transform: Vec<StepSpec>,
    split: Option<SplitSpec>,
    #[serde(default)]
    optional: bool,
    note: Option<String>,
}

/// The model sizes a rule may name.
pub const SIZE_NAMES: [&str; 6] = [
    "hidden",
    "heads",
    "kv_heads",
    "head_dim",
    "intermediate",
    "vocab",
];

/// Most rules in one map (a map is a page of rules, not data).
pub const MAX_RULES: usize = 10_000;

/// Most `from` patterns with a capture in one map, every rule's together: each is compiled to
/// its own regex (~28 KB), and one rule of 100,000 of them took 2.9 GB (a bad-input hunt,
/// 2026-12-05). A pattern without a capture is compared as text, never compiled.
pub const MAX_PATTERNS: usize = MAX_RULES;

/// Most bytes of `from` patterns with a capture in one map, every rule's together: a compiled
/// pattern grows with its text (3,300 patterns of 10 KB, a 33 MB map, took 1.8 GB; the same
/// hunt). A rule of a rename is a name or two (~100 bytes): 10,000 of them ~1 MB.
pub const MAX_PATTERN_BYTES: usize = 4 << 20;

/// Largest map text read: a `--map` file or our metadata's `"map"` (a page of rules is a few
/// kB; a map inferred for 100,000 tensors is about 10 MB).
pub const MAX_MAP_BYTES: usize = 32 << 20;

/// Most tokens a map's TOML may hold ([`toml_tokens`]), checked before it is parsed: the
/// `toml` crate lexes the whole text first, ~50 bytes a token, and builds its values after, so
/// 32 MiB of `junk = [0,0,...]` took 2.6 GB to be refused as an unknown field, a map in our
/// metadata (57 MiB) 4.6 GB, and 32 MiB of newlines 1.6 GB (a bad-input hunt and a review,
/// 2026-12-04). 400 a rule at the most rules (a rule of a rename is ~20).
pub const MAX_MAP_TOKENS: usize = 1 << 22;

/// How many tokens TOML `text` holds, as its lexer makes them, or more: each string (basic,
/// literal, multi-line), comment, newline, run of other blanks, run of other characters (a
/// bare key, a number, a date) and each of `. = , [ ] { }`. One pass, nothing allocated.
pub fn toml_tokens(text: &str) -> usize {
    let b = text.as_bytes();
    let word = |c: u8| {
        !matches!(
            c,
            b' ' | b'\t'
                | b'\r'
                | b'\n'
                | b'.'
                | b'='
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'"'
                | b'\''
        )
    };
    let blank = |c: u8| matches!(c, b' ' | b'\t' | b'\r');
    let at = |i: usize| b.get(i).copied();
    let mut n = 0usize;
    let mut i = 0usize;
    while let Some(c) = at(i) {
        n += 1;
        match c {
            b'#' => {
                // A comment, to the end of the line (the newline is a token of its own).
                while at(i).is_some_and(|c| c != b'\n') {
                    i += 1;
                }
            }
            b'"' | b'\'' if b.get(i..i + 3) == Some(&[c, c, c][..]) => {
                // Multi-line: to the next three quotes, and up to two more (`"""x"""""` ends
                // with the string's own two quotes).
                i += 3;
                while i < b.len() && b.get(i..i + 3) != Some(&[c, c, c][..]) {
                    i += if c == b'"' && b[i] == b'\\' { 2 } else { 1 };
                }
                i += 3;
                let mut more = 0;
                while more < 2 && at(i) == Some(c) {
                    i += 1;
                    more += 1;
                }
            }
            b'"' | b'\'' => {
                // One line: to the closing quote, or to the end of the line, where the lexer
                // stops too.
                i += 1;
                while let Some(d) = at(i) {
                    if d == c || d == b'\n' {
                        break;
                    }
                    i += if c == b'"' && d == b'\\' { 2 } else { 1 };
                }
                if at(i) == Some(c) {
                    i += 1;
                }
            }
            c if blank(c) => {
                while at(i).is_some_and(blank) {
                    i += 1;
                }
            }
            c if word(c) => {
                while at(i).is_some_and(word) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    n
}

/// Most `transform` steps in one rule (the presets use at most 2; a real layout change is a
/// reshape and a permute or two). Each step keeps a copy of the shape it makes.
pub const MAX_STEPS: usize = 64;

/// Most axes a rule's tensor may have, before and after each step, and most entries in a
/// `permute` or `reshape` list: numpy 1.x's own limit (`NPY_MAXDIMS`); real activations have
/// at most 5.
pub const MAX_RANK: usize = 32;

impl Map {
    /// Parses and checks a map; `label` names it in every message (its path, or `preset X`).
    /// A map made by code: it may have no rule (alignment by content may infer no pair to
    /// compare) and may name any tensor a dump holds (a reference's decode step `x@2`). A map
    /// a person gives goes through [`Map::parse_given`].
    pub fn parse(text: &str, label: &str) -> Result<Map, MapError> {
        Map::parse_as(text, label, false)
    }

    /// [`Map::parse`] for a map a person gives (`--map FILE`, our dump's metadata): a map with
    /// no rule is an error (an empty file, a `description` alone, `rule = []`), never a map
    /// that silently renames nothing; so is a `to` no dump may hold (see `check_target`).
    pub fn parse_given(text: &str, label: &str) -> Result<Map, MapError> {
        let map = Map::parse(text, label)?;
        if map.rules.is_empty() {
            return Err(MapError::Syntax {
                map: label.to_string(),
                message: "no [[rule]]: a map must rename something".into(),
            });
        }
        for rule in &map.rules {
            for t in &rule.to {
                check_target(t, &rule.from[0].text).map_err(|message| MapError::Rule {
                    map: label.to_string(),
                    rule: rule.label.clone(),
                    message,
                })?;
            }
        }
        Ok(map)
    }

    pub(crate) fn parse_as(text: &str, label: &str, preset: bool) -> Result<Map, MapError> {
        if text.len() > MAX_MAP_BYTES {
            return Err(MapError::Syntax {
                map: label.to_string(),
                message: format!(
                    "{} bytes, more than the {} MiB a map may hold",
                    text.len(),
                    MAX_MAP_BYTES >> 20
                ),
            });
        }
        let tokens = toml_tokens(text);
        if tokens > MAX_MAP_TOKENS {
            return Err(MapError::Syntax {
                map: label.to_string(),
                message: format!(
                    "{tokens} tokens (keys, values, punctuation, newlines), more than the {MAX_MAP_TOKENS} a map may hold"
                ),
            });
        }
        let spec: FileSpec = toml::from_str(text).map_err(|e| MapError::Syntax {
            map: label.to_string(),
            message: toml_message(text, &e),
        })?;
        if spec.rules.len() > MAX_RULES {
            return Err(MapError::Syntax {
                map: label.to_string(),
                message: format!("{} rules (at most {MAX_RULES})", spec.rules.len()),
            });
        }
        // Counted before any is compiled: the patterns with a capture (each a regex; one
        // without is compared as text, and a map inferred by content may hold 5,000 long
        // names: a review).
        let patterns = spec
            .rules
            .iter()
            .map(|r| r.from.captured().0)
            .sum::<usize>();
        let pattern_bytes = spec
            .rules
            .iter()
            .map(|r| r.from.captured().1)
            .sum::<usize>();
        if patterns > MAX_PATTERNS || pattern_bytes > MAX_PATTERN_BYTES {
            return Err(MapError::Syntax {
                map: label.to_string(),
                message: format!(
                    "{patterns} `from` patterns with a capture, of {pattern_bytes} bytes in all (at most {MAX_PATTERNS} patterns and {MAX_PATTERN_BYTES} bytes)"
                ),
            });
        }
        let rules = spec
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::check(i + 1, r, label))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Map {
            label: label.to_string(),
            preset: preset || spec.all_optional,
            description: spec.description,
            rules,
        })
    }
}

/// One line from a TOML error: the message and the line it points at (the error's own
/// Display is a multi-line caret diagram).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.message().trim().replace('\n', " ");
    // The parser's words for an integer TOML cannot hold (`u64 value was too large`,
    // `invalid type: integer ... as i128, expected any valid TOML value` past 2^64 - 1 or below
    // -2^63, `integer number overflowed` past 2^127).
    if msg == "u64 value was too large"
        || msg == "integer number overflowed"
        || (msg.contains(" as i128") && msg.starts_with("invalid type: integer"))
    {
        msg = format!(
            "a whole number out of range ({} to {}, what TOML holds)",
            i64::MIN,
            i64::MAX
        );
    }
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.bytes().filter(|&b| b == b'\n').count())
                + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

impl Rule {
    /// True when the rule computes values (combine, transform or split), not only renames.
    pub fn needs_shape(&self) -> bool {
        self.combine.is_some() || !self.transform.is_empty() || self.split.is_some()
    }

    fn check(n: usize, spec: RuleSpec, map: &str) -> Result<Rule, MapError> {
        let from = spec.from.into_vec();
        let to = spec.to.into_vec();
        let shown = from
            .first()
            .map_or_else(String::new, |f| format!(" (from = \"{f}\")"));
        let label = divergence_names::one_line(&format!("rule {n}{shown}")).into_owned();
        let fail = |message: String| MapError::Rule {
            map: map.to_string(),
            rule: label.clone(),
            message,
        };
        if from.is_empty() || to.is_empty() {
            return Err(fail("`from` and `to` need at least one name each".into()));
        }
        let from = from
            .iter()
            .map(|f| Pattern::compile(f).map_err(&fail))
            .collect::<Result<Vec<_>, _>>()?;
        let primary: BTreeSet<&str> = from[0].captures.iter().map(String::as_str).collect();
        for p in &from[1..] {
            if let Some(c) = p.captures.iter().find(|c| !primary.contains(c.as_str())) {
                return Err(fail(format!(
                    "`{{{c}}}` in \"{}\" is not captured by the first `from` pattern",
                    p.text
                )));
            }
        }
        for t in &to {
            for c in template_captures(t).map_err(&fail)? {
                if !primary.contains(c.as_str()) {
                    return Err(fail(format!(
                        "`{{{c}}}` in `to = \"{t}\"` is not captured by `from`"
                    )));
                }
            }
        }
        match (&spec.combine, from.len()) {
            (None, 1) => {}
            (None, _) => return Err(fail(
                "several `from` patterns need `combine = \"sum\"` or `combine = { concat = AXIS }`"
                    .into(),
            )),
            (Some(_), 1) => return Err(fail("`combine` needs several `from` patterns".into())),
            (Some(CombineSpec::Name(n)), _) if n != "sum" => {
                return Err(fail(format!(
                    "unknown combine \"{n}\" (\"sum\" or {{ concat = AXIS }})"
                )))
            }
            (Some(_), _) => {}
        }
        match &spec.split {
            None if to.len() != 1 => {
                return Err(fail(format!(
                    "{} `to` names need a `split` into as many parts",
                    to.len()
                )))
            }
            Some(s) if s.sizes.len() != to.len() => {
                return Err(fail(format!(
                    "`split` has {} sizes for {} `to` names",
                    s.sizes.len(),
                    to.len()
                )))
            }
            Some(s) if s.sizes.iter().filter(|d| **d == DimSpec::Int(-1)).count() > 1 => {
                return Err(fail("`split` may infer (-1) one size only".into()))
            }
            _ => {}
        }
        // Bounded here, before any tensor: resolving keeps a shape per step.
        if spec.transform.len() > MAX_STEPS {
            return Err(fail(format!(
                "{} transform steps (at most {MAX_STEPS})",
                spec.transform.len()
            )));
        }
        let last = match spec.last {
            None => Vec::new(),
            Some(LastSpec::One(d)) => vec![d],
            Some(LastSpec::Many(v)) if v.is_empty() => {
                return Err(fail("`last = []` asks for no axis (leave it out)".into()))
            }
            Some(LastSpec::Many(v)) => v,
        };
        if last.len() > MAX_RANK {
            return Err(fail(format!(
                "`last` lists {} axes (at most {MAX_RANK})",
                last.len()
            )));
        }
        if let Some(n) = last.iter().find_map(|d| match d {
            DimSpec::Int(n) if *n < 0 => Some(n),
            _ => None,
        }) {
            return Err(fail(format!("`last`: {n} is no axis' size (0 or more)")));
        }
        let mut dims: Vec<&DimSpec> = spec.split.iter().flat_map(|s| &s.sizes).collect();
        dims.extend(&last);
        for step in &spec.transform {
            let axes = match step {
                StepSpec::Permute(p) => p.len(),
                StepSpec::Reshape(d) => {
                    dims.extend(d);
                    d.len()
                }
                _ => 0,
            };
            if axes > MAX_RANK {
                return Err(fail(format!(
                    "a transform step lists {axes} axes (at most {MAX_RANK})"
                )));
            }
        }
        for d in dims {
            if let DimSpec::Expr(e) = d {
                check_expr(e).map_err(&fail)?;
            }
        }
        Ok(Rule {
            label,
            from,
            to,
            rank: spec.rank,
            last,
            combine: spec.combine,
            transform: spec.transform,
            split: spec.split,
            optional: spec.optional,
            // One line wherever it is shown (a row's `mapped`): a note is user text.
            note: spec
                .note
                .map(|n| divergence_names::one_line(&n).into_owned()),
        })
    }
}

/// A user string shortened for a message (at most 120 characters, `...` in the middle).
pub(crate) fn short(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX / 2).collect();
    let tail: String = s.chars().skip(s.chars().count() - MAX / 2).collect();
    format!("{head}...{tail}")
}

/// A size expression names only known sizes and numbers: `kv_heads*head_dim`, `2*intermediate`.
fn check_expr(e: &str) -> Result<(), String> {
    for term in e.split('*').map(str::trim) {
        if !term.is_empty() && term.bytes().all(|b| b.is_ascii_digit()) {
            if term.parse::<i64>().is_err() {
                return Err(format!(
                    "size `{}` in \"{}\" is out of range (at most {})",
                    short(term),
                    short(e),
                    i64::MAX
                ));
            }
            continue;
        }
        if !SIZE_NAMES.contains(&term) {
            return Err(format!(
                "unknown size `{term}` in \"{e}\" (known: {})",
                SIZE_NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Why a rule `from` -> `to` is refused for its target, if it is (empty, `__meta__`, a control
/// character, a decode step's name unless `from` ends with the same step): for code that writes
/// maps (`diff --suggest-map`), so that a file it writes passes back.
pub fn target_problem(to: &str, from: &str) -> Option<String> {
    check_target(to, from).err()
}

/// A name no dump may hold is not a target: empty, the reserved `__meta__`
/// (docs/dump-format.md), or a decode step's name (`x@3`, a stacked member's `x@steps`): a
/// map names the probe and each step follows it. The one exception is a rule for one step of
/// one probe, whose `from` ends with the same step (`from = "a@2"`, `to = "b@2"`).
fn check_target(t: &str, from: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("`to = \"\"`: a name a map makes must not be empty".into());
    }
    if t == "__meta__" {
        return Err(
            "`to = \"__meta__\"`: a reserved name (the dump's metadata), never a probe".into(),
        );
    }
    // (A control character is allowed: a reference's name may hold a line break, and a map
    // must be able to name it, as `--suggest-map` does; reports escape such names. Refused
    // until 2026-12-05, the suggested map of such a pair left it out, and passed back it
    // compared one pair less without a word: a bad-input hunt.)
    let suffix = match split_step(t) {
        (base, step) if step > 0 => Some(&t[base.len()..]),
        _ => t.ends_with(STACKED_SUFFIX).then_some(STACKED_SUFFIX),
    };
    if let Some(suffix) = suffix {
        if !from.ends_with(suffix) {
            return Err(format!(
                "`to = \"{}\"` names a decode step (`{suffix}`): a map names the probe, and each step follows it",
                short(t)
            ));
        }
    }
    Ok(())
}

/// The captures a `to` template uses.
fn template_captures(t: &str) -> Result<Vec<String>, String> {
    Ok(parse_pattern(t)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Capture(name, _) => Some(name),
            Piece::Text(_) => None,
        })
        .collect())
}

enum Piece {
    Text(String),
    /// Name, and whether it may span dots (`{X...}`).
    Capture(String, bool),
}

fn parse_pattern(p: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    // Literal text so far: `{{` and `}}` are a brace of the name (docs/mapping.md).
    let mut text = String::new();
    let mut rest = p;
    while let Some(open) = rest.find(['{', '}']) {
        text.push_str(&rest[..open]);
        let at = &rest[open..];
        if at.starts_with("{{") || at.starts_with("}}") {
            text.push_str(&at[..1]);
            rest = &at[2..];
            continue;
        }
        if at.starts_with('}') {
            return Err(format!(
                "unmatched `}}` in \"{}\" (a brace of the name is written twice: `}}}}`)",
                short(p)
            ));
        }
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        let Some(close) = at.find('}') else {
            return Err(format!(
                "unclosed `{{` in \"{}\" (a brace of the name is written twice: `{{{{`)",
                short(p)
            ));
        };
        let inner = &at[1..close];
        let (name, dots) = match inner.strip_suffix("...") {
            Some(n) => (n, true),
            None => (inner, false),
        };
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "bad capture `{{{}}}` in \"{}\" (a name of letters, digits and _, not starting with a digit, optionally followed by ...; a brace of the name is written twice: `{{{{`, `}}}}`)",
                short(inner),
                short(p)
            ));
        }
        out.push(Piece::Capture(name.to_string(), dots));
        rest = &at[close + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// `name` as a map pattern or `to` that names it literally: its braces doubled (`{{`, `}}`).
pub fn escape_braces(name: &str) -> String {
    name.replace('{', "{{").replace('}', "}}")
}

impl Pattern {
    /// Compiles `text` (see [`Pattern`]).
    pub fn compile(text: &str) -> Result<Pattern, String> {
        let mut re = String::from("^");
        let mut captures: Vec<String> = Vec::new();
        let pieces = parse_pattern(text)?;
        let literal = |p: Option<&Piece>| match p {
            Some(Piece::Text(t)) => t.clone(),
            _ => String::new(),
        };
        let (prefix, suffix) = if captures_in(&pieces) {
            (literal(pieces.first()), literal(pieces.last()))
        } else {
            (String::new(), String::new())
        };
        let whole = (!captures_in(&pieces)).then(|| literal(pieces.first()));
        for piece in pieces {
            match piece {
                Piece::Text(t) => re.push_str(&regex::escape(&t)),
                Piece::Capture(name, dots) => {
                    if captures.contains(&name) {
                        return Err(format!(
                            "capture `{{{name}}}` used twice in \"{}\"",
                            short(text)
                        ));
                    }
                    re.push_str(&format!(
                        "(?P<{name}>{})",
                        if dots { ".+?" } else { "[^.]+?" }
                    ));
                    captures.push(name);
                }
            }
        }
        re.push('$');
        let regex = if captures.is_empty() {
            None
        } else {
            Some(Regex::new(&re).map_err(|e| {
                let e = e.to_string();
                let why = e.lines().last().unwrap_or("too large").trim().to_string();
                format!("pattern \"{}\": {}", short(text), short(&why))
            })?)
        };
        Ok(Pattern {
            text: text.to_string(),
            regex,
            literal: whole,
            captures,
            prefix,
            suffix,
        })
    }

    /// The probe whose decode steps this pattern names, when it is `<probe>@{X}`: a name, `@`
    /// and one capture (without `...`), nothing else. Such a rule is looked up by the probe
    /// of each decode step's name, never matched: it names every step of that probe and no
    /// other name (`k_norm@v` is not a step), at no matching cost (docs/mapping.md, "Decode
    /// steps").
    pub fn probe_of_steps(&self) -> Option<&str> {
        let [cap] = self.captures.as_slice() else {
            return None;
        };
        let probe = self.prefix.strip_suffix('@').filter(|p| !p.is_empty())?;
        // The text is the prefix (its braces doubled) and the capture, nothing between.
        (self.suffix.is_empty() && self.text == format!("{}{{{cap}}}", escape_braces(&self.prefix)))
            .then_some(probe)
    }

    /// The one name a pattern without a capture names (`None` for a pattern with one).
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// The captures of `name`, when it matches.
    pub fn matches(&self, name: &str) -> Option<Vec<(String, String)>> {
        if !(name.starts_with(&self.prefix) && name.ends_with(&self.suffix)) {
            return None;
        }
        let Some(regex) = &self.regex else {
            return (Some(name) == self.literal.as_deref()).then(Vec::new);
        };
        let c = regex.captures(name)?;
        Some(
            self.captures
                .iter()
                .map(|n| (n.clone(), c.name(n).map_or("", |m| m.as_str()).to_string()))
                .collect(),
        )
    }
}

/// True when the pattern has a capture (else its one piece of text is the whole name).
fn captures_in(pieces: &[Piece]) -> bool {
    pieces.iter().any(|p| matches!(p, Piece::Capture(..)))
}

/// `template` with its `{X}` / `{X...}` replaced by the captured values, in one pass over the
/// template: a value is never read as a template (a bad-input hunt: a name holding `{B}`,
/// captured as `A`, had its `{B}` replaced too). A capture not given, or a template that does
/// not parse (none does: rules are checked), stays as written.
pub fn fill(template: &str, captures: &[(String, String)]) -> String {
    let Ok(pieces) = parse_pattern(template) else {
        return template.to_string();
    };
    let mut out = String::with_capacity(template.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Capture(name, dots) => match captures.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push('{');
                    out.push_str(&name);
                    if dots {
                        out.push_str("...");
                    }
                    out.push('}');
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_and_fill() {
        let p = Pattern::compile("Qcur-{L}").unwrap();
        assert_eq!(p.matches("Qcur-12"), Some(vec![("L".into(), "12".into())]));
        assert_eq!(p.matches("Qcur_normed-12"), None);
        // The literal prefix and suffix only turn names away; the regex decides the rest
        // (here they overlap in a name too short for the capture).
        let q = Pattern::compile("a.{X}.a").unwrap();
        assert_eq!(q.matches("a.a"), None);
        assert_eq!(q.matches("a.b.a"), Some(vec![("X".into(), "b".into())]));
        assert_eq!(q.matches("a.b.c"), None);
        assert_eq!(q.matches("b.b.a"), None);
        let any = Pattern::compile("{N...}.0").unwrap();
        assert_eq!(any.matches("x.y.0"), Some(vec![("N".into(), "x.y".into())]));
        assert_eq!(p.matches("Qcur-"), None);
        let p = Pattern::compile("{P...}.tp{R}").unwrap();
        let c = p.matches("model.layers.0.mlp.tp1").unwrap();
        assert_eq!(c[0].1, "model.layers.0.mlp");
        assert_eq!(fill("{P...}.x{R}", &c), "model.layers.0.mlp.x1");
        // A value is not filled again (a name holding `{B}`; a bad-input hunt).
        let caps = [
            ("A".to_string(), "x{B}".to_string()),
            ("B".into(), "k".into()),
        ];
        assert_eq!(fill("{B}|{A}", &caps), "k|x{B}");
        assert_eq!(fill("{A...}.{C}", &caps), "x{B}.{C}");
        // Regex characters in names are literal.
        assert!(Pattern::compile("a.b").unwrap().matches("axb").is_none());
        // `<probe>@{X}` names the decode steps of a probe; nothing else does
        let steps = |t: &str| {
            Pattern::compile(t)
                .unwrap()
                .probe_of_steps()
                .map(str::to_string)
        };
        assert_eq!(steps("blk.0.k@{S}").as_deref(), Some("blk.0.k"));
        for other in [
            "{A}@{S}", "x@{S...}", "x@{S}.y", "x@s{S}", "@{S}", "x{S}", "x@3",
        ] {
            assert_eq!(steps(other), None, "{other}");
        }
        assert!(Pattern::compile("a{L}b{L}").is_err());
        assert!(Pattern::compile("a{L").is_err());
        assert!(Pattern::compile("a{}").is_err());
        assert!(Pattern::compile("a}").is_err());
        assert!(Pattern::compile("a{0}")
            .unwrap_err()
            .contains("not starting with a digit"));
        // A huge pattern's error stays short.
        let long = format!("{}{{", "x".repeat(1_000_000));
        assert!(Pattern::compile(&long).unwrap_err().len() < 400);
    }

    fn err(text: &str) -> String {
        Map::parse(text, "m.toml").unwrap_err().to_string()
    }

    /// A brace of a name is written twice (`{{`, `}}`): in a literal `from`, a pattern's text
    /// and a `to` (a name with braces could not be named until 2026-12-05: a bad-input hunt).
    #[test]
    fn doubled_braces_are_braces_of_the_name() {
        let p = Pattern::compile("y{{0}}").unwrap();
        assert_eq!(p.literal(), Some("y{0}"));
        assert_eq!(p.matches("y{0}"), Some(Vec::new()));
        assert_eq!(p.matches("y{{0}}"), None);
        let p = Pattern::compile("a{{b}}.{L}.}}").unwrap();
        assert_eq!(
            p.matches("a{b}.3.}"),
            Some(vec![("L".to_string(), "3".to_string())])
        );
        assert_eq!(p.matches("a{b}.3.}}"), None);
        let caps = [("L".to_string(), "3".to_string())];
        assert_eq!(fill("c{{{L}}}", &caps), "c{3}");
        assert_eq!(escape_braces("x{L}0}"), "x{{L}}0}}");
        assert_eq!(
            Pattern::compile(&escape_braces("x{L}0}"))
                .unwrap()
                .literal(),
            Some("x{L}0}")
        );
        // A step rule of a probe with a brace is still looked up, not matched (a review).
        let p = Pattern::compile("p{{0}}@{S}").unwrap();
        assert_eq!(p.probe_of_steps(), Some("p{0}"));
        assert_eq!(
            Pattern::compile("p{{0}}@x{S}").unwrap().probe_of_steps(),
            None
        );
        assert!(err("[[rule]]\nfrom = \"a}\"\nto = \"b\"\n").contains("`}}`"));
        assert!(err("[[rule]]\nfrom = \"a{0}\"\nto = \"b\"\n")
            .contains("a brace of the name is written twice"));
    }

    #[test]
    fn bad_maps_are_one_line_errors_naming_the_rule() {
        assert_eq!(
            err("[[rule]]\nfrom = \"a{L}\"\nto = \"b{M}\"\n"),
            "m.toml: rule 1 (from = \"a{L}\"): `{M}` in `to = \"b{M}\"` is not captured by `from`"
        );
        assert!(err("[[rule]]\nfrom = \"a\"\nto = [\"b\", \"c\"]\n").contains("need a `split`"));
        assert!(err(
            "[[rule]]\nfrom = \"a\"\nto = [\"b\", \"c\"]\nsplit = { axis = 0, sizes = [1] }\n"
        )
        .contains("`split` has 1 sizes for 2 `to` names"));
        assert!(err("[[rule]]\nfrom = [\"a\", \"b\"]\nto = \"c\"\n").contains("combine"));
        assert!(err(
            "[[rule]]\nfrom = \"a\"\nto = \"c\"\ntransform = [{ reshape = [\"heads*hidn\"] }]\n"
        )
        .contains("unknown size `hidn`"));
        assert!(
            err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = \"hed_dim\"\n")
                .contains("unknown size `hed_dim`")
        );
        assert!(err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = -1\n")
            .ends_with("`last`: -1 is no axis' size (0 or more)"));
        assert!(err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = [4, -2]\n")
            .ends_with("`last`: -2 is no axis' size (0 or more)"));
        assert!(err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = []\n").contains("`last = []`"));
        let e = err("[[rule]]\nfrom = \"a\"\nto = \"c\"\ntransform = [{ reshape = [9223372036854775808, -1] }]\n");
        assert!(
            e.contains("size 9223372036854775808 is out of range"),
            "{e}"
        );
        let e = err("[[rule]]\nfrom = \"a\"\nto = \"c\"\ntransform = [{ reshape = [1.5] }]\n");
        assert!(
            e.contains("a size: a whole number") && !e.contains("untagged"),
            "{e}"
        );
        for bad in ["1.5", "true", "[[\"head_dim\"]]", "{ a = 1 }"] {
            let e = err(&format!(
                "[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = {bad}\n"
            ));
            assert!(e.contains("`last` is a size (a whole number"), "{bad}: {e}");
            assert!(!e.contains("untagged"), "{bad}: {e}");
        }
        assert!(
            err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nlast = [\"heads\", \"hed\"]\n")
                .contains("unknown size `hed`")
        );
        let e = err("[[rule]]\nfrom = \"a\"\nto = \"c\"\nsplitt = 3\n");
        assert!(
            e.starts_with("m.toml: line 4: unknown field `splitt`"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(err("[[rule]]\nfrom = \"a\"\n").contains("missing field `to`"));
    }

    #[test]
    fn a_rule_has_few_transform_steps_of_few_axes() {
        // 100,000 steps once grew a shape copy per step until the process aborted.
        let many = vec!["{ unsqueeze = 0 }"; 100_000].join(", ");
        assert_eq!(
            err(&format!(
                "[[rule]]\nfrom = \"a\"\nto = \"b\"\ntransform = [{many}]\n"
            )),
            "m.toml: rule 1 (from = \"a\"): 100000 transform steps (at most 64)"
        );
        let ok = vec!["{ unsqueeze = 0 }"; 64].join(", ");
        assert!(Map::parse(
            &format!("[[rule]]\nfrom = \"a\"\nto = \"b\"\ntransform = [{ok}]\n"),
            "m.toml"
        )
        .is_ok());
        let axes = vec!["1"; 33].join(", ");
        assert!(err(&format!(
            "[[rule]]\nfrom = \"a\"\nto = \"b\"\ntransform = [{{ reshape = [{axes}] }}]\n"
        ))
        .ends_with("a transform step lists 33 axes (at most 32)"));
    }

    #[test]
    fn a_given_map_has_a_rule() {
        for text in ["", "description = \"x\"\n", "rule = []\n"] {
            assert_eq!(
                Map::parse_given(text, "m.toml").unwrap_err().to_string(),
                "m.toml: no [[rule]]: a map must rename something",
                "{text:?}"
            );
        }
        // A map made by code may have none (alignment by content that compares no pair).
        assert!(Map::parse("# inferred\n", "alignment by content").is_ok());
    }

    #[test]
    fn a_target_is_a_name_a_dump_may_hold() {
        let err = |text: &str| Map::parse_given(text, "m.toml").unwrap_err().to_string();
        assert_eq!(
            err("[[rule]]\nfrom = \"x\"\nto = \"\"\n"),
            "m.toml: rule 1 (from = \"x\"): `to = \"\"`: a name a map makes must not be empty"
        );
        assert!(err("[[rule]]\nfrom = \"x\"\nto = \"__meta__\"\n").contains("a reserved name"));
        // A line break is a name a reference may hold.
        assert!(Map::parse_given("[[rule]]\nfrom = \"x\"\nto = \"a\\nb\"\n", "m.toml").is_ok());
        assert_eq!(
            err("[[rule]]\nfrom = \"x\"\nto = \"x@3\"\n"),
            "m.toml: rule 1 (from = \"x\"): `to = \"x@3\"` names a decode step (`@3`): a map names the probe, and each step follows it"
        );
        assert!(err("[[rule]]\nfrom = \"{A}\"\nto = [\"{A}@steps\", \"b\"]\nsplit = { axis = 0, sizes = [1, 1] }\n")
            .contains("names a decode step (`@steps`)"));
        // One step of one probe onto one step of another; `@0` and `@01` are not steps.
        for (from, to) in [
            ("a@2", "b@2"),
            ("{A}@2", "{A}.b@2"),
            ("a", "b@0"),
            ("a", "b@01"),
        ] {
            let text = format!("[[rule]]\nfrom = \"{from}\"\nto = \"{to}\"\n");
            assert!(Map::parse_given(&text, "m").is_ok(), "{from} -> {to}");
        }
        // A map made by code may map onto any name a reference holds: alignment by content
        // pairs our `op_7` with the reference's step `x@2`.
        assert!(Map::parse("[[rule]]\nfrom = \"op_7\"\nto = \"x@2\"\n", "alignment").is_ok());
    }

    #[test]
    fn a_number_past_i64_is_out_of_range_not_a_model_size() {
        assert_eq!(
            err("[[rule]]\nfrom = \"x\"\nto = \"z\"\ntransform = [{ reshape = [\"9223372036854775808\"] }]\n"),
            "m.toml: rule 1 (from = \"x\"): size `9223372036854775808` in \"9223372036854775808\" is out of range (at most 9223372036854775807)"
        );
        assert!(err("[[rule]]\nfrom = \"x\"\nto = [\"a\", \"b\"]\nsplit = { axis = 0, sizes = [\"heads*99999999999999999999\", -1] }\n")
            .contains("size `99999999999999999999` in \"heads*99999999999999999999\" is out of range"));
        // A bare TOML integer that large is refused by the parser: said plainly, not as
        // "u64 value was too large" or "invalid type: integer ... as i128".
        for big in [
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "-9223372036854775809",
            "1000000000000000000000000000000000000000000",
        ] {
            assert_eq!(
                err(&format!("[[rule]]\nfrom = \"x\"\nto = \"z\"\nlast = {big}\n")),
                "m.toml: line 4: a whole number out of range (-9223372036854775808 to 9223372036854775807, what TOML holds)",
                "{big}"
            );
        }
    }

    #[test]
    fn a_good_map_parses() {
        let m = Map::parse(
            r#"
description = "llama.cpp names"
[[rule]]
from = "blk.{L}.qkv"
to = ["q{L}", "k{L}", "v{L}"]
split = { axis = -1, sizes = ["heads*head_dim", "kv_heads*head_dim", -1] }
transform = [{ squeeze = 0 }, { permute = [1, 0] }, { transpose = [0, 1] }]
note = "fused"

[[rule]]
from = ["{N...}.0", "{N...}.1"]
to = "{N}"
combine = "sum"
optional = true
"#,
            "m.toml",
        )
        .unwrap();
        assert_eq!(m.rules.len(), 2);
        assert_eq!(m.rules[0].label, "rule 1 (from = \"blk.{L}.qkv\")");
        assert!(m.rules[1].optional);
    }

    #[test]
    fn tokens_are_counted_as_the_lexer_makes_them() {
        // `a`, ` `, `=`, ` `, `[`, `1`, `,`, ` `, `2`, `]`
        assert_eq!(toml_tokens("a = [1, 2]"), 10);
        // A string of any kind is one token, whatever it holds: escaped quotes, `#`, brackets.
        assert_eq!(toml_tokens(r#""x\",=[{# ""#), 1);
        assert_eq!(toml_tokens("'x,=[{\"'"), 1);
        assert_eq!(toml_tokens("\"\"\"x\",\n=[{\"\"\""), 1);
        assert_eq!(toml_tokens("'''x,\n='''"), 1);
        // A multi-line string may end with four or five quotes: the string's own, then `b`.
        assert_eq!(toml_tokens("\"\"\"x\"\"\"\"\"b"), 2);
        assert_eq!(toml_tokens("'''x''''b"), 2);
        // A one-line string ends at the line's end, as the lexer's does: `"x`, `\n`, `a`.
        assert_eq!(toml_tokens("\"x\na"), 3);
        // A comment is one token and its newline another; blanks are one a run.
        assert_eq!(toml_tokens("# , , ,\n"), 2);
        assert_eq!(toml_tokens(" \t \r\n"), 2);
        // Every newline counts: 32 MiB of them took 1.6 GB to lex (a review).
        assert_eq!(toml_tokens(&"\n".repeat(1000)), 1000);
        assert_eq!(toml_tokens(&"\r\n".repeat(1000)), 2000);
        // A dotted key is a token a part.
        assert_eq!(toml_tokens("a.b.c"), 5);
    }

    #[test]
    fn a_map_of_too_many_tokens_is_refused_before_parsing() {
        let refused = |text: &str| {
            let e = Map::parse(text, "m.toml").unwrap_err().to_string();
            assert!(e.contains("more than the 4194304 a map may hold"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        };
        let mut junk = String::from("[[rule]]\nfrom = \"x\"\nto = \"y\"\njunk = [0");
        junk.push_str(&",0".repeat(MAX_MAP_TOKENS / 2));
        junk.push(']');
        refused(&junk);
        refused(&"\n".repeat(MAX_MAP_TOKENS + 1));
        refused(&format!(
            "a = \"\"\"x\"\"\"\"\n{}",
            "\n".repeat(MAX_MAP_TOKENS)
        ));
        // Under the cap, the parser's own error: the field is unknown.
        let e = Map::parse(
            "[[rule]]\nfrom = \"x\"\nto = \"y\"\njunk = [0, 0]",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("junk"), "{e}");
        let big = format!("# {}", "x".repeat(MAX_MAP_BYTES));
        let e = Map::parse(&big, "m.toml").unwrap_err().to_string();
        assert!(e.contains("more than the 32 MiB a map may hold"), "{e}");
    }

    /// Every `from` pattern with a capture is a regex of its own: their count and bytes are
    /// bounded before any is compiled (a bad-input hunt: one rule of 100,000 patterns took
    /// 2.9 GB, 3,300 patterns of 10 KB 1.8 GB).
    #[test]
    fn a_map_of_too_many_or_too_long_patterns_is_refused_before_compiling() {
        let many: Vec<String> = (0..=MAX_PATTERNS)
            .map(|i| format!("\"p{i}.{{L}}\""))
            .collect();
        let text = format!(
            "[[rule]]\nfrom = [{}]\nto = \"q.{{L}}\"\ncombine = \"sum\"\n",
            many.join(",")
        );
        let e = Map::parse(&text, "m.toml").unwrap_err().to_string();
        assert!(
            e.contains("10001 `from` patterns") && e.contains("at most 10000"),
            "{e}"
        );
        let long = "x".repeat(10_000);
        let rules: String = (0..420)
            .map(|i| format!("[[rule]]\nfrom = \"{long}{i}.{{L}}\"\nto = \"y{i}.{{L}}\"\n"))
            .collect();
        let e = Map::parse(&rules, "m.toml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at most 10000 patterns and 4194304 bytes"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // A map at the bounds' scale of a real one: 10,000 renames with a capture; and names
        // without one (a map inferred by content: 420 names of 10 KB) are compared as text,
        // never compiled, and not bounded so (a review: such a map was refused).
        let renames: String = (0..MAX_PATTERNS)
            .map(|i| format!("[[rule]]\nfrom = \"a.{i}.{{L}}\"\nto = \"b.{i}.{{L}}\"\n"))
            .collect();
        let n = |text: &str| {
            Map::parse(text, "m.toml")
                .map(|m| m.rules.len())
                .map_err(|e| e.to_string())
        };
        assert_eq!(n(&renames), Ok(MAX_PATTERNS));
        let literal: String = (0..420)
            .map(|i| format!("[[rule]]\nfrom = \"{long}{i}\"\nto = \"y{i}\"\n"))
            .collect();
        assert_eq!(n(&literal), Ok(420));
        let p = Pattern::compile(&format!("{long}7"))
            .map_err(|_| ())
            .unwrap();
        assert!(
            p.matches(&format!("{long}7")).is_some() && p.matches(&format!("{long}8")).is_none()
        );
    }

    /// `transpose` swaps exactly two axes: a longer list was cut to its first two without a
    /// word (a bad-input hunt).
    #[test]
    fn transpose_takes_two_axes() {
        let map = |t: &str| {
            Map::parse(
                &format!(
                    "[[rule]]\nfrom = \"x\"\nto = \"y\"\ntransform = [{{ transpose = {t} }}]\n"
                ),
                "m.toml",
            )
        };
        assert!(map("[0, 1]").is_ok());
        for bad in ["[1, 0, 2]", "[0]", "[]", "[0, 1, \"x\", 9.5, true]"] {
            let e = map(bad).unwrap_err().to_string();
            // (the mixed list: "line 4: invalid type: string \"x\", expected i64")
            assert!(
                (e.contains("transpose") || e.contains("line 4")) && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        assert!(map("[1, 0, 2]")
            .unwrap_err()
            .to_string()
            .contains("swaps exactly two axes, not 3"));
    }
}
