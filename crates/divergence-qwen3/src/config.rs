//! The Qwen3 configuration this port runs: config.json as parsed by
//! [`divergence_checkpoint::Config`] (the one parser, with `Qwen3Config`'s defaults and
//! transformers' RoPE resolution), resolved for [`Family::Qwen3`] and validated strictly.
//!
//! A `model_type` other than `qwen3` is refused; without one, missing fields take `Qwen3Config`'s
//! defaults (transformers 5.17):
//! `head_dim` 128 (never hidden/heads), `num_key_value_heads` 32 (an explicit `null`:
//! `num_attention_heads`). Everything this port does not implement (sliding-window layers,
//! scaled RoPE variants, activations other than silu/gelu), every malformed field and every
//! missing required field is rejected by [`Config::from_parsed`] with an error naming
//! config.json, instead of silently computing something else.

use std::path::Path;

use divergence_checkpoint::Family;

use crate::error::Error;

/// The subset of `Qwen3Config` that the forward pass needs, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    pub hidden_act: String,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    rope_theta: f64,
    rope_type: String,
    /// `max_position_embeddings`, when config.json gives it (bounds the decode KV cache).
    pub max_position_embeddings: Option<usize>,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let parsed = divergence_checkpoint::Config::load(path).map_err(invalid)?;
        Config::from_parsed(&parsed)
    }

    /// Parses and validates a config from JSON text; `path` only labels errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Config, Error> {
        let parsed = divergence_checkpoint::Config::parse(text, path).map_err(invalid)?;
        Config::from_parsed(&parsed)
    }

    /// Resolves `cfg` for Qwen3 and checks the invariants the forward pass relies on.
    pub fn from_parsed(cfg: &divergence_checkpoint::Config) -> Result<Config, Error> {
        let path = cfg.path.as_path();
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message: format!("not a valid Qwen3 config: {message}"),
        };
        let unsupported = |message: String| Error::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        if let Some(issue) = cfg.issues.first() {
            return Err(bad(issue.to_string()));
        }
        if let Some(key) = cfg.missing_required().first() {
            return Err(bad(format!("missing field {key}")));
        }
        let family = Some(Family::Qwen3);
        let Some(dims) = cfg.dims(family) else {
            // Required fields are present and well-formed, so only a null one is left (a null
            // size is an issue already, above, where config.json's model_type is known).
            let null = divergence_checkpoint::REQUIRED
                .into_iter()
                .find(|k| cfg.is_null(k))
                .unwrap_or("num_attention_heads");
            return Err(bad(format!("{null} is null, expected a positive integer")));
        };
        let c = Config {
            vocab_size: dims.vocab,
            hidden_size: dims.hidden,
            intermediate_size: dims.intermediate,
            num_hidden_layers: dims.layers,
            num_attention_heads: dims.heads,
            num_key_value_heads: dims.kv_heads,
            head_dim: dims.head_dim,
            hidden_act: cfg.hidden_act.clone(),
            rms_norm_eps: cfg.rms_norm_eps,
            tie_word_embeddings: cfg.tie_word_embeddings,
            attention_bias: cfg.attention_bias,
            rope_theta: cfg.rope_theta,
            rope_type: cfg.rope_type.clone(),
            max_position_embeddings: cfg.max_position_embeddings,
        };
        let plain = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(plain(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                c.num_attention_heads, c.num_key_value_heads
            )));
        }
        if !c.head_dim.is_multiple_of(2) {
            return Err(plain(format!(
                "head_dim ({}) must be even for RoPE",
                c.head_dim
            )));
        }
        if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps >= 0.0) {
            return Err(plain(format!(
                "rms_norm_eps ({}) must be finite and >= 0",
                c.rms_norm_eps
            )));
        }
        if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
            return Err(plain(format!(
                "rope_theta ({}) must be finite and positive",
                c.rope_theta
            )));
        }
        // Another model's config (a bad-input hunt: Qwen3 weights under "llama" ran Qwen3's
        // maths, where transformers runs Llama's and leaves q_norm / k_norm unused; a real
        // llama checkpoint was refused as "missing q_norm"). No model_type: Qwen3's defaults.
        if let Some(t) = cfg.model_type.as_deref().filter(|t| *t != "qwen3") {
            return Err(unsupported(format!(
                "model_type {:?} (this port implements qwen3 only)",
                divergence_names::one_line(t)
            )));
        }
        if c.rope_type != "default" {
            return Err(unsupported(format!(
                "rope_type {:?} (only \"default\" RoPE is implemented)",
                c.rope_type
            )));
        }
        if !matches!(c.hidden_act.as_str(), "silu" | "swish" | "gelu") {
            return Err(unsupported(format!(
                "hidden_act {:?} (expected \"silu\")",
                c.hidden_act
            )));
        }
        if let Some(types) = &cfg.layer_types {
            // (transformers refuses another length on load; a bad-input hunt: `run` ran it)
            if types.len() != c.num_hidden_layers {
                return Err(plain(format!(
                    "layer_types lists {} layers, num_hidden_layers is {}",
                    types.len(),
                    c.num_hidden_layers
                )));
            }
            if let Some(t) = types.iter().find(|t| t.as_str() != "full_attention") {
                return Err(unsupported(format!(
                    "layer_types contains {t:?} (only full attention is implemented)"
                )));
            }
        } else if cfg.sliding_layers() > 0 {
            // As transformers derives layer_types: `use_sliding_window` alone slides no layer
            // below `max_window_layers` (28 by default; it refused every such config before).
            let n = cfg.sliding_layers();
            return Err(unsupported(format!(
                "use_sliding_window: true, {n} {} from max_window_layers on (only full attention is implemented)",
                if n == 1 { "layer slides" } else { "layers slide" }
            )));
        }
        Ok(c)
    }

    /// Number of key/value heads (GQA groups).
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads
    }

    /// Size of one attention head: `head_dim` from config.json, else `Qwen3Config`'s default.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// RoPE base, resolved as transformers does.
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
    }

    /// RoPE type ("default": anything else is rejected).
    pub fn rope_type(&self) -> String {
        self.rope_type.clone()
    }
}

/// config.json that does not even parse: the checkpoint error, labelled as this model's.
pub(crate) fn invalid(err: divergence_checkpoint::Error) -> Error {
    use divergence_checkpoint::Error as E;
    match err {
        E::Json { path, source } => Error::Config {
            path,
            message: format!("not a valid Qwen3 config: invalid json: {source}"),
        },
        E::BadJson { path, message } => Error::Config {
            path,
            message: format!("not a valid Qwen3 config: {message}"),
        },
        other => Error::Checkpoint(other),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The Qwen3-0.6B config.json as transformers writes it (`fixtures/configs/`, made by
    /// scripts/make_fixtures.py from the Hub's; the Hub's own text, with an integer
    /// rope_theta, is tested in `divergence-checkpoint`).
    const QWEN3_06B: &str = include_str!("../../../fixtures/configs/qwen3-0.6b.json");

    #[test]
    fn parses_real_qwen3_06b_config() {
        let cfg = Config::from_json_str(QWEN3_06B, Path::new("config.json")).unwrap();
        assert_eq!(cfg.head_dim(), 128);
        assert_eq!(cfg.hidden_size / cfg.num_attention_heads, 64);
        assert_eq!(cfg.num_kv_heads(), 8);
        assert_eq!(cfg.rope_theta(), 1_000_000.0);
        assert_eq!(cfg.rope_type(), "default");
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.rms_norm_eps, 1e-6);
    }

    #[test]
    fn transformers5_rope_parameters_win() {
        let text = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"},
            "layer_types": ["full_attention"]}"#;
        let cfg = Config::from_json_str(text, Path::new("c.json")).unwrap();
        assert_eq!(cfg.rope_theta(), 5000.0);
        assert!(!cfg.tie_word_embeddings);
    }

    #[test]
    fn missing_fields_take_qwen3config_defaults_not_derived_values() {
        // transformers 5.17: Qwen3Config(head_dim=128, num_key_value_heads=32) when absent; it
        // never derives head_dim from hidden/heads (here that would be 4).
        let text = r#"{"vocab_size": 10, "hidden_size": 256, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 64}"#;
        let cfg = Config::from_json_str(text, Path::new("c.json")).unwrap();
        assert_eq!(cfg.head_dim(), 128);
        assert_eq!(cfg.num_kv_heads(), 32);
    }

    #[test]
    fn legacy_rope_scaling_wins_over_rope_parameters() {
        // modeling_rope_utils: `rope_scaling or rope_parameters`.
        let text = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_scaling": {"rope_type": "default", "rope_theta": 2000.0},
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}}"#;
        let cfg = Config::from_json_str(text, Path::new("c.json")).unwrap();
        assert_eq!(cfg.rope_theta(), 2000.0);
    }

    #[test]
    fn missing_field_names_the_file_and_field() {
        let err = Config::from_json_str(r#"{"vocab_size": 10}"#, Path::new("m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m/config.json: "), "{err}");
        assert!(err.contains("hidden_size"), "{err}");
    }

    #[test]
    fn rejects_sliding_window_and_scaled_rope() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1"#;
        let sliding =
            format!(r#"{{{base}, "layer_types": ["full_attention", "sliding_attention"]}}"#);
        let err = Config::from_json_str(&sliding, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("sliding_attention"), "{err}");
        let yarn = format!(r#"{{{base}, "rope_scaling": {{"type": "yarn", "factor": 4.0}}}}"#);
        let err = Config::from_json_str(&yarn, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
        // `use_sliding_window` slides the layers from `max_window_layers` on, as transformers'
        // Qwen3Config derives `layer_types`: none of 2 below the default 28, or without a window.
        for ok in [
            r#""use_sliding_window": true"#,
            r#""use_sliding_window": true, "max_window_layers": 1, "sliding_window": null"#,
        ] {
            let cfg = format!("{{{base}, {ok}}}");
            assert!(
                Config::from_json_str(&cfg, Path::new("c.json")).is_ok(),
                "{ok}"
            );
        }
        // Negative slides every layer (a bad-input hunt: `run` ran full attention, exit 0);
        // a malformed one, which transformers refuses, is refused too; so is a layer_types
        // list of another length.
        for (change, said) in [
            (
                r#""use_sliding_window": true, "max_window_layers": -1"#,
                "2 layers slide",
            ),
            (
                r#""use_sliding_window": true, "max_window_layers": "1""#,
                "max_window_layers is \"1\", expected an integer",
            ),
            (
                r#""max_window_layers": 1.0"#,
                "max_window_layers is 1.0, expected an integer",
            ),
            (
                r#""layer_types": ["full_attention"]"#,
                "layer_types lists 1 layers, num_hidden_layers is 2",
            ),
        ] {
            let cfg = format!("{{{base}, {change}}}");
            let err = Config::from_json_str(&cfg, Path::new("c.json")).unwrap_err();
            assert!(err.to_string().contains(said), "{change}: {err}");
        }
        let slides = format!(r#"{{{base}, "use_sliding_window": true, "max_window_layers": 1}}"#);
        let err = Config::from_json_str(&slides, Path::new("c.json")).unwrap_err();
        assert!(
            err.to_string()
                .contains("use_sliding_window: true, 1 layer slides from max_window_layers on"),
            "{err}"
        );
    }

    /// Another model's config is refused, not run as Qwen3 (a bad-input hunt); none is
    /// Qwen3's defaults.
    #[test]
    fn rejects_another_model_type() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1"#;
        let llama = format!(r#"{{{base}, "model_type": "llama"}}"#);
        let err = Config::from_json_str(&llama, Path::new("c.json")).unwrap_err();
        assert!(
            err.to_string()
                .contains("model_type \"llama\" (this port implements qwen3 only)"),
            "{err}"
        );
        for ok in [
            format!("{{{base}}}"),
            format!(r#"{{{base}, "model_type": "qwen3"}}"#),
        ] {
            assert!(
                Config::from_json_str(&ok, Path::new("c.json")).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn rejects_bad_gqa_ratio() {
        let text = r#"{"vocab_size": 10, "hidden_size": 12, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "head_dim": 4}"#;
        let err = Config::from_json_str(text, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }
}
