//! `divergence inspect`: lint a checkpoint (config.json + *.safetensors) before blaming the
//! kernels.
//!
//! Glue only: the checks and the renderers live in `divergence-inspect`, the output flags and
//! their resolution (format, colour, width) in [`crate::cmd::output`]. This module maps the
//! report to an exit code.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use divergence_inspect::render::{render_json, render_markdown, render_table, TableOptions};
use divergence_inspect::{inspect, InspectOptions};

use crate::cmd::output::{Format, TextOutputArgs};
use crate::cmd::parse;
use crate::exit::{is_broken_pipe, Exit};

/// Lint a checkpoint before blaming the kernels: NaN / Inf and extreme values in every tensor,
/// tensors the config does not use (a port must not apply them), missing, mis-shaped and
/// transposed tensors, tied embeddings, and the per-layer norm gains (q_norm / k_norm).
///
/// Exit codes: 0 = nothing flagged (info notes allowed), 1 = an error or warning finding,
/// 2 = unreadable input (missing directory, no config.json, bad JSON, corrupt safetensors).
#[derive(Debug, Args)]
#[command(
    after_long_help = "Exit codes: 0 = nothing flagged (info notes allowed), 1 = an error or \
warning finding, 2 = unreadable input (missing directory, no config.json, bad JSON, corrupt \
safetensors). Severities and every check: docs/inspect.md."
)]
pub struct InspectArgs {
    /// Model directory, read as transformers does: model.safetensors, else the shards of
    /// model.safetensors.index.json, else every *.safetensors in it (files left out are
    /// reported); or one .safetensors file with config.json next to it.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    #[command(flatten)]
    pub output: TextOutputArgs,

    /// List the statistics of every tensor, not only of the flagged ones.
    #[arg(long)]
    pub all: bool,

    /// Flag finite values with |x| above this (error).
    #[arg(long, value_name = "X", default_value_t = 1e6, value_parser = parse::positive, allow_negative_numbers = true)]
    pub max_abs: f64,

    /// Note q_norm / k_norm gains (max |w|) above this (info: does not change the exit code).
    #[arg(long, value_name = "X", default_value_t = 10.0, value_parser = parse::positive, allow_negative_numbers = true)]
    pub gain_threshold: f64,
}

pub fn run(args: InspectArgs) -> anyhow::Result<Exit> {
    let output = args.output.resolve();
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

    let table_opts = TableOptions {
        color: output.color,
        all: args.all,
        width: output.width,
    };

    let mut out = BufWriter::new(std::io::stdout().lock());
    let written = match output.format {
        Format::Json => render_json(&report, &mut out),
        Format::Markdown => render_markdown(&report, args.all, &mut out),
        // `TextOutputArgs` never resolves to Html.
        Format::Table | Format::Html => render_table(&report, &table_opts, &mut out),
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
