//! `quantbench tune`'s decisions: the user's targets, a probe's figures, whether a probe meets
//! the targets and by how much, which probe is better (highest quality, then speed, then
//! memory), the Pareto set, and the answer as the reports and `--format json` give it.
//!
//! Pure: no I/O, no llama.cpp. The search that chooses what to measure next lives in
//! `commands::tune`; this module judges what was measured.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::plan::CellParams;
use crate::quant::Quant;

/// What the user asks of a configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Decode speed one user sees (`decode_tok_s`, mean), at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tok_s: Option<f64>,
    /// Time to first token (`ttft_ms`, mean), at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_ms: Option<f64>,
    /// KL divergence against the model's reference (`kld_mean`), at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kld: Option<f64>,
    /// Memory of one copy (`mem_bytes`: VRAM on a GPU, else the host RSS), at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The context the configuration must hold (tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u32>,
    /// Requests per second the served configuration must sustain within `[slo]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.min_tok_s.is_none()
            && self.max_ttft_ms.is_none()
            && self.max_kld.is_none()
            && self.memory_bytes.is_none()
            && self.rate.is_none()
    }
}

/// One measured configuration, as the search sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The cell's key in the run folder.
    pub key: String,
    pub quant: Quant,
    pub params: CellParams,
    /// Measured (false: the cell failed — out of memory, refused —, see `error`).
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With the full repetitions of the model (a finalist), not a short ranking probe.
    pub full: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tok_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tok_s_sd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// The quant's KL divergence against the reference (measured once per quant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kld_mean: Option<f64>,
    /// A served probe at the target rate: whether it met `[slo]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_met: Option<bool>,
}

/// How one target fares: the measured value, the target, and the margin (relative to the
/// target: positive = met with room, negative = missed by that much).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    pub target: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub met: bool,
    pub margin: f64,
}

/// Each set target against the probe's figures.
pub fn margins(t: &Targets, p: &Probe) -> Vec<Margin> {
    let mut out = Vec::new();
    let mut at_least = |name: &str, value: Option<f64>, limit: f64| {
        let margin = value.map_or(f64::NEG_INFINITY, |v| (v - limit) / limit);
        out.push(Margin {
            target: name.into(),
            value,
            limit,
            met: margin >= 0.0,
            margin,
        });
    };
    if let Some(min) = t.min_tok_s {
        at_least("min_tok_s", p.decode_tok_s, min);
    }
    let mut at_most = |name: &str, value: Option<f64>, limit: f64| {
        let margin = value.map_or(f64::NEG_INFINITY, |v| {
            (limit - v) / limit.max(f64::MIN_POSITIVE)
        });
        out.push(Margin {
            target: name.into(),
            value,
            limit,
            met: margin >= 0.0,
            margin,
        });
    };
    if let Some(max) = t.max_ttft_ms {
        at_most("max_ttft_ms", p.ttft_ms, max);
    }
    if let Some(max) = t.max_kld {
        at_most("max_kld", p.kld_mean, max);
    }
    if let Some(max) = t.memory_bytes {
        at_most("memory", p.mem_bytes.map(|b| b as f64), max as f64);
    }
    if let Some(rate) = t.rate {
        out.push(Margin {
            target: "rate".into(),
            value: Some(rate),
            limit: rate,
            met: p.slo_met == Some(true),
            margin: if p.slo_met == Some(true) {
                0.0
            } else {
                f64::NEG_INFINITY
            },
        });
    }
    out
}

/// Whether a measured probe meets every target.
pub fn meets(t: &Targets, p: &Probe) -> bool {
    p.ok && margins(t, p).iter().all(|m| m.met)
}

/// How far a probe is from the targets: the worst margin (0 or more: it meets them).
pub fn shortfall(t: &Targets, p: &Probe) -> f64 {
    if !p.ok {
        return f64::NEG_INFINITY;
    }
    margins(t, p)
        .iter()
        .map(|m| m.margin)
        .fold(f64::INFINITY, f64::min)
}

/// The quants from the most to the least precise (quality when no KLD was measured).
pub fn precision_rank(q: Quant) -> usize {
    const ORDER: &[&str] = &[
        "F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_1",
        "Q4_K_S", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K",
    ];
    ORDER
        .iter()
        .position(|n| *n == q.name())
        .unwrap_or(ORDER.len())
}

/// The better of two probes that both meet the targets: higher quality (lower KLD, else the
/// more precise quant), then faster (`decode_tok_s`), then smaller (`mem_bytes`).
pub fn better(a: &Probe, b: &Probe) -> Ordering {
    let quality = match (a.kld_mean, b.kld_mean) {
        (Some(x), Some(y)) if x != y => x.total_cmp(&y),
        _ => precision_rank(a.quant).cmp(&precision_rank(b.quant)),
    };
    quality
        .then_with(|| {
            let s = |p: &Probe| p.decode_tok_s.unwrap_or(0.0);
            s(b).total_cmp(&s(a))
        })
        .then_with(|| {
            a.mem_bytes
                .unwrap_or(u64::MAX)
                .cmp(&b.mem_bytes.unwrap_or(u64::MAX))
        })
}

/// The non-dominated measured probes (quality, speed, memory: no other is at least as good in
/// all three and better in one), as indices into `probes`.
pub fn pareto(probes: &[Probe]) -> Vec<usize> {
    let q = |p: &Probe| p.kld_mean.unwrap_or(precision_rank(p.quant) as f64 * 1e-9);
    let s = |p: &Probe| p.decode_tok_s.unwrap_or(0.0);
    let m = |p: &Probe| p.mem_bytes.unwrap_or(u64::MAX) as f64;
    let ok: Vec<usize> = (0..probes.len()).filter(|&i| probes[i].ok).collect();
    ok.iter()
        .copied()
        .filter(|&i| {
            let a = &probes[i];
            !ok.iter().any(|&j| {
                let b = &probes[j];
                j != i
                    && q(b) <= q(a)
                    && s(b) >= s(a)
                    && m(b) <= m(a)
                    && (q(b) < q(a) || s(b) > s(a) || m(b) < m(a))
            })
        })
        .collect()
}

/// The answer of a search.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub model: String,
    pub targets: Targets,
    /// The configuration recommended: the best probe meeting every target; `None` when none
    /// does (`closest` then says how near the best ones came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Probe>,
    /// Every target of the recommendation (or of the closest probe) with its margin.
    pub margins: Vec<Margin>,
    pub met: bool,
    /// When nothing meets the targets: the probes that came nearest, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closest: Vec<Probe>,
    /// The llama-server command line and the models.toml entry of the recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml_entry: Option<String>,
    /// The recommendation's model file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
    /// Cells measured by the search (probes and finalists), and the size of the full grid it
    /// replaced (every quant × every configuration the search could choose).
    pub measured_cells: usize,
    pub grid_cells: usize,
    /// Every probe, in the order measured; and the keys of the Pareto set.
    pub probes: Vec<Probe>,
    pub pareto: Vec<String>,
    /// The search's decisions in words, in order.
    pub steps: Vec<String>,
}

impl Outcome {
    /// Fills `recommendation`, `met`, `margins`, `closest` and `pareto` from the probes.
    pub fn decide(&mut self) {
        let t = self.targets.clone();
        // a finalist's figures (full repetitions) stand for its configuration
        let finals: Vec<&Probe> = self.probes.iter().filter(|p| p.full).collect();
        let pool: Vec<&Probe> = if finals.iter().any(|p| meets(&t, p)) {
            finals
        } else {
            self.probes.iter().collect()
        };
        let best = pool
            .iter()
            .copied()
            .filter(|p| meets(&t, p))
            .min_by(|a, b| better(a, b));
        self.met = best.is_some();
        self.recommendation = best.cloned();
        let mut near: Vec<&Probe> = self.probes.iter().filter(|p| p.ok).collect();
        near.sort_by(|a, b| shortfall(&t, b).total_cmp(&shortfall(&t, a)));
        self.closest = if self.met {
            Vec::new()
        } else {
            near.iter().take(3).map(|p| (*p).clone()).collect()
        };
        self.margins = self
            .recommendation
            .as_ref()
            .or(near.first().copied())
            .map(|p| margins(&t, p))
            .unwrap_or_default();
        self.pareto = pareto(&self.probes)
            .into_iter()
            .map(|i| self.probes[i].key.clone())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(q: &str, kld: f64, speed: f64, mem: u64) -> Probe {
        Probe {
            key: format!("{q}:{speed}:{mem}"),
            quant: Quant::parse(q).unwrap(),
            params: crate::plan::tests_support::params(),
            ok: true,
            error: None,
            full: false,
            decode_tok_s: Some(speed),
            decode_tok_s_sd: None,
            ttft_ms: Some(10.0),
            mem_bytes: Some(mem),
            kld_mean: Some(kld),
            slo_met: None,
        }
    }

    #[test]
    fn the_highest_quality_that_meets_every_target_wins_then_speed_then_memory() {
        let t = Targets {
            min_tok_s: Some(30.0),
            memory_bytes: Some(8 << 30),
            max_kld: Some(0.05),
            ..Default::default()
        };
        let probes = vec![
            probe("F16", 0.0, 20.0, 14 << 30),    // too big, too slow
            probe("Q8_0", 0.001, 35.0, 7 << 30),  // meets
            probe("Q8_0", 0.001, 40.0, 7 << 30),  // meets, faster
            probe("Q4_K_M", 0.02, 60.0, 4 << 30), // meets, lower quality
            probe("Q2_K", 0.2, 90.0, 3 << 30),    // over the KLD budget
        ];
        let mut o = Outcome {
            targets: t.clone(),
            probes,
            ..Default::default()
        };
        o.decide();
        let r = o.recommendation.as_ref().unwrap();
        assert_eq!((r.quant.name(), r.decode_tok_s), ("Q8_0", Some(40.0)));
        assert!(o.met && o.closest.is_empty());
        let speed = o.margins.iter().find(|m| m.target == "min_tok_s").unwrap();
        assert!((speed.margin - 1.0 / 3.0).abs() < 1e-9);
        // Pareto: F16 (quality), Q8_0 at 40 (quality among the rest), Q4_K_M, Q2_K (speed, memory)
        assert!(!o.pareto.contains(&"Q8_0:35:7516192768".to_string()));
        assert_eq!(o.pareto.len(), 4);
    }

    #[test]
    fn nothing_meets_the_targets_the_closest_are_named_with_their_misses() {
        let t = Targets {
            min_tok_s: Some(100.0),
            ..Default::default()
        };
        let mut o = Outcome {
            targets: t,
            probes: vec![probe("F16", 0.0, 20.0, 1), probe("Q4_K_M", 0.1, 80.0, 1)],
            ..Default::default()
        };
        o.decide();
        assert!(!o.met && o.recommendation.is_none());
        assert_eq!(o.closest[0].quant.name(), "Q4_K_M");
        let m = &o.margins[0];
        assert!(!m.met && (m.margin + 0.2).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn finalists_decide_over_short_probes() {
        let t = Targets {
            min_tok_s: Some(30.0),
            ..Default::default()
        };
        let mut short = probe("Q8_0", 0.001, 31.0, 1);
        short.key = "a".into();
        let mut full = short.clone();
        full.full = true;
        full.decode_tok_s = Some(29.0); // the full measurement misses narrowly
        let other = Probe {
            full: true,
            ..probe("Q4_K_M", 0.02, 50.0, 1)
        };
        let mut o = Outcome {
            targets: t,
            probes: vec![short, full, other],
            ..Default::default()
        };
        o.decide();
        assert_eq!(o.recommendation.unwrap().quant.name(), "Q4_K_M");
    }
}
