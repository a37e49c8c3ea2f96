//! The one report schema: `results.json`, written by `run`, read by `compare` and `report`, and
//! how a cell's measurement becomes a [`CellResult`] (summaries and derived metrics).
//!
//! Fields are only ever added; `schema_version` changes when the meaning of one does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::acquire::Origin;
use crate::gpu::{GpuCellTelemetry, GpuEnvironment};
use crate::plan::{Cell, CellParams};
use crate::protocol::{BackendInfo, Measurement, MemoryMeasurement, ModelInfo, RepSample};
use crate::quant::Quant;
use crate::stats::{percentile, summarize, Summary};

/// Version of the report schema written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Cells are still being measured (a crash of quantbench itself leaves this).
    Running,
    /// Every planned cell ran (some may have failed).
    Complete,
    /// Stopped by Ctrl-C or a signal; the cells listed are valid.
    Interrupted,
}

/// quantbench's own identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    pub git_commit: String,
    /// `release` or `debug`.
    pub build_profile: String,
    /// The llama.cpp bindings crate the binary was built with.
    pub llama_cpp_sys_2: String,
    /// The llama.cpp build number of that crate's sources (the build of the oracle tools made
    /// from the same sources); 0 in reports from before it was recorded.
    #[serde(default)]
    pub llama_cpp_build: u32,
}

impl BuildInfo {
    pub fn current() -> Self {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("QB_GIT_COMMIT").into(),
            build_profile: env!("QB_BUILD_PROFILE").into(),
            llama_cpp_sys_2: "0.1.161".into(),
            llama_cpp_build: crate::serving::server::PINNED_BUILD,
        }
    }
}

/// The machine and software a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub os: String,
    pub kernel: String,
    pub hostname: String,
    pub cpu: String,
    pub cpu_cores: u32,
    pub host_memory_bytes: u64,
    /// llama.cpp version, loaded backend modules and devices, from the first worker.
    pub llama: BackendInfo,
    pub gpu: GpuEnvironment,
    /// What quantbench adapted to on this machine (e.g. a CPU backend variant excluded).
    pub notes: Vec<String>,
    /// llama.cpp's own tools built from the same sources (llama-bench, llama-perplexity,
    /// llama-batched-bench, llama-server: the oracles its figures are checked against), when
    /// this machine has them: their build and folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<String>,
}

/// `ok` or `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Ok,
    Failed,
}

/// One cell's result: identity, parameters, summaries and raw samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub index: usize,
    /// Identity of the cell within its matrix (`--resume` skips keys already measured).
    pub key: String,
    pub model: String,
    pub label: String,
    pub quant: Quant,
    pub status: CellStatus,
    /// Why the cell failed.
    pub error: Option<String>,
    /// Where the file came from (synthetic, path, hf, derived), its path, size and sha256.
    pub origin: Option<Origin>,
    pub params: CellParams,
    /// Context size used (prompt + generated tokens, as llama.cpp rounded it).
    pub n_ctx: Option<u32>,
    pub prompt_tokens: Option<u32>,
    /// Backend and device the weights ran on.
    pub backend: Option<String>,
    pub device: Option<String>,
    /// The machine that measured the cell: its hostname (`environment.hostname` of the run);
    /// empty in reports written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// GPUs holding the model's weights (ggml names, e.g. `CUDA0`, `CUDA1`); empty on the CPU.
    #[serde(default)]
    pub devices_used: Vec<String>,
    pub model_info: Option<ModelInfo>,
    /// Model load wall time (seconds); `load_cold` says whether the page cache was evicted first.
    pub load_s: Option<f64>,
    pub load_cold: Option<bool>,
    /// Context creation wall time (seconds).
    pub ctx_s: Option<f64>,
    /// Summaries of per-repetition samples by metric name (`ttft_ms`, `decode_tok_s`, ...).
    pub metrics: BTreeMap<String, Summary>,
    /// Inter-token latency percentiles over all decode steps of all repetitions (ms).
    pub itl_ms_p50: Option<f64>,
    pub itl_ms_p90: Option<f64>,
    pub itl_ms_p99: Option<f64>,
    /// Memory the efficiency figure is based on: device memory of the worker (`vram`) when
    /// available, else the worker's host resident set (`host_rss`).
    pub mem_basis: Option<String>,
    pub mem_bytes: Option<u64>,
    /// `decode_tok_s` (mean) per GB of `mem_bytes`.
    pub efficiency_tok_s_per_gb: Option<f64>,
    /// Device memory held by the worker after warm-up (NVML), and how it was measured.
    pub vram_bytes: Option<u64>,
    pub vram_source: Option<String>,
    pub energy_j_per_tok: Option<f64>,
    /// Bytes read per decoded token (device weights + KV) × `tg_tok_s` / peak bandwidth.
    pub bw_util: Option<f64>,
    /// The GPU reported power, thermal or slowdown throttling during timed regions.
    pub throttled: Option<bool>,
    pub memory: Option<MemoryMeasurement>,
    pub gpu: Option<GpuCellTelemetry>,
    pub samples: Vec<RepSample>,
    /// Text generated by the last repetition (synthetic weights generate noise).
    pub generated_text: Option<String>,
    /// Quality against the model's reference (`quality` on); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<CellQuality>,
    /// `[cost] usd_per_hour / (throughput_tok_s × 3600 / 1e6)`: dollars per million generated
    /// tokens at the cell's aggregate throughput; absent without a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_mtok: Option<f64>,
    /// How the cell was measured, where the user should know (see `Measurement::warnings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Per llama.cpp RPC server the cell used: its devices (memory), the weights and context
    /// buffers it held, the bytes the load sent, whether the weights came from its cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<crate::protocol::RpcUse>,
    /// A serving cell: the server, the workload and what its requests saw (per point; the
    /// requests themselves are in `requests.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::protocol::ServingMeasurement>,
    /// What else used the machine during the cell's timed regions, and whether that makes its
    /// speed figures untrustworthy (`disturbed`); absent in reports from before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disturbance: Option<crate::disturbance::Disturbance>,
}

/// A cell's quality against its model's reference, with llama-perplexity's definitions: the
/// statistics (absent when the test failed: `quality_error` says why), the reference and the
/// corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellQuality {
    #[serde(flatten)]
    pub stats: Option<crate::quality::QualityStats>,
    /// The reference: quant, file, SHA-256.
    pub quality_ref: String,
    /// The corpus: file and SHA-256, or `sampled from the reference, seed N`.
    pub quality_corpus: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_error: Option<String>,
    /// Seconds the test took in the worker: loading the reference, reading or sampling the
    /// corpus, scoring both models (absent in reports made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_s: Option<f64>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub run_id: String,
    pub status: RunStatus,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Wall time of the whole run, acquisition included (seconds).
    pub wall_s: Option<f64>,
    /// The command line that produced the report.
    pub command: Vec<String>,
    pub config: PathBuf,
    pub quantbench: BuildInfo,
    pub environment: Environment,
    /// True when any cell measured synthetic (random) weights: speed and memory only.
    pub synthetic_weights: bool,
    /// True when the run measured without the machine-wide lock (`--no-lock`): another run may
    /// have measured at the same time and disturbed these numbers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlocked: bool,
    /// The price and service objectives the cells are judged by (`[cost]`, `[slo]`,
    /// `--tokens-per-hour`); absent when none was given.
    #[serde(default, skip_serializing_if = "Serving::is_empty")]
    pub serving: Serving,
    /// `run --shard I/N`: which part of the matrix this run measured, and the keys of every
    /// cell of the whole matrix (so that `merge` can name the cells no part measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// `merge`: every folder joined, with its machine (`environment` above is the first
    /// folder's); absent in a report that was not merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedRun>,
    /// `quantbench tune`: its targets, its answer and every probe (the cells are below too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<crate::tune::Outcome>,
    pub cells: Vec<CellResult>,
}

/// A run folder that `merge` joined: where it was, which run and part, and its machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedRun {
    /// The folder (or results.json) as given to `merge`.
    pub folder: PathBuf,
    pub run_id: String,
    pub started_at: String,
    /// `I/N` for a part of a sharded matrix (`run --shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Cells the folder contributed.
    pub cells: usize,
    pub quantbench: BuildInfo,
    pub environment: Environment,
}

/// The part of a sharded matrix a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub count: u32,
    pub plan_keys: Vec<String>,
}

/// What a served load costs and must get: the machine's price, the SLO, the load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Serving {
    #[serde(default, flatten)]
    pub cost: crate::config::Cost,
    #[serde(default)]
    pub slo: crate::config::Slo,
    /// Generated tokens per hour the deployment must serve (`--tokens-per-hour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_hour: Option<f64>,
}

impl Serving {
    pub fn is_empty(&self) -> bool {
        *self == Serving::default()
    }

    /// Dollars per million generated tokens at `throughput_tok_s`.
    pub fn usd_per_mtok(&self, throughput_tok_s: f64) -> Option<f64> {
        let price = self.cost.usd_per_hour?;
        (throughput_tok_s > 0.0).then(|| price / (throughput_tok_s * 3600.0 / 1e6))
    }

    /// Whether a cell gives every sequence what the SLO asks: mean `decode_tok_s` at least
    /// `min_seq_tok_s`, mean `ttft_ms` at most `max_ttft_ms` (a missing figure fails).
    pub fn meets_slo(&self, c: &CellResult) -> bool {
        let s = &self.slo;
        c.status == CellStatus::Ok
            && s.min_seq_tok_s
                .is_none_or(|min| c.mean("decode_tok_s").is_some_and(|d| d >= min))
            && s.max_ttft_ms
                .is_none_or(|max| c.mean("ttft_ms").is_some_and(|t| t <= max))
    }

    /// How many copies of a cell (machines, or GPUs where one GPU runs it) serve
    /// `tokens_per_hour` at its aggregate throughput.
    pub fn copies_needed(&self, throughput_tok_s: f64) -> Option<u64> {
        let load = self.tokens_per_hour?;
        (throughput_tok_s > 0.0)
            .then(|| (load / (throughput_tok_s * 3600.0)).ceil().max(1.0) as u64)
    }
}

impl Report {
    /// Sets every cell's `usd_per_mtok` from the price.
    pub fn price_cells(&mut self) {
        let serving = self.serving;
        for c in &mut self.cells {
            c.usd_per_mtok = c
                .mean("throughput_tok_s")
                .and_then(|t| serving.usd_per_mtok(t));
        }
    }

    /// The cells meeting the SLO, cheapest per token first (highest throughput first without
    /// a price).
    pub fn serving_ranking(&self) -> Vec<&CellResult> {
        let mut ok: Vec<&CellResult> = self
            .cells
            .iter()
            .filter(|c| c.serving.is_none()) // served cells: the Served traffic section
            .filter(|c| self.serving.meets_slo(c) && c.mean("throughput_tok_s").is_some())
            .collect();
        ok.sort_by(|a, b| {
            let t = |c: &CellResult| c.mean("throughput_tok_s").unwrap_or(0.0);
            t(b).total_cmp(&t(a))
        });
        ok
    }
}

/// The names of rate metrics summarised per cell, in report order.
pub const RATE_METRICS: &[&str] = &[
    "ttft_ms",
    "decode_tok_s",
    "pp_tok_s",
    "tg_tok_s",
    "pp_tok_s_llama",
    "tg_tok_s_llama",
    "sample_us",
    "throughput_tok_s",
    "pp_throughput_tok_s",
    "throughput_tok_s_llama",
];

/// The per-repetition series of every rate metric ([`RATE_METRICS`]), by name.
fn rate_series(reps: &[RepSample]) -> [(&'static str, Vec<f64>); 10] {
    let m = reps;
    [
        ("ttft_ms", m.iter().map(|s| s.ttft_ms).collect()),
        ("decode_tok_s", m.iter().map(|s| s.decode_tok_s).collect()),
        ("pp_tok_s", m.iter().map(|s| s.pp_tok_s).collect()),
        ("tg_tok_s", m.iter().map(|s| s.tg_tok_s).collect()),
        (
            "pp_tok_s_llama",
            m.iter().filter_map(|s| s.pp_tok_s_llama).collect(),
        ),
        (
            "tg_tok_s_llama",
            m.iter().filter_map(|s| s.tg_tok_s_llama).collect(),
        ),
        ("sample_us", m.iter().map(|s| s.sample_us).collect()),
        (
            "throughput_tok_s",
            m.iter().filter_map(|s| s.throughput_tok_s).collect(),
        ),
        (
            "pp_throughput_tok_s",
            m.iter().filter_map(|s| s.pp_throughput_tok_s).collect(),
        ),
        (
            "throughput_tok_s_llama",
            m.iter().filter_map(|s| s.throughput_tok_s_llama).collect(),
        ),
    ]
}

impl CellResult {
    /// A cell that could not be measured.
    pub fn failed(cell: &Cell, origin: Option<Origin>, reason: String) -> Self {
        CellResult {
            serving: None,
            index: cell.index,
            key: cell.key(),
            model: cell.model.clone(),
            label: cell.label.clone(),
            quant: cell.quant,
            status: CellStatus::Failed,
            error: Some(reason),
            origin,
            params: cell.params.clone(),
            n_ctx: None,
            prompt_tokens: None,
            backend: None,
            device: None,
            host: String::new(),
            devices_used: Vec::new(),
            model_info: None,
            load_s: None,
            load_cold: None,
            ctx_s: None,
            metrics: BTreeMap::new(),
            itl_ms_p50: None,
            itl_ms_p90: None,
            itl_ms_p99: None,
            mem_basis: None,
            mem_bytes: None,
            efficiency_tok_s_per_gb: None,
            vram_bytes: None,
            vram_source: None,
            energy_j_per_tok: None,
            bw_util: None,
            throttled: None,
            memory: None,
            gpu: None,
            samples: Vec::new(),
            generated_text: None,
            quality: None,
            usd_per_mtok: None,
            warnings: Vec::new(),
            rpc: Vec::new(),
            disturbance: None,
        }
    }

    /// A measured cell: per-repetition rates summarised, derived metrics computed.
    pub fn measured(cell: &Cell, origin: Option<Origin>, mut m: Measurement) -> Self {
        if let Some(s) = m.serving.take() {
            return Self::served(cell, origin, m, s);
        }
        let mut r = CellResult::failed(cell, origin, String::new());
        r.status = CellStatus::Ok;
        r.error = None;
        for (name, v) in rate_series(&m.reps) {
            if let Some(s) = summarize(&v) {
                r.metrics.insert(name.to_string(), s);
            }
        }
        let itl: Vec<f64> = m.reps.iter().flat_map(RepSample::inter_token_ms).collect();
        r.itl_ms_p50 = percentile(&itl, 50.0);
        r.itl_ms_p90 = percentile(&itl, 90.0);
        r.itl_ms_p99 = percentile(&itl, 99.0);

        let g = &m.gpu;
        r.vram_bytes = g.vram_after_warmup_bytes;
        r.vram_source = g.vram_source.clone();
        (r.mem_basis, r.mem_bytes) = match r.vram_bytes {
            Some(v) if v > 0 => (Some("vram".into()), Some(v)),
            _ => (
                Some("host_rss".into()),
                Some(m.memory.host_rss_after_warmup_bytes),
            ),
        };
        let decode = r.metrics.get("decode_tok_s").map(|s| s.mean);
        r.efficiency_tok_s_per_gb = match (decode, r.mem_bytes) {
            (Some(d), Some(b)) if b > 0 => Some(d / (b as f64 / 1e9)),
            _ => None,
        };
        r.energy_j_per_tok = match (g.decode_energy_j, g.decode_tokens) {
            (Some(j), Some(n)) if n > 0 => Some(j / n as f64),
            _ => None,
        };
        let tg = r.metrics.get("tg_tok_s").map(|s| s.mean);
        let read_per_token = m.memory.weights_gpu_bytes + m.memory.kv_bytes;
        r.bw_util = match (g.peak_bandwidth_bytes_s, tg) {
            (Some(peak), Some(tg)) if peak > 0.0 && m.memory.weights_gpu_bytes > 0 => {
                Some(read_per_token as f64 * tg / peak)
            }
            _ => None,
        };
        r.throttled = g
            .unavailable_reason
            .is_none()
            .then_some(!g.throttle_reasons.is_empty());
        r.n_ctx = Some(m.n_ctx);
        r.prompt_tokens = Some(m.prompt_tokens);
        r.backend = Some(m.backend);
        r.device = Some(m.device);
        r.devices_used = m.devices_used;
        r.model_info = Some(m.model);
        r.load_s = Some(m.load_s);
        r.load_cold = Some(m.load_cold);
        r.ctx_s = Some(m.ctx_s);
        r.memory = Some(m.memory);
        r.gpu = Some(m.gpu);
        r.samples = m.reps;
        r.generated_text = Some(m.generated_text);
        r.warnings = m.warnings;
        r.rpc = m.rpc;
        r.disturbance = m.disturbance;
        if let (Some(q), Some(p)) = (m.quality, &cell.params.quality) {
            r.quality = Some(CellQuality {
                stats: q.stats,
                quality_ref: p.reference.to_string(),
                quality_corpus: match &p.corpus {
                    Some(f) => f.display().to_string(),
                    None => "sampled from the reference, seed 0".into(),
                },
                quality_error: q.error,
                quality_s: Some(q.seconds),
            });
        }
        r
    }

    /// A serving cell: the reported point's requests become the per-request samples of
    /// `ttft_ms`, `tpot_ms`, `e2e_ms` and `decode_tok_s` (`(tokens − 1) / (e2e − ttft)`: the
    /// in-process definition, per request), its aggregate output rate `throughput_tok_s`; the
    /// memory is the server's. The requests are not kept here (see `requests.jsonl`).
    fn served(
        cell: &Cell,
        origin: Option<Origin>,
        m: Measurement,
        mut s: crate::protocol::ServingMeasurement,
    ) -> Self {
        let mut r = CellResult::failed(cell, origin, String::new());
        r.status = CellStatus::Ok;
        r.error = None;
        // the reported point: a search's probe at the rate found, else the only point
        let probe = s
            .max_rate_req_s
            .and_then(|_| s.points.iter().position(|p| *p == s.summary))
            .map(|i| i as u32 + 1);
        let reqs: Vec<&crate::serving_stats::RequestRecord> = s
            .requests
            .iter()
            .filter(|q| q.ok() && probe.is_none_or(|p| q.probe == p))
            .collect();
        let series: [(&str, Vec<f64>); 4] = [
            ("ttft_ms", reqs.iter().filter_map(|q| q.ttft_ms).collect()),
            ("tpot_ms", reqs.iter().filter_map(|q| q.tpot_ms()).collect()),
            ("e2e_ms", reqs.iter().filter_map(|q| q.e2e_ms).collect()),
            (
                "decode_tok_s",
                reqs.iter()
                    .filter_map(|q| q.tpot_ms().filter(|t| *t > 0.0).map(|t| 1000.0 / t))
                    .collect(),
            ),
        ];
        for (name, v) in series {
            if let Some(sum) = summarize(&v) {
                r.metrics.insert(name.to_string(), sum);
            }
        }
        if let Some(t) = summarize(&[s.summary.output_tok_s]).filter(|_| s.summary.completed > 0) {
            r.metrics.insert("throughput_tok_s".into(), t);
        }
        let quantiles = |v: Vec<f64>| -> Vec<f64> {
            (0..=100)
                .filter_map(|q| percentile(&v, f64::from(q)))
                .map(|x| (x * 1000.0).round() / 1000.0)
                .collect()
        };
        s.ttft_cdf_ms = quantiles(reqs.iter().filter_map(|q| q.ttft_ms).collect());
        s.e2e_cdf_ms = quantiles(reqs.iter().filter_map(|q| q.e2e_ms).collect());
        let itl: Vec<f64> = reqs.iter().flat_map(|q| q.itl_ms.iter().copied()).collect();
        r.itl_ms_p50 = percentile(&itl, 50.0);
        r.itl_ms_p90 = percentile(&itl, 90.0);
        r.itl_ms_p99 = percentile(&itl, 99.0);
        r.vram_bytes = m.gpu.vram_after_warmup_bytes;
        r.vram_source = m.gpu.vram_source.clone();
        (r.mem_basis, r.mem_bytes) = match (r.vram_bytes, s.server_rss_peak_bytes) {
            (Some(v), _) if v > 0 => (Some("vram".into()), Some(v)),
            (_, Some(rss)) => (Some("host_rss".into()), Some(rss)),
            _ => (None, None),
        };
        let decode = r.metrics.get("decode_tok_s").map(|x| x.mean);
        r.efficiency_tok_s_per_gb = match (decode, r.mem_bytes) {
            (Some(d), Some(b)) if b > 0 => Some(d / (b as f64 / 1e9)),
            _ => None,
        };
        r.load_s = s.ready_s;
        r.n_ctx = Some(s.slot_ctx);
        r.backend = Some(m.backend);
        r.device = Some(m.device);
        r.devices_used = m.devices_used;
        r.gpu = Some(m.gpu);
        r.warnings = m.warnings;
        s.requests.clear();
        r.serving = Some(s);
        r
    }

    /// Device memory per GPU after warm-up, in llama.cpp's GPU order (empty without NVML).
    pub fn vram_per_gpu(&self) -> Vec<Option<u64>> {
        self.gpu
            .as_ref()
            .map(|g| g.per_device.iter().map(|d| d.after_warmup_bytes).collect())
            .unwrap_or_default()
    }

    /// The largest per-GPU share of `vram_bytes`: what decides whether a split fits.
    pub fn vram_max_gpu_bytes(&self) -> Option<u64> {
        self.vram_per_gpu().into_iter().flatten().max()
    }

    /// Short cell name for tables and charts: `model quant`, then `pp tg` where several
    /// shapes were measured, then the placement where it is not llama.cpp's default and the
    /// load (`np 16`, `d 4096`) where it is not one sequence on an empty context.
    pub fn placement_suffix(&self) -> String {
        crate::plan::join_tags(&[
            self.params.context_tag(),
            self.params.placement_tag(),
            self.params.load_tag(),
        ])
        .map(|t| format!(" [{t}]"))
        .unwrap_or_default()
    }

    /// Mean of a summarised metric.
    pub fn mean(&self, metric: &str) -> Option<f64> {
        self.metrics.get(metric).map(|s| s.mean)
    }
}

/// Reads a `results.json`.
pub fn read_json(path: &Path) -> Result<Report> {
    let text = crate::fsutil::read_input_text(path)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a quantbench report", path.display()))
}

/// Figures derived from a report that several report formats show.
impl Report {
    /// The device a run measured on, for titles: the first cell's device, else the CPU; the
    /// devices of all cells, joined, where the cells come from several machines.
    pub fn device_description(&self) -> String {
        if self.several_hosts() {
            let mut devices: Vec<String> = Vec::new();
            for d in self.cells.iter().filter_map(|c| c.device.clone()) {
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
            if !devices.is_empty() {
                return devices.join(", ");
            }
        }
        self.cells
            .iter()
            .find_map(|c| c.device.clone())
            .unwrap_or_else(|| self.environment.cpu.clone())
    }

    /// The machines that measured the cells, in report order, each once (cells without a host
    /// are left out): more than one in a report merged across machines.
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !c.host.is_empty() && !hosts.contains(&c.host.as_str()) {
                hosts.push(&c.host);
            }
        }
        hosts
    }

    /// The hosts with how many cells each measured: `gpu-a (1 cell), gpu-b (3 cells)`.
    pub fn hosts_with_counts(&self) -> String {
        self.hosts()
            .iter()
            .map(|h| {
                let n = self.cells.iter().filter(|c| c.host == *h).count();
                format!("{h} ({n} cell{})", if n == 1 { "" } else { "s" })
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the cells come from more than one machine (the tables then name each cell's).
    pub fn several_hosts(&self) -> bool {
        self.hosts().len() > 1
    }

    /// The cells that failed, in report order.
    pub fn failed_cells(&self) -> Vec<&CellResult> {
        self.cells
            .iter()
            .filter(|c| c.status == CellStatus::Failed)
            .collect()
    }
}

/// Names derived from a cell that several report formats show.
impl CellResult {
    /// The model with its placement where that is not llama.cpp's default: `tiny [sm none mg 1]`.
    pub fn model_and_placement(&self) -> String {
        format!("{}{}", self.model, self.placement_suffix())
    }

    /// The GPUs holding the weights, joined: `CUDA0 + CUDA1`; `None` on the CPU.
    pub fn weight_devices(&self) -> Option<String> {
        (!self.devices_used.is_empty()).then(|| self.devices_used.join(" + "))
    }
}
