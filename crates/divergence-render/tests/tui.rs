//! The interactive view (`divergence diff --tui`) without a terminal: keys into `Tui::key`,
//! frames drawn into ratatui's `TestBackend`, snapshots of the text at 80 and 120 columns
//! (and of the column chooser, the key help and the per-position plot at 80x24, and of the
//! per-layer overview of a one-pass and of a decode report).

mod common;
use common::press;
use divergence_diff::*;
use divergence_render::tui::{SortKey, Tui};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;

/// 30 ops over 3 layers; layer 1's k_norm diverges (and everything after it), one probe only
/// in the reference.
fn report() -> Report {
    let cfg = DiffConfig::default();
    let mut rows = Vec::new();
    let mut names = vec!["model.embed_tokens".to_string()];
    for l in 0..3 {
        for op in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.k_norm",
            "self_attn.o_proj",
            "mlp.down_proj",
        ] {
            names.push(format!("model.layers.{l}.{op}"));
        }
        names.push(format!("model.layers.{l}"));
    }
    names.push("model.norm".to_string());
    names.push("lm_head".to_string());
    let bad_from = names
        .iter()
        .position(|n| n == "model.layers.1.self_attn.k_norm")
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let r: Vec<f32> = (0..48)
            .map(|k| ((k + i) as f32 * 0.37).sin() + 0.2)
            .collect();
        let eps = if i >= bad_from {
            0.01 * (1 + i - bad_from) as f32
        } else {
            0.0
        };
        let o: Vec<f32> = r.iter().map(|x| x * (1.0 + eps)).collect();
        let o_side = (name != "lm_head").then_some(side(&o));
        let row = compare(name, o_side, Some(side(&r)), &cfg);
        rows.push(row);
    }
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    assemble(rows, ctx, &cfg)
}

fn side(v: &[f32]) -> Side<'_> {
    Side {
        shape: &[1, 4, 12],
        values: ValuesRef::F32(v),
        dtype: "float32",
    }
}

fn screen(tui: &mut Tui, width: u16, height: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| tui.draw(f)).unwrap();
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        // A no-break space (the details keep a label and its number together with one) is
        // shown as a space.
        let line = line.replace('\u{a0}', " ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn selected(tui: &Tui) -> String {
    tui.selected()
        .map(|o| o.name.to_string())
        .unwrap_or_default()
}

#[test]
fn opens_on_the_first_divergence_and_fits_80_columns() {
    let mut tui = Tui::new(report());
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    let text = screen(&mut tui, 80, 24);
    assert!(text.lines().all(|l| l.chars().count() <= 80));
    insta::assert_snapshot!("tui_80x24", text);
    insta::assert_snapshot!("tui_120x30", screen(&mut tui, 120, 30));
}

#[test]
fn narrow_terminals_keep_name_status_and_rel_err() {
    let mut tui = Tui::new(report());
    let text = screen(&mut tui, 40, 20);
    let row = text
        .lines()
        .find(|l| l.contains("k_norm") && l.contains("diverged"))
        .unwrap_or_else(|| panic!("{text}"));
    // The name keeps its tail; status and rel err stay.
    assert!(row.contains("…") && row.contains("1.000e-02"), "{row}");
    // Down to 20 columns nothing panics.
    for w in [30, 20, 10] {
        screen(&mut tui, w, 12);
    }
    // The per-layer overview scrolls.
    press(&mut tui, "l");
    let top = screen(&mut tui, 60, 9);
    press(&mut tui, "j");
    let scrolled = screen(&mut tui, 60, 9);
    assert!(
        top.contains("layer   0") && !scrolled.contains("layer   0"),
        "{scrolled}"
    );
    press(&mut tui, "l");
    // Ctrl-C quits, even while a filter is typed.
    press(&mut tui, "/ab");
    tui.key(KeyEvent::new(
        KeyCode::Char('c'),
        ratatui::crossterm::event::KeyModifiers::CONTROL,
    ));
    assert!(tui.quit());
}

/// The per-layer overview (`l`) of a one-pass report: a line per layer, as it was before the
/// decode reports' split (snapshot taken before it).
#[test]
fn the_layer_overview_of_one_pass_is_a_line_per_layer() {
    let mut tui = Tui::new(report());
    press(&mut tui, "l");
    insta::assert_snapshot!("tui_layers_one_pass_100x12", screen(&mut tui, 100, 12));
}

/// The details' text grows with what it holds, within the room the ops list leaves: a hint
/// that wraps past the fixed height was cut mid-sentence at any terminal height (a newcomer's
/// run); at a small terminal the list keeps its rows.
#[test]
fn details_are_as_tall_as_their_text_where_there_is_room() {
    let mut r = report();
    r.hints.push(Hint {
        code: HintCode::SkippedOp,
        op: "model.layers.1.self_attn.k_norm".into(),
        message: format!("{}END-OF-HINT", "a long hint ".repeat(30)),
        evidence: Default::default(),
    });
    let mut tui = Tui::new(r);
    press(&mut tui, "\n");
    assert!(screen(&mut tui, 80, 40).contains("END-OF-HINT"));
    let small = screen(&mut tui, 80, 16);
    assert!(small.contains(">> "), "{small}");
}

#[test]
fn keys_walk_the_divergences_filter_sort_and_show_details() {
    let mut tui = Tui::new(report());
    // n / N: next and previous divergent op from the cursor.
    press(&mut tui, "n");
    assert_eq!(selected(&tui), "model.layers.1.self_attn.o_proj");
    press(&mut tui, "NN");
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    assert!(screen(&mut tui, 80, 24).contains("no previous divergent op"));
    // g / G / f: top, bottom, back to the first divergence.
    press(&mut tui, "g");
    assert_eq!(selected(&tui), "model.embed_tokens");
    press(&mut tui, "G");
    assert_eq!(selected(&tui), "lm_head");
    press(&mut tui, "f");
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    // A layer number filters to that layer; the cursor stays on its op.
    press(&mut tui, "/1\n");
    assert!(
        tui.shown().iter().all(|n| n.contains("layers.1")),
        "{:?}",
        tui.shown()
    );
    assert_eq!(tui.shown().len(), 7);
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    // A regex; a bad one is a message, the filter stays.
    press(&mut tui, "/k_(proj|norm)$\n");
    assert_eq!(tui.shown().len(), 6);
    press(&mut tui, "/(\n");
    assert_eq!(tui.shown().len(), 6);
    assert!(screen(&mut tui, 80, 24).contains("not a regex: ("));
    // Esc cancels typing; an empty filter clears it.
    press(&mut tui, "/zzz\u{1b}");
    assert_eq!(tui.shown().len(), 6);
    press(&mut tui, "/\n");
    assert_eq!(tui.shown().len(), 24);
    // s: sort by rel err, largest first; the cursor keeps its op.
    press(&mut tui, "s");
    assert_eq!(tui.shown()[0], "model.norm");
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    // S walks the keys backwards.
    press(&mut tui, "S");
    assert_eq!(
        tui.shown()[0],
        "model.embed_tokens",
        "back to execution order"
    );
    // Enter: details of the selected op, with its reason and norms.
    press(&mut tui, "\n");
    let text = screen(&mut tui, 100, 30);
    assert!(
        text.contains("||ours - ref||") && text.contains("max|o-r|"),
        "{text}"
    );
    // l: per layer overview.
    press(&mut tui, "l");
    let text = screen(&mut tui, 100, 30);
    assert!(
        text.contains("layer   1") && text.contains("diverged"),
        "{text}"
    );
    press(&mut tui, "q");
    assert!(tui.quit());
}

#[test]
fn a_reloaded_report_keeps_the_cursor_on_the_same_op() {
    let mut tui = Tui::new(report());
    press(&mut tui, "nn");
    let before = selected(&tui);
    let mut next = report();
    // The new report has one op fewer before the cursor.
    next.ops.remove(0);
    tui.replace(next);
    assert_eq!(selected(&tui), before);
    assert!(screen(&mut tui, 80, 24).contains("reloaded"));
}

/// The columns of the header row (the line under the table's title).
fn header_row(text: &str) -> &str {
    text.lines()
        .find(|l| l.contains("status") && l.contains(" op "))
        .unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn sorts_by_any_metric_both_ways_missing_values_last() {
    let mut with_nan = report();
    // A NaN rel err: never first, whichever the direction.
    with_nan.ops[3].errors.rel_l2_err = Some(f64::NAN);
    let mut tui = Tui::new(with_nan);
    let k_norm = "model.layers.1.self_attn.k_norm";
    // S from the execution order: the last key, the element count; every op has 48, so the
    // ties keep the execution order (a stable sort).
    press(&mut tui, "S");
    assert_eq!(tui.sort(), (SortKey::Numel, true));
    assert_eq!(tui.shown(), Tui::new(report()).shown());
    assert!(screen(&mut tui, 80, 24).contains("sort: numel ↓"));
    // the sort key's column is shown, though off by default (a user's check)
    let header = |tui: &mut Tui| {
        let text = screen(tui, 160, 24);
        text.lines()
            .find(|l| l.contains("rel err"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(header(&mut tui).contains("numel"), "{}", header(&mut tui));
    assert!(!header(&mut Tui::new(report())).contains("numel"));
    // s six times from the execution order: ||ours - ref||, largest first.
    press(&mut tui, "s");
    press(&mut tui, "ssssss");
    assert_eq!(tui.sort(), (SortKey::DiffL2, true));
    let shown = tui.shown();
    assert_eq!(shown[0], "model.norm");
    assert_eq!(shown[shown.len() - 1], "lm_head", "no value: last");
    assert_eq!(selected(&tui), k_norm, "the cursor keeps its op");
    let text = screen(&mut tui, 80, 24);
    assert!(text.contains("sort: ||ours-ref|| ↓"), "{text}");
    assert!(text.contains("sort: ||ours-ref||, largest first"), "{text}");
    // r: smallest first; the exact ops first, in execution order; lm_head still last.
    press(&mut tui, "r");
    assert_eq!(tui.sort(), (SortKey::DiffL2, false));
    let shown = tui.shown();
    assert_eq!(
        &shown[..2],
        ["model.embed_tokens", "model.layers.0.input_layernorm"]
    );
    assert_eq!(shown[shown.len() - 1], "lm_head");
    assert_eq!(selected(&tui), k_norm);
    assert!(screen(&mut tui, 80, 24).contains("sort: ||ours-ref|| ↑"));
    // Rel err (S walks back to it, in its default direction): the NaN row and the row without
    // a value last in both directions, in execution order.
    press(&mut tui, "SSSSS");
    assert_eq!(tui.sort(), (SortKey::RelErr, true));
    let nan_row = "model.layers.0.self_attn.k_proj";
    for dir in ["", "r"] {
        press(&mut tui, dir);
        let shown = tui.shown();
        assert_eq!(&shown[shown.len() - 2..], [nan_row, "lm_head"], "{dir:?}");
        assert_eq!(selected(&tui), k_norm);
    }
    assert_eq!(tui.sort(), (SortKey::RelErr, false));
    // The sorted column's header carries the direction.
    let text = screen(&mut tui, 80, 24);
    assert!(header_row(&text).contains("rel err↑"), "{text}");
    // r on the execution order reverses it.
    press(&mut tui, "S");
    assert_eq!(tui.sort(), (SortKey::Order, false));
    press(&mut tui, "r");
    assert_eq!(tui.shown()[0], "lm_head");
    assert!(screen(&mut tui, 80, 24).contains("execution order, reversed"));
}

#[test]
fn columns_can_be_hidden_and_shown_but_not_the_name() {
    let mut tui = Tui::new(report());
    let text = screen(&mut tui, 74, 24);
    assert!(header_row(&text).contains("max|o-r|"), "{text}");
    assert!(
        !header_row(&text).contains("error"),
        "no room at 74: {text}"
    );
    // c opens the chooser: every column with its state.
    press(&mut tui, "c");
    let chooser = screen(&mut tui, 74, 24);
    assert!(
        chooser.contains("[x] max|o-r|") && chooser.contains("[ ] cosine"),
        "{chooser}"
    );
    assert!(
        chooser.contains("[x] error") && chooser.contains("(no room)"),
        "{chooser}"
    );
    insta::assert_snapshot!("tui_columns_74x24", chooser);
    // The name cannot be hidden.
    press(&mut tui, "jj ");
    assert!(screen(&mut tui, 74, 24).contains("cannot be hidden"));
    // Hide max|o-r| (the 11th line): it leaves the table, and the born / carried mark, next
    // by priority, now fits 74 columns.
    press(&mut tui, "jjjjjjjj \u{1b}");
    let text = screen(&mut tui, 74, 24);
    let header = header_row(&text);
    assert!(!header.contains("max|o-r|"), "{text}");
    assert!(
        !text.contains("1.198e-02"),
        "the k_norm's max abs err: {text}"
    );
    assert!(
        header.contains(" op ") && header.contains("error"),
        "{text}"
    );
    assert!(text.contains("born"), "{text}");
    // Switched on, a column comes right after the rel err in priority: it shows at 74.
    press(&mut tui, "cGkkkk \u{1b}");
    let text = screen(&mut tui, 74, 24);
    assert!(header_row(&text).contains("cosine"), "{text}");
    assert!(text.contains("1.000000"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 74));
    // Narrow widths still drop by priority among the visible columns: name, status, rel err.
    let narrow = screen(&mut tui, 40, 20);
    let header = header_row(&narrow);
    assert!(
        header.contains("rel err") && !header.contains("cosine"),
        "{narrow}"
    );
    // Hiding everything but the name leaves the name.
    press(&mut tui, "c");
    for _ in 0..24 {
        press(&mut tui, "x");
        press(&mut tui, "j");
    }
    press(&mut tui, "\u{1b}");
    let text = screen(&mut tui, 74, 24);
    assert!(text.contains("model.layers.1.self_attn.k_norm"), "{text}");
    assert!(!tui.quit(), "Esc and q close the chooser, not the view");
}

#[test]
fn the_help_scrolls_where_the_terminal_is_too_small() {
    let mut tui = Tui::new(report());
    press(&mut tui, "?");
    // At 60x20 the help is taller than the terminal: it was cut, its last keys unseen. Now
    // its title says which lines are shown and j/k scroll it.
    let top = screen(&mut tui, 60, 20);
    assert!(
        top.contains("keys, lines 1-") && top.contains("j/k scroll"),
        "{top}"
    );
    assert!(top.contains("j k ↓ ↑") && !top.contains("Ctrl-C"), "{top}");
    press(&mut tui, "G");
    let end = screen(&mut tui, 60, 20);
    assert!(
        end.contains("Ctrl-C") && end.contains("sort keys") && !end.contains("j k ↓ ↑"),
        "{end}"
    );
    // To the last sort key, at every width where it scrolls or fits (the box was one or two
    // lines short at 60 to 72 columns: a review).
    for width in [40, 50, 60, 61, 62, 64, 72, 80, 100] {
        for height in [12, 20, 40] {
            let mut t = Tui::new(report());
            press(&mut t, "?");
            let mut text = screen(&mut t, width, height);
            if text.contains("j/k scroll") {
                press(&mut t, "G");
                text = screen(&mut t, width, height);
            }
            assert!(text.contains("numel"), "{width}x{height}: {text}");
        }
    }
    press(&mut tui, "k");
    assert!(screen(&mut tui, 60, 20).contains("Ctrl-C"), "one line up");
    press(&mut tui, "g");
    assert_eq!(screen(&mut tui, 60, 20), top);
    // Any other key closes it; opened again, it starts at its top.
    press(&mut tui, "x");
    assert!(!screen(&mut tui, 60, 20).contains("j/k scroll"));
    press(&mut tui, "?");
    assert_eq!(screen(&mut tui, 60, 20), top);
    // Where it fits, any key closes it, j too.
    let tall = screen(&mut tui, 80, 40);
    assert!(
        tall.contains("Ctrl-C") && tall.contains("(any key closes)"),
        "{tall}"
    );
    press(&mut tui, "j");
    assert!(!screen(&mut tui, 80, 40).contains("Ctrl-C"));
}

#[test]
fn the_help_lists_every_key() {
    let mut tui = Tui::new(report());
    press(&mut tui, "?");
    let text = screen(&mut tui, 80, 24);
    for key in [
        "s / S",
        "reverse",
        "columns",
        "per-layer",
        "sort keys: order, rel err",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
    assert!(text.lines().all(|l| l.chars().count() <= 80));
    insta::assert_snapshot!("tui_help_80x24", text);
    // Any key closes it (q too: it does not quit).
    press(&mut tui, "q");
    assert!(!tui.quit());
    assert!(!screen(&mut tui, 80, 24).contains("sort keys"));
    // The status bar at 120 columns lists every key.
    let wide = screen(&mut tui, 120, 30);
    let footer = wide.lines().last().unwrap();
    for key in [
        "f/o",
        "n/N",
        "s/S/r sort",
        "c columns",
        "l layers",
        "? help",
    ] {
        assert!(footer.contains(key), "{footer}");
    }
}

/// The fixture with a per-position profile of its first divergence: 16 positions, over the
/// tolerance from position 9 on.
fn report_with_positions() -> Report {
    let mut report = report();
    let t = 16;
    let rel_err: Vec<Option<f64>> = (0..t)
        .map(|p| {
            Some(if p < 9 {
                1e-5 * (p + 1) as f64
            } else {
                0.05 * (p - 8) as f64
            })
        })
        .collect();
    let over: Vec<bool> = (0..t).map(|p| p >= 9).collect();
    report.positions = Some(PositionProfile {
        op: "model.layers.1.self_attn.k_norm".to_string(),
        axis: 1,
        rel_err,
        rel_tol: vec![Some(1e-3); t],
        over,
        affected: 7,
        first_affected: Some(9),
        pattern: PositionPattern::From { start: 9 },
        steps: Vec::new(),
        positions: Vec::new(),
    });
    report
}

#[test]
fn details_plot_the_first_divergence_per_position() {
    let mut tui = Tui::new(report_with_positions());
    press(&mut tui, "\n");
    let text = screen(&mut tui, 80, 24);
    assert!(text.lines().all(|l| l.chars().count() <= 80));
    assert!(
        text.contains("rel err per position, log") && text.contains("over tolerance: 7 of 16"),
        "{text}"
    );
    // The 7 positions over the tolerance are marked, on the line labelled `over`.
    let marks = text
        .lines()
        .find(|l| l.starts_with("over"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(marks.matches('▲').count(), 7, "{marks}");
    // Decades from 1e-05 to 1e+00 label the log axis; the ops list keeps some rows.
    assert!(text.contains("1e+00") && text.contains("1e-05"), "{text}");
    assert!(
        text.contains(">> 11 model.layers.1.self_attn.k_norm"),
        "{text}"
    );
    insta::assert_snapshot!("tui_details_positions_80x24", text);
    // A profile that numbers its entries (here token positions 100-115) names those.
    let mut numbered = report_with_positions();
    numbered.positions.as_mut().unwrap().positions = (100..116).collect();
    let mut tui = Tui::new(numbered);
    press(&mut tui, "\n");
    let text = screen(&mut tui, 80, 24);
    assert!(text.contains("positions 100-115"), "{text}");
    // Many positions on a narrow terminal: merged into the bars that fit, nothing panics.
    let mut many = report_with_positions();
    let p = many.positions.as_mut().unwrap();
    p.rel_err = (0..500)
        .map(|i| (i != 7).then_some(1e-4 * (i + 1) as f64))
        .collect();
    p.rel_tol = vec![Some(1e-2); 500];
    p.over = (0..500).map(|i| i == 7 || i >= 100).collect();
    let mut tui = Tui::new(many);
    press(&mut tui, "\n");
    for (w, h) in [(80, 24), (40, 24), (20, 24), (120, 40), (80, 12)] {
        let text = screen(&mut tui, w, h);
        assert!(text.lines().all(|l| l.chars().count() <= usize::from(w)));
    }
    assert!(screen(&mut tui, 80, 24).contains("positions a bar"));
    // Another op's details have no plot.
    press(&mut tui, "j");
    let text = screen(&mut tui, 80, 24);
    assert!(
        !text.contains('▲') && !text.contains("rel err per position"),
        "{text}"
    );
}

#[test]
fn the_plot_caption_is_never_cut() {
    // 128 positions, all over a tolerance of 1.001e-3 (the 537-op benchmark's act_fn): the
    // caption is whole at every width it is shown, in full from 80 columns, short below.
    let mut report = report_with_positions();
    let p = report.positions.as_mut().unwrap();
    let t = 128;
    p.rel_err = vec![Some(0.5); t];
    p.rel_tol = vec![Some(1.001e-3); t];
    p.over = vec![true; t];
    p.affected = t;
    p.first_affected = Some(0);
    p.pattern = PositionPattern::All;
    let mut tui = Tui::new(report);
    press(&mut tui, "\n");
    for w in (20..=200).step_by(5).chain([47, 48, 49, 79, 81, 119, 121]) {
        let text = screen(&mut tui, w, 30);
        assert!(text.lines().all(|l| l.chars().count() <= usize::from(w)));
        let over = text
            .lines()
            .find(|l| l.contains('▲') && !l.starts_with("over"));
        let Some(over) = over else {
            assert!(w < 60, "no caption at {w} columns:\n{text}");
            continue;
        };
        let caption = over.rsplit("  ").next().unwrap();
        if w >= 80 {
            assert_eq!(caption, "▲ over tolerance: 128 of 128", "{w}:\n{text}");
            assert!(text.contains("─ rel tol 1.001e-03"), "{w}:\n{text}");
        } else {
            assert!(
                ["▲ over tolerance: 128 of 128", "▲ 128/128 over"].contains(&caption),
                "{w}: {caption:?}\n{text}"
            );
        }
    }
    let text = screen(&mut tui, 50, 30);
    assert!(
        text.contains("▲ 128/128 over") && text.contains("─ tol 1.001e-03"),
        "{text}"
    );
}

#[test]
fn other_input_ids_are_said_above_the_verdict_which_stays() {
    let cfg = DiffConfig::default();
    let rows = report().ops;
    let mut ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    ctx.ours_input_ids = Some(vec![1, 2, 3]);
    ctx.ref_input_ids = Some(vec![1, 2, 4]);
    let r = assemble(rows, ctx, &cfg);
    assert!(r.input_ids_mismatch);
    let mut tui = Tui::new(r);
    for (width, height) in [(80, 24), (120, 30)] {
        let text = screen(&mut tui, width, height);
        let lines: Vec<&str> = text.lines().collect();
        let alert = lines
            .iter()
            .position(|l| l.contains("!!! INPUT_IDS MISMATCH"));
        let verdict = lines
            .iter()
            .position(|l| l.contains("FIRST DIVERGENCE model.layers.1.self_attn.k_norm"));
        assert!(
            matches!((alert, verdict), (Some(a), Some(v)) if a < v && v < 6),
            "{width}x{height}:\n{text}"
        );
        // The summary line is whole in the header, before the table's column names.
        let summary = lines.iter().position(|l| l.starts_with("24 ops: "));
        assert!(summary.is_some_and(|s| s < 6), "{width}x{height}:\n{text}");
    }
}

/// 4 probes, the prefill and 3 decode steps; k_norm and the layer diverge from step 2, with
/// the profile across steps (named by the probe, as `diff` makes it), a warning and a note.
fn decode_report() -> Report {
    let cfg = DiffConfig::default();
    let probes = [
        "model.embed_tokens",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.k_norm",
        "model.layers.0",
    ];
    let mut rows = Vec::new();
    for step in 0..=3 {
        for (j, p) in probes.iter().enumerate() {
            let name = match step {
                0 => p.to_string(),
                s => format!("{p}@{s}"),
            };
            let r: Vec<f32> = (0..48)
                .map(|k| ((k + j) as f32 * 0.37).sin() + 0.2)
                .collect();
            let eps = if step >= 2 && j >= 2 { 0.05 } else { 0.0 };
            let o: Vec<f32> = r.iter().map(|x| x * (1.0 + eps)).collect();
            rows.push(compare(&name, Some(side(&o)), Some(side(&r)), &cfg));
        }
    }
    let mut ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    ctx.warnings = vec!["ours.npz records no decode_ids".to_string()];
    let mut report = assemble(rows, ctx, &cfg);
    report.notes = vec!["a note on the mode".to_string()];
    let (t, n) = (4, 7);
    report.positions = Some(PositionProfile {
        op: "model.layers.0.self_attn.k_norm".to_string(),
        axis: 1,
        rel_err: (0..n)
            .map(|p| Some(if p < t + 1 { 1e-6 } else { 0.05 }))
            .collect(),
        rel_tol: vec![Some(1e-3); n],
        over: (0..n).map(|p| p > t).collect(),
        affected: 2,
        first_affected: Some(t + 1),
        pattern: PositionPattern::From { start: t + 1 },
        steps: vec![0, 0, 0, 0, 1, 2, 3],
        positions: (0..n).collect(),
    });
    report
}

/// The per-step overview (`p`) of 70,000 decode steps shows the cursor's step at the end too
/// (a bad-input hunt: past 65,535 steps it went blank, the paragraph's scroll a u16).
#[test]
fn the_step_overview_shows_steps_past_65535() {
    let cfg = DiffConfig::default();
    let v = [0.5f32; 48];
    let rows: Vec<_> = (0..=70_000)
        .map(|s| {
            let name = match s {
                0 => "model.layers.0.mlp".to_string(),
                s => format!("model.layers.0.mlp@{s}"),
            };
            compare(&name, Some(side(&v)), Some(side(&v)), &cfg)
        })
        .collect();
    let report = assemble(
        rows,
        ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta),
        &cfg,
    );
    let mut tui = Tui::new(report);
    press(&mut tui, "p");
    let _ = screen(&mut tui, 100, 20);
    press(&mut tui, "G");
    let text = screen(&mut tui, 100, 20);
    assert!(text.contains("step 70000  0 of 1 ops diverged"), "{text}");
    assert!(text.contains("step 69990  0 of 1 ops diverged"), "{text}");
    // its status bar lists its own keys, not the ops' (a bad-input hunt)
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("p/Esc back"), "{last}");
    assert!(!last.contains("f/o first/origin"), "{last}");
    press(&mut tui, "g");
    let text = screen(&mut tui, 100, 20);
    // one width for every step's number: the widest's (it widened past step 99,999)
    assert!(text.contains("step     0  0 of 1 ops diverged"), "{text}");
}

#[test]
fn decode_steps_are_named_walked_and_plotted_and_warnings_shown() {
    let mut tui = Tui::new(decode_report());
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm@2");
    let text = screen(&mut tui, 100, 30);
    assert!(text.contains("(#10, diverged, decode step 2)"), "{text}");
    assert!(text.contains("1 warning, 1 note: w shows them"), "{text}");
    // w lists them; any key closes
    press(&mut tui, "w");
    let text = screen(&mut tui, 100, 30);
    assert!(
        text.contains("warning: ours.npz records no decode_ids"),
        "{text}"
    );
    assert!(text.contains("note: a note on the mode"), "{text}");
    press(&mut tui, "j");
    assert!(!screen(&mut tui, 100, 30).contains("note: a note"));
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm@2");
    // the details plot the profile across steps (it is named by the probe, the row `x@2`:
    // it never drew)
    press(&mut tui, "\n");
    let text = screen(&mut tui, 100, 30);
    assert!(text.contains("rel err per position, log"), "{text}");
    // Esc closes the details, and only a second Esc quits
    press(&mut tui, "\u{1b}");
    assert!(!tui.quit());
    assert!(!screen(&mut tui, 100, 30).contains("rel err per position"));
    press(&mut tui, "\u{1b}");
    assert!(tui.quit());
    // ] and [ walk the same op through the steps
    let mut tui = Tui::new(decode_report());
    press(&mut tui, "]");
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm@3");
    press(&mut tui, "]");
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm@3");
    assert!(screen(&mut tui, 100, 30).contains("no model.layers.0.self_attn.k_norm@4"));
    press(&mut tui, "[[[");
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm");
    press(&mut tui, "[");
    assert!(screen(&mut tui, 100, 30).contains("the prefill is the first step"));
    // p: a line per step, the prefill first; p again: back to the ops
    press(&mut tui, "p");
    let text = screen(&mut tui, 140, 30);
    assert!(text.contains("per step, 0 = prefill"), "{text}");
    assert!(
        text.contains("step    0  0 of 4 ops diverged; worst rel err"),
        "{text}"
    );
    assert!(
        text.contains("step    2  2 of 4 ops diverged; worst rel err")
            && text.contains("; first diverging model.layers.0.self_attn.k_norm@2"),
        "{text}"
    );
    // every step fits: scrolling never leaves a blank line under the last
    press(&mut tui, "jjG");
    let text = screen(&mut tui, 140, 30);
    assert!(text.contains("step    0  0 of 4 ops"), "{text}");
    press(&mut tui, "p");
    assert!(!screen(&mut tui, 100, 30).contains("per step, 0 = prefill"));
    // the overview's cursor starts on the selected op's step; Enter goes to the step's first
    // diverging op, else to its first op
    let mut t2 = Tui::new(decode_report());
    press(&mut t2, "p");
    let _ = screen(&mut t2, 140, 30);
    press(&mut t2, "j\n");
    assert!(!screen(&mut t2, 140, 30).contains("per step, 0 = prefill"));
    assert_eq!(selected(&t2), "model.layers.0.self_attn.k_norm@3");
    press(&mut t2, "pkk\n");
    assert_eq!(selected(&t2), "model.embed_tokens@1");
    // a step hidden by the filter: said, the overview stays
    t2.open_filtered(Some(regex::Regex::new("k_norm").unwrap()), None);
    press(&mut t2, "pg\n");
    assert_eq!(selected(&t2), "model.layers.0.self_attn.k_norm@2");
    let text = screen(&mut t2, 140, 30);
    assert!(
        text.contains("model.embed_tokens is filtered out"),
        "{text}"
    );
    assert!(text.contains("per step, 0 = prefill"), "{text}");
    // the status bar lists the step keys and w in a decode report with warnings (they were
    // in the help alone), and not in a one-pass report without
    let footer = |tui: &mut Tui| screen(tui, 200, 30).lines().last().unwrap().to_string();
    let f = footer(&mut tui);
    assert!(
        f.contains("]/[ step") && f.contains("p steps") && f.contains("w warnings"),
        "{f}"
    );
    let mut one_pass = Tui::new(report());
    let f = footer(&mut one_pass);
    assert!(
        !f.contains("]/[") && !f.contains("p steps") && !f.contains("w warn"),
        "{f}"
    );
    // a one-pass report has no steps to walk or list, and says so
    let mut tui = Tui::new(report());
    press(&mut tui, "]");
    assert!(screen(&mut tui, 100, 30).contains("no decode steps"));
    press(&mut tui, "p");
    assert!(screen(&mut tui, 100, 30).contains("no decode steps"));
}

/// 3 layers (input_layernorm, k_norm, down_proj, the layer output), the prefill and 3 decode
/// steps: layer 0 within tolerance everywhere; layer 1 diverges from k_norm in decode steps 2
/// and 3; layer 2 diverges in the prefill from down_proj, and wholly in decode steps 2 and 3.
fn decode_layers_report() -> Report {
    decode_layers_report_from(0)
}

/// The same, its steps from `first` on (`diff --steps 2-`).
fn decode_layers_report_from(first: usize) -> Report {
    let cfg = DiffConfig::default();
    let ops = ["input_layernorm", "self_attn.k_norm", "mlp.down_proj", ""];
    let mut names = vec![(0, 0, "model.embed_tokens".to_string())];
    for l in 0..3 {
        for (j, op) in ops.iter().enumerate() {
            let sep = if op.is_empty() { "" } else { "." };
            names.push((l, j, format!("model.layers.{l}{sep}{op}")));
        }
    }
    let mut rows = Vec::new();
    for step in first..=3 {
        for (i, (l, j, name)) in names.iter().enumerate() {
            let name = match step {
                0 => name.clone(),
                s => format!("{name}@{s}"),
            };
            let eps = match (step, l, j) {
                (0, 2, 2..) => 0.02 * (*j - 1) as f32,
                (2.., 1, 1..) => 0.01 * (step * j) as f32,
                (2.., 2, _) => 0.02 * (step * (j + 1)) as f32,
                _ => 1e-6 * (1 + j + step) as f32,
            };
            let r: Vec<f32> = (0..48)
                .map(|k| ((k + i) as f32 * 0.37).sin() + 0.2)
                .collect();
            let o: Vec<f32> = r.iter().map(|x| x * (1.0 + eps)).collect();
            rows.push(compare(&name, Some(side(&o)), Some(side(&r)), &cfg));
        }
    }
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    assemble(rows, ctx, &cfg)
}

/// In a decode report the per-layer overview (`l`) says the prefill and the decode steps
/// apart (a line per layer lumped them: a decode step's error hid the prefill's): each its
/// worst rel err and first bad op, the decode steps' with their step; the line's shorter forms
/// where the width asks; it scrolls as the one-pass overview does.
#[test]
fn narrow_overviews_keep_the_first_bad_op_and_their_keys() {
    // At 60 columns (and the step overview at 120) the lines were cut before the first
    // diverging op, and the titles before their keys.
    let ends_in_a_step = |line: &str, what: &str| {
        let at = line.find(what).unwrap_or_else(|| panic!("{what}: {line}"));
        let name = line[at + what.len()..].split(';').next().unwrap_or("");
        assert!(
            name.rsplit_once('@')
                .is_some_and(|(_, s)| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
            "the op is whole: {line}"
        );
    };
    let mut tui = Tui::new(decode_report());
    press(&mut tui, "p");
    for width in [60, 80, 120] {
        let text = screen(&mut tui, width, 20);
        assert!(text.contains("p: back"), "{text}");
        let diverged: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("step    2") || l.starts_with("step    3"))
            .collect();
        assert_eq!(diverged.len(), 2, "{text}");
        for line in diverged {
            ends_in_a_step(line, "first bad ");
        }
    }
    // The full form where it fits.
    let wide = screen(&mut tui, 200, 20);
    assert!(
        wide.contains("2 of 4 ops diverged; worst rel err"),
        "{wide}"
    );
    assert!(
        wide.contains("; first diverging model.layers.0.self_attn.k_norm@2"),
        "{wide}"
    );
    let mut tui = Tui::new(decode_layers_report());
    press(&mut tui, "l");
    // Narrower still, a line ends after its last whole field (never `first b` or `wor`: the
    // narrowest form is one field, the first bad op or the worst, cut at the edge alone).
    for width in 30..=70 {
        let text = screen(&mut tui, width, 14);
        for line in text.lines().filter(|l| l.starts_with("layer ")) {
            let Some((_, last)) = line.trim_end().rsplit_once("; ") else {
                continue;
            };
            assert!(
                last.starts_with("first bad ") || last.starts_with("worst "),
                "{width}: {line:?}"
            );
        }
    }
    let text = screen(&mut tui, 60, 14);
    assert!(text.contains("l: back"), "{text}");
    let decode: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("decode   diverged"))
        .collect();
    assert!(!decode.is_empty(), "{text}");
    for line in decode {
        ends_in_a_step(line, "first bad ");
    }
}

/// The per-step overview's narrowest lines keep the token's word whole: the op, then `top-1
/// agree` / `FLIP`, then the counts, which a line still too wide loses first (a visual check at
/// 80 columns read "top-1 a").
#[test]
fn a_narrow_step_overview_keeps_the_tokens_word() {
    let mut report = decode_report();
    let steps: Vec<serde_json::Value> = [0usize, 1, 2, 3]
        .iter()
        .map(|&s| {
            serde_json::json!({
                "step": s, "positions": if s == 0 { 2 } else { 1 },
                "top1_agree": if s == 3 { 0 } else { 1 + usize::from(s == 0) },
                "mean_kld": 0.0, "max_kld": 0.0
            })
        })
        .collect();
    report.tokens = Some(
        serde_json::from_value(serde_json::json!({
            "op": "lm_head", "positions": 5, "nonfinite_positions": 0, "top1_agree": 4,
            "top5_overlap": 1.0, "mean_kld": 0.0, "max_kld": 0.0, "max_kld_position": 0,
            "first_flip": null, "per_position": [], "steps": steps
        }))
        .expect("a token effect"),
    );
    let mut tui = Tui::new(report);
    press(&mut tui, "p");
    for width in [70, 80, 120] {
        let text = screen(&mut tui, width, 20);
        for (step, word) in [
            ("step    2", "; top-1 agree"),
            ("step    3", "; top-1 FLIP"),
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(step))
                .unwrap_or_else(|| panic!("{step}: {text}"));
            assert!(line.contains(word), "{width}: {line}");
        }
    }
    // Where even the narrowest form does not fit, a line ends after its last whole field (at
    // 80 columns a visual check read `78/89 diver`).
    let whole = |field: &str| {
        field.starts_with("first bad model.")
            || ["top-1 agree", "top-1 FLIP", "top-1 2/2"].contains(&field)
            || field.ends_with(" diverged")
            || field.starts_with("worst ") && field.ends_with(|c: char| c.is_ascii_digit())
    };
    for width in 56..=80 {
        let text = screen(&mut tui, width, 20);
        for line in text.lines().filter(|l| l.starts_with("step    ")) {
            let last = line.trim_end().rsplit("; ").next().unwrap_or_default();
            let last = last.split("  ").last().unwrap_or_default();
            assert!(whole(last), "{width}: {line:?} ends in {last:?}");
        }
    }
}

#[test]
fn the_layer_overview_of_a_decode_report_says_the_prefill_and_the_decode_steps_apart() {
    let mut tui = Tui::new(decode_layers_report());
    press(&mut tui, "l");
    let wide = screen(&mut tui, 130, 14);
    insta::assert_snapshot!("tui_layers_decode_130x14", wide);
    let narrow = screen(&mut tui, 80, 14);
    assert!(narrow.lines().all(|l| l.chars().count() <= 80));
    insta::assert_snapshot!("tui_layers_decode_80x14", narrow);
    // 6 lines in a body of 4: j scrolls a line, G shows the last line at the bottom, and no
    // key scrolls past it
    let top = screen(&mut tui, 130, 9);
    assert!(top.contains("layer   0  prefill") && !top.contains("layer   2  prefill"));
    press(&mut tui, "j");
    let one = screen(&mut tui, 130, 9);
    assert!(!one.contains("layer   0  prefill") && one.contains("layer   0  decode"));
    press(&mut tui, "Gjjj");
    let end = screen(&mut tui, 130, 9);
    let title = end.lines().position(|l| l.contains("per layer")).unwrap();
    let body: Vec<&str> = end.lines().skip(title + 1).take(4).collect();
    assert!(
        body[0].starts_with("layer   1  prefill") && body[3].starts_with("layer   2  decode"),
        "{end}"
    );
    press(&mut tui, "k");
    assert!(screen(&mut tui, 130, 9).contains("layer   0  decode"));
    press(&mut tui, "l");
    assert!(!screen(&mut tui, 130, 9).contains("per layer"));
}

/// A decode report without the prefill (`diff --steps 2-`): the overview has no prefill lines
/// (it showed one `no ops` line per layer).
#[test]
fn the_layer_overview_leaves_out_a_phase_no_layer_has() {
    let mut tui = Tui::new(decode_layers_report_from(2));
    press(&mut tui, "l");
    let text = screen(&mut tui, 130, 14);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("layer ")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.contains(" decode ")), "{text}");
}

#[test]
fn the_view_opens_on_the_filter_of_grep_or_layer() {
    // `diff --tui --grep k_norm` (they were ignored in the view): the cursor stays on the
    // first divergence, which the filter keeps
    let re = |t: &str| Some(regex::Regex::new(t).unwrap());
    let mut tui = Tui::new(report());
    tui.open_filtered(re("k_norm"), None);
    assert_eq!(tui.shown().len(), 3);
    assert!(tui.shown().iter().all(|n| n.contains("k_norm")));
    assert_eq!(selected(&tui), "model.layers.1.self_attn.k_norm");
    // `--layer 2`: the layer's ops
    let mut tui = Tui::new(report());
    tui.open_filtered(None, Some(2));
    assert!(tui.shown().iter().all(|n| n.starts_with("model.layers.2")));
    assert_eq!(tui.shown().len(), 7);
    // `--grep 1` is a regex, not layer 1 (`/1`): the names of decode step 1 hold a 1
    let mut tui = Tui::new(decode_report());
    tui.open_filtered(re("1"), None);
    assert_eq!(tui.shown().len(), 4, "{:?}", tui.shown());
    assert!(tui.shown().iter().all(|n| n.ends_with("@1")));
    // both: --grep's, and the status bar says how to ask for the layer
    let mut tui = Tui::new(report());
    tui.open_filtered(re("k_norm"), Some(2));
    assert_eq!(tui.shown().len(), 3);
    assert!(screen(&mut tui, 100, 30).contains("filtered by --grep alone: type /2 for --layer 2"));
}

#[test]
fn review_fixes_the_prefill_row_has_no_step_profile_and_warnings_show_whole() {
    // the prefill's row `x` of the probe whose step diverged first: no plot of the steps
    let mut tui = Tui::new(decode_report());
    tui.open_filtered(Some(regex::Regex::new("k_norm$").unwrap()), None);
    // (`k_norm$` keeps the steps too, `k_norm@s`: the cursor on the first divergence's)
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm@2");
    press(&mut tui, "g");
    assert_eq!(selected(&tui), "model.layers.0.self_attn.k_norm");
    press(&mut tui, "\n");
    let text = screen(&mut tui, 100, 30);
    assert!(!text.contains("rel err per position"), "{text}");
    // a warning that wraps by word takes the lines it needs: the note under it shows
    let mut report = decode_report();
    report.warnings = vec![["abcdefghi"; 15].join(" ")];
    report.notes = vec!["LASTNOTE".to_string()];
    let mut tui = Tui::new(report);
    press(&mut tui, "w");
    let text = screen(&mut tui, 80, 30);
    assert!(text.contains("LASTNOTE"), "{text}");
}

#[test]
fn tiny_terminals_draw_every_overlay_without_a_panic() {
    for (w, h) in [(1, 1), (5, 3), (10, 5), (20, 2), (30, 8), (12, 20)] {
        for keys in ["", "w", "\n", "?", "c", "l", "]"] {
            let mut report = decode_report();
            report.warnings = vec![["abcdefghi"; 15].join(" ")];
            let mut tui = Tui::new(report);
            press(&mut tui, keys);
            screen(&mut tui, w, h);
        }
    }
}

/// A bf16 pair judged by a fixed preset: the view says so as the printed formats' header does,
/// a note that `w` shows (a user's check: the table, the Markdown and the HTML said it, the
/// view said "no warnings").
#[test]
fn the_fixed_preset_note_of_a_half_pair_is_shown() {
    let cfg = DiffConfig::default();
    let v = [0.5f32; 48];
    let bf16 = Side {
        dtype: "bfloat16",
        ..side(&v)
    };
    let rows = vec![compare("model.layers.0.mlp", Some(bf16), Some(bf16), &cfg)];
    let report = assemble(
        rows,
        ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta),
        &cfg,
    );
    assert!(report.notes.is_empty() && report.warnings.is_empty());
    let mut tui = Tui::new(report);
    let text = screen(&mut tui, 100, 30);
    assert!(text.contains("1 note: w shows them"), "{text}");
    press(&mut tui, "w");
    let text = screen(&mut tui, 100, 30);
    assert!(
        text.contains("note: bf16/f16 ops were judged by a fixed preset"),
        "{text}"
    );
    // an f32 pair has no such note
    let rows = vec![compare(
        "model.layers.0.mlp",
        Some(side(&v)),
        Some(side(&v)),
        &cfg,
    )];
    let report = assemble(
        rows,
        ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta),
        &cfg,
    );
    let mut tui = Tui::new(report);
    assert!(!screen(&mut tui, 100, 30).contains("w shows them"));
    press(&mut tui, "w");
    assert!(screen(&mut tui, 100, 30).contains("no warnings"));
}

/// The details give the diagnosis before the numbers the columns show: at 80x24 with the plot,
/// the hint, the origin and the positions are shown (a user's check: they were cut, the
/// numbers and the plot drawn).
/// Details taller than their room (a short terminal) say how many lines are left out on their
/// last row, not a line cut off without a word (a visual check at 80x24 under a report's
/// three-line `tokens:` header); a tall terminal shows them all, without the line.
#[test]
fn details_cut_by_a_short_terminal_say_so() {
    let mut tui = Tui::new(report_with_positions());
    press(&mut tui, "\n");
    let short = screen(&mut tui, 80, 14);
    assert!(
        short.contains("more lines: a taller terminal shows them"),
        "{short}"
    );
    let tall = screen(&mut tui, 160, 60);
    assert!(!tall.contains("more lines"), "{tall}");
}

#[test]
fn the_details_diagnosis_comes_before_the_numbers() {
    let mut report = report_with_positions();
    let op = report.first_divergence.as_ref().unwrap().name.clone();
    report.hints.push(Hint {
        code: HintCode::SkippedOp,
        op: op.clone(),
        message: "ours is its own input model.layers.1.self_attn.k_proj (rel err 0.000e+00): a norm or activation not applied".into(),
        evidence: Default::default(),
    });
    let mut tui = Tui::new(report);
    press(&mut tui, "\n");
    let text = screen(&mut tui, 80, 24);
    for what in [
        "hint skipped_op: ours is its own input",
        "origin born here",
        "positions error from position 9 on",
        "rel err per position, log",
    ] {
        assert!(text.contains(what), "{what}:\n{text}");
    }
    // the numbers come after, where there is room (the columns show them)
    if let Some(numbers) = text.find("||ours|| ") {
        assert!(text.find("positions error").unwrap() < numbers, "{text}");
    }
}

/// A jump, a sort or a filter that leaves the cursor's op off the window centres it: the rows
/// after it are in view (it landed on the window's last row: a visual check, then a review).
#[test]
fn the_cursor_s_op_is_centred_after_a_jump_a_sort_or_a_filter() {
    // The rows drawn around the cursor's (found by its op's name: the cursor's highlight is
    // not in the text): (before, after) within the table.
    let around = |text: &str, op: &str| {
        let lines: Vec<&str> = text.lines().collect();
        let row = |l: &&&str| {
            l.starts_with("   ") && l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                || l.starts_with(">> ")
        };
        let at = lines
            .iter()
            .position(|l| row(&l) && l.split_whitespace().any(|w| w == op))
            .unwrap_or_else(|| panic!("{op} drawn: {text}"));
        let before = lines[..at].iter().rev().take_while(row).count();
        let after = lines[at + 1..].iter().take_while(row).count();
        (before, after)
    };
    let mut tui = Tui::new(report());
    let text = screen(&mut tui, 100, 16);
    let (_, after) = around(&text, &selected(&tui));
    assert!(
        after >= 2,
        "opens with rows after the first divergence: {text}"
    );
    // Sorted by rel err, the first op (rel err 0) moves below the twelve diverged ones, off
    // the window: centred, rows on both sides.
    press(&mut tui, "kkkkkkkkkkkkkkkk");
    let _ = screen(&mut tui, 100, 16);
    assert_eq!(selected(&tui), "model.embed_tokens");
    press(&mut tui, "s");
    let text = screen(&mut tui, 100, 16);
    assert!(text.contains("sort: rel err"), "{text}");
    assert_eq!(selected(&tui), "model.embed_tokens");
    let (before, after) = around(&text, "model.embed_tokens");
    assert!(before >= 2 && after >= 2, "{text}");
    // A jump back to the first divergence, now above the window.
    press(&mut tui, "jjjjjjjjjjf");
    let _ = screen(&mut tui, 100, 16);
    let text = screen(&mut tui, 100, 16);
    let (before, after) = around(&text, "model.layers.1.self_attn.k_norm");
    assert!(before >= 2 && after >= 2, "{text}");
}

/// Under `--truth`, the details say what judged the op as the printed table does: the noise
/// ratio's limit where the truth judged it, not the preset's rtol and atol (a visual check).
#[test]
fn details_under_the_truth_name_the_noise_ratio_limit() {
    let mut report = report();
    report.tolerance = Tolerance::Truth { ratio: 3.0 };
    let first = report.first_divergence.as_ref().unwrap().index;
    for (i, row) in report.ops.plain_mut().into_iter().enumerate() {
        if i == first {
            std::sync::Arc::make_mut(&mut row.truth).noise_ratio = Some(87.0);
        }
    }
    let mut tui = Tui::new(report);
    press(&mut tui, "d");
    let text = screen(&mut tui, 120, 40);
    assert!(text.contains("noise ratio limit 3.0"), "{text}");
    // What judged it is the ratio: the preset's rtol and atol only as the tolerance the share
    // outside it is counted against, as the table's details say it.
    let shape = text
        .lines()
        .find(|l| l.contains("shape ["))
        .expect("the shape line");
    assert!(!shape.contains("rtol"), "{text}");
    assert!(
        text.contains("outside tol 100.00% (rtol 1.000e-03, atol 1.000e-06)"),
        "{text}"
    );
}

/// On a short terminal the details' text comes before the plot, and what is left out is said
/// on a line that fits (at 60x20 the details showed one line and the plot, the rest left out
/// without a word; at 60x22 the line that says so was cut: a visual check).
#[test]
fn short_details_keep_their_text_and_say_what_is_left_out() {
    for (w, h) in [(60, 20), (70, 20), (60, 22), (80, 24)] {
        let mut tui = Tui::new(report_with_positions());
        press(&mut tui, "\n");
        let text = screen(&mut tui, w, h);
        assert!(text.lines().all(|l| l.chars().count() <= usize::from(w)));
        let title = text
            .lines()
            .position(|l| l.contains("model.layers.1.self_attn.k_norm ─"))
            .unwrap_or_else(|| panic!("{w}x{h}:\n{text}"));
        let body: Vec<&str> = text.lines().skip(title + 1).collect();
        let more = body.iter().position(|l| l.starts_with('…'));
        let plotted = text.contains("rel err per position") || text.contains("log rel err");
        match more {
            // Text cut: at least 5 of its lines shown, no plot under fewer than 6.
            Some(at) => {
                assert!(at >= 5 || !plotted, "{w}x{h}:\n{text}");
                assert!(body[at].contains("more lines") || body[at].ends_with("more"));
            }
            None => assert!(plotted, "{w}x{h}:\n{text}"),
        }
    }
}

/// The details' NaN/Inf counts: `none` where both sides were read and hold none, `-` for a side
/// never read (an op only in the reference read `ours 0/0`, or `none`: a visual check).
#[test]
fn details_count_nan_inf_only_of_the_sides_read() {
    let cfg = DiffConfig::default();
    let side = |v: &'static [f32]| Side {
        shape: &[4],
        values: ValuesRef::F32(v),
        dtype: "float32",
    };
    let plain: &'static [f32] = &[1.0, 2.0, 3.0, 4.0];
    let inf: &'static [f32] = &[1.0, f32::INFINITY, 3.0, 4.0];
    let rows = vec![
        compare(
            "model.embed_tokens",
            Some(side(plain)),
            Some(side(plain)),
            &cfg,
        ),
        compare("model.layers.0.mlp", None, Some(side(inf)), &cfg),
        compare("model.layers.0", None, Some(side(plain)), &cfg),
    ];
    let report = assemble(
        rows,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &cfg,
    );
    let mut tui = Tui::new(report);
    let details = |tui: &mut Tui| {
        press(tui, "\n");
        let text = screen(tui, 120, 30);
        press(tui, "\u{1b}");
        text
    };
    assert_eq!(selected(&tui), "model.embed_tokens");
    let text = details(&mut tui);
    assert!(text.contains("NaN/Inf none"), "{text}");
    press(&mut tui, "j");
    assert_eq!(selected(&tui), "model.layers.0.mlp");
    let text = details(&mut tui);
    assert!(text.contains("NaN/Inf ours -/-, ref 0/1"), "{text}");
    press(&mut tui, "j");
    let text = details(&mut tui);
    assert!(text.contains("NaN/Inf ours -/-, ref 0/0"), "{text}");
}

/// A layer number typed alone (`/3`, and `--layer 3`) keeps the rows the printed table's
/// `--layer 3` keeps, by the name's layer index (a regex `\blayers\.3\b` kept `x-layers.3.mlp`,
/// which has no layer segment, and left `model.layers.03.mlp`, which the table counts in layer
/// 3: a visual check).
#[test]
fn a_layer_filter_keeps_the_rows_of_the_tables_layer() {
    let cfg = DiffConfig::default();
    let v: &'static [f32] = &[1.0, 2.0, 3.0, 4.0];
    let side = || Side {
        shape: &[4],
        values: ValuesRef::F32(v),
        dtype: "float32",
    };
    let names = [
        "model.embed_tokens",
        "model.layers.3.mlp",
        "model.layers.03.mlp",
        "x-layers.3.mlp",
        "model.layers.30.mlp",
        "model.layers.3",
    ];
    let rows: Vec<_> = names
        .iter()
        .map(|n| compare(n, Some(side()), Some(side()), &cfg))
        .collect();
    let report = assemble(
        rows,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &cfg,
    );
    let kept: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|&(i, _)| report.ops.row(i).layer() == Some(3))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        kept,
        [
            "model.layers.3.mlp",
            "model.layers.03.mlp",
            "model.layers.3"
        ]
    );
    for how in ["typed", "--layer"] {
        let mut tui = Tui::new(report.clone());
        match how {
            "typed" => press(&mut tui, "/3\n"),
            _ => tui.open_filtered(None, Some(3)),
        }
        let text = screen(&mut tui, 120, 20);
        assert!(
            text.contains(" 3 of 6 ops, layer 3, sort:"),
            "{how}: {text}"
        );
        for n in names {
            let shown = text.lines().any(|l| l.split_whitespace().any(|w| w == n));
            assert_eq!(shown, kept.contains(&n), "{how}: {n}\n{text}");
        }
    }
}

/// The details break their lines between fields, never between a label and its number: at
/// 60-72 columns they read `outside` / `tol 100.00%`, `NaN/Inf` / `none` and `cosine` /
/// `1.000000` (a check of session 52).
#[test]
fn details_keep_each_label_with_its_number_at_every_width() {
    let mut tui = Tui::new(report());
    press(&mut tui, "d");
    for width in 44..=120 {
        let text = screen(&mut tui, width, 40);
        for field in [
            "||ours|| 5.275e+00",
            "||ref|| 5.222e+00",
            "rel err 1.000e-02",
            "cosine 1.000000",
            "max|o-r| 1.198e-02",
            "outside tol 100.00%",
            "NaN/Inf none",
            "dtype f32",
        ] {
            assert!(text.contains(field), "{field} at {width} columns:\n{text}");
        }
    }
}
