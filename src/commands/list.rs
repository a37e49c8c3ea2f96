//! `quantbench list`: the plan, where each file comes from, whether it is cached, its size, and
//! whether it fits in the device's free memory (how many copies would).

use anyhow::Result;
use serde::Serialize;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::capacity::{self, Estimate};
use crate::cli::{ListArgs, ListFormat};
use crate::config::GpuLayers;
use crate::plan::Cell;
use crate::report::md::bytes;

#[derive(Serialize)]
struct Row {
    index: usize,
    model: String,
    quant: String,
    n_prompt: u32,
    n_gen: u32,
    repetitions: u32,
    source: String,
    path: Option<String>,
    cached: bool,
    /// Why the file that is there cannot be used (`not a GGUF file`, ...).
    problem: Option<String>,
    size_bytes: Option<u64>,
    size_is_estimate: bool,
    /// Multi-GPU placement where it is not llama.cpp's default (`sm none mg 1`).
    placement: Option<String>,
    /// Estimated memory of one copy (weights + KV + compute + runtime overhead).
    estimate: Option<Estimate>,
    /// The estimate per GPU when the model is spread over several (empty for one).
    per_gpu_bytes: Vec<u64>,
    fits: Option<bool>,
    copies: Option<u64>,
}

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

fn budget(given: Option<u64>, wants_gpu: bool) -> Budget {
    let env = crate::gpu::environment();
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

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    let opts = ctx.acquire_options(args.matrix.offline)?;
    let wants_gpu = cells
        .iter()
        .any(|c| c.params.n_gpu_layers != GpuLayers::N(0));
    let budget = budget(args.device_memory, wants_gpu);
    let rows: Vec<Row> = cells
        .iter()
        .map(|c| {
            row(
                c,
                acquire::describe(&matrix, c.model_index, c.quant, &opts),
                &budget,
            )
        })
        .collect();
    if args.format == ListFormat::Json {
        let out = serde_json::json!({ "memory": budget, "cells": rows });
        ctx.printer
            .stdout(&(serde_json::to_string_pretty(&out)? + "\n"));
        return Ok(exit::OK);
    }
    ctx.printer.line(&format!(
        "{} cells from {} ({} models); memory: {}\n",
        rows.len(),
        matrix.path.display(),
        matrix.models.len(),
        budget.description
    ));
    print_table(ctx, &rows);
    Ok(exit::OK)
}

/// One cell of the plan: where its file comes from, and its memory estimate against `budget`.
fn row(c: &Cell, p: acquire::Planned, budget: &Budget) -> Row {
    let gpu = budget.kind != "host";
    let on_gpu = gpu && c.params.n_gpu_layers != GpuLayers::N(0);
    let estimate = match (p.size_bytes, p.shape) {
        (Some(size), Some(shape)) => Some(capacity::estimate(
            size,
            &shape,
            u64::from(c.params.n_prompt + c.params.n_gen),
            u64::from(c.params.n_ubatch),
            &c.params.type_k,
            &c.params.type_v,
            on_gpu,
        )),
        _ => None,
    };
    let fitted = estimate.map(|e| fit(&e, c, budget, on_gpu));
    Row {
        index: c.index,
        model: c.model.clone(),
        quant: c.quant.to_string(),
        n_prompt: c.params.n_prompt,
        n_gen: c.params.n_gen,
        repetitions: c.params.repetitions,
        source: p.source,
        path: p.path.map(|p| p.display().to_string()),
        cached: p.cached,
        problem: p.problem,
        size_bytes: p.size_bytes,
        size_is_estimate: p.size_is_estimate,
        fits: fitted.as_ref().map(|f| f.0),
        copies: fitted.as_ref().map(|f| f.1),
        per_gpu_bytes: fitted.map(|f| f.2).unwrap_or_default(),
        placement: c.params.placement_tag(),
        estimate,
    }
}

/// The plan as a table on stderr, with what `needs` and `copies` mean.
fn print_table(ctx: &Ctx, rows: &[Row]) {
    let w = rows
        .iter()
        .map(|r| r.name().chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    ctx.printer.line(&format!(
        "{:>3}  {:<w$} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6}  source",
        "#", "model", "quant", "pp", "tg", "reps", "cached", "file", "needs", "fits", "copies"
    ));
    for r in rows {
        ctx.printer.line(&r.line(w));
    }
    ctx.printer.line(
        "\n`needs` estimates one copy: file + KV cache at n_prompt+n_gen tokens + compute buffers \
         (+512 MiB runtime overhead per process on a GPU); `copies` = how many such processes fit. \
         A model split over several GPUs needs its share of weights and KV cache on each, plus \
         compute buffers and overhead on every GPU it uses (`needs` per GPU, joined by +).",
    );
}

impl Row {
    /// The model with its multi-GPU placement, if any.
    fn name(&self) -> String {
        match &self.placement {
            Some(t) => format!("{} [{t}]", self.model),
            None => self.model.clone(),
        }
    }

    /// The row as a table line, the model column `w` wide.
    fn line(&self, w: usize) -> String {
        let size = match self.size_bytes {
            Some(b) if self.size_is_estimate => format!("~{}", bytes(b)),
            Some(b) => bytes(b),
            None => "?".into(),
        };
        let needs = match self.estimate {
            None => "?".into(),
            Some(_) if !self.per_gpu_bytes.is_empty() => self
                .per_gpu_bytes
                .iter()
                .map(|b| format!("~{}", bytes(*b)))
                .collect::<Vec<_>>()
                .join("+"),
            Some(e) => format!("~{}", bytes(e.total())),
        };
        format!(
            "{:>3}  {:<w$} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6}  {}",
            self.index + 1,
            self.name(),
            self.quant,
            self.n_prompt,
            self.n_gen,
            self.repetitions,
            match (&self.problem, self.cached) {
                (Some(_), _) => "BAD",
                (None, true) => "yes",
                (None, false) => "no",
            },
            size,
            needs,
            self.fits.map_or("?", |f| if f { "yes" } else { "NO" }),
            self.copies.map_or("?".into(), |c| c.to_string()),
            match &self.problem {
                Some(p) => format!("{}: {p}", self.source),
                None => self.source.clone(),
            }
        )
    }
}
