//! Tensor-name helpers: natural ordering and decoder-layer parsing.

/// Natural order of names (`layers.2` < `layers.10`): the diff engine's, so both commands sort alike.
pub use divergence_diff::natural_cmp;

/// The norm weights of a decoder layer that the gains table reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    Input,
    PostAttention,
    Q,
    K,
}

/// `(layer index, norm kind)` for names like `model.layers.3.self_attn.k_norm.weight`.
pub(crate) fn layer_norm(name: &str) -> Option<(usize, NormKind)> {
    let parts: Vec<&str> = name.split('.').collect();
    let pos = parts.iter().position(|p| *p == "layers")?;
    let layer = parts.get(pos + 1)?.parse::<usize>().ok()?;
    let kind = match &parts[pos + 2..] {
        ["input_layernorm", "weight"] => NormKind::Input,
        ["post_attention_layernorm", "weight"] => NormKind::PostAttention,
        ["self_attn", "q_norm", "weight"] => NormKind::Q,
        ["self_attn", "k_norm", "weight"] => NormKind::K,
        _ => return None,
    };
    Some((layer, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "layers.10.a",
            "layers.2.b",
            "layers.2.a",
            "embed",
            "layers.1.z",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "embed",
                "layers.1.z",
                "layers.2.a",
                "layers.2.b",
                "layers.10.a"
            ]
        );
    }

    #[test]
    fn parses_layer_norms() {
        assert_eq!(
            layer_norm("model.layers.3.self_attn.k_norm.weight"),
            Some((3, NormKind::K))
        );
        assert_eq!(
            layer_norm("layers.0.input_layernorm.weight"),
            Some((0, NormKind::Input))
        );
        assert_eq!(layer_norm("model.layers.3.self_attn.k_proj.weight"), None);
        assert_eq!(layer_norm("model.norm.weight"), None);
    }
}
