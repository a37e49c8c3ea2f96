//! `quantbench merge DIR… --out DIR`: joins run folders — the shards of one matrix (`run
//! --shard I/N`), or runs of the same schema on other machines — into one report: results.json,
//! results.csv, summary.md, the charts and report.html. Refuses reports of another schema and
//! a cell measured twice (naming both folders); names the cells of a sharded matrix that no
//! folder holds. Each cell keeps the backend, device and host it ran on (a cell of a report
//! from before hosts were recorded gets its folder's hostname), and the joined report lists
//! every folder with its machine (`merged_from`), so that a report joined across machine kinds
//! compares them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::{exit, Ctx};
use crate::cli::MergeArgs;
use crate::report;
use crate::results::{self, MergedRun, Report, RunStatus};

pub fn run(ctx: &Ctx, args: &MergeArgs) -> Result<u8> {
    let sources: Vec<(PathBuf, Report)> = args
        .dirs
        .iter()
        .map(|d| read(d).map(|r| (d.clone(), r)))
        .collect::<Result<_>>()?;
    check_one_plan(&sources)?;
    let merged = join(&sources)?;
    let missing = missing_cells(&sources, &merged);
    if !write(&merged, &args.out, &|| {
        crate::signals::stopping(&ctx.interrupted)
    })? {
        ctx.printer.line(&format!(
            "interrupted: {} holds results.json, results.csv and summary.md of the joined \
             report, not its charts and report.html; draw them with `quantbench report {}`",
            args.out.display(),
            args.out.display()
        ));
        return Ok(crate::signals::exit_code());
    }
    let hosts = merged.hosts();
    ctx.printer.line(&format!(
        "{} cells from {} folders joined into {}{}",
        merged.cells.len(),
        sources.len(),
        args.out.display(),
        if hosts.len() > 1 {
            format!(" (measured on {} hosts: {})", hosts.len(), hosts.join(", "))
        } else {
            String::new()
        }
    ));
    if missing.is_empty() {
        return Ok(exit::OK);
    }
    ctx.printer.warn(&format!(
        "{} cells of the sharded matrix are in none of the folders (a shard not run, or not \
         merged): {}",
        missing.len(),
        missing.join(", ")
    ));
    Ok(exit::CELLS_FAILED)
}

/// A run folder's (or a file's) report.
fn read(p: &Path) -> Result<Report> {
    let file = if p.is_dir() {
        p.join("results.json")
    } else {
        p.to_path_buf()
    };
    results::read_json(&file).with_context(|| format!("merging {}", p.display()))
}

/// Refuses shards of different matrices: every source that is a shard (`run --shard I/N`) must
/// be a part of the same plan (the same cells, in the same number of parts). Runs that are not
/// shards (whole runs on other machines) may be joined with anything.
fn check_one_plan(sources: &[(PathBuf, Report)]) -> Result<()> {
    let mut shards = sources
        .iter()
        .filter_map(|(d, r)| r.shard.as_ref().map(|s| (d, s)));
    let Some((first_dir, first)) = shards.next() else {
        return Ok(());
    };
    for (dir, s) in shards {
        if s.count != first.count || s.plan_keys != first.plan_keys {
            bail!(
                "{} is part {}/{} of another matrix than {} (part {}/{}): {}; merge the parts of \
                 one matrix (the same models.toml and options for every part)",
                dir.display(),
                s.index,
                s.count,
                first_dir.display(),
                first.index,
                first.count,
                if s.count != first.count {
                    "they split it into different numbers of parts".to_string()
                } else {
                    format!(
                        "their plans have {} and {} cells, not the same ones",
                        s.plan_keys.len(),
                        first.plan_keys.len()
                    )
                }
            );
        }
    }
    Ok(())
}

/// One report of every source's cells, in the matrix's order where the sources are shards.
fn join(sources: &[(PathBuf, Report)]) -> Result<Report> {
    let (first_dir, first) = &sources[0];
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    let mut cells = Vec::new();
    for (dir, r) in sources {
        if r.schema_version != first.schema_version {
            bail!(
                "{} has report schema {}, {} has {}: only reports of one schema can be merged",
                dir.display(),
                r.schema_version,
                first_dir.display(),
                first.schema_version
            );
        }
        for c in &r.cells {
            if let Some(other) = seen.insert(c.key.clone(), dir) {
                bail!(
                    "cell {} is in both {} and {}: merge each cell once (drop one folder, or \
                     run the shards of one matrix)",
                    c.key,
                    other.display(),
                    dir.display()
                );
            }
            let mut c = c.clone();
            if c.host.is_empty() {
                c.host = r.environment.hostname.clone();
            }
            cells.push(c);
        }
    }
    let order: Vec<String> = first
        .shard
        .as_ref()
        .map(|s| s.plan_keys.clone())
        .unwrap_or_default();
    cells.sort_by_key(|c| order.iter().position(|k| *k == c.key).unwrap_or(usize::MAX));
    for (i, c) in cells.iter_mut().enumerate() {
        c.index = i;
    }
    let mut merged = first.clone();
    merged.run_id = format!("merged from {} folders", sources.len());
    merged.status = if sources.iter().all(|(_, r)| r.status == RunStatus::Complete) {
        RunStatus::Complete
    } else {
        RunStatus::Interrupted
    };
    merged.synthetic_weights = sources.iter().any(|(_, r)| r.synthetic_weights);
    merged.unlocked = sources.iter().any(|(_, r)| r.unlocked);
    merged.wall_s = Some(sources.iter().filter_map(|(_, r)| r.wall_s).sum());
    merged.shard = None;
    merged.merged_from = sources
        .iter()
        .flat_map(|(d, r)| merged_runs(d, r))
        .collect();
    merged.cells = cells;
    Ok(merged)
}

/// The folders a source stands for: itself, or the folders it was merged from.
fn merged_runs(dir: &Path, r: &Report) -> Vec<MergedRun> {
    if !r.merged_from.is_empty() {
        return r.merged_from.clone();
    }
    vec![MergedRun {
        folder: dir.to_path_buf(),
        run_id: r.run_id.clone(),
        started_at: r.started_at.clone(),
        shard: r.shard.as_ref().map(|s| format!("{}/{}", s.index, s.count)),
        cells: r.cells.len(),
        quantbench: r.quantbench.clone(),
        environment: r.environment.clone(),
    }]
}

/// Keys of the sharded matrix's cells that no source holds (none without shard records).
fn missing_cells(sources: &[(PathBuf, Report)], merged: &Report) -> Vec<String> {
    let planned: BTreeSet<&String> = sources
        .iter()
        .filter_map(|(_, r)| r.shard.as_ref())
        .flat_map(|s| &s.plan_keys)
        .collect();
    let have: BTreeSet<&String> = merged.cells.iter().map(|c| &c.key).collect();
    planned
        .into_iter()
        .filter(|k| !have.contains(k))
        .cloned()
        .collect()
}

/// The joined report's files in `dir` (created; refused when it already holds a report).
/// `Ok(false)`: `stop()` said to stop after the data files, before the charts.
fn write(r: &Report, dir: &Path, stop: &dyn Fn() -> bool) -> Result<bool> {
    if dir.join("results.json").exists() {
        bail!(
            "{} already holds a report: merge into a new folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    report::write_all(r, dir)?;
    if stop() {
        return Ok(false);
    }
    report::write_visuals(r, dir)?;
    Ok(true)
}
