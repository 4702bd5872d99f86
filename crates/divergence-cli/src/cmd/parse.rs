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

/// `run --max-memory GIB`: a finite number of gibibytes, at least one byte (a review: `1e-30`
/// was taken as a bound of 0 bytes, which then refused every run as needing more).
pub fn memory_gib(s: &str) -> Result<f64, String> {
    number(s, "> 0 of at least one byte (1e-9 GiB)", |x| {
        x * (1u64 << 30) as f64 >= 1.0
    })
}

/// A whole number >= 0 (`--layer`, `--context`): clap's own message for `-1` or `x` was
/// `invalid digit found in string`, without the value.
pub fn whole(s: &str) -> Result<usize, String> {
    whole_number(s).ok_or_else(|| format!("must be a whole number >= 0, got {}", shown(s)))
}

/// A rejected value as the message shows it: on one line, and quoted where it is empty or
/// begins or ends with a space (`--rtol " "` read "got " and nothing after it).
fn shown(s: &str) -> String {
    let line = divergence_names::one_line(&shortened(s)).into_owned();
    if s.is_empty() || s.trim() != s {
        format!("'{line}'")
    } else {
        line
    }
}

/// A whole number from 1 to 2^32 - 1 (`run --repeat`, `--decode`): clap's own messages were
/// `invalid digit found in string` and `cannot parse integer from empty string`, without the
/// value (a bad-input hunt).
pub fn count(s: &str) -> Result<u32, String> {
    whole_number(s)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!(
                "must be a whole number from 1 to {}, got {}",
                u32::MAX,
                shown(s)
            )
        })
}

/// Decimal digits, spaces around them allowed, no sign (Rust's parser takes a leading `+`).
fn whole_number(t: &str) -> Option<usize> {
    t.trim()
        .parse::<usize>()
        .ok()
        .filter(|_| !t.trim().starts_with('+'))
}

fn number(s: &str, bound: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        // `-0` is 0 (it was recorded as -0.0 in the report).
        Ok(x) if x.is_finite() && ok(x) => Ok(x + 0.0),
        _ => Err(format!("must be a finite number {bound}, got {}", shown(s))),
    }
}

/// `--steps`: decode steps, 0 being the prefill, as a comma-separated list of `N`, `A-B`
/// (inclusive) and, last, `A-` (every step from A on): `0-22`, `5`, `0,4-8`, `3-`.
/// Runs must ascend without overlapping.
pub fn steps(s: &str) -> Result<crate::cmd::steps::Selection, String> {
    use crate::cmd::steps::Selection;
    let bad = |why: &str| {
        Err(format!(
            "must be decode steps such as 0-22, 5, 0,4-8 or 3- (0 = the prefill){why}, got '{}'",
            divergence_names::one_line(&shortened(s))
        ))
    };
    let number = whole_number;
    let mut runs: Vec<(usize, Option<usize>)> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let run = match part.split_once('-') {
            None => number(part).map(|n| (n, Some(n))),
            Some((a, b)) if b.trim().is_empty() => number(a).map(|a| (a, None)),
            Some((a, b)) => match (number(a), number(b)) {
                (Some(a), Some(b)) if a <= b => Some((a, Some(b))),
                (Some(_), Some(_)) => return bad(" (a run's first step before its last)"),
                _ => None,
            },
        };
        let Some(run) = run else {
            // (Digits past usize: said so, not left to the examples; a hunt.)
            let too_large = part.split('-').map(str::trim).any(|t| {
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && whole_number(t).is_none()
            });
            let past = format!(" (a step past {})", usize::MAX);
            return bad(if too_large { &past } else { "" });
        };
        match runs.last_mut() {
            Some((_, None)) => return bad(" (a run without an end comes last)"),
            Some(&mut (_, Some(hi))) if run.0 <= hi => {
                return bad(" (runs in ascending order, apart)")
            }
            // A run right after the one before it is part of it: `0-4,5-6` is `0-6`.
            Some((_, last @ Some(_))) if Some(run.0) == last.and_then(|hi| hi.checked_add(1)) => {
                *last = run.1;
                continue;
            }
            _ => {}
        }
        if runs.len() == Selection::MAX_RUNS {
            return bad(&format!(" (at most {} runs)", Selection::MAX_RUNS));
        }
        runs.push(run);
    }
    Ok(Selection::new(runs))
}

/// At most 80 characters of a user string, for a message (a `--steps` of 60 KB came back
/// whole in its one-line error: a bad-input hunt).
pub(crate) fn shortened(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_string(),
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
    Regex::new(&pattern).map_err(|e| {
        format!(
            "must be a valid regex, got '{}': {}",
            divergence_names::one_line(&shortened(s)),
            why(&e)
        )
    })
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
    use crate::cmd::steps::Selection;

    #[test]
    fn memory_bounds() {
        assert_eq!(memory_gib("0.5"), Ok(0.5));
        assert_eq!(memory_gib("1e-9"), Ok(1e-9));
        for bad in ["1e-30", "0", "-1", "nan", "inf", ""] {
            assert!(
                memory_gib(bad).is_err_and(|e| e.starts_with("must be a finite number > 0")),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(non_negative("0"), Ok(0.0));
        assert_eq!(non_negative("1e-3"), Ok(1e-3));
        assert!(non_negative("-0").unwrap().is_sign_positive());
        assert_eq!(
            non_negative("-1"),
            Err("must be a finite number >= 0, got -1".into())
        );
        for bad in ["nan", "inf", "abc", ""] {
            assert!(non_negative(bad).is_err(), "{bad}");
            assert!(positive(bad).is_err(), "{bad}");
        }
        // A blank value or one padded with spaces is quoted: "got " said nothing.
        assert_eq!(
            non_negative(" "),
            Err("must be a finite number >= 0, got ' '".into())
        );
        assert_eq!(
            non_negative(""),
            Err("must be a finite number >= 0, got ''".into())
        );
        assert_eq!(
            whole(" x"),
            Err("must be a whole number >= 0, got ' x'".into())
        );
        assert_eq!(
            whole("1\n2"),
            Err("must be a whole number >= 0, got 1\\n2".into())
        );
        assert_eq!(count(" 3 "), Ok(3));
        for bad in ["0", "", "x", "-1", "+2", "4294967296"] {
            assert_eq!(
                count(bad),
                Err(format!(
                    "must be a whole number from 1 to 4294967295, got {}",
                    shown(bad)
                )),
                "{bad}"
            );
        }
        assert_eq!(positive("10"), Ok(10.0));
        assert_eq!(
            positive("0"),
            Err("must be a finite number > 0, got 0".into())
        );
    }

    #[test]
    fn steps_are_runs() {
        let sel = |t: &str| steps(t).map(|s| s.text());
        assert_eq!(sel("0-22").as_deref(), Ok("0-22"));
        assert_eq!(sel(" 5 ").as_deref(), Ok("5"));
        assert_eq!(sel("0, 4-8,10-").as_deref(), Ok("0,4-8,10-"));
        assert_eq!(sel("3-").as_deref(), Ok("3-"));
        assert_eq!(sel("7-7").as_deref(), Ok("7"));
        // Runs that meet are one.
        assert_eq!(sel("0-4,5-6").as_deref(), Ok("0-6"));
        assert_eq!(sel("1,2,3,7,8-").as_deref(), Ok("1-3,7-"));
        assert_eq!(sel("0,1-4,6").as_deref(), Ok("0-4,6"));
        let met: String = (0..=Selection::MAX_RUNS + 5)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(sel(&met), Ok(format!("0-{}", Selection::MAX_RUNS + 5)));
        // Within 2 steps of a selected one: 10-14 for 12, every step from 18 on for 20-.
        let s = steps("12,20-").unwrap();
        let near: Vec<usize> = (0..30).filter(|&i| s.near(i, 2)).collect();
        assert_eq!(
            near,
            [10, 11, 12, 13, 14, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
        );
        assert!(steps("5").unwrap().near(usize::MAX - 1, usize::MAX));
        let s = steps("0,4-8,10-").unwrap();
        let picked: Vec<usize> = (0..13).filter(|&i| s.contains(i)).collect();
        assert_eq!(picked, [0, 4, 5, 6, 7, 8, 10, 11, 12]);
        assert!(steps("2-").unwrap().contains(usize::MAX));
        for bad in [
            "",
            "x",
            "-3",
            "1-2-3",
            "5-2",
            "3-,5",
            "4,2",
            "2,2",
            "0-5,5-9",
            "+1",
            "1,",
            "-",
            "99999999999999999999999",
        ] {
            let err = steps(bad).unwrap_err();
            assert!(
                err.starts_with("must be decode steps such as"),
                "{bad}: {err}"
            );
            assert!(err.ends_with(&format!("got '{bad}'")), "{bad}: {err}");
        }
        assert!(steps("5-2")
            .unwrap_err()
            .contains("first step before its last"));
        for huge in ["99999999999999999999999", "3-99999999999999999999999"] {
            assert!(
                steps(huge)
                    .unwrap_err()
                    .contains(&format!("(a step past {})", usize::MAX)),
                "{huge}"
            );
        }
        assert!(!steps("x").unwrap_err().contains("a step past"));
        let many: Vec<String> = (0..=Selection::MAX_RUNS)
            .map(|i| (2 * i).to_string())
            .collect();
        assert!(steps(&many.join(","))
            .unwrap_err()
            .contains("at most 64 runs"));
        // The argument comes back at most 80 characters long, on one line (a 60 KB one came
        // back whole: a bad-input hunt).
        let err = steps(&many.join(",")).unwrap_err();
        assert!(err.len() < 300 && err.ends_with("...'"), "{err}");
        let err = steps(&format!("1\n{}", "2,".repeat(30_000))).unwrap_err();
        assert!(err.len() < 300 && !err.contains('\n'), "{err}");
        let err = grep(&format!("[{}", "a".repeat(30_000))).unwrap_err();
        assert!(err.len() < 400 && err.contains("...'"), "{err}");
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
