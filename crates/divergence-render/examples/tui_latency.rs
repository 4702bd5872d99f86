//! How long the interactive view takes (docs/performance.md, "The terminal view"): from a
//! report (the JSON `divergence diff --format json` wrote) to the first frame, and per key
//! (the key handled, then the whole frame drawn), on ratatui's `TestBackend` (no terminal I/O).
//!
//!     cargo run --release -p divergence-render --example tui_latency -- REPORT.json [COLS ROWS]

use std::time::Instant;

use divergence_render::tui::Tui;
use divergence_render::Report;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::Terminal;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: tui_latency REPORT.json [COLS ROWS]");
    let cols: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let rows: u16 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60);
    let text = std::fs::read_to_string(path).expect("read the report");
    let report: Report = serde_json::from_str(&text).expect("a divergence report");
    let ops = report.ops.len();
    let mut term = Terminal::new(TestBackend::new(cols, rows)).expect("test backend");

    let t0 = Instant::now();
    let mut tui = Tui::new(report);
    term.draw(|f| tui.draw(f)).expect("draw");
    let start = t0.elapsed();

    // A session of keys: scroll, page, jump, walk divergences, sort (forward, backward,
    // reversed), details, filter, layers, a column hidden and shown again, the help.
    let script = "jjjjjkkk  GgfnnnNNNso\nssslldjjjk/layers\\.1\\d\n/\nGgrSrcjjjjjjjjj  \u{1b}?x";
    let mut times = Vec::new();
    for _ in 0..40 {
        for c in script.chars() {
            let key = KeyEvent::from(match c {
                '\n' => KeyCode::Enter,
                '\u{1b}' => KeyCode::Esc,
                c => KeyCode::Char(c),
            });
            let t = Instant::now();
            tui.key(key);
            term.draw(|f| tui.draw(f)).expect("draw");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{ops} ops, {cols}x{rows}: first frame {:.2} ms; {} keys: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        start.as_secs_f64() * 1e3,
        times.len(),
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    );
}
