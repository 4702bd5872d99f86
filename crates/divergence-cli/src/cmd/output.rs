//! The output arguments every reporting subcommand shares (`--format`, `--color`), and what
//! they resolve to.
//!
//! Two levels, as in ripgrep's low-level / high-level arguments: [`OutputArgs`] is what the user
//! typed (flattened into `diff` with `#[command(flatten)]`; `inspect` flattens [`TextOutputArgs`],
//! the same without HTML), [`Output`] is what the
//! renderers need, decided once from the flags and the environment: the format after `auto`, the
//! colour after `NO_COLOR`, and the terminal width (only when stdout is a terminal).

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::{Args, ValueEnum};

/// `--format`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatChoice {
    /// `table` if stdout is a terminal, `json` otherwise.
    Auto,
    /// Tables for a terminal (fitted to its width).
    Table,
    /// The whole report as JSON (the stable schema of docs/report-schema.md).
    Json,
    /// The tables as GitHub-flavoured Markdown, for CI step summaries
    /// (e.g. `>> "$GITHUB_STEP_SUMMARY"`).
    Markdown,
    /// One self-contained HTML page with plots and a sortable table (docs/html-report.md).
    Html,
}

/// `--format` of a command that writes no HTML (`inspect`): [`FormatChoice`] without `html`,
/// so that its help lists only what it writes and clap refuses `html` as any other value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextFormatChoice {
    /// `table` if stdout is a terminal, `json` otherwise.
    Auto,
    /// Tables for a terminal (fitted to its width).
    Table,
    /// The whole report as JSON.
    Json,
    /// The tables as GitHub-flavoured Markdown, for CI step summaries
    /// (e.g. `>> "$GITHUB_STEP_SUMMARY"`).
    Markdown,
}

impl From<TextFormatChoice> for FormatChoice {
    fn from(f: TextFormatChoice) -> FormatChoice {
        match f {
            TextFormatChoice::Auto => FormatChoice::Auto,
            TextFormatChoice::Table => FormatChoice::Table,
            TextFormatChoice::Json => FormatChoice::Json,
            TextFormatChoice::Markdown => FormatChoice::Markdown,
        }
    }
}

/// `--color`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is unset or empty (no-color.org).
    Auto,
    /// Always colour, even when piped or with NO_COLOR set.
    Always,
    /// Never colour.
    Never,
}

/// The output flags of `divergence diff`.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatChoice::Auto)]
    pub format: FormatChoice,
    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// The output flags of `divergence inspect`: `diff`'s, its formats but HTML.
#[derive(Debug, Clone, Args)]
pub struct TextOutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextFormatChoice::Auto)]
    pub format: TextFormatChoice,
    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

impl TextOutputArgs {
    /// Resolves the flags as [`OutputArgs::resolve`] does: never [`Format::Html`].
    pub fn resolve(&self) -> Output {
        OutputArgs {
            format: self.format.into(),
            color: self.color,
        }
        .resolve()
    }
}

/// A resolved output format: never `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
    /// `diff` only (`inspect` takes [`TextOutputArgs`]).
    Html,
}

/// What the renderers need, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    /// stdout is a terminal (`--watch` clears the screen only there).
    pub terminal: bool,
    /// ANSI colours in the table.
    pub color: bool,
    /// The terminal's width in columns when stdout is a terminal, else `None` (never wrap: stable
    /// output for pipes, files and snapshots).
    pub width: Option<u16>,
}

/// What the resolution looks at besides the flags.
#[derive(Debug, Clone, Default)]
struct Env {
    stdout_is_terminal: bool,
    /// The terminal's width (asked only when stdout is a terminal).
    width: Option<u16>,
    no_color: Option<OsString>,
}

impl Env {
    fn current() -> Env {
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let width = if stdout_is_terminal {
            terminal_width(
                terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| w.0),
                std::env::var_os("COLUMNS"),
            )
        } else {
            None
        };
        Env {
            stdout_is_terminal,
            width,
            no_color: std::env::var_os("NO_COLOR"),
        }
    }
}

/// A terminal's width: what it reports, else `COLUMNS` (a terminal whose size is unknown, as
/// one of 0 rows is to the size query: a newcomer's run under `script` got lines of 238
/// columns on a terminal of 120). Never read for a pipe.
fn terminal_width(reported: Option<u16>, columns: Option<OsString>) -> Option<u16> {
    reported.filter(|&w| w > 0).or_else(|| {
        columns?
            .to_str()?
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&w| w > 0)
    })
}

impl OutputArgs {
    /// Resolves the flags against this process's stdout and environment.
    pub fn resolve(&self) -> Output {
        self.resolve_in(&Env::current())
    }

    fn resolve_in(&self, env: &Env) -> Output {
        let tty = env.stdout_is_terminal;
        let format = match self.format {
            FormatChoice::Auto if tty => Format::Table,
            FormatChoice::Auto | FormatChoice::Json => Format::Json,
            FormatChoice::Table => Format::Table,
            FormatChoice::Markdown => Format::Markdown,
            FormatChoice::Html => Format::Html,
        };
        // no-color.org: NO_COLOR disables colour when it is present and not empty.
        let no_color = env.no_color.as_ref().is_some_and(|v| !v.is_empty());
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Output {
            format,
            terminal: tty,
            color,
            width: if tty { env.width } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(format: FormatChoice, color: ColorChoice) -> OutputArgs {
        OutputArgs { format, color }
    }

    fn terminal(no_color: Option<&str>) -> Env {
        Env {
            stdout_is_terminal: true,
            width: Some(120),
            no_color: no_color.map(OsString::from),
        }
    }

    fn pipe(no_color: Option<&str>) -> Env {
        Env {
            stdout_is_terminal: false,
            // A width asked of some other stream must not leak into piped output.
            width: Some(120),
            no_color: no_color.map(OsString::from),
        }
    }

    #[test]
    fn auto_format_is_a_table_on_a_terminal_and_json_when_piped() {
        let auto = args(FormatChoice::Auto, ColorChoice::Auto);
        assert_eq!(auto.resolve_in(&terminal(None)).format, Format::Table);
        assert_eq!(auto.resolve_in(&pipe(None)).format, Format::Json);
        for (choice, format) in [
            (FormatChoice::Table, Format::Table),
            (FormatChoice::Json, Format::Json),
            (FormatChoice::Markdown, Format::Markdown),
            (FormatChoice::Html, Format::Html),
        ] {
            let a = args(choice, ColorChoice::Auto);
            assert_eq!(a.resolve_in(&terminal(None)).format, format);
            assert_eq!(a.resolve_in(&pipe(None)).format, format);
        }
    }

    #[test]
    fn no_color_disables_auto_colour_only_when_not_empty() {
        let auto = args(FormatChoice::Table, ColorChoice::Auto);
        assert!(auto.resolve_in(&terminal(None)).color);
        // no-color.org: an empty NO_COLOR does not disable colour.
        assert!(auto.resolve_in(&terminal(Some(""))).color);
        assert!(!auto.resolve_in(&terminal(Some("1"))).color);
        assert!(!auto.resolve_in(&pipe(None)).color);
    }

    #[test]
    fn always_and_never_override_the_environment() {
        let always = args(FormatChoice::Table, ColorChoice::Always);
        assert!(always.resolve_in(&pipe(Some("1"))).color);
        let never = args(FormatChoice::Table, ColorChoice::Never);
        assert!(!never.resolve_in(&terminal(None)).color);
    }

    #[test]
    fn a_command_without_html_resolves_its_formats_as_diff_does() {
        for (text, full) in [
            (TextFormatChoice::Auto, FormatChoice::Auto),
            (TextFormatChoice::Table, FormatChoice::Table),
            (TextFormatChoice::Json, FormatChoice::Json),
            (TextFormatChoice::Markdown, FormatChoice::Markdown),
        ] {
            assert_eq!(FormatChoice::from(text), full);
        }
        // and its `--format` does not take `html`
        assert!(TextFormatChoice::from_str("html", false).is_err());
        assert!(FormatChoice::from_str("html", false).is_ok());
    }

    #[test]
    fn a_terminal_of_unknown_size_takes_columns() {
        let cols = |s: &str| Some(OsString::from(s));
        assert_eq!(terminal_width(Some(120), cols("80")), Some(120));
        assert_eq!(terminal_width(None, cols("80")), Some(80));
        assert_eq!(terminal_width(Some(0), cols(" 100 ")), Some(100));
        for bad in ["", "0", "-5", "wide", "70000"] {
            assert_eq!(terminal_width(None, cols(bad)), None, "{bad}");
        }
        assert_eq!(terminal_width(None, None), None);
    }

    #[test]
    fn width_only_when_stdout_is_a_terminal() {
        let table = args(FormatChoice::Table, ColorChoice::Never);
        assert_eq!(table.resolve_in(&terminal(None)).width, Some(120));
        assert_eq!(table.resolve_in(&pipe(None)).width, None);
    }
}
