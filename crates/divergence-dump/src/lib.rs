//! Read and write intermediate-tensor dumps for `divergence`: `.npz` (numpy.savez /
//! savez_compressed), single `.npy` arrays and `.safetensors`, plus the dump metadata ([`Meta`]).
//!
//! The contract (probe names, metadata fields, execution order) is in `docs/dump-format.md`.
//!
//! Reading: [`Dump::open`] memory-maps the file and parses all headers once; [`Dump::read`]
//! decodes one tensor at a time into widened [`Values`] in C order (Fortran-order arrays are
//! transposed, big-endian arrays byte-swapped); [`Dump::view`] returns the stored bytes
//! themselves, borrowed from the map, where they need no decoding ([`TensorView::values`], a
//! [`ValuesRef`] of `divergence-values`, the type the diff engine compares). `Dump` is
//! `Send + Sync`. Writing: [`DumpWriter`] streams npz members to disk, or buffers a safetensors
//! file until `finish`.
//! Errors are one lowercase line naming the file ([`DumpError`]); no input makes this crate panic.

mod convert;
mod dtype;
mod dump;
mod entry;
mod error;
mod meta;
mod npy;
mod npz;
mod safetensors;
mod stacked;
mod writer;

pub use divergence_values::ValuesRef;
pub use dtype::{DType, Tensor, TensorData, TensorView, Values};
pub use dump::{Dump, Format, MAX_ENTRIES};
pub use entry::{Chunks, MAX_REORDER_BYTES};
pub use error::{DumpError, Location};
pub use meta::{Meta, FORMAT_TAG, META_ENTRY, SAFETENSORS_META_KEY};
pub use stacked::{
    stacked_base, unfolded_step_budget, BYTES_PER_UNFOLDED_STEP, MAX_STACKED_STEPS,
    MAX_UNFOLDED_ENTRIES, MIN_UNFOLDED_ENTRIES, STACKED_SUFFIX,
};
pub use writer::DumpWriter;

/// Not a public API: the zip member reader, exposed for `examples/zip_reader.rs` (the
/// measurement behind keeping it, docs/performance.md). May change at any time.
#[doc(hidden)]
pub mod internals {
    pub use crate::npz::{read_members, ZipMember, METHOD_DEFLATE, METHOD_STORED};
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn dump_is_send_and_sync() {
        assert_send_sync::<super::Dump>();
        assert_send_sync::<super::DumpError>();
    }
}
