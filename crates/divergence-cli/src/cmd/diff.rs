//! `divergence diff OURS REF`: compare two dumps and report the first op where they diverge.
//!
//! Glue only: open both dumps ([`divergence_dump`]), plan the execution order and compare each
//! probe pair ([`divergence_diff`], pure), render ([`divergence_render`]) as the shared output
//! flags say ([`crate::cmd::output`]). Probe pairs are read and compared in parallel
//! ([`crate::cmd::rows`]: a row per task, or a run of a probe's decode steps). Stored
//! little-endian floats are compared straight from the memory maps; everything else (deflated
//! members above all) is streamed piece by piece into a [`divergence_diff::ProbeFold`], so
//! memory is a few pieces per thread whatever the tensors' sizes (docs/reliability.md,
//! "Memory").

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use divergence_diff::{
    DiffConfig, DumpNames, OpResult, Report, ReportContext, Rows, Side, Status, Tolerance,
};
use divergence_dump::{Dump, Format as DumpFormat, TensorView};
use divergence_map::MappedDump;
use divergence_render::TableOptions;
use rayon::prelude::*;
use regex::Regex;

use crate::cmd::align;
use crate::cmd::output::{Format, Output, OutputArgs};
use crate::cmd::parse;
use crate::cmd::rows::{read_side, side};
use crate::cmd::timings;
use crate::exit::{self, Exit};

/// Arguments of `divergence diff`.
#[derive(Debug, Args)]
#[command(after_long_help = format!(
    "{AFTER_HELP}\n{}\n\n{}",
    divergence_diff::decision_rule(),
    divergence_diff::truth_rule()
))]
pub struct DiffArgs {
    /// The port's dump (.npz, .npy or .safetensors).
    pub ours: PathBuf,
    /// The reference's dump (.npz, .npy or .safetensors).
    #[arg(value_name = "REF")]
    pub reference: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Relative tolerance (overrides the dtype preset; the preset's atol stays unless --atol).
    #[arg(long, value_parser = parse::non_negative, allow_negative_numbers = true)]
    pub rtol: Option<f64>,
    /// Absolute tolerance (overrides the dtype preset; the preset's rtol stays unless --rtol).
    #[arg(long, value_parser = parse::non_negative, allow_negative_numbers = true)]
    pub atol: Option<f64>,
    /// Flag any difference at all (bit-exact porting).
    #[arg(long, conflicts_with_all = ["rtol", "atol"])]
    pub exact: bool,
    /// A high-precision run of the reference model on the same ids (`dump_reference.py
    /// --truth-out`): judge each op by how much less accurate ours is than the reference
    /// (noise ratio; see the three-way rule below) instead of by a fixed preset.
    #[arg(long, value_name = "TRUTH", conflicts_with_all = ["rtol", "atol", "exact"])]
    pub truth: Option<PathBuf>,
    /// With --truth: the noise ratio above which an op diverges (default 3).
    #[arg(long, value_name = "K", requires = "truth", value_parser = parse::positive, allow_negative_numbers = true)]
    pub noise_ratio: Option<f64>,
    /// Show every op instead of the compact view.
    #[arg(long)]
    pub all: bool,
    /// Only ops of this layer (table and Markdown; --tui opens filtered on it).
    #[arg(long, value_parser = parse::whole, allow_negative_numbers = true)]
    pub layer: Option<usize>,
    /// Only ops whose name matches this regex (table and Markdown; --tui opens filtered on
    /// it; a decode step's name x@s matches when x@s or x does); text without any of
    /// `^$*+?()[]{}|\` matches as a plain substring.
    #[arg(long, value_name = "REGEX", value_parser = parse::grep)]
    pub grep: Option<Regex>,
    /// Compare these decode steps only (0 = the prefill): `0-22`, `5`, `0,4-8`, `3-` (from step
    /// 3 on). The rest of the dumps is not read; the checks of a decode pair hold for the steps
    /// selected (both sides hold them, fed the same tokens up to the last of them), so a port
    /// that decoded its own tokens can be compared up to the step where they part.
    #[arg(long, value_name = "STEPS", value_parser = parse::steps, allow_negative_numbers = true)]
    pub steps: Option<crate::cmd::steps::Selection>,
    /// Ops shown before and after the first divergence in the compact view.
    #[arg(long, default_value_t = 3, value_parser = parse::whole, allow_negative_numbers = true)]
    pub context: usize,
    /// Also write the JSON report to this file (a CI artifact).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Also write the Markdown report to this file (e.g. "$GITHUB_STEP_SUMMARY").
    #[arg(long, value_name = "FILE")]
    pub markdown_out: Option<PathBuf>,
    /// Also write the HTML report to this file: one self-contained page with the error-growth
    /// plot, the layers x op-kind heatmap and a sortable, filterable table of every op.
    #[arg(long, value_name = "FILE")]
    pub html_out: Option<PathBuf>,
    /// Also write the error-growth plot alone to this SVG file (rel err per op, log scale; a
    /// name with another format's extension, such as .png or .pdf, is refused).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// A name map for our dump (docs/mapping.md): a TOML file of rules that rename our tensors
    /// to the reference's names and re-lay them out (split fused qkv / gate_up, permute,
    /// reshape, squeeze, concat or sum several), or a built-in preset: `vllm`, `llama.cpp`,
    /// `transformer-lens`. Without it, a map recorded in our dump's metadata (`"map"`) is used.
    #[arg(long, value_name = "FILE|PRESET")]
    pub map: Option<String>,
    /// Write a map to this TOML file: the pairs inferred by content when the dumps share few
    /// names (compared pairs as rules, the others commented out), and, for every shape mismatch
    /// that a layout change explains, the rule with its transform. Check it, edit it, pass it
    /// back with --map.
    #[arg(long, value_name = "FILE.toml")]
    pub suggest_map: Option<PathBuf>,
    /// Skip the token-level effect (top-1 agreement, top-5 overlap and KL divergence of the
    /// logits, `tokens` in the report): it costs about 0.1 s for 128 positions of a
    /// 151,936-token vocabulary on 2 cores.
    #[arg(long)]
    pub no_tokens: bool,
    /// Self-consistency without a reference: OURS and REF are two runs of the port on the same
    /// tokens, one prefill over T tokens and one prefill over the first T - k plus k decode
    /// steps fed the rest (either order). Each position must agree within noise; the report
    /// names the first (step, op) where the decode path parts from the prefill.
    #[arg(long, conflicts_with_all = ["truth", "map", "suggest_map"])]
    pub prefill_vs_decode: bool,
    /// Checkpoint directory: annotate the k_norm amplification section with each layer's
    /// norm weight gains (see `divergence inspect`). Its config.json's sizes must be those of
    /// the model the dumps record (an error otherwise).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Re-run whenever either file changes, once the change has held for 0.3 s (a dump still
    /// being written is not read half-way); stop with Ctrl-C. On a terminal each report
    /// replaces the last; piped, a table or Markdown report starts with a line saying when it
    /// was made, and JSON reports follow one another as documents.
    #[arg(long)]
    pub watch: bool,
    /// Interactive view of the whole report in the terminal: scroll every op, jump to the first
    /// divergence (f), its origin (o), the next / previous divergent op (n / N), filter (/), sort
    /// (s), details (Enter), per-layer overview (l), decode steps' overview (p) and next /
    /// previous step (] / [), quit (q); ? in the view lists every key. With --watch it reloads
    /// in place. Needs a terminal.
    #[arg(long, conflicts_with_all = ["format", "json_out", "markdown_out", "html_out", "plot"])]
    pub tui: bool,
}

const AFTER_HELP: &str = "Exit codes: 0 = no divergence, 1 = divergence found, 2 = error \
(one line; also a comparison that cannot mean anything: the dumps share no probe name, or they \
record different input_ids, where the report is still printed).\n\n\
The decision rule (docs/tolerances.md has the per-dtype presets):";

pub fn run(args: DiffArgs) -> Result<Exit> {
    check_outputs(&args)?;
    let output = args.output.resolve();
    // Said after a report, never beside an error (an exit-2 run's stderr is its one line).
    let note = filters_unused(&args, output.format);
    let say_note = |code: Exit| {
        if let (Some(note), Exit::Clean | Exit::Found) = (&note, code) {
            crate::exit::say(note);
        }
    };
    let mut files: Vec<&Path> = vec![&args.ours, &args.reference];
    files.extend(args.truth.as_deref());
    let label = |p: &Path| divergence_names::one_line(&p.display().to_string()).into_owned();
    let names: Vec<String> = files.iter().map(|p| label(p)).collect();
    let mut mapped = names.clone();
    mapped.extend(args.model.as_deref().map(label));
    // Under --tui a SIGBUS ends the view (terminal restored, one line); the printed --watch
    // restarts itself instead.
    crate::sigbus::install(&mapped.join(", "), args.watch && !args.tui, args.tui);
    if args.tui {
        return run_tui(&args, &files);
    }
    if !args.watch {
        return match diff_once(&args, &output)? {
            Outcome::Verdict(code) => {
                say_note(code);
                Ok(code)
            }
            // The reader went away (`divergence diff ... | head`): the verdict still stands.
            Outcome::ReaderGone(code) => Ok(code),
        };
    }
    // A watch restarted after a SIGBUS (crate::sigbus) met a file being rewritten: it waits
    // for the files to settle before its first read, like after any change.
    let restarted = std::env::var_os(crate::sigbus::RESTARTED).is_some();
    let mut watch = Watch::new(&files, restarted.then(Vec::new));
    loop {
        if let Some(stamp) = watch.due() {
            // Clear the screen (terminals only), then report; errors are shown and the watch
            // goes on, until the reader of stdout goes away.
            let report = build_report(&args);
            if watch.unchanged_since(stamp) {
                // A terminal's screen is cleared; into a pipe or a file, a table or Markdown
                // report starts with a line that says when it was made (they ran together).
                let start = match output.terminal {
                    true => Some("\x1b[2J\x1b[H".to_string()),
                    false => watch_mark(output.format, SystemTime::now()),
                };
                if start.is_some_and(|s| write_stdout(s.as_bytes()).is_err()) {
                    return Ok(Exit::Clean);
                }
                match report.and_then(|r| print_report(&args, &output, &r)) {
                    Ok(Outcome::Verdict(code)) => say_note(code),
                    Ok(Outcome::ReaderGone(_)) => return Ok(Exit::Clean),
                    Err(err) => exit::print_error(&err),
                }
                crate::exit::say(&format!(
                    "watching {} (Ctrl-C to stop)",
                    names.join(" and ")
                ));
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The line each `--watch` report starts with where stdout is no terminal: `=== divergence
/// diff --watch: report of YYYY-MM-DD HH:MM:SS UTC ===` for a table, the same as a Markdown
/// rule and line. None for JSON (the reports are JSON documents one after the other: a line
/// between them would make the stream unreadable) and HTML (one page a file).
fn watch_mark(format: Format, now: SystemTime) -> Option<String> {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_date(secs / 86_400);
    let secs = secs % 86_400;
    let at = format!(
        "report of {y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    match format {
        Format::Table => Some(format!("=== divergence diff --watch: {at} ===\n")),
        Format::Markdown => Some(format!("\n---\n\n*divergence diff --watch: {at}*\n\n")),
        Format::Json | Format::Html => None,
    }
}

/// The proleptic Gregorian date (year, month, day) `days` days after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The files `diff` writes are none of its inputs and each its own ([`crate::cmd::outputs::check`]): the
/// dumps, the truth, a map file, `--model`'s files.
fn check_outputs(args: &DiffArgs) -> Result<()> {
    let map_file = args
        .map
        .as_deref()
        .filter(|m| divergence_map::preset(m).is_none())
        .map(Path::new);
    let model = args
        .model
        .as_deref()
        .map(crate::cmd::outputs::model_files)
        .unwrap_or_default();
    let inputs: Vec<(&str, &Path)> = [
        Some(("OURS", args.ours.as_path())),
        Some(("REF", args.reference.as_path())),
        args.truth.as_deref().map(|p| ("--truth", p)),
        map_file.map(|p| ("--map", p)),
    ]
    .into_iter()
    .flatten()
    .chain(model.iter().map(|p| ("--model", p.as_path())))
    .collect();
    if let Some(plot) = &args.plot {
        plot_is_svg(plot)?;
    }
    let outputs = [
        ("--json-out", args.json_out.as_deref()),
        ("--markdown-out", args.markdown_out.as_deref()),
        ("--html-out", args.html_out.as_deref()),
        ("--plot", args.plot.as_deref()),
        ("--suggest-map", args.suggest_map.as_deref()),
    ];
    crate::cmd::outputs::not_stdout(&outputs)?;
    crate::cmd::outputs::check(&outputs, &inputs)?;
    crate::cmd::outputs::not_a_dump(&outputs)
}

/// Extensions of formats other than SVG that `--plot` refuses ([`plot_is_svg`]).
const NOT_SVG: [&str; 18] = [
    "png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff", "avif", "ico", "heic", "pdf", "eps",
    "ps", "svgz", "html", "htm", "json",
];

/// `--plot` writes SVG: a name that asks for another format (`plot.png`, `plot.pdf`) is refused
/// rather than given SVG under it (a bad-input hunt: a viewer then failed on "a PNG" that was
/// not one). Any other name is taken as it is: a `mktemp` name, `plot.svg.tmp`
/// (a review: every extension but `.svg` was refused at first).
fn plot_is_svg(path: &Path) -> Result<()> {
    match path.extension().map(|e| e.to_string_lossy()) {
        Some(ext) if NOT_SVG.iter().any(|x| ext.eq_ignore_ascii_case(x)) => anyhow::bail!(
            "--plot {}: the plot is written as SVG, not .{}; give a .svg file (convert it \
             afterwards if you need another format, e.g. `rsvg-convert -o plot.png plot.svg`)",
            divergence_names::one_line(&path.display().to_string()),
            divergence_names::one_line(&ext)
        ),
        _ => Ok(()),
    }
}

/// A note when `--all`, `--layer` or `--grep` shape no view this run writes: they select the
/// rows of the table and Markdown views, and the JSON and HTML reports hold every op (a
/// newcomer's check: `diff a b --layer 3 | less` printed JSON, the default when piped, of every
/// op without a word).
fn filters_unused(args: &DiffArgs, stdout: Format) -> Option<String> {
    let flags: Vec<&str> = [
        (args.all, "--all"),
        (args.layer.is_some(), "--layer"),
        (args.grep.is_some(), "--grep"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    let shaped = matches!(stdout, Format::Table | Format::Markdown) || args.markdown_out.is_some();
    if flags.is_empty() || shaped {
        return None;
    }
    let format = match (stdout, args.output.format) {
        (Format::Json, crate::cmd::output::FormatChoice::Auto) => {
            "JSON report (the format when stdout is not a terminal)"
        }
        (Format::Json, _) => "JSON report",
        _ => "HTML report",
    };
    let verb = if flags.len() == 1 {
        "selects"
    } else {
        "select"
    };
    Some(format!(
        "note: {} {verb} the rows of the table and Markdown views only; this {format} holds every op (--format table shows the selection)",
        flags.join(" and ")
    ))
}

/// The probes of the residual stream whose prefill holds a row per prompt token, in the dump
/// contract's names: the first a dump holds tells how many token positions its prefill has.
const TOKEN_ROWS: [&str; 4] = [
    "model.embed_tokens",
    "model.layers.0.input_layernorm",
    "model.layers.0",
    "model.norm",
];

/// A warning when `dump`'s prefill holds another count of token positions than its metadata's
/// `input_ids`, read from the first of [`TOKEN_ROWS`] it holds (its token axis: the first of
/// `[T, H]`, the second of `[B, T, H]`): positions are numbered from `input_ids`, and a
/// report's per-position profile (the rows' own positions) and token line (the prompt's) then
/// disagree (a bad-input hunt: one decode step at "position 5" in one and 13 in the other,
/// without a word; a dump without `model.embed_tokens` was still silent until session 38).
fn embeddings_against_ids(dump: &Dump, label: &str) -> Option<String> {
    let ids = dump.meta()?.input_ids.as_ref()?.len();
    let (name, shape, positions) = token_rows(dump)?;
    (positions != ids).then(|| {
        format!(
            "{}: {name} {shape:?} holds {positions} token positions, but its input_ids hold {ids} tokens: token positions are numbered from input_ids",
            divergence_names::one_line(label)
        )
    })
}

/// The first of [`TOKEN_ROWS`] `dump` holds, its shape and the token positions it holds (the
/// prefill's tokens, read where the metadata has no `input_ids` or to check them).
pub(crate) fn token_rows(dump: &Dump) -> Option<(&'static str, &[usize], usize)> {
    TOKEN_ROWS.iter().find_map(|&n| {
        let shape = dump.shape(n)?;
        Some((n, shape, token_positions(shape)?))
    })
}

/// The token positions `model.embed_tokens` of this shape holds: the first axis of `[T, H]`,
/// the second of `[B, T, H]` (`None` for another rank).
pub(crate) fn token_positions(shape: &[usize]) -> Option<usize> {
    match shape.len() {
        2 => shape.first().copied(),
        n if n >= 3 => shape.get(1).copied(),
        _ => None,
    }
}

/// How often `--watch` looks at the files.
const POLL: Duration = Duration::from_millis(300);

/// Device, inode, modification time and length of each watched file.
type Stamps = Vec<Option<(u64, u64, SystemTime, u64)>>;

/// The settle rule of `--watch` (printed and `--tui`): a change is read once it has held for
/// a whole poll interval, so a dump still being written (truncated, then growing) is not read
/// half-way over and over; and what was read counts only if the files did not change while it
/// was read (else the next settled poll reads them again).
struct Watch<'a> {
    files: &'a [&'a Path],
    /// The stamps of the files last read whole; `None`: read at once.
    last: Option<Stamps>,
    /// The stamps of the previous poll.
    polled: Option<Stamps>,
}

impl<'a> Watch<'a> {
    /// `last`: the stamps already read (`None` reads at once; a stamp that matches nothing,
    /// such as an empty list, waits for the files to settle first).
    fn new(files: &'a [&'a Path], last: Option<Stamps>) -> Watch<'a> {
        Watch {
            files,
            polled: last.clone(),
            last,
        }
    }

    /// The stamps to read now: settled since the previous poll and not the last read.
    fn due(&mut self) -> Option<Stamps> {
        let stamp = stamps(self.files);
        let settled = self.last.is_none() || self.polled.as_ref() == Some(&stamp);
        self.polled = Some(stamp.clone());
        (settled && self.last.as_ref() != Some(&stamp)).then_some(stamp)
    }

    /// After a read that started at `stamp`: true, and remembered as the last read, when the
    /// files did not change during it.
    fn unchanged_since(&mut self, stamp: Stamps) -> bool {
        let same = stamps(self.files) == stamp;
        if same {
            self.last = Some(stamp);
        }
        same
    }
}

/// `--tui`: the interactive view (with `--watch`, reloaded when the files change and settle,
/// as the printed watch does). The exit code is the verdict of the last report shown.
fn run_tui(args: &DiffArgs, files: &[&Path]) -> Result<Exit> {
    use std::io::IsTerminal;
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        anyhow::bail!(
            "--tui needs a terminal (stdin and stdout); use --format table, json, markdown or html instead"
        );
    }
    // Stamps taken before the first read: a dump rewritten during it is read again at the
    // next settled poll.
    let before = stamps(files);
    let report = build_report(args)?;
    let mut code = verdict(&report);
    let mut why = meaningless(&report);
    let mut watch = Watch::new(files, Some(Vec::new()));
    watch.unchanged_since(before);
    let mut reload = || {
        let stamp = watch.due()?;
        let result = build_report(args);
        if !watch.unchanged_since(stamp) {
            return None; // changed while read: the next settled poll reads it again
        }
        Some(match result {
            Ok(report) => {
                code = verdict(&report);
                why = meaningless(&report);
                Ok(report)
            }
            Err(err) => Err(divergence_names::one_line(&format!("{err:#}")).into_owned()),
        })
    };
    divergence_render::tui::run(
        report,
        args.watch
            .then_some(&mut reload as &mut divergence_render::tui::Reload<'_>),
        args.grep.clone(),
        args.layer,
    )
    .context("the terminal view")?;
    // The view said it on screen; the shell gets the line every other format prints.
    if code == Exit::Error {
        say_meaningless(args, &why);
    }
    Ok(code)
}

/// What one comparison ended with.
enum Outcome {
    /// The report was written; this is the exit code it calls for.
    Verdict(Exit),
    /// The report was cut short because stdout's reader went away (a broken pipe).
    ReaderGone(Exit),
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush())
}

/// Device, inode, modification time and length of each file (None for a file that is missing
/// right now): a rewrite in place changes the time or length, a rename over it the inode.
fn stamps(paths: &[&Path]) -> Stamps {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.dev(), m.ino(), m.modified().ok()?, m.len())))
        })
        .collect()
}

fn diff_once(args: &DiffArgs, output: &Output) -> Result<Outcome> {
    let report = build_report(args)?;
    let outcome = print_report(args, output, &report);
    release(args, report);
    outcome
}

/// Writes the report as the flags say; the outcome carries the exit code it calls for.
fn print_report(args: &DiffArgs, output: &Output, report: &Report) -> Result<Outcome> {
    let _output = timings::MarkOnDrop("output");
    let opts = TableOptions {
        color: output.color,
        all: args.all,
        layer: args.layer,
        grep: args.grep.clone(),
        context: args.context,
        width: output.width,
    };
    if let Some(path) = &args.json_out {
        write_file("--json-out", path, |out| {
            divergence_render::render_json(report, out)
        })?;
    }
    // The Markdown outputs' sizes: (where, bytes).
    let mut markdown: Vec<(&str, u64)> = Vec::new();
    if let Some(path) = &args.markdown_out {
        let md_opts = TableOptions {
            color: false,
            width: None,
            ..opts.clone()
        };
        let mut written = 0;
        write_file("--markdown-out", path, |out| {
            let mut out = Counted::new(out);
            let done = divergence_render::render_markdown(report, &md_opts, &mut out);
            written = out.bytes;
            done
        })?;
        markdown.push(("--markdown-out", written));
    }
    if let Some(path) = &args.html_out {
        write_file("--html-out", path, |out| {
            divergence_render::render_html(report, out)
        })?;
    }
    if let Some(path) = &args.plot {
        write_file("--plot", path, |out| {
            divergence_render::render_growth_svg(report, out)
        })?;
    }
    let code = verdict(report);
    // Buffered: stdout is line-buffered, and the JSON of a decode dump has millions of lines
    // (one write per line took 80% of a 43,000-row report's time).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let rendered = match output.format {
        Format::Table => divergence_render::render_table(report, &opts, &mut out),
        Format::Json => divergence_render::render_json(report, &mut out),
        Format::Markdown => {
            let mut out = Counted::new(&mut out);
            let done = divergence_render::render_markdown(report, &opts, &mut out);
            markdown.push(("stdout", out.bytes));
            done
        }
        Format::Html => divergence_render::render_html(report, &mut out),
    };
    match rendered.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(Outcome::ReaderGone(code))
        }
        Err(err) => return Err(err).context("writing the report to stdout"),
    }
    drop(out);
    summary_too_large(&markdown, args, !report.steps.is_empty());
    if code == Exit::Error {
        // The report says why at its top; repeat it as the one-line error CI logs show.
        say_meaningless(args, &meaningless(report));
    }
    Ok(Outcome::Verdict(code))
}

/// Why a report cannot mean anything ([`verdict`]'s `Exit::Error`): its dumps record other
/// input_ids, no probe was compared, or the probes compared hold no element.
fn meaningless(report: &Report) -> String {
    if report.input_ids_mismatch {
        "the two dumps record different input_ids: the comparison is meaningless".to_string()
    } else if report.compared_no_element() {
        format!(
            "nothing was compared: each of the {} ops compared holds no element on either side",
            report.summary.compared
        )
    } else {
        // A checkpoint given as a dump (a newcomer's run: model.safetensors as REF read only
        // "no name in common"): its tensors are weights.
        let weights = |names: &[String]| {
            let n = names
                .iter()
                .filter(|n| n.ends_with(".weight") || n.ends_with(".bias"))
                .count();
            n > 0 && 2 * n > names.len()
        };
        let which = match (weights(&report.only_ours), weights(&report.only_ref)) {
            (true, true) => {
                " (both hold weights, `*.weight`: model checkpoints, not dumps of activations)"
            }
            (true, false) => {
                " (OURS holds weights, `*.weight`: a model checkpoint, not a dump of activations)"
            }
            (false, true) => {
                " (REF holds weights, `*.weight`: a model checkpoint, not a dump of activations)"
            }
            (false, false) => "",
        };
        format!("no probe was compared (no name in common, or none readable){which}")
    }
}

/// The one-line error of a report that cannot mean anything, `why` ([`meaningless`]).
fn say_meaningless(args: &DiffArgs, why: &str) {
    let line = format!(
        "error: {} vs {}: {why}",
        args.ours.display(),
        args.reference.display()
    );
    crate::exit::say(&divergence_names::one_line(&line));
}

/// The exit code a report calls for. A comparison that cannot mean anything is an error, not
/// a pass: different input_ids, no probe compared at all (no name in common, empty dumps,
/// every probe unreadable), or probes compared that hold no element (since session 51; exit 0
/// with a warning before).
fn verdict(report: &Report) -> Exit {
    // (Ops compared that hold no element compared nothing either: no verdict.)
    if report.input_ids_mismatch || report.summary.compared == 0 || report.compared_no_element() {
        Exit::Error
    } else if report.first_divergence.is_some() {
        Exit::Found
    } else {
        Exit::Clean
    }
}

/// The most a GitHub Actions job summary (`$GITHUB_STEP_SUMMARY`) takes from one step: past it
/// the upload fails and the summary shows nothing of it.
const STEP_SUMMARY_MAX: u64 = 1 << 20;

/// A writer that counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Counted<W> {
    fn new(inner: W) -> Counted<W> {
        Counted { inner, bytes: 0 }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One warning, after the report, where a Markdown output (`markdown`: where, bytes) is larger
/// than a GitHub job summary takes (a visual check: `--all --format markdown` over a decode
/// report of ~50,000 ops wrote 8 MB, which a step summary drops whole, without a word).
fn summary_too_large(markdown: &[(&str, u64)], args: &DiffArgs, decode: bool) {
    let large: Vec<&(&str, u64)> = markdown
        .iter()
        .filter(|(_, b)| *b > STEP_SUMMARY_MAX)
        .collect();
    let Some(bytes) = large.iter().map(|(_, b)| *b).max() else {
        return;
    };
    let at: Vec<&str> = large.iter().map(|(w, _)| *w).collect();
    // A filter picks the ops table's rows with or without --all (a review: "leave out --all"
    // under --layer left the report as large).
    let narrow = match (
        args.all,
        args.layer.is_some() || args.grep.is_some(),
        decode,
    ) {
        (true, false, _) => ": leave out --all, or narrow it with --layer / --grep",
        (_, true, true) => ": narrow --layer / --grep, or compare fewer decode steps (--steps)",
        (_, true, false) => ": narrow --layer / --grep",
        (false, false, _) => "",
    };
    // In bytes too: just past the limit, a size in MiB rounds to it (`is 1.0 MiB ... at most
    // 1 MiB` for 1,090,922 bytes: a visual check).
    exit::say(&format!(
        "warning: the Markdown report ({}) is {:.2} MiB ({} bytes); a GitHub job summary ($GITHUB_STEP_SUMMARY) takes at most 1 MiB ({} bytes) a step and drops a larger one{narrow}",
        at.join(", "),
        bytes as f64 / f64::from(1u32 << 20),
        grouped(bytes),
        grouped(STEP_SUMMARY_MAX)
    ));
}

/// `n` with its digits in groups of three: `1,090,922`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes the output of `flag` (`--json-out`, ...) to `path`; an error names both (a bad-input
/// hunt: "/dev/full: cannot write" did not say which of four outputs failed).
fn write_file(
    flag: &str,
    path: &Path,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file = crate::cmd::outputs::create(flag, path)?;
    let mut out = std::io::BufWriter::new(file);
    render(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("{flag} {}: cannot write", path.display()))
}

/// Opens both dumps, compares every probe pair in parallel and assembles the report.
pub fn build_report(args: &DiffArgs) -> Result<Report> {
    timings::begin();
    if let Some(truth) = &args.truth {
        truth_is_not_a_side_file(truth, &args.ours, &args.reference)?;
    }
    let cfg = diff_config(args);
    // Open the dumps first, in parallel: header parsing only, no tensor is read yet; `--map`'s
    // map is parsed beside them (its errors come after theirs).
    let (((ours, reference), truth), flag_map) = rayon::join(
        || {
            rayon::join(
                || Dump::open_pair(&args.ours, &args.reference),
                || args.truth.as_deref().map(Dump::open).transpose(),
            )
        },
        || {
            let flag = args.map.as_deref().filter(|_| !args.prefill_vs_decode);
            flag.map(crate::cmd::map::from_flag)
        },
    );
    let (ours, reference, truth) = (ours?, reference?, truth?);
    timings::mark("open");
    let report = report_of(args, &cfg, &ours, &reference, truth.as_ref(), flag_map);
    release(args, (ours, reference, truth));
    report
}

/// The comparison's settings of these flags.
fn diff_config(args: &DiffArgs) -> DiffConfig {
    let truth_ratio = args.truth.as_ref().map(|_| {
        args.noise_ratio
            .unwrap_or(divergence_diff::DEFAULT_NOISE_RATIO)
    });
    DiffConfig {
        tolerance: Tolerance::from_flags(args.exact, args.rtol, args.atol, truth_ratio),
        // `--prefill-vs-decode` lines the positions up itself.
        last_logit_rows: !args.prefill_vs_decode,
        ..DiffConfig::default()
    }
}

/// Lets go of what one report needed (the open dumps, the report). A plain `diff` exits right
/// after its report: it leaves the maps and the memory to the kernel, which reclaims them at
/// exit for less than unmapping and freeing them first (~3 ms a run with the table output on
/// the GPU machine's host, one pass and decode steps alike; docs/performance.md). `--watch`
/// and `--tui` go on, so they free it, on a thread of its own ([`drop_aside`]).
fn release<T: Send + 'static>(args: &DiffArgs, value: T) {
    if args.watch || args.tui {
        drop_aside(value);
    } else {
        std::mem::forget(value);
    }
}

/// Drops `value` on a thread of its own: unmapping two large dumps and freeing the entries of
/// a decode dump (tens of thousands) takes tens of milliseconds that the report need not wait
/// for (the process may exit first: the kernel reclaims it all the same). Inline when no
/// thread can be started.
pub(crate) fn drop_aside<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// [`build_report`] once the dumps are open.
fn report_of(
    args: &DiffArgs,
    cfg: &DiffConfig,
    ours: &Dump,
    reference: &Dump,
    truth: Option<&Dump>,
    flag_map: Option<Result<divergence_map::Map>>,
) -> Result<Report> {
    if args.prefill_vs_decode {
        if let Some(e) = crate::cmd::map::unequal_shipped_maps(ours, reference) {
            anyhow::bail!(e);
        }
        let pair = crate::cmd::prefill_decode::pair(
            ours,
            &args.ours,
            reference,
            &args.reference,
            args.steps.as_ref(),
        )?;
        let mut sides = Sides::from_pair(pair);
        if let Some(sel) = &args.steps {
            let held = sides
                .plan
                .order
                .iter()
                .map(|n| divergence_names::split_step(n).1)
                .collect();
            sel.check(&held, &sides.ours_label)?;
            let pair = (&sides.ours, &sides.reference);
            // The order is the stepped run's, as said before the selection.
            let source = Some(sides.plan.source);
            sides
                .notes
                .extend(select_steps(&mut sides.plan, pair, sel, source));
        }
        return finish_report(args, cfg, sides);
    }
    let (ours_dump, ref_dump) = (ours, reference);
    let chosen = crate::cmd::map::choose(ours_dump, flag_map)?;
    let explicit = chosen.is_some();
    let model = args.model.as_deref();
    let (mut ours, mut map_warnings, map_notes) =
        crate::cmd::map::apply(ours_dump, ref_dump, chosen, model)?;
    map_warnings.extend(
        crate::cmd::map::reference_map_unused(ours_dump, ref_dump, explicit)
            .map_err(anyhow::Error::msg)?,
    );
    map_warnings.extend(
        args.map
            .as_deref()
            .and_then(crate::cmd::map::preset_shadows_file),
    );
    let reference = MappedDump::plain(ref_dump);
    let truth = truth.map(MappedDump::plain);
    timings::mark("map");
    let mut plan = divergence_diff::plan_order(&dump_names(&ours), &dump_names(&reference));
    // Few names in common and no map: pair the rest by content and compare them under the
    // inferred map (docs/mapping.md, "Alignment by content").
    let mut inferred = None;
    if !explicit && align::few_in_common(&plan, &ours, ref_dump) {
        if let Some(inf) = align::infer(ours_dump, ref_dump) {
            if inf.skipped.is_some() {
                map_warnings.push(align::summary(&inf));
                // no pair: kept for --suggest-map to say why its file holds no rule
                inferred = Some(inf);
            } else {
                ours = apply_inferred(&inf, ours_dump, ref_dump, model)?;
                plan = divergence_diff::plan_order(&dump_names(&ours), &dump_names(&reference));
                map_warnings.push(align::summary(&inf));
                inferred = Some(inf);
            }
        }
    }
    if let Some(layer) = args.layer {
        check_layer(layer, &plan.layers())?;
    }
    timings::mark("plan");
    map_warnings.extend(crate::cmd::steps::check(
        &ours,
        &args.ours,
        &reference,
        &args.reference,
        crate::cmd::steps::Pair::Compared,
        args.steps.as_ref(),
        truth.as_ref(),
    )?);
    let mut notes = map_notes;
    if let Some(sel) = &args.steps {
        notes.extend(select_steps(&mut plan, (&ours, &reference), sel, None));
    }
    let mut truth_warnings = Vec::new();
    let mut cfg = cfg.clone();
    if let (Some(truth), Some(path)) = (&truth, &args.truth) {
        let same_weights;
        (truth_warnings, same_weights) = check_truth(
            (truth, path),
            (&reference, &args.reference),
            (&ours, &args.ours),
            &plan.order,
            args.steps.as_ref(),
        )?;
        cfg.judge_noisy_reference = same_weights;
    }
    timings::mark("checks");

    let sides = Sides {
        ours,
        reference,
        truth,
        ours_label: args.ours.display().to_string(),
        ref_label: args.reference.display().to_string(),
        plan,
        warnings: map_warnings,
        notes,
        truth_warnings,
        inferred,
        check_ids: true,
        names: None,
    };
    finish_report(args, &cfg, sides)
}

/// `ours` under the map that alignment by content inferred (`inf`): an error in it (past a
/// bound of the map's text or of its patterns) names it by both dump files, from which it was
/// inferred (it read "alignment by content:" alone).
fn apply_inferred<'a>(
    inf: &align::Inferred,
    ours: &'a Dump,
    reference: &Dump,
    model: Option<&Path>,
) -> Result<MappedDump<'a>> {
    let label = format!(
        "the map alignment by content inferred for {} and {}",
        divergence_names::one_line(&ours.path().display().to_string()),
        divergence_names::one_line(&reference.path().display().to_string())
    );
    let map = divergence_map::Map::parse(&inf.toml, &label)?;
    Ok(crate::cmd::map::apply(ours, reference, Some(map), model)?.0)
}

/// Everything the comparison needs once the two sides are set up.
struct Sides<'a> {
    ours: MappedDump<'a>,
    reference: MappedDump<'a>,
    truth: Option<MappedDump<'a>>,
    ours_label: String,
    ref_label: String,
    plan: divergence_diff::OrderPlan,
    warnings: Vec<String>,
    notes: Vec<String>,
    truth_warnings: Vec<String>,
    inferred: Option<align::Inferred>,
    /// False when the two sides saw other token counts on purpose (`--prefill-vs-decode`).
    check_ids: bool,
    /// What each side is, where they are not a port and its reference (`--prefill-vs-decode`).
    names: Option<divergence_diff::SideNames>,
}

impl<'a> Sides<'a> {
    fn from_pair(pair: crate::cmd::prefill_decode::Pair<'a>) -> Sides<'a> {
        let plan = divergence_diff::plan_order_from(
            &dump_names(&pair.stepped),
            &dump_names(&pair.full),
            Some(pair.order_source),
        );
        Sides {
            ours_label: pair.stepped_path.display().to_string(),
            ref_label: pair.full_path.display().to_string(),
            ours: pair.stepped,
            reference: pair.full,
            truth: None,
            plan,
            warnings: pair.warnings,
            notes: pair.notes,
            truth_warnings: Vec::new(),
            inferred: None,
            check_ids: false,
            names: Some(divergence_diff::SideNames::prefill_vs_decode()),
        }
    }
}

/// `--truth` naming OURS' or REF's file itself (a newcomer's check: `diff truth.npz ref.npz
/// --truth truth.npz` passed, the float64 side never blamed for equalling its truth below; the
/// reference's file as its own truth judged no op and left every op to the presets). An
/// error naming it, before anything is read.
fn truth_is_not_a_side_file(truth: &Path, ours: &Path, reference: &Path) -> Result<()> {
    for (side, path) in [("OURS", ours), ("REF", reference)] {
        if crate::cmd::outputs::same_file(truth, path) {
            anyhow::bail!(
                "--truth {}: it is the file given as {side}: give a float64 run of the reference's model (scripts/dump_reference.py --truth-out), or leave --truth out",
                divergence_names::one_line(&truth.display().to_string()),
            );
        }
    }
    Ok(())
}

/// A truth whose values are the reference's, or ours', at every op it judged (a bad-input
/// hunt: a float64 file of the bf16 reference's values flagged a clean port at 66 ops, one of
/// ours' values passed a planted bug): no more precise run of the model, an error naming it.
/// A real truth differs from a rounded run at nearly every op: only those that can be exact
/// are left out of the count (an embedding lookup of weights the run holds exactly, the RoPE
/// table in f32; a selective dump of those alone was refused: a review), and a side stored in
/// float64 (a run as precise as the truth may equal it) is never the one blamed.
fn truth_is_a_side(ops: &[divergence_diff::OpResult], path: &Path) -> Result<()> {
    use divergence_diff::DTypeClass;
    use divergence_names::Op;
    let judged: Vec<&divergence_diff::OpResult> = ops
        .iter()
        .filter(|o| o.truth.truth_problem.is_none() && o.truth.ref_truth_rel_err.is_some())
        .filter(|o| !matches!(Op::of(&o.name), Op::EmbedTokens | Op::RotaryEmb))
        .collect();
    if judged.len() < 3 {
        return Ok(());
    }
    let class =
        |d: &Option<divergence_diff::DtypeName>| DTypeClass::of(d.as_deref().unwrap_or("float32"));
    let is =
        |e: fn(&divergence_diff::TruthMetrics) -> Option<f64>,
         dtype: fn(&divergence_diff::TensorInfo) -> &Option<divergence_diff::DtypeName>| {
            judged
                .iter()
                .all(|o| e(&o.truth) == Some(0.0) && class(dtype(&o.tensor)) != DTypeClass::F64)
        };
    let side = if is(|t| t.ref_truth_rel_err, |t| &t.dtype_ref) {
        "the reference's"
    } else if is(|t| t.ours_truth_rel_err, |t| &t.dtype_ours) {
        "ours'"
    } else {
        return Ok(());
    };
    anyhow::bail!(
        "--truth {}: its values are {side} at every one of the {} ops it judges (those that can be exact aside): it is not a more precise run of the model (a float64 run: scripts/dump_reference.py --truth-out)",
        divergence_names::one_line(&path.display().to_string()),
        judged.len()
    )
}

/// Compares every probe of the plan and assembles the report with its hints, positions and
/// token effect.
fn finish_report(args: &DiffArgs, cfg: &DiffConfig, sides: Sides<'_>) -> Result<Report> {
    let Sides {
        ours,
        reference,
        truth,
        ours_label,
        ref_label,
        plan,
        warnings,
        notes,
        truth_warnings,
        inferred,
        check_ids,
        names,
    } = sides;
    // Runs of other inputs (an error, exit 2): their logits' rows are no engine's last
    // positions, and are not compared as such (a newcomer's 3-token run against a 16-token
    // reference read "ours holds the logits of the last 3 positions only ... as vLLM and
    // llama.cpp do", and a tokens line over them).
    let ids = |d: &MappedDump<'_>| d.meta().and_then(|m| m.input_ids.clone());
    let (ours_ids, ref_ids) = match check_ids {
        true => (ids(&ours), ids(&reference)),
        false => (None, None),
    };
    let other_inputs = matches!((&ours_ids, &ref_ids), (Some(a), Some(b)) if a != b);
    let cfg = &DiffConfig {
        last_logit_rows: cfg.last_logit_rows && !other_inputs,
        ..cfg.clone()
    };
    let mut ops = crate::cmd::rows::compare_all(&plan, &ours, &reference, truth.as_ref(), cfg);
    if let (Some(_), Some(path)) = (&truth, &args.truth) {
        truth_is_a_side(&ops, path)?;
    }

    let mut ctx = ReportContext::new(ours_label, ref_label, plan.source);
    timings::mark("compare");

    ctx.warnings = warnings;
    ctx.warnings.extend(plan.warnings.clone());
    // Once each: the truth's step checks may say what the pair's said (a bad-input hunt saw
    // "ref.npz records no decode_ids" twice).
    for w in truth_warnings {
        if !ctx.warnings.contains(&w) {
            ctx.warnings.push(w);
        }
    }
    // One file as both sides agrees with itself whatever it holds (a bad-input hunt: `diff
    // a.npz a.npz` passed without a word).
    // (Not under a name map, whose renamed rows compare other tensors of the file: a review.)
    if ours.resolved().is_none() && crate::cmd::outputs::same_file(&args.ours, &args.reference) {
        ctx.warnings.push(format!(
            "OURS and REF are one file ({}): it agrees with itself whatever it holds; give the reference's dump as REF",
            divergence_names::one_line(&args.ours.display().to_string())
        ));
    }
    if let Some(w) = model_sizes_warning((&ours, &args.ours), (&reference, &args.reference)) {
        ctx.warnings.push(w);
    }
    if !args.prefill_vs_decode {
        ctx.warnings.extend(swapped_warning(&ours, &reference));
    }
    (ctx.ours_input_ids, ctx.ref_input_ids) = (ours_ids, ref_ids);
    if let Some(dir) = &args.model {
        model_dir_check(dir, [(&reference, &args.reference), (&ours, &args.ours)])?;
        let layers = divergence_inspect::norm_gains(dir)?;
        ctx.norm_weight_gains = divergence_inspect::qk_gains(&layers);
        // A directory of no norm weight at all (a bad-input hunt: a directory of dumps was
        // taken without a word, every gain "-"); a model without q_norm / k_norm (llama) has
        // its layers' norms, and no amplification row to annotate (a review).
        if layers.is_empty() {
            ctx.warnings.push(format!(
                "--model {}: no norm weight found there (is it the checkpoint's directory?): the amplification rows show no weight gain",
                divergence_names::one_line(&dir.display().to_string())
            ));
        }
    }
    // The prompt's length, to name token positions (the logits that keep its last rows only,
    // the decode steps of a probe without a prefill row): ours' (under --prefill-vs-decode the
    // stepped run's alone: the other prompt is longer, reviews found positions off by the
    // steps twice), else the reference's.
    let sides = if check_ids {
        [ours.meta(), reference.meta()]
    } else {
        [ours.meta(), None]
    };
    // Without `input_ids`, the token positions of `model.embed_tokens` (a prefill's: all of
    // the prompt), in either dump, else of layer 0's probes, before the reference's logits
    // rows below (a bad-input hunt: logits that keep the last rows on both sides, or under
    // --prefill-vs-decode, were numbered from 0). Not `model.norm`'s: an engine that keeps
    // the last rows of the logits may keep the final norm's so too (llama.cpp; a review).
    let dumps = match check_ids {
        true => [Some(ours.dump()), Some(reference.dump())],
        false => [Some(ours.dump()), None],
    };
    let prompt_len = sides
        .into_iter()
        .flatten()
        .find_map(|m| m.input_ids.as_ref().map(Vec::len))
        .or_else(|| {
            TOKEN_ROWS
                .iter()
                .filter(|&&n| n != "model.norm")
                .find_map(|&n| {
                    dumps
                        .into_iter()
                        .flatten()
                        .find_map(|d| token_positions(d.shape(n)?))
                })
        });
    if check_ids {
        for (dump, path) in [(&ours, &args.ours), (&reference, &args.reference)] {
            // Once: one file given as both sides says it once (a bad-input hunt saw it twice).
            if let Some(w) = embeddings_against_ids(dump.dump(), &path.display().to_string()) {
                if !ctx.warnings.contains(&w) {
                    ctx.warnings.push(w);
                }
            }
        }
    }
    let (layouts, composed, untried) =
        layout_diagnosis(&mut ops, &plan, (&ours, &reference), cfg, prompt_len);
    if untried > 0 {
        let rows = if untried == 1 {
            "mismatch"
        } else {
            "mismatches"
        };
        ctx.warnings.push(format!(
            "{untried} shape {rows} not tried for a layout change (reshape, transpose, axis \
             order): one diff's layout diagnosis compares at most {} values in all (axis \
             orders x elements), the first rows first",
            divergence_diff::layout::MAX_TOTAL_WORK
        ));
    }
    if let Some(path) = &args.suggest_map {
        let (text, left_out) = align::suggestion(
            inferred.as_ref(),
            &layouts,
            &composed,
            &steps_of_probes(ours.dump()),
        );
        crate::cmd::outputs::create("--suggest-map", path).and_then(|mut f| {
            f.write_all(text.as_bytes()).with_context(|| {
                format!(
                    "--suggest-map {}: cannot write the suggested map",
                    path.display()
                )
            })
        })?;
        if left_out > 0 {
            ctx.warnings.push(format!(
                "--suggest-map {}: {left_out} rules left out (a map holds at most {}); the file \
                 says so at its end",
                divergence_names::one_line(&path.display().to_string()),
                divergence_map::MAX_RULES
            ));
        }
    }
    let mut report = divergence_diff::assemble(ops, ctx, cfg);
    // The map's notes first, then the report's own (truth mode's step envelope).
    report.notes.splice(0..0, notes);
    // Logits of the last positions only, compared with the reference's last rows: said, and
    // without `input_ids` the reference's rows give the prompt's length (their positions).
    let last_rows =
        last_rows_of(&report, &plan, (&ours, &reference)).filter(|_| cfg.last_logit_rows);
    report
        .notes
        .extend(last_rows.map(|l| l.note(divergence_diff::LOGITS)));
    let prompt_len = prompt_len.or(last_rows.map(|l| l.of));
    report.sides = names;
    report.step_selection = args.steps.as_ref().map(|s| s.text());
    // A decode step with rows but none compared (every name on one side only, or unreadable)
    // is said: its verdict would otherwise read as clean (found by a bad-input hunt: a map
    // rule that matched the prefill but not the steps left every step `only_ours` /
    // `only_ref`, and the diff said "no divergence").
    let uncompared: BTreeSet<usize> = report
        .steps
        .iter()
        .filter(|s| s.compared == 0 && s.missing > 0)
        .map(|s| s.step)
        .collect();
    if !uncompared.is_empty() && report.summary.compared > 0 {
        // Step 0 is the prefill, not a decode step (a newcomer's run read "decode step 0").
        let decode: BTreeSet<usize> = uncompared.range(1..).copied().collect();
        let mut which = Vec::new();
        if uncompared.contains(&0) {
            which.push("the prefill (step 0)".to_string());
        }
        if !decode.is_empty() {
            let steps = if decode.len() == 1 { "step" } else { "steps" };
            which.push(format!("decode {steps} {}", ranges_at_most(&decode, 8)));
        }
        let those = if uncompared.len() == 1 {
            "that step is"
        } else {
            "those steps are"
        };
        report.warnings.push(format!(
            "{}: no probe compared (each of its names on one side only, or unreadable): {those} not judged",
            which.join(" and ")
        ));
    }
    timings::mark("assemble");
    let profile_note;
    (report.hints, report.positions, profile_note) = diagnosis(
        &report,
        &plan,
        (&ours, &reference),
        args.model.as_deref(),
        prompt_len,
        cfg.last_logit_rows,
    );
    // A norm the hints find at fault itself made its error: not `amplified` (a held-out check).
    report.amplification_from_hints();
    // Two attentions (the sides of --prefill-vs-decode are both ours: not a reference's).
    if !args.prefill_vs_decode {
        report.warnings.extend(attention_warning(
            &report,
            ours.dump().meta(),
            reference.dump().meta(),
        ));
    }
    // A first divergence with more token positions than a profile holds says why it has none.
    report.notes.extend(profile_note);
    timings::mark("diagnosis");
    if !args.no_tokens {
        report.tokens = tokens(
            &plan,
            &ours,
            &reference,
            prompt_len,
            cfg.last_logit_rows,
            &mut report.warnings,
        );
    }
    timings::mark("tokens");
    // The plan holds every row's name (150,000 of them for 256 decode steps), shared with the
    // dumps and the rows: dropping them is a reference count each, left to the exit (freeing
    // them one by one took ~10 ms of the 16-core host's output phase when they were copies).
    release(args, plan);
    Ok(report)
}

/// Our logits of the last positions only where the row compared them with the reference's
/// last rows ([`divergence_diff::last_logit_rows`], `rows::compare_probe`).
fn last_rows_of(
    report: &Report,
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
) -> Option<divergence_diff::LastRows> {
    use divergence_diff::LOGITS;
    // The prefill's probes come first: a decode dump's 150,000 names are not all looked at.
    let i = (0..plan.order.len()).find(|&k| plan.order.name_is(k, LOGITS))?;
    let row = report.ops.get_row(i).filter(|r| r.is_named(LOGITS))?;
    if !matches!(
        row.status(),
        Status::Ok | Status::Diverged | Status::Nonfinite | Status::NoFinite
    ) || reference.is_computed(LOGITS)
    {
        return None;
    }
    let shape = |dump: &MappedDump<'_>, name: &str| {
        dump.get(name)
            .and_then(|e| e.shape().map(<[usize]>::to_vec))
    };
    divergence_diff::last_logit_rows(
        LOGITS,
        &shape(ours, plan.ours_name(LOGITS))?,
        &shape(reference, LOGITS)?,
    )
}

/// Whether each probe of `dump` has a prefill tensor, and its decode steps' numbers (for
/// `--suggest-map`).
fn steps_of_probes(dump: &divergence_dump::Dump) -> HashMap<&str, align::ProbeSteps> {
    let mut probes: HashMap<&str, align::ProbeSteps> = HashMap::new();
    for name in dump.names() {
        let (base, step) = divergence_names::split_step(name);
        let p = probes.entry(base).or_default();
        match step {
            0 => p.prefill = true,
            s => p.steps.push(s),
        }
    }
    probes.values_mut().for_each(|p| p.steps.sort_unstable());
    probes
}

/// The token-level effect ([`divergence_diff::token_effect`]) when both sides have the logits
/// (`lm_head`), read whole (within [`HINT_MAX_BYTES`] unless stored in place); with decode
/// steps, over the logits of every step (`lm_head@s`), merged ([`divergence_diff::merge_steps`]).
fn tokens(
    plan: &divergence_diff::OrderPlan,
    ours: &MappedDump<'_>,
    reference: &MappedDump<'_>,
    prompt_len: Option<usize>,
    last_rows: bool,
    warnings: &mut Vec<String>,
) -> Option<divergence_diff::TokenEffect> {
    use divergence_diff::LOGITS;
    let one = |name: &str| {
        let (Some(o), Some(r)) =
            read_pair((ours, reference), plan.ours_name(name), name, last_rows)
        else {
            return divergence_diff::StepLogits::NotCompared;
        };
        divergence_diff::step_logits(LOGITS, o.0.values(), r.0.values(), &o.0.shape, &r.0.shape)
    };
    // (By position: a decode dump's step names are held by their parts, each split as it is
    // held, not made.)
    let steps: Vec<(usize, usize)> = (0..plan.order.len())
        .into_par_iter()
        .with_min_len(4096)
        .filter_map(|k| match plan.order.step_of(k)? {
            (LOGITS, s) => Some((k, s)),
            _ => None,
        })
        .collect();
    if steps.iter().all(|&(_, s)| s == 0) {
        return match one(LOGITS) {
            divergence_diff::StepLogits::Compared(e) => {
                Some(with_ref_dtype((*e).at_prompt(prompt_len), reference))
            }
            _ => None,
        };
    }
    let parts: Vec<(usize, divergence_diff::StepLogits)> = steps
        .par_iter()
        .map(|&(k, s)| (s, one(&plan.order.name(k).unwrap_or_default())))
        .collect();
    // Steps whose logits cannot be compared are left out of the effect: said, where the others
    // make one (found by a bad-input hunt: `top-1 agree 4/4` over the prefill alone, the
    // steps' logits of another shape dropped without a word).
    // (Logits on one side only are that step's `only_ours` / `only_ref` row already.)
    let both = |s: usize| {
        let name = divergence_names::step_name(LOGITS, s);
        ours.shape(plan.ours_name(&name)).is_some() && reference.shape(&name).is_some()
    };
    let left_out: BTreeSet<usize> = parts
        .iter()
        .filter(|(_, p)| matches!(p, divergence_diff::StepLogits::NotCompared))
        .map(|&(s, _)| s)
        .filter(|&s| both(s))
        .collect();
    let effect = divergence_diff::merge_steps(LOGITS, parts, prompt_len)
        .map(|e| with_ref_dtype(e, reference));
    if effect.is_some() && !left_out.is_empty() {
        let steps = if left_out.len() == 1 { "step" } else { "steps" };
        warnings.push(format!(
            "token effect: the logits of {steps} {} could not be compared (other shapes on the two sides, a vocabulary under 2, unreadable, or too large to read whole): left out of it",
            ranges_at_most(&left_out, 8)
        ));
    }
    effect
}

/// `effect` with its first flip's reference margin counted in ulps of the reference's logits'
/// dtype (`TokenEffect::with_ref_dtype`), that of the flip's step's logits as the reference
/// records it.
fn with_ref_dtype(
    effect: divergence_diff::TokenEffect,
    reference: &MappedDump<'_>,
) -> divergence_diff::TokenEffect {
    let Some(step) = effect.first_flip.as_ref().map(|f| f.step) else {
        return effect;
    };
    let name = match step {
        0 => divergence_diff::LOGITS.to_string(),
        s => divergence_names::step_name(divergence_diff::LOGITS, s),
    };
    match reference.get(&name).and_then(|e| e.original_dtype_str()) {
        Some(dtype) => effect.with_ref_dtype(divergence_diff::DTypeClass::of(dtype)),
        None => effect,
    }
}

/// A shape mismatch whose element counts agree, tried against the common layout changes
/// ([`divergence_diff::layout_match`]); when one makes the values agree under the row's
/// tolerance, the reason says so and names the map transform. Returns, per shape mismatch,
/// our name (as stored, for a `--suggest-map` rule), the row's name and the transform's TOML:
/// the one found for it, else the first one found for a row of the same two shapes (a row
/// whose values differ too: a KV-cache bug on top of a layout left every step of layers 1-3
/// unexplained, and their suggested rule kept them as they were), else `None`. Rows that a
/// map rule computed get no rule (it would need composing with that rule): they are returned
/// apart, the row's name and the transform found for it, for the suggested file to say. Last,
/// how many shape mismatches were not tried, past the diff's total work bound
/// (`divergence_diff::layout::MAX_TOTAL_WORK`; docs/reliability.md).
fn layout_diagnosis(
    ops: &mut Rows,
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
    cfg: &DiffConfig,
    prompt_len: Option<usize>,
) -> (Vec<LayoutRule>, Vec<(String, String)>, usize) {
    type Shapes = (Option<Vec<usize>>, Option<Vec<usize>>);
    // Shape mismatches are rows of their own, never steps of a run ([`Rows`]).
    if !ops
        .par_rows()
        .any(|row| row.status() == Status::ShapeMismatch)
    {
        return (Vec::new(), Vec::new(), 0);
    }
    // The rows tried for a layout change, decided in row order from the shapes alone before
    // anything is read (the same rows whatever the threads): each while the work of those
    // tried stays within the diff's total (`layout::MAX_TOTAL_WORK`); the others are counted,
    // for a warning. At most `LAYOUT_AT_ONCE` are tried at once: each holds both tensors
    // decoded and widened to f64 (up to 512 MiB).
    let mut left = divergence_diff::layout::MAX_TOTAL_WORK;
    let mut untried = 0usize;
    let rows: Vec<(bool, &mut OpResult)> = ops
        .plain_mut()
        .into_iter()
        .filter(|row| row.status == Status::ShapeMismatch)
        .map(|row| {
            let work = ours
                .shape(plan.ours_name(&row.name))
                .zip(reference.shape(&row.name))
                .and_then(|(o, r)| divergence_diff::layout_work(&o, &r));
            let tried = match work {
                Some(w) if w <= left => {
                    left -= w;
                    true
                }
                Some(_) => {
                    untried += 1;
                    false
                }
                None => false,
            };
            (tried, row)
        })
        .collect();
    let diagnose = |(tried, row): (bool, &mut OpResult)| {
        if let Some(text) = whole_cache(row, prompt_len) {
            let reason = row.reason.take().unwrap_or_default();
            row.reason = Some(format!("{reason}; {text}"));
        }
        let ours_name = plan.ours_name(&row.name);
        let m = tried
            .then(|| {
                let (o, r) = (
                    read_whole(ours, ours_name)?,
                    read_whole(reference, &row.name)?,
                );
                let tol = cfg.tolerance.resolve(o.1, r.1);
                divergence_diff::layout_match(&side(&o), &side(&r), tol.rtol, tol.atol)
            })
            .flatten();
        if let Some(m) = &m {
            let reason = row.reason.take().unwrap_or_default();
            row.reason = Some(format!("{reason}; {}", m.text));
        }
        let from = match ours.mapping(ours_name) {
            Some(v) if v.is_transformed() => {
                return Some(Diagnosed::Composed(
                    row.name.to_string(),
                    m.map(|m| m.transform)?,
                ))
            }
            Some(v) => v.sources[0].clone(),
            None => ours_name.to_string(),
        };
        let shapes = (row.tensor.shape_ours.clone(), row.tensor.shape.clone());
        Some(Diagnosed::Row {
            from,
            to: row.name.to_string(),
            transform: m.map(|m| m.transform),
            shapes,
        })
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(LAYOUT_AT_ONCE)
        .build();
    let diagnosed: Vec<Diagnosed> = match pool {
        Ok(pool) => pool.install(|| rows.into_par_iter().filter_map(diagnose).collect()),
        // (no thread to be had: one at a time)
        Err(_) => rows.into_iter().filter_map(diagnose).collect(),
    };
    let mut composed = Vec::new();
    let rows: Vec<(String, String, Option<String>, Shapes)> = diagnosed
        .into_iter()
        .filter_map(|d| match d {
            Diagnosed::Row {
                from,
                to,
                transform,
                shapes,
            } => Some((from, to, transform, shapes)),
            Diagnosed::Composed(name, t) => {
                composed.push((name, t));
                None
            }
        })
        .collect();
    let mut by_shapes: HashMap<&Shapes, &str> = HashMap::new();
    for (_, _, t, shapes) in &rows {
        if let Some(t) = t {
            by_shapes.entry(shapes).or_insert(t);
        }
    }
    let rows = rows
        .iter()
        .map(|(from, to, t, shapes)| {
            let t = t
                .clone()
                .or_else(|| by_shapes.get(shapes).map(|t| t.to_string()));
            (from.clone(), to.clone(), t)
        })
        .collect();
    (rows, composed, untried)
}

/// Shape mismatches tried for a layout change at once ([`layout_diagnosis`]).
const LAYOUT_AT_ONCE: usize = 2;

/// A shape mismatch a `--suggest-map` rule can re-lay out: our name as stored, the row's
/// name, and the transform's TOML if one was found ([`layout_diagnosis`]).
type LayoutRule = (String, String, Option<String>);

/// A shape mismatch as [`layout_diagnosis`] found it.
enum Diagnosed {
    /// A row a `--suggest-map` rule can re-lay out.
    Row {
        /// Our name, as stored.
        from: String,
        /// The row's name.
        to: String,
        /// The transform's TOML, if one makes the values agree.
        transform: Option<String>,
        /// Ours and the reference's shapes.
        shapes: (Option<Vec<usize>>, Option<Vec<usize>>),
    },
    /// A row a rule of the given map computed (its name), with the transform that makes its
    /// values agree: said in the suggested file, since a rule of its own would need composing.
    Composed(String, String),
}

/// What a cache probe's shape mismatch most likely is: ours dumped the whole KV cache where
/// the dump contract's `cache_k@s` / `cache_v@s` is the new token's slot alone (a UX review's
/// port did so, and read a bare shape mismatch): the slots' axis (second to last) of length 1
/// in the reference and the prompt's length + the step in ours, the rest the same.
fn whole_cache(row: &OpResult, prompt_len: Option<usize>) -> Option<String> {
    use divergence_names::Op;
    if !matches!(Op::of(&row.name), Op::CacheK | Op::CacheV) || row.step == 0 {
        return None;
    }
    let (r, o) = (row.tensor.shape.as_ref()?, row.tensor.shape_ours.as_ref()?);
    if r.len() != o.len() {
        return None;
    }
    let differ: Vec<usize> = (0..r.len()).filter(|&a| r[a] != o[a]).collect();
    // The slots' axis of the contract's [1, kv_heads, 1, head_dim], holding exactly the
    // prompt's length + the step (a review: 8 kv heads against 1 read as "8 cache slots").
    let (Some(t), &[a]) = (prompt_len, &differ[..]) else {
        return None;
    };
    let s = row.step;
    let n = t + s;
    if a + 2 != r.len() || r[a] != 1 || o[a] != n {
        return None;
    }
    Some(format!(
        "ours holds the whole cache so far ({n} slots on axis {a}: the prompt's {t} + {s} {}), where the dump contract's {} is the new token's slot alone: dump slot {} (docs/dump-format.md, \"Decode steps\")",
        if s == 1 { "step" } else { "steps" },
        divergence_names::split_step(&row.name).0.rsplit('.').next().unwrap_or("cache probe"),
        n - 1
    ))
}

/// The cause hints of the first divergence and its origin, and the first divergence's
/// per-position profile: their tensors and their inputs' are read once more (a handful of
/// probes) and handed to [`divergence_diff::diagnose`] and [`positions`]. A probe that cannot
/// be read is skipped: this is a diagnosis, never a reason to fail. `prompt_len` numbers the
/// token positions of a profile across decode steps, and of logits that keep the prompt's
/// last rows only ([`divergence_diff::PositionProfile::at_prompt_end`]).
fn diagnosis(
    report: &Report,
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
    model: Option<&Path>,
    prompt_len: Option<usize>,
    last_rows: bool,
) -> (
    Vec<divergence_diff::Hint>,
    Option<divergence_diff::PositionProfile>,
    Option<String>,
) {
    // The checkpoint's weights (`--model`), for the `transpose` fingerprint; a checkpoint that
    // cannot be opened here was already reported by the gains (an error), so this is quiet.
    let weights = model.and_then(|dir| {
        let layout = divergence_checkpoint::Layout::locate(dir).ok()?;
        divergence_checkpoint::Weights::open(&layout).ok()
    });
    let shape = divergence_diff::ModelShape {
        prompt_len,
        ..model_shape(reference)
            .or_else(|| model_shape(ours))
            .unwrap_or_default()
    };
    let read = read_whole;
    let mut out = Vec::new();
    // Under --steps, the steps past the selection may have been fed other tokens: the decode
    // hints read none past the last one both sides were fed the same tokens for (a review: the
    // last step selected cut the hint of a pair fed the same tokens, `--steps 1`).
    let through = crate::cmd::steps::same_tokens_through(ours, reference);
    let fed_alike = |s: usize| through.is_none_or(|t| s <= t);
    // A first divergence in a decode step: its profile runs across the steps.
    let mut note = None;
    let mut profile = steps_profile(
        report, plan, ours, reference, prompt_len, last_rows, &mut note,
    );
    let across_steps = profile.is_some();
    // (Once: each is a pass over the report's rows and its step's dataflow.)
    let targets = report.hint_targets();
    for (name, inputs) in &targets {
        let (Some(o), Some(r)) =
            read_pair((ours, reference), plan.ours_name(name), name, last_rows)
        else {
            continue;
        };
        // The first target is the first divergence: its profile from the same two reads.
        if !across_steps
            && report
                .first_divergence
                .as_ref()
                .is_some_and(|f| f.name == *name)
        {
            profile = positions(report, &o.0, &r.0, &mut note).map(|p| p.at_prompt_end(prompt_len));
        }
        let input_views: Vec<(&str, Option<_>, Option<_>)> = inputs
            .iter()
            .map(|n| {
                (
                    n.as_str(),
                    read(ours, plan.ours_name(n)),
                    read(reference, n),
                )
            })
            .collect();
        let weight = weights.as_ref().and_then(|w| weight_view(w, name));
        let subject = divergence_diff::Subject {
            name,
            ours: side(&o),
            reference: side(&r),
            inputs: input_views
                .iter()
                .map(|(n, o, r)| (*n, o.as_ref().map(side), r.as_ref().map(side)))
                .collect(),
            weight: weight.as_ref().map(|(shape, values)| Side {
                shape,
                values: *values,
                dtype: "float32",
            }),
        };
        for mut hint in divergence_diff::diagnose(&subject, &shape) {
            // Heads scaled down at one decode step: the same probe at the next steps tells a
            // zero key's moving share from a fixed scale per head.
            let (base, step) = divergence_names::split_step(name);
            // (Or one scale for every head at `attn_out`: near-equal scores give a zero key
            // one share in every head.)
            if divergence_diff::hints::reads_later_steps(&hint) && step > 0 {
                // Each step with its own inputs, the step's inputs' names moved to it (what
                // they carry is noise a head's factor may hold, `hints::head_factors`).
                let at_step = |n: &str, t: usize| match divergence_names::split_step(n) {
                    (b, s) if s == step => (
                        divergence_names::step_name(b, t),
                        ours_step_name(plan, n, t),
                    ),
                    _ => (n.to_string(), plan.ours_name(n).to_string()),
                };
                let reads: Vec<_> = (1..=divergence_diff::hints::SPREAD_STEPS)
                    .map(|d| step.saturating_add(d))
                    .take_while(|&t| fed_alike(t))
                    .map_while(|t| {
                        let n = divergence_names::step_name(base, t);
                        let o = read(ours, &ours_step_name(plan, name, t))?;
                        let r = read(reference, &n)?;
                        // (an input at most 4 times the op's size, as a step's query and cache
                        // slot are: a port that dumps its whole cache at every step is not
                        // read three steps over; a review)
                        let most = side(&r).values.len().saturating_mul(4);
                        let small = |d: &MappedDump<'_>, n: &str| {
                            d.shape(n).is_some_and(|s| {
                                s.iter()
                                    .try_fold(1usize, |a, &k| a.checked_mul(k))
                                    .is_some_and(|k| k <= most)
                            })
                        };
                        let inputs: Vec<_> = inputs
                            .iter()
                            .map(|i| {
                                let (i, ours_i) = at_step(i, t);
                                let o = small(ours, &ours_i).then(|| read(ours, &ours_i));
                                let r = small(reference, &i).then(|| read(reference, &i));
                                (i, o.flatten(), r.flatten())
                            })
                            .collect();
                        Some((n, o, r, inputs))
                    })
                    .collect();
                let later: Vec<divergence_diff::Subject<'_>> = reads
                    .iter()
                    .map(|(n, o, r, inputs)| divergence_diff::Subject {
                        name: n,
                        ours: side(o),
                        reference: side(r),
                        inputs: inputs
                            .iter()
                            .map(|(n, o, r)| {
                                (n.as_str(), o.as_ref().map(side), r.as_ref().map(side))
                            })
                            .collect(),
                        weight: None,
                    })
                    .collect();
                divergence_diff::hints::spread_across_steps(&mut hint, &subject, &later, &shape);
            }
            out.push(hint);
        }
    }
    let decode = decode_hints(report, plan, (ours, reference), &fed_alike);
    out.extend(divergence_diff::hints::decode_hints_beside(decode, &out));
    out.extend(attention_kernel_hints(&targets, plan, (ours, reference)));
    let masks = causal_mask_hints(&targets, plan, (ours, reference));
    // (Where the mask is missing, "the error is confined to N of T positions" says less: the
    // last position, which sees every key either way, is the one right.)
    out.retain(|h| {
        h.code != divergence_diff::HintCode::Position || !masks.iter().any(|m| m.op == h.op)
    });
    out.extend(masks);
    // The last resort: only for a first divergence no fingerprint above read (the cache of
    // `cache-pre-norm` holds the values ours' `rope_k@s` has, and `cache_stage` says why).
    out.extend(another_op_hint(
        report,
        &targets,
        plan,
        (ours, reference),
        last_rows,
        &out,
    ));
    (out, profile, note)
}

/// The `another_op` hint of a first divergence no other fingerprint explained
/// ([`divergence_diff::hints::another_op`]): its values and those of the other ops of its step
/// and layer with its shapes whose norms allow a match ([`Report::another_op_candidates`], at
/// most 16; none, and nothing read, where the hint cannot hold) read once more.
fn another_op_hint(
    report: &Report,
    targets: &[(String, Vec<String>)],
    plan: &divergence_diff::OrderPlan,
    dumps: (&MappedDump<'_>, &MappedDump<'_>),
    last_rows: bool,
    hints: &[divergence_diff::Hint],
) -> Option<divergence_diff::Hint> {
    let name = &report.first_divergence.as_ref()?.name;
    if hints.iter().any(|h| &h.op == name) {
        return None;
    }
    let candidates = report.another_op_candidates();
    if candidates.is_empty() {
        return None;
    }
    let (Some(o), Some(r)) = read_pair(dumps, plan.ours_name(name), name, last_rows) else {
        return None;
    };
    let reads: Vec<_> = candidates
        .iter()
        .map(|n| (n, read_pair(dumps, plan.ours_name(n), n, last_rows)))
        .collect();
    let others: Vec<divergence_diff::hints::Other<'_>> = reads
        .iter()
        .map(|(n, (o, r))| divergence_diff::hints::Other {
            name: n,
            ours: o.as_ref().map(side),
            reference: r.as_ref().map(side),
        })
        .collect();
    // The op's inputs by the dataflow, by name only: a match with one is the op not applied.
    let inputs = targets
        .iter()
        .find(|(n, _)| n == name)
        .map_or(&[][..], |(_, inputs)| inputs);
    let subject = divergence_diff::Subject {
        name,
        ours: side(&o),
        reference: side(&r),
        inputs: inputs.iter().map(|n| (n.as_str(), None, None)).collect(),
        weight: None,
    };
    divergence_diff::hints::another_op(&subject, &others)
}

/// A tensor read for a hint, and both sides of one.
type Read<'a> = (TensorView<'a>, &'a str);
type ReadPair<'a> = (Read<'a>, Read<'a>);

/// One side (`which`: 0 ours, 1 the reference) of [`attention_kernel_hints`]' reads: `rope_q@s`,
/// the prefill's `rope_k` and `v_proj`, `attn_out@s`, and the cache's steps.
fn attention_side<'a>(
    which: usize,
    (q, pk, pv, out): (
        &'a ReadPair<'_>,
        &'a ReadPair<'_>,
        &'a ReadPair<'_>,
        &'a ReadPair<'_>,
    ),
    cache: &'a [(ReadPair<'_>, ReadPair<'_>)],
) -> divergence_diff::attention::AttentionSide<'a> {
    let pick = |p: &'a ReadPair<'_>| side(if which == 0 { &p.0 } else { &p.1 });
    divergence_diff::attention::AttentionSide {
        q: pick(q),
        prefill_k: pick(pk),
        prefill_v: pick(pv),
        cache_k: cache.iter().map(|(k, _)| pick(k)).collect(),
        cache_v: cache.iter().map(|(_, v)| pick(v)).collect(),
        out: pick(out),
    }
}

/// Most decode steps [`attention_kernel_hints`] reads the cache of (one `cache_k` and one
/// `cache_v` a step, each side).
const ATTENTION_KERNEL_MAX_STEPS: usize = 4096;

/// Most values [`attention_kernel_hints`] reads for one side of one target, counted from the
/// headers before any is read: what the recompute widens to f64
/// (`divergence_diff::hints::MAX_ELEMENTS`, 32 MB).
const ATTENTION_KERNEL_MAX_VALUES: u64 = divergence_diff::hints::MAX_ELEMENTS as u64;

/// The `attention_kernel` hints ([`divergence_diff::attention::kernel_hint`]) of the hint
/// targets that are a decode step's `attn_out@s` (`...self_attn.attn_out`): each side's
/// `rope_q@s`, the prefill's `rope_k` and `v_proj`, and `cache_k@1..s` / `cache_v@1..s` of the
/// layer, read only where all of a side's are within [`ATTENTION_KERNEL_MAX_VALUES`] by their
/// headers (else no hint); a step past [`ATTENTION_KERNEL_MAX_STEPS`] is not read.
fn attention_kernel_hints(
    targets: &[(String, Vec<String>)],
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
) -> Vec<divergence_diff::Hint> {
    let mut out = Vec::new();
    for (name, _) in targets {
        let (base, step) = divergence_names::split_step(name);
        let Some(layer) = base.strip_suffix(".attn_out") else {
            continue;
        };
        if step == 0 || step > ATTENTION_KERNEL_MAX_STEPS {
            continue;
        }
        // Ours' names of the layer's probes: by the plan's name of the target row in ours (a
        // prefix the plan strips, found by a review: under --steps the prefill's rows and the
        // cache's other steps are not in the plan)
        let (ours_base, _) = divergence_names::split_step(plan.ours_name(name));
        let Some(ours_layer) = ours_base.strip_suffix(".attn_out") else {
            continue;
        };
        let named = |layer: &str, p: &str, t: usize| match t {
            0 => format!("{layer}.{p}"),
            _ => divergence_names::step_name(&format!("{layer}.{p}"), t),
        };
        let mut wanted = vec![
            ("rope_q", step),
            ("rope_k", 0),
            ("v_proj", 0),
            ("attn_out", step),
        ];
        wanted.extend((1..=step).flat_map(|t| [("cache_k", t), ("cache_v", t)]));
        // Within the bound before anything is read; a tensor one side lacks, no hint.
        let within = |dump: &MappedDump<'_>, layer: &str| {
            values_within(dump, wanted.iter().map(|&(p, t)| named(layer, p, t)))
        };
        if !within(ours, ours_layer) || !within(reference, layer) {
            continue;
        }
        let one = |p: &str, t: usize| {
            let o = read_whole(ours, &named(ours_layer, p, t))?;
            let r = read_whole(reference, &named(layer, p, t))?;
            Some((o, r))
        };
        let (Some(q), Some(pk), Some(pv), Some(o)) = (
            one("rope_q", step),
            one("rope_k", 0),
            one("v_proj", 0),
            one("attn_out", step),
        ) else {
            continue;
        };
        let cache: Option<Vec<_>> = (1..=step)
            .map(|t| Some((one("cache_k", t)?, one("cache_v", t)?)))
            .collect();
        let Some(cache) = cache else {
            continue;
        };
        let side_of = |which| attention_side(which, (&q, &pk, &pv, &o), &cache);
        if let Some(h) = divergence_diff::attention::kernel_hint(name, &side_of(0), &side_of(1)) {
            out.push(h);
        }
    }
    out
}

/// Whether the tensors `names` of `dump` hold at most [`ATTENTION_KERNEL_MAX_VALUES`] values
/// in all, counted from their headers before any is read (a review: 40 deflated cache steps of
/// 16 MiB each were read first, 2.65 GB); a tensor the dump lacks, false.
fn values_within<S: AsRef<str>>(dump: &MappedDump<'_>, names: impl IntoIterator<Item = S>) -> bool {
    names
        .into_iter()
        .map(|n| {
            dump.shape(n.as_ref())?
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        })
        .try_fold(0u64, |acc, n| acc.checked_add(n?))
        .is_some_and(|n| n <= ATTENTION_KERNEL_MAX_VALUES)
}

/// The `causal_mask` hint ([`divergence_diff::attention::mask_hint`]) of each hint target that
/// is a prefill's `attn_out`: both sides' `rope_q`, `rope_k`, `v_proj` and `attn_out` of its
/// layer, read only where all of a side's are within [`ATTENTION_KERNEL_MAX_VALUES`] by their
/// headers (else no hint).
fn causal_mask_hints(
    targets: &[(String, Vec<String>)],
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
) -> Vec<divergence_diff::Hint> {
    let mut out = Vec::new();
    for (name, _) in targets {
        let Some(layer) = name.strip_suffix(".attn_out") else {
            continue;
        };
        if divergence_names::split_step(name).1 != 0 {
            continue;
        }
        let Some(ours_layer) = plan.ours_name(name).strip_suffix(".attn_out") else {
            continue;
        };
        // Ours' name of each probe: the plan's where it renames that row, else the layer's
        // path as the plan renames `attn_out` (a check's suggestion: a map may rename each).
        let ours_of = |p: &str| {
            let row = format!("{layer}.{p}");
            match plan.ours_name(&row) {
                renamed if renamed != row => renamed.to_string(),
                _ => format!("{ours_layer}.{p}"),
            }
        };
        let probes = ["rope_q", "rope_k", "v_proj", "attn_out"];
        let names = |which: usize| -> Vec<String> {
            probes
                .iter()
                .map(|p| match which {
                    0 => ours_of(p),
                    _ => format!("{layer}.{p}"),
                })
                .collect()
        };
        let (ours_names, ref_names) = (names(0), names(1));
        if !values_within(ours, &ours_names) || !values_within(reference, &ref_names) {
            continue;
        }
        let reads: Option<Vec<_>> = ours_names
            .iter()
            .zip(&ref_names)
            .map(|(o, r)| Some((read_whole(ours, o)?, read_whole(reference, r)?)))
            .collect();
        let Some(reads) = reads else {
            continue;
        };
        let side_of = |which: usize| {
            let [q, k, v, o] = [0, 1, 2, 3].map(|i| {
                let (a, b) = &reads[i];
                side(if which == 0 { a } else { b })
            });
            divergence_diff::attention::PrefillSide { q, k, v, out: o }
        };
        out.extend(divergence_diff::attention::mask_hint(
            name,
            &side_of(0),
            &side_of(1),
        ));
    }
    out
}

/// Ours' name of the probe of row `name` (a decode step's, `base@s`) at `step`: the plan's
/// renaming of that step's row where it has one, else ours' name of `name` at `step` (the
/// plan renames only the rows it holds: under `--steps`, a step left out has none, and a
/// dump whose names differ by a prefix read none of them, found by a bad-input hunt).
fn ours_step_name(plan: &divergence_diff::OrderPlan, name: &str, step: usize) -> String {
    let (base, _) = divergence_names::split_step(name);
    let row = divergence_names::step_name(base, step);
    match plan.ours_name(&row) {
        renamed if renamed != row => renamed.to_string(),
        _ => {
            let (ours_base, _) = divergence_names::split_step(plan.ours_name(name));
            divergence_names::step_name(ours_base, step)
        }
    }
}

/// The decode fingerprints ([`divergence_diff::diagnose_decode`]) of a first divergence in a
/// decode step: its probe's tensor of ours at the step and the next, the reference's at up to
/// [`divergence_diff::hints::DECODE_SHIFT_STEPS`] steps each side, and for a `cache_k` the
/// reference's `k_proj` and `k_norm` of the step (each read as the hints read: within
/// the memory bound, else left out).
fn decode_hints(
    report: &Report,
    plan: &divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
    fed_alike: &dyn Fn(usize) -> bool,
) -> Vec<divergence_diff::Hint> {
    use divergence_names::{sibling, split_step, step_name, Op, QkKind};
    let Some(first) = report
        .first_divergence
        .as_ref()
        .filter(|f| f.step > 0 && divergence_diff::hints::depends_on_position(Op::of(&f.name)))
    else {
        return Vec::new();
    };
    let (base, s) = split_step(&first.name);
    // Only steps both sides were fed the same tokens for are read (`fed_alike`). What the
    // hints hold at once is bounded ([`DECODE_HINT_BYTES`]): the step's own tensors (ours and
    // the reference's) are read first, then ours' next step, the reference's upstream probes
    // and prefill, then the reference's other steps, nearest to s first; a tensor that would
    // take the total past the bound is not read, and the hints test fewer steps (a bad-input
    // hunt: 34 steps of 200 MB, deflated, were held together, 7.8 GB).
    let mut left = DECODE_HINT_BYTES;
    let (ours_name, ref_name) = (ours_step_name(plan, &first.name, s), step_name(base, s));
    let Some(o) = fed_alike(s).then(|| read_whole(ours, &ours_name)).flatten() else {
        return Vec::new();
    };
    // (without the reference's step s, no hint: its own error is the yardstick)
    let Some(own) = read_whole(reference, &ref_name) else {
        return Vec::new();
    };
    for (dump, name) in [(ours, &ours_name), (reference, &ref_name)] {
        left = left.saturating_sub(decoded_bytes(dump, name).unwrap_or(0));
    }
    // (A step number is the file's: any usize.)
    let next = s
        .checked_add(1)
        .filter(|&t| fed_alike(t))
        .and_then(|t| read_within(&mut left, ours, &ours_step_name(plan, &first.name, t)));
    let upstream: Vec<(String, _)> = if Op::of(&first.name) == Op::CacheK {
        [Op::QkProj(QkKind::K), Op::QkNorm(QkKind::K)]
            .into_iter()
            .filter_map(|op| {
                let n = sibling(&first.name, op)?;
                let r = read_within(&mut left, reference, &n)?;
                Some((n, r))
            })
            .collect()
    } else {
        Vec::new()
    };
    // Ours' of the same probes (named as the reference's): ours' stage, where drift keeps the
    // reference's from telling it.
    let ours_upstream: Vec<(String, _)> = upstream
        .iter()
        .filter_map(|(n, _)| {
            let o = read_within(&mut left, ours, &ours_step_name(plan, n, s))?;
            Some((n.clone(), o))
        })
        .collect();
    let prefill = if Op::of(&first.name) == Op::RotaryEmb {
        read_within(&mut left, reference, base)
    } else {
        None
    };
    let window = divergence_diff::hints::DECODE_SHIFT_STEPS;
    // (one past the window: a step t at its edge is checked at t + 1 too)
    let steps = s.saturating_sub(window).max(1)..=s.saturating_add(window + 1);
    let in_window = |t: usize| steps.contains(&t) && t != s && fed_alike(t);
    let mut around: Vec<usize> = steps.clone().filter(|&t| in_window(t)).collect();
    around.sort_by_key(|&t| (t.abs_diff(s), t));
    let mut refs: std::collections::BTreeMap<usize, _> = [(s, own)].into_iter().collect();
    for t in around {
        // A step is read with the next one (where the window has it): a match of ours' step s
        // at t is checked against ours' next step at t + 1 (a review of the budget: without
        // t + 1 a steady offset read as one "at this step").
        let next = t.checked_add(1).filter(|&u| in_window(u));
        let missing: Vec<usize> = std::iter::once(t)
            .chain(next)
            .filter(|u| !refs.contains_key(u))
            .collect();
        let need = missing.iter().try_fold(0u64, |n, &u| {
            n.checked_add(decoded_bytes(reference, &step_name(base, u))?)
        });
        if missing.is_empty() || need.is_none_or(|n| n > left) {
            continue;
        }
        for u in missing {
            if let Some(r) = read_within(&mut left, reference, &step_name(base, u)) {
                refs.insert(u, r);
            }
        }
    }
    let refs: Vec<(usize, _)> = refs.into_iter().collect();
    let subject = divergence_diff::DecodeSubject {
        prefill: prefill.as_ref().map(side),
        name: &first.name,
        step: s,
        ours: side(&o),
        ours_next: next.as_ref().map(side),
        reference: refs.iter().map(|(t, r)| (*t, side(r))).collect(),
        upstream: upstream
            .iter()
            .map(|(n, r)| (n.as_str(), side(r)))
            .collect(),
        ours_upstream: ours_upstream
            .iter()
            .map(|(n, o)| (n.as_str(), side(o)))
            .collect(),
    };
    divergence_diff::diagnose_decode(&subject)
}

/// With decode steps and a first divergence in a decode step: which positions its op's error
/// reaches across the steps (the prefill's positions, then one per step;
/// [`divergence_diff::across_steps`]), so that a decode bug reads "from position T on".
fn steps_profile(
    report: &Report,
    plan: &divergence_diff::OrderPlan,
    ours: &MappedDump<'_>,
    reference: &MappedDump<'_>,
    prompt_len: Option<usize>,
    last_rows: bool,
    note: &mut Option<String>,
) -> Option<divergence_diff::PositionProfile> {
    let first = report.first_divergence.as_ref()?;
    if first.step == 0 || report.steps.is_empty() {
        return None;
    }
    // No error is measured across a shape mismatch: no profile, as for one pass (a UX review
    // read "error at every decode step" over shape mismatches).
    if report
        .ops
        .get_row(first.index)
        .is_some_and(|row| row.status() == Status::ShapeMismatch)
    {
        return None;
    }
    let base = divergence_names::split_step(&first.name).0;
    let mut prefill = None;
    let mut rows = Vec::new();
    // The probe's rows (built: a few hundred of a decode report's rows).
    for row in report.ops.rows() {
        match row.split() {
            (b, 0) if b == base => {
                let op = row.op();
                let (Some(o), Some(r)) = read_pair(
                    (ours, reference),
                    plan.ours_name(&op.name),
                    &op.name,
                    last_rows,
                ) else {
                    continue;
                };
                // One position counts here (the logits of the prompt's last row only): the
                // first entry across the steps (found by a bad-input hunt: it was left out).
                let axis_of = |name: &str, shape: &[usize]| {
                    divergence_diff::prefill_axis(name, shape, prompt_len)
                };
                prefill = row_profile(&op, &o.0, &r.0, &axis_of, note, true);
                // A prefill past the cap: no profile across the steps either (one of the steps
                // alone would read as a probe that has no prefill row).
                if note.is_some() {
                    return None;
                }
            }
            (b, _) if b == base => rows.push(row.op()),
            _ => {}
        }
    }
    let rows: Vec<&OpResult> = rows.iter().map(|op| &**op).collect();
    // The prompt's length numbers the steps' token positions where the op has no prefill row,
    // and the logits' where they keep the prompt's last rows only.
    let entries = prefill.as_ref().map_or(0, |p| p.rel_err.len()) + rows.len();
    *note = divergence_diff::positions::too_many_positions(base, entries);
    divergence_diff::across_steps(base, prefill, &rows, prompt_len)
}

/// Both sides of a row read whole ([`read_whole`]), as the row compares them: logits of the
/// last positions only on our side ([`divergence_diff::last_logit_rows`]) against the
/// reference's last rows, with `last_rows` (`DiffConfig::last_logit_rows`).
#[allow(clippy::type_complexity)]
fn read_pair<'a>(
    (ours, reference): (&MappedDump<'a>, &MappedDump<'a>),
    ours_name: &str,
    name: &str,
    last_rows: bool,
) -> (
    Option<(TensorView<'a>, &'a str)>,
    Option<(TensorView<'a>, &'a str)>,
) {
    let o = read_whole(ours, ours_name);
    // (Not a reference computed from other rows: `rows::compare_probe`.)
    let last = o
        .as_ref()
        .filter(|_| last_rows && !reference.is_computed(name))
        .and_then(|o| {
            let r = reference.shape(name)?;
            Some((
                divergence_diff::last_logit_rows(name, &o.0.shape, &r)?,
                o.0.shape.clone(),
            ))
        });
    let Some((l, shape)) = last else {
        return (o, read_whole(reference, name));
    };
    let r = match read_whole(reference, name) {
        Some((r, dtype)) => r.narrowed(&shape, l.range()).map(|view| (view, dtype)),
        // Too large to read whole (a compressed member past HINT_MAX_BYTES): its last rows
        // streamed out of it, as the row compares them, within the same bound
        // (`rows::stream_probe`).
        None if l.kept.saturating_mul(l.vocab) <= LAST_ROWS_MAX => {
            reference.get(name).and_then(|e| {
                let dtype = e.original_dtype_str().unwrap_or_default();
                let mut pieces = e
                    .pieces(divergence_diff::DiffConfig::default().chunk_len)
                    .ok()?;
                let values = crate::cmd::rows::stream_range(&mut pieces, l.range()).ok()?;
                let dtype_held = match values {
                    divergence_dump::Values::F32(_) => divergence_dump::DType::F32,
                    divergence_dump::Values::F64(_) => divergence_dump::DType::F64,
                };
                let tensor = divergence_dump::Tensor {
                    shape,
                    dtype: dtype_held,
                    values,
                };
                Some((TensorView::from(tensor), dtype))
            })
        }
        None => None,
    };
    (o, r)
}

/// Most elements of the logits rows [`read_pair`] streams out of a compressed reference too
/// large to read whole, held widened to f32 (f64 for a float64 side): 2^25 (128 MiB a side,
/// 256 MiB for float64), the bound of the tensors the token effect and the diagnosis read
/// whole. (The row compares any size in lockstep, `rows::last_rows_in_lockstep`.)
const LAST_ROWS_MAX: usize = 1 << 25;

/// A tensor read whole, for the hints and the position profile, which need all of it (they fit
/// rows, look for transposes, split positions): one that is not in the memory map as it is
/// and would take more than [`HINT_MAX_BYTES`] decoded is skipped (`None`), so memory stays
/// bounded (docs/reliability.md); so is one that cannot be read.
fn read_whole<'a>(dump: &MappedDump<'a>, name: &str) -> Option<(TensorView<'a>, &'a str)> {
    if !dump.is_zero_copy(name) && decoded_bytes(dump, name)? > HINT_MAX_BYTES {
        return None;
    }
    read_side(dump.get(name)).and_then(Result::ok)
}

/// Which token positions carry the first divergence's error ([`divergence_diff::positions`]),
/// judged with the row's rtol / atol (and its NaN/Inf rule); `None` for a shape mismatch, a
/// probe with no finite value, a row judged against the truth (`--truth`: the per-position
/// noise ratio is not computed; `note` says so), a probe without a token axis, or one with
/// more positions than a profile holds (`note` then says so).
fn positions(
    report: &Report,
    ours: &TensorView<'_>,
    reference: &TensorView<'_>,
    note: &mut Option<String>,
) -> Option<divergence_diff::PositionProfile> {
    let row = report.first_divergence_op()?;
    // The section left out without a word read as no profile to give (a visual check).
    if row.truth.noise_ratio.is_some() && row.status.is_compared() {
        *note = Some(format!(
            "no per-position profile of {}: --truth judges an op whole, by its noise ratio (without --truth the profile shows which positions are over the tolerance)",
            divergence_names::one_line(&row.name)
        ));
        return None;
    }
    row_profile(
        &row,
        ours,
        reference,
        &divergence_diff::position_axis,
        note,
        false,
    )
}

/// The per-position profile of one row (see [`positions`]); `note` says why there is none
/// when its token axis holds more than [`divergence_diff::positions::MAX_POSITIONS`].
///
/// A row judged against the truth (`--truth`) has none (the per-position noise ratio is not
/// computed), except as a prefill row `across_steps`: its per-position error, each position
/// taking the row's verdict, as a step's one position takes its row's (without it a decode
/// bug's profile under `--truth` left the prefill out and read "all"; a held-out check).
fn row_profile(
    row: &OpResult,
    ours: &TensorView<'_>,
    reference: &TensorView<'_>,
    axis_of: &dyn Fn(&str, &[usize]) -> Option<usize>,
    note: &mut Option<String>,
    across_steps: bool,
) -> Option<divergence_diff::PositionProfile> {
    let judged_whole = row.truth.noise_ratio.is_some();
    if matches!(
        row.status,
        Status::ShapeMismatch
            | Status::NoFinite
            | Status::OnlyOurs
            | Status::OnlyRef
            | Status::Unreadable
    ) || (judged_whole && !across_steps)
    {
        return None;
    }
    // The row's rtol / atol (judged whole: where it has them, the steps' entries show theirs
    // too).
    let tol = row.rule.rtol.zip(row.rule.atol);
    let (rtol, atol) = match tol {
        Some(t) => t,
        None if judged_whole => (0.0, 0.0),
        None => return None,
    };
    let axis = axis_of(&row.name, &reference.shape)?;
    if let Some(n) =
        divergence_diff::positions::too_many_positions(&row.name, *reference.shape.get(axis)?)
    {
        *note = Some(n);
        return None;
    }
    let mut p = divergence_diff::position_profile(
        &row.name,
        ours.values(),
        reference.values(),
        &reference.shape,
        axis,
        rtol,
        atol,
    )?;
    if judged_whole {
        let verdict = row.status.is_divergence();
        p.over.iter_mut().for_each(|o| *o = verdict);
        if tol.is_none() {
            p.rel_tol.iter_mut().for_each(|t| *t = None);
        }
    }
    Some(p)
}

/// Largest tensor the hints decode whole (bytes of widened values), per tensor.
const HINT_MAX_BYTES: u64 = 256 << 20;

/// Most bytes of widened values the decode hints ([`decode_hints`]) read in all, in place or
/// not (the hints widen them to f64): the step's own two tensors are read whatever their size
/// (each within [`HINT_MAX_BYTES`]), the rest while the total stays within this.
const DECODE_HINT_BYTES: u64 = 512 << 20;

/// [`read_whole`], if its widened values fit in what is `left` of a budget of bytes, which
/// they are then taken from (even if the read then fails); `None`, and nothing taken, if they
/// do not fit.
fn read_within<'a>(
    left: &mut u64,
    dump: &MappedDump<'a>,
    name: &str,
) -> Option<(TensorView<'a>, &'a str)> {
    *left = left.checked_sub(decoded_bytes(dump, name)?)?;
    read_whole(dump, name)
}

/// Bytes of a tensor's widened values (f32, or f64 for f64 and wide integers).
fn decoded_bytes(dump: &MappedDump<'_>, name: &str) -> Option<u64> {
    let n = dump
        .shape(name)?
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?;
    let width = if dump.dtype(name)?.widens_to_f64() {
        8
    } else {
        4
    };
    n.checked_mul(width)
}

/// The checkpoint weight of the op `name` (`name.weight`, a float matrix) as values over the
/// memory map: `(shape, values)`. `None` for anything else.
fn weight_view<'a>(
    weights: &'a divergence_checkpoint::Weights,
    name: &str,
) -> Option<(Vec<usize>, divergence_diff::ValuesRef<'a>)> {
    use divergence_checkpoint::Dtype;
    use divergence_diff::ValuesRef;
    // A tied lm_head reads the embeddings.
    let info = weights
        .get(&format!("{name}.weight"))
        .or_else(|| (name == "lm_head").then(|| weights.get("model.embed_tokens.weight"))?)?;
    let bytes = weights.data(info);
    let values = match info.dtype {
        Dtype::F32 => ValuesRef::F32Le(bytes.as_chunks().0),
        Dtype::F64 => ValuesRef::F64Le(bytes.as_chunks().0),
        Dtype::BF16 => ValuesRef::Bf16Le(bytes.as_chunks().0),
        Dtype::F16 => ValuesRef::F16Le(bytes.as_chunks().0),
        _ => return None,
    };
    (info.shape.len() == 2 && values.len() == info.numel()).then(|| (info.shape.clone(), values))
}

/// The model dimensions the hints use, from a dump's `model` metadata (the config the exporter
/// records), read by the one config parser (`divergence-checkpoint`).
fn model_shape(dump: &MappedDump<'_>) -> Option<divergence_diff::ModelShape> {
    let value = dump.meta()?.model.clone()?;
    let cfg = divergence_checkpoint::Config::from_value(value, dump.path()).ok()?;
    Some(divergence_diff::ModelShape {
        hidden: cfg.hidden_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_kv_heads(cfg.family),
        head_dim: cfg.head_dim(cfg.family),
        rope_theta: Some(cfg.rope_theta),
        rms_eps: Some(cfg.rms_norm_eps),
        prompt_len: None,
    })
}

/// The warning where the error of the first divergence starts at an attention output (its
/// origin, or the first divergence itself where it has none) of a half type, and the two dumps
/// record different attentions (`producer.attn`: the exporter's `--attn`, `divergence run`'s
/// policy): eager and sdpa round the scores and the weights differently in bf16 and f16, and on
/// peaked attention that alone crosses the presets and the truth's ratio (a ninth held-out
/// check: a clean bf16 port, transformers' eager bit for bit, flagged at the prefill's layer-0
/// `attn_out` against an sdpa reference, its inputs exact; docs/decode.md). Not said where a
/// hint names a cause at an op that is no attention output (`activation`, `eps`, ...: a
/// review's `act=gelu@0` whose chain starts at an `attn_out`); a hint at an attention output
/// may read the two attentions' difference itself (a second review: our fused policy against
/// an eager reference read `gqa_layout`), and the warning says so. A `position` or `rounding`
/// hint is what that difference reads as anywhere. Nothing where either dump does not say.
fn attention_warning(
    report: &divergence_diff::Report,
    ours: Option<&divergence_dump::Meta>,
    reference: Option<&divergence_dump::Meta>,
) -> Option<String> {
    use divergence_diff::{DTypeClass, HintCode};
    use divergence_names::{split_step, Op};
    fn attn(m: Option<&divergence_dump::Meta>) -> Option<String> {
        let a = m?.producer_str("attn")?;
        Some(divergence_names::one_line(a).into_owned())
    }
    let (o, r) = (attn(ours)?, attn(reference)?);
    if o == r {
        return None;
    }
    let first = report.first_divergence_op()?;
    let class = first.tensor.pair_class();
    if !matches!(class, DTypeClass::BF16 | DTypeClass::F16) {
        return None;
    }
    let attention = |name: &str| Op::of(split_step(name).0) == Op::AttnOut;
    let at = report
        .origin
        .as_ref()
        .map_or(first.name.as_ref(), |o| o.name.as_str());
    let causes: Vec<_> = report
        .hints
        .iter()
        .filter(|h| !matches!(h.code, HintCode::Position | HintCode::Rounding))
        .collect();
    // (A missing causal mask is read from each side against its own recompute: no rounding
    // of eager against sdpa gives it; a check's sdpa reference drew this warning beside it.)
    if !attention(at)
        || causes
            .iter()
            .any(|h| !attention(&h.op) || h.code == HintCode::CausalMask)
    {
        return None;
    }
    let tell = match o.as_str() {
        "eager" | "sdpa" => {
            format!("diff against a reference exported with scripts/dump_reference.py --attn {o}")
        }
        // `divergence run --policy fused`.
        "fused" => "run ours with --policy torch (attention as eager computes it) against a reference exported with --attn eager".to_string(),
        _ => "diff against a reference whose attention is computed as ours is".to_string(),
    };
    let half = if class == DTypeClass::F16 {
        " (in float16 the same attention may still differ by a rounding there)"
    } else {
        ""
    };
    let hinted = match causes.as_slice() {
        [] => String::new(),
        [h, ..] => format!(
            "; the {} hint at {} may read that difference too",
            h.code.as_str(),
            h.op
        ),
    };
    Some(format!(
        "{at}: the error starts at an attention output, and the two sides compute attention differently: ours as {o}, the reference as {r} (producer.attn); in {} the two round the scores and the weights differently, which on peaked attention can cross the tolerance by itself: {tell} to tell a port error from that{half}{hinted}",
        class.label()
    ))
}

/// A truth made of the file given as ours (its `producer.truth_of`, which the exporter's
/// `--truth-out` writes): ours and the reference swapped. The three-way rule never flags ours
/// for being more accurate than the reference, so a port given as the reference passed with
/// exit 0 (a newcomer's run of docs/tolerances.md: a GELU-for-SiLU port). Only an absolute
/// `truth_of` is read (the exporter writes one since 2026-12-04): a relative one is relative to
/// where the exporter ran, unknown here (a review: read against the working directory, it
/// took a port that shares the reference's file name for the reference). The same file is
/// asked by its canonical path, so a file given under another name still counts, and a
/// `truth_of` that names neither file says nothing.
fn truth_of_ours(
    truth: &MappedDump<'_>,
    truth_path: &Path,
    ref_path: &Path,
    ours: &Path,
) -> Result<()> {
    let Some(of) = truth.meta().and_then(|m| m.producer_str("truth_of")) else {
        return Ok(());
    };
    let of = Path::new(of);
    let Some(of) = of
        .is_absolute()
        .then(|| std::fs::canonicalize(of).ok())
        .flatten()
    else {
        return Ok(());
    };
    let is = |p: &Path| std::fs::canonicalize(p).is_ok_and(|p| p == of);
    if is(ours) && !is(ref_path) {
        anyhow::bail!(
            "{}: a truth run of {} (its producer.truth_of), which is given as ours: ours and the reference are swapped (divergence diff OURS REF --truth TRUTH: the reference, whose truth run this is, goes second)",
            truth_path.display(),
            ours.display()
        );
    }
    Ok(())
}

/// A truth dump must be of the reference's run: the same input_ids (else exit 2, like a pair
/// with different ids) and at least one probe name of the reference. Returns warnings: a truth
/// or a reference without input_ids cannot be checked.
fn check_truth(
    truth: (&MappedDump<'_>, &Path),
    reference: (&MappedDump<'_>, &Path),
    ours: (&MappedDump<'_>, &Path),
    order: &divergence_diff::NameList,
    steps: Option<&crate::cmd::steps::Selection>,
) -> Result<(Vec<String>, bool)> {
    let ((truth, truth_path), (reference, ref_path)) = (truth, reference);
    truth_of_ours(truth, truth_path, ref_path, ours.1)?;
    let same_weights = truth_model_check(truth, truth_path, reference, ref_path)?;
    let ids = |d: &MappedDump<'_>| d.meta().and_then(|m| m.input_ids.clone());
    let decode_ids = |d: &MappedDump<'_>| d.meta().and_then(|m| m.decode_ids().ok().flatten());
    // Where the reference records no tokens, the truth's are checked against ours (found by a
    // bad-input hunt: a truth fed other tokens than ours passed when the reference recorded
    // none).
    for (what, get) in [
        (
            "input_ids",
            &ids as &dyn Fn(&MappedDump<'_>) -> Option<Vec<i64>>,
        ),
        ("decode_ids", &decode_ids),
    ] {
        if let (None, Some(mut t), Some(mut o)) = (get(reference), get(truth), get(ours.0)) {
            // Under --steps, the decode tokens up to the last step selected (step s was fed
            // decode token s).
            if let (Some(_), "decode_ids") = (steps, what) {
                let last = order
                    .iter()
                    .map(|n| divergence_names::split_step(n).1)
                    .max()
                    .unwrap_or(0);
                t.truncate(last);
                o.truncate(last);
            }
            if t != o {
                anyhow::bail!(
                    "{}: the truth dump saw other {what} than {} ({} records none): it is not a truth run of these tokens",
                    truth_path.display(),
                    ours.1.display(),
                    ref_path.display()
                );
            }
        }
    }
    // With decode steps the truth must have decoded the reference's tokens, step for step.
    // Its errors name both files as sides of a pair: say first which file is the truth.
    let mut warnings = crate::cmd::steps::check(
        truth,
        truth_path,
        reference,
        ref_path,
        crate::cmd::steps::Pair::Truth,
        steps,
        Some(ours.0),
    )
    .with_context(|| format!("--truth {}", truth_path.display()))?;
    match (ids(truth), ids(reference)) {
        (Some(t), Some(r)) if t != r => {
            let at = t
                .iter()
                .zip(&r)
                .position(|(a, b)| a != b)
                .unwrap_or(t.len().min(r.len()));
            anyhow::bail!(
                "{}: the truth dump saw other input_ids than {} ({} vs {} tokens, first difference at position {at}): it is not a truth run of this reference",
                truth_path.display(),
                ref_path.display(),
                t.len(),
                r.len()
            );
        }
        (Some(_), Some(_)) => {}
        _ => warnings.push(format!(
            "{}: input_ids cannot be checked against the reference's (missing from one of the two); make sure the truth ran on the same ids",
            truth_path.display()
        )),
    }
    // (By position: a decode dump's step names are held by their parts, made one by one here
    // until one is found, the prefill's first.)
    if !(0..order.len()).any(|k| order.name(k).is_some_and(|n| truth.contains(&n))) {
        anyhow::bail!(
            "{}: the truth dump has no probe name in common with {}: it is not a truth run of this reference",
            truth_path.display(),
            ref_path.display()
        );
    }
    Ok((warnings, same_weights))
}

/// The model config keys a truth run must share with its reference: the architecture's sizes
/// (the dtype and the library's version may differ).
const TRUTH_CONFIG_KEYS: [&str; 9] = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "rope_theta",
    "rms_norm_eps",
];

/// The model configs the two dumps record ([`TRUTH_CONFIG_KEYS`]), where they differ: a
/// warning, not an error, since a port whose config is wrong (`head_dim` taken as hidden /
/// heads) is what the diff is for; but a diff of another model's dump read as a first
/// divergence at `model.embed_tokens` without a word (a newcomer's run: a Llama reference
/// against our Qwen3's dump, exit 1 and 20 shape mismatches).
fn model_sizes_warning(
    (ours, ours_path): (&MappedDump<'_>, &Path),
    (reference, ref_path): (&MappedDump<'_>, &Path),
) -> Option<String> {
    let (o, r) = (
        ours.meta()?.model.as_ref()?,
        reference.meta()?.model.as_ref()?,
    );
    let differ: Vec<String> = TRUTH_CONFIG_KEYS
        .iter()
        .filter_map(|&key| {
            let (a, b) = (config_value(o, key)?, config_value(r, key)?);
            // More layers in ours: a reference of a copy cut down to its first layers (a
            // review).
            (config_values_differ(a, b) && !more_layers(key, a, b))
                .then(|| format!("{key} {} / {}", config_text(a), config_text(b)))
        })
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "{} and {} record models of other sizes: {} (ours / the reference's): the dumps of two different models, or a port whose config is wrong there",
            divergence_names::one_line(&ours_path.display().to_string()),
            divergence_names::one_line(&ref_path.display().to_string()),
            differ.join(", ")
        )
    })
}

/// OURS written by the reference exporter and REF by our model (`producer.name`
/// `transformers` and `divergence-qwen3`): the arguments given the other way round, which the
/// report reads with the roles swapped (a newcomer's run: exit 0 and no word). Other producers
/// (a port's own, none recorded) say nothing.
fn swapped_warning(ours: &MappedDump<'_>, reference: &MappedDump<'_>) -> Option<String> {
    let producer = |d: &MappedDump<'_>| {
        d.meta()
            .and_then(|m| m.producer_str("name"))
            .map(str::to_string)
    };
    // (`transformers...`, as `run --out` reads a reference: the fixtures' planted port is
    // `transformers+planted-bug`; a hunt.)
    let by_transformers = producer(ours).is_some_and(|n| n.starts_with("transformers"));
    (by_transformers && producer(reference).as_deref() == Some("divergence-qwen3")).then(|| {
        "OURS was written by transformers (scripts/dump_reference.py) and REF by divergence run: the arguments look swapped (divergence diff OURS REF: the port's dump first, the reference's second); the report reads them as given".to_string()
    })
}

/// Two model config values that say different things: numbers as numbers (`1000000` and `1e6`
/// are one theta, `2` and `2.0` one head count; fractions within a relative 1e-6, so that an
/// epsilon stored in f32, 9.99999997e-7, is 1e-6; a number written as a string, `"8"`, is that
/// number: a hunt); a null says nothing.
fn config_values_differ(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (config_number(a), config_number(b)) {
        (Some(x), Some(y)) => (x - y).abs() > 1e-6 * x.abs().max(y.abs()),
        // (Two spellings of one non-finite number, `"NaN"` and `"nan"`, `"inf"` and
        // `"Infinity"`, say the same: a hunt. Other strings as written: `"SiLU"` is not
        // `"silu"`; a review.)
        _ => {
            !a.is_null()
                && !b.is_null()
                && a != b
                && (non_finite(a).is_none() || non_finite(a) != non_finite(b))
        }
    }
}

/// A config string that spells a non-finite number (`"NaN"`, `"-inf"`, `"Infinity"`), as the
/// number's bits: NaN as NaN's, one for every spelling.
fn non_finite(v: &serde_json::Value) -> Option<u64> {
    let x = v.as_str()?.trim().parse::<f64>().ok()?;
    if x.is_nan() {
        Some(f64::NAN.to_bits())
    } else {
        x.is_infinite().then(|| x.to_bits())
    }
}

/// A model config value as a number: a JSON number, or a string that is a finite one (`"8"`).
fn config_number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().or_else(|| {
        v.as_str()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
    })
}

/// `num_hidden_layers` of `a` above `b`'s: a model and the copy of it cut down to its first
/// layers (a reference may be made of one), which the size checks let pass; numbers written
/// as strings as [`config_values_differ`] reads them (a hunt: `"4"` against 2 warned where 4
/// did not).
fn more_layers(key: &str, a: &serde_json::Value, b: &serde_json::Value) -> bool {
    key == "num_hidden_layers"
        && config_number(a)
            .zip(config_number(b))
            .is_some_and(|(x, y)| x > y)
}

/// A config value as the size checks' messages write it: on one line, shortened.
fn config_text(v: &serde_json::Value) -> String {
    divergence_names::one_line(&crate::cmd::parse::shortened(&v.to_string())).into_owned()
}

/// A size of a recorded model config ([`TRUTH_CONFIG_KEYS`]): `rope_theta` also where
/// transformers 5 keeps it, in `rope_parameters` (every reference it exports: the top-level
/// key is gone, and a check of it read nothing; a review).
fn config_value<'c>(config: &'c serde_json::Value, key: &str) -> Option<&'c serde_json::Value> {
    config.get(key).filter(|v| !v.is_null()).or_else(|| {
        (key == "rope_theta")
            .then(|| config.get("rope_parameters")?.get("rope_theta"))
            .flatten()
    })
}

/// `--model DIR` of another model than the dumps' (a held-out check: another model's
/// checkpoint annotated the amplification rows with its gains, 98 where the dumps' model has
/// 31.5, exit 0 without a word): its config.json's sizes ([`TRUTH_CONFIG_KEYS`]) against the
/// `model` config the first of `dumps` that records one (the reference's, else ours') holds;
/// one that differs is an error (exit 2), but more layers in the checkpoint (a reference of a
/// copy cut down to its first layers). A directory without a readable config.json is left to
/// the gains' reading.
fn model_dir_check(dir: &Path, dumps: [(&MappedDump<'_>, &PathBuf); 2]) -> Result<()> {
    let Some((recorded, path)) = dumps
        .iter()
        .find_map(|(d, p)| Some((d.meta()?.model.clone()?, p)))
    else {
        return Ok(());
    };
    let Some(config) = divergence_checkpoint::Layout::locate(dir)
        .ok()
        .and_then(|l| std::fs::read_to_string(&l.config).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    else {
        return Ok(());
    };
    for key in TRUTH_CONFIG_KEYS {
        if let (Some(a), Some(b)) = (config_value(&config, key), config_value(&recorded, key)) {
            // A checkpoint of more layers than the dumps' model: the reference may be of a
            // copy cut down to its first layers, whose gains are those (a review).
            if config_values_differ(a, b) && !more_layers(key, a, b) {
                anyhow::bail!(
                    "--model {}: its config.json has {key} {} where the model {} records has {}: a checkpoint of another model (its norm gains and weights would annotate this report)",
                    divergence_names::one_line(&dir.display().to_string()),
                    config_text(a),
                    divergence_names::one_line(&path.display().to_string()),
                    config_text(b)
                );
            }
        }
    }
    Ok(())
}

/// Whether the truth is known to be a run of the reference's weights: a model config of other
/// sizes, or another recorded `producer.model_source` (the exporter writes its model
/// directory's name), is an error (exit 2), as other input_ids are; both recording the same
/// source is (true); no source recorded on one side is not (false), and then an op the
/// reference is far from is never judged by the noise ratio
/// (`DiffConfig::judge_noisy_reference`). A bad-input hunt made truths from checkpoints 2-10%
/// off, which the reference is noisy against from its first ops on, and a planted bug passed.
fn truth_model_check(
    truth: &MappedDump<'_>,
    truth_path: &Path,
    reference: &MappedDump<'_>,
    ref_path: &Path,
) -> Result<bool> {
    let (t, r) = (truth.meta(), reference.meta());
    let model = |m: Option<&divergence_dump::Meta>| m.and_then(|m| m.model.clone());
    if let (Some(tm), Some(rm)) = (model(t), model(r)) {
        for key in TRUTH_CONFIG_KEYS {
            if let (Some(a), Some(b)) = (config_value(&tm, key), config_value(&rm, key)) {
                if config_values_differ(a, b) {
                    anyhow::bail!(
                        "{}: the truth dump's model has {key} {} where {}'s has {}: it is not a truth run of this reference",
                        truth_path.display(),
                        config_text(a),
                        ref_path.display(),
                        config_text(b)
                    );
                }
            }
        }
    }
    let source = |m: Option<&divergence_dump::Meta>| {
        m.and_then(|m| {
            m.producer_str("model_source")
                // An empty name is none recorded (`--model .` writes one: a bad-input hunt
                // found two such exports taken for one source).
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
        })
    };
    match (source(t), source(r)) {
        (Some(a), Some(b)) if a == b => Ok(true),
        (Some(a), Some(b)) => anyhow::bail!(
            "{}: the truth was made from '{}' and {} from '{}' (producer.model_source): it is not a truth run of this reference (export both at once: scripts/dump_reference.py --out REF --truth-out TRUTH)",
            truth_path.display(),
            divergence_names::one_line(&crate::cmd::parse::shortened(&a)),
            ref_path.display(),
            divergence_names::one_line(&crate::cmd::parse::shortened(&b))
        ),
        _ => Ok(false),
    }
}

/// Under `--steps` (checked already against the steps the dumps hold): plans again over the
/// selected steps' names alone, so that the other steps are neither read nor counted in the
/// order's warnings; the note says what was selected, when that is not every step. `source`:
/// where the order came from when the plan cannot tell ([`divergence_diff::plan_order_from`]).
fn select_steps(
    plan: &mut divergence_diff::OrderPlan,
    (ours, reference): (&MappedDump<'_>, &MappedDump<'_>),
    sel: &crate::cmd::steps::Selection,
    source: Option<divergence_diff::OrderSource>,
) -> Option<String> {
    let held: BTreeSet<usize> = plan
        .order
        .par_iter()
        .with_min_len(4096)
        .map(|n| divergence_names::split_step(n).1)
        .collect::<std::collections::HashSet<usize>>()
        .into_iter()
        .collect();
    let compared: BTreeSet<usize> = held.iter().copied().filter(|&s| sel.contains(s)).collect();
    let keep = |names: &[divergence_diff::Name]| -> divergence_diff::NameList {
        names
            .par_iter()
            .with_min_len(4096)
            .filter(|n| sel.contains(divergence_names::split_step(n).1))
            .cloned()
            .collect()
    };
    let (o, r) = (dump_names(ours), dump_names(reference));
    let (o_names, r_names) = (keep(o.names), keep(r.names));
    let (o_order, r_order) = (o.meta_order.map(|m| keep(m)), r.meta_order.map(|m| keep(m)));
    *plan = divergence_diff::plan_order_from(
        &DumpNames {
            meta_order: o_order.as_ref(),
            names: &o_names,
            ..o
        },
        &DumpNames {
            meta_order: r_order.as_ref(),
            names: &r_names,
            ..r
        },
        source,
    );
    // Row i is the i-th name of the lists kept, not of the dumps' own: found by name.
    plan.aligned = false;
    (compared != held).then(|| {
        let steps = if compared.len() == 1 { "step" } else { "steps" };
        format!(
            "--steps {}: decode {steps} {} selected (0 = the prefill), of {} in the dumps",
            sel.text(),
            ranges_at_most(&compared, 8),
            ranges_at_most(&held, 8)
        )
    })
}

/// `--layer N` must name a layer of the dumps: `--layer 7: the dumps have layers 0-1`.
fn check_layer(layer: usize, layers: &BTreeSet<usize>) -> Result<()> {
    if layers.contains(&layer) {
        return Ok(());
    }
    match layers.len() {
        0 => anyhow::bail!("--layer {layer}: the dumps have no layers.N probes"),
        1 => anyhow::bail!("--layer {layer}: the dumps have layer {}", ranges(layers)),
        _ => anyhow::bail!("--layer {layer}: the dumps have layers {}", ranges(layers)),
    }
}

/// [`ranges`], the first `max` runs and how many more: `1, 3, 5 and 20 more runs`.
pub(crate) fn ranges_at_most(numbers: &BTreeSet<usize>, max: usize) -> String {
    runs_at_most(&runs(numbers), max)
}

/// Runs as [`ranges_at_most`] writes them: the first `max`, and how many more.
pub(crate) fn runs_at_most(runs: &[(usize, usize)], max: usize) -> String {
    let text: Vec<String> = runs.iter().take(max).map(run_text).collect();
    match runs.len().checked_sub(max) {
        Some(more) if more > 0 => format!("{} and {more} more runs", text.join(", ")),
        _ => text.join(", "),
    }
}

/// `0-3, 5, 7-8`: ascending numbers as runs.
pub(crate) fn ranges(numbers: &BTreeSet<usize>) -> String {
    runs(numbers)
        .iter()
        .map(run_text)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ascending numbers as runs of consecutive ones, `(first, last)`.
pub(crate) fn runs(numbers: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &n in numbers {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    runs
}

/// One run: `5`, `7-8`.
pub(crate) fn run_text(&(lo, hi): &(usize, usize)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// What the order planner needs to know of one dump.
pub(crate) fn dump_names<'a>(dump: &'a MappedDump<'_>) -> DumpNames<'a> {
    let meta_order = dump.meta_order();
    DumpNames {
        meta_order,
        names: dump.names(),
        // A safetensors header is a JSON object: without our metadata the order is lost.
        file_order_preserved: dump.format() != DumpFormat::Safetensors || meta_order.is_some(),
        // A .npy holds one tensor, named after its file.
        single_tensor_file: dump.format() == DumpFormat::Npy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attentions' warning: a half-type error born at an attention output (the origin, or
    /// the first divergence without one) of dumps that record different attentions; nothing
    /// where they record the same, where either records none, in float32, where the origin is
    /// another op, or where a hint names another cause at that op.
    #[test]
    fn an_attention_output_of_two_attentions_is_said() {
        use divergence_diff::{compare, Hint, HintCode, ValuesRef};
        const SHAPE: [usize; 1] = [4];
        const R: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
        const O: [f32; 4] = [1.5, 2.0, 3.0, 4.0];
        // 3% off (under bf16's rtol of 4e-2), then 11% off.
        const V: [f32; 4] = [1.0, 2.0, 3.0, 4.15];
        const A: [f32; 4] = [1.0, 2.0, 3.0, 4.6];
        let side = |v: &'static [f32], dtype: &'static str| Side {
            shape: &SHAPE,
            values: ValuesRef::F32(v),
            dtype,
        };
        let cfg = DiffConfig::default();
        let report = |rows: &[(&str, &'static [f32])], dtype: &'static str| {
            let ops = rows
                .iter()
                .map(|&(name, o)| compare(name, Some(side(o, dtype)), Some(side(&R, dtype)), &cfg))
                .collect::<Vec<_>>();
            divergence_diff::assemble(
                ops,
                ReportContext::new("ours", "ref", divergence_diff::OrderSource::RefFile),
                &cfg,
            )
        };
        let meta = |attn: Option<&str>| divergence_dump::Meta {
            producer: Some(match attn {
                Some(a) => serde_json::json!({ "name": "x", "attn": a }),
                None => serde_json::json!({ "name": "x" }),
            }),
            ..Default::default()
        };
        let (eager, sdpa, none) = (meta(Some("eager")), meta(Some("sdpa")), meta(None));
        let attn = "model.layers.0.self_attn.attn_out@3";
        let at_attn = |dtype| report(&[("model.layers.0.input_layernorm", &R), (attn, &O)], dtype);
        let w =
            attention_warning(&at_attn("bfloat16"), Some(&eager), Some(&sdpa)).expect("a warning");
        assert!(
            w.starts_with(&format!("{attn}: the error starts at an attention output"))
                && w.contains("ours as eager, the reference as sdpa")
                && w.contains("in bfloat16")
                && w.contains("--attn eager"),
            "{w}"
        );
        let fused = meta(Some("fused"));
        let w =
            attention_warning(&at_attn("float16"), Some(&fused), Some(&sdpa)).expect("a warning");
        assert!(
            w.contains("run ours with --policy torch")
                && w.contains("in float16 the same attention may still differ by a rounding"),
            "{w}"
        );
        // A hint at the attention output: said, and the hint named; a position or a rounding
        // hint: said.
        let hinted = |code| {
            let mut r = at_attn("bfloat16");
            r.hints = vec![Hint {
                code,
                op: attn.to_string(),
                message: String::new(),
                evidence: Default::default(),
            }];
            attention_warning(&r, Some(&eager), Some(&sdpa))
        };
        let w = hinted(HintCode::GqaLayout).expect("a hint at the attention output");
        assert!(
            w.ends_with(&format!(
                "; the gqa_layout hint at {attn} may read that difference too"
            )),
            "{w}"
        );
        assert!(hinted(HintCode::Position).is_some_and(|w| !w.contains("may read")));
        // a missing causal mask is no rounding of eager against sdpa: not said
        assert_eq!(hinted(HintCode::CausalMask), None);
        assert!(hinted(HintCode::Rounding).is_some_and(|w| !w.contains("may read")));
        // A hint of another cause at an op that is no attention output: not said.
        let mut r = at_attn("bfloat16");
        r.hints = vec![Hint {
            code: HintCode::Activation,
            op: "model.layers.0.mlp.act_fn".to_string(),
            message: String::new(),
            evidence: Default::default(),
        }];
        assert_eq!(attention_warning(&r, Some(&eager), Some(&sdpa)), None);
        // The first divergence at the attention, its error born at v_proj before it.
        let upstream = report(
            &[
                ("model.layers.0.self_attn.v_proj", &V),
                ("model.layers.0.self_attn.attn_out", &A),
            ],
            "bfloat16",
        );
        let first = upstream.first_divergence.as_ref().map(|f| f.name.as_str());
        let origin = upstream.origin.as_ref().map(|o| o.name.as_str());
        assert_eq!(
            (first, origin),
            (
                Some("model.layers.0.self_attn.attn_out"),
                Some("model.layers.0.self_attn.v_proj")
            )
        );
        assert_eq!(
            attention_warning(&upstream, Some(&eager), Some(&sdpa)),
            None
        );
        for (r, o, m) in [
            (at_attn("bfloat16"), &sdpa, &sdpa),
            (at_attn("bfloat16"), &none, &sdpa),
            (at_attn("float32"), &eager, &sdpa),
            (
                report(&[("model.layers.0.mlp", &O)], "bfloat16"),
                &eager,
                &sdpa,
            ),
        ] {
            assert_eq!(attention_warning(&r, Some(o), Some(m)), None);
        }
        assert_eq!(
            attention_warning(&at_attn("bfloat16"), None, Some(&sdpa)),
            None
        );
    }

    #[test]
    fn a_piped_watch_report_starts_with_its_time_but_json() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3_600 * 13 + 61);
        assert_eq!(
            watch_mark(Format::Table, at).as_deref(),
            Some("=== divergence diff --watch: report of 1970-01-04 13:01:01 UTC ===\n")
        );
        assert_eq!(
            watch_mark(Format::Markdown, at).as_deref(),
            Some("\n---\n\n*divergence diff --watch: report of 1970-01-04 13:01:01 UTC*\n\n")
        );
        assert_eq!(watch_mark(Format::Json, at), None);
        assert_eq!(watch_mark(Format::Html, at), None);
    }

    /// The date of the `--watch` line: leap years, century rules, the ends of months and years.
    #[test]
    fn civil_dates_match_the_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let months = |y: i64| -> [u32; 12] {
            let feb = if leap(y) { 29 } else { 28 };
            [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        };
        let day = |y: i64, m: u32, d: u32| -> u64 {
            // Days from 1970-01-01, counted the long way.
            let mut n: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
            let before: u32 = months(y)[..(m - 1) as usize].iter().sum();
            n += i64::from(before) + i64::from(d) - 1;
            n as u64
        };
        // Every day of these years (a leap year, a common one, the century rules).
        for y in [1970, 1972, 1999, 2000, 2026, 2100, 2400] {
            for (m, &len) in (1..).zip(&months(y)) {
                for d in 1..=len {
                    let want = (y as u64, u64::from(m), u64::from(d));
                    assert_eq!(civil_date(day(y, m, d)), want);
                }
            }
        }
    }

    /// `diff` of two decode dumps keeps their steps compact ([`Rows`]) from the comparison
    /// through the report and its table and Markdown outputs: none of those builds every row
    /// (the JSON, HTML and TUI outputs do). A clean pair, and one whose first divergence is in
    /// a decode step (its position profile across the steps, the hints and the origin read
    /// the rows they need one by one). Nor does the report make the dumps' ~150,000 step
    /// names (held by their parts, [`divergence_names::NameList`]; the report holds no name
    /// list, so its outputs cannot), except under `--steps`, which plans again over the
    /// selected steps' names. (Dumps that record the order our tools write: the planner's
    /// general path, for dumps that record none, reads the names as a list.)
    #[test]
    fn a_decode_diff_as_a_table_keeps_its_steps_compact() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: DiffArgs,
        }
        let fixture = |name: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/ref")
                .join(name)
                .display()
                .to_string()
        };
        let (f32d, bf16d) = (
            fixture("tiny-qwen3.f32.decode.npz"),
            fixture("tiny-qwen3.bf16.decode.npz"),
        );
        // (arguments, diverges, at a decode step)
        let cases: [(&[&str], bool, bool); 3] = [
            (&[&f32d, &f32d], false, false),
            (&[&bf16d, &f32d, "--exact"], true, false),
            (&[&bf16d, &f32d, "--exact", "--steps", "1-3"], true, true),
        ];
        for (argv, diverges, in_step) in cases {
            let selected = argv.contains(&"--steps");
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("diff").chain(argv.iter().copied()),
            )
            .expect("arguments");
            // As `build_report`, with the dumps kept to be looked at after.
            let (ours, reference) = Dump::open_pair(&cli.args.ours, &cli.args.reference);
            let (ours, reference) = (ours.expect("ours"), reference.expect("ref"));
            let names_made = || ours.names().is_made() || reference.names().is_made();
            assert!(!names_made(), "{argv:?}: opening made the step names");
            let cfg = diff_config(&cli.args);
            let report =
                report_of(&cli.args, &cfg, &ours, &reference, None, None).expect("a report");
            assert_eq!(
                names_made(),
                selected,
                "{argv:?}: the report made the step names"
            );
            assert_eq!(report.has_divergence(), diverges, "{argv:?}");
            if in_step {
                let first = report.first_divergence.as_ref().expect("a divergence");
                assert!(first.step > 0, "{argv:?}: in a decode step");
                assert!(report.positions.is_some(), "{argv:?}: its profile");
            }
            assert!(report.ops.is_compact(), "{argv:?}");
            assert!(
                !report.ops.is_built(),
                "{argv:?}: the report built its rows"
            );
            for color in [false, true] {
                let opts = TableOptions {
                    color,
                    ..TableOptions::default()
                };
                let mut out = Vec::new();
                divergence_render::render_table(&report, &opts, &mut out).expect("table");
                divergence_render::render_markdown(&report, &opts, &mut out).expect("markdown");
                assert!(!out.is_empty());
            }
            assert!(!report.ops.is_built(), "{argv:?}: the table built the rows");
            let mut json = Vec::new();
            divergence_render::render_json(&report, &mut json).expect("json");
            assert_eq!(
                names_made(),
                selected,
                "{argv:?}: an output made the step names"
            );
        }
    }

    #[test]
    fn a_byte_count_is_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (1_048_576, "1,048,576"),
            (1_090_922, "1,090,922"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(grouped(n), text);
        }
    }

    /// An inferred map that cannot be used (past a bound of its text or patterns; here text
    /// that does not parse, which reaches the same error path) is an error naming both dumps.
    #[test]
    fn an_inferred_map_that_fails_names_both_dumps() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/ref");
        let ours = Dump::open(&dir.join("tiny-qwen3.f32.eager.npz")).expect("fixture");
        let reference = Dump::open(&dir.join("tiny-qwen3.bf16.eager.npz")).expect("fixture");
        let inf = align::Inferred {
            toml: "[[rule]\n".into(),
            pairs: Vec::new(),
            skipped: None,
            unpaired: (Vec::new(), Vec::new()),
        };
        let e = apply_inferred(&inf, &ours, &reference, None)
            .err()
            .expect("an error")
            .to_string();
        assert!(
            e.starts_with("the map alignment by content inferred for ")
                && e.contains("tiny-qwen3.f32.eager.npz and ")
                && e.contains("tiny-qwen3.bf16.eager.npz: "),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn a_cache_probe_is_the_whole_cache_only_on_its_slots_axis_and_length() {
        let row = |name: &str, step: usize, r: &[usize], o: &[usize]| {
            let side = Side {
                shape: &[1],
                values: divergence_diff::ValuesRef::F32(&[1.0]),
                dtype: "float32",
            };
            let mut row =
                divergence_diff::compare(name, Some(side), Some(side), &DiffConfig::default());
            row.step = step;
            let t = row.tensor_mut();
            t.shape = Some(r.to_vec());
            t.shape_ours = Some(o.to_vec());
            row
        };
        let k = "model.layers.0.self_attn.cache_k@3";
        let said = whole_cache(&row(k, 3, &[1, 2, 1, 32], &[1, 2, 19, 32]), Some(16)).unwrap();
        assert!(
            said.contains("19 slots on axis 2: the prompt's 16 + 3 steps"),
            "{said}"
        );
        assert!(
            said.contains("cache_k is the new token's slot alone: dump slot 18"),
            "{said}"
        );
        // 8 kv heads against 1 (a review): not slots
        assert_eq!(
            whole_cache(&row(k, 3, &[1, 1, 1, 32], &[1, 8, 1, 32]), Some(16)),
            None
        );
        // another length than prompt + step, no prompt length, the prefill, another probe
        assert_eq!(
            whole_cache(&row(k, 3, &[1, 2, 1, 32], &[1, 2, 8, 32]), Some(16)),
            None
        );
        assert_eq!(
            whole_cache(&row(k, 3, &[1, 2, 1, 32], &[1, 2, 19, 32]), None),
            None
        );
        let v0 = "model.layers.0.self_attn.cache_v";
        assert_eq!(
            whole_cache(&row(v0, 0, &[1, 2, 1, 32], &[1, 2, 16, 32]), Some(16)),
            None
        );
        let q = "model.layers.0.self_attn.q_proj@3";
        assert_eq!(
            whole_cache(&row(q, 3, &[1, 2, 1, 32], &[1, 2, 19, 32]), Some(16)),
            None
        );
    }

    #[test]
    fn ranges_at_most_names_the_first_runs_and_counts_the_rest() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(ranges_at_most(&set(&[1, 2, 3, 5]), 8), "1-3, 5");
        let odd: Vec<usize> = (0..20).map(|i| 2 * i + 1).collect();
        assert_eq!(ranges_at_most(&set(&odd), 3), "1, 3, 5 and 17 more runs");
    }

    #[test]
    fn layers_are_named_as_runs() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(ranges(&set(&[0, 1])), "0-1");
        assert_eq!(ranges(&set(&[0, 1, 2, 3, 5, 7, 8])), "0-3, 5, 7-8");
        assert_eq!(ranges(&set(&[4])), "4");
        assert!(check_layer(1, &set(&[0, 1])).is_ok());
        let err = |layer, v: &[usize]| check_layer(layer, &set(v)).unwrap_err().to_string();
        assert_eq!(err(7, &[0, 1]), "--layer 7: the dumps have layers 0-1");
        assert_eq!(err(7, &[3]), "--layer 7: the dumps have layer 3");
        assert_eq!(err(0, &[]), "--layer 0: the dumps have no layers.N probes");
    }
}
