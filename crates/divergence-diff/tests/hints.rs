//! Properties of the cause hints: any values (NaN, Inf, zeros, any shape) give a list of hints
//! with finite evidence and never a panic; a pair that is equal gets no hint.

use divergence_diff::*;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        20 => -10f64..10.0,
        2 => Just(0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-1e30),
    ]
}

const NAMES: [&str; 8] = [
    "model.embed_tokens",
    "model.rotary_emb",
    "model.layers.0.input_layernorm",
    "model.layers.0.self_attn.k_norm",
    "model.layers.0.self_attn.rope_q",
    "model.layers.0.self_attn.attn_out",
    "model.layers.0.mlp.act_fn",
    "lm_head",
];

proptest! {
    #[test]
    fn any_values_give_finite_evidence_and_no_panic(
        t in 1usize..5, c in 1usize..9,
        o in prop::collection::vec(value(), 40),
        r in prop::collection::vec(value(), 40),
        x in prop::collection::vec(value(), 40),
        which in 0usize..8,
        heads in 1usize..4,
    ) {
        let n = t * c;
        let shape = [1, t, c];
        let side = |v: &'static [f64]| Side { shape: &shape, values: ValuesRef::F64(v), dtype: "bfloat16" };
        let (o, r, x): (&'static [f64], &'static [f64], &'static [f64]) = (
            Box::leak(o[..n].to_vec().into_boxed_slice()),
            Box::leak(r[..n].to_vec().into_boxed_slice()),
            Box::leak(x[..n].to_vec().into_boxed_slice()),
        );
        let subject = Subject {
            name: NAMES[which],
            ours: side(o),
            reference: side(r),
            inputs: vec![("in", Some(side(x)), Some(side(x))), ("model.layers.0.self_attn.q_norm", Some(side(x)), None)],
            weight: None,
        };
        let shape_info = ModelShape {
            hidden: Some(c),
            heads: Some(heads),
            kv_heads: Some(1),
            head_dim: Some((c / heads).max(1)),
            rope_theta: Some(1e6),
            rms_eps: Some(1e-6),
            prompt_len: None,
        };
        for h in diagnose(&subject, &shape_info) {
            prop_assert!(h.evidence.values().all(|v| v.is_finite()), "{:?}", h);
            prop_assert!(!h.message.contains('\n'));
            let json: serde_json::Value = serde_json::to_value(&h).unwrap();
            prop_assert!(json["evidence"].as_object().unwrap().values().all(|v| v.is_f64()), "{}", json);
        }
        // the pair with itself: no hint
        let same = Subject { ours: side(r), ..subject };
        prop_assert!(diagnose(&same, &shape_info).is_empty());
    }
}
