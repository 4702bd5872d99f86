//! `divergence run`: run the instrumented candle Qwen3 on a checkpoint and dump every probe
//! (with `--decode N`, also every probe of N teacher-forced decode steps over a KV cache).
//!
//! Glue only: parse arguments, build [`divergence_qwen3::RunOptions`], call
//! [`divergence_qwen3::run_to_dump`], print a one-line summary to stderr.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use divergence_qwen3::{
    parse_ids, read_ids_file, run_to_dump, DecodeIds, DecodeOptions, DeviceKind, FaultSpec, Policy,
    Precision, RunOptions,
};

use crate::exit::Exit;

const AFTER_HELP: &str = "\
Faults (--inject, repeatable): NAME[=VALUE][@LAYERS], LAYERS = N, N-M or a comma list.
  embed-scale            embeddings x 1/sqrt(hidden) (Qwen3 does not scale them)
  rope-theta=V           RoPE base V instead of config.json's
  rope-interleaved       GPT-J pair rotation instead of rotate-half
  skip-q-norm, skip-k-norm   forget q_norm / k_norm
  attn-bias=V            add a bias of V to the q/k/v projections
  transpose=MODULE       use MODULE's weight with the wrong layout
                         (e.g. model.layers.1.mlp.down_proj)
  act=gelu               wrong MLP activation (also gelu-tanh, relu)
  gqa-tile               tile kv heads instead of repeat-interleave
  rms-eps=V              RMSNorm epsilon V
  late-rounding          RMSNorm x weight in f32, rounded once (bf16/f16)
  f16-accum              RMSNorm variance accumulated in a half type
  bf16-accum             every Linear keeps its accumulator in bf16 (f16 for f16)
                         across k-tiles of 16
  bf16-variance          RMSNorm squares and sums the variance in bf16
  early-cast             RMSNorm rounds rsqrt(var + eps) to the activation dtype and
                         normalises there
  swap-gate-up           gate_proj and up_proj load each other's weight (a fused gate_up
                         split in the wrong order)
  swap-k-v               k_proj and v_proj load each other's weight (a fused qkv split with
                         k and v in the wrong order)
  no-causal-mask         the prefill's attention without its causal mask (every position
                         sees the later ones)
KV-cache faults (only when decoding: --decode-from, --decode-ids or --decode; the prefill, step 0,
stays bit-identical):
  decode-pos=K           decode step s at position prompt_len+s-1+K; enters at rotary_emb@1
  decode-pos-frozen      every decode step at position prompt_len; enters at rotary_emb@2
  cache-pre-rope         cache holds k before RoPE, the whole cache rotated at the current
                         position
  cache-pre-norm         cache holds k before k_norm (k_proj per head, rotated)
  cache-overwrite[=first|last]  new k/v written into slot 0 / over the previous slot
  cache-dtype=f16|bf16   cache stores k/v rounded to a lower precision than the activations
  decode-mask            a decode step also attends to the next, unwritten (zero) slot
  (cache-* enter at model.layers.0.self_attn.cache_k@1, decode-mask at its attn_out@1;
  the cache faults take @LAYERS)
Decoding (--decode): the prompt is step 0 (it fills the KV cache), then step s = 1..N feeds
decode id s alone at position prompt_len+s-1; probes of step s are named NAME@s, plus
model.layers.N.self_attn.cache_k@s / cache_v@s (the cache slot of the new token).
Examples:
  divergence run --model fixtures/tiny-qwen3 --ids-file fixtures/tiny-qwen3/ids.txt \\
    --dtype bf16 --out ours.npz
  divergence run --model DIR --ids 1,2,3 --inject skip-k-norm@0 --out broken.npz
  # teacher forcing:
  divergence run --model DIR --ids-file ids.txt --replay ref.npz --out local.npz
  # 3 decode steps:
  divergence run --model DIR --ids 1,2,3 --decode-ids 11,22,33 --out decode.npz
  divergence run --model DIR --ids-file ids.txt --decode-from ref.npz \\
    --inject cache-pre-rope --out ours.npz";

/// Arguments of `divergence run`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
// One of --ids and --ids-file (a newcomer's check: the error named --ids alone).
#[command(group(clap::ArgGroup::new("tokens").required(true).args(["ids", "ids_file"])))]
pub struct RunArgs {
    /// Hugging Face checkpoint: a directory with config.json and model.safetensors, or shards
    /// with model.safetensors.index.json, or any *.safetensors (the same rule as inspect); or
    /// one .safetensors file with config.json next to it.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Token ids, e.g. 1,2,3.
    #[arg(long)]
    pub ids: Option<String>,
    /// File of whitespace- or comma-separated token ids (or a list in brackets, [1, 2, 3]).
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
    /// Dump file (.npz or .safetensors); a reference dump written by transformers there is not
    /// replaced (an error). Without it probes are off (timing only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Teacher forcing: every op computes from this reference dump's values of its inputs
    /// (the same ids), so each probe of --out shows only the error its own op adds: diff the
    /// result against REF to see the true local error of every op.
    #[arg(long, value_name = "REF")]
    pub replay: Option<PathBuf>,
    /// Run the forward pass this many times and report the fastest and median (timing; with
    /// --decode, the prefill and every decode step).
    #[arg(long, default_value_t = 1, value_parser = crate::cmd::parse::count, allow_negative_numbers = true)]
    pub repeat: u32,
    /// Decode N tokens after the prompt, one step at a time over a KV cache (teacher-forced:
    /// the tokens come from --decode-ids or --decode-from, and N must equal their count).
    #[arg(long, value_name = "N", value_parser = crate::cmd::parse::count, allow_negative_numbers = true)]
    pub decode: Option<u32>,
    /// The tokens of the decode steps, e.g. 11,22,33 (implies --decode with their count).
    #[arg(long, value_name = "IDS", conflicts_with = "decode_from")]
    pub decode_ids: Option<String>,
    /// Decode the `decode_ids` recorded in this dump's metadata (a reference decode run of the
    /// same prompt: its `input_ids` must be ours); implies --decode with their count.
    #[arg(long, value_name = "REF")]
    pub decode_from: Option<PathBuf>,
    /// Refuse a run estimated to need more than GIB gibibytes besides its weights (default:
    /// the least of this machine's memory, the cgroup's memory limit and `ulimit -v`).
    #[arg(long, value_name = "GIB", value_parser = crate::cmd::parse::memory_gib, allow_negative_numbers = true)]
    pub max_memory: Option<f64>,
}

/// `--out` is none of the files the run reads (the checkpoint, the ids, `--replay`,
/// `--decode-from`: `--out DIR/model.safetensors` replaced the weights with the dump, and
/// `--out` of the `--replay` file truncated it while it was mapped), is a regular file, and
/// holds no dump written by transformers (a reference the run would replace).
fn check_outputs(args: &RunArgs) -> Result<()> {
    let Some(out) = args.out.as_deref() else {
        return Ok(());
    };
    let model = crate::cmd::outputs::model_files(&args.model);
    let inputs: Vec<(&str, &std::path::Path)> = [
        args.ids_file.as_deref().map(|p| ("--ids-file", p)),
        args.replay.as_deref().map(|p| ("--replay", p)),
        args.decode_from.as_deref().map(|p| ("--decode-from", p)),
    ]
    .into_iter()
    .flatten()
    .chain(model.iter().map(|p| ("--model", p.as_path())))
    .collect();
    // The clash with an input first: its message is the more telling one.
    crate::cmd::outputs::check(&[("--out", Some(out))], &inputs)?;
    crate::cmd::outputs::check_dump_output("--out", out)
}

pub fn run(args: RunArgs) -> Result<Exit> {
    check_outputs(&args)?;
    let input_ids = match (&args.ids, &args.ids_file) {
        (Some(ids), _) => parse_ids(ids, "--ids")?,
        (None, Some(path)) => read_ids_file(path)?,
        (None, None) => anyhow::bail!("give --ids or --ids-file"),
    };
    let ids = match (&args.decode_ids, &args.decode_from) {
        (Some(ids), _) => Some(DecodeIds::Given(parse_ids(ids, "--decode-ids")?)),
        (None, Some(path)) => Some(DecodeIds::From(path.clone())),
        (None, None) => None,
    };
    let decode = match (args.decode, ids) {
        (steps, Some(ids)) => Some(DecodeOptions {
            steps: steps.map(|n| n as usize),
            ids,
        }),
        (Some(n), None) => anyhow::bail!(
            "--decode {n}: give the tokens to decode with --decode-ids or --decode-from \
             (decoding is teacher-forced)"
        ),
        (None, None) => None,
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
        decode,
        // GiB to bytes; a bound past u64 is no bound (saturating).
        max_memory: args
            .max_memory
            .map(|gib| (gib * (1u64 << 30) as f64) as u64),
    };
    // What --out was before the run: a failed run removes the dump it started, never a file
    // it did not write.
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.len(), m.modified().ok()))
    };
    let before = opts.out.as_deref().map(stamp);
    let summary = match run_to_dump(&opts) {
        Ok(summary) => summary,
        Err(e) => {
            // A run that fails after its dump was started leaves no partial dump behind (a
            // truncated npz reads as a damaged file, or worse as a short run).
            if let (Some(out), Some(before)) = (&opts.out, before) {
                let now = stamp(out);
                if now.is_some() && now != before {
                    let _ = std::fs::remove_file(out);
                }
            }
            return Err(anyhow::Error::new(e)
                .context(format!("divergence run --model {}", args.model.display())));
        }
    };
    for note in &summary.notes {
        crate::exit::say(&format!("divergence run: note: {note}"));
    }
    let what = match &summary.out {
        Some(path) => format!("{} probes -> {}", summary.probes, path.display()),
        None => "probes off".to_string(),
    };
    // With --decode each timed run is the prefill and every decode step.
    let pass = if summary.decode_steps > 0 {
        "prefill+decode"
    } else {
        "forward"
    };
    let timing = if summary.forward_times.len() > 1 {
        format!(
            "{pass} best {:.1} ms, median {:.1} ms over {} runs",
            summary.best_time().as_secs_f64() * 1e3,
            summary.median_time().as_secs_f64() * 1e3,
            summary.forward_times.len()
        )
    } else {
        format!("{pass} {:.1} ms", summary.best_time().as_secs_f64() * 1e3)
    };
    use crate::cmd::counted;
    let tokens = counted(summary.n_tokens, "token", "tokens");
    let tokens = if summary.decode_steps > 0 {
        format!(
            "{tokens} + {}",
            counted(summary.decode_steps, "decode step", "decode steps")
        )
    } else {
        tokens
    };
    crate::exit::say(&format!(
        "divergence run: {what} ({} {} {}, {tokens}; load {:.1} ms, {timing}; next token {})",
        summary.device,
        summary.precision.torch_name(),
        summary.policy.name(),
        summary.load_time.as_secs_f64() * 1e3,
        summary.next_token,
    ));
    if let (Some(t), true) = (summary.dump_times, crate::cmd::timings::on()) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let model_thread = format!(
            "staging {:.1} ms, copies to the host {:.1} ms ({} copies), waiting for the writer {:.1} ms",
            ms(t.stage),
            ms(t.copy),
            t.copies,
            ms(t.wait)
        );
        crate::exit::say(&format!(
            "divergence timings: dump of the last run: {model_thread}; writer (its own thread) {:.1} ms; \
             at the end, draining the writer {:.1} ms, finishing the file {:.1} ms",
            ms(t.write),
            ms(t.drain),
            ms(t.finish)
        ));
    }
    Ok(Exit::Clean)
}
