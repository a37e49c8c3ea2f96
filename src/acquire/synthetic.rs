//! Synthetic GGUF models: real architectures and tokenizers, seeded random F16 weights.
//!
//! Speed and memory of inference do not depend on weight values, so a file with the real tensor
//! names, shapes, metadata and a tokenizer of the real kind and size measures like the real model
//! (quality does not: reports mark these weights as synthetic). Like the Python reference writer
//! the H200 anchor figures were measured on: every 2-D weight is a slice, at a random offset, of one pool
//! of normal(0, 1) × 0.02 values; norm weights are ones and biases zeros (F32). Never prints.

use std::io::{self, Write};

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64Mcg;

use crate::gguf::{self, TensorInfo, TensorType, Value};
use crate::presets::{Arch, Preset};

/// Bump when the bytes this module writes change: it is part of the cache key.
pub const WRITER_VERSION: u32 = 1;

impl Preset {
    /// Tensor descriptors, in file order, as llama.cpp's loaders expect them.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let (e, f, v, c) = (self.n_embd, self.n_ff, self.n_vocab, self.n_ctx);
        let e_kv = e / self.n_head * self.n_head_kv;
        let mut t = Vec::new();
        let mut add = |name: String, ne: Vec<u64>| {
            let ty = if ne.len() == 1 {
                TensorType::F32
            } else {
                TensorType::F16
            };
            t.push(TensorInfo { name, ne, ty });
        };
        // Shapes are ggml's ne order: ne[0] is the row length (the reverse of numpy's).
        match self.arch {
            Arch::Gpt2 => {
                add("token_embd.weight".into(), vec![e, v]);
                add("position_embd.weight".into(), vec![e, c]);
                add("output_norm.weight".into(), vec![e]);
                add("output_norm.bias".into(), vec![e]);
                // convert_hf_to_gguf.py writes GPT-2's tied head as a tensor of its own.
                add("output.weight".into(), vec![e, v]);
                for i in 0..self.n_layer {
                    let p = format!("blk.{i}.");
                    add(format!("{p}attn_norm.weight"), vec![e]);
                    add(format!("{p}attn_norm.bias"), vec![e]);
                    add(format!("{p}attn_qkv.weight"), vec![e, e + 2 * e_kv]);
                    add(format!("{p}attn_qkv.bias"), vec![e + 2 * e_kv]);
                    add(format!("{p}attn_output.weight"), vec![e, e]);
                    add(format!("{p}attn_output.bias"), vec![e]);
                    add(format!("{p}ffn_norm.weight"), vec![e]);
                    add(format!("{p}ffn_norm.bias"), vec![e]);
                    add(format!("{p}ffn_up.weight"), vec![e, f]);
                    add(format!("{p}ffn_up.bias"), vec![f]);
                    add(format!("{p}ffn_down.weight"), vec![f, e]);
                    add(format!("{p}ffn_down.bias"), vec![e]);
                }
            }
            Arch::Llama => {
                add("token_embd.weight".into(), vec![e, v]);
                add("output_norm.weight".into(), vec![e]);
                add("output.weight".into(), vec![e, v]);
                for i in 0..self.n_layer {
                    let p = format!("blk.{i}.");
                    add(format!("{p}attn_norm.weight"), vec![e]);
                    add(format!("{p}attn_q.weight"), vec![e, e]);
                    add(format!("{p}attn_k.weight"), vec![e, e_kv]);
                    add(format!("{p}attn_v.weight"), vec![e, e_kv]);
                    add(format!("{p}attn_output.weight"), vec![e, e]);
                    add(format!("{p}ffn_norm.weight"), vec![e]);
                    add(format!("{p}ffn_gate.weight"), vec![e, f]);
                    add(format!("{p}ffn_up.weight"), vec![e, f]);
                    add(format!("{p}ffn_down.weight"), vec![f, e]);
                }
            }
        }
        t
    }

    /// The numbers memory estimates need.
    pub fn shape(&self) -> crate::capacity::Shape {
        crate::capacity::Shape {
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            n_ff: self.n_ff,
            n_vocab: self.n_vocab,
        }
    }

    /// Number of parameters (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.tensors().iter().map(TensorInfo::n_elements).sum()
    }

    /// Size of the F16 file in bytes, approximately (tensor data without the header).
    pub fn f16_bytes(&self) -> u64 {
        self.tensors().iter().map(TensorInfo::n_bytes).sum()
    }

    fn metadata(&self, seed: u64) -> Vec<(String, Value)> {
        let a = self.arch_name();
        let mut kv: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::Str(a.into())),
            (
                "general.name".into(),
                Value::Str(format!("synthetic-{}", self.name)),
            ),
            (
                "general.description".into(),
                Value::Str(
                    "quantbench synthetic model: random weights, real architecture; \
                     valid for speed and memory measurements only"
                        .into(),
                ),
            ),
            // LLAMA_FTYPE_MOSTLY_F16
            ("general.file_type".into(), Value::U32(1)),
            ("quantbench.synthetic".into(), Value::Bool(true)),
            (
                "quantbench.synthetic.preset".into(),
                Value::Str(self.name.into()),
            ),
            (
                "quantbench.synthetic.seed".into(),
                Value::Str(seed.to_string()),
            ),
            (
                "quantbench.synthetic.writer_version".into(),
                Value::U32(WRITER_VERSION),
            ),
            (format!("{a}.context_length"), Value::U32(self.n_ctx as u32)),
            (
                format!("{a}.embedding_length"),
                Value::U32(self.n_embd as u32),
            ),
            (format!("{a}.block_count"), Value::U32(self.n_layer as u32)),
            (
                format!("{a}.feed_forward_length"),
                Value::U32(self.n_ff as u32),
            ),
            (
                format!("{a}.attention.head_count"),
                Value::U32(self.n_head as u32),
            ),
            (
                format!("{a}.attention.head_count_kv"),
                Value::U32(self.n_head_kv as u32),
            ),
        ];
        match self.arch {
            Arch::Gpt2 => {
                kv.push((
                    format!("{a}.attention.layer_norm_epsilon"),
                    Value::F32(1e-5),
                ));
                kv.extend(gpt2_tokenizer(self.n_vocab as usize));
            }
            Arch::Llama => {
                kv.push((format!("{a}.rope.freq_base"), Value::F32(10000.0)));
                kv.push((
                    format!("{a}.attention.layer_norm_rms_epsilon"),
                    Value::F32(1e-5),
                ));
                kv.push((
                    format!("{a}.rope.dimension_count"),
                    Value::U32((self.n_embd / self.n_head) as u32),
                ));
                kv.push((format!("{a}.vocab_size"), Value::U32(self.n_vocab as u32)));
                kv.extend(llama_tokenizer(self.n_vocab as usize));
            }
        }
        kv
    }

    /// Writes the whole F16 GGUF file for `seed` to `w`.
    pub fn write(&self, seed: u64, w: impl Write) -> io::Result<()> {
        let tensors = self.tensors();
        let data = gguf::write_header(w, &self.metadata(seed), &tensors)?;
        let mut pool = Pool::for_tensors(&tensors, seed);
        write_tensors(data, &tensors, &mut pool)
    }

    /// Writes the F16 model as `n` shards the way llama.cpp's `gguf-split` does: the tensors in
    /// `n` consecutive groups, all metadata in the first shard, and `split.no`,
    /// `split.count`, `split.tensors.count` in every shard. `open(i)` gives shard `i`'s writer.
    pub fn write_split<W: Write>(
        &self,
        seed: u64,
        n: u16,
        mut open: impl FnMut(u16) -> io::Result<W>,
    ) -> io::Result<()> {
        let tensors = self.tensors();
        let mut pool = Pool::for_tensors(&tensors, seed);
        let per = tensors.len().div_ceil(usize::from(n.max(1)));
        for (i, group) in tensors.chunks(per).enumerate() {
            let i = i as u16;
            let mut kv = if i == 0 {
                self.metadata(seed)
            } else {
                Vec::new()
            };
            kv.push(("split.no".into(), Value::U16(i)));
            kv.push(("split.count".into(), Value::U16(n)));
            kv.push((
                "split.tensors.count".into(),
                Value::I32(tensors.len() as i32),
            ));
            let data = gguf::write_header(open(i)?, &kv, group)?;
            write_tensors(data, group, &mut pool)?;
        }
        Ok(())
    }
}

/// Streams tensor data: 1-D tensors are norm weights (ones) or biases (zeros), 2-D ones slices of
/// the random pool.
fn write_tensors<W: Write>(
    mut data: gguf::DataWriter<W>,
    tensors: &[TensorInfo],
    pool: &mut Pool,
) -> io::Result<()> {
    let mut ones = Vec::new();
    for t in tensors {
        let n = t.n_elements() as usize;
        if t.ty == TensorType::F32 {
            let v: f32 = if t.name.ends_with(".weight") {
                1.0
            } else {
                0.0
            };
            ones.clear();
            ones.extend(std::iter::repeat_n(v.to_le_bytes(), n).flatten());
            data.tensor(&ones)?;
        } else {
            data.tensor(pool.take(n))?;
        }
    }
    data.finish()?.flush()
}

/// Random normal × 0.02 values as little-endian F16 bytes; tensors are slices at random offsets.
struct Pool {
    rng: Pcg64Mcg,
    bytes: Vec<u8>,
}

impl Pool {
    fn for_tensors(tensors: &[TensorInfo], seed: u64) -> Self {
        let largest = tensors
            .iter()
            .map(TensorInfo::n_elements)
            .max()
            .unwrap_or(0);
        Pool::new(largest, seed)
    }

    fn new(largest: u64, seed: u64) -> Self {
        let n = (largest as f64 * 1.25) as usize + 1024;
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let mut bytes = Vec::with_capacity(n * 2);
        for _ in 0..n {
            let x: f32 = StandardNormal.sample(&mut rng);
            bytes.extend_from_slice(&half::f16::from_f32(x * 0.02).to_le_bytes());
        }
        Pool { rng, bytes }
    }

    fn take(&mut self, n_elements: usize) -> &[u8] {
        let n_pool = self.bytes.len() / 2;
        let off = self.rng.random_range(0..=n_pool - n_elements);
        &self.bytes[off * 2..(off + n_elements) * 2]
    }
}

/// GPT-2's 256 byte-level characters, in GPT-2's order.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter()
        .map(|c| char::from_u32(c).expect("byte-level characters are valid"))
        .collect()
}

/// Byte-level BPE tokenizer of the real kind and size: the 256 byte characters, two-character
/// merge tokens with their merges, and `<|endoftext|>` (control) as the last id.
fn gpt2_tokenizer(n_vocab: usize) -> Vec<(String, Value)> {
    let chars = byte_chars();
    let n_merge = n_vocab - 256 - 1;
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let mut merges = Vec::with_capacity(n_merge);
    for i in 0..n_merge {
        let (a, b) = (chars[i / 256], chars[i % 256]);
        tokens.push(format!("{a}{b}"));
        merges.push(format!("{a} {b}"));
    }
    tokens.push("<|endoftext|>".into());
    // token types: 1 = normal, 3 = control
    let mut types = vec![1i32; n_vocab - 1];
    types.push(3);
    let eot = (n_vocab - 1) as u32;
    vec![
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(types)),
        ("tokenizer.ggml.merges".into(), Value::StrArray(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(eot)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eot)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ]
}

/// SentencePiece tokenizer of the real kind and size: `<unk>`, `<s>`, `</s>`, 256 byte tokens,
/// then "▁"-prefixed base-26 words with descending scores.
fn llama_tokenizer(n_vocab: usize) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    // token types: 1 normal, 2 unknown, 3 control, 6 byte
    let mut types = vec![2i32, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut i = 0usize;
    while tokens.len() < n_vocab {
        let mut s = Vec::new();
        let mut k = i as i64;
        loop {
            s.push(b'a' + (k % 26) as u8);
            k = k / 26 - 1;
            if k < 0 {
                break;
            }
        }
        s.reverse();
        tokens.push(format!("\u{2581}{}", String::from_utf8_lossy(&s)));
        types.push(1);
        i += 1;
    }
    let scores: Vec<f32> = (0..n_vocab)
        .map(|j| if j < 259 { 0.0 } else { -((j - 259) as f32) })
        .collect();
    vec![
        ("tokenizer.ggml.model".into(), Value::Str("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::Str("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        ("tokenizer.ggml.scores".into(), Value::F32Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::{preset, PRESETS};
    use std::collections::HashSet;

    #[test]
    fn parameter_counts_match_the_real_shapes() {
        // GPT-2 124M counts the tied head once; the file holds it twice (+38.6M).
        assert_eq!(preset("gpt2").unwrap().n_params(), 163_037_184);
        let m = preset("llama-7b").unwrap().n_params();
        assert_eq!(m, 7_241_732_096, "Mistral-7B has 7.24B parameters");
    }

    #[test]
    fn tokenizers_have_unique_tokens_of_the_requested_size() {
        for (kv, n) in [
            (gpt2_tokenizer(2048), 2048),
            (llama_tokenizer(32000), 32000),
        ] {
            let tokens = kv
                .iter()
                .find_map(|(k, v)| match (k.as_str(), v) {
                    ("tokenizer.ggml.tokens", Value::StrArray(t)) => Some(t.clone()),
                    _ => None,
                })
                .unwrap();
            assert_eq!(tokens.len(), n);
            assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), n);
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let p = preset("tiny").unwrap();
        let write = |seed| {
            let mut v = Vec::new();
            p.write(seed, &mut v).unwrap();
            v
        };
        let a = write(1);
        assert_eq!(a, write(1));
        assert_ne!(a, write(2));
        assert!(a.len() > 4_000_000 && a.len() < 8_000_000, "{}", a.len());
    }

    #[test]
    fn metadata_reads_back() {
        let p = preset("tiny-llama").unwrap();
        let mut v = Vec::new();
        p.write(0, &mut v).unwrap();
        let meta = gguf::read_metadata(&mut v.as_slice()).unwrap();
        let shape = crate::capacity::Shape::from_metadata(&meta).unwrap();
        assert_eq!(shape, p.shape());
    }

    #[test]
    fn k_quant_rows_are_multiples_of_256() {
        for p in PRESETS {
            for t in p.tensors().iter().filter(|t| t.ne.len() == 2) {
                assert_eq!(t.ne[0] % 256, 0, "{} {}", p.name, t.name);
            }
        }
    }
}
