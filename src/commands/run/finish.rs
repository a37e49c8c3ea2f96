//! The end of a run: the final table, stdout, the gate against the baseline (with confirmation
//! re-runs of regressed cells), charts, the baseline saved, the exit code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::folder::{resume_hint, SaveTarget};
use super::measure::take_lock;
use super::{Ctx, Run};
use crate::cli::OutputFormat;
use crate::commands::exit;
use crate::compare::{Comparison, ReportView};
use crate::coordinator::{Coordinator, Ended, Observer, Outcome};
use crate::fsutil::write_atomic;
use crate::machine_lock::MachineLock;
use crate::metrics::Thresholds;
use crate::plan::Cell;
use crate::protocol::Job;
use crate::report::{self, Format};
use crate::results::{CellResult, CellStatus, Report, RunStatus};

impl Run<'_> {
    /// Prints and writes what the run produced and decides the exit code.
    pub(super) fn finish(
        &self,
        report: Report,
        baseline: Option<&[ReportView]>,
        thresholds: &Thresholds,
        save_to: Option<SaveTarget>,
        coordinator: &mut Coordinator<'_>,
        lock: Option<MachineLock>,
    ) -> Result<u8> {
        let ctx = self.ctx;
        let failed = self.print_summary(&report)?;
        let (regressed, inconclusive) = match baseline {
            Some(b) => {
                let cmp = self.gate(&report, b, thresholds, coordinator, lock.is_some())?;
                self.write_comparison(cmp)?
            }
            None => (false, false),
        };
        drop(lock);
        // a signal during the confirmation re-runs: the measured run is complete, but the
        // verdict is not final, so nothing is saved as a baseline and the exit status says
        // interrupted
        let confirm_interrupted =
            report.status == RunStatus::Complete && crate::signals::stopping(&ctx.interrupted);
        // Charts are a view of the reports already written: failing to draw one loses nothing
        // measured, but it is an error (a full disk), with the command that draws them again.
        let mut visuals_failed = false;
        if !self.args.no_plots {
            match report::write_visuals(&report, &self.dir) {
                Ok(_) => ctx
                    .printer
                    .line(&format!("charts and report.html: {}", self.dir.display())),
                Err(e) => {
                    visuals_failed = true;
                    ctx.printer.line(&format!(
                        "error: the charts and report.html were not written ({e:#}); the measured \
                         reports (results.json, results.csv, summary.md) are complete. {}draw \
                         them with `quantbench report {}`",
                        if crate::fsutil::is_disk_full(&e) {
                            "Free some disk space, then "
                        } else {
                            ""
                        },
                        self.dir.display()
                    ));
                }
            }
        }
        if let Some(target) = &save_to {
            // a cell measured on a busy machine would make every later comparison of it
            // inconclusive (a nightly baseline stays fixed once full): not a baseline
            let busy = report::md::disturbed(&report).len();
            let keep = report.status == RunStatus::Complete
                && failed == 0
                && !regressed
                && busy == 0
                && !confirm_interrupted;
            let why = if regressed {
                "regression".to_string()
            } else if busy > 0 && failed == 0 && report.status == RunStatus::Complete {
                format!(
                    "{busy} cell{} measured while the machine was busy",
                    if busy == 1 { "" } else { "s" }
                )
            } else {
                "incomplete run or failed cells".to_string()
            };
            save_baseline(ctx, &report, target, keep, &why)?;
        }
        let gate = Gate {
            confirm_interrupted,
            regressed,
            inconclusive,
        };
        let code = exit_code(ctx, &report, &self.dir, gate, failed);
        // a run otherwise fine (or only inconclusive) whose charts could not be written is not
        // fine: a retry would not help, the disk or the folder needs a look
        Ok(
            if visuals_failed && matches!(code, exit::OK | exit::INCONCLUSIVE) {
                exit::FATAL
            } else {
                code
            },
        )
    }

    /// The final table, the one-line summary and `--format` output on stdout; returns how many
    /// cells failed.
    fn print_summary(&self, report: &Report) -> Result<usize> {
        let ctx = self.ctx;
        ctx.printer.final_table(report);
        let failed = report
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Failed)
            .count();
        ctx.printer.line(&format!(
            "\n{} cells, {failed} failed, {:.1} s wall; reports in {}",
            report.cells.len(),
            report.wall_s.unwrap_or_default(),
            self.dir.display()
        ));
        let text = match self.args.format {
            OutputFormat::Table => None,
            OutputFormat::Json => Some(report::json::Json.render(report)?),
            OutputFormat::Csv => Some(report::csv::Csv.render(report)?),
            OutputFormat::Md => Some(report::md::Markdown.render(report)?),
        };
        if let Some(t) = text {
            ctx.printer.stdout(&t);
        }
        Ok(failed)
    }

    /// Shows the comparison and writes `comparison.json` and `comparison.md`; returns whether
    /// a regression stands, and whether some verdicts are inconclusive.
    fn write_comparison(&self, mut cmp: Comparison) -> Result<(bool, bool)> {
        super::super::compare::show(self.ctx, &cmp, crate::cli::CompareFormat::Table)?;
        cmp.current = self.dir.join("results.json").display().to_string();
        write_atomic(
            &self.dir.join("comparison.json"),
            (serde_json::to_string_pretty(&cmp)? + "\n").as_bytes(),
        )?;
        write_atomic(
            &self.dir.join("comparison.md"),
            crate::compare::markdown(&cmp).as_bytes(),
        )?;
        Ok((cmp.has_regression(), cmp.has_inconclusive()))
    }

    /// Compares the run with the baseline; when cells regressed, or were inconclusive because
    /// the machine was busy while they were timed, measures each of them `--confirm` more
    /// times (fresh workers, the same files; after waiting, bounded, for a quiet machine when
    /// it was busy) and keeps a regression only where every re-measurement that could decide
    /// regresses too. The re-measurements go to `confirm-K.json`.
    fn gate(
        &self,
        report: &Report,
        baseline: &[ReportView],
        thresholds: &Thresholds,
        coordinator: &mut Coordinator<'_>,
        locked: bool,
    ) -> Result<Comparison> {
        let (ctx, args) = (self.ctx, self.args);
        let view = crate::compare::from_report(report, &self.dir.join("results.json"));
        let mut cmp = crate::compare::compare(baseline, &view, thresholds);
        let stop = || crate::signals::stopping(&ctx.interrupted);
        let busy = cmp.disturbed_cells();
        if (!cmp.has_regression() && busy.is_empty())
            || args.confirm == 0
            || report.status != RunStatus::Complete
        {
            return Ok(cmp);
        }
        let Some(jobs) = self.confirm_jobs(report, &cmp) else {
            ctx.printer.warn(
                "cannot re-measure every regressed cell (no file for it): the regressions stand \
                 unconfirmed",
            );
            return Ok(cmp);
        };
        // the re-runs measure too: they need the lock the cells had
        let _lock = if locked || args.no_lock {
            None
        } else {
            take_lock(ctx, args, &stop)?
        };
        ctx.printer.line(&format!(
            "\nconfirming: {} cell{} regressed or measured on a busy machine; measuring {} {} \
             more time{} (--confirm {})",
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" },
            if jobs.len() == 1 { "it" } else { "each" },
            args.confirm,
            if args.confirm == 1 { "" } else { "s" },
            args.confirm
        ));
        let mut reruns = Vec::new();
        for k in 1..=args.confirm {
            if stop() {
                break;
            }
            if !busy.is_empty() {
                wait_for_quiet(ctx, &stop);
            }
            let Some(rerun) = self.rerun(report, &jobs, k, coordinator)? else {
                // an interrupted re-run neither confirms nor refutes: the verdict stays
                ctx.printer
                    .warn("confirmation interrupted: the regressions stand unconfirmed");
                return Ok(cmp);
            };
            let path = self.dir.join(format!("confirm-{k}.json"));
            write_atomic(&path, report::json::Json.render(&rerun)?.as_bytes())?;
            let view = crate::compare::from_report(&rerun, &path);
            reruns.push(crate::compare::compare(baseline, &view, thresholds));
        }
        crate::compare::confirm(&mut cmp, &reruns);
        Ok(cmp)
    }

    /// The jobs that re-measure the regressed cells; `None` when a cell has no file to
    /// re-measure.
    fn confirm_jobs(&self, report: &Report, cmp: &Comparison) -> Option<Vec<Job>> {
        let regressed: HashSet<(String, String, String)> = cmp
            .regressed_cells()
            .into_iter()
            .chain(cmp.disturbed_cells())
            .collect();
        let jobs: Vec<Job> = self
            .cells
            .iter()
            .filter(|c| {
                regressed.contains(&(
                    c.model.clone(),
                    c.quant.to_string(),
                    crate::compare::cell_params_key(&c.params),
                ))
            })
            .filter_map(|c| {
                let measured = report.cells.iter().find(|r| r.key == c.key())?;
                let serve = self.serve_job(c);
                let model_path = match &measured.origin {
                    Some(o) => o.path.clone(),
                    None if serve.is_some() => PathBuf::new(), // an endpoint: no file
                    None => return None,
                };
                Some(Job {
                    cell: c.clone(),
                    model_path,
                    cold: self.args.cold,
                    quality: None,
                    serve,
                })
            })
            .collect();
        (jobs.len() == regressed.len()).then_some(jobs)
    }

    /// Confirmation re-run `k`: the regressed cells measured again, as a report of their own.
    /// `None` when it was interrupted.
    fn rerun(
        &self,
        report: &Report,
        jobs: &[Job],
        k: u32,
        coordinator: &mut Coordinator<'_>,
    ) -> Result<Option<Report>> {
        let mut obs = Collector {
            ctx: self.ctx,
            report,
            cells: Vec::new(),
            total: jobs.len(),
            n: 0,
        };
        if coordinator.run(jobs.to_vec(), &mut obs)? == Ended::Interrupted {
            return Ok(None);
        }
        Ok(Some(Report {
            run_id: format!("{}-confirm-{k}", report.run_id),
            cells: obs.cells,
            ..report.clone()
        }))
    }
}

/// Saves the run as the baseline when `keep` (complete, nothing failed or regressed, not
/// interrupted); otherwise says why not.
fn save_baseline(
    ctx: &Ctx,
    report: &Report,
    target: &SaveTarget,
    keep: bool,
    why_not: &str,
) -> Result<()> {
    let path = target.path(&report.run_id);
    if keep {
        write_atomic(&path, report::json::Json.render(report)?.as_bytes())?;
        ctx.printer
            .line(&format!("saved as the baseline: {}", path.display()));
    } else {
        ctx.printer.warn(&format!(
            "not saved as the baseline ({why_not}): {} kept",
            path.display()
        ));
    }
    Ok(())
}

/// What the gate decided, for the exit code.
struct Gate {
    /// A signal came during the confirmation re-runs.
    confirm_interrupted: bool,
    regressed: bool,
    inconclusive: bool,
}

/// How long confirmation re-runs wait for a quiet machine at most (`QUANTBENCH_QUIET_WAIT_S`).
const QUIET_WAIT_S: u64 = 120;

/// Waits until other processes use less of the CPU than a CPU cell tolerates
/// ([`crate::disturbance::CPU_CELL_OTHER_PCT`], over 1 s), at most `QUANTBENCH_QUIET_WAIT_S`
/// seconds (default [`QUIET_WAIT_S`]), saying so; the re-run that follows is judged on its own.
fn wait_for_quiet(ctx: &Ctx, stop: &dyn Fn() -> bool) {
    let limit = std::env::var("QUANTBENCH_QUIET_WAIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUIET_WAIT_S);
    let t0 = std::time::Instant::now();
    let mut said = false;
    while !stop() {
        let Some(others) = crate::disturbance::others_now(std::time::Duration::from_secs(1)) else {
            return;
        };
        if others < crate::disturbance::CPU_CELL_OTHER_PCT {
            return;
        }
        if t0.elapsed().as_secs() >= limit {
            ctx.printer.warn(&format!(
                "the machine stayed busy ({others:.0}% of the CPU used by other processes) for \
                 {limit} s: re-measuring anyway"
            ));
            return;
        }
        if !said {
            ctx.printer.line(&format!(
                "waiting for a quiet machine: other processes use {others:.0}% of the CPU \
                 (up to {limit} s)"
            ));
            said = true;
        }
    }
}

/// The exit code, with the last line saying why when the run was interrupted.
fn exit_code(ctx: &Ctx, report: &Report, dir: &Path, gate: Gate, failed: usize) -> u8 {
    match report.status {
        RunStatus::Interrupted => {
            let by = crate::signals::received()
                .map(|s| format!(" by {}", crate::signals::name(s)))
                .unwrap_or_default();
            ctx.printer.line(&format!(
                "interrupted{by}: the {} measured cells are in the reports; {}",
                report.cells.len(),
                resume_hint(dir)
            ));
            crate::signals::exit_code()
        }
        _ if gate.confirm_interrupted => {
            ctx.printer.line(
                "interrupted during the confirmation re-runs: the reports are complete, the \
                 comparison lists the regressions unconfirmed",
            );
            crate::signals::exit_code()
        }
        _ if gate.regressed => exit::REGRESSION,
        _ if failed > 0 => exit::CELLS_FAILED,
        _ if gate.inconclusive => exit::INCONCLUSIVE,
        _ => exit::OK,
    }
}

/// Collects the re-measured cells of a confirmation re-run.
struct Collector<'a> {
    ctx: &'a Ctx,
    report: &'a Report,
    cells: Vec<CellResult>,
    total: usize,
    n: usize,
}

impl Observer for Collector<'_> {
    fn started(&mut self, cell: &Cell) {
        self.n += 1;
        self.ctx.printer.cell_started(self.n, self.total, cell);
    }
    fn progress(&mut self, _cell: &Cell, phase: &str, done: u32, total: u32) {
        self.ctx.printer.cell_progress(phase, done, total);
    }
    fn finished(&mut self, cell: &Cell, outcome: Outcome) -> Result<()> {
        let origin = self
            .report
            .cells
            .iter()
            .find(|c| c.key == cell.key())
            .and_then(|c| c.origin.clone());
        let mut result = match outcome {
            Outcome::Measured(m) => CellResult::measured(cell, origin, *m),
            Outcome::Failed(reason) => CellResult::failed(cell, origin, reason),
        };
        result.host = self.report.environment.hostname.clone();
        self.ctx.printer.cell_finished(&result);
        self.cells.push(result);
        Ok(())
    }
    fn worker_log(&mut self, line: &str) {
        self.ctx.printer.worker_log(line);
    }
}
