//! The only module that prints. Human output (progress bars, per-test blocks, the final
//! table, warnings, errors) goes to stderr; stdout carries results only when `--format` asks.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::acquire::{Origin, Progress};
use crate::gpu::GpuCellTelemetry;
use crate::plan::Cell;
use crate::protocol::MemoryMeasurement;
use crate::report::md::{bytes, fixed, mean_sd, opt_bytes, per_gpu, percent, sig, sm_clocks};
use crate::report::quality_stats;
use crate::results::{CellResult, CellStatus, Report};

/// A worker's last error, on its stderr (its log, which the coordinator turns into the failed
/// cell's error).
pub fn worker_error(e: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "quantbench worker: error: {e:#}");
}

/// A line on stderr from outside any command (the signal thread's last word).
pub fn note(s: &str) {
    let _ = writeln!(std::io::stderr(), "quantbench: {}", terminal_lines(s));
}

/// `s` made safe for the terminal line by line (its own line breaks stay), URLs without their
/// userinfo.
fn terminal_lines(s: &str) -> String {
    let s = crate::redact::strip_userinfo(s);
    s.split('\n')
        .map(crate::redact::terminal)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes human output to stderr, with at most one progress bar at a time.
pub struct Printer {
    verbose: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// Set by the Ctrl-C handler; long acquisition steps check it.
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

fn bar_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    }
}

impl Printer {
    pub fn new(verbose: bool) -> Self {
        Printer {
            verbose,
            bar: Mutex::new(None),
            stop: None,
        }
    }

    /// Lets progress reporting tell long steps that the user asked to stop.
    pub fn with_stop(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Prints a line to stderr above any progress bar. Every line leaves through here (and
    /// [`Printer::error`]): control characters and bidirectional overrides in it are escaped
    /// ([`crate::redact::terminal`]), so a label or a server's message cannot move the cursor,
    /// recolour the terminal or reorder what is shown, and URLs lose their userinfo.
    pub fn line(&self, s: &str) {
        let s = &terminal_lines(s);
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(b) if !b.is_hidden() => b.println(s),
            _ => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    pub fn warn(&self, s: &str) {
        self.line(&format!("warning: {s}"));
    }

    /// An error chain, once, at the end (called from `main`).
    pub fn error(&self, e: &anyhow::Error) {
        self.clear_bar();
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            terminal_lines(&format!("error: {e:#}"))
        );
    }

    /// Results for `--format`: exactly this on stdout.
    pub fn stdout(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    /// A detail only `-v` shows.
    pub fn detail(&self, s: &str) {
        if self.verbose {
            self.line(s);
        }
    }

    /// A line of llama.cpp's log (only with `-v`).
    pub fn worker_log(&self, s: &str) {
        if self.verbose && !s.trim().is_empty() {
            self.line(&format!("  | {s}"));
        }
    }

    fn set_bar(&self, b: Option<ProgressBar>) {
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        *slot = b;
    }

    fn clear_bar(&self) {
        self.set_bar(None);
    }

    /// The header of a run.
    pub fn run_header(&self, run_dir: &str, cells: usize, models: usize, backend: &str) {
        self.line(&format!(
            "quantbench {}: {cells} cells ({models} models) on {backend}; reports in {run_dir}",
            env!("CARGO_PKG_VERSION")
        ));
    }

    /// `TEST i/N` block header when a cell starts, then a progress bar for its phases.
    pub fn cell_started(&self, n: usize, total: usize, c: &Cell) {
        let p = &c.params;
        self.clear_bar();
        let label = if c.label == c.model {
            String::new()
        } else {
            // a label is the config's free text: its line breaks escaped too
            format!(" ({})", crate::redact::terminal(&c.label))
        };
        let load = if p.serve.is_some() {
            None // said first in the bracket
        } else {
            p.load_tag()
        };
        let placement = crate::plan::join_tags(&[p.context_tag(), p.placement_tag(), load])
            .map(|t| format!(", {t}"))
            .unwrap_or_default();
        match &p.serve {
            Some(sp) => self.line(&format!(
                "\nTEST {n}/{total}  {}{label} · {}  [{}, {} requests + {} warm-up, {}{placement}]",
                c.model,
                c.quant,
                sp.tag(),
                sp.workload.requests_per_point,
                sp.workload.warmup_requests,
                if p.n_threads == 0 {
                    "endpoint".to_string()
                } else {
                    format!("{} slots, {} threads, ngl {}", p.n_parallel, p.n_threads, p.n_gpu_layers)
                }
            )),
            None => self.line(&format!(
                "\nTEST {n}/{total}  {}{label} · {}  [pp{} tg{}, {} reps + {} warm-up, {} threads, ngl {}{placement}]",
                c.model, c.quant, p.n_prompt, p.n_gen, p.repetitions, p.warmup, p.n_threads, p.n_gpu_layers
            )),
        }
        let b = ProgressBar::with_draw_target(Some(u64::from(p.repetitions)), bar_target());
        b.set_style(
            ProgressStyle::with_template("  {spinner} {msg:<14} [{bar:24}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_message("loading");
        b.enable_steady_tick(Duration::from_millis(120));
        self.set_bar(Some(b));
    }

    pub fn cell_progress(&self, phase: &str, done: u32, total: u32) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = bar.as_ref() {
            match phase {
                "load" => b.set_message(if done < total { "loading" } else { "loaded" }),
                "warmup" => {
                    b.set_message(format!("warm-up {done}/{total}"));
                }
                "requests" => b.set_message("requests"),
                "probe" => {
                    b.set_message(format!("search probe {}", done + 1));
                    b.set_length(u64::from(total));
                    b.set_position(u64::from(done));
                }
                _ => {
                    b.set_message("repetitions");
                    b.set_length(u64::from(total));
                    b.set_position(u64::from(done));
                }
            }
        }
    }

    /// The rest of the `TEST` block when a cell ends.
    pub fn cell_finished(&self, r: &CellResult) {
        self.clear_bar();
        self.line(cell_block(r).trim_end());
    }

    /// The final results table, aligned.
    pub fn final_table(&self, report: &Report) {
        self.clear_bar();
        let (mut head, mut rows) = crate::report::md::table(report);
        quality_columns(report, &mut head, &mut rows);
        // a cell's text (a merged report's host) may hold a line break: one row, one line
        for cell in rows.iter_mut().flatten() {
            *cell = crate::redact::terminal(cell).into_owned();
        }
        self.line(&format!("\n{}", aligned(&head, &rows)));
    }
}

/// The `KLD` (mean, 4 significant digits) and `top-1` columns of the final table, where any
/// cell has quality statistics; the table is left as it is otherwise.
fn quality_columns(report: &Report, head: &mut Vec<&'static str>, rows: &mut [Vec<String>]) {
    if !report.cells.iter().any(|c| quality_stats(c).is_some()) {
        return;
    }
    head.extend(["KLD", "top-1"]);
    for (row, c) in rows.iter_mut().zip(&report.cells) {
        let st = quality_stats(c);
        row.push(st.map_or("–".into(), |s| sig(s.kld_mean, 4)));
        row.push(st.map_or("–".into(), |s| format!("{:.1}%", s.top1_agree * 100.0)));
    }
}

/// The lines of a finished cell's `TEST` block: its file, then its failure or its figures.
fn cell_block(r: &CellResult) -> String {
    let mut s = r.origin.as_ref().map(file_line).unwrap_or_default();
    if r.status == CellStatus::Failed {
        s += &format!(
            "  FAILED   {}\n",
            r.error.as_deref().unwrap_or("unknown reason")
        );
        return s;
    }
    s += &format!(
        "  device   {} · {}\n",
        r.backend.as_deref().unwrap_or("?"),
        r.device.as_deref().unwrap_or("?")
    );
    if let Some(sv) = &r.serving {
        s += &served_lines(r, sv);
        for w in &r.warnings {
            s += &format!("  note     {w}\n");
        }
        return s;
    }
    s += &format!(
        "  load     {:.3} s{} (context {:.3} s)\n",
        r.load_s.unwrap_or(f64::NAN),
        if r.load_cold == Some(true) {
            " cold"
        } else {
            ""
        },
        r.ctx_s.unwrap_or(f64::NAN)
    );
    if let Some(m) = &r.memory {
        s += &memory_line(r, m);
    }
    for u in &r.rpc {
        s += &rpc_line(u);
    }
    if let Some(g) = r.gpu.as_ref().filter(|g| g.unavailable_reason.is_none()) {
        s += &gpu_lines(r, g);
    }
    s += &rate_lines(r);
    s += &load_line(r);
    if let Some(q) = &r.quality {
        s += &quality_line(q);
    }
    for w in &r.warnings {
        s += &format!("  note     {w}\n");
    }
    if let Some(why) = r.disturbance.as_ref().and_then(|d| d.disturbed.as_ref()) {
        s += &format!(
            "  BUSY     the machine was busy while this cell was timed: {why}; its speed figures \
             are not trustworthy (the gate calls them inconclusive)\n"
        );
    }
    if let Some(t) = &r.generated_text {
        let preview: String = format!("{}{}", r.params.prompt, t)
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        s += &format!("  text     {preview:?}\n");
    }
    s
}

/// A served cell's lines: the server, the workload, each load point, the rate found, the
/// command that starts the same server.
fn served_lines(r: &CellResult, sv: &crate::protocol::ServingMeasurement) -> String {
    use crate::report::md::bytes;
    let mut s = String::new();
    if let Some(v) = &sv.server_version {
        s += &format!(
            "  server   llama-server {}{} · ready in {:.2} s · {} tokens of context per slot\n",
            v.trim_start_matches("version: "),
            if sv.server_pinned == Some(true) {
                " (pinned build)"
            } else {
                " (NOT the pinned build)"
            },
            sv.ready_s.unwrap_or(f64::NAN),
            sv.slot_ctx
        );
    } else {
        s += &format!("  server   {}\n", sv.target);
    }
    s += &format!("  workload {}\n", sv.workload);
    for p in &sv.points {
        s += &format!("  {}\n", point_line(p));
    }
    if let Some(m) = sv.max_rate_req_s {
        s += &if m > 0.0 {
            format!(
                "  max rate {} requests/s meet the SLO ({} probes)\n",
                sig(m, 3),
                sv.points.len()
            )
        } else {
            format!(
                "  max rate none: no rate tried meets the SLO ({})\n",
                sv.summary.slo_miss.as_deref().unwrap_or("?")
            )
        };
    }
    if let (Some(rss), _) | (None, Some(rss)) = (sv.server_rss_peak_bytes, sv.server_rss_bytes) {
        s += &format!(
            "  memory   server RSS peak {}{}\n",
            bytes(rss),
            r.vram_bytes
                .map(|v| format!(" · VRAM {}", bytes(v)))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &sv.command {
        s += &format!("  command  {c}\n");
    }
    s
}

/// One load point in a line: what was offered, what came out, the latencies users saw.
pub fn point_line(p: &crate::serving_stats::PointSummary) -> String {
    let load = match (p.offered_rate_req_s, p.concurrency) {
        (Some(r), _) => format!("rate {}/s", sig(r, 3)),
        (_, Some(c)) => format!("{c} user{}", if c == 1 { "" } else { "s" }),
        _ => "?".into(),
    };
    let pct = |x: &Option<crate::serving_stats::Pcts>| {
        x.as_ref().map_or("–".into(), |p| {
            format!("p50 {} p99 {}", sig(p.p50, 3), sig(p.p99, 3))
        })
    };
    let mut l = format!(
        "{load:<11} {:.2} req/s, {:.1} tok/s · TTFT {} · TPOT {} · E2E {} ms",
        p.req_per_s,
        p.output_tok_s,
        pct(&p.ttft_ms),
        pct(&p.tpot_ms),
        pct(&p.e2e_ms)
    );
    if p.failed_requests > 0 {
        l += &format!(" · {} failed", p.failed_requests);
    }
    if let Some(g) = p.goodput_frac {
        l += &format!(" · goodput {:.0}%", g * 100.0);
    }
    match p.slo_met {
        Some(true) => l += " · SLO met",
        Some(false) => l += &format!(" · SLO missed ({})", p.slo_miss.as_deref().unwrap_or("?")),
        None => {}
    }
    l
}

/// The `file` line: path, size, and whether the weights are synthetic.
fn file_line(o: &Origin) -> String {
    format!(
        "  file     {} ({}{})\n",
        o.path.display(),
        bytes(o.size_bytes),
        if o.synthetic {
            ", synthetic weights"
        } else {
            ""
        }
    )
}

/// What one RPC server held and what the load sent it.
fn rpc_line(u: &crate::protocol::RpcUse) -> String {
    use crate::report::md::bytes;
    let total: u64 = u.devices.iter().map(|d| d.memory_total_bytes).sum();
    format!(
        "  rpc      {}: weights {} + KV/compute {} on {} device{} ({} total) · load sent {}{}\n",
        u.endpoint,
        bytes(u.weights_bytes),
        bytes(u.context_bytes),
        u.devices.len(),
        if u.devices.len() == 1 { "" } else { "s" },
        bytes(total),
        bytes(u.load_sent_bytes),
        match crate::report::md::weights_came(u) {
            "sent" | "–" => String::new(),
            how => format!(" (weights {how})"),
        }
    )
}

/// The `memory` line: the memory the efficiency figure uses, then llama.cpp's breakdown.
fn memory_line(r: &CellResult, m: &MemoryMeasurement) -> String {
    let main = match (r.vram_bytes, r.mem_bytes) {
        (Some(v), _) if v > 0 => format!("VRAM {}", bytes(v)),
        (_, Some(h)) => format!("host RSS {}", bytes(h)),
        _ => "?".into(),
    };
    format!(
        "  memory   {main} · weights {} device + {} host · KV {} · compute {}\n",
        bytes(m.weights_gpu_bytes),
        bytes(m.weights_host_bytes),
        bytes(m.kv_bytes),
        bytes(m.compute_bytes)
    )
}

/// The `GPU` line (NVML telemetry), and the `per GPU` line where the model spanned several.
fn gpu_lines(r: &CellResult, g: &GpuCellTelemetry) -> String {
    let mut s = format!(
        "  GPU      VRAM after load {} · peak {} ({}) · {} J/token · bandwidth {} of peak · SM {} MHz · {}\n",
        opt_bytes(g.vram_after_load_bytes),
        opt_bytes(g.vram_peak_bytes),
        g.vram_source.as_deref().unwrap_or("?"),
        fixed(r.energy_j_per_tok, 3),
        percent(r.bw_util),
        sm_clocks(g),
        if g.throttle_reasons.is_empty() {
            "no throttling".to_string()
        } else {
            format!("THROTTLED: {}", g.throttle_reasons.join(", "))
        }
    );
    if g.per_device.len() > 1 {
        s += &format!(
            "  per GPU  {} (weights on {})\n",
            per_gpu(r),
            r.weight_devices().unwrap_or_else(|| "the CPU".into())
        );
    }
    s
}

/// The `TTFT`, `decode` and `pp`/`tg` lines.
fn rate_lines(r: &CellResult) -> String {
    let mut s = format!("  TTFT     {} ms\n", mean_sd(r, "ttft_ms"));
    s += &format!(
        "  decode   {} tok/s  (ITL p50 {:.2} ms, p90 {:.2}, p99 {:.2})\n",
        mean_sd(r, "decode_tok_s"),
        r.itl_ms_p50.unwrap_or(f64::NAN),
        r.itl_ms_p90.unwrap_or(f64::NAN),
        r.itl_ms_p99.unwrap_or(f64::NAN)
    );
    let llama = |m: &str| fixed(r.mean(m), 1);
    s += &format!(
        "  pp{:<5}  {} tok/s   tg{}: {} tok/s   (llama.cpp's counters: pp {}, tg {})\n",
        r.params.n_prompt,
        mean_sd(r, "pp_tok_s"),
        r.params.n_gen,
        mean_sd(r, "tg_tok_s"),
        llama("pp_tok_s_llama"),
        llama("tg_tok_s_llama")
    );
    s
}

/// The `batch` line of a cell with several sequences: aggregate throughput (S_TG, S_PP) as
/// llama-batched-bench prints it, llama.cpp's counters, and the price per million tokens.
fn load_line(r: &CellResult) -> String {
    let b = r.params.n_parallel;
    let price = r
        .usd_per_mtok
        .map(|u| format!(" · ${u:.3} per 1M tokens"))
        .unwrap_or_default();
    if b <= 1 {
        return r
            .usd_per_mtok
            .map(|u| format!("  cost     ${u:.3} per 1M generated tokens\n"))
            .unwrap_or_default();
    }
    format!(
        "  batch    {b} sequences{}: {} tok/s generated (S_TG), prompts {} tok/s (S_PP)  (llama.cpp's counters: {}){price}\n",
        if r.params.shared_prompt { ", one shared prompt" } else { "" },
        mean_sd(r, "throughput_tok_s"),
        mean_sd(r, "pp_throughput_tok_s"),
        fixed(r.mean("throughput_tok_s_llama"), 1)
    )
}

/// The quality test's line: KLD, top-1 agreement, PPL ratio against the reference, or why
/// there are none.
fn quality_line(q: &crate::results::CellQuality) -> String {
    let reference = q.quality_ref.split(' ').next().unwrap_or("?");
    match (&q.stats, &q.quality_error) {
        (Some(st), _) => format!(
            "  quality  KLD {:.6} ± {:.6} · top-1 {:.1}% · PPL ratio {:.4} ± {:.4}  ({} tokens vs {reference}{})\n",
            st.kld_mean,
            st.kld_mean_err,
            st.top1_agree * 100.0,
            st.ppl_ratio,
            st.ppl_ratio_err,
            st.tokens,
            q.quality_s.map_or(String::new(), |t| format!(", {t:.1} s"))
        ),
        (None, Some(e)) => format!("  quality  not measured: {e}\n"),
        (None, None) => String::new(),
    }
}

/// Columns padded to their widest cell, a dashed rule under the header.
fn aligned(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: &mut dyn Iterator<Item = String>| {
        cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut s = fmt(&mut head.iter().map(|h| h.to_string()));
    s += "\n";
    s += &fmt(&mut widths.iter().map(|w| "-".repeat(*w)));
    for r in rows {
        s += "\n";
        s += &fmt(&mut r.iter().cloned());
    }
    s
}

impl Printer {
    /// The comparison with a baseline: regressions first, one line per metric.
    pub fn comparison(&self, cmp: &crate::compare::Comparison) {
        self.clear_bar();
        let head = [
            "model",
            "quant",
            "cell",
            "metric",
            "baseline",
            "current",
            "change",
            "p (test)",
            "threshold",
            "verdict",
        ];
        let rows = crate::compare::rows(cmp);
        let mut s = format!(
            "\ncompare: {} ({}) → {} ({})\n",
            cmp.base, cmp.base_run_id, cmp.current, cmp.current_run_id
        );
        s += &aligned(&head, &rows);
        s += &format!(
            "\n\n{} regression{}, {} improvement{}",
            cmp.regressions,
            if cmp.regressions == 1 { "" } else { "s" },
            cmp.improvements,
            if cmp.improvements == 1 { "" } else { "s" }
        );
        self.line(&s);
    }
}

impl Progress for Printer {
    fn begin(&self, label: &str, total_bytes: Option<u64>) {
        let b = match total_bytes {
            Some(n) => {
                let b = ProgressBar::with_draw_target(Some(n), bar_target());
                b.set_style(
                    ProgressStyle::with_template(
                        "  {msg} [{bar:28}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b
            }
            None => {
                let b = ProgressBar::with_draw_target(None, bar_target());
                b.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                b
            }
        };
        b.set_message(label.to_string());
        self.set_bar(Some(b));
        if !std::io::stderr().is_terminal() {
            self.line(&format!("  {label} ..."));
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.inc(n);
        }
    }
    fn end(&self) {
        self.clear_bar();
    }
    fn cancelled(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|f| crate::signals::stopping(f))
    }
    fn warn(&self, message: &str) {
        Printer::warn(self, message);
    }
}
