//! Snapshot tests of the three renderers over reports built by the real engine, plus the JSON
//! deserialized and asserted field by field.

mod common;
use common::{act, perturb};
use divergence_diff::*;
use divergence_render::{render_json, render_markdown, render_table, Regex, TableOptions};

struct Op {
    name: &'static str,
    ours: Option<(Vec<usize>, Vec<f32>)>,
    reference: Option<(Vec<usize>, Vec<f32>)>,
}

fn op(name: &'static str, shape: &[usize], seed: u32, eps: f32) -> Op {
    let n = shape.iter().product();
    let r = act(n, seed as usize);
    Op {
        name,
        ours: Some((shape.to_vec(), perturb(&r, eps))),
        reference: Some((shape.to_vec(), r)),
    }
}

fn build(ops: &[Op], dtype: &str, ctx: ReportContext, cfg: &DiffConfig) -> Report {
    fn side<'a>(s: &'a Option<(Vec<usize>, Vec<f32>)>, dtype: &'a str) -> Option<Side<'a>> {
        s.as_ref().map(|(shape, v)| Side {
            shape: shape.as_slice(),
            values: ValuesRef::F32(v.as_slice()),
            dtype,
        })
    }
    let rows: Vec<_> = ops
        .iter()
        .map(|o| compare(o.name, side(&o.ours, dtype), side(&o.reference, dtype), cfg))
        .collect();
    assemble(rows, ctx, cfg)
}

fn layer_ops(l: usize, k_norm_eps: f32) -> Vec<Op> {
    let names: [&'static str; 6] = match l {
        0 => [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj",
            "model.layers.0.self_attn.q_norm",
            "model.layers.0.self_attn.k_norm",
            "model.layers.0.self_attn",
            "model.layers.0",
        ],
        1 => [
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.k_proj",
            "model.layers.1.self_attn.q_norm",
            "model.layers.1.self_attn.k_norm",
            "model.layers.1.self_attn",
            "model.layers.1",
        ],
        _ => [
            "model.layers.2.self_attn.q_proj",
            "model.layers.2.self_attn.k_proj",
            "model.layers.2.self_attn.q_norm",
            "model.layers.2.self_attn.k_norm",
            "model.layers.2.self_attn",
            "model.layers.2",
        ],
    };
    let s = l as u32 * 10;
    vec![
        op(names[0], &[1, 4, 16], s + 1, 1e-4),
        op(names[1], &[1, 4, 8], s + 2, 1e-4),
        op(names[2], &[1, 4, 2, 8], s + 3, 2e-4),
        op(names[3], &[1, 4, 1, 8], s + 4, k_norm_eps),
        op(names[4], &[1, 4, 16], s + 5, 3e-4),
        op(names[5], &[1, 4, 16], s + 6, 3e-4),
    ]
}

fn clean_report() -> Report {
    let cfg = DiffConfig::default();
    let mut ops = vec![op("model.embed_tokens", &[1, 4, 16], 0, 0.0)];
    for l in 0..3 {
        ops.extend(layer_ops(l, 2e-4));
    }
    ops.push(op("model.norm", &[1, 4, 16], 90, 1e-4));
    ops.push(op("lm_head", &[1, 4, 32], 91, 1e-4));
    let names: Vec<divergence_diff::Name> = ops
        .iter()
        .map(|o| divergence_diff::Name::from(o.name))
        .collect();
    let listed: divergence_names::NameList = names.clone().into();
    let plan = plan_order(
        &DumpNames {
            meta_order: Some(&listed),
            names: &listed,
            file_order_preserved: true,
            single_tensor_file: false,
        },
        &DumpNames {
            meta_order: Some(&listed),
            names: &listed,
            file_order_preserved: true,
            single_tensor_file: false,
        },
    );
    let mut ctx = ReportContext::new("ours.npz", "ref.npz", plan.source);
    ctx.ours_input_ids = Some(vec![151643, 9707, 11, 1879]);
    ctx.ref_input_ids = Some(vec![151643, 9707, 11, 1879]);
    build(&ops, "float32", ctx, &cfg)
}

fn divergent_report() -> Report {
    let cfg = DiffConfig::default();
    let mut ops = vec![op("model.embed_tokens", &[1, 4, 16], 0, 0.0)];
    ops.extend(layer_ops(0, 2e-4));
    // layer 1: k_norm amplifies a small k_proj error ~200x -> first divergence, marked
    ops.extend(layer_ops(1, 1e-1));
    let mut l2 = layer_ops(2, 2e-4);
    // layer 2: the attention output has a transposed shape
    let r = act(64, 99);
    l2[4] = Op {
        name: "model.layers.2.self_attn",
        ours: Some((vec![1, 16, 4], r.clone())),
        reference: Some((vec![1, 4, 16], r)),
    };
    ops.extend(l2);
    // NaN in ours only in the final norm
    let r = act(64, 90);
    let mut o = r.clone();
    o[5] = f32::NAN;
    o[17] = f32::INFINITY;
    ops.push(Op {
        name: "model.norm",
        ours: Some((vec![1, 4, 16], o)),
        reference: Some((vec![1, 4, 16], r)),
    });
    ops.push(Op {
        name: "model.layers.2.mlp.act_fn",
        ours: None,
        reference: Some((vec![1, 4, 48], act(192, 7))),
    });
    ops.push(Op {
        name: "model.rotary_emb",
        ours: None,
        reference: Some((vec![1, 4, 8], act(32, 8))),
    });
    ops.push(Op {
        name: "debug.extra_probe",
        ours: Some((vec![3], vec![1.0, 2.0, 3.0])),
        reference: None,
    });
    ops.push(op("lm_head", &[1, 4, 32], 91, 5e-1));
    let mut ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    ctx.warnings.push("1 probe(s) present in the files but missing from the reference's metadata order were appended at the end: debug.extra_probe".into());
    ctx.norm_weight_gains.insert((1, QkKind::K), 96.5);
    let mut report = build(&ops, "bfloat16", ctx, &cfg);
    // an unreadable probe is a row too
    report = assemble(
        {
            let mut rows = report.ops.clone();
            rows.insert(
                2,
                unreadable(
                    "model.layers.0.input_layernorm",
                    Which::Ref,
                    "truncated zip entry".into(),
                ),
            );
            rows
        },
        ReportContext {
            ours_label: report.ours.clone(),
            ref_label: report.reference.clone(),
            order_source: report.order_source,
            warnings: report.warnings.clone(),
            ours_input_ids: None,
            ref_input_ids: None,
            norm_weight_gains: [((1, QkKind::K), 96.5)].into(),
        },
        &cfg,
    );
    report
}

fn input_ids_report() -> Report {
    let cfg = DiffConfig {
        tolerance: Tolerance::Manual {
            rtol: Some(1e-2),
            atol: None,
        },
        ..DiffConfig::default()
    };
    let ops = vec![
        op("model.embed_tokens", &[1, 4, 16], 0, 0.5),
        op("lm_head", &[1, 4, 32], 91, 0.5),
    ];
    let mut ctx = ReportContext::new(
        "ours.safetensors",
        "ref.safetensors",
        OrderSource::NaturalSort,
    );
    ctx.warnings.push("neither dump records its execution order (safetensors without metadata keeps keys sorted): ops are in natural name order, so the \"first\" divergence may not be the earliest op".into());
    ctx.ours_input_ids = Some(vec![151643, 9707, 11, 1879]);
    ctx.ref_input_ids = Some(vec![151643, 9707, 12, 1879]);
    build(&ops, "float32", ctx, &cfg)
}

fn table(report: &Report, opts: &TableOptions) -> String {
    let mut buf = Vec::new();
    render_table(report, opts, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}
fn markdown(report: &Report, opts: &TableOptions) -> String {
    let mut buf = Vec::new();
    render_markdown(report, opts, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}
fn json(report: &Report) -> String {
    let mut buf = Vec::new();
    render_json(report, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn clean_snapshots() {
    let r = clean_report();
    assert!(r.first_divergence.is_none());
    insta::assert_snapshot!("clean_table", table(&r, &TableOptions::default()));
    insta::assert_snapshot!("clean_markdown", markdown(&r, &TableOptions::default()));
    insta::assert_snapshot!("clean_json", json(&r));
}

#[test]
fn divergent_snapshots() {
    let r = divergent_report();
    insta::assert_snapshot!("divergent_table", table(&r, &TableOptions::default()));
    insta::assert_snapshot!("divergent_markdown", markdown(&r, &TableOptions::default()));
    insta::assert_snapshot!("divergent_json", json(&r));
}

#[test]
fn input_ids_snapshots() {
    let r = input_ids_report();
    let t = table(&r, &TableOptions::default());
    assert!(t.starts_with("!!! INPUT_IDS MISMATCH"), "{t}");
    let m = markdown(&r, &TableOptions::default());
    assert!(m.starts_with("> [!CAUTION]\n> **INPUT_IDS MISMATCH"), "{m}");
    insta::assert_snapshot!("input_ids_table", t);
    insta::assert_snapshot!("input_ids_markdown", m);
    insta::assert_snapshot!("input_ids_json", json(&r));
}

#[test]
fn table_options_all_layer_grep() {
    let r = divergent_report();
    let all = TableOptions {
        all: true,
        ..TableOptions::default()
    };
    insta::assert_snapshot!("divergent_table_all", table(&r, &all));
    let layer = TableOptions {
        layer: Some(2),
        ..TableOptions::default()
    };
    let t = table(&r, &layer);
    // The layer's rows, named after its prefix, which the title names.
    assert!(
        t.contains("Ops of layer 2 (7 of 25; names relative to model.layers.2)"),
        "{t}"
    );
    assert!(
        t.contains("┆ self_attn.k_norm ") && !t.contains("model.layers.1.self_attn.q_proj "),
        "{t}"
    );
    let grep = TableOptions {
        grep: Some(Regex::new("k_norm").unwrap()),
        ..TableOptions::default()
    };
    insta::assert_snapshot!("divergent_table_grep", table(&r, &grep));
    let re = TableOptions {
        grep: Some(Regex::new(r"layers\.[01]\.self_attn\.k_").unwrap()),
        ..TableOptions::default()
    };
    let t = table(&r, &re);
    assert!(
        t.contains("matching `layers\\.[01]\\.self_attn\\.k_` (4 of 25)"),
        "{t}"
    );
}

/// The ops table's section of a rendered table (its title to the end of its table).
fn ops_section(t: &str) -> &str {
    let from = t.find("Ops ").expect("an ops table");
    let to = t[from..].find("┘").map_or(t.len(), |k| from + k);
    &t[from..to]
}

/// Rows of one layer whose full names do not fit the terminal show their names relative to it,
/// the title saying after which prefix (at 80 columns every name of the first divergence's
/// context wrapped over two lines and the table lost its index: a visual check); where they
/// fit, or the rows cross layers, the names stay whole.
#[test]
fn names_relative_to_the_layer_where_full_names_do_not_fit() {
    let r = divergent_report();
    let at = |width: u16, context: usize| {
        table(
            &r,
            &TableOptions {
                width: Some(width),
                context,
                ..TableOptions::default()
            },
        )
    };
    // #9..#13, all of layer 1.
    let narrow = at(80, 2);
    let ops = ops_section(&narrow);
    // (The title wraps at 80 columns.)
    assert!(
        ops.starts_with(
            "Ops around the first divergence (#9..#13 of 25; names relative to\n  model.layers.1)"
        ),
        "{narrow}"
    );
    assert!(
        ops.contains("┆ self_attn.k_norm ") && !ops.contains("model.layers.1.self_attn"),
        "{ops}"
    );
    // The layer's own output.
    assert!(ops.contains("┆ (layer output) "), "{ops}");
    // Every row on one line: its index kept.
    assert!(ops.contains("┆ 11 ┆"), "{ops}");
    // Wide enough for the full names.
    let wide = at(250, 2);
    assert!(
        ops_section(&wide).contains("┆ model.layers.1.self_attn.k_norm "),
        "{wide}"
    );
    assert!(!wide.contains("names relative"), "{wide}");
    // At no width are the full names kept while they break onto lines (at 68 and 70 columns
    // they kept a column by wrapping every name: a visual check).
    for width in 60..=250u16 {
        let t = at(width, 2);
        let ops = ops_section(&t);
        let body = ops
            .lines()
            .skip_while(|l| !l.starts_with('╞'))
            .filter(|l| l.starts_with('│'))
            .count();
        let words = ops.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("names relative to") || body == 5,
            "{width}: {ops}"
        );
    }
    // #8..#14 cross from layer 1 to 2: the names whole, however narrow.
    let crossing = at(80, 3);
    assert!(!crossing.contains("names relative"), "{crossing}");
}

/// Under `--layer`, the Markdown names the rows relative to the layer as the table does (the
/// title saying to which prefix); rows of one layer number under two prefixes keep their full
/// names (a relative name would not say which).
#[test]
fn layer_rows_are_named_relative_to_one_prefix_only() {
    let r = divergent_report();
    let opts = TableOptions {
        layer: Some(2),
        ..TableOptions::default()
    };
    let m = markdown(&r, &opts);
    assert!(
        m.contains("### Ops of layer 2 (7 of 25; names relative to model.layers.2)"),
        "{m}"
    );
    assert!(
        m.contains("| `self_attn.k_norm` |") && !m.contains("`model.layers.2.self_attn.k_norm`"),
        "{m}"
    );
    // Layer 2 under two prefixes.
    let ops = [
        op("model.layers.2.mlp", &[1, 4, 8], 1, 1e-4),
        op("vision.layers.2.mlp", &[1, 4, 8], 2, 0.5),
    ];
    let cfg = DiffConfig::default();
    let two = build(
        &ops,
        "float32",
        ReportContext::new("a", "b", OrderSource::RefMeta),
        &cfg,
    );
    // A probe named as the layer with a trailing dot would read `(layer output)` as the
    // layer's own: both keep their full names.
    let ops = [
        op("model.layers.2.", &[1, 4, 8], 1, 1e-4),
        op("model.layers.2", &[1, 4, 8], 2, 0.5),
    ];
    let dot = build(
        &ops,
        "float32",
        ReportContext::new("a", "b", OrderSource::RefMeta),
        &cfg,
    );
    let (t, m) = (table(&dot, &opts), markdown(&dot, &opts));
    assert!(
        !t.contains("names relative") && t.contains("┆ model.layers.2. "),
        "{t}"
    );
    assert!(
        !m.contains("names relative") && m.contains("| `model.layers.2.` |"),
        "{m}"
    );
    // (One layer, said so.)
    let all = markdown(&two, &TableOptions::default());
    assert!(
        all.contains("<summary>Per layer (1 layer)</summary>"),
        "{all}"
    );
    for text in [table(&two, &opts), markdown(&two, &opts)] {
        assert!(!text.contains("names relative"), "{text}");
        assert!(
            text.contains("model.layers.2.mlp") && text.contains("vision.layers.2.mlp"),
            "{text}"
        );
    }
}

/// A selection without the first divergence has no mark column (an empty column at 60
/// columns: a visual check); with it, the mark stays.
#[test]
fn the_mark_column_only_where_the_first_divergence_is_shown() {
    let r = divergent_report();
    let of = |layer: usize| {
        let opts = TableOptions {
            layer: Some(layer),
            ..TableOptions::default()
        };
        (table(&r, &opts), markdown(&r, &opts))
    };
    // The first divergence is layer 1's k_norm.
    let (t, m) = of(2);
    assert!(ops_section(&t).contains("\n│ #  ┆ op "), "{t}");
    assert!(m.contains("\n| # | op |"), "{m}");
    let (t, m) = of(1);
    assert!(ops_section(&t).contains("\n│    ┆ #  ┆ op "), "{t}");
    assert!(
        ops_section(&t).contains("│ >> ┆ 11 ┆ self_attn.k_norm"),
        "{t}"
    );
    assert!(m.contains("\n| | # | op |"), "{m}");
}

/// An amplification table whose rows have no verdict loses the empty verdict column first
/// where the terminal is too narrow (at 60 columns it was kept and the headers wrapped).
#[test]
fn an_empty_verdict_column_goes_first_on_a_narrow_terminal() {
    let r = clean_report();
    assert!(r.amplification.rows.iter().all(|a| a.verdict.is_none()));
    let at = |width: u16| {
        table(
            &r,
            &TableOptions {
                width: Some(width),
                ..TableOptions::default()
            },
        )
    };
    let amp = |t: &str| t[t.find("Amplification").expect("the section")..].to_string();
    let narrow = amp(&at(60));
    assert!(!narrow.contains("verdict"), "{narrow}");
    // At every width, the empty column is there only where the table fits with its headers on
    // one line (at 76-81 columns the gains' headers wrapped beside it: a visual check).
    for width in 60..=130u16 {
        let t = amp(&at(width));
        let table: Vec<&str> = t.lines().skip_while(|l| !l.starts_with('┌')).collect();
        let one_line_header = table.get(2).is_some_and(|l| l.starts_with('╞'));
        assert!(!t.contains("verdict") || one_line_header, "{width}: {t}");
    }
    assert!(
        narrow.contains("│ layer ┆ q/k ┆ proj rel err ┆ norm rel err ┆"),
        "{narrow}"
    );
    assert!(amp(&at(200)).contains("│ verdict ┆ layer ┆"));
}

#[test]
fn color_only_when_asked_and_marker_without_color() {
    let r = divergent_report();
    let plain = table(&r, &TableOptions::default());
    assert!(!plain.contains('\x1b'));
    assert!(
        plain.contains("│ >> ┆ 11 ┆ model.layers.1.self_attn.k_norm"),
        "first divergence row is marked without color"
    );
    let colored = table(
        &r,
        &TableOptions {
            color: true,
            ..TableOptions::default()
        },
    );
    assert!(colored.contains("\x1b["));
    assert!(colored.contains(">>"));
}

#[test]
fn json_deserializes_field_by_field() {
    let r = divergent_report();
    let text = json(&r);
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], "divergence-report/2");
    assert_eq!(v["ours"], "ours.npz");
    assert_eq!(v["ref"], "ref.npz");
    assert_eq!(v["tolerance"], serde_json::json!({"mode": "auto"}));
    assert_eq!(v["order_source"], "ref_meta");
    assert_eq!(v["input_ids_mismatch"], false);
    let fd = &v["first_divergence"];
    assert_eq!(fd["name"], "model.layers.1.self_attn.k_norm");
    assert_eq!(fd["status"], "diverged");
    assert_eq!(fd["layer"], 1);
    let idx = fd["index"].as_u64().unwrap() as usize;
    assert_eq!(v["ops"][idx]["name"], "model.layers.1.self_attn.k_norm");
    let op = &v["ops"][idx];
    assert_eq!(op["shape"], serde_json::json!([1, 4, 1, 8]));
    assert_eq!(op["shape_ours"], serde_json::Value::Null);
    assert_eq!(op["dtype_ours"], "bfloat16");
    assert_eq!(
        (op["rtol"].as_f64(), op["atol"].as_f64()),
        (Some(4e-2), Some(1e-3))
    );
    assert!(op["rel_l2_err"].as_f64().unwrap() > 4e-2);
    assert!(op["cosine"].as_f64().unwrap() < 1.0);
    assert_eq!(op["max_abs_err_index"].as_array().unwrap().len(), 4);
    let s = &v["summary"];
    assert_eq!(s["total"], 25);
    assert_eq!(s["diverged"], 4); // k_norm layer 1, shape mismatch, nonfinite, lm_head
    assert_eq!(s["shape_mismatch"], 1);
    assert_eq!(s["nonfinite"], 1);
    assert_eq!(
        (
            s["only_ours"].as_u64(),
            s["only_ref"].as_u64(),
            s["unreadable"].as_u64()
        ),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(v["only_ours"], serde_json::json!(["debug.extra_probe"]));
    assert_eq!(
        v["only_ref"],
        serde_json::json!(["model.layers.2.mlp.act_fn", "model.rotary_emb"])
    );
    let sm = v["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["status"] == "shape_mismatch")
        .unwrap();
    assert_eq!(sm["name"], "model.layers.2.self_attn");
    assert_eq!(sm["shape_ours"], serde_json::json!([1, 16, 4]));
    let nf = v["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["status"] == "nonfinite")
        .unwrap();
    assert_eq!(
        (
            nf["nan_ours"].as_u64(),
            nf["inf_ours"].as_u64(),
            nf["nan_ref"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let amp = &v["amplification"];
    assert_eq!(amp["threshold"], 10.0);
    assert_eq!(amp["marked"], 1);
    let marked: Vec<&serde_json::Value> = amp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["marked"] == true)
        .collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["layer"], 1);
    assert_eq!(marked[0]["kind"], "k");
    assert_eq!(marked[0]["weight_gain"], 96.5);
    assert!(marked[0]["ratio"].as_f64().unwrap() > 10.0);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn width_wraps_tables() {
    let r = divergent_report();
    let t = table(
        &r,
        &TableOptions {
            width: Some(100),
            ..TableOptions::default()
        },
    );
    for line in t.lines().filter(|l| l.starts_with(['┌', '│', '╞', '└'])) {
        assert!(line.chars().count() <= 100, "{line}");
    }
    assert!(t.contains("k_norm"));
}

#[test]
fn huge_context_does_not_overflow() {
    let r = divergent_report();
    let first = r
        .first_divergence
        .as_ref()
        .expect("a first divergence")
        .index;
    assert!(first > 0, "the window must start after #0 for this test");
    let opts = TableOptions {
        context: usize::MAX,
        ..TableOptions::default()
    };
    let t = table(&r, &opts);
    let total = r.ops.len();
    assert!(
        t.contains(&format!("(#0..#{} of {total})", total - 1)),
        "{t}"
    );
}

/// The keys of a JSON object in document order (serde_json's `Value` sorts them).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// The field names of the `ops[]` table of docs/report-schema.md, in order.
fn documented_row_keys() -> Vec<String> {
    let doc = include_str!("../../../docs/report-schema.md");
    let section = doc
        .split("## `ops[]`")
        .nth(1)
        .expect("docs/report-schema.md has an `ops[]` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn json_rows_have_exactly_the_documented_keys_in_order() {
    let documented = documented_row_keys();
    assert_eq!(documented.len(), 35, "{documented:?}");
    assert_eq!(
        (documented[0].as_str(), documented[34].as_str()),
        ("name", "mapped")
    );
    // Every kind of row (ok, diverged, shape mismatch, non-finite, one side, unreadable) writes
    // every key, nulls included, in the documented order.
    let r = divergent_report();
    let statuses: std::collections::BTreeSet<&str> =
        r.ops.iter().map(|op| op.status.as_str()).collect();
    assert_eq!(statuses.len(), 7, "{statuses:?}");
    for op in &r.ops {
        let text = serde_json::to_string(op).unwrap();
        let Keys(keys) = serde_json::from_str(&text).unwrap();
        assert_eq!(keys, documented, "{}", op.name);
    }
    // And the pretty report writes its rows the same way.
    #[derive(serde::Deserialize)]
    struct Rows {
        ops: Vec<Keys>,
    }
    let rows: Rows = serde_json::from_str(&json(&r)).unwrap();
    assert_eq!(rows.ops.len(), r.ops.len());
    for Keys(keys) in rows.ops {
        assert_eq!(keys, documented);
    }
}

#[test]
fn grep_is_a_regex() {
    let r = divergent_report();
    // `.` is a regex wildcard: `layers.1.` also matches `layers.1X` names, as documented.
    let dot = TableOptions {
        grep: Some(Regex::new("layers.1.self_attn$").unwrap()),
        ..TableOptions::default()
    };
    let t = table(&r, &dot);
    assert!(
        t.contains("matching `layers.1.self_attn$` (1 of 25)"),
        "{t}"
    );
    let none = TableOptions {
        grep: Some(Regex::new("^nothing$").unwrap()),
        ..TableOptions::default()
    };
    assert!(table(&r, &none).contains("  (none)"));
}

fn at_width(width: u16, all: bool) -> TableOptions {
    TableOptions {
        width: Some(width),
        all,
        ..TableOptions::default()
    }
}

/// Asserts that no table cell holds a cut number: a cell made of number characters only is a
/// whole `1.234e-05`, `0.997346`, `81.25%` or integer.
fn assert_numbers_whole(table_text: &str) {
    let number_chars = Regex::new(r"^-?[0-9][-+0-9.e%]*$").unwrap();
    let whole = Regex::new(r"^(-?\d\.\d{3}e[+-]\d{2}|\d\.\d{6}|\d+\.\d{2}%|\d+)$").unwrap();
    for line in table_text.lines().filter(|l| l.starts_with('│')) {
        for cell in line.split(['│', '┆']).map(str::trim) {
            if number_chars.is_match(cell) {
                assert!(whole.is_match(cell), "cut number `{cell}` in {line}");
            }
        }
    }
}

/// At 60 columns, a layer's ops (`--layer`) keep the index where the widest op name breaks with
/// or without it: before, the index went and `post_attention_layernorm` broke all the same (a
/// newcomer's check). Where dropping it keeps every name whole, it still goes.
#[test]
fn the_index_stays_where_a_name_breaks_all_the_same() {
    let cfg = DiffConfig::default();
    // The first divergence before the layer: its rows have no `>>` column.
    let mut ops = vec![op("model.embed_tokens", &[1, 4, 16], 0, 5e-1)];
    ops.extend(layer_ops(0, 1e-1));
    ops.push(op(
        "model.layers.0.post_attention_layernorm",
        &[1, 4, 16],
        7,
        1e-1,
    ));
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    let r = build(&ops, "float32", ctx, &cfg);
    let header = |t: &str| {
        t.lines()
            .skip_while(|l| !l.starts_with("Ops of layer 0"))
            .find(|l| l.contains(" op "))
            .unwrap_or_default()
            .to_string()
    };
    let at = |width| {
        let t = table(
            &r,
            &TableOptions {
                layer: Some(0),
                ..at_width(width, false)
            },
        );
        for line in t.lines() {
            assert!(
                line.chars().count() <= usize::from(width),
                "{width}: {line}"
            );
        }
        t
    };
    // 60: `post_attention_layernorm` (24) breaks at 22 characters without the index as at 17
    // with it.
    let t60 = at(60);
    assert!(header(&t60).contains(" # "), "{t60}");
    assert!(t60.contains(" post_attention_la ┆"), "{t60}");
    // 64: without the index the name has its 24 characters, whole; the index goes.
    let t64 = at(64);
    assert!(!header(&t64).contains(" # "), "{t64}");
    assert!(t64.contains("post_attention_layernorm"), "{t64}");
}

#[test]
fn table_fits_80_and_120_columns() {
    let r = divergent_report();
    let wide = table(&r, &TableOptions::default());
    assert!(
        wide.lines().any(|l| l.chars().count() > 140),
        "the unlimited table is wider than any terminal here"
    );
    for width in [80u16, 120] {
        for all in [false, true] {
            let t = table(&r, &at_width(width, all));
            for line in t.lines() {
                assert!(
                    line.chars().count() <= usize::from(width),
                    "{width} cols: {line}"
                );
            }
            assert_numbers_whole(&t);
            // The kept columns: op name, status, max err, rel err.
            assert!(t.contains("rel err") && t.contains("max|o-r|") && t.contains("status"));
            assert!(t.contains("model.layers.1.self_attn.k_norm"), "{t}");
        }
    }
    // With color, the visible text (escape codes stripped) fits too.
    let ansi = Regex::new("\x1b\\[[0-9;]*m").unwrap();
    let colored = table(
        &r,
        &TableOptions {
            color: true,
            ..at_width(80, false)
        },
    );
    assert!(colored.contains('\x1b'));
    for line in colored.lines() {
        let visible = ansi.replace_all(line, "");
        assert!(visible.chars().count() <= 80, "{visible}");
    }
    assert_eq!(
        ansi.replace_all(&colored, ""),
        table(&r, &at_width(80, false))
    );
    let t80 = table(&r, &at_width(80, false));
    let ops_header = t80
        .lines()
        .find(|l| l.contains("┆ op "))
        .expect("an ops table");
    assert!(
        !ops_header.contains("cosine") && !ops_header.contains("||ref||"),
        "{ops_header}"
    );
    assert!(
        table(&r, &at_width(200, false)) == wide,
        "a wide terminal changes nothing"
    );
    insta::assert_snapshot!("divergent_table_80", t80);
    insta::assert_snapshot!("divergent_table_120", table(&r, &at_width(120, false)));
    insta::assert_snapshot!("divergent_table_all_80", table(&r, &at_width(80, true)));
    // At 60 columns the amplification table's verdict word left no room (63 columns, every
    // line wrapped by the terminal; a visual check): q/k goes into the layer's cell.
    let t60 = table(&r, &at_width(60, false));
    let amp = &t60[t60.find("Amplification through").expect("the section")..];
    let amp = &amp[..amp.find("\n\n").unwrap_or(amp.len())];
    for line in amp.lines() {
        assert!(line.chars().count() <= 60, "{line}");
    }
    assert!(amp.contains("│ verdict   ┆ layer ┆ proj rel"), "{amp}");
    assert!(amp.contains("│ AMPLIFIED ┆   1 k ┆"), "{amp}");
    assert!(!amp.contains("q/k"), "{amp}");
    // At 80 it fits as it is.
    assert!(t80.contains("┆ q/k ┆"), "{t80}");
}

/// A report of many rows is rendered in parallel windows (`json.rs`): the bytes must be
/// serde_json's for the whole report, whatever the rows hold (every status, names with quotes,
/// newlines and non-ASCII characters, non-finite values, decode steps).
#[test]
fn json_of_many_rows_is_serde_json_byte_for_byte() {
    let cfg = DiffConfig::default();
    for n in [0usize, 1, 255, 256, 257, 513, 4096 + 7, 9000] {
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let step = i / 600;
            let base = match i % 7 {
                0 => format!("model.layers.{}.self_attn.k_norm", i % 28),
                1 => format!("model.layers.{}.mlp \"quoted\"\n", i % 28),
                2 => format!("名前.{i}"),
                _ => format!("model.layers.{}.mlp.down_proj", i % 28),
            };
            let name = if step == 0 {
                base
            } else {
                format!("{base}@{step}")
            };
            let r = act(64, i);
            let mut o = perturb(&r, if i % 3 == 0 { 1e-2 } else { 1e-7 });
            if i % 11 == 0 {
                o[3] = f32::NAN;
            }
            let mut row = match i % 13 {
                5 => compare(&name, None, Some(side64(&r)), &cfg),
                6 => compare(&name, Some(side64(&o)), None, &cfg),
                _ => compare(&name, Some(side64(&o)), Some(side64(&r)), &cfg),
            };
            if i % 5 == 1 {
                // Every field that a plain comparison leaves empty, each its own value (the
                // JSON writer names every field itself: a key written with another's value
                // shows here).
                let x = i as f64;
                row.truth = std::sync::Arc::new(TruthMetrics {
                    ours_truth_rel_err: Some(x + 0.25),
                    ref_truth_rel_err: Some(x + 0.5),
                    noise_ratio: Some(if i % 10 == 1 { f64::INFINITY } else { x + 0.75 }),
                    truth_problem: Some(format!("truth \"{i}\"\n")),
                });
                row.mapped = Some(format!("mapped.{i}"));
                row.reason = Some(format!("reason {i}"));
                let mut tensor = (*row.tensor).clone();
                tensor.shape_ours = Some(vec![i, 1, 0]);
                tensor.shape = Some(Vec::new());
                tensor.dtype_ours = Some("bfloat16".into());
                row.tensor = std::sync::Arc::new(tensor);
                row.nonfinite = std::sync::Arc::new(NonFiniteCounts {
                    nan_ours: Some(1),
                    inf_ours: Some(2),
                    nan_ref: Some(3),
                    inf_ref: Some(4),
                    nonfinite_mismatch: Some(u64::MAX),
                });
            }
            rows.push(row);
        }
        let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
        let mut report = assemble(rows, ctx, &cfg);
        // (`assemble` sets every row's local growth: a tiny one set after it)
        for (i, row) in report.ops.plain_mut().into_iter().enumerate() {
            if i % 5 == 1 {
                row.local_growth = Some(i as f64 * 1e-300);
            }
        }
        let mut want = serde_json::to_vec_pretty(&report).unwrap();
        want.push(b'\n');
        let mut got = Vec::new();
        render_json(&report, &mut got).unwrap();
        assert!(
            got == want,
            "{n} rows: the parallel JSON differs from serde_json's"
        );
    }
}

fn side64(v: &[f32]) -> Side<'_> {
    Side {
        shape: &[1, 64],
        values: ValuesRef::F32(v),
        dtype: "float32",
    }
}

/// Every table line of `text` (a border or a row) is at most `width` terminal columns wide.
fn assert_tables_fit(text: &str, width: u16) {
    for line in text
        .lines()
        .filter(|l| l.starts_with(['┌', '│', '╞', '├', '└']))
    {
        let cols = unicode_width::UnicodeWidthStr::width(line);
        assert!(
            cols <= usize::from(width),
            "{width} cols, {cols}: {line}\n{text}"
        );
    }
}

/// A name that has to wrap keeps the table within the width, and so does a name of wide
/// characters (CJK, emoji: two columns each); found by a bad-input hunt (the border was one
/// column too wide, and wide names made rows twice the terminal's width).
#[test]
fn long_and_wide_names_keep_the_table_within_the_width() {
    let cfg = DiffConfig::default();
    let ascii: &'static str =
        Box::leak(format!("model.layers.0.{}.TAIL_END", "x".repeat(140)).into_boxed_str());
    let wide: &'static str =
        Box::leak(format!("model.layers.0.{}.TAIL_END", "中".repeat(70)).into_boxed_str());
    for name in [ascii, wide] {
        // A decode step of it too: the per-step table names it.
        let step: &'static str = Box::leak(format!("{name}@1").into_boxed_str());
        let ops = vec![
            op("model.embed_tokens", &[1, 4, 16], 0, 0.0),
            op(name, &[1, 4, 16], 1, 0.1),
            op(step, &[1, 1, 16], 2, 0.1),
        ];
        let r = build(
            &ops,
            "float32",
            ReportContext::new("o.npz", "r.npz", OrderSource::RefMeta),
            &cfg,
        );
        for width in [60u16, 80, 100] {
            let t = table(&r, &at_width(width, true));
            // The ops table's lines (the ops table is fitted to the width; a name alone on a
            // text line stays whole, to copy, and the terminal wraps it).
            let ops = t
                .split("\n\n")
                .find(|s| s.contains("┆ op ") && s.contains("┆ status "))
                .expect("an ops table");
            assert_tables_fit(ops, width);
            assert!(t.contains("TAIL_END"), "{t}");
            // Every other table too (the per-layer table names the layer's first diverging op).
            assert_tables_fit(&t, width);
            assert!(t.contains("Per layer") && t.contains("Per step"), "{t}");
        }
    }
}

/// `--all` over more rows than one table holds: the ops are printed as tables of 4,096 rows
/// each (a table holds every cell of its rows until printed: `--all` over 2^20 decode steps
/// took 5.4 GB; a bad-input hunt), every row once, in order, each table with its header.
#[test]
fn the_ops_table_of_every_row_is_printed_a_page_at_a_time() {
    let cfg = DiffConfig::default();
    let r = act(32, 1);
    let side = || Side {
        shape: &[1, 32],
        values: ValuesRef::F32(&r),
        dtype: "float32",
    };
    let n = 4096 * 2 + 5;
    // The last page's names are the widest.
    let step = |i: usize| i / 28 + usize::from(i >= 8192) * 1_000_000;
    let rows: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("model.layers.{}.mlp@{}", i % 28, step(i));
            compare(&name, Some(side()), Some(side()), &cfg)
        })
        .collect();
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    let report = assemble(rows, ctx, &cfg);
    let t = table(
        &report,
        &TableOptions {
            all: true,
            ..TableOptions::default()
        },
    );
    let ops = &t[t.find(&format!("All ops ({n})")).expect("the ops section")..];
    let ops = &ops[..ops.find("\n\n").unwrap_or(ops.len())];
    assert_eq!(ops.matches("┆ op ").count(), 3, "three tables' headers");
    // Laid out alike (each page fitted on its own shifted the columns at every page: a visual
    // check), each page after the first saying which rows it holds.
    let tops: Vec<&str> = ops.lines().filter(|l| l.starts_with('┌')).collect();
    assert_eq!(tops.len(), 3);
    assert!(tops.iter().all(|t| *t == tops[0]), "{tops:?}");
    assert!(ops.contains("\n  (rows 4097-8192 of 8197)\n"), "{ops}");
    assert!(ops.contains("\n  (rows 8193-8197 of 8197)\n"));
    let listed: Vec<&str> = ops
        .lines()
        .filter_map(|l| {
            l.split(['│', '┆'])
                .map(str::trim)
                .find(|c| c.starts_with("model."))
        })
        .collect();
    let want: Vec<String> = (0..n)
        .map(|i| format!("model.layers.{}.mlp@{}", i % 28, step(i)))
        .collect();
    assert!(listed == want, "{} rows listed of {n}", listed.len());
}

/// `--all` lists every amplification pair (8 a decode step): as the ops, a table of 4,096
/// rows at a time (it was one table of every pair; a bad-input hunt), each row once, in order.
#[test]
fn the_amplification_table_of_every_pair_is_printed_a_page_at_a_time() {
    use divergence_diff::AmplificationRow;
    use divergence_names::QkKind;
    let cfg = DiffConfig::default();
    let r = act(32, 1);
    let side = || Side {
        shape: &[1, 32],
        values: ValuesRef::F32(&r),
        dtype: "float32",
    };
    let rows = vec![compare(
        "model.layers.0.mlp",
        Some(side()),
        Some(side()),
        &cfg,
    )];
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    let mut report = assemble(rows, ctx, &cfg);
    let n = 4096 * 2 + 5;
    report.amplification.rows = (0..n)
        .map(|i| AmplificationRow {
            layer: i,
            kind: QkKind::K,
            proj: format!("model.layers.{i}.self_attn.k_proj").into(),
            norm: format!("model.layers.{i}.self_attn.k_norm").into(),
            proj_rel_err: Some(1e-3),
            norm_rel_err: Some(2e-3),
            ratio: Some(2.0),
            proj_abs_err: Some(1e-3),
            norm_abs_err: Some(2e-3),
            abs_err_gain: Some(2.0),
            weight_gain: None,
            verdict: None,
            marked: false,
        })
        .collect();
    let t = table(
        &report,
        &TableOptions {
            all: true,
            ..TableOptions::default()
        },
    );
    let amp = &t[t.find("Amplification through").expect("the section")..];
    let amp = &amp[..amp.find("\n\n").unwrap_or(amp.len())];
    assert_eq!(
        amp.matches("┆ layer ").count(),
        3,
        "three tables' headers\n{amp}"
    );
    assert!(amp.contains("\n  (rows 4097-8192 of 8197)\n"), "{amp}");
    let layers: Vec<usize> = amp
        .lines()
        .filter_map(|l| l.split(['│', '┆']).nth(2)?.trim().parse().ok())
        .collect();
    assert!(
        layers == (0..n).collect::<Vec<_>>(),
        "{} rows listed of {n}",
        layers.len()
    );
    // One layout for every page: where one page is too wide (the last's layer cells carry a
    // step of 9 digits), q/k goes into the layer's cell on every page (a review: the pages
    // switched layouts).
    for r in report.amplification.rows.iter_mut().skip(8192) {
        r.norm = format!("model.layers.{}.self_attn.k_norm@123456789", r.layer).into();
    }
    for width in [56u16, 64, 72, 80, 88] {
        let t = table(
            &report,
            &TableOptions {
                all: true,
                width: Some(width),
                ..TableOptions::default()
            },
        );
        let amp = &t[t.find("Amplification through").expect("the section")..];
        let amp = &amp[..amp.find("\n\n").unwrap_or(amp.len())];
        let split = amp.matches("┆ q/k ┆").count();
        assert!(
            split == 0 || split == 3,
            "{width}: {split} of 3 pages split q/k"
        );
    }
}

/// The first divergence's details wrap between fields, never between a label and its
/// number where the field fits a line of its own: at 60 columns they read `outside` /
/// `tol 100.00%` (a check of session 52), at 80 `rtol 4.000e-02,` / `atol 1.000e-03`.
#[test]
fn table_details_keep_each_label_with_its_number_at_every_width() {
    let r = divergent_report();
    for width in 50u16..=140 {
        let t = table(&r, &at_width(width, false));
        // The first divergence's details only (the header names the preset's tolerance too).
        let start = t.find(">> FIRST DIVERGENCE").expect("the first divergence");
        let end = t[start..].find("\n\n").map_or(t.len(), |e| start + e);
        let t = &t[start..end];
        for field in [
            "max rel err 1.000e-01",
            "outside tol 81.25%",
            "rtol 4.000e-02, atol 1.000e-03",
            "dtype ours bfloat16, ref bfloat16",
        ] {
            assert!(t.contains(field), "{field} at {width} columns:\n{t}");
        }
    }
}
