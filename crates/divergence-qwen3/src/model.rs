//! The Qwen3 forward pass, one struct per PyTorch module, with a probe after every named op.
//!
//! Mirrors `transformers/models/qwen3/modeling_qwen3.py` of transformers **5.17.0**
//! (`Qwen3ForCausalLM` with `attn_implementation="eager"`): one prefill ([`Qwen3::forward`]),
//! or a prefill that fills a [`KvCache`] ([`Qwen3::prefill`]) followed by teacher-forced decode
//! steps of one token each ([`Qwen3::decode_step`], transformers' `DynamicCache` path).
//!
//! Deliberate deviations from that file:
//! - no padding/attention mask input, batch size 1: one prefill over `input_ids`, positions
//!   `0..T`, then decode step `s` at position `T + s - 1`;
//! - the KV cache is preallocated (per layer `[1, kv_heads, T + N + 1, head_dim]` zeros, the
//!   last slot a spare that only fault `decode-mask` reads) and written in place, where
//!   `DynamicCache` concatenates; the prefill attends over its own fresh k/v (as without a
//!   cache, so its probes are bit-identical to [`Qwen3::forward`]'s), a decode step over the
//!   cache's written slots `0..=T + s - 1` (the RoPE position may differ under the
//!   `decode-pos` faults; the slot does not), with no mask (one query sees every key);
//! - only full attention (configs with sliding-window layers are rejected) and the "default"
//!   RoPE type;
//! - the causal mask is added as `-inf` in f32 after the scores are widened for softmax
//!   (transformers adds `finfo(dtype).min` in the activation dtype first; the softmax result is
//!   the same, since both underflow `exp` to 0);
//! - with `tie_word_embeddings` *or* no `lm_head.weight` in the checkpoint, `lm_head` uses
//!   `model.embed_tokens.weight` (transformers would initialize a missing untied head randomly;
//!   `run` says so in a note, [`crate::RunSummary::notes`]);
//! - the rounding points follow the chosen [`Policy`]; `Policy::Torch` reproduces transformers',
//!   `Policy::Fused` does not, on purpose;
//! - faults ([`crate::fault`]) are applied only when asked for.
//!
//! Probe names are the `VarBuilder::prefix()` of each module, which spells the PyTorch module
//! path, so they equal transformers' `named_modules()` names with no mapping table. A decode
//! step records the same probes with the step suffix `@s` ([`crate::probe::step_name`]) plus,
//! per layer right after `rope_k`, `self_attn.cache_k` and `self_attn.cache_v`: the cache's
//! slot of the new token read back from the buffer, `[1, kv_heads, 1, head_dim]`.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::error::{CandleContext, Error};
use crate::fault::{Activation, CacheSlot, DecodePositions, Faults, LayerFaults, NormFaults};
use crate::ops::{self, NormMode, Policy, Rope};
use crate::probe::Probes;

/// How to build the model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub dtype: DType,
    pub policy: Policy,
    pub faults: Faults,
}

/// What every module's weights are loaded with, shared by all the [`Vb`]s of one load.
struct LoadCtx<'a> {
    ckpt: &'a Checkpoint,
    faults: &'a Faults,
    policy: Policy,
    /// Every module a `transpose=` fault may name (checked after the load).
    transposable: RefCell<Vec<String>>,
}

/// A `VarBuilder` that checks each weight against the checkpoint headers before loading it
/// (so a missing or misshapen tensor is an error naming it and its file) and applies the
/// `transpose` fault: what each module's `new(cfg, vb, faults)` gets, as in candle's models.
#[derive(Clone)]
struct Vb<'a> {
    inner: VarBuilder<'a>,
    ctx: &'a LoadCtx<'a>,
}

impl<'a> Vb<'a> {
    fn pp(&self, name: impl ToString) -> Vb<'a> {
        Vb {
            inner: self.inner.pp(name),
            ctx: self.ctx,
        }
    }

    /// The module path, which is also the probe name.
    fn prefix(&self) -> String {
        self.inner.prefix()
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
        let full = format!("{}.{name}", self.prefix());
        let file = self.ctx.ckpt.check(&full, shape)?;
        #[cfg(test)]
        tests::LOADED.with(|l| l.borrow_mut().push(full.clone()));
        self.inner
            .get(shape, name)
            .ctx(|| format!("{}: loading {full}", file.display()))
    }

    /// A weight matrix `[out, in]`, with the `transpose` fault applied if it names this module.
    fn matrix(&self, out: usize, inp: usize) -> Result<Tensor, Error> {
        let prefix = self.prefix();
        let w = self.get("weight", &[out, inp])?;
        let w = if self.ctx.faults.transpose(&prefix) {
            // Same buffer read as [in, out], transposed back: W^T when square.
            w.reshape((inp, out))
                .and_then(|t| t.t())
                .and_then(|t| t.contiguous())
                .ctx(|| format!("transpose fault on {prefix}"))?
        } else {
            w
        };
        self.ctx.transposable.borrow_mut().push(prefix);
        Ok(w)
    }

    /// `nn.Linear(inp, out, bias)` at this module.
    fn linear(&self, inp: usize, out: usize, bias: bool) -> Result<Linear, Error> {
        let weight = self.matrix(out, inp)?;
        let bias = if bias {
            Some(self.get("bias", &[out])?)
        } else {
            None
        };
        Ok(Linear {
            inner: candle_nn::Linear::new(weight, bias),
            name: self.prefix(),
            half_accum: false,
        })
    }

    /// `Qwen3RMSNorm(size)` at this module.
    fn rms_norm(&self, size: usize, cfg: &Config, faults: &NormFaults) -> Result<RmsNorm, Error> {
        let weight = self.get("weight", &[size])?;
        let mode = NormMode {
            policy: self.ctx.policy,
            eps: faults.rms_eps.unwrap_or(cfg.rms_norm_eps),
            late_rounding: faults.late_rounding,
            half_accum: faults.f16_accum,
            bf16_variance: faults.bf16_variance,
            early_cast: faults.early_cast,
        };
        Ok(RmsNorm {
            weight,
            mode,
            name: self.prefix(),
        })
    }
}

/// Every tensor [`Qwen3::load`] reads, with its shape, in the order it reads them: checked
/// against the headers before any weight is loaded, so that a checkpoint missing a tensor (or
/// holding one of the wrong shape) fails at once, naming it. (Found by a bad-input hunt: a
/// 512 MiB checkpoint holding only `embed_tokens` loaded it, 2.1 GB, before failing on the
/// first layer's `q_proj`.) A unit test checks the list against the names the load reads.
fn required_tensors(cfg: &Config, ckpt: &Checkpoint) -> Vec<(String, Vec<usize>)> {
    let (h, vocab, inter) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let (hd, nh, nkv) = (cfg.head_dim(), cfg.num_attention_heads, cfg.num_kv_heads());
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut linear = |name: &str, inp: usize, o: usize, bias: bool| {
            out.push((format!("{p}.{name}.weight"), vec![o, inp]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        };
        let bias = cfg.attention_bias;
        linear("self_attn.q_proj", h, nh * hd, bias);
        linear("self_attn.k_proj", h, nkv * hd, bias);
        linear("self_attn.v_proj", h, nkv * hd, bias);
        linear("self_attn.o_proj", nh * hd, h, bias);
        out.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
        out.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
        let mut linear = |name: &str, inp: usize, o: usize| {
            out.push((format!("{p}.mlp.{name}.weight"), vec![o, inp]));
        };
        linear("gate_proj", h, inter);
        linear("up_proj", h, inter);
        linear("down_proj", inter, h);
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings && ckpt.contains("lm_head.weight") {
        out.push(("lm_head.weight".to_string(), vec![vocab, h]));
    }
    out
}

/// `nn.Linear` (weight `[out, in]`).
#[derive(Debug, Clone)]
struct Linear {
    inner: candle_nn::Linear,
    name: String,
    /// Fault `bf16-accum`: the accumulator kept in a half type between k-tiles.
    half_accum: bool,
}

impl Linear {
    /// This Linear with fault `bf16-accum` set or not.
    fn accumulating_in_half(mut self, on: bool) -> Linear {
        self.half_accum = on;
        self
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        if self.half_accum {
            let acc = if x.dtype() == DType::F16 {
                DType::F16
            } else {
                DType::BF16
            };
            return ops::linear_half_accum(
                x,
                self.inner.weight(),
                self.inner.bias(),
                acc,
                crate::fault::ACCUM_TILE,
            )
            .ctx(|| format!("{}: bf16-accum fault", self.name));
        }
        self.inner.forward(x).ctx(|| self.name.clone())
    }
}

/// `Qwen3RMSNorm`.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    mode: NormMode,
    name: String,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        ops::rms_norm(x, &self.weight, self.mode).ctx(|| self.name.clone())
    }
}

/// `Qwen3Attention` (eager).
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scaling: f64,
    policy: Policy,
    faults: LayerFaults,
    // probe names
    name: String,
    rope_q: String,
    rope_k: String,
    attn_out: String,
    cache_k: String,
    cache_v: String,
}

/// One decoder layer's KV cache: `[1, kv_heads, slots, head_dim]` buffers of k (after k_norm
/// and RoPE) and v, zeros until written, in the activation dtype (or fault `cache-dtype`'s).
/// Not `Clone`: writes go into the buffers in place, so a clone would share them.
#[derive(Debug)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

impl LayerCache {
    /// Writes `k`, `v` (`[1, kv_heads, t, head_dim]`) into slots `slot..slot + t`, rounded to
    /// the cache's dtype.
    fn write(&self, slot: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let k = k.to_dtype(self.k.dtype())?.contiguous()?;
        let v = v.to_dtype(self.v.dtype())?.contiguous()?;
        self.k.slice_set(&k, 2, slot)?;
        self.v.slice_set(&v, 2, slot)
    }

    /// Slots `start..start + n` of k and v, in `dtype`. (Views of the buffers when the dtypes
    /// agree: every use is computed before the next write, on the CPU as in a CUDA stream.)
    fn read(&self, start: usize, n: usize, dtype: DType) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, start, n)?.to_dtype(dtype)?,
            self.v.narrow(2, start, n)?.to_dtype(dtype)?,
        ))
    }
}

/// The KV cache of one decode ([`Qwen3::new_cache`]): one `LayerCache` per decoder layer,
/// the number of tokens written and the prompt length. Not `Clone` (the buffers are written in
/// place): make another with [`Qwen3::new_cache`].
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    /// Tokens the cache holds room for (the buffers have one spare slot more).
    max_tokens: usize,
    /// Tokens written so far (the next token's slot).
    len: usize,
    /// Tokens of the prefill (0 before it).
    prompt_len: usize,
}

impl KvCache {
    /// Tokens written so far: the slot (and, fault-free, the position) of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the cache holds room for.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens of the prefill (0 before it).
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }
}

/// What one layer's attention attends over.
enum Attend<'c> {
    /// A prefill: its own k/v under the causal mask; with a cache, they are also written to
    /// slots `0..T`.
    Prefill {
        mask: &'c Tensor,
        cache: Option<&'c LayerCache>,
    },
    /// A decode step of one token at cache slot `slot`: k/v written there, attention over the
    /// cache's slots `0..=slot`.
    Decode { cache: &'c LayerCache, slot: usize },
}

impl Attention {
    fn new(cfg: &Config, vb: Vb, faults: &LayerFaults) -> Result<Attention, Error> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        let bias = cfg.attention_bias;
        // (In the checkpoint's order, q, k, v, o: `required_tensors` lists them so.)
        let q_proj = vb
            .pp("q_proj")
            .linear(h, nh * hd, bias)?
            .accumulating_in_half(faults.bf16_accum);
        let mut k_proj = vb
            .pp("k_proj")
            .linear(h, nkv * hd, bias)?
            .accumulating_in_half(faults.bf16_accum);
        let mut v_proj = vb
            .pp("v_proj")
            .linear(h, nkv * hd, bias)?
            .accumulating_in_half(faults.bf16_accum);
        if faults.swap_k_v {
            // `swap-k-v`: each loads the other's weight (and bias); the probes keep their names.
            std::mem::swap(&mut k_proj.inner, &mut v_proj.inner);
        }
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj: vb
                .pp("o_proj")
                .linear(nh * hd, h, bias)?
                .accumulating_in_half(faults.bf16_accum),
            q_norm: vb.pp("q_norm").rms_norm(hd, cfg, &faults.norm)?,
            k_norm: vb.pp("k_norm").rms_norm(hd, cfg, &faults.norm)?,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            scaling: (hd as f64).powf(-0.5),
            policy: vb.ctx.policy,
            faults: *faults,
            name: vb.prefix(),
            rope_q: vb.pp("rope_q").prefix(),
            rope_k: vb.pp("rope_k").prefix(),
            attn_out: vb.pp("attn_out").prefix(),
            cache_k: vb.pp("cache_k").prefix(),
            cache_v: vb.pp("cache_v").prefix(),
        })
    }

    /// The k a cache write stores: `rope_k` (the correct port), or, with faults
    /// `cache-pre-norm` / `cache-pre-rope`, the per-head `k_proj` output instead of k_norm's
    /// and/or the key before RoPE. `k_raw`, `k_normed`: `[B, kv_heads, T, head_dim]`.
    fn key_to_store(
        &self,
        k_raw: &Tensor,
        k_normed: &Tensor,
        k_rotated: &Tensor,
        rope: &Rope,
    ) -> Result<Tensor, Error> {
        let cache = self.faults.cache;
        let ctx = || format!("{}: cache write", self.name);
        Ok(match (cache.pre_norm, cache.pre_rope) {
            (false, false) => k_rotated.clone(),
            (false, true) => k_normed.clone(),
            (true, false) => rope
                .apply(k_raw, self.policy, self.faults.rope_interleaved)
                .ctx(ctx)?,
            (true, true) => k_raw.clone(),
        })
    }

    fn project(&self, lin: &Linear, x: &Tensor) -> Result<Tensor, Error> {
        let y = lin.forward(x)?;
        match self.faults.attn_bias {
            // Fault attn-bias: a bias of magnitude V that Qwen3 does not have.
            Some(v) => (y + v).ctx(|| format!("{}: attn-bias fault", lin.name)),
            None => Ok(y),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        attend: Attend,
        probes: &mut Probes,
    ) -> Result<Tensor, Error> {
        let (b, t, _) = x.dims3().ctx(|| self.name.clone())?;
        let ctx = || self.name.clone();
        let hd = self.head_dim;

        let q = self.project(&self.q_proj, x)?;
        let q = probes.pass(&self.q_proj.name, q)?;
        let q = q.reshape((b, t, self.n_heads, hd)).ctx(ctx)?;
        let q = if self.faults.skip_q_norm {
            q
        } else {
            self.q_norm.forward(&q)?
        };
        let q = probes.pass(&self.q_norm.name, q)?;

        let k = self.project(&self.k_proj, x)?;
        let k = probes.pass(&self.k_proj.name, k)?;
        let k = k.reshape((b, t, self.n_kv_heads, hd)).ctx(ctx)?;
        // Fault cache-pre-norm stores this (per head, before k_norm).
        let k_raw = k.clone();
        let k = if self.faults.skip_k_norm {
            k
        } else {
            self.k_norm.forward(&k)?
        };
        let k = probes.pass(&self.k_norm.name, k)?;

        let v = self.project(&self.v_proj, x)?;
        let v = probes.pass(&self.v_proj.name, v)?;

        let q = q.transpose(1, 2).ctx(ctx)?;
        let k = k.transpose(1, 2).ctx(ctx)?;
        let k_normed = k.clone();
        let v = v
            .reshape((b, t, self.n_kv_heads, hd))
            .and_then(|v| v.transpose(1, 2))
            .ctx(ctx)?;

        let q = rope
            .apply(&q, self.policy, self.faults.rope_interleaved)
            .ctx(|| self.rope_q.clone())?;
        let q = probes.pass(&self.rope_q, q)?;
        let k = rope
            .apply(&k, self.policy, self.faults.rope_interleaved)
            .ctx(|| self.rope_k.clone())?;
        let k = probes.pass(&self.rope_k, k)?;

        // Fault no-causal-mask: the prefill's queries see every key, the later ones too.
        let prefill_mask = |mask| (!self.faults.no_causal_mask).then_some(mask);
        let (k, v, mask) = match attend {
            Attend::Prefill { mask, cache: None } => (k, v, prefill_mask(mask)),
            Attend::Prefill {
                mask,
                cache: Some(cache),
            } => {
                let k_raw = if self.faults.cache.pre_norm {
                    k_raw.transpose(1, 2).ctx(ctx)?
                } else {
                    k_raw
                };
                let stored = self.key_to_store(&k_raw, &k_normed, &k, rope)?;
                cache
                    .write(0, &stored, &v)
                    .ctx(|| format!("{}: cache write", self.name))?;
                (k, v, prefill_mask(mask))
            }
            Attend::Decode { cache, slot } => {
                let k_raw = if self.faults.cache.pre_norm {
                    k_raw.transpose(1, 2).ctx(ctx)?
                } else {
                    k_raw
                };
                let stored = self.key_to_store(&k_raw, &k_normed, &k, rope)?;
                // Fault cache-overwrite: the new token's k/v land in another slot.
                let at = match self.faults.cache.overwrite {
                    None => slot,
                    Some(CacheSlot::First) => 0,
                    Some(CacheSlot::Last) => slot.saturating_sub(1),
                };
                let dt = x.dtype();
                let read_ctx = || format!("{}: cache read", self.name);
                cache
                    .write(at, &stored, &v)
                    .ctx(|| format!("{}: cache write", self.name))?;
                if probes.enabled() {
                    let (ck, cv) = cache.read(slot, 1, dt).ctx(read_ctx)?;
                    probes.record(&self.cache_k, &ck)?;
                    probes.record(&self.cache_v, &cv)?;
                }
                // Fault decode-mask: one slot too many, the next one (not yet written: zeros).
                let n = slot + 1 + usize::from(self.faults.cache.mask_next);
                let (k_all, v_all) = cache.read(0, n, dt).ctx(read_ctx)?;
                let k_all = if self.faults.cache.pre_rope {
                    // RoPE moved to read time, with one position for the whole cache.
                    rope.repeated(n)
                        .and_then(|r| r.apply(&k_all, self.policy, self.faults.rope_interleaved))
                        .ctx(read_ctx)?
                } else {
                    k_all
                };
                (k_all, v_all, None)
            }
        };

        let n_rep = self.n_heads / self.n_kv_heads;
        let k = ops::repeat_kv(&k, n_rep, self.faults.gqa_tile).ctx(ctx)?;
        let v = ops::repeat_kv(&v, n_rep, self.faults.gqa_tile).ctx(ctx)?;
        let out = ops::attention(&q, &k, &v, mask, self.scaling, self.policy)
            .and_then(|o| o.transpose(1, 2))
            .and_then(|o| o.reshape((b, t, self.n_heads * hd)))
            .ctx(|| self.attn_out.clone())?;
        let out = probes.pass(&self.attn_out, out)?;

        let out = self.o_proj.forward(&out)?;
        let out = probes.pass(&self.o_proj.name, out)?;
        let out = probes.pass(&self.name, out)?;
        Ok(out)
    }
}

/// `Qwen3MLP`: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Option<Activation>,
    policy: Policy,
    name: String,
    act_name: String,
}

impl Mlp {
    fn new(cfg: &Config, vb: Vb, faults: &LayerFaults) -> Result<Mlp, Error> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut gate_proj = vb
            .pp("gate_proj")
            .linear(h, i, false)?
            .accumulating_in_half(faults.bf16_accum);
        let mut up_proj = vb
            .pp("up_proj")
            .linear(h, i, false)?
            .accumulating_in_half(faults.bf16_accum);
        if faults.swap_gate_up {
            // `swap-gate-up`: each loads the other's weight; the probes keep their names.
            std::mem::swap(&mut gate_proj.inner, &mut up_proj.inner);
        }
        Ok(Mlp {
            gate_proj,
            up_proj,
            down_proj: vb
                .pp("down_proj")
                .linear(i, h, false)?
                .accumulating_in_half(faults.bf16_accum),
            act: faults.act.or(match cfg.hidden_act.as_str() {
                "gelu" => Some(Activation::Gelu),
                _ => None,
            }),
            policy: vb.ctx.policy,
            name: vb.prefix(),
            act_name: vb.pp("act_fn").prefix(),
        })
    }

    fn forward(&self, x: &Tensor, probes: &mut Probes) -> Result<Tensor, Error> {
        let gate = self.gate_proj.forward(x)?;
        let gate = probes.pass(&self.gate_proj.name, gate)?;
        let act = ops::activation(&gate, self.act, self.policy).ctx(|| self.act_name.clone())?;
        let act = probes.pass(&self.act_name, act)?;
        let up = self.up_proj.forward(x)?;
        let up = probes.pass(&self.up_proj.name, up)?;
        let h = (act * up).ctx(|| self.name.clone())?;
        let out = self.down_proj.forward(&h)?;
        let out = probes.pass(&self.down_proj.name, out)?;
        let out = probes.pass(&self.name, out)?;
        Ok(out)
    }
}

/// `Qwen3DecoderLayer`.
#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
    name: String,
    attn_residual: String,
}

impl DecoderLayer {
    fn new(cfg: &Config, vb: Vb, faults: &LayerFaults) -> Result<DecoderLayer, Error> {
        let h = cfg.hidden_size;
        // Load order (attention, MLP, norms) decides which error a broken checkpoint reports
        // first; kept as it was.
        let self_attn = Attention::new(cfg, vb.pp("self_attn"), faults)?;
        let mlp = Mlp::new(cfg, vb.pp("mlp"), faults)?;
        Ok(DecoderLayer {
            input_layernorm: vb.pp("input_layernorm").rms_norm(h, cfg, &faults.norm)?,
            self_attn,
            post_attention_layernorm: vb.pp("post_attention_layernorm").rms_norm(
                h,
                cfg,
                &faults.norm,
            )?,
            mlp,
            name: vb.prefix(),
            attn_residual: vb.pp("attn_residual").prefix(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        attend: Attend,
        probes: &mut Probes,
    ) -> Result<Tensor, Error> {
        let h = self.input_layernorm.forward(x)?;
        let h = probes.pass(&self.input_layernorm.name, h)?;
        let attn = self.self_attn.forward(&h, rope, attend, probes)?;
        let x = (x + attn).ctx(|| self.attn_residual.clone())?;
        let x = probes.pass(&self.attn_residual, x)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let h = probes.pass(&self.post_attention_layernorm.name, h)?;
        let m = self.mlp.forward(&h, probes)?;
        let out = (x + m).ctx(|| self.name.clone())?;
        let out = probes.pass(&self.name, out)?;
        Ok(out)
    }
}

/// `lm_head`: its own weight, or `model.embed_tokens`' when tied or when the checkpoint has
/// none (see the module docs).
fn lm_head(cfg: &Config, vb: Vb, vb_e: &Vb, embed: &Tensor) -> Result<Linear, Error> {
    let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
    let ctx = vb.ctx;
    if !cfg.tie_word_embeddings && ctx.ckpt.contains("lm_head.weight") {
        return vb.linear(h, vocab, false);
    }
    // Tied: the head reads embed_tokens' weight (a transpose fault on lm_head still applies to
    // the head's copy only).
    let w = if ctx.faults.transpose("model.embed_tokens") {
        vb_e.get("weight", &[vocab, h])?
    } else {
        embed.clone()
    };
    let w = if ctx.faults.transpose("lm_head") {
        w.reshape((h, vocab))
            .and_then(|t| t.t())
            .and_then(|t| t.contiguous())
            .ctx(|| "transpose fault on lm_head".to_string())?
    } else {
        w
    };
    ctx.transposable.borrow_mut().push("lm_head".to_string());
    Ok(Linear {
        inner: candle_nn::Linear::new(w, None),
        name: vb.prefix(),
        half_accum: false,
    })
}

/// What one pass of the model runs over.
enum Pass<'c> {
    /// The prompt, positions `0..T`, optionally filling a cache.
    Prefill(Option<&'c KvCache>),
    /// One token at cache slot `slot`, rotated at `position`.
    Decode {
        cache: &'c KvCache,
        slot: usize,
        position: usize,
    },
}

/// [`Pass`] with the prefill's causal mask made: what every layer attends over.
enum Over<'c> {
    Prefill {
        mask: Tensor,
        cache: Option<&'c KvCache>,
    },
    Decode {
        cache: &'c KvCache,
        slot: usize,
    },
}

/// `Qwen3ForCausalLM`.
#[derive(Debug, Clone)]
pub struct Qwen3 {
    cfg: Config,
    dtype: DType,
    policy: Policy,
    device: Device,
    embed: Tensor,
    embed_scale: bool,
    rope_theta: f64,
    decode_positions: DecodePositions,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    embed_name: String,
    rotary_name: String,
    model_name: String,
}

/// The positions a `rope-theta` fault's angles are checked over ([`Qwen3::load`]): the most
/// token positions a run takes (`MAX_PROMPT_IDS` of a prompt, and its decode steps).
const ROPE_POSITIONS: usize = 1 << 21;

impl Qwen3 {
    /// Loads the weights of `ckpt` onto `device` in `opts.dtype` (mmap'd, through `VarBuilder`).
    pub fn load(ckpt: &Checkpoint, device: &Device, opts: &ModelOptions) -> Result<Qwen3, Error> {
        let cfg = &ckpt.config;
        let faults = &opts.faults;
        for spec in faults.specs() {
            // A fault that moves a bf16/f16 rounding does nothing to f32/f64 activations: a
            // run that injects it is refused, as a cache dtype not lower than the activations'
            // is (a newcomer's run: `--inject late-rounding` in the default f32 wrote a dump
            // bit-identical to the clean run, and its diff said no divergence).
            if matches!(
                spec.fault,
                crate::fault::Fault::LateRounding | crate::fault::Fault::EarlyCast
            ) && matches!(opts.dtype, DType::F32 | DType::F64)
            {
                return Err(Error::FaultTarget {
                    spec: spec.to_string(),
                    message: format!(
                        "it moves a bf16/f16 rounding and does nothing to {} activations (use it with --dtype bf16 or f16)",
                        opts.dtype.as_str()
                    ),
                });
            }
            // A bias past the activations' largest value is added as Inf (a bad-input hunt:
            // `attn-bias=1e39` in f32 wrote Inf at every q/k/v projection without a word).
            if let crate::fault::Fault::AttnBias(v) = spec.fault {
                let largest = match opts.dtype {
                    DType::F16 => f64::from(half::f16::MAX),
                    DType::BF16 => f64::from(half::bf16::MAX),
                    DType::F64 => f64::MAX,
                    _ => f64::from(f32::MAX),
                };
                // And one that rounds to 0 there adds nothing (a bad-input hunt: `1e-310` in
                // f32 wrote the clean run's dump bit for bit, as `attn-bias=0` would).
                let zero = match opts.dtype {
                    DType::F16 => half::f16::from_f64(v) == half::f16::ZERO,
                    DType::BF16 => half::bf16::from_f64(v) == half::bf16::ZERO,
                    DType::F64 => false,
                    _ => v as f32 == 0.0,
                };
                if zero {
                    return Err(Error::FaultTarget {
                        spec: spec.to_string(),
                        message: format!(
                            "{v:e} rounds to 0 in {}: the fault would add no bias (give a larger magnitude)",
                            opts.dtype.as_str()
                        ),
                    });
                }
                if v.abs() > largest {
                    return Err(Error::FaultTarget {
                        spec: spec.to_string(),
                        message: format!(
                            "|{v:e}| is past the largest {} value ({largest:.4e}): the bias would be Inf (give a smaller magnitude)",
                            opts.dtype.as_str()
                        ),
                    });
                }
            }
            // A theta whose angles are not finite in f32 makes NaN tables, and an epsilon past
            // f32 or rounding to 0 there is another fault than the one recorded (a bad-input
            // hunt: `rope-theta=1e-50`, `rms-eps=1e39` wrote NaN or all-zero probes, and
            // `rms-eps=1e-50` acted as 0).
            match spec.fault {
                crate::fault::Fault::RopeTheta(v)
                    if !crate::ops::rope_angles_finite(v, cfg.head_dim(), ROPE_POSITIONS) =>
                {
                    return Err(Error::FaultTarget {
                        spec: spec.to_string(),
                        message: format!(
                            "{v:e} makes RoPE's angles Inf or NaN in float32 (computed there, as transformers does): give a larger theta"
                        ),
                    });
                }
                crate::fault::Fault::RmsEps(v) => {
                    let said = match v as f32 {
                        e if e.is_infinite() => Some(format!(
                            "{v:e} is past the largest float32 value, where the norm adds it: every output would be 0 (give a smaller epsilon)"
                        )),
                        e if e == 0.0 && v > 0.0 => Some(format!(
                            "{v:e} rounds to 0 in float32, where the norm adds it (rms-eps=0 is the norm without an epsilon)"
                        )),
                        _ => None,
                    };
                    if let Some(message) = said {
                        return Err(Error::FaultTarget {
                            spec: spec.to_string(),
                            message,
                        });
                    }
                }
                _ => {}
            }
            // A value the checkpoint's config already has changes nothing (a bad-input hunt:
            // `rope-theta=1000000` on a Qwen3 wrote the clean run's dump, bit for bit).
            let own = match spec.fault {
                crate::fault::Fault::RopeTheta(v) if v == cfg.rope_theta() => {
                    Some(("rope_theta", v))
                }
                // The epsilon is added in float32 (the variance is float32 for every
                // activation dtype, `ops::rms_norm`): a value that rounds to the config's there
                // is the config's (a bad-input hunt: `rms-eps=1.00000001e-6` wrote the clean
                // run's dump).
                crate::fault::Fault::RmsEps(v)
                    if v == cfg.rms_norm_eps || v as f32 == cfg.rms_norm_eps as f32 =>
                {
                    Some(("rms_norm_eps", v))
                }
                _ => None,
            };
            if let Some((key, v)) = own {
                let own = match key {
                    "rope_theta" => cfg.rope_theta(),
                    _ => cfg.rms_norm_eps,
                };
                let message = match v == own {
                    true => format!(
                        "{} already has {key} = {v}: the fault would change nothing (give another value)",
                        ckpt.config_path.display()
                    ),
                    false => format!(
                        "{v:e} is {}'s {key} ({own:e}) once rounded to float32, where it is used: the fault would change nothing (give another value)",
                        ckpt.config_path.display()
                    ),
                };
                return Err(Error::FaultTarget {
                    spec: spec.to_string(),
                    message,
                });
            }
            // Tiling kv heads is repeat-interleaving them where there is one kv head, or one
            // per q head (a held-out check: exit 0, the clean run's dump).
            let (heads, kv) = (cfg.num_attention_heads, cfg.num_kv_heads());
            if matches!(spec.fault, crate::fault::Fault::GqaTile) && (kv == 1 || kv == heads) {
                return Err(Error::FaultTarget {
                    spec: spec.to_string(),
                    message: format!(
                        "{} has {kv} kv head{} for {heads} q head{}: tiled or repeat-interleaved, the heads are the same, and the fault would change nothing",
                        ckpt.config_path.display(),
                        if kv == 1 { "" } else { "s" },
                        if heads == 1 { "" } else { "s" }
                    ),
                });
            }
            if let crate::fault::Fault::CacheDtype(d) = spec.fault {
                if !d.is_lower_than(opts.dtype) {
                    return Err(Error::FaultTarget {
                        spec: spec.to_string(),
                        message: format!(
                            "a cache stored in {} is not lower precision than {} activations \
                             (use it with f32 activations, or bf16 under f16)",
                            d.dtype().as_str(),
                            opts.dtype.as_str()
                        ),
                    });
                }
            }
            if let Some(max) = spec.max_layer() {
                if max >= cfg.num_hidden_layers {
                    return Err(Error::FaultTarget {
                        spec: spec.to_string(),
                        message: format!(
                            "layer {max} does not exist ({} has {} layers)",
                            ckpt.config_path.display(),
                            cfg.num_hidden_layers
                        ),
                    });
                }
            }
        }
        // Every tensor is checked before any is loaded (see `required_tensors`).
        for (name, shape) in required_tensors(cfg, ckpt) {
            ckpt.check(&name, &shape)?;
        }
        // SAFETY: the files are mmap'd read-only; like every mmap user we rely on nobody
        // truncating them while the model is alive.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&ckpt.files, opts.dtype, device) }
            .map_err(|err| Error::Safetensors {
                path: ckpt.dir.clone(),
                message: err.to_string(),
            })?;
        let ctx = LoadCtx {
            ckpt,
            faults,
            policy: opts.policy,
            transposable: RefCell::new(Vec::new()),
        };
        let vb = Vb {
            inner: vb,
            ctx: &ctx,
        };
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let vb_m = vb.pp("model");
        let vb_e = vb_m.pp("embed_tokens");
        let embed = vb_e.matrix(vocab, h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb_m.pp("layers").pp(i), &faults.layer(i)))
            .collect::<Result<Vec<_>, Error>>()?;
        let norm = vb_m.pp("norm").rms_norm(h, cfg, &faults.norm(None))?;
        let lm_head = lm_head(cfg, vb.pp("lm_head"), &vb_e, &embed)?
            .accumulating_in_half(faults.bf16_accum(None));
        let transposable = ctx.transposable.borrow();
        for target in faults.transpose_targets() {
            if !transposable.iter().any(|m| m == target) {
                return Err(Error::FaultTarget {
                    spec: format!("transpose={target}"),
                    message: format!(
                        "no linear layer or embedding named {target:?} (e.g. \
                         model.layers.0.mlp.down_proj, model.layers.0.self_attn.q_proj, \
                         lm_head, model.embed_tokens)"
                    ),
                });
            }
        }
        let model = Qwen3 {
            cfg: cfg.clone(),
            dtype: opts.dtype,
            policy: opts.policy,
            device: device.clone(),
            embed,
            embed_scale: faults.embed_scale(),
            rope_theta: faults.rope_theta().unwrap_or(cfg.rope_theta()),
            decode_positions: faults.decode_positions(),
            layers,
            norm,
            lm_head,
            embed_name: vb_e.prefix(),
            rotary_name: vb_m.pp("rotary_emb").prefix(),
            model_name: vb_m.prefix(),
        };
        Ok(model)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One prefill over `input_ids` (batch 1); returns the logits `[1, T, vocab]`.
    pub fn forward(&self, input_ids: &[u32], probes: &mut Probes) -> Result<Tensor, Error> {
        self.check_ids(input_ids, "input ids")?;
        self.pass(input_ids, Pass::Prefill(None), probes)
    }

    /// An empty KV cache with room for `max_tokens` tokens (prompt plus decode steps), zeros,
    /// on the model's device: per layer `[1, kv_heads, max_tokens + 1, head_dim]` k and v
    /// buffers in the activation dtype (or fault `cache-dtype`'s); the spare slot is what
    /// fault `decode-mask` reads.
    pub fn new_cache(&self, max_tokens: usize) -> Result<KvCache, Error> {
        let shape = (
            1,
            self.cfg.num_kv_heads(),
            max_tokens + 1,
            self.cfg.head_dim(),
        );
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let dtype = layer
                    .self_attn
                    .faults
                    .cache
                    .dtype
                    .map_or(self.dtype, |d| d.dtype());
                let zeros = || Tensor::zeros(shape, dtype, &self.device);
                Ok(LayerCache {
                    k: zeros()?,
                    v: zeros()?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx(|| "allocating the kv cache".to_string())?;
        Ok(KvCache {
            layers,
            max_tokens,
            len: 0,
            prompt_len: 0,
        })
    }

    /// Step 0 of a decode: one prefill over `input_ids` (its probes and logits those of
    /// [`Qwen3::forward`], bit for bit) that also writes every layer's k/v into `cache`
    /// (empty, from [`Qwen3::new_cache`]). Records under the plain probe names.
    pub fn prefill(
        &self,
        input_ids: &[u32],
        cache: &mut KvCache,
        probes: &mut Probes,
    ) -> Result<Tensor, Error> {
        self.check_ids(input_ids, "input ids")?;
        if !cache.is_empty() {
            return Err(Error::Decode(format!(
                "kv cache: prefill into a cache that already holds {} tokens",
                cache.len
            )));
        }
        if input_ids.len() > cache.max_tokens {
            return Err(Error::Decode(format!(
                "kv cache: a prompt of {} tokens does not fit a cache of {} tokens",
                input_ids.len(),
                cache.max_tokens
            )));
        }
        probes.set_step(0);
        let logits = self.pass(input_ids, Pass::Prefill(Some(cache)), probes)?;
        cache.len = input_ids.len();
        cache.prompt_len = input_ids.len();
        Ok(logits)
    }

    /// Decode step `s` (`s = cache.len() - prompt_len + 1`): `token` alone at position
    /// `prompt_len + s - 1` (moved by faults `decode-pos` / `decode-pos-frozen`), its k/v
    /// appended to `cache`, attention over the cache. Records every probe as `<name>@s`, plus
    /// each layer's `cache_k@s` / `cache_v@s`. Returns the logits `[1, 1, vocab]`.
    pub fn decode_step(
        &self,
        token: u32,
        cache: &mut KvCache,
        probes: &mut Probes,
    ) -> Result<Tensor, Error> {
        self.check_ids(&[token], "decode ids")?;
        if cache.prompt_len == 0 {
            return Err(Error::Decode(
                "kv cache: a decode step needs a prefilled cache (Qwen3::prefill)".to_string(),
            ));
        }
        let slot = cache.len;
        if slot >= cache.max_tokens {
            return Err(Error::Decode(format!(
                "kv cache: the cache is full ({} tokens)",
                cache.max_tokens
            )));
        }
        let step = slot - cache.prompt_len + 1;
        let position = self.decode_position(cache.prompt_len, step)?;
        probes.set_step(step);
        let logits = self.pass(
            &[token],
            Pass::Decode {
                cache,
                slot,
                position,
            },
            probes,
        )?;
        cache.len += 1;
        Ok(logits)
    }

    /// The RoPE position of decode step `step` after `prompt_len` tokens: `prompt_len + step -
    /// 1`, or where faults `decode-pos` / `decode-pos-frozen` put it; an error when negative.
    pub fn decode_position(&self, prompt_len: usize, step: usize) -> Result<usize, Error> {
        self.decode_positions
            .position(prompt_len, step)
            .ok_or_else(|| Error::FaultTarget {
                spec: format!("decode-pos={}", self.decode_positions.offset),
                message: format!(
                    "decode step {step} after a prompt of {prompt_len} tokens would be at a \
                     negative position, or one beyond any index"
                ),
            })
    }

    /// Rejects an empty list and ids outside the vocabulary (`what`: "input ids", ...).
    pub(crate) fn check_ids(&self, ids: &[u32], what: &str) -> Result<(), Error> {
        if ids.is_empty() {
            return Err(Error::InputIds {
                source_name: what.to_string(),
                message: "no tokens".to_string(),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::InputIds {
                source_name: what.to_string(),
                message: format!(
                    "token id {bad} is outside the vocabulary (vocab_size {})",
                    self.cfg.vocab_size
                ),
            });
        }
        Ok(())
    }

    /// One pass over `input_ids` (checked): the prompt or one decode token.
    fn pass(&self, input_ids: &[u32], pass: Pass, probes: &mut Probes) -> Result<Tensor, Error> {
        let t = input_ids.len();
        let ids = Tensor::new(input_ids, &self.device).ctx(|| "input ids".to_string())?;
        let x = self
            .embed
            .index_select(&ids, 0)
            .and_then(|x| x.unsqueeze(0))
            .ctx(|| self.embed_name.clone())?;
        let x = if self.embed_scale {
            // Fault embed-scale: the wrong "scale by 1/sqrt(hidden)" advice.
            let s = 1.0 / (self.cfg.hidden_size as f64).sqrt();
            ops::scale(&x, s, Policy::Torch).ctx(|| "embed-scale fault".to_string())?
        } else {
            x
        };
        let x = probes.pass(&self.embed_name, x)?;

        let start = match pass {
            Pass::Prefill(_) => 0,
            Pass::Decode { position, .. } => position,
        };
        let rope = Rope::at(
            self.rope_theta,
            self.cfg.head_dim(),
            start,
            t,
            self.dtype,
            &self.device,
        )
        .ctx(|| self.rotary_name.clone())?;
        if probes.enabled() {
            let cos = rope.cos.unsqueeze(0).ctx(|| self.rotary_name.clone())?;
            probes.record(&self.rotary_name, &cos)?;
        }

        // The prefill's causal mask, made once for every layer.
        let over = match pass {
            Pass::Prefill(cache) => Over::Prefill {
                mask: ops::attention_mask(t, self.dtype, self.policy, &self.device)
                    .ctx(|| "causal mask".to_string())?,
                cache,
            },
            Pass::Decode { cache, slot, .. } => Over::Decode { cache, slot },
        };
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let attend = match &over {
                Over::Prefill { mask, cache } => Attend::Prefill {
                    mask,
                    cache: cache.map(|c| &c.layers[i]),
                },
                Over::Decode { cache, slot } => Attend::Decode {
                    cache: &cache.layers[i],
                    slot: *slot,
                },
            };
            x = layer.forward(&x, &rope, attend, probes)?;
        }
        let x = self.norm.forward(&x)?;
        let x = probes.pass(&self.norm.name, x)?;
        let x = probes.pass(&self.model_name, x)?;
        let logits = self.lm_head.forward(&x)?;
        probes.record(&self.lm_head.name, &logits)?;
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    use super::*;

    thread_local! {
        /// The tensors `Vb::get` loaded on this thread, in order.
        pub(super) static LOADED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen3")
    }

    fn load(dir: &Path) -> Result<Qwen3, Error> {
        let ckpt = Checkpoint::open(dir)?;
        Qwen3::load(
            &ckpt,
            &Device::Cpu,
            &ModelOptions {
                dtype: DType::F32,
                policy: Policy::Torch,
                faults: Faults::none(),
            },
        )
    }

    fn loaded() -> Vec<String> {
        LOADED.with(|l| l.borrow().clone())
    }

    /// The committed tiny model, and a copy with attention biases and an untied `lm_head` (the
    /// branches the tiny model does not take).
    #[test]
    fn required_tensors_are_what_load_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tensors =
            candle_core::safetensors::load(tiny().join("model.safetensors"), &Device::Cpu)
                .expect("fixture");
        let text = std::fs::read_to_string(tiny().join("config.json")).expect("config");
        let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("json");
        cfg["attention_bias"] = true.into();
        cfg["tie_word_embeddings"] = false.into();
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write");
        let weights: Vec<(String, Tensor)> = tensors
            .iter()
            .filter(|(n, _)| n.ends_with("_proj.weight") && n.contains("self_attn"))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (name, w) in weights {
            let rows = w.dim(0).expect("dim");
            let bias = Tensor::zeros(rows, DType::F32, &Device::Cpu).expect("bias");
            tensors.insert(name.replace(".weight", ".bias"), bias);
        }
        let embed = tensors["model.embed_tokens.weight"].clone();
        tensors.insert("lm_head.weight".to_string(), embed);
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors"))
            .expect("save");
        for model in [tiny(), dir.path().to_path_buf()] {
            LOADED.with(|l| l.borrow_mut().clear());
            load(&model).expect("model loads");
            let ckpt = Checkpoint::open(&model).expect("open");
            let required: Vec<String> = required_tensors(&ckpt.config, &ckpt)
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(loaded(), required, "{}", model.display());
        }
        assert!(loaded().iter().any(|n| n.ends_with("o_proj.bias")));
        assert!(loaded().iter().any(|n| n == "lm_head.weight"));
    }

    #[test]
    fn a_missing_tensor_fails_before_any_weight_loads() {
        // The last tensor the load reads is missing: every other one is there.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tensors =
            candle_core::safetensors::load(tiny().join("model.safetensors"), &Device::Cpu)
                .expect("fixture");
        tensors.remove("model.norm.weight");
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors"))
            .expect("save");
        std::fs::copy(tiny().join("config.json"), dir.path().join("config.json")).expect("copy");
        LOADED.with(|l| l.borrow_mut().clear());
        let err = load(dir.path()).expect_err("missing tensor").to_string();
        assert!(err.contains("missing tensor model.norm.weight"), "{err}");
        assert_eq!(
            loaded(),
            Vec::<String>::new(),
            "weights loaded before the error"
        );
    }
}
