//! `quantbench run`: acquire, measure every cell in worker processes, write the reports after
//! every cell, print the summary, choose the exit code.
//!
//! The steps, in order: [`check_inputs`] (everything that can fail before anything is written),
//! [`probe`] (llama.cpp starts here), the run folder ([`folder`]), [`measure`] (acquisition and
//! the cells, under the machine-wide lock), [`finish`] (gate with confirmation re-runs, charts,
//! baseline, exit code).

mod finish;
mod folder;
mod measure;
mod session;

pub use session::Session;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{load_plan, Ctx};
use crate::cli::RunArgs;
use crate::compare::ReportView;
use crate::config::Matrix;
use crate::coordinator::Coordinator;
use crate::metrics::Thresholds;
use crate::plan::Cell;
use crate::protocol::BackendInfo;
use crate::results::{BuildInfo, CellResult, Report, RunStatus, SCHEMA_VERSION};
use folder::{resume_hint, SaveTarget};

/// What every step of a run shares: the command line, the plan and the run folder.
struct Run<'a> {
    ctx: &'a Ctx,
    args: &'a RunArgs,
    matrix: &'a Matrix,
    cells: &'a [Cell],
    dir: PathBuf,
    /// The server each model's served cells go to (by model index).
    servers: std::collections::BTreeMap<usize, crate::protocol::ServeTarget>,
    /// A later batch of a session (not a resumed run).
    batch: bool,
}

/// What is checked before anything is written or measured: a bad baseline, an unwritable
/// `--save-baseline`, a `--resume` folder of another plan all fail here (exit 2).
struct Inputs {
    thresholds: Thresholds,
    baseline: Option<Vec<ReportView>>,
    save_to: Option<SaveTarget>,
    /// The header and cells of the run being resumed.
    previous_header: Option<Report>,
    previous: Vec<CellResult>,
}

/// Runs the matrix; returns the exit code.
pub fn run(ctx: &Ctx, args: &RunArgs) -> Result<u8> {
    let t_start = Instant::now();
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    if cells.is_empty() {
        bail!("the plan has no cells");
    }
    let plan_keys: Vec<String> = cells.iter().map(Cell::key).collect();
    let cells = match args.shard {
        Some(s) => {
            let cost = super::list::shard_costs(&matrix, &cells);
            let part = s.select(&cells, &cost);
            if part.is_empty() {
                bail!(
                    "shard {}/{} has no cells: the matrix has only {} (use fewer parts)",
                    s.index,
                    s.count,
                    cells.len()
                );
            }
            part
        }
        None => cells,
    };
    check_size(args, &matrix, &cells)?;
    let inputs = check_inputs(args, &matrix, &cells)?;
    super::compare::warn_read(ctx, inputs.baseline.iter().flatten());
    let servers = serve_targets(ctx, &matrix, &cells)?;
    // The machine-wide lock, from the CPU self-test (it measures too) to the last cell.
    let lock = measure::take_lock(ctx, args, &|| crate::signals::stopping(&ctx.interrupted))?;
    if crate::signals::stopping(&ctx.interrupted) {
        ctx.printer.line("interrupted before anything was measured");
        return Ok(crate::signals::exit_code());
    }
    // Fail fast, before anything is written or measured, if llama.cpp cannot start here.
    let mut coordinator = ctx.coordinator()?;
    let Some((backend, notes)) = probe(ctx, &mut coordinator)? else {
        ctx.printer.line("interrupted before anything was measured");
        return Ok(crate::signals::exit_code());
    };
    let devices: Vec<String> = backend
        .devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    let (run_id, dir) = folder::run_dir(args.resume.as_deref(), &args.out)?;
    // One quantbench at a time writes a run folder (a second `--resume` of it is refused).
    let _folder = folder::lock_run_dir(&dir)?;
    let mut report = new_report(args, &matrix, run_id, backend, notes, &inputs);
    report.environment.oracle = crate::envinfo::oracle_tools(&ctx.cache_dir);
    let gpu = &report.environment.gpu;
    if let (Some(why), Some(d)) = (&gpu.unavailable_reason, &gpu.unavailable_detail) {
        ctx.printer.detail(&format!("GPUs: {why} ({d})"));
    }
    report.shard = args.shard.map(|s| crate::results::ShardInfo {
        index: s.index,
        count: s.count,
        plan_keys,
    });
    ctx.printer.run_header(
        &dir.display().to_string(),
        cells.len(),
        matrix.models.len(),
        &devices.join(", "),
    );
    let run = Run {
        ctx,
        args,
        matrix: &matrix,
        cells: &cells,
        dir,
        servers,
        batch: false,
    };
    let mut logged = false;
    let measured = run.measure(
        inputs.previous,
        report,
        &mut coordinator,
        t_start,
        &mut logged,
        lock,
    );
    let (report, lock) = measured.map_err(|e| stopped(e, logged, &run.dir))?;
    run.finish(
        report,
        inputs.baseline.as_deref(),
        &inputs.thresholds,
        inputs.save_to,
        &mut coordinator,
        lock,
    )
}

/// The server of each model with served cells: the llama-server to start (found, its version
/// read; a build other than the pinned one is said) or the endpoint. Fails before anything is
/// measured when a llama-server is needed and none is found.
fn serve_targets(
    ctx: &Ctx,
    matrix: &Matrix,
    cells: &[Cell],
) -> Result<std::collections::BTreeMap<usize, crate::protocol::ServeTarget>> {
    use crate::config::Source;
    use crate::protocol::ServeTarget;
    use crate::serving::server;
    let mut out = std::collections::BTreeMap::new();
    for c in cells.iter().filter(|c| c.params.serve.is_some()) {
        if out.contains_key(&c.model_index) {
            continue;
        }
        let m = &matrix.models[c.model_index];
        let target = match &m.source {
            Source::Endpoint {
                url,
                api_key_env,
                model_name,
            } => ServeTarget::Endpoint {
                base: url.clone(),
                api_key_env: api_key_env.clone(),
                model: model_name.clone(),
            },
            _ => {
                let bin = server::locate(m.params.server_bin.as_deref(), &ctx.cache_dir)?;
                let version = server::version(&bin)?;
                let pinned = version == server::PINNED_VERSION;
                if !pinned {
                    ctx.printer.warn(&format!(
                        "{} is not the build of the pinned llama.cpp ({}; this quantbench's is \
                         build {}): its cells measure another llama.cpp than the in-process ones \
                         (scripts/build-llama-server.sh builds the pinned one)",
                        bin.display(),
                        version,
                        server::PINNED_BUILD
                    ));
                }
                ServeTarget::Managed {
                    bin,
                    version,
                    pinned,
                }
            }
        };
        out.insert(c.model_index, target);
    }
    Ok(out)
}

/// Refuses a plan of more than [`super::list::MAX_CELLS`] cells without `--yes`, with `list`'s
/// rough duration of it: a list in models.toml multiplied past sense is a typo, not a plan.
fn check_size(args: &RunArgs, matrix: &Matrix, cells: &[Cell]) -> Result<()> {
    if cells.len() <= super::list::MAX_CELLS || args.yes {
        return Ok(());
    }
    bail!(
        "the plan has {} cells, more than the {} quantbench runs unasked; `quantbench list` \
         estimates ~{} (rough). Every list in {} multiplies the cells: check them, or pass --yes \
         to run them all",
        cells.len(),
        super::list::MAX_CELLS,
        super::list::rough_duration(matrix, cells),
        matrix.path.display()
    )
}

/// Checks the thresholds, reads the baseline, probes `--save-baseline` and reads the folder to
/// resume (refusing one of another plan), before anything is written.
fn check_inputs(args: &RunArgs, matrix: &Matrix, cells: &[Cell]) -> Result<Inputs> {
    let mut thresholds = matrix.compare.clone();
    thresholds.apply_cli(&args.threshold)?;
    // a corpus that is not there would cost every cell its quality test: said before measuring
    for c in cells {
        if let Some(f) = c.params.quality.as_ref().and_then(|q| q.corpus.as_ref()) {
            // metadata only: opening a FIFO would wait for a writer
            let problem = match std::fs::metadata(f) {
                Ok(md) if md.is_file() => None,
                Ok(_) => Some(
                    "not a regular file (a FIFO, a device or a folder); give a text file"
                        .to_string(),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some("no such file; fix the path (relative to models.toml)".to_string())
                }
                Err(e) => Some(format!("cannot be read ({e})")),
            };
            if let Some(p) = problem {
                anyhow::bail!(
                    "quality_corpus {} (model {:?}): {p}, or run with --no-quality",
                    f.display(),
                    c.model
                );
            }
        }
    }
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
        Some(dir) => folder::read_previous(dir)?,
        None => (None, Vec::new()),
    };
    if let Some(dir) = &args.resume {
        folder::check_resume_belongs(dir, previous_header.as_ref(), &previous, cells)?;
    }
    Ok(Inputs {
        thresholds,
        baseline,
        save_to,
        previous_header,
        previous,
    })
}

/// Starts llama.cpp in a worker once: its backends and devices, and notes to show. `Ok(None)`
/// when a signal came first.
fn probe(
    ctx: &Ctx,
    coordinator: &mut Coordinator<'_>,
) -> Result<Option<(BackendInfo, Vec<String>)>> {
    let (backend, notes) = match coordinator.probe() {
        Ok(p) => p,
        Err(e)
            if e.downcast_ref::<crate::coordinator::Interrupted>()
                .is_some() =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.context("checking the llama.cpp backends")),
    };
    for n in notes.iter().chain(&backend.module_notes) {
        ctx.printer.warn(n);
    }
    Ok(Some((backend, notes)))
}

/// The report header of this run (no cells yet): identity, machine, build; a resumed run keeps
/// its start time and its `unlocked` mark.
fn new_report(
    args: &RunArgs,
    matrix: &Matrix,
    run_id: String,
    backend: BackendInfo,
    notes: Vec<String>,
    inputs: &Inputs,
) -> Report {
    let previous = inputs.previous_header.as_ref();
    let mut environment = crate::envinfo::collect();
    environment.llama = backend;
    environment.gpu = crate::gpu::environment();
    environment.notes = notes;
    Report {
        schema_version: SCHEMA_VERSION,
        run_id,
        status: RunStatus::Running,
        started_at: previous.map_or_else(folder::now_rfc3339, |h| h.started_at.clone()),
        finished_at: None,
        wall_s: None,
        // a URL's password on the command line (`--endpoint http://user:pass@…`) stays out
        command: std::env::args()
            .map(|a| crate::redact::strip_userinfo(&a).into_owned())
            .collect(),
        config: matrix.path.clone(),
        quantbench: BuildInfo::current(),
        environment,
        synthetic_weights: false,
        // a resumed run measured partly without the lock stays marked
        unlocked: args.no_lock || previous.is_some_and(|h| h.unlocked),
        serving: crate::results::Serving {
            cost: crate::config::Cost {
                usd_per_hour: args.usd_per_hour.or(matrix.cost.usd_per_hour),
            },
            slo: matrix.slo,
            tokens_per_hour: args.tokens_per_hour,
        },
        shard: None,
        merged_from: Vec::new(),
        tune: None,
        cells: Vec::new(),
    }
}

/// An error once the log holds the run (a full disk, a vanished folder) leaves a valid
/// results.jsonl: the message says how to continue.
fn stopped(e: anyhow::Error, logged: bool, dir: &Path) -> anyhow::Error {
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
        resume_hint(dir)
    ))
}
