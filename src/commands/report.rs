//! `quantbench report DIR`: draw the charts and report.html again from DIR/results.json.

use anyhow::{Context, Result};

use super::{exit, Ctx};
use crate::cli::ReportArgs;
use crate::{report, results};

pub fn run(ctx: &Ctx, args: &ReportArgs) -> Result<u8> {
    let path = args.dir.join("results.json");
    let r = results::read_json(&path).with_context(|| {
        format!(
            "{} is not a run folder (no readable results.json)",
            args.dir.display()
        )
    })?;
    let files = report::write_visuals(&r, &args.dir)?;
    for f in &files {
        ctx.printer.line(&f.display().to_string());
    }
    Ok(exit::OK)
}
