//! The measuring part of a run: the cells already measured (`--resume`), acquisition, the
//! log, the cells in workers under the machine-wide lock, the end of the log.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use super::folder::{now_rfc3339, LogLine};
use super::{Ctx, Run};
use crate::acquire::{self, Origin};
use crate::cli::RunArgs;
use crate::coordinator::{Coordinator, Ended, Observer, Outcome};
use crate::machine_lock::MachineLock;
use crate::plan::Cell;
use crate::protocol::{BackendInfo, Job, QualityJob};
use crate::quant::Quant;
use crate::report;
use crate::results::{CellResult, CellStatus, Report, RunStatus};

impl Run<'_> {
    /// Acquires the files, measures the cells not measured before, and ends the log, under the
    /// machine lock the run took before its self-test (`lock`). Returns the final report and
    /// the lock, still held for the confirmation re-runs. `logged` is set once the log holds the
    /// run (from then on an error leaves a resumable folder).
    pub(super) fn measure(
        &self,
        previous: Vec<CellResult>,
        mut report: Report,
        coordinator: &mut Coordinator<'_>,
        t_start: Instant,
        logged: &mut bool,
        lock: Option<MachineLock>,
    ) -> Result<(Report, Option<MachineLock>)> {
        let (done, todo) = split_previous(previous, self.cells);
        report.cells = self
            .cells
            .iter()
            .filter_map(|c| done.get(&c.key()).cloned())
            .collect();
        let jsonl = self.open_log()?;
        if !done.is_empty() && !self.batch {
            self.ctx.printer.line(&format!(
                "resuming: {} of {} cells already measured",
                report.cells.len(),
                self.cells.len()
            ));
        }

        let ctx = self.ctx;
        let opts = ctx.acquire_options(self.args.matrix.offline, !self.args.no_lock)?;
        let stop = || crate::signals::stopping(&ctx.interrupted);
        let origins = acquire::acquire(
            self.matrix,
            &with_references(&todo),
            &opts,
            &ctx.printer,
            &stop,
        );
        report.synthetic_weights = origins.values().any(|o| matches!(o, Ok(o) if o.synthetic))
            || report
                .cells
                .iter()
                .any(|c| c.origin.as_ref().is_some_and(|o| o.synthetic));

        let mut obs = RunObserver {
            ctx,
            dir: self.dir.clone(),
            report,
            jsonl,
            origins: &origins,
            numbers: HashMap::new(),
            corpora: HashMap::new(),
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
        report::write_all(&obs.report, &self.dir)?;

        let jobs = self.jobs(&todo, &origins, &mut obs, &stop)?;
        let ended = if stop() {
            Ended::Interrupted
        } else {
            coordinator.run(jobs, &mut obs)?
        };
        end_log(&mut obs, ended, t_start)?;
        Ok((obs.report, lock))
    }

    /// The serving part of a served cell's job: its server and the SLO.
    pub(super) fn serve_job(&self, c: &Cell) -> Option<crate::protocol::ServeJob> {
        c.params.serve.as_ref()?;
        Some(crate::protocol::ServeJob {
            target: self.servers.get(&c.model_index)?.clone(),
            slo: self.matrix.slo.requests(),
            first_port: std::env::var("QUANTBENCH_SERVER_FIRST_PORT")
                .ok()
                .and_then(|p| p.parse().ok()),
        })
    }

    /// The log, opened for appending; a last line cut short by a crash or a full disk is cut
    /// off first, so new lines start on their own.
    fn open_log(&self) -> Result<File> {
        let jsonl_path = self.dir.join("results.jsonl");
        if crate::fsutil::repair_torn_tail(&jsonl_path)? {
            self.ctx.printer.warn(&format!(
                "{}: removed a last line cut short by an earlier crash",
                jsonl_path.display()
            ));
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .with_context(|| format!("opening {}", jsonl_path.display()))
    }

    /// The worker jobs of the cells whose file was obtained; the others fail now (or, after a
    /// signal, are left for `--resume`).
    fn jobs(
        &self,
        todo: &[Cell],
        origins: &BTreeMap<(usize, Quant), Result<Origin, String>>,
        obs: &mut RunObserver<'_>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for c in todo {
            let serve = self.serve_job(c);
            if let Some(crate::protocol::ServeTarget::Endpoint { .. }) =
                serve.as_ref().map(|s| &s.target)
            {
                // a server quantbench does not start: no file to acquire
                jobs.push(Job {
                    cell: c.clone(),
                    model_path: PathBuf::new(),
                    cold: false,
                    quality: None,
                    serve,
                });
                continue;
            }
            match origins.get(&(c.model_index, c.quant)) {
                Some(Ok(o)) => jobs.push(Job {
                    cell: c.clone(),
                    model_path: o.path.clone(),
                    cold: self.args.cold,
                    quality: quality_job(c, origins, &self.ctx.cache_dir),
                    serve,
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
        Ok(jobs)
    }
}

/// The cells measured before (`--resume`), by key, and the cells still to measure: failed ones
/// run again.
fn split_previous(
    previous: Vec<CellResult>,
    cells: &[Cell],
) -> (HashMap<String, CellResult>, Vec<Cell>) {
    let done: HashMap<String, CellResult> = previous
        .into_iter()
        .filter(|c| c.status == CellStatus::Ok)
        .map(|c| (c.key.clone(), c))
        .collect();
    let todo = cells
        .iter()
        .filter(|c| !done.contains_key(&c.key()))
        .cloned()
        .collect();
    (done, todo)
}

/// The cells to acquire files for: `todo`, plus one for each quality reference they need that
/// is not among them.
fn with_references(todo: &[Cell]) -> Vec<Cell> {
    let mut out = todo.to_vec();
    for c in todo {
        if let Some(q) = &c.params.quality {
            if !out
                .iter()
                .any(|o| o.model_index == c.model_index && o.quant == q.reference)
            {
                out.push(Cell {
                    quant: q.reference,
                    ..c.clone()
                });
            }
        }
    }
    out
}

/// The quality test of a cell's job: the reference's file (or why there is none) and the corpus.
fn quality_job(
    c: &Cell,
    origins: &BTreeMap<(usize, Quant), Result<Origin, String>>,
    cache_dir: &std::path::Path,
) -> Option<QualityJob> {
    let q = c.params.quality.as_ref()?;
    let reference = match origins.get(&(c.model_index, q.reference)) {
        Some(Ok(o)) => Ok(o.path.clone()),
        Some(Err(e)) => Err(format!(
            "the reference {} could not be obtained: {e}",
            q.reference
        )),
        None => Err(format!("the reference {} was not obtained", q.reference)),
    };
    let sample_cache = match (&reference, &q.corpus) {
        (Ok(_), None) => origins
            .get(&(c.model_index, q.reference))
            .and_then(|o| o.as_ref().ok())
            .map(|o| sample_cache_path(cache_dir, &o.sha256, q.n_ctx, q.chunks)),
        _ => None,
    };
    Some(QualityJob {
        reference,
        corpus: q.corpus.clone(),
        seed: 0,
        n_ctx: q.n_ctx,
        chunks: Some(q.chunks),
        sample_cache,
    })
}

/// The cached corpus sampled from a reference: by its SHA-256, the chunk size and count, and
/// the seed (0). 4 bytes per token.
fn sample_cache_path(
    cache_dir: &std::path::Path,
    sha256: &str,
    n_ctx: u32,
    chunks: u32,
) -> PathBuf {
    cache_dir
        .join("quality")
        .join(format!("sampled-{sha256}-c{n_ctx}-n{chunks}-seed0.tokens"))
}

/// Marks how the run ended, writes the reports and the log's end line.
fn end_log(obs: &mut RunObserver<'_>, ended: Ended, t_start: Instant) -> Result<()> {
    obs.report.status = match ended {
        Ended::Complete => RunStatus::Complete,
        Ended::Interrupted => RunStatus::Interrupted,
    };
    obs.report.finished_at = Some(now_rfc3339());
    obs.report.wall_s = Some(t_start.elapsed().as_secs_f64());
    report::write_all(&obs.report, &obs.dir)?;
    let end = LogLine::End {
        status: obs.report.status,
        finished_at: obs.report.finished_at.clone().unwrap_or_default(),
        wall_s: obs.report.wall_s.unwrap_or_default(),
    };
    obs.append(&end)
}

/// Records every finished cell: log line, reports rewritten, the cell's block printed.
struct RunObserver<'a> {
    ctx: &'a Ctx,
    dir: PathBuf,
    report: Report,
    jsonl: File,
    origins: &'a BTreeMap<(usize, Quant), Result<Origin, String>>,
    numbers: HashMap<usize, usize>,
    /// Each quality corpus as reports name it (file and SHA-256), hashed once per run.
    corpora: HashMap<PathBuf, String>,
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

    /// The reference as reports name it: quant, file, SHA-256, how it was made.
    fn describe_reference(&self, cell: &Cell, reference: Quant) -> String {
        match self.origins.get(&(cell.model_index, reference)) {
            Some(Ok(o)) => format!(
                "{reference} ({}, sha256 {}{})",
                o.path.file_name().unwrap_or_default().to_string_lossy(),
                o.sha256,
                match (&o.derived_from, o.synthetic) {
                    (_, true) => ", synthetic weights".to_string(),
                    (Some(from), false) => format!(", derived from {from}"),
                    (None, false) => String::new(),
                }
            ),
            _ => reference.to_string(),
        }
    }

    /// A served cell's requests, one line each in `requests.jsonl` (with the cell's key).
    fn append_requests(
        &mut self,
        cell: &Cell,
        requests: &[crate::serving_stats::RequestRecord],
    ) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("requests.jsonl");
        crate::fsutil::repair_torn_tail(&path)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let key = cell.key();
        let mut lines = Vec::with_capacity(requests.len());
        for r in requests {
            let mut v = serde_json::to_value(r)?;
            v["cell"] = serde_json::Value::String(key.clone());
            lines.push(serde_json::to_string(&v)?);
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        crate::fsutil::append_lines(&mut f, &path, &lines)
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
        // a served cell's requests go to requests.jsonl (the result keeps their figures)
        if let Outcome::Measured(m) = &outcome {
            if let Some(s) = &m.serving {
                self.append_requests(cell, &s.requests)?;
            }
        }
        let mut result = match outcome {
            Outcome::Measured(m) => CellResult::measured(cell, origin, *m),
            Outcome::Failed(reason) => CellResult::failed(cell, origin, reason),
        };
        result.host = self.report.environment.hostname.clone();
        result.usd_per_mtok = result
            .mean("throughput_tok_s")
            .and_then(|t| self.report.serving.usd_per_mtok(t));
        if let (Some(q), Some(p)) = (result.quality.as_mut(), &cell.params.quality) {
            q.quality_ref = self.describe_reference(cell, p.reference);
            if let Some(f) = &p.corpus {
                q.quality_corpus = self
                    .corpora
                    .entry(f.clone())
                    .or_insert_with(|| describe_corpus(f))
                    .clone();
            }
        }
        self.record(result)
    }
    fn worker_log(&mut self, line: &str) {
        self.ctx.printer.worker_log(line);
    }
}

/// The corpus as reports name it: its file and SHA-256 (which changes when the text does).
fn describe_corpus(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => format!(
            "{} (sha256 {})",
            path.display(),
            hex::encode(Sha256::digest(&bytes))
        ),
        Err(_) => path.display().to_string(),
    }
}

/// The machine-wide measurement lock, unless `--no-lock`: waits (saying for whom) while another
/// run measures. `Ok(None)` with `--no-lock` or when interrupted while waiting.
pub(super) fn take_lock(
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
    let dir = crate::machine_lock::dir();
    crate::machine_lock::acquire(
        &dir,
        &crate::machine_lock::Holder::me(),
        &mut |holder| ctx.printer.warn(&lock_wait_message(holder, &dir)),
        stop,
    )
}

/// What a run or a quantization waiting for the machine lock says.
fn lock_wait_message(
    holder: Option<&crate::machine_lock::Holder>,
    dir: &std::path::Path,
) -> String {
    format!(
        "another run is measuring on this machine ({}); waiting for it to finish, since two \
         runs at once ruin each other's numbers (lock: {}; --no-lock measures anyway)",
        holder.map_or_else(|| "holder unknown".to_string(), ToString::to_string),
        crate::machine_lock::path(dir).display()
    )
}
