//! [`Meta`]: the optional JSON metadata of a dump (docs/dump-format.md).
//!
//! In a `.npz` it is the entry `__meta__.npy`, a 1-D uint8 array of UTF-8 JSON; in a
//! `.safetensors` file it is the string value of key `"divergence"` in the header's
//! `__metadata__`. Unknown fields are kept in [`Meta::extra`] and written back unchanged.

use std::collections::BTreeMap;

use rayon::slice::ParallelSliceMut;
use serde::{Deserialize, Serialize};

/// The value of [`Meta::format`] this crate writes.
pub const FORMAT_TAG: &str = "divergence-dump/1";

/// The npz entry name (without `.npy`) that holds the metadata.
pub const META_ENTRY: &str = "__meta__";

/// The key inside a safetensors `__metadata__` map that holds the metadata JSON.
pub const SAFETENSORS_META_KEY: &str = "divergence";

/// Largest metadata JSON read (64 MiB; a real dump's is a few hundred KiB): checked against
/// the size a header declares, before anything is inflated or allocated.
pub const MAX_META_BYTES: usize = 64 << 20;

/// Most items metadata JSON may hold, list elements and object fields counted
/// ([`json_items`]), checked before it is parsed: two a tensor for the most tensors a dump may
/// hold ([`crate::MAX_ENTRIES`]: its name in `order`, its dtype in `dtypes`) and 262,144 for
/// the rest (`input_ids` of a long context among them). Parsing costs ~80-180 bytes an item
/// (near the cap, `diff` peaks at ~200 MB for a list of zeros, ~420 MB for `dtypes`), so
/// 64 MiB of `0,0,0,...` (33 million items, a few KiB deflated) took 4.3 GB before this cap
/// (a bad-input hunt, 2026-12-04). A 256-step decode stored one array a step lists ~300,000.
pub const MAX_META_ITEMS: usize = 2 * crate::MAX_ENTRIES + (1 << 18);

/// How many items `json` holds ([`divergence_names::json::counts`]): list elements and object
/// fields. One pass over the bytes, nothing allocated.
pub fn json_items(json: &[u8]) -> usize {
    divergence_names::json::counts(json).items
}

/// Where serde stopped at a `\u` escape of half a UTF-16 surrogate pair (`"a\ud800"`: "unexpected
/// end of hex escape", a bad-input hunt), what wrote it: Python's `json.dumps` escapes a string
/// that is not valid Unicode so (a name decoded with `errors="surrogateescape"`), and serde
/// reads only valid Unicode. Empty for any other error.
fn surrogate_hint(bytes: &[u8], e: &serde_json::Error) -> &'static str {
    let text = e.to_string();
    let escape = text.contains("hex escape") || text.contains("surrogate");
    // `\u` then D800-DFFF, in either case.
    let half = bytes.windows(4).any(|w| {
        w[..2] == *b"\\u"
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    });
    match escape && half {
        true => {
            "; a \\u escape of half a surrogate pair (\\ud800-\\udfff) is text that is not valid \
             Unicode, as Python's json.dumps writes a name decoded with surrogateescape: write \
             names as valid Unicode"
        }
        false => "",
    }
}

/// What is wrong with metadata JSON that [`Meta`] could not be read from: not JSON at all, JSON
/// that is not an object, or the field whose value is not what it should be (a bad-input hunt:
/// `{"format": 1}` was said to be "not a valid json object", and a safetensors `"divergence":
/// "null"` to be "expected struct Meta"). Worked out on the error path only: the metadata is
/// parsed again, as a value and then field by field.
fn parse_error(bytes: &[u8], e: &serde_json::Error) -> String {
    use serde_json::{error::Category, Value};
    // Only a value of the wrong kind is looked for again (64 MiB of metadata parse again in
    // ~1.5 s: a review); a syntax error is the text's, and JSON nested past serde's depth
    // limit is said as serde says it.
    match e.classify() {
        Category::Data => {}
        Category::Syntax | Category::Eof if !e.to_string().contains("recursion limit") => {
            return format!(
                "metadata is not valid json: {e}{}",
                surrogate_hint(bytes, e)
            )
        }
        _ => return format!("metadata cannot be read: {e}"),
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => return format!("metadata is not a valid json object: {e}"),
    };
    let Value::Object(fields) = value else {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        return format!("metadata is {kind}, not a json object of fields");
    };
    // (Keys in sorted order: where several fields are wrong, one of them is named.)
    for (key, v) in fields {
        let shown = crate::error::brief(&Value::from(key.as_str()).to_string(), 63);
        let one = Value::Object([(key, v)].into_iter().collect());
        if let Err(e) = serde_json::from_value::<Meta>(one) {
            return format!("metadata field {shown}: {e}");
        }
    }
    format!("metadata is not a valid json object: {e}")
}

/// Dump metadata. Every field is optional in the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Meta {
    /// `"divergence-dump/1"`.
    #[serde(deserialize_with = "null_as_default")]
    pub format: String,
    /// Probe names in execution order.
    #[serde(deserialize_with = "null_as_default")]
    pub order: divergence_names::NameList,
    /// Probe name -> original dtype name ("bfloat16" for a tensor stored as f32 in npz).
    #[serde(deserialize_with = "dtype_map")]
    pub dtypes: BTreeMap<String, String>,
    /// Token ids of the input (flattened, batch 1).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "token_ids"
    )]
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
    /// The string `producer.<key>`, where the producer records one.
    pub fn producer_str(&self, key: &str) -> Option<&str> {
        self.producer.as_ref()?.get(key)?.as_str()
    }

    /// Parse metadata JSON; `Err` carries a lowercase description.
    pub fn from_json(bytes: &[u8]) -> Result<Meta, String> {
        let items = json_items(bytes);
        if items > MAX_META_ITEMS {
            return Err(format!(
                "metadata holds {items} json items (list elements and object fields), more than the {MAX_META_ITEMS} allowed"
            ));
        }
        let meta: Meta = serde_json::from_slice(bytes).map_err(|e| parse_error(bytes, &e))?;
        meta.check_format()?;
        Ok(meta)
    }

    /// `format`, when given, must be [`FORMAT_TAG`]: another version of the format may lay
    /// out what this one reads otherwise, and would be read wrong without a word (a
    /// bad-input hunt: `"divergence-dump/99"` was read as version 1). A missing or null
    /// `format` reads as version 1, as every field is optional.
    fn check_format(&self) -> Result<(), String> {
        let f = self.format.as_str();
        if f.is_empty() || f == FORMAT_TAG {
            return Ok(());
        }
        let shown = crate::error::brief(&serde_json::Value::from(f).to_string(), 63);
        // A later version (`divergence-dump/2` and on) is said as such.
        let later = f
            .strip_prefix("divergence-dump/")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 1);
        Err(format!(
            "format {shown} is not \"{FORMAT_TAG}\", the only version this divergence reads{}",
            if later {
                " (a later version of divergence wrote it?)"
            } else {
                ""
            }
        ))
    }

    /// `decode_steps` (docs/dump-format.md, "Decode steps"): `None` when absent or null;
    /// `Err` (lowercase, naming the field and the value) when it is not a step count. The one
    /// reading of it: `diff` and `run --decode-from` refuse the same values.
    pub fn decode_steps(&self) -> Result<Option<u64>, String> {
        match self.extra.get("decode_steps") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                format!("metadata decode_steps is {}, not a step count", preview(v))
            }),
        }
    }

    /// `decode_ids`: `None` when absent or null; `Err` when it is not a list of integers in
    /// the i64 range (the one reading of it, as [`Meta::decode_steps`]).
    pub fn decode_ids(&self) -> Result<Option<Vec<i64>>, String> {
        match self.extra.get("decode_ids") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    // A generated token's id is never negative (found by a bad-input hunt:
                    // -5 passed where 5.0 and true did not).
                    v.as_i64().filter(|&t| t >= 0).ok_or_else(|| {
                        format!("metadata decode_ids: {} is not a token id", preview(v))
                    })
                })
                .collect::<Result<Vec<i64>, String>>()
                .map(Some),
            Some(v) => Err(format!(
                "metadata decode_ids is not a list of token ids: {}",
                preview(v)
            )),
        }
    }

    /// Serialize to compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, maps and serde_json values cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A JSON value in a message: on one line, at most 60 characters of it and `...`.
fn preview(v: &serde_json::Value) -> String {
    crate::error::brief(&v.to_string(), 63)
}

/// `input_ids`: JSON integers in the i64 range. serde_json reads an integer beyond u64 as a
/// float, so its own error would call `10^30` "floating point `1e30`": say what it is.
fn token_ids<'de, D>(deserializer: D) -> Result<Option<Vec<i64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Error, Visitor};

    struct Id(i64);
    struct IdVisitor;
    impl Visitor<'_> for IdVisitor {
        type Value = Id;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer token id")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Id, E> {
            Ok(Id(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Id, E> {
            i64::try_from(v)
                .map(Id)
                .map_err(|_| out_of_range(&v.to_string()))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Id, E> {
            if v.is_finite() && v.fract() == 0.0 && v.abs() >= 9.2e18 {
                Err(out_of_range(&format!("{v:e}")))
            } else {
                Err(E::custom(format!(
                    "input_ids: {v} is not an integer token id"
                )))
            }
        }
    }
    fn out_of_range<E: Error>(v: &str) -> E {
        E::custom(format!(
            "input_ids: integer {v} is out of range for a token id (64-bit signed)"
        ))
    }
    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
            d.deserialize_any(IdVisitor)
        }
    }
    let ids = Option::<Vec<Id>>::deserialize(deserializer)?;
    Ok(ids.map(|v| v.into_iter().map(|i| i.0).collect()))
}

/// `dtypes`: like [`null_as_default`], but the map is built at once from its sorted pairs (a
/// decode dump lists tens of thousands of names; inserting them one by one compared long
/// common prefixes over and over). A key given twice keeps its last value, as before.
fn dtype_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Pairs(Vec<(String, String)>);
    struct PairsVisitor;
    impl<'de> serde::de::Visitor<'de> for PairsVisitor {
        type Value = Pairs;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
            let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(pair) = map.next_entry::<String, String>()? {
                v.push(pair);
            }
            Ok(Pairs(v))
        }
    }
    impl<'de> Deserialize<'de> for Pairs {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
            d.deserialize_map(PairsVisitor)
        }
    }
    let Some(Pairs(mut pairs)) = Option::<Pairs>::deserialize(deserializer)? else {
        return Ok(BTreeMap::new());
    };
    // Stable sort (in parallel), then the last of equal keys wins (what inserting them in
    // order did).
    pairs.par_sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    Ok(pairs.into_iter().collect())
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
    fn decode_steps_and_ids_are_read_one_way() {
        let meta =
            |extra: serde_json::Value| Meta::from_json(extra.to_string().as_bytes()).unwrap();
        let m = meta(serde_json::json!({"decode_steps": 2, "decode_ids": [5, 6]}));
        assert_eq!(m.decode_steps(), Ok(Some(2)));
        assert_eq!(m.decode_ids(), Ok(Some(vec![5, 6])));
        let m = meta(serde_json::json!({"decode_steps": null}));
        assert_eq!(m.decode_steps(), Ok(None));
        assert_eq!(m.decode_ids(), Ok(None));
        for (bad, says) in [
            (
                serde_json::json!({"decode_steps": "two"}),
                "metadata decode_steps is \"two\", not a step count",
            ),
            (
                serde_json::json!({"decode_steps": -1}),
                "metadata decode_steps is -1, not a step count",
            ),
        ] {
            assert_eq!(meta(bad).decode_steps(), Err(says.to_string()));
        }
        for (bad, says) in [
            (
                serde_json::json!({"decode_ids": ["5"]}),
                "metadata decode_ids: \"5\" is not a token id",
            ),
            (
                serde_json::json!({"decode_ids": [1e30]}),
                "metadata decode_ids: 1e+30 is not a token id",
            ),
            (
                serde_json::json!({"decode_ids": "5"}),
                "metadata decode_ids is not a list of token ids: \"5\"",
            ),
        ] {
            assert_eq!(meta(bad).decode_ids(), Err(says.to_string()));
        }
        let long = serde_json::json!({"decode_ids": "x".repeat(100)});
        let e = meta(long).decode_ids().unwrap_err();
        assert!(e.ends_with("...") && e.len() < 120, "{e}");
    }

    #[test]
    fn a_parse_error_names_what_is_wrong() {
        let err = |json: &str| Meta::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(
            err(r#"{"order": [], "format": 1}"#),
            "metadata field \"format\": invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            err(r#"{"dtypes": {"x": 5}}"#).split(':').next(),
            Some("metadata field \"dtypes\"")
        );
        assert_eq!(err("null"), "metadata is null, not a json object of fields");
        assert_eq!(
            err("[1]"),
            "metadata is a list, not a json object of fields"
        );
        assert!(
            err("{\"format\": ").starts_with("metadata is not valid json: "),
            "{}",
            err("{\"format\": ")
        );
        // Half a surrogate pair, as Python's json.dumps writes text that is not Unicode: said
        // so, alone or before another escape (serde's words differ).
        for json in [
            r#"{"order": ["a\ud800"]}"#,
            r#"{"order": ["a\udc80\u0041"]}"#,
        ] {
            let e = err(json);
            assert!(
                e.starts_with("metadata is not valid json: ")
                    && e.ends_with("; a \\u escape of half a surrogate pair (\\ud800-\\udfff) is text that is not valid Unicode, as Python's json.dumps writes a name decoded with surrogateescape: write names as valid Unicode"),
                "{e}"
            );
        }
        // A whole pair is valid.
        assert!(Meta::from_json(r#"{"order": ["a\ud83d\ude00"]}"#.as_bytes()).is_ok());
        // Another broken escape is not said to be one.
        assert!(
            !err(r#"{"order": ["a\u12"]}"#).contains("surrogate"),
            "{}",
            err(r#"{"order": ["a\u12"]}"#)
        );
        let deep = format!("{{\"producer\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(
            err(&deep).starts_with("metadata cannot be read: recursion limit exceeded"),
            "{}",
            err(&deep)
        );
    }

    #[test]
    fn another_format_is_refused() {
        for (json, says) in [
            (
                r#"{"format": "divergence-dump/99"}"#,
                r#"format "divergence-dump/99" is not "divergence-dump/1", the only version this divergence reads (a later version of divergence wrote it?)"#,
            ),
            (
                r#"{"format": "divergence-dump/1.0"}"#,
                r#"format "divergence-dump/1.0" is not "divergence-dump/1", the only version this divergence reads"#,
            ),
            (
                r#"{"format": "divergence-dump/0"}"#,
                r#"format "divergence-dump/0" is not "divergence-dump/1", the only version this divergence reads"#,
            ),
            (
                r#"{"format": "pt"}"#,
                r#"format "pt" is not "divergence-dump/1", the only version this divergence reads"#,
            ),
        ] {
            assert_eq!(Meta::from_json(json.as_bytes()), Err(says.to_string()));
        }
        for ok in [
            r#"{"format": "divergence-dump/1"}"#,
            r#"{"format": ""}"#,
            "{}",
        ] {
            assert!(Meta::from_json(ok.as_bytes()).is_ok(), "{ok}");
        }
        // A long or odd value is said in brief, on one line.
        let long = format!(r#"{{"format": "divergence-dump/{}\n"}}"#, "9".repeat(200));
        let e = Meta::from_json(long.as_bytes()).unwrap_err();
        assert!(e.len() < 160 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn null_fields_read_as_missing() {
        let m = Meta::from_json(
            br#"{"format": null, "order": null, "dtypes": null, "input_ids": null}"#,
        )
        .expect("nulls are accepted");
        assert_eq!(m, Meta::default());
        let m = Meta::from_json(br#"{"order": ["a", "b"]}"#).expect("partial metadata");
        assert_eq!(m.order.iter().map(|n| &**n).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn dtypes_keep_the_last_of_a_repeated_key() {
        let m =
            Meta::from_json(br#"{"dtypes": {"b": "x", "a": "y", "b": "z", "c": "w", "a": "v"}}"#)
                .expect("valid json");
        let want: BTreeMap<String, String> = [("a", "v"), ("b", "z"), ("c", "w")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(m.dtypes, want);
        assert!(Meta::from_json(br#"{"dtypes": ["a"]}"#).is_err());
        assert!(Meta::from_json(br#"{"dtypes": {"a": 1}}"#).is_err());
    }

    #[test]
    fn token_ids_out_of_range_are_called_integers() {
        let m = Meta::from_json(br#"{"input_ids": [1, -2, 9223372036854775807]}"#).unwrap();
        assert_eq!(m.input_ids, Some(vec![1, -2, i64::MAX]));
        let e =
            Meta::from_json(br#"{"input_ids": [1, 1000000000000000000000000000000]}"#).unwrap_err();
        assert!(
            e.contains("input_ids: integer 1e30 is out of range for a token id (64-bit signed)"),
            "{e}"
        );
        assert!(!e.contains("floating point"), "{e}");
        let e = Meta::from_json(br#"{"input_ids": [18446744073709551615]}"#).unwrap_err();
        assert!(
            e.contains("integer 18446744073709551615 is out of range"),
            "{e}"
        );
        let e = Meta::from_json(br#"{"input_ids": [1.5]}"#).unwrap_err();
        assert!(
            e.contains("input_ids: 1.5 is not an integer token id"),
            "{e}"
        );
        assert_eq!(
            Meta::from_json(br#"{"input_ids": null}"#)
                .unwrap()
                .input_ids,
            None
        );
    }

    #[test]
    fn metadata_of_too_many_items_is_refused_before_parsing() {
        // One item past the cap, in an unknown field (kept whole before the cap: 33 million
        // zeros took 4.3 GB).
        let zeros = MAX_META_ITEMS - 1;
        let mut json = String::from("{\"junk\": [0");
        json.push_str(&",0".repeat(zeros));
        json.push_str("]}");
        assert_eq!(json_items(json.as_bytes()), MAX_META_ITEMS + 1);
        let e = Meta::from_json(json.as_bytes()).unwrap_err();
        assert!(e.contains("more than the 2359296 allowed"), "{e}");
        // At the cap it is read.
        let at_cap = json.replacen(",0", "", 1);
        assert_eq!(json_items(at_cap.as_bytes()), MAX_META_ITEMS);
        assert!(Meta::from_json(at_cap.as_bytes()).is_ok());
    }
}
