//! Injectable porting faults: the bugs people really make when porting Qwen3, on purpose.
//!
//! Each fault is applied at the exact op where a buggy port would commit it, so
//! `divergence diff` must name that op (or the probe right after it) as the first divergence.
//!
//! # Syntax
//!
//! `NAME[=VALUE][@LAYERS]`, repeatable on the command line (`--inject a --inject b`):
//!
//! - `LAYERS` limits a per-layer fault to some decoder layers: `@3`, `@0-2`, `@0,5,7-9`.
//!   Without it the fault hits every layer (and, for the norm faults, also the final
//!   `model.norm`). Faults that are not per layer (`embed-scale`, `rope-theta`, `transpose`,
//!   `decode-pos`, `decode-pos-frozen`) take no `@`.
//! - Values: `rope-theta=10000`, `attn-bias=1e30`, `rms-eps=1e-5`, `act=gelu`,
//!   `transpose=model.layers.1.mlp.down_proj`, `decode-pos=-1`, `cache-overwrite=last`,
//!   `cache-dtype=bf16`.
//!
//! | fault | what the port does wrong | enters at |
//! |---|---|---|
//! | `embed-scale` | multiplies embeddings by 1/sqrt(hidden) | `model.embed_tokens` |
//! | `rope-theta=V` | RoPE base V instead of config.json's | `model.rotary_emb` |
//! | `rope-interleaved` | GPT-J pair rotation instead of rotate-half | `...self_attn.rope_q` |
//! | `skip-q-norm` / `skip-k-norm` | forgets q_norm / k_norm (output = input) | `...q_norm` / `...k_norm` |
//! | `attn-bias=V` | applies a bias of V to q/k/v projections | `...q_proj` |
//! | `transpose=MODULE` | uses that weight with the wrong layout (see below) | `MODULE` |
//! | `act=gelu` | wrong MLP activation (exact erf GELU) | `...mlp.act_fn` |
//! | `gqa-tile` | tiles kv heads (k0,k1,k0,k1) instead of repeat-interleave (k0,k0,k1,k1) | `...self_attn.attn_out` |
//! | `rms-eps=V` | RMSNorm epsilon V | the first norm |
//! | `late-rounding` | RMSNorm multiplies by the weight in f32 and rounds once (fused kernel) | the first norm (bf16/f16 only) |
//! | `f16-accum` | RMSNorm variance summed in a half type instead of f32 | the first norm |
//! | `bf16-accum` | every Linear keeps its dot-product accumulator in a half type (see below) | the first `q_proj` |
//! | `bf16-variance` | RMSNorm squares and sums the variance in bf16 (whatever the activation dtype) | the first norm |
//! | `early-cast` | RMSNorm rounds `rsqrt(var + eps)` to the activation dtype and normalises there | the first norm (bf16/f16 only) |
//! | `decode-pos=K` | decode step s rotates at position prompt_len+s-1+K (an off-by-K `position_ids`) | `model.rotary_emb@1` |
//! | `decode-pos-frozen` | every decode step rotates at position prompt_len (positions not advanced) | `model.rotary_emb@2` |
//! | `cache-pre-rope` | the cache holds k before RoPE; at read the whole cache is rotated at the current position | `...layers.0.self_attn.cache_k@1` |
//! | `cache-pre-norm` | the cache holds k before k_norm (`k_proj` per head, rotated) | `...layers.0.self_attn.cache_k@1` |
//! | `cache-overwrite[=first\|last]` | a decode step writes its k/v into slot 0 (`first`) or over the previous slot (`last`) instead of appending | `...layers.0.self_attn.cache_k@1` |
//! | `cache-dtype=f16\|bf16` | the cache stores k/v rounded to a lower-precision dtype | `...layers.0.self_attn.cache_k@1` (f32 run) |
//! | `decode-mask` | a decode step also attends to the next, not yet written slot (zeros) | `...layers.0.self_attn.attn_out@1` |
//! | `swap-gate-up` | loads `gate_proj`'s weight from `up_proj`'s tensor and the reverse (a fused `gate_up_proj` split in the wrong order) | `...mlp.gate_proj` |
//! | `swap-k-v` | loads `k_proj`'s weight (and bias) from `v_proj`'s and the reverse (a fused qkv split with k and v in the wrong order) | `...self_attn.k_proj` |
//! | `no-causal-mask` | the prefill's attention without its causal mask: every position attends to the later ones too | `...self_attn.attn_out` |
//!
//! The swaps act at load, on every layer or those of `@LAYERS`; `no-causal-mask` on the
//! prefill (a decode step's one query sees every key it is given, mask or not), and is
//! refused for a 1-token prompt, where there is no later position to see.
//!
//! The seven before them are KV-cache faults: they act only on the decode steps of
//! `divergence run --decode N` (the prefill, step 0, is bit-identical to a run without them)
//! and are refused without `--decode`. `decode-pos` and `decode-pos-frozen` act on the whole
//! model; the cache faults take `@LAYERS`. `cache-dtype` must be lower precision than the
//! activations: f16 or bf16 under f32, bf16 under f16 (fewer mantissa bits); it is refused for
//! bf16 activations and for its own dtype. A negative decode position (`decode-pos=K` with
//! K < -prompt_len) is an error when the run starts.
//!
//! `transpose=MODULE` reinterprets the stored `[out, in]` buffer as `[in, out]` and transposes
//! it back to `[out, in]`: for a square weight this is exactly `Wᵀ`; for a non-square weight it
//! is the "loaded a Conv1D-layout checkpoint without transposing" bug (same bytes, wrong
//! strides), which keeps the shape so the port still runs. MODULE is any linear layer
//! (`q_proj`..`down_proj`, `lm_head`) or `model.embed_tokens`.
//!
//! `f16-accum` sums the squares in bf16 when the activations are bf16, and in f16 otherwise
//! (so it also shows up in an f32 run). `late-rounding` and `early-cast` would be no-ops for
//! f32 activations: `Qwen3::load` refuses them there.
//!
//! `bf16-accum` ("accumulate matmuls in bf16", the guide's first precision point): each
//! `x @ Wᵀ` is computed in k-tiles of [`ACCUM_TILE`] (= 16, a tensor-core MMA's k step); a
//! tile's dot products are exact-ish (f32), but the running sum across tiles is kept in the
//! half type, rounded after every tile, as a kernel that stores its accumulator in bf16 does.
//! The half type is f16 for f16 activations and bf16 otherwise (so it also shows in an f32
//! run). Every Linear of the layers it names, plus `lm_head` without `@`.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;

/// The MLP activation a faulty port may use instead of silu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, transformers' "gelu".
    Gelu,
    /// tanh-approximated GELU, transformers' "gelu_pytorch_tanh".
    GeluTanh,
    /// ReLU.
    Relu,
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu-tanh",
            Activation::Relu => "relu",
        }
    }
}

/// Where fault `cache-overwrite` writes a decode step's k/v instead of appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSlot {
    /// Slot 0 (`cache-overwrite`, `cache-overwrite=first`).
    First,
    /// The previous slot, prompt_len+s-2 (`cache-overwrite=last`).
    Last,
}

impl CacheSlot {
    fn name(self) -> &'static str {
        match self {
            CacheSlot::First => "first",
            CacheSlot::Last => "last",
        }
    }
}

/// The storage dtype of fault `cache-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDtype {
    F16,
    BF16,
}

impl CacheDtype {
    fn name(self) -> &'static str {
        match self {
            CacheDtype::F16 => "f16",
            CacheDtype::BF16 => "bf16",
        }
    }

    /// The candle dtype the cache is stored in.
    pub fn dtype(self) -> DType {
        match self {
            CacheDtype::F16 => DType::F16,
            CacheDtype::BF16 => DType::BF16,
        }
    }

    /// Is storing in this dtype a loss of precision for `activations`? f16 and bf16 under
    /// f32, bf16 (8 mantissa bits) under f16 (11); never for bf16 activations or its own dtype.
    pub fn is_lower_than(self, activations: DType) -> bool {
        matches!(
            (self, activations),
            (_, DType::F32) | (_, DType::F64) | (CacheDtype::BF16, DType::F16)
        )
    }
}

/// One porting fault (without its layer restriction).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    EmbedScale,
    RopeTheta(f64),
    RopeInterleaved,
    SkipKNorm,
    SkipQNorm,
    AttnBias(f64),
    Transpose(String),
    Act(Activation),
    GqaTile,
    RmsEps(f64),
    LateRounding,
    F16Accum,
    Bf16Accum,
    Bf16Variance,
    EarlyCast,
    /// `decode-pos=K`: decode positions off by K.
    DecodePos(i64),
    DecodePosFrozen,
    CachePreRope,
    CachePreNorm,
    CacheOverwrite(CacheSlot),
    CacheDtype(CacheDtype),
    DecodeMask,
    /// `swap-gate-up`: gate_proj and up_proj load each other's weight.
    SwapGateUp,
    /// `swap-k-v`: k_proj and v_proj load each other's weight and bias.
    SwapKV,
    /// `no-causal-mask`: the prefill attends without its causal mask.
    NoCausalMask,
}

/// The k-tile of the `bf16-accum` fault: products are summed in f32 within a tile, the running
/// sum across tiles in the half type.
pub const ACCUM_TILE: usize = 16;

/// Every fault's name, as typed before `=` ([`Fault::name`]): what an unknown name is
/// compared with for "did you mean" (`divergence run --help` lists them with their values).
pub const FAULT_NAMES: [&str; 25] = [
    "embed-scale",
    "rope-theta",
    "rope-interleaved",
    "skip-k-norm",
    "skip-q-norm",
    "attn-bias",
    "transpose",
    "act",
    "gqa-tile",
    "rms-eps",
    "late-rounding",
    "f16-accum",
    "bf16-accum",
    "bf16-variance",
    "early-cast",
    "decode-pos",
    "decode-pos-frozen",
    "cache-pre-rope",
    "cache-pre-norm",
    "cache-overwrite",
    "cache-dtype",
    "decode-mask",
    "swap-gate-up",
    "swap-k-v",
    "no-causal-mask",
];

/// Where every fault is listed, for the error of a name that is none (the list itself is
/// ~600 characters: too long for a one-line error).
const WHERE_LISTED: &str = "`divergence run --help` lists every fault";

impl Fault {
    /// The fault's name, as typed before `=`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::EmbedScale => "embed-scale",
            Fault::RopeTheta(_) => "rope-theta",
            Fault::RopeInterleaved => "rope-interleaved",
            Fault::SkipKNorm => "skip-k-norm",
            Fault::SkipQNorm => "skip-q-norm",
            Fault::AttnBias(_) => "attn-bias",
            Fault::Transpose(_) => "transpose",
            Fault::Act(_) => "act",
            Fault::GqaTile => "gqa-tile",
            Fault::RmsEps(_) => "rms-eps",
            Fault::LateRounding => "late-rounding",
            Fault::F16Accum => "f16-accum",
            Fault::Bf16Accum => "bf16-accum",
            Fault::Bf16Variance => "bf16-variance",
            Fault::EarlyCast => "early-cast",
            Fault::DecodePos(_) => "decode-pos",
            Fault::DecodePosFrozen => "decode-pos-frozen",
            Fault::CachePreRope => "cache-pre-rope",
            Fault::CachePreNorm => "cache-pre-norm",
            Fault::CacheOverwrite(_) => "cache-overwrite",
            Fault::CacheDtype(_) => "cache-dtype",
            Fault::DecodeMask => "decode-mask",
            Fault::SwapGateUp => "swap-gate-up",
            Fault::SwapKV => "swap-k-v",
            Fault::NoCausalMask => "no-causal-mask",
        }
    }

    /// KV-cache faults: they act only on decode steps (`--decode`).
    pub fn is_decode_only(&self) -> bool {
        matches!(
            self,
            Fault::DecodePos(_)
                | Fault::DecodePosFrozen
                | Fault::CachePreRope
                | Fault::CachePreNorm
                | Fault::CacheOverwrite(_)
                | Fault::CacheDtype(_)
                | Fault::DecodeMask
        )
    }

    /// False for faults that act once on the whole model and so take no `@LAYERS`.
    pub fn is_per_layer(&self) -> bool {
        !matches!(
            self,
            Fault::EmbedScale
                | Fault::RopeTheta(_)
                | Fault::Transpose(_)
                | Fault::DecodePos(_)
                | Fault::DecodePosFrozen
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::RopeTheta(v) | Fault::AttnBias(v) | Fault::RmsEps(v) => {
                // The shorter of the plain and the exponent form: `6`, `500`, `1e4`, `1e-3`
                // (`6e0` read as a typo in a conflict's message: a bad-input hunt).
                let (plain, exp) = (format!("{v}"), format!("{v:e}"));
                let v = if plain.len() <= exp.len() { plain } else { exp };
                write!(f, "{}={v}", self.name())
            }
            Fault::Transpose(m) => write!(f, "transpose={m}"),
            Fault::Act(a) => write!(f, "act={}", a.name()),
            Fault::DecodePos(k) => write!(f, "decode-pos={k}"),
            Fault::CacheOverwrite(slot) => write!(f, "cache-overwrite={}", slot.name()),
            Fault::CacheDtype(d) => write!(f, "cache-dtype={}", d.name()),
            _ => f.write_str(self.name()),
        }
    }
}

/// A fault plus the decoder layers it is limited to.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub fault: Fault,
    /// Inclusive layer ranges; `None` = every layer (and the final norm).
    pub layers: Option<Vec<(usize, usize)>>,
}

/// Whether two specs act on a layer both name (a spec without layers acts on every one).
fn overlap(a: &FaultSpec, b: &FaultSpec) -> bool {
    match (&a.layers, &b.layers) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x
            .iter()
            .any(|&(a0, a1)| y.iter().any(|&(b0, b1)| a0 <= b1 && b0 <= a1)),
    }
}

/// Inclusive layer ranges sorted and merged where they overlap or touch: one list per set of
/// layers (`0,1`, `1,0` and `0-1` all give `[(0, 1)]`).
fn merged(ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(sorted.len());
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl FaultSpec {
    /// Does this fault act at this place? `layer` is `None` for ops outside the decoder
    /// layers (embeddings, final norm, lm_head): only unrestricted faults act there.
    pub fn applies_to(&self, layer: Option<usize>) -> bool {
        match (&self.layers, layer) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(ranges), Some(l)) => ranges.iter().any(|&(a, b)| a <= l && l <= b),
        }
    }

    /// The highest layer named in `@LAYERS`, if any.
    pub fn max_layer(&self) -> Option<usize> {
        self.layers
            .as_ref()
            .and_then(|r| r.iter().map(|&(_, b)| b).max())
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fault)?;
        if let Some(ranges) = &self.layers {
            let parts: Vec<String> = ranges
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            write!(f, "@{}", parts.join(","))?;
        }
        Ok(())
    }
}

/// A `--inject` value that does not parse: one short line, what is wrong with it (an unknown
/// name says which fault is close, and where the list is).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{input:?}: {message}")]
pub struct FaultParseError {
    pub input: String,
    pub message: String,
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |message: String| FaultParseError {
            input: input.to_string(),
            message,
        };
        let s = input.trim();
        let (head, layers) = match s.split_once('@') {
            Some((h, l)) => (h, Some(parse_layers(l).map_err(err)?)),
            None => (s, None),
        };
        let (name, value) = match head.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (head.trim(), None),
        };
        let need = |what: &str| -> Result<&str, FaultParseError> {
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(err(format!("{name} needs a value: {name}={what}"))),
            }
        };
        let none = || -> Result<(), FaultParseError> {
            match value {
                None => Ok(()),
                Some(_) => Err(err(format!("{name} takes no value"))),
            }
        };
        let number = |what: &str| -> Result<f64, FaultParseError> {
            let v = need(what)?;
            let x: f64 = v
                .parse()
                .map_err(|_| err(format!("{name}: {v:?} is not a number")))?;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(err(format!("{name}: {v:?} is not finite")))
            }
        };
        let fault = match name {
            "embed-scale" => none().map(|_| Fault::EmbedScale)?,
            "rope-theta" => {
                let v = number("THETA")?;
                if v <= 0.0 {
                    return Err(err(format!("rope-theta must be positive, got {v}")));
                }
                Fault::RopeTheta(v)
            }
            "rope-interleaved" => none().map(|_| Fault::RopeInterleaved)?,
            "skip-k-norm" => none().map(|_| Fault::SkipKNorm)?,
            "skip-q-norm" => none().map(|_| Fault::SkipQNorm)?,
            "attn-bias" => match number("MAGNITUDE")? {
                // (a bad-input hunt: a dump bit-identical to the clean run's, without a word)
                0.0 => {
                    return Err(err(
                        "attn-bias=0 adds no bias: give a magnitude other than 0".into(),
                    ))
                }
                v => Fault::AttnBias(v),
            },
            "transpose" => {
                let m = need("MODULE")?;
                if m.contains(char::is_whitespace) {
                    return Err(err(format!("transpose: {m:?} is not a module path")));
                }
                Fault::Transpose(m.to_string())
            }
            "act" => match need("gelu")? {
                "gelu" => Fault::Act(Activation::Gelu),
                "gelu-tanh" | "gelu_pytorch_tanh" => Fault::Act(Activation::GeluTanh),
                "relu" => Fault::Act(Activation::Relu),
                other => {
                    return Err(err(format!(
                        "act: unknown activation {other:?} (gelu, gelu-tanh, relu)"
                    )))
                }
            },
            "gqa-tile" => none().map(|_| Fault::GqaTile)?,
            "rms-eps" => {
                let v = number("EPS")?;
                if v < 0.0 {
                    return Err(err(format!("rms-eps must be >= 0, got {v}")));
                }
                Fault::RmsEps(v)
            }
            "late-rounding" => none().map(|_| Fault::LateRounding)?,
            "f16-accum" => none().map(|_| Fault::F16Accum)?,
            "bf16-accum" => none().map(|_| Fault::Bf16Accum)?,
            "bf16-variance" => none().map(|_| Fault::Bf16Variance)?,
            "early-cast" => none().map(|_| Fault::EarlyCast)?,
            "decode-pos" => {
                let v = need("K")?;
                let k: i64 = v.parse().map_err(|e: std::num::ParseIntError| {
                    let why = match e.kind() {
                        std::num::IntErrorKind::PosOverflow
                        | std::num::IntErrorKind::NegOverflow => "is out of range",
                        _ => "is not an integer",
                    };
                    err(format!("decode-pos: {v:?} {why}"))
                })?;
                if k == 0 {
                    return Err(err(
                        "decode-pos=0 moves no position: give an offset other than 0".into(),
                    ));
                }
                Fault::DecodePos(k)
            }
            "decode-pos-frozen" => none().map(|_| Fault::DecodePosFrozen)?,
            "cache-pre-rope" => none().map(|_| Fault::CachePreRope)?,
            "cache-pre-norm" => none().map(|_| Fault::CachePreNorm)?,
            "cache-overwrite" => match value {
                None | Some("first") => Fault::CacheOverwrite(CacheSlot::First),
                Some("last") => Fault::CacheOverwrite(CacheSlot::Last),
                Some(other) => {
                    return Err(err(format!(
                        "cache-overwrite: unknown slot {other:?} (first, last)"
                    )))
                }
            },
            "cache-dtype" => match need("f16|bf16")? {
                "f16" | "float16" => Fault::CacheDtype(CacheDtype::F16),
                "bf16" | "bfloat16" => Fault::CacheDtype(CacheDtype::BF16),
                other => {
                    return Err(err(format!(
                        "cache-dtype: unknown dtype {other:?} (f16, bf16)"
                    )))
                }
            },
            "decode-mask" => none().map(|_| Fault::DecodeMask)?,
            "swap-gate-up" => none().map(|_| Fault::SwapGateUp)?,
            "swap-k-v" => none().map(|_| Fault::SwapKV)?,
            "no-causal-mask" => none().map(|_| Fault::NoCausalMask)?,
            "" => return Err(err(format!("empty fault name ({WHERE_LISTED})"))),
            other => {
                let near = divergence_names::near::closest(other, FAULT_NAMES)
                    .map_or_else(String::new, |f| format!(": did you mean `{f}`?"));
                return Err(err(format!(
                    "unknown fault {other:?}{near} ({WHERE_LISTED})"
                )));
            }
        };
        if layers.is_some() && !fault.is_per_layer() {
            return Err(err(format!(
                "{} acts on the whole model and takes no @LAYERS",
                fault.name()
            )));
        }
        Ok(FaultSpec { fault, layers })
    }
}

fn parse_layers(text: &str) -> Result<Vec<(usize, usize)>, String> {
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        // The whole part in the message: `-1` splits into "" and "1" below.
        // Digits only: Rust's parser also takes a leading `+` (`@+1` read as layer 1).
        let parse = |s: &str| -> Result<usize, String> {
            let s = s.trim();
            s.parse::<usize>()
                .ok()
                .filter(|_| !s.starts_with('+'))
                .ok_or_else(|| {
                    format!("layer {part:?} is not a layer index or range (use @N, @N-M or @N,M-K)")
                })
        };
        let range = match part.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let n = parse(part)?;
                (n, n)
            }
        };
        if range.0 > range.1 {
            return Err(format!("layer range {part:?} is empty"));
        }
        // A layer named twice in one spec (`@0,0`, `@0-2,1`) acts once and was recorded as
        // written (a bad-input hunt): refused, as a fault given twice is.
        if ranges.iter().any(|&(a, b)| range.0 <= b && a <= range.1) {
            return Err(format!(
                "layer {part:?} is named twice (give each layer once)"
            ));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// The RMSNorm faults that act on one norm.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NormFaults {
    /// `rms-eps=V`: epsilon V instead of config.json's.
    pub rms_eps: Option<f64>,
    /// `late-rounding`.
    pub late_rounding: bool,
    /// `f16-accum`.
    pub f16_accum: bool,
    /// `bf16-variance`.
    pub bf16_variance: bool,
    /// `early-cast`.
    pub early_cast: bool,
}

/// Every per-layer fault that acts in one decoder layer, resolved once when the layer is
/// built (the `transpose` fault is by module and is applied by the weight loader).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LayerFaults {
    /// `attn-bias=V` on q/k/v.
    pub attn_bias: Option<f64>,
    pub skip_q_norm: bool,
    pub skip_k_norm: bool,
    pub rope_interleaved: bool,
    pub gqa_tile: bool,
    /// `act=...` instead of silu.
    pub act: Option<Activation>,
    /// The faults of the layer's four norms (input, post-attention, q_norm, k_norm).
    pub norm: NormFaults,
    /// `bf16-accum` on the layer's seven Linears.
    pub bf16_accum: bool,
    /// The KV-cache faults of the layer's cache (decode only).
    pub cache: CacheFaults,
    /// `swap-gate-up`: gate_proj and up_proj load each other's weight.
    pub swap_gate_up: bool,
    /// `swap-k-v`: k_proj and v_proj load each other's weight and bias.
    pub swap_k_v: bool,
    /// `no-causal-mask`: the prefill's attention without its causal mask.
    pub no_causal_mask: bool,
}

/// The KV-cache faults that act on one layer's cache (only when decoding with a cache).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheFaults {
    /// `cache-pre-rope`: k stored before RoPE, the whole cache rotated at the current
    /// position when read.
    pub pre_rope: bool,
    /// `cache-pre-norm`: k stored before k_norm.
    pub pre_norm: bool,
    /// `cache-overwrite`: where a decode step writes instead of its own slot.
    pub overwrite: Option<CacheSlot>,
    /// `cache-dtype`: the storage dtype instead of the activation dtype.
    pub dtype: Option<CacheDtype>,
    /// `decode-mask`: a decode step also attends to the next, unwritten slot.
    pub mask_next: bool,
}

/// Where the decode steps rotate (faults `decode-pos`, `decode-pos-frozen`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodePositions {
    /// `decode-pos=K`: added to every decode position.
    pub offset: i64,
    /// `decode-pos-frozen`: every decode step at position prompt_len.
    pub frozen: bool,
}

impl DecodePositions {
    /// The RoPE position of decode step `step` (1-based) after a prompt of `prompt_len`
    /// tokens; `None` when it would be negative.
    pub fn position(self, prompt_len: usize, step: usize) -> Option<usize> {
        let right = if self.frozen {
            prompt_len
        } else {
            prompt_len + step.saturating_sub(1)
        };
        let pos = i64::try_from(right).ok()?.checked_add(self.offset)?;
        usize::try_from(pos).ok()
    }
}

/// All faults of one run, with the queries the model asks at each op.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    specs: Vec<FaultSpec>,
}

impl Faults {
    /// No faults: the correct port.
    pub fn none() -> Faults {
        Faults::default()
    }

    pub fn new(specs: Vec<FaultSpec>) -> Faults {
        Faults { specs }
    }

    pub fn specs(&self) -> &[FaultSpec] {
        &self.specs
    }

    /// Two specs of one fault with other values on a layer both name (`rope-theta=1e4` and
    /// `rope-theta=500`): the last would act and the dump's metadata record both (a bad-input
    /// hunt). `transpose=` faults name modules, each its own; a repeated spec is no conflict
    /// ([`Faults::repeated`] refuses it).
    pub fn conflict(&self) -> Option<(&FaultSpec, &FaultSpec)> {
        self.specs.iter().enumerate().find_map(|(i, a)| {
            self.specs[i + 1..]
                .iter()
                .find(|b| {
                    a.fault.name() == b.fault.name()
                        && !matches!(a.fault, Fault::Transpose(_))
                        && a.fault != b.fault
                        && overlap(a, b)
                })
                .map(|b| (a, b))
        })
    }

    /// A spec given again (`--inject skip-k-norm@0 --inject skip-k-norm@0`, or its layers
    /// written otherwise: `@0,1` and `@1,0`), or one fault with the same value on a layer two
    /// specs name (`skip-k-norm@0` and `skip-k-norm`): a fault acts once on a layer however
    /// often it is named, and the dump's metadata would record both (two bad-input hunts).
    /// The earlier and the later spec of the first such pair, and whether their layers are
    /// the same.
    pub fn repeated(&self) -> Option<(&FaultSpec, &FaultSpec, bool)> {
        let layers = |s: &FaultSpec| s.layers.as_deref().map(merged);
        self.specs.iter().enumerate().find_map(|(i, b)| {
            self.specs[..i]
                .iter()
                .find(|a| a.fault == b.fault && overlap(a, b))
                .map(|a| (a, b, layers(a) == layers(b)))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    fn find(&self, layer: Option<usize>, pred: impl Fn(&Fault) -> bool) -> Option<&Fault> {
        self.specs
            .iter()
            .filter(|s| s.applies_to(layer) && pred(&s.fault))
            .map(|s| &s.fault)
            .last()
    }

    fn has(&self, layer: Option<usize>, pred: impl Fn(&Fault) -> bool) -> bool {
        self.find(layer, pred).is_some()
    }

    pub fn embed_scale(&self) -> bool {
        self.has(None, |f| matches!(f, Fault::EmbedScale))
    }

    pub fn rope_theta(&self) -> Option<f64> {
        match self.find(None, |f| matches!(f, Fault::RopeTheta(_))) {
            Some(Fault::RopeTheta(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn rope_interleaved(&self, layer: usize) -> bool {
        self.has(Some(layer), |f| matches!(f, Fault::RopeInterleaved))
    }

    pub fn skip_k_norm(&self, layer: usize) -> bool {
        self.has(Some(layer), |f| matches!(f, Fault::SkipKNorm))
    }

    pub fn skip_q_norm(&self, layer: usize) -> bool {
        self.has(Some(layer), |f| matches!(f, Fault::SkipQNorm))
    }

    pub fn attn_bias(&self, layer: usize) -> Option<f64> {
        match self.find(Some(layer), |f| matches!(f, Fault::AttnBias(_))) {
            Some(Fault::AttnBias(v)) => Some(*v),
            _ => None,
        }
    }

    /// Is the weight of this module (a probe name) to be used with the wrong layout?
    pub fn transpose(&self, module: &str) -> bool {
        self.has(None, |f| matches!(f, Fault::Transpose(m) if m == module))
    }

    /// Every module named by a `transpose=` fault.
    pub fn transpose_targets(&self) -> Vec<&str> {
        self.specs
            .iter()
            .filter_map(|s| match &s.fault {
                Fault::Transpose(m) => Some(m.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn act(&self, layer: usize) -> Option<Activation> {
        match self.find(Some(layer), |f| matches!(f, Fault::Act(_))) {
            Some(Fault::Act(a)) => Some(*a),
            _ => None,
        }
    }

    pub fn gqa_tile(&self, layer: usize) -> bool {
        self.has(Some(layer), |f| matches!(f, Fault::GqaTile))
    }

    /// RMSNorm faults for a norm in `layer` (`None` = the final `model.norm`).
    pub fn rms_eps(&self, layer: Option<usize>) -> Option<f64> {
        match self.find(layer, |f| matches!(f, Fault::RmsEps(_))) {
            Some(Fault::RmsEps(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn late_rounding(&self, layer: Option<usize>) -> bool {
        self.has(layer, |f| matches!(f, Fault::LateRounding))
    }

    pub fn f16_accum(&self, layer: Option<usize>) -> bool {
        self.has(layer, |f| matches!(f, Fault::F16Accum))
    }

    /// `bf16-accum` on the Linears of `layer` (`None` = `lm_head`).
    pub fn bf16_accum(&self, layer: Option<usize>) -> bool {
        self.has(layer, |f| matches!(f, Fault::Bf16Accum))
    }

    /// The RMSNorm faults of a norm in `layer` (`None` = the final `model.norm`).
    pub fn norm(&self, layer: Option<usize>) -> NormFaults {
        NormFaults {
            rms_eps: self.rms_eps(layer),
            late_rounding: self.late_rounding(layer),
            f16_accum: self.f16_accum(layer),
            bf16_variance: self.has(layer, |f| matches!(f, Fault::Bf16Variance)),
            early_cast: self.has(layer, |f| matches!(f, Fault::EarlyCast)),
        }
    }

    /// The KV-cache faults of decoder layer `layer`.
    pub fn cache(&self, layer: usize) -> CacheFaults {
        let l = Some(layer);
        CacheFaults {
            pre_rope: self.has(l, |f| matches!(f, Fault::CachePreRope)),
            pre_norm: self.has(l, |f| matches!(f, Fault::CachePreNorm)),
            overwrite: match self.find(l, |f| matches!(f, Fault::CacheOverwrite(_))) {
                Some(Fault::CacheOverwrite(slot)) => Some(*slot),
                _ => None,
            },
            dtype: match self.find(l, |f| matches!(f, Fault::CacheDtype(_))) {
                Some(Fault::CacheDtype(d)) => Some(*d),
                _ => None,
            },
            mask_next: self.has(l, |f| matches!(f, Fault::DecodeMask)),
        }
    }

    /// Where the decode steps rotate (`decode-pos`, `decode-pos-frozen`).
    pub fn decode_positions(&self) -> DecodePositions {
        DecodePositions {
            offset: match self.find(None, |f| matches!(f, Fault::DecodePos(_))) {
                Some(Fault::DecodePos(k)) => *k,
                _ => 0,
            },
            frozen: self.has(None, |f| matches!(f, Fault::DecodePosFrozen)),
        }
    }

    /// The specs that act only on decode steps (refused without `--decode`).
    pub fn decode_only(&self) -> Vec<&FaultSpec> {
        self.specs
            .iter()
            .filter(|s| s.fault.is_decode_only())
            .collect()
    }

    /// Every per-layer fault of decoder layer `layer`.
    pub fn layer(&self, layer: usize) -> LayerFaults {
        LayerFaults {
            attn_bias: self.attn_bias(layer),
            skip_q_norm: self.skip_q_norm(layer),
            skip_k_norm: self.skip_k_norm(layer),
            rope_interleaved: self.rope_interleaved(layer),
            gqa_tile: self.gqa_tile(layer),
            act: self.act(layer),
            norm: self.norm(Some(layer)),
            bf16_accum: self.bf16_accum(Some(layer)),
            cache: self.cache(layer),
            swap_gate_up: self.has(Some(layer), |f| matches!(f, Fault::SwapGateUp)),
            swap_k_v: self.has(Some(layer), |f| matches!(f, Fault::SwapKV)),
            no_causal_mask: self.has(Some(layer), |f| matches!(f, Fault::NoCausalMask)),
        }
    }

    /// The specs as strings, for the dump's producer metadata.
    pub fn to_strings(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> FaultSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_fault() {
        assert_eq!(parse("embed-scale").fault, Fault::EmbedScale);
        assert_eq!(parse("rope-theta=10000").fault, Fault::RopeTheta(10000.0));
        assert_eq!(parse("rope-interleaved").fault, Fault::RopeInterleaved);
        assert_eq!(parse("skip-k-norm").fault, Fault::SkipKNorm);
        assert_eq!(parse("skip-q-norm").fault, Fault::SkipQNorm);
        assert_eq!(parse("attn-bias=1e30").fault, Fault::AttnBias(1e30));
        assert_eq!(
            parse("transpose=model.layers.1.mlp.down_proj").fault,
            Fault::Transpose("model.layers.1.mlp.down_proj".into())
        );
        assert_eq!(parse("act=gelu").fault, Fault::Act(Activation::Gelu));
        assert_eq!(parse("gqa-tile").fault, Fault::GqaTile);
        assert_eq!(parse("rms-eps=1e-5").fault, Fault::RmsEps(1e-5));
        assert_eq!(parse("late-rounding").fault, Fault::LateRounding);
        assert_eq!(parse("f16-accum").fault, Fault::F16Accum);
        assert_eq!(parse("bf16-accum").fault, Fault::Bf16Accum);
        assert_eq!(parse("bf16-variance@1").fault, Fault::Bf16Variance);
        assert_eq!(parse("early-cast").fault, Fault::EarlyCast);
        assert_eq!(parse("decode-pos=-2").fault, Fault::DecodePos(-2));
        assert_eq!(parse("decode-pos-frozen").fault, Fault::DecodePosFrozen);
        assert_eq!(parse("swap-gate-up").fault, Fault::SwapGateUp);
        assert_eq!(parse("swap-k-v@1").fault, Fault::SwapKV);
        assert_eq!(parse("no-causal-mask@0").fault, Fault::NoCausalMask);
        assert_eq!(parse("cache-pre-rope").fault, Fault::CachePreRope);
        assert_eq!(parse("cache-pre-norm@1").fault, Fault::CachePreNorm);
        assert_eq!(
            parse("cache-overwrite").fault,
            Fault::CacheOverwrite(CacheSlot::First)
        );
        assert_eq!(
            parse("cache-overwrite=first").fault,
            Fault::CacheOverwrite(CacheSlot::First)
        );
        assert_eq!(
            parse("cache-overwrite=last").fault,
            Fault::CacheOverwrite(CacheSlot::Last)
        );
        assert_eq!(
            parse("cache-dtype=bf16").fault,
            Fault::CacheDtype(CacheDtype::BF16)
        );
        assert_eq!(
            parse("cache-dtype=f16").fault,
            Fault::CacheDtype(CacheDtype::F16)
        );
        assert_eq!(parse("decode-mask@0-1").fault, Fault::DecodeMask);
    }

    /// A value is shown in the shorter of its plain and exponent forms (`6`, not `6e0`).
    #[test]
    fn values_are_shown_short() {
        for (spec, shown) in [
            ("rope-theta=6", "rope-theta=6"),
            ("rope-theta=6.0e0", "rope-theta=6"),
            ("rope-theta=500", "rope-theta=500"),
            ("rope-theta=10000", "rope-theta=1e4"),
            ("rms-eps=0.001", "rms-eps=1e-3"),
            ("rms-eps=0.5", "rms-eps=0.5"),
            ("attn-bias=1e30@0-1", "attn-bias=1e30@0-1"),
            ("attn-bias=-2.5", "attn-bias=-2.5"),
        ] {
            assert_eq!(parse(spec).to_string(), shown, "{spec}");
        }
    }

    #[test]
    fn a_spec_given_twice_is_said() {
        let repeated = |specs: &[&str]| {
            Faults::new(specs.iter().map(|s| s.parse().unwrap()).collect())
                .repeated()
                .map(|(a, b, same)| (a.to_string(), b.to_string(), same))
        };
        let said = |a: &str, b: &str, same| Some((a.to_string(), b.to_string(), same));
        assert_eq!(
            repeated(&["skip-k-norm@0", "rms-eps=1e-3", "skip-k-norm@0"]),
            said("skip-k-norm@0", "skip-k-norm@0", true)
        );
        assert_eq!(
            repeated(&["rope-theta=500", "rope-theta=5e2"]),
            said("rope-theta=500", "rope-theta=500", true)
        );
        // The same layers written otherwise.
        for (a, b) in [
            ("skip-k-norm@0,1", "skip-k-norm@1,0"),
            ("skip-k-norm@0-1", "skip-k-norm@0,1"),
            ("skip-k-norm@0-1,2", "skip-k-norm@0-2"),
        ] {
            assert_eq!(repeated(&[a, b]).map(|r| r.2), Some(true), "{a} {b}");
        }
        // Layers that overlap: the fault acts once on the layer both name.
        for (a, b) in [
            ("skip-k-norm@0", "skip-k-norm"),
            ("skip-k-norm@0-1", "skip-k-norm@1-2"),
            ("attn-bias=1", "attn-bias=1@0"),
            ("rms-eps=1e-3", "rms-eps=1e-3@1"),
        ] {
            assert_eq!(repeated(&[a, b]).map(|r| r.2), Some(false), "{a} {b}");
        }
        assert_eq!(repeated(&["skip-k-norm@0", "skip-k-norm@1"]), None);
        assert_eq!(repeated(&["skip-k-norm@0,2", "skip-k-norm@1"]), None);
        // Another value is a conflict, not a repeat.
        assert_eq!(repeated(&["attn-bias=1", "attn-bias=2@0"]), None);
        assert_eq!(repeated(&["skip-k-norm"]), None);
    }

    #[test]
    fn one_fault_with_two_values_on_a_layer_is_a_conflict() {
        let conflict = |specs: &[&str]| {
            Faults::new(specs.iter().map(|s| parse(s)).collect())
                .conflict()
                .map(|(a, b)| (a.to_string(), b.to_string()))
        };
        assert!(conflict(&["rope-theta=10000", "rope-theta=500"]).is_some());
        assert!(conflict(&["attn-bias=1@0", "attn-bias=2@1-2", "attn-bias=3@2"]).is_some());
        // other layers, the same value, other faults, other modules: none
        assert_eq!(conflict(&["attn-bias=1@0", "attn-bias=2@1-2"]), None);
        assert_eq!(conflict(&["rope-theta=500", "rope-theta=500"]), None);
        assert_eq!(conflict(&["rope-theta=500", "rms-eps=1e-3"]), None);
        assert_eq!(
            conflict(&[
                "transpose=model.layers.0.mlp.up_proj",
                "transpose=model.layers.0.mlp.down_proj"
            ]),
            None
        );
    }

    #[test]
    fn decode_faults_resolve_per_layer_and_positions() {
        let faults = Faults::new(vec![
            parse("cache-pre-rope@1"),
            parse("cache-overwrite=last"),
            parse("cache-dtype=f16@0"),
            parse("decode-pos=-1"),
        ]);
        let c0 = faults.layer(0).cache;
        assert!(!c0.pre_rope && !c0.pre_norm && !c0.mask_next);
        assert_eq!(c0.overwrite, Some(CacheSlot::Last));
        assert_eq!(c0.dtype, Some(CacheDtype::F16));
        let c1 = faults.cache(1);
        assert!(c1.pre_rope);
        assert_eq!(c1.dtype, None);
        assert_eq!(faults.decode_only().len(), 4);
        assert!(Faults::new(vec![parse("skip-k-norm")])
            .decode_only()
            .is_empty());
        let pos = faults.decode_positions();
        assert_eq!(pos.position(16, 1), Some(15));
        assert_eq!(pos.position(16, 3), Some(17));
        let frozen = Faults::new(vec![parse("decode-pos-frozen")]).decode_positions();
        assert_eq!(frozen.position(16, 1), Some(16));
        assert_eq!(frozen.position(16, 5), Some(16));
        let clean = Faults::none().decode_positions();
        assert_eq!(clean.position(16, 1), Some(16));
        assert_eq!(clean.position(16, 4), Some(19));
        let neg = Faults::new(vec![parse("decode-pos=-17")]).decode_positions();
        assert_eq!(neg.position(16, 1), None);
        assert_eq!(neg.position(16, 2), Some(0));
        assert!(CacheDtype::F16.is_lower_than(DType::F32));
        assert!(CacheDtype::BF16.is_lower_than(DType::F16));
        assert!(!CacheDtype::F16.is_lower_than(DType::F16));
        assert!(!CacheDtype::F16.is_lower_than(DType::BF16));
        assert!(!CacheDtype::BF16.is_lower_than(DType::BF16));
    }

    #[test]
    fn parses_layer_ranges() {
        let s = parse("skip-k-norm@0");
        assert_eq!(s.layers, Some(vec![(0, 0)]));
        assert!(s.applies_to(Some(0)) && !s.applies_to(Some(1)) && !s.applies_to(None));
        let s = parse("gqa-tile@1-2");
        assert_eq!(s.layers, Some(vec![(1, 2)]));
        assert!(!s.applies_to(Some(0)) && s.applies_to(Some(2)) && !s.applies_to(Some(3)));
        let s = parse("rms-eps=0.1@0,3-4");
        assert_eq!(s.layers, Some(vec![(0, 0), (3, 4)]));
        assert_eq!(s.max_layer(), Some(4));
        let s = parse("late-rounding");
        assert!(s.applies_to(None) && s.applies_to(Some(27)));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "embed-scale",
            "rope-theta=1e4",
            "attn-bias=1e30@0",
            "transpose=lm_head",
            "act=gelu@1-2",
            "skip-k-norm@0,2-3",
            "rms-eps=1e-2",
            "f16-accum",
            "decode-pos=-3",
            "decode-pos-frozen",
            "cache-overwrite",
            "cache-overwrite=last@2",
            "cache-dtype=bf16",
            "cache-pre-norm@0,2",
            "decode-mask",
        ] {
            let spec = parse(text);
            let again = parse(&spec.to_string());
            assert_eq!(spec, again, "{text} -> {spec}");
        }
    }

    #[test]
    fn errors_are_clear() {
        let cases = [
            ("skip-v-norm", "unknown fault \"skip-v-norm\""),
            ("rope-theta", "rope-theta needs a value"),
            ("rope-theta=abc", "\"abc\" is not a number"),
            ("rope-theta=-1", "must be positive"),
            ("embed-scale=2", "takes no value"),
            ("embed-scale@0", "takes no @LAYERS"),
            ("transpose=lm_head@0", "takes no @LAYERS"),
            ("skip-k-norm@x", "not a layer index"),
            ("skip-k-norm@-1", "layer \"-1\" is not a layer index"),
            ("skip-k-norm@3-1", "is empty"),
            ("skip-k-norm@0,0", "layer \"0\" is named twice"),
            ("skip-k-norm@0-2,1", "layer \"1\" is named twice"),
            ("skip-k-norm@2,0-3", "layer \"0-3\" is named twice"),
            ("act=swiglu", "unknown activation"),
            ("attn-bias=inf", "not finite"),
            ("", "empty fault name"),
            ("decode-pos", "decode-pos needs a value"),
            ("decode-pos=1.5", "\"1.5\" is not an integer"),
            ("decode-pos=18446744073709551615", "is out of range"),
            ("decode-pos=0", "moves no position"),
            ("attn-bias=0", "adds no bias"),
            ("attn-bias=-0.0", "adds no bias"),
            ("decode-pos=1@0", "takes no @LAYERS"),
            ("skip-k-norm@+1", "layer \"+1\" is not a layer index"),
            ("skip-k-norm@0-+1", "layer \"0-+1\" is not a layer index"),
            ("decode-pos-frozen@2", "takes no @LAYERS"),
            ("cache-overwrite=middle", "unknown slot \"middle\""),
            ("cache-dtype", "cache-dtype needs a value"),
            ("cache-dtype=f8", "unknown dtype \"f8\""),
            ("decode-mask=1", "takes no value"),
        ];
        for (input, want) in cases {
            let err = input.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            // Short: the list of every fault (~600 characters) is not repeated.
            assert!(err.len() < 160, "{input:?}: {err}");
            assert!(!err.contains("embed-scale, "), "{input:?}: {err}");
        }
    }

    /// An unknown name says which fault is close, if one is, and where the list is.
    #[test]
    fn an_unknown_fault_says_what_was_meant() {
        let err = |s: &str| s.parse::<FaultSpec>().unwrap_err().to_string();
        assert_eq!(
            err("rope-thta=1e4"),
            "\"rope-thta=1e4\": unknown fault \"rope-thta\": did you mean `rope-theta`? (`divergence run --help` lists every fault)"
        );
        assert_eq!(
            err("skip_k_norm@0"),
            "\"skip_k_norm@0\": unknown fault \"skip_k_norm\": did you mean `skip-k-norm`? (`divergence run --help` lists every fault)"
        );
        assert_eq!(
            err("cache-dtyp=bf16"),
            "\"cache-dtyp=bf16\": unknown fault \"cache-dtyp\": did you mean `cache-dtype`? (`divergence run --help` lists every fault)"
        );
        assert_eq!(
            err("bogus"),
            "\"bogus\": unknown fault \"bogus\" (`divergence run --help` lists every fault)"
        );
        // Parametrised faults: the bad value, said with what is accepted.
        assert_eq!(
            err("cache-dtype=f8"),
            "\"cache-dtype=f8\": cache-dtype: unknown dtype \"f8\" (f16, bf16)"
        );
        assert_eq!(
            err("decode-pos=x"),
            "\"decode-pos=x\": decode-pos: \"x\" is not an integer"
        );
    }

    /// [`FAULT_NAMES`] is every fault's name: each parses (with a value where it needs one)
    /// into the fault of that name.
    #[test]
    fn fault_names_have_one_name_a_variant() {
        // A match over every variant: a new one does not compile here until it is counted,
        // and then FAULT_NAMES must list its name for the count to hold (the list suggestions
        // are drawn from; a variant left out of it would never be suggested).
        let arm = |f: &Fault| match f {
            Fault::EmbedScale
            | Fault::RopeTheta(_)
            | Fault::RopeInterleaved
            | Fault::SkipKNorm
            | Fault::SkipQNorm
            | Fault::AttnBias(_)
            | Fault::Transpose(_)
            | Fault::Act(_)
            | Fault::GqaTile
            | Fault::RmsEps(_)
            | Fault::LateRounding
            | Fault::F16Accum
            | Fault::Bf16Accum
            | Fault::Bf16Variance
            | Fault::EarlyCast
            | Fault::DecodePos(_)
            | Fault::DecodePosFrozen
            | Fault::CachePreRope
            | Fault::CachePreNorm
            | Fault::CacheOverwrite(_)
            | Fault::CacheDtype(_)
            | Fault::DecodeMask
            | Fault::SwapGateUp
            | Fault::SwapKV
            | Fault::NoCausalMask => f.name(),
        };
        const VARIANTS: usize = 25;
        assert_eq!(FAULT_NAMES.len(), VARIANTS);
        let names: std::collections::BTreeSet<&str> = FAULT_NAMES.iter().copied().collect();
        assert_eq!(names.len(), VARIANTS, "a name listed twice");
        assert_eq!(arm(&Fault::DecodeMask), "decode-mask");
    }

    #[test]
    fn fault_names_are_every_fault() {
        let values = [
            ("rope-theta", "1e4"),
            ("attn-bias", "1"),
            ("transpose", "lm_head"),
            ("act", "gelu"),
            ("rms-eps", "1e-5"),
            ("decode-pos", "1"),
            ("cache-dtype", "f16"),
        ];
        for name in FAULT_NAMES {
            let text = match values.iter().find(|(n, _)| *n == name) {
                Some((_, v)) => format!("{name}={v}"),
                None => name.to_string(),
            };
            assert_eq!(parse(&text).fault.name(), name);
        }
    }

    #[test]
    fn queries_respect_layers() {
        let faults = Faults::new(vec![parse("skip-k-norm@1"), parse("rms-eps=0.5")]);
        assert!(!faults.skip_k_norm(0));
        assert!(faults.skip_k_norm(1));
        assert_eq!(faults.rms_eps(None), Some(0.5));
        assert_eq!(faults.rms_eps(Some(3)), Some(0.5));
        let faults = Faults::new(vec![parse("late-rounding@0")]);
        assert!(faults.late_rounding(Some(0)));
        assert!(!faults.late_rounding(None));
    }

    #[test]
    fn layer_faults_gather_the_queries_of_one_layer() {
        let faults = Faults::new(vec![
            parse("skip-k-norm@1"),
            parse("act=relu@1"),
            parse("rms-eps=0.5@0"),
            parse("attn-bias=2"),
        ]);
        let l1 = faults.layer(1);
        assert!(l1.skip_k_norm && !l1.skip_q_norm);
        assert_eq!(l1.act, Some(Activation::Relu));
        assert_eq!(l1.attn_bias, Some(2.0));
        assert_eq!(l1.norm, NormFaults::default());
        assert_eq!(faults.layer(0).norm.rms_eps, Some(0.5));
        assert_eq!(faults.norm(None).rms_eps, None);
        assert_eq!(Faults::none().layer(3), LayerFaults::default());
        let swaps = Faults::new(vec![parse("swap-gate-up@1"), parse("swap-k-v")]);
        assert!(!swaps.layer(0).swap_gate_up && swaps.layer(1).swap_gate_up);
        assert!(swaps.layer(0).swap_k_v && swaps.layer(1).swap_k_v);
    }
}
