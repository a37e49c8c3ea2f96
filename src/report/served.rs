//! The Served traffic section of summary.md and report.html: what each served cell's users
//! saw (latency percentiles, goodput, the rate found), the answer — the cheapest cell that
//! serves the traffic within the SLO, at what rate, with the exact llama-server command — and
//! the served cells beside the in-process cells of the same file and settings.

use crate::protocol::ServingMeasurement;
use crate::results::{CellResult, CellStatus, Report};
use crate::serving_stats::Pcts;

use super::md::{sig, TextTable};

/// The section's content.
pub struct ServedView {
    pub intro: String,
    pub verdict: String,
    /// Whether a cell meets the SLO (the verdict is good news).
    pub met: bool,
    /// The exact command of the answer's server, when it is a llama-server quantbench started.
    pub command: Option<String>,
    pub table: TextTable,
    /// In-process cells beside the served cells of the same file and settings.
    pub side_by_side: Option<TextTable>,
}

/// The section, where the report has served cells.
pub fn view(r: &Report) -> Option<ServedView> {
    let served: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| c.params.serve.is_some())
        .collect();
    if served.is_empty() {
        return None;
    }
    let priced = r.serving.cost.usd_per_hour.is_some();
    let mut head = vec![
        "model",
        "quant",
        "cell",
        "offered",
        "req/s",
        "out tok/s",
        "TTFT p50/p99 ms",
        "TPOT p50/p99 ms",
        "E2E p99 ms",
        "goodput",
        "failed",
        "SLO",
        "max rate req/s",
    ];
    if priced {
        head.push("$/1M tok");
    }
    let rows = served.iter().map(|c| row(c, priced)).collect();
    let slo = r.serving.slo.requests();
    let (met, verdict, command) = answer(r, &served);
    Some(ServedView {
        intro: intro(r, &served, slo.has_target()),
        verdict,
        met,
        command,
        table: (String::new(), head, rows),
        side_by_side: side_by_side(r, &served),
    })
}

fn sv(c: &CellResult) -> Option<&ServingMeasurement> {
    c.serving.as_ref()
}

fn p50_99(p: &Option<Pcts>) -> String {
    p.as_ref().map_or("–".into(), |p| {
        format!("{} / {}", sig(p.p50, 3), sig(p.p99, 3))
    })
}

fn row(c: &CellResult, priced: bool) -> Vec<String> {
    let tag = c.placement_suffix();
    let tag = tag
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut v = vec![c.model.clone(), c.quant.to_string(), tag];
    match (c.status, sv(c)) {
        (CellStatus::Ok, Some(s)) => {
            let p = &s.summary;
            v.push(match (p.offered_rate_req_s, p.concurrency) {
                (Some(r), _) => format!("{}/s", sig(r, 3)),
                (_, Some(u)) => format!("{u} user{}", if u == 1 { "" } else { "s" }),
                _ => "–".into(),
            });
            v.push(sig(p.req_per_s, 3));
            v.push(sig(p.output_tok_s, 4));
            v.push(p50_99(&p.ttft_ms));
            v.push(p50_99(&p.tpot_ms));
            v.push(p.e2e_ms.as_ref().map_or("–".into(), |e| sig(e.p99, 4)));
            v.push(
                p.goodput_frac
                    .map_or("–".into(), |g| format!("{:.1}%", g * 100.0)),
            );
            v.push(format!("{}/{}", p.failed_requests, p.requests));
            v.push(match p.slo_met {
                Some(true) => "met".into(),
                Some(false) => format!("missed: {}", p.slo_miss.as_deref().unwrap_or("?")),
                None => "–".into(),
            });
            v.push(s.max_rate_req_s.map_or("–".into(), |m| sig(m, 3)));
        }
        _ => {
            v.push("FAILED".into());
            v.extend(std::iter::repeat_n("–".to_string(), 9));
        }
    }
    if priced {
        v.push(c.usd_per_mtok.map_or("–".into(), |u| sig(u, 4)));
    }
    v
}

/// What the section answers and how: the workload, the SLO, the definitions.
fn intro(r: &Report, served: &[&CellResult], has_targets: bool) -> String {
    let mut workloads: Vec<&str> = served
        .iter()
        .filter_map(|c| sv(c).map(|s| s.workload.as_str()))
        .collect();
    workloads.dedup();
    let slo = &r.serving.slo;
    let targets: Vec<String> = [
        slo.max_ttft_ms.map(|v| format!("TTFT ≤ {} ms", sig(v, 4))),
        slo.max_tpot_ms.map(|v| format!("TPOT ≤ {} ms", sig(v, 4))),
        slo.max_e2e_ms.map(|v| format!("E2E ≤ {} ms", sig(v, 4))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut s = format!(
        "Served cells: a llama-server started per cell (or an endpoint) under a workload of \
         requests arriving over time ({}). Latencies are per request, as the client saw them \
         (TTFT to the first chunk with text, TPOT = (E2E − TTFT) / (tokens − 1), E2E to the last \
         event; docs/metrics.md); req/s and out tok/s count complete requests over the time from \
         the first send to the last answer.",
        workloads.join("; ")
    );
    if has_targets {
        s +=
            &format!(
            " SLO (models.toml's `[slo]`): {} for p{} of the requests{}; goodput = the requests \
             meeting every target, per second and as a share of the requests sent.",
            targets.join(", "),
            crate::traffic::fmt_num(slo.requests().percentile()),
            slo.min_goodput
                .map_or(String::new(), |g| format!(", and a goodput of at least {:.1}%", g * 100.0))
        );
    } else {
        s += " No per-request targets were given (`[slo]` max_ttft_ms, max_tpot_ms, max_e2e_ms): \
              no cell is judged.";
    }
    s
}

/// The answer: the cheapest served cell meeting the SLO (the highest output rate without a
/// price), at its rate, with its command; or the closest when none does.
fn answer(r: &Report, served: &[&CellResult]) -> (bool, String, Option<String>) {
    let ok: Vec<&&CellResult> = served
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .collect();
    let met: Vec<&&CellResult> = ok
        .iter()
        .copied()
        .filter(|c| sv(c).is_some_and(|s| s.summary.slo_met == Some(true)))
        .collect();
    let out_rate = |c: &CellResult| sv(c).map_or(0.0, |s| s.summary.output_tok_s);
    let best = met
        .iter()
        .copied()
        .min_by(|a, b| match (a.usd_per_mtok, b.usd_per_mtok) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => out_rate(b).total_cmp(&out_rate(a)),
        });
    let Some(best) = best else {
        if !r.serving.slo.requests().has_target() {
            return (false, "No SLO to judge the served cells by.".into(), None);
        }
        let closest = ok
            .first()
            .map_or("no served cell was measured".to_string(), |c| {
                format!(
                    "e.g. {} {}{}: {}",
                    c.model,
                    c.quant,
                    c.placement_suffix(),
                    sv(c)
                        .and_then(|s| s.summary.slo_miss.clone())
                        .unwrap_or_default()
                )
            });
        return (
            false,
            format!(
                "**No served cell meets the SLO** ({closest}). A lower rate, more slots \
                 (`n_parallel`), a smaller quant or shorter requests bring the latencies down."
            ),
            None,
        );
    };
    let s = sv(best).expect("served");
    let rate = match (
        s.max_rate_req_s,
        s.summary.offered_rate_req_s,
        s.summary.concurrency,
    ) {
        (Some(m), _, _) => format!(
            "up to {} requests/s (the highest rate that met it)",
            sig(m, 3)
        ),
        (_, Some(r), _) => format!("{} requests/s", sig(r, 3)),
        (_, _, Some(u)) => format!("{u} concurrent users"),
        _ => "its load".into(),
    };
    let mut v = format!(
        "**{} {}{}** serves this traffic within the SLO at {rate}: {} req/s, {} output tok/s, \
         TTFT p99 {} ms, TPOT p99 {} ms",
        best.model,
        best.quant,
        best.placement_suffix(),
        sig(s.summary.req_per_s, 3),
        sig(s.summary.output_tok_s, 4),
        s.summary
            .ttft_ms
            .as_ref()
            .map_or("–".into(), |p| sig(p.p99, 4)),
        s.summary
            .tpot_ms
            .as_ref()
            .map_or("–".into(), |p| sig(p.p99, 4)),
    );
    if let Some(u) = best.usd_per_mtok {
        v += &format!(", ${} per 1M output tokens at that rate", sig(u, 4));
    }
    v += ".";
    (true, v, s.command.clone())
}

/// The in-process cell of the same model, quant and settings as a served one (the same
/// placement, context and number of sequences = slots), if the run has one.
fn twin<'a>(r: &'a Report, c: &CellResult) -> Option<&'a CellResult> {
    r.cells.iter().find(|o| {
        o.params.serve.is_none()
            && o.status == CellStatus::Ok
            && o.model == c.model
            && o.quant == c.quant
            && o.params.n_parallel == c.params.n_parallel
            && o.params.context_tag() == c.params.context_tag()
            && o.params.placement_tag() == c.params.placement_tag()
            && o.params.n_threads == c.params.n_threads
    })
}

/// Served cells beside their in-process twins: what the server (HTTP, scheduling, sampling,
/// queueing for a slot) costs each user.
fn side_by_side(r: &Report, served: &[&CellResult]) -> Option<TextTable> {
    let f = |v: Option<f64>| v.map_or("–".into(), |x| sig(x, 4));
    let rows: Vec<Vec<String>> = served
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .filter_map(|c| {
            let t = twin(r, c)?;
            let s = sv(c)?;
            Some(vec![
                format!("{} {}", c.model, c.quant),
                crate::plan::join_tags(&[c.params.load_tag()]).unwrap_or_default(),
                f(t.mean("decode_tok_s")),
                f(c.metrics.get("decode_tok_s").map(|x| x.median)),
                f(t.mean("ttft_ms")),
                f(s.summary.ttft_ms.as_ref().map(|p| p.p50)),
                f(t.mean("throughput_tok_s")),
                f(Some(s.summary.output_tok_s)),
                f(s.summary.overhead_ms_mean),
            ])
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    Some((
        "Each served cell beside the in-process cell of the same file and settings (B = its \
         slots): decode speed per sequence (in process: mean over repetitions; served: median \
         over requests), TTFT (in process: mean, prompt of n_prompt random tokens; served: \
         median, the workload's prompts), aggregate output rate, and what the client saw beyond \
         the server's own prompt and decode times (HTTP, scheduling, waiting for a slot)."
            .into(),
        vec![
            "model quant",
            "served at",
            "decode tok/s in process",
            "served",
            "TTFT ms in process",
            "served p50",
            "all seqs tok/s in process",
            "served out tok/s",
            "overhead ms",
        ],
        rows,
    ))
}
