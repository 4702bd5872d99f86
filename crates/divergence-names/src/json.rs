//! A JSON text's size in items, counted before it is parsed: what the caps on metadata and on
//! safetensors headers (a dump's and a checkpoint shard's, [`safetensors_header`]) are checked
//! against, since a parse costs tens of bytes an item whatever the text's length
//! (docs/reliability.md, "Caps"). Bytes in, counts out: no I/O.

/// What [`counts`] finds in a JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Its items: the commas, `[` and `{` outside strings (the elements of every list and the
    /// fields of every object, give or take one for each empty list or object).
    pub items: usize,
    /// The fields of its first outermost object or list (its commas, plus one), however its
    /// keys are spelled, escaped or not; with the commas of any value after it, which no
    /// parse reads (`{..}{..}` is refused once the first is parsed).
    pub top: usize,
}

/// Counts `json` as [`Counts`] says: one pass over the bytes, nothing allocated. Text that is
/// not JSON is counted the same way (the parse that follows says what is wrong with it).
pub fn counts(json: &[u8]) -> Counts {
    let (mut items, mut top, mut depth) = (0usize, 0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                items += 1;
                depth += 1;
                // The first outermost value's (a second one set it back to 1, and a header
                // of a million tensors and a trailing `{}` read as one: a review).
                if depth == 1 && top == 0 {
                    top = 1;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => {
                items += 1;
                if depth == 1 {
                    top += 1;
                }
            }
            _ => {}
        }
    }
    Counts { items, top }
}

/// Most tensors a dump or a checkpoint shard may hold (the dump's `MAX_ENTRIES`).
pub const MAX_TENSORS: usize = 1 << 20;

/// Largest safetensors header read: the `safetensors` crate's own limit (its
/// `MAX_HEADER_SIZE`), checked from the length field before the header is touched.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Items a safetensors header may hold for each tensor it lists (a tensor of rank r is 7 + r:
/// its object, dtype, shape and offsets; room for rank 57), within [`MAX_ITEMS`].
pub const ITEMS_PER_TENSOR: usize = 64;

/// Most items a safetensors header may hold, whatever it lists: 16 a tensor for
/// [`MAX_TENSORS`] (a parse costs ~35 bytes an item of a list of zeros, ~70 of one-letter
/// strings: up to ~1.1 GiB at this cap, measured by a review).
pub const MAX_ITEMS: usize = 16 * MAX_TENSORS;

/// Items a safetensors header may hold beyond [`ITEMS_PER_TENSOR`] a tensor: its
/// `__metadata__` (string fields; ours is one JSON string) and slack.
pub const SPARE_ITEMS: usize = 1 << 16;

/// What [`safetensors_header`] found past its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPast {
    /// More tensors than the cap: how many.
    Tensors(usize),
    /// More items than the tensors it lists allow: how many, and how many were allowed.
    Items { items: usize, allowed: usize },
}

/// The header of the safetensors file `buf` counted against the caps before it is parsed: its
/// tensors (the top-level fields less `__metadata__`, however a tensor or a key is written) at
/// most `max_tensors`, and its items at most [`ITEMS_PER_TENSOR`] a tensor plus
/// [`SPARE_ITEMS`], and [`MAX_ITEMS`] in all (a header of one list of 49 million zeros lists
/// one tensor: refused at once; one of hundreds of thousands of tensors can still hold
/// [`MAX_ITEMS`]). `None` within
/// the caps, or when there is no length field or it is past [`MAX_HEADER_BYTES`] (the caller
/// says that). A header shorter than its length field says is counted as far as it goes.
pub fn safetensors_header(buf: &[u8], max_tensors: usize) -> Option<HeaderPast> {
    const META_KEY: &[u8] = b"\"__metadata__\"";
    let len = u64::from_le_bytes(buf.get(..8)?.try_into().ok()?);
    if len > MAX_HEADER_BYTES {
        return None;
    }
    let header = buf.get(8..)?;
    let header = header.get(..usize::try_from(len).ok()?).unwrap_or(header);
    let c = counts(header);
    // `__metadata__`, when it is there as written (spelled otherwise it counts as a tensor:
    // one too many at most).
    let meta = header.windows(META_KEY.len()).any(|w| w == META_KEY);
    let tensors = c.top.saturating_sub(usize::from(meta));
    let allowed = tensors
        .max(1)
        .saturating_mul(ITEMS_PER_TENSOR)
        .saturating_add(SPARE_ITEMS)
        .min(MAX_ITEMS);
    if tensors > max_tensors {
        Some(HeaderPast::Tensors(tensors))
    } else if c.items > allowed {
        Some(HeaderPast::Items {
            items: c.items,
            allowed,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `header` (its length field, then the header; no data).
    fn file(header: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header);
        out
    }

    #[test]
    fn items_are_counted_outside_strings() {
        assert_eq!(counts(b"{}").items, 1);
        assert_eq!(counts(br#"{"a": [1, 2, 3], "b": {"c": 0}}"#).items, 6);
        // Commas and brackets inside strings, escaped quotes included, are not items.
        assert_eq!(counts(br#"{"a,[{": "x\",[{,"}"#).items, 1);
        assert_eq!(counts(br#"["\\", 1]"#).items, 2);
    }

    #[test]
    fn top_counts_the_outermost_fields_however_written() {
        let c = counts(br#"{"a": {"x": 1, "y": 2}, "\u0062": [1, 2], "c": 3}"#);
        assert_eq!(c.top, 3);
        assert_eq!(counts(b"[]").top, 1);
        assert_eq!(counts(b"").top, 0);
        // A value after the first does not start the count again (it read 1 here).
        assert_eq!(counts(br#"{"a":0,"b":0}{}"#).top, 2);
    }

    #[test]
    fn a_header_past_its_tensors_is_refused_however_they_are_written() {
        // Tensors written as lists (no `data_offsets` key to count), one key escaped, one
        // `__metadata__`, and a trailing `{}` (which hid them all from the first count).
        let tensors: Vec<String> = (0..=8)
            .map(|i| format!("\"t{i}\":[\"F32\",[0],[0,0]]"))
            .collect();
        let h = format!(
            "{{\"__metadata__\":{{}},\"\\u0074x\":0,{}}}{{}}",
            tensors.join(",")
        );
        assert_eq!(
            safetensors_header(&file(h.as_bytes()), 9),
            Some(HeaderPast::Tensors(10))
        );
        assert_eq!(safetensors_header(&file(h.as_bytes()), 10), None);
    }

    #[test]
    fn a_header_past_its_items_is_refused_before_it_is_parsed() {
        // One list of zeros: one tensor, so ITEMS_PER_TENSOR + SPARE_ITEMS items (a 99 MB one
        // took 1.7 GB to be refused).
        let allowed = ITEMS_PER_TENSOR + SPARE_ITEMS;
        let mut h = String::from("{\"x\":[0");
        h.push_str(&",0".repeat(allowed - 1));
        h.push_str("]}");
        assert_eq!(
            safetensors_header(&file(h.as_bytes()), MAX_TENSORS),
            Some(HeaderPast::Items {
                items: allowed + 1,
                allowed
            })
        );
        let at_cap = h.replacen(",0", "", 1);
        assert_eq!(
            safetensors_header(&file(at_cap.as_bytes()), MAX_TENSORS),
            None
        );
        // Many tensors: MAX_ITEMS in all, however many they are.
        // `many` + 1 tensors, `{` and `[`, a comma after each key and MAX_ITEMS - 1 - many
        // zeros' commas: MAX_ITEMS + 1 items.
        let many = (MAX_ITEMS - SPARE_ITEMS) / ITEMS_PER_TENSOR;
        let mut h = String::from("{");
        for i in 0..many {
            h.push_str(&format!("\"t{i}\":0,"));
        }
        h.push_str("\"x\":[0");
        h.push_str(&",0".repeat(MAX_ITEMS - 1 - many));
        h.push_str("]}");
        assert_eq!(
            safetensors_header(&file(h.as_bytes()), MAX_TENSORS),
            Some(HeaderPast::Items {
                items: MAX_ITEMS + 1,
                allowed: MAX_ITEMS
            })
        );
    }

    #[test]
    fn a_real_header_is_within_the_caps() {
        let h = br#"{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3,4,5,6,7,8,9],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[],"data_offsets":[24,28]}}"#;
        assert_eq!(safetensors_header(&file(h), MAX_TENSORS), None);
        // Too short to hold a length field, or past the format's limit: the caller says so.
        assert_eq!(safetensors_header(b"{}", MAX_TENSORS), None);
        assert_eq!(
            safetensors_header(&u64::MAX.to_le_bytes(), MAX_TENSORS),
            None
        );
        // Shorter than its length field says: counted as far as it goes.
        let mut short = file(br#"{"a":0,"b":0}"#);
        short[0] = 200;
        assert_eq!(safetensors_header(&short, 1), Some(HeaderPast::Tensors(2)));
    }
}
