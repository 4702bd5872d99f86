//! `divergence-values`: tensor values as the diff engine, the dump reader and the checkpoint
//! lint see them, in one place.
//!
//! - [`ValuesRef`]: one tensor's values, borrowed: decoded (`f32`, `f64`) or raw little-endian
//!   elements as a file stores them (`*Le`, any alignment, e.g. straight from a memory map).
//!   `divergence-dump` hands it out, `divergence-diff` compares it.
//! - [`bf16_to_f32`], [`f16_to_f32`] and the [`Elem`] encodings: the exact widening of every
//!   element type, written once and branch-free so that the kernels that use it vectorize.
//! - [`Lanes::step`]: the per-element update of the pairwise statistics (squares, differences,
//!   max error, relative error, tolerance count), `#[inline(always)]` so that each vector build
//!   of a kernel (AVX-512, AVX2, portable) inlines the same IEEE operations in the same order.
//! - [`Piece`]: consecutive elements of a tensor where they are stored: a slice, or a run of
//!   a strided [`Gather`] (one part of a fused tensor) that the kernels read in place.
//! - [`fold_chunks`]: the deterministic parallel reduction both streaming kernels run on
//!   (chunks on rayon, merged in chunk order: results do not depend on the number of threads).
//!
//! No I/O, no errors, no dependency on another divergence crate.

mod chunks;
mod piece;
mod step;
mod values;
mod widen;

pub use chunks::fold_chunks;
pub use piece::{At, Gather, Piece};
pub use step::{Lanes, Tol};
pub use values::{ValuesRef, Visit};
pub use widen::{bf16_to_f32, elem, f16_to_f32, Elem};
