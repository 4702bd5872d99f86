//! The interactive view (`divergence diff --tui`) without a terminal: keys into `Tui::key`,
//! frames drawn into ratatui's `TestBackend`, snapshots of the text at 80 and 120 columns.

use divergence_diff::*;
use divergence_render::tui::Tui;
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
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn press(tui: &mut Tui, keys: &str) {
    for c in keys.chars() {
        let code = match c {
            '\n' => KeyCode::Enter,
            '\u{1b}' => KeyCode::Esc,
            c => KeyCode::Char(c),
        };
        tui.key(KeyEvent::from(code));
    }
}

fn selected(tui: &Tui) -> String {
    tui.selected().map(|o| o.name.clone()).unwrap_or_default()
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
    press(&mut tui, "sss");
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
