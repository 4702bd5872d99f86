//! Tensor-name helpers: the norm weights of a decoder layer, over [`divergence_names`].

use divergence_names::{Op, Param, QkKind};

/// Natural order of names (`layers.2` < `layers.10`): the one every command sorts with.
pub use divergence_names::natural_cmp;

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
    let (op, Param::Weight) = Op::of_param(name)? else {
        return None;
    };
    let kind = match op {
        Op::InputLayernorm => NormKind::Input,
        Op::PostAttentionLayernorm => NormKind::PostAttention,
        Op::QkNorm(QkKind::Q) => NormKind::Q,
        Op::QkNorm(QkKind::K) => NormKind::K,
        _ => return None,
    };
    Some((divergence_names::layer_index(name)?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(layer_norm("model.layers.3.self_attn.k_norm.bias"), None);
        assert_eq!(layer_norm("model.norm.weight"), None);
    }
}
