//! The numerics of one forward pass, under a selectable precision [`Policy`].
//!
//! With [`Policy::Torch`] every op rounds where transformers 5.17 (`modeling_qwen3.py`,
//! PyTorch 2.11 CPU kernels) rounds, so a bf16 run can match the reference bit for bit:
//!
//! - RMSNorm: widen to f32, `sum(x²) / n` in f32, `x * (1 / sqrt(var + eps))` in f32, round to
//!   the activation dtype, *then* multiply by the weight in the activation dtype (two roundings).
//! - RoPE: cos/sin in f32 (see [`rope_tables`]), rounded to the activation dtype;
//!   `q * cos + rotate_half(q) * sin` in the activation dtype.
//! - Elementwise ops on bf16/f16 (silu, the attention scaling) are computed in f32 and rounded
//!   once, like PyTorch's `opmath` kernels; candle's own bf16 `silu` rounds after every step
//!   and its `affine` first rounds the scalar to bf16, so neither is used here.
//! - Softmax in f32, then rounded (`softmax(dtype=torch.float32).to(query.dtype)`).
//!
//! [`Policy::Fused`] does what typical fused kernels do: `candle_nn::ops::rms_norm`,
//! `candle_nn::rotary_emb::rope` and `candle_nn::ops::softmax_last_dim` in the activation dtype.

use candle_core::{DType, Device, Tensor, D};

use crate::fault::Activation;

/// Where the forward pass rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Round exactly where transformers rounds (the default).
    #[default]
    Torch,
    /// candle's fused kernels: rms_norm, rope, softmax in the activation dtype.
    Fused,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Torch => "torch",
            Policy::Fused => "fused",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "torch" => Ok(Policy::Torch),
            "fused" => Ok(Policy::Fused),
            other => Err(format!("unknown policy {other:?} (torch, fused)")),
        }
    }
}

/// How one RMSNorm is computed (policy plus the faults that hit it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormMode {
    pub policy: Policy,
    pub eps: f64,
    /// Fault `late-rounding`: multiply by the weight in f32, round once.
    pub late_rounding: bool,
    /// Fault `f16-accum`: sum the squares in a half type.
    pub half_accum: bool,
    /// Fault `bf16-variance`: square and sum in bf16, whatever the activation dtype.
    pub bf16_variance: bool,
    /// Fault `early-cast`: round `1 / sqrt(var + eps)` to the activation dtype and normalise
    /// there (`x * inv` in bf16), instead of normalising in f32.
    pub early_cast: bool,
}

impl NormMode {
    /// True when a fault changes how the norm computes (the fused kernel cannot be used).
    fn faulty(&self) -> bool {
        self.late_rounding || self.half_accum || self.bf16_variance || self.early_cast
    }
}

/// Divides by `n` (not multiply by 1/n: that differs when n is not a power of two).
fn div_scalar(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let n = Tensor::new(n as f32, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_div(&n)
}

/// RMSNorm over the last dimension, `weight` in the activation dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, mode: NormMode) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    let n = x.dim(D::Minus1)?;
    if mode.policy == Policy::Fused && !mode.faulty() {
        return candle_nn::ops::rms_norm(&x.contiguous()?, weight, mode.eps as f32);
    }
    let xf = x.to_dtype(DType::F32)?;
    let sum = if mode.half_accum || mode.bf16_variance {
        let half = if dt == DType::BF16 || mode.bf16_variance {
            DType::BF16
        } else {
            DType::F16
        };
        // Squares rounded to the half type, summed one by one in it (every add rounded):
        // written out rather than `sum_keepdim`, whose accumulator is the half type on the
        // CPU but f32 in candle's CUDA kernel, so the fault is the same bug on both devices.
        sum_last_dim_in(&x.to_dtype(half)?.sqr()?, half)?.to_dtype(DType::F32)?
    } else {
        xf.sqr()?.sum_keepdim(D::Minus1)?
    };
    let var = div_scalar(&sum, n)?;
    // torch: variance + eps (eps rounded to f32), rsqrt = 1 / sqrt in f32.
    let inv = (var + mode.eps)?.sqrt()?.recip()?;
    if mode.early_cast {
        // The guide's "bad" RMSNorm: the factor is cast back early and the normalisation runs
        // in the activation dtype (one more rounding of the factor, then x * inv rounded).
        return x.broadcast_mul(&inv.to_dtype(dt)?)?.broadcast_mul(weight);
    }
    let normed = xf.broadcast_mul(&inv)?;
    if mode.late_rounding {
        normed
            .broadcast_mul(&weight.to_dtype(DType::F32)?)?
            .to_dtype(dt)
    } else {
        normed.to_dtype(dt)?.broadcast_mul(weight)
    }
}

/// The sum over the last dimension (kept, size 1) accumulated element by element in `acc`:
/// `s = round(s + x_i)` for i = 0, 1, ... (faults `f16-accum`, `bf16-variance`).
pub fn sum_last_dim_in(x: &Tensor, acc: DType) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(acc)?;
    let n = x.dim(D::Minus1)?;
    let mut sum = Tensor::zeros(x.narrow(D::Minus1, 0, 1)?.shape(), acc, x.device())?;
    for i in 0..n {
        sum = (sum + x.narrow(D::Minus1, i, 1)?)?;
    }
    Ok(sum)
}

/// `x @ wᵀ` (+ bias) with the accumulator kept in `acc` between k-tiles of `tile` (fault
/// `bf16-accum`): each tile's dot products in f32, the running sum rounded to `acc` after every
/// tile; the result in x's dtype. `w` is `[out, in]`.
pub fn linear_half_accum(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    acc: DType,
    tile: usize,
) -> candle_core::Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    let xf = x.to_dtype(DType::F32)?;
    let wf = w.to_dtype(DType::F32)?;
    let mut sum: Option<Tensor> = None;
    for k0 in (0..k).step_by(tile.max(1)) {
        let len = tile.max(1).min(k - k0);
        let xs = xf.narrow(D::Minus1, k0, len)?.contiguous()?;
        let ws = wf.narrow(1, k0, len)?.t()?.contiguous()?;
        let part = xs.broadcast_matmul(&ws)?.to_dtype(acc)?;
        sum = Some(match sum {
            None => part,
            Some(s) => (s + part)?,
        });
    }
    let out = match sum {
        Some(s) => s.to_dtype(x.dtype())?,
        None => xf.broadcast_matmul(&wf.t()?)?.to_dtype(x.dtype())?,
    };
    match bias {
        Some(b) => out.broadcast_add(b),
        None => Ok(out),
    }
}

/// cos and sin tables `[T, head_dim]` in f32, as `Qwen3RotaryEmbedding` computes them:
/// `inv_freq = 1 / theta^(arange(0, d, 2) / d)` in f32, `freqs = inv_freq * pos` in f32,
/// `emb = cat(freqs, freqs)`, `cos(emb)`, `sin(emb)`.
///
/// The transcendental functions are evaluated in f64 and rounded to f32 (correctly rounded,
/// where PyTorch's vectorized f32 `pow`/`cos`/`sin` are within 1 ulp): a rare last-bit
/// difference in f32, invisible after rounding to bf16 in every case measured.
pub fn rope_tables(theta: f64, head_dim: usize, seq_len: usize) -> (Vec<f32>, Vec<f32>) {
    rope_tables_from(theta, head_dim, 0, seq_len)
}

/// [`rope_tables`] for positions `start..start + len` (a decode step's position): row `i` is
/// bit for bit row `start + i` of `rope_tables(theta, head_dim, start + len)`.
pub fn rope_tables_from(
    theta: f64,
    head_dim: usize,
    start: usize,
    len: usize,
) -> (Vec<f32>, Vec<f32>) {
    let inv_freq = inv_freq(theta, head_dim);
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for pos in start..start + len {
        for rep in 0..2 {
            let _ = rep;
            for &f in &inv_freq {
                let angle = f * pos as f32;
                cos.push((angle as f64).cos() as f32);
                sin.push((angle as f64).sin() as f32);
            }
        }
    }
    (cos, sin)
}

/// `1 / theta^(arange(0, d, 2) / d)` in f32, as [`rope_tables`] computes it.
fn inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let p = (theta as f32 as f64).powf(exponent as f64) as f32;
            1.0f32 / p
        })
        .collect()
}

/// Whether every RoPE angle of `theta` is finite in f32 at positions below `positions`
/// ([`rope_tables`]'s `inv_freq * pos`): a theta that rounds to 0 in f32, or one small enough
/// that `inv_freq` overflows, makes NaN tables (a bad-input hunt: `rope-theta=1e-50` wrote 155
/// non-finite probes without a word).
pub fn rope_angles_finite(theta: f64, head_dim: usize, positions: usize) -> bool {
    let last = positions.saturating_sub(1) as f32;
    inv_freq(theta, head_dim)
        .into_iter()
        .all(|f| f.is_finite() && (f * last).is_finite())
}

/// Whether RoPE tables of `a` and `b` are the same values at `positions`, once
/// rounded to the activation dtype `dtype` (the f32 tables, [`rope_tables`]' values, cast to
/// it): a fault `rope-theta` that rounds to the config's own tables changes nothing (a
/// bad-input hunt: `rope-theta=1000000.03` in f32, `=1000100` in bf16, wrote the clean run's
/// dump). The rows are compared from the last position back, where thetas differ most.
pub fn rope_tables_equal(
    a: f64,
    b: f64,
    head_dim: usize,
    positions: &[usize],
    dtype: DType,
) -> bool {
    let (fa, fb) = (inv_freq(a, head_dim), inv_freq(b, head_dim));
    if fa == fb {
        return true;
    }
    let rounded = |x: f32| -> u64 {
        match dtype {
            DType::BF16 => u64::from(half::bf16::from_f32(x).to_bits()),
            DType::F16 => u64::from(half::f16::from_f32(x).to_bits()),
            _ => u64::from(x.to_bits()),
        }
    };
    let same = |pos: usize| {
        fa.iter().zip(&fb).all(|(&x, &y)| {
            let (ax, ay) = ((x * pos as f32) as f64, (y * pos as f32) as f64);
            rounded(ax.cos() as f32) == rounded(ay.cos() as f32)
                && rounded(ax.sin() as f32) == rounded(ay.sin() as f32)
        })
    };
    positions.iter().rev().all(|&p| same(p))
}

/// RoPE tables on the device, in the activation dtype.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `[T, head_dim]` (the `cos` that `model.rotary_emb` outputs, without the batch dim).
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    pub fn new(
        theta: f64,
        head_dim: usize,
        seq_len: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Rope> {
        Rope::at(theta, head_dim, 0, seq_len, dtype, device)
    }

    /// The tables of positions `start..start + len` (a decode step: `len` 1).
    pub fn at(
        theta: f64,
        head_dim: usize,
        start: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Rope> {
        let (cos, sin) = rope_tables_from(theta, head_dim, start, len);
        let cos = Tensor::from_vec(cos, (len, head_dim), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, head_dim), device)?.to_dtype(dtype)?;
        Ok(Rope { cos, sin })
    }

    /// This one-position table repeated for `n` rows: every row rotated by the same position
    /// (fault `cache-pre-rope`, which rotates the whole cache at the current position).
    pub fn repeated(&self, n: usize) -> candle_core::Result<Rope> {
        let d = self.cos.dim(1)?;
        let row = |t: &Tensor| t.narrow(0, 0, 1)?.broadcast_as((n, d))?.contiguous();
        Ok(Rope {
            cos: row(&self.cos)?,
            sin: row(&self.sin)?,
        })
    }

    fn halves(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let d = self.cos.dim(1)?;
        Ok((
            self.cos.narrow(1, 0, d / 2)?.contiguous()?,
            self.sin.narrow(1, 0, d / 2)?.contiguous()?,
        ))
    }

    /// Applies RoPE to `x: [B, heads, T, head_dim]`.
    pub fn apply(
        &self,
        x: &Tensor,
        policy: Policy,
        interleaved: bool,
    ) -> candle_core::Result<Tensor> {
        if interleaved {
            // Fault rope-interleaved: GPT-J style rotation of pairs (x[2i], x[2i+1]).
            let (cos, sin) = self.halves()?;
            return candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin);
        }
        match policy {
            Policy::Fused => {
                let (cos, sin) = self.halves()?;
                candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
            }
            Policy::Torch => {
                let cos = self.cos.unsqueeze(0)?.unsqueeze(0)?;
                let sin = self.sin.unsqueeze(0)?.unsqueeze(0)?;
                x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?
            }
        }
    }
}

/// `cat(-x2, x1)` over the last dimension.
pub fn rotate_half(x: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Runs `f` in f32 and rounds the result once to `x`'s dtype (PyTorch's opmath).
fn in_f32(
    x: &Tensor,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    if dt == DType::F32 || dt == DType::F64 {
        return f(x);
    }
    f(&x.to_dtype(DType::F32)?)?.to_dtype(dt)
}

/// `x * s` computed as PyTorch does for a tensor times a Python float.
pub fn scale(x: &Tensor, s: f64, policy: Policy) -> candle_core::Result<Tensor> {
    match policy {
        // candle's affine rounds the scalar to the tensor dtype first.
        Policy::Fused => x.affine(s, 0.0),
        Policy::Torch => in_f32(x, |t| t.affine(s, 0.0)),
    }
}

/// The MLP activation: silu (Qwen3), or a faulty replacement.
pub fn activation(
    x: &Tensor,
    fault: Option<Activation>,
    policy: Policy,
) -> candle_core::Result<Tensor> {
    let f = |t: &Tensor| match fault {
        None => t.silu(),
        Some(Activation::Gelu) => t.gelu_erf(),
        Some(Activation::GeluTanh) => t.gelu(),
        Some(Activation::Relu) => t.relu(),
    };
    match policy {
        Policy::Fused => f(x),
        Policy::Torch => in_f32(x, f),
    }
}

/// Expands kv heads `[B, kv, T, D]` to `[B, kv * n_rep, T, D]`.
///
/// `tile = false` is transformers' `repeat_kv` (repeat-interleave: k0,k0,k1,k1);
/// `tile = true` is the `gqa-tile` fault (k0,k1,k0,k1).
pub fn repeat_kv(x: &Tensor, n_rep: usize, tile: bool) -> candle_core::Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    if tile {
        let copies = vec![x; n_rep];
        Tensor::cat(&copies, 1)
    } else {
        x.unsqueeze(2)?
            .broadcast_as((b, kv, n_rep, t, d))?
            .reshape((b, kv * n_rep, t, d))
    }
}

/// Causal mask `[T, T]`: 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}

/// The causal mask in the dtype [`attention`] adds it in: f32 for the torch policy (added
/// after widening the scores for softmax), the activation dtype for the fused policy.
pub fn attention_mask(
    t: usize,
    dtype: DType,
    policy: Policy,
    device: &Device,
) -> candle_core::Result<Tensor> {
    match policy {
        Policy::Torch => causal_mask(t, DType::F32, device),
        Policy::Fused => causal_mask(t, dtype, device),
    }
}

/// Eager attention on `q: [B, H, Tq, D]`, `k`, `v: [B, H, Tk, D]` (kv already expanded), with
/// `mask` from [`attention_mask`], or none (a decode step's one query sees every key it is
/// given). Returns `[B, H, Tq, D]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scaling: f64,
    policy: Policy,
) -> candle_core::Result<Tensor> {
    let dt = q.dtype();
    // torch's CPU matmul of f16 sums its products in f32 and rounds once. candle's does too for
    // a prefill's shapes, not for a decode step's one query (a held-out check: a clean f16
    // decode's `attn_out@s` 2-4x further from the float64 truth than transformers', the
    // prefill's exact, bf16's exact): on the CPU, f16 attention's two matmuls run in f32 and
    // round each output element once to f16, as torch's do.
    let in_f32 = policy == Policy::Torch && dt == DType::F16 && q.device().is_cpu();
    let matmul = |a: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
        if in_f32 {
            a.to_dtype(DType::F32)?
                .matmul(&b.to_dtype(DType::F32)?)?
                .to_dtype(dt)
        } else {
            a.matmul(b)
        }
    };
    let scores = matmul(&q.contiguous()?, &k.t()?.contiguous()?)?;
    let scores = scale(&scores, scaling, policy)?;
    let masked = |s: Tensor| match mask {
        Some(m) => s.broadcast_add(m),
        None => Ok(s),
    };
    let probs = match policy {
        Policy::Torch => {
            let s = masked(scores.to_dtype(DType::F32)?)?;
            candle_nn::ops::softmax_last_dim(&s)?.to_dtype(dt)?
        }
        Policy::Fused => candle_nn::ops::softmax_last_dim(&masked(scores)?)?,
    };
    matmul(&probs, &v.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_angles_are_finite_unless_theta_is_too_small_for_f32() {
        assert!(rope_angles_finite(1e6, 128, 1 << 21));
        assert!(rope_angles_finite(0.5, 128, 1 << 21));
        // rounds to 0 in f32: inv_freq is Inf
        assert!(!rope_angles_finite(1e-50, 128, 1 << 21));
        // finite inv_freq, but past f32 at the last position
        assert!(rope_angles_finite(1e-38, 16, 1));
        assert!(!rope_angles_finite(1e-38, 16, 1 << 21));
    }

    fn mode(policy: Policy) -> NormMode {
        NormMode {
            policy,
            eps: 1e-6,
            late_rounding: false,
            half_accum: false,
            bf16_variance: false,
            early_cast: false,
        }
    }

    #[test]
    fn rms_norm_hand_values_f32() {
        // x = [3, 4]: mean(x²) = 12.5, 1/sqrt(12.5 + 1e-6) = 0.28284270...
        let dev = Device::Cpu;
        let x = Tensor::new(&[[3f32, 4.0]], &dev).unwrap();
        let w = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        for policy in [Policy::Torch, Policy::Fused] {
            let y: Vec<Vec<f32>> = rms_norm(&x, &w, mode(policy)).unwrap().to_vec2().unwrap();
            let r = 1.0 / (12.5f64 + 1e-6).sqrt();
            assert!((y[0][0] as f64 - 3.0 * r).abs() < 1e-6, "{policy:?} {y:?}");
            assert!((y[0][1] as f64 - 8.0 * r).abs() < 1e-6, "{policy:?} {y:?}");
        }
    }

    #[test]
    fn rms_norm_bf16_rounds_before_the_weight() {
        // x = [1, 3], w = 1.125: x * rsqrt(mean(x²) + eps) = [0.4472, 1.3416]. transformers
        // rounds that to bf16 [0.4473, 1.3438] and then multiplies: [0.50390625, 1.515625]
        // (values checked with torch 2.11). Multiplying in f32 and rounding once (a fused
        // kernel, fault late-rounding) gives [0.50390625, 1.5078125].
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 3.0]], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let w = Tensor::new(&[1.125f32, 1.125], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let got = |m: NormMode| -> Vec<f32> {
            rms_norm(&x, &w, m)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(got(mode(Policy::Torch)), vec![0.50390625, 1.515625]);
        let late = NormMode {
            late_rounding: true,
            ..mode(Policy::Torch)
        };
        assert_eq!(got(late), vec![0.50390625, 1.5078125]);
        // early-cast: rsqrt(5 + 1e-6) = 0.44721 rounded to bf16 0.447265625, then x * inv in
        // bf16 ([0.447265625, 1.3418] -> 1.34375) and * 1.125: [0.50390625, 1.515625]; here it
        // agrees with the reference on both elements, it is a rounding-point change only.
        let early = NormMode {
            early_cast: true,
            ..mode(Policy::Torch)
        };
        assert_eq!(got(early), vec![0.50390625, 1.515625]);
    }

    #[test]
    fn bf16_variance_sums_in_bf16() {
        // 1 + 32 * 2^-9 summed in bf16 element by element: every 2^-9 is lost against 1 (half
        // an ulp of 1 is 2^-8), so the variance is 1/33 instead of (1 + 1/16)/33.
        let dev = Device::Cpu;
        let mut v = vec![1f32];
        v.extend(std::iter::repeat_n(2f32.powi(-9).sqrt(), 32));
        let x = Tensor::new(v.as_slice(), &dev)
            .unwrap()
            .reshape((1, 33))
            .unwrap();
        let w = Tensor::ones(33, DType::F32, &dev).unwrap();
        let first = |m: NormMode| -> f32 {
            rms_norm(&x, &w, m)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        let exact = first(mode(Policy::Torch));
        let bf16 = first(NormMode {
            bf16_variance: true,
            ..mode(Policy::Torch)
        });
        let want_exact = (33.0f64 / (1.0 + 32.0 * 2f64.powi(-9))).sqrt();
        assert!(
            (exact as f64 - want_exact).abs() < 1e-3,
            "{exact} vs {want_exact}"
        );
        assert!(bf16 > exact * 1.02, "bf16 variance {bf16} vs {exact}");
    }

    #[test]
    fn the_written_out_half_sum_is_candles_cpu_bf16_sum() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..300)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let x = Tensor::new(v.as_slice(), &dev)
            .unwrap()
            .reshape((3, 100))
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let ours: Vec<f32> = sum_last_dim_in(&x, DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let candle: Vec<f32> = x
            .sum_keepdim(D::Minus1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours, candle);
    }

    #[test]
    fn half_accumulation_loses_what_a_tile_cannot_hold() {
        // x = [1, 2^-9 x 16], w = ones: the exact dot product is 1 + 16 * 2^-9 = 1.03125.
        // In one tile of 16+ (f32) it survives; accumulated in bf16 one product at a time
        // every 2^-9 is lost against 1 (half an ulp of 1 in bf16 is 2^-8).
        let dev = Device::Cpu;
        let mut v = vec![1f32];
        v.extend(std::iter::repeat_n(2f32.powi(-9), 16));
        let x = Tensor::new(v.as_slice(), &dev)
            .unwrap()
            .reshape((1, 17))
            .unwrap();
        let w = Tensor::ones((1, 17), DType::F32, &dev).unwrap();
        let dot = |tile: usize| -> f32 {
            linear_half_accum(&x, &w, None, DType::BF16, tile)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        assert_eq!(dot(1), 1.0);
        assert_eq!(dot(17), 1.03125);
        // tile 16: [1, 15 x 2^-9] = 1.029296875 -> bf16 1.03125 (ulp 2^-7), + 2^-9 -> 1.03125
        assert_eq!(dot(16), 1.03125);
        // a bias is added after the accumulation
        let b = Tensor::new(&[0.5f32], &dev).unwrap();
        let y: Vec<f32> = linear_half_accum(&x, &w, Some(&b), DType::BF16, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![1.5]);
    }

    #[test]
    fn rope_tables_hand_values() {
        // head_dim 4, theta 10000: inv_freq = [1, 1/100]; position 1: angles [1, 0.01, 1, 0.01].
        let (cos, sin) = rope_tables(10_000.0, 4, 2);
        assert_eq!(&cos[..4], &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&sin[..4], &[0.0, 0.0, 0.0, 0.0]);
        let want_cos = [1f64.cos(), 0.01f64.cos(), 1f64.cos(), 0.01f64.cos()];
        let want_sin = [1f64.sin(), 0.01f64.sin(), 1f64.sin(), 0.01f64.sin()];
        for i in 0..4 {
            assert!((cos[4 + i] as f64 - want_cos[i]).abs() < 1e-7, "{cos:?}");
            assert!((sin[4 + i] as f64 - want_sin[i]).abs() < 1e-7, "{sin:?}");
        }
    }

    #[test]
    fn rope_tables_from_a_position_are_rows_of_the_full_table() {
        let (cos, sin) = rope_tables(1e6, 32, 20);
        let (c, s) = rope_tables_from(1e6, 32, 17, 2);
        assert_eq!(&cos[17 * 32..19 * 32], c.as_slice());
        assert_eq!(&sin[17 * 32..19 * 32], s.as_slice());
    }

    #[test]
    fn rope_rotate_half_hand_values_and_fused_agree() {
        // One head, head_dim 4, position 1, theta 10000: pairs (x0, x2) and (x1, x3) rotate.
        let dev = Device::Cpu;
        let rope = Rope::new(10_000.0, 4, 2, DType::F32, &dev).unwrap();
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0], &dev)
            .unwrap()
            .reshape((1, 1, 2, 4))
            .unwrap();
        let torch: Vec<f32> = rope
            .apply(&x, Policy::Torch, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // position 0 is the identity
        assert_eq!(&torch[..4], &[1.0, 2.0, 3.0, 4.0]);
        let (c0, s0, c1, s1) = (1f64.cos(), 1f64.sin(), 0.01f64.cos(), 0.01f64.sin());
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        for i in 0..4 {
            assert!((torch[4 + i] as f64 - want[i]).abs() < 1e-6, "{torch:?}");
        }
        let fused: Vec<f32> = rope
            .apply(&x, Policy::Fused, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in torch.iter().zip(&fused) {
            assert!((a - b).abs() < 1e-6, "{torch:?} {fused:?}");
        }
        // Interleaved pairs (x0, x1), (x2, x3): a different result at position 1.
        let inter: Vec<f32> = rope
            .apply(&x, Policy::Torch, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want_i = [1.0 * c0 - 2.0 * s0, 1.0 * s0 + 2.0 * c0];
        assert!((inter[4] as f64 - want_i[0]).abs() < 1e-6, "{inter:?}");
        assert!((inter[5] as f64 - want_i[1]).abs() < 1e-6, "{inter:?}");
    }

    #[test]
    fn repeat_kv_interleaves_and_tile_tiles() {
        let dev = Device::Cpu;
        // two kv heads, values 0 and 1
        let x = Tensor::new(&[0f32, 1.0], &dev)
            .unwrap()
            .reshape((1, 2, 1, 1))
            .unwrap();
        let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(
            flat(repeat_kv(&x, 2, false).unwrap()),
            vec![0.0, 0.0, 1.0, 1.0]
        );
        assert_eq!(
            flat(repeat_kv(&x, 2, true).unwrap()),
            vec![0.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn attention_is_causal() {
        let dev = Device::Cpu;
        // T = 2, D = 1: first position can only see itself.
        let q = Tensor::new(&[1f32, 1.0], &dev)
            .unwrap()
            .reshape((1, 1, 2, 1))
            .unwrap();
        let k = q.clone();
        let v = Tensor::new(&[10f32, 20.0], &dev)
            .unwrap()
            .reshape((1, 1, 2, 1))
            .unwrap();
        let mask = attention_mask(2, DType::F32, Policy::Torch, &dev).unwrap();
        let out: Vec<f32> = attention(&q, &k, &v, Some(&mask), 1.0, Policy::Torch)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(out[0], 10.0);
        assert!((out[1] - 15.0).abs() < 1e-5, "{out:?}");
    }
}
