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
    // the views of results.json (never results.json itself: fields this build does not know
    // would be lost)
    let mut files = Vec::new();
    for f in report::formats()
        .iter()
        .filter(|f| f.file_name() != "results.json")
    {
        let path = args.dir.join(f.file_name());
        crate::fsutil::write_atomic(&path, f.render(&r)?.as_bytes())?;
        files.push(path);
    }
    if crate::signals::stopping(&ctx.interrupted) {
        ctx.printer.line(&format!(
            "interrupted: results.csv and summary.md are rewritten, the charts and report.html \
             are not; run `quantbench report {}` again",
            args.dir.display()
        ));
        return Ok(crate::signals::exit_code());
    }
    files.extend(report::write_visuals(&r, &args.dir)?);
    for f in &files {
        ctx.printer.line(&f.display().to_string());
    }
    Ok(exit::OK)
}
