//! A report whose decode steps are kept compact ([`Rows`] runs): `assemble`, the table and
//! Markdown views (with the default options, `--layer`, `--grep`, `--all`, a width and
//! colours), the HTML page, the growth plot and the terminal view (every sort, a filter, the
//! jumps, the details, the overviews) never build its rows (`Rows::is_built` stays false); the
//! report, the bytes written and the frames drawn are those of the same rows built, and every
//! view of a row reads its built row's fields.

mod common;
use common::{act, perturb, press};
use divergence_diff::*;
use divergence_render::tui::Tui;
use divergence_render::{
    render_growth_svg, render_html, render_json, render_markdown, render_table, Regex, TableOptions,
};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;

/// Decode steps of every probe (step 0, the prefill, is a plain row).
const STEPS: usize = 6;

/// Decode steps enough for 6,000 rows and more: the HTML page's table is paged (past 2,000
/// rows) and the growth plot dense (past ~5,000 rows, 4 per pixel column).
const MANY_STEPS: usize = 480;

/// Elements per step.
const SHAPE: [usize; 2] = [2, 4];

/// One probe: its name, whether it has a prefill row, and our error at each step.
struct Probe {
    name: String,
    prefill: bool,
    eps: fn(usize) -> f32,
}

fn probes(hostile: bool) -> Vec<Probe> {
    let noise: fn(usize) -> f32 = |_| 1e-7;
    // Layer 1's mlp goes wrong from decode step 3 on, and carries into what follows it.
    let bug: fn(usize) -> f32 = |s| if s >= 3 { 5e-2 } else { 1e-7 };
    let mut out = Vec::new();
    for l in 0..3 {
        for op in ["self_attn.k_proj", "self_attn.k_norm", "mlp"] {
            let eps = if l == 1 && op == "mlp" || l == 2 {
                bug
            } else {
                noise
            };
            out.push(Probe {
                name: format!("model.layers.{l}.{op}"),
                prefill: true,
                eps,
            });
        }
        out.push(Probe {
            name: format!("model.layers.{l}"),
            prefill: true,
            eps: if l >= 1 { bug } else { noise },
        });
    }
    if hostile {
        // Only in the decode steps: its rows are all compact steps, so only the steps' view
        // can see that the name needs escaping.
        out.push(Probe {
            name: "model.layers.2.x\u{1b}[2J\n## h".to_string(),
            prefill: false,
            eps: noise,
        });
        // A probe's name that reads as a step's, twice: its steps' names (`k_norm@5@7@1`)
        // are of another op kind than its own (`Op::of` drops `@7`, then `@5`: a q/k norm).
        out.push(Probe {
            name: "model.layers.1.self_attn.k_norm@5@7".to_string(),
            prefill: false,
            eps: noise,
        });
    }
    out.push(Probe {
        name: "model.norm".to_string(),
        prefill: true,
        eps: bug,
    });
    out
}

/// The rows in execution order: every probe's prefill, then each of `steps` decode steps'
/// probes, then an unreadable probe. Each probe's decode steps are one run
/// ([`compare_step_run`]); step 4 of layer 0's mlp has a NaN, so it is a plain row within its
/// run.
fn rows(hostile: bool, steps: usize) -> Rows {
    let cfg = DiffConfig::default();
    let probes = probes(hostile);
    let n: usize = SHAPE.iter().product();
    let prefill: Vec<usize> = probes
        .iter()
        .enumerate()
        .filter_map(|(p, probe)| probe.prefill.then_some(p))
        .collect();
    let total = prefill.len() + steps * probes.len() + 1;
    let mut b = RowsBuilder::new(total);
    fn side(v: &[f32]) -> Side<'_> {
        Side {
            shape: &SHAPE,
            values: ValuesRef::F32(v),
            dtype: "float32",
        }
    }
    for (i, &p) in prefill.iter().enumerate() {
        let r = act(n, p * 31);
        let o = perturb(&r, 1e-7);
        b.put(
            i,
            compare(&probes[p].name, Some(side(&o)), Some(side(&r)), &cfg),
        );
    }
    for (p, probe) in probes.iter().enumerate() {
        let names: Vec<Name> = (1..=steps)
            .map(|s| Name::from(format!("{}@{s}", probe.name)))
            .collect();
        let mut r = Vec::new();
        let mut o = Vec::new();
        for s in 1..=steps {
            let rs = act(n, p * 31 + s);
            o.extend(perturb(&rs, (probe.eps)(s)));
            r.extend(rs);
        }
        if probe.name == "model.layers.0.mlp" {
            o[3 * n + 1] = f32::NAN; // step 4
        }
        let at: Vec<usize> = (0..steps)
            .map(|k| prefill.len() + k * probes.len() + p)
            .collect();
        b.put_run(
            &at,
            compare_step_run(StepNames::Given(&names), side(&o), side(&r), &cfg),
        );
    }
    b.put(
        total - 1,
        unreadable(
            "model.layers.2.extra",
            Which::Ours,
            "truncated file".to_string(),
        ),
    );
    b.finish()
}

/// A report of `steps` decode steps whose rows are compact and not built: assembled (which may
/// build its rows), then given the same rows afresh, with the assembled rows' local growths.
fn compact_report(hostile: bool, steps: usize) -> Report {
    let cfg = DiffConfig::default();
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    let mut report = assemble(rows(hostile, steps), ctx, &cfg);
    let growths: Vec<Option<f64>> = report.ops.rows().map(|r| r.local_growth()).collect();
    let mut fresh = rows(hostile, steps);
    fresh.set_local_growths(growths);
    report.ops = fresh;
    assert!(report.ops.is_compact());
    assert!(!report.ops.is_built());
    report
}

/// The same report with every row an `OpResult`.
fn plain(report: &Report) -> Report {
    Report {
        ops: Rows::from(report.ops.clone().into_vec()),
        ..report.clone()
    }
}

fn table(report: &Report, opts: &TableOptions) -> String {
    let mut out = Vec::new();
    render_table(report, opts, &mut out).expect("render table");
    String::from_utf8(out).expect("utf-8")
}

fn markdown(report: &Report, opts: &TableOptions) -> String {
    let mut out = Vec::new();
    render_markdown(report, opts, &mut out).expect("render markdown");
    String::from_utf8(out).expect("utf-8")
}

fn html(report: &Report) -> String {
    let mut out = Vec::new();
    render_html(report, &mut out).expect("render html");
    String::from_utf8(out).expect("utf-8")
}

fn growth_svg(report: &Report) -> String {
    let mut out = Vec::new();
    render_growth_svg(report, &mut out).expect("render the growth plot");
    String::from_utf8(out).expect("utf-8")
}

/// The HTML page (its growth plot and heatmap within) and the standalone growth plot of a
/// compact report: its rows not built, the bytes those of the same rows built. Gives the
/// page and the plot.
fn assert_draws_unbuilt(report: &Report) -> (String, String) {
    let built = plain(report);
    assert!(
        !report.ops.is_built(),
        "making the plain copy built nothing"
    );
    let plot = growth_svg(report);
    assert!(!report.ops.is_built(), "growth plot: the rows were built");
    assert!(
        plot == growth_svg(&built),
        "growth plot: not the built report's bytes"
    );
    let page = html(report);
    assert!(!report.ops.is_built(), "html: the rows were built");
    assert!(page == html(&built), "html: not the built report's bytes");
    (page, plot)
}

/// The options of the CLI's table and Markdown views worth telling apart here.
fn options() -> Vec<(&'static str, TableOptions)> {
    let grep = |p: &str| Some(Regex::new(p).expect("a valid pattern"));
    let d = TableOptions::default;
    vec![
        ("default", d()),
        (
            "--layer 1",
            TableOptions {
                layer: Some(1),
                ..d()
            },
        ),
        (
            "--grep k_norm$",
            TableOptions {
                grep: grep("k_norm$"),
                ..d()
            },
        ),
        (
            "--grep @3$",
            TableOptions {
                grep: grep("@3$"),
                ..d()
            },
        ),
        (
            "--layer 0 --grep mlp",
            TableOptions {
                layer: Some(0),
                grep: grep("mlp"),
                ..d()
            },
        ),
        ("--all", TableOptions { all: true, ..d() }),
        (
            "--all, colour, width 100",
            TableOptions {
                all: true,
                color: true,
                width: Some(100),
                ..d()
            },
        ),
        (
            "--context 1000",
            TableOptions {
                context: 1000,
                ..d()
            },
        ),
    ]
}

fn assert_renders_unbuilt(report: &Report) {
    let built = plain(report);
    assert!(
        !report.ops.is_built(),
        "making the plain copy built nothing"
    );
    for (what, opts) in options() {
        let got = table(report, &opts);
        assert!(!report.ops.is_built(), "table, {what}: the rows were built");
        assert_eq!(got, table(&built, &opts), "table, {what}");
        let got = markdown(report, &opts);
        assert!(
            !report.ops.is_built(),
            "markdown, {what}: the rows were built"
        );
        assert_eq!(got, markdown(&built, &opts), "markdown, {what}");
    }
}

#[test]
fn table_and_markdown_never_build_a_compact_report() {
    let report = compact_report(false, STEPS);
    // Premises: the first divergence is a compact step, a step with a NaN is a plain row, and
    // there is an unreadable row and rows of several layers.
    let f = report.first_divergence.as_ref().expect("a divergence");
    assert_eq!(f.name, "model.layers.1.mlp@3");
    assert!(matches!(report.ops.row(f.index), Row::Step(..)));
    assert!(report
        .ops
        .rows()
        .any(|r| matches!(r, Row::Plain(o) if o.step == 4 && o.status == Status::Nonfinite)));
    assert!(report.ops.rows().any(|r| r.status() == Status::Unreadable));
    let text = table(&report, &TableOptions::default());
    assert!(
        text.contains("FIRST DIVERGENCE: model.layers.1.mlp@3"),
        "{text}"
    );
    assert!(text.contains("Per layer"), "{text}");
    assert!(text.contains("Unreadable: model.layers.2.extra"), "{text}");
    assert!(text.contains("Per step"), "{text}");
    assert_renders_unbuilt(&report);
}

/// A name that needs escaping, held only by compact steps: the scan of the rows' views finds
/// it (the copy made safe is escaped in place, its runs' names, and the report itself is left
/// as it is) and the output is the built report's, escaped.
#[test]
fn a_hostile_step_name_is_escaped_without_building_the_report() {
    let report = compact_report(true, STEPS);
    assert!(report
        .ops
        .rows()
        .any(|r| matches!(r, Row::Step(..)) && r.base().contains('\u{1b}')));
    assert!(!report
        .ops
        .rows()
        .any(|r| matches!(r, Row::Plain(_)) && r.base().contains('\u{1b}')));
    assert_renders_unbuilt(&report);
    let all = TableOptions {
        all: true,
        ..TableOptions::default()
    };
    let text = table(&report, &all);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(
        text.contains(r"model.layers.2.x\u{1b}[2J\n## h@1"),
        "{text}"
    );
    let text = markdown(&report, &all);
    assert!(!text.contains('\u{1b}'), "{text}");
}

/// The HTML page and the growth plot of a small report (its table live, every marker drawn),
/// with and without a name that needs escaping, held only by compact steps.
#[test]
fn html_and_growth_plot_never_build_a_compact_report() {
    for hostile in [false, true] {
        let report = compact_report(hostile, STEPS);
        let (page, plot) = assert_draws_unbuilt(&report);
        // Premises: the first divergence is a compact step, the table is live, the heatmap is
        // drawn, the plot has a marker (and its tooltip) per row.
        let f = report.first_divergence.as_ref().expect("a divergence");
        assert!(matches!(report.ops.row(f.index), Row::Step(..)));
        assert!(
            page.contains("First divergence: <span class=\"bad\">model.layers.1.mlp@3</span>"),
            "{page}"
        );
        assert!(!page.contains("data-paged=\"1\""));
        assert!(page.contains("<section id=\"heatmap\">"));
        assert_eq!(plot.matches("<title>#").count(), report.ops.len());
        if hostile {
            assert!(!page.contains('\u{1b}') && !plot.contains('\u{1b}'));
            // The page shows names made safe as the terminal table does (since 2026-12-05).
            assert!(page.contains("data-name=\"model.layers.2.x\\u{1b}[2J\\n## h@1\""));
            assert!(plot.contains("model.layers.2.x\u{FFFD}[2J\n## h@1\nstatus"));
        }
    }
}

/// The HTML page and the growth plot of a large report: its table paged (each page's rows
/// built as the page is written), its plot's markers thinned.
#[test]
fn a_large_compact_report_draws_paged_and_dense_without_being_built() {
    let report = compact_report(true, MANY_STEPS);
    let (page, plot) = assert_draws_unbuilt(&report);
    assert!(page.contains("data-paged=\"1\""));
    assert!(page.contains("<section id=\"heatmap\">"));
    let markers = plot.matches("<title>#").count();
    assert!(
        0 < markers && markers < report.ops.len(),
        "{markers} markers of {} rows",
        report.ops.len()
    );
}

/// `assemble` reads compact rows through their views without building them, and makes the
/// report it makes of the same rows built (the heads: first divergence, origin, summaries,
/// amplification, growths), and the same rows.
#[test]
fn assemble_reads_compact_rows_as_their_built_rows() {
    let cfg = DiffConfig::default();
    let ctx = || ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    for hostile in [false, true] {
        let compact = assemble(rows(hostile, STEPS), ctx(), &cfg);
        assert!(compact.ops.is_compact());
        assert!(!compact.ops.is_built(), "assemble built the rows");
        let built = assemble(rows(hostile, STEPS).into_vec(), ctx(), &cfg);
        assert!(!built.ops.is_compact());
        // Premises: a divergence in a compact step, amplification rows, growths.
        let first = compact.first_divergence.as_ref().expect("a divergence");
        assert!(matches!(compact.ops.row(first.index), Row::Step(..)));
        assert!(!compact.amplification.rows.is_empty());
        assert!(compact.origin.is_some());
        assert_eq!(compact, built);
        // Each view's fields against its built row: the property test
        // `steps_in_one_call_are_each_step_alone` (divergence-diff).
        for (i, op) in built.ops.iter().enumerate() {
            let row = compact.ops.row(i);
            assert_eq!(&*row.op(), op);
        }
        assert!(!compact.ops.is_built());
    }
}

/// The JSON of a compact report is serde_json's of the same rows built, byte for byte, and
/// writing it builds no row of the report: its steps within tolerance are written from their
/// sums (`json.rs` `write_step`), the others built one at a time. (`STEPS`' report, under 256
/// rows, is written by serde whole; `MANY_STEPS`' by the row writer.)
#[test]
fn json_of_compact_rows_is_that_of_the_rows_built() {
    for steps in [STEPS, MANY_STEPS] {
        for hostile in [false, true] {
            let report = compact_report(hostile, steps);
            // Premises: steps written from their sums, and steps built (diverged ones).
            let kinds = |ok: bool| {
                report
                    .ops
                    .rows()
                    .filter(|r| matches!(r, Row::Step(..)) && (r.status() == Status::Ok) == ok)
                    .count()
            };
            assert!(kinds(true) > 0 && kinds(false) > 0, "{steps} {hostile}");
            let mut got = Vec::new();
            render_json(&report, &mut got).expect("render json");
            assert!(!report.ops.is_built(), "writing the JSON built the rows");
            let mut want = serde_json::to_vec_pretty(&plain(&report)).expect("serde_json");
            want.push(b'\n');
            assert!(
                got == want,
                "{steps} steps (hostile {hostile}): the JSON of compact rows differs"
            );
        }
    }
}

/// A frame of the terminal view at `width` x `height`.
fn frame(tui: &mut Tui, width: u16, height: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    term.draw(|f| tui.draw(f)).expect("a frame");
    term.backend().buffer().clone()
}

/// A frame's text, for the message of a failed comparison.
fn frame_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// The keys of each action the terminal view is driven through: every column switched on
/// (each metric drawn), every sort key both ways, filters, the jumps, the details, the
/// overviews (`\n` is Enter, `\u{1b}` Esc).
fn tui_actions() -> Vec<(String, String)> {
    // The column chooser's lines (no truth columns), and those off when the view opens.
    let off = [4, 5, 6, 9, 11, 13, 15, 16, 17, 18, 19, 20];
    let columns: String = (0..21)
        .map(|i| if off.contains(&i) { " j" } else { "j" })
        .collect();
    let mut actions = vec![
        ("opened".to_string(), String::new()),
        ("details".to_string(), "\n".to_string()),
        ("every column".to_string(), format!("c{columns}\u{1b}")),
    ];
    for (dir, reverse) in [("", ""), (", reversed", "r")] {
        for k in 0..15 {
            actions.push((format!("sort key {k}{dir}"), format!("s{reverse}")));
            actions.push((format!("sort key {k}{dir}, moved"), "jjN".to_string()));
        }
    }
    for (what, keys) in [
        ("first divergence", "f"),
        ("origin", "o"),
        ("next divergences", "nnn"),
        ("previous divergence", "N"),
        ("next step", "]"),
        ("previous step", "[["),
        ("last row", "G"),
        ("filter mlp", "/mlp\n"),
        ("filter, first divergence", "f"),
        ("filter @3$", "/@3$\n"),
        ("filter layer 2", "/2\n"),
        ("filter hiding the first divergence", "/k_proj\nf"),
        ("filter cleared", "/\n"),
        ("details off", "d"),
        ("first divergence, details", "f\n"),
        ("per-layer overview", "l"),
        ("per-layer overview scrolled", "jj"),
        ("back", "l"),
        ("per-step overview", "p"),
        ("a step", "jjj"),
        ("its first diverging op", "\n"),
        ("help", "?"),
        ("closed", "x"),
    ] {
        actions.push((what.to_string(), keys.to_string()));
    }
    actions
}

/// The terminal view of a compact report, driven through every sort key, filters, the jumps,
/// the details and the overviews: its rows are never built (where a name needs escaping too:
/// the view makes its own report safe in place, its runs' names and no step), and every frame
/// is the frame of the same rows built.
#[test]
fn the_tui_never_builds_a_compact_report() {
    for hostile in [false, true] {
        let report = compact_report(hostile, STEPS);
        // Premise: the view opens on a compact step.
        let first = report.first_divergence.as_ref().expect("a divergence");
        assert!(matches!(report.ops.row(first.index), Row::Step(..)));
        let built = plain(&report);
        let mut tui = Tui::new(report);
        let mut twin = Tui::new(built);
        assert!(!tui.report().ops.is_built(), "opened");
        let mut sorts = Vec::new();
        let mut escaped = false;
        for (what, keys) in tui_actions() {
            press(&mut tui, &keys);
            press(&mut twin, &keys);
            for (w, h) in [(80, 24), (200, 50)] {
                let (got, want) = (frame(&mut tui, w, h), frame(&mut twin, w, h));
                assert!(
                    got == want,
                    "{what} ({w}x{h}, hostile {hostile}):\n{}\nbuilt:\n{}",
                    frame_text(&got),
                    frame_text(&want)
                );
                let text = frame_text(&got);
                assert!(!text.contains('\u{1b}'), "{what}: {text}");
                escaped |= text.contains(r"model.layers.2.x\u{1b}[2J\n## h@");
            }
            assert_eq!(tui.shown(), twin.shown(), "{what}");
            assert_eq!(tui.selected(), twin.selected(), "{what}");
            assert_eq!(tui.sort(), twin.sort(), "{what}");
            if !sorts.contains(&tui.sort()) {
                sorts.push(tui.sort());
            }
            assert!(!tui.report().ops.is_built(), "{what}: the rows were built");
        }
        // Every sort key (no truth keys) was drawn both ways.
        assert_eq!(sorts.len(), 30);
        assert_eq!(escaped, hostile);
    }
}
