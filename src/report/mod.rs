//! The report writers: one file per format behind the small [`Format`] trait (JSON, CSV,
//! Markdown), and the charts and HTML page. Writers never print.

pub mod charts;
pub mod csv;
pub mod html;
pub mod json;
pub mod load_charts;
pub mod md;
pub mod served;
pub mod serving_charts;
pub mod tune_chart;
pub mod tune_section;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::fsutil::write_atomic;
use crate::quality::QualityStats;
use crate::results::{CellResult, Report};

/// A report format written into the run folder.
pub trait Format {
    /// File name inside the run folder.
    fn file_name(&self) -> &'static str;
    /// The whole file's content for `report`.
    fn render(&self, report: &Report) -> Result<String>;
}

/// A cell's quality statistics, where its quality test ran and succeeded.
pub fn quality_stats(c: &CellResult) -> Option<&QualityStats> {
    c.quality.as_ref().and_then(|q| q.stats.as_ref())
}

/// The formats rewritten after every cell.
pub fn formats() -> Vec<Box<dyn Format>> {
    vec![
        Box::new(json::Json),
        Box::new(csv::Csv),
        Box::new(md::Markdown),
    ]
}

/// Writes every format of [`formats`] into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> Result<()> {
    for f in formats() {
        write_atomic(&dir.join(f.file_name()), f.render(report)?.as_bytes())?;
    }
    Ok(())
}

/// Draws the charts (PNG and SVG) and writes `report.html` into `dir`, with the comparison of
/// `dir/comparison.json` when the run had a baseline. Returns the files written.
pub fn write_visuals(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let charts = charts::write_all(report, dir)?;
    let cmp: Option<crate::compare::Comparison> =
        crate::fsutil::read_input_text(&dir.join("comparison.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let page = html::render(report, &charts, cmp.as_ref())?;
    write_atomic(&dir.join("report.html"), page.as_bytes())?;
    let mut files: Vec<PathBuf> = charts.into_iter().flat_map(|c| [c.png, c.svg]).collect();
    files.push(dir.join("report.html"));
    Ok(files)
}
