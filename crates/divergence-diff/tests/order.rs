//! The order planner: the naming rule for single-tensor files (two `.npy` files are one probe
//! whatever their names; the row takes the reference's name; in any other dump a name is a
//! name), and the layers a plan can filter on.

use divergence_diff::*;

fn names(v: &[&str]) -> NameList {
    v.iter().map(|&s| Name::from(s)).collect()
}

fn dump(names: &NameList, single_tensor_file: bool) -> DumpNames<'_> {
    DumpNames {
        meta_order: None,
        names,
        file_order_preserved: true,
        single_tensor_file,
    }
}

#[test]
fn two_single_tensor_files_are_one_probe_named_after_the_reference() {
    let (ours, reference) = (names(&["my_kernel_out"]), names(&["torch_out"]));
    let plan = plan_order(&dump(&ours, true), &dump(&reference, true));
    assert_eq!(plan.order, names(&["torch_out"]));
    assert_eq!(plan.source, OrderSource::RefFile);
    assert!(plan.warnings.is_empty());
    assert_eq!(
        plan.renamed_in_ours,
        vec![("torch_out".to_string(), "my_kernel_out".to_string())]
    );
    assert_eq!(plan.ours_name("torch_out"), "my_kernel_out");
    // A name the plan does not rename reads as itself.
    assert_eq!(plan.ours_name("other"), "other");
}

#[test]
fn same_named_single_tensor_files_need_no_rename() {
    let both = names(&["x"]);
    let plan = plan_order(&dump(&both, true), &dump(&both, true));
    assert_eq!(plan.order, names(&["x"]));
    assert!(plan.renamed_in_ours.is_empty());
    assert_eq!(plan.ours_name("x"), "x");
}

#[test]
fn the_rule_needs_both_sides_to_be_single_tensor_files() {
    let (ours, reference) = (names(&["a"]), names(&["b"]));
    for (o, r) in [(true, false), (false, true), (false, false)] {
        let plan = plan_order(&dump(&ours, o), &dump(&reference, r));
        assert_eq!(plan.order, names(&["b", "a"]), "ours {o}, ref {r}");
        assert!(plan.renamed_in_ours.is_empty());
        assert_eq!(plan.ours_name("b"), "b");
    }
}

#[test]
fn the_plan_lists_the_layers_of_both_dumps() {
    let ours = names(&[
        "model.embed_tokens",
        "model.layers.0.mlp",
        "model.layers.3.mlp",
    ]);
    let reference = names(&[
        "model.embed_tokens",
        "model.layers.1.self_attn.k_norm",
        "lm_head",
    ]);
    let plan = plan_order(&dump(&ours, false), &dump(&reference, false));
    assert_eq!(plan.layers().into_iter().collect::<Vec<_>>(), vec![0, 1, 3]);
    let none = names(&["a", "b"]);
    assert!(plan_order(&dump(&none, false), &dump(&none, false))
        .layers()
        .is_empty());
}

#[test]
fn names_that_differ_by_a_prefix_are_matched_with_a_warning() {
    let reference = names(&[
        "model.embed_tokens",
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.mlp",
        "model.norm",
        "lm_head",
    ]);
    let ours = names(&[
        "embed_tokens",
        "layers.0.self_attn.q_proj",
        "layers.0.mlp",
        "norm",
        "lm_head",
    ]);
    let plan = plan_order(&dump(&ours, false), &dump(&reference, false));
    assert_eq!(plan.order, reference);
    assert_eq!(plan.ours_name("model.layers.0.mlp"), "layers.0.mlp");
    assert_eq!(plan.ours_name("lm_head"), "lm_head");
    assert_eq!(plan.renamed_in_ours.len(), 4);
    // Every renamed row reads its own name in ours (a binary search over the sorted list).
    for (row, o) in &plan.renamed_in_ours {
        assert_eq!(plan.ours_name(row), o, "{row}");
    }
    assert!(plan.renamed_in_ours.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        plan.warnings[0].starts_with(
            "our dump names its probes without the prefix `model.` the reference's names have: 4 probes matched"
        ),
        "{:?}",
        plan.warnings
    );
    // the other way round: an extra wrapper in ours
    let wrapped: NameList = reference
        .iter()
        .map(|n| Name::from(format!("port.{n}")))
        .collect();
    let plan = plan_order(&dump(&wrapped, false), &dump(&reference, false));
    assert_eq!(plan.order, reference);
    assert_eq!(plan.ours_name("lm_head"), "port.lm_head");
    assert!(
        plan.warnings[0].contains("with an extra prefix `port.`"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn matching_names_and_unrelated_names_are_left_alone() {
    let a = names(&["model.layers.0.mlp", "model.layers.1.mlp", "lm_head"]);
    let plan = plan_order(&dump(&a, false), &dump(&a, false));
    assert!(plan.renamed_in_ours.is_empty() && plan.warnings.is_empty());
    let b = names(&["x", "y", "z"]);
    let plan = plan_order(&dump(&b, false), &dump(&a, false));
    assert!(plan.renamed_in_ours.is_empty());
    assert_eq!(plan.order.len(), 6);
}

#[test]
fn an_ambiguous_prefix_is_no_mapping_and_existing_names_stay() {
    // one layer's probes against a model of two layers: layer 0 or layer 1? neither
    let reference = names(&[
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.mlp",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.mlp",
    ]);
    let ours = names(&["self_attn.q_proj", "mlp"]);
    let plan = plan_order(&dump(&ours, false), &dump(&reference, false));
    assert!(
        plan.renamed_in_ours.is_empty(),
        "{:?}",
        plan.renamed_in_ours
    );
    // ours has both `lm_head` and `model.lm_head`: neither is renamed onto the other
    let reference = names(&["model.embed_tokens", "model.norm", "model.lm_head", "x"]);
    let ours = names(&["embed_tokens", "norm", "lm_head", "model.lm_head"]);
    let plan = plan_order(&dump(&ours, false), &dump(&reference, false));
    assert_eq!(plan.ours_name("model.lm_head"), "model.lm_head");
    assert!(
        plan.order.contains(&Name::from("lm_head")),
        "{:?}",
        plan.order
    );
    assert_eq!(plan.ours_name("model.norm"), "norm");
}
