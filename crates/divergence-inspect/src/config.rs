//! `config.json` of a Llama-family checkpoint, and the tensors it implies.
//!
//! Mirrors the transformers 5.17 configuration and modeling files of `qwen3`, `qwen2`,
//! `llama` and `mistral` (`configuration_*.py` defaults, `nn.Linear(in, out)` weights stored
//! as `[out, in]`). Deliberate simplifications: only the dense decoder layout
//! (`model.layers.N.{self_attn,mlp}`); MoE and vision towers are out of scope, and an
//! unknown `model_type` skips the structural checks with an info note.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::InspectError;
use crate::report::{ConfigSummary, Finding, FindingKind, Severity};

/// The architectures whose tensor layout we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Qwen3,
    Qwen2,
    Llama,
    Mistral,
}

impl Family {
    fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "qwen3" => Some(Family::Qwen3),
            "qwen2" => Some(Family::Qwen2),
            "llama" => Some(Family::Llama),
            "mistral" => Some(Family::Mistral),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Qwen3 => "qwen3",
            Family::Qwen2 => "qwen2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
        }
    }

    /// transformers' default `num_key_value_heads` when config.json has none.
    fn default_kv_heads(self, heads: usize) -> usize {
        match self {
            Family::Qwen3 | Family::Qwen2 => 32,
            Family::Mistral => 8,
            Family::Llama => heads,
        }
    }
}

/// The dimensions every structural check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

/// A parsed config.json.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub summary: ConfigSummary,
    pub family: Option<Family>,
    /// `None` if a required field is missing or malformed (see `notes`).
    pub dims: Option<Dims>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    /// Findings about config.json itself.
    pub notes: Vec<Finding>,
}

fn note(severity: Severity, message: String) -> Finding {
    Finding {
        severity,
        kind: FindingKind::Config,
        tensor: None,
        message,
    }
}

/// Reads and interprets `path` (a config.json). Unreadable or unparsable files are errors;
/// missing or malformed fields become findings.
pub(crate) fn load(path: &Path) -> Result<ModelConfig, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| InspectError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let Value::Object(obj) = value else {
        return Err(InspectError::BadJson {
            path: path.to_path_buf(),
            message: "expected a json object".to_string(),
        });
    };
    Ok(interpret(&obj))
}

/// Interprets a config object (public to the crate for tests).
pub(crate) fn interpret(obj: &Map<String, Value>) -> ModelConfig {
    let mut notes = Vec::new();
    let mut usize_field = |key: &str| -> Option<usize> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => Some(n),
                _ => {
                    notes.push(note(
                        Severity::Error,
                        format!("config.json: {key} is {v}, expected a positive integer"),
                    ));
                    None
                }
            },
        }
    };
    let hidden = usize_field("hidden_size");
    let layers = usize_field("num_hidden_layers");
    let heads = usize_field("num_attention_heads");
    let kv_heads_raw = usize_field("num_key_value_heads");
    let head_dim_raw = usize_field("head_dim");
    let intermediate = usize_field("intermediate_size");
    let vocab = usize_field("vocab_size");
    let bool_field =
        |key: &str, default: bool| obj.get(key).and_then(Value::as_bool).unwrap_or(default);
    let attention_bias = bool_field("attention_bias", false);
    let mlp_bias = bool_field("mlp_bias", false);
    let tie_word_embeddings = bool_field("tie_word_embeddings", false);
    let model_type = obj
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string);

    let family = model_type.as_deref().and_then(Family::from_model_type);
    match (&model_type, family) {
        (None, _) => notes.push(note(
            Severity::Info,
            "config.json has no model_type: config checks skipped, only tensor statistics"
                .to_string(),
        )),
        (Some(t), None) => notes.push(note(
            Severity::Info,
            format!(
                "model_type {t:?} is not one we know (qwen3, qwen2, llama, mistral): config checks skipped, only tensor statistics"
            ),
        )),
        _ => {}
    }

    // Defaults as transformers 5.17 applies them.
    let kv_heads = match (kv_heads_raw, family, heads) {
        (Some(k), _, _) => Some(k),
        (None, Some(f), Some(h)) => {
            let k = f.default_kv_heads(h);
            notes.push(note(
                Severity::Info,
                format!("config.json has no num_key_value_heads: transformers defaults it to {k} for {}", f.name()),
            ));
            Some(k)
        }
        (None, None, h) => h,
        (None, Some(_), None) => None,
    };
    let head_dim = match (head_dim_raw, family, hidden, heads) {
        (Some(d), _, _, _) => Some(d),
        (None, Some(Family::Qwen3), hidden, heads) => {
            // Qwen3Config declares head_dim: int = 128; it does not derive it.
            if let (Some(h), Some(n)) = (hidden, heads) {
                if h / n != 128 {
                    notes.push(note(
                        Severity::Warning,
                        format!(
                            "config.json has no head_dim: transformers' Qwen3Config defaults it to 128, not hidden_size / num_attention_heads = {}",
                            h / n
                        ),
                    ));
                }
            }
            Some(128)
        }
        (None, _, Some(h), Some(n)) => Some(h / n),
        _ => None,
    };

    let summary = ConfigSummary {
        model_type: model_type.clone(),
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        intermediate_size: intermediate,
        vocab_size: vocab,
        attention_bias,
        tie_word_embeddings,
    };

    let dims = match family {
        None => None,
        Some(f) => {
            let required = [
                ("hidden_size", hidden),
                ("num_hidden_layers", layers),
                ("num_attention_heads", heads),
                ("intermediate_size", intermediate),
                ("vocab_size", vocab),
            ];
            let missing: Vec<&str> = required
                .iter()
                .filter(|(key, v)| v.is_none() && !obj.contains_key(*key))
                .map(|(key, _)| *key)
                .collect();
            if !missing.is_empty() {
                notes.push(note(
                    Severity::Error,
                    format!(
                        "config.json ({}) has no {}: shape checks skipped",
                        f.name(),
                        missing.join(", ")
                    ),
                ));
            }
            match (
                hidden,
                layers,
                heads,
                kv_heads,
                head_dim,
                intermediate,
                vocab,
            ) {
                (
                    Some(hidden),
                    Some(layers),
                    Some(heads),
                    Some(kv_heads),
                    Some(head_dim),
                    Some(intermediate),
                    Some(vocab),
                ) => Some(Dims {
                    hidden,
                    layers,
                    heads,
                    kv_heads,
                    head_dim,
                    intermediate,
                    vocab,
                }),
                _ => None,
            }
        }
    };

    ModelConfig {
        summary,
        family,
        dims,
        attention_bias,
        mlp_bias,
        tie_word_embeddings,
        notes,
    }
}

/// One dimension of an expected shape, with the config expression it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dim {
    pub size: usize,
    pub label: &'static str,
}

/// A tensor the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub name: String,
    pub dims: Vec<Dim>,
}

impl Expected {
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.size).collect()
    }
}

/// The tensors a `family` model with `dims` needs, names prefixed by `prefix` ("model." or
/// ""), in module order. `lm_head.weight` is not included (see the tied-embeddings check).
pub(crate) fn expected_tensors(cfg: &ModelConfig, dims: &Dims, prefix: &str) -> Vec<Expected> {
    const HIDDEN: &str = "hidden_size";
    const Q: &str = "num_attention_heads * head_dim";
    const KV: &str = "num_key_value_heads * head_dim";
    const INTER: &str = "intermediate_size";
    let family = cfg.family;
    let d = |size, label| Dim { size, label };
    let q = dims.heads * dims.head_dim;
    let kv = dims.kv_heads * dims.head_dim;
    let mut out = vec![Expected {
        name: format!("{prefix}embed_tokens.weight"),
        dims: vec![d(dims.vocab, "vocab_size"), d(dims.hidden, HIDDEN)],
    }];
    let (qkv_bias, o_bias) = match family {
        Some(Family::Qwen2) => (true, false),
        Some(Family::Mistral) => (false, false),
        _ => (cfg.attention_bias, cfg.attention_bias),
    };
    let mlp_bias = family == Some(Family::Llama) && cfg.mlp_bias;
    for i in 0..dims.layers {
        let l = format!("{prefix}layers.{i}");
        let mut push = |name: String, dims: Vec<Dim>| out.push(Expected { name, dims });
        push(
            format!("{l}.input_layernorm.weight"),
            vec![d(dims.hidden, HIDDEN)],
        );
        for (proj, out_dim, label) in [("q_proj", q, Q), ("k_proj", kv, KV), ("v_proj", kv, KV)] {
            push(
                format!("{l}.self_attn.{proj}.weight"),
                vec![d(out_dim, label), d(dims.hidden, HIDDEN)],
            );
            if qkv_bias {
                push(
                    format!("{l}.self_attn.{proj}.bias"),
                    vec![d(out_dim, label)],
                );
            }
        }
        push(
            format!("{l}.self_attn.o_proj.weight"),
            vec![d(dims.hidden, HIDDEN), d(q, Q)],
        );
        if o_bias {
            push(
                format!("{l}.self_attn.o_proj.bias"),
                vec![d(dims.hidden, HIDDEN)],
            );
        }
        if family == Some(Family::Qwen3) {
            push(
                format!("{l}.self_attn.q_norm.weight"),
                vec![d(dims.head_dim, "head_dim")],
            );
            push(
                format!("{l}.self_attn.k_norm.weight"),
                vec![d(dims.head_dim, "head_dim")],
            );
        }
        push(
            format!("{l}.post_attention_layernorm.weight"),
            vec![d(dims.hidden, HIDDEN)],
        );
        for (proj, o, i_) in [
            (
                "gate_proj",
                (dims.intermediate, INTER),
                (dims.hidden, HIDDEN),
            ),
            ("up_proj", (dims.intermediate, INTER), (dims.hidden, HIDDEN)),
            (
                "down_proj",
                (dims.hidden, HIDDEN),
                (dims.intermediate, INTER),
            ),
        ] {
            push(
                format!("{l}.mlp.{proj}.weight"),
                vec![d(o.0, o.1), d(i_.0, i_.1)],
            );
            if mlp_bias {
                push(format!("{l}.mlp.{proj}.bias"), vec![d(o.0, o.1)]);
            }
        }
    }
    out.push(Expected {
        name: format!("{prefix}norm.weight"),
        dims: vec![d(dims.hidden, HIDDEN)],
    });
    out
}

/// Why a tensor that `expected_tensors` does not list is unused, as a phrase that follows
/// "not used by the config: ".
pub(crate) fn unused_reason(cfg: &ModelConfig, dims: &Dims, name: &str) -> String {
    let family = cfg.family.map_or("this model", Family::name);
    let parts: Vec<&str> = name.split('.').collect();
    if let Some(pos) = parts.iter().position(|p| *p == "layers") {
        if let Some(idx) = parts.get(pos + 1).and_then(|p| p.parse::<usize>().ok()) {
            if idx >= dims.layers {
                return format!("layer {idx} is beyond num_hidden_layers = {}", dims.layers);
            }
        }
    }
    let is_bias = name.ends_with(".bias");
    let attn_proj = ["q_proj", "k_proj", "v_proj", "o_proj"]
        .iter()
        .any(|p| name.contains(&format!("self_attn.{p}.")));
    if is_bias && attn_proj {
        return match cfg.family {
            Some(Family::Qwen2) => "qwen2 has bias on q/k/v only, not on o_proj".to_string(),
            Some(Family::Mistral) => "mistral attention has no bias".to_string(),
            _ => "attention_bias is false in config.json".to_string(),
        };
    }
    if is_bias && name.contains(".mlp.") {
        return match cfg.family {
            Some(Family::Llama) => "mlp_bias is false in config.json".to_string(),
            _ => format!("{family} mlp has no bias"),
        };
    }
    if name.contains("self_attn.q_norm.") || name.contains("self_attn.k_norm.") {
        return format!("{family} has no q_norm / k_norm (only qwen3 does)");
    }
    format!("a {family} model with this config.json has no such tensor")
}
