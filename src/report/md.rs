//! `summary.md`: the results table in Markdown, for PR comments and issues, plus the facts a
//! reader needs to trust it (machine, versions, synthetic weights, failures).

use anyhow::Result;

use super::Format;
use crate::config::SplitMode;
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
    let rows = report
        .cells
        .iter()
        .map(|c| {
            let ok = c.status == CellStatus::Ok;
            vec![
                format!("{}{}", c.model, c.placement_suffix()),
                c.quant.to_string(),
                if ok { "ok".into() } else { "FAILED".into() },
                c.load_s.map_or("–".into(), |s| format!("{s:.2}")),
                memory(c),
                mean_sd(c, "ttft_ms"),
                mean_sd(c, "decode_tok_s"),
                c.itl_ms_p99.map_or("–".into(), |v| format!("{v:.2}")),
                mean_sd(c, "pp_tok_s"),
                mean_sd(c, "tg_tok_s"),
                c.efficiency_tok_s_per_gb
                    .map_or("–".into(), |v| format!("{v:.1}")),
            ]
        })
        .collect();
    (head, rows)
}

impl Format for Markdown {
    fn file_name(&self) -> &'static str {
        "summary.md"
    }
    fn render(&self, r: &Report) -> Result<String> {
        let e = &r.environment;
        let mut s = format!("# quantbench run {}\n\n", r.run_id);
        let device = r
            .cells
            .iter()
            .find_map(|c| c.device.clone())
            .unwrap_or_else(|| e.cpu.clone());
        s += &format!(
            "- status: {:?}, {} cells ({} failed){}\n",
            r.status,
            r.cells.len(),
            r.cells
                .iter()
                .filter(|c| c.status == CellStatus::Failed)
                .count(),
            r.wall_s
                .map_or(String::new(), |w| format!(", wall time {w:.1} s")),
        );
        s += &format!(
            "- device: {device}; CPU: {} ({} cores); OS: {} {}\n",
            e.cpu, e.cpu_cores, e.os, e.kernel
        );
        if let Some(d) = &e.gpu.driver_version {
            s += &format!(
                "- NVIDIA driver {d}, CUDA {}\n",
                e.gpu.cuda_version.as_deref().unwrap_or("?")
            );
        }
        s += &format!(
            "- quantbench {} ({}, {}), llama.cpp {} (ggml {} {})\n",
            r.quantbench.version,
            r.quantbench.git_commit,
            r.quantbench.build_profile,
            e.llama.llama_version,
            e.llama.ggml_version,
            e.llama.ggml_commit
        );
        s += &format!("- command: `{}`\n", r.command.join(" "));
        if r.synthetic_weights {
            s += "- **synthetic weights**: random values in real architectures; speed and memory are \
                  meaningful, generated text and quality are not\n";
        }
        s += "\nRates are mean ± standard deviation over the repetitions. Memory is the worker's \
              device memory (VRAM) when a GPU was used, else its host resident set (RSS).\n\n";
        let (head, rows) = table(r);
        s += &format!("| {} |\n", head.join(" | "));
        s += &format!("|{}\n", head.iter().map(|_| "---|").collect::<String>());
        for row in rows {
            s += &format!("| {} |\n", row.join(" | "));
        }
        s += &harness_check(r);
        s += &gpu_table(r);
        if let Some((intro, head, rows)) = placement_table(r) {
            s += &format!("\n## Multi-GPU placements\n\n{intro}\n\n");
            s += &format!("| {} |\n", head.join(" | "));
            s += &format!("|{}\n", head.iter().map(|_| "---|").collect::<String>());
            for row in rows {
                s += &format!("| {} |\n", row.join(" | "));
            }
        }
        let failed: Vec<_> = r
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Failed)
            .collect();
        if !failed.is_empty() {
            s += "\n## Failed cells\n\n";
            for c in failed {
                s += &format!(
                    "- {}{} {}: {}\n",
                    c.model,
                    c.placement_suffix(),
                    c.quant,
                    c.error.as_deref().unwrap_or("unknown").replace('\n', " ")
                );
            }
        }
        Ok(s)
    }
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
        let f = |m: &str| c.mean(m).map_or("–".into(), |v| format!("{v:.1}"));
        s += &format!(
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.model,
            c.placement_suffix(),
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
            c.mean("sample_us")
                .map_or("–".into(), |v| format!("{v:.1}"))
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
        let g = c.gpu.as_ref().expect("filtered");
        let m = c.memory.as_ref();
        let b = |v: Option<u64>| v.map_or("–".into(), bytes);
        let per_gpu = if multi {
            format!(" {} |", per_gpu(c))
        } else {
            String::new()
        };
        s += &format!(
            "| {}{} | {} | {} | {} | {} |{per_gpu} {} | {} | {} | {} | {} | {} | {} | {}–{} | {} |\n",
            c.model,
            c.placement_suffix(),
            c.quant,
            c.params.n_gen,
            b(g.vram_after_load_bytes),
            b(g.vram_after_warmup_bytes),
            b(g.vram_peak_bytes),
            g.vram_source.as_deref().unwrap_or("–"),
            b(m.map(|m| m.weights_gpu_bytes)),
            b(m.map(|m| m.kv_bytes)),
            b(m.map(|m| m.compute_bytes)),
            c.energy_j_per_tok.map_or("–".into(), |v| format!("{v:.3}")),
            c.bw_util
                .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
            g.sm_clock_mhz_min.map_or("?".into(), |v| v.to_string()),
            g.sm_clock_mhz_max.map_or("?".into(), |v| v.to_string()),
            if g.throttle_reasons.is_empty() {
                "no".to_string()
            } else {
                g.throttle_reasons.join(", ")
            }
        );
    }
    s
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

/// An introduction, a header and rows.
pub type TextTable = (String, Vec<&'static str>, Vec<Vec<String>>);

/// Cells that measure the same model, quant and shape under several multi-GPU placements (or
/// on several GPUs), side by side: each placement's speed relative to the same model on one
/// GPU (`split_mode = "none"`) where the group has such a cell. `None` when the run has no
/// such cells. Returns an introduction, the header and the rows.
pub fn placement_table(r: &Report) -> Option<TextTable> {
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
    if groups.is_empty() {
        return None;
    }
    let head = vec![
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
    let mut rows = Vec::new();
    for g in groups {
        let one = g.iter().find(|c| {
            c.status == CellStatus::Ok
                && c.devices_used.len() == 1
                && c.params.split_mode == SplitMode::None
        });
        for c in &g {
            let ok = c.status == CellStatus::Ok;
            let vs = |m: &str| match one {
                Some(o) if ok => pct(c.mean(m), o.mean(m)),
                _ => "–".into(),
            };
            let f = |m: &str| c.mean(m).map_or("–".into(), |v| format!("{v:.1}"));
            rows.push(vec![
                c.model.clone(),
                c.quant.to_string(),
                c.params
                    .placement_tag()
                    .unwrap_or_else(|| "sm layer ts auto (default)".into()),
                if !ok {
                    "FAILED".into()
                } else if c.devices_used.is_empty() {
                    "CPU".into()
                } else {
                    c.devices_used.join(" + ")
                },
                per_gpu(c),
                c.vram_max_gpu_bytes().map_or("–".into(), bytes),
                f("decode_tok_s"),
                f("tg_tok_s"),
                f("pp_tok_s"),
                f("ttft_ms"),
                vs("decode_tok_s"),
                vs("tg_tok_s"),
                vs("pp_tok_s"),
            ]);
        }
    }
    let intro = "The same model and quant under each multi-GPU placement (`split_mode`, \
                 `main_gpu`, `tensor_split`). \"vs 1 GPU\" compares with the cell of \
                 `split_mode = \"none\"` (the whole model on one GPU) where there is one; \
                 \"largest share\" is the most device memory any one GPU held, which decides \
                 whether a model fits."
        .to_string();
    Some((intro, head, rows))
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(326 * 1024 * 1024), "326.0 MiB");
    }
}
