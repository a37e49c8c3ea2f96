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
    /// Default threshold, percent.
    pub threshold_pct: f64,
    /// For metrics measured once per cell: the smallest absolute change that counts.
    pub floor: Option<f64>,
}

/// Every metric compared, with its direction and default threshold.
pub const METRICS: &[MetricDef] = &[
    // Defaults from the run-to-run noise measured on an H200 (README, "How far to trust the
    // gate"): about the smallest thresholds that raised no false alarm in two sets of 10
    // back-to-back runs of the seed matrix, compared pairwise and against 5-run baselines.
    MetricDef {
        name: "decode_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 12.0,
        floor: None,
    },
    MetricDef {
        name: "itl_ms_p50",
        direction: Direction::LowerIsBetter,
        threshold_pct: 8.0,
        floor: None,
    },
    MetricDef {
        name: "tg_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 14.0,
        floor: None,
    },
    MetricDef {
        name: "pp_tok_s",
        direction: Direction::HigherIsBetter,
        threshold_pct: 35.0,
        floor: None,
    },
    MetricDef {
        name: "ttft_ms",
        direction: Direction::LowerIsBetter,
        threshold_pct: 60.0,
        floor: None,
    },
    // once per cell: floors in the metric's own unit
    MetricDef {
        name: "load_s",
        direction: Direction::LowerIsBetter,
        threshold_pct: 25.0,
        floor: Some(0.25),
    },
    MetricDef {
        name: "mem_bytes",
        direction: Direction::LowerIsBetter,
        threshold_pct: 2.0,
        floor: Some(16.0 * 1048576.0),
    },
    MetricDef {
        name: "energy_j_per_tok",
        direction: Direction::LowerIsBetter,
        threshold_pct: 10.0,
        floor: Some(0.02),
    },
];

/// Looks a metric up.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// Thresholds in percent by metric name (defaults overridden by models.toml and `--threshold`).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds(pub BTreeMap<String, f64>);

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds(
            METRICS
                .iter()
                .map(|m| (m.name.to_string(), m.threshold_pct))
                .collect(),
        )
    }
}

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
                    self.0.values_mut().for_each(|t| *t = v);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, m: &MetricDef) -> f64 {
        self.0.get(m.name).copied().unwrap_or(m.threshold_pct)
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
        Ok(from_report(&r, &path))
    } else {
        from_csv(&text, &path)
    }
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
                params: params_key(
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
                ),
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
    pub thresholds: BTreeMap<String, f64>,
    pub regressions: usize,
    pub improvements: usize,
    pub cells: Vec<CellResult>,
}

impl Comparison {
    pub fn has_regression(&self) -> bool {
        self.regressions > 0
    }
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
    if sd == 0.0 {
        return Some(if x == m { 1.0 } else { 0.0 });
    }
    let t = (x - m) / (sd * (1.0 + 1.0 / k as f64).sqrt());
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
    let beyond = change.map(|c| c.abs() > threshold_pct).unwrap_or(false);
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
                (!bs.is_empty()).then(|| compare_metric(def, &bs, cs, thr.get(def)))
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
    cells.sort_by(|a, b| a.verdict.cmp(&b.verdict).then(a.model.cmp(&b.model)));
    let count = |v: Verdict| {
        cells
            .iter()
            .flat_map(|c| &c.metrics)
            .filter(|m| m.verdict == v)
            .count()
    };
    Comparison {
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
        thresholds: thr.0.clone(),
        regressions: count(Verdict::Regressed),
        improvements: count(Verdict::Improved),
        cells,
    }
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
                m.verdict.name().into(),
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
    fn cli_thresholds() {
        let mut t = Thresholds::default();
        t.apply_cli(&["3".into(), "ttft_ms=20".into()]).unwrap();
        assert_eq!(t.get(metric("decode_tok_s").unwrap()), 3.0);
        assert_eq!(t.get(metric("ttft_ms").unwrap()), 20.0);
        assert!(t.apply_cli(&["decode=3".into()]).is_err());
        assert!(t.apply_cli(&["fast".into()]).is_err());
    }
}
