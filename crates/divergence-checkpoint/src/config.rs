//! `config.json` of a Llama-family checkpoint, parsed once for every command.
//!
//! Field names and defaults are those of transformers 5.17's `configuration_qwen3.py`,
//! `configuration_qwen2.py`, `configuration_llama.py` and `configuration_mistral.py`
//! ([`Family`]). Parsing is lenient: a field that is missing is `None`, a field of the wrong
//! type is `None` plus a [`FieldIssue`]; nothing fails once the file is a JSON object. What a
//! caller does with that differs on purpose: `divergence inspect` turns issues and missing
//! fields into findings, the Qwen3 model rejects what it cannot run (`divergence_qwen3::Config`).
//!
//! Resolved the way transformers does:
//! - RoPE (`RotaryEmbeddingConfigMixin.convert_rope_params_to_dict`): the legacy
//!   `rope_scaling` if it is a non-empty object, else `rope_parameters`; in it `rope_theta`,
//!   else the top-level `rope_theta`, else 10000; `rope_type`, else its older spelling `type`,
//!   else "default".
//! - `num_key_value_heads`: an explicit `null` means `num_attention_heads` (`__post_init__`);
//!   a missing one takes the family's field default ([`Family::default_kv_heads`]).
//! - `head_dim`: Qwen3 declares `head_dim: int = 128` and never derives it; the others derive
//!   `hidden_size // num_attention_heads`.
//! - Sliding-window layers ([`Config::sliding_layers`], [`Config::window`]): qwen3 and qwen2
//!   derive `layer_types` from `use_sliding_window`, `sliding_window` and `max_window_layers`;
//!   mistral slides every layer while `sliding_window` (default 4096) is not null; llama none.
//!
//! What transformers refuses on load or fails on in its forward pass is an issue too: nulls it
//! refuses ([`NOT_NULL`], per family), integers written as floats or strings, an unknown
//! layer type or RoPE type, a scaled RoPE without its required keys.
//!
//! Defaults replace only a field that is absent (or `null`): a field that is present but
//! rejected (a [`FieldIssue`]: `"head_dim": 32.0`, `"num_key_value_heads": 0`) is unknown,
//! and so is every dimension that depends on it ([`Config::dims`] is `None`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::Error;

/// The architectures whose config and tensor layout we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Qwen3,
    Qwen2,
    Llama,
    Mistral,
}

impl Family {
    /// The families we know, for messages.
    pub const KNOWN: &'static str = "qwen3, qwen2, llama, mistral";

    /// The family of a config.json `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "qwen3" => Some(Family::Qwen3),
            "qwen2" => Some(Family::Qwen2),
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            _ => None,
        }
    }

    /// The `model_type` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen3 => "qwen3",
            Family::Qwen2 => "qwen2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
        }
    }

    /// transformers' `num_key_value_heads` when config.json has none: the field default of
    /// `Qwen3Config` / `Qwen2Config` (32) and `MistralConfig` (8); `LlamaConfig`'s is `None`,
    /// which `__post_init__` replaces with `num_attention_heads`.
    pub fn default_kv_heads(self, heads: Option<usize>) -> Option<usize> {
        match self {
            Family::Qwen3 | Family::Qwen2 => Some(32),
            Family::Mistral => Some(8),
            Family::Llama => heads,
        }
    }

    /// transformers' `head_dim` when config.json has none: 128 for Qwen3 (`head_dim: int =
    /// 128`), `hidden_size // num_attention_heads` for the others.
    pub fn default_head_dim(self, hidden: Option<usize>, heads: Option<usize>) -> Option<usize> {
        match self {
            Family::Qwen3 => Some(QWEN3_DEFAULT_HEAD_DIM),
            _ => derived_head_dim(hidden, heads),
        }
    }
}

/// `Qwen3Config.head_dim`'s default in transformers 5.17.
pub const QWEN3_DEFAULT_HEAD_DIM: usize = 128;
/// RoPE base when config.json gives none (`RotaryEmbeddingConfigMixin.default_theta`).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The largest config.json read (a real one is a few KB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The fields every known family needs and that have no usable default.
pub const REQUIRED: [&str; 5] = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
];

/// Upper bounds on the integer fields of config.json that size anything (the tensors
/// `inspect` expects, a model's buffers). Generous: the largest public models are far below
/// (Llama 3.1 405B: 126 layers, hidden 16384, intermediate 53248; vocabularies up to ~262k;
/// head_dim ≤ 256). A value above its cap is a [`FieldIssue`] with `cap` set and the field is
/// `None`, as for a malformed one, so nothing is ever sized by it (docs/inspect.md).
pub const SANITY_CAPS: [(&str, usize); 8] = [
    ("hidden_size", 1 << 20),
    ("num_hidden_layers", 10_000),
    ("num_attention_heads", 1 << 16),
    ("num_key_value_heads", 1 << 16),
    ("head_dim", 1 << 16),
    ("intermediate_size", 1 << 22),
    ("vocab_size", 1 << 24),
    ("max_position_embeddings", 1 << 30),
];

/// The [`SANITY_CAPS`] bound of `key`, if it has one.
pub fn sanity_cap(key: &str) -> Option<usize> {
    SANITY_CAPS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, cap)| cap)
}

fn derived_head_dim(hidden: Option<usize>, heads: Option<usize>) -> Option<usize> {
    match (hidden, heads) {
        (Some(h), Some(n)) if n > 0 => Some(h / n),
        _ => None,
    }
}

/// A field of config.json with a value of the wrong type (`"hidden_size": "abc"`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    /// The key, dotted inside objects (`rope_scaling.rope_theta`).
    pub key: String,
    pub value: Value,
    /// What was expected ("a positive integer").
    pub expected: &'static str,
    /// Set when the value has the right type but exceeds this [`SANITY_CAPS`] bound.
    pub cap: Option<usize>,
    /// The key is missing where it is required (a scaled RoPE's `factor`): `value` is null.
    pub absent: bool,
}

impl FieldIssue {
    /// A value of the wrong type (or refused) at `key`.
    fn wrong(key: impl Into<String>, value: Value, expected: &'static str) -> FieldIssue {
        FieldIssue {
            key: key.into(),
            value,
            expected,
            cap: None,
            absent: false,
        }
    }
}

impl std::fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.absent {
            return write!(f, "{} is missing: {}", self.key, self.expected);
        }
        match self.cap {
            Some(cap) => write!(
                f,
                "{} is {}, above the sanity cap of {cap} (real models are far below it)",
                self.key, self.value
            ),
            None => write!(
                f,
                "{} is {}, expected {}",
                self.key, self.value, self.expected
            ),
        }
    }
}

/// The dimensions every structural check and every model needs, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

/// A parsed config.json. Integer fields are `None` when missing or malformed (see `issues`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file, for messages.
    pub path: PathBuf,
    /// The JSON object as written (for a dump's `model` metadata).
    pub json: Value,
    pub model_type: Option<String>,
    /// The family of `model_type`, if we know it.
    pub family: Option<Family>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    /// As written; see [`Config::num_kv_heads`] for the resolved value.
    pub num_key_value_heads: Option<usize>,
    /// As written; see [`Config::head_dim`] for the resolved value.
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    /// Default "silu" (all four families).
    pub hidden_act: String,
    /// Default 1e-6 (all four families).
    pub rms_norm_eps: f64,
    /// Default false (all four families).
    pub tie_word_embeddings: bool,
    /// Default false. (qwen2 has q/k/v biases and mistral none, whatever it says.)
    pub attention_bias: bool,
    /// Default false (llama only).
    pub mlp_bias: bool,
    /// Resolved RoPE base (see the module docs).
    pub rope_theta: f64,
    /// Resolved RoPE type ("default" unless config.json says otherwise).
    pub rope_type: String,
    /// Default false; read for qwen3 and qwen2 (and an unknown model_type) only: llama's and
    /// mistral's configs have no such field, and transformers ignores it there.
    pub use_sliding_window: bool,
    /// As written (qwen3 and qwen2; default 28): the first layer that slides. Negative slides
    /// every layer, as transformers' `i >= max_window_layers` does.
    pub max_window_layers: Option<i64>,
    /// As written, in any family (llama keeps it as an extra attribute, which its masks read):
    /// `None` when absent or null; the window transformers uses is [`Config::window`].
    pub sliding_window: Option<i64>,
    pub layer_types: Option<Vec<String>>,
    /// Fields with a value of the wrong type, in the order read.
    pub issues: Vec<FieldIssue>,
}

/// Fields that transformers 5.17 refuses as `null` (its config classes' strict validation:
/// "expected int, got NoneType"), in every family we read: a null one is a [`FieldIssue`],
/// not an absent field given its default. Checked against `Qwen3Config`, `Qwen2Config`,
/// `LlamaConfig` and `MistralConfig` (2026-12-05); [`not_null_in`] adds each family's own.
const NOT_NULL: [&str; 9] = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "hidden_act",
    "tie_word_embeddings",
];

/// The fields `family`'s config class refuses as `null` beyond [`NOT_NULL`] (the others,
/// null, are absent: `num_key_value_heads` is `num_attention_heads` but in mistral, a llama or
/// qwen2 `head_dim` is derived).
fn not_null_in(family: Option<Family>) -> &'static [&'static str] {
    match family {
        Some(Family::Qwen3) => &[
            "head_dim",
            "attention_bias",
            "use_sliding_window",
            "max_window_layers",
        ],
        // (a null head_dim fails qwen2's model build, `None ** float`: a bad-input hunt)
        Some(Family::Qwen2) => &["use_sliding_window", "max_window_layers", "head_dim"],
        Some(Family::Llama) => &["attention_bias", "mlp_bias"],
        Some(Family::Mistral) => &["num_key_value_heads"],
        None => &[],
    }
}

impl Config {
    /// Reads `path`. A missing file, unreadable or unparsable JSON, or JSON that is not an
    /// object is an error; everything else is a field of the result.
    pub fn load(path: &Path) -> Result<Config, Error> {
        // From the metadata first, never opening a fifo (it blocks) or reading a device
        // without end (found by a bad-input hunt: config.json as a named pipe hung `run` and
        // `inspect`, as a link to /dev/zero it took gigabytes).
        if !crate::layout::is_regular(path)? {
            return Err(Error::MissingConfig {
                path: path.to_path_buf(),
            });
        }
        let bytes = crate::layout::read_capped(path, MAX_CONFIG_BYTES, "a config.json")?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_value(value, path)
    }

    /// Parses config.json text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_value(value, path)
    }

    /// Interprets a parsed config.json; fails only if it is not an object.
    pub fn from_value(value: Value, path: &Path) -> Result<Config, Error> {
        let Value::Object(obj) = &value else {
            return Err(Error::BadJson {
                path: path.to_path_buf(),
                message: "expected a json object".to_string(),
            });
        };
        // The family first (its config class refuses other nulls), read again in order below.
        let family = obj
            .get("model_type")
            .and_then(Value::as_str)
            .and_then(Family::from_model_type);
        let mut r = Reader {
            obj,
            prefix: "",
            issues: Vec::new(),
            not_null: not_null_in(family),
        };
        // Read in this order so that issues come out in a stable, meaningful order.
        let hidden_size = r.positive("hidden_size");
        let num_hidden_layers = r.positive("num_hidden_layers");
        let num_attention_heads = r.positive("num_attention_heads");
        let num_key_value_heads = r.positive("num_key_value_heads");
        let head_dim = r.positive("head_dim");
        let intermediate_size = r.positive("intermediate_size");
        let vocab_size = r.positive("vocab_size");
        let max_position_embeddings = r.positive("max_position_embeddings");
        let model_type = r.string("model_type");
        let hidden_act = r.string("hidden_act").unwrap_or_else(|| "silu".to_string());
        let rms_norm_eps = r.number("rms_norm_eps").unwrap_or(1e-6);
        let tie_word_embeddings = r.boolean("tie_word_embeddings").unwrap_or(false);
        let attention_bias = r.boolean("attention_bias").unwrap_or(false);
        let mlp_bias = r.boolean("mlp_bias").unwrap_or(false);
        let qwen = matches!(family, Some(Family::Qwen3 | Family::Qwen2) | None);
        let use_sliding_window = qwen
            .then(|| r.boolean("use_sliding_window"))
            .flatten()
            .unwrap_or(false);
        let max_window_layers = qwen.then(|| r.integer("max_window_layers")).flatten();
        // (llama's config keeps it as an extra attribute, which its masks read: a string or a
        // float fails its forward pass, a bad-input hunt)
        let sliding_window = r.integer("sliding_window");
        let layer_types = r.strings("layer_types");
        // transformers' `validate_layer_type` (every family we know; others may remap their
        // own names first, as granite's "mamba": a review): a type it does not know.
        if let Some(bad) = layer_types
            .iter()
            .flatten()
            .filter(|_| family.is_some())
            .find(|t| !LAYER_TYPES.contains(&t.as_str()))
        {
            r.issues.push(FieldIssue::wrong(
                "layer_types",
                Value::String(bad.clone()),
                "a layer type transformers knows (full_attention, sliding_attention, chunked_attention, ...)",
            ));
        }
        let top_theta = r.number("rope_theta");
        // transformers: `rope_scaling or rope_parameters`: a falsy `rope_scaling` (empty,
        // false, 0, "", []) is none (a bad-input hunt: `false` was an error here, transformers
        // runs it).
        let scaling = match obj.get("rope_scaling") {
            Some(v) if !falsy(v) => r.object("rope_scaling"),
            _ => None,
        };
        let parameters = r.object("rope_parameters");
        let (rope_theta, rope_type) = match scaling
            .map(|o| ("rope_scaling", o))
            .or(parameters.map(|o| ("rope_parameters", o)))
        {
            Some((key, rope)) => {
                let mut inner = Reader {
                    obj: rope,
                    prefix: key,
                    issues: Vec::new(),
                    // (null fails transformers' model build: `None ** Tensor`, `KeyError: None`)
                    not_null: &[
                        "rope_theta",
                        "rope_type",
                        "factor",
                        "low_freq_factor",
                        "high_freq_factor",
                    ],
                };
                let theta = inner.number("rope_theta");
                let ty = inner.string("rope_type").or_else(|| inner.string("type"));
                // (A family we know: another may read its own types, as Qwen2-VL's "mrope": a
                // review.)
                if family.is_some() {
                    check_rope(&mut inner, ty.as_deref().unwrap_or("default"), family);
                }
                r.issues.append(&mut inner.issues);
                (theta, ty)
            }
            None => (None, None),
        };
        // A null RoPE base fails the model build in all four (`None ** Tensor`; a bad-input
        // hunt) unless the RoPE parameters hold their own (a newcomer's check: a config saved
        // by transformers keeps it in `rope_parameters`, and transformers runs it).
        if family.is_some() && obj.get("rope_theta") == Some(&Value::Null) && rope_theta.is_none() {
            r.issues.push(FieldIssue::wrong(
                "rope_theta",
                Value::Null,
                "a number (the RoPE parameters hold none)",
            ));
        }
        let issues = r.issues;
        Ok(Config {
            path: path.to_path_buf(),
            family,
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            hidden_act,
            rms_norm_eps,
            tie_word_embeddings,
            attention_bias,
            mlp_bias,
            rope_theta: rope_theta.or(top_theta).unwrap_or(DEFAULT_ROPE_THETA),
            rope_type: rope_type.unwrap_or_else(|| "default".to_string()),
            use_sliding_window,
            max_window_layers,
            sliding_window,
            layer_types,
            issues,
            json: value,
        })
    }

    /// The sliding window transformers uses: qwen3 and qwen2, `sliding_window` when
    /// `use_sliding_window` (their configs set it to `None` otherwise), mistral its own; absent,
    /// 4096 (their default); `null`, none; llama none. No model_type reads as qwen3.
    pub fn window(&self) -> Option<i64> {
        // (No model_type reads as qwen3: `divergence run` takes its defaults.)
        let set = match self.family {
            Some(Family::Qwen3 | Family::Qwen2) | None => self.use_sliding_window,
            Some(Family::Mistral) => true,
            Some(Family::Llama) => false,
        };
        match self.json.get("sliding_window") {
            _ if !set => None,
            None => Some(4096),
            Some(_) => self.sliding_window,
        }
    }

    /// The layers that attend over a sliding window, as transformers 5.17 works them out:
    /// qwen3 and qwen2, those `layer_types` does not mark `"full_attention"`, and without
    /// `layer_types`, with a [`Config::window`], the layers from `max_window_layers` (default
    /// 28; negative: all) on; mistral, every layer with a window (4096 when absent); llama
    /// none (its config has no such field); no model_type as qwen3. A qwen3 config with
    /// `use_sliding_window: true` and the default 28 of 28 layers has none.
    pub fn sliding_layers(&self) -> usize {
        let layers = self.num_hidden_layers.unwrap_or(0);
        match self.family {
            Some(Family::Qwen3 | Family::Qwen2) | None => match &self.layer_types {
                Some(types) => types.iter().filter(|t| *t != "full_attention").count(),
                None if self.window().is_some() => {
                    let from = self.max_window_layers.unwrap_or(28);
                    layers - usize::try_from(from.max(0)).map_or(layers, |f| f.min(layers))
                }
                None => 0,
            },
            Some(Family::Mistral) if self.window().is_some() => layers,
            Some(Family::Mistral | Family::Llama) => 0,
        }
    }

    /// Whether config.json has `key` at the top level (even as `null`).
    pub fn has(&self, key: &str) -> bool {
        self.json.get(key).is_some()
    }

    /// Whether config.json sets `key` to `null` explicitly.
    pub fn is_null(&self, key: &str) -> bool {
        self.json.get(key) == Some(&Value::Null)
    }

    /// Whether config.json has `key` (top level) with a value that was rejected: malformed or
    /// above its sanity cap (a [`FieldIssue`]). Such a field is unknown, never defaulted.
    pub fn rejected(&self, key: &str) -> bool {
        self.issues.iter().any(|i| i.key == key)
    }

    /// The [`REQUIRED`] fields that config.json does not have at all.
    pub fn missing_required(&self) -> Vec<&'static str> {
        REQUIRED.into_iter().filter(|k| !self.has(k)).collect()
    }

    /// Number of key/value heads as transformers resolves it for `family` (`None`: no
    /// default, as for an unknown model_type: `num_attention_heads`). Unknown (`None`) when
    /// config.json has a rejected value (`0`, `"8"`): a default would size tensors the
    /// checkpoint does not claim to have.
    pub fn num_kv_heads(&self, family: Option<Family>) -> Option<usize> {
        let heads = self.num_attention_heads;
        match (self.num_key_value_heads, family) {
            (Some(k), _) => Some(k),
            _ if self.rejected("num_key_value_heads") => None,
            _ if self.is_null("num_key_value_heads") => heads,
            (None, Some(f)) => f.default_kv_heads(heads),
            (None, None) => heads,
        }
    }

    /// Size of one attention head as transformers resolves it for `family` (`None`:
    /// `hidden_size / num_attention_heads`). Unknown (`None`) when config.json has a rejected
    /// value (`32.0`, `0`): not replaced by a default.
    pub fn head_dim(&self, family: Option<Family>) -> Option<usize> {
        let (hidden, heads) = (self.hidden_size, self.num_attention_heads);
        match (self.head_dim, family) {
            (Some(d), _) => Some(d),
            _ if self.rejected("head_dim") => None,
            (None, Some(f)) => f.default_head_dim(hidden, heads),
            (None, None) => derived_head_dim(hidden, heads),
        }
    }

    /// All dimensions resolved for `family`, if every one is known.
    pub fn dims(&self, family: Option<Family>) -> Option<Dims> {
        Some(Dims {
            hidden: self.hidden_size?,
            layers: self.num_hidden_layers?,
            heads: self.num_attention_heads?,
            kv_heads: self.num_kv_heads(family)?,
            head_dim: self.head_dim(family)?,
            intermediate: self.intermediate_size?,
            vocab: self.vocab_size?,
        })
    }
}

/// The layer types transformers 5.17 knows (`configuration_utils.ALLOWED_LAYER_TYPES`).
const LAYER_TYPES: [&str; 16] = [
    "full_attention",
    "sliding_attention",
    "chunked_attention",
    "window_attention",
    "compressed_sparse_attention",
    "heavily_compressed_attention",
    "minimax_m3_sparse",
    "conv",
    "moe",
    "hybrid",
    "hybrid_sliding",
    "deepseek_sparse_attention",
    "qwen_sparse_attention",
    "linear_attention",
    "sparse",
    "dense",
];

/// The RoPE types transformers 5.17 knows ("default" and `ROPE_INIT_FUNCTIONS`), each with
/// the keys its validation requires that nothing fills in (`rope_theta` and
/// `original_max_position_embeddings` come from the config when absent).
const ROPE_TYPES: [(&str, &[&str]); 7] = [
    ("default", &[]),
    ("linear", &["factor"]),
    ("dynamic", &["factor"]),
    ("yarn", &["factor"]),
    ("llama3", &["factor", "low_freq_factor", "high_freq_factor"]),
    ("longrope", &["short_factor", "long_factor"]),
    ("proportional", &[]),
];

/// Python's falsiness of a JSON value (`x or y` takes `y`).
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// What transformers refuses in a RoPE object of type `ty` (a bad-input hunt: each read as
/// clean): a type it does not know (`KeyError` at the model build), a key the type requires
/// (refused on load), a scale factor that is no number (a `TypeError` in the build), and, in
/// qwen3 and qwen2, parameters per layer type (`{"full_attention": {...}}`, refused on load).
fn check_rope(r: &mut Reader<'_>, ty: &str, family: Option<Family>) {
    let key = |k: &str| format!("{}.{k}", r.prefix);
    if matches!(family, Some(Family::Qwen3 | Family::Qwen2)) {
        // (Keyed by a layer type: another key holding an object is no such set, a review.)
        let per_type =
            |(k, v): &(&String, &Value)| v.is_object() && LAYER_TYPES.contains(&k.as_str());
        if let Some((k, v)) = r.obj.iter().find(per_type) {
            let i = FieldIssue::wrong(
                key(k),
                v.clone(),
                "one set of RoPE parameters (this model reads none per layer type)",
            );
            r.issues.push(i);
            return;
        }
    }
    let Some((_, required)) = ROPE_TYPES.iter().find(|(t, _)| *t == ty) else {
        let spelled = if r.obj.contains_key("rope_type") {
            "rope_type"
        } else {
            "type"
        };
        let i = FieldIssue::wrong(
            key(spelled),
            Value::String(ty.to_string()),
            "a RoPE type transformers knows (default, linear, dynamic, yarn, llama3, longrope, proportional)",
        );
        r.issues.push(i);
        return;
    };
    for k in *required {
        if !r.obj.contains_key(*k) {
            let i = FieldIssue {
                absent: true,
                ..FieldIssue::wrong(
                    key(k),
                    Value::Null,
                    "transformers requires it for this rope_type",
                )
            };
            r.issues.push(i);
        }
    }
    for k in ["factor", "low_freq_factor", "high_freq_factor"] {
        if required.contains(&k) {
            r.number(k);
        }
    }
}

/// Reads typed fields of one JSON object, recording values of the wrong type.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    /// Dotted prefix of issue keys ("" at the top level).
    prefix: &'static str,
    issues: Vec<FieldIssue>,
    /// Top-level fields refused as null beyond [`NOT_NULL`] ([`not_null_in`]).
    not_null: &'static [&'static str],
}

impl<'a> Reader<'a> {
    /// The value of `key`, `None` if missing or null, else `parse` of it or an issue.
    fn field<T>(
        &mut self,
        key: &str,
        expected: &'static str,
        parse: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = match self.obj.get(key) {
            None => return None,
            // transformers 5.17 refuses these as null in every family we read (qwen3, qwen2,
            // llama, mistral: "expected int, got NoneType"); the others, null, are absent.
            Some(Value::Null)
                if !(self.not_null.contains(&key)
                    || (self.prefix.is_empty() && NOT_NULL.contains(&key))) =>
            {
                return None
            }
            Some(v) => v,
        };
        let parsed = parse(v);
        if parsed.is_none() {
            let key = if self.prefix.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.prefix)
            };
            self.issues
                .push(FieldIssue::wrong(key, v.clone(), expected));
        }
        parsed
    }

    /// A positive integer, `None` plus an issue above its [`SANITY_CAPS`] bound.
    fn positive(&mut self, key: &str) -> Option<usize> {
        let n = self.field(key, "a positive integer", |v| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
        })?;
        match sanity_cap(key) {
            Some(cap) if n > cap => {
                self.issues.push(FieldIssue {
                    key: key.to_string(),
                    value: Value::from(n),
                    expected: "a positive integer",
                    cap: Some(cap),
                    absent: false,
                });
                None
            }
            _ => Some(n),
        }
    }

    /// A whole number written as one (`1`, `-1`; not `1.0`, `true` or `"1"`, which
    /// transformers' strict config fields refuse).
    fn integer(&mut self, key: &str) -> Option<i64> {
        // (past 2^63 - 1, as large as we need: Python's ints have no bound)
        self.field(key, "an integer", |v| {
            v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX))
        })
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        self.field(key, "a number", Value::as_f64)
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        self.field(key, "true or false", Value::as_bool)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.field(key, "a string", |v| v.as_str().map(str::to_string))
    }

    fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        self.field(key, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    }

    fn object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        self.field(key, "an object", Value::as_object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("c.json")).unwrap()
    }

    /// The real Qwen3-0.6B config.json (as on the Hub, transformers 4.51 era).
    const QWEN3_06B: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
    }"#;

    #[test]
    fn parses_real_qwen3_06b_config() {
        let cfg = parse(QWEN3_06B);
        assert_eq!(cfg.family, Some(Family::Qwen3));
        assert_eq!(cfg.head_dim(cfg.family), Some(128));
        assert_eq!(cfg.num_kv_heads(cfg.family), Some(8));
        assert_eq!(cfg.rope_theta, 1_000_000.0);
        assert_eq!(cfg.rope_type, "default");
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.rms_norm_eps, 1e-6);
        assert_eq!(cfg.issues, vec![]);
        let d = cfg.dims(cfg.family).unwrap();
        assert_eq!(
            (d.hidden, d.heads, d.head_dim, d.kv_heads),
            (1024, 16, 128, 8)
        );
    }

    #[test]
    fn values_above_the_sanity_caps_are_issues_not_sizes() {
        let cfg = parse(
            r#"{"model_type": "qwen3", "num_hidden_layers": 1000000000000, "hidden_size": 10000,
                "vocab_size": 1e12, "intermediate_size": 4194305, "head_dim": 65536}"#,
        );
        assert_eq!(cfg.num_hidden_layers, None);
        assert_eq!(cfg.vocab_size, None);
        assert_eq!(cfg.intermediate_size, None);
        // at the cap is fine
        assert_eq!((cfg.hidden_size, cfg.head_dim), (Some(10000), Some(65536)));
        let messages: Vec<String> = cfg.issues.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "num_hidden_layers is 1000000000000, above the sanity cap of 10000 (real models are far below it)",
                "intermediate_size is 4194305, above the sanity cap of 4194304 (real models are far below it)",
                "vocab_size is 1000000000000.0, expected a positive integer",
            ]
        );
        assert_eq!(cfg.dims(cfg.family), None);
        assert_eq!(sanity_cap("num_hidden_layers"), Some(10_000));
        assert_eq!(sanity_cap("rope_theta"), None);
        // every field that is read as a positive integer has a cap
        for key in REQUIRED {
            assert!(sanity_cap(key).is_some(), "{key}");
        }
    }

    #[test]
    fn transformers5_rope_parameters_win_over_top_level_theta() {
        let cfg = parse(
            r#"{"rope_theta": 7.0, "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"}}"#,
        );
        assert_eq!(cfg.rope_theta, 5000.0);
        assert!(!cfg.tie_word_embeddings);
        // Without a rope dict: the top-level value, else 10000.
        assert_eq!(parse(r#"{"rope_theta": 7.0}"#).rope_theta, 7.0);
        assert_eq!(parse("{}").rope_theta, 10_000.0);
        // A rope dict without rope_theta falls back to the top-level one (setdefault).
        let cfg = parse(r#"{"rope_theta": 7.0, "rope_parameters": {"rope_type": "default"}}"#);
        assert_eq!(cfg.rope_theta, 7.0);
    }

    #[test]
    fn legacy_rope_scaling_wins_over_rope_parameters() {
        // modeling_rope_utils: `rope_scaling or rope_parameters`.
        let cfg = parse(
            r#"{"rope_scaling": {"rope_type": "default", "rope_theta": 2000.0},
                "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}}"#,
        );
        assert_eq!(cfg.rope_theta, 2000.0);
        // ... unless it is empty (falsy in Python) or null.
        let cfg = parse(r#"{"rope_scaling": {}, "rope_parameters": {"rope_theta": 5000.0}}"#);
        assert_eq!(cfg.rope_theta, 5000.0);
        let cfg = parse(r#"{"rope_scaling": {"type": "yarn", "factor": 4.0}}"#);
        assert_eq!(cfg.rope_type, "yarn");
    }

    #[test]
    fn missing_fields_take_qwen3config_defaults_not_derived_values() {
        // transformers 5.17: Qwen3Config(head_dim=128, num_key_value_heads=32) when absent; it
        // never derives head_dim from hidden/heads (here that would be 4).
        let cfg = parse(
            r#"{"vocab_size": 10, "hidden_size": 256, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 64}"#,
        );
        assert_eq!(cfg.head_dim(Some(Family::Qwen3)), Some(128));
        assert_eq!(cfg.num_kv_heads(Some(Family::Qwen3)), Some(32));
    }

    #[test]
    fn family_defaults_follow_transformers() {
        let cfg = parse(r#"{"hidden_size": 256, "num_attention_heads": 16}"#);
        let kv = |f| cfg.num_kv_heads(Some(f));
        let hd = |f| cfg.head_dim(Some(f));
        assert_eq!(
            (
                kv(Family::Qwen3),
                kv(Family::Qwen2),
                kv(Family::Mistral),
                kv(Family::Llama)
            ),
            (Some(32), Some(32), Some(8), Some(16))
        );
        assert_eq!(
            (
                hd(Family::Qwen3),
                hd(Family::Qwen2),
                hd(Family::Mistral),
                hd(Family::Llama)
            ),
            (Some(128), Some(16), Some(16), Some(16))
        );
        // Unknown family: no defaults, only what can be derived.
        assert_eq!(
            (cfg.num_kv_heads(None), cfg.head_dim(None)),
            (Some(16), Some(16))
        );
    }

    #[test]
    fn explicit_null_kv_heads_means_num_attention_heads() {
        // Qwen3Config.__post_init__: `if self.num_key_value_heads is None: = num_attention_heads`.
        let cfg = parse(r#"{"num_attention_heads": 16, "num_key_value_heads": null}"#);
        assert_eq!(cfg.num_kv_heads(Some(Family::Qwen3)), Some(16));
        assert_eq!(cfg.num_kv_heads(Some(Family::Mistral)), Some(16));
        assert!(cfg.issues.is_empty());
    }

    #[test]
    fn malformed_fields_are_issues_not_errors() {
        let cfg = parse(
            r#"{"hidden_size": "abc", "num_hidden_layers": 0, "tie_word_embeddings": "yes",
                "rope_parameters": {"rope_theta": "big"}, "model_type": "qwen3"}"#,
        );
        let issues: Vec<String> = cfg.issues.iter().map(ToString::to_string).collect();
        assert_eq!(
            issues,
            vec![
                "hidden_size is \"abc\", expected a positive integer",
                "num_hidden_layers is 0, expected a positive integer",
                "tie_word_embeddings is \"yes\", expected true or false",
                "rope_parameters.rope_theta is \"big\", expected a number",
            ]
        );
        assert_eq!(cfg.hidden_size, None);
        assert!(!cfg.tie_word_embeddings);
        assert_eq!(
            cfg.missing_required(),
            vec!["num_attention_heads", "intermediate_size", "vocab_size"]
        );
        assert_eq!(cfg.dims(cfg.family), None);
    }

    #[test]
    fn rejected_fields_are_not_defaulted() {
        // Absent, each family has a default; present but malformed, the value is unknown.
        let cfg = parse(
            r#"{"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 4, "num_key_value_heads": 0, "head_dim": 32.0,
                "intermediate_size": 8, "vocab_size": 16}"#,
        );
        assert!(cfg.rejected("head_dim") && cfg.rejected("num_key_value_heads"));
        assert!(!cfg.rejected("hidden_size"));
        for family in [Some(Family::Qwen3), Some(Family::Llama), None] {
            assert_eq!(cfg.head_dim(family), None);
            assert_eq!(cfg.num_kv_heads(family), None);
        }
        assert_eq!(cfg.dims(cfg.family), None);
        // Absent or null: the defaults, as before.
        let cfg =
            parse(r#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": null}"#);
        assert_eq!(cfg.head_dim(Some(Family::Qwen3)), Some(128));
        assert_eq!(cfg.num_kv_heads(Some(Family::Qwen3)), Some(4));
    }

    #[test]
    fn unreadable_configs_are_errors_naming_the_file() {
        let err = Config::parse("{not json", Path::new("m/config.json")).unwrap_err();
        assert!(
            err.to_string().starts_with("m/config.json: invalid json: "),
            "{err}"
        );
        let err = Config::parse("[1]", Path::new("m/config.json")).unwrap_err();
        assert_eq!(err.to_string(), "m/config.json: expected a json object");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let err = Config::load(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not found (a model directory needs config.json)",
                p.display()
            )
        );
    }
}
