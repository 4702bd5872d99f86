//! The JSON renderer: the [`Report`] through serde_json, pretty-printed, fields in struct order.

use std::io::{self, Write};

use divergence_diff::Report;

pub(crate) fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    // io::Error::from keeps the writer's own io error (and its kind: a broken pipe stays one).
    serde_json::to_writer_pretty(&mut *out, report).map_err(io::Error::from)?;
    out.write_all(b"\n")
}
