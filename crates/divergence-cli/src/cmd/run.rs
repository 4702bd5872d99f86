//! `divergence run`: run the instrumented candle Qwen3 on a checkpoint and dump every probe.
//!
//! Glue only: parse arguments, build [`divergence_qwen3::RunOptions`], call
//! [`divergence_qwen3::run_to_dump`], print a one-line summary to stderr.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use divergence_qwen3::{
    parse_ids, read_ids_file, run_to_dump, DeviceKind, FaultSpec, Policy, Precision, RunOptions,
};

use crate::exit::Exit;

const AFTER_HELP: &str = "\
Faults (--inject, repeatable): NAME[=VALUE][@LAYERS], LAYERS = N, N-M or a comma list.
  embed-scale            embeddings x 1/sqrt(hidden) (Qwen3 does not scale them)
  rope-theta=V           RoPE base V instead of config.json's
  rope-interleaved       GPT-J pair rotation instead of rotate-half
  skip-q-norm, skip-k-norm   forget q_norm / k_norm
  attn-bias=V            add a bias of V to the q/k/v projections
  transpose=MODULE       use MODULE's weight with the wrong layout (e.g. model.layers.1.mlp.down_proj)
  act=gelu               wrong MLP activation (also gelu-tanh, relu)
  gqa-tile               tile kv heads instead of repeat-interleave
  rms-eps=V              RMSNorm epsilon V
  late-rounding          RMSNorm x weight in f32, rounded once (bf16/f16)
  f16-accum              RMSNorm variance accumulated in a half type
  bf16-accum             every Linear keeps its accumulator in bf16 (f16 for f16) across k-tiles of 16
  bf16-variance          RMSNorm squares and sums the variance in bf16
  early-cast             RMSNorm rounds rsqrt(var + eps) to the activation dtype and normalises there
Examples:
  divergence run --model fixtures/tiny-qwen3 --ids-file fixtures/tiny-qwen3/ids.txt --dtype bf16 --out ours.npz
  divergence run --model DIR --ids 1,2,3 --inject skip-k-norm@0 --out broken.npz
  divergence run --model DIR --ids-file ids.txt --replay ref.npz --out local.npz   # teacher forcing";

/// Arguments of `divergence run`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct RunArgs {
    /// Hugging Face checkpoint: a directory with config.json and model.safetensors, or shards
    /// with model.safetensors.index.json, or any *.safetensors (the same rule as inspect); or
    /// one .safetensors file with config.json next to it.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Token ids, e.g. 1,2,3.
    #[arg(
        long,
        conflicts_with = "ids_file",
        required_unless_present = "ids_file"
    )]
    pub ids: Option<String>,
    /// File of whitespace- or comma-separated token ids.
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Activation dtype: f32, bf16 or f16 (weights are converted on load).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Rounding points: torch (as transformers) or fused (candle's fused kernels).
    #[arg(long, default_value = "torch")]
    pub policy: Policy,
    /// Inject a porting fault (repeatable); see below.
    #[arg(long, value_name = "FAULT")]
    pub inject: Vec<FaultSpec>,
    /// Dump file (.npz or .safetensors). Without it probes are off (timing only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Teacher forcing: every op computes from this reference dump's values of its inputs
    /// (the same ids), so each probe of --out shows only the error its own op adds: diff the
    /// result against REF to see the true local error of every op.
    #[arg(long, value_name = "REF")]
    pub replay: Option<PathBuf>,
    /// Run the forward pass this many times and report the fastest and median (timing).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

pub fn run(args: RunArgs) -> Result<Exit> {
    let input_ids = match (&args.ids, &args.ids_file) {
        (Some(ids), _) => parse_ids(ids, "--ids")?,
        (None, Some(path)) => read_ids_file(path)?,
        (None, None) => anyhow::bail!("give --ids or --ids-file"),
    };
    let opts = RunOptions {
        model_dir: args.model.clone(),
        input_ids,
        device: args.device,
        precision: args.dtype,
        policy: args.policy,
        faults: args.inject,
        out: args.out,
        repeat: args.repeat as usize,
        replay: args.replay,
    };
    let summary = run_to_dump(&opts)
        .with_context(|| format!("divergence run --model {}", args.model.display()))?;
    for note in &summary.ignored {
        eprintln!("divergence run: note: {note}");
    }
    let what = match &summary.out {
        Some(path) => format!("{} probes -> {}", summary.probes, path.display()),
        None => "probes off".to_string(),
    };
    let timing = if summary.forward_times.len() > 1 {
        format!(
            "forward best {:.1} ms, median {:.1} ms over {} runs",
            summary.best_time().as_secs_f64() * 1e3,
            summary.median_time().as_secs_f64() * 1e3,
            summary.forward_times.len()
        )
    } else {
        format!("forward {:.1} ms", summary.best_time().as_secs_f64() * 1e3)
    };
    eprintln!(
        "divergence run: {what} ({} {} {}, {} tokens; load {:.1} ms, {timing}; next token {})",
        summary.device,
        summary.precision.torch_name(),
        summary.policy.name(),
        summary.n_tokens,
        summary.load_time.as_secs_f64() * 1e3,
        summary.next_token,
    );
    Ok(Exit::Clean)
}
