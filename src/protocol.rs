//! The coordinator ↔ worker protocol: [`Job`]s in on the worker's stdin, [`Event`]s out on its
//! stdout, one JSON object per line. Plain data; no I/O here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::gpu::GpuCellTelemetry;
use crate::plan::Cell;

/// One cell for a worker to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub cell: Cell,
    pub model_path: PathBuf,
    /// Evict the model file from the page cache before loading (`--cold`).
    pub cold: bool,
    /// Score the cell against its reference after the speed tests (`quality` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityJob>,
    /// A serving cell: the server to start (or the endpoint) and the workload to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeJob>,
}

/// What a serving cell sends its workload to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServeTarget {
    /// A llama-server quantbench starts for the cell on the job's model file.
    Managed {
        bin: PathBuf,
        /// Its `--version` line, and whether it is the build of the pinned sources.
        version: String,
        pinned: bool,
    },
    /// A server quantbench does not start: `base` is `http://host:port/v1`.
    Endpoint {
        base: String,
        /// Environment variable holding the API key (read by the worker; never in a report).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
        /// Model name for requests (`None`: the first one `/v1/models` lists).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
}

/// The serving part of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServeJob {
    pub target: ServeTarget,
    /// Per-request targets, for goodput and the saturation search.
    pub slo: crate::serving_stats::RequestSlo,
    /// Test hook: the port the first llama-server start tries (a taken one, for the retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_port: Option<u16>,
}

/// What a serving cell measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingMeasurement {
    /// `llama-server` (started for the cell) or the endpoint's URL.
    pub target: String,
    /// The server's `--version` line and whether it is the pinned build (managed servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pinned: Option<bool>,
    /// The llama-server command line that reproduces the cell's server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The workload in one line.
    pub workload: String,
    /// Context per slot the server was given (tokens).
    #[serde(default)]
    pub slot_ctx: u32,
    /// Seconds from starting the server to its first healthy answer (load included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_s: Option<f64>,
    /// The reported point: the only one, or for a search the highest rate that met the SLO
    /// (the lowest tried when none did).
    pub summary: crate::serving_stats::PointSummary,
    /// Every point measured (a search's probes in the order they ran).
    pub points: Vec<crate::serving_stats::PointSummary>,
    /// The highest rate found to meet the SLO (a search), requests per second; `Some(0.0)`
    /// when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate_req_s: Option<f64>,
    /// The server process' resident memory at the end and its peak (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_peak_bytes: Option<u64>,
    /// Device memory the server process holds after the workload (bytes, NVML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_vram_bytes: Option<u64>,
    /// What the user should know about how the cell was measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Energy of the GPUs over the measured requests, per completed request (joules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j_per_request: Option<f64>,
    /// TTFT and E2E of the reported point's complete requests at every percent 0–100 (ms):
    /// their distributions, for the CDF chart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ttft_cdf_ms: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub e2e_cdf_ms: Vec<f64>,
    /// Every measured request (moved to `requests.jsonl` by the run; not in results.json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<crate::serving_stats::RequestRecord>,
}

/// The quality test of a cell: the reference's file and the corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityJob {
    /// The reference's file (the cell's own when it is the reference), or why there is none.
    pub reference: Result<PathBuf, String>,
    /// The corpus file; `None`: sequences sampled from the reference with `seed`.
    pub corpus: Option<PathBuf>,
    pub seed: u64,
    pub n_ctx: u32,
    pub chunks: Option<u32>,
    /// Where sampled corpus tokens are kept (read when present, written when not), so every
    /// cell of a model scores the same sequences and samples them once.
    #[serde(default)]
    pub sample_cache: Option<PathBuf>,
}

/// What the quality test found: the statistics, or why there are none (the speed figures of
/// the cell stand either way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityOutcome {
    pub stats: Option<crate::quality::QualityStats>,
    pub error: Option<String>,
    /// Wall time of the test: loading the reference, reading or sampling the corpus, scoring.
    #[serde(default)]
    pub seconds: f64,
}

/// What the worker found when it initialised llama.cpp.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// llama.cpp's `llama_version()`.
    pub llama_version: String,
    /// ggml's version and build commit.
    pub ggml_version: String,
    pub ggml_commit: String,
    /// Devices registered by the loaded backend modules.
    pub devices: Vec<DeviceInfo>,
    /// Backend module files loaded, in load order.
    pub modules: Vec<String>,
    /// `llama_print_system_info()`: CPU features the CPU backend uses.
    pub system_info: String,
    /// Backend modules found but not usable here, and backends that registered no device,
    /// each with why and what to do (`libggml-vulkan.so: ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub module_notes: Vec<String>,
}

impl BackendInfo {
    /// The GPUs llama.cpp spreads a model over, in its order (`main_gpu` and `tensor_split`
    /// count in it): discrete GPUs other than RPC servers, one per device id; integrated GPUs
    /// only where there is no discrete one.
    pub fn llama_gpus(&self) -> Vec<&DeviceInfo> {
        let mut gpus: Vec<&DeviceInfo> = Vec::new();
        for d in self
            .devices
            .iter()
            .filter(|d| d.kind == "gpu" && d.backend != "RPC")
        {
            let dup = !d.device_id.is_empty() && gpus.iter().any(|g| g.device_id == d.device_id);
            if !dup {
                gpus.push(d);
            }
        }
        if gpus.is_empty() {
            gpus = self.devices.iter().filter(|d| d.kind == "igpu").collect();
        }
        gpus
    }
    /// The local GPUs a cell with `devices` may use, in its order: llama.cpp's own choice
    /// ([`Self::llama_gpus`]) for the default set, none for `["CPU"]`, else the devices named
    /// (matched without regard to case, as ggml does). A name of no device here, or of one
    /// that is not a local GPU, is an error that lists the devices present and says why a
    /// backend may be missing.
    pub fn cell_gpus(
        &self,
        devices: &crate::config::DeviceSet,
    ) -> Result<Vec<&DeviceInfo>, String> {
        if devices.is_default() {
            return Ok(self.llama_gpus());
        }
        if devices.is_cpu_only() {
            return Ok(Vec::new());
        }
        let present = || {
            self.devices
                .iter()
                .filter(|d| d.backend != "RPC")
                .map(|d| format!("{} ({})", d.name, d.description))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        for name in &devices.0 {
            let Some(d) = self
                .devices
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(name))
            else {
                return Err(format!(
                    "devices: no device {name:?} here; llama.cpp registered {}{}",
                    present(),
                    self.missing_backend_hint(name)
                ));
            };
            if d.backend == "RPC" || !(d.kind == "gpu" || d.kind == "igpu") {
                return Err(format!(
                    "devices: {} is a{} {} device, not a local GPU (devices names the GPUs to \
                     offload to; the CPU takes the rest, RPC servers come from `rpc`)",
                    d.name,
                    if d.kind == "accel" { "n" } else { "" },
                    if d.backend == "RPC" { "RPC" } else { &d.kind },
                ));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Why a backend whose devices are named `name` may have none here: its module's note, or
    /// that no module of it was loaded.
    fn missing_backend_hint(&self, name: &str) -> String {
        let backend: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_lowercase();
        if backend.is_empty() {
            return String::new();
        }
        let file = format!("libggml-{backend}");
        if let Some(n) = self.module_notes.iter().find(|n| n.starts_with(&file)) {
            return format!(". {n}");
        }
        if self.modules.iter().any(|m| m.contains(&format!("/{file}"))) {
            return String::new();
        }
        let how = match backend.as_str() {
            "vulkan" => {
                "build quantbench with `--features vulkan` (or use the release tarball, which \
                 ships it), or put the module next to the binary or in a --backend-dir folder"
            }
            "cuda" => {
                "build it with scripts/build-cuda-backend.sh or `--features cuda`, and put it \
                 next to the binary or in a --backend-dir folder"
            }
            _ => "put the module next to the binary or in a --backend-dir folder",
        };
        format!(". No {file}.so was loaded: {how}")
    }
}

/// A ggml backend device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// ggml device name, e.g. `CUDA0` or `CPU`.
    pub name: String,
    pub description: String,
    /// `cpu`, `gpu`, `igpu` or `accel`.
    pub kind: String,
    /// Backend (registry) name, e.g. `CUDA` or `CPU`.
    pub backend: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// PCI bus id for GPUs (empty where ggml does not report one).
    #[serde(default)]
    pub device_id: String,
    /// Whether the device's backend offers row-split buffers (`split_mode = "row"`).
    #[serde(default)]
    pub row_split: bool,
    /// The driver behind the device where its backend names one (Vulkan: the driver's name as
    /// llama.cpp logs it, e.g. `llvmpipe`, `radv`, `NVIDIA`); empty elsewhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
}

/// Architecture facts llama.cpp reports for a loaded model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `llama_model_desc`, e.g. `gpt2 0.1B F16`.
    pub desc: String,
    /// Parameters (llama-bench's `model_n_params`).
    pub n_params: u64,
    /// Bytes of all tensors (llama-bench's `model_size`).
    pub size_bytes: u64,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
}

/// One buffer type in llama.cpp's memory breakdown (`llama_get_memory_breakdown`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferMemory {
    /// Buffer type name, e.g. `CUDA0`, `CPU`, `CPU_Mapped`, `CUDA_Host`.
    pub name: String,
    /// Host memory (true) or device memory.
    pub host: bool,
    pub model_bytes: u64,
    pub context_bytes: u64,
    pub compute_bytes: u64,
}

/// What a cell placed on one llama.cpp RPC server, and what its load sent there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RpcUse {
    /// `host:port`.
    pub endpoint: String,
    /// The server's devices as this client sees them (`RPC0[host:port]`; the protocol carries
    /// no device names, only memory).
    pub devices: Vec<DeviceInfo>,
    /// Weights in the server's device buffers.
    pub weights_bytes: u64,
    /// KV cache and compute buffers on the server.
    pub context_bytes: u64,
    /// Bytes this worker sent to the server while loading the model (TCP, acknowledged).
    pub load_sent_bytes: u64,
    /// True when the load sent less than half of the weights placed on the server: the server
    /// took them from its cache (`rpc-server --cache-dir`) and only hashes travelled.
    pub weights_from_cache: bool,
}

/// Memory of a cell, from llama.cpp's accounting and the worker's own process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryMeasurement {
    pub buffers: Vec<BufferMemory>,
    /// Weights in device buffers.
    pub weights_gpu_bytes: u64,
    /// Weights in host buffers (mmapped or copied).
    pub weights_host_bytes: u64,
    /// KV cache (llama.cpp's "context" memory), all buffers.
    pub kv_bytes: u64,
    /// Compute (scratch) buffers, all buffers.
    pub compute_bytes: u64,
    /// Resident set size of the worker after loading and creating the context.
    pub host_rss_after_load_bytes: u64,
    /// Resident set size after warm-up.
    pub host_rss_after_warmup_bytes: u64,
    /// Peak resident set size of the worker (VmHWM) at the end of the cell.
    pub host_rss_peak_bytes: u64,
}

/// One timed repetition. Times in milliseconds, rates in tokens per second.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepSample {
    /// Time from submitting the tokenized prompt to the first generated token.
    pub ttft_ms: f64,
    /// Time of each generated token since the prompt was submitted (`token_ms[0]` = TTFT).
    pub token_ms: Vec<f64>,
    /// `(n_gen − 1) / (t_last − t_first)`.
    pub decode_tok_s: f64,
    /// Mean time per decode step spent in greedy sampling (argmax over the logits), µs.
    #[serde(default)]
    pub sample_us: f64,
    /// Prompt processing: `n_prompt` random tokens in `n_batch` chunks.
    pub pp_ms: f64,
    pub pp_tok_s: f64,
    /// Token generation: `n_gen` tokens one at a time, no sampling.
    pub tg_ms: f64,
    pub tg_tok_s: f64,
    /// The same pp and tg as llama.cpp's own performance counters saw them.
    pub pp_tok_s_llama: Option<f64>,
    pub tg_tok_s_llama: Option<f64>,
    /// All sequences' tokens of the tg test per second: llama-batched-bench's S_TG
    /// (`n_parallel × n_gen / t_tg`); `tg_tok_s` with one sequence. Absent in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_tok_s: Option<f64>,
    /// All prompts' tokens of the pp test per second: llama-batched-bench's S_PP (the one
    /// shared prompt's tokens with `shared_prompt`); `pp_tok_s` with one sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pp_throughput_tok_s: Option<f64>,
    /// `throughput_tok_s` as llama.cpp's performance counters saw the tg test (with several
    /// sequences each step is a batch, which llama.cpp counts as prompt evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_tok_s_llama: Option<f64>,
}

impl RepSample {
    /// The inter-token latencies of this repetition (ms): the time of each decode step, the
    /// differences of consecutive `token_ms`. Every ITL figure (report percentiles, the gate's
    /// per-repetition median, the distribution chart) is computed from these.
    pub fn inter_token_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_ms.windows(2).map(|w| w[1] - w[0])
    }
}

/// Everything a worker measured for one cell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Backend and device the model's layers ran on (`CPU` when none were offloaded).
    pub backend: String,
    pub device: String,
    /// ggml names of the GPUs holding the model's weights (`CUDA0`, `CUDA1`); empty when the
    /// weights are on the CPU. Energy, clocks and throttling are read over these GPUs.
    #[serde(default)]
    pub devices_used: Vec<String>,
    /// Model load wall time (shared by the cells of one worker that use the same load).
    pub load_s: f64,
    /// Whether the file was evicted from the page cache before this load.
    pub load_cold: bool,
    pub ctx_s: f64,
    pub n_ctx: u32,
    /// Tokens of the user-visible prompt.
    pub prompt_tokens: u32,
    pub model: ModelInfo,
    pub memory: MemoryMeasurement,
    pub gpu: GpuCellTelemetry,
    pub reps: Vec<RepSample>,
    /// Text generated in the last repetition.
    pub generated_text: String,
    /// The quality test, when the job asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityOutcome>,
    /// What the user should know about how the cell was measured (a context beyond the
    /// model's training length, host sampling with several sequences).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Per RPC server of the cell: its devices, what it holds, what the load sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<RpcUse>,
    /// A serving cell's results (a server under a workload instead of the timed loops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingMeasurement>,
    /// What else used the machine during the timed regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disturbance: Option<crate::disturbance::Disturbance>,
}

/// What a worker reports, one per line on stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// llama.cpp initialised; sent once before any cell.
    Ready { backend: BackendInfo },
    /// A cell was taken and its model is loading (if not loaded already).
    Started { cell: usize },
    /// Progress inside a cell (`phase` is `load`, `warmup` or `rep`).
    Progress {
        cell: usize,
        phase: String,
        done: u32,
        total: u32,
    },
    /// The cell was measured.
    Done {
        cell: usize,
        measurement: Box<Measurement>,
    },
    /// The speed tests are done and the quality test follows: what stands if the worker is
    /// stopped (`timeout_s`) before [`Event::Done`].
    Measured {
        cell: usize,
        measurement: Box<Measurement>,
    },
    /// The cell could not be measured; the worker goes on with the next.
    Failed { cell: usize, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, kind: &str, backend: &str, id: &str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            description: String::new(),
            kind: kind.into(),
            backend: backend.into(),
            memory_total_bytes: 0,
            memory_free_bytes: 0,
            device_id: id.into(),
            row_split: false,
            driver: String::new(),
        }
    }

    #[test]
    fn llama_gpus_follow_llama_cpp_device_selection() {
        let info = BackendInfo {
            devices: vec![
                dev("CPU", "cpu", "CPU", ""),
                dev("CUDA0", "gpu", "CUDA", "0000:1b:00.0"),
                dev("RPC0", "gpu", "RPC", ""),
                dev("Vulkan0", "gpu", "Vulkan", "0000:1b:00.0"),
                dev("CUDA1", "gpu", "CUDA", "0000:2c:00.0"),
                dev("iGPU", "igpu", "Vulkan", "0000:00:02.0"),
            ],
            ..Default::default()
        };
        let names: Vec<&str> = info.llama_gpus().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["CUDA0", "CUDA1"]);
        let cpu_only = BackendInfo {
            devices: vec![dev("CPU", "cpu", "CPU", "")],
            ..Default::default()
        };
        assert!(cpu_only.llama_gpus().is_empty());
    }

    #[test]
    fn cell_gpus_resolve_device_names() {
        use crate::config::DeviceSet;
        let set = |v: &[&str]| DeviceSet(v.iter().map(|s| s.to_string()).collect());
        let mut info = BackendInfo {
            devices: vec![
                dev("CPU", "cpu", "CPU", ""),
                dev("CUDA0", "gpu", "CUDA", "0000:1b:00.0"),
                dev("Vulkan0", "gpu", "Vulkan", "0000:1b:00.0"),
                dev("RPC0[h:1]", "gpu", "RPC", ""),
            ],
            modules: vec!["/b/libggml-cuda.so".into(), "/b/libggml-vulkan.so".into()],
            ..Default::default()
        };
        let names = |r: Result<Vec<&DeviceInfo>, String>| -> Vec<String> {
            r.unwrap().iter().map(|d| d.name.clone()).collect()
        };
        assert_eq!(names(info.cell_gpus(&set(&[]))), ["CUDA0"]);
        assert!(names(info.cell_gpus(&set(&["CPU"]))).is_empty());
        assert_eq!(names(info.cell_gpus(&set(&["vulkan0"]))), ["Vulkan0"]);
        assert_eq!(
            names(info.cell_gpus(&set(&["Vulkan0", "CUDA0"]))),
            ["Vulkan0", "CUDA0"]
        );
        let e = info.cell_gpus(&set(&["Vulkan1"])).unwrap_err();
        assert!(e.contains("no device \"Vulkan1\""), "{e}");
        assert!(e.contains("CPU (), CUDA0 (), Vulkan0 ()"), "{e}");
        assert!(!e.contains("RPC0"), "{e}");
        assert!(info.cell_gpus(&set(&["RPC0[h:1]"])).is_err());
        // the module is absent, or loaded without a device
        info.devices.truncate(2);
        info.modules.pop();
        let e = info.cell_gpus(&set(&["Vulkan0"])).unwrap_err();
        assert!(e.contains("No libggml-vulkan.so was loaded"), "{e}");
        assert!(e.contains("--features vulkan"), "{e}");
        info.module_notes = vec!["libggml-vulkan.so loaded but registered no device; x".into()];
        let e = info.cell_gpus(&set(&["Vulkan0"])).unwrap_err();
        assert!(e.contains("registered no device"), "{e}");
    }

    #[test]
    fn events_are_tagged_single_lines() {
        let e = Event::Failed {
            cell: 3,
            reason: "bad\nfile".into(),
        };
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains('\n'));
        assert!(s.starts_with("{\"event\":\"failed\""), "{s}");
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
    }
}
