//! `run_to_dump`: load a checkpoint, run one prefill, write every probe to a dump file.
//!
//! This is everything `divergence run` does; the CLI only parses arguments and prints the
//! summary line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, D};
use divergence_dump::Meta;

use crate::checkpoint::Checkpoint;
use crate::error::{CandleContext, Error};
use crate::fault::{FaultSpec, Faults};
use crate::model::{ModelOptions, Qwen3};
use crate::ops::Policy;
use crate::probe::{DumpRecorder, DumpReplay, Probes};

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
    /// its inputs, so each probe shows only the error its own op adds. Needs `out`.
    pub replay: Option<PathBuf>,
}

/// What a run did, for the summary line.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub probes: usize,
    pub out: Option<PathBuf>,
    pub device: String,
    pub precision: Precision,
    pub policy: Policy,
    pub n_tokens: usize,
    /// Loading the checkpoint (mmap, dtype conversion, upload).
    pub load_time: Duration,
    /// Each forward pass, including copying probes to the host and writing the dump, ended by
    /// a device synchronize.
    pub forward_times: Vec<Duration>,
    /// Greedy next token (argmax of the last position's logits).
    pub next_token: u32,
    /// Files of the checkpoint directory that were not read, one line each (e.g. an index
    /// next to `model.safetensors`), for the CLI to mention.
    pub ignored: Vec<String>,
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

/// Parses token ids: integers separated by commas and/or whitespace, optionally in `[...]`.
pub fn parse_ids(text: &str, source_name: &str) -> Result<Vec<u32>, Error> {
    let bad = |message: String| Error::InputIds {
        source_name: source_name.to_string(),
        message,
    };
    let trimmed = text.trim().trim_start_matches('[').trim_end_matches(']');
    let ids = trimmed
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| bad(format!("{s:?} is not a token id")))
        })
        .collect::<Result<Vec<u32>, Error>>()?;
    if ids.is_empty() {
        return Err(bad("no token ids".to_string()));
    }
    Ok(ids)
}

/// Reads token ids from a file (see [`parse_ids`]).
pub fn read_ids_file(path: &Path) -> Result<Vec<u32>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_ids(&text, &path.display().to_string())
}

/// Loads the model, runs `repeat` prefills, and writes the probes of each to `out`.
pub fn run_to_dump(opts: &RunOptions) -> Result<RunSummary, Error> {
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
    let faults = Faults::new(opts.faults.clone());
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

    let mut forward_times = Vec::new();
    let mut probes = 0;
    let mut next_token = 0;
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
                    model.forward(&opts.input_ids, &mut handle)?
                };
                probes = rec.count();
                if let Some(r) = &replay {
                    if r.used() == 0 {
                        return Err(Error::Replay(format!(
                            "{}: no probe of it has a name of this model's probes: nothing was replayed",
                            opts.replay.as_ref().map_or(String::new(), |p| p.display().to_string())
                        )));
                    }
                }
                rec.finish(meta(opts, &ckpt, &device, &faults))?;
                logits
            }
            None => model.forward(&opts.input_ids, &mut Probes::off())?,
        };
        device.synchronize().ctx(|| "forward".to_string())?;
        forward_times.push(start.elapsed());
        next_token = logits
            .get(0)
            .and_then(|l| l.get(opts.input_ids.len() - 1))
            .and_then(|l| l.argmax(D::Minus1))
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
        load_time,
        forward_times,
        next_token,
        ignored: ckpt.ignored.iter().map(ToString::to_string).collect(),
    })
}

/// The dump metadata (order and dtypes are filled in by the writer).
fn meta(opts: &RunOptions, ckpt: &Checkpoint, device: &Device, faults: &Faults) -> Meta {
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
            "faults": faults.to_strings(),
            "replay": opts.replay.as_ref().map(|p| p.display().to_string()),
        })),
        model: Some(ckpt.config_json.clone()),
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
        let err = parse_ids("1,x", "ids.txt").unwrap_err().to_string();
        assert_eq!(err, "ids.txt: \"x\" is not a token id");
        let err = parse_ids("  ", "ids.txt").unwrap_err().to_string();
        assert_eq!(err, "ids.txt: no token ids");
        assert!(parse_ids("-1", "f").is_err());
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
