//! A JSON text's size in items, counted before it is parsed: what the caps on metadata and on
//! safetensors headers (a dump's and a checkpoint's) are checked against, since a parse costs
//! tens of bytes an item whatever the text's length (docs/reliability.md, "Caps").

/// What [`counts`] finds in a JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Its items: the commas, `[` and `{` outside strings (the elements of every list and the
    /// fields of every object, give or take one for each empty list or object).
    pub items: usize,
    /// The fields of its outermost object or list (its commas, plus one), however its keys
    /// are spelled, escaped or not.
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
                if depth == 1 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
