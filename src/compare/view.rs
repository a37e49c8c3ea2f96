//! Reading reports (JSON or CSV, one run or many) into the view a comparison needs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::statistics::moments;
use crate::results::{self, CellResult, CellStatus, Report};

/// One metric of one cell as a comparison needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
    /// Per-repetition values, when the report has them (JSON).
    pub samples: Option<Vec<f64>>,
    /// The standard error of `mean`, for a mean over a sample that the report gives with its
    /// uncertainty (the quality metrics: `kld_mean_err`, `top1_agree_err`); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se: Option<f64>,
}

/// Where a cell's quality figures come from, as the report names them: they compare only with
/// figures of the same reference on the same corpus.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualityView {
    /// `quality_ref`: the reference's quant, file and SHA-256.
    pub reference: String,
    /// `quality_corpus`: the corpus file and its SHA-256, or how it was sampled.
    pub corpus: String,
    /// `quality_error`: why the cell has no quality figures.
    pub error: Option<String>,
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
    /// The quality test's reference and corpus; `None` when the cell was not scored.
    pub quality: Option<QualityView>,
    /// Why the machine counted as busy while the cell was timed (`disturbance.disturbed`, or
    /// the CSV's `disturbed` column); `None`: quiet, or not measured.
    pub disturbed: Option<String>,
}

impl CellView {
    pub(super) fn key(&self) -> (String, String, String) {
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
    /// What reading it left out or chose (a value that is not a number, a cell given twice),
    /// naming the file, row and column: the command shows them.
    pub warnings: Vec<String>,
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

/// The comparison key of a cell's measurement parameters, as [`CellComparison::params`] holds it.
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
        crate::plan::join_tags(&[p.placement_tag(), p.load_tag()]),
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
    let text = crate::fsutil::read_input_text(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let looks_json = text.trim_start().starts_with('{');
    if looks_json || path.extension().is_some_and(|e| e == "json") {
        let r: Report = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a quantbench results.json (schema {})",
                path.display(),
                results::SCHEMA_VERSION
            )
        })?;
        if r.schema_version > results::SCHEMA_VERSION {
            bail!(
                "{} has schema_version {}, newer than this quantbench reads ({}); upgrade quantbench",
                path.display(),
                r.schema_version,
                results::SCHEMA_VERSION
            );
        }
        let mut view = from_report(&r, &path);
        check_finite(&view)?;
        warn_duplicates(&mut view, |i| format!("cell {}", i + 1));
        Ok(view)
    } else {
        let mut view = from_csv(&text, &path)?;
        check_finite(&view)?;
        warn_duplicates(&mut view, |i| format!("row {}", i + 2));
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
            let se = st.se.unwrap_or(0.0);
            for (what, v) in [
                ("the mean", st.mean),
                ("the standard deviation", st.sd),
                ("the standard error", se),
            ] {
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
    ReportView {
        source: path.display().to_string(),
        run_id: r.run_id.clone(),
        build_profile: r.quantbench.build_profile.clone(),
        cells: r.cells.iter().map(cell_view).collect(),
        warnings: Vec::new(),
    }
}

/// Warns of every cell that appears again later in the report (the later one counts in a
/// comparison), naming both rows: `what(i)` names the i-th cell (a CSV row, a JSON cell).
fn warn_duplicates(view: &mut ReportView, what: impl Fn(usize) -> String) {
    let mut first: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (i, c) in view.cells.iter().enumerate() {
        if let Some(j) = first.insert(c.key(), i) {
            view.warnings.push(format!(
                "{}: {} and {} are the same cell ({}:{} {}); the later one is used",
                view.source,
                what(j),
                what(i),
                c.model,
                c.quant,
                c.label
            ));
        }
    }
}

/// A report cell as a comparison sees it.
fn cell_view(c: &CellResult) -> CellView {
    let p = &c.params;
    CellView {
        model: c.model.clone(),
        quant: c.quant.to_string(),
        params: cell_params_key(p),
        label: cell_label(
            &p.n_prompt.to_string(),
            &p.n_gen.to_string(),
            crate::plan::join_tags(&[p.placement_tag(), p.load_tag()]),
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
        stats: cell_stats(c),
        quality: c.quality.as_ref().map(|q| QualityView {
            reference: q.quality_ref.clone(),
            corpus: q.quality_corpus.clone(),
            error: q.quality_error.clone(),
        }),
        disturbed: c.disturbance.as_ref().and_then(|d| d.disturbed.clone()),
    }
}

/// The gate's metrics of a report cell: rates and TTFT with their repetition samples, the
/// per-repetition median inter-token latency, the metrics measured once per cell, and the
/// quality metrics ([`quality_stats`]).
fn cell_stats(c: &CellResult) -> BTreeMap<String, Stat> {
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
                    se: None,
                },
            );
        }
    }
    // per-repetition median inter-token latency: the steady decode step
    let itl: Vec<f64> = c
        .samples
        .iter()
        .filter_map(|r| {
            let d: Vec<f64> = r.inter_token_ms().collect();
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
                se: None,
            },
        );
    }
    for (name, v) in [
        ("load_s", c.load_s),
        ("mem_bytes", c.mem_bytes.map(|b| b as f64)),
        ("energy_j_per_tok", c.energy_j_per_tok),
    ] {
        if let Some(x) = v {
            stats.insert(name.to_string(), Stat::single(x));
        }
    }
    stats.extend(quality_stats(c));
    stats
}

/// The quality metrics of a report cell with their standard errors; none without figures.
fn quality_stats(c: &CellResult) -> Vec<(String, Stat)> {
    let Some(q) = c.quality.as_ref().and_then(|q| q.stats.as_ref()) else {
        return Vec::new();
    };
    [
        ("kld_mean", q.kld_mean, q.kld_mean_err),
        ("top1_agree", q.top1_agree, q.top1_agree_err),
    ]
    .into_iter()
    .map(|(name, mean, se)| (name.to_string(), Stat::with_se(mean, Some(se))))
    .collect()
}

impl Stat {
    /// A metric measured once: no spread, no samples.
    fn single(mean: f64) -> Stat {
        Stat {
            mean,
            sd: 0.0,
            n: 1,
            samples: None,
            se: None,
        }
    }

    /// A mean over a sample, given with its standard error (`None`: the report has none).
    fn with_se(mean: f64, se: Option<f64>) -> Stat {
        Stat {
            se,
            ..Stat::single(mean)
        }
    }
}

/// One row of a results.csv, its values found by column name (absent columns read as empty).
/// Text neutralised for spreadsheets (a leading `'`) reads back as written.
struct CsvRow<'a> {
    header: &'a [String],
    rec: &'a csv::StringRecord,
    /// The row's number in the file (the header is row 1), for warnings.
    row: usize,
    warnings: &'a std::cell::RefCell<Vec<String>>,
    path: &'a Path,
}

impl CsvRow<'_> {
    fn get(&self, name: &str) -> String {
        self.header
            .iter()
            .position(|h| h == name)
            .and_then(|k| self.rec.get(k))
            .map(crate::redact::from_spreadsheet_safe)
            .unwrap_or("")
            .to_string()
    }

    /// A number column; a value that is not a number (a spreadsheet's `#N/A`, text pasted in)
    /// is left out with a warning naming the file, row and column.
    fn num(&self, name: &str) -> Option<f64> {
        let v = self.get(name);
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        let n = v.parse::<f64>().ok();
        if n.is_none() {
            self.warnings.borrow_mut().push(format!(
                "{}: row {}, column {name}: {:?} is not a number; left out of the comparison",
                self.path.display(),
                self.row,
                crate::redact::terminal(v)
            ));
        }
        n
    }

    /// The gate's metrics of the row: means with the sd and repetitions of the rates and TTFT,
    /// the metrics measured once per cell, the quality metrics with their standard errors.
    fn stats(&self) -> BTreeMap<String, Stat> {
        let reps = self.get("repetitions").parse::<usize>().unwrap_or(1);
        let mut stats = BTreeMap::new();
        for name in ["decode_tok_s", "tg_tok_s", "pp_tok_s", "ttft_ms"] {
            if let Some(mean) = self.num(name) {
                let sd = self.num(&format!("{name}_sd")).unwrap_or(0.0);
                stats.insert(
                    name.to_string(),
                    Stat {
                        mean,
                        sd,
                        n: reps,
                        samples: None,
                        se: None,
                    },
                );
            }
        }
        for name in ["load_s", "mem_bytes", "energy_j_per_tok"] {
            if let Some(mean) = self.num(name) {
                stats.insert(name.to_string(), Stat::single(mean));
            }
        }
        // quality columns (appended with the quality test; absent or empty without it)
        for name in ["kld_mean", "top1_agree"] {
            if let Some(mean) = self.num(name) {
                let se = self.num(&format!("{name}_err"));
                stats.insert(name.to_string(), Stat::with_se(mean, se));
            }
        }
        stats
    }

    /// The row as a comparison sees it (no repetition samples in a CSV).
    fn cell_view(&self) -> CellView {
        let get = |name: &str| self.get(name);
        // columns added with multi-GPU support: absent in older CSVs (= the default placement)
        let placement = crate::plan::placement_tag(
            &get("split_mode"),
            get("main_gpu").parse().unwrap_or(0),
            &get("tensor_split"),
            &get("rpc"),
            &get("devices"),
        );
        // and with load tests: absent = one sequence on an empty context
        let load = crate::plan::load_tag(
            get("n_parallel").parse().unwrap_or(1),
            get("n_depth").parse().unwrap_or(0),
            get("shared_prompt") == "true",
        );
        let placement = crate::plan::join_tags(&[placement, load]);
        CellView {
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
            stats: self.stats(),
            quality: self.quality(),
            disturbed: Some(get("disturbed")).filter(|d| !d.is_empty()),
        }
    }

    /// The quality columns' reference, corpus and error; `None` when the row has none.
    fn quality(&self) -> Option<QualityView> {
        let q = QualityView {
            reference: self.get("quality_ref"),
            corpus: self.get("quality_corpus"),
            error: Some(self.get("quality_error")).filter(|e| !e.is_empty()),
        };
        (q != QualityView::default()).then_some(q)
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
    for required in [
        "model",
        "quant",
        "status",
        "n_prompt",
        "n_gen",
        "decode_tok_s",
    ] {
        if !header.iter().any(|h| h == required) {
            bail!("{}: no `{required}` column", bad());
        }
    }
    let mut run_id = String::new();
    let mut build_profile = String::new();
    let mut cells = Vec::new();
    let warnings = std::cell::RefCell::new(Vec::new());
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let row = CsvRow {
            header: &header,
            rec: &rec,
            row: i + 2,
            warnings: &warnings,
            path,
        };
        run_id = row.get("run_id");
        build_profile = row.get("build_profile");
        cells.push(row.cell_view());
    }
    Ok(ReportView {
        source: path.display().to_string(),
        run_id,
        build_profile,
        cells,
        warnings: warnings.into_inner(),
    })
}
