//! `report.html`: one self-contained page holding a whole run: environment, the full results
//! table, the charts (PNG, inlined as data URIs), failed cells with their reasons, and the
//! comparison with a baseline when there was one. No scripts, no fonts or styles from the
//! network, no external request of any kind; readable on a laptop and a phone. Never prints.

use std::fmt::Write as _;

use anyhow::Result;
use base64::Engine;

use super::charts::ChartFile;
use super::md::{bytes, mean_sd, memory};
use crate::compare::Comparison;
use crate::results::{CellStatus, Report};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; max-width: 1400px; padding: 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: .2rem 0 .6rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem .8rem; }
.bad { background: #fdecea; border-left: 4px solid #d93025; padding: .5rem .8rem; }
.good { background: #e8f5e9; border-left: 4px solid #2e7d32; padding: .5rem .8rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f4f6f8; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
tr.failed td { background: #fdecea; }
tr.regressed td { background: #fdecea; }
tr.improved td { background: #e8f5e9; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 1.2rem 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f4f6f8; padding: 0 .25rem; overflow-wrap: anywhere; }
@media (max-width: 700px) { body { padding: .5rem; } th, td { padding: .25rem .4rem; font-size: .8rem; } }
"#;

/// Renders the page.
pub fn render(r: &Report, charts: &[ChartFile], cmp: Option<&Comparison>) -> Result<String> {
    let mut h = String::new();
    let failed: Vec<_> = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Failed)
        .collect();
    let e = &r.environment;
    let device = r
        .cells
        .iter()
        .find_map(|c| c.device.clone())
        .unwrap_or_else(|| e.cpu.clone());
    write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>quantbench {id}</title><style>{STYLE}</style></head><body>\n\
         <h1>quantbench run {id}</h1>\n<p>{n} cells on {dev} — {failed} failed — status {status:?}{wall}</p>\n",
        id = esc(&r.run_id),
        n = r.cells.len(),
        dev = esc(&device),
        failed = failed.len(),
        status = r.status,
        wall = r.wall_s.map_or(String::new(), |w| format!(" — {w:.1} s wall")),
    )?;
    if r.synthetic_weights {
        h += "<p class=\"note\"><b>Synthetic weights.</b> The models have real architectures and \
              tokenizers but random weights: speed and memory are meaningful, the generated text \
              and any quality figure are not.</p>\n";
    }
    if let Some(c) = cmp {
        let (class, what) = if c.regressions > 0 {
            (
                "bad",
                format!("{} regression(s) against the baseline", c.regressions),
            )
        } else {
            ("good", "no regression against the baseline".to_string())
        };
        writeln!(
            h,
            "<p class=\"{class}\"><b>{what}</b> — see <a href=\"#comparison\">Comparison</a>.</p>"
        )?;
    }

    // environment
    h += "<h2>Environment</h2>\n<dl>\n";
    let mut dl = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    };
    dl("Device", device.clone());
    dl("CPU", format!("{} ({} cores)", e.cpu, e.cpu_cores));
    dl("Host memory", bytes(e.host_memory_bytes));
    dl("OS", format!("{} — {}", e.os, e.kernel));
    if let Some(d) = &e.gpu.driver_version {
        dl(
            "NVIDIA driver",
            format!(
                "{d}, CUDA {}",
                e.gpu.cuda_version.clone().unwrap_or_default()
            ),
        );
    }
    for g in &e.gpu.gpus {
        dl(
            "GPU",
            format!(
                "{} ({}, {}{})",
                g.name,
                g.uuid,
                bytes(g.memory_total_bytes),
                g.peak_bandwidth_bytes_s
                    .map_or(String::new(), |b| format!(", peak {:.2} TB/s", b / 1e12))
            ),
        );
    }
    if let Some(why) = &e.gpu.unavailable_reason {
        dl("GPU telemetry", why.clone());
    }
    dl(
        "llama.cpp",
        format!(
            "{} (ggml {} {}), modules: {}",
            e.llama.llama_version,
            e.llama.ggml_version,
            e.llama.ggml_commit,
            e.llama
                .modules
                .iter()
                .map(|m| m.rsplit('/').next().unwrap_or(m))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    dl(
        "quantbench",
        format!(
            "{} ({}, {})",
            r.quantbench.version, r.quantbench.git_commit, r.quantbench.build_profile
        ),
    );
    dl(
        "Weights",
        if r.synthetic_weights {
            "synthetic (random)".into()
        } else {
            "real".into()
        },
    );
    dl("Command", r.command.join(" "));
    dl("Started", r.started_at.clone());
    for n in &e.notes {
        dl("Note", n.clone());
    }
    h += "</dl>\n";

    // results
    h += "<h2>Results</h2>\n<p>Rates are mean ± standard deviation over the repetitions. Memory \
          is the worker's device memory (VRAM) on a GPU, its host resident set (RSS) on the CPU.</p>\n\
          <div class=\"scroll\"><table>\n<tr><th class=\"l\">model</th><th class=\"l\">quant</th>\
          <th>pp / tg</th><th class=\"l\">status</th><th class=\"l\">device</th><th>load s</th>\
          <th>memory</th><th>TTFT ms</th><th>decode tok/s</th><th>ITL p50 / p99 ms</th>\
          <th>pp tok/s</th><th>tg tok/s</th><th>tok/s per GB</th><th>J/token</th><th class=\"l\">file</th></tr>\n";
    for c in &r.cells {
        let ok = c.status == CellStatus::Ok;
        let o = c.origin.as_ref();
        writeln!(
            h,
            "<tr class=\"{cls}\"><td class=\"l\">{model}</td><td class=\"l\">{quant}</td><td>{pp} / {tg}</td>\
             <td class=\"l\">{status}</td><td class=\"l\">{dev}</td><td>{load}</td><td>{mem}</td><td>{ttft}</td>\
             <td>{dec}</td><td>{itl}</td><td>{pps}</td><td>{tgs}</td><td>{eff}</td><td>{en}</td><td class=\"l\">{file}</td></tr>",
            cls = if ok { "" } else { "failed" },
            model = esc(&format!("{}{}", c.label, c.placement_suffix())),
            quant = c.quant,
            pp = c.params.n_prompt,
            tg = c.params.n_gen,
            status = if ok { "ok".to_string() } else { "FAILED".to_string() },
            dev = esc(&format!("{} {}", c.backend.clone().unwrap_or_default(), c.device.clone().unwrap_or_default())),
            load = c.load_s.map_or("–".into(), |v| format!("{v:.2}")),
            mem = esc(&memory(c)),
            ttft = esc(&mean_sd(c, "ttft_ms")),
            dec = esc(&mean_sd(c, "decode_tok_s")),
            itl = match (c.itl_ms_p50, c.itl_ms_p99) {
                (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
                _ => "–".into(),
            },
            pps = esc(&mean_sd(c, "pp_tok_s")),
            tgs = esc(&mean_sd(c, "tg_tok_s")),
            eff = c.efficiency_tok_s_per_gb.map_or("–".into(), |v| format!("{v:.1}")),
            en = c.energy_j_per_tok.map_or("–".into(), |v| format!("{v:.3}")),
            file = o.map_or("–".into(), |o| {
                esc(&format!(
                    "{} ({}, {}, sha256 {})",
                    o.path.file_name().unwrap_or_default().to_string_lossy(),
                    o.kind,
                    bytes(o.size_bytes),
                    &o.sha256.get(..12).unwrap_or(&o.sha256)
                ))
            }),
        )?;
    }
    h += "</table></div>\n";

    if let Some((intro, head, rows)) = super::md::placement_table(r) {
        write!(
            h,
            "<h2>Multi-GPU placements</h2>\n<p>{}</p>\n<div class=\"scroll\"><table>\n<tr>",
            esc(&intro.replace('`', ""))
        )?;
        for (i, t) in head.iter().enumerate() {
            let l = if i < 5 { " class=\"l\"" } else { "" };
            write!(h, "<th{l}>{}</th>", esc(t))?;
        }
        h += "</tr>\n";
        for row in rows {
            let cls = if row[3] == "FAILED" { "failed" } else { "" };
            write!(h, "<tr class=\"{cls}\">")?;
            for (i, cell) in row.iter().enumerate() {
                let l = if i < 5 { " class=\"l\"" } else { "" };
                write!(h, "<td{l}>{}</td>", esc(cell))?;
            }
            h += "</tr>\n";
        }
        h += "</table></div>\n";
    }

    if !failed.is_empty() {
        h += "<h2>Failed cells</h2>\n<ul>\n";
        for c in &failed {
            writeln!(
                h,
                "<li><b>{} {}</b> (pp{} tg{}): <code>{}</code></li>",
                esc(&format!("{}{}", c.model, c.placement_suffix())),
                c.quant,
                c.params.n_prompt,
                c.params.n_gen,
                esc(c.error.as_deref().unwrap_or("unknown reason"))
            )?;
        }
        h += "</ul>\n";
    }

    if !charts.is_empty() {
        h += "<h2>Charts</h2>\n";
        for ch in charts {
            let png = std::fs::read(&ch.png)?;
            writeln!(
                h,
                "<figure><figcaption>{}</figcaption><img alt=\"{}\" src=\"data:image/png;base64,{}\"></figure>",
                esc(ch.title),
                esc(ch.stem),
                base64::engine::general_purpose::STANDARD.encode(png)
            )?;
        }
    }

    if let Some(c) = cmp {
        write!(
            h,
            "<h2 id=\"comparison\">Comparison</h2>\n<p>Baseline <code>{}</code> ({}) → this run ({}). {} \
             {} regression(s), {} improvement(s).</p>\n<div class=\"scroll\"><table>\n<tr>\
             <th class=\"l\">model</th><th class=\"l\">quant</th><th class=\"l\">cell</th><th class=\"l\">metric</th>\
             <th>baseline</th><th>current</th><th>change</th><th>p (test)</th><th>threshold</th><th class=\"l\">verdict</th></tr>\n",
            esc(&c.base),
            esc(&c.base_run_id),
            esc(&c.current_run_id),
            if c.base_runs >= 3 {
                format!(
                    "With {} baseline runs, a regression needs a change beyond the threshold in the \
                     bad direction and p &lt; 0.05 against the spread of the baseline runs (a t \
                     prediction interval on the per-run means).",
                    c.base_runs
                )
            } else {
                "A regression needs a change beyond the threshold in the bad direction and Welch's \
                 t-test p &lt; 0.05 on the repetition samples (metrics measured once: an absolute \
                 change beyond a floor)."
                    .to_string()
            },
            c.regressions,
            c.improvements
        )?;
        for row in crate::compare::rows(c) {
            let verdict = row.last().cloned().unwrap_or_default();
            let cls = if verdict == "REGRESSED" {
                "regressed"
            } else if verdict == "improved" {
                "improved"
            } else {
                ""
            };
            write!(h, "<tr class=\"{cls}\">")?;
            for (i, cell) in row.iter().enumerate() {
                let l = if i < 4 || i == 9 { " class=\"l\"" } else { "" };
                write!(h, "<td{l}>{}</td>", esc(cell))?;
            }
            h += "</tr>\n";
        }
        h += "</table></div>\n";
    }
    h += "<p style=\"color:#666;font-size:.85rem;margin-top:2rem\">Made by quantbench; \
          results.json in the same folder holds every number and sample.</p>\n</body></html>\n";
    Ok(h)
}
