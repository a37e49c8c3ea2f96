//! The comparison as text: Markdown for PR comments, rows for the terminal table and HTML.

use super::verdict::{Comparison, MetricResult, Verdict};
use crate::metrics::metric;

/// The comparison as a Markdown document (for PR comments and issues).
pub fn markdown(cmp: &Comparison) -> String {
    let mut s = format!(
        "# quantbench compare\n\nbaseline `{}` ({}{}) → current `{}` ({})\n\n**{} regression{}, {} improvement{}{}**\n\n",
        cmp.base,
        cmp.base_run_id,
        if cmp.base_runs > 1 { format!(", {} runs", cmp.base_runs) } else { String::new() },
        cmp.current,
        cmp.current_run_id,
        cmp.regressions,
        if cmp.regressions == 1 { "" } else { "s" },
        cmp.improvements,
        if cmp.improvements == 1 { "" } else { "s" },
        if cmp.inconclusive > 0 {
            format!(", {} inconclusive", cmp.inconclusive)
        } else {
            String::new()
        },
    );
    s += "| model | quant | cell | metric | baseline | current | change | p (test) | threshold | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for row in rows(cmp) {
        let cells: Vec<_> = row
            .iter()
            .map(|c| crate::redact::markdown_text(c))
            .collect();
        s += &format!("| {} |\n", cells.join(" | "));
    }
    s += "\n";
    s += &explanation(cmp);
    s.push('\n');
    s
}

/// How the gate decides, in plain text: what a regression needs, then on a new line the floors
/// below which no change counts and the confirmation re-runs when there were any.
pub fn explanation(cmp: &Comparison) -> String {
    let mut s = String::from(if cmp.base_runs >= 3 {
        "A regression needs a change beyond the threshold in the bad direction and p < 0.05 \
         against the spread of the baseline runs (a t prediction interval on the per-run means).\n"
    } else {
        "A regression needs a change beyond the threshold in the bad direction and, for metrics \
         with repetition samples, Welch's t-test p < 0.05; metrics measured once per cell need \
         an absolute change beyond a floor instead.\n"
    });
    let floor = |name: &str| metric(name).and_then(|m| m.min_change_ms).unwrap_or(0.0);
    s += &format!(
        "No change smaller than {} µs per generated token ({} µs per prompt token, {} ms of \
         TTFT) is a regression.",
        floor("decode_tok_s") * 1000.0,
        floor("pp_tok_s") * 1000.0,
        floor("ttft_ms")
    );
    if has_quality(cmp) {
        s += &format!(
            " Quality metrics (kld_mean, top1_agree) compare only between cells scored against the \
             same reference on the same corpus: a regression needs a change beyond the threshold, \
             beyond {} in KLD or {} in top-1 agreement, and a z-test p < 0.05 on the two means \
             with their standard errors.",
            floor_of("kld_mean"),
            floor_of("top1_agree")
        );
    }
    if cmp.confirm_runs > 0 {
        s += &format!(
            " Each regressed cell was measured {} more time{}; a regression stands only when \
             every re-run regresses too (otherwise: unconfirmed).",
            cmp.confirm_runs,
            if cmp.confirm_runs == 1 { "" } else { "s" }
        );
    }
    if cmp.inconclusive > 0 {
        s += " Inconclusive: the gate cannot tell, because the machine was busy while the cell \
              was timed (in this run or the baseline) or because the samples could not detect a \
              change of the threshold's size (80% of the time); the reason is in the verdict. \
              Measure again on a quiet machine or with more repetitions.";
    }
    s
}

/// Whether any cell compared a quality metric.
fn has_quality(cmp: &Comparison) -> bool {
    cmp.cells
        .iter()
        .flat_map(|c| &c.metrics)
        .any(|m| metric(&m.metric).is_some_and(|d| d.std_err))
}

fn floor_of(name: &str) -> f64 {
    metric(name).and_then(|m| m.floor).unwrap_or(0.0)
}

/// A metric's value for the table: a quality metric (small numbers, a standard error) with four
/// significant digits and its `± error`, the others as [`fmt_num`].
fn fmt_value(m: &MetricResult, v: Option<f64>, err: Option<f64>) -> String {
    if !metric(&m.metric).is_some_and(|d| d.std_err) {
        return fmt_num(v);
    }
    let Some(x) = v else {
        return "–".into();
    };
    let sig = |x: f64| {
        let decimals = if x == 0.0 {
            0
        } else {
            (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize
        };
        format!("{x:.decimals$}")
    };
    match err {
        Some(e) => format!("{} ± {}", sig(x), sig(e)),
        None => sig(x),
    }
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.abs() >= 1e6 => format!("{:.1} MiB", x / 1048576.0),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}

/// A metric's verdict with its confirmation re-runs: `REGRESSED (confirmed: −31.2%, −29.8%)`,
/// and the reason of an inconclusive one.
fn verdict_text(m: &MetricResult) -> String {
    let base = verdict_runs(m);
    match &m.reason {
        Some(why) => format!("{base}: {why}"),
        None => base,
    }
}

fn verdict_runs(m: &MetricResult) -> String {
    if m.confirmations.is_empty() {
        return m.verdict.name().into();
    }
    let runs: Vec<String> = m
        .confirmations
        .iter()
        .map(|c| match (c.change_pct, c.verdict) {
            (Some(x), Verdict::Regressed) => format!("{x:+.1}%"),
            (Some(x), v) => format!("{x:+.1}% {}", v.name()),
            (None, v) => v.name().into(),
        })
        .collect();
    let how = if m.verdict == Verdict::Regressed {
        "confirmed by the re-runs"
    } else {
        "re-runs"
    };
    format!("{} ({how}: {})", m.verdict.name(), runs.join(", "))
}

/// Table rows (regressions first), one per metric, or one per cell without metrics.
pub fn rows(cmp: &Comparison) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for c in &cmp.cells {
        if c.metrics.is_empty() {
            out.push(vec![
                c.model.clone(),
                c.quant.clone(),
                c.label.clone(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                format!("{}: {}", c.verdict.name(), c.note.as_deref().unwrap_or("")),
            ]);
            continue;
        }
        let mut ms = c.metrics.clone();
        ms.sort_by_key(|m| m.verdict);
        for m in ms {
            out.push(vec![
                c.model.clone(),
                c.quant.clone(),
                c.label.clone(),
                m.metric.clone(),
                fmt_value(&m, m.base, m.base_err),
                fmt_value(&m, m.current, m.current_err),
                m.change_pct.map_or("–".into(), |v| format!("{v:+.1}%")),
                match m.p_value {
                    Some(p) => format!("{p:.3} ({})", m.method.replace('_', " ")),
                    None => m.method.replace('_', " "),
                },
                format!("{}%", m.threshold_pct),
                verdict_text(&m),
            ]);
        }
        // a comparable cell's note: why its quality was not compared
        if let Some(note) = &c.note {
            let mut row = vec![c.model.clone(), c.quant.clone(), c.label.clone()];
            row.extend(std::iter::repeat_n("–".to_string(), 6));
            row.push(note.clone());
            out.push(row);
        }
    }
    out
}
