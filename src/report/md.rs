//! `summary.md`: the results table in Markdown, for PR comments and issues, plus the facts a
//! reader needs to trust it (machine, versions, synthetic weights, failures).

use anyhow::Result;

use super::{CellResult, CellStatus, Format, Report};

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
                c.model.clone(),
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
        let failed: Vec<_> = r
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Failed)
            .collect();
        if !failed.is_empty() {
            s += "\n## Failed cells\n\n";
            for c in failed {
                s += &format!(
                    "- {} {}: {}\n",
                    c.model,
                    c.quant,
                    c.error.as_deref().unwrap_or("unknown").replace('\n', " ")
                );
            }
        }
        Ok(s)
    }
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
