//! What the renderers' tests share: deterministic activations and a perturbed copy, and keys
//! pressed in the terminal view.

// Each test binary includes this module and uses some of it.
#![allow(dead_code)]

use divergence_render::tui::Tui;
use ratatui::crossterm::event::{KeyCode, KeyEvent};

/// A deterministic "activation": values of moderate size, no zeros.
pub fn act(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            // The sine in f64, rounded once: `f32::sin` is not correctly rounded, and a release
            // build computed other bits for some inputs than a debug build (the snapshots of a
            // report built from these values differed in a release build only).
            let x = (i as f32 + 1.0) * 0.37 + seed as f32 * 1.3;
            (f64::from(x).sin() as f32) * 2.0 + 0.1
        })
        .collect()
}

/// ours = ref * (1 + eps) element-wise pattern.
pub fn perturb(r: &[f32], eps: f32) -> Vec<f32> {
    r.iter()
        .enumerate()
        .map(|(i, x)| x * (1.0 + eps * (((i % 5) as f32) - 2.0) / 2.0))
        .collect()
}

/// Presses `keys` in `tui`, one character a key (`\n` is Enter, ESC is Esc).
pub fn press(tui: &mut Tui, keys: &str) {
    for c in keys.chars() {
        let code = match c {
            '\n' => KeyCode::Enter,
            '\u{1b}' => KeyCode::Esc,
            c => KeyCode::Char(c),
        };
        tui.key(KeyEvent::from(code));
    }
}
