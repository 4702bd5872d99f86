//! [`Meta`]: the optional JSON metadata of a dump (docs/dump-format.md).
//!
//! In a `.npz` it is the entry `__meta__.npy`, a 1-D uint8 array of UTF-8 JSON; in a
//! `.safetensors` file it is the string value of key `"divergence"` in the header's
//! `__metadata__`. Unknown fields are kept in [`Meta::extra`] and written back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The value of [`Meta::format`] this crate writes.
pub const FORMAT_TAG: &str = "divergence-dump/1";

/// The npz entry name (without `.npy`) that holds the metadata.
pub const META_ENTRY: &str = "__meta__";

/// The key inside a safetensors `__metadata__` map that holds the metadata JSON.
pub const SAFETENSORS_META_KEY: &str = "divergence";

/// Dump metadata. Every field is optional in the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Meta {
    /// `"divergence-dump/1"`.
    #[serde(deserialize_with = "null_as_default")]
    pub format: String,
    /// Probe names in execution order.
    #[serde(deserialize_with = "null_as_default")]
    pub order: Vec<String>,
    /// Probe name -> original dtype name ("bfloat16" for a tensor stored as f32 in npz).
    #[serde(deserialize_with = "null_as_default")]
    pub dtypes: BTreeMap<String, String>,
    /// Token ids of the input (flattened, batch 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_ids: Option<Vec<i64>>,
    /// Who made the dump, e.g. `{"name":"transformers","torch":"2.11.0","dtype":"bfloat16"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<serde_json::Value>,
    /// The model config as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Meta {
    /// Parse metadata JSON; `Err` carries a lowercase description.
    pub fn from_json(bytes: &[u8]) -> Result<Meta, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("metadata is not a valid json object: {e}"))
    }

    /// Serialize to compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, maps and serde_json values cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A JSON `null` reads as the field's default, like a missing field ("every field is optional").
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_fields_read_as_missing() {
        let m = Meta::from_json(
            br#"{"format": null, "order": null, "dtypes": null, "input_ids": null}"#,
        )
        .expect("nulls are accepted");
        assert_eq!(m, Meta::default());
        let m = Meta::from_json(br#"{"order": ["a", "b"]}"#).expect("partial metadata");
        assert_eq!(m.order, ["a", "b"]);
    }
}
