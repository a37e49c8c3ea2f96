//! `report.html`: one self-contained page holding a whole run: environment, the full results
//! table, the quality table when cells were scored against a reference, the charts (PNG,
//! inlined as data URIs), failed cells with their reasons, and the comparison with a baseline
//! when there was one. No scripts, no fonts or styles from the
//! network, no external request of any kind; readable on a laptop and a phone. Never prints.

use std::fmt::{self, Write as _};

use anyhow::Result;
use base64::Engine;

use super::charts::ChartFile;
use super::md::{bytes, fixed, mean_sd, memory, status_text};
use crate::acquire::Origin;
use crate::compare::Comparison;
use crate::gpu::GpuEnvironment;
use crate::results::{CellResult, CellStatus, Report};

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
    let failed = r.failed_cells();
    let device = r.device_description();
    page_head(&mut h, r, &device, failed.len())?;
    banners(&mut h, r, cmp)?;
    environment(&mut h, r, &device);
    results_table(&mut h, r)?;
    machines(&mut h, r)?;
    tune(&mut h, r)?;
    serving(&mut h, r)?;
    served(&mut h, r)?;
    quality(&mut h, r)?;
    placements(&mut h, r)?;
    rpc_servers(&mut h, r)?;
    failed_list(&mut h, &failed)?;
    disturbed_list(&mut h, r)?;
    chart_figures(&mut h, charts)?;
    if let Some(c) = cmp {
        comparison(&mut h, c)?;
    }
    h += "<p style=\"color:#666;font-size:.85rem;margin-top:2rem\">Made by quantbench; \
          results.json in the same folder holds every number and sample.</p>\n</body></html>\n";
    Ok(h)
}

/// The document head, the title and the one-line summary of the run.
fn page_head(h: &mut String, r: &Report, device: &str, failed: usize) -> fmt::Result {
    write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>quantbench {id}</title><style>{STYLE}</style></head><body>\n\
         <h1>quantbench run {id}</h1>\n<p>{n} cells on {dev} — {failed} failed — status {status:?}{wall}</p>\n",
        id = esc(&r.run_id),
        n = r.cells.len(),
        dev = esc(device),
        status = r.status,
        wall = r.wall_s.map_or(String::new(), |w| format!(" — {w:.1} s wall")),
    )
}

/// The notes under the title: synthetic weights, and the comparison's outcome.
fn banners(h: &mut String, r: &Report, cmp: Option<&Comparison>) -> fmt::Result {
    if r.synthetic_weights {
        *h += "<p class=\"note\"><b>Synthetic weights.</b> The models have real architectures and \
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
    Ok(())
}

/// One term and its description in a `<dl>`.
fn dl(h: &mut String, k: &str, v: &str) {
    let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
}

/// The Environment section: machine, GPUs, software and the command.
fn environment(h: &mut String, r: &Report, device: &str) {
    let e = &r.environment;
    *h += "<h2>Environment</h2>\n<dl>\n";
    dl(h, "Device", device);
    if r.several_hosts() {
        let hosts = r.hosts_with_counts();
        dl(
            h,
            "Hosts",
            &format!("{hosts} — each machine under Machines"),
        );
    } else {
        dl(h, "CPU", &format!("{} ({} cores)", e.cpu, e.cpu_cores));
        dl(h, "Host memory", &bytes(e.host_memory_bytes));
        dl(h, "OS", &format!("{} — {}", e.os, e.kernel));
        gpu_entries(h, &e.gpu);
    }
    software_entries(h, r);
    *h += "</dl>\n";
}

/// The NVIDIA driver, each GPU, or why there is no GPU telemetry.
fn gpu_entries(h: &mut String, g: &GpuEnvironment) {
    if let Some(d) = &g.driver_version {
        let cuda = g.cuda_version.clone().unwrap_or_default();
        dl(h, "NVIDIA driver", &format!("{d}, CUDA {cuda}"));
    }
    for g in &g.gpus {
        let peak = g
            .peak_bandwidth_bytes_s
            .map_or(String::new(), |b| format!(", peak {:.2} TB/s", b / 1e12));
        let desc = format!(
            "{} ({}, {}{peak})",
            g.name,
            g.uuid,
            bytes(g.memory_total_bytes)
        );
        dl(h, "GPU", &desc);
    }
    if let Some(why) = &g.unavailable_reason {
        dl(h, "GPU telemetry", why);
    }
}

/// llama.cpp and quantbench versions, the weights, the command, the start and the notes.
fn software_entries(h: &mut String, r: &Report) {
    let l = &r.environment.llama;
    let modules: Vec<&str> = l
        .modules
        .iter()
        .map(|m| m.rsplit('/').next().unwrap_or(m))
        .collect();
    let llama = format!(
        "{}{} (ggml {} {}), modules: {}",
        l.llama_version,
        super::md::llama_build(r),
        l.ggml_version,
        l.ggml_commit,
        modules.join(", ")
    );
    dl(h, "llama.cpp", &llama);
    if let Some(o) = &r.environment.oracle {
        dl(h, "llama.cpp's tools (oracles)", o);
    }
    let q = &r.quantbench;
    let quantbench = format!("{} ({}, {})", q.version, q.git_commit, q.build_profile);
    dl(h, "quantbench", &quantbench);
    let weights = if r.synthetic_weights {
        "synthetic (random)"
    } else {
        "real"
    };
    dl(h, "Weights", weights);
    dl(h, "Command", &r.command.join(" "));
    dl(h, "Started", &r.started_at);
    for n in &r.environment.notes {
        dl(h, "Note", n);
    }
}

/// The Results section: one row per cell.
fn results_table(h: &mut String, r: &Report) -> fmt::Result {
    *h += "<h2>Results</h2>\n<p>Rates are mean ± standard deviation over the repetitions. Memory \
           is the worker's device memory (VRAM) on a GPU, its host resident set (RSS) on the CPU.</p>\n\
           <div class=\"scroll\"><table>\n<tr><th class=\"l\">model</th><th class=\"l\">quant</th>\
           <th>pp / tg</th><th class=\"l\">status</th><th class=\"l\">device</th>";
    let several = r.several_hosts();
    if several {
        *h += "<th class=\"l\">host</th>";
    }
    *h += "<th>load s</th><th>memory</th><th>TTFT ms</th><th>decode tok/s</th>\
           <th>ITL p50 / p99 ms</th><th>pp tok/s</th><th>tg tok/s</th><th>tok/s per GB</th>\
           <th>J/token</th>";
    let (parallel, priced) = serving_columns(r);
    if parallel {
        *h += "<th>all seqs tok/s</th>";
    }
    if priced {
        *h += "<th>$/1M tok</th>";
    }
    *h += "<th class=\"l\">file</th></tr>\n";
    for c in &r.cells {
        let host = several.then_some(c.host.as_str());
        result_row(h, c, host, (parallel, priced))?;
    }
    *h += "</table></div>\n";
    Ok(())
}

/// Whether the Results table has the aggregate-throughput column (some cell decodes several
/// sequences) and the price column (some cell has a price), as summary.md's table.
fn serving_columns(r: &Report) -> (bool, bool) {
    (
        r.cells.iter().any(|c| c.params.n_parallel > 1),
        r.cells.iter().any(|c| c.usd_per_mtok.is_some()),
    )
}

/// One cell's row of the Results table: with its host where the report has several, and the
/// serving columns (aggregate throughput, price) where the table has them.
fn result_row(
    h: &mut String,
    c: &CellResult,
    host: Option<&str>,
    (parallel, priced): (bool, bool),
) -> fmt::Result {
    let ok = c.status == CellStatus::Ok;
    let host = host.map_or(String::new(), |n| {
        format!("<td class=\"l\">{}</td>", esc(n))
    });
    let mut extra = String::new();
    if parallel {
        extra += &format!("<td>{}</td>", esc(&mean_sd(c, "throughput_tok_s")));
    }
    if priced {
        extra += &format!("<td>{}</td>", fixed(c.usd_per_mtok, 3));
    }
    writeln!(
        h,
        "<tr class=\"{cls}\"><td class=\"l\">{model}</td><td class=\"l\">{quant}</td><td>{pp} / {tg}</td>\
         <td class=\"l\">{status}</td><td class=\"l\">{dev}</td>{host}<td>{load}</td><td>{mem}</td><td>{ttft}</td>\
         <td>{dec}</td><td>{itl}</td><td>{pps}</td><td>{tgs}</td><td>{eff}</td><td>{en}</td>{extra}<td class=\"l\">{file}</td></tr>",
        cls = if ok { "" } else { "failed" },
        model = esc(&format!("{}{}", c.label, c.placement_suffix())),
        quant = c.quant,
        pp = c.params.n_prompt,
        tg = c.params.n_gen,
        status = status_text(c),
        dev = esc(&format!(
            "{} {}",
            c.backend.clone().unwrap_or_default(),
            c.device.clone().unwrap_or_default()
        )),
        load = fixed(c.load_s, 2),
        mem = esc(&memory(c)),
        ttft = esc(&mean_sd(c, "ttft_ms")),
        dec = esc(&mean_sd(c, "decode_tok_s")),
        itl = match (c.itl_ms_p50, c.itl_ms_p99) {
            (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
            _ => "–".into(),
        },
        pps = esc(&mean_sd(c, "pp_tok_s")),
        tgs = esc(&mean_sd(c, "tg_tok_s")),
        eff = fixed(c.efficiency_tok_s_per_gb, 1),
        en = fixed(c.energy_j_per_tok, 3),
        file = c.origin.as_ref().map_or("–".into(), |o| esc(&file_description(o))),
    )
}

/// A model file for the Results table: name, source, size and the start of its sha256.
fn file_description(o: &Origin) -> String {
    format!(
        "{} ({}, {}, sha256 {})",
        o.path.file_name().unwrap_or_default().to_string_lossy(),
        o.kind,
        bytes(o.size_bytes),
        &o.sha256.get(..12).unwrap_or(&o.sha256)
    )
}

/// Table rows: each cell escaped, left-aligned where `left` says so, the row classed by `class`.
fn table_rows(
    h: &mut String,
    rows: &[Vec<String>],
    class: impl Fn(&[String]) -> &'static str,
    left: impl Fn(usize) -> bool,
) -> fmt::Result {
    for row in rows {
        write!(h, "<tr class=\"{}\">", class(row))?;
        for (i, cell) in row.iter().enumerate() {
            let l = if left(i) { " class=\"l\"" } else { "" };
            write!(h, "<td{l}>{}</td>", esc(cell))?;
        }
        *h += "</tr>\n";
    }
    Ok(())
}

/// Markdown's inline marks as HTML: the text escaped, `**bold**` as `<b>`, `` `code` `` as
/// `<code>`.
fn inline_marks(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split("**").enumerate() {
        if i % 2 == 1 {
            out += "<b>";
        }
        for (j, p) in part.split('`').enumerate() {
            if j % 2 == 1 {
                write!(out, "<code>{p}</code>").expect("a String");
            } else {
                out += p;
            }
        }
        if i % 2 == 1 {
            out += "</b>";
        }
    }
    out
}

/// The Serving section (the cheapest cell meeting the SLO), where the report has a price, an
/// SLO or a load, or cells with several sequences.
fn serving(h: &mut String, r: &Report) -> fmt::Result {
    let Some(v) = super::md::serving_view(r) else {
        return Ok(());
    };
    writeln!(
        h,
        "<h2>Serving</h2>\n<p>{}</p>\n<p class=\"{}\">{}</p>",
        inline_marks(&v.intro),
        if v.met { "good" } else { "bad" },
        inline_marks(&v.verdict)
    )?;
    if v.rows.is_empty() {
        return Ok(());
    }
    *h += "<div class=\"scroll\"><table>\n<tr>";
    for (i, t) in v.head.iter().enumerate() {
        let l = if i < 3 { " class=\"l\"" } else { "" };
        write!(h, "<th{l}>{}</th>", esc(t))?;
    }
    *h += "</tr>\n";
    table_rows(h, &v.rows, |_| "", |i| i < 3)?;
    *h += "</table></div>\n";
    Ok(())
}

/// The Tune section: `quantbench tune`'s answer, its steps and probes.
fn tune(h: &mut String, r: &Report) -> fmt::Result {
    let Some(o) = &r.tune else {
        return Ok(());
    };
    use super::tune_section::{margin_words, probe_words, targets_words};
    writeln!(
        h,
        "<h2>Tune</h2>\n<p>The configuration of {} meeting {} with the highest quality (ties: \
         the fastest, then the smallest), found by measuring <b>{} cells</b> of a grid of {}.</p>",
        esc(&o.model),
        esc(&targets_words(o)),
        o.measured_cells,
        o.grid_cells
    )?;
    match &o.recommendation {
        Some(rec) => {
            writeln!(
                h,
                "<p class=\"good\"><b>Recommended: {}</b></p><ul>",
                esc(&probe_words(rec))
            )?;
            for m in &o.margins {
                writeln!(h, "<li>{}</li>", esc(&margin_words(m)))?;
            }
            *h += "</ul>\n";
            for block in [&o.command, &o.toml_entry].into_iter().flatten() {
                writeln!(h, "<pre>{}</pre>", esc(block))?;
            }
        }
        None => {
            *h += "<p class=\"bad\"><b>No configuration meets the targets.</b> The closest:</p><ul>\n";
            for p in &o.closest {
                writeln!(h, "<li>{}</li>", esc(&probe_words(p)))?;
            }
            *h += "</ul>\n";
        }
    }
    *h += "<p>The search:</p><ol>\n";
    for st in &o.steps {
        writeln!(h, "<li>{}</li>", esc(st))?;
    }
    *h += "</ol>\n";
    Ok(())
}

/// The Served traffic section: served cells, the answer and its command, the in-process
/// twins.
fn served(h: &mut String, r: &Report) -> fmt::Result {
    let Some(v) = super::served::view(r) else {
        return Ok(());
    };
    writeln!(
        h,
        "<h2>Served traffic</h2>\n<p>{}</p>\n<p class=\"{}\">{}</p>",
        inline_marks(&v.intro),
        if v.met { "good" } else { "bad" },
        inline_marks(&v.verdict)
    )?;
    if let Some(c) = &v.command {
        writeln!(h, "<pre>{}</pre>", esc(c))?;
    }
    text_section(h, "", Some(v.table), 3)?;
    if v.side_by_side.is_some() {
        text_section(h, "", v.side_by_side, 2)?;
    }
    Ok(())
}

/// The Machines section of a merged report: each folder joined, with its machine.
fn machines(h: &mut String, r: &Report) -> fmt::Result {
    text_section(h, "Machines", super::md::machines_table(r), 8)
}

/// The RPC servers section, where cells placed layers on llama.cpp RPC servers.
fn rpc_servers(h: &mut String, r: &Report) -> fmt::Result {
    text_section(h, "RPC servers", super::md::rpc_table(r), 4)
}

/// A section of one table from the Markdown summary's rows, its first `left` columns left
/// aligned.
fn text_section(
    h: &mut String,
    title: &str,
    table: Option<super::md::TextTable>,
    left: usize,
) -> fmt::Result {
    let Some((intro, head, rows)) = table else {
        return Ok(());
    };
    if !title.is_empty() {
        writeln!(h, "<h2>{}</h2>", esc(title))?;
    }
    if !intro.is_empty() {
        writeln!(h, "<p>{}</p>", esc(&intro.replace('`', "")))?;
    }
    *h += "<div class=\"scroll\"><table>\n<tr>";
    for (i, t) in head.iter().enumerate() {
        let l = if i < left { " class=\"l\"" } else { "" };
        write!(h, "<th{l}>{}</th>", esc(t))?;
    }
    *h += "</tr>\n";
    table_rows(h, &rows, |_| "", |i| i < left)?;
    *h += "</table></div>\n";
    Ok(())
}

/// The Multi-GPU placements section, where the run has such cells.
fn placements(h: &mut String, r: &Report) -> fmt::Result {
    let Some((intro, head, rows)) = super::md::placement_table(r) else {
        return Ok(());
    };
    write!(
        h,
        "<h2>Multi-GPU placements</h2>\n<p>{}</p>\n<div class=\"scroll\"><table>\n<tr>",
        esc(&intro.replace('`', ""))
    )?;
    for (i, t) in head.iter().enumerate() {
        let l = if i < 5 { " class=\"l\"" } else { "" };
        write!(h, "<th{l}>{}</th>", esc(t))?;
    }
    *h += "</tr>\n";
    let class = |row: &[String]| if row[3] == "FAILED" { "failed" } else { "" };
    table_rows(h, &rows, class, |i| i < 5)?;
    *h += "</table></div>\n";
    Ok(())
}

/// The Quality section, where cells were scored against a reference.
fn quality(h: &mut String, r: &Report) -> fmt::Result {
    let Some((intro, head, rows)) = super::md::quality_table(r) else {
        return Ok(());
    };
    writeln!(
        h,
        "<h2>Quality</h2>\n<p>{}</p>",
        esc(&intro.replace('`', ""))
    )?;
    if r.synthetic_weights {
        writeln!(
            h,
            "<p class=\"note\"><b>Synthetic weights:</b> {}</p>",
            esc(super::md::QUALITY_SYNTHETIC_NOTE)
        )?;
    }
    *h += "<div class=\"scroll\"><table>\n<tr>";
    let left = |i: usize| !(2..10).contains(&i);
    for (i, t) in head.iter().enumerate() {
        let l = if left(i) { " class=\"l\"" } else { "" };
        write!(h, "<th{l}>{}</th>", esc(t))?;
    }
    *h += "</tr>\n";
    let class = |row: &[String]| {
        if row[2].starts_with("not measured") {
            "failed"
        } else {
            ""
        }
    };
    table_rows(h, &rows, class, left)?;
    *h += "</table></div>\n";
    Ok(())
}

/// The Disturbed cells section: cells timed while the machine was busy, with why.
fn disturbed_list(h: &mut String, r: &Report) -> fmt::Result {
    let cells = super::md::disturbed(r);
    if cells.is_empty() {
        return Ok(());
    }
    *h += "<h2>Disturbed cells</h2>\n<p>The machine was busy with something else while these \
           cells were timed: their speed figures are not to be trusted (the gate calls them \
           inconclusive).</p>\n<ul>\n";
    for (c, why) in cells {
        writeln!(
            h,
            "<li><b>{} {}</b>: {}</li>",
            esc(&c.model_and_placement()),
            c.quant,
            esc(why)
        )?;
    }
    *h += "</ul>\n";
    Ok(())
}

/// The Failed cells section, where cells failed: each with its reason.
fn failed_list(h: &mut String, failed: &[&CellResult]) -> fmt::Result {
    if failed.is_empty() {
        return Ok(());
    }
    *h += "<h2>Failed cells</h2>\n<ul>\n";
    for c in failed {
        writeln!(
            h,
            "<li><b>{} {}</b> (pp{} tg{}): <code>{}</code></li>",
            esc(&c.model_and_placement()),
            c.quant,
            c.params.n_prompt,
            c.params.n_gen,
            esc(c.error.as_deref().unwrap_or("unknown reason"))
        )?;
    }
    *h += "</ul>\n";
    Ok(())
}

/// The Charts section: every PNG inlined as a data URI.
fn chart_figures(h: &mut String, charts: &[ChartFile]) -> Result<()> {
    if charts.is_empty() {
        return Ok(());
    }
    *h += "<h2>Charts</h2>\n";
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
    Ok(())
}

/// The Comparison section: the runs compared, how the gate decides, and one row per metric.
fn comparison(h: &mut String, c: &Comparison) -> fmt::Result {
    write!(
        h,
        "<h2 id=\"comparison\">Comparison</h2>\n<p>Baseline <code>{}</code> ({}) → this run ({}). {} \
         {} regression(s), {} improvement(s).</p>\n<div class=\"scroll\"><table>\n<tr>\
         <th class=\"l\">model</th><th class=\"l\">quant</th><th class=\"l\">cell</th><th class=\"l\">metric</th>\
         <th>baseline</th><th>current</th><th>change</th><th>p (test)</th><th>threshold</th><th class=\"l\">verdict</th></tr>\n",
        esc(&c.base),
        esc(&c.base_run_id),
        esc(&c.current_run_id),
        esc(&crate::compare::explanation(c)),
        c.regressions,
        c.improvements
    )?;
    let class = |row: &[String]| match row.last().map(String::as_str) {
        Some("REGRESSED") => "regressed",
        Some("improved") => "improved",
        _ => "",
    };
    table_rows(h, &crate::compare::rows(c), class, |i| i < 4 || i == 9)?;
    *h += "</table></div>\n";
    Ok(())
}
