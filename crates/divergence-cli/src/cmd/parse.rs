//! clap value parsers shared by the subcommands, so every flag of a kind is checked the same
//! way. A rejected value is a usage error; `main` prints it as one line naming the flag
//! (`error: --rtol must be a finite number >= 0, got -1`, see [`crate::exit::value_error_line`]),
//! so each message here reads as the rest of that sentence.

use regex::Regex;

/// A finite number >= 0 (`--rtol`, `--atol`: zero is meaningful).
pub fn non_negative(s: &str) -> Result<f64, String> {
    number(s, ">= 0", |x| x >= 0.0)
}

/// A finite number > 0 (`--max-abs`, `--gain-threshold`: thresholds of a magnitude).
pub fn positive(s: &str) -> Result<f64, String> {
    number(s, "> 0", |x| x > 0.0)
}

fn number(s: &str, bound: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && ok(x) => Ok(x),
        _ => Err(format!("must be a finite number {bound}, got {s}")),
    }
}

/// Characters that make a `--grep` pattern a regex; text without any of them matches as a
/// plain substring (so `layers.3.` does not match `layers.30.`).
const REGEX_CHARS: &str = "^$*+?()[]{}|\\";

/// `--grep`: a regex when the text contains one of `^$*+?()[]{}|\`, else a plain substring
/// (escaped into a regex). An invalid regex (`*norm`, `[`) is an error, never a silent
/// substring match.
pub fn grep(s: &str) -> Result<Regex, String> {
    let pattern = if s.chars().any(|c| REGEX_CHARS.contains(c)) {
        s.to_string()
    } else {
        regex::escape(s)
    };
    Regex::new(&pattern).map_err(|e| format!("must be a valid regex, got '{s}': {}", why(&e)))
}

/// The one line of a regex error that says what is wrong. A syntax error's message is a small
/// drawing (`regex parse error:`, the pattern, a caret, `error: ...`): keep the `error:` line.
fn why(e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("invalid regex");
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(non_negative("0"), Ok(0.0));
        assert_eq!(non_negative("1e-3"), Ok(1e-3));
        assert_eq!(
            non_negative("-1"),
            Err("must be a finite number >= 0, got -1".into())
        );
        for bad in ["nan", "inf", "abc", ""] {
            assert!(non_negative(bad).is_err(), "{bad}");
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("10"), Ok(10.0));
        assert_eq!(
            positive("0"),
            Err("must be a finite number > 0, got 0".into())
        );
    }

    #[test]
    fn plain_text_is_a_substring_and_regexes_are_regexes() {
        let plain = grep("layers.3.").unwrap();
        assert!(plain.is_match("model.layers.3.mlp"));
        assert!(!plain.is_match("model.layers.30.mlp"));
        let re = grep(r"layers\.[01]\.self_attn\.k_").unwrap();
        assert!(re.is_match("model.layers.1.self_attn.k_norm"));
        assert!(!re.is_match("model.layers.2.self_attn.k_norm"));
    }

    #[test]
    fn an_invalid_regex_is_an_error_with_the_cause() {
        assert_eq!(
            grep("*norm").unwrap_err(),
            "must be a valid regex, got '*norm': repetition operator missing expression"
        );
        assert_eq!(
            grep("[").unwrap_err(),
            "must be a valid regex, got '[': unclosed character class"
        );
    }
}
