//! Exit codes and error printing shared by every subcommand.
//!
//! Like `diff(1)` and ripgrep: 0 = clean, 1 = something found, 2 = error.
//! A broken pipe (`divergence diff ... | head`) is not an error.

use std::process::ExitCode;

/// What a subcommand reports to the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// No divergence (diff), nothing flagged (inspect), or success (run).
    Clean = 0,
    /// A divergence was found (diff) or something was flagged (inspect).
    Found = 1,
    /// Unreadable input, bad arguments, or any other failure.
    Error = 2,
}

impl From<Exit> for ExitCode {
    fn from(code: Exit) -> ExitCode {
        ExitCode::from(code as u8)
    }
}

/// Prints an error chain on one line: `error: outer: inner: root cause`.
pub fn print_error(err: &anyhow::Error) {
    let mut line = String::from("error: ");
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        // anyhow contexts often repeat their cause; do not print it twice.
        if i > 0 {
            if line.ends_with(&text) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // A path given on the command line may hold a newline: the error stays one line.
    say(&divergence_names::one_line(&line));
}

/// Writes one line to stderr. A stderr that cannot be written (closed, a full disk, a reader
/// gone) is ignored: the exit code still says what happened (`eprintln!` would panic, and the
/// process exit with 101 instead of its code).
///
/// The line's control characters are escaped ([`divergence_names::one_line`]): a status line
/// that names a file (`run`'s `81 probes -> a\nb.npz`) stays one line, and a name cannot send
/// the terminal an escape sequence (a bad-input hunt).
pub fn say(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", divergence_names::one_line(line));
}

/// A usage error of clap's (a conflict, a missing or unexpected argument) on one line: its
/// first paragraph (`the following required arguments were not provided: <OURS> <REF>`) and
/// its tips (`tip: a similar argument exists: '--json-out'`), without the usage line, and
/// where help is.
pub fn usage_error_line(err: &clap::Error) -> String {
    if let Some(line) = control_chars_line(err) {
        return line;
    }
    let text = err.render().to_string();
    let first = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty());
    let mut line = first.map(str::trim).collect::<Vec<_>>().join(" ");
    for tip in text.lines().filter(|l| l.trim_start().starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(tip.trim());
    }
    format!("{} (see --help)", divergence_names::one_line(&line))
}

/// A value, argument or subcommand that holds a control character, which clap's text loses:
/// rendering the error without its styles strips terminal escapes from the user's value too
/// (`--format $'\e[31mx'` read "invalid value 'x'"; a bad-input hunt). Said with the value
/// escaped as every other error escapes it, and clap's tips; `None` where nothing holds one.
fn control_chars_line(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let text = |kind: ContextKind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let escaped = |s: &str| divergence_names::one_line(s).into_owned();
    let line = match err.kind() {
        ErrorKind::InvalidValue => {
            let value = text(ContextKind::InvalidValue)?;
            if !value.chars().any(char::is_control) {
                return None;
            }
            let arg = text(ContextKind::InvalidArg).unwrap_or("an argument");
            let valid = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!(" [possible values: {}]", v.join(", ")),
                _ => String::new(),
            };
            format!(
                "error: invalid value '{}' for '{arg}'{valid}",
                escaped(value)
            )
        }
        ErrorKind::UnknownArgument => {
            let arg = text(ContextKind::InvalidArg)?;
            if !arg.chars().any(char::is_control) {
                return None;
            }
            format!("error: unexpected argument '{}' found", escaped(arg))
        }
        ErrorKind::InvalidSubcommand => {
            let sub = text(ContextKind::InvalidSubcommand)?;
            if !sub.chars().any(char::is_control) {
                return None;
            }
            format!("error: unrecognized subcommand '{}'", escaped(sub))
        }
        _ => return None,
    };
    // clap's tips, as its own text gives them.
    let mut tips = String::new();
    for (kind, what) in [
        (ContextKind::SuggestedArg, "argument"),
        (ContextKind::SuggestedValue, "value"),
        (ContextKind::SuggestedSubcommand, "subcommand"),
    ] {
        let similar = match err.get(kind) {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => continue,
        };
        if let Some(s) = similar.first() {
            tips.push_str(&format!("; tip: a similar {what} exists: '{}'", escaped(s)));
        }
    }
    Some(format!("{line}{tips} (see --help)"))
}

/// A flag value rejected by its value parser (`--rtol=-1`, `--grep '['`, see `cmd::parse`) as
/// one line naming the flag: `error: --rtol must be a finite number >= 0, got -1`. `None` for
/// every other clap error ([`usage_error_line`]).
pub fn value_error_line(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::ValueValidation {
        return None;
    }
    // clap names the argument with its value placeholder: `--rtol <RTOL>`.
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let flag = arg.split_whitespace().next()?;
    let why = std::error::Error::source(err)?;
    // The value may hold a newline (`--grep $'a\n('`): the error stays one line.
    Some(divergence_names::one_line(&format!("error: {flag} {why}")).into_owned())
}

/// True if the error is a broken pipe (the reader went away): not worth an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
