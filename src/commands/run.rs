//! `quantbench run`: acquire, measure every cell in worker processes, write the reports after
//! every cell, print the summary, choose the exit code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{exit, load_plan, Ctx};
use crate::acquire::{self, Origin};
use crate::cli::{OutputFormat, RunArgs};
use crate::compare::{Comparison, ReportView};
use crate::coordinator::{Coordinator, Ended, Observer, Outcome};
use crate::fsutil::write_atomic;
use crate::metrics::Thresholds;
use crate::plan::Cell;
use crate::protocol::{BackendInfo, Job};
use crate::quant::Quant;
use crate::report::{self, Format};
use crate::results::{BuildInfo, CellResult, CellStatus, Report, RunStatus, SCHEMA_VERSION};

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
/// or a full disk is ignored), and the header of that run. Reads only: nothing in the folder
/// changes.
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
        let line = line.with_context(|| format!("reading {}", path.display()))?;
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

/// Refuses to resume a folder holding cells that do not belong to this plan (another config,
/// other `--only` filters or overrides): resuming would drop them from its reports. Nothing in
/// the folder is changed.
fn check_resume_belongs(
    dir: &Path,
    header: Option<&Report>,
    previous: &[CellResult],
    cells: &[Cell],
) -> Result<()> {
    let plan: HashSet<String> = cells.iter().map(Cell::key).collect();
    let foreign: Vec<&str> = previous
        .iter()
        .filter(|c| !plan.contains(&c.key))
        .map(|c| c.key.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = foreign.iter().take(8).copied().collect();
    bail!(
        "--resume {}: {} measured cell{} there {} not in this plan: {}{}. Resume with the config \
         and options of that run{}, or start a new run; nothing in the folder was changed",
        dir.display(),
        foreign.len(),
        if foreign.len() == 1 { "" } else { "s" },
        if foreign.len() == 1 { "is" } else { "are" },
        shown.join(", "),
        if foreign.len() > shown.len() {
            ", …"
        } else {
            ""
        },
        header
            .map(|h| format!(" (`{}`)", h.command.join(" ")))
            .unwrap_or_default()
    )
}

/// Where `--save-baseline` will store the run: checked (folders created, writability probed)
/// before anything is measured, so a bad path fails at once, naming it.
enum SaveTarget {
    /// An existing folder (or a path ending in `/`): the run goes in as `RUN_ID.json`.
    Folder(PathBuf),
    File(PathBuf),
}

impl SaveTarget {
    fn check(path: &Path) -> Result<SaveTarget> {
        let as_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
        let (target, folder) = if as_dir {
            (SaveTarget::Folder(path.to_path_buf()), path.to_path_buf())
        } else {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (SaveTarget::File(path.to_path_buf()), parent.to_path_buf())
        };
        let what = || format!("--save-baseline {}", path.display());
        std::fs::create_dir_all(&folder).with_context(|| {
            format!("{}: cannot create the folder {}", what(), folder.display())
        })?;
        let probe = folder.join(format!(".quantbench-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("{}: cannot write in {}", what(), folder.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(target)
    }

    fn path(&self, run_id: &str) -> PathBuf {
        match self {
            SaveTarget::Folder(d) => d.join(format!("{run_id}.json")),
            SaveTarget::File(p) => p.clone(),
        }
    }
}

/// An exclusive lock on a run folder for as long as this process writes it.
fn lock_run_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".quantbench.lock");
    let f = crate::fsutil::open_lock_file(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{}: another quantbench is writing this run folder (a run or a --resume of it); \
             wait for it to end",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// What `--resume` says to continue a run in `dir`.
fn resume_hint(dir: &Path) -> String {
    format!(
        "continue with `quantbench run --resume {}` (same config and options)",
        dir.display()
    )
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
        let s = serde_json::to_string(line)?;
        crate::fsutil::append_line(&mut self.jsonl, &self.dir.join("results.jsonl"), &s)
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
    // Everything that can be checked is checked before anything is written or measured: a bad
    // baseline, an unwritable --save-baseline, a --resume folder of another plan (exit 2).
    let mut thresholds = matrix.compare.clone();
    thresholds.apply_cli(&args.threshold)?;
    let baseline = match &args.baseline {
        Some(p) => Some(
            crate::compare::read_many(std::slice::from_ref(p))
                .context("reading the --baseline report")?,
        ),
        None => None,
    };
    let save_to = args
        .save_baseline
        .as_deref()
        .map(SaveTarget::check)
        .transpose()?;
    let (previous_header, previous) = match &args.resume {
        Some(dir) => read_previous(dir)?,
        None => (None, Vec::new()),
    };
    if let Some(dir) = &args.resume {
        check_resume_belongs(dir, previous_header.as_ref(), &previous, &cells)?;
    }
    // Fail fast, before anything is written or measured, if llama.cpp cannot start here.
    let mut coordinator = ctx.coordinator()?;
    let (backend, notes) = match coordinator.probe() {
        Ok(p) => p,
        Err(e)
            if e.downcast_ref::<crate::coordinator::Interrupted>()
                .is_some() =>
        {
            ctx.printer.line("interrupted before anything was measured");
            return Ok(crate::signals::exit_code());
        }
        Err(e) => return Err(e.context("checking the llama.cpp backends")),
    };
    for n in &notes {
        ctx.printer.warn(n);
    }
    let devices: Vec<String> = backend
        .devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    let (run_id, dir) = match &args.resume {
        Some(dir) => (
            dir.file_name()
                .map_or_else(run_id, |n| n.to_string_lossy().into_owned()),
            dir.clone(),
        ),
        None => new_run_dir(&args.out)?,
    };
    // One quantbench at a time writes a run folder (a second `--resume` of it is refused).
    let _folder = lock_run_dir(&dir)?;

    let mut environment = crate::envinfo::collect();
    environment.llama = backend;
    environment.gpu = crate::gpu::environment();
    environment.notes = notes;
    let report = Report {
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
        // a resumed run measured partly without the lock stays marked
        unlocked: args.no_lock || previous_header.as_ref().is_some_and(|h| h.unlocked),
        cells: Vec::new(),
    };
    ctx.printer.run_header(
        &dir.display().to_string(),
        cells.len(),
        matrix.models.len(),
        &devices.join(", "),
    );
    let mut logged = false;
    let measured = measure(
        ctx,
        args,
        &matrix,
        &cells,
        previous,
        report,
        &dir,
        &mut coordinator,
        t_start,
        &mut logged,
    );
    // An error once the log holds the run (a full disk, a vanished folder) leaves a valid
    // results.jsonl: say how to continue.
    let (report, lock) = measured.map_err(|e| {
        if !logged {
            return e;
        }
        let full = crate::fsutil::is_disk_full(&e);
        e.context(format!(
            "the run stopped; the cells measured so far are in {}; {}{}",
            dir.join("results.jsonl").display(),
            if full {
                "free some disk space, then "
            } else {
                ""
            },
            resume_hint(&dir)
        ))
    })?;
    finish(
        ctx,
        args,
        &cells,
        report,
        &dir,
        baseline.as_deref(),
        &thresholds,
        save_to,
        &mut coordinator,
        lock,
    )
}

/// The measuring part of a run: acquisition, the cells in workers (under the machine-wide
/// lock), the end of the log. Returns the final report and the lock, still held for the
/// confirmation re-runs.
#[allow(clippy::too_many_arguments)]
fn measure(
    ctx: &Ctx,
    args: &RunArgs,
    matrix: &crate::config::Matrix,
    cells: &[Cell],
    previous: Vec<CellResult>,
    mut report: Report,
    dir: &Path,
    coordinator: &mut Coordinator<'_>,
    t_start: Instant,
    logged: &mut bool,
) -> Result<(Report, Option<crate::machine_lock::MachineLock>)> {
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

    // A line cut short by a crash or a full disk is cut off, so new lines start on their own.
    let jsonl_path = dir.join("results.jsonl");
    if crate::fsutil::repair_torn_tail(&jsonl_path)? {
        ctx.printer.warn(&format!(
            "{}: removed a last line cut short by an earlier crash",
            jsonl_path.display()
        ));
    }
    let jsonl = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl_path)
        .with_context(|| format!("opening {}", jsonl_path.display()))?;
    if !done.is_empty() {
        ctx.printer.line(&format!(
            "resuming: {} of {} cells already measured",
            report.cells.len(),
            cells.len()
        ));
    }

    let opts = ctx.acquire_options(args.matrix.offline)?;
    let stop = || ctx.interrupted.load(Ordering::SeqCst);
    let origins = acquire::acquire(matrix, &todo, &opts, &ctx.printer, &stop);
    report.synthetic_weights = origins.values().any(|o| matches!(o, Ok(o) if o.synthetic))
        || report
            .cells
            .iter()
            .any(|c| c.origin.as_ref().is_some_and(|o| o.synthetic));

    let mut obs = RunObserver {
        ctx,
        dir: dir.to_path_buf(),
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
    *logged = true;
    report::write_all(&obs.report, dir)?;

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
    let lock = if jobs.is_empty() || stop() {
        None
    } else {
        take_lock(ctx, args, &stop)?
    };
    let ended = if stop() {
        Ended::Interrupted
    } else {
        coordinator.run(jobs, &mut obs)?
    };

    obs.report.status = match ended {
        Ended::Complete => RunStatus::Complete,
        Ended::Interrupted => RunStatus::Interrupted,
    };
    obs.report.finished_at = Some(now_rfc3339());
    obs.report.wall_s = Some(t_start.elapsed().as_secs_f64());
    report::write_all(&obs.report, dir)?;
    let end = LogLine::End {
        status: obs.report.status,
        finished_at: obs.report.finished_at.clone().unwrap_or_default(),
        wall_s: obs.report.wall_s.unwrap_or_default(),
    };
    obs.append(&end)?;
    Ok((obs.report, lock))
}

/// The machine-wide measurement lock, unless `--no-lock`: waits (saying for whom) while another
/// run measures. `Ok(None)` with `--no-lock` or when interrupted while waiting.
fn take_lock(
    ctx: &Ctx,
    args: &RunArgs,
    stop: &dyn Fn() -> bool,
) -> Result<Option<crate::machine_lock::MachineLock>> {
    if args.no_lock {
        ctx.printer.warn(
            "--no-lock: measuring without the machine-wide lock; another run measuring at the \
             same time would disturb these numbers (the report says so)",
        );
        return Ok(None);
    }
    let me = crate::machine_lock::Holder {
        pid: std::process::id(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        since: now_rfc3339(),
    };
    let lock_path = crate::machine_lock::path(&ctx.cache_dir);
    crate::machine_lock::acquire(
        &ctx.cache_dir,
        &me,
        &mut |holder| {
            ctx.printer.warn(&format!(
                "another run is measuring on this machine ({}); waiting for it to finish, since \
                 two runs at once ruin each other's numbers (lock: {}; --no-lock measures anyway)",
                holder.map_or_else(|| "holder unknown".to_string(), ToString::to_string),
                lock_path.display()
            ))
        },
        stop,
    )
}

/// The end of a run: the final table, stdout, the gate (with confirmation re-runs), charts, the
/// baseline, the exit code.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Ctx,
    args: &RunArgs,
    cells: &[Cell],
    report: Report,
    dir: &Path,
    baseline: Option<&[ReportView]>,
    thresholds: &Thresholds,
    save_to: Option<SaveTarget>,
    coordinator: &mut Coordinator<'_>,
    lock: Option<crate::machine_lock::MachineLock>,
) -> Result<u8> {
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
    let regressed = match baseline {
        Some(b) => {
            let mut cmp = gate(
                ctx,
                args,
                cells,
                &report,
                dir,
                b,
                thresholds,
                coordinator,
                lock.is_some(),
            )?;
            super::compare::show(ctx, &cmp, crate::cli::CompareFormat::Table)?;
            cmp.current = dir.join("results.json").display().to_string();
            write_atomic(
                &dir.join("comparison.json"),
                (serde_json::to_string_pretty(&cmp)? + "\n").as_bytes(),
            )?;
            write_atomic(
                &dir.join("comparison.md"),
                crate::compare::markdown(&cmp).as_bytes(),
            )?;
            cmp.has_regression()
        }
        None => false,
    };
    drop(lock);
    // a signal during the confirmation re-runs: the measured run is complete, but the verdict
    // is not final, so nothing is saved as a baseline and the exit status says interrupted
    let confirm_interrupted =
        report.status == RunStatus::Complete && ctx.interrupted.load(Ordering::SeqCst);
    if !args.no_plots {
        // Charts are a view of the reports already written: failing to draw one loses nothing.
        match report::write_visuals(&report, dir) {
            Ok(_) => ctx
                .printer
                .line(&format!("charts and report.html: {}", dir.display())),
            Err(e) => ctx.printer.warn(&format!("charts not drawn: {e:#}")),
        }
    }
    if let Some(target) = &save_to {
        let path = target.path(&report.run_id);
        if report.status == RunStatus::Complete && failed == 0 && !regressed && !confirm_interrupted
        {
            write_atomic(&path, report::json::Json.render(&report)?.as_bytes())?;
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
        _ if confirm_interrupted => {
            ctx.printer.line(
                "interrupted during the confirmation re-runs: the reports are complete, the \
                 comparison lists the regressions unconfirmed",
            );
            crate::signals::exit_code()
        }
        _ if regressed => exit::REGRESSION,
        _ if failed > 0 => exit::CELLS_FAILED,
        _ => exit::OK,
    })
}

/// Compares the run with the baseline; when cells regressed, measures each of them
/// `--confirm` more times (fresh workers, the same files) and keeps a regression only where
/// every re-measurement regresses too. The re-measurements go to `confirm-K.json`.
#[allow(clippy::too_many_arguments)]
fn gate(
    ctx: &Ctx,
    args: &RunArgs,
    cells: &[Cell],
    report: &Report,
    dir: &Path,
    baseline: &[ReportView],
    thresholds: &Thresholds,
    coordinator: &mut Coordinator<'_>,
    locked: bool,
) -> Result<Comparison> {
    let view = crate::compare::from_report(report, &dir.join("results.json"));
    let mut cmp = crate::compare::compare(baseline, &view, thresholds);
    let stop = || ctx.interrupted.load(Ordering::SeqCst);
    if !cmp.has_regression() || args.confirm == 0 || report.status != RunStatus::Complete {
        return Ok(cmp);
    }
    let regressed: HashSet<(String, String, String)> = cmp.regressed_cells().into_iter().collect();
    let jobs: Vec<Job> = cells
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
            Some(Job {
                cell: c.clone(),
                model_path: measured.origin.as_ref()?.path.clone(),
                cold: args.cold,
            })
        })
        .collect();
    if jobs.len() != regressed.len() {
        ctx.printer.warn(
            "cannot re-measure every regressed cell (no file for it): the regressions stand \
             unconfirmed",
        );
        return Ok(cmp);
    }
    // the re-runs measure too: they need the lock the cells had
    let _lock = if locked || args.no_lock {
        None
    } else {
        take_lock(ctx, args, &stop)?
    };
    ctx.printer.line(&format!(
        "\nconfirming: {} cell{} regressed; measuring {} {} more time{} (--confirm {})",
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
        let mut obs = Collector {
            ctx,
            report,
            cells: Vec::new(),
            total: jobs.len(),
            n: 0,
        };
        if coordinator.run(jobs.clone(), &mut obs)? == Ended::Interrupted {
            // an interrupted re-run neither confirms nor refutes: the verdict stays as it was
            ctx.printer
                .warn("confirmation interrupted: the regressions stand unconfirmed");
            return Ok(cmp);
        }
        let rerun = Report {
            run_id: format!("{}-confirm-{k}", report.run_id),
            cells: obs.cells,
            ..report.clone()
        };
        let path = dir.join(format!("confirm-{k}.json"));
        write_atomic(&path, report::json::Json.render(&rerun)?.as_bytes())?;
        let view = crate::compare::from_report(&rerun, &path);
        reruns.push(crate::compare::compare(baseline, &view, thresholds));
    }
    crate::compare::confirm(&mut cmp, &reruns);
    Ok(cmp)
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
        let result = match outcome {
            Outcome::Measured(m) => CellResult::measured(cell, origin, *m),
            Outcome::Failed(reason) => CellResult::failed(cell, origin, reason),
        };
        self.ctx.printer.cell_finished(&result);
        self.cells.push(result);
        Ok(())
    }
    fn worker_log(&mut self, line: &str) {
        self.ctx.printer.worker_log(line);
    }
}
