//! `quantbench list`: the plan, where each file comes from, whether it is cached, its size, and
//! whether it fits in the device's free memory (how many copies would).

use anyhow::Result;
use serde::Serialize;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::capacity::{self, Estimate};
use crate::cli::{ListArgs, ListFormat};
use crate::config::GpuLayers;
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
    size_bytes: Option<u64>,
    size_is_estimate: bool,
    /// Estimated memory of one copy (weights + KV + compute + runtime overhead).
    estimate: Option<Estimate>,
    fits: Option<bool>,
    copies: Option<u64>,
}

/// The memory cells are checked against.
#[derive(Serialize)]
struct Budget {
    /// `gpu` (NVML free memory of the first GPU), `host` (MemAvailable) or `given`.
    kind: String,
    description: String,
    free_bytes: u64,
}

fn budget(given: Option<u64>, wants_gpu: bool) -> Budget {
    if let Some(b) = given {
        return Budget {
            kind: "given".into(),
            description: format!("{} (--device-memory)", bytes(b)),
            free_bytes: b,
        };
    }
    let env = crate::gpu::environment();
    match env.gpus.first() {
        Some(g) if wants_gpu => Budget {
            kind: "gpu".into(),
            description: format!("{} free on {} (NVML)", bytes(g.memory_free_bytes), g.name),
            free_bytes: g.memory_free_bytes,
        },
        _ => {
            let free = crate::envinfo::host_memory_available_bytes();
            Budget {
                kind: "host".into(),
                description: format!("{} host memory available (no GPU in use)", bytes(free)),
                free_bytes: free,
            }
        }
    }
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    let opts = ctx.acquire_options(args.matrix.offline)?;
    let wants_gpu = cells
        .iter()
        .any(|c| c.params.n_gpu_layers != GpuLayers::N(0));
    let budget = budget(args.device_memory, wants_gpu);
    let gpu = budget.kind != "host";
    let rows: Vec<Row> = cells
        .iter()
        .map(|c| {
            let p = acquire::describe(&matrix, c.model_index, c.quant, &opts);
            let estimate = match (p.size_bytes, p.shape) {
                (Some(size), Some(shape)) => Some(capacity::estimate(
                    size,
                    &shape,
                    u64::from(c.params.n_prompt + c.params.n_gen),
                    u64::from(c.params.n_ubatch),
                    &c.params.type_k,
                    &c.params.type_v,
                    gpu && c.params.n_gpu_layers != GpuLayers::N(0),
                )),
                _ => None,
            };
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
                size_bytes: p.size_bytes,
                size_is_estimate: p.size_is_estimate,
                fits: estimate.map(|e| e.total() <= budget.free_bytes),
                copies: estimate.map(|e| e.copies_in(budget.free_bytes)),
                estimate,
            }
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
    ctx.printer.line(&format!(
        "{:>3}  {:<16} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6}  source",
        "#", "model", "quant", "pp", "tg", "reps", "cached", "file", "needs", "fits", "copies"
    ));
    for r in &rows {
        let size = match r.size_bytes {
            Some(b) if r.size_is_estimate => format!("~{}", bytes(b)),
            Some(b) => bytes(b),
            None => "?".into(),
        };
        ctx.printer.line(&format!(
            "{:>3}  {:<16} {:<7} {:>5} {:>4} {:>4}  {:<6} {:>12} {:>12} {:>5} {:>6}  {}",
            r.index + 1,
            r.model,
            r.quant,
            r.n_prompt,
            r.n_gen,
            r.repetitions,
            if r.cached { "yes" } else { "no" },
            size,
            r.estimate
                .map_or("?".into(), |e| format!("~{}", bytes(e.total()))),
            r.fits.map_or("?", |f| if f { "yes" } else { "NO" }),
            r.copies.map_or("?".into(), |c| c.to_string()),
            r.source
        ));
    }
    ctx.printer.line(
        "\n`needs` estimates one copy: file + KV cache at n_prompt+n_gen tokens + compute buffers \
         (+512 MiB runtime overhead per process on a GPU); `copies` = how many such processes fit.",
    );
    Ok(exit::OK)
}
