//! `divergence inspect`: lint a checkpoint (config.json + *.safetensors) before blaming the
//! kernels.
//!
//! Glue only: the checks and the renderers live in `divergence-inspect`. This module decides
//! the output format and colour from the terminal, and maps the report to an exit code.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use divergence_inspect::render::{
    render_json, render_markdown, render_table, terminal_width, TableOptions,
};
use divergence_inspect::{inspect, InspectOptions};

use crate::exit::{is_broken_pipe, Exit};

/// Output format of `divergence inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `table` if stdout is a terminal, `json` otherwise.
    Auto,
    /// Findings, norm gains per layer and tensor statistics as tables.
    Table,
    /// The whole report as JSON.
    Json,
    /// The tables as GitHub-flavoured Markdown (e.g. `>> "$GITHUB_STEP_SUMMARY"`).
    Markdown,
}

/// When to colour the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Only if stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

/// Lint a checkpoint before blaming the kernels: NaN / Inf and extreme values in every tensor,
/// tensors the config does not use (a port must not apply them), missing, mis-shaped and
/// transposed tensors, tied embeddings, and the per-layer norm gains (q_norm / k_norm).
///
/// Exit codes: 0 = nothing flagged (info notes allowed), 1 = an error or warning finding,
/// 2 = unreadable input (missing directory, no config.json, bad JSON, corrupt safetensors).
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model directory (config.json + *.safetensors, sharded via model.safetensors.index.json
    /// or every *.safetensors in it), or one .safetensors file with config.json next to it.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// List the statistics of every tensor, not only of the flagged ones.
    #[arg(long)]
    pub all: bool,

    /// Flag finite values with |x| above this (error).
    #[arg(long, value_name = "X", default_value_t = 1e6, value_parser = positive_f64)]
    pub max_abs: f64,

    /// Note q_norm / k_norm gains (max |w|) above this (info: does not change the exit code).
    #[arg(long, value_name = "X", default_value_t = 10.0, value_parser = positive_f64)]
    pub gain_threshold: f64,

    /// Colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err(format!("{s} is not a positive finite number")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

pub fn run(args: InspectArgs) -> anyhow::Result<Exit> {
    let opts = InspectOptions {
        max_abs: args.max_abs,
        norm_gain: args.gain_threshold,
    };
    // InspectError's message already names the file and the problem: no extra context.
    let report = inspect(&args.path, &opts)?;
    let code = if report.flagged() {
        Exit::Found
    } else {
        Exit::Clean
    };

    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let format = match args.format {
        Format::Auto if tty => Format::Table,
        Format::Auto => Format::Json,
        other => other,
    };
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let table_opts = TableOptions {
        color,
        all: args.all,
        width: if tty { terminal_width() } else { None },
    };

    let mut out = BufWriter::new(stdout.lock());
    let written = match format {
        Format::Json => render_json(&report, &mut out),
        Format::Markdown => render_markdown(&report, args.all, &mut out),
        Format::Table | Format::Auto => render_table(&report, &table_opts, &mut out),
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(code),
        Err(err) => {
            let err = anyhow::Error::from(err);
            if is_broken_pipe(&err) {
                Ok(code)
            } else {
                Err(err.context("cannot write to stdout"))
            }
        }
    }
}
