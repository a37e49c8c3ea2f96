//! The metrics the regression gate compares: their names, directions, default thresholds and
//! floors, and the thresholds a user sets (models.toml `[compare]`, `--threshold`). Plain data,
//! read by config (validation) and compare (verdicts).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

/// A metric the gate knows.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub direction: Direction,
    /// Default threshold, percent, for cells that ran on a GPU.
    pub threshold_pct: f64,
    /// Default threshold, percent, for cells that ran on the CPU backend. A CPU benchmark uses
    /// every core, so anything else the machine does slows it down: on a shared 2-core VM,
    /// runs of one build differed by up to 50% (reports/gate-study-2026-12-01).
    pub cpu_threshold_pct: f64,
    /// For metrics measured once per cell: the smallest absolute change that counts. For
    /// metrics with a standard error ([`MetricDef::std_err`]), a change below it never counts,
    /// however significant.
    pub floor: Option<f64>,
    /// The smallest change that can ever be a regression, whatever its percentage or p-value: a
    /// few microseconds are below what any machine repeats. For latencies in ms, the change in
    /// ms; for rates (tok/s), the change of the time per token, in ms.
    pub min_change_ms: Option<f64>,
    /// A mean over a finite sample that the report gives with its standard error (the quality
    /// metrics, means over the scored tokens): significance is a z-test on the two means with
    /// their standard errors, whatever the number of baseline runs. Such a metric is
    /// deterministic for the same files, build and corpus, so it needs no confirmation re-run.
    pub std_err: bool,
}

impl MetricDef {
    /// Whether a busy machine changes the metric (times, rates, energy): not memory, and not
    /// the quality metrics, which are deterministic.
    pub fn timing(&self) -> bool {
        !self.std_err && self.name != "mem_bytes"
    }

    /// Whether a rate (tok/s): its floor applies to the time per token.
    pub fn is_rate(&self) -> bool {
        self.name.ends_with("_tok_s")
    }

    /// Whether the change from `base` to `cur` is below the metric's absolute floor.
    pub fn below_floor(&self, base: f64, cur: f64) -> bool {
        let Some(floor) = self.min_change_ms else {
            return false;
        };
        let change = if self.is_rate() {
            if base <= 0.0 || cur <= 0.0 {
                return false;
            }
            (1000.0 / cur - 1000.0 / base).abs()
        } else {
            (cur - base).abs()
        };
        change < floor
    }
}

/// Every metric compared, with its direction and default threshold.
pub const METRICS: &[MetricDef] = &[
    // Defaults from the run-to-run noise measured on an H200 (docs/gate.md, "How far to trust
    // the gate"): about the smallest thresholds that raised no false alarm in two sets of 10
    // back-to-back runs of the default matrix, compared pairwise and against 5-run baselines.
    // Floors (`min_change_ms`): 10 µs per generated token, 2 µs per prompt token, 0.5 ms of TTFT.
    MetricDef {
        name: "decode_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 12.0,
        cpu_threshold_pct: 25.0,
        floor: None,
        min_change_ms: Some(0.01),
        std_err: false,
    },
    MetricDef {
        name: "itl_ms_p50",
        direction: Direction::LowerIsBetter,
        threshold_pct: 8.0,
        cpu_threshold_pct: 30.0,
        floor: None,
        min_change_ms: Some(0.01),
        std_err: false,
    },
    MetricDef {
        name: "tg_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 14.0,
        cpu_threshold_pct: 25.0,
        floor: None,
        min_change_ms: Some(0.01),
        std_err: false,
    },
    MetricDef {
        name: "pp_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 35.0,
        cpu_threshold_pct: 35.0,
        floor: None,
        min_change_ms: Some(0.002),
        std_err: false,
    },
    MetricDef {
        name: "ttft_ms",
        direction: Direction::LowerIsBetter,
        threshold_pct: 60.0,
        cpu_threshold_pct: 60.0,
        floor: None,
        min_change_ms: Some(0.5),
        std_err: false,
    },
    // once per cell: floors in the metric's own unit
    MetricDef {
        name: "load_s",
        direction: Direction::LowerIsBetter,
        threshold_pct: 25.0,
        cpu_threshold_pct: 25.0,
        floor: Some(0.25),
        min_change_ms: None,
        std_err: false,
    },
    MetricDef {
        name: "mem_bytes",
        direction: Direction::LowerIsBetter,
        threshold_pct: 2.0,
        cpu_threshold_pct: 2.0,
        floor: Some(16.0 * 1048576.0),
        min_change_ms: None,
        std_err: false,
    },
    MetricDef {
        name: "energy_j_per_tok",
        direction: Direction::LowerIsBetter,
        threshold_pct: 10.0,
        cpu_threshold_pct: 10.0,
        floor: Some(0.02),
        min_change_ms: None,
        std_err: false,
    },
    // Quality against the reference (cells with `quality` on, the same reference and corpus in
    // both reports): means over the scored tokens, deterministic for the same files, build and
    // corpus, so the noise to beat is the sampling uncertainty of the corpus, not run-to-run
    // noise. Significance: a z-test on the two means with their reported standard errors,
    // p < 0.05 (|cur − base| > 1.96·√(err_b² + err_c²)). Both reports score the same tokens, so
    // the errors are correlated and the unpaired test is conservative: it flags a change larger
    // than another sample of text could explain, not every bit a new build flips. Thresholds
    // (docs/gate.md, "Quality metrics"; chosen by reasoning, not yet from a gate study): one
    // quant type to the next typically changes the mean KLD by a factor of 2 or more and top-1
    // agreement by a few points, so +10% KLD or −1% top-1 (relative) is a fraction of a quant
    // step. Floors: a KLD change under 1e-4 nats per token (about what a whole 8-bit quant
    // costs a real model) or a top-1 change under 0.002 (one token in 500) never counts.
    MetricDef {
        name: "kld_mean",
        direction: Direction::LowerIsBetter,
        threshold_pct: 10.0,
        cpu_threshold_pct: 10.0,
        floor: Some(1e-4),
        min_change_ms: None,
        std_err: true,
    },
    MetricDef {
        name: "top1_agree",
        direction: Direction::HigherIsBetter,
        threshold_pct: 1.0,
        cpu_threshold_pct: 1.0,
        floor: Some(0.002),
        min_change_ms: None,
        std_err: true,
    },
];

/// Looks a metric up.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// Thresholds in percent by metric name that models.toml (`[compare]`) or `--threshold` set;
/// a metric without one uses its default ([`MetricDef::threshold_pct`] on a GPU,
/// [`MetricDef::cpu_threshold_pct`] on the CPU).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds(pub BTreeMap<String, f64>);

impl Thresholds {
    /// Applies `--threshold` values: `PCT` (every metric) or `METRIC=PCT`.
    pub fn apply_cli(&mut self, args: &[String]) -> Result<()> {
        for a in args {
            match a.split_once('=') {
                Some((m, v)) => {
                    if metric(m).is_none() {
                        bail!(
                            "--threshold {a}: unknown metric {m:?}; known: {}",
                            METRICS
                                .iter()
                                .map(|m| m.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    self.0.insert(m.to_string(), parse_pct(v, a)?);
                }
                None => {
                    let v = parse_pct(a, a)?;
                    for m in METRICS {
                        self.0.insert(m.name.to_string(), v);
                    }
                }
            }
        }
        Ok(())
    }

    /// The threshold of `m` for a cell on the CPU backend (`cpu`) or a GPU.
    pub fn get(&self, m: &MetricDef, cpu: bool) -> f64 {
        self.0.get(m.name).copied().unwrap_or(if cpu {
            m.cpu_threshold_pct
        } else {
            m.threshold_pct
        })
    }

    /// Every metric's threshold on a GPU (`cpu` false) or the CPU.
    pub fn effective(&self, cpu: bool) -> BTreeMap<String, f64> {
        METRICS
            .iter()
            .map(|m| (m.name.to_string(), self.get(m, cpu)))
            .collect()
    }
}

fn parse_pct(v: &str, arg: &str) -> Result<f64> {
    let x: f64 = v
        .trim()
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("--threshold {arg}: use a percentage like 5 or METRIC=5"))?;
    if !(0.0..=1000.0).contains(&x) {
        bail!("--threshold {arg}: {x} is not a sensible percentage");
    }
    Ok(x)
}
