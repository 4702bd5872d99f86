//! Names shown to a person: user data (a tensor name, a file name, a config string) made safe
//! for a terminal and for Markdown, once for every renderer (`diff`'s and `inspect`'s).
//!
//! - [`needs_escape`]: a character never shown raw: a control character, a line or paragraph
//!   separator, or one that is [`is_hidden`] (escaped by [`crate::one_line`] and every text
//!   renderer).
//! - [`markdown_text`]: free text for Markdown, its markup backslash-escaped.
//! - [`markdown_code`]: a name as a Markdown code span, shown as it is.

/// A character never written raw to a terminal or into Markdown: control characters (a
/// newline, a terminal escape), the Unicode line and paragraph separators, and [`is_hidden`]
/// characters.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_hidden(c)
}

/// A character that changes how the text around it is shown without being seen itself, or is
/// not seen at all: the bidirectional embeddings, overrides, isolates and marks ("Trojan
/// Source": a name reading `lm_head` on screen can hold other bytes) and Unicode's
/// default-ignorable code points (zero-width spaces and joiners, the soft hyphen, the word
/// joiner and invisible operators, variation selectors, Hangul fillers, tag characters, the
/// byte-order mark, the interlinear annotation marks). Found by bad-input hunts: they reached
/// the terminal table raw.
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Free text for Markdown (a line after a prefix, never at a line's start): every character
/// that could start markup there is backslash-escaped (CommonMark shows `\x` as `x` for any
/// ASCII punctuation): `\`, `` ` `` (code), `*` (emphasis), `_` at a word's edge (inside a
/// word it never is emphasis: `self_attn` stays as it is), `[` (a link or an image), `<`
/// (HTML, autolinks), `~` (strikethrough), `&` (entities), and `|` when `table` (a cell's
/// end). GFM's bare-URL autolinks are broken by escaping the `:` of `://` and the `.` after
/// `www`; an e-mail address (`a@b.example`) cannot be stopped by an escape (GitHub links
/// `a\@b.example` and `a&#64;b.example` all the same), so a word that could be one (the
/// characters of an address, an `@`, a `.` after it) is written as a code span
/// ([`markdown_code`]), where nothing is read.
pub fn markdown_text(text: &str, table: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let word = |i: Option<&char>| i.is_some_and(|c| c.is_alphanumeric());
    // The characters of GFM's e-mail autolink (local part, `@`, domain).
    let address = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '@');
    let mut skip_to = 0;
    for (i, &c) in chars.iter().enumerate() {
        if i < skip_to {
            continue;
        }
        if address(c) && (i == 0 || !address(chars[i - 1])) {
            let end = chars[i..]
                .iter()
                .position(|&c| !address(c))
                .map_or(chars.len(), |k| i + k);
            let run = &chars[i..end];
            let mailish = run
                .iter()
                .position(|&c| c == '@')
                .is_some_and(|at| run[at + 1..].contains(&'.'));
            if mailish {
                out.push_str(&markdown_code(&run.iter().collect::<String>()));
                skip_to = end;
                continue;
            }
        }
        let escape = match c {
            '\\' | '`' | '*' | '[' | '<' | '~' | '&' => true,
            '|' => table,
            '_' => !(word(i.checked_sub(1).and_then(|j| chars.get(j))) && word(chars.get(i + 1))),
            ':' => chars.get(i + 1..i + 3) == Some(&['/', '/']),
            '.' => i >= 3 && chars[i - 3..i].iter().all(|c| c.eq_ignore_ascii_case(&'w')),
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `name` as a Markdown code span, shown exactly (CommonMark reads nothing inside one): fenced
/// by one backtick more than its longest run of backticks, and padded with a space where it
/// starts or ends with a backtick or a space (one space each side is taken off again). In a
/// table cell, a `|` must still be escaped (`\|`: GFM reads it inside code too).
pub fn markdown_code(name: &str) -> String {
    let longest = name.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = name.starts_with(['`', ' ']) || name.ends_with(['`', ' ']);
    let space = if pad { " " } else { "" };
    format!("{fence}{space}{name}{space}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_escapes_markup_and_leaves_words_alone() {
        assert_eq!(
            markdown_text("model.layers.0.self_attn.q_proj", false),
            "model.layers.0.self_attn.q_proj"
        );
        assert_eq!(
            markdown_text("x.![px](https://evil.example/p.png)", false),
            "x.!\\[px](https\\://evil.example/p.png)"
        );
        assert_eq!(markdown_text("__init__", false), "\\_\\_init\\_\\_");
        assert_eq!(
            markdown_text("see www.evil.example", false),
            "see www\\.evil.example"
        );
        assert_eq!(
            markdown_text("atol*sqrt(n) <b> a|b `c` ~d~ &amp; \\", false),
            "atol\\*sqrt(n) \\<b> a|b \\`c\\` \\~d\\~ \\&amp; \\\\"
        );
        assert_eq!(markdown_text("a|b", true), "a\\|b");
    }

    /// GitHub links an e-mail address whatever is escaped in it; a code span it leaves alone
    /// (checked with cmark-gfm, GitHub's renderer). A probe's step (`x.mlp@2`) is no address.
    #[test]
    fn markdown_text_keeps_an_address_out_of_a_link() {
        assert_eq!(
            markdown_text("see user.name@host.example, then", false),
            "see `user.name@host.example`, then"
        );
        assert_eq!(markdown_text("a@b.c|d", true), "`a@b.c`\\|d");
        assert_eq!(
            markdown_text("model.layers.0.mlp@2 and lm_head@17", false),
            "model.layers.0.mlp@2 and lm_head@17"
        );
        assert_eq!(markdown_text("x@y.z_w", false), "`x@y.z_w`");
        assert_eq!(markdown_text("@.", false), "`@.`");
        assert_eq!(markdown_text("é@b.c", false), "é`@b.c`");
    }

    #[test]
    fn markdown_code_shows_any_name_as_it_is() {
        assert_eq!(markdown_code("model.layers.0"), "`model.layers.0`");
        assert_eq!(markdown_code("a`b"), "``a`b``");
        assert_eq!(markdown_code("a``b`"), "``` a``b` ```");
        assert_eq!(markdown_code(" x "), "`  x  `");
        assert_eq!(markdown_code("<img src=x>"), "`<img src=x>`");
    }

    #[test]
    fn hidden_characters_are_the_invisible_ones() {
        for c in [
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2060}',
            '\u{E0041}',
            '\u{FE0F}',
            // the interlinear annotation marks (a bad-input hunt of 2026-12-05 found them raw)
            '\u{FFF9}',
            '\u{FFFB}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', 'é', '层', 'م', ' ', '\u{2028}'] {
            assert!(!is_hidden(c), "{c:?}");
        }
    }
}
