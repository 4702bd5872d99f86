//! The Qwen3 configuration, deserialized straight from a Hugging Face `config.json`.
//!
//! Field names are the ones `transformers.Qwen3Config` (5.17) writes. RoPE parameters are
//! resolved the way `RotaryEmbeddingConfigMixin.convert_rope_params_to_dict` does:
//! the legacy `rope_scaling` if present, else `rope_parameters`, then a top-level `rope_theta`,
//! then the default 10000. Missing `head_dim` / `num_key_value_heads` take `Qwen3Config`'s
//! field defaults (128 / 32), as transformers does. Everything this port does not implement
//! (sliding-window layers, scaled RoPE variants, activations other than silu/gelu) is rejected
//! by [`Config::validate`] with an error naming config.json, instead of silently computing
//! something else.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// `Qwen3Config.head_dim`'s default in transformers 5.17 (configuration_qwen3.py).
const QWEN3_DEFAULT_HEAD_DIM: usize = 128;
/// `Qwen3Config.num_key_value_heads`'s default in transformers 5.17.
const QWEN3_DEFAULT_KV_HEADS: usize = 32;

/// RoPE parameters as transformers 5 stores them (`rope_parameters`) or as older configs do
/// (`rope_scaling`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
    /// Older spelling of `rope_type`.
    #[serde(default, rename = "type")]
    pub legacy_type: Option<String>,
}

/// The subset of `Qwen3Config` that the forward pass needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Missing: 32, `Qwen3Config`'s field default (its `__post_init__` only replaces an
    /// explicit `null`, with `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Qwen3 sets it explicitly (128 for Qwen3-0.6B, where hidden/heads would be 64); missing,
    /// `Qwen3Config` defaults it to 128 (it never derives it from hidden/heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_max_position_embeddings() -> usize {
    32768
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Config::from_json_str(&text, path)?;
        Ok(cfg)
    }

    /// Parses and validates a config from JSON text; `path` only labels errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Config, Error> {
        let cfg: Config = serde_json::from_str(text).map_err(|err| Error::Config {
            path: path.to_path_buf(),
            message: format!("not a valid Qwen3 config: {err}"),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self, path: &Path) -> Result<(), Error> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let unsupported = |message: String| Error::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("head_dim", self.head_dim()),
        ] {
            if value == 0 {
                return Err(bad(format!("{name} must be positive")));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return Err(bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_kv_heads()
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            )));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(bad(format!(
                "rms_norm_eps ({}) must be finite and >= 0",
                self.rms_norm_eps
            )));
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 0.0) {
            return Err(bad(format!(
                "rope_theta ({theta}) must be finite and positive"
            )));
        }
        let rope_type = self.rope_type();
        if rope_type != "default" {
            return Err(unsupported(format!(
                "rope_type {rope_type:?} (only \"default\" RoPE is implemented)"
            )));
        }
        if !matches!(self.hidden_act.as_str(), "silu" | "swish" | "gelu") {
            return Err(unsupported(format!(
                "hidden_act {:?} (expected \"silu\")",
                self.hidden_act
            )));
        }
        if let Some(types) = &self.layer_types {
            if let Some(t) = types.iter().find(|t| t.as_str() != "full_attention") {
                return Err(unsupported(format!(
                    "layer_types contains {t:?} (only full attention is implemented)"
                )));
            }
        } else if self.use_sliding_window {
            return Err(unsupported("use_sliding_window: true".to_string()));
        }
        Ok(())
    }

    /// Number of key/value heads (GQA groups).
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(QWEN3_DEFAULT_KV_HEADS)
    }

    /// Size of one attention head: `head_dim` from config.json, else `Qwen3Config`'s default.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(QWEN3_DEFAULT_HEAD_DIM)
    }

    /// RoPE base, resolved as transformers does.
    pub fn rope_theta(&self) -> f64 {
        // transformers: `rope_scaling or rope_parameters` (the legacy key wins when both exist).
        self.rope_scaling
            .as_ref()
            .or(self.rope_parameters.as_ref())
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// RoPE type ("default" unless config.json says otherwise).
    pub fn rope_type(&self) -> String {
        // transformers: `rope_scaling or rope_parameters` (the legacy key wins when both exist).
        self.rope_scaling
            .as_ref()
            .or(self.rope_parameters.as_ref())
            .and_then(|p| p.rope_type.clone().or_else(|| p.legacy_type.clone()))
            .unwrap_or_else(|| "default".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn rejects_bad_gqa_ratio() {
        let text = r#"{"vocab_size": 10, "hidden_size": 12, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "head_dim": 4}"#;
        let err = Config::from_json_str(text, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }
}
