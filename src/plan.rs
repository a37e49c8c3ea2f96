//! Matrix + overrides → the flat list of [`Cell`]s to measure, model-major.
//!
//! Pure: no I/O, no llama.cpp. A cell is one model × quant × (n_prompt, n_gen) combination with
//! every measurement parameter resolved.

use serde::{Deserialize, Serialize};

use crate::config::{
    DeviceSet, FlashAttn, GpuLayers, Matrix, ModelSpec, RpcServers, Sampling, SplitMode,
    TensorSplit,
};
use crate::quant::Quant;

/// Measurement parameters of one cell, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CellParams {
    pub prompt: String,
    pub n_prompt: u32,
    pub n_gen: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_gpu_layers: GpuLayers,
    pub flash_attn: FlashAttn,
    pub type_k: String,
    pub type_v: String,
    pub n_threads: u32,
    pub repetitions: u32,
    pub warmup: u32,
    pub timeout_s: u64,
    /// Where the generation test's greedy sampling runs.
    pub sampling: Sampling,
    /// Multi-GPU placement (llama.cpp's `split_mode`); reports from before it existed read as
    /// the default, `layer`.
    #[serde(default)]
    pub split_mode: SplitMode,
    /// The GPU of `split_mode = "none"` (0 in the other modes, where llama.cpp ignores it).
    #[serde(default)]
    pub main_gpu: u32,
    /// Shares per GPU (empty = by free memory; always empty for `none`).
    #[serde(default)]
    pub tensor_split: TensorSplit,
    /// llama.cpp RPC servers whose devices join the local ones (empty: local only).
    #[serde(default, skip_serializing_if = "RpcServers::is_local")]
    pub rpc: RpcServers,
    /// The local devices the cell may use (ggml names; empty = llama.cpp's own choice).
    #[serde(default, skip_serializing_if = "DeviceSet::is_default")]
    pub devices: DeviceSet,
    /// The quality test after the speed tests, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityParams>,
    /// Sequences decoded together (llama-batched-bench's B); 1 in reports before it existed.
    #[serde(default = "one")]
    pub n_parallel: u32,
    /// Tokens in the context before pp and tg are measured (llama-bench's `-d`).
    #[serde(default)]
    pub n_depth: u32,
    /// With `n_parallel` > 1: one prompt copied to every sequence (llama-batched-bench `-pps`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_prompt: bool,
    /// A serving cell: measured through a server under a workload (`n_parallel` is then the
    /// server's slots) instead of the in-process timed loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeParams>,
}

/// The workload of a serving cell and the load point it is measured at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServeParams {
    pub workload: crate::traffic::Workload,
    pub load: crate::traffic::Load,
    /// A search's targets, in short form (they decide its answer, so they are part of the
    /// cell's identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searched_slo: Option<String>,
}

impl ServeParams {
    /// `served r2/s`, `served c4`, `served max`.
    pub fn tag(&self) -> String {
        let load = match self.load {
            crate::traffic::Load::MaxRate => "max".to_string(),
            l => l.tag(),
        };
        format!("served {load}")
    }
}

fn one() -> u32 {
    1
}

/// The quality test of a cell: score it against `reference` on the corpus.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QualityParams {
    pub reference: Quant,
    /// The corpus file; `None`: sequences sampled from the reference (seed 0).
    pub corpus: Option<std::path::PathBuf>,
    pub n_ctx: u32,
    pub chunks: u32,
    /// The devices the reference runs on (`None`: the cell's own placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_devices: Option<DeviceSet>,
}

/// About 8k scored tokens: the default number of chunks (each scores `n_ctx - 1 - n_ctx/2`).
fn default_quality_chunks(n_ctx: u32) -> u32 {
    let per = (n_ctx - 1 - n_ctx / 2).max(1);
    8192u32.div_ceil(per).max(1)
}

/// The quality test of model `m`'s cells: on by default for real weights only.
fn quality_params(m: &ModelSpec, ov: &Overrides) -> Option<QualityParams> {
    let p = &m.params;
    let synthetic = matches!(m.source, crate::config::Source::Synthetic { .. });
    if !ov.quality.or(p.quality).unwrap_or(!synthetic) {
        return None;
    }
    Some(QualityParams {
        reference: p.quality_ref.or_else(|| Quant::most_precise(&p.quants))?,
        corpus: p.quality_corpus.clone(),
        n_ctx: p.quality_ctx,
        chunks: p
            .quality_chunks
            .unwrap_or_else(|| default_quality_chunks(p.quality_ctx)),
        ref_devices: p.quality_ref_devices.clone(),
    })
}

impl CellParams {
    /// The context a cell needs for a prompt of `prompt_tokens` (the longer of it and
    /// `n_prompt` is what each sequence holds): the depth once (a prefix the sequences share),
    /// then per sequence the prompt and `n_gen` tokens, or with `shared_prompt` the prompt
    /// once. `None` beyond llama.cpp's 32-bit context size.
    pub fn context_tokens(&self, prompt_tokens: u64) -> Option<u32> {
        if let Some(sp) = &self.serve {
            // a server's slots, each as long as the longest request (a dataset's are known
            // once it is tokenized: 2048 per slot for the estimates)
            let slot = sp
                .workload
                .max_tokens()
                .map_or(2048, |(p, o)| u64::from(p + o) + 16);
            let n = slot * u64::from(self.n_parallel.max(1));
            return u32::try_from(n).ok().filter(|&n| i32::try_from(n).is_ok());
        }
        let prompt = prompt_tokens.max(u64::from(self.n_prompt));
        let b = u64::from(self.n_parallel.max(1));
        let gen = u64::from(self.n_gen);
        let per_seq = if self.shared_prompt && b > 1 {
            prompt + b * gen
        } else {
            b * (prompt + gen)
        };
        let n = u64::from(self.n_depth) + per_seq;
        u32::try_from(n).ok().filter(|&n| i32::try_from(n).is_ok())
    }

    /// The context parameters that differ from the built-in defaults, in short form (`b 512
    /// ub 128 fa off kv q8_0/q8_0 ngl 20`), so that cells of a sweep over them read apart in
    /// tables; `None` when all are the defaults. Threads are left out (their default is the
    /// machine's core count; the `TEST` line shows them).
    pub fn context_tag(&self) -> Option<String> {
        let d = crate::config::Params::default();
        let mut parts = Vec::new();
        if !d.n_batch.contains(&self.n_batch) {
            parts.push(format!("b {}", self.n_batch));
        }
        if !d.n_ubatch.contains(&self.n_ubatch) {
            parts.push(format!("ub {}", self.n_ubatch));
        }
        if !d.flash_attn.contains(&self.flash_attn) {
            parts.push(format!("fa {}", self.flash_attn.name()));
        }
        if !d.type_k.contains(&self.type_k) || !d.type_v.contains(&self.type_v) {
            parts.push(format!("kv {}/{}", self.type_k, self.type_v));
        }
        if !d.n_gpu_layers.contains(&self.n_gpu_layers) {
            parts.push(format!("ngl {}", self.n_gpu_layers));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// Why llama.cpp would refuse (or abort on) this parameter set, said before it is asked:
    /// fewer batch slots than sequences (each step decodes one token of every sequence in one
    /// batch), and a quantized V cache without flash attention. `None` when neither applies.
    pub fn refusal(&self) -> Option<String> {
        if self.n_batch < self.n_parallel {
            return Some(format!(
                "n_batch = {} is below n_parallel = {}: each step decodes one token of every \
                 sequence in one batch; use n_batch >= {}",
                self.n_batch, self.n_parallel, self.n_parallel
            ));
        }
        let quantized = !matches!(self.type_v.as_str(), "f32" | "f16" | "bf16");
        if quantized && self.flash_attn == FlashAttn::Off {
            return Some(format!(
                "type_v = {:?} (a quantized V cache) needs flash attention, which flash_attn = \
                 \"off\" turns off: use flash_attn = \"on\" or \"auto\", or type_v = \"f16\"",
                self.type_v
            ));
        }
        None
    }

    /// What the cell measures beyond one sequence on an empty context, in short form:
    /// `np 16`, `np 16 pps`, `d 4096`; `None` for the plain case.
    pub fn load_tag(&self) -> Option<String> {
        join_tags(&[
            load_tag(self.n_parallel, self.n_depth, self.shared_prompt),
            self.serve.as_ref().map(ServeParams::tag),
        ])
    }

    /// The multi-GPU placement in short form, `None` for llama.cpp's default (`layer`, shares
    /// by free memory, every GPU): `sm none mg 1`, `sm row ts 3/1`, `dev Vulkan0`.
    pub fn placement_tag(&self) -> Option<String> {
        placement_tag(
            self.split_mode.name(),
            self.main_gpu,
            &self.tensor_split.to_string(),
            &self.rpc.0.join(","),
            &self.devices.0.join(","),
        )
    }
}

/// [`CellParams::load_tag`] from its parts as reports store them (CSV columns too; a shared
/// prompt counts only with several sequences).
pub fn load_tag(n_parallel: u32, n_depth: u32, shared_prompt: bool) -> Option<String> {
    let mut parts = Vec::new();
    if n_parallel > 1 {
        parts.push(format!("np {n_parallel}"));
        if shared_prompt {
            parts.push("pps".to_string());
        }
    }
    if n_depth != 0 {
        parts.push(format!("d {n_depth}"));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Tags joined by a space, `None` when there are none: the placement and load of a cell.
pub fn join_tags(tags: &[Option<String>]) -> Option<String> {
    let t: Vec<&str> = tags.iter().flatten().map(String::as_str).collect();
    (!t.is_empty()).then(|| t.join(" "))
}

/// [`CellParams::placement_tag`] from its parts as reports store them (CSV columns too).
pub fn placement_tag(
    split_mode: &str,
    main_gpu: u32,
    tensor_split: &str,
    rpc: &str,
    devices: &str,
) -> Option<String> {
    let devices = (!devices.is_empty() && devices != "auto").then(|| format!("dev {devices}"));
    join_tags(&[split_tag(split_mode, main_gpu, tensor_split, rpc), devices])
}

/// The split mode, main GPU, tensor split and RPC part of [`placement_tag`].
fn split_tag(split_mode: &str, main_gpu: u32, tensor_split: &str, rpc: &str) -> Option<String> {
    let default = SplitMode::default().name();
    let split_mode = if split_mode.is_empty() {
        default
    } else {
        split_mode
    };
    let ts = if tensor_split.is_empty() {
        "auto"
    } else {
        tensor_split
    };
    let rpc = if rpc.is_empty() || rpc == "local" {
        None
    } else {
        Some(format!("rpc {rpc}"))
    };
    if split_mode == default && main_gpu == 0 && ts == "auto" {
        return rpc;
    }
    let mut t = format!("sm {split_mode}");
    if main_gpu != 0 || split_mode == "none" {
        t.push_str(&format!(" mg {main_gpu}"));
    }
    if ts != "auto" {
        t.push_str(&format!(" ts {ts}"));
    }
    if let Some(r) = rpc {
        t.push_str(&format!(" {r}"));
    }
    Some(t)
}

/// One measurement: a model file at one quant with one parameter set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the plan, 0-based.
    pub index: usize,
    /// Index of the model in the matrix.
    pub model_index: usize,
    pub model: String,
    pub label: String,
    pub quant: Quant,
    pub params: CellParams,
}

impl Cell {
    /// Stable identity of the cell within a matrix, used by `--resume`.
    pub fn key(&self) -> String {
        format!(
            "{}:{}:pp{}:tg{}:ngl{}:fa{}:b{}:ub{}:k{}:v{}:t{}:s{}",
            self.model,
            self.quant,
            self.params.n_prompt,
            self.params.n_gen,
            self.params.n_gpu_layers,
            self.params.flash_attn.name(),
            self.params.n_batch,
            self.params.n_ubatch,
            self.params.type_k,
            self.params.type_v,
            self.params.n_threads,
            self.params.sampling.name(),
        ) + &self
            .params
            .placement_tag()
            .map(|t| format!(":{}", t.replace(' ', "")))
            .unwrap_or_default()
            + &self
                .params
                .load_tag()
                .map(|t| format!(":{}", t.replace(' ', "")))
                .unwrap_or_default()
            + &self
                .params
                .serve
                .as_ref()
                .map(|s| {
                    format!(":w{}", s.workload.digest())
                        + &s.searched_slo
                            .as_ref()
                            .map(|t| format!(":slo{}", t.replace(' ', "")))
                            .unwrap_or_default()
                })
                .unwrap_or_default()
    }
}

/// Command-line overrides applied to every cell.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub repetitions: Option<u32>,
    pub warmup: Option<u32>,
    pub n_gen: Option<Vec<u32>>,
    pub n_prompt: Option<Vec<u32>>,
    pub n_gpu_layers: Option<Vec<GpuLayers>>,
    pub n_threads: Option<Vec<u32>>,
    pub n_parallel: Option<Vec<u32>>,
    pub n_depth: Option<Vec<u32>>,
    pub split_mode: Option<Vec<SplitMode>>,
    pub main_gpu: Option<Vec<u32>>,
    pub tensor_split: Option<Vec<TensorSplit>>,
    pub rpc: Option<Vec<RpcServers>>,
    pub devices: Option<Vec<DeviceSet>>,
    /// `--serve` / `--no-serve`: measure every file model through llama-server, or in process.
    pub serve: Option<bool>,
    /// `--rate` / `--concurrency`: the load points of served cells.
    pub loads: Option<Vec<crate::traffic::Load>>,
    /// `--requests`: measured requests per load point.
    pub requests: Option<u32>,
    /// `--quality` / `--no-quality`.
    pub quality: Option<bool>,
    /// `NAME` or `NAME:QUANT` filters; empty = everything.
    pub only: Vec<String>,
}

/// An `--only` filter that matches nothing in the matrix.
#[derive(Debug, thiserror::Error)]
#[error("--only {filter:?} matches no cell; models in the matrix: {models}")]
pub struct FilterError {
    pub filter: String,
    pub models: String,
}

/// Default CPU thread count: every core the process may use.
pub fn default_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn selected(only: &[String], model: &ModelSpec, quant: Quant) -> bool {
    only.is_empty()
        || only.iter().any(|f| match f.split_once(':') {
            Some((name, q)) => name == model.name && Quant::parse(q) == Some(quant),
            None => f == &model.name,
        })
}

/// A placement: split mode, main GPU, tensor split, RPC servers, local devices.
type Place = (SplitMode, u32, TensorSplit, RpcServers, DeviceSet);

/// The multi-GPU placements of a model: split modes × main GPUs × tensor splits × RPC server
/// sets × device sets, where `main_gpu` only varies for `none` and `tensor_split` only for the split modes
/// (llama.cpp ignores the other), so no two cells measure the same placement.
fn placements(p: &crate::config::Params, ov: &Overrides) -> Vec<Place> {
    let modes = ov.split_mode.as_ref().unwrap_or(&p.split_mode);
    let gpus = ov.main_gpu.as_ref().unwrap_or(&p.main_gpu);
    let splits = ov.tensor_split.as_ref().unwrap_or(&p.tensor_split);
    let rpc = ov.rpc.as_ref().unwrap_or(&p.rpc);
    let devices = ov.devices.as_ref().unwrap_or(&p.devices);
    let mut out: Vec<(SplitMode, u32, TensorSplit)> = Vec::new();
    for &m in modes {
        for &g in gpus {
            for ts in splits {
                let g = if m.uses_main_gpu() { g } else { 0 };
                let ts = if m.uses_tensor_split() {
                    ts.clone()
                } else {
                    TensorSplit::default()
                };
                if !out.iter().any(|(a, b, c)| (*a, *b) == (m, g) && *c == ts) {
                    out.push((m, g, ts));
                }
            }
        }
    }
    out.into_iter()
        .flat_map(|(m, g, ts)| rpc.iter().map(move |r| (m, g, ts.clone(), r.clone())))
        .flat_map(|(m, g, ts, r)| {
            devices
                .iter()
                .map(move |d| (m, g, ts.clone(), r.clone(), d.clone()))
        })
        .collect()
}

/// The parameters every cell of a model shares (the swept ones are set by [`sweep`]).
fn fixed_params(m: &ModelSpec, ov: &Overrides) -> CellParams {
    let p = &m.params;
    CellParams {
        prompt: p.prompt.clone(),
        n_prompt: 0,
        n_gen: 0,
        n_batch: 0,
        n_ubatch: 0,
        n_gpu_layers: GpuLayers::All,
        flash_attn: FlashAttn::Auto,
        type_k: String::new(),
        type_v: String::new(),
        n_threads: 0,
        repetitions: ov.repetitions.unwrap_or(p.repetitions),
        warmup: ov.warmup.unwrap_or(p.warmup),
        timeout_s: p.timeout_s,
        sampling: p.sampling,
        split_mode: SplitMode::default(),
        main_gpu: 0,
        tensor_split: TensorSplit::default(),
        rpc: RpcServers::default(),
        devices: DeviceSet::default(),
        quality: quality_params(m, ov),
        n_parallel: 1,
        n_depth: 0,
        shared_prompt: p.shared_prompt,
        serve: None,
    }
}

/// The serving axis: each parameter set as in process and/or served at each load point. A
/// served cell keeps the server's parameters (batch sizes, context types, threads, slots =
/// `n_parallel`, placement) and leaves out what only the in-process loops use (prompt sizes,
/// repetitions, depth, the quality test), so sweeps over those give one served cell.
fn serve_axis(m: &ModelSpec, ov: &Overrides, slo: Option<&str>, c: &CellParams) -> Vec<CellParams> {
    let modes: &[bool] = match &ov.serve {
        Some(b) => std::slice::from_ref(b),
        None => &m.params.serve,
    };
    let endpoint = matches!(m.source, crate::config::Source::Endpoint { .. });
    let mut out = Vec::new();
    for &served in modes {
        if !served && !endpoint {
            out.push(c.clone());
            continue;
        }
        let Some(spec) = &m.serve else { continue };
        let mut workload = spec.workload.clone();
        if let Some(n) = ov.requests {
            workload.requests_per_point = n;
        }
        for &load in ov.loads.as_deref().unwrap_or(&spec.loads) {
            let mut s = c.clone();
            (s.prompt, s.n_prompt, s.n_gen, s.repetitions, s.warmup) = (String::new(), 0, 0, 0, 0);
            (s.n_depth, s.shared_prompt, s.quality) = (0, false, None);
            if endpoint {
                // nothing of the local machine applies to a server elsewhere
                (s.n_batch, s.n_ubatch, s.n_threads, s.n_parallel) = (0, 0, 0, 1);
                (s.type_k, s.type_v) = (String::new(), String::new());
                (s.n_gpu_layers, s.flash_attn) = (GpuLayers::All, FlashAttn::Auto);
                (s.split_mode, s.main_gpu) = (SplitMode::default(), 0);
                (s.tensor_split, s.rpc) = (TensorSplit::default(), RpcServers::default());
                s.devices = DeviceSet::default();
            }
            s.serve = Some(ServeParams {
                workload: workload.clone(),
                load,
                searched_slo: (load == crate::traffic::Load::MaxRate)
                    .then(|| slo.map(String::from))
                    .flatten(),
            });
            out.push(s);
        }
    }
    out
}

/// Every parameter set of a model: the product of its lists (command-line lists replacing the
/// file's), in the order sizes, context, load, placement; equal sets (an `n_ubatch` capped by
/// a smaller `n_batch`) once.
fn sweep(m: &ModelSpec, ov: &Overrides, slo: Option<&str>) -> Vec<CellParams> {
    let p = &m.params;
    let cores = [default_threads()];
    let threads: &[u32] = ov
        .n_threads
        .as_deref()
        .or(p.n_threads.as_deref())
        .unwrap_or(&cores);
    let mut out = vec![fixed_params(m, ov)];
    let mut axis = |f: &dyn Fn(&CellParams) -> Vec<CellParams>| {
        out = out.iter().flat_map(f).collect();
    };
    let with = |c: &CellParams, set: &dyn Fn(&mut CellParams)| {
        let mut c = c.clone();
        set(&mut c);
        c
    };
    let n_prompt = ov.n_prompt.as_ref().unwrap_or(&p.n_prompt);
    let n_gen = ov.n_gen.as_ref().unwrap_or(&p.n_gen);
    axis(&|c| {
        n_prompt
            .iter()
            .map(|&v| with(c, &|c| c.n_prompt = v))
            .collect()
    });
    axis(&|c| n_gen.iter().map(|&v| with(c, &|c| c.n_gen = v)).collect());
    axis(&|c| {
        p.n_batch
            .iter()
            .map(|&v| with(c, &|c| c.n_batch = v))
            .collect()
    });
    axis(&|c| {
        p.n_ubatch
            .iter()
            .map(|&v| with(c, &|c| c.n_ubatch = v.min(c.n_batch)))
            .collect()
    });
    let ngl = ov.n_gpu_layers.as_ref().unwrap_or(&p.n_gpu_layers);
    axis(&|c| {
        ngl.iter()
            .map(|&v| with(c, &|c| c.n_gpu_layers = v))
            .collect()
    });
    axis(&|c| {
        p.flash_attn
            .iter()
            .map(|&v| with(c, &|c| c.flash_attn = v))
            .collect()
    });
    axis(&|c| {
        p.type_k
            .iter()
            .map(|v| with(c, &|c| c.type_k = v.clone()))
            .collect()
    });
    axis(&|c| {
        p.type_v
            .iter()
            .map(|v| with(c, &|c| c.type_v = v.clone()))
            .collect()
    });
    axis(&|c| {
        threads
            .iter()
            .map(|&v| with(c, &|c| c.n_threads = v))
            .collect()
    });
    let n_parallel = ov.n_parallel.as_ref().unwrap_or(&p.n_parallel);
    let n_depth = ov.n_depth.as_ref().unwrap_or(&p.n_depth);
    axis(&|c| {
        n_parallel
            .iter()
            .map(|&v| with(c, &|c| c.n_parallel = v))
            .collect()
    });
    axis(&|c| {
        n_depth
            .iter()
            .map(|&v| with(c, &|c| c.n_depth = v))
            .collect()
    });
    let places = placements(p, ov);
    axis(&|c| {
        places
            .iter()
            .map(|(sm, mg, ts, rpc, dev)| {
                with(c, &|c| {
                    (c.split_mode, c.main_gpu) = (*sm, *mg);
                    (c.tensor_split, c.rpc) = (ts.clone(), rpc.clone());
                    c.devices = dev.clone();
                })
            })
            .collect()
    });
    axis(&|c| serve_axis(m, ov, slo, c));
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.clone()));
    out
}

/// The per-request targets in short form (`ttft500 p99`), part of a search's identity.
fn slo_tag(s: &crate::serving_stats::RequestSlo) -> Option<String> {
    use crate::traffic::fmt_num;
    let mut parts = Vec::new();
    for (name, v) in [
        ("ttft", s.max_ttft_ms),
        ("tpot", s.max_tpot_ms),
        ("e2e", s.max_e2e_ms),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}{}", fmt_num(v)));
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(format!("p{}", fmt_num(s.percentile())));
    if let Some(g) = s.min_goodput {
        parts.push(format!("good{}", fmt_num(g)));
    }
    Some(parts.join(" "))
}

/// Expands the matrix into cells, model-major (all cells of a model file are adjacent).
pub fn expand(matrix: &Matrix, ov: &Overrides) -> Result<Vec<Cell>, FilterError> {
    for f in &ov.only {
        let hit = matrix.models.iter().any(|m| {
            m.params
                .quants
                .iter()
                .any(|q| selected(std::slice::from_ref(f), m, *q))
        });
        if !hit {
            return Err(FilterError {
                filter: f.clone(),
                models: matrix
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let slo = slo_tag(&matrix.slo.requests());
    let mut cells = Vec::new();
    for (model_index, m) in matrix.models.iter().enumerate() {
        let p = &m.params;
        for &quant in &p.quants {
            if !selected(&ov.only, m, quant) {
                continue;
            }
            for params in sweep(m, ov, slo.as_deref()) {
                cells.push(Cell {
                    index: cells.len(),
                    model_index,
                    model: m.name.clone(),
                    label: m.label.clone(),
                    quant,
                    params,
                });
            }
        }
    }
    Ok(cells)
}

/// `--shard I/N`: the I-th (1-based) of N parts of a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with 1 ≤ I ≤ N ≤ 10000.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s:?}: write I/N, e.g. 2/4 (the second of four parts)");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || count > 10_000 || index == 0 || index > count {
            return Err(format!(
                "--shard {s:?}: I must be from 1 to N, N from 1 to 10000"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The cells of this shard, in plan order: the cells are dealt, the most expensive first
    /// (by `cost`, seconds; ties by plan order), each to the part with the least cost so far
    /// (ties to the lowest part). The same plan and costs give the same parts on every machine,
    /// and together the parts hold every cell exactly once.
    pub fn select(&self, cells: &[Cell], cost: &[f64]) -> Vec<Cell> {
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_by(|&a, &b| cost[b].total_cmp(&cost[a]).then(a.cmp(&b)));
        let mut load = vec![0.0f64; self.count as usize];
        let mut part = vec![0usize; cells.len()];
        for i in order {
            let p = (0..load.len())
                .min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y)))
                .expect("at least one part");
            load[p] += cost[i].max(0.0);
            part[i] = p;
        }
        cells
            .iter()
            .zip(part)
            .filter(|(_, p)| *p + 1 == self.index as usize)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn matrix() -> Matrix {
        config::parse(
            "schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n\
             [[model]]\nname = \"b\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\nn_gen = [128, 50]\n",
            Path::new("m.toml"),
        )
        .unwrap()
    }

    #[test]
    fn expands_model_major_with_indices() {
        let cells = expand(&matrix(), &Overrides::default()).unwrap();
        let names: Vec<String> = cells
            .iter()
            .map(|c| format!("{}:{}:{}", c.model, c.quant, c.params.n_gen))
            .collect();
        assert_eq!(
            names,
            [
                "a:F16:50",
                "a:Q8_0:50",
                "a:Q4_K_M:50",
                "b:F16:128",
                "b:F16:50"
            ]
        );
        assert!(cells.iter().enumerate().all(|(i, c)| c.index == i));
    }

    #[test]
    fn overrides_apply_to_every_cell() {
        let ov = Overrides {
            repetitions: Some(2),
            n_gen: Some(vec![8]),
            n_threads: Some(vec![3]),
            ..Default::default()
        };
        let cells = expand(&matrix(), &ov).unwrap();
        assert_eq!(cells.len(), 4);
        assert!(cells
            .iter()
            .all(|c| c.params.repetitions == 2 && c.params.n_gen == 8 && c.params.n_threads == 3));
    }

    #[test]
    fn only_filters_by_name_and_quant() {
        let ov = |f: &[&str]| Overrides {
            only: f.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(expand(&matrix(), &ov(&["a:q8_0"])).unwrap().len(), 1);
        assert_eq!(expand(&matrix(), &ov(&["b"])).unwrap().len(), 2);
        let e = expand(&matrix(), &ov(&["c"])).unwrap_err();
        assert!(e.to_string().contains("models in the matrix: a, b"), "{e}");
        assert!(expand(&matrix(), &ov(&["b:Q8_0"])).is_err());
    }

    #[test]
    fn placements_expand_without_duplicates() {
        let m = config::parse(
            "schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
             split_mode = [\"none\", \"layer\", \"row\"]\nmain_gpu = [0, 1]\n\
             tensor_split = [\"auto\", [3, 1]]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let cells = expand(&m, &Overrides::default()).unwrap();
        let tags: Vec<String> = cells
            .iter()
            .map(|c| c.params.placement_tag().unwrap_or_else(|| "default".into()))
            .collect();
        // main_gpu only varies for none, tensor_split only for the split modes
        assert_eq!(
            tags,
            [
                "sm none mg 0",
                "sm none mg 1",
                "default",
                "sm layer ts 3/1",
                "sm row",
                "sm row ts 3/1"
            ]
        );
        let keys: std::collections::HashSet<_> = cells.iter().map(Cell::key).collect();
        assert_eq!(keys.len(), cells.len());
        // the default placement keeps the keys of reports written before it existed
        let t = default_threads();
        assert_eq!(
            cells[2].key(),
            format!("a:F16:pp512:tg50:nglall:faauto:b2048:ub512:kf16:vf16:t{t}:sbackend")
        );
        assert!(cells[4].key().ends_with(":smrow"), "{}", cells[4].key());
        // command-line overrides replace the file's lists
        let ov = Overrides {
            split_mode: Some(vec![SplitMode::None]),
            main_gpu: Some(vec![1]),
            ..Default::default()
        };
        let cells = expand(&m, &ov).unwrap();
        assert_eq!(cells.len(), 1);
        assert_eq!(
            (cells[0].params.split_mode, cells[0].params.main_gpu),
            (SplitMode::None, 1)
        );
    }

    #[test]
    fn shards_hold_every_cell_once_balanced_by_cost() {
        let cells = expand(&matrix(), &Overrides::default()).unwrap();
        let cost = [10.0, 1.0, 1.0, 5.0, 4.0];
        let parts: Vec<Vec<usize>> = (1..=2)
            .map(|i| {
                Shard { index: i, count: 2 }
                    .select(&cells, &cost)
                    .iter()
                    .map(|c| c.index)
                    .collect()
            })
            .collect();
        // dealt 10, 5, 4, 1, 1 (ties to the lower part): [10 + 1], [5 + 4 + 1]
        assert_eq!(parts, [vec![0, 2], vec![1, 3, 4]]);
        // more parts than cells: some are empty, none twice
        let many: Vec<usize> = (1..=7)
            .flat_map(|i| Shard { index: i, count: 7 }.select(&cells, &cost))
            .map(|c| c.index)
            .collect();
        let mut sorted = many.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
        assert!(Shard::parse("0/3").is_err() && Shard::parse("4/3").is_err());
        assert!(Shard::parse("a/b").unwrap_err().contains("write I/N"));
        assert_eq!(Shard::parse(" 2/3 "), Ok(Shard { index: 2, count: 3 }));
    }

    #[test]
    fn keys_are_unique_per_cell() {
        let cells = expand(&matrix(), &Overrides::default()).unwrap();
        let keys: std::collections::HashSet<_> = cells.iter().map(Cell::key).collect();
        assert_eq!(keys.len(), cells.len());
    }
}

/// Test helpers of other modules: a cell's parameters at the built-in defaults.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    pub fn params() -> CellParams {
        CellParams {
            prompt: "p".into(),
            n_prompt: 512,
            n_gen: 50,
            n_batch: 2048,
            n_ubatch: 512,
            n_gpu_layers: GpuLayers::All,
            flash_attn: FlashAttn::Auto,
            type_k: "f16".into(),
            type_v: "f16".into(),
            n_threads: 2,
            repetitions: 5,
            warmup: 1,
            timeout_s: 1800,
            sampling: Sampling::Backend,
            split_mode: SplitMode::default(),
            main_gpu: 0,
            tensor_split: TensorSplit::default(),
            rpc: RpcServers::default(),
            quality: None,
            n_parallel: 1,
            n_depth: 0,
            shared_prompt: false,
            serve: None,
            devices: Default::default(),
        }
    }
}
