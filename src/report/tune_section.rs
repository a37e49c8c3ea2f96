//! `quantbench tune`'s answer in words: on the terminal, in summary.md and report.html (the
//! Tune section) — the recommendation with its margins, the llama-server command and the
//! models.toml entry, or the closest configurations and what each misses; the measured cells
//! against the grid; the search's steps; the Pareto set.

use std::path::Path;

use crate::tune::{Margin, Outcome, Probe};

use super::md::{bytes, sig};

fn f(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| sig(x, 4))
}

/// A margin in words: `min_tok_s: 41.2 ≥ 30 (+37%)`.
pub fn margin_words(m: &Margin) -> String {
    let value = match m.target.as_str() {
        "memory" => m.value.map_or("–".into(), |v| bytes(v as u64)),
        "rate" => format!("{} req/s", f(m.value)),
        _ => f(m.value),
    };
    let limit = match m.target.as_str() {
        "memory" => bytes(m.limit as u64),
        _ => sig(m.limit, 4),
    };
    let rel = if m.target == "rate" {
        if m.met {
            "the SLO holds".to_string()
        } else {
            "the SLO does not hold".to_string()
        }
    } else if m.margin.is_finite() {
        format!("{:+.1}%", m.margin * 100.0)
    } else {
        "not measured".into()
    };
    let op = match m.target.as_str() {
        "min_tok_s" => "≥",
        "rate" => "at",
        _ => "≤",
    };
    format!(
        "{}: {value} {} {op} {limit} ({rel})",
        m.target,
        if m.met { "meets" } else { "MISSES" }
    )
}

/// One probe's configuration and figures.
pub fn probe_words(p: &Probe) -> String {
    format!(
        "{} ngl {} kv {}/{} fa {} threads {}{}: {} tok/s, TTFT {} ms, {}, KLD {}{}",
        p.quant,
        p.params.n_gpu_layers,
        p.params.type_k,
        p.params.type_v,
        p.params.flash_attn.name(),
        p.params.n_threads,
        if p.params.n_depth > 0 {
            format!(" depth {}", p.params.n_depth)
        } else {
            String::new()
        },
        f(p.decode_tok_s),
        f(p.ttft_ms),
        p.mem_bytes.map_or("–".into(), bytes),
        f(p.kld_mean),
        if p.ok {
            String::new()
        } else {
            format!(" — FAILED: {}", p.error.as_deref().unwrap_or("?"))
        }
    )
}

/// The answer as lines of text (terminal and Markdown share it).
pub fn text(o: &Outcome, dir: &Path) -> String {
    let mut s = format!("\ntune {}: ", o.model);
    match &o.recommendation {
        Some(r) => {
            s += &format!("RECOMMENDED {}\n", probe_words(r));
            for m in &o.margins {
                s += &format!("  {}\n", margin_words(m));
            }
            if let Some(c) = &o.command {
                s += &format!("  llama-server command:\n    {c}\n");
            }
            if let Some(t) = &o.toml_entry {
                s += "  models.toml entry that pins it:\n";
                for l in t.lines() {
                    s += &format!("    {l}\n");
                }
            }
        }
        None => {
            s += "NOTHING MEETS THE TARGETS. The closest:\n";
            for p in &o.closest {
                s += &format!("  {}\n", probe_words(p));
                for m in crate::tune::margins(&o.targets, p)
                    .iter()
                    .filter(|m| !m.met)
                {
                    s += &format!("    {}\n", margin_words(m));
                }
            }
        }
    }
    s += &format!(
        "  measured {} cells of a grid of {}; every probe in {}",
        o.measured_cells,
        o.grid_cells,
        dir.display()
    );
    s
}

/// The Tune section of summary.md.
pub fn markdown(o: &Outcome) -> String {
    let mut s = String::from("\n## Tune\n\n");
    s += &format!(
        "`quantbench tune` searched {} for the configuration meeting {} with the highest \
         quality (ties: the fastest, then the smallest). It measured **{} cells** of a grid of \
         {}.\n\n",
        o.model,
        targets_words(o),
        o.measured_cells,
        o.grid_cells
    );
    match &o.recommendation {
        Some(r) => {
            s += &format!("**Recommended: {}**\n\n", probe_words(r));
            for m in &o.margins {
                s += &format!("- {}\n", margin_words(m));
            }
            if let Some(c) = &o.command {
                s += &format!("\n```sh\n{c}\n```\n");
            }
            if let Some(t) = &o.toml_entry {
                s += &format!("\n```toml\n{t}```\n");
            }
        }
        None => {
            s += "**No configuration meets the targets.** The closest:\n\n";
            for p in &o.closest {
                let misses: Vec<String> = crate::tune::margins(&o.targets, p)
                    .iter()
                    .filter(|m| !m.met)
                    .map(margin_words)
                    .collect();
                s += &format!("- {}; {}\n", probe_words(p), misses.join("; "));
            }
        }
    }
    s += "\nThe search, step by step:\n\n";
    for (i, st) in o.steps.iter().enumerate() {
        s += &format!("{}. {st}\n", i + 1);
    }
    s += "\nEvery probe (★ Pareto: no other is at least as good in quality, speed and memory):\n\n";
    for p in &o.probes {
        let star = if o.pareto.contains(&p.key) {
            "★ "
        } else {
            ""
        };
        let full = if p.full { " (full repetitions)" } else { "" };
        s += &format!("- {star}{}{full}\n", probe_words(p));
    }
    s
}

/// The targets in words.
pub fn targets_words(o: &Outcome) -> String {
    let t = &o.targets;
    let parts: Vec<String> = [
        t.min_tok_s.map(|v| format!("decode ≥ {} tok/s", sig(v, 4))),
        t.max_ttft_ms.map(|v| format!("TTFT ≤ {} ms", sig(v, 4))),
        t.max_kld.map(|v| format!("KLD ≤ {}", sig(v, 4))),
        t.memory_bytes.map(|v| format!("memory ≤ {}", bytes(v))),
        t.n_ctx.map(|v| format!("a context of {v} tokens")),
        t.rate
            .map(|v| format!("{} requests/s within [slo]", sig(v, 4))),
    ]
    .into_iter()
    .flatten()
    .collect();
    parts.join(", ")
}
