//! `run_to_dump`: load a checkpoint, run one prefill (and, with `--decode`, teacher-forced
//! decode steps over a KV cache), write every probe to a dump file.
//!
//! This is everything `divergence run` does; the CLI only parses arguments and prints the
//! summary line.
//!
//! With [`RunOptions::decode`] the prompt is step 0 (it fills the cache), then step `s = 1..N`
//! feeds `decode_ids[s-1]` alone at position `prompt_len + s - 1`. The dump holds every step's
//! probes, step `s > 0` named `<name>@<s>`, and its metadata records `decode_steps`,
//! `decode_ids` and `decode_source` (`"given"`, or the `--decode-from` dump's own value);
//! `input_ids` stays the prompt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, D};
use divergence_dump::Meta;

use crate::checkpoint::Checkpoint;
use crate::error::{CandleContext, Error};
use crate::fault::{FaultSpec, Faults};
use crate::memory;
use crate::model::{ModelOptions, Qwen3};
use crate::ops::Policy;
use crate::probe::{DumpRecorder, DumpReplay, DumpTimes, Probes};

/// The activation dtype of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    BF16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::BF16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// torch-style name ("float32", "bfloat16", "float16").
    pub fn torch_name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::BF16 => "bfloat16",
            Precision::F16 => "float16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            "f16" | "float16" => Ok(Precision::F16),
            other => Err(format!("unknown dtype {other:?} (f32, bf16, f16)")),
        }
    }
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// CUDA device by ordinal (needs the `cuda` feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceKind::Cuda(n)),
                _ => Err(format!("unknown device {other:?} (cpu, cuda, cuda:N)")),
            },
        }
    }
}

impl DeviceKind {
    /// Opens the device; a clear error when CUDA was not compiled in.
    pub fn open(self) -> Result<Device, Error> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::Device(
                        "--device cuda: this build has no CUDA support (rebuild with --features cuda)"
                            .to_string(),
                    ));
                }
                Device::new_cuda(n)
                    .map_err(|err| Error::Device(format!("--device cuda:{n}: {err}")))
            }
        }
    }

    pub fn label(self) -> String {
        match self {
            DeviceKind::Cpu => "cpu".to_string(),
            DeviceKind::Cuda(n) => format!("cuda:{n}"),
        }
    }
}

/// Everything `divergence run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Checkpoint directory (config.json + safetensors).
    pub model_dir: PathBuf,
    pub input_ids: Vec<u32>,
    pub device: DeviceKind,
    pub precision: Precision,
    pub policy: Policy,
    pub faults: Vec<FaultSpec>,
    /// Dump path (.npz or .safetensors); `None` runs with probes off.
    pub out: Option<PathBuf>,
    /// How many times to run the forward pass (timing); the dump is rewritten each time.
    pub repeat: usize,
    /// Teacher forcing (`--replay REF`): every op computes from the reference dump's values of
    /// its inputs, so each probe shows only the error its own op adds. Needs `out`; not with
    /// `decode`.
    pub replay: Option<PathBuf>,
    /// `--decode N`: after the prefill, decode these tokens one by one over a KV cache.
    pub decode: Option<DecodeOptions>,
    /// `--max-memory GIB`, in bytes: what the run may allocate besides its weights, instead of
    /// [`memory::limit`] (the machine's, the cgroup's or the address-space limit).
    pub max_memory: Option<u64>,
}

/// Where the tokens of the decode steps come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeIds {
    /// `--decode-ids 11,22,33`.
    Given(Vec<u32>),
    /// `--decode-from REF`: the `decode_ids` of a dump's metadata (whose `input_ids` must be
    /// this run's).
    From(PathBuf),
}

/// `--decode N` with its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// `--decode N`: the number of decode steps, which must equal the number of ids; `None`:
    /// as many as the ids.
    pub steps: Option<usize>,
    pub ids: DecodeIds,
}

/// The decode of a run, resolved: the tokens and what the metadata says of their source.
#[derive(Debug, Clone, PartialEq)]
struct Decode {
    ids: Vec<u32>,
    /// Where the ids come from, for error messages (`--decode-ids`, the REF path).
    label: String,
    /// `decode_source` of the metadata.
    source: serde_json::Value,
}

/// What a run did, for the summary line.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub probes: usize,
    pub out: Option<PathBuf>,
    pub device: String,
    pub precision: Precision,
    pub policy: Policy,
    /// Tokens of the prompt.
    pub n_tokens: usize,
    /// Decode steps after the prefill (0 without `--decode`).
    pub decode_steps: usize,
    /// Loading the checkpoint (mmap, dtype conversion, upload).
    pub load_time: Duration,
    /// Each forward pass (with `--decode`: the prefill and every decode step), including
    /// copying probes to the host and writing the dump, ended by a device synchronize.
    pub forward_times: Vec<Duration>,
    /// With `--out`: where the last run's time of writing the dump went (copies to the host,
    /// the writer, finishing the file), inside its forward time.
    pub dump_times: Option<DumpTimes>,
    /// Greedy next token (argmax of the last position's logits; with `--decode`, of the last
    /// decode step's).
    pub next_token: u32,
    /// What the CLI should mention, one line each: files of the checkpoint directory that
    /// were not read (e.g. an index next to `model.safetensors`), and an untied `lm_head`
    /// missing from the checkpoint (read from the embeddings instead: see the model's docs).
    pub notes: Vec<String>,
}

impl RunSummary {
    /// The fastest forward pass.
    pub fn best_time(&self) -> Duration {
        self.forward_times.iter().copied().min().unwrap_or_default()
    }

    /// The median forward pass.
    pub fn median_time(&self) -> Duration {
        let mut t = self.forward_times.clone();
        t.sort();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }
}

/// Parses token ids: integers separated by commas and/or whitespace, optionally in one pair
/// of brackets (`[1, 2, 3]`, a Python list; a comma after the last id is allowed, as there).
/// A comma with no id before it (`1,,2`: an id left out?) and a bracket that is not the
/// first or last character of one pair are errors: they were read past before.
pub fn parse_ids(text: &str, source_name: &str) -> Result<Vec<u32>, Error> {
    let bad = |message: String| Error::InputIds {
        source_name: source_name.to_string(),
        message,
    };
    let text = text.trim();
    let trimmed = match (text.strip_prefix('['), text.ends_with(']')) {
        (Some(inner), true) => &inner[..inner.len() - 1],
        _ => text,
    };
    if let Some(b) = trimmed.chars().find(|&c| c == '[' || c == ']') {
        return Err(bad(format!(
            "{b:?} out of place: ids may be enclosed in one pair of brackets, [1, 2, 3]"
        )));
    }
    // The items between commas are walked once, never collected, and no further than the ids
    // read: a 64 MiB file of `1,` is 33 million of them (as a vector of slices they took 715 MB,
    // a bad-input hunt). A comma after the last id (`[1, 2,]`) ends the list; any other empty
    // item between commas is an id left out.
    let end = trimmed.trim_end();
    let body = end.strip_suffix(',').unwrap_or(trimmed);
    let several = body.contains(',');
    let mut ids = Vec::new();
    for item in body.split(',').map(str::trim) {
        if item.is_empty() && several {
            return Err(bad(
                "a comma with no token id before it (an id left out?)".to_string()
            ));
        }
        for s in item.split_whitespace() {
            if ids.len() == MAX_PROMPT_IDS {
                return Err(bad(format!(
                    "more than {MAX_PROMPT_IDS} token ids, longer than any prompt `run` takes"
                )));
            }
            // Digits only: Rust's parser also takes a leading `+` (`+5` read as token 5).
            let id = s
                .parse::<u32>()
                .ok()
                .filter(|_| !s.starts_with('+'))
                .ok_or_else(|| bad(not_a_token(s)))?;
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(bad("no token ids".to_string()));
    }
    Ok(ids)
}

/// Most token ids [`parse_ids`] reads: 2^20, the positions `run` allows a model whose config
/// does not say (more is refused as soon as it is read, whatever the model's
/// `max_position_embeddings`).
pub const MAX_PROMPT_IDS: usize = 1 << 20;

/// Characters of a bad token that an error message quotes: the rest is cut (a 60 MB ids file
/// of `x` was echoed whole, found by a bad-input hunt).
const QUOTED_TOKEN_CHARS: usize = 40;

/// "`"x"` is not a token id", the token cut to [`QUOTED_TOKEN_CHARS`] characters (then `...`
/// and its length in bytes) so that the message stays one short line.
fn not_a_token(s: &str) -> String {
    match s.char_indices().nth(QUOTED_TOKEN_CHARS) {
        None => format!("{s:?} is not a token id"),
        Some((cut, _)) => format!(
            "{:?}... (a token of {} bytes) is not a token id",
            &s[..cut],
            s.len()
        ),
    }
}

/// Reads token ids from a file (see [`parse_ids`]).
pub fn read_ids_file(path: &Path) -> Result<Vec<u32>, Error> {
    let label = path.display().to_string();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // From the metadata first: opening a fifo blocks, and /dev/zero never ends (found by a
    // bad-input hunt: a named pipe hung `run`, /dev/zero took 23 GB).
    let md = std::fs::metadata(path).map_err(io)?;
    let bad = |message: String| Error::InputIds {
        source_name: label.clone(),
        message,
    };
    if !md.is_file() {
        return Err(bad(
            "not a regular file (a directory, a fifo or a device)".into()
        ));
    }
    if md.len() > MAX_IDS_FILE_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_IDS_FILE_BYTES} an ids file may have",
            md.len()
        )));
    }
    let mut text = String::new();
    use std::io::Read;
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_IDS_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    parse_ids(&text, &label)
}

/// The largest `--ids-file` read: 64 MiB, millions of ids (a prompt past the model's
/// `max_position_embeddings` is refused anyway).
pub const MAX_IDS_FILE_BYTES: u64 = 64 << 20;

/// Loads the model, runs `repeat` prefills, and writes the probes of each to `out`.
/// Faults that the run's own sizes leave without an effect, refused as a value the config
/// already has is (a bad-input hunt: each wrote the clean run's dump, bit for bit, recorded as
/// faulty, and `diff` passed it): a `rope-theta` whose tables round to the config's at every
/// position of the run in its dtype, and `decode-pos-frozen` with one decode step (step 1
/// rotates at `prompt_len` as it should; the fault enters at step 2).
fn check_no_op_faults(
    ckpt: &Checkpoint,
    opts: &RunOptions,
    decode: Option<&Decode>,
) -> Result<(), Error> {
    let steps = decode.map_or(0, |d| d.ids.len());
    // The positions the run rotates at: the prompt's, and each decode step's where
    // `decode-pos` / `decode-pos-frozen` move them (a review: `decode-pos=5000` with one
    // step rotates at 5,016, where a theta that rounds alike below 17 does not).
    let prompt = opts.input_ids.len();
    let moved = Faults::new(opts.faults.clone()).decode_positions();
    let mut at: Vec<usize> = (0..prompt)
        .chain((1..=steps).filter_map(|s| moved.position(prompt, s)))
        .collect();
    at.sort_unstable();
    at.dedup();
    let positions = at.len();
    let cfg = &ckpt.config;
    for spec in &opts.faults {
        let message = match spec.fault {
            crate::fault::Fault::RopeTheta(v)
                if v != cfg.rope_theta()
                    && crate::ops::rope_tables_equal(
                        v,
                        cfg.rope_theta(),
                        cfg.head_dim(),
                        &at,
                        opts.precision.dtype(),
                    ) =>
            {
                format!(
                    "its RoPE tables are {}'s rope_theta ({:e}) tables at every one of the run's {positions} positions in {}: the fault would change nothing (give a value further off)",
                    ckpt.config_path.display(),
                    cfg.rope_theta(),
                    opts.precision.dtype().as_str()
                )
            }
            crate::fault::Fault::DecodePosFrozen if steps == 1 => "with one decode step the fault changes nothing: step 1 rotates at the prompt's length as it should, and the fault enters at step 2 (give two decode steps or more)".to_string(),
            _ => continue,
        };
        return Err(Error::FaultTarget {
            spec: spec.to_string(),
            message,
        });
    }
    Ok(())
}

pub fn run_to_dump(opts: &RunOptions) -> Result<RunSummary, Error> {
    let decode = match &opts.decode {
        None => None,
        Some(d) => Some(resolve_decode(d, &opts.input_ids)?),
    };
    if decode.is_some() && opts.replay.is_some() {
        return Err(Error::Replay(
            "cannot be combined with --decode: replay a prefill-only run (teacher forcing of \
             decode steps is not implemented)"
                .into(),
        ));
    }
    let fault_specs = Faults::new(opts.faults.clone());
    if let Some((first, spec, same)) = fault_specs.repeated() {
        return Err(Error::FaultTarget {
            spec: spec.to_string(),
            message: match same {
                true => "given twice (a fault acts once: give it once)".into(),
                false => format!(
                    "names a layer --inject {first} names too (a fault acts once on a layer: give each layer once)"
                ),
            },
        });
    }
    if let Some((a, b)) = fault_specs.conflict() {
        return Err(Error::FaultTarget {
            spec: b.to_string(),
            message: format!(
                "conflicts with --inject {a}: one fault with two values where both act (give one)"
            ),
        });
    }
    // A prompt of one token without decode steps is position 0 alone, where RoPE rotates by
    // angle 0 whatever its theta or its pairs (a held-out check: exit 0, the clean run's dump).
    if decode.is_none() && opts.input_ids.len() == 1 {
        let rope = |f: &crate::fault::Fault| {
            matches!(
                f,
                crate::fault::Fault::RopeTheta(_) | crate::fault::Fault::RopeInterleaved
            )
        };
        if let Some(spec) = opts.faults.iter().find(|s| rope(&s.fault)) {
            return Err(Error::FaultTarget {
                spec: spec.to_string(),
                message: "a 1-token prompt is position 0 alone, where RoPE is the identity: the fault would change nothing (give a longer prompt, or --decode)"
                    .to_string(),
            });
        }
    }
    // A 1-token prompt has no later position to attend to: the mask masks nothing.
    if opts.input_ids.len() == 1 {
        if let Some(spec) = opts
            .faults
            .iter()
            .find(|s| s.fault == crate::fault::Fault::NoCausalMask)
        {
            return Err(Error::FaultTarget {
                spec: spec.to_string(),
                message: "a 1-token prompt has no later position to attend to: the causal mask masks nothing (give a longer prompt)"
                    .to_string(),
            });
        }
    }
    if decode.is_none() {
        if let Some(spec) = fault_specs.decode_only().first() {
            return Err(Error::FaultTarget {
                spec: spec.to_string(),
                message: "acts only on decode steps with a KV cache: add --decode-from REF.npz \
                          or --decode-ids IDS (either decodes; --decode N is then optional)"
                    .to_string(),
            });
        }
    }
    let replay = match &opts.replay {
        None => None,
        Some(_) if opts.out.is_none() => {
            return Err(Error::Replay(
                "needs --out (the replayed probes are the result)".into(),
            ))
        }
        Some(path) => {
            let r = DumpReplay::open(path)?;
            let ours: Vec<i64> = opts.input_ids.iter().map(|&i| i as i64).collect();
            match r.input_ids() {
                Some(ids) if ids != ours.as_slice() => {
                    return Err(Error::Replay(format!(
                        "{}: recorded other input_ids ({} tokens) than these ({} tokens): replay the same input",
                        path.display(),
                        ids.len(),
                        ours.len()
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(Error::Replay(format!(
                    "{}: records no input_ids, so it cannot be checked to be a run of these ids",
                    path.display()
                )))
                }
            }
            Some(r)
        }
    };
    let device = opts.device.open()?;
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(&opts.model_dir)?;
    if let Some(d) = &decode {
        let vocab = ckpt.config.vocab_size;
        if let Some(&bad) = d.ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::InputIds {
                source_name: d.label.clone(),
                message: format!(
                    "decode token id {bad} is outside the vocabulary (vocab_size {vocab})"
                ),
            });
        }
    }
    // Eager attention holds T x T scores per head: a prompt past the model's positions is
    // refused before anything is allocated (found by a bad-input hunt: a 40 KB ids file of
    // 20,000 tokens asked for 6.4 GB at once and aborted).
    let max_positions = ckpt
        .config
        .max_position_embeddings
        .unwrap_or(MAX_PROMPT_IDS);
    if opts.input_ids.len() > max_positions {
        return Err(Error::InputIds {
            source_name: "the prompt".to_string(),
            message: format!(
                "{} tokens, more than the model's max_position_embeddings ({max_positions})",
                opts.input_ids.len()
            ),
        });
    }
    if let Some(d) = &decode {
        // The KV cache is allocated whole up front: positions beyond the model's are refused
        // before anything is allocated (a hostile --decode-from cannot ask for 10^6 slots).
        let total = opts.input_ids.len().saturating_add(d.ids.len());
        let max = ckpt
            .config
            .max_position_embeddings
            .unwrap_or(MAX_PROMPT_IDS);
        if total > max {
            return Err(Error::Decode(format!(
                "{}: {} prompt tokens + {} decode steps = {total} positions, more than the model's max_position_embeddings ({max})",
                d.label,
                opts.input_ids.len(),
                d.ids.len()
            )));
        }
    }
    check_memory(&ckpt, opts, decode.as_ref())?;
    check_no_op_faults(&ckpt, opts, decode.as_ref())?;
    let faults = fault_specs;
    let model = Qwen3::load(
        &ckpt,
        &device,
        &ModelOptions {
            dtype: opts.precision.dtype(),
            policy: opts.policy,
            faults: faults.clone(),
        },
    )?;
    device
        .synchronize()
        .ctx(|| "loading the model".to_string())?;
    let load_time = t0.elapsed();
    // Bad ids fail before any file is written (--out would be truncated otherwise).
    model.check_ids(&opts.input_ids, "input ids")?;
    if decode.is_some() {
        // A negative decode position (fault decode-pos) fails before any file is written.
        model.decode_position(opts.input_ids.len(), 1)?;
    }
    let decode_ids = decode.as_ref().map(|d| d.ids.as_slice());

    let mut forward_times = Vec::new();
    let mut probes = 0;
    let mut next_token = 0;
    let mut dump_times = None;
    let mut replay_note = None;
    for _ in 0..opts.repeat.max(1) {
        let start = Instant::now();
        let logits = match &opts.out {
            Some(path) => {
                let mut rec = DumpRecorder::create(path)?;
                let logits = {
                    let on = Probes::on(&mut rec);
                    let mut handle = match &replay {
                        Some(r) => on.replaying(r),
                        None => on,
                    };
                    forward(&model, &opts.input_ids, decode_ids, &mut handle)?
                };
                probes = rec.count();
                if let Some(r) = &replay {
                    let path = opts
                        .replay
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string());
                    if r.used() == 0 {
                        return Err(Error::Replay(format!(
                            "{path}: no probe of it has a name of this model's probes: nothing was replayed"
                        )));
                    }
                    // Some replayed, some not: those not are computed from ours, and their
                    // rows carry the error before them (a bad-input hunt: a reference of one
                    // probe of 81 was replayed without a word).
                    let kept = r.kept();
                    if !kept.is_empty() {
                        let shown: Vec<&str> = kept.iter().take(3).map(String::as_str).collect();
                        replay_note = Some(format!(
                            "--replay {path}: {} of this run's probes are not in it and were computed from ours (their rows carry the error before them, not only their own): {}{}",
                            kept.len(),
                            shown.join(", "),
                            if kept.len() > 3 { ", ..." } else { "" }
                        ));
                    }
                }
                dump_times =
                    Some(rec.finish(meta(opts, &ckpt, &device, &faults, decode.as_ref()))?);
                logits
            }
            None => forward(&model, &opts.input_ids, decode_ids, &mut Probes::off())?,
        };
        device.synchronize().ctx(|| "forward".to_string())?;
        forward_times.push(start.elapsed());
        next_token = logits
            .argmax(D::Minus1)
            .and_then(|l| l.to_scalar::<u32>())
            .ctx(|| "argmax of the logits".to_string())?;
    }
    Ok(RunSummary {
        probes,
        out: opts.out.clone(),
        device: opts.device.label(),
        precision: opts.precision,
        policy: opts.policy,
        n_tokens: opts.input_ids.len(),
        decode_steps: decode_ids.map_or(0, <[u32]>::len),
        load_time,
        forward_times,
        dump_times,
        next_token,
        notes: notes(&ckpt).into_iter().chain(replay_note).collect(),
    })
}

/// Refuses a run whose estimated peak memory ([`memory::estimate`]) is over
/// [`memory::limit`], before any weight is loaded.
fn check_memory(
    ckpt: &Checkpoint,
    opts: &RunOptions,
    decode: Option<&Decode>,
) -> Result<(), Error> {
    let prompt = opts.input_ids.len();
    let steps = decode.map_or(0, |d| d.ids.len());
    let held = memory::Held::of(opts.out.as_deref());
    let e = memory::estimate(&ckpt.config, prompt, steps, opts.precision.dtype(), held);
    let (limit, what) = opts
        .max_memory
        .map_or_else(memory::limit, |bytes| (bytes, "--max-memory"));
    // On a GPU the cache, the scores and the activations are in its memory, where a failed
    // allocation is an error (not an abort); the host holds the dump.
    let host = match opts.device {
        DeviceKind::Cpu => e.total,
        DeviceKind::Cuda(_) => e.dump,
    };
    if host <= limit {
        return Ok(());
    }
    let (part, bytes) = match opts.device {
        DeviceKind::Cpu => e.largest(),
        DeviceKind::Cuda(_) => ("the dump held until it is written", e.dump),
    };
    let c = &ckpt.config;
    Err(Error::TooLarge {
        path: ckpt.config_path.clone(),
        message: format!(
            "{} + {} in {} would need about {} ({part}: {}; \
             {}, {}, {} kv heads, head_dim {}, hidden {}, vocab {}), more than the \
             {} of {what} (besides the weights): give fewer tokens{}",
            count(prompt, "prompt token"),
            count(steps, "decode step"),
            opts.precision.torch_name(),
            memory::gib(host),
            memory::gib(bytes),
            count(c.num_hidden_layers, "layer"),
            count(c.num_attention_heads, "head"),
            c.num_kv_heads(),
            c.head_dim(),
            c.hidden_size,
            c.vocab_size,
            memory::gib(limit),
            if opts.max_memory.is_some() {
                ""
            } else {
                ", or --max-memory GIB to allow more"
            },
        ),
    })
}

/// "1 layer", "4 layers".
fn count(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// [`RunSummary::notes`] of a checkpoint.
fn notes(ckpt: &Checkpoint) -> Vec<String> {
    let mut notes: Vec<String> = ckpt.ignored.iter().map(ToString::to_string).collect();
    if !ckpt.config.tie_word_embeddings && !ckpt.contains("lm_head.weight") {
        notes.push(
            "config.json's tie_word_embeddings is false (or absent), but the checkpoint has no lm_head.weight: \
             lm_head uses model.embed_tokens.weight (transformers would initialize an untied head randomly, \
             so the reference's logits are not this head's; `divergence inspect` flags it)"
                .to_string(),
        );
    }
    notes
}

/// One prefill over `input_ids`, then, with `decode_ids`, one decode step per id over a KV
/// cache. Returns the logits of the last position (`[vocab]`).
fn forward(
    model: &Qwen3,
    input_ids: &[u32],
    decode_ids: Option<&[u32]>,
    probes: &mut Probes,
) -> Result<Tensor, Error> {
    let last = |logits: Tensor| {
        let t = logits.dim(1)?;
        logits.get(0)?.get(t - 1)
    };
    let logits = match decode_ids {
        None => model.forward(input_ids, probes)?,
        Some(ids) => {
            let mut cache = model.new_cache(input_ids.len() + ids.len())?;
            let mut logits = model.prefill(input_ids, &mut cache, probes)?;
            for &id in ids {
                logits = model.decode_step(id, &mut cache, probes)?;
            }
            logits
        }
    };
    last(logits).ctx(|| "logits of the last position".to_string())
}

/// The decode ids of `--decode-ids` or `--decode-from`, checked against `--decode N` and (for
/// a dump) against this run's prompt.
fn resolve_decode(opts: &DecodeOptions, input_ids: &[u32]) -> Result<Decode, Error> {
    let decode = match &opts.ids {
        DecodeIds::Given(ids) => Decode {
            ids: ids.clone(),
            label: "--decode-ids".to_string(),
            source: serde_json::Value::from("given"),
        },
        DecodeIds::From(path) => decode_from(path, input_ids)?,
    };
    if decode.ids.is_empty() {
        return Err(Error::Decode(format!("{}: no decode ids", decode.label)));
    }
    if let Some(n) = opts.steps {
        if n != decode.ids.len() {
            return Err(Error::Decode(format!(
                "--decode {n}: {} has {} decode ids (give --decode {} or leave --decode out)",
                decode.label,
                decode.ids.len(),
                decode.ids.len()
            )));
        }
    }
    Ok(decode)
}

/// The `decode_ids` (and `decode_source`) of dump `path`, whose `input_ids` must be ours.
fn decode_from(path: &Path, input_ids: &[u32]) -> Result<Decode, Error> {
    let label = path.display().to_string();
    let bad = |message: String| Error::Decode(format!("--decode-from {label}: {message}"));
    let dump = divergence_dump::Dump::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = dump
        .meta()
        .ok_or_else(|| bad("has no metadata, so no decode_ids".to_string()))?;
    // The same readings of decode_ids and decode_steps as `diff`'s (`Meta::decode_ids`,
    // `Meta::decode_steps`): found by a bad-input hunt, `run` decoded a reference whose
    // metadata contradicts itself, which `diff` refuses.
    let ids = meta.decode_ids().map_err(bad)?.ok_or_else(|| {
        bad("its metadata has no decode_ids (not a dump of a decode run)".to_string())
    })?;
    let ids: Vec<u32> = ids
        .iter()
        .map(|&v| {
            u32::try_from(v).map_err(|_| bad(format!("metadata decode_ids: {v} is not a token id")))
        })
        .collect::<Result<Vec<u32>, Error>>()?;
    if let Some(n) = meta.decode_steps().map_err(bad)? {
        if n != ids.len() as u64 {
            return Err(bad(format!(
                "metadata says {n} decode steps but holds {} decode_ids",
                ids.len()
            )));
        }
    }
    let ours: Vec<i64> = input_ids.iter().map(|&i| i as i64).collect();
    match meta.input_ids.as_deref() {
        None => {
            return Err(bad(
                "records no input_ids, so it cannot be checked to be a run of this prompt"
                    .to_string(),
            ))
        }
        Some(theirs) if theirs != ours.as_slice() => {
            let at = theirs
                .iter()
                .zip(&ours)
                .position(|(a, b)| a != b)
                .unwrap_or(theirs.len().min(ours.len()));
            return Err(bad(format!(
                "recorded other input_ids ({} tokens) than this prompt ({} tokens), first \
                 difference at position {at}: decode from the same prompt",
                theirs.len(),
                ours.len()
            )));
        }
        Some(_) => {}
    }
    let source = match meta.extra.get("decode_source") {
        Some(v @ serde_json::Value::String(_)) => v.clone(),
        _ => serde_json::Value::from("given"),
    };
    Ok(Decode { ids, label, source })
}

/// The dump metadata (order and dtypes are filled in by the writer).
fn meta(
    opts: &RunOptions,
    ckpt: &Checkpoint,
    device: &Device,
    faults: &Faults,
    decode: Option<&Decode>,
) -> Meta {
    let device_name = match device {
        Device::Cpu => "cpu".to_string(),
        _ => opts.device.label(),
    };
    Meta {
        input_ids: Some(opts.input_ids.iter().map(|&i| i as i64).collect()),
        producer: Some(serde_json::json!({
            "name": "divergence-qwen3",
            "version": env!("CARGO_PKG_VERSION"),
            "candle": "0.11.1",
            "device": device_name,
            "dtype": opts.precision.torch_name(),
            "policy": opts.policy.name(),
            // As the exporter's `--attn` names it: the torch policy computes attention the way
            // transformers' eager does (bit for bit in bf16 on the held-out models, a few
            // elements a rounding apart in f16); `diff` compares the two (docs/decode.md).
            "attn": match opts.policy {
                crate::ops::Policy::Torch => "eager",
                crate::ops::Policy::Fused => "fused",
            },
            "faults": faults.to_strings(),
            "replay": opts.replay.as_ref().map(|p| p.display().to_string()),
        })),
        model: Some(ckpt.config_json.clone()),
        extra: match decode {
            None => Default::default(),
            Some(d) => [
                ("decode_steps", serde_json::Value::from(d.ids.len())),
                ("decode_ids", serde_json::Value::from(d.ids.clone())),
                ("decode_source", d.source.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        },
        ..Meta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_in_every_spelling() {
        assert_eq!(parse_ids("1,2,3", "--ids").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids(" 1 2\n3 ", "f").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("[1, 2, 3]", "f").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids(" [1, 2, 3,]\n", "f").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("1,2,", "f").unwrap(), vec![1, 2]);
        assert_eq!(parse_ids("1, 2\n3,4", "f").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_ids("[7]", "f").unwrap(), vec![7]);
        for text in ["1,,2", "1, ,2", ",1,2", "1,2,,", "[1,,2]"] {
            let err = parse_ids(text, "--ids").unwrap_err().to_string();
            assert!(err.contains("a comma with no token id"), "{text:?}: {err}");
        }
        for text in ["[1,2", "1,2]", "[[1,2]]", "[1],[2]", "1 [2] 3", "[", "]"] {
            let err = parse_ids(text, "--ids").unwrap_err().to_string();
            assert!(err.contains("out of place"), "{text:?}: {err}");
        }
        for text in ["[]", ",", "[,]"] {
            let err = parse_ids(text, "f").unwrap_err().to_string();
            assert!(err.contains("no token ids"), "{text:?}: {err}");
        }
        let err = parse_ids("1,x", "ids.txt").unwrap_err().to_string();
        assert_eq!(err, "ids.txt: \"x\" is not a token id");
        let err = parse_ids("  ", "ids.txt").unwrap_err().to_string();
        assert_eq!(err, "ids.txt: no token ids");
        assert!(parse_ids("-1", "f").is_err());
        let err = parse_ids("+5,1", "--ids").unwrap_err().to_string();
        assert!(err.contains("\"+5\" is not a token id"), "{err}");
        // At most MAX_PROMPT_IDS, refused at the next id, comma- or space-separated.
        for sep in [",", " ", ",\n"] {
            let at_cap = vec!["1"; MAX_PROMPT_IDS].join(sep);
            assert_eq!(parse_ids(&at_cap, "f").unwrap().len(), MAX_PROMPT_IDS);
            let err = parse_ids(&format!("{at_cap}{sep}2"), "ids.txt")
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!("ids.txt: more than {MAX_PROMPT_IDS} token ids, longer than any prompt `run` takes")
            );
        }
    }

    #[test]
    fn a_long_bad_token_is_cut_short_in_the_message() {
        let long = "x".repeat(1_000_000);
        let err = parse_ids(&format!("1 {long} 2"), "ids.txt")
            .unwrap_err()
            .to_string();
        let forty = "x".repeat(40);
        assert_eq!(
            err,
            format!("ids.txt: \"{forty}\"... (a token of 1000000 bytes) is not a token id")
        );
        // Exactly the limit is quoted whole; multi-byte characters are cut on a boundary.
        let err = parse_ids(&forty, "f").unwrap_err().to_string();
        assert_eq!(err, format!("f: \"{forty}\" is not a token id"));
        let err = parse_ids(&"é".repeat(50), "f").unwrap_err().to_string();
        assert!(err.contains("(a token of 100 bytes)"), "{err}");
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!("cpu".parse::<DeviceKind>().unwrap(), DeviceKind::Cpu);
        assert_eq!("cuda".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(0));
        assert_eq!("cuda:1".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(1));
        assert!("tpu".parse::<DeviceKind>().is_err());
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::BF16);
        assert_eq!("float32".parse::<Precision>().unwrap(), Precision::F32);
        assert!("f8".parse::<Precision>().is_err());
        assert_eq!("fused".parse::<Policy>().unwrap(), Policy::Fused);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceKind::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("rebuild with --features cuda"), "{err}");
    }
}
