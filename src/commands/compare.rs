//! `quantbench compare BASE CURRENT`: the regression gate.

use std::path::Path;

use anyhow::{Context, Result};

use super::{exit, Ctx};
use crate::cli::{CompareArgs, CompareFormat};
use crate::compare::{self, Comparison};
use crate::metrics::Thresholds;

/// Thresholds: defaults, then `[compare]` of the matrix file (if it exists), then `--threshold`.
pub fn thresholds(config: Option<&Path>, cli: &[String]) -> Result<Thresholds> {
    let mut t = match config.filter(|p| p.exists()) {
        Some(p) => crate::config::load(p)?.compare,
        None => Thresholds::default(),
    };
    t.apply_cli(cli)?;
    Ok(t)
}

/// Prints a comparison: the table on stderr, and the format asked for on stdout.
pub fn show(ctx: &Ctx, cmp: &Comparison, format: CompareFormat) -> Result<()> {
    ctx.printer.comparison(cmp);
    match format {
        CompareFormat::Table => {}
        CompareFormat::Md => ctx.printer.stdout(&compare::markdown(cmp)),
        CompareFormat::Json => ctx
            .printer
            .stdout(&(serde_json::to_string_pretty(cmp)? + "\n")),
    }
    Ok(())
}

/// Shows what reading the reports left out or chose (values that are not numbers, cells given
/// twice).
pub fn warn_read<'a>(ctx: &Ctx, views: impl IntoIterator<Item = &'a compare::ReportView>) {
    for v in views {
        for w in &v.warnings {
            ctx.printer.warn(w);
        }
    }
}

pub fn run(ctx: &Ctx, args: &CompareArgs) -> Result<u8> {
    let thr = thresholds(Some(&args.config), &args.threshold)?;
    let (current, bases) = args
        .reports
        .split_last()
        .expect("clap requires at least two reports");
    let base = compare::read_many(bases).context("reading the baseline")?;
    let cur = compare::read(current).context("reading the current report")?;
    warn_read(ctx, base.iter().chain([&cur]));
    let mut cmp = compare::compare(&base, &cur, &thr);
    let mut reruns = Vec::new();
    for p in &args.confirm_with {
        let r = compare::read(p).context("reading a --confirm-with report")?;
        warn_read(ctx, [&r]);
        reruns.push(compare::compare(&base, &r, &thr));
    }
    compare::confirm(&mut cmp, &reruns);
    show(ctx, &cmp, args.format)?;
    Ok(if cmp.has_regression() {
        exit::REGRESSION
    } else if cmp.has_inconclusive() {
        exit::INCONCLUSIVE
    } else {
        exit::OK
    })
}
