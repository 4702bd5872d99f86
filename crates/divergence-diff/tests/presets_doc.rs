//! `docs/tolerances.md` states the preset table for readers; the numbers live in
//! [`divergence_diff::PRESETS`]. This test keeps the two the same.

use divergence_diff::{PRESETS, REL_ERR_GUARD_MIN};

#[test]
fn the_docs_preset_table_is_the_code_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/tolerances.md");
    let doc = std::fs::read_to_string(path).expect("docs/tolerances.md");
    for p in PRESETS {
        let label = p.class.label();
        // `| float64  | 1e-3   | 1e-6   | 1e-6              |`
        let row = doc
            .lines()
            .find(|l| l.split('|').nth(1).map(str::trim) == Some(label))
            .unwrap_or_else(|| panic!("no row for {label} in docs/tolerances.md"));
        let cells: Vec<f64> = row
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .skip(1)
            .map(|c| c.parse().unwrap_or_else(|e| panic!("{row}: {c}: {e}")))
            .collect();
        // The guard of the max relative error, as `Tolerance::resolve` computes it.
        let guard = p.atol.max(REL_ERR_GUARD_MIN);
        assert_eq!(cells, vec![p.rtol, p.atol, guard], "{row}");
    }
}
