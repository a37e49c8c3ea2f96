//! Comparing two reports cell by cell: which metrics regressed, improved, or stayed within
//! noise. Pure: the inputs are parsed reports, the output a [`Comparison`]; reading files and
//! printing happen elsewhere.
//!
//! A regression needs both a change beyond the metric's threshold in the bad direction and
//! statistical significance at 95%, two-sided:
//!
//! * against one baseline run: Welch's t-test on the per-repetition samples. A metric measured
//!   once per cell (load time, memory, energy) has no samples; it needs an absolute change beyond
//!   a floor instead. Repetitions of one run share that run's conditions, so they understate how
//!   much two runs differ: this mode needs thresholds above the machine's run-to-run noise.
//! * against a baseline of three or more runs: how far the current run falls from the baseline
//!   runs' distribution (a t prediction interval on the per-run means, k − 1 degrees of
//!   freedom), which measures the run-to-run noise instead of assuming it away.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::report::{self, CellStatus, Report};

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
    /// For metrics measured once per cell: the smallest absolute change that counts.
    pub floor: Option<f64>,
    /// The smallest change that can ever be a regression, whatever its percentage or p-value: a
    /// few microseconds are below what any machine repeats. For latencies in ms, the change in
    /// ms; for rates (tok/s), the change of the time per token, in ms.
    pub min_change_ms: Option<f64>,
}

impl MetricDef {
    /// Whether a rate (tok/s): its floor applies to the time per token.
    fn is_rate(&self) -> bool {
        self.name.ends_with("_tok_s")
    }

    /// Whether the change from `base` to `cur` is below the metric's absolute floor.
    fn below_floor(&self, base: f64, cur: f64) -> bool {
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
    // Defaults from the run-to-run noise measured on an H200 (README, "How far to trust the
    // gate"): about the smallest thresholds that raised no false alarm in two sets of 10
    // back-to-back runs of the seed matrix, compared pairwise and against 5-run baselines.
    // Floors (`min_change_ms`): 10 µs per generated token, 2 µs per prompt token, 0.5 ms of TTFT.
    MetricDef {
        name: "decode_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 12.0,
        cpu_threshold_pct: 25.0,
        floor: None,
        min_change_ms: Some(0.01),
    },
    MetricDef {
        name: "itl_ms_p50",
        direction: Direction::LowerIsBetter,
        threshold_pct: 8.0,
        cpu_threshold_pct: 30.0,
        floor: None,
        min_change_ms: Some(0.01),
    },
    MetricDef {
        name: "tg_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 14.0,
        cpu_threshold_pct: 25.0,
        floor: None,
        min_change_ms: Some(0.01),
    },
    MetricDef {
        name: "pp_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 35.0,
        cpu_threshold_pct: 35.0,
        floor: None,
        min_change_ms: Some(0.002),
    },
    MetricDef {
        name: "ttft_ms",
        direction: Direction::LowerIsBetter,
        threshold_pct: 60.0,
        cpu_threshold_pct: 60.0,
        floor: None,
        min_change_ms: Some(0.5),
    },
    // once per cell: floors in the metric's own unit
    MetricDef {
        name: "load_s",
        direction: Direction::LowerIsBetter,
        threshold_pct: 25.0,
        cpu_threshold_pct: 25.0,
        floor: Some(0.25),
        min_change_ms: None,
    },
    MetricDef {
        name: "mem_bytes",
        direction: Direction::LowerIsBetter,
        threshold_pct: 2.0,
        cpu_threshold_pct: 2.0,
        floor: Some(16.0 * 1048576.0),
        min_change_ms: None,
    },
    MetricDef {
        name: "energy_j_per_tok",
        direction: Direction::LowerIsBetter,
        threshold_pct: 10.0,
        cpu_threshold_pct: 10.0,
        floor: Some(0.02),
        min_change_ms: None,
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

/// One metric of one cell as a comparison needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
    /// Per-repetition values, when the report has them (JSON).
    pub samples: Option<Vec<f64>>,
}

/// A cell as a comparison sees it, from JSON or CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct CellView {
    pub model: String,
    pub quant: String,
    /// Measurement parameters that must be equal for cells to be the same cell.
    pub params: String,
    /// Short form for tables, e.g. `pp512 tg50`.
    pub label: String,
    /// CPU threads: a cell measured with other threads is not comparable.
    pub threads: String,
    pub device: String,
    pub backend: String,
    pub sha256: String,
    pub synthetic: bool,
    pub ok: bool,
    pub error: Option<String>,
    pub stats: BTreeMap<String, Stat>,
}

impl CellView {
    fn key(&self) -> (String, String, String) {
        (self.model.clone(), self.quant.clone(), self.params.clone())
    }
}

/// A report as a comparison sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportView {
    pub source: String,
    pub run_id: String,
    pub build_profile: String,
    pub cells: Vec<CellView>,
}

#[allow(clippy::too_many_arguments)]
fn params_key(
    n_prompt: &str,
    n_gen: &str,
    n_batch: &str,
    n_ubatch: &str,
    ngl: &str,
    fa: &str,
    tk: &str,
    tv: &str,
    sampling: &str,
    placement: Option<String>,
) -> String {
    format!("pp{n_prompt} tg{n_gen} b{n_batch} ub{n_ubatch} ngl {ngl} fa {fa} kv {tk}/{tv} sampling {sampling}")
        + &placement.map(|t| format!(" {t}")).unwrap_or_default()
}

/// The comparison key of a cell's measurement parameters, as [`CellResult::params`] holds it.
pub fn cell_params_key(p: &crate::plan::CellParams) -> String {
    params_key(
        &p.n_prompt.to_string(),
        &p.n_gen.to_string(),
        &p.n_batch.to_string(),
        &p.n_ubatch.to_string(),
        &p.n_gpu_layers.to_string(),
        p.flash_attn.name(),
        &p.type_k,
        &p.type_v,
        p.sampling.name(),
        p.placement_tag(),
    )
}

/// Short cell label for tables: `pp512 tg50`, then the multi-GPU placement where it is not
/// llama.cpp's default.
fn cell_label(n_prompt: &str, n_gen: &str, placement: Option<String>) -> String {
    format!("pp{n_prompt} tg{n_gen}") + &placement.map(|t| format!(" {t}")).unwrap_or_default()
}

/// Reads baseline reports: each path is a report file, a run folder, or a folder of reports
/// (`*.json`, or run folders with a `results.json`), as `nightly.sh` keeps them.
pub fn read_many(paths: &[std::path::PathBuf]) -> Result<Vec<ReportView>> {
    let mut out = Vec::new();
    for p in paths {
        let is_set =
            p.is_dir() && !p.join("results.json").exists() && !p.join("results.csv").exists();
        if !is_set {
            out.push(read(p)?);
            continue;
        }
        let mut members: Vec<std::path::PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|e| {
                e.extension().is_some_and(|x| x == "json" || x == "csv")
                    || e.join("results.json").exists()
            })
            .collect();
        members.sort();
        if members.is_empty() {
            bail!(
                "{} holds no report (results.json, *.json or run folders)",
                p.display()
            );
        }
        for m in members {
            out.push(read(&m)?);
        }
    }
    Ok(out)
}

/// Reads a report: a `results.json`, a `results.csv`, or a run folder holding them.
pub fn read(path: &Path) -> Result<ReportView> {
    let path = if path.is_dir() {
        let j = path.join("results.json");
        if j.exists() {
            j
        } else {
            path.join("results.csv")
        }
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let looks_json = text.trim_start().starts_with('{');
    if looks_json || path.extension().is_some_and(|e| e == "json") {
        let r: Report = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a quantbench results.json (schema {})",
                path.display(),
                report::SCHEMA_VERSION
            )
        })?;
        if r.schema_version > report::SCHEMA_VERSION {
            bail!(
                "{} has schema_version {}, newer than this quantbench reads ({}); upgrade quantbench",
                path.display(),
                r.schema_version,
                report::SCHEMA_VERSION
            );
        }
        let view = from_report(&r, &path);
        check_finite(&view)?;
        Ok(view)
    } else {
        let view = from_csv(&text, &path)?;
        check_finite(&view)?;
        Ok(view)
    }
}

/// Refuses a report holding a value that is not a finite number (spreadsheets write `NaN`,
/// `inf`), or samples whose mean or spread overflows: the error names the file, the cell and the
/// column, before anything is compared or measured.
pub fn check_finite(view: &ReportView) -> Result<()> {
    for c in view.cells.iter().filter(|c| c.ok) {
        let whose = |name: &str| {
            format!(
                "{}: cell {} {} ({}), column {name}",
                view.source, c.model, c.quant, c.label
            )
        };
        for (name, st) in &c.stats {
            let fix = "fix the value or remove the cell's row";
            if let Some((i, v)) = st
                .samples
                .iter()
                .flatten()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
            {
                bail!(
                    "{}: repetition {} is {v}, not a finite number; {fix}",
                    whose(name),
                    i + 1
                );
            }
            let (m, var, _) = moments(st);
            if st.samples.as_ref().is_some_and(|v| v.len() >= 2)
                && (!m.is_finite() || !var.is_finite())
            {
                bail!(
                    "{}: the samples are too large to summarise (their mean or variance \
                     overflows); {fix}",
                    whose(name)
                );
            }
            for (what, v) in [("the mean", st.mean), ("the standard deviation", st.sd)] {
                if !v.is_finite() {
                    bail!("{}: {what} is {v}, not a finite number; {fix}", whose(name));
                }
            }
        }
    }
    Ok(())
}

/// The comparison view of a report in memory.
pub fn from_report(r: &Report, path: &Path) -> ReportView {
    let cells = r
        .cells
        .iter()
        .map(|c| {
            let p = &c.params;
            let mut stats = BTreeMap::new();
            for name in ["decode_tok_s", "tg_tok_s", "pp_tok_s", "ttft_ms"] {
                if let Some(s) = c.metrics.get(name) {
                    let samples: Vec<f64> = c
                        .samples
                        .iter()
                        .map(|r| match name {
                            "decode_tok_s" => r.decode_tok_s,
                            "tg_tok_s" => r.tg_tok_s,
                            "pp_tok_s" => r.pp_tok_s,
                            _ => r.ttft_ms,
                        })
                        .collect();
                    stats.insert(
                        name.to_string(),
                        Stat {
                            mean: if samples.is_empty() {
                                s.mean
                            } else {
                                samples.iter().sum::<f64>() / samples.len() as f64
                            },
                            sd: s.sd,
                            n: s.n,
                            samples: (!samples.is_empty()).then_some(samples),
                        },
                    );
                }
            }
            // per-repetition median inter-token latency: the steady decode step
            let itl: Vec<f64> = c
                .samples
                .iter()
                .filter_map(|r| {
                    let d: Vec<f64> = r.token_ms.windows(2).map(|w| w[1] - w[0]).collect();
                    crate::stats::percentile(&d, 50.0)
                })
                .collect();
            if let Some(s) = crate::stats::summarize(&itl) {
                stats.insert(
                    "itl_ms_p50".to_string(),
                    Stat {
                        mean: s.mean,
                        sd: s.sd,
                        n: s.n,
                        samples: Some(itl),
                    },
                );
            }
            let single = |v: Option<f64>| {
                v.map(|x| Stat {
                    mean: x,
                    sd: 0.0,
                    n: 1,
                    samples: None,
                })
            };
            for (name, v) in [
                ("load_s", c.load_s),
                ("mem_bytes", c.mem_bytes.map(|b| b as f64)),
                ("energy_j_per_tok", c.energy_j_per_tok),
            ] {
                if let Some(s) = single(v) {
                    stats.insert(name.to_string(), s);
                }
            }
            CellView {
                model: c.model.clone(),
                quant: c.quant.to_string(),
                params: cell_params_key(p),
                label: cell_label(
                    &p.n_prompt.to_string(),
                    &p.n_gen.to_string(),
                    p.placement_tag(),
                ),
                threads: p.n_threads.to_string(),
                device: c.device.clone().unwrap_or_default(),
                backend: c.backend.clone().unwrap_or_default(),
                sha256: c
                    .origin
                    .as_ref()
                    .map(|o| o.sha256.clone())
                    .unwrap_or_default(),
                synthetic: c.origin.as_ref().is_some_and(|o| o.synthetic),
                ok: c.status == CellStatus::Ok,
                error: c.error.clone(),
                stats,
            }
        })
        .collect();
    ReportView {
        source: path.display().to_string(),
        run_id: r.run_id.clone(),
        build_profile: r.quantbench.build_profile.clone(),
        cells,
    }
}

fn from_csv(text: &str, path: &Path) -> Result<ReportView> {
    let bad = || {
        format!(
            "{} is neither a quantbench results.json nor a results.csv",
            path.display()
        )
    };
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .with_context(bad)?
        .iter()
        .map(String::from)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    for required in [
        "model",
        "quant",
        "status",
        "n_prompt",
        "n_gen",
        "decode_tok_s",
    ] {
        if col(required).is_none() {
            bail!("{}: no `{required}` column", bad());
        }
    }
    let mut run_id = String::new();
    let mut build_profile = String::new();
    let mut cells = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let get = |name: &str| col(name).and_then(|k| rec.get(k)).unwrap_or("").to_string();
        let num = |name: &str| get(name).parse::<f64>().ok();
        run_id = get("run_id");
        build_profile = get("build_profile");
        let reps = get("repetitions").parse::<usize>().unwrap_or(1);
        // columns added with multi-GPU support: absent in older CSVs (= the default placement)
        let placement = crate::plan::placement_tag(
            &get("split_mode"),
            get("main_gpu").parse().unwrap_or(0),
            &get("tensor_split"),
        );
        let mut stats = BTreeMap::new();
        for name in ["decode_tok_s", "tg_tok_s", "pp_tok_s", "ttft_ms"] {
            if let Some(mean) = num(name) {
                stats.insert(
                    name.to_string(),
                    Stat {
                        mean,
                        sd: num(&format!("{name}_sd")).unwrap_or(0.0),
                        n: reps,
                        samples: None,
                    },
                );
            }
        }
        for name in ["load_s", "mem_bytes", "energy_j_per_tok"] {
            if let Some(mean) = num(name) {
                stats.insert(
                    name.to_string(),
                    Stat {
                        mean,
                        sd: 0.0,
                        n: 1,
                        samples: None,
                    },
                );
            }
        }
        cells.push(CellView {
            model: get("model"),
            quant: get("quant"),
            params: params_key(
                &get("n_prompt"),
                &get("n_gen"),
                &get("n_batch"),
                &get("n_ubatch"),
                &get("n_gpu_layers"),
                &get("flash_attn"),
                &get("type_k"),
                &get("type_v"),
                &get("sampling"),
                placement.clone(),
            ),
            label: cell_label(&get("n_prompt"), &get("n_gen"), placement),
            threads: get("n_threads"),
            device: get("device"),
            backend: get("backend"),
            sha256: get("file_sha256"),
            synthetic: get("synthetic") == "true",
            ok: get("status") == "ok",
            error: Some(get("error")).filter(|e| !e.is_empty()),
            stats,
        });
    }
    Ok(ReportView {
        source: path.display().to_string(),
        run_id,
        build_profile,
        cells,
    })
}

/// The outcome for one metric of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regressed,
    NotComparable,
    Missing,
    New,
    /// Beyond the threshold in one run, but not in every confirmation re-run: noise.
    Unconfirmed,
    Improved,
    Unchanged,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::NotComparable => "not comparable",
            Verdict::Missing => "missing",
            Verdict::New => "new",
            Verdict::Unconfirmed => "unconfirmed",
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
        }
    }
}

/// One metric's comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: String,
    pub direction: Direction,
    pub base: Option<f64>,
    pub current: Option<f64>,
    /// (current − base) / base, percent.
    pub change_pct: Option<f64>,
    /// Two-sided p-value of the significance test; `None` where none applies.
    pub p_value: Option<f64>,
    /// `welch` (repetition samples of one baseline run), `between_runs` (the spread of several
    /// baseline runs), `floor` (one value per run, absolute floor) or `none`.
    pub method: String,
    pub threshold_pct: f64,
    pub verdict: Verdict,
    /// Re-measurements of a cell that regressed (`run --confirm`, `compare --confirm-with`),
    /// each compared with the same baseline: the regression stands only if every one regresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmations: Vec<Confirmation>,
}

/// One confirmation re-run of a regressed metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The run the re-measurement belongs to.
    pub run_id: String,
    pub current: Option<f64>,
    pub change_pct: Option<f64>,
    pub p_value: Option<f64>,
    /// `missing` when the re-run has no result for the cell (it failed or was interrupted).
    pub verdict: Verdict,
}

/// One cell's comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub model: String,
    pub quant: String,
    /// All measurement parameters of the cell.
    pub params: String,
    /// Their short form, e.g. `pp512 tg50`.
    pub label: String,
    /// The worst verdict of its metrics (or the cell's own: new, missing, not comparable).
    pub verdict: Verdict,
    /// Why a cell is not comparable, missing, or new.
    pub note: Option<String>,
    pub metrics: Vec<MetricResult>,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub base: String,
    pub current: String,
    pub base_run_id: String,
    pub current_run_id: String,
    /// How many baseline runs (three or more: significance from their spread).
    pub base_runs: usize,
    /// Thresholds of GPU cells, percent by metric.
    pub thresholds: BTreeMap<String, f64>,
    /// Thresholds of CPU cells, percent by metric.
    #[serde(default)]
    pub cpu_thresholds: BTreeMap<String, f64>,
    pub regressions: usize,
    pub improvements: usize,
    /// Confirmation re-runs applied (0: none).
    #[serde(default)]
    pub confirm_runs: usize,
    pub cells: Vec<CellResult>,
}

impl Comparison {
    pub fn has_regression(&self) -> bool {
        self.regressions > 0
    }

    /// The cells with a regressed metric: (model, quant, params) as in [`CellResult`].
    pub fn regressed_cells(&self) -> Vec<(String, String, String)> {
        self.cells
            .iter()
            .filter(|c| c.metrics.iter().any(|m| m.verdict == Verdict::Regressed))
            .map(|c| (c.model.clone(), c.quant.clone(), c.params.clone()))
            .collect()
    }

    /// Worst verdicts first, counts recomputed.
    fn tally(&mut self) {
        for c in &mut self.cells {
            if let Some(worst) = c.metrics.iter().map(|m| m.verdict).min() {
                c.verdict = worst;
            }
        }
        self.cells
            .sort_by(|a, b| a.verdict.cmp(&b.verdict).then(a.model.cmp(&b.model)));
        let count = |v: Verdict| {
            self.cells
                .iter()
                .flat_map(|c| &c.metrics)
                .filter(|m| m.verdict == v)
                .count()
        };
        self.regressions = count(Verdict::Regressed);
        self.improvements = count(Verdict::Improved);
    }
}

/// Applies confirmation re-runs, what Perfherder and Chromium's bisect do before they call a
/// change a regression: `reruns` are comparisons of re-measurements of the regressed cells with
/// the same baseline. A regressed metric keeps its verdict only when it regresses in every
/// re-run that measured it; otherwise it becomes [`Verdict::Unconfirmed`] (a re-run that failed
/// refutes nothing). Each re-run's result is recorded on
/// the metric. Without re-runs nothing changes.
pub fn confirm(cmp: &mut Comparison, reruns: &[Comparison]) {
    if reruns.is_empty() {
        return;
    }
    for c in &mut cmp.cells {
        for m in &mut c.metrics {
            if m.verdict != Verdict::Regressed {
                continue;
            }
            m.confirmations = reruns
                .iter()
                .map(|r| {
                    let found = r
                        .cells
                        .iter()
                        .find(|rc| {
                            (&rc.model, &rc.quant, &rc.params) == (&c.model, &c.quant, &c.params)
                        })
                        .and_then(|rc| rc.metrics.iter().find(|rm| rm.metric == m.metric));
                    match found {
                        Some(rm) => Confirmation {
                            run_id: r.current_run_id.clone(),
                            current: rm.current,
                            change_pct: rm.change_pct,
                            p_value: rm.p_value,
                            verdict: rm.verdict,
                        },
                        None => Confirmation {
                            run_id: r.current_run_id.clone(),
                            current: None,
                            change_pct: None,
                            p_value: None,
                            verdict: Verdict::Missing,
                        },
                    }
                })
                .collect();
            // a re-run without a result for the cell (it failed) neither confirms nor refutes
            if m.confirmations
                .iter()
                .any(|x| !matches!(x.verdict, Verdict::Regressed | Verdict::Missing))
            {
                m.verdict = Verdict::Unconfirmed;
            }
        }
    }
    cmp.confirm_runs = reruns.len();
    cmp.tally();
}

/// Welch's t-test: the two-sided p-value of a difference in means, from summaries.
pub fn welch_p(a: &Stat, b: &Stat) -> Option<f64> {
    let (ma, va, na) = moments(a);
    let (mb, vb, nb) = moments(b);
    if na < 2 || nb < 2 {
        return None;
    }
    let se2 = va / na as f64 + vb / nb as f64;
    if se2 <= 0.0 {
        // no spread at all: any difference is certain, none is none
        return Some(if (ma - mb).abs() > 0.0 { 0.0 } else { 1.0 });
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2
        / ((va / na as f64).powi(2) / (na - 1) as f64 + (vb / nb as f64).powi(2) / (nb - 1) as f64);
    // statrs panics on a NaN argument: no p-value for numbers that are not finite
    if !t.is_finite() || !df.is_finite() {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

fn moments(s: &Stat) -> (f64, f64, usize) {
    match &s.samples {
        Some(v) if v.len() >= 2 => {
            let n = v.len();
            let m = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            (m, var, n)
        }
        _ => (s.mean, s.sd * s.sd, s.n),
    }
}

/// The two-sided p-value of `x` under the distribution of the per-run values `runs`: a t
/// prediction interval with k − 1 degrees of freedom (k ≥ 3).
pub fn between_runs_p(runs: &[f64], x: f64) -> Option<f64> {
    let k = runs.len();
    if k < 3 {
        return None;
    }
    let m = runs.iter().sum::<f64>() / k as f64;
    let sd = (runs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
    if !sd.is_finite() || !x.is_finite() {
        return None;
    }
    if sd == 0.0 {
        return Some(if x == m { 1.0 } else { 0.0 });
    }
    let t = (x - m) / (sd * (1.0 + 1.0 / k as f64).sqrt());
    if !t.is_finite() {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, (k - 1) as f64).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

fn compare_metric(
    def: &MetricDef,
    bases: &[&Stat],
    cur: &Stat,
    threshold_pct: f64,
) -> MetricResult {
    let runs: Vec<f64> = bases.iter().map(|s| s.mean).collect();
    let base_mean = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let change = if base_mean != 0.0 {
        Some((cur.mean - base_mean) / base_mean.abs() * 100.0)
    } else {
        None
    };
    let (p, method, significant) = if runs.len() >= 3 {
        let p = between_runs_p(&runs, cur.mean);
        (p, "between_runs", p.is_some_and(|p| p < 0.05))
    } else if let Some(floor) = def.floor {
        (None, "floor", (cur.mean - base_mean).abs() > floor)
    } else {
        match welch_p(bases[0], cur) {
            Some(p) => (Some(p), "welch", p < 0.05),
            None => (None, "none", false),
        }
    };
    let beyond = change.map(|c| c.abs() > threshold_pct).unwrap_or(false)
        && !def.below_floor(base_mean, cur.mean);
    let worse = match def.direction {
        Direction::HigherIsBetter => cur.mean < base_mean,
        Direction::LowerIsBetter => cur.mean > base_mean,
    };
    let verdict = match (beyond && significant, worse) {
        (true, true) => Verdict::Regressed,
        (true, false) => Verdict::Improved,
        _ => Verdict::Unchanged,
    };
    MetricResult {
        metric: def.name.into(),
        direction: def.direction,
        base: Some(base_mean),
        current: Some(cur.mean),
        change_pct: change,
        p_value: p,
        method: method.into(),
        threshold_pct,
        verdict,
        confirmations: Vec::new(),
    }
}

/// Compares every cell of `cur` with the cells of the baseline run(s) that have the same model,
/// quant and measurement parameters. With three or more baseline runs, significance comes from
/// their spread; with one (or two: the first is used) from the repetition samples.
pub fn compare(bases: &[ReportView], cur: &ReportView, thr: &Thresholds) -> Comparison {
    let first = &bases[0];
    let lookup: Vec<BTreeMap<_, &CellView>> = bases
        .iter()
        .map(|b| b.cells.iter().map(|c| (c.key(), c)).collect())
        .collect();
    let cur_by: BTreeMap<_, &CellView> = cur.cells.iter().map(|c| (c.key(), c)).collect();
    let mut cells = Vec::new();
    for (key, c) in &cur_by {
        let matches: Vec<&CellView> = lookup.iter().filter_map(|m| m.get(key).copied()).collect();
        let Some(b) = matches.first().copied() else {
            cells.push(cell(
                c,
                Verdict::New,
                Some("not in the baseline".into()),
                Vec::new(),
            ));
            continue;
        };
        if !c.ok || matches.iter().all(|b| !b.ok) {
            let which = if c.ok { "the baseline" } else { "this run" };
            let why = if c.ok { &b.error } else { &c.error };
            cells.push(cell(
                c,
                Verdict::Missing,
                Some(format!(
                    "failed in {which}: {}",
                    why.as_deref().unwrap_or("?")
                )),
                Vec::new(),
            ));
            continue;
        }
        let ok_bases: Vec<&CellView> = matches.iter().copied().filter(|b| b.ok).collect();
        let b = ok_bases[0];
        let mut differs = Vec::new();
        if b.device != c.device {
            differs.push(format!("device {:?} vs {:?}", b.device, c.device));
        }
        if b.backend != c.backend {
            differs.push(format!("backend {} vs {}", b.backend, c.backend));
        }
        if b.threads != c.threads {
            differs.push(format!("{} vs {} CPU threads", b.threads, c.threads));
        }
        if first.build_profile != cur.build_profile
            && !first.build_profile.is_empty()
            && !cur.build_profile.is_empty()
        {
            differs.push(format!(
                "build {} vs {}",
                first.build_profile, cur.build_profile
            ));
        }
        if b.synthetic != c.synthetic {
            differs.push("synthetic vs real weights".into());
        } else if !b.sha256.is_empty() && !c.sha256.is_empty() && b.sha256 != c.sha256 {
            differs.push("a different model file (sha256)".into());
        }
        if ok_bases
            .iter()
            .any(|o| o.device != b.device || o.backend != b.backend || o.sha256 != b.sha256)
        {
            differs
                .push("the baseline runs differ among themselves (device, backend or file)".into());
        }
        if !differs.is_empty() {
            cells.push(cell(
                c,
                Verdict::NotComparable,
                Some(differs.join("; ")),
                Vec::new(),
            ));
            continue;
        }
        let metrics: Vec<MetricResult> = METRICS
            .iter()
            .filter_map(|def| {
                let bs: Vec<&Stat> = ok_bases
                    .iter()
                    .filter_map(|o| o.stats.get(def.name))
                    .collect();
                let cs = c.stats.get(def.name)?;
                let cpu = c.backend.eq_ignore_ascii_case("CPU");
                (!bs.is_empty()).then(|| compare_metric(def, &bs, cs, thr.get(def, cpu)))
            })
            .collect();
        let worst = metrics
            .iter()
            .map(|m| m.verdict)
            .min()
            .unwrap_or(Verdict::Unchanged);
        cells.push(cell(c, worst, None, metrics));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &lookup {
        for (key, b) in m {
            if !cur_by.contains_key(key) && seen.insert(key.clone()) {
                cells.push(cell(
                    b,
                    Verdict::Missing,
                    Some("not in this run".into()),
                    Vec::new(),
                ));
            }
        }
    }
    let mut out = Comparison {
        base: bases
            .iter()
            .map(|b| b.source.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        current: cur.source.clone(),
        base_run_id: bases
            .iter()
            .map(|b| b.run_id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        current_run_id: cur.run_id.clone(),
        base_runs: bases.len(),
        thresholds: thr.effective(false),
        cpu_thresholds: thr.effective(true),
        regressions: 0,
        improvements: 0,
        confirm_runs: 0,
        cells,
    };
    out.tally();
    out
}

fn cell(
    c: &CellView,
    verdict: Verdict,
    note: Option<String>,
    metrics: Vec<MetricResult>,
) -> CellResult {
    CellResult {
        model: c.model.clone(),
        quant: c.quant.clone(),
        params: c.params.clone(),
        label: c.label.clone(),
        verdict,
        note,
        metrics,
    }
}

/// The comparison as a Markdown document (for PR comments and issues).
pub fn markdown(cmp: &Comparison) -> String {
    let mut s = format!(
        "# quantbench compare\n\nbaseline `{}` ({}{}) → current `{}` ({})\n\n**{} regression{}, {} improvement{}**\n\n",
        cmp.base,
        cmp.base_run_id,
        if cmp.base_runs > 1 { format!(", {} runs", cmp.base_runs) } else { String::new() },
        cmp.current,
        cmp.current_run_id,
        cmp.regressions,
        if cmp.regressions == 1 { "" } else { "s" },
        cmp.improvements,
        if cmp.improvements == 1 { "" } else { "s" },
    );
    s += "| model | quant | cell | metric | baseline | current | change | p (test) | threshold | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for row in rows(cmp) {
        s += &format!("| {} |\n", row.join(" | "));
    }
    s += if cmp.base_runs >= 3 {
        "\nA regression needs a change beyond the threshold in the bad direction and p < 0.05 \
         against the spread of the baseline runs (a t prediction interval on the per-run means).\n"
    } else {
        "\nA regression needs a change beyond the threshold in the bad direction and, for metrics \
         with repetition samples, Welch's t-test p < 0.05; metrics measured once per cell need \
         an absolute change beyond a floor instead.\n"
    };
    let floor = |name: &str| metric(name).and_then(|m| m.min_change_ms).unwrap_or(0.0);
    s += &format!(
        "No change smaller than {} µs per generated token ({} µs per prompt token, {} ms of \
         TTFT) is a regression.",
        floor("decode_tok_s") * 1000.0,
        floor("pp_tok_s") * 1000.0,
        floor("ttft_ms")
    );
    if cmp.confirm_runs > 0 {
        s += &format!(
            " Each regressed cell was measured {} more time{}; a regression stands only when \
             every re-run regresses too (otherwise: unconfirmed).",
            cmp.confirm_runs,
            if cmp.confirm_runs == 1 { "" } else { "s" }
        );
    }
    s.push('\n');
    s
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.abs() >= 1e6 => format!("{:.1} MiB", x / 1048576.0),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}

/// A metric's verdict with its confirmation re-runs: `REGRESSED (confirmed: −31.2%, −29.8%)`.
fn verdict_text(m: &MetricResult) -> String {
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
                fmt_num(m.base),
                fmt_num(m.current),
                m.change_pct.map_or("–".into(), |v| format!("{v:+.1}%")),
                match m.p_value {
                    Some(p) => format!("{p:.3} ({})", m.method.replace('_', " ")),
                    None => m.method.replace('_', " "),
                },
                format!("{}%", m.threshold_pct),
                verdict_text(&m),
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(v: &[f64]) -> Stat {
        let n = v.len();
        let m = v.iter().sum::<f64>() / n as f64;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        Stat {
            mean: m,
            sd,
            n,
            samples: Some(v.to_vec()),
        }
    }

    #[test]
    fn welch_matches_a_known_value() {
        // Welch's own textbook example: t = −2.46, 25 degrees of freedom, p = 0.021
        let a = stat(&[
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ]);
        let b = stat(&[
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ]);
        let p = welch_p(&a, &b).unwrap();
        assert!((p - 0.0214).abs() < 0.0005, "{p}");
        // the same from summaries only (a CSV baseline)
        let a2 = Stat {
            samples: None,
            ..a.clone()
        };
        assert!((welch_p(&a2, &b).unwrap() - p).abs() < 1e-9);
        assert!(welch_p(&stat(&[1.0, 1.0]), &stat(&[1.0, 1.0])).unwrap() == 1.0);
        assert!(welch_p(
            &Stat {
                mean: 1.0,
                sd: 0.0,
                n: 1,
                samples: None
            },
            &b
        )
        .is_none());
    }

    fn view(decode: &[f64], load: f64) -> ReportView {
        let mut stats = BTreeMap::new();
        stats.insert("decode_tok_s".to_string(), stat(decode));
        stats.insert(
            "load_s".to_string(),
            Stat {
                mean: load,
                sd: 0.0,
                n: 1,
                samples: None,
            },
        );
        ReportView {
            source: "x".into(),
            run_id: "r".into(),
            build_profile: "release".into(),
            cells: vec![CellView {
                model: "m".into(),
                quant: "Q8_0".into(),
                params: "p".into(),
                label: "pp1 tg2".into(),
                threads: "2".into(),
                device: "CPU".into(),
                backend: "CPU".into(),
                sha256: "abc".into(),
                synthetic: true,
                ok: true,
                error: None,
                stats,
            }],
        }
    }

    #[test]
    fn verdicts() {
        let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
        let mut thr = Thresholds::default();
        thr.apply_cli(&["5".into(), "load_s=10".into()]).unwrap();
        let same = compare(
            std::slice::from_ref(&base),
            &view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.02),
            &thr,
        );
        assert_eq!(same.regressions, 0);
        assert_eq!(same.cells[0].verdict, Verdict::Unchanged);
        let slow = compare(
            std::slice::from_ref(&base),
            &view(&[80.0, 81.0, 79.0, 80.5, 79.5], 1.0),
            &thr,
        );
        assert_eq!(slow.regressions, 1);
        assert_eq!(slow.cells[0].verdict, Verdict::Regressed);
        // beyond the threshold but not significant: noise
        let noisy = compare(
            std::slice::from_ref(&base),
            &view(&[60.0, 140.0, 70.0, 130.0, 90.0], 1.0),
            &thr,
        );
        assert_eq!(noisy.regressions, 0);
        // significant but within the threshold: unchanged
        let small = compare(
            std::slice::from_ref(&base),
            &view(&[98.0, 98.1, 97.9, 98.0, 98.0], 1.0),
            &thr,
        );
        assert_eq!(small.regressions, 0);
        let fast = compare(
            std::slice::from_ref(&base),
            &view(&[120.0, 121.0, 119.0, 120.5, 119.5], 1.0),
            &thr,
        );
        assert_eq!(fast.improvements, 1);
        // single-value metric: threshold and floor
        let load = compare(
            std::slice::from_ref(&base),
            &view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.3),
            &thr,
        );
        assert_eq!(load.regressions, 1);
        let mut tiny_base = base.clone();
        tiny_base.cells[0].stats.get_mut("load_s").unwrap().mean = 0.010;
        let tiny = compare(
            std::slice::from_ref(&tiny_base),
            &view(&[100.0, 101.0, 99.0, 100.5, 99.5], 0.2),
            &thr,
        );
        assert_eq!(
            tiny.regressions, 0,
            "a 190 ms change is under the 250 ms floor"
        );
    }

    #[test]
    fn cells_that_cannot_be_compared() {
        let base = view(&[100.0, 101.0, 99.0], 1.0);
        let mut gpu = view(&[50.0, 51.0, 49.0], 1.0);
        gpu.cells[0].device = "NVIDIA H200".into();
        let c = compare(std::slice::from_ref(&base), &gpu, &Thresholds::default());
        assert_eq!(c.cells[0].verdict, Verdict::NotComparable);
        assert_eq!(c.regressions, 0);
        assert!(c.cells[0].note.as_deref().unwrap().contains("device"));
        let mut other = view(&[100.0, 101.0, 99.0], 1.0);
        other.cells[0].quant = "F16".into();
        let c = compare(std::slice::from_ref(&base), &other, &Thresholds::default());
        let verdicts: Vec<Verdict> = c.cells.iter().map(|c| c.verdict).collect();
        assert_eq!(verdicts, vec![Verdict::Missing, Verdict::New]);
    }

    #[test]
    fn several_baseline_runs_use_their_spread() {
        // five noisy baseline runs around 100: 93 is within their spread, 80 is not
        let runs: Vec<ReportView> = [100.0, 96.0, 104.0, 98.0, 102.0]
            .iter()
            .map(|m| view(&[m - 0.5, m + 0.5, *m], 1.0))
            .collect();
        let mut thr = Thresholds::default();
        thr.apply_cli(&["5".into()]).unwrap();
        let ok = compare(&runs, &view(&[92.5, 93.5, 93.0], 1.0), &thr);
        assert_eq!(ok.regressions, 0, "{:?}", ok.cells[0].metrics);
        assert_eq!(ok.base_runs, 5);
        let bad = compare(&runs, &view(&[79.5, 80.5, 80.0], 1.0), &thr);
        assert_eq!(bad.regressions, 1);
        assert_eq!(bad.cells[0].metrics[0].method, "between_runs");
        // the same 7% drop against one tight baseline run would be flagged
        let single = compare(
            std::slice::from_ref(&runs[0]),
            &view(&[92.5, 93.5, 93.0], 1.0),
            &thr,
        );
        assert_eq!(single.regressions, 1);
        let p = between_runs_p(&[1.0, 2.0, 3.0], 2.0).unwrap();
        assert!((p - 1.0).abs() < 1e-9);
        assert!(between_runs_p(&[1.0, 2.0], 2.0).is_none());
    }

    #[test]
    fn changes_of_a_few_microseconds_are_never_regressions() {
        // itl_ms_p50 on a 0.1 ms decode step: +8.8% (8.8 µs), tight samples, p < 0.001
        let mut thr = Thresholds::default();
        thr.apply_cli(&["5".into()]).unwrap();
        let def = metric("itl_ms_p50").unwrap();
        let base = stat(&[0.100, 0.1001, 0.0999, 0.1, 0.1]);
        let cur = stat(&[0.1088, 0.1089, 0.1087, 0.1088, 0.1088]);
        let r = compare_metric(def, &[&base], &cur, thr.get(def, true));
        assert!(r.p_value.unwrap() < 0.001, "{r:?}");
        assert_eq!(r.verdict, Verdict::Unchanged, "{r:?}");
        // the same +8.8% on a 1 ms step (88 µs) is one
        let base = stat(&[1.0, 1.001, 0.999, 1.0, 1.0]);
        let cur = stat(&[1.088, 1.089, 1.087, 1.088, 1.088]);
        assert_eq!(
            compare_metric(def, &[&base], &cur, 5.0).verdict,
            Verdict::Regressed
        );
        // rates: the floor is on the time per token (10000 → 9200 tok/s is 8.7 µs per token)
        let def = metric("decode_tok_s").unwrap();
        let base = stat(&[10000.0, 10010.0, 9990.0, 10000.0, 10000.0]);
        let cur = stat(&[9200.0, 9210.0, 9190.0, 9200.0, 9200.0]);
        assert_eq!(
            compare_metric(def, &[&base], &cur, 5.0).verdict,
            Verdict::Unchanged
        );
        let base = stat(&[100.0, 100.1, 99.9, 100.0, 100.0]);
        let cur = stat(&[92.0, 92.1, 91.9, 92.0, 92.0]);
        assert_eq!(
            compare_metric(def, &[&base], &cur, 5.0).verdict,
            Verdict::Regressed
        );
    }

    #[test]
    fn confirmation_keeps_only_regressions_every_rerun_repeats() {
        let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
        let mut thr = Thresholds::default();
        thr.apply_cli(&["5".into()]).unwrap();
        let slow = || view(&[80.0, 81.0, 79.0, 80.5, 79.5], 1.0);
        let fine = || view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.0);
        let b = std::slice::from_ref(&base);
        let mut cmp = compare(b, &slow(), &thr);
        assert_eq!(cmp.regressions, 1);
        assert_eq!(cmp.regressed_cells().len(), 1);
        // one re-run back at the baseline's speed: unconfirmed, no regression
        let reruns = [compare(b, &slow(), &thr), compare(b, &fine(), &thr)];
        confirm(&mut cmp, &reruns);
        assert_eq!(cmp.regressions, 0);
        assert_eq!(cmp.confirm_runs, 2);
        assert_eq!(cmp.cells[0].verdict, Verdict::Unconfirmed);
        let m = &cmp.cells[0].metrics[0];
        assert_eq!(m.confirmations.len(), 2);
        assert_eq!(m.confirmations[1].verdict, Verdict::Unchanged);
        assert!(
            markdown(&cmp).contains("unconfirmed (re-runs: "),
            "{}",
            markdown(&cmp)
        );
        // every re-run slow: confirmed
        let mut cmp = compare(b, &slow(), &thr);
        confirm(
            &mut cmp,
            &[compare(b, &slow(), &thr), compare(b, &slow(), &thr)],
        );
        assert_eq!(cmp.regressions, 1);
        assert!(markdown(&cmp).contains("confirmed by the re-runs"));
        // a re-run without the cell (it failed) refutes nothing: the regression stands
        let mut empty = slow();
        empty.cells.clear();
        let mut cmp = compare(b, &slow(), &thr);
        confirm(&mut cmp, &[compare(b, &empty, &thr)]);
        assert_eq!(cmp.regressions, 1);
        assert_eq!(
            cmp.cells[0].metrics[0].confirmations[0].verdict,
            Verdict::Missing
        );
        // no re-runs: nothing changes
        let mut cmp = compare(b, &slow(), &thr);
        confirm(&mut cmp, &[]);
        assert_eq!(cmp.regressions, 1);
    }

    #[test]
    fn non_finite_values_never_panic_and_are_refused() {
        let nan = Stat {
            mean: f64::NAN,
            sd: 1.0,
            n: 5,
            samples: None,
        };
        let ok = stat(&[1.0, 2.0, 3.0]);
        assert_eq!(welch_p(&nan, &ok), None);
        let huge = stat(&[1e308, 1e308, 1e308]);
        assert_eq!(welch_p(&huge, &ok), None);
        assert_eq!(between_runs_p(&[1.0, f64::INFINITY, 2.0], 1.0), None);
        let mut v = view(&[100.0, f64::NAN, 99.0], 1.0);
        let e = check_finite(&v).unwrap_err().to_string();
        assert!(
            e.contains("column decode_tok_s") && e.contains("repetition 2"),
            "{e}"
        );
        v.cells[0].stats.get_mut("decode_tok_s").unwrap().samples = Some(vec![1e308; 3]);
        let e = check_finite(&v).unwrap_err().to_string();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn cli_thresholds() {
        let mut t = Thresholds::default();
        t.apply_cli(&["3".into(), "ttft_ms=20".into()]).unwrap();
        assert_eq!(t.get(metric("decode_tok_s").unwrap(), false), 3.0);
        assert_eq!(t.get(metric("decode_tok_s").unwrap(), true), 3.0);
        assert_eq!(t.get(metric("ttft_ms").unwrap(), true), 20.0);
        // defaults differ by backend
        let d = Thresholds::default();
        assert_eq!(d.get(metric("decode_tok_s").unwrap(), false), 12.0);
        assert_eq!(d.get(metric("decode_tok_s").unwrap(), true), 25.0);
        assert!(t.apply_cli(&["decode=3".into()]).is_err());
        assert!(t.apply_cli(&["fast".into()]).is_err());
    }
}
