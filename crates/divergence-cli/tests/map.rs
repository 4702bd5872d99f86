//! `diff --map`, the layout diagnosis, alignment by content and `--suggest-map`, end to end on
//! dumps made here from the committed transformers fixture (renamed, fused, re-laid out in
//! Rust; the Python suite, tests/python/test_engine_layouts.py, does the same for whole dumps
//! in each engine's layout).

mod common;

use std::path::Path;

use common::{divergence, root};
use divergence_dump::{Dump, DumpWriter, Meta, TensorData, Values};
use serde_json::Value;

const REF: &str = "fixtures/ref/tiny-qwen3.f32.eager.npz";

fn read(name: &str) -> (Vec<usize>, Vec<f32>) {
    let d = Dump::open(&root().join(REF)).unwrap();
    let t = d.read(name).unwrap();
    let Values::F32(v) = t.values else {
        panic!("f32 fixture")
    };
    (t.shape, v)
}

fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], extra: Option<(&str, &str)>) {
    let mut meta = Meta::default();
    if let Some((k, v)) = extra {
        meta.extra.insert(k.into(), Value::String(v.into()));
    }
    write_meta(path, tensors, meta);
}

fn write_meta(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], meta: Meta) {
    let mut w = DumpWriter::create(path).unwrap();
    for (name, shape, data) in tensors {
        w.add(name, shape, TensorData::F32(data)).unwrap();
    }
    w.finish(meta).unwrap();
}

fn json(args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = divergence(args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v, err)
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// Layer 0's q, k, v fused as vLLM does ([T, q | k | v], no batch axis), optionally with q's
/// first two heads swapped.
fn fused_qkv(swap_heads: bool) -> (String, Vec<usize>, Vec<f32>) {
    let parts: Vec<(Vec<usize>, Vec<f32>)> = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .map(|p| read(&format!("model.layers.0.self_attn.{p}")))
        .collect();
    let t = parts[0].0[1];
    let widths: Vec<usize> = parts.iter().map(|(s, _)| s[2]).collect();
    let total: usize = widths.iter().sum();
    let mut out = Vec::with_capacity(t * total);
    for ti in 0..t {
        for ((_, v), &w) in parts.iter().zip(&widths) {
            out.extend_from_slice(&v[ti * w..(ti + 1) * w]);
        }
    }
    if swap_heads {
        let hd = 32;
        for ti in 0..t {
            let row = &mut out[ti * total..ti * total + 2 * hd];
            let (a, b) = row.split_at_mut(hd);
            a.swap_with_slice(b);
        }
    }
    (
        "model.layers.0.self_attn.qkv_proj.0".into(),
        vec![t, total],
        out,
    )
}

#[test]
fn the_vllm_preset_splits_a_fused_qkv_and_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("vllm.npz");
    let (shape, embed) = read("model.embed_tokens");
    write(
        &ours,
        &[("model.embed_tokens".into(), shape, embed), fused_qkv(true)],
        None,
    );
    let (code, r, _) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        "vllm",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        r["first_divergence"]["name"],
        "model.layers.0.self_attn.q_proj"
    );
    let q = row(&r, "model.layers.0.self_attn.q_proj");
    assert!(q["mapped"].as_str().unwrap().contains(
        "[vLLM fuses q, k and v]: part 1 of 3 of model.layers.0.self_attn.qkv_proj.0 [16, 256]"
    ));
    for ok in [
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
    ] {
        assert_eq!(row(&r, ok)["status"], "ok");
        assert_eq!(row(&r, ok)["max_abs_err"], 0.0);
    }
    assert_eq!(row(&r, "model.embed_tokens")["mapped"], Value::Null);
    // Against a deflated reference (streamed rows elsewhere) the computed rows are the same.
    let deflated = dir.path().join("ref.z.npz");
    common::deflated_copy(&root().join(REF), &deflated);
    let (code, rz, _) = json(&[
        "diff",
        ours.to_str().unwrap(),
        deflated.to_str().unwrap(),
        "--map",
        "vllm",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    for name in [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
    ] {
        assert_eq!(row(&rz, name)["status"], row(&r, name)["status"], "{name}");
        assert_eq!(
            row(&rz, name)["diff_l2"],
            row(&r, name)["diff_l2"],
            "{name}"
        );
    }
    // The same map shipped in the dump's metadata.
    let shipped = dir.path().join("shipped.npz");
    write(&shipped, &[fused_qkv(false)], Some(("map", "vllm")));
    let (code, r, _) = json(&["diff", shipped.to_str().unwrap(), REF, "--format", "json"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(row(&r, "model.layers.0.self_attn.q_proj")["status"], "ok");
}

#[test]
fn bad_maps_are_one_line_errors_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("vllm.npz");
    write(&ours, &[fused_qkv(false)], None);
    let map = dir.path().join("bad.toml");
    std::fs::write(
        &map,
        "[[rule]]\nfrom = \"model.layers.{L}.self_attn.qkv_proj.0\"\nto = [\"a{L}\", \"b{L}\"]\nsplit = { axis = -1, sizes = [\"heads*head_dim\", \"hidden\"] }\n",
    )
    .unwrap();
    let (code, out, err) = divergence(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        map.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml: rule 1 (from = \"model.layers.{L}.self_attn.qkv_proj.0\"): `model.layers.0.self_attn.qkv_proj.0` [16, 256]: split sizes"), "{err}");
    assert!(err.contains("do not add up"), "{err}");
}

/// `diff`'s exit code and stderr with `--map map` (or our metadata's map).
fn diff_err(ours: &Path, map: Option<&Path>) -> (i32, String) {
    let mut args = vec!["diff", ours.to_str().unwrap(), REF];
    if let Some(m) = map {
        args.extend(["--map", m.to_str().unwrap()]);
    }
    let (code, out, err) = divergence(&args);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    (code, err.trim_end().to_string())
}

#[test]
fn maps_that_cannot_mean_anything_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let shown = ours.display().to_string();
    let meta = |text: &str| {
        write(&ours, &[fused_qkv(false)], Some(("map", text)));
        diff_err(&ours, None)
    };
    // A preset's name mistyped in the metadata, said as `--map vlm` says it.
    assert_eq!(
        meta("vlm"),
        (
            2,
            format!("error: {shown} (metadata \"map\"): \"vlm\" is not a preset (vllm, llama.cpp, transformer-lens) nor the TOML of a map")
        )
    );
    // No rule: nothing renamed, said instead of "0 of our tensors named".
    assert_eq!(
        meta(""),
        (
            2,
            format!("error: {shown} (metadata \"map\"): no [[rule]]: a map must rename something")
        )
    );
    // 100,000 transform steps once took memory until the process aborted.
    let steps = vec!["{ unsqueeze = 0 }"; 100_000].join(", ");
    let (code, err) = meta(&format!(
        "[[rule]]\nfrom = \"model.layers.{{L}}.self_attn.qkv_proj.0\"\nto = \"q{{L}}\"\ntransform = [{steps}]\n"
    ));
    assert_eq!(code, 2);
    assert!(
        err.ends_with("100000 transform steps (at most 64)"),
        "{err}"
    );
    // The same from a file; and names no dump may hold.
    write(&ours, &[fused_qkv(false)], None);
    let map = dir.path().join("m.toml");
    for (text, says) in [
        ("description = \"x\"\n", "m.toml: no [[rule]]: a map must rename something"),
        (
            "[[rule]]\nfrom = \"model.layers.0.self_attn.qkv_proj.0\"\nto = \"q@3\"\n",
            "`to = \"q@3\"` names a decode step (`@3`): a map names the probe, and each step follows it",
        ),
        (
            "[[rule]]\nfrom = \"model.layers.0.self_attn.qkv_proj.0\"\nto = \"__meta__\"\n",
            "`to = \"__meta__\"`: a reserved name (the dump's metadata), never a probe",
        ),
    ] {
        std::fs::write(&map, text).unwrap();
        let (code, err) = diff_err(&ours, Some(&map));
        assert_eq!(code, 2, "{err}");
        assert!(err.ends_with(says), "{err}");
    }
}

/// A map file that is a fifo or a device is refused from its metadata: opening a fifo blocks.
#[cfg(unix)]
#[test]
fn a_map_that_is_not_a_regular_file_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    write(&ours, &[fused_qkv(false)], None);
    let fifo = dir.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let run = |map: &Path| {
        // A regression that opens the fifo fails here instead of hanging.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_divergence"))
            .args(["diff", ours.to_str().unwrap(), REF, "--map"])
            .arg(map)
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("blocked for 30 s (was the fifo opened?)");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stderr)
                .unwrap()
                .trim_end()
                .to_string(),
        )
    };
    if made {
        assert_eq!(
            run(&fifo),
            (
                Some(2),
                format!(
                    "error: --map {}: not a regular file (a named pipe (fifo))",
                    fifo.display()
                )
            )
        );
    }
    if Path::new("/dev/zero").exists() {
        assert_eq!(
            run(Path::new("/dev/zero")),
            (
                Some(2),
                "error: --map /dev/zero: not a regular file (a character device)".to_string()
            )
        );
    }
}

#[test]
fn a_transposed_layout_is_diagnosed_and_suggested_and_the_suggestion_works() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    // rope_q tokens-first ([T, H, D]) as llama.cpp keeps it, under the reference's name.
    let (shape, v) = read("model.layers.0.self_attn.rope_q"); // [1, H, T, D]
    let (h, t, d) = (shape[1], shape[2], shape[3]);
    let mut tf = vec![0f32; v.len()];
    for hi in 0..h {
        for ti in 0..t {
            let src = (hi * t + ti) * d;
            let dst = (ti * h + hi) * d;
            tf[dst..dst + d].copy_from_slice(&v[src..src + d]);
        }
    }
    let (es, ev) = read("model.embed_tokens");
    write(
        &ours,
        &[
            ("model.embed_tokens".into(), es, ev),
            ("model.layers.0.self_attn.rope_q".into(), vec![t, h, d], tf),
        ],
        None,
    );
    let suggested = dir.path().join("suggested.toml");
    let (code, r, _) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--format",
        "json",
        "--suggest-map",
        suggested.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let rope = row(&r, "model.layers.0.self_attn.rope_q");
    assert_eq!(rope["status"], "shape_mismatch");
    let reason = rope["reason"].as_str().unwrap();
    assert!(
        reason.contains("transform = [{ reshape = [16, 4, 32] }, { permute = [1, 0, 2] }]"),
        "{reason}"
    );
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(
        text.contains("from = \"model.layers.0.self_attn.rope_q\""),
        "{text}"
    );
    // Passed back, the suggestion makes the row compare, and agree.
    let (_, r, _) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--format",
        "json",
        "--map",
        suggested.to_str().unwrap(),
    ]);
    let rope = row(&r, "model.layers.0.self_attn.rope_q");
    assert_eq!(rope["status"], "ok", "{rope}");
    assert_eq!(rope["max_abs_err"], 0.0);
}

#[test]
fn names_in_common_with_nothing_are_aligned_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let names = [
        "model.embed_tokens",
        "model.layers.0.input_layernorm",
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
    ];
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (s, mut v) = read(n);
            if *n == "model.layers.0.self_attn.k_proj" {
                v.iter_mut().for_each(|x| *x *= 1.5); // a bug, where no name helps
            }
            (format!("port_tensor_{i}"), s, v)
        })
        .collect();
    write(&ours, &tensors, None);
    let suggested = dir.path().join("suggested.toml");
    let (code, r, _) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--format",
        "json",
        "--suggest-map",
        suggested.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(
        r["first_divergence"]["name"],
        "model.layers.0.self_attn.k_proj"
    );
    let k = row(&r, "model.layers.0.self_attn.k_proj");
    assert!(
        k["mapped"]
            .as_str()
            .unwrap()
            .contains("inferred by content"),
        "{k}"
    );
    assert!(r["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("few probe names in common: 7 pairs aligned by content"));
    for (i, n) in names.iter().enumerate() {
        let text = std::fs::read_to_string(&suggested).unwrap();
        assert!(
            text.contains(&format!("from = \"port_tensor_{i}\"\nto = \"{n}\"")),
            "{n}: {text}"
        );
    }
}

#[test]
fn a_bad_model_size_in_our_metadata_falls_back_and_is_named() {
    // Our metadata's config rejects num_attention_heads (-4): the reference's config gives it
    // (it once blocked the fallback: "needs the model size `heads`"), and with no other config
    // the error names the rejected field.
    let dir = tempfile::tempdir().unwrap();
    let write_model = |path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], model| {
        let meta = Meta {
            model,
            ..Meta::default()
        };
        write_meta(path, tensors, meta);
    };
    let ours = dir.path().join("ours.npz");
    let bad = serde_json::json!({"model_type": "qwen3", "num_attention_heads": -4});
    write_model(&ours, &[fused_qkv(false)], Some(bad));
    let (code, r, err) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        "vllm",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&r, "model.layers.0.self_attn.q_proj")["status"], "ok");
    // ... and says which config it passed over.
    let said = r["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap_or_default()
            .contains("passed over a config that rejects one: ")
            && w.as_str()
                .unwrap_or_default()
                .contains("num_attention_heads is -4")
    });
    assert!(said, "{}", r["warnings"]);
    // A reference that records no config: nothing to fall back on.
    let reference = dir.path().join("ref.npz");
    let parts: Vec<(String, Vec<usize>, Vec<f32>)> = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .map(|p| {
            let name = format!("model.layers.0.self_attn.{p}");
            let (s, v) = read(&name);
            (name, s, v)
        })
        .collect();
    write_model(&reference, &parts, None);
    let (code, err) = {
        let (code, _, err) = divergence(&[
            "diff",
            ours.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--map",
            "vllm",
        ]);
        (code, err)
    };
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs the model size `heads`"), "{err}");
    assert!(
        err.contains(
            "(metadata \"model\"): num_attention_heads is -4, expected a positive integer"
        ),
        "{err}"
    );
}

/// More layout changes than a map may hold: the suggestion stops at the bound, says so at its
/// end and in a warning, and passes back through `--map` (12,000 per-tensor rules were written
/// and then refused, found by a bad-input hunt).
#[test]
fn a_suggestion_stays_within_what_a_map_may_hold() {
    let dir = tempfile::tempdir().unwrap();
    let n = divergence_map::MAX_RULES + 20;
    let names: Vec<String> = (0..n)
        .map(|i| format!("model.layers.{}.op{}", i / 10, i % 10))
        .collect();
    let reference: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let v: Vec<f32> = (0..12).map(|k| (i * 12 + k) as f32).collect();
            (name.clone(), vec![1, 4, 3], v)
        })
        .collect();
    // Ours: each tensor transposed to [1, 3, 4].
    let ours: Vec<(String, Vec<usize>, Vec<f32>)> = reference
        .iter()
        .map(|(name, _, v)| {
            let t: Vec<f32> = (0..12).map(|k| v[(k % 4) * 3 + k / 4]).collect();
            (name.clone(), vec![1, 3, 4], t)
        })
        .collect();
    let (o, r) = (dir.path().join("o.npz"), dir.path().join("r.npz"));
    write(&o, &ours, None);
    write(&r, &reference, None);
    let suggested = dir.path().join("s.toml");
    let (o, r, s) = (
        o.to_str().unwrap(),
        r.to_str().unwrap(),
        suggested.to_str().unwrap(),
    );
    let (code, report, _) = json(&["diff", o, r, "--format", "json", "--suggest-map", s]);
    assert_eq!(code, 1);
    let warned = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("20 rules left out"));
    assert!(warned, "{}", report["warnings"]);
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(
        text.contains("# 20 more rules left out"),
        "{}",
        &text[text.len() - 300..]
    );
    let (code, _, err) = json(&["diff", o, r, "--format", "json", "--map", s]);
    assert!(code == 0 || code == 1, "{err}");
}

/// A preset that names none of our tensors is said to be most likely another engine's map
/// (a newcomer's run: the llama.cpp preset on a vLLM dump read "0 of our tensors named by its
/// rules", and the names that paired by themselves gave a false divergence).
#[test]
fn a_preset_that_names_nothing_is_said_to_be_another_engines() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let (shape, v) = read("model.embed_tokens");
    write(&ours, &[("model.embed_tokens".into(), shape, v)], None);
    let (code, r, err) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        "llama.cpp",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let warnings = common::warnings(&r);
    assert!(
        warnings.contains(&"name map preset llama.cpp: none of our tensors is named by its rules: is it the map of another engine's dump? (the probes pair by their own names)"),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("0 of our tensors")),
        "{warnings:?}"
    );
    // Where few of our names are the reference's either, an error (a bad-input hunt: a
    // clean vLLM dump under the llama.cpp preset compared vLLM's `act_fn` with transformers',
    // exit 1).
    let (shape, v) = read("model.layers.0.mlp.act_fn");
    write(
        &ours,
        &[
            (
                "model.layers.0.mlp.gate_up_proj".into(),
                shape.clone(),
                v.clone(),
            ),
            ("model.layers.0.mlp.act_fn".into(), shape.clone(), v.clone()),
            ("model.layers.0.self_attn.qkv_proj".into(), shape, v),
        ],
        None,
    );
    let shown = ours.display().to_string();
    let (code, out, err) = divergence(&["diff", &shown, REF, "--map", "llama.cpp"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("error: name map preset llama.cpp: none of {shown}'s tensors is named by its rules, and few of its names are the reference's: is it the map of another engine's dump? (diff --suggest-map FILE proposes one)")
    );
    // Names that differ from the reference's by a leading prefix pair as they are (a review:
    // they were refused): the warning only.
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = [
        "model.embed_tokens",
        "model.layers.0.input_layernorm",
        "model.layers.0.mlp.act_fn",
    ]
    .iter()
    .map(|n| {
        let (shape, v) = read(n);
        (n.trim_start_matches("model.").to_string(), shape, v)
    })
    .collect();
    write(&ours, &tensors, None);
    let (code, r, err) = json(&[
        "diff",
        &shown,
        REF,
        "--map",
        "llama.cpp",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        common::warnings(&r)
            .iter()
            .any(|w| w.contains("none of our tensors is named by its rules")),
        "{r}"
    );
    // Nor a decode dump against a prefill, its prefill compared (`--steps 0`; a review: its
    // decode steps counted as names of another layout).
    let (code, _, err) = json(&[
        "diff",
        "fixtures/ref/tiny-qwen3.f32.decode.npz",
        REF,
        "--map",
        "llama.cpp",
        "--steps",
        "0",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
}

/// A preset's error about our dump's tensors names the dump (a bad-input hunt: "preset vllm:
/// `model.layers.0.self_attn.q_proj` is made twice" did not say which file).
#[test]
fn a_collision_of_made_names_names_our_dump() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("merged.npz");
    let (shape, v) = read("model.layers.0.self_attn.q_proj");
    write(
        &ours,
        &[
            fused_qkv(false),
            ("model.layers.0.self_attn.q_proj".into(), shape, v),
        ],
        None,
    );
    let shown = ours.display().to_string();
    let (code, out, err) = divergence(&[
        "diff",
        &shown,
        REF,
        "--map",
        "vllm",
        "--model",
        "fixtures/tiny-qwen3",
    ]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {shown}: preset vllm: `model.layers.0.self_attn.q_proj` is made twice"
        )),
        "{err}"
    );
}

/// The map applies to our dump: where the names it makes of the reference's tensors are ours far
/// more often than those it makes of ours are the reference's, the files are the wrong way
/// round, exit 2 naming both (an engine-layout check: our
/// transformers-named dump against a vLLM-layout reference under `--map vllm` compared 14 of
/// 105 rows and exited 0). The right way round is compared.
#[test]
fn a_map_that_fits_the_reference_not_ours_is_refused_as_the_wrong_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("vllm.npz");
    let mut tensors = vec![{
        let (shape, v) = read("model.embed_tokens");
        ("model.embed_tokens".to_string(), shape, v)
    }];
    for layer in 0..4 {
        for (ours, theirs) in [
            ("self_attn.o_proj", "self_attn.o_proj.0"),
            ("mlp.down_proj", "mlp.down_proj.0"),
            ("self_attn.attn_out", "self_attn.attn"),
        ] {
            let (mut shape, v) = read(&format!("model.layers.{layer}.{ours}"));
            // vLLM's tokens are flattened: no batch axis.
            shape.remove(0);
            tensors.push((format!("model.layers.{layer}.{theirs}"), shape, v));
        }
    }
    write(&engine, &tensors, None);
    let engine = engine.to_str().unwrap();
    let (code, out, err) = divergence(&["diff", REF, engine, "--map", "vllm"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("name map preset vllm: applied to ")
            && err.contains(
                "vllm.npz it makes 12 names that fixtures/ref/tiny-qwen3.f32.eager.npz holds, \
                 applied to fixtures/ref/tiny-qwen3.f32.eager.npz 0 that "
            )
            && err.contains("are the two files the wrong way round?"),
        "{err}"
    );
    let (code, r, err) = json(&["diff", engine, REF, "--map", "vllm", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["summary"]["compared"], 13);
    // An engine dump of a few probes is no reason to refuse, though the preset names more of
    // the reference's tensors (its every `mlp.act_fn`) than of ours (a review: a first version
    // counted those and refused a vLLM dump of two attention outputs against a reference of 6
    // layers; this fixture's 4 stayed under that version's bar of more than 4).
    let sparse = dir.path().join("sparse.npz");
    write(&sparse, &tensors[tensors.len() - 2..], None);
    let (code, r, err) = json(&[
        "diff",
        sparse.to_str().unwrap(),
        REF,
        "--map",
        "vllm",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["summary"]["compared"], 2);
    // Both files in vLLM's layout: refused, naming the reference's engine-only tensors (a
    // bad-input hunt: two vLLM dumps compared the names vLLM shares with transformers, exit 0).
    // A transformers reference with a few probes of its own (an MoE's experts) that a broad
    // rule of a map file matches is compared, not refused: more of its probes have
    // transformers' names (a review).
    let mut with_experts: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for name in ["model.embed_tokens".to_string()]
        .into_iter()
        .chain((0..4).flat_map(|l| {
            ["self_attn.o_proj", "mlp.down_proj", "self_attn.attn_out"]
                .map(|op| format!("model.layers.{l}.{op}"))
        }))
    {
        let (shape, v) = read(&name);
        with_experts.push((name, shape, v));
    }
    // (8 expert probes the rule matches: more than 4, fewer than the 13 of transformers'.)
    for l in 0..8 {
        let (shape, v) = read(&format!("model.layers.{}.mlp.down_proj", l % 4));
        with_experts.push((format!("model.layers.{l}.mlp.experts.0"), shape, v));
    }
    let experts = dir.path().join("experts.npz");
    write(&experts, &with_experts, None);
    let broad = dir.path().join("broad.toml");
    std::fs::write(
        &broad,
        "all_optional = true\n[[rule]]\nfrom = \"{P...}.0\"\nto = \"{P...}\"\n",
    )
    .unwrap();
    // (Ours with probes of its own too, so that the check is reached: where the map makes
    // half of our names the reference's, it is not asked.)
    let mut ours = tensors.clone();
    for i in 0..16 {
        let (shape, v) = read("model.embed_tokens");
        ours.push((format!("model.extra_{i}"), shape, v));
    }
    let ours_path = dir.path().join("ours_extra.npz");
    write(&ours_path, &ours, None);
    let (code, _, err) = divergence(&[
        "diff",
        ours_path.to_str().unwrap(),
        experts.to_str().unwrap(),
        "--map",
        broad.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_ne!(code, 2, "{err}");
    assert!(!err.contains("layout"), "{err}");
    // Nor a transformers reference whose layers are not `layers.N` (GPT-2's `transformer.h.N`)
    // under a rule that keeps its names, changing their layout only: the names the rule makes
    // are the reference's own (a second hunt: refused as in the map's layout).
    let mut gpt: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for l in 0..4 {
        for op in ["q_proj", "k_proj", "v_proj"] {
            let (shape, v) = read(&format!("model.layers.{l}.self_attn.{op}"));
            gpt.push((format!("transformer.h.{l}.self_attn.{op}"), shape, v));
        }
    }
    let (gpt_ours, gpt_ref) = (
        dir.path().join("gpt_ours.npz"),
        dir.path().join("gpt_ref.npz"),
    );
    write(&gpt_ref, &gpt, None);
    // (Ours with probes of its own, so that the check is reached, as above.)
    for i in 0..16 {
        let (shape, v) = read("model.embed_tokens");
        gpt.push((format!("model.extra_{i}"), shape, v));
    }
    write(&gpt_ours, &gpt, None);
    let keep = dir.path().join("keep.toml");
    std::fs::write(
        &keep,
        "[[rule]]\nfrom = \"transformer.h.{L}.self_attn.{P}_proj\"\nto = \"transformer.h.{L}.self_attn.{P}_proj\"\ntransform = [{ squeeze = 0 }]\n",
    )
    .unwrap();
    let (code, _, err) = divergence(&[
        "diff",
        gpt_ours.to_str().unwrap(),
        gpt_ref.to_str().unwrap(),
        "--map",
        keep.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(!err.contains("layout"), "{err}");
    assert_ne!(code, 2, "{err}");
    let again = dir.path().join("vllm2.npz");
    std::fs::copy(engine, &again).unwrap();
    let (code, out, err) = divergence(&["diff", engine, again.to_str().unwrap(), "--map", "vllm"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("vllm2.npz is in the map's layout: its rules rename 12 of its tensors that transformers does not name so (model.layers.0.mlp.down_proj.0, model.layers.0.self_attn.attn, model.layers.0.self_attn.o_proj.0, model.layers.1.mlp.down_proj.0, model.layers.1.self_attn.attn, ... (7 more)); the map renames our dump, the first file, and the reference must be in transformers' names"),
        "{err}"
    );
}

/// A `to` that names no tensor of the reference is an error, exit 2, as a `from` that matches
/// none of ours is: one line naming the map, the rule, its `to`, a name it made and the
/// reference's closest name (it was a warning, exit 0, its rows "only in ours"). Where the
/// rule or the map is optional the warning stays, exit 0; a name the reference holds under a
/// leading prefix pairs, so it is found.
#[test]
fn a_to_that_names_no_reference_tensor_is_an_error_unless_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = ["q_proj", "k_proj"]
        .iter()
        .map(|p| {
            let (shape, v) = read(&format!("model.layers.0.self_attn.{p}"));
            (format!("blk.0.attn_{}", &p[..1]), shape, v)
        })
        .collect();
    write(&ours, &tensors, None);
    let map = dir.path().join("m.toml");
    let rules = |q_to: &str, extra: &str| {
        format!(
            "[[rule]]\nfrom = \"blk.{{L}}.attn_k\"\nto = \"model.layers.{{L}}.self_attn.k_proj\"\n\n\
             [[rule]]\nfrom = \"blk.{{L}}.attn_q\"\nto = \"{q_to}\"\n{extra}"
        )
    };
    std::fs::write(&map, rules("model.layers.{L}.self_attn.q_prj", "")).unwrap();
    let (code, err) = diff_err(&ours, Some(&map));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        format!(
            "error: {}: rule 2 (from = \"blk.{{L}}.attn_q\"): `to = \"model.layers.{{L}}.self_attn.q_prj\"` names no tensor of {REF} (it made `model.layers.0.self_attn.q_prj`): did you mean `model.layers.0.self_attn.q_proj`? (mark it `optional = true` if that is expected)",
            map.display()
        )
    );
    // Optional: the rule, or the whole map. The warning names what it made, exit 0.
    for text in [
        rules("model.layers.{L}.self_attn.q_prj", "optional = true\n"),
        format!(
            "all_optional = true\n{}",
            rules("model.layers.{L}.self_attn.q_prj", "")
        ),
    ] {
        std::fs::write(&map, &text).unwrap();
        let (code, r, err) = json(&[
            "diff",
            ours.to_str().unwrap(),
            REF,
            "--map",
            map.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{text}\n{err}");
        let warnings = common::warnings(&r);
        assert!(
            warnings.iter().any(|w| w.ends_with(&format!(
                "1 names it makes are not in {REF}: model.layers.0.self_attn.q_prj"
            ))),
            "{warnings:?}"
        );
    }
    // Named without the reference's leading `model.`: paired by the prefix, compared.
    let unprefixed = rules("layers.{L}.self_attn.q_proj", "").replace("model.layers", "layers");
    std::fs::write(&map, unprefixed).unwrap();
    let (code, r, err) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        map.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&r, "model.layers.0.self_attn.q_proj")["status"], "ok");
    // Paired, so not said to be missing from the reference (they were listed as "not in").
    let warnings = common::warnings(&r);
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("names it makes are not in")),
        "{warnings:?}"
    );
}

#[test]
fn a_to_that_makes_only_steps_the_reference_lacks_is_not_a_typo() {
    // A rule whose tensors are decode steps only (a cache probe: there from step 1 on), against
    // a reference of no decode steps, compared on its prefill (`--steps 0`): its `to` names no
    // tensor of the reference because the reference holds no such step, not because it is
    // mistyped (a review: exit 2, "names no tensor").
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let (shape, v) = read("model.layers.0.self_attn.k_proj");
    let step_shape: Vec<usize> = [1, 1]
        .into_iter()
        .chain(shape[2..].iter().copied())
        .collect();
    let step: Vec<f32> = v[..shape[2..].iter().product()].to_vec();
    let tensors = vec![
        ("blk.0.attn_k".to_string(), shape.clone(), v.clone()),
        (
            "blk.0.attn_k@1".to_string(),
            step_shape.clone(),
            step.clone(),
        ),
        ("blk.0.cache_k@1".to_string(), step_shape, step),
    ];
    write(&ours, &tensors, None);
    let map = dir.path().join("m.toml");
    std::fs::write(
        &map,
        "[[rule]]\nfrom = \"blk.{L}.attn_k\"\nto = \"model.layers.{L}.self_attn.k_proj\"\n\n\
         [[rule]]\nfrom = \"blk.{L}.cache_k\"\nto = \"model.layers.{L}.self_attn.cache_k\"\n",
    )
    .unwrap();
    let (code, r, err) = json(&[
        "diff",
        ours.to_str().unwrap(),
        REF,
        "--map",
        map.to_str().unwrap(),
        "--steps",
        "0",
        "--format",
        "json",
    ]);
    assert!(!err.contains("names no tensor"), "{err}");
    assert_ne!(code, 2, "{err}");
    assert_eq!(row(&r, "model.layers.0.self_attn.k_proj")["status"], "ok");
}

/// A map recorded in the reference's metadata is never used (a map renames our tensors): an
/// engine's dump given as REF, with no map for ours, is the two files the wrong way round, an
/// error (a bad-input hunt: a clean vLLM dump given as REF read 20 false divergences; a later
/// one: with a warning only, it still exited 1); with a map for ours, a warning. `"map": null`
/// in ours is no map (it was an error).
#[test]
fn a_map_in_the_references_metadata_is_said_and_a_null_map_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine.npz");
    write(&engine, &[fused_qkv(false)], Some(("map", "vllm")));
    let shown = engine.display().to_string();
    let (code, out, err) = divergence(&["diff", REF, engine.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("error: {shown}: its metadata records the preset vllm (\"map\"), but a map renames our dump's tensors, never the reference's, and ours is given none: are the two files the wrong way round? (diff ENGINE_DUMP REFERENCE)")
    );
    // Both dumps in the engine's layout, the reference alone recording its map (a review: an
    // error refused this pair): a warning.
    let twin = dir.path().join("twin.npz");
    write(&twin, &[fused_qkv(false)], None);
    let (code, report, err) = json(&[
        "diff",
        twin.to_str().unwrap(),
        engine.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        common::warnings(&report).contains(&format!("{shown}: its metadata records the preset vllm (\"map\"), not used: a map renames our dump's tensors, never the reference's; if it is the engine's dump, give it as OURS").as_str()),
        "{report}"
    );
    // With a map for ours (a file whose one optional rule names nothing here), a warning.
    let map = dir.path().join("map.toml");
    std::fs::write(
        &map,
        "[[rule]]\nfrom = \"nothing.{X}\"\nto = \"model.{X}\"\noptional = true\n",
    )
    .unwrap();
    let (_, report, _) = json(&[
        "diff",
        REF,
        engine.to_str().unwrap(),
        "--map",
        map.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let said: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|w| w.starts_with(&shown))
        .collect();
    assert_eq!(
        said,
        [format!("{shown}: its metadata records the preset vllm (\"map\"), not used: a map renames our dump's tensors, never the reference's (another is used for ours); if it is the engine's dump, give it as OURS")]
    );
    // Given as OURS, its map is used and nothing is said of the reference; how many of our
    // tensors it named is a note, not a warning (a newcomer's check).
    let (_, report, _) = json(&["diff", engine.to_str().unwrap(), REF, "--format", "json"]);
    let warnings = report["warnings"].to_string();
    assert!(!warnings.contains("not used: a map renames"), "{warnings}");
    assert!(
        !warnings.contains("of our tensors named by its rules"),
        "{warnings}"
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("name map preset vllm: 3 of our tensors named by its rules"),
        "{notes}"
    );

    let mut meta = Meta::default();
    meta.extra.insert("map".into(), Value::Null);
    let ours = dir.path().join("null.npz");
    write_meta(&ours, &[fused_qkv(false)], meta);
    // (Its one tensor, unmapped, has no name in common with the reference: a report, exit 2,
    // that says so; before, the error "(metadata \"map\"): must be a string", no report.)
    let (code, report, err) = json(&["diff", ours.to_str().unwrap(), REF, "--format", "json"]);
    assert_eq!(code, 2);
    assert!(err.contains("no probe was compared"), "{err}");
    assert!(
        !report["warnings"].to_string().contains("preset"),
        "{report}"
    );
}

#[test]
fn a_preset_named_like_a_file_here_is_said_to_be_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    write(&ours, &[fused_qkv(false)], None);
    // A map file of the preset's name in the working directory: `--map vllm` is the preset,
    // with a warning; `--map ./vllm` the file.
    std::fs::write(
        dir.path().join("vllm"),
        "[[rule]]\nfrom = \"nothing.{X}\"\nto = \"model.{X}\"\noptional = true\n",
    )
    .unwrap();
    let reference = root().join(REF);
    let run = |map: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_divergence"))
            .args(["diff", "ours.npz", reference.to_str().unwrap()])
            .args(["--map", map, "--format", "json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (report["warnings"].to_string(), report)
    };
    let (warnings, report) = run("vllm");
    assert!(
        warnings.contains("--map vllm: the preset vllm, not the file of that name here (`--map ./vllm` reads the file)"),
        "{warnings}"
    );
    assert_eq!(
        row(&report, "model.layers.0.self_attn.q_proj")["status"],
        "ok"
    );
    let (warnings, _) = run("./vllm");
    assert!(!warnings.contains("not the file"), "{warnings}");
    // Without such a file, nothing is said; nor for a directory of that name (a checkout of
    // the engine: a review).
    std::fs::remove_file(dir.path().join("vllm")).unwrap();
    let (warnings, _) = run("vllm");
    assert!(!warnings.contains("not the file"), "{warnings}");
    std::fs::create_dir(dir.path().join("vllm")).unwrap();
    let (warnings, _) = run("vllm");
    assert!(!warnings.contains("not the file"), "{warnings}");
}
