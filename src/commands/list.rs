//! `quantbench list`: the plan, where each file comes from, whether it is cached, its size.

use anyhow::Result;
use serde::Serialize;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::cli::{ListArgs, ListFormat};
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
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(&args.matrix, &args.overrides)?;
    let opts = ctx.acquire_options()?;
    let rows: Vec<Row> = cells
        .iter()
        .map(|c| {
            let p = acquire::describe(&matrix, c.model_index, c.quant, &opts);
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
            }
        })
        .collect();
    if args.format == ListFormat::Json {
        ctx.printer
            .stdout(&(serde_json::to_string_pretty(&rows)? + "\n"));
        return Ok(exit::OK);
    }
    ctx.printer.line(&format!(
        "{} cells from {} ({} models)\n",
        rows.len(),
        matrix.path.display(),
        matrix.models.len()
    ));
    ctx.printer.line(&format!(
        "{:>3}  {:<16} {:<7} {:>5} {:>4} {:>4}  {:<10} {:>12}  source",
        "#", "model", "quant", "pp", "tg", "reps", "cached", "size"
    ));
    for r in &rows {
        let size = match r.size_bytes {
            Some(b) if r.size_is_estimate => format!("~{}", bytes(b)),
            Some(b) => bytes(b),
            None => "?".into(),
        };
        ctx.printer.line(&format!(
            "{:>3}  {:<16} {:<7} {:>5} {:>4} {:>4}  {:<10} {:>12}  {}",
            r.index + 1,
            r.model,
            r.quant,
            r.n_prompt,
            r.n_gen,
            r.repetitions,
            if r.cached { "yes" } else { "no" },
            size,
            r.source
        ));
    }
    Ok(exit::OK)
}
