//! End-to-end tests of the `divergence` binary: every output format, every exit code, and the
//! bad-input suite. Runs the real binary on the committed transformers fixtures (made by
//! scripts/make_fixtures.py) and on small dumps written here with `divergence_dump`.
//!
//! Snapshots hold stdout, stderr and the exit code together; temp paths are redacted.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::{deflated_copy, root};
use divergence_dump::{DumpWriter, Meta, TensorData};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout, stderr and the exit code in one string, for snapshots.
    fn transcript(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

fn divergence(args: &[&str]) -> Run {
    divergence_with_no_color(args, None)
}

/// `divergence ARGS...` with NO_COLOR set to this value (`None`: unset).
fn divergence_with_no_color(args: &[&str], no_color: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_divergence"));
    cmd.args(args).current_dir(root()).env_remove("NO_COLOR");
    if let Some(value) = no_color {
        cmd.env("NO_COLOR", value);
    }
    let out = cmd.output().expect("run divergence");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// `divergence diff OURS REF ARGS...` on two files of a test's temp dir.
fn diff_files(ours: &Path, reference: &Path, args: &[&str]) -> Run {
    let (ours, reference) = (ours.to_str().unwrap(), reference.to_str().unwrap());
    divergence(&[&["diff", ours, reference][..], args].concat())
}

fn redact(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "[TMP]")
}

const DEMO_OURS: &str = "fixtures/demo/ours.npz";
const DEMO_REF: &str = "fixtures/demo/ref.npz";
const F32_EAGER: &str = "fixtures/ref/tiny-qwen3.f32.eager.npz";

// ---------------------------------------------------------------- formats on the demo

#[test]
fn demo_table_points_at_embed_tokens() {
    let run = divergence(&[
        "diff", DEMO_OURS, DEMO_REF, "--format", "table", "--color", "never",
    ]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains(">> FIRST DIVERGENCE: model.embed_tokens"),
        "{}",
        run.stdout
    );
    insta::assert_snapshot!("demo_table", run.transcript());
}

#[test]
fn demo_json_names_the_first_divergence() {
    let run = divergence(&["diff", DEMO_OURS, DEMO_REF, "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let report = run.json();
    assert_eq!(report["schema"], "divergence-report/2");
    assert_eq!(report["first_divergence"]["name"], "model.embed_tokens");
    assert_eq!(report["first_divergence"]["index"], 0);
    // The embeddings are a source: the error is born where it crosses the line.
    assert_eq!(report["origin"]["name"], "model.embed_tokens");
    assert_eq!(report["origin"]["chain"][0]["role"], "born");
    assert_eq!(report["ops"][0]["local_growth"], report["origin"]["growth"]);
    let ops = report["ops"].as_array().expect("ops");
    assert_eq!(ops.len(), 81);
    let embed = &ops[0];
    assert_eq!(embed["name"], "model.embed_tokens");
    assert_eq!(embed["status"], "diverged");
    assert_eq!(embed["shape"], serde_json::json!([1, 16, 64]));
    // ours = ref / sqrt(64): the relative L2 error is exactly 1 - 1/8 (to f32 rounding).
    let rel = embed["rel_l2_err"].as_f64().expect("rel_l2_err");
    assert!((rel - 0.875).abs() < 1e-6, "rel_l2_err {rel}");
    let ratio = embed["ours_l2"].as_f64().unwrap() / embed["ref_l2"].as_f64().unwrap();
    assert!((ratio - 0.125).abs() < 1e-6, "norm ratio {ratio}");
    for key in [
        "max_abs_err",
        "cosine",
        "mean_abs_err",
        "max_rel_err",
        "frac_outside_tol",
    ] {
        assert!(embed[key].is_number(), "{key} missing: {embed}");
    }
    // The cosine is 1: a pure scale bug keeps the direction.
    assert!((embed["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn demo_markdown() {
    let run = divergence(&["diff", DEMO_OURS, DEMO_REF, "--format", "markdown"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("model.embed_tokens"));
    insta::assert_snapshot!("demo_markdown", run.transcript());
}

#[test]
fn auto_format_is_json_when_piped() {
    let run = divergence(&["diff", DEMO_OURS, DEMO_REF]);
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["first_divergence"]["name"], "model.embed_tokens");
}

#[test]
fn filters_layer_and_grep() {
    let run = divergence(&[
        "diff", DEMO_OURS, DEMO_REF, "--format", "table", "--color", "never", "--all", "--layer",
        "2", "--grep", "k_",
    ]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!("filters_layer_grep", run.transcript());
}

#[test]
fn json_and_markdown_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let md = dir.path().join("summary.md");
    let run = divergence(&[
        "diff",
        DEMO_OURS,
        DEMO_REF,
        "--format",
        "table",
        "--color",
        "never",
        "--json-out",
        json.to_str().unwrap(),
        "--markdown-out",
        md.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["first_divergence"]["name"], "model.embed_tokens");
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("model.embed_tokens"));
}

#[test]
fn color_only_when_asked_or_on_a_tty() {
    let plain = divergence(&["diff", DEMO_OURS, DEMO_REF, "--format", "table"]);
    assert!(
        !plain.stdout.contains('\x1b'),
        "piped output must not be colored"
    );
    let colored = divergence(&[
        "diff", DEMO_OURS, DEMO_REF, "--format", "table", "--color", "always",
    ]);
    assert!(colored.stdout.contains('\x1b'));
    // --color always wins over NO_COLOR, for both commands (one shared set of output flags).
    for args in [
        &[
            "diff", DEMO_OURS, DEMO_REF, "--format", "table", "--color", "always",
        ][..],
        &[
            "inspect",
            "fixtures/tiny-qwen3",
            "--format",
            "table",
            "--color",
            "always",
        ][..],
    ] {
        let run = divergence_with_no_color(args, Some("1"));
        assert!(run.stdout.contains('\x1b'), "{args:?}");
        let never = divergence_with_no_color(&[args, &["--color", "never"]].concat(), Some(""));
        assert!(!never.stdout.contains('\x1b'), "{args:?}");
    }
}

#[test]
fn bad_flag_values_are_one_line_usage_errors() {
    // Numeric flags of both commands are checked by the same value parsers; a bad --grep regex
    // is an error, not a silent substring match. One line naming the flag, exit 2.
    let mut transcripts = String::new();
    for args in [
        &["diff", DEMO_OURS, DEMO_REF, "--rtol", "-1"][..],
        &["diff", DEMO_OURS, DEMO_REF, "--atol", "nan"][..],
        &["diff", DEMO_OURS, DEMO_REF, "--atol", "1e-3x"][..],
        &["diff", DEMO_OURS, DEMO_REF, "--grep", "*norm"][..],
        &["diff", DEMO_OURS, DEMO_REF, "--grep", "["][..],
        &["inspect", "fixtures/tiny-qwen3", "--max-abs", "0"][..],
        &["inspect", "fixtures/tiny-qwen3", "--gain-threshold=-1"][..],
        &["inspect", "fixtures/tiny-qwen3", "--gain-threshold", "inf"][..],
        // Negative numbers reach the value parsers (clap's "unexpected argument '-1'; tip:
        // use '-- -1'" did not work: a newcomer's run).
        &["diff", DEMO_OURS, DEMO_REF, "--layer", "-1"][..],
        &["diff", DEMO_OURS, DEMO_REF, "--context", "x"][..],
        &[
            "diff",
            DEMO_OURS,
            DEMO_REF,
            "--truth",
            "fixtures/ref/tiny-qwen3.f64.eager.npz",
            "--noise-ratio",
            "-1",
        ][..],
        &[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2",
            "--max-memory",
            "-1",
        ][..],
        &[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2",
            "--decode",
            "-3",
        ][..],
    ] {
        let run = divergence(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.transcript());
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: --"),
            "{args:?}: {}",
            run.stderr
        );
        transcripts.push_str(&format!(
            "$ divergence {}\n{}",
            args.join(" "),
            run.transcript()
        ));
    }
    insta::assert_snapshot!("bad_flag_values", transcripts);
}

#[test]
fn usage_errors_are_one_line() {
    // clap's own errors (conflicts, missing or unexpected arguments, a value outside a list)
    // keep only their first paragraph, on one line, and say where help is; --help and
    // --version are not errors.
    for (args, says) in [
        (
            &["diff", DEMO_OURS, DEMO_REF, "--exact", "--rtol", "1"][..],
            "'--exact' cannot be used with '--rtol <RTOL>'",
        ),
        (&["diff"][..], "not provided: <OURS> <REF>"),
        (
            &["diff", DEMO_OURS, DEMO_REF, "--format", "xml"][..],
            "'xml'",
        ),
        (&["frobnicate"][..], "'frobnicate'"),
        // clap's tips are kept
        (
            &["diff", DEMO_OURS, DEMO_REF, "--jsn-out", "x"][..],
            "'--jsn-out' found; tip: a similar argument exists: '--json-out'",
        ),
        (
            &["dif", DEMO_OURS][..],
            "'dif'; tip: a similar subcommand exists: 'diff'",
        ),
        // A terminal escape in a value or an argument is escaped, not stripped with clap's
        // styles (it read "invalid value 'x'": a bad-input hunt).
        (
            &["diff", DEMO_OURS, DEMO_REF, "--format", "\u{1b}[31mx"][..],
            "invalid value '\\u{1b}[31mx' for '--format <FORMAT>' [possible values: auto, table, json, markdown, html]",
        ),
        (
            &["diff", DEMO_OURS, DEMO_REF, "--\u{1b}[31mx"][..],
            "unexpected argument '--\\u{1b}[31mx' found",
        ),
        (&["\u{1b}[31mfoo"][..], "unrecognized subcommand '\\u{1b}[31mfoo'"),
        (
            &["diff", DEMO_OURS, DEMO_REF, "--format", "js\u{7}on"][..],
            "invalid value 'js\\u{7}on' for '--format <FORMAT>' [possible values: auto, table, json, markdown, html]; tip: a similar value exists: 'json'",
        ),
    ] {
        let run = divergence(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.transcript());
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.ends_with("(see --help)\n"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for args in [&["--help"][..], &["diff", "--help"][..], &["--version"][..]] {
        let run = divergence(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.transcript());
        assert!(run.stdout.lines().count() >= 1, "{args:?}");
    }
    // A flag value with a newline in it: still one line.
    let run = divergence(&["diff", DEMO_OURS, DEMO_REF, "--grep", "a\n("]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    // `divergence` alone: the help with its commands, as a usage error.
    let run = divergence(&[]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr.contains("Commands:") && run.stderr.contains("inspect"),
        "{}",
        run.stderr
    );
}

#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_stderr_keeps_the_exit_code() {
    // `eprintln!` panics when stderr cannot be written (exit 101): every message goes through
    // `exit::say`, which ignores that, so the exit code still says what happened.
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(stderr) = full() else { return };
    let status = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(["diff", "no-such-file.npz", DEMO_REF])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .expect("run divergence");
    assert_eq!(status.code(), Some(2));
    let status = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(["diff"])
        .stderr(full().expect("/dev/full"))
        .status()
        .expect("run divergence");
    assert_eq!(status.code(), Some(2));
}
/// An output file that is the standard output (where the report is printed) or `-` is refused
/// before anything is compared; a failed write names its flag (a bad-input hunt: two JSON
/// documents on one pipe, a file named `-`, "/dev/full: cannot write").
#[cfg(target_os = "linux")]
#[test]
fn outputs_are_files_of_their_own() {
    for flag in ["--json-out", "--markdown-out", "--html-out", "--plot"] {
        // `output()` reads stdout from a pipe: /dev/stdout is that pipe.
        for path in ["/dev/stdout", "/proc/self/fd/1", "-"] {
            let run = divergence(&["diff", DEMO_OURS, DEMO_REF, flag, path]);
            assert_eq!(run.code, 2, "{flag} {path}: {}", run.transcript());
            assert!(run.stdout.is_empty(), "{flag} {path}: {}", run.stdout);
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(
                run.stderr.contains(&format!("{flag} {path}: "))
                    && run.stderr.contains("standard output"),
                "{flag} {path}: {}",
                run.stderr
            );
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .is_ok()
        {
            let run = divergence(&["diff", DEMO_OURS, DEMO_REF, flag, "/dev/full"]);
            assert_eq!(run.code, 2, "{}", run.transcript());
            assert!(
                run.stderr
                    .contains(&format!("{flag} /dev/full: cannot write")),
                "{}",
                run.stderr
            );
        }
    }
    // Standard output elsewhere (a file), /dev/stdout is that file: refused too, as one
    // file for two outputs.
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("out.txt")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(["diff", DEMO_OURS, DEMO_REF, "--json-out", "/dev/stdout"])
        .current_dir(root())
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .expect("run divergence");
    assert_eq!(status.code(), Some(2));
    assert_eq!(std::fs::read(dir.path().join("out.txt")).unwrap().len(), 0);
    // Standard output to /dev/null, and an output there too: nothing is lost.
    let status = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(["diff", DEMO_OURS, DEMO_REF, "--json-out", "/dev/null"])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run divergence");
    assert_eq!(status.code(), Some(1));
}

/// An output that is a named pipe: with no process reading it, an error naming the flag and the
/// pipe after a few seconds' wait, never a wait without end (it hung, after the comparison); a
/// reader that comes after `divergence` started, and one slower than the writer, get the
/// whole report.
#[test]
fn an_output_fifo_without_a_reader_is_an_error_not_a_wait() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("report.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("no mkfifo here: skipped");
        return;
    }
    let path = fifo.to_str().unwrap();
    let spawn = |flag: &str| {
        Command::new(env!("CARGO_BIN_EXE_divergence"))
            .args(["diff", DEMO_OURS, DEMO_REF, flag, path])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A regression that waits for a reader fails here instead of hanging.
    let finish = |mut child: std::process::Child, flag: &str| {
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("{flag}: blocked for 30 s on a fifo no process reads");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    // (--markdown-out, --html-out and --plot open their files as --json-out does)
    for flag in ["--json-out", "--suggest-map"] {
        let (code, stderr) = finish(spawn(flag), flag);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: {flag} {path}: a named pipe (fifo) that no process opened for reading \
                 in 5 s: start its reader first (`cat {path} &`); nothing was written"
            )),
            "{stderr}"
        );
    }
    // A reader that opens the pipe after divergence started (here ~1 s after), then reads
    // slower than it writes (the report, ~110 KB, is more than a pipe holds): all of it.
    let child = spawn("--json-out");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let mut f = std::fs::File::open(fifo).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut all).unwrap();
            all
        })
    };
    let (code, stderr) = finish(child, "--json-out");
    assert_eq!(code, Some(1), "{stderr}");
    let got: Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(got["first_divergence"]["name"], "model.embed_tokens");
}

#[test]
fn a_layer_the_dumps_lack_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    let tensors: &[(&str, &[usize], &[f32])] = &[
        ("model.embed_tokens", &[2], &[1.0, 2.0]),
        ("model.layers.0.mlp", &[2], &[1.0, 2.0]),
        ("model.layers.1.mlp", &[2], &[1.0, 2.0]),
    ];
    write_dump(&reference, tensors, None);
    write_dump(&ours, tensors, None);
    let run = diff_files(&ours, &reference, &["--format", "table", "--layer", "7"]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "error: --layer 7: the dumps have layers 0-1\n");
    let ok = diff_files(&ours, &reference, &["--format", "table", "--layer", "1"]);
    assert_eq!(ok.code, 0, "{}", ok.transcript());
    // The layer's rows, named after its prefix (the title says which).
    assert!(
        ok.stdout
            .contains("Ops of layer 1 (1 of 3; names relative to model.layers.1)"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("┆ mlp "), "{}", ok.stdout);
}

// ---------------------------------------------------------------- legitimate noise vs bugs, on real transformers dumps

#[test]
fn legitimate_noise_is_not_a_divergence() {
    for (ours, reference) in [
        ("fixtures/ref/tiny-qwen3.f64.eager.npz", F32_EAGER),
        ("fixtures/ref/tiny-qwen3.f32.sdpa.npz", F32_EAGER),
        (
            "fixtures/ref/tiny-qwen3.bf16.sdpa.npz",
            "fixtures/ref/tiny-qwen3.bf16.eager.npz",
        ),
        ("fixtures/ref/tiny-qwen3.bf16.eager.npz", F32_EAGER),
    ] {
        let run = divergence(&["diff", ours, reference, "--format", "json"]);
        assert_eq!(run.code, 0, "{ours} vs {reference}: {}", run.stdout);
        assert_eq!(run.json()["first_divergence"], Value::Null);
    }
}

#[test]
fn exact_flags_any_difference() {
    // sdpa and eager agree bit for bit until the attention itself.
    let run = divergence(&[
        "diff",
        "fixtures/ref/tiny-qwen3.f32.sdpa.npz",
        F32_EAGER,
        "--format",
        "json",
        "--exact",
    ]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let first = report["first_divergence"]["name"].as_str().unwrap();
    assert_eq!(first, "model.layers.0.self_attn.attn_out", "{first}");
    // The same dump against itself is clean even when exact.
    let same = divergence(&["diff", F32_EAGER, F32_EAGER, "--exact", "--format", "json"]);
    assert_eq!(same.code, 0);
}

/// Dumps that record models of other sizes are said so, in one warning naming each size that
/// differs (a newcomer's run: a Llama reference against our Qwen3's dump read as a first
/// divergence at `model.embed_tokens`, without a word); a config that differs elsewhere (the
/// dtype, the library's version) is not, nor one that a dump does not record.
#[test]
fn dumps_of_models_of_other_sizes_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let dump = |name: &str, model: Option<Value>| {
        meta_dump(
            dir.path(),
            name,
            Meta {
                model,
                ..Meta::default()
            },
        )
    };
    let qwen = serde_json::json!({"hidden_size": 64, "head_dim": 32, "rope_theta": 1000000.0,
        "num_hidden_layers": 4, "torch_dtype": "float32"});
    let ours = dump("ours.npz", Some(qwen.clone()));
    let mut other = qwen.clone();
    other["head_dim"] = 16.into();
    other["rope_theta"] = 10000.0.into();
    let other = dump("other.npz", Some(other));
    let mut same = qwen.clone();
    same["torch_dtype"] = "bfloat16".into();
    same["rope_theta"] = serde_json::json!(1e6);
    // a size written as a string is that number (a hunt)
    same["hidden_size"] = "64".into();
    let same = dump("same.npz", Some(same));
    let none = dump("none.npz", None);
    // transformers 5 keeps theta in `rope_parameters` (every reference it exports)
    let mut nested = qwen.clone();
    nested.as_object_mut().unwrap().remove("rope_theta");
    nested["rope_parameters"] = serde_json::json!({"rope_theta": 10000.0, "rope_type": "default"});
    let nested = dump("nested.npz", Some(nested));
    // a reference of a copy cut down to its first layers, an epsilon stored in f32
    let mut cut = qwen.clone();
    cut["num_hidden_layers"] = 2.into();
    cut["rms_norm_eps"] = serde_json::json!(1e-6);
    let cut = dump("cut.npz", Some(cut));
    let mut eps = qwen.clone();
    eps["rms_norm_eps"] = serde_json::json!(9.99999997e-7);
    let ours_eps = dump("ours_eps.npz", Some(eps));
    // layers written as a string are cut as the number (a hunt: `"4"` against 2 warned), and
    // two spellings of one non-number say the same
    let mut text = qwen.clone();
    text["num_hidden_layers"] = "4".into();
    text["rope_theta"] = "NaN".into();
    let ours_text = dump("ours_text.npz", Some(text));
    let mut nan = cut_copy(&qwen);
    nan["rope_theta"] = "nan".into();
    let ref_nan = dump("ref_nan.npz", Some(nan));
    let said = |run: &Run| -> Vec<String> {
        common::warnings(&run.json())
            .into_iter()
            .filter(|w| w.contains("record models of other sizes"))
            .map(str::to_string)
            .collect()
    };
    let run = divergence(&["diff", &ours, &other, "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        said(&run),
        [format!(
            "{ours} and {other} record models of other sizes: head_dim 32 / 16, rope_theta 1000000.0 / 10000.0 (ours / the reference's): the dumps of two different models, or a port whose config is wrong there"
        )]
    );
    let run = divergence(&["diff", &ours, &nested, "--format", "json"]);
    assert_eq!(
        said(&run),
        [format!(
            "{ours} and {nested} record models of other sizes: rope_theta 1000000.0 / 10000.0 (ours / the reference's): the dumps of two different models, or a port whose config is wrong there"
        )]
    );
    for (a, quiet) in [
        (&ours, &same),
        (&ours, &none),
        (&ours, &cut),
        (&ours_eps, &cut),
        (&ours_text, &ref_nan),
    ] {
        let run = divergence(&["diff", a, quiet, "--format", "json"]);
        assert!(said(&run).is_empty(), "{a} {quiet}: {:?}", said(&run));
    }
}

/// `model` cut down to 2 layers.
fn cut_copy(model: &Value) -> Value {
    let mut cut = model.clone();
    cut["num_hidden_layers"] = 2.into();
    cut
}

/// `run --out` over a dump written by transformers (a reference) is refused, exit 2, one line,
/// the file unchanged (a newcomer replaced the committed demo reference); over a dump of ours
/// it writes as before, and the clash with an input file is said first.
#[test]
fn a_run_does_not_replace_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.npz");
    std::fs::copy(root().join("fixtures/demo/ref.npz"), &reference).unwrap();
    let before = std::fs::read(&reference).unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        divergence(&args)
    };
    let refused = run(&reference, &[]);
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("it holds a dump written by transformers (producer.name 'transformers'"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&reference).unwrap(), before);
    let clash = run(&reference, &["--decode-from", reference.to_str().unwrap()]);
    assert_eq!(clash.code, 2);
    assert!(
        clash.stderr.contains("that is the --decode-from file"),
        "{}",
        clash.stderr
    );
    let ours = dir.path().join("ours.npz");
    for _ in 0..2 {
        let ok = run(&ours, &[]);
        assert_eq!(ok.code, 0, "{}", ok.transcript());
    }
}

/// A report output that already holds a dump (one not among the inputs) is refused, exit 2,
/// one line, the dump unchanged (a hunt: `--json-out other_ref.npz` replaced a reference); the
/// safetensors reference that does not open as a dump is not replaced by a run either (its
/// metadata is a JSON string inside JSON, escaped, which the byte scan did not read: a hunt).
#[test]
fn a_report_does_not_replace_a_dump() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other_ref.npz");
    std::fs::copy(root().join(F32_EAGER), &other).unwrap();
    let before = std::fs::read(&other).unwrap();
    for flag in [
        "--json-out",
        "--markdown-out",
        "--html-out",
        "--suggest-map",
    ] {
        let run = divergence(&["diff", F32_EAGER, F32_EAGER, flag, other.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{flag}: {}", run.transcript());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(
                "it holds a zip archive, as an npz dump is, which the report would replace"
            ),
            "{}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read(&other).unwrap(), before);
    // a safetensors reference cut short after its header: no dump opens, its producer is read
    let st = std::fs::read(root().join("fixtures/ref/tiny-qwen3.bf16.eager.safetensors")).unwrap();
    let header = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let kept = 8 + header + 100;
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &st[..kept]).unwrap();
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "1,2",
        "--out",
        cut.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("it holds a dump written by transformers"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&cut).unwrap(), &st[..kept]);
}

/// OURS from the reference exporter and REF from our model: the arguments look swapped, and
/// the report says so (a newcomer's run: exit 0 and no word); the right order, and other
/// producers, say nothing.
#[test]
fn arguments_that_look_swapped_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let dump = |name: &str, producer: Option<&str>| {
        meta_dump(
            dir.path(),
            name,
            Meta {
                producer: producer.map(|p| serde_json::json!({ "name": p })),
                ..Meta::default()
            },
        )
    };
    let reference = dump("ref.npz", Some("transformers"));
    let ours = dump("ours.npz", Some("divergence-qwen3"));
    let engine = dump("engine.npz", Some("my-engine"));
    let said = |a: &str, b: &str| -> usize {
        let run = divergence(&["diff", a, b, "--format", "json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        common::warnings(&run.json())
            .into_iter()
            .filter(|w| w.contains("the arguments look swapped"))
            .count()
    };
    assert_eq!(said(&reference, &ours), 1);
    // (the fixtures' planted port is `transformers+planted-bug`: a transformers dump too)
    let planted = dump("planted.npz", Some("transformers+planted-bug"));
    assert_eq!(said(&planted, &ours), 1);
    assert_eq!(said(&ours, &reference), 0);
    assert_eq!(said(&reference, &engine), 0);
}

/// One file given as both sides is said (it agrees with itself whatever it holds); a copy of
/// it, another file of the same bytes, is a real comparison and is not.
#[test]
fn one_file_as_both_sides_is_said() {
    let said = |run: &Run| -> Vec<String> {
        common::warnings(&run.json())
            .into_iter()
            .filter(|w| w.starts_with("OURS and REF are one file"))
            .map(str::to_string)
            .collect()
    };
    let same = divergence(&["diff", F32_EAGER, F32_EAGER, "--format", "json"]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert_eq!(
        said(&same),
        [format!(
            "OURS and REF are one file ({F32_EAGER}): it agrees with itself whatever it holds; \
             give the reference's dump as REF"
        )]
    );
    // Another spelling of the same file, and a hard link, are the same file.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.npz");
    std::fs::hard_link(root().join(F32_EAGER), &link).unwrap();
    let other = format!("./{F32_EAGER}");
    for path in [other.as_str(), link.to_str().unwrap()] {
        let run = divergence(&["diff", F32_EAGER, path, "--format", "json"]);
        assert_eq!(said(&run).len(), 1, "{path}: {}", run.stdout);
    }
    // The table says it too.
    let table = divergence(&["diff", F32_EAGER, F32_EAGER, "--format", "table"]);
    assert!(
        table.stdout.contains("OURS and REF are one file"),
        "{}",
        table.stdout
    );
    let copy = dir.path().join("copy.npz");
    std::fs::copy(root().join(F32_EAGER), &copy).unwrap();
    let run = divergence(&[
        "diff",
        F32_EAGER,
        copy.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(said(&run).is_empty(), "{}", run.stdout);
}

/// `--layer`, `--grep` and `--all` shape the table and Markdown only: a run that writes only
/// JSON (or HTML) says so in a note after its report; a table says nothing; a run that fails
/// prints its one error line alone (a review: the note came before the error).
#[test]
fn filters_no_view_shows_are_said_after_the_report() {
    let demo = ["diff", "fixtures/demo/ours.npz", "fixtures/demo/ref.npz"];
    let run = |extra: &[&str]| divergence(&[&demo[..], extra].concat());
    let json = run(&["--layer", "1"]);
    assert_eq!(json.code, 1, "{}", json.transcript());
    assert_eq!(
        json.stderr,
        "note: --layer selects the rows of the table and Markdown views only; this JSON report \
         (the format when stdout is not a terminal) holds every op (--format table shows the \
         selection)\n"
    );
    let two = run(&["--format", "json", "--all", "--grep", "k_norm"]);
    assert!(
        two.stderr
            .starts_with("note: --all and --grep select the rows of the table and Markdown views only; this JSON report holds every op"),
        "{}",
        two.stderr
    );
    for shaped in [
        &["--layer", "1", "--format", "table"][..],
        &["--layer", "1", "--format", "markdown"],
        &["--layer", "1", "--markdown-out", "/dev/null"],
    ] {
        let r = run(shaped);
        assert!(r.stderr.is_empty(), "{shaped:?}: {}", r.stderr);
    }
    let failed = divergence(&["diff", "nope.npz", "fixtures/demo/ref.npz", "--layer", "1"]);
    assert_eq!(failed.code, 2);
    assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
}

/// A name map over one file as both sides compares other tensors of it: no "one file" warning.
#[test]
fn one_file_under_a_map_is_not_said_to_agree_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("sw.npz");
    write_dump(
        &dump,
        &[("a", &[2], &[1.0, 2.0]), ("b", &[2], &[2.0, 4.0])],
        None,
    );
    let map = dir.path().join("swap.toml");
    std::fs::write(
        &map,
        "[[rule]]\nfrom = \"a\"\nto = \"b\"\n[[rule]]\nfrom = \"b\"\nto = \"a\"\n",
    )
    .unwrap();
    let d = dump.to_str().unwrap();
    let run = divergence(&[
        "diff",
        d,
        d,
        "--map",
        map.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let report = run.json();
    let warnings = common::warnings(&report);
    assert!(
        !warnings.iter().any(|w| w.contains("one file")),
        "{warnings:?}"
    );
}

/// A dump whose `model.embed_tokens` holds another count of token positions than its
/// `input_ids` is said (positions are numbered from `input_ids`; a bad-input hunt found the
/// profile and the token line numbering one step apart by 8 positions, without a word).
#[test]
fn embeddings_of_another_length_than_the_input_ids_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (dir.path().join("o.npz"), dir.path().join("r.npz"));
    let e: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let x: &[(&str, &[usize], &[f32])] = &[("model.embed_tokens", &[1, 4, 2], &e)];
    write_dump(&ours, x, Some(vec![1, 2, 3, 4]));
    write_dump(&reference, x, Some(vec![1, 2, 3, 4]));
    let said = |run: &Run| -> Vec<String> {
        common::warnings(&run.json())
            .into_iter()
            .filter(|w| w.contains("token positions, but its input_ids hold"))
            .map(str::to_string)
            .collect()
    };
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(said(&run).is_empty(), "{}", run.stdout);
    let ids: Vec<i64> = (1..=12).collect();
    write_dump(&ours, x, Some(ids.clone()));
    write_dump(&reference, x, Some(ids));
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let o = ours.display();
    let r = reference.display();
    assert_eq!(
        said(&run),
        [
            format!("{o}: model.embed_tokens [1, 4, 2] holds 4 token positions, but its input_ids hold 12 tokens: token positions are numbered from input_ids"),
            format!("{r}: model.embed_tokens [1, 4, 2] holds 4 token positions, but its input_ids hold 12 tokens: token positions are numbered from input_ids"),
        ]
    );
    // Without model.embed_tokens, the first residual-stream probe held tells (the hunt's dump
    // had none, and was silent).
    let y: &[(&str, &[usize], &[f32])] = &[("model.layers.0", &[1, 4, 2], &e)];
    write_dump(&ours, y, Some((1..=12).collect()));
    write_dump(&reference, y, Some((1..=12).collect()));
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(
        said(&run),
        [
            format!("{o}: model.layers.0 [1, 4, 2] holds 4 token positions, but its input_ids hold 12 tokens: token positions are numbered from input_ids"),
            format!("{r}: model.layers.0 [1, 4, 2] holds 4 token positions, but its input_ids hold 12 tokens: token positions are numbered from input_ids"),
        ]
    );
    // One file given as both sides: said once (a bad-input hunt saw it twice).
    let run = diff_files(&ours, &ours, &["--format", "json"]);
    assert_eq!(
        said(&run),
        [format!("{o}: model.layers.0 [1, 4, 2] holds 4 token positions, but its input_ids hold 12 tokens: token positions are numbered from input_ids")]
    );
}

/// `run` without token ids names both ways to give them; its summary counts in the singular
/// where there is one (a bad-input hunt: "1 tokens + 1 decode steps").
#[test]
fn run_names_both_token_flags_and_counts_in_the_singular() {
    let none = divergence(&["run", "--model", "fixtures/tiny-qwen3"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("--ids <IDS>|--ids-file <FILE>"),
        "{}",
        none.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("one.npz");
    let one = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "5",
        "--decode-ids",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(one.code, 0, "{}", one.transcript());
    assert!(
        one.stderr.contains(", 1 token + 1 decode step;"),
        "{}",
        one.stderr
    );
}

#[test]
fn safetensors_and_npz_of_the_same_run_are_identical() {
    let run = divergence(&[
        "diff",
        "fixtures/ref/tiny-qwen3.bf16.eager.safetensors",
        "fixtures/ref/tiny-qwen3.bf16.eager.npz",
        "--exact",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let report = run.json();
    assert_eq!(report["summary"]["compared"], 81);
    assert_eq!(report["ops"][0]["dtype_ours"], "bfloat16");
    assert_eq!(report["ops"][0]["dtype_ref"], "bfloat16");
}

#[test]
fn tolerance_overrides() {
    // Loose enough, the demo's scale bug (rel err 0.875) passes; tighter it does not.
    let loose = divergence(&[
        "diff", DEMO_OURS, DEMO_REF, "--rtol", "1.0", "--format", "json",
    ]);
    assert_eq!(loose.code, 0, "{}", loose.stdout);
    let tight = divergence(&[
        "diff", DEMO_OURS, DEMO_REF, "--rtol", "0.5", "--format", "json",
    ]);
    assert_eq!(tight.code, 1);
    let bad = divergence(&["diff", DEMO_OURS, DEMO_REF, "--rtol=-1"]);
    assert_eq!(bad.code, 2);
    assert_eq!(
        bad.stderr,
        "error: --rtol must be a finite number >= 0, got -1\n"
    );
    let both = divergence(&["diff", DEMO_OURS, DEMO_REF, "--exact", "--rtol", "1"]);
    assert_eq!(both.code, 2);
}

#[test]
fn model_annotates_the_k_norm_weight_gain() {
    let with_model = |dir: &str| {
        divergence(&[
            "diff", DEMO_OURS, DEMO_REF, "--format", "json", "--model", dir,
        ])
    };
    let run = with_model("fixtures/tiny-qwen3");
    assert_eq!(run.code, 1);
    let rows = run.json()["amplification"]["rows"]
        .as_array()
        .unwrap()
        .clone();
    let k0 = rows
        .iter()
        .find(|r| r["layer"] == 0 && r["kind"] == "k")
        .expect("layer 0 k row");
    assert_eq!(k0["weight_gain"], 96.5);
    assert!(rows.iter().all(|r| r["weight_gain"].is_number()));
    let said = |w: &serde_json::Value| {
        w.as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no norm weight found"))
    };
    assert!(!said(&run.json()["warnings"]));
    // A directory of no norm weight (a directory of dumps; a bad-input hunt: taken without a
    // word, every gain "-") is said so.
    let run = with_model("fixtures/ref");
    assert_eq!(run.code, 1);
    assert!(said(&run.json()["warnings"]), "{}", run.json()["warnings"]);
    // The checkpoint of another model (its config's sizes not those the dumps record) is an
    // error: a held-out check's annotated the rows with the other model's gains, exit 0.
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("fixtures/tiny-qwen3");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = 3.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::os::unix::fs::symlink(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let run = with_model(dir.path().to_str().unwrap());
    assert_eq!(run.code, 2, "{}", run.transcript());
    // (more layers than the dumps' model: a reference of a copy cut down to its first layers)
    let more = tempfile::tempdir().unwrap();
    config["num_hidden_layers"] = 5.into();
    std::fs::write(more.path().join("config.json"), config.to_string()).unwrap();
    std::os::unix::fs::symlink(
        src.join("model.safetensors"),
        more.path().join("model.safetensors"),
    )
    .unwrap();
    assert_eq!(with_model(more.path().to_str().unwrap()).code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "its config.json has num_hidden_layers 3 where the model {DEMO_REF} records has 4"
        )),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------- dumps written here

/// `dir/name`: a dump of one probe (`model.embed_tokens`) with metadata `meta`; its path.
fn meta_dump(dir: &Path, name: &str, meta: Meta) -> String {
    let path = dir.join(name);
    let mut w = DumpWriter::create(&path).unwrap();
    w.add("model.embed_tokens", &[2], TensorData::F32(&[1.0, 2.0]))
        .unwrap();
    w.finish(meta).unwrap();
    path.to_str().unwrap().to_string()
}

fn write_dump(path: &Path, tensors: &[(&str, &[usize], &[f32])], input_ids: Option<Vec<i64>>) {
    let mut w = DumpWriter::create(path).unwrap();
    for (name, shape, data) in tensors {
        w.add(name, shape, TensorData::F32(data)).unwrap();
    }
    w.finish(Meta {
        input_ids,
        ..Meta::default()
    })
    .unwrap();
}

/// A Markdown report larger than a GitHub job summary takes (1 MiB a step) is written, with a
/// warning on stderr that says so and how to narrow it (`--all` over ~50,000 decode rows wrote
/// 8 MB, which a step summary drops whole: a visual check); a smaller one, none.
#[test]
fn a_markdown_report_too_large_for_a_job_summary_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
    let names: Vec<String> = (0..9_000)
        .map(|i| format!("model.layers.{}.op{}", i / 100, i % 100))
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .map(|n| (n.as_str(), &[2usize][..], &[1.0f32, 2.0][..]))
        .collect();
    write_dump(&reference, &tensors, None);
    write_dump(&ours, &tensors, None);
    let md = dir.path().join("summary.md");
    let all = diff_files(
        &ours,
        &reference,
        &[
            "--all",
            "--format",
            "markdown",
            "--markdown-out",
            md.to_str().unwrap(),
        ],
    );
    assert_eq!(all.code, 0, "{}", all.transcript());
    let size = std::fs::metadata(&md).unwrap().len();
    assert!(size > 1 << 20 && all.stdout.len() as u64 == size, "{size}");
    // In bytes too: 1.04 MiB rounded to one decimal read `1.0 MiB ... at most 1 MiB`.
    let grouped = |n: u64| {
        let d = n.to_string();
        d.chars()
            .enumerate()
            .flat_map(|(i, c)| {
                [
                    (i > 0 && (d.len() - i).is_multiple_of(3)).then_some(','),
                    Some(c),
                ]
            })
            .flatten()
            .collect::<String>()
    };
    let warning = |at: &str, bytes: u64, narrow: &str| {
        format!(
            "warning: the Markdown report ({at}) is {:.2} MiB ({} bytes); a GitHub job summary \
             ($GITHUB_STEP_SUMMARY) takes at most 1 MiB (1,048,576 bytes) a step and drops a \
             larger one: {narrow}\n",
            bytes as f64 / 1048576.0,
            grouped(bytes)
        )
    };
    // Once, for both outputs.
    assert_eq!(
        all.stderr,
        warning(
            "--markdown-out, stdout",
            size,
            "leave out --all, or narrow it with --layer / --grep"
        ),
        "{}",
        all.transcript()
    );
    // A filter picks the rows with or without --all: it is the filter to narrow.
    let grep = diff_files(
        &ours,
        &reference,
        &["--all", "--grep", "op", "--format", "markdown"],
    );
    assert_eq!(grep.code, 0, "{}", grep.transcript());
    // (One pass: no decode steps to compare fewer of.)
    let narrow = "narrow --layer / --grep";
    assert_eq!(
        grep.stderr,
        warning("stdout", grep.stdout.len() as u64, narrow),
        "{}",
        grep.transcript()
    );
    let one = diff_files(&ours, &reference, &["--format", "markdown"]);
    assert_eq!(
        (one.code, one.stderr.as_str()),
        (0, ""),
        "{}",
        one.transcript()
    );
    let layer = diff_files(
        &ours,
        &reference,
        &["--all", "--layer", "3", "--format", "markdown"],
    );
    assert_eq!(
        (layer.code, layer.stderr.as_str()),
        (0, ""),
        "{}",
        layer.transcript()
    );
}

#[test]
fn table_reports_nan_shapes_and_one_sided_names_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    let ones = [1.0f32; 6];
    write_dump(
        &reference,
        &[
            ("a", &[1, 2, 3], &ones),
            ("b", &[2, 3], &ones),
            ("c", &[6], &ones),
            ("only_ref", &[1], &[1.0]),
        ],
        Some(vec![1, 2, 3]),
    );
    let mut nan = ones;
    nan[4] = f32::NAN;
    write_dump(
        &ours,
        &[
            ("a", &[2, 3], &ones),
            ("b", &[3, 2], &ones),
            ("c", &[6], &nan),
            ("only_ours", &[1], &[1.0]),
        ],
        Some(vec![1, 2, 3]),
    );
    let args = ["diff", ours.to_str().unwrap(), reference.to_str().unwrap()];
    let run = divergence(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(run.code, 1);
    let report = run.json();
    // [1,2,3] vs [2,3] is the same tensor; [3,2] vs [2,3] is a shape mismatch.
    assert_eq!(report["ops"][0]["status"], "ok");
    assert_eq!(report["ops"][1]["status"], "shape_mismatch");
    assert_eq!(report["ops"][2]["status"], "nonfinite");
    assert_eq!(report["ops"][2]["nan_ours"], 1);
    assert_eq!(report["first_divergence"]["name"], "b");
    assert_eq!(report["only_ours"], serde_json::json!(["only_ours"]));
    assert_eq!(report["only_ref"], serde_json::json!(["only_ref"]));
    let table = divergence(
        &[
            &args[..],
            &["--format", "table", "--color", "never", "--all"],
        ]
        .concat(),
    );
    assert_eq!(table.code, 1);
    insta::assert_snapshot!(
        "nan_shape_one_sided",
        redact(&table.transcript(), dir.path())
    );
}

/// A pair with no divergence where some ops were not compared says how many on its verdict
/// line, in every format (a newcomer's run: a port dump missing half its probes, the buggy
/// ones, read "NO DIVERGENCE: all 40 compared ops ..." with the 41 others at the end).
#[test]
fn a_clean_verdict_says_what_was_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    let ones = [1.0f32; 2];
    write_dump(
        &reference,
        &[("a", &[2], &ones), ("b", &[2], &ones), ("c", &[2], &ones)],
        Some(vec![1, 2, 3]),
    );
    write_dump(
        &ours,
        &[("a", &[2], &ones), ("x", &[2], &ones)],
        Some(vec![1, 2, 3]),
    );
    for (format, line) in [
        (
            "table",
            "NO DIVERGENCE: all 1 compared ops are within tolerance; 3 not compared: 1 only in ours, 2 only in ref",
        ),
        (
            "markdown",
            "## ✅ No divergence (1 ops compared; 3 not compared: 1 only in ours, 2 only in ref)",
        ),
        (
            "html",
            "every compared op is within tolerance; 3 not compared: 1 only in ours, 2 only in ref.",
        ),
    ] {
        let run = diff_files(&ours, &reference, &["--format", format, "--color", "never"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains(line), "{}", run.stdout);
    }
    // Everything compared: the line as before.
    let run = diff_files(&ours, &ours, &["--format", "table", "--color", "never"]);
    assert!(run
        .stdout
        .contains("NO DIVERGENCE: all 2 compared ops are within tolerance\n"));
}

/// A fault that moves a bf16/f16 rounding does nothing in an f32 run: refused, exit 2 (a
/// newcomer's run: `--inject late-rounding` in the default f32 wrote a dump bit-identical to
/// the clean run, and its diff said no divergence).
#[test]
fn a_rounding_fault_in_an_f32_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npz");
    for fault in ["late-rounding", "early-cast@1"] {
        let run = divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids-file",
            "fixtures/tiny-qwen3/ids.txt",
            "--inject",
            fault,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert_eq!(
            run.stderr.trim(),
            format!("error: divergence run --model fixtures/tiny-qwen3: --inject {fault}: it moves a bf16/f16 rounding and does nothing to f32 activations (use it with --dtype bf16 or f16)")
        );
        assert!(!out.exists());
    }
}

/// A bias the activations cannot hold is refused, exit 2, no dump (a bad-input hunt:
/// `attn-bias=1e39` in f32 wrote Inf at every projection without a word); one they hold runs.
#[test]
fn an_attn_bias_past_the_dtype_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npz");
    let run = |fault: &str, dtype: &str| {
        divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2,3",
            "--dtype",
            dtype,
            "--inject",
            fault,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    for (fault, dtype, largest) in [
        ("attn-bias=1e39", "f32", "3.4028e38"),
        ("attn-bias=-1e39", "bf16", "3.3895e38"),
        ("attn-bias=1e5", "f16", "6.5504e4"),
    ] {
        let r = run(fault, dtype);
        assert_eq!(r.code, 2, "{}", r.transcript());
        let magnitude = &fault["attn-bias=".len()..];
        let magnitude = magnitude.parse::<f64>().unwrap();
        assert_eq!(
            r.stderr.trim(),
            format!("error: divergence run --model fixtures/tiny-qwen3: --inject {fault}: |{magnitude:e}| is past the largest {dtype} value ({largest}): the bias would be Inf (give a smaller magnitude)")
        );
        assert!(!out.exists());
    }
    // One that rounds to 0 in the dtype adds nothing, as attn-bias=0.
    for (fault, dtype) in [
        ("attn-bias=1e-310", "f32"),
        ("attn-bias=1e-45", "bf16"),
        ("attn-bias=-1e-8", "f16"),
    ] {
        let r = run(fault, dtype);
        assert_eq!(r.code, 2, "{}", r.transcript());
        assert!(
            r.stderr.contains(&format!(
                "rounds to 0 in {dtype}: the fault would add no bias"
            )),
            "{}",
            r.stderr
        );
        assert!(!out.exists());
    }
    let r = run("attn-bias=1e30", "bf16");
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(out.exists());
}

/// A fault that would change nothing is refused, exit 2, no dump (a bad-input hunt: each
/// wrote the clean run's dump, bit for bit, without a word): the config's own RoPE theta or
/// RMSNorm epsilon, a decode offset or a bias of 0.
#[test]
fn a_fault_that_would_change_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npz");
    let config = "fixtures/tiny-qwen3/config.json";
    let inject = |fault: &str| {
        divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids-file",
            "fixtures/tiny-qwen3/ids.txt",
            "--inject",
            fault,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    for (fault, says) in [
        ("rope-theta=1e6", format!("--inject rope-theta=1e6: {config} already has rope_theta = 1000000: the fault would change nothing (give another value)")),
        ("rms-eps=0.000001@1", format!("--inject rms-eps=1e-6@1: {config} already has rms_norm_eps = 0.000001: the fault would change nothing (give another value)")),
        ("decode-pos=0", "decode-pos=0 moves no position: give an offset other than 0".to_string()),
        ("attn-bias=0", "attn-bias=0 adds no bias: give a magnitude other than 0".to_string()),
        // Values that round to the config's where they are used (a bad-input hunt, session 51).
        ("rms-eps=1.00000001e-6", format!("--inject rms-eps=1.00000001e-6: 1.00000001e-6 is {config}'s rms_norm_eps (1e-6) once rounded to float32, where it is used: the fault would change nothing (give another value)")),
        ("rope-theta=1000000.03", format!("--inject rope-theta=1000000.03: its RoPE tables are {config}'s rope_theta (1e6) tables at every one of the run's 16 positions in f32: the fault would change nothing (give a value further off)")),
    ] {
        let run = inject(fault);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.trim().ends_with(&says), "{}", run.stderr);
        assert!(!out.exists());
    }
    // Another value is a fault.
    let run = inject("rope-theta=1e4");
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::fs::remove_file(&out).unwrap();
    // In bf16 a theta 1e-5 off rounds to the same tables over 16 positions; 3e-5 off does not.
    for (theta, code) in [("rope-theta=1000010", 2), ("rope-theta=1000030", 0)] {
        let run = divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids-file",
            "fixtures/tiny-qwen3/ids.txt",
            "--dtype",
            "bf16",
            "--inject",
            theta,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, code, "{}", run.transcript());
        assert_eq!(out.exists(), code == 0);
        let _ = std::fs::remove_file(&out);
    }
    // Where decode-pos moves a step far off, the theta's tables differ there: a fault (a
    // review: the positions counted were the prompt's and the steps' own).
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids-file",
        "fixtures/tiny-qwen3/ids.txt",
        "--dtype",
        "bf16",
        "--decode-ids",
        "5",
        "--inject",
        "rope-theta=1000010",
        "--inject",
        "decode-pos=5000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let _ = std::fs::remove_file(&out);
    // decode-pos-frozen enters at step 2: one decode step is refused.
    for (ids, code) in [("5", 2), ("5,6", 0)] {
        let run = divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids-file",
            "fixtures/tiny-qwen3/ids.txt",
            "--decode-ids",
            ids,
            "--inject",
            "decode-pos-frozen",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, code, "{}", run.transcript());
        if code == 2 {
            assert!(
                run.stderr
                    .contains("with one decode step the fault changes nothing"),
                "{}",
                run.stderr
            );
        }
        let _ = std::fs::remove_file(&out);
    }

    // A held-out check's: RoPE's faults on a 1-token prompt without decode steps (position 0
    // alone, RoPE the identity), and kv heads tiled where there is one kv head or one per q
    // head (tiling is repeat-interleaving then).
    for fault in ["rope-theta=1e4", "rope-interleaved"] {
        let run = divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "7",
            "--inject",
            fault,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("a 1-token prompt is position 0 alone, where RoPE is the identity: the fault would change nothing"),
            "{}",
            run.stderr
        );
        assert!(!out.exists());
    }
    // A 1-token prompt has no later position to attend to: no causal mask to miss, with or
    // without decode steps (a decode step's one query sees every key, mask or not).
    for extra in [&[][..], &["--decode-ids", "3,4"][..]] {
        let mut args = vec![
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "7",
            "--inject",
            "no-causal-mask",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let run = divergence(&args);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert!(
            run.stderr
                .contains("a 1-token prompt has no later position to attend to"),
            "{}",
            run.stderr
        );
        assert!(!out.exists());
    }
    // (with decode steps, positions 1.. rotate: a fault)
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "7",
        "--decode-ids",
        "8",
        "--inject",
        "rope-theta=1e4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::fs::remove_file(&out).unwrap();
    let src = common::root().join("fixtures/tiny-qwen3");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    for kv in [1, 4] {
        let model = dir.path().join(format!("kv{kv}"));
        std::fs::create_dir(&model).unwrap();
        let mut c = config.clone();
        c["num_key_value_heads"] = kv.into();
        std::fs::write(model.join("config.json"), c.to_string()).unwrap();
        std::os::unix::fs::symlink(
            src.join("model.safetensors"),
            model.join("model.safetensors"),
        )
        .unwrap();
        let run = divergence(&[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1,2",
            "--inject",
            "gqa-tile",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "has {kv} kv head{} for 4 q heads: tiled or repeat-interleaved, the heads are the same, and the fault would change nothing",
                if kv == 1 { "" } else { "s" }
            )),
            "{}",
            run.stderr
        );
        assert!(!out.exists());
    }
}

#[test]
fn different_input_ids_are_said_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(&reference, &[("a", &[2], &[1.0, 2.0])], Some(vec![1, 2, 3]));
    write_dump(&ours, &[("a", &[2], &[1.0, 2.0])], Some(vec![1, 2, 4]));
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    // The tensors are equal, but the comparison is meaningless: an error, never a pass.
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(run.stderr.contains("different input_ids"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1);
    let report = run.json();
    assert_eq!(report["input_ids_mismatch"], true);
    let table = diff_files(&ours, &reference, &["--format", "table"]);
    let first_lines: String = table.stdout.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(
        first_lines.to_lowercase().contains("input_ids"),
        "the warning must come first:\n{}",
        table.stdout
    );
}

#[test]
fn empty_and_zero_dim_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(
        &reference,
        &[("empty", &[0, 4], &[]), ("scalar", &[], &[2.0])],
        None,
    );
    write_dump(
        &ours,
        &[("empty", &[0, 4], &[]), ("scalar", &[], &[2.0])],
        None,
    );
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(run.json()["summary"]["compared"], 2);
}

#[test]
fn a_probe_nan_everywhere_on_both_sides_is_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    let nan = [f32::NAN; 6];
    let tensors: [(&str, &[usize], &[f32]); 2] = [
        (
            "model.embed_tokens",
            &[2, 3],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        ),
        ("model.layers.0.mlp", &[2, 3], &nan),
    ];
    write_dump(&reference, &tensors, None);
    write_dump(&ours, &tensors, None);
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let report = run.json();
    assert_eq!(report["ops"][0]["status"], "ok");
    let row = &report["ops"][1];
    assert_eq!(row["status"], "no_finite");
    assert_eq!(
        (row["n_compared"].clone(), row["nan_ref"].clone()),
        (0.into(), 6.into())
    );
    assert_eq!(report["summary"]["no_finite"], 1);
    assert_eq!(report["summary"]["diverged"], 1);
    assert_eq!(report["first_divergence"]["status"], "no_finite");
    assert_eq!(report["first_divergence"]["name"], "model.layers.0.mlp");
    for format in ["table", "markdown"] {
        let run = diff_files(
            &ours,
            &reference,
            &["--format", format, "--color", "never", "--all"],
        );
        assert_eq!(run.code, 1, "{}", run.transcript());
        assert!(
            run.stdout.contains("no_finite"),
            "{format}:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("0 non-finite, 1 with no finite value)"),
            "{format}:\n{}",
            run.stdout
        );
    }
}
// ---------------------------------------------------------------- errors: exit 2, one line naming the file

/// A fault that does not parse is named once, with the flag ("--inject invalid --inject" was
/// printed, found by a newcomer's run).
#[test]
fn a_bad_fault_says_the_flag_once() {
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "1,2",
        "--inject",
        "bogus",
    ]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert_eq!(
        run.stderr,
        "error: --inject \"bogus\": unknown fault \"bogus\" (`divergence run --help` lists every fault)\n"
    );
}

/// A fault name mistyped is one short line: the name, the fault it is close to, and where the
/// list is (it was the whole list of faults, ~600 characters, and no suggestion); a bad value
/// of a fault that takes one says what is wrong with it. Exit 2, nothing run.
#[test]
fn a_mistyped_fault_says_what_was_meant() {
    let inject = |fault: &str| {
        divergence(&[
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2",
            "--inject",
            "skip-k-norm@0",
            "--inject",
            fault,
        ])
    };
    for (fault, says) in [
        (
            "rope-thta=1e4",
            "unknown fault \"rope-thta\": did you mean `rope-theta`? (`divergence run --help` lists every fault)",
        ),
        (
            "skip_q_norm@1",
            "unknown fault \"skip_q_norm\": did you mean `skip-q-norm`? (`divergence run --help` lists every fault)",
        ),
        (
            "decode-pos-frozn",
            "unknown fault \"decode-pos-frozn\": did you mean `decode-pos-frozen`? (`divergence run --help` lists every fault)",
        ),
        (
            "cache-dtype=f8",
            "cache-dtype: unknown dtype \"f8\" (f16, bf16)",
        ),
        ("decode-pos=1.5", "decode-pos: \"1.5\" is not an integer"),
        ("cache-dtype", "cache-dtype needs a value: cache-dtype=f16|bf16"),
    ] {
        let run = inject(fault);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert!(run.stdout.is_empty(), "{}", run.transcript());
        assert_eq!(
            run.stderr,
            format!("error: --inject {fault:?}: {says}\n"),
            "{}",
            run.transcript()
        );
        assert!(run.stderr.len() < 200, "{}", run.stderr);
    }
    // One fault on two layers is two specs, no conflict.
    let run = inject("skip-k-norm@1");
    assert_eq!(run.code, 0, "{}", run.transcript());
    // Values that float32, where RoPE's angles and the norm's epsilon are computed, cannot
    // hold: NaN tables, every output 0, or an epsilon of 0 recorded as another (a bad-input
    // hunt). And a fault on a layer another spec of it names (it acted once, recorded twice).
    for (fault, says) in [
        (
            "rope-theta=1e-50",
            "1e-50 makes RoPE's angles Inf or NaN in float32 (computed there, as transformers does): give a larger theta",
        ),
        (
            "rms-eps=1e39",
            "1e39 is past the largest float32 value, where the norm adds it: every output would be 0 (give a smaller epsilon)",
        ),
        (
            "rms-eps=1e-50",
            "1e-50 rounds to 0 in float32, where the norm adds it (rms-eps=0 is the norm without an epsilon)",
        ),
        (
            "skip-k-norm",
            "names a layer --inject skip-k-norm@0 names too (a fault acts once on a layer: give each layer once)",
        ),
    ] {
        let run = inject(fault);
        assert_eq!(run.code, 2, "{}", run.transcript());
        assert!(
            run.stderr.ends_with(&format!("--inject {fault}: {says}\n"))
                && run.stderr.lines().count() == 1,
            "{}",
            run.transcript()
        );
    }
    // One fault with two values on a layer both name: the last acted and the metadata
    // recorded both (a bad-input hunt). Refused, nothing run.
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "1,2",
        "--inject",
        "rope-theta=10000",
        "--inject",
        "rope-theta=500",
    ]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("--inject rope-theta=500: conflicts with --inject rope-theta=1e4")
            && run.stderr.lines().count() == 1,
        "{}",
        run.transcript()
    );
    // One spec given twice: it acted once and the metadata recorded it twice (a bad-input
    // hunt). Refused, nothing run.
    let run = inject("skip-k-norm@0");
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("--inject skip-k-norm@0: given twice (a fault acts once: give it once)")
            && run.stderr.lines().count() == 1,
        "{}",
        run.transcript()
    );
}

/// `run --max-memory` replaces the memory bound: a run over it is refused before any weight is
/// loaded, on one line that names the flag; a bound that is not a positive number is a usage
/// error naming the flag.
#[test]
fn max_memory_bounds_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npz");
    let args = |gib: &'static str| {
        [
            "run",
            "--model",
            "fixtures/tiny-qwen3",
            "--ids",
            "1,2,3",
            "--max-memory",
            gib,
            "--out",
        ]
    };
    let mut small = args("0.000001").to_vec();
    small.push(out.to_str().unwrap());
    let run = divergence(&small);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("of --max-memory (besides the weights): give fewer tokens"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!out.exists(), "nothing written");
    let mut enough = args("1").to_vec();
    enough.push(out.to_str().unwrap());
    let run = divergence(&enough);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run = divergence(&args("0")[..7]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("--max-memory must be a finite number > 0"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_is_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.npz");
    let full = std::fs::read(root().join(DEMO_REF)).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.npz");
    std::fs::write(&garbage, b"this is not a zip file at all").unwrap();
    let empty = dir.path().join("empty.npz");
    std::fs::write(&empty, b"").unwrap();
    let mut transcripts = String::new();
    for bad in [
        truncated.to_str().unwrap(),
        garbage.to_str().unwrap(),
        empty.to_str().unwrap(),
        "no/such/file.npz",
    ] {
        let run = divergence(&["diff", bad, DEMO_REF]);
        assert_eq!(run.code, 2, "{bad}: {}", run.transcript());
        assert_eq!(run.stdout, "");
        assert_eq!(run.stderr.lines().count(), 1, "{bad}: {}", run.stderr);
        assert!(
            run.stderr.contains(bad),
            "the error must name the file: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"));
        transcripts.push_str(&redact(&run.transcript(), dir.path()));
    }
    insta::assert_snapshot!("bad_input", transcripts);
}

#[test]
fn a_corrupt_entry_is_a_row_not_a_crash() {
    // An object array (a pickle) in one entry: that probe is unreadable, the rest compares.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(
        &reference,
        &[("a", &[2], &[1.0, 2.0]), ("b", &[2], &[1.0, 2.0])],
        None,
    );
    // Patch the npy header of entry 'b' in ours to claim an object dtype.
    write_dump(
        &ours,
        &[("a", &[2], &[1.0, 2.0]), ("b", &[2], &[1.0, 2.0])],
        None,
    );
    let mut bytes = std::fs::read(&ours).unwrap();
    let header = b"'descr': '<f4'";
    let at = bytes
        .windows(header.len())
        .rposition(|w| w == header)
        .expect("npy header of b");
    bytes[at..at + header.len()].copy_from_slice(b"'descr': '|O' ");
    std::fs::write(&ours, &bytes).unwrap();
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let report = run.json();
    assert_eq!(report["ops"][0]["status"], "ok");
    assert_eq!(report["ops"][1]["status"], "unreadable");
    assert_eq!(report["summary"]["unreadable"], 1);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let run = divergence(&["diff", DEMO_OURS]);
    assert_eq!(run.code, 2);
    let run = divergence(&["diff", DEMO_OURS, DEMO_REF, "--no-such-flag"]);
    assert_eq!(run.code, 2);
    let help = divergence(&["diff", "--help"]);
    assert_eq!(help.code, 0);
    assert!(help
        .stdout
        .contains("Exit codes: 0 = no divergence, 1 = divergence found, 2 = error"));
    assert!(
        help.stdout
            .contains("the norm-wise error exceeds the tolerance"),
        "the decision rule is in --help"
    );
    // ... with the preset numbers, written from divergence_diff::PRESETS (lines may wrap).
    let words = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("bfloat16: rtol 4e-2, atol 1e-3"),
        "{}",
        help.stdout
    );
}

#[test]
fn broken_pipe_is_not_an_error() {
    for format in ["table", "json", "markdown"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_divergence"))
            .args(["diff", DEMO_OURS, DEMO_REF, "--format", format, "--all"])
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{format}: {stderr}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{format}: the verdict still decides the exit code"
        );
    }
}

#[test]
fn nothing_compared_is_an_error_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(
        &reference,
        &[("model.embed_tokens", &[2], &[1.0, 2.0])],
        None,
    );
    // Not even alignment by content can pair them: another element count.
    write_dump(&ours, &[("embeddings", &[3], &[1.0, 2.0, 3.0])], None);
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stderr.contains("no probe was compared"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["summary"]["compared"], 0);
    // never a "no divergence" verdict about zero compared ops
    let table = diff_files(&ours, &reference, &["--format", "table"]);
    assert_eq!(table.code, 2);
    assert!(
        table.stdout.contains(
            "NOTHING COMPARED: of 2 probes, 1 are only in ours, 1 only in ref, 0 unreadable; no verdict"
        ),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("NO DIVERGENCE"), "{}", table.stdout);
    assert!(!table.stdout.contains("no divergence"), "{}", table.stdout);
    assert!(
        table.stdout.contains("; nothing compared"),
        "{}",
        table.stdout
    );
    assert!(!run.stderr.contains("checkpoint"), "{}", run.stderr);
    // A checkpoint given as REF (a newcomer's run): the line says what it is.
    let run = divergence(&[
        "diff",
        "fixtures/demo/ours.npz",
        "fixtures/tiny-qwen3/model.safetensors",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.ends_with(
            "no probe was compared (no name in common, or none readable) (REF holds weights, \
             `*.weight`: a model checkpoint, not a dump of activations)\n"
        ),
        "{}",
        run.stderr
    );
    let md = diff_files(&ours, &reference, &["--format", "markdown"]);
    assert!(
        md.stdout.contains("## ⚠️ NOTHING COMPARED"),
        "{}",
        md.stdout
    );
}

#[test]
fn a_dump_without_the_model_prefix_is_matched_with_a_note() {
    // The demo's ours, every name without `model.`: the same report as the original pair.
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("ours.npz");
    let src = divergence_dump::Dump::open(&root().join(DEMO_OURS)).unwrap();
    let mut w = DumpWriter::create(&stripped).unwrap();
    let mut order = Vec::new();
    for name in src.names() {
        let t = src.read(name).unwrap();
        let new = name.strip_prefix("model.").unwrap_or(name).to_string();
        match &t.values {
            divergence_dump::Values::F32(v) => w.add(&new, &t.shape, TensorData::F32(v)).unwrap(),
            divergence_dump::Values::F64(v) => w.add(&new, &t.shape, TensorData::F64(v)).unwrap(),
        }
        order.push(new);
    }
    w.finish(Meta {
        order: order.into_iter().map(divergence_diff::Name::from).collect(),
        input_ids: src.meta().and_then(|m| m.input_ids.clone()),
        ..Meta::default()
    })
    .unwrap();
    let reference = root().join(DEMO_REF);
    let run = diff_files(&stripped, &reference, &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let r = run.json();
    assert_eq!(r["first_divergence"]["name"], "model.embed_tokens");
    assert_eq!(r["summary"]["compared"], 81);
    let w0 = r["warnings"][0].as_str().unwrap();
    assert!(
        w0.starts_with("our dump names its probes without the prefix `model.`"),
        "{w0}"
    );
    let original = divergence(&["diff", DEMO_OURS, DEMO_REF, "--format", "json"]).json();
    for (a, b) in r["ops"]
        .as_array()
        .unwrap()
        .iter()
        .zip(original["ops"].as_array().unwrap())
    {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["rel_l2_err"], b["rel_l2_err"], "{}", a["name"]);
    }
    // Nothing to map: --suggest-map says so, rather than a file --map refuses without a word
    // (a bad-input hunt, 2026-12-04: the file held the header alone).
    let suggested = dir.path().join("suggested.toml");
    let run = diff_files(
        &stripped,
        &reference,
        &["--suggest-map", suggested.to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}", run.transcript());
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(!text.contains("[[rule]]"), "{text}");
    assert!(text.contains("these dumps need no map"), "{text}");
}

/// A pair aligned by content where only the reference has decode steps (compared under
/// `--steps 0`): a pair of ours' probe with a reference's step name is no rule a map may hold,
/// so `--suggest-map` writes it as a comment saying why, and the file passes back with `--map`
/// (a review: it was written as a rule, and `--map` refused the file).
#[test]
fn a_suggested_map_passes_back_where_one_side_has_decode_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
    let v = |k: f32| -> Vec<f32> { (0..8).map(|i| (i as f32 + 1.0) * k).collect() };
    let (a, b, c) = (v(1.0), v(-2.5), v(0.3));
    write_dump(
        &ours,
        &[
            ("pa", &[1, 8], &a),
            ("pb", &[1, 4, 2], &b),
            ("pc", &[2, 4], &c),
        ],
        None,
    );
    write_dump(
        &reference,
        &[
            ("x", &[1, 8], &a),
            ("y", &[1, 4, 2], &b),
            ("x@1", &[2, 4], &c),
        ],
        None,
    );
    let suggested = dir.path().join("s.toml");
    // (the prefill alone: ours has no decode step 1)
    let diff = |map_flag: &str| {
        let s = suggested.to_str().unwrap();
        diff_files(
            &ours,
            &reference,
            &["--format", "json", "--steps", "0", map_flag, s],
        )
    };
    let run = diff("--suggest-map");
    assert_ne!(run.code, 2, "{}", run.transcript());
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(
        text.contains("# not a rule a map may hold (`to = \"x@1\"` names a decode step"),
        "{text}"
    );
    assert!(text.contains("from = \"pa\"\nto = \"x\""), "{text}");
    let back = diff("--map");
    assert_ne!(back.code, 2, "{}", back.transcript());
    assert!(back.json()["summary"]["compared"].as_u64().unwrap() >= 2);
}

/// Dumps that share no name and hold too many probes to align by content: --suggest-map's
/// file says why it holds no rule (it said "these dumps need no map").
#[test]
fn too_many_probes_to_align_is_said_in_the_suggested_map() {
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, prefix: &str| {
        let path = dir.path().join(file);
        let mut w = DumpWriter::create(&path).unwrap();
        for i in 0..5_001 {
            w.add(&format!("{prefix}{i}"), &[1], TensorData::F32(&[i as f32]))
                .unwrap();
        }
        w.finish(Meta::default()).unwrap();
        path
    };
    let (ours, reference) = (write("ours.npz", "o"), write("ref.npz", "r"));
    let suggested = dir.path().join("suggested.toml");
    let run = diff_files(
        &ours,
        &reference,
        &[
            "--format",
            "json",
            "--suggest-map",
            suggested.to_str().unwrap(),
        ],
    );
    // nothing compared: an error (exit 2), after the file was written
    assert_eq!(run.code, 2, "{}", run.transcript());
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(!text.contains("[[rule]]"), "{text}");
    assert!(
        text.contains("# No rule: few probe names in common, and too many to align by content"),
        "{text}"
    );
    assert!(!text.contains("need no map"), "{text}");
}

/// Dumps that share few names and whose leftovers have no element count in common (another
/// hidden size, a head count wrong everywhere): the report says nothing paired by content,
/// and --suggest-map's file says why it holds no rule (a review: no warning at all, and the
/// file said "these dumps need no map").
#[test]
fn leftovers_that_pair_by_nothing_are_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, names: [&str; 3], counts: [usize; 3]| {
        let path = dir.path().join(file);
        let mut w = DumpWriter::create(&path).unwrap();
        for (name, n) in names.iter().zip(counts) {
            let v: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            w.add(name, &[n], TensorData::F32(&v)).unwrap();
        }
        w.finish(Meta {
            order: names
                .iter()
                .map(|&n| divergence_diff::Name::from(n))
                .collect(),
            ..Meta::default()
        })
        .unwrap();
        path
    };
    let ours = write("ours.npz", ["x.emb", "o.a", "o.b"], [4, 4, 4]);
    let reference = write("ref.npz", ["x.emb", "r.a", "r.b"], [4, 6, 6]);
    let suggested = dir.path().join("suggested.toml");
    let run = diff_files(
        &ours,
        &reference,
        &[
            "--format",
            "json",
            "--suggest-map",
            suggested.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, 2, "{}", run.transcript());
    let warnings = run.json()["warnings"].to_string();
    assert!(
        warnings.contains("none of the 2 probes left of ours pairs by content"),
        "{warnings}"
    );
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(!text.contains("need no map"), "{text}");
    assert!(
        text.contains("# No rule: few probe names in common, and none"),
        "{text}"
    );
}

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_the_committed_fixture() {
    let run = divergence(&["inspect", "fixtures/tiny-qwen3", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let md = divergence(&["inspect", "fixtures/tiny-qwen3", "--format", "markdown"]);
    assert_eq!(md.code, 0, "{}", md.transcript());
    assert!(
        md.stdout.starts_with("### divergence inspect: clean\n"),
        "{}",
        md.stdout
    );
    assert!(md.stdout.contains("| layer |"), "{}", md.stdout);
    let missing = divergence(&["inspect", "no/such/model"]);
    assert_eq!(missing.code, 2);
    assert_eq!(missing.stderr.lines().count(), 1);
    assert!(missing.stderr.contains("no/such/model"));
}

// ---------------------------------------------------------------- --watch

/// `divergence diff ours ref --watch --format FORMAT` on a pair that agrees (`a` = [1, 2]),
/// stdout piped and read on a thread: the folder, ours' path (to rewrite), the child and its
/// stdout's chunks.
fn watching(
    format: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::process::Child,
    std::sync::mpsc::Receiver<Vec<u8>>,
) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(&reference, &[("a", &[2], &[1.0, 2.0])], None);
    write_dump(&ours, &[("a", &[2], &[1.0, 2.0])], None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args(["diff", ours.to_str().unwrap(), reference.to_str().unwrap()])
        .args(["--watch", "--format", format])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (dir, ours, child, rx)
}

#[test]
fn watch_reruns_when_a_file_changes() {
    use std::time::{Duration, Instant};

    let (_dir, ours, mut child, rx) = watching("json");
    // Piped, the reports follow one another as JSON documents (the screen is cleared only
    // on a terminal), so the stream stays parseable.
    let mut seen = String::new();
    let mut wait_for = |reports: usize| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let docs: Vec<Value> = serde_json::Deserializer::from_str(&seen)
                .into_iter::<Value>()
                .map_while(Result::ok)
                .collect();
            assert!(
                !seen.contains('\x1b'),
                "no terminal escapes when piped: {seen:?}"
            );
            if docs.len() >= reports {
                return docs[reports - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no report #{reports} within 20 s; got:\n{seen}"),
            }
        }
    };
    let first = wait_for(1);
    assert_eq!(first["first_divergence"], Value::Null);
    // The port changes: the watcher re-runs and now reports the divergence.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime even on coarse clocks
    write_dump(&ours, &[("a", &[2], &[1.0, 3.0])], None);
    let second = wait_for(2);
    assert_eq!(second["first_divergence"]["name"], "a");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_piped_watch_table_marks_each_report() {
    use std::time::{Duration, Instant};

    let (_dir, ours, mut child, rx) = watching("table");
    // Piped, the tables ran together: each starts with a line that says when it was made.
    let mut seen = String::new();
    let mut wait_for = |reports: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(seen
            .matches("=== divergence diff --watch: report of ")
            .count()
            >= reports
            && seen.contains(what))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no report #{reports} within 20 s; got:\n{seen}"),
            }
        }
        seen.clone()
    };
    let first = wait_for(1, "no divergence");
    assert!(
        first.starts_with("=== divergence diff --watch: report of "),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    write_dump(&ours, &[("a", &[2], &[1.0, 3.0])], None);
    let both = wait_for(2, "FIRST DIVERGENCE");
    let second = both
        .rsplit("=== divergence diff --watch: report of ")
        .next()
        .unwrap();
    assert!(second.contains("FIRST DIVERGENCE: a"), "{both}");
    assert!(
        !both.contains('\x1b'),
        "no terminal escapes when piped: {both:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn watch_restarts_on_sigbus_and_goes_on() {
    // A dump truncated under the memory map raises SIGBUS; under --watch the process restarts
    // itself (same pid, same arguments) with one line on stderr, and compares again.
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(&reference, &[("a", &[2], &[1.0, 2.0])], None);
    write_dump(&ours, &[("a", &[2], &[1.0, 3.0])], None);
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args([
            "diff",
            ours.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--watch",
            "--format",
            "json",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let reports = || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .count()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reports() < n {
            assert!(Instant::now() < deadline, "no report #{n} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(1);
    let status = Command::new("kill")
        .args(["-BUS", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(2);
    assert!(child.try_wait().unwrap().is_none(), "the watch must go on");
    child.kill().unwrap();
    child.wait().unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    let sigbus: Vec<&str> = err.lines().filter(|l| l.contains("SIGBUS")).collect();
    assert_eq!(sigbus.len(), 1, "{err}");
    assert!(
        sigbus[0].starts_with(&format!(
            "error: {}, {}: ",
            ours.display(),
            reference.display()
        )) && sigbus[0].ends_with("(SIGBUS); restarting the watch"),
        "{err}"
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    for doc in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        assert_eq!(doc.unwrap()["first_divergence"]["name"], "a");
    }
}

#[test]
fn two_npy_files_compare_whatever_their_names() {
    let dir = tempfile::tempdir().unwrap();
    // A .npy written by hand (common::npy_f32).
    let write_npy = |path: &Path, values: &[f32]| {
        let shape = format!("({},)", values.len());
        std::fs::write(path, common::npy_f32(false, &shape, values)).unwrap();
    };
    let ours = dir.path().join("my_kernel_out.npy");
    let reference = dir.path().join("torch_out.npy");
    write_npy(&ours, &[1.0, 2.0, 3.5]);
    write_npy(&reference, &[1.0, 2.0, 3.0]);
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let report = run.json();
    assert_eq!(report["summary"]["compared"], 1);
    assert_eq!(report["first_divergence"]["name"], "torch_out");
    assert_eq!(report["ops"][0]["max_abs_err"], 0.5);
}

#[test]
fn borrowed_and_decoded_tensors_give_the_same_report() {
    // Stored members are compared straight from the memory map; deflated ones are streamed
    // piece by piece. Every number of the report must come out the same either way.
    let dir = tempfile::tempdir().unwrap();
    let (ours_z, ref_z) = (dir.path().join("ours.npz"), dir.path().join("ref.npz"));
    deflated_copy(&root().join(DEMO_OURS), &ours_z);
    deflated_copy(&root().join(DEMO_REF), &ref_z);
    let ops = |ours: &Path, reference: &Path| {
        let run = diff_files(ours, reference, &["--format", "json"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        run.json()["ops"].clone()
    };
    let stored = ops(&root().join(DEMO_OURS), &root().join(DEMO_REF));
    assert!(stored.as_array().is_some_and(|a| a.len() > 50));
    assert_eq!(ops(&ours_z, &ref_z), stored, "both deflated");
    assert_eq!(
        ops(&ours_z, &root().join(DEMO_REF)),
        stored,
        "ours deflated"
    );
}

/// A safetensors file as other tools write it: no `__metadata__`, so no execution order (the
/// format keeps keys sorted).
fn write_bare_safetensors(path: &Path, tensors: &[(&str, &[usize], &[f32])]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in *values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_pair_without_recorded_order_follows_the_forward_pass_not_the_alphabet() {
    // Both sides wrong from the embedding on: sorted keys would put lm_head first and call it
    // the first divergence; the canonical forward order names model.embed_tokens.
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (
        dir.path().join("o.safetensors"),
        dir.path().join("r.safetensors"),
    );
    let good: &[f32] = &[1.0, 2.0, 3.0, 4.0];
    let bad: &[f32] = &[1.5, 2.0, 3.0, 4.0];
    let names = [
        "lm_head",
        "model.embed_tokens",
        "model.layers.0",
        "model.layers.0.input_layernorm",
        "model.norm",
    ];
    let shape: &[usize] = &[1, 4];
    let r: Vec<(&str, &[usize], &[f32])> = names.iter().map(|n| (*n, shape, good)).collect();
    let o: Vec<(&str, &[usize], &[f32])> = names.iter().map(|n| (*n, shape, bad)).collect();
    write_bare_safetensors(&reference, &r);
    write_bare_safetensors(&ours, &o);
    let run = diff_files(&ours, &reference, &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["order_source"], "canonical");
    assert_eq!(json["first_divergence"]["name"], "model.embed_tokens");
    let order: Vec<&str> = json["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "model.embed_tokens",
            "model.layers.0.input_layernorm",
            "model.layers.0",
            "model.norm",
            "lm_head"
        ]
    );
}

#[test]
fn tui_without_a_terminal_is_a_one_line_error() {
    // Under `cargo test` stdin and stdout are not a terminal.
    let (code, out, err) = common::divergence(&["diff", DEMO_OURS, DEMO_REF, "--tui"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(
        err.trim_end(),
        "error: --tui needs a terminal (stdin and stdout); use --format table, json, markdown or html instead"
    );
    // It cannot be combined with an output format.
    let (code, _, err) =
        common::divergence(&["diff", DEMO_OURS, DEMO_REF, "--tui", "--format", "json"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'--tui' cannot be used with '--format <FORMAT>'"),
        "{err}"
    );
}

/// In a terminal, `--tui` shows the report; when the comparison means nothing (other
/// input_ids), the view says so first (it said "no divergence" in green before), and the shell
/// still gets the one line on stderr and exit 2 that every other format gives, once the view
/// is closed. The view runs in a pseudo-terminal, quit with `q`.
#[cfg(target_os = "linux")]
#[test]
fn the_terminal_view_ends_with_the_line_the_other_formats_print() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let reference = dir.path().join("ref.npz");
    write_dump(&reference, &[("a", &[2], &[1.0, 2.0])], Some(vec![1, 2, 3]));
    write_dump(&ours, &[("a", &[2], &[1.0, 2.0])], Some(vec![1, 2, 4]));
    let printed = diff_files(&ours, &reference, &["--format", "table"]);
    assert_eq!(printed.code, 2);

    let (master, slave) = pty_pair(40, 120);
    let mut child = Command::new(env!("CARGO_BIN_EXE_divergence"))
        .args([
            "diff".as_ref(),
            ours.as_os_str(),
            reference.as_os_str(),
            "--tui".as_ref(),
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = std::fs::File::from(master);
    // The screen is read (and dropped) all along: a full pseudo-terminal would block the view.
    let mut screen = keys.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let _ = screen.read_to_end(&mut seen); // ends with EIO once the view has exited
        seen
    });
    // `q` until the view quits (one is enough once it reads keys).
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the view did not quit on q"
        );
        let _ = keys.write_all(b"q");
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(keys);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let seen = drain.join().unwrap();
    assert!(
        String::from_utf8_lossy(&seen).contains("!!! INPUT_IDS MISMATCH"),
        "the view says the input_ids differ: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(err, printed.stderr);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("different input_ids"), "{err}");
}

/// A pseudo-terminal of `rows` x `cols`: its master and its slave, both close-on-exec from
/// the moment they exist (`posix_openpt` and `open` with `O_CLOEXEC`, not `openpty` and then
/// `fcntl`): a child another test spawns meanwhile (the `--watch` tests' live for seconds)
/// would otherwise inherit them and hold the terminal open, and a read of the screen would
/// wait for it. The view's own child gets its copies through `Command`'s `dup2`.
#[cfg(target_os = "linux")]
fn pty_pair(rows: u16, cols: u16) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let last = || std::io::Error::last_os_error();
    // SAFETY: posix_openpt opens a new descriptor (owned below) and touches no memory of ours.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(m >= 0, "posix_openpt: {}", last());
    // SAFETY: `m` was just opened and is owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: grantpt / unlockpt take a master descriptor; they touch no memory of ours.
    assert_eq!(unsafe { libc::grantpt(m) }, 0, "grantpt: {}", last());
    assert_eq!(unsafe { libc::unlockpt(m) }, 0, "unlockpt: {}", last());
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most `name.len()` bytes, NUL-terminated, into `name`.
    let rc = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    assert_eq!(
        rc,
        0,
        "ptsname_r: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    // SAFETY: `name` is NUL-terminated (ptsname_r succeeded); open returns a new descriptor.
    let s = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    assert!(s >= 0, "open the slave: {}", last());
    // SAFETY: `s` was just opened and is owned by nothing else.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, a valid value.
    let rc = unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", last());
    (master, slave)
}

#[test]
fn hostile_tensor_names_cannot_drive_the_terminal_or_the_markdown() {
    // Found by a bad-input hunt: a name's newline and escapes reached the terminal (a window
    // title, a cleared screen) and broke out of the Markdown table (a heading, raw HTML).
    let dir = tempfile::tempdir().unwrap();
    let hostile =
        "a\n## INJECTED\u{1b}]0;title\u{7}\u{1b}[2J<img src=x>![px](https://evil.example/p.png)";
    let (ours, reference) = (dir.path().join("o.npz"), dir.path().join("r.npz"));
    for (path, v) in [(&ours, [1.0f32, 5.0]), (&reference, [1.0f32, 2.0])] {
        let mut w = DumpWriter::create(path).unwrap();
        w.add(hostile, &[2], TensorData::F32(&v)).unwrap();
        w.add("only.in.one\u{1b}[31m", &[2], TensorData::F32(&v))
            .unwrap();
        w.finish(Meta::default()).unwrap();
    }
    for format in ["table", "markdown"] {
        let out = Command::new(env!("CARGO_BIN_EXE_divergence"))
            .args(["diff", ours.to_str().unwrap(), reference.to_str().unwrap()])
            .args(["--format", format, "--color", "never"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{format}: {text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("## INJECTED")),
            "{format}: {text}"
        );
        assert!(text.contains("a\\n## INJECTED\\u{1b}"), "{format}: {text}");
        if format == "markdown" {
            // Outside code spans (where Markdown reads nothing), no HTML, no image, no link:
            // the name's markup is backslash-escaped (found by a bad-input hunt: a name
            // rendered as an image in the step summary).
            let outside: String = text
                .lines()
                .map(|l| l.split('`').step_by(2).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n");
            let unescaped = |pat: &str| {
                outside
                    .match_indices(pat)
                    .any(|(i, _)| !outside[..i].ends_with('\\'))
            };
            for pat in ["<img", "[px]", "https://"] {
                assert!(!unescaped(pat), "{pat}: {text}");
            }
            assert!(outside.contains("\\<img src=x>"), "{text}");
        }
    }
}

#[test]
fn names_with_quotes_and_braces_align_by_content() {
    // Alignment by content states its pairs as a map: a quote or a backslash in a name is
    // escaped there as TOML, a brace doubled (a map pattern reads `{X}` as a capture). Until
    // 2026-12-05 a name with a brace was left out of the pairs, and a wrong tensor so named
    // passed with exit 0 (a bad-input hunt); now its pair is compared and found, and the
    // suggested map passes back.
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (dir.path().join("o.npz"), dir.path().join("r.npz"));
    let values: Vec<Vec<f32>> = (0..5)
        .map(|k| {
            (0..32)
                .map(|i| ((i * 7 + k * 13) % 11) as f32 - 5.0)
                .collect()
        })
        .collect();
    let wrong: Vec<f32> = values[2].iter().map(|x| x * 1.5).collect();
    let shape: &[usize] = &[4, 8];
    write_dump(
        &ours,
        &[
            ("q\"uote", shape, &values[0]),
            ("back\\slash", shape, &values[1]),
            ("br{ace}", shape, &wrong),
            ("x{L}0", shape, &values[3]),
            ("e5", shape, &values[4]),
        ],
        None,
    );
    write_dump(
        &reference,
        &[
            ("r0", shape, &values[0]),
            ("r1", shape, &values[1]),
            ("r2", shape, &values[2]),
            ("r{3}", shape, &values[3]),
            // A line break in the reference's name: a map may name it (a hunt: the suggested
            // map left the pair out, and passed back compared one pair less, exit 0).
            ("n\nl", shape, &values[4]),
        ],
        None,
    );
    let suggested = dir.path().join("s.toml");
    let run = diff_files(
        &ours,
        &reference,
        &[
            "--format",
            "json",
            "--suggest-map",
            suggested.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let r = run.json();
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(warning.contains("5 compared"), "{warning}");
    assert!(!warning.contains("left out"), "{warning}");
    let status = |r: &serde_json::Value, n: &str| {
        let rows = r["ops"].as_array().unwrap();
        let row = rows.iter().find(|o| o["name"] == n).expect(n);
        row["status"].as_str().unwrap().to_string()
    };
    for (name, want) in [
        ("r0", "ok"),
        ("r1", "ok"),
        ("r2", "diverged"),
        ("r{3}", "ok"),
        ("n\nl", "ok"),
    ] {
        assert_eq!(status(&r, name), want, "{name}");
    }
    assert_eq!(r["first_divergence"]["name"], "r2");
    // The suggestion, passed back, compares the same pairs.
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(text.contains(r#"from = "q\"uote""#), "{text}");
    assert!(text.contains(r#"from = "br{{ace}}""#), "{text}");
    assert!(
        text.contains(
            r#"from = "x{{L}}0"
to = "r{{3}}""#
        ),
        "{text}"
    );
    let again = diff_files(
        &ours,
        &reference,
        &["--format", "json", "--map", suggested.to_str().unwrap()],
    );
    assert_eq!(again.code, 1);
    let again = again.json();
    assert_eq!(again["summary"]["ok"], 4, "{again}");
    assert_eq!(status(&again, "r2"), "diverged");
}

#[test]
fn a_pipe_in_a_name_keeps_every_markdown_table_whole() {
    // Found by a bad-input hunt: the per-step and per-layer tables wrote names without
    // escaping `|`, so a cell split and the "first diverging op" column named the wrong op.
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (dir.path().join("o.npz"), dir.path().join("r.npz"));
    let name = "model.layers.0.a|b";
    for (path, scale) in [(&ours, 2.0f32), (&reference, 1.0)] {
        let mut w = DumpWriter::create(path).unwrap();
        let prefill = [1.0f32, 2.0, 3.0, 4.0];
        let step: Vec<f32> = [5.0f32, 6.0].iter().map(|x| x * scale).collect();
        w.add(name, &[1, 2, 2], TensorData::F32(&prefill)).unwrap();
        w.add(&format!("{name}@1"), &[1, 1, 2], TensorData::F32(&step))
            .unwrap();
        let mut meta = Meta {
            input_ids: Some(vec![1, 2]),
            ..Meta::default()
        };
        meta.extra.insert("decode_steps".into(), 1.into());
        meta.extra
            .insert("decode_ids".into(), serde_json::json!([3]));
        w.finish(meta).unwrap();
    }
    let run = diff_files(&ours, &reference, &["--format", "markdown"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    // Every table row has its header's number of cells (an escaped `\|` is not a border).
    let cells = |l: &str| l.replace("\\|", "").matches('|').count();
    let mut in_table = None;
    for l in run.stdout.lines() {
        if !l.starts_with('|') {
            in_table = None;
            continue;
        }
        let n = *in_table.get_or_insert(cells(l));
        assert_eq!(cells(l), n, "{l}\n{}", run.stdout);
    }
    assert!(run.stdout.contains("### Per step"), "{}", run.stdout);
    assert!(
        run.stdout.contains("`model.layers.0.a\\|b@1`"),
        "{}",
        run.stdout
    );
}

/// `run`'s status line names the dump as errors do: its control characters escaped, one line
/// (a bad-input hunt: `--out $'a\nb.npz'` printed two lines, and an escape sequence in the
/// name reached the terminal).
#[test]
fn run_s_status_line_is_one_line_whatever_the_dump_s_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a\nb\u{1b}[31m.npz");
    let run = divergence(&[
        "run",
        "--model",
        "fixtures/tiny-qwen3",
        "--ids",
        "1,2,3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("a\\nb\\u{1b}[31m.npz"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\u{1b}'));
}

/// Dumps whose compared ops hold no element compared nothing: no verdict, exit 2, said on
/// stderr and at the report's top (a bad-input hunt: "no divergence", exit 0, under a warning).
#[test]
fn ops_that_hold_no_element_are_no_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    for p in [&a, &b] {
        write_dump(p, &[("x", &[0, 4], &[]), ("y", &[2, 0], &[])], None);
    }
    let run = divergence(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--format",
        "table",
    ]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(
        run.stdout.contains(
            "NOTHING COMPARED: each of the 2 ops compared holds no element on either side; no verdict"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("NO DIVERGENCE"), "{}", run.stdout);
    assert!(
        run.stdout.contains("; nothing compared") && !run.stdout.contains("no divergence in"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.trim_end().ends_with(
            "nothing was compared: each of the 2 ops compared holds no element on either side"
        ),
        "{}",
        run.stderr
    );
}
