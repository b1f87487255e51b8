//! A family's part of a report, independent of where it is drawn: the terminal tables and the
//! HTML report draw the same [`Section`] (and exporters can read it too), so a column added to
//! a family shows everywhere.
use probe_common::Family;

use crate::run::Run;

use super::Method;

/// What to show; `Default` is what `kpath record` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionOptions {
    /// Rows per long table (syscalls, locks); the rest is counted in one line.
    pub top: usize,
    /// How the lock table is grouped.
    pub locks_by: LocksBy,
}

impl Default for SectionOptions {
    fn default() -> Self {
        SectionOptions {
            top: 25,
            locks_by: Default::default(),
        }
    }
}

/// How the lock table is grouped (`--locks-by`), as `perf lock contention` groups it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LocksBy {
    /// Per first non-locking caller and lock class (perf's default caller mode).
    #[default]
    Caller,
    /// Per lock class: a static lock's name, a known heap lock, else `<type> in <caller>`.
    Lock,
    /// Per waiting thread.
    Task,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of text cells; `hidden` rows past the shown ones are counted as "N more `what`".
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Stable id (HTML element ids: `<run>-<id>`).
    pub id: &'static str,
    pub columns: Vec<(&'static str, Align)>,
    pub rows: Vec<Vec<String>>,
    pub hidden: usize,
    pub hidden_what: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Table(Table),
    /// A sentence: a summary, or why there is no table ("no syscalls recorded").
    Line(String),
}

/// One family's section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The family's word, or `processes` for the per-process breakdown.
    pub name: &'static str,
    /// A heading for documents ("Top syscalls (by total time)").
    pub heading: &'static str,
    /// The method's name in run.json (`raw_tp`), if the run names one.
    pub method: Option<String>,
    pub blocks: Vec<Block>,
    /// Latency histograms (log2 ns buckets) for the detailed view, labelled.
    pub histograms: Vec<(String, Vec<u64>)>,
}

impl Section {
    /// An empty section of `family` as `run` recorded it, or `None` when it was not recorded.
    pub fn of(run: &Run, family: Family, heading: &'static str) -> Option<Section> {
        let method = run.methods.get(family.name())?;
        Some(Section {
            name: family.name(),
            heading,
            method: Some(method.clone()),
            blocks: Vec::new(),
            histograms: Vec::new(),
        })
    }

    /// A section no family owns (no method).
    pub fn named(name: &'static str, heading: &'static str) -> Section {
        Section {
            name,
            heading,
            method: None,
            blocks: Vec::new(),
            histograms: Vec::new(),
        }
    }

    /// What produced the numbers, in words (the method's name when it is not one of ours).
    pub fn method_described(&self) -> Option<&str> {
        self.method
            .as_deref()
            .map(|m| Method::from_name(m).map_or(m, |x| x.describe()))
    }

    pub fn line(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Line(text.into()));
    }

    pub fn table(&mut self, t: Table) {
        self.blocks.push(Block::Table(t));
    }
}

/// Builds a [`Table`] from column specs and rows.
pub fn table(
    id: &'static str,
    columns: &[(&'static str, Align)],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Table {
    Table {
        id,
        columns: columns.to_vec(),
        rows: rows.into_iter().collect(),
        hidden: 0,
        hidden_what: "",
    }
}

/// `total / count` as a duration, `-` without a count.
pub fn avg(total_ns: u64, count: u64) -> String {
    match total_ns.checked_div(count) {
        Some(a) => crate::fmt::ns(a),
        None => "-".to_string(),
    }
}

/// The value formatted, or `-`.
pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}
