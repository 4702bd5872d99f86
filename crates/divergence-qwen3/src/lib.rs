//! `divergence-qwen3`: a candle Qwen3 with a named probe point after every op, and
//! injectable porting faults.
//!
//! The model mirrors `transformers/models/qwen3/modeling_qwen3.py` of transformers 5.17.0
//! (see [`model`] for the deliberate deviations). Probe names equal transformers'
//! `named_modules()` paths plus the extra leaves of the dump contract (`rope_q`, `rope_k`,
//! `attn_out`, `attn_residual`), in the same execution order as `scripts/dump_reference.py`
//! writes them, so a dump of this model diffs directly against a transformers dump.
//!
//! With a KV cache ([`Qwen3::prefill`], [`Qwen3::decode_step`]) it also decodes teacher-forced
//! token by token, each decode step's probes named `<name>@<step>`.
//!
//! Entry point for the CLI: [`run_to_dump`] with [`RunOptions`].

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fault;
pub mod memory;
pub mod model;
pub mod ops;
pub mod probe;
pub mod run;

pub use checkpoint::Checkpoint;
pub use config::Config;
pub use error::Error;
pub use fault::{
    Activation, CacheDtype, CacheFaults, CacheSlot, DecodePositions, Fault, FaultParseError,
    FaultSpec, Faults, LayerFaults, NormFaults, FAULT_NAMES,
};
pub use memory::{estimate, limit as memory_limit, Estimate, MAX_RUN_BYTES};
pub use model::{KvCache, ModelOptions, Qwen3};
pub use ops::Policy;
pub use probe::{
    step_name, DumpRecorder, DumpReplay, DumpTimes, HostData, MemoryRecorder, Probes, Recorded,
    Recorder, Substitute,
};
pub use run::{
    parse_ids, read_ids_file, run_to_dump, DecodeIds, DecodeOptions, DeviceKind, Precision,
    RunOptions, RunSummary,
};
