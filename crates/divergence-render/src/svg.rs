//! A small SVG writer (no dependency): elements with presentation attributes, every piece of
//! text escaped, coordinates rounded to one decimal so the files stay small.
//!
//! Styles are attributes, not CSS classes, so the same drawing works inline in the HTML report
//! and standalone (`--plot FILE.svg`).

use std::fmt::Write as _;

/// Escapes text for HTML / XML content and attribute values (`&`, `<`, `>`, `"`, `'`;
/// control characters other than newline and tab become U+FFFD).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 forbids most control characters, even escaped: a probe name holding
            // one must not make `--plot FILE.svg` unreadable.
            // So are U+FFFE and U+FFFF (XML's Char excludes them).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            _ => out.push(c),
        }
    }
    out
}

/// A coordinate with at most one decimal (`12`, `12.5`).
pub(crate) fn n(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// An SVG document being written into a string.
pub(crate) struct Svg {
    buf: String,
}

impl Svg {
    /// Opens `<svg>` of this size. `standalone` adds the XML namespace a file needs (inline SVG
    /// in HTML needs none, and the HTML report names no URL at all).
    pub(crate) fn new(width: f64, height: f64, standalone: bool, label: &str) -> Svg {
        let ns = if standalone {
            " xmlns=\"http://www.w3.org/2000/svg\""
        } else {
            ""
        };
        let mut buf = String::new();
        let _ = writeln!(
            buf,
            "<svg{ns} width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\" \
             font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\" font-size=\"12\">",
            w = n(width),
            h = n(height),
            label = escape(label),
        );
        Svg { buf }
    }

    /// A line segment.
    pub(crate) fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
        let _ = writeln!(
            self.buf,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {style}/>",
            n(x1),
            n(y1),
            n(x2),
            n(y2)
        );
    }

    /// A rectangle, with an optional tooltip.
    pub(crate) fn rect(
        &mut self,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        style: &str,
        title: Option<&str>,
    ) {
        let _ = write!(
            self.buf,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {style}",
            n(x),
            n(y),
            n(w),
            n(h)
        );
        self.close("rect", title);
    }

    /// A circle, with an optional tooltip.
    pub(crate) fn circle(&mut self, cx: f64, cy: f64, r: f64, style: &str, title: Option<&str>) {
        let _ = write!(
            self.buf,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" {style}",
            n(cx),
            n(cy),
            n(r)
        );
        self.close("circle", title);
    }

    /// A path (`d` is built by the caller from numbers only), with an optional tooltip.
    pub(crate) fn path(&mut self, d: &str, style: &str, title: Option<&str>) {
        let _ = write!(self.buf, "<path d=\"{}\" {style}", escape(d));
        self.close("path", title);
    }

    /// A polyline through the points (nothing for fewer than two).
    pub(crate) fn polyline(&mut self, points: &[(f64, f64)], style: &str) {
        if points.len() < 2 {
            return;
        }
        let pts: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{},{}", n(x), n(y)))
            .collect();
        let _ = writeln!(
            self.buf,
            "<polyline points=\"{}\" fill=\"none\" {style}/>",
            pts.join(" ")
        );
    }

    /// Text at (x, y); `anchor` is `start`, `middle` or `end`; `extra` more attributes.
    pub(crate) fn text(&mut self, x: f64, y: f64, anchor: &str, extra: &str, text: &str) {
        let _ = writeln!(
            self.buf,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" {extra}>{}</text>",
            n(x),
            n(y),
            escape(text)
        );
    }

    /// `10` with a superscript exponent (`10⁻³` drawn as a tspan), right-aligned at (x, y).
    pub(crate) fn power_of_ten(&mut self, x: f64, y: f64, exp: i32) {
        let _ = writeln!(
            self.buf,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#333\">10<tspan dy=\"-6\" font-size=\"9\">{exp}</tspan></text>",
            n(x),
            n(y)
        );
    }

    /// Ends the open `<tag ...` element: self-closed, or with a `<title>` tooltip.
    fn close(&mut self, tag: &str, title: Option<&str>) {
        match title {
            Some(t) => {
                let _ = writeln!(self.buf, "><title>{}</title></{tag}>", escape(t));
            }
            None => self.buf.push_str("/>\n"),
        }
    }

    /// Closes `</svg>` and returns the document.
    pub(crate) fn finish(mut self) -> String {
        self.buf.push_str("</svg>\n");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn control_characters_do_not_reach_the_xml() {
        assert_eq!(escape("a\u{1}b\u{7f}c\nd\te"), "a\u{FFFD}b\u{FFFD}c\nd\te");
        assert_eq!(escape("x\u{FFFE}y\u{FFFF}"), "x\u{FFFD}y\u{FFFD}");
    }

    #[test]
    fn numbers_have_one_decimal_at_most() {
        assert_eq!(n(12.0), "12");
        assert_eq!(n(12.04), "12");
        assert_eq!(n(12.06), "12.1");
        assert_eq!(n(-0.5), "-0.5");
    }

    #[test]
    fn elements_with_titles_are_closed_by_their_tag() {
        let mut svg = Svg::new(10.0, 10.0, false, "t");
        svg.rect(0.0, 0.0, 1.0, 1.0, "fill=\"red\"", Some("a <b>"));
        svg.circle(1.0, 1.0, 1.0, "fill=\"red\"", None);
        let s = svg.finish();
        assert!(s.contains("<rect x=\"0\" y=\"0\" width=\"1\" height=\"1\" fill=\"red\"><title>a &lt;b&gt;</title></rect>"));
        assert!(s.contains("<circle cx=\"1\" cy=\"1\" r=\"1\" fill=\"red\"/>"));
        assert!(!s.contains("http"));
        assert!(Svg::new(1.0, 1.0, true, "t").finish().contains("xmlns="));
    }
}
