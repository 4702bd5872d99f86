//! Probe points: named intermediate tensors, recorded only when someone listens.
//!
//! The model calls [`Probes::pass`] (which calls [`Probes::record`]) after every op that has a
//! name in the dump contract
//! (module paths from `VarBuilder::prefix()`, plus the extra leaves `rope_q`, `rope_k`,
//! `attn_out`, `attn_residual`). With probes off ([`Probes::off`]) that call is a branch on a
//! `None`: no copy, no allocation. With probes on, each tensor is copied to the host once and
//! handed to a [`Recorder`], e.g. [`DumpRecorder`], which streams it into a
//! `divergence_dump::DumpWriter`.
//!
//! [`Probes::pass`] records a probe and returns what the model goes on with: its own value, or,
//! when replaying a reference dump (teacher forcing, [`DumpReplay`]), the reference's value of
//! that probe, so that every op computes from the reference's inputs.
//!
//! Decoding with a KV cache runs the model once per step; the handle carries the current step
//! ([`Probes::set_step`]) and names every probe of decode step `s > 0` `<name>@<s>`
//! (`model.layers.3.self_attn.k_norm@2`, `lm_head@5`), the dump contract's step suffix. Step 0
//! (the prefill) keeps the plain names, so a prefill-only dump is unchanged.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Tensor};
use divergence_dump::{DumpWriter, Meta, TensorData};
use half::{bf16, f16};

use crate::error::{CandleContext, Error};

/// A tensor copied to the host, in its original dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    F64(Vec<f64>),
}

impl HostData {
    /// Copies `t` (any device, any layout) to the host: one device-to-host transfer.
    pub fn from_tensor(t: &Tensor) -> candle_core::Result<HostData> {
        let flat = t.flatten_all()?;
        Ok(match t.dtype() {
            DType::BF16 => HostData::BF16(flat.to_vec1()?),
            DType::F16 => HostData::F16(flat.to_vec1()?),
            DType::F64 => HostData::F64(flat.to_vec1()?),
            DType::F32 => HostData::F32(flat.to_vec1()?),
            _ => HostData::F32(flat.to_dtype(DType::F32)?.to_vec1()?),
        })
    }

    /// The values widened to f32 (exact for bf16/f16).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostData::F32(v) => v.clone(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn as_tensor_data(&self) -> TensorData<'_> {
        match self {
            HostData::F32(v) => TensorData::F32(v),
            HostData::BF16(v) => TensorData::BF16(v),
            HostData::F16(v) => TensorData::F16(v),
            HostData::F64(v) => TensorData::F64(v),
        }
    }
}

/// Receives probe tensors in execution order.
pub trait Recorder {
    fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error>;
}

/// Teacher forcing (`divergence run --replay REF`): the value each probe should continue with,
/// from a reference dump.
pub trait Substitute {
    /// The reference's value of probe `name`, as a tensor like `like` (shape, dtype, device);
    /// `None` when the reference has no such probe (the model's own value goes on).
    fn substitute(&self, name: &str, like: &Tensor) -> Result<Option<Tensor>, Error>;
}

/// The model's handle on an optional recorder (and an optional replay source).
pub struct Probes<'a> {
    recorder: Option<&'a mut dyn Recorder>,
    replay: Option<&'a dyn Substitute>,
    /// The decode step probes are recorded for: 0 = the prefill (plain names), `s` = `@s`.
    step: usize,
}

/// The dump name of probe `name` at decode step `step`: `name` for step 0 (the prefill),
/// `name@step` after.
pub fn step_name(name: &str, step: usize) -> Cow<'_, str> {
    if step == 0 {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}@{step}"))
    }
}

impl<'a> Probes<'a> {
    /// Probes off: every `record` is a no-op.
    pub fn off() -> Probes<'static> {
        Probes {
            recorder: None,
            replay: None,
            step: 0,
        }
    }

    /// Probes on, feeding `recorder`.
    pub fn on(recorder: &'a mut dyn Recorder) -> Probes<'a> {
        Probes {
            recorder: Some(recorder),
            replay: None,
            step: 0,
        }
    }

    /// Replaying: after each probe is recorded, the next op computes from the reference's value
    /// of that probe ([`Probes::pass`]), so each probe shows only the error its own op adds.
    pub fn replaying(self, source: &'a dyn Substitute) -> Probes<'a> {
        Probes {
            replay: Some(source),
            ..self
        }
    }

    /// From now on probes are recorded for decode step `step` (0 = the prefill): named
    /// `<name>@<step>` when `step > 0` ([`step_name`]).
    pub fn set_step(&mut self, step: usize) {
        self.step = step;
    }

    /// The decode step probes are recorded for (0 = the prefill).
    pub fn step(&self) -> usize {
        self.step
    }

    /// Records `tensor` under `name`, then hands back what the next op computes from: the
    /// tensor itself, or, when replaying, the reference's value of this probe.
    pub fn pass(&mut self, name: &str, tensor: Tensor) -> Result<Tensor, Error> {
        self.record(name, &tensor)?;
        match self.replay {
            Some(source) => {
                let name = step_name(name, self.step);
                Ok(source.substitute(&name, &tensor)?.unwrap_or(tensor))
            }
            None => Ok(tensor),
        }
    }

    /// Is anyone listening? (Lets the model skip building views only a probe needs.)
    #[inline]
    pub fn enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// Records `tensor` under `name` (with the step suffix, [`step_name`]) if probes are on.
    #[inline]
    pub fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error> {
        match self.recorder.as_mut() {
            Some(r) => r.record(&step_name(name, self.step), tensor),
            None => Ok(()),
        }
    }
}

/// One recorded probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// Keeps every probe in memory (tests, small models).
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    pub probes: Vec<Recorded>,
}

impl MemoryRecorder {
    pub fn names(&self) -> Vec<&str> {
        self.probes.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Recorded> {
        self.probes.iter().find(|p| p.name == name)
    }
}

impl Recorder for MemoryRecorder {
    fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error> {
        let data = HostData::from_tensor(tensor).ctx(|| format!("probe {name}"))?;
        self.probes.push(Recorded {
            name: name.to_string(),
            shape: tensor.dims().to_vec(),
            data,
        });
        Ok(())
    }
}

/// Streams probes into a dump file (npz or safetensors, by extension); decode steps are kept
/// until `finish` and written stacked, one member per probe (`x@steps`).
pub struct DumpRecorder {
    writer: DumpWriter,
    count: usize,
}

impl DumpRecorder {
    pub fn create(path: &Path) -> Result<DumpRecorder, Error> {
        let mut writer = DumpWriter::create(path)?;
        // Decode steps as one member per probe (`x@steps`), docs/dump-format.md.
        writer.stack_steps();
        Ok(DumpRecorder { writer, count: 0 })
    }

    /// Number of probes written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes the metadata and closes the file.
    pub fn finish(self, meta: Meta) -> Result<(), Error> {
        self.writer.finish(meta)?;
        Ok(())
    }
}

impl Recorder for DumpRecorder {
    fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error> {
        let data = HostData::from_tensor(tensor).ctx(|| format!("probe {name}"))?;
        self.writer
            .add(name, tensor.dims(), data.as_tensor_data())?;
        self.count += 1;
        Ok(())
    }
}

/// Replays a reference dump: each probe's reference value, converted to the model's shape,
/// dtype and device (bf16 stored as f32 in npz is exact).
pub struct DumpReplay {
    dump: divergence_dump::Dump,
    /// Probes replaced so far (a replay that replaced nothing is an error: `run_to_dump`).
    used: std::cell::Cell<usize>,
}

impl DumpReplay {
    /// Opens the reference dump (headers only).
    pub fn open(path: &Path) -> Result<DumpReplay, Error> {
        let dump = divergence_dump::Dump::open(path).map_err(|e| Error::Replay(e.to_string()))?;
        Ok(DumpReplay {
            dump,
            used: std::cell::Cell::new(0),
        })
    }

    /// How many probes were replaced by the reference's values.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The input ids the reference recorded, if any.
    pub fn input_ids(&self) -> Option<&[i64]> {
        self.dump.meta().and_then(|m| m.input_ids.as_deref())
    }
}

impl Substitute for DumpReplay {
    fn substitute(&self, name: &str, like: &Tensor) -> Result<Option<Tensor>, Error> {
        if !self.dump.contains(name) {
            return Ok(None);
        }
        let path = self.dump.path().display();
        let t = self
            .dump
            .read(name)
            .map_err(|e| Error::Replay(e.to_string()))?;
        // The same shape up to size-1 dimensions (the rule `diff` applies): a reference that
        // lays a probe out otherwise ([B, H, T, D] for [B, T, H, D]) must not be reinterpreted.
        let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
        if squeeze(&t.shape) != squeeze(like.dims()) {
            return Err(Error::Replay(format!(
                "{path}: probe {name} has shape {:?}, the model's has {:?}: not a dump of this model and input",
                t.shape,
                like.dims()
            )));
        }
        self.used.set(self.used.get() + 1);
        let values: Vec<f32> = match &t.values {
            divergence_dump::Values::F32(v) => v.clone(),
            divergence_dump::Values::F64(v) => v.iter().map(|&x| x as f32).collect(),
        };
        let ctx = || format!("replay of {name}");
        let out = Tensor::from_vec(values, like.shape(), like.device())
            .and_then(|x| x.to_dtype(like.dtype()))
            .ctx(ctx)?;
        Ok(Some(out))
    }
}
