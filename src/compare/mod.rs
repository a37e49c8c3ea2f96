//! Comparing two reports cell by cell: which metrics regressed, improved, or stayed within
//! noise. Pure: the inputs are parsed reports, the output a [`Comparison`]; reading files and
//! printing happen elsewhere.
//!
//! A regression needs both a change beyond the metric's threshold in the bad direction and
//! statistical significance at 95%, two-sided:
//!
//! * against one baseline run: Welch's t-test on the per-repetition samples. A metric measured
//!   once per cell (load time, memory, energy) has no samples; it needs an absolute change beyond
//!   a floor instead. Repetitions of one run share that run's conditions, so they understate how
//!   much two runs differ: this mode needs thresholds above the machine's run-to-run noise.
//! * against a baseline of three or more runs: how far the current run falls from the baseline
//!   runs' distribution (a t prediction interval on the per-run means, k − 1 degrees of
//!   freedom), which measures the run-to-run noise instead of assuming it away.
//!
//! The quality metrics (`kld_mean`, `top1_agree`) are means over the scored tokens, reported
//! with their standard errors, and deterministic for the same files, build and corpus: they
//! compare only between cells scored against the same reference on the same corpus, by a z-test
//! on the two means (p < 0.05) with a threshold and an absolute floor, against any number of
//! baseline runs.

mod render;
mod statistics;
#[cfg(test)]
mod tests;
mod verdict;
mod view;

pub use render::{explanation, markdown, rows};
pub use statistics::{between_runs_p, welch_p, z_p};
pub use verdict::{
    compare, confirm, CellComparison, Comparison, Confirmation, MetricResult, Verdict,
};
pub use view::{
    cell_params_key, check_finite, from_report, read, read_many, CellView, QualityView, ReportView,
    Stat,
};
