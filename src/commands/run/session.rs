//! A run folder measured in batches chosen as the results come in (`quantbench tune`): each
//! batch is measured as `--resume` would measure it — cells whose key the folder holds already
//! are not measured again, unless asked — into the same log and reports, under one machine
//! lock.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use super::measure::take_lock;
use super::{folder, new_report, probe, serve_targets, Inputs, Run};
use crate::cli::RunArgs;
use crate::commands::Ctx;
use crate::config::Matrix;
use crate::coordinator::Coordinator;
use crate::machine_lock::MachineLock;
use crate::metrics::Thresholds;
use crate::plan::Cell;
use crate::results::{CellResult, Report};

/// An open run folder.
pub struct Session<'a> {
    ctx: &'a Ctx,
    args: RunArgs,
    matrix: Matrix,
    pub dir: PathBuf,
    coordinator: Coordinator<'a>,
    /// Every cell measured so far (this session's and a resumed folder's).
    pub report: Report,
    t_start: Instant,
    lock: Option<MachineLock>,
    /// Batches measured so far.
    batches: usize,
    _folder: std::fs::File,
}

impl<'a> Session<'a> {
    /// Opens a new run folder under `args.out`, or `args.resume`'s; `None` when a signal came
    /// before llama.cpp started.
    pub fn open(ctx: &'a Ctx, args: RunArgs, matrix: Matrix) -> Result<Option<Session<'a>>> {
        // the machine-wide lock, from the CPU self-test (it measures too) to the last batch
        let lock = take_lock(ctx, &args, &|| crate::signals::stopping(&ctx.interrupted))?;
        if crate::signals::stopping(&ctx.interrupted) {
            return Ok(None);
        }
        let mut coordinator = ctx.coordinator()?;
        let Some((backend, notes)) = probe(ctx, &mut coordinator)? else {
            return Ok(None);
        };
        let (previous_header, previous) = match &args.resume {
            Some(dir) => folder::read_previous(dir)?,
            None => (None, Vec::new()),
        };
        let (run_id, dir) = folder::run_dir(args.resume.as_deref(), &args.out)?;
        let lock_file = folder::lock_run_dir(&dir)?;
        let inputs = Inputs {
            thresholds: Thresholds::default(),
            baseline: None,
            save_to: None,
            previous_header,
            previous,
        };
        let mut report = new_report(&args, &matrix, run_id, backend, notes, &inputs);
        report.cells = inputs.previous;
        Ok(Some(Session {
            ctx,
            args,
            matrix,
            dir,
            coordinator,
            report,
            t_start: Instant::now(),
            lock,
            batches: 0,
            _folder: lock_file,
        }))
    }

    /// Measures `cells` (those the folder holds already only when `again`), and returns their
    /// results in their order (a cell a signal kept from being measured is missing).
    pub fn measure(&mut self, cells: &[Cell], again: bool) -> Result<Vec<CellResult>> {
        let keys: Vec<String> = cells.iter().map(Cell::key).collect();
        let mut previous: Vec<CellResult> = self.report.cells.clone();
        if again {
            previous.retain(|c| !keys.contains(&c.key));
        }
        let run = Run {
            ctx: self.ctx,
            args: &self.args,
            matrix: &self.matrix,
            cells,
            dir: self.dir.clone(),
            servers: serve_targets(self.ctx, &self.matrix, cells)?,
            // a later batch: "resuming" would mislead
            batch: self.batches > 0,
        };
        let mut header = self.report.clone();
        header.cells.clear();
        let mut logged = false;
        let (batch, lock) = run.measure(
            previous.clone(),
            header,
            &mut self.coordinator,
            self.t_start,
            &mut logged,
            self.lock.take(),
        )?;
        self.lock = lock;
        self.batches += 1;
        // the folder's cells: the earlier ones, with this batch's in place of theirs
        let mut all: Vec<CellResult> = self
            .report
            .cells
            .iter()
            .filter(|c| !batch.cells.iter().any(|b| b.key == c.key))
            .cloned()
            .collect();
        all.extend(batch.cells.iter().cloned());
        all.sort_by_key(|c| c.index);
        self.report = Report {
            cells: all,
            ..batch
        };
        crate::report::write_all(&self.report, &self.dir)?;
        Ok(keys
            .iter()
            .filter_map(|k| self.report.cells.iter().find(|c| &c.key == k).cloned())
            .collect())
    }

    /// Whether a signal asked the run to stop.
    pub fn interrupted(&self) -> bool {
        self.ctx
            .interrupted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes the reports (charts and report.html unless `--no-plots`) and releases the lock.
    pub fn finish(self) -> Result<Report> {
        crate::report::write_all(&self.report, &self.dir)?;
        if !self.args.no_plots {
            if let Err(e) = crate::report::write_visuals(&self.report, &self.dir) {
                self.ctx.printer.warn(&format!("charts not drawn: {e:#}"));
            }
        }
        Ok(self.report)
    }
}
