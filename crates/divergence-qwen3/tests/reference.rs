//! Accuracy against real transformers: the committed tiny-qwen3 fixture
//! (`fixtures/tiny-qwen3`, made by `scripts/make_fixtures.py` with transformers 5.17 /
//! torch 2.11 on CPU) against the committed reference dumps in `fixtures/ref/`.
//!
//! Tolerances (stated once, here): f32 every probe within 1e-5 relative L2 of transformers f32
//! eager; bf16 with the torch policy: embeddings, RoPE cos and the first norm bit-exact, and
//! the logits' top-1 token identical at every position. Run with `--nocapture` to see the
//! per-probe table that docs/accuracy.md quotes.

mod common;

use candle_core::DType;
use common::*;
use divergence_qwen3::{Faults, Policy};

#[test]
fn probe_names_and_order_match_the_reference_exporter() {
    let ours = run_tiny(DType::F32, Policy::Torch, Faults::none());
    for file in [
        "tiny-qwen3.f32.eager.npz",
        "tiny-qwen3.bf16.eager.npz",
        "tiny-qwen3.bf16.eager.safetensors",
    ] {
        let reference = reference(file);
        let order = reference.meta().expect("reference metadata").order.clone();
        let names: Vec<std::sync::Arc<str>> = ours.names().iter().map(|&s| s.into()).collect();
        assert_eq!(names, order, "{file}");
        for p in &ours.probes {
            assert_eq!(
                Some(p.shape.as_slice()),
                reference.shape(&p.name),
                "{file}: {}",
                p.name
            );
        }
    }
}

#[test]
fn f32_matches_transformers_f32_eager_within_1e_5() {
    let ours = run_tiny(DType::F32, Policy::Torch, Faults::none());
    let cmp = compare(&ours, &reference("tiny-qwen3.f32.eager.npz"));
    print_table("f32 torch policy vs transformers f32 eager", &cmp);
    let worst = cmp
        .iter()
        .max_by(|a, b| a.rel_l2.total_cmp(&b.rel_l2))
        .expect("probes");
    assert!(
        worst.rel_l2 < 1e-5,
        "worst probe {} rel L2 {:.3e}",
        worst.name,
        worst.rel_l2
    );
    let (agree, rows) = top1_agreement(&ours, &reference("tiny-qwen3.f32.eager.npz"));
    assert_eq!(agree, rows);
}

#[test]
fn f32_fused_policy_is_also_within_1e_5() {
    // In f32 the rounding points hardly matter: the fused kernels agree to f32 precision.
    let ours = run_tiny(DType::F32, Policy::Fused, Faults::none());
    let cmp = compare(&ours, &reference("tiny-qwen3.f32.eager.npz"));
    let worst = cmp
        .iter()
        .max_by(|a, b| a.rel_l2.total_cmp(&b.rel_l2))
        .expect("probes");
    assert!(
        worst.rel_l2 < 1e-5,
        "worst probe {} rel L2 {:.3e}",
        worst.name,
        worst.rel_l2
    );
}

#[test]
fn bf16_torch_policy_matches_transformers_bf16_eager() {
    let reference = reference("tiny-qwen3.bf16.eager.npz");
    let ours = run_tiny(DType::BF16, Policy::Torch, Faults::none());
    let cmp = compare(&ours, &reference);
    print_table("bf16 torch policy vs transformers bf16 eager", &cmp);
    let get = |name: &str| cmp.iter().find(|c| c.name == name).expect(name);
    for name in [
        "model.embed_tokens",
        "model.rotary_emb",
        "model.layers.0.input_layernorm",
    ] {
        assert!(get(name).bit_exact, "{name} not bit-exact: {:?}", get(name));
    }
    let (agree, rows) = top1_agreement(&ours, &reference);
    eprintln!("bf16 torch top-1 agreement: {agree}/{rows}");
    assert_eq!(agree, rows, "top-1 agreement");
}

#[test]
fn bf16_fused_policy_is_measurably_further_from_transformers() {
    let reference = reference("tiny-qwen3.bf16.eager.npz");
    let torch = compare(
        &run_tiny(DType::BF16, Policy::Torch, Faults::none()),
        &reference,
    );
    let fused_rec = run_tiny(DType::BF16, Policy::Fused, Faults::none());
    let fused = compare(&fused_rec, &reference);
    print_table("bf16 fused policy vs transformers bf16 eager", &fused);
    let (agree, rows) = top1_agreement(&fused_rec, &reference);
    eprintln!("bf16 fused top-1 agreement: {agree}/{rows}");
    let last = |c: &[ProbeCmp]| {
        c.iter()
            .find(|p| p.name == "lm_head")
            .expect("lm_head")
            .rel_l2
    };
    assert!(
        last(&fused) > last(&torch),
        "fused {:.3e} vs torch {:.3e}",
        last(&fused),
        last(&torch)
    );
}
