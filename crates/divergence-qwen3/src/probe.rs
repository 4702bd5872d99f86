//! Probe points: named intermediate tensors, recorded only when someone listens.
//!
//! The model calls [`Probes::record`] after every op that has a name in the dump contract
//! (module paths from `VarBuilder::prefix()`, plus the extra leaves `rope_q`, `rope_k`,
//! `attn_out`, `attn_residual`). With probes off ([`Probes::off`]) that call is a branch on a
//! `None`: no copy, no allocation. With probes on, each tensor is copied to the host once and
//! handed to a [`Recorder`], e.g. [`DumpRecorder`], which streams it into a
//! `divergence_dump::DumpWriter`.

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

/// The model's handle on an optional recorder.
pub struct Probes<'a> {
    recorder: Option<&'a mut dyn Recorder>,
}

impl<'a> Probes<'a> {
    /// Probes off: every `record` is a no-op.
    pub fn off() -> Probes<'static> {
        Probes { recorder: None }
    }

    /// Probes on, feeding `recorder`.
    pub fn on(recorder: &'a mut dyn Recorder) -> Probes<'a> {
        Probes {
            recorder: Some(recorder),
        }
    }

    /// Is anyone listening? (Lets the model skip building views only a probe needs.)
    #[inline]
    pub fn enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// Records `tensor` under `name` if probes are on.
    #[inline]
    pub fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error> {
        match self.recorder.as_mut() {
            Some(r) => r.record(name, tensor),
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

/// Streams probes into a dump file (npz or safetensors, by extension).
pub struct DumpRecorder {
    writer: DumpWriter,
    count: usize,
}

impl DumpRecorder {
    pub fn create(path: &Path) -> Result<DumpRecorder, Error> {
        Ok(DumpRecorder {
            writer: DumpWriter::create(path)?,
            count: 0,
        })
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
