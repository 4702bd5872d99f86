//! Decode steps stored stacked (`x@steps`, docs/dump-format.md "Decode steps"): written by
//! `DumpWriter::stack_steps`, read as the per-step tensors `x@1` .. `x@N` with the names, order,
//! values, dtypes and errors of the per-step layout.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use divergence_dump::{Dump, DumpWriter, Meta, TensorData};

/// Step s of probe `base`: distinct values per probe and step.
fn values(base: usize, step: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (base * 1000 + step * 10 + i) as f32 * 0.5 - 7.0)
        .collect()
}

const PROBES: [(&str, [usize; 3]); 3] = [
    ("model.embed_tokens", [1, 1, 4]),
    ("model.layers.0.self_attn.k_norm", [1, 2, 3]),
    ("lm_head", [1, 1, 5]),
];

/// A decode dump of 3 probes: the prefill (2 tokens) and `steps` decode steps, written stacked
/// or per step; `lm_head` in bf16.
fn write_decode(path: &Path, steps: usize, stacked: bool) {
    write_decode_shifted(path, steps, stacked, 0.0);
}

/// [`write_decode`] with `shift` added to every value.
fn write_decode_shifted(path: &Path, steps: usize, stacked: bool, shift: f32) {
    let mut w = DumpWriter::create(path).unwrap();
    if stacked {
        w.stack_steps();
    }
    for step in 0..=steps {
        for (k, (name, shape)) in PROBES.iter().enumerate() {
            let mut shape = shape.to_vec();
            if step == 0 {
                shape[1] = 2;
            }
            let n: usize = shape.iter().product();
            let v: Vec<f32> = values(k, step, n).iter().map(|x| x + shift).collect();
            let name = if step == 0 {
                name.to_string()
            } else {
                format!("{name}@{step}")
            };
            if name.starts_with("lm_head") {
                let b: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
                w.add(&name, &shape, TensorData::BF16(&b)).unwrap();
            } else {
                w.add(&name, &shape, TensorData::F32(&v)).unwrap();
            }
        }
    }
    let mut meta = Meta::default();
    meta.extra
        .insert("decode_steps".into(), serde_json::json!(steps));
    w.finish(meta).unwrap();
}

fn per_step_names(steps: usize) -> Vec<String> {
    let mut want: Vec<String> = PROBES.iter().map(|(n, _)| n.to_string()).collect();
    for s in 1..=steps {
        want.extend(PROBES.iter().map(|(n, _)| format!("{n}@{s}")));
    }
    want
}

#[test]
fn stacked_steps_read_as_the_per_step_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["npz", "safetensors"] {
        let stacked = dir.path().join(format!("stacked.{ext}"));
        let per_step = dir.path().join(format!("per_step.{ext}"));
        write_decode(&stacked, 3, true);
        write_decode(&per_step, 3, false);
        let (a, b) = (
            Dump::open(&stacked).unwrap(),
            Dump::open(&per_step).unwrap(),
        );
        let want = per_step_names(3);
        // The stacked file holds 3 + 3 arrays: the prefill's and one `@steps` per probe.
        if ext == "npz" {
            let z = zip::ZipArchive::new(std::fs::File::open(&stacked).unwrap()).unwrap();
            assert_eq!(z.len(), 7, "{ext}: members, __meta__ included");
        }
        if ext == "npz" {
            assert_eq!(common::strs(a.names()), want.as_slice(), "{ext}");
            assert_eq!(common::strs(b.names()), want.as_slice(), "{ext}");
        } else {
            // safetensors lists tensors in data order (its writer's, not ours): the same set.
            let set = |d: &Dump| {
                let mut n: Vec<String> = d.names().iter().map(|n| n.to_string()).collect();
                n.sort();
                n
            };
            let mut w = want.clone();
            w.sort();
            assert_eq!((set(&a), set(&b)), (w.clone(), w), "{ext}");
        }
        assert_eq!(
            common::strs(&a.meta().unwrap().order),
            want,
            "{ext}: the metadata's order unfolded"
        );
        assert_eq!(common::strs(&b.meta().unwrap().order), want, "{ext}");
        for name in &want {
            let (x, y) = (a.read(name).unwrap(), b.read(name).unwrap());
            assert_eq!(x.shape, y.shape, "{ext} {name}");
            assert_eq!(x.values.to_f64_vec(), y.values.to_f64_vec(), "{ext} {name}");
            assert_eq!(a.dtype(name), b.dtype(name), "{ext} {name}");
            assert_eq!(
                a.original_dtype(name),
                b.original_dtype(name),
                "{ext} {name}"
            );
            assert_eq!(a.is_zero_copy(name), b.is_zero_copy(name), "{ext} {name}");
            let v = a.view(name).unwrap();
            assert_eq!(v.shape, x.shape, "{ext} {name}");
            // Streaming a step gives the same values.
            let mut c = a.chunks(name, 2).unwrap();
            let mut streamed = Vec::new();
            while let Some(p) = c.next_piece().unwrap() {
                streamed.extend(p.to_f64_vec());
            }
            assert_eq!(streamed, x.values.to_f64_vec(), "{ext} {name}");
        }
        assert_eq!(a.original_dtype("lm_head@2").as_deref(), Some("bfloat16"));
        assert_eq!(
            a.shape("model.layers.0.self_attn.k_norm@3"),
            Some(&[1, 2, 3][..])
        );
        assert!(!a.contains("lm_head@steps") && !a.contains("lm_head@4"));
    }
}

/// A step's name is allocated once: the metadata order unfolded shares the dump's own name
/// where it lists it at the same place (a 256-step dump has ~150,000 names), and a stacked
/// order in another order still unfolds to the right names.
#[test]
fn the_unfolded_order_shares_the_dump_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stacked.npz");
    write_decode(&path, 3, true);
    let d = Dump::open(&path).unwrap();
    let order = &d.meta().unwrap().order;
    assert_eq!(&order[..], &d.names()[..]);
    let steps = order.iter().filter(|n| n.contains('@')).count();
    assert!(steps > 0);
    for (o, n) in order.iter().zip(d.names()) {
        assert!(std::sync::Arc::ptr_eq(o, n), "{o}: a second allocation");
    }
}

#[test]
fn numpy_reads_a_stacked_member_with_the_step_first() {
    // The array a numpy user gets: [steps] + the step's shape, step s at index s - 1.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npz");
    write_decode(&path, 4, true);
    let mut z = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut member = z
        .by_name("model.layers.0.self_attn.k_norm@steps.npy")
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut member, &mut bytes).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..bytes.len().min(128)]).to_string();
    assert!(header.contains("'shape': (4, 1, 2, 3)"), "{header}");
    let data_at = bytes.len() - 4 * 4 * 6;
    let step3: Vec<f32> = bytes[data_at + 2 * 24..data_at + 3 * 24]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(step3, values(1, 3, 6));
}

#[test]
fn a_writer_refuses_steps_out_of_order_or_of_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npz");
    let mut w = DumpWriter::create(&path).unwrap();
    w.stack_steps();
    let v = [1.0f32; 4];
    w.add("x", &[1, 2, 2], TensorData::F32(&v)).unwrap();
    let e = w
        .add("x@2", &[1, 1, 2], TensorData::F32(&v[..2]))
        .unwrap_err();
    assert!(e.to_string().contains("must come in order"), "{e}");
    w.add("x@1", &[1, 1, 2], TensorData::F32(&v[..2])).unwrap();
    let e = w.add("x@2", &[1, 1, 4], TensorData::F32(&v)).unwrap_err();
    assert!(e.to_string().contains("one shape and dtype"), "{e}");
    let e = w
        .add("x@steps", &[1, 1, 2], TensorData::F32(&v[..2]))
        .unwrap_err();
    assert!(e.to_string().contains("x@steps"), "{e}");
}

fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    common::npy_with(&dict, data)
}

/// An npz of `(member name, npy bytes, deflated?)`.
fn npz(dir: &Path, name: &str, members: &[(&str, Vec<u8>, bool)]) -> PathBuf {
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (m, bytes, deflated) in members {
        let method = if *deflated {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        z.start_file(format!("{m}.npy"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    path
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn stacked_members_that_cannot_be_sliced_are_unreadable_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, bool, &str); 4] = [
        (
            "deflated",
            npy("<f4", false, "(3, 2)", &f32_bytes(6)),
            true,
            "must be stored uncompressed",
        ),
        (
            "fortran",
            npy("<f4", true, "(3, 2)", &f32_bytes(6)),
            false,
            "must be stored in c order",
        ),
        (
            "scalar",
            npy("<f4", false, "()", &f32_bytes(1)),
            false,
            "leading step axis",
        ),
        // Data shorter than its header says: the member's error, as for any tensor.
        (
            "short",
            npy("<f4", false, "(3, 2)", &f32_bytes(5)),
            false,
            "data",
        ),
    ];
    for (case, bytes, deflated, why) in cases {
        let path = npz(
            dir.path(),
            &format!("{case}.npz"),
            &[
                ("a", npy("<f4", false, "(2,)", &f32_bytes(2)), false),
                ("x@steps", bytes, deflated),
            ],
        );
        let d = Dump::open(&path).unwrap();
        assert_eq!(
            d.read("a").unwrap().values.to_f64_vec(),
            vec![0.0, 1.0],
            "{case}"
        );
        assert_eq!(common::strs(d.names()), ["a", "x@steps"], "{case}");
        let e = d.read("x@steps").unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{case}: {e}");
        assert!(e.to_lowercase().contains(why), "{case}: {e}");
        assert!(e.contains("x@steps.npy"), "{case}: {e}");
        assert!(!e.contains('\n'), "{case}: {e}");
    }
}

#[test]
fn a_member_of_one_step_in_fortran_order_reads_in_its_order() {
    // Step 1 of `x@steps` (shape 1 x 2 x 3) holds v[i][j] = 10 i + j, stored in Fortran order
    // in one file (np.save of an F-contiguous array: i fastest) and in C order in the other.
    // Both read as the same C-order values (a bad-input hunt found the Fortran one read as
    // C order, so that `diff` called equal steps diverged and scrambled ones equal).
    let dir = tempfile::tempdir().unwrap();
    let c: Vec<f32> = (0..2)
        .flat_map(|i| (0..3).map(move |j| (10 * i + j) as f32))
        .collect();
    let f: Vec<f32> = (0..3)
        .flat_map(|j| (0..2).map(move |i| (10 * i + j) as f32))
        .collect();
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let open = |name: &str, fortran: bool, v: &[f32]| {
        let m = npy("<f4", fortran, "(1, 2, 3)", &bytes(v));
        Dump::open(&npz(dir.path(), name, &[("x@steps", m, false)])).unwrap()
    };
    let (fd, cd) = (open("f.npz", true, &f), open("c.npz", false, &c));
    let want: Vec<f64> = c.iter().map(|&x| f64::from(x)).collect();
    for (label, d) in [("fortran", &fd), ("c", &cd)] {
        assert_eq!(common::strs(d.names()), ["x@1"], "{label}");
        let t = d.read("x@1").unwrap();
        assert_eq!(t.shape, [2, 3], "{label}");
        assert_eq!(t.values.to_f64_vec(), want, "{label}");
    }
    // (the Fortran step is not zero-copy: read through the reordering path)
    assert!(!fd.is_zero_copy("x@1") && cd.is_zero_copy("x@1"));
}

#[test]
fn a_name_given_stacked_and_per_step_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = npz(
        dir.path(),
        "dup.npz",
        &[
            ("x@steps", npy("<f4", false, "(2, 1)", &f32_bytes(2)), false),
            ("x@2", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
        ],
    );
    // The message says which entries hold the name: a step of a member is not the member's
    // own name (a bad-input hunt found `x@1` said twice where `x@steps` was given twice).
    let e = Dump::open(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: duplicate entry 'x@2.npy' (tensor name 'x@2' appears twice: step 2 of entry 'x@steps.npy' and entry 'x@2.npy')",
            path.display()
        )
    );
    // One member given twice, with and without `.npy`.
    let path = dir.path().join("twice.npz");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for m in ["x@steps.npy", "x@steps"] {
        z.start_file(
            m,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(&npy("<f4", false, "(2, 1)", &f32_bytes(2)))
            .unwrap();
    }
    z.finish().unwrap();
    let e = Dump::open(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: duplicate entry 'x@steps' (tensor name 'x@1' appears twice: step 1 of entry 'x@steps.npy' and step 1 of entry 'x@steps')",
            path.display()
        )
    );
}

#[test]
fn stacked_names_in_the_metadata_alone_unfold_nothing() {
    // A 15 KB metadata document listing a thousand `@steps` names the file does not hold, with
    // a million decode steps: opening stays instant and the order is kept as listed.
    let dir = tempfile::tempdir().unwrap();
    let mut order = vec!["a".to_string()];
    order.extend((0..1000).map(|i| format!("m{i}@steps")));
    let meta = serde_json::json!({"format": "divergence-dump/1", "order": order, "decode_steps": 1u64 << 20})
        .to_string();
    let path = npz(
        dir.path(),
        "meta.npz",
        &[
            ("a", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ("x@steps", npy("<f4", false, "(2, 1)", &f32_bytes(2)), false),
            (
                "__meta__",
                npy("|u1", false, &format!("({},)", meta.len()), meta.as_bytes()),
                false,
            ),
        ],
    );
    let t = std::time::Instant::now();
    let d = Dump::open(&path).unwrap();
    assert!(t.elapsed().as_secs() < 5);
    assert_eq!(common::strs(&d.meta().unwrap().order), order);
    assert_eq!(common::strs(d.names()), ["a", "x@1", "x@2"]);
}

#[test]
fn a_single_npy_is_one_tensor_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logits@steps.npy");
    std::fs::write(&path, npy("<f4", false, "(2, 3)", &f32_bytes(6))).unwrap();
    let d = Dump::open(&path).unwrap();
    assert_eq!(common::strs(d.names()), ["logits@steps"]);
    assert_eq!(d.shape("logits@steps"), Some(&[2, 3][..]));
}

#[test]
fn a_mix_of_layouts_keeps_the_execution_order() {
    // Stacked and per-step members in one file, the metadata listing them as written.
    let dir = tempfile::tempdir().unwrap();
    let meta = serde_json::json!({
        "format": "divergence-dump/1",
        "order": ["a", "b", "a@steps", "b@1", "b@2"],
        "dtypes": {"a": "float32", "b": "float32", "a@steps": "bfloat16", "b@1": "float32", "b@2": "float32"},
        "decode_steps": 2,
    })
    .to_string();
    let mut meta_npy = npy("|u1", false, &format!("({},)", meta.len()), meta.as_bytes());
    meta_npy.shrink_to_fit();
    let path = npz(
        dir.path(),
        "mix.npz",
        &[
            ("a", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ("b", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ("a@steps", npy("<f4", false, "(2, 1)", &f32_bytes(2)), false),
            ("b@1", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ("b@2", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ("__meta__", meta_npy, false),
        ],
    );
    let d = Dump::open(&path).unwrap();
    assert_eq!(
        common::strs(&d.meta().unwrap().order),
        ["a", "b", "a@1", "b@1", "a@2", "b@2"],
        "step-major, each step in the order the names are listed"
    );
    assert_eq!(d.original_dtype("a@2").as_deref(), Some("bfloat16"));
    assert_eq!(d.read("a@2").unwrap().values.to_f64_vec(), vec![1.0]);
}

/// A member's dtype, asked once (`diff` compares a member's steps in one call), is what every
/// one of its steps answers; where the metadata lists a step on its own (and not its member),
/// the member has none and each step is asked.
#[test]
fn a_members_dtype_is_each_of_its_steps_dtype() {
    let dir = tempfile::tempdir().unwrap();
    // A dump of these f32 members (name, shape, element count) with these metadata dtypes.
    let open = |file: &str, members: &[(&str, &str, usize)], dtypes: &serde_json::Value| {
        let meta = serde_json::json!({"format": "divergence-dump/1", "dtypes": dtypes}).to_string();
        let mut entries: Vec<(&str, Vec<u8>, bool)> = members
            .iter()
            .map(|&(name, shape, n)| (name, npy("<f4", false, shape, &f32_bytes(n)), false))
            .collect();
        let meta_npy = npy("|u1", false, &format!("({},)", meta.len()), meta.as_bytes());
        entries.push(("__meta__", meta_npy, false));
        Dump::open(&npz(dir.path(), file, &entries)).unwrap()
    };
    for (case, dtypes, per_step) in [
        ("none listed", serde_json::json!({}), false),
        ("a step listed", serde_json::json!({"x@2": "float16"}), true),
        (
            "the member listed",
            serde_json::json!({"x@steps": "bfloat16", "x@2": "float16"}),
            false,
        ),
        // A claim of more precision than the bytes hold is not used, step or member.
        (
            "a dishonest claim",
            serde_json::json!({"x@steps": "float64"}),
            false,
        ),
    ] {
        let members = [
            ("a", "(1,)", 1),
            ("x@steps", "(3, 1)", 3),
            ("y@steps", "(3, 1)", 3),
        ];
        let d = open("d.npz", &members, &dtypes);
        let (mut steps, mut asked_per_step) = (0, 0);
        for i in 0..d.names().len() {
            let Some((m, _)) = d.step_slot_at(i) else {
                continue;
            };
            steps += 1;
            match d.member_original_dtype_str(m) {
                Some(member) => assert_eq!(member, d.original_dtype_str_at(i), "{case}: {i}"),
                None => {
                    asked_per_step += 1;
                    assert!(d.names()[i].starts_with("x@"), "{case}: {}", d.names()[i]);
                }
            }
        }
        assert_eq!(steps, 6, "{case}");
        assert_eq!(asked_per_step, if per_step { 3 } else { 0 }, "{case}");
        assert_eq!(
            d.member_original_dtype_str(2),
            None,
            "{case}: no third member"
        );
    }
    // What the steps answer in those cases (the member's answer equals each step's, above).
    let answers = |dtypes: serde_json::Value| {
        let d = open("e.npz", &[("x@steps", "(3, 1)", 3)], &dtypes);
        (1..=3)
            .map(|s| d.original_dtype(&format!("x@{s}")).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        answers(serde_json::json!({"x@2": "float16"})),
        ["float32", "float16", "float32"]
    );
    assert_eq!(
        answers(serde_json::json!({"x@steps": "bfloat16", "x@2": "float16"})),
        ["bfloat16"; 3]
    );
    assert_eq!(
        answers(serde_json::json!({"x@steps": "float64"})),
        ["float32"; 3]
    );
}

/// Everything a reader can ask of `a`, asked of `b` too: the same answers (`label` says which
/// pair).
fn assert_reads_alike(label: &str, a: &Dump, b: &Dump) {
    assert_eq!(a.names(), b.names(), "{label}");
    assert_eq!(a.format(), b.format(), "{label}");
    assert_eq!(a.order_resorted(), b.order_resorted(), "{label}");
    let meta = |d: &Dump| d.meta().map(|m| (m.order.clone(), m.dtypes.clone()));
    assert_eq!(meta(a), meta(b), "{label}: metadata");
    let read = |d: &Dump, n: &str| {
        d.read(n)
            .map(|t| common::bits(&t.values))
            .map_err(|e| e.to_string())
    };
    for (i, name) in a.names().iter().enumerate() {
        assert_eq!(a.position(name), Some(i), "{label} {name}");
        assert_eq!(b.position(name), Some(i), "{label} {name}");
        assert_eq!(a.shape(name), b.shape(name), "{label} {name}");
        assert_eq!(a.dtype(name), b.dtype(name), "{label} {name}");
        assert_eq!(
            a.original_dtype(name),
            b.original_dtype(name),
            "{label} {name}"
        );
        assert_eq!(a.is_zero_copy(name), b.is_zero_copy(name), "{label} {name}");
        assert_eq!(a.step_slot_at(i), b.step_slot_at(i), "{label} {name}");
        assert_eq!(read(a, name), read(b, name), "{label} {name}");
    }
}

/// `Dump::open_pair` opens each file as `Dump::open` does; two files that unfold into the same
/// names share them (one allocation of a decode dump's ~150,000 step names, not two), and two
/// that do not each have their own.
#[test]
fn a_pair_opens_as_each_file_alone_and_shares_the_same_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    write_decode_shifted(&p("a.npz"), 3, true, 0.0);
    write_decode_shifted(&p("b.npz"), 3, true, 0.25);
    write_decode_shifted(&p("c.npz"), 3, false, 0.5);
    write_decode_shifted(&p("d.npz"), 2, true, 0.5);
    write_decode_shifted(&p("e.safetensors"), 3, true, 0.5);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/ref");
    let f = |n: &str| fixtures.join(n);
    // (first, second, whether they have the same names)
    let pairs = [
        (p("a.npz"), p("b.npz"), true),
        (p("a.npz"), p("a.npz"), true),
        (p("a.npz"), p("c.npz"), false),
        (p("a.npz"), p("d.npz"), false),
        (p("b.npz"), p("e.safetensors"), false),
        (
            f("tiny-qwen3.f32.decode.npz"),
            f("tiny-qwen3.bf16.decode.npz"),
            true,
        ),
        (
            f("tiny-qwen3.f32.eager.npz"),
            f("tiny-qwen3.bf16.eager.npz"),
            true,
        ),
        (
            f("tiny-qwen3.f32.eager.npz"),
            f("tiny-qwen3.f32.decode.npz"),
            false,
        ),
    ];
    for (x, y, shared) in pairs {
        let label = format!("{} {}", x.display(), y.display());
        let (a, b) = Dump::open_pair(&x, &y);
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_reads_alike(&label, &a, &Dump::open(&x).unwrap());
        assert_reads_alike(&label, &b, &Dump::open(&y).unwrap());
        assert_eq!(
            std::ptr::eq(a.names(), b.names()),
            shared,
            "{label}: names shared"
        );
    }
}

/// A file of a pair that cannot be opened fails as it does alone, and does not keep the other
/// from opening; two files of one duplicate name each say so with their own path.
#[test]
fn a_pair_reports_each_files_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npz");
    write_decode(&good, 2, true);
    let missing = dir.path().join("missing.npz");
    let (a, b) = Dump::open_pair(&good, &missing);
    assert_reads_alike("good", &a.unwrap(), &Dump::open(&good).unwrap());
    assert_eq!(
        b.unwrap_err().to_string(),
        Dump::open(&missing).unwrap_err().to_string()
    );
    let (a, b) = Dump::open_pair(&missing, &good);
    assert!(a.is_err());
    assert_reads_alike("good", &b.unwrap(), &Dump::open(&good).unwrap());
    let dup = |name: &str, shift: usize| {
        npz(
            dir.path(),
            name,
            &[
                (
                    "x@steps",
                    npy("<f4", false, "(2, 1)", &f32_bytes(2 + shift)[..8]),
                    false,
                ),
                ("x@2", npy("<f4", false, "(1,)", &f32_bytes(1)), false),
            ],
        )
    };
    let (x, y) = (dup("dup1.npz", 0), dup("dup2.npz", 1));
    let (a, b) = Dump::open_pair(&x, &y);
    for (path, got) in [(&x, a), (&y, b)] {
        let e = got.unwrap_err().to_string();
        assert_eq!(e, Dump::open(path).unwrap_err().to_string());
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains("x@2"),
            "{e}"
        );
    }
}
