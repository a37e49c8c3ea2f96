//! Will a cell fit, and how many copies of it? Estimates device (or host) memory of a model
//! from its file size and shape and the context parameters, the way llama.cpp allocates it:
//! weights + KV cache + compute buffers + a per-process runtime overhead. Pure; no I/O.

use serde::Serialize;

use crate::gguf::Meta;

/// Architecture numbers that drive memory use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
}

impl Shape {
    /// Reads the shape from GGUF metadata (`{arch}.block_count`, ..., the token list's length).
    pub fn from_metadata(meta: &[(String, Meta)]) -> Option<Shape> {
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let arch = match get("general.architecture")? {
            Meta::Str(s) => s.clone(),
            _ => return None,
        };
        let num = |k: &str| get(&format!("{arch}.{k}")).and_then(Meta::as_u64);
        let n_head = num("attention.head_count")?;
        Some(Shape {
            n_layer: num("block_count")?,
            n_embd: num("embedding_length")?,
            n_head,
            n_head_kv: num("attention.head_count_kv").unwrap_or(n_head),
            n_ff: num("feed_forward_length").unwrap_or(0),
            n_vocab: match get("tokenizer.ggml.tokens") {
                Some(Meta::Array { len }) => *len,
                _ => num("vocab_size")?,
            },
        })
    }
}

/// Bytes per element of a KV cache type (block types rounded to their average).
pub fn kv_type_bytes(t: &str) -> f64 {
    match t {
        "f32" => 4.0,
        "q8_0" => 34.0 / 32.0,
        "q4_0" => 18.0 / 32.0,
        "q4_1" => 20.0 / 32.0,
        "q5_0" => 22.0 / 32.0,
        "q5_1" => 24.0 / 32.0,
        _ => 2.0,
    }
}

/// Per-process memory the runtime takes before any model (CUDA context, cuBLAS workspace).
/// An assumption, not a measurement: the GPU report shows the real figure for a device.
pub const GPU_RUNTIME_OVERHEAD_BYTES: u64 = 512 << 20;

/// Estimated memory of one copy of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
    pub overhead_bytes: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.weights_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes
    }

    /// How many copies fit in `free` bytes (each copy a process of its own).
    pub fn copies_in(&self, free: u64) -> u64 {
        free / self.total().max(1)
    }

    /// Memory per GPU when the model is spread by `shares` (fractions summing to 1; a GPU
    /// with share 0 holds nothing): weights and KV cache by share, the compute buffers and
    /// the runtime overhead on every GPU used (each runs its layers with buffers of its own).
    pub fn per_gpu(&self, shares: &[f64]) -> Vec<u64> {
        shares
            .iter()
            .map(|&f| {
                if f <= 0.0 {
                    0
                } else {
                    ((self.weights_bytes + self.kv_bytes) as f64 * f) as u64
                        + self.compute_bytes
                        + self.overhead_bytes
                }
            })
            .collect()
    }
}

/// Each GPU's share of a model placed with `split_mode`, `main_gpu` and `tensor_split` on GPUs
/// with `free` bytes each, the way llama.cpp splits it: all on `main_gpu` for `none`, by
/// `tensor_split` when given, else in proportion to free memory.
pub fn shares(
    split_mode: crate::config::SplitMode,
    main_gpu: u32,
    tensor_split: &crate::config::TensorSplit,
    free: &[u64],
) -> Vec<f64> {
    // GPUs named by the placement but missing from `free` get their share too (and then do
    // not fit).
    let n = free
        .len()
        .max(tensor_split.0.len())
        .max(main_gpu as usize + 1);
    let mut out = vec![0.0; n];
    if split_mode == crate::config::SplitMode::None {
        if let Some(s) = out.get_mut(main_gpu as usize) {
            *s = 1.0;
        }
        return out;
    }
    if !tensor_split.is_auto() {
        for (o, f) in out.iter_mut().zip(tensor_split.fractions()) {
            *o = f;
        }
        return out;
    }
    let n = free.len().max(1);
    let sum: u64 = free.iter().sum();
    if sum == 0 {
        return vec![1.0 / n as f64; n];
    }
    free.iter().map(|f| *f as f64 / sum as f64).collect()
}

/// Estimates the memory of a model of `file_bytes` and `shape` at context `n_ctx`.
#[allow(clippy::too_many_arguments)]
pub fn estimate(
    file_bytes: u64,
    shape: &Shape,
    n_ctx: u64,
    n_ubatch: u64,
    type_k: &str,
    type_v: &str,
    gpu: bool,
) -> Estimate {
    let head_dim = shape.n_embd / shape.n_head.max(1);
    let kv_per_token_layer =
        (head_dim * shape.n_head_kv) as f64 * (kv_type_bytes(type_k) + kv_type_bytes(type_v));
    let kv = (kv_per_token_layer * (n_ctx * shape.n_layer) as f64) as u64;
    // The largest intermediate tensors of one ubatch: the logits, the FFN activation and the
    // attention scores (f32), as ggml's allocator reuses the rest.
    let ub = n_ubatch.min(n_ctx);
    let compute = 4 * ub * (shape.n_vocab + shape.n_ff + shape.n_head * n_ctx + 4 * shape.n_embd);
    Estimate {
        weights_bytes: file_bytes,
        kv_bytes: kv,
        compute_bytes: compute,
        overhead_bytes: if gpu { GPU_RUNTIME_OVERHEAD_BYTES } else { 0 },
    }
}

/// Rough speeds of a device for `quantbench list`'s estimate of a run's duration:
/// assumptions, not measurements. On the committed reports it comes out at 111 s for the
/// 18-cell H200 matrix (measured: 89 s, reports/h200-2026-11-29) and 185 s for the default
/// matrix on 2 CPU cores (measured: 185 s, reports/cpu-dev-2026-11-29). A run measures; this
/// only plans.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// Reading a model file (bytes/s).
    pub disk_bytes_s: f64,
    /// Memory bandwidth a decode step reaches (bytes/s): it reads the weights and the KV cache.
    pub mem_bytes_s: f64,
    /// Arithmetic prompt processing reaches (FLOP/s), at 2 FLOP per weight per token.
    pub flop_s: f64,
    /// The shortest time of one decode step per layer (kernel launches, synchronisation).
    pub layer_step_s: f64,
    /// Fixed time per cell: worker start, backend initialisation, context creation.
    pub cell_overhead_s: f64,
    /// Untimed generation after the timed ones for the energy reading (GPUs with NVML).
    pub energy_s: f64,
}

/// The untimed generation for the energy reading runs at least this long (the engine's
/// window), on GPUs with NVML.
pub const ENERGY_WINDOW_S: f64 = 2.0;

/// The file-reading rate of the estimate: 4 GB/s (a local NVMe disk, or the page cache that
/// serves every cell after the first of a file).
pub const DISK_BYTES_S: f64 = 4e9;

impl Rates {
    /// A GPU: 60% of its peak memory bandwidth (2 TB/s when NVML does not give it),
    /// 150 TFLOP/s, 80 µs per layer and step, 1 s per cell to start, plus `energy_s`.
    pub fn gpu(peak_bandwidth_bytes_s: Option<f64>, energy_s: f64) -> Rates {
        Rates {
            disk_bytes_s: DISK_BYTES_S,
            mem_bytes_s: peak_bandwidth_bytes_s.map_or(2e12, |b| 0.6 * b),
            flop_s: 150e12,
            layer_step_s: 80e-6,
            cell_overhead_s: 1.0,
            energy_s,
        }
    }

    /// The CPU with `threads` threads: 8 GB/s of memory bandwidth per thread up to 100 GB/s,
    /// 60 GFLOP/s per thread, 20 µs per layer and step, 0.3 s per cell to start.
    pub fn cpu(threads: u32) -> Rates {
        let t = f64::from(threads.max(1));
        Rates {
            disk_bytes_s: DISK_BYTES_S,
            mem_bytes_s: (8e9 * t).min(100e9),
            flop_s: 60e9 * t,
            layer_step_s: 20e-6,
            cell_overhead_s: 0.3,
            energy_s: 0.0,
        }
    }
}

impl Shape {
    /// Weights of the model, roughly: per layer the attention projections (Q and O of
    /// `n_embd`², K and V of `n_embd` × the KV width) and three FFN matrices (gated, as most
    /// current models; GPT-2 has two), plus the token embeddings.
    pub fn approx_params(&self) -> f64 {
        let e = self.n_embd as f64;
        let kv = (self.n_embd / self.n_head.max(1) * self.n_head_kv) as f64;
        let layer = 2.0 * e * e + 2.0 * e * kv + 3.0 * e * self.n_ff as f64;
        self.n_layer as f64 * layer + e * self.n_vocab as f64
    }
}

/// Estimated seconds of one cell with the model file of `file_bytes` and `shape` and its
/// memory estimate `e`, at `rates`: a fixed start, loading the file, the depth once, then the
/// passes of what a cell measures (`warmup` + `repetitions` of llama-bench's pp and tg, as
/// many of the user-visible generation, which decodes `n_gen` steps again), the energy
/// reading, and the quality test (the reference and the quant each scoring the corpus).
/// Prompt processing takes `tokens` × 2 × weights FLOPs (at least one step per ubatch); a
/// decode step of `n_parallel` sequences the longer of reading the weights and the KV cache,
/// and its FLOPs. A rough planning figure.
pub fn cell_seconds(
    p: &crate::plan::CellParams,
    file_bytes: u64,
    shape: &Shape,
    e: &Estimate,
    r: &Rates,
) -> f64 {
    let flop_per_token = 2.0 * shape.approx_params();
    let floor = shape.n_layer as f64 * r.layer_step_s;
    let ubatch = f64::from(p.n_ubatch.max(1));
    let pp =
        |tokens: f64| (tokens * flop_per_token / r.flop_s).max((tokens / ubatch).ceil() * floor);
    let b = f64::from(p.n_parallel.max(1));
    let step = ((file_bytes + e.kv_bytes) as f64 / r.mem_bytes_s)
        .max(b * flop_per_token / r.flop_s)
        .max(floor);
    let tg = f64::from(p.n_gen) * step;
    let prompts = if p.shared_prompt { 1.0 } else { b };
    let bench = pp(prompts * f64::from(p.n_prompt)) + tg;
    let user = pp(prompts * (p.prompt.len() as f64 / 4.0).max(1.0)) + tg;
    if let Some(sp) = &p.serve {
        // a request: its prompt, then its output one step at a time; the slots in parallel
        let (prompt, out) = sp.workload.max_tokens().unwrap_or((512, 128));
        let request = pp(f64::from(prompt)) + f64::from(out) * step;
        let n = f64::from(sp.workload.requests_per_point + sp.workload.warmup_requests);
        let work = match sp.load {
            crate::traffic::Load::Rate(rate) => (n / rate).max(n * request / b),
            crate::traffic::Load::Concurrency(u) => n * request / f64::from(u).min(b),
            // about ten probes, each at most the slots' pace
            crate::traffic::Load::MaxRate => 10.0 * n * request / b,
        };
        return r.cell_overhead_s + file_bytes as f64 / r.disk_bytes_s + work;
    }
    let reps = f64::from(p.repetitions);
    let quality = p.quality.as_ref().map_or(0.0, |q| {
        file_bytes as f64 / r.disk_bytes_s + 2.0 * pp(f64::from(q.chunks) * f64::from(q.n_ctx))
    });
    r.cell_overhead_s
        + file_bytes as f64 / r.disk_bytes_s
        + pp(f64::from(p.n_depth))
        + (f64::from(p.warmup) + reps) * bench
        + (f64::from(p.warmup.max(1)) + reps) * user
        + r.energy_s
        + quality
}

/// Parses a memory size (see [`crate::config::parse_size`]).
pub use crate::config::parse_size;

#[cfg(test)]
mod tests {
    use super::*;

    const GPT2: Shape = Shape {
        n_layer: 12,
        n_embd: 768,
        n_head: 12,
        n_head_kv: 12,
        n_ff: 3072,
        n_vocab: 50257,
    };

    #[test]
    fn kv_cache_matches_llama_cpp_arithmetic() {
        // 562 tokens × 12 layers × (768 + 768) × 2 bytes
        let e = estimate(0, &GPT2, 562, 512, "f16", "f16", false);
        assert_eq!(e.kv_bytes, 562 * 12 * 1536 * 2);
        let q8 = estimate(0, &GPT2, 562, 512, "q8_0", "q8_0", false);
        assert!(q8.kv_bytes < e.kv_bytes / 3 * 2);
        assert_eq!(e.overhead_bytes, 0);
    }

    #[test]
    fn copies_count_whole_processes() {
        let e = Estimate {
            weights_bytes: 10,
            kv_bytes: 5,
            compute_bytes: 3,
            overhead_bytes: 2,
        };
        assert_eq!(e.copies_in(100), 5);
        assert_eq!(e.copies_in(19), 0);
    }

    #[test]
    fn split_models_need_a_share_each_plus_buffers() {
        use crate::config::{SplitMode, TensorSplit};
        let e = Estimate {
            weights_bytes: 800,
            kv_bytes: 200,
            compute_bytes: 30,
            overhead_bytes: 50,
        };
        let free = [1000, 1000];
        let none = shares(SplitMode::None, 1, &TensorSplit::default(), &free);
        assert_eq!(none, [0.0, 1.0]);
        assert_eq!(e.per_gpu(&none), [0, 1080]);
        let auto = shares(SplitMode::Layer, 0, &TensorSplit::default(), &[3000, 1000]);
        assert_eq!(auto, [0.75, 0.25]);
        assert_eq!(e.per_gpu(&auto), [830, 330]);
        let ts = shares(SplitMode::Row, 0, &TensorSplit(vec![1.0, 3.0]), &free);
        assert_eq!(ts, [0.25, 0.75]);
        // GPUs the placement names beyond those present get their share (and do not fit)
        assert_eq!(
            shares(SplitMode::None, 2, &TensorSplit::default(), &free),
            [0.0, 0.0, 1.0]
        );
        assert_eq!(
            shares(SplitMode::Layer, 0, &TensorSplit(vec![1.0, 1.0]), &[1000]),
            [0.5, 0.5]
        );
    }

    #[test]
    fn durations_follow_the_work() {
        const LLAMA_7B: Shape = Shape {
            n_layer: 32,
            n_embd: 4096,
            n_head: 32,
            n_head_kv: 8,
            n_ff: 14336,
            n_vocab: 32000,
        };
        let n = LLAMA_7B.approx_params();
        assert!((7.0e9..7.3e9).contains(&n), "{n}");
        let mut p = crate::plan::CellParams {
            serve: None,
            prompt: "The future of artificial intelligence is".into(),
            n_prompt: 512,
            n_gen: 128,
            n_batch: 2048,
            n_ubatch: 512,
            n_gpu_layers: crate::config::GpuLayers::All,
            flash_attn: crate::config::FlashAttn::Auto,
            type_k: "f16".into(),
            type_v: "f16".into(),
            n_threads: 0,
            repetitions: 5,
            warmup: 1,
            timeout_s: 600,
            sampling: crate::config::Sampling::Host,
            split_mode: Default::default(),
            main_gpu: 0,
            tensor_split: Default::default(),
            rpc: Default::default(),
            devices: Default::default(),
            quality: None,
            n_parallel: 1,
            n_depth: 0,
            shared_prompt: false,
        };
        let file = 14_500_000_000;
        let h200 = Rates::gpu(Some(4.8e12), ENERGY_WINDOW_S);
        let secs = |p: &crate::plan::CellParams| {
            let e = estimate(file, &LLAMA_7B, 640, 512, "f16", "f16", true);
            cell_seconds(p, file, &LLAMA_7B, &e, &h200)
        };
        // the H200 decodes this cell at 216 tok/s (reports/h200-2026-11-28): 13 passes of
        // 128 tokens, about 7.7 s, plus loading, starting and the energy reading
        let one = secs(&p);
        assert!((8.0..20.0).contains(&one), "{one}");
        p.repetitions = 10;
        // five more passes of pp512 and twice tg128 (about 1.2 s each)
        let more = secs(&p) - one;
        assert!((5.0..8.0).contains(&more), "{more}");
        p.repetitions = 5;
        p.n_parallel = 64;
        assert!(secs(&p) > one, "64 prompts take longer to process");
        // the CPU is slower than the GPU
        let e = estimate(file, &LLAMA_7B, 640, 512, "f16", "f16", false);
        assert!(cell_seconds(&p, file, &LLAMA_7B, &e, &Rates::cpu(2)) > 100.0 * one);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("48GB").unwrap(), 48_000_000_000);
        assert_eq!(parse_size("48 GiB").unwrap(), 48 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 XB").is_err());
    }

    #[test]
    fn shape_from_metadata() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                Meta::Str("llama".into()),
            ),
            ("llama.block_count".to_string(), Meta::Int(32)),
            ("llama.embedding_length".to_string(), Meta::Int(4096)),
            ("llama.attention.head_count".to_string(), Meta::Int(32)),
            ("llama.attention.head_count_kv".to_string(), Meta::Int(8)),
            ("llama.feed_forward_length".to_string(), Meta::Int(14336)),
            (
                "tokenizer.ggml.tokens".to_string(),
                Meta::Array { len: 32000 },
            ),
        ];
        let s = Shape::from_metadata(&meta).unwrap();
        assert_eq!((s.n_layer, s.n_head_kv, s.n_vocab), (32, 8, 32000));
        assert!(Shape::from_metadata(&meta[1..]).is_none());
    }
}
