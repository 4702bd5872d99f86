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
use std::time::{Duration, Instant};

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

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::BF16(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::F64(v) => v.len(),
        }
    }

    /// No values at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the values.
    pub fn bytes(&self) -> usize {
        let size = match self {
            HostData::F32(_) => 4,
            HostData::BF16(_) | HostData::F16(_) => 2,
            HostData::F64(_) => 8,
        };
        self.len() * size
    }

    /// `len` values from `offset`, borrowed (panics outside the values: callers slice what
    /// they staged).
    fn slice(&self, offset: usize, len: usize) -> TensorData<'_> {
        let r = offset..offset + len;
        match self {
            HostData::F32(v) => TensorData::F32(&v[r]),
            HostData::BF16(v) => TensorData::BF16(&v[r]),
            HostData::F16(v) => TensorData::F16(&v[r]),
            HostData::F64(v) => TensorData::F64(&v[r]),
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
///
/// The model's thread only copies each probe to the host; the writer (encoding, stacking,
/// the file) runs on a thread of its own, so writing one probe overlaps computing the next.
/// Probes go to it in batches of [`BATCH_BYTES`] (a batch ends with the probe that fills it,
/// or with a flushed set of staging buffers), at most [`QUEUED`] waiting: at most `QUEUED + 2`
/// batches are on the host outside the writer at once (one being written, one being filled or
/// waiting to be queued). The writer itself keeps every decode step until `finish` (they are
/// stored stacked), and a safetensors dump whole.
///
/// On the CPU each probe is copied to the host as it comes. On a GPU a probe is first copied into
/// a device buffer of its dtype ([`STAGE_BYTES`], one kernel, queued like the model's own), and
/// the buffer comes to the host in one copy when it is full, before a probe that cannot be
/// staged, and at `finish`: a copy to the host waits for every kernel queued before it, so one
/// copy per probe (~600 per decode step of a 28-layer model) would keep the GPU waiting on the
/// host and the host on the GPU (docs/gpu.md, "Decode", "Probes staged on the GPU"). The
/// dump is the same either way: the same names in the same order, the same bytes.
pub struct DumpRecorder {
    sink: Sink,
    count: usize,
    stage: Stage,
    /// Probes on the host, in order, not yet handed to the writer.
    outgoing: Batch,
    times: DumpTimes,
    /// Bytes of a staging buffer ([`STAGE_BYTES`]; smaller in tests).
    stage_bytes: usize,
    /// Stage on the CPU too (tests: the staged path, checked against the direct one).
    stage_on_cpu: bool,
    /// Bytes gathered before a hand-over ([`BATCH_BYTES`]; 0 in tests: every probe).
    batch_bytes: usize,
}

/// Bytes of one staging buffer on a GPU (one per dtype that is recorded). A probe larger than
/// this is copied on its own.
pub const STAGE_BYTES: usize = 64 << 20;

/// Most batches waiting for the writer's thread.
pub const QUEUED: usize = 2;

/// Bytes of probes gathered on the host before they go to the writer as one batch (a probe
/// larger than this goes alone; a flushed staging buffer, being larger, at once): one hand-over
/// per probe would cost the model's thread a wake-up of the writer's for every few KB of a
/// decode step.
pub const BATCH_BYTES: usize = 8 << 20;

/// Where the time of writing a dump went ([`DumpRecorder::finish`]). Each interval is counted
/// once; `write` runs on the writer's thread, beside the others.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DumpTimes {
    /// Staging, on the model's thread: queuing each probe's copy into its device buffer (on
    /// the CPU only in tests).
    pub stage: Duration,
    /// In copies to the host, on the model's thread (on a GPU including the wait for the
    /// kernels queued before each).
    pub copy: Duration,
    /// Copies to the host: one per probe on the CPU, one per staging buffer in use per flush
    /// on a GPU.
    pub copies: usize,
    /// The model's thread waiting for the writer's (its queue full).
    pub wait: Duration,
    /// In the writer, on its own thread, as probes are added (decode steps: appended to their
    /// stacks).
    pub write: Duration,
    /// In `finish`, after the last probe was handed over: waiting for the writer to add what
    /// was queued.
    pub drain: Duration,
    /// In `finish`, then: the stacked members, the metadata, closing the file.
    pub finish: Duration,
}

/// Probes waiting on the GPU for one copy to the host, in the order they were recorded.
#[derive(Default)]
struct Stage {
    buffers: Vec<StageBuffer>,
    pending: Vec<Pending>,
}

/// One dtype's staging buffer: `[capacity]` elements, the first `used` of them written.
struct StageBuffer {
    dtype: DType,
    tensor: Tensor,
    used: usize,
}

/// A probe in a [`Batch`] (or staged): `len` elements of buffer `buffer` from `offset`.
struct Pending {
    name: String,
    shape: Vec<usize>,
    buffer: usize,
    offset: usize,
    len: usize,
}

/// Probes on the host, for the writer's thread: each a slice of one of `data`.
#[derive(Default)]
struct Batch {
    data: Vec<HostData>,
    probes: Vec<Pending>,
}

impl Batch {
    /// Bytes of the values it holds.
    fn bytes(&self) -> usize {
        self.data.iter().map(HostData::bytes).sum()
    }
}

/// The writer on its thread: a bounded queue of batches in, the writer and its time out.
/// `path` names the dump in its errors.
struct Sink {
    path: std::path::PathBuf,
    queue: Option<std::sync::mpsc::SyncSender<Batch>>,
    thread: Option<std::thread::JoinHandle<Result<(DumpWriter, Duration), Error>>>,
}

impl Sink {
    fn start(path: &Path, mut writer: DumpWriter) -> Result<Sink, Error> {
        let (queue, batches) = std::sync::mpsc::sync_channel::<Batch>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("dump writer".into())
            .spawn(move || {
                let mut time = Duration::ZERO;
                for batch in batches {
                    let start = Instant::now();
                    for p in &batch.probes {
                        let data = batch.data[p.buffer].slice(p.offset, p.len);
                        writer.add(&p.name, &p.shape, data)?;
                    }
                    time += start.elapsed();
                }
                Ok((writer, time))
            })
            .map_err(|e| Error::Writer {
                path: path.to_path_buf(),
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(Sink {
            path: path.to_path_buf(),
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `batch`; waits while the queue is full. When the writer has stopped on an error,
    /// returns that error.
    fn send(&mut self, batch: Batch) -> Result<(), Error> {
        match self.queue.as_ref().map(|q| q.send(batch)) {
            Some(Ok(())) => Ok(()),
            _ => self.join().map(drop),
        }
    }

    /// Closes the queue and waits for the writer: the writer and its time, or its error.
    fn join(&mut self) -> Result<(DumpWriter, Duration), Error> {
        self.queue = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(Error::Writer {
                path: self.path.clone(),
                message: "stopped on an earlier error".into(),
            }),
        }
    }
}

impl Drop for Sink {
    /// A recorder dropped without `finish` (the run failed): waits while the writer adds what
    /// was queued (at most [`QUEUED`] + 1 batches), then lets it go; the file stays
    /// incomplete, as it would without the thread, and staged probes are dropped.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl DumpRecorder {
    pub fn create(path: &Path) -> Result<DumpRecorder, Error> {
        let mut writer = DumpWriter::create(path)?;
        // Decode steps as one member per probe (`x@steps`), docs/dump-format.md.
        writer.stack_steps();
        Ok(DumpRecorder {
            sink: Sink::start(path, writer)?,
            count: 0,
            stage: Stage::default(),
            outgoing: Batch::default(),
            times: DumpTimes::default(),
            stage_bytes: STAGE_BYTES,
            stage_on_cpu: false,
            batch_bytes: BATCH_BYTES,
        })
    }

    /// Stages on the CPU as on a GPU, in buffers of `bytes` (tests of the staged path).
    #[cfg(test)]
    fn staging_everywhere(mut self, bytes: usize) -> DumpRecorder {
        self.stage_bytes = bytes;
        self.stage_on_cpu = true;
        self
    }

    /// Hands every probe (or flushed buffer) to the writer at once (tests of the hand-over).
    #[cfg(test)]
    fn unbatched(mut self) -> DumpRecorder {
        self.batch_bytes = 0;
        self
    }

    /// Number of probes written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes the staged and queued probes and the metadata, and closes the file. Returns
    /// where the time of the whole dump went.
    pub fn finish(mut self, meta: Meta) -> Result<DumpTimes, Error> {
        self.flush()?;
        self.send_outgoing()?;
        let start = Instant::now();
        let (writer, write) = self.sink.join()?;
        self.times.drain = start.elapsed();
        self.times.write = write;
        let start = Instant::now();
        writer.finish(meta)?;
        self.times.finish = start.elapsed();
        Ok(self.times)
    }

    /// Copies `tensor` into its dtype's staging buffer when it can be staged (on a GPU, a
    /// float dtype, not empty, at most a buffer); `false` when it cannot.
    fn stage(&mut self, name: &str, tensor: &Tensor) -> Result<bool, Error> {
        let dtype = tensor.dtype();
        let n = tensor.elem_count();
        let capacity = self.stage_bytes / dtype.size_in_bytes();
        let float = matches!(dtype, DType::BF16 | DType::F16 | DType::F32 | DType::F64);
        let gpu = !tensor.device().is_cpu() || self.stage_on_cpu;
        if !gpu || !float || n == 0 || n > capacity {
            return Ok(false);
        }
        let start = Instant::now();
        let ctx = || format!("probe {name}");
        let device = tensor.device();
        let i = match (self.stage.buffers.iter())
            .position(|b| b.dtype == dtype && b.tensor.device().same_device(device))
        {
            Some(i) => i,
            None => {
                let tensor = Tensor::zeros(capacity, dtype, tensor.device()).ctx(ctx)?;
                self.stage.buffers.push(StageBuffer {
                    dtype,
                    tensor,
                    used: 0,
                });
                self.stage.buffers.len() - 1
            }
        };
        if self.stage.buffers[i].used + n > capacity {
            self.flush()?;
        }
        let buffer = &mut self.stage.buffers[i];
        // A copy on the device, queued: the probe's value now, whatever is written later into
        // the storage it views (the KV cache's slots).
        let flat = tensor.flatten_all().and_then(|t| t.contiguous()).ctx(ctx)?;
        buffer.tensor.slice_set(&flat, 0, buffer.used).ctx(ctx)?;
        self.stage.pending.push(Pending {
            name: name.to_string(),
            shape: tensor.dims().to_vec(),
            buffer: i,
            offset: buffer.used,
            len: n,
        });
        buffer.used += n;
        self.times.stage += start.elapsed();
        Ok(true)
    }

    /// Brings the staged probes to the host (one copy per buffer in use) and hands them to the
    /// writer in the order they were recorded.
    fn flush(&mut self) -> Result<(), Error> {
        if self.stage.pending.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        // Every pending probe lies in the first `used` elements of its buffer.
        let mut data = Vec::with_capacity(self.stage.buffers.len());
        for b in &mut self.stage.buffers {
            data.push(match b.used {
                0 => HostData::F32(Vec::new()),
                used => {
                    self.times.copies += 1;
                    // The used part alone, copied on the device first: candle's copy to the
                    // host of a view takes its whole allocation.
                    b.tensor
                        .narrow(0, 0, used)
                        .and_then(|t| t.force_contiguous())
                        .and_then(|t| HostData::from_tensor(&t))
                        .ctx(|| "staged probes: copy to the host".to_string())?
                }
            });
            b.used = 0;
        }
        self.times.copy += start.elapsed();
        let shift = self.outgoing.data.len();
        self.outgoing.data.extend(data);
        let probes = std::mem::take(&mut self.stage.pending);
        self.outgoing
            .probes
            .extend(probes.into_iter().map(|p| Pending {
                buffer: p.buffer + shift,
                ..p
            }));
        self.send_if_full()
    }

    /// Hands the outgoing batch to the writer once it holds `batch_bytes` ([`BATCH_BYTES`]).
    fn send_if_full(&mut self) -> Result<(), Error> {
        if self.outgoing.bytes() >= self.batch_bytes {
            self.send_outgoing()?;
        }
        Ok(())
    }

    /// Hands the outgoing batch, whatever it holds, to the writer's thread.
    fn send_outgoing(&mut self) -> Result<(), Error> {
        if self.outgoing.probes.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.outgoing);
        let start = Instant::now();
        let sent = self.sink.send(batch);
        self.times.wait += start.elapsed();
        sent
    }
}

impl Recorder for DumpRecorder {
    fn record(&mut self, name: &str, tensor: &Tensor) -> Result<(), Error> {
        if !self.stage(name, tensor)? {
            // The staged probes first: the dump keeps the order of recording.
            self.flush()?;
            let start = Instant::now();
            let data = HostData::from_tensor(tensor).ctx(|| format!("probe {name}"))?;
            self.times.copy += start.elapsed();
            self.times.copies += 1;
            self.outgoing.probes.push(Pending {
                name: name.to_string(),
                shape: tensor.dims().to_vec(),
                buffer: self.outgoing.data.len(),
                offset: 0,
                len: data.len(),
            });
            self.outgoing.data.push(data);
            self.send_if_full()?;
        }
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
    /// The probes asked for that the reference does not hold (computed from ours: their
    /// rows carry the error before them), in the order asked.
    kept: std::cell::RefCell<Vec<String>>,
}

impl DumpReplay {
    /// Opens the reference dump (headers only).
    pub fn open(path: &Path) -> Result<DumpReplay, Error> {
        let dump = divergence_dump::Dump::open(path).map_err(|e| Error::Replay(e.to_string()))?;
        Ok(DumpReplay {
            dump,
            used: std::cell::Cell::new(0),
            kept: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// How many probes were replaced by the reference's values.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The probes asked for that the reference does not hold, in the order first asked, each
    /// once (each computed from ours' values; `--repeat` asks every probe again: a review).
    pub fn kept(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.kept
            .borrow()
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect()
    }

    /// The input ids the reference recorded, if any.
    pub fn input_ids(&self) -> Option<&[i64]> {
        self.dump.meta().and_then(|m| m.input_ids.as_deref())
    }
}

impl Substitute for DumpReplay {
    fn substitute(&self, name: &str, like: &Tensor) -> Result<Option<Tensor>, Error> {
        if !self.dump.contains(name) {
            self.kept.borrow_mut().push(name.to_string());
            return Ok(None);
        }
        let path = self.dump.path().display();
        // The same shape up to size-1 dimensions (the rule `diff` applies): a reference that
        // lays a probe out otherwise ([B, H, T, D] for [B, T, H, D]) must not be reinterpreted.
        // Checked from the header before the values are read (found by a bad-input hunt: a
        // 1 MB compressed probe of the wrong shape was inflated to 512 MB first).
        let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
        if let Some(shape) = self.dump.shape(name) {
            if squeeze(shape) != squeeze(like.dims()) {
                return Err(Error::Replay(format!(
                    "{path}: probe {name} has shape {shape:?}, the model's has {:?}: not a dump of this model and input",
                    like.dims()
                )));
            }
        }
        let t = self
            .dump
            .read(name)
            .map_err(|e| Error::Replay(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Records one sequence into two recorders at once, `direct` as the CPU writes and
    /// `staged` as a GPU would (staging buffers of 64 bytes: 16 f32, 32 bf16 or f16; some
    /// probes do not fit one and go on their own, between staged ones).
    fn record_both(direct: &mut DumpRecorder, staged: &mut DumpRecorder, name: &str, t: &Tensor) {
        direct.record(name, t).unwrap();
        staged.record(name, t).unwrap();
    }

    #[test]
    fn a_staged_dump_is_the_direct_dump_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = Device::Cpu;
        // Gathered into batches of 8 MB (here: one, at `finish`) or handed over one by one.
        for (ext, batched) in [("npz", true), ("npz", false), ("safetensors", true)] {
            let (pa, pb) = (
                dir.path().join(format!("direct-{batched}.{ext}")),
                dir.path().join(format!("staged-{batched}.{ext}")),
            );
            let mut a = DumpRecorder::create(&pa).unwrap();
            let mut b = DumpRecorder::create(&pb).unwrap().staging_everywhere(64);
            if !batched {
                (a, b) = (a.unbatched(), b.unbatched());
            }
            let f32s = |n: usize, k: f32| {
                Tensor::from_vec((0..n).map(|i| i as f32 * k).collect::<Vec<_>>(), n, &cpu).unwrap()
            };
            // Three dtypes interleaved in one flush: the order of recording, not of buffers.
            let x = f32s(6, 0.5).reshape((2, 3)).unwrap();
            record_both(&mut a, &mut b, "model.embed_tokens", &x);
            let h = f32s(4, 1.5).to_dtype(DType::BF16).unwrap();
            record_both(&mut a, &mut b, "h", &h);
            // Not contiguous: staged through a copy.
            record_both(&mut a, &mut b, "t", &x.t().unwrap());
            let g = f32s(5, -2.0).to_dtype(DType::F16).unwrap();
            record_both(&mut a, &mut b, "g", &g);
            // Larger than a buffer: copied on its own, after the staged ones.
            record_both(&mut a, &mut b, "big", &f32s(40, 0.25));
            // Not a float: copied on its own (as f32).
            let ids = Tensor::new(&[3u32, 1, 4], &cpu).unwrap();
            record_both(&mut a, &mut b, "ids", &ids);
            // A view of a buffer written after it is recorded (a KV cache slot): the dump
            // holds the value at recording.
            let cache = Tensor::zeros((2, 4), DType::F32, &cpu).unwrap();
            let row = |k: f32| f32s(4, k).reshape((1, 4)).unwrap();
            cache.slice_set(&row(1.0), 0, 0).unwrap();
            record_both(&mut a, &mut b, "cache@1", &cache.narrow(0, 0, 1).unwrap());
            cache.slice_set(&row(9.0), 0, 0).unwrap();
            record_both(&mut a, &mut b, "cache@2", &cache.narrow(0, 0, 1).unwrap());
            // 4 + 4 + 3 + 3 f32 fill the buffer to 14; y@3 does not fit: a flush first.
            for s in 1..=5 {
                let name = format!("y@{s}");
                record_both(&mut a, &mut b, &name, &f32s(3, s as f32));
            }
            assert_eq!(a.count(), b.count());
            let ta = a.finish(Meta::default()).unwrap();
            let tb = b.finish(Meta::default()).unwrap();
            assert_eq!(ta.copies, 13);
            // 3 buffers at `big`, `big` and `ids` on their own, f32 at y@3 and at the end.
            assert_eq!(tb.copies, 7, "{tb:?}");
            let (da, db) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
            assert!(
                da == db,
                "{ext}: the staged dump differs from the direct one"
            );
            let dump = divergence_dump::Dump::open(&pb).unwrap();
            let c1 = dump.read("cache@1").unwrap();
            assert_eq!(
                c1.values,
                divergence_dump::Values::F32(vec![0.0, 1.0, 2.0, 3.0])
            );
        }
    }

    /// Step 2 of a probe before its step 1: the writer's error.
    const OUT_OF_ORDER: &str = "decode step 2 comes first";

    /// The writer's thread stops on the first error and a later `record` returns it, then
    /// says the writer has stopped; never a hang or a panic.
    #[test]
    fn a_writer_error_reaches_a_later_record() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let path = dir.path().join("order.npz");
        let mut rec = DumpRecorder::create(&path).unwrap().unbatched();
        rec.record("x", &t).unwrap();
        rec.record("y@2", &t).unwrap();
        // The queue holds QUEUED batches: within QUEUED + 2 more, a send finds the writer gone.
        let err = (0..QUEUED + 3)
            .find_map(|i| rec.record(&format!("z{i}"), &t).err())
            .map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("no record failed"));
        assert!(err.contains(OUT_OF_ORDER), "{err}");
        let again = rec.record("w", &t).unwrap_err().to_string();
        assert!(again.contains("stopped on an earlier error"), "{again}");
        assert!(again.starts_with(&path.display().to_string()), "{again}");
    }

    /// Staged, the error comes when the staged probes reach the writer: at `finish` here.
    #[test]
    fn a_staged_writer_error_reaches_finish() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut rec = DumpRecorder::create(&dir.path().join("order.npz"))
            .unwrap()
            .staging_everywhere(1 << 10);
        for name in ["x", "y@2", "z"] {
            rec.record(name, &t).unwrap();
        }
        let err = rec.finish(Meta::default()).unwrap_err().to_string();
        assert!(err.contains(OUT_OF_ORDER), "{err}");
    }

    /// A recorder dropped without `finish` (a failed run) lets its writer go: no hang, with
    /// probes queued, staged or after an error.
    #[test]
    fn a_recorder_dropped_unfinished_stops_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        for (i, names) in [&["a", "b", "c"][..], &["a", "b@2", "c"]]
            .iter()
            .enumerate()
        {
            for staged in [false, true] {
                let path = dir.path().join(format!("dropped-{i}-{staged}.npz"));
                let mut rec = DumpRecorder::create(&path).unwrap().unbatched();
                if staged {
                    rec = rec.staging_everywhere(1 << 10);
                }
                for name in names.iter() {
                    let _ = rec.record(name, &t);
                }
                drop(rec);
            }
        }
    }
}
