//! Execution order: which op comes first.
//!
//! [`plan_order`] is a pure function of what the two dumps say about themselves: the reference's
//! metadata order wins, else ours', else the files' entry order (the reference's, then names only in
//! ours). Names present in the files but absent from the chosen metadata order are appended (and
//! warned about). A safetensors file without metadata has lost its order (its keys are sorted), so
//! its names are put in the canonical forward order of the HF Llama family
//! ([`divergence_names::dataflow::canonical_cmp`]: `model.embed_tokens` first, `lm_head` last),
//! or naturally sorted (`layers.2` < `layers.10`) when no name is one the table knows, with a
//! warning either way.
//!
//! Two naming rules live here too: two single-tensor files (`.npy`, each named after its file)
//! are the same probe whatever their names, and dumps whose names differ by one leading prefix
//! (`layers.0.mlp` vs `model.layers.0.mlp`) are matched after that prefix; the row takes the
//! reference's name and [`OrderPlan::ours_name`] gives the name to read from ours.

use std::collections::{BTreeSet, HashSet};

/// A set of names with a fast hasher (a decode dump has tens of thousands of names).
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

use serde::{Deserialize, Serialize};

/// What one dump says about its probes.
#[derive(Debug, Clone, Copy)]
pub struct DumpNames<'a> {
    /// The metadata `"order"` (execution order), when the dump carries one.
    pub meta_order: Option<&'a [String]>,
    /// Probe names in file order (never `__meta__`).
    pub names: &'a [String],
    /// False when the file order is meaningless (safetensors keys are stored sorted).
    pub file_order_preserved: bool,
    /// The dump is one tensor named after its file (a `.npy`): two such dumps are compared
    /// with each other whatever their names.
    pub single_tensor_file: bool,
}

/// Where the execution order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSource {
    /// The reference's metadata `"order"`.
    RefMeta,
    /// Our metadata `"order"` (the reference has none).
    OursMeta,
    /// The reference file's entry order (npz), then names only in ours.
    RefFile,
    /// Our file's entry order (the reference's file order is lost), then names only in the reference.
    OursFile,
    /// No order anywhere: the canonical forward order of the HF Llama family
    /// ([`divergence_names::dataflow::canonical_cmp`]: embeddings, layers in index order with
    /// their ops in forward order, final norm, lm_head), unknown names after, naturally sorted.
    Canonical,
    /// No order anywhere and no name the canonical order knows: natural sort of all names.
    NaturalSort,
}

impl OrderSource {
    /// A short human description ("reference metadata").
    pub fn describe(self) -> &'static str {
        match self {
            OrderSource::RefMeta => "reference metadata",
            OrderSource::OursMeta => "our metadata (the reference has none)",
            OrderSource::RefFile => "reference file entry order",
            OrderSource::OursFile => "our file entry order (the reference's is lost)",
            OrderSource::Canonical => "canonical Llama-family forward order (no order recorded)",
            OrderSource::NaturalSort => "natural sort of names (no order recorded)",
        }
    }
}

/// The planned execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlan {
    /// Every probe name of either dump, once, in execution order.
    pub order: Vec<String>,
    /// Where the order came from.
    pub source: OrderSource,
    /// Things the user should know (appended names, lost order, ...), one line each.
    pub warnings: Vec<String>,
    /// Probes whose name in ours differs from the row's name: `(row name, name in ours)`.
    /// A pair of single-tensor files ([`DumpNames::single_tensor_file`]) makes one; dumps whose
    /// names differ by a leading prefix make one per mapped probe.
    pub renamed_in_ours: Vec<(String, String)>,
}

impl OrderPlan {
    /// The name to read from ours for the row `name` of [`OrderPlan::order`]: `name` itself,
    /// except for a renamed probe ([`OrderPlan::renamed_in_ours`]).
    pub fn ours_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.renamed_in_ours
            .iter()
            .find(|(row, _)| row == name)
            .map_or(name, |(_, ours)| ours.as_str())
    }

    /// The layers (`layers.N`) that some probe of either dump belongs to, ascending: what
    /// `--layer` can pick.
    pub fn layers(&self) -> BTreeSet<usize> {
        self.order
            .iter()
            .filter_map(|name| divergence_names::layer_index(name))
            .collect()
    }
}

/// Natural order of names (`layers.2` < `layers.10`), from [`divergence_names`].
pub use divergence_names::natural_cmp;

use divergence_names::dataflow::canonical_cmp;

/// Names in the dump's file order, or in canonical forward order when that order is lost.
fn file_order<'a>(d: &DumpNames<'a>) -> Vec<&'a String> {
    let mut v: Vec<&String> = d.names.iter().collect();
    if !d.file_order_preserved {
        v.sort_by(|a, b| canonical_cmp(a, b));
    }
    v
}

fn list_some(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    s
}

/// How ours' names map onto the reference's when they differ by a leading prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Prefix {
    /// The reference's names are ours' with this prefix in front (`model.` + `layers.0.mlp`).
    Add(String),
    /// Ours' names are the reference's with this prefix in front.
    Strip(String),
}

impl Prefix {
    /// Ours' name `n` in the reference's naming, when the prefix applies to it.
    fn apply(&self, n: &str) -> Option<String> {
        match self {
            Prefix::Add(p) => Some(format!("{p}{n}")),
            Prefix::Strip(p) => n.strip_prefix(p.as_str()).map(str::to_string),
        }
    }
}

/// A leading dotted prefix that, added to or stripped from ours' names, makes more of them
/// match the reference's than match as they are, and at least half of the smaller dump: the
/// dumps of one model written with and without `model.` (or an extra wrapper module). `None`
/// when the names already match, or when no one prefix explains them.
fn prefix_mapping(ours: &[String], reference: &[String]) -> Option<Prefix> {
    let ours_set: FastSet<&str> = ours.iter().map(String::as_str).collect();
    let ref_set: FastSet<&str> = reference.iter().map(String::as_str).collect();
    let common = ours_set.intersection(&ref_set).count();
    let smaller = ours_set.len().min(ref_set.len());
    if smaller == 0 || common * 2 >= smaller {
        return None;
    }
    let mut counts: std::collections::HashMap<Prefix, usize> = std::collections::HashMap::new();
    for (names, other, add) in [(&ref_set, &ours_set, true), (&ours_set, &ref_set, false)] {
        for n in names.iter() {
            for (i, _) in n.match_indices('.') {
                if other.contains(&n[i + 1..]) {
                    let p = n[..=i].to_string();
                    let key = if add {
                        Prefix::Add(p)
                    } else {
                        Prefix::Strip(p)
                    };
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
    }
    let mut ranked: Vec<(Prefix, usize)> = counts.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    let (best, count) = ranked.first().cloned()?;
    // Two prefixes that explain as many names (one layer's probes against a whole model) are
    // no evidence for either: no mapping.
    if ranked.get(1).is_some_and(|(_, c)| *c == count) {
        return None;
    }
    (count > common && count * 2 >= smaller).then_some(best)
}

/// Plans the execution order of the union of both dumps' probes. Pure; see the module doc.
///
/// Dumps whose names differ by a leading prefix (`layers.0.mlp` vs `model.layers.0.mlp`, see
/// `prefix_mapping`) are matched in the reference's naming: each mapped probe is a row under
/// the reference's name, [`OrderPlan::ours_name`] gives ours' name, and a warning says so.
pub fn plan_order(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> OrderPlan {
    if !(ours.single_tensor_file && reference.single_tensor_file) {
        if let Some(prefix) = prefix_mapping(ours.names, reference.names) {
            let ref_set: HashSet<&str> = reference.names.iter().map(String::as_str).collect();
            let ours_set: HashSet<&str> = ours.names.iter().map(String::as_str).collect();
            // Ours' name in the reference's naming, when that name exists in the reference; a
            // name the reference already has keeps it, and no name maps onto one ours has.
            let map = |n: &String| -> String {
                if ref_set.contains(n.as_str()) {
                    return n.clone();
                }
                prefix
                    .apply(n)
                    .filter(|m| ref_set.contains(m.as_str()) && !ours_set.contains(m.as_str()))
                    .unwrap_or_else(|| n.clone())
            };
            let names: Vec<String> = ours.names.iter().map(map).collect();
            let meta: Option<Vec<String>> = ours.meta_order.map(|m| m.iter().map(map).collect());
            let renamed: Vec<(String, String)> = names
                .iter()
                .zip(ours.names)
                .filter(|(row, o)| row != o)
                .map(|(row, o)| (row.clone(), o.clone()))
                .collect();
            let mapped = DumpNames {
                meta_order: meta.as_deref(),
                names: &names,
                ..*ours
            };
            let mut plan = plan_named(&mapped, reference);
            let example = renamed.first().map_or_else(String::new, |(row, o)| {
                format!(" (ours' `{o}` is ref's `{row}`)")
            });
            let how = match &prefix {
                Prefix::Add(p) => format!("without the prefix `{p}` the reference's names have"),
                Prefix::Strip(p) => format!("with an extra prefix `{p}`"),
            };
            plan.warnings.insert(
                0,
                format!(
                    "our dump names its probes {how}: {} probes matched by name after that prefix{example}",
                    renamed.len()
                ),
            );
            plan.renamed_in_ours = renamed;
            return plan;
        }
    }
    plan_named(ours, reference)
}

/// [`plan_order`] once both dumps use one naming.
fn plan_named(ours: &DumpNames<'_>, reference: &DumpNames<'_>) -> OrderPlan {
    if ours.single_tensor_file && reference.single_tensor_file {
        if let ([o], [r]) = (ours.names, reference.names) {
            // Two single-tensor files (named after their files) are one probe: the row takes
            // the reference's name.
            let renamed_in_ours = if o == r {
                Vec::new()
            } else {
                vec![(r.clone(), o.clone())]
            };
            return OrderPlan {
                order: vec![r.clone()],
                source: OrderSource::RefFile,
                warnings: Vec::new(),
                renamed_in_ours,
            };
        }
    }
    let mut present: FastSet<&str> = FastSet::with_capacity_and_hasher(
        ours.names.len() + reference.names.len(),
        Default::default(),
    );
    present.extend(ours.names.iter().chain(reference.names).map(String::as_str));
    let mut warnings = Vec::new();
    // Each name of `present` is pushed once: taken out of it when pushed.
    let mut unseen = present.clone();
    let mut order: Vec<String> = Vec::with_capacity(present.len());
    let mut push = |name: &String, order: &mut Vec<String>| {
        if unseen.remove(name.as_str()) {
            order.push(name.clone());
        }
    };

    let meta = match (reference.meta_order, ours.meta_order) {
        (Some(m), _) if !m.is_empty() => {
            Some((m, OrderSource::RefMeta, "the reference's", ours.meta_order))
        }
        (_, Some(m)) if !m.is_empty() => Some((m, OrderSource::OursMeta, "our", None)),
        _ => None,
    };

    let source = if let Some((base, source, whose, other_meta)) = meta {
        let absent: Vec<String> = base
            .iter()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for name in base {
            push(name, &mut order);
        }
        let before = order.len();
        // Extras: the reference file's names, then our metadata order, then our file's names.
        for name in file_order(reference)
            .into_iter()
            .chain(other_meta.unwrap_or(&[]))
            .chain(file_order(ours))
        {
            push(name, &mut order);
        }
        if order.len() > before {
            let extra = &order[before..];
            warnings.push(format!(
                "{} probe(s) present in the files but missing from {whose} metadata order were appended at the end: {}",
                extra.len(),
                list_some(extra)
            ));
        }
        if !absent.is_empty() {
            warnings.push(format!(
                "{} name(s) in {whose} metadata order are in neither file: {}",
                absent.len(),
                list_some(&absent)
            ));
        }
        source
    } else if reference.file_order_preserved || !ours.file_order_preserved {
        let lost = !reference.file_order_preserved;
        let mut names: Vec<&String> = file_order(reference)
            .into_iter()
            .chain(file_order(ours))
            .collect();
        let known = names
            .iter()
            .any(|n| divergence_names::Op::of(n) != divergence_names::Op::Other);
        if lost && known {
            names.sort_by(|a, b| canonical_cmp(a, b));
        } else if lost {
            names.sort_by(|a, b| natural_cmp(a, b));
        }
        for name in names {
            push(name, &mut order);
        }
        if lost {
            if known {
                warnings.push(
                    "neither dump records its execution order (safetensors without metadata keeps keys sorted): \
                     ops are in the canonical Llama-family forward order (embeddings, layers, final norm, lm_head; \
                     unknown names after, in natural order)"
                        .to_string(),
                );
                OrderSource::Canonical
            } else {
                warnings.push(
                    "neither dump records its execution order (safetensors without metadata keeps keys sorted): \
                     ops are in natural name order, so the \"first\" divergence may not be the earliest op"
                        .to_string(),
                );
                OrderSource::NaturalSort
            }
        } else {
            let only_in_ours = || {
                let in_ref: FastSet<&str> = reference.names.iter().map(String::as_str).collect();
                ours.names.iter().any(|n| !in_ref.contains(n.as_str()))
            };
            if !ours.file_order_preserved && only_in_ours() {
                warnings.push(
                    "our dump has no recorded order (safetensors without metadata): names only in ours are \
                     appended in canonical forward order"
                        .to_string(),
                );
            }
            OrderSource::RefFile
        }
    } else {
        for name in file_order(ours).into_iter().chain(file_order(reference)) {
            push(name, &mut order);
        }
        warnings.push(
            "the reference dump has no recorded order (safetensors without metadata): using our file's entry order"
                .to_string(),
        );
        OrderSource::OursFile
    };
    OrderPlan {
        order,
        source,
        warnings,
        renamed_in_ours: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ref_meta_order_wins_and_extras_are_appended() {
        let ref_names = s(&["c", "a", "b", "r_extra"]);
        let ours_names = s(&["a", "b", "c", "o_extra"]);
        let ref_meta = s(&["a", "b", "c", "ghost"]);
        let ours_meta = s(&["c", "b", "a", "o_extra"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&ours_meta),
                names: &ours_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: Some(&ref_meta),
                names: &ref_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::RefMeta);
        assert_eq!(plan.order, s(&["a", "b", "c", "r_extra", "o_extra"]));
        assert_eq!(plan.warnings.len(), 2);
        assert!(
            plan.warnings[0].contains("2 probe(s)"),
            "{:?}",
            plan.warnings
        );
        assert!(plan.warnings[0].contains("r_extra, o_extra"));
        assert!(plan.warnings[1].contains("ghost"));
    }

    #[test]
    fn ours_meta_when_ref_has_none() {
        let ref_names = s(&["b", "a"]);
        let ours_names = s(&["a", "b"]);
        let ours_meta = s(&["b", "a"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&ours_meta),
                names: &ours_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: &ref_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::OursMeta);
        assert_eq!(plan.order, s(&["b", "a"]));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn file_order_fallback() {
        let ref_names = s(&["z", "a", "m"]);
        let ours_names = s(&["a", "only_ours", "z"]);
        let empty: Vec<String> = vec![];
        let plan = plan_order(
            &DumpNames {
                meta_order: Some(&empty),
                names: &ours_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: &ref_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::RefFile);
        assert_eq!(plan.order, s(&["z", "a", "m", "only_ours"]));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn lost_order_natural_sort_with_warning() {
        let ref_names = s(&["layers.10.x", "layers.2.x", "embed"]);
        let ours_names = s(&["layers.10.x", "layers.2.x", "embed", "layers.3.x"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: None,
                names: &ours_names,
                file_order_preserved: false,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: &ref_names,
                file_order_preserved: false,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::NaturalSort);
        assert_eq!(
            plan.order,
            s(&["embed", "layers.2.x", "layers.3.x", "layers.10.x"])
        );
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("natural name order"));
    }

    #[test]
    fn lost_order_of_llama_names_is_the_canonical_forward_order() {
        // safetensors keeps keys sorted: lm_head would come first, and be "the first divergence".
        let sorted = s(&[
            "lm_head",
            "model.embed_tokens",
            "model.layers.0",
            "model.layers.0.input_layernorm",
            "model.layers.0.mlp",
            "model.layers.0.self_attn.k_norm",
            "model.layers.0.self_attn.k_proj",
            "model.layers.10.input_layernorm",
            "model.layers.2.input_layernorm",
            "model.norm",
            "x.custom",
        ]);
        let names = DumpNames {
            meta_order: None,
            names: &sorted,
            file_order_preserved: false,
            single_tensor_file: false,
        };
        let plan = plan_order(&names, &names);
        assert_eq!(plan.source, OrderSource::Canonical);
        assert_eq!(
            plan.order,
            s(&[
                "model.embed_tokens",
                "model.layers.0.input_layernorm",
                "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.k_norm",
                "model.layers.0.mlp",
                "model.layers.0",
                "model.layers.2.input_layernorm",
                "model.layers.10.input_layernorm",
                "model.norm",
                "lm_head",
                "x.custom",
            ])
        );
        assert!(plan.warnings[0].contains("canonical Llama-family forward order"));
    }

    #[test]
    fn ours_file_order_when_ref_lost_it() {
        let ref_names = s(&["a", "b", "r"]);
        let ours_names = s(&["b", "a"]);
        let plan = plan_order(
            &DumpNames {
                meta_order: None,
                names: &ours_names,
                file_order_preserved: true,
                single_tensor_file: false,
            },
            &DumpNames {
                meta_order: None,
                names: &ref_names,
                file_order_preserved: false,
                single_tensor_file: false,
            },
        );
        assert_eq!(plan.source, OrderSource::OursFile);
        assert_eq!(plan.order, s(&["b", "a", "r"]));
        assert_eq!(plan.warnings.len(), 1);
    }
}
