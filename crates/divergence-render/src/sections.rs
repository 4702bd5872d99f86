//! The sections of the table and Markdown views, and their order, written once for both.
//!
//! Each view implements [`Sections`] (one method per section); [`Sections::write_all`] walks
//! [`SECTIONS`], so the two views cannot list the sections in different orders.

use std::io;

/// One section of a rendered diff report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// The input_ids warning, first of all when flagged (the comparison is meaningless).
    InputIdsAlert,
    /// Files, tolerance mode, order source, warnings. The Markdown view leads with its verdict
    /// headline, so its header also carries the first divergence's facts.
    Header,
    /// The first divergence in detail, or the "no divergence" line.
    FirstDivergence,
    /// The ops table: context around the first divergence, or every / filtered op.
    Ops,
    /// One line per decode step (dumps with decode steps only).
    PerStep,
    /// One line per layer.
    PerLayer,
    /// The q_norm / k_norm amplification table.
    Amplification,
    /// Names present on one side only, and unreadable probes.
    NotCompared,
    /// The one-line summary.
    Summary,
}

/// The order of the sections, in both views.
pub(crate) const SECTIONS: [Section; 9] = [
    Section::InputIdsAlert,
    Section::Header,
    Section::FirstDivergence,
    Section::Ops,
    Section::PerStep,
    Section::PerLayer,
    Section::Amplification,
    Section::NotCompared,
    Section::Summary,
];

/// A view of the diff report: one method per [`Section`].
pub(crate) trait Sections {
    fn input_ids_alert(&mut self) -> io::Result<()>;
    fn header(&mut self) -> io::Result<()>;
    fn first_divergence(&mut self) -> io::Result<()>;
    fn ops(&mut self) -> io::Result<()>;
    fn per_step(&mut self) -> io::Result<()>;
    fn per_layer(&mut self) -> io::Result<()>;
    fn amplification(&mut self) -> io::Result<()>;
    fn not_compared(&mut self) -> io::Result<()>;
    fn summary(&mut self) -> io::Result<()>;

    /// Writes every section, in [`SECTIONS`] order.
    fn write_all(&mut self) -> io::Result<()> {
        for section in SECTIONS {
            match section {
                Section::InputIdsAlert => self.input_ids_alert()?,
                Section::Header => self.header()?,
                Section::FirstDivergence => self.first_divergence()?,
                Section::Ops => self.ops()?,
                Section::PerStep => self.per_step()?,
                Section::PerLayer => self.per_layer()?,
                Section::Amplification => self.amplification()?,
                Section::NotCompared => self.not_compared()?,
                Section::Summary => self.summary()?,
            }
        }
        Ok(())
    }
}
