//! The built-in maps (`--map vllm`, `--map llama.cpp`, `--map transformer-lens`): TOML files in
//! `presets/`, compiled in, each with the engine source it was written from in its header.

use crate::error::MapError;
use crate::spec::Map;

/// Preset names and their TOML.
pub const PRESETS: [(&str, &str); 3] = [
    ("vllm", include_str!("../presets/vllm.toml")),
    ("llama.cpp", include_str!("../presets/llama.cpp.toml")),
    (
        "transformer-lens",
        include_str!("../presets/transformer-lens.toml"),
    ),
];

/// The preset called `name`, or `None` when there is none.
pub fn preset(name: &str) -> Option<Result<Map, MapError>> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Map::parse_as(text, &format!("preset {n}"), true))
}

/// The text of the preset `name` (to print or copy).
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            let map = preset(name).unwrap().unwrap();
            assert!(map.preset && !map.rules.is_empty(), "{name}");
        }
        assert!(preset("sglang").is_none());
    }

    /// A copy of a preset file, given as a map of one's own, is read as the preset is (its
    /// `all_optional = true`): a newcomer's copy of the llama.cpp preset failed on every rule
    /// its dump did not need. A map without the key stays strict.
    #[test]
    fn a_copied_preset_reads_as_the_preset() {
        for (name, text) in PRESETS {
            let copy = Map::parse_given(text, "copy.toml").unwrap();
            assert!(copy.preset, "{name}");
            assert_eq!(copy.rules.len(), preset(name).unwrap().unwrap().rules.len());
        }
        let strict = Map::parse_given("[[rule]]\nfrom = \"a\"\nto = \"b\"\n", "m.toml").unwrap();
        assert!(!strict.preset);
        let lenient = Map::parse_given(
            "all_optional = true\n[[rule]]\nfrom = \"a\"\nto = \"b\"\n",
            "m.toml",
        )
        .unwrap();
        assert!(lenient.preset);
    }
}
