//! `quantbench run`: acquire, measure every cell in worker processes, write the reports after
//! every cell, print the summary, choose the exit code.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{exit, load_plan, Ctx};
use crate::acquire::{self, Origin};
use crate::cli::{OutputFormat, RunArgs};
use crate::coordinator::{Ended, Observer, Outcome};
use crate::plan::Cell;
use crate::protocol::{BackendInfo, Job};
use crate::quant::Quant;
use crate::report::{
    self, BuildInfo, CellResult, CellStatus, Format, Report, RunStatus, SCHEMA_VERSION,
};

/// One line of `results.jsonl`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LogLine {
    /// The report header (no cells) when a run or a resumption starts.
    Run { report: Box<Report> },
    /// A finished cell.
    Cell { cell: Box<CellResult> },
    /// The run ended.
    End {
        status: RunStatus,
        finished_at: String,
        wall_s: f64,
    },
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `20261128T230512Z` from the current UTC time.
fn run_id() -> String {
    now_rfc3339().replace(['-', ':'], "")
}

/// A new run folder under `out`, named by UTC timestamp (suffixed if taken).
fn new_run_dir(out: &Path) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let base = run_id();
    for n in 1..1000 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = out.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a run folder under {}", out.display())
}

/// Cells already measured in a run folder, from its `results.jsonl` (a line cut short by a crash
/// is ignored), and the header of that run.
fn read_previous(dir: &Path) -> Result<(Option<Report>, Vec<CellResult>)> {
    let path = dir.join("results.jsonl");
    let f = File::open(&path).with_context(|| {
        format!(
            "--resume {}: no results.jsonl there (is it a run folder?)",
            dir.display()
        )
    })?;
    let (mut header, mut cells) = (None, Vec::new());
    for line in BufReader::new(f).lines() {
        let line = line?;
        match serde_json::from_str::<LogLine>(&line) {
            Ok(LogLine::Run { report }) => {
                header.get_or_insert(*report);
            }
            Ok(LogLine::Cell { cell }) => cells.push(*cell),
            Ok(LogLine::End { .. }) | Err(_) => {}
        }
    }
    Ok((header, cells))
}

struct RunObserver<'a> {
    ctx: &'a Ctx,
    dir: PathBuf,
    report: Report,
    jsonl: File,
    origins: &'a BTreeMap<(usize, Quant), Result<Origin, String>>,
    numbers: HashMap<usize, usize>,
    total: usize,
    ready: bool,
}

impl RunObserver<'_> {
    fn append(&mut self, line: &LogLine) -> Result<()> {
        let mut s = serde_json::to_string(line)?;
        s.push('\n');
        self.jsonl
            .write_all(s.as_bytes())
            .and_then(|()| self.jsonl.flush())
            .context("appending to results.jsonl")
    }

    /// Adds a finished cell to the report and rewrites every report file.
    fn record(&mut self, result: CellResult) -> Result<()> {
        self.append(&LogLine::Cell {
            cell: Box::new(result.clone()),
        })?;
        self.ctx.printer.cell_finished(&result);
        self.report.cells.retain(|c| c.key != result.key);
        self.report.cells.push(result);
        self.report.cells.sort_by_key(|c| c.index);
        report::write_all(&self.report, &self.dir)
    }

    fn origin(&self, cell: &Cell) -> Option<Origin> {
        self.origins
            .get(&(cell.model_index, cell.quant))
            .and_then(|r| r.as_ref().ok().cloned())
    }

    fn number(&mut self, cell: &Cell) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(cell.index).or_insert(next)
    }
}

impl Observer for RunObserver<'_> {
    fn ready(&mut self, info: &BackendInfo) {
        if !self.ready {
            self.ready = true;
            self.report.environment.llama = info.clone();
        }
    }
    fn started(&mut self, cell: &Cell) {
        let n = self.number(cell);
        self.ctx.printer.cell_started(n, self.total, cell);
    }
    fn progress(&mut self, _cell: &Cell, phase: &str, done: u32, total: u32) {
        self.ctx.printer.cell_progress(phase, done, total);
    }
    fn finished(&mut self, cell: &Cell, outcome: Outcome) -> Result<()> {
        if !self.numbers.contains_key(&cell.index) {
            // failed before its worker took it (e.g. load crash of an earlier cell)
            let n = self.number(cell);
            self.ctx.printer.cell_started(n, self.total, cell);
        }
        let origin = self.origin(cell);
        let result = match outcome {
            Outcome::Measured(m) => CellResult::measured(cell, origin, *m),
            Outcome::Failed(reason) => CellResult::failed(cell, origin, reason),
        };
        self.record(result)
    }
    fn worker_log(&mut self, line: &str) {
        self.ctx.printer.worker_log(line);
    }
}

/// Runs the matrix; returns the exit code.
pub fn run(ctx: &Ctx, args: &RunArgs) -> Result<u8> {
    let t_start = Instant::now();
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    if cells.is_empty() {
        bail!("the plan has no cells");
    }
    // Read the baseline before measuring anything: a bad one is a setup error (exit 2).
    let mut thresholds = matrix.compare.clone();
    thresholds.apply_cli(&args.threshold)?;
    let baseline = match &args.baseline {
        Some(p) => Some(
            crate::compare::read_many(std::slice::from_ref(p))
                .context("reading the --baseline report")?,
        ),
        None => None,
    };
    let (previous_header, previous) = match &args.resume {
        Some(dir) => read_previous(dir)?,
        None => (None, Vec::new()),
    };
    let (run_id, dir) = match &args.resume {
        Some(dir) => (
            dir.file_name()
                .map_or_else(run_id, |n| n.to_string_lossy().into_owned()),
            dir.clone(),
        ),
        None => new_run_dir(&args.out)?,
    };

    // Fail fast, before anything is written or measured, if llama.cpp cannot start here.
    let mut coordinator = ctx.coordinator()?;
    let (backend, notes) = coordinator
        .probe()
        .context("checking the llama.cpp backends")?;
    for n in &notes {
        ctx.printer.warn(n);
    }
    let devices: Vec<String> = backend
        .devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();

    let mut environment = crate::envinfo::collect();
    environment.llama = backend;
    environment.gpu = crate::gpu::environment();
    environment.notes = notes;
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        run_id,
        status: RunStatus::Running,
        started_at: previous_header
            .as_ref()
            .map_or_else(now_rfc3339, |h| h.started_at.clone()),
        finished_at: None,
        wall_s: None,
        command: std::env::args().collect(),
        config: matrix.path.clone(),
        quantbench: BuildInfo::current(),
        environment,
        synthetic_weights: false,
        cells: Vec::new(),
    };

    // Cells measured before (--resume) are kept; failed ones run again.
    let done: HashMap<String, CellResult> = previous
        .into_iter()
        .filter(|c| c.status == CellStatus::Ok)
        .map(|c| (c.key.clone(), c))
        .collect();
    report.cells = cells
        .iter()
        .filter_map(|c| done.get(&c.key()).cloned())
        .collect();
    let todo: Vec<Cell> = cells
        .iter()
        .filter(|c| !done.contains_key(&c.key()))
        .cloned()
        .collect();

    let jsonl = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("results.jsonl"))
        .with_context(|| format!("opening {}", dir.join("results.jsonl").display()))?;
    ctx.printer.run_header(
        &dir.display().to_string(),
        cells.len(),
        matrix.models.len(),
        &devices.join(", "),
    );
    if !done.is_empty() {
        ctx.printer.line(&format!(
            "resuming: {} of {} cells already measured",
            report.cells.len(),
            cells.len()
        ));
    }

    let opts = ctx.acquire_options(args.matrix.offline)?;
    let stop = || ctx.interrupted.load(Ordering::SeqCst);
    let origins = acquire::acquire(&matrix, &todo, &opts, &ctx.printer, &stop);
    report.synthetic_weights = origins.values().any(|o| matches!(o, Ok(o) if o.synthetic))
        || report
            .cells
            .iter()
            .any(|c| c.origin.as_ref().is_some_and(|o| o.synthetic));

    let mut obs = RunObserver {
        ctx,
        dir: dir.clone(),
        report,
        jsonl,
        origins: &origins,
        numbers: HashMap::new(),
        total: todo.len(),
        ready: true,
    };
    let header = Report {
        cells: Vec::new(),
        ..obs.report.clone()
    };
    obs.append(&LogLine::Run {
        report: Box::new(header),
    })?;
    report::write_all(&obs.report, &dir)?;

    // Cells whose file could not be obtained fail now; the rest go to workers.
    let mut jobs = Vec::new();
    for c in &todo {
        match origins.get(&(c.model_index, c.quant)) {
            Some(Ok(o)) => jobs.push(Job {
                cell: c.clone(),
                model_path: o.path.clone(),
                cold: args.cold,
            }),
            // after Ctrl-C the run ends as interrupted; --resume tries these again
            Some(Err(_)) if stop() => {}
            Some(Err(reason)) => {
                obs.finished(c, Outcome::Failed(reason.clone()))?;
            }
            None => {
                if !stop() {
                    obs.finished(c, Outcome::Failed("the file was not acquired".into()))?;
                }
            }
        }
    }
    let ended = if stop() {
        Ended::Interrupted
    } else {
        coordinator.run(jobs, &mut obs)?
    };

    let mut report = obs.report;
    report.status = match ended {
        Ended::Complete => RunStatus::Complete,
        Ended::Interrupted => RunStatus::Interrupted,
    };
    report.finished_at = Some(now_rfc3339());
    report.wall_s = Some(t_start.elapsed().as_secs_f64());
    report::write_all(&report, &dir)?;
    obs.jsonl = OpenOptions::new()
        .append(true)
        .open(dir.join("results.jsonl"))?;
    let end = LogLine::End {
        status: report.status,
        finished_at: report.finished_at.clone().unwrap_or_default(),
        wall_s: report.wall_s.unwrap_or_default(),
    };
    let mut s = serde_json::to_string(&end)?;
    s.push('\n');
    obs.jsonl.write_all(s.as_bytes())?;

    ctx.printer.final_table(&report);
    let failed = report
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Failed)
        .count();
    ctx.printer.line(&format!(
        "\n{} cells, {failed} failed, {:.1} s wall; reports in {}",
        report.cells.len(),
        report.wall_s.unwrap_or_default(),
        dir.display()
    ));
    let text = match args.format {
        OutputFormat::Table => None,
        OutputFormat::Json => Some(report::json::Json.render(&report)?),
        OutputFormat::Csv => Some(report::csv::Csv.render(&report)?),
        OutputFormat::Md => Some(report::md::Markdown.render(&report)?),
    };
    if let Some(t) = text {
        ctx.printer.stdout(&t);
    }
    let regressed = match &baseline {
        Some(b) => {
            let cur = crate::compare::from_report(&report, &dir.join("results.json"));
            let cmp = crate::compare::compare(b, &cur, &thresholds);
            super::compare::show(ctx, &cmp, crate::cli::CompareFormat::Table)?;
            report::write_atomic(
                &dir.join("comparison.json"),
                (serde_json::to_string_pretty(&cmp)? + "\n").as_bytes(),
            )?;
            report::write_atomic(
                &dir.join("comparison.md"),
                crate::compare::markdown(&cmp).as_bytes(),
            )?;
            cmp.has_regression()
        }
        None => false,
    };
    if !args.no_plots {
        // Charts are a view of the reports already written: failing to draw one loses nothing.
        match report::write_visuals(&report, &dir) {
            Ok(_) => ctx
                .printer
                .line(&format!("charts and report.html: {}", dir.display())),
            Err(e) => ctx.printer.warn(&format!("charts not drawn: {e:#}")),
        }
    }
    if let Some(path) = &args.save_baseline {
        if report.status == RunStatus::Complete && failed == 0 && !regressed {
            let as_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
            let path = if as_dir {
                std::fs::create_dir_all(path)?;
                path.join(format!("{}.json", report.run_id))
            } else {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                path.clone()
            };
            report::write_atomic(&path, report::json::Json.render(&report)?.as_bytes())?;
            ctx.printer
                .line(&format!("saved as the baseline: {}", path.display()));
        } else {
            ctx.printer.warn(&format!(
                "not saved as the baseline ({}): {} kept",
                if regressed {
                    "regression"
                } else {
                    "incomplete run or failed cells"
                },
                path.display()
            ));
        }
    }
    Ok(match report.status {
        RunStatus::Interrupted => {
            ctx.printer.line(&format!(
                "interrupted: the {} measured cells are in the reports; continue with --resume {}",
                report.cells.len(),
                dir.display()
            ));
            exit::INTERRUPTED
        }
        _ if regressed => exit::REGRESSION,
        _ if failed > 0 => exit::CELLS_FAILED,
        _ => exit::OK,
    })
}
