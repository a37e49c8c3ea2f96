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

/// Parses a memory size: `48GB`, `48GiB`, `48G` (GiB), `512MiB`, or bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: write a size like 48GB, 48GiB or 80000000000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        other => return Err(format!("{s:?}: unknown unit {other:?}")),
    };
    Ok((n * mult) as u64)
}

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
