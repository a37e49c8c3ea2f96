//! `summary.md`: the results table in Markdown, for PR comments and issues, plus the facts a
//! reader needs to trust it (machine, versions, synthetic weights, failures) and, where cells
//! were scored against a reference, their quality.

use anyhow::Result;

use super::Format;
use crate::config::SplitMode;
use crate::gpu::GpuCellTelemetry;
use crate::results::{CellResult, CellStatus, Report};

pub struct Markdown;

/// Human size with a binary unit, e.g. `326.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `mean ± sd` with a sensible number of decimals.
pub fn mean_sd(c: &CellResult, metric: &str) -> String {
    match c.metrics.get(metric) {
        Some(s) => {
            let d = if s.mean >= 100.0 { 1 } else { 2 };
            format!("{:.d$} ± {:.d$}", s.mean, s.sd)
        }
        None => "–".into(),
    }
}

/// An optional figure with `decimals` decimals, or `–`.
pub fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

/// An optional size as [`bytes`], or `–`.
pub fn opt_bytes(v: Option<u64>) -> String {
    v.map_or("–".into(), bytes)
}

/// An optional fraction as a whole percentage (`0.437` → `44%`), or `–`.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.0}%", x * 100.0))
}

/// The SM clock range seen during timed regions, `min–max` in MHz (`?` where unknown).
pub fn sm_clocks(g: &GpuCellTelemetry) -> String {
    let mhz = |v: Option<u32>| v.map_or("?".into(), |v| v.to_string());
    format!("{}–{}", mhz(g.sm_clock_mhz_min), mhz(g.sm_clock_mhz_max))
}

/// `v` with `digits` significant digits (`0.00001563`, `2236`), at least none after the point;
/// `0` as `0`.
pub fn sig(v: f64, digits: i32) -> String {
    format!("{v:.*}", sig_decimals(v, digits))
}

/// The decimals that give `v` `digits` significant digits (0 for 0 and non-finite values).
fn sig_decimals(v: f64, digits: i32) -> usize {
    if v == 0.0 || !v.is_finite() {
        return 0;
    }
    (digits - 1 - v.abs().log10().floor() as i32).max(0) as usize
}

/// `mean ± err`, both with the decimals that give the mean `digits` significant digits (the
/// error's where the mean is 0).
pub fn sig_pm(mean: f64, err: f64, digits: i32) -> String {
    let d = if mean == 0.0 {
        sig_decimals(err, digits.min(2))
    } else {
        sig_decimals(mean, digits)
    };
    format!("{mean:.d$} ± {err:.d$}")
}

/// `ok` or `FAILED`.
pub fn status_text(c: &CellResult) -> &'static str {
    if c.status == CellStatus::Ok {
        "ok"
    } else {
        "FAILED"
    }
}

/// Memory column: the memory the efficiency figure uses, labelled.
pub fn memory(c: &CellResult) -> String {
    match (c.mem_bytes, c.mem_basis.as_deref()) {
        (Some(b), Some("vram")) => format!("{} VRAM", bytes(b)),
        (Some(b), _) => format!("{} RSS", bytes(b)),
        _ => "–".into(),
    }
}

/// Header and rows of the results table shared by summary.md and the terminal.
pub fn table(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let head = vec![
        "model",
        "quant",
        "status",
        "load s",
        "memory",
        "TTFT ms",
        "decode tok/s",
        "ITL p99 ms",
        "pp tok/s",
        "tg tok/s",
        "tok/s/GB",
    ];
    let rows: Vec<Vec<String>> = report
        .cells
        .iter()
        .map(|c| {
            vec![
                c.model_and_placement(),
                c.quant.to_string(),
                status_text(c).into(),
                fixed(c.load_s, 2),
                memory(c),
                mean_sd(c, "ttft_ms"),
                mean_sd(c, "decode_tok_s"),
                fixed(c.itl_ms_p99, 2),
                mean_sd(c, "pp_tok_s"),
                mean_sd(c, "tg_tok_s"),
                fixed(c.efficiency_tok_s_per_gb, 1),
            ]
        })
        .collect();
    let (mut head, mut rows) = (head, rows);
    if report.several_hosts() {
        head.insert(2, "host");
        for (row, c) in rows.iter_mut().zip(&report.cells) {
            row.insert(2, c.host.clone());
        }
    }
    serving_columns(report, &mut head, &mut rows);
    (head, rows)
}

/// The aggregate throughput (all sequences, llama-batched-bench's S_TG) where any cell decodes
/// several sequences, and the price per million tokens where a price was given.
fn serving_columns(report: &Report, head: &mut Vec<&'static str>, rows: &mut [Vec<String>]) {
    if report.cells.iter().any(|c| c.params.n_parallel > 1) {
        head.push("all seqs tok/s");
        for (row, c) in rows.iter_mut().zip(&report.cells) {
            row.push(mean_sd(c, "throughput_tok_s"));
        }
    }
    if report.cells.iter().any(|c| c.usd_per_mtok.is_some()) {
        head.push("$/1M tok");
        for (row, c) in rows.iter_mut().zip(&report.cells) {
            row.push(fixed(c.usd_per_mtok, 3));
        }
    }
}

/// A Markdown table: the header, the rule, one line per row.
fn md_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", head.join(" | "));
    s += &format!("|{}\n", head.iter().map(|_| "---|").collect::<String>());
    for row in rows {
        let cells: Vec<_> = row
            .iter()
            .map(|c| crate::redact::markdown_text(c))
            .collect();
        s += &format!("| {} |\n", cells.join(" | "));
    }
    s
}

impl Format for Markdown {
    fn file_name(&self) -> &'static str {
        "summary.md"
    }
    fn render(&self, r: &Report) -> Result<String> {
        let mut s = format!("# quantbench run {}\n\n", r.run_id);
        s += &facts(r);
        s += "\nRates are mean ± standard deviation over the repetitions. Memory is the worker's \
              device memory (VRAM) when a GPU was used, else its host resident set (RSS).\n\n";
        let (head, rows) = table(r);
        s += &md_table(&head, &rows);
        if let Some((intro, head, rows)) = machines_table(r) {
            s += &format!("\n## Machines\n\n{intro}\n\n");
            s += &md_table(&head, &rows);
        }
        if let Some(t) = &r.tune {
            s += &super::tune_section::markdown(t);
        }
        s += &serving_section(r);
        s += &served_section(r);
        s += &harness_check(r);
        s += &gpu_table(r);
        s += &quality_section(r);
        if let Some((intro, head, rows)) = placement_table(r) {
            s += &format!("\n## Multi-GPU placements\n\n{intro}\n\n");
            s += &md_table(&head, &rows);
        }
        if let Some((intro, head, rows)) = rpc_table(r) {
            s += &format!("\n## RPC servers\n\n{intro}\n\n");
            s += &md_table(&head, &rows);
        }
        s += &failed_list(r);
        s += &disturbed_list(r);
        Ok(s)
    }
}

/// The bullet list under the title: status, machine, versions, command, synthetic weights.
fn facts(r: &Report) -> String {
    let e = &r.environment;
    let mut s = format!(
        "- status: {:?}, {} cells ({} failed){}\n",
        r.status,
        r.cells.len(),
        r.failed_cells().len(),
        r.wall_s
            .map_or(String::new(), |w| format!(", wall time {w:.1} s")),
    );
    if r.several_hosts() {
        s += &format!(
            "- **{} hosts**: {}; devices: {} (each machine under Machines below)\n",
            r.hosts().len(),
            r.hosts_with_counts(),
            r.device_description()
        );
    } else {
        s += &machine_facts(r);
    }
    s += &format!(
        "- quantbench {} ({}, {}), llama.cpp {}{} (ggml {} {}){}\n",
        r.quantbench.version,
        r.quantbench.git_commit,
        r.quantbench.build_profile,
        e.llama.llama_version,
        llama_build(r),
        e.llama.ggml_version,
        e.llama.ggml_commit,
        if r.merged_from.len() > 1 {
            " (the first folder's)"
        } else {
            ""
        }
    );
    if let Some(o) = &e.oracle {
        s += &format!("- llama.cpp's own tools beside it (the oracles): {o}\n");
    }
    s += &format!("- command: `{}`\n", r.command.join(" "));
    if r.synthetic_weights {
        s += "- **synthetic weights**: random values in real architectures; speed and memory are \
              meaningful, generated text and quality are not\n";
    }
    s
}

/// The device, CPU, OS and driver lines of one machine's report.
fn machine_facts(r: &Report) -> String {
    let e = &r.environment;
    let mut s = format!(
        "- device: {}; CPU: {} ({} cores); OS: {} {}\n",
        r.device_description(),
        e.cpu,
        e.cpu_cores,
        e.os,
        e.kernel
    );
    if let Some(d) = &e.gpu.driver_version {
        s += &format!(
            "- NVIDIA driver {d}, CUDA {}\n",
            e.gpu.cuda_version.as_deref().unwrap_or("?")
        );
    }
    s
}

/// Every folder of a merged report with its machine: host, CPU, GPUs, driver, builds and the
/// cells it holds. `None` for a report that was not merged.
pub fn machines_table(r: &Report) -> Option<TextTable> {
    if r.merged_from.is_empty() {
        return None;
    }
    let head = vec![
        "folder",
        "part",
        "host",
        "CPU",
        "memory",
        "GPUs",
        "driver",
        "llama.cpp",
        "quantbench",
        "cells",
    ];
    let rows = r
        .merged_from
        .iter()
        .map(|m| {
            let e = &m.environment;
            vec![
                m.folder.display().to_string(),
                m.shard.clone().unwrap_or_else(|| "–".into()),
                e.hostname.clone(),
                format!("{} ({} cores)", e.cpu, e.cpu_cores),
                bytes(e.host_memory_bytes),
                gpu_names(&e.gpu),
                e.gpu.driver_version.as_ref().map_or("–".into(), |d| {
                    format!("{d}, CUDA {}", e.gpu.cuda_version.as_deref().unwrap_or("?"))
                }),
                e.llama.llama_version.clone(),
                format!("{} ({})", m.quantbench.version, m.quantbench.git_commit),
                m.cells.to_string(),
            ]
        })
        .collect();
    let intro = "The run folders this report joins, each with the machine that measured its \
                 cells (the host column of the results table says which)."
        .to_string();
    Some((intro, head, rows))
}

/// ` build N, llama-cpp-sys-2 V`: which llama.cpp the run measured with (empty in reports from
/// before it was recorded).
pub fn llama_build(r: &Report) -> String {
    if r.quantbench.llama_cpp_build == 0 {
        return String::new();
    }
    format!(
        " build {}, llama-cpp-sys-2 {}",
        r.quantbench.llama_cpp_build, r.quantbench.llama_cpp_sys_2
    )
}

/// A machine's GPUs: `2× NVIDIA H200 (139.8 GiB)`, kinds joined with `, `; `–` without any.
fn gpu_names(g: &crate::gpu::GpuEnvironment) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for d in &g.gpus {
        let name = format!("{} ({})", d.name, bytes(d.memory_total_bytes));
        match kinds.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => kinds.push((name, 1)),
        }
    }
    if kinds.is_empty() {
        return "–".into();
    }
    kinds
        .iter()
        .map(|(n, k)| {
            if *k > 1 {
                format!("{k}× {n}")
            } else {
                n.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Serving section, where the report has a price, an SLO or a load, or cells with several
/// sequences.
fn serving_section(r: &Report) -> String {
    let Some(v) = serving_view(r) else {
        return String::new();
    };
    let mut s = format!("\n## Serving\n\n{}\n\n{}\n", v.intro, v.verdict);
    if !v.rows.is_empty() {
        s += "\n";
        s += &md_table(&v.head, &v.rows);
    }
    s
}

/// The Served traffic section, where the report has served cells.
fn served_section(r: &Report) -> String {
    let Some(v) = super::served::view(r) else {
        return String::new();
    };
    let mut s = format!("\n## Served traffic\n\n{}\n\n{}\n", v.intro, v.verdict);
    if let Some(c) = &v.command {
        s += &format!("\nThe server of that cell:\n\n```sh\n{c}\n```\n");
    }
    s += "\n";
    s += &md_table(&v.table.1, &v.table.2);
    if let Some((intro, head, rows)) = &v.side_by_side {
        s += &format!("\n{intro}\n\n");
        s += &md_table(head, rows);
    }
    s
}

/// The Serving section's content, for summary.md and report.html: what was asked (price,
/// SLO, load), the answer in a sentence, and the cells meeting the SLO, cheapest first (no
/// rows when none does).
pub struct ServingView {
    pub intro: String,
    pub verdict: String,
    /// Whether a cell meets the SLO (the verdict is good news).
    pub met: bool,
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// The Serving section of a report: `None` unless it has a price, an SLO or a load, or a
/// cell with several sequences.
pub fn serving_view(r: &Report) -> Option<ServingView> {
    let in_process = || r.cells.iter().filter(|c| c.params.serve.is_none());
    if in_process().next().is_none()
        || (r.serving.is_empty() && in_process().all(|c| c.params.n_parallel <= 1))
    {
        return None;
    }
    let ranked = r.serving_ranking();
    let mut head = vec![
        "model",
        "quant",
        "cell",
        "B",
        "all seqs tok/s",
        "per-seq decode tok/s",
        "TTFT ms",
    ];
    let priced = r.serving.cost.usd_per_hour.is_some();
    let load = r.serving.tokens_per_hour.is_some();
    if priced {
        head.push("$/1M tok");
    }
    if load {
        head.push("copies needed");
    }
    let rows = ranked.iter().map(|c| serving_row(r, c)).collect();
    let (met, verdict) = match ranked.first() {
        Some(best) => (true, serving_winner(r, best)),
        None => (false, serving_miss(r)),
    };
    Some(ServingView {
        intro: serving_intro(r),
        verdict,
        met,
        head,
        rows,
    })
}

/// A cell's price per million generated tokens: its own, else from the report's price.
fn cell_usd_per_mtok(r: &Report, c: &CellResult) -> Option<f64> {
    c.usd_per_mtok.or_else(|| {
        c.mean("throughput_tok_s")
            .and_then(|t| r.serving.usd_per_mtok(t))
    })
}

/// One cell's row of the Serving table.
fn serving_row(r: &Report, c: &CellResult) -> Vec<String> {
    let throughput = c.mean("throughput_tok_s");
    let mut row = vec![
        c.model.clone(),
        c.quant.to_string(),
        serving_tag(c),
        c.params.n_parallel.to_string(),
        fixed(throughput, 1),
        fixed(c.mean("decode_tok_s"), 1),
        fixed(c.mean("ttft_ms"), 1),
    ];
    if r.serving.cost.usd_per_hour.is_some() {
        row.push(cell_usd_per_mtok(r, c).map_or("–".into(), |u| sig(u, 4)));
    }
    if r.serving.tokens_per_hour.is_some() {
        let copies = throughput.and_then(|t| r.serving.copies_needed(t));
        row.push(copies.map_or("–".into(), |n| n.to_string()));
    }
    row
}

/// The cell's tag (placement and load, `np 16 d 4096`), or `–` for one sequence on an empty
/// context with llama.cpp's default placement.
fn serving_tag(c: &CellResult) -> String {
    let t = c.placement_suffix();
    let t = t.trim().trim_start_matches('[').trim_end_matches(']');
    if t.is_empty() {
        "–".into()
    } else {
        t.to_string()
    }
}

/// `1 sequence`, `16 sequences`.
fn sequences(n: u32) -> String {
    format!("{n} sequence{}", if n == 1 { "" } else { "s" })
}

/// A figure as given, at most 4 significant digits, without trailing zeros: `20`, `0.5`,
/// `1000000000`.
fn plain(v: f64) -> String {
    let s = sig(v, 4);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Dollars with cents (`3.50`), or 4 significant digits below a cent.
fn dollars(v: f64) -> String {
    if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        sig(v, 4)
    }
}

/// A cell named in a sentence: `llama-7b Q4_K_M [np 16]`.
fn cell_name(c: &CellResult) -> String {
    format!("{} {}{}", c.model, c.quant, c.placement_suffix())
}

/// The SLO in words: `every sequence at least 20 tok/s and a first token within 1000 ms`.
fn slo_words(r: &Report) -> Option<String> {
    let s = &r.serving.slo;
    let parts: Vec<String> = [
        s.min_seq_tok_s
            .map(|v| format!("every sequence decodes at least {} tok/s", plain(v))),
        s.max_ttft_ms
            .map(|v| format!("its first token comes within {} ms", plain(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(" and "))
}

/// What the section answers and with what: the SLO, the price and the load, and the formulas.
fn serving_intro(r: &Report) -> String {
    let sv = &r.serving;
    let mut s = match slo_words(r) {
        Some(slo) => format!(
            "Which cell serves generated tokens cheapest while {slo} (SLO, models.toml's \
             `[slo]`: `decode_tok_s` per sequence, `ttft_ms`, means over the repetitions)? \
             Only cells meeting it are ranked, cheapest first."
        ),
        None => "No SLO was given (models.toml's `[slo]` `min_seq_tok_s`, `max_ttft_ms`): \
                 every measured cell is ranked, by throughput."
            .to_string(),
    };
    s += " Throughput is `throughput_tok_s`, all sequences' generated tokens per second \
          (llama-batched-bench's S_TG; B = `n_parallel`, the sequences decoded together), from \
          the tg test (no sampling); the per-sequence speed the SLO checks is the generation \
          test's `decode_tok_s` (greedy sampling included), a separate test, so with one \
          sequence the two differ by the cost of sampling (and by noise on a busy machine).";
    s += &match sv.cost.usd_per_hour {
        Some(p) => format!(
            " Price: ${} per hour of the machine (`[cost] usd_per_hour` or `--usd-per-hour`); \
             $/1M tok = usd_per_hour / (throughput_tok_s × 3600 / 1e6).",
            dollars(p)
        ),
        None => " No price was given (`[cost] usd_per_hour` or `--usd-per-hour`): the cells are \
                 ranked by throughput, which is the same order a price would give."
            .to_string(),
    };
    s += &match sv.tokens_per_hour {
        Some(t) => format!(
            " Load: {} generated tokens per hour (`--tokens-per-hour`); copies needed = \
             ⌈load / (throughput_tok_s × 3600)⌉, each copy one GPU (or machine) running the cell.",
            plain(t)
        ),
        None => " No load was given (`--tokens-per-hour`), so no copy count.".to_string(),
    };
    s
}

/// The sentence naming the best cell: the cheapest (or fastest) meeting the SLO, with what it
/// gives each sequence, and the copies and the hourly cost of the load.
fn serving_winner(r: &Report, c: &CellResult) -> String {
    let sv = &r.serving;
    let what = match (sv.slo.is_set(), sv.cost.usd_per_hour.is_some()) {
        (true, true) => "Cheapest cell meeting the SLO",
        (true, false) => "Highest throughput meeting the SLO",
        (false, true) => "Cheapest cell",
        (false, false) => "Highest throughput",
    };
    let t = c.mean("throughput_tok_s").unwrap_or(0.0);
    let mut s = format!("**{what}: {}**: ", cell_name(c));
    if let Some(u) = cell_usd_per_mtok(r, c) {
        s += &format!("${} per 1M generated tokens, ", sig(u, 4));
    }
    s += &format!(
        "{t:.1} tok/s over {}, each decoding {} tok/s with its first token in {} ms",
        sequences(c.params.n_parallel),
        fixed(c.mean("decode_tok_s"), 1),
        fixed(c.mean("ttft_ms"), 1),
    );
    if let Some(n) = sv.copies_needed(t) {
        s += &format!(
            "; {n} cop{} serve{} the load",
            if n == 1 { "y" } else { "ies" },
            if n == 1 { "s" } else { "" }
        );
        if let Some(p) = sv.cost.usd_per_hour {
            s += &format!(" for ${} per hour", dollars(p * n as f64));
        }
    }
    s + "."
}

/// How far a cell is from the SLO: the largest factor by which it misses a target (below 1:
/// it meets them; a missing figure misses by infinity).
fn slo_shortfall(r: &Report, c: &CellResult) -> f64 {
    let s = &r.serving.slo;
    let speed = s.min_seq_tok_s.map_or(0.0, |min| {
        c.mean("decode_tok_s")
            .filter(|d| *d > 0.0)
            .map_or(f64::INFINITY, |d| min / d)
    });
    let ttft = s.max_ttft_ms.map_or(0.0, |max| {
        c.mean("ttft_ms")
            .map_or(f64::INFINITY, |t| t / max.max(f64::MIN_POSITIVE))
    });
    speed.max(ttft)
}

/// The verdict when no cell meets the SLO: said plainly, with the closest cell, what it
/// misses, and what would help.
fn serving_miss(r: &Report) -> String {
    let ok: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .collect();
    let Some(slo) = slo_words(r) else {
        return "**No cell can be ranked**: no cell was measured with a throughput figure \
                (all failed, or the report predates `throughput_tok_s`)."
            .into();
    };
    let closest = ok
        .iter()
        .copied()
        .min_by(|a, b| slo_shortfall(r, a).total_cmp(&slo_shortfall(r, b)));
    let Some(c) = closest else {
        return format!("**No cell meets the SLO** ({slo}): no cell was measured successfully.");
    };
    let sl = &r.serving.slo;
    let mut misses = Vec::new();
    let decode = c.mean("decode_tok_s");
    if let Some(min) = sl.min_seq_tok_s.filter(|m| decode.is_none_or(|d| d < *m)) {
        misses.push(format!(
            "each sequence decodes {} tok/s, below {}",
            fixed(decode, 1),
            plain(min)
        ));
    }
    let ttft = c.mean("ttft_ms");
    if let Some(max) = sl.max_ttft_ms.filter(|m| ttft.is_none_or(|t| t > *m)) {
        misses.push(format!(
            "its first token takes {} ms, above {}",
            fixed(ttft, 1),
            plain(max)
        ));
    }
    if misses.is_empty() {
        misses.push("it has no throughput figure to rank".into());
    }
    format!(
        "**No cell meets the SLO** ({slo}). The closest of the {} measured cells is **{}** \
         ({} tok/s over {}): {}. Fewer sequences per copy (a lower `n_parallel`) or a \
         smaller quant give each sequence more speed; shorter prompts, a shallower depth or \
         fewer sequences bring the first token sooner.",
        ok.len(),
        cell_name(c),
        fixed(c.mean("throughput_tok_s"), 1),
        sequences(c.params.n_parallel),
        misses.join("; ")
    )
}

/// The Failed cells section, where cells failed: each with its reason on one line.
fn failed_list(r: &Report) -> String {
    let failed = r.failed_cells();
    if failed.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Failed cells\n\n");
    for c in failed {
        s += &format!(
            "- {} {}: {}\n",
            crate::redact::markdown_text(&c.model_and_placement()),
            c.quant,
            crate::redact::markdown_text(c.error.as_deref().unwrap_or("unknown"))
        );
    }
    s
}

/// The cells measured while something else used the machine (`disturbance.disturbed`), with
/// why: their speed figures are not to be trusted, and the gate calls them inconclusive.
pub fn disturbed(r: &Report) -> Vec<(&CellResult, &str)> {
    r.cells
        .iter()
        .filter_map(|c| {
            let why = c.disturbance.as_ref()?.disturbed.as_deref()?;
            Some((c, why))
        })
        .collect()
}

/// The Disturbed cells section, where the machine was busy during some cells.
fn disturbed_list(r: &Report) -> String {
    let cells = disturbed(r);
    if cells.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Disturbed cells\n\nThe machine was busy with something else while these cells \
         were timed: their speed figures are not to be trusted (the gate calls them \
         inconclusive).\n\n",
    );
    for (c, why) in cells {
        s += &format!("- {} {}: {why}\n", c.model_and_placement(), c.quant);
    }
    s
}

fn pct(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// How close the harness' clock is to llama.cpp's own counters, and what greedy sampling and
/// the per-token loop cost relative to bare token generation.
fn harness_check(r: &Report) -> String {
    let ok: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .collect();
    if ok.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Harness check\n\n`tg` and `pp` by the harness clock vs llama.cpp's own counters \
         (`llama_perf_context`) of the same context, and `decode_tok_s` (greedy sampling, \
         what a user sees) as a share of `tg_tok_s` (no sampling).\n\n\
         | model | quant | n_gen | tg tok/s | tg (llama.cpp) | Δ | pp tok/s | pp (llama.cpp) | Δ | decode / tg | sampling µs/token |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in ok {
        let f = |m: &str| fixed(c.mean(m), 1);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            crate::redact::markdown_text(&c.model_and_placement()),
            c.quant,
            c.params.n_gen,
            f("tg_tok_s"),
            f("tg_tok_s_llama"),
            pct(c.mean("tg_tok_s"), c.mean("tg_tok_s_llama")),
            f("pp_tok_s"),
            f("pp_tok_s_llama"),
            pct(c.mean("pp_tok_s"), c.mean("pp_tok_s_llama")),
            match (c.mean("decode_tok_s"), c.mean("tg_tok_s")) {
                (Some(d), Some(t)) if t > 0.0 => format!("{:.1}%", d / t * 100.0),
                _ => "–".into(),
            },
            f("sample_us")
        );
    }
    s
}

/// GPU memory, energy, bandwidth and clocks, for cells that ran with NVML telemetry.
fn gpu_table(r: &Report) -> String {
    let rows: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| {
            c.gpu
                .as_ref()
                .is_some_and(|g| g.unavailable_reason.is_none())
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let multi = rows
        .iter()
        .any(|c| c.gpu.as_ref().is_some_and(|g| g.per_device.len() > 1));
    let mut s = format!(
        "\n## GPU\n\n| model | quant | n_gen | VRAM after load | after warm-up |{} peak | source | \
         weights (device) | KV | compute | J/token | bw_util | SM MHz | throttled |\n\
         |---|---|---|---|---|{}---|---|---|---|---|---|---|---|---|\n",
        if multi { " per GPU |" } else { "" },
        if multi { "---|" } else { "" },
    );
    for c in rows {
        s += &gpu_row(c, multi);
    }
    s
}

/// One cell's row of the GPU table (`multi`: with the per-GPU column).
fn gpu_row(c: &CellResult, multi: bool) -> String {
    let g = c.gpu.as_ref().expect("filtered");
    let m = c.memory.as_ref();
    let per_gpu = if multi {
        format!(" {} |", per_gpu(c))
    } else {
        String::new()
    };
    format!(
        "| {} | {} | {} | {} | {} |{per_gpu} {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        crate::redact::markdown_text(&c.model_and_placement()),
        c.quant,
        c.params.n_gen,
        opt_bytes(g.vram_after_load_bytes),
        opt_bytes(g.vram_after_warmup_bytes),
        opt_bytes(g.vram_peak_bytes),
        g.vram_source.as_deref().unwrap_or("–"),
        opt_bytes(m.map(|m| m.weights_gpu_bytes)),
        opt_bytes(m.map(|m| m.kv_bytes)),
        opt_bytes(m.map(|m| m.compute_bytes)),
        fixed(c.energy_j_per_tok, 3),
        percent(c.bw_util),
        sm_clocks(g),
        if g.throttle_reasons.is_empty() {
            "no".to_string()
        } else {
            g.throttle_reasons.join(", ")
        }
    )
}

/// Device memory per GPU after warm-up, e.g. `CUDA0 7.1 GiB + CUDA1 6.9 GiB`.
pub fn per_gpu(c: &CellResult) -> String {
    let Some(g) = c.gpu.as_ref().filter(|g| !g.per_device.is_empty()) else {
        return "–".into();
    };
    g.per_device
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d.device,
                d.after_warmup_bytes.map_or("?".into(), bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The Quality section, where cells were scored against a reference.
fn quality_section(r: &Report) -> String {
    let Some((intro, head, rows)) = quality_table(r) else {
        return String::new();
    };
    let mut s = format!("\n## Quality\n\n{intro}\n\n");
    if r.synthetic_weights {
        s += &format!("**Synthetic weights**: {QUALITY_SYNTHETIC_NOTE}\n\n");
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| c.replace('|', "\\|")).collect())
        .collect();
    s + &md_table(&head, &rows)
}

/// What quality figures of synthetic weights mean.
pub const QUALITY_SYNTHETIC_NOTE: &str = "the weights are random, so these figures describe \
     random models; they show that quantization changes the distribution, not how a real \
     model's quality changes.";

/// The header of the quality table.
const QUALITY_HEAD: [&str; 12] = [
    "model",
    "quant",
    "tokens",
    "PPL",
    "PPL ratio",
    "KLD mean",
    "KLD p99",
    "KLD max",
    "top-1",
    "RMS Δp",
    "reference",
    "corpus",
];

/// Each cell scored against its model's reference, where any was: an introduction, the header
/// and one row per such cell (a failed test shows its reason in the `tokens` column). `None`
/// when no cell has `quality`.
pub fn quality_table(r: &Report) -> Option<TextTable> {
    let rows: Vec<Vec<String>> = r.cells.iter().filter_map(quality_row).collect();
    if rows.is_empty() {
        return None;
    }
    let intro = "Each cell against its model's reference on the scored tokens of the corpus, \
                 with llama-perplexity's `--kl-divergence` definitions. PPL ratio = PPL(quant) \
                 / PPL(reference); KLD = KL divergence (reference ‖ quant) per token: mean, \
                 99th percentile, maximum; top-1 = tokens where both models' most likely next \
                 token is the same; RMS Δp = RMS change of the probability of the actual next \
                 token. ± is llama.cpp's uncertainty. SHA-256s are shortened to 12 digits \
                 (results.json has them whole)."
        .to_string();
    Some((intro, QUALITY_HEAD.to_vec(), rows))
}

/// One cell's row of the quality table; `None` without `quality`.
fn quality_row(c: &CellResult) -> Option<Vec<String>> {
    let q = c.quality.as_ref()?;
    let mut row = vec![c.model_and_placement(), c.quant.to_string()];
    match &q.stats {
        Some(st) => row.extend([
            st.tokens.to_string(),
            sig(st.ppl, 4),
            format!("{:.4} ± {:.4}", st.ppl_ratio, st.ppl_ratio_err),
            sig_pm(st.kld_mean, st.kld_mean_err, 4),
            sig(st.kld_p99, 4),
            sig(st.kld_max, 4),
            format!(
                "{:.1} ± {:.1}%",
                st.top1_agree * 100.0,
                st.top1_agree_err * 100.0
            ),
            format!("{}%", sig(st.dp_rms * 100.0, 4)),
        ]),
        None => {
            let why = q.quality_error.as_deref().unwrap_or("unknown reason");
            row.push(format!("not measured: {}", why.replace('\n', " ")));
            row.extend(std::iter::repeat_n("–".to_string(), 7));
        }
    }
    row.push(short_sha256(&q.quality_ref));
    row.push(short_sha256(&q.quality_corpus));
    Some(row)
}

/// `s` with every `sha256 <hex>` cut to its first 12 digits.
pub fn short_sha256(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("sha256 ") {
        let (head, tail) = rest.split_at(i + "sha256 ".len());
        out += head;
        let n = tail.chars().take_while(char::is_ascii_hexdigit).count();
        out += &tail[..n.min(12)];
        rest = &tail[n..];
    }
    out + rest
}

/// An introduction, a header and rows.
pub type TextTable = (String, Vec<&'static str>, Vec<Vec<String>>);

/// Per cell and RPC server: the server's devices and memory, what the cell placed there, and
/// whether the load sent the weights or the server took them from its cache. `None` when no
/// cell used a server.
pub fn rpc_table(r: &Report) -> Option<TextTable> {
    let rows: Vec<Vec<String>> = r
        .cells
        .iter()
        .flat_map(|c| {
            c.rpc.iter().map(move |u| {
                let devices = u
                    .devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{} ({} free of {})",
                            d.name,
                            bytes(d.memory_free_bytes),
                            bytes(d.memory_total_bytes)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    format!("{}{}", c.label, c.placement_suffix()),
                    c.quant.to_string(),
                    u.endpoint.clone(),
                    devices,
                    bytes(u.weights_bytes),
                    bytes(u.context_bytes),
                    bytes(u.load_sent_bytes),
                    weights_came(u).into(),
                    fixed(c.load_s, 2),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let intro = "What each cell placed on each llama.cpp RPC server. Devices are named as \
                 llama.cpp names their buffers (the protocol carries no device names), with the \
                 memory the server reported once the model was loaded; \"load sent\" is what the worker's connection to \
                 the server carried while the model loaded (TCP bytes acknowledged); the weights \
                 count as taken from the server's cache when that is under half of them. A \
                 server on the same GPU holds its share in its own process: the cell's VRAM is \
                 the worker's only."
        .to_string();
    let head = vec![
        "model",
        "quant",
        "server",
        "devices",
        "weights",
        "KV + compute",
        "load sent",
        "weights came",
        "load s",
    ];
    Some((intro, head, rows))
}

/// How the weights a cell placed on a server got there: sent, from the server's tensor cache,
/// partly from it (llama.cpp hashes only tensors over 10 MiB), or none placed.
pub fn weights_came(u: &crate::protocol::RpcUse) -> &'static str {
    if u.weights_bytes == 0 {
        "–"
    } else if u.weights_from_cache {
        "from the server's cache"
    } else if u.load_sent_bytes < u.weights_bytes / 10 * 9 {
        "partly from the server's cache"
    } else {
        "sent"
    }
}

/// The header of the placement table.
const PLACEMENT_HEAD: [&str; 13] = [
    "model",
    "quant",
    "placement",
    "GPUs",
    "VRAM per GPU",
    "largest share",
    "decode tok/s",
    "tg tok/s",
    "pp tok/s",
    "TTFT ms",
    "decode vs 1 GPU",
    "tg vs 1 GPU",
    "pp vs 1 GPU",
];

/// Cells that measure the same model, quant and shape under several multi-GPU placements (or
/// on several GPUs), side by side: each placement's speed relative to the same model on one
/// GPU (`split_mode = "none"`) where the group has such a cell. `None` when the run has no
/// such cells. Returns an introduction, the header and the rows.
pub fn placement_table(r: &Report) -> Option<TextTable> {
    let groups = placement_groups(r);
    if groups.is_empty() {
        return None;
    }
    let mut rows = Vec::new();
    for g in groups {
        let one = g.iter().copied().find(|c| {
            c.status == CellStatus::Ok
                && c.devices_used.len() == 1
                && c.params.split_mode == SplitMode::None
        });
        rows.extend(g.iter().map(|c| placement_row(c, one)));
    }
    let intro = "The same model and quant under each multi-GPU placement (`split_mode`, \
                 `main_gpu`, `tensor_split`). \"vs 1 GPU\" compares with the cell of \
                 `split_mode = \"none\"` (the whole model on one GPU) where there is one; \
                 \"largest share\" is the most device memory any one GPU held, which decides \
                 whether a model fits."
        .to_string();
    Some((intro, PLACEMENT_HEAD.to_vec(), rows))
}

/// Cells grouped by model, quant and parameters other than the placement, in report order;
/// only groups with several cells or a cell on several GPUs.
fn placement_groups(r: &Report) -> Vec<Vec<&CellResult>> {
    let same = |a: &CellResult, b: &CellResult| {
        let (mut pa, mut pb) = (a.params.clone(), b.params.clone());
        for p in [&mut pa, &mut pb] {
            p.split_mode = Default::default();
            p.main_gpu = 0;
            p.tensor_split = Default::default();
        }
        a.model == b.model && a.quant == b.quant && pa == pb
    };
    let mut groups: Vec<Vec<&CellResult>> = Vec::new();
    for c in &r.cells {
        match groups.iter_mut().find(|g| same(g[0], c)) {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    groups.retain(|g| g.len() > 1 || g.iter().any(|c| c.devices_used.len() > 1));
    groups
}

/// One cell's row of the placement table; `one` is its group's cell on one GPU, if any.
fn placement_row(c: &CellResult, one: Option<&CellResult>) -> Vec<String> {
    let ok = c.status == CellStatus::Ok;
    let vs = |m: &str| match one {
        Some(o) if ok => pct(c.mean(m), o.mean(m)),
        _ => "–".into(),
    };
    let f = |m: &str| fixed(c.mean(m), 1);
    vec![
        c.model.clone(),
        c.quant.to_string(),
        c.params
            .placement_tag()
            .unwrap_or_else(|| "sm layer ts auto (default)".into()),
        if ok {
            c.weight_devices().unwrap_or_else(|| "CPU".into())
        } else {
            "FAILED".into()
        },
        per_gpu(c),
        opt_bytes(c.vram_max_gpu_bytes()),
        f("decode_tok_s"),
        f("tg_tok_s"),
        f("pp_tok_s"),
        f("ttft_ms"),
        vs("decode_tok_s"),
        vs("tg_tok_s"),
        vs("pp_tok_s"),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(326 * 1024 * 1024), "326.0 MiB");
    }

    #[test]
    fn significant_digits() {
        assert_eq!(super::sig(1.563365e-5, 4), "0.00001563");
        assert_eq!(super::sig(0.00111012, 4), "0.001110");
        assert_eq!(super::sig(2235.76, 4), "2236");
        assert_eq!(super::sig(52341.7, 4), "52342");
        assert_eq!(super::sig(0.0, 4), "0");
        assert_eq!(
            super::sig_pm(1.563365e-5, 8.8e-8, 4),
            "0.00001563 ± 0.00000009"
        );
        assert_eq!(super::sig_pm(0.0, 0.0, 4), "0 ± 0");
    }

    #[test]
    fn sha256_shortened() {
        let h = "7129c03c34bcfb132f20e4ec437811e92ec5c3e21280fb545cfe34bc1e1b8618";
        assert_eq!(
            super::short_sha256(&format!(
                "F16 (tiny-F16.gguf, sha256 {h}, synthetic weights)"
            )),
            "F16 (tiny-F16.gguf, sha256 7129c03c34bc, synthetic weights)"
        );
        assert_eq!(super::short_sha256("sampled, seed 0"), "sampled, seed 0");
    }
}
