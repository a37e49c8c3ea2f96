//! `quantbench list`: the plan, where each file comes from, whether it is cached, its size,
//! whether it fits in the device's free memory (how many copies would, and with how many
//! sequences at most), and a rough estimate of how long the run will take.

use anyhow::Result;
use serde::Serialize;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::capacity::{self, Estimate, Rates, Shape};
use crate::cli::{ListArgs, ListFormat};
use crate::config::GpuLayers;
use crate::gpu::GpuEnvironment;
use crate::plan::{Cell, CellParams};
use crate::report::md::bytes;

#[derive(Serialize)]
struct Row {
    index: usize,
    model: String,
    quant: String,
    n_prompt: u32,
    n_gen: u32,
    repetitions: u32,
    /// Sequences decoded together, and the tokens in the context before them.
    n_parallel: u32,
    n_depth: u32,
    /// The context the cell needs ([`CellParams::context_tokens`]), which the KV cache of
    /// `estimate` holds; `None` beyond llama.cpp's limit.
    n_ctx: Option<u32>,
    source: String,
    path: Option<String>,
    cached: bool,
    /// Why the file that is there cannot be used (`not a GGUF file`, ...).
    problem: Option<String>,
    /// Why the cell's parameters will fail (llama.cpp refuses them), known before running.
    refused: Option<String>,
    size_bytes: Option<u64>,
    size_is_estimate: bool,
    /// Multi-GPU placement where it is not llama.cpp's default (`sm none mg 1`).
    placement: Option<String>,
    /// What the cell measures beyond one sequence on an empty context (`np 16`, `d 4096`).
    load: Option<String>,
    /// Estimated memory of one copy (weights + KV + compute + runtime overhead).
    estimate: Option<Estimate>,
    /// The estimate per GPU when the model is spread over several (empty for one).
    per_gpu_bytes: Vec<u64>,
    fits: Option<bool>,
    copies: Option<u64>,
    /// The most sequences (1..=256) one copy fits with at this cell's n_prompt, n_gen and
    /// depth (0: not even one).
    max_parallel: Option<u32>,
    /// Rough estimate of the cell's duration (seconds), see [`capacity::cell_seconds`].
    estimated_s: Option<f64>,
    /// Measured through a server under a workload (no pp/tg repetitions).
    served: bool,
}

/// The run's estimated duration: the sum over the cells whose size and shape are known.
#[derive(Serialize)]
struct Duration {
    estimated_s: f64,
    /// Cells without a known size or shape, not counted.
    cells_unknown: usize,
    /// Model files to download or derive first (not counted either).
    files_not_cached: usize,
    note: &'static str,
}

/// How the duration is estimated.
const DURATION_NOTE: &str = "rough estimate, not a measurement: per cell a fixed start \
     (1 s on a GPU, 0.3 s on the CPU), the file at 4 GB/s, then (warmup + repetitions) × \
     (pp of n_parallel × n_prompt tokens + 2 × n_gen decode steps); prompt processing at \
     150 TFLOP/s on a GPU or 60 GFLOP/s per CPU thread (2 FLOP per weight per token), a decode \
     step reading the weights and KV cache at 60% of the GPU's peak bandwidth (2 TB/s where NVML \
     does not give it; 8 GB/s per CPU thread, at most 100 GB/s), at least 80 µs (GPU) or 20 µs (CPU) per layer; plus 2 s of \
     energy reading on NVIDIA GPUs and the quality test where it is on. Downloads and \
     quantizing are not counted.";

/// The memory cells are checked against.
#[derive(Serialize)]
struct Budget {
    /// `gpu` (NVML free memory of each GPU), `host` (MemAvailable) or `given`.
    kind: String,
    description: String,
    /// Free memory of the first GPU (or the host).
    free_bytes: u64,
    /// Free memory of each GPU, in NVML's order (one entry for the host).
    per_gpu_free_bytes: Vec<u64>,
}

fn budget(env: &GpuEnvironment, given: Option<u64>, wants_gpu: bool) -> Budget {
    if let Some(b) = given {
        let n = env.gpus.len().max(1);
        return Budget {
            kind: "given".into(),
            description: if env.gpus.len() > 1 {
                format!(
                    "{} per GPU × {n} GPUs counted by NVML (--device-memory)",
                    bytes(b)
                )
            } else {
                format!("{} (--device-memory)", bytes(b))
            },
            free_bytes: b,
            per_gpu_free_bytes: vec![b; n],
        };
    }
    match env.gpus.first() {
        Some(g) if wants_gpu => Budget {
            kind: "gpu".into(),
            description: env
                .gpus
                .iter()
                .map(|g| {
                    format!(
                        "{} free on GPU {} {} (NVML)",
                        bytes(g.memory_free_bytes),
                        g.index,
                        g.name
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            free_bytes: g.memory_free_bytes,
            per_gpu_free_bytes: env.gpus.iter().map(|g| g.memory_free_bytes).collect(),
        },
        _ => {
            let free = crate::envinfo::host_memory_available_bytes();
            Budget {
                kind: "host".into(),
                description: format!("{} host memory available (no GPU in use)", bytes(free)),
                free_bytes: free,
                per_gpu_free_bytes: vec![free],
            }
        }
    }
}

/// Whether a copy fits, how many do, and the need per GPU where it is spread over several.
fn fit(e: &Estimate, c: &Cell, budget: &Budget, gpu: bool) -> (bool, u64, Vec<u64>) {
    let free = &budget.per_gpu_free_bytes;
    let shares = if gpu {
        capacity::shares(
            c.params.split_mode,
            c.params.main_gpu,
            &c.params.tensor_split,
            free,
        )
    } else {
        vec![1.0]
    };
    let need = e.per_gpu(&shares);
    let mut fits = need.iter().any(|n| *n > 0);
    let mut copies = u64::MAX;
    for (k, n) in need.iter().enumerate().filter(|(_, n)| **n > 0) {
        let f = free.get(k).copied().unwrap_or(0);
        fits &= *n <= f;
        copies = copies.min(f / n);
    }
    let copies = if copies == u64::MAX { 0 } else { copies };
    let per_gpu = if need.iter().filter(|n| **n > 0).count() > 1 {
        need
    } else {
        Vec::new()
    };
    (fits, copies, per_gpu)
}

/// Each cell's cost for dealing cells to shards (`run --shard`): `list`'s duration model with
/// nominal file sizes from the matrix alone and fixed rates (a GPU of 2 TB/s), so that every
/// machine deals the same cells to the same part, whatever it has cached and whatever its GPU
/// or core count. Cells of files whose shape only the file gives (local paths, the hub) cost
/// by their tokens.
pub fn shard_costs(matrix: &crate::config::Matrix, cells: &[Cell]) -> Vec<f64> {
    let rates = Rates::gpu(None, 0.0);
    cells
        .iter()
        .map(|c| {
            let p = &c.params;
            match acquire::nominal(matrix, c.model_index, c.quant) {
                Some((size, shape)) => {
                    let e = estimate_for(p, size, &shape, true);
                    capacity::cell_seconds(p, size, &shape, &e, &rates)
                }
                None => {
                    let runs = f64::from(p.repetitions + p.warmup);
                    let tokens = f64::from(p.n_prompt + p.n_gen) * f64::from(p.n_parallel.max(1));
                    1.0 + runs * tokens * 1e-3
                }
            }
        })
        .collect()
}

/// The most cells `run` measures without `--yes`: every list in models.toml multiplies the
/// matrix, and a typo in one (`n_gen = [1, 2, …, 1000]`) makes a run of weeks.
pub const MAX_CELLS: usize = 10_000;

/// `list`'s rough duration of these cells, from the matrix alone (no file is read): for the
/// message that refuses a matrix of more than [`MAX_CELLS`].
pub fn rough_duration(matrix: &crate::config::Matrix, cells: &[Cell]) -> String {
    human_duration(shard_costs(matrix, cells).iter().sum())
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    let opts = ctx.acquire_options(args.matrix.offline, false)?;
    let wants_gpu = cells
        .iter()
        .any(|c| c.params.n_gpu_layers != GpuLayers::N(0));
    let env = crate::gpu::environment();
    let budget = budget(&env, args.device_memory, wants_gpu);
    // llama.cpp's own devices (a worker starts it): names a cell's `devices` must use
    let llama = ctx.coordinator().and_then(|c| c.devices());
    // one look per file, however many cells share it (a large matrix lists in seconds)
    let mut seen = std::collections::HashMap::new();
    let mut rows: Vec<Row> = cells
        .iter()
        .map(|c| {
            let planned = seen
                .entry((c.model_index, c.quant))
                .or_insert_with(|| acquire::describe(&matrix, c.model_index, c.quant, &opts))
                .clone();
            row(c, planned, &budget, &env)
        })
        .collect();
    if let Ok(info) = &llama {
        for (r, c) in rows.iter_mut().zip(&cells) {
            if let Err(e) = info.cell_gpus(&c.params.devices) {
                r.refused.get_or_insert(e);
            }
        }
    }
    let duration = Duration {
        estimated_s: rows.iter().filter_map(|r| r.estimated_s).sum(),
        cells_unknown: rows.iter().filter(|r| r.estimated_s.is_none()).count(),
        files_not_cached: rows
            .iter()
            .filter(|r| !r.cached)
            .map(|r| (&r.model, &r.quant))
            .collect::<std::collections::HashSet<_>>()
            .len(),
        note: DURATION_NOTE,
    };
    if args.format == ListFormat::Json {
        let (devices, notes) = match &llama {
            Ok(i) => (serde_json::to_value(&i.devices)?, i.module_notes.clone()),
            Err(e) => (serde_json::Value::Null, vec![format!("{e:#}")]),
        };
        let out = serde_json::json!({
            "n_cells": rows.len(),
            "duration": duration,
            "memory": budget,
            "devices": devices,
            "device_notes": notes,
            "cells": rows,
        });
        ctx.printer
            .stdout(&(serde_json::to_string_pretty(&out)? + "\n"));
        return Ok(exit::OK);
    }
    ctx.printer.line(&format!(
        "{} cells from {} ({} models); memory: {}",
        rows.len(),
        matrix.path.display(),
        matrix.models.len(),
        budget.description
    ));
    ctx.printer
        .line(&format!("{}\n", duration_line(&duration, rows.len())));
    print_devices(ctx, &llama);
    print_table(ctx, &rows);
    Ok(exit::OK)
}

/// llama.cpp's devices as it names them (what `devices` takes), with backend, driver and
/// memory; then why a backend module gave none.
fn print_devices(ctx: &Ctx, llama: &Result<crate::protocol::BackendInfo>) {
    let info = match llama {
        Ok(i) => i,
        Err(e) => {
            ctx.printer
                .warn(&format!("llama.cpp's devices could not be listed: {e:#}"));
            return;
        }
    };
    ctx.printer.line("llama.cpp devices (names for `devices`):");
    for d in &info.devices {
        let driver = if d.driver.is_empty() {
            String::new()
        } else {
            format!(", driver {}", d.driver)
        };
        ctx.printer.line(&format!(
            "  {:<10} {} ({} {}{driver}; {} free of {})",
            d.name,
            d.description,
            d.backend,
            d.kind,
            bytes(d.memory_free_bytes),
            bytes(d.memory_total_bytes)
        ));
    }
    for n in &info.module_notes {
        ctx.printer.warn(n);
    }
    ctx.printer.line("");
}

/// `estimated duration: ~4 min 10 s (...)`, with the cells it could not count.
fn duration_line(d: &Duration, n: usize) -> String {
    let mut s = format!(
        "estimated duration: ~{} for {} cells (rough: fixed assumed speeds of the device, \
         not a measurement; see `list --format json`'s duration.note)",
        human_duration(d.estimated_s),
        n - d.cells_unknown
    );
    if d.cells_unknown > 0 {
        s += &format!(
            "; {} cells without a known size or shape are not counted",
            d.cells_unknown
        );
    }
    if d.files_not_cached > 0 {
        s += &format!(
            "; plus fetching or deriving {} model files not cached yet (`quantbench fetch`)",
            d.files_not_cached
        );
    }
    s
}

/// `45 s`, `4 min 10 s`, `2 h 05 min`.
fn human_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0 => "<1 s".into(),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The speeds the duration of a cell is estimated with: the first GPU's where the cell runs
/// on one, else the CPU's with the cell's threads.
fn rates(c: &Cell, on_gpu: bool, env: &GpuEnvironment) -> Rates {
    match env.gpus.first() {
        Some(g) if on_gpu => Rates::gpu(g.peak_bandwidth_bytes_s, capacity::ENERGY_WINDOW_S),
        _ if on_gpu => Rates::gpu(None, 0.0),
        _ => {
            let threads = match c.params.n_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                n => n,
            };
            Rates::cpu(threads)
        }
    }
}

/// The memory estimate of `p` (the cell's parameters, perhaps with another `n_parallel`) for
/// a file of `size` bytes and `shape`, its KV cache at the context `p` needs.
fn estimate_for(p: &CellParams, size: u64, shape: &Shape, on_gpu: bool) -> Estimate {
    let n_ctx = p.context_tokens(0).unwrap_or(i32::MAX as u32);
    capacity::estimate(
        size,
        shape,
        u64::from(n_ctx),
        u64::from(p.n_ubatch),
        &p.type_k,
        &p.type_v,
        on_gpu,
    )
}

/// The most sequences (1..=256, `n_parallel`'s range) one copy of `c` fits with, each holding
/// its n_prompt + n_gen tokens after the depth; 0 when not even one fits.
fn max_parallel(c: &Cell, size: u64, shape: &Shape, budget: &Budget, on_gpu: bool) -> u32 {
    let fits = |b: u32| {
        let mut p = c.params.clone();
        p.n_parallel = b;
        p.context_tokens(0).is_some()
            && fit(&estimate_for(&p, size, shape, on_gpu), c, budget, on_gpu).0
    };
    let (mut lo, mut hi) = (0u32, crate::config::limits::N_PARALLEL.max as u32);
    // invariant: `lo` fits (0 trivially), `hi + 1` does not (or is past the range)
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// One cell of the plan: where its file comes from, its memory estimate against `budget`,
/// the most sequences that fit and its estimated duration.
fn row(c: &Cell, p: acquire::Planned, budget: &Budget, env: &GpuEnvironment) -> Row {
    let gpu = budget.kind != "host";
    let on_gpu = gpu && c.params.n_gpu_layers != GpuLayers::N(0);
    let known = p.size_bytes.zip(p.shape);
    let estimate = known.map(|(size, shape)| estimate_for(&c.params, size, &shape, on_gpu));
    let fitted = estimate.map(|e| fit(&e, c, budget, on_gpu));
    let max_parallel = known.map(|(size, shape)| max_parallel(c, size, &shape, budget, on_gpu));
    let estimated_s = known.zip(estimate).map(|((size, shape), e)| {
        capacity::cell_seconds(&c.params, size, &shape, &e, &rates(c, on_gpu, env))
    });
    Row {
        index: c.index,
        model: c.model.clone(),
        quant: c.quant.to_string(),
        n_prompt: c.params.n_prompt,
        n_gen: c.params.n_gen,
        repetitions: c.params.repetitions,
        n_parallel: c.params.n_parallel,
        n_depth: c.params.n_depth,
        n_ctx: c.params.context_tokens(0),
        source: p.source,
        path: p.path.map(|p| p.display().to_string()),
        cached: p.cached,
        problem: p.problem,
        refused: c.params.refusal(),
        size_bytes: p.size_bytes,
        size_is_estimate: p.size_is_estimate,
        fits: fitted.as_ref().map(|f| f.0),
        copies: fitted.as_ref().map(|f| f.1),
        per_gpu_bytes: fitted.map(|f| f.2).unwrap_or_default(),
        placement: c.params.placement_tag(),
        load: c.params.load_tag(),
        estimate,
        max_parallel,
        estimated_s,
        served: c.params.serve.is_some(),
    }
}

/// The plan as a table on stderr, with what `needs`, `copies`, `max B` and `~time` mean.
fn print_table(ctx: &Ctx, rows: &[Row]) {
    let w = rows
        .iter()
        .map(|r| r.name().chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    ctx.printer.line(&format!(
        "{:>3}  {:<w$} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6} {:>5} {:>9}  source",
        "#", "model", "quant", "pp", "tg", "reps", "cached", "file", "needs", "fits", "copies",
        "max B", "~time"
    ));
    for r in rows {
        ctx.printer.line(&r.line(w));
    }
    ctx.printer.line(
        "\n`needs` estimates one copy: file + KV cache of the cell's context (depth + n_parallel \
         × (n_prompt + n_gen) tokens) + compute buffers (+512 MiB runtime overhead per process \
         on a GPU); `copies` = how many such processes fit. `max B` = the most sequences \
         (n_parallel, up to 256) one copy fits with at the cell's n_prompt + n_gen per sequence \
         and depth. `~time` is a rough estimate of the cell's duration. A model split over \
         several GPUs needs its share of weights and KV cache on each, plus compute buffers and \
         overhead on every GPU it uses (`needs` per GPU, joined by +).",
    );
}

impl Row {
    /// The model with its multi-GPU placement and load (`np 16`, `d 4096`), if any.
    fn name(&self) -> String {
        match crate::plan::join_tags(&[self.placement.clone(), self.load.clone()]) {
            Some(t) => format!("{} [{t}]", self.model),
            None => self.model.clone(),
        }
    }

    /// `needs`: one copy's estimate, per GPU where it is spread over several.
    fn needs(&self) -> String {
        match self.estimate {
            None => "?".into(),
            Some(_) if !self.per_gpu_bytes.is_empty() => self
                .per_gpu_bytes
                .iter()
                .map(|b| format!("~{}", bytes(*b)))
                .collect::<Vec<_>>()
                .join("+"),
            Some(e) => format!("~{}", bytes(e.total())),
        }
    }

    /// A count of the in-process tests, `–` for a served cell (which has none).
    fn shown(&self, n: u32) -> String {
        if self.served {
            "–".into()
        } else {
            n.to_string()
        }
    }

    /// The row as a table line, the model column `w` wide.
    fn line(&self, w: usize) -> String {
        let size = match self.size_bytes {
            Some(b) if self.size_is_estimate => format!("~{}", bytes(b)),
            Some(b) => bytes(b),
            None => "?".into(),
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        format!(
            "{:>3}  {:<w$} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6} {:>5} {:>9}  {}",
            self.index + 1,
            self.name(),
            self.quant,
            self.shown(self.n_prompt),
            self.shown(self.n_gen),
            self.shown(self.repetitions),
            match (&self.problem, self.cached) {
                (Some(_), _) => "BAD",
                (None, true) => "yes",
                (None, false) => "no",
            },
            size,
            self.needs(),
            if self.refused.is_some() {
                "NO"
            } else {
                self.fits.map_or("?", |f| if f { "yes" } else { "NO" })
            },
            opt(self.copies.map(|c| c.to_string())),
            opt(self.max_parallel.map(|b| b.to_string())),
            opt(self.estimated_s.map(human_duration)),
            match (&self.problem, &self.refused) {
                (Some(p), _) => format!("{}: {p}", self.source),
                (None, Some(r)) => format!("{} — will fail: {r}", self.source),
                (None, None) => self.source.clone(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(super::human_duration(44.6), "45 s");
        assert_eq!(super::human_duration(250.0), "4 min 10 s");
        assert_eq!(super::human_duration(7500.0), "2 h 05 min");
    }
}
