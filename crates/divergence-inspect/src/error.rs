//! The one error type of this crate: input that cannot be inspected at all.
//!
//! Everything that *can* be reported (a NaN, a missing tensor, a transposed weight, a malformed
//! config field) is a [`Finding`](crate::Finding) inside the report, not an error. An
//! [`InspectError`] means the checkpoint could not be read: a missing directory, no
//! `config.json`, unparsable JSON, a corrupt safetensors file. Those are exactly the errors of
//! [`divergence_checkpoint`], which locates and reads checkpoints for every command, so this is
//! that type (same variants, same one-line lowercase messages naming the file), not a copy.

/// Why a checkpoint could not be inspected.
pub type InspectError = divergence_checkpoint::Error;
