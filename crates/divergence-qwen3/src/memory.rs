//! The memory bound of a run: what a prefill (and a decode) of `T` tokens will allocate,
//! estimated from config.json, the token counts and the activation dtype before any weight is
//! loaded, so that `run` refuses with a one-line error instead of aborting when an allocation
//! fails.
//!
//! Found by a bad-input hunt: a model without `max_position_embeddings` (it defaults to 2^20)
//! and 20,000 prompt tokens aborted after 18 s asking for 6.4 GB of attention scores; a 1.3 MB
//! model with `head_dim` 65536 aborted on a 3.1 GB KV cache for 12,000 decode steps.
//!
//! The estimate follows what the code allocates (see [`crate::model`] and
//! [`crate::ops::attention`]) and errs on the high side:
//!
//! - **KV cache** (with decode steps), allocated whole before the prefill: `layers x 2 x
//!   kv_heads x (T + N + 1) x head_dim` in the activation dtype;
//! - **attention scores** of the prefill, one layer at a time: `heads x T x T` for the scores,
//!   the scaled scores, the f32 copy the mask is added to, the f32 softmax and the
//!   probabilities (16 bytes per score in f32, 14 in bf16/f16), plus the causal mask `T x T`;
//! - **activations**: `T x max(hidden, intermediate, heads x head_dim)` times 8 (the MLP's
//!   gate, activation, up and product, and their probes copied to the host for the dump);
//! - **logits**: `T x vocab`, and its probe's host copy;
//! - **a decode step** reads the whole cache back: per layer up to `(2 x kv_heads + 4 x heads)
//!   x (T + N + 2) x head_dim` (dtype conversion, GQA expansion, the transposed keys).
//!
//! - **the dump** held until it is written ([`Held`]): an npz buffers the decode steps (every
//!   probe of a token, ~4.3 MB for the 0.6B-shaped model), a safetensors file everything.
//!
//! The peak is the cache plus the larger of the prefill's (activations, the mask, and the larger
//! of the scores and the logits) and a decode step's, plus the dump. The weights are not counted: they are
//! bounded by the checkpoint's files (twice a bf16 checkpoint's size in f32).
//!
//! The bound ([`limit`]) is the least of the machine's physical memory, the cgroup's memory
//! limit and the address-space limit, or [`MAX_RUN_BYTES`] (16 GiB) where none can be read;
//! `run --max-memory` replaces it. With 16 GiB: a Qwen3-0.6B-shaped config (16 heads, vocab 151,936) runs prompts of up to about
//! 7,900 tokens in f32 (8,500 in bf16; 4,096 tokens: ~5 GiB), Qwen3-8B (32 heads) about 5,400
//! (5,900), and a 64-token prompt with 256 decode steps needs ~150 MiB. Past it, a prompt of
//! 20,000 tokens on a 4-head model (~24 GiB of scores) or 12,000 decode steps at head_dim
//! 65536 (~23 GiB) is refused.

use candle_core::DType;

use crate::config::Config;

/// The most a run may allocate besides its weights, by [`estimate`], where the machine's memory
/// cannot be read ([`limit`]): 16 GiB.
pub const MAX_RUN_BYTES: u64 = 16 << 30;

/// What a run may allocate besides its weights: the least of this machine's physical memory
/// (`MemTotal` of /proc/meminfo), the memory limit of the process's cgroup (v2 `memory.max`, v1
/// `memory.limit_in_bytes`: a container's) and its address-space limit (`ulimit -v`, from
/// /proc/self/limits), else [`MAX_RUN_BYTES`] where none can be read; with the words that say
/// which. A fixed bound would refuse real workloads on a large host (a 14,000-token prefill of
/// Qwen3-0.6B needs ~50 GiB, which a GPU host holds; "diverges at 14k tokens" is a real report),
/// and let through what a small one cannot hold. `run --max-memory` replaces it.
pub fn limit() -> (u64, &'static str) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let machine = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    let cgroup = read("/proc/self/cgroup").and_then(|text| cgroup_limit(&text, &read));
    let address_space = read("/proc/self/limits").and_then(|text| address_space_limit(&text));
    [
        (machine, "this machine's memory"),
        (cgroup, "the cgroup's memory limit"),
        (address_space, "the address-space limit (ulimit -v)"),
    ]
    .into_iter()
    .filter_map(|(bytes, what)| Some((bytes.filter(|&b| b > 0)?, what)))
    .min_by_key(|&(bytes, _)| bytes)
    .unwrap_or((MAX_RUN_BYTES, "what a run may use"))
}

/// The memory limit of the cgroup that /proc/self/cgroup (`text`) names, read with `read`: the
/// least of the cgroup's and its ancestors' (a container's limit is often set above the
/// process's own cgroup), v2 (`0::/path`, `memory.max`) or v1 (`N:memory:/path`,
/// `memory.limit_in_bytes`); `None` when there is none (`max`, or v1's "no limit", a number
/// near 2^63).
fn cgroup_limit(text: &str, read: &dyn Fn(&str) -> Option<String>) -> Option<u64> {
    let number = |v: Option<String>| v?.trim().parse::<u64>().ok().filter(|&b| b < 1 << 60);
    let mut least: Option<u64> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let file = if controllers.is_empty() {
            |dir: &str| format!("/sys/fs/cgroup{dir}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            |dir: &str| format!("/sys/fs/cgroup/memory{dir}/memory.limit_in_bytes")
        } else {
            continue;
        };
        // The cgroup, then each ancestor up to the root.
        let mut dir = path.trim_end_matches('/');
        loop {
            if let Some(b) = number(read(&file(dir))) {
                least = Some(least.map_or(b, |l| l.min(b)));
            }
            match dir.rfind('/') {
                Some(i) => dir = &dir[..i],
                None => break,
            }
        }
    }
    least
}

/// The soft "Max address space" of /proc/self/limits (`text`), in bytes; `None` when unlimited.
fn address_space_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let soft = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// What of the dump a run holds in memory until the file is written (`DumpWriter`): an npz
/// streams the prefill's probes but buffers the decode steps, stacked; a safetensors file is
/// written whole at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No dump (`--out` not given).
    Nothing,
    /// The decode steps' probes (`.npz`).
    DecodeSteps,
    /// Every probe (`.safetensors`).
    Everything,
}

impl Held {
    /// What a run writing to `out` holds.
    pub fn of(out: Option<&std::path::Path>) -> Held {
        match out {
            None => Held::Nothing,
            Some(p)
                if p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) =>
            {
                Held::Everything
            }
            Some(_) => Held::DecodeSteps,
        }
    }
}

/// What a run of a model will allocate at its peak, in bytes ([`estimate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The KV cache (0 without decode steps).
    pub kv_cache: u64,
    /// The prefill's attention scores of one layer (its working copies), with the causal mask.
    pub attention: u64,
    /// The prefill's activations of one layer and their probes.
    pub activations: u64,
    /// The prefill's logits and their probe.
    pub logits: u64,
    /// One decode step reading the whole cache (0 without decode steps).
    pub decode_step: u64,
    /// The dump held until it is written ([`Held`]), on the host whatever the device.
    pub dump: u64,
    /// The peak: the cache plus the larger of the prefill's and a decode step's.
    pub total: u64,
}

impl Estimate {
    /// The largest part, for the error message: its name and size.
    pub fn largest(&self) -> (&'static str, u64) {
        [
            ("the KV cache", self.kv_cache),
            ("the attention scores", self.attention),
            ("the activations", self.activations),
            ("the logits", self.logits),
            ("a decode step's cache reads", self.decode_step),
            ("the dump held until it is written", self.dump),
        ]
        .into_iter()
        .fold(
            ("", 0),
            |best, part| if part.1 > best.1 { part } else { best },
        )
    }
}

/// The peak memory of a prefill of `prompt` tokens followed by `decode_steps` decode steps, in
/// `dtype` activations, holding `held` of the dump (see the module docs). Saturates instead of
/// overflowing.
pub fn estimate(
    cfg: &Config,
    prompt: usize,
    decode_steps: usize,
    dtype: DType,
    held: Held,
) -> Estimate {
    // In f64: exact below 2^53 bytes, and an absurd config saturates instead of overflowing.
    let n = |x: usize| x as f64;
    let d = n(dtype.size_in_bytes());
    let t = n(prompt);
    let (heads, kv, hd) = (
        n(cfg.num_attention_heads),
        n(cfg.num_kv_heads()),
        n(cfg.head_dim()),
    );
    let width = n(cfg
        .hidden_size
        .max(cfg.intermediate_size)
        .max(cfg.num_attention_heads.saturating_mul(cfg.head_dim())));
    // Bytes per attention score alive at once: scores and scaled scores in the activation
    // dtype, the masked f32 scores and their f32 softmax, the probabilities (a free copy in
    // f32).
    let per_score = if d >= 4.0 { 16.0 } else { 8.0 + 3.0 * d };
    let attention = heads * t * t * per_score + t * t * (4.0 + d);
    let activations = t * width * d * 8.0;
    let logits = t * n(cfg.vocab_size) * d * 2.0;
    let (kv_cache, decode_step) = if decode_steps == 0 {
        (0.0, 0.0)
    } else {
        let slots = t + n(decode_steps) + 2.0;
        let cache = n(cfg.num_hidden_layers) * 2.0 * kv * slots * hd * d;
        let step = (2.0 * kv + 4.0 * heads) * slots * hd * d
            + heads * slots * per_score
            + width * d * 8.0
            + n(cfg.vocab_size) * d * 2.0;
        (cache, step)
    };
    // Every probe of one token, stored in 4 bytes (an npz keeps bf16 as f32): the logits, the
    // embedding and RoPE rows, and per layer (generously) six hidden-sized rows, four of
    // heads x head_dim, six of kv_heads x head_dim (with the cache slots) and four of the MLP's
    // width. The 0.6B-shaped model: ~4.3 MB a token, against the 3.9 MB its dumps measure.
    let inter = n(cfg.intermediate_size);
    let hidden = n(cfg.hidden_size);
    let per_token = 4.0
        * (n(cfg.vocab_size)
            + hidden
            + hd
            + n(cfg.num_hidden_layers)
                * (6.0 * hidden + 4.0 * heads * hd + 6.0 * kv * hd + 4.0 * inter));
    let dump = match held {
        Held::Nothing => 0.0,
        Held::DecodeSteps => n(decode_steps) * per_token,
        Held::Everything => (t + n(decode_steps)) * per_token,
    };
    let prefill = activations + attention.max(logits);
    let total = kv_cache + prefill.max(decode_step) + dump;
    // `as` saturates (and infinity becomes u64::MAX).
    let c = |x: f64| x as u64;
    Estimate {
        kv_cache: c(kv_cache),
        attention: c(attention),
        activations: c(activations),
        logits: c(logits),
        decode_step: c(decode_step),
        dump: c(dump),
        total: c(total),
    }
}

/// `bytes` in GiB with one decimal ("6.4 GiB"); below 0.1 GiB in MiB, below 0.1 MiB in
/// KiB, below 1 KiB in bytes.
pub fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    // Below 0.1 GiB, in MiB (a bad-input hunt: `--max-memory 0.0001` read "about 0.0 GiB,
    // more than the 0.0 GiB"); smaller bounds in KiB or bytes (another: `--max-memory
    // 1e-30` read "more than the 0.0 MiB").
    let (gib, mib) = ((1u64 << 30) as f64, (1u64 << 20) as f64);
    if b >= 0.1 * gib {
        format!("{:.1} GiB", b / gib)
    } else if b >= 0.1 * mib {
        format!("{:.1} MiB", b / mib)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} byte{}", if bytes == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_read_in_mib() {
        assert_eq!(gib(5 << 30), "5.0 GiB");
        assert_eq!(gib(1 << 27), "0.1 GiB");
        assert_eq!(gib(107_374), "0.1 MiB");
        assert_eq!(gib(100_000), "97.7 KiB");
        assert_eq!(gib(3 << 20), "3.0 MiB");
        assert_eq!(gib(1 << 10), "1.0 KiB");
        assert_eq!(gib(1023), "1023 bytes");
        assert_eq!(gib(1), "1 byte");
        assert_eq!(gib(0), "0 bytes");
    }

    #[test]
    fn the_bound_reads_the_cgroup_and_the_address_space_limit() {
        let files = |path: &str| match path {
            "/sys/fs/cgroup/user.slice/job/memory.max" => Some("4294967296\n".to_string()),
            "/sys/fs/cgroup/free/memory.max" => Some("max\n".to_string()),
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => Some("1073741824".into()),
            "/sys/fs/cgroup/memory/none/memory.limit_in_bytes" => {
                Some("9223372036854771712".into())
            }
            _ => None,
        };
        assert_eq!(cgroup_limit("0::/user.slice/job\n", &files), Some(4 << 30));
        assert_eq!(cgroup_limit("0::/free\n", &files), None);
        let v1 = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n";
        assert_eq!(cgroup_limit(v1, &files), Some(1 << 30));
        assert_eq!(cgroup_limit("4:memory:/none\n", &files), None);
        assert_eq!(cgroup_limit("0::/elsewhere\n", &files), None);
        // A limit set on an ancestor (a container's), and a malformed line skipped.
        assert_eq!(
            cgroup_limit("junk\n0::/user.slice/job/step\n", &files),
            Some(4 << 30)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         8589934592           unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(8 << 30));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
        // This machine's bound is one of them, never zero.
        assert!(limit().0 > 0);
    }
    use std::path::Path;

    const QWEN3_06B: &str = include_str!("../../../fixtures/configs/qwen3-0.6b.json");

    fn qwen3_06b() -> Config {
        Config::from_json_str(QWEN3_06B, Path::new("config.json")).expect("config")
    }

    fn config(text: &str) -> Config {
        Config::from_json_str(text, Path::new("config.json")).expect("config")
    }

    #[test]
    fn real_workloads_fit() {
        let cfg = qwen3_06b();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            // The 0.6B-shaped decode benchmark: a 64-token prompt and 256 decode steps.
            let e = estimate(&cfg, 64, 256, dtype, Held::Nothing);
            assert!(e.total < 1 << 30, "{e:?}");
            // Long prompts of a few thousand tokens.
            for (prompt, steps) in [(4096, 0), (4096, 256), (7000, 0)] {
                let e = estimate(&cfg, prompt, steps, dtype, Held::Nothing);
                assert!(
                    e.total <= MAX_RUN_BYTES,
                    "{prompt} {steps} {dtype:?}: {e:?}"
                );
            }
        }
        // 4,096 tokens in f32: the scores of 16 heads (4 x 1 GiB) are the peak.
        let e = estimate(&cfg, 4096, 0, DType::F32, Held::Nothing);
        assert_eq!(e.attention, 16 * 4096 * 4096 * 16 + 4096 * 4096 * 8);
        assert!(e.total < 7 << 30, "{e:?}");
    }

    #[test]
    fn the_hunt_cases_are_over_the_bound() {
        // No max_position_embeddings (2^20 positions) and 20,000 tokens: 6.4 GB per copy of
        // the scores of 4 heads.
        let small = config(
            r#"{"vocab_size": 512, "hidden_size": 64, "intermediate_size": 192,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32}"#,
        );
        let e = estimate(&small, 20_000, 0, DType::F32, Held::Nothing);
        assert!(e.total > MAX_RUN_BYTES, "{e:?}");
        assert_eq!(e.largest().0, "the attention scores");
        // 8,000 tokens ran in 4.3 GB: still allowed.
        let e = estimate(&small, 8_000, 0, DType::F32, Held::Nothing);
        assert!(e.total < 5 << 30, "{e:?}");
        // head_dim 65536 and 12,000 decode steps.
        let bighd = config(
            r#"{"vocab_size": 2, "hidden_size": 2, "intermediate_size": 1,
            "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
            "head_dim": 65536}"#,
        );
        let e = estimate(&bighd, 1, 12_000, DType::F32, Held::Nothing);
        assert!(e.total > MAX_RUN_BYTES, "{e:?}");
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge = config(
            r#"{"vocab_size": 16777216, "hidden_size": 65536, "intermediate_size": 4194304,
            "num_hidden_layers": 10000, "num_attention_heads": 65536, "num_key_value_heads": 65536,
            "head_dim": 65536}"#,
        );
        let e = estimate(
            &huge,
            usize::MAX / 2,
            usize::MAX / 2,
            DType::F32,
            Held::Nothing,
        );
        assert_eq!(e.total, u64::MAX);
    }

    /// The dump a run holds until it writes the file is counted: 4,000 decode steps of the
    /// 0.6B-shaped model buffer ~17 GB of stacked steps in an npz (a review found them left
    /// out), and a safetensors file holds the prompt's probes too.
    #[test]
    fn the_dump_held_until_it_is_written_is_counted() {
        let cfg = qwen3_06b();
        let none = estimate(&cfg, 64, 4000, DType::BF16, Held::Nothing);
        let npz = estimate(&cfg, 64, 4000, DType::BF16, Held::DecodeSteps);
        let st = estimate(&cfg, 64, 4000, DType::BF16, Held::Everything);
        assert_eq!(none.dump, 0);
        let per_token = npz.dump as f64 / 4000.0;
        assert!((3.9e6..5.0e6).contains(&per_token), "{per_token}");
        assert_eq!(npz.total - none.total, npz.dump);
        assert!(st.dump > npz.dump);
        assert_eq!(npz.largest().0, "the dump held until it is written");
        assert_eq!(Held::of(None), Held::Nothing);
        assert_eq!(Held::of(Some(Path::new("o.npz"))), Held::DecodeSteps);
        assert_eq!(Held::of(Some(Path::new("o.SafeTensors"))), Held::Everything);
    }
}
