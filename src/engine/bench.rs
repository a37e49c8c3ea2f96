//! Loading a model and measuring one cell: the user-visible generation test (TTFT, decode
//! speed with greedy sampling, inter-token latency), llama-bench's pp and tg tests, llama.cpp's
//! own performance counters of the same context, and memory.
//!
//! The timed regions hold nothing but llama.cpp calls, an argmax and a timestamp per token:
//! buffers are allocated before the clock starts, random tokens are drawn before it, text is
//! detokenized after it, and telemetry hooks run outside it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use llama_cpp_sys_2 as sys;
use rand::{RngExt, SeedableRng};

use super::memory::{breakdown, host_rss};
use super::Engine;
use crate::config::{
    DeviceSet, FlashAttn, GpuLayers, RpcServers, Sampling, SplitMode, TensorSplit, MAX_DEVICES,
};
use crate::plan::{Cell, CellParams};
use crate::protocol::{Measurement, MemoryMeasurement, ModelInfo, RepSample};

/// Shortest generation window energy is measured over, seconds.
pub const ENERGY_WINDOW_S: f64 = 2.0;

/// Hooks the worker uses to take GPU readings around timed regions (never inside them).
pub trait Probe {
    /// After the model is loaded and the context created; `devices_used` names the GPUs
    /// holding its weights.
    fn after_load(&mut self, _devices_used: &[String]) {}
    /// After the warm-up repetitions.
    fn after_warmup(&mut self) {}
    /// Whether to run the energy measurement (GPU with an energy counter).
    fn wants_energy(&self) -> bool {
        false
    }
    /// Before the generation rounds of the energy measurement.
    fn energy_begin(&mut self) {}
    /// After them: `tokens` generated over `seconds`.
    fn energy_end(&mut self, _tokens: u64, _seconds: f64) {}
    /// Before a block of timed repetitions.
    fn timed_begin(&mut self) {}
    /// After a block of timed repetitions.
    fn timed_end(&mut self) {}
    /// Progress: `phase` (`warmup` or `rep`), `done` of `total`.
    fn progress(&mut self, _phase: &str, _done: u32, _total: u32) {}
}

/// Index of the largest logit (the first one on ties; NaNs are ignored): greedy sampling.
///
/// One pass over 16 lanes, each keeping its maximum and the chunk where it was seen, which the
/// compiler turns into vector compares and blends; then the best lane (lowest index on ties).
pub fn argmax(logits: &[f32]) -> usize {
    const L: usize = 16;
    let mut best = [f32::NEG_INFINITY; L];
    let mut at = [0u32; L];
    let chunks = logits.chunks_exact(L);
    let rest = chunks.remainder();
    for (k, c) in chunks.enumerate() {
        let k = k as u32;
        for i in 0..L {
            let take = c[i] > best[i];
            best[i] = if take { c[i] } else { best[i] };
            at[i] = if take { k } else { at[i] };
        }
    }
    let (mut m, mut idx) = (f32::NEG_INFINITY, usize::MAX);
    for i in 0..L {
        let j = at[i] as usize * L + i;
        if best[i] > m || (best[i] == m && j < idx) {
            (m, idx) = (best[i], j);
        }
    }
    let base = logits.len() - rest.len();
    for (i, &x) in rest.iter().enumerate() {
        if x > m {
            (m, idx) = (x, base + i);
        }
    }
    if m == f32::NEG_INFINITY {
        // all NaN or -inf: the first finite-or-infinite entry, else 0
        return logits.iter().position(|&x| x == m).unwrap_or(0);
    }
    idx
}

/// Where a model's layers go: how many to the GPUs, and how they are spread over several.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub n_gpu_layers: GpuLayers,
    pub split_mode: SplitMode,
    pub main_gpu: u32,
    pub tensor_split: TensorSplit,
    /// RPC servers whose devices come before the local GPUs.
    pub rpc: RpcServers,
    /// The local GPUs to use (ggml names; empty = llama.cpp's own choice, `CPU` = none).
    pub devices: DeviceSet,
    /// How long each server's handshake may take (from the cell's `timeout_s`).
    pub handshake: Duration,
}

impl Placement {
    pub fn of(p: &CellParams) -> Self {
        Placement {
            n_gpu_layers: p.n_gpu_layers,
            split_mode: p.split_mode,
            main_gpu: p.main_gpu,
            tensor_split: p.tensor_split.clone(),
            rpc: p.rpc.clone(),
            devices: p.devices.clone(),
            handshake: crate::rpc_wire::handshake_timeout(p.timeout_s),
        }
    }

    /// Checks the placement against the GPUs llama.cpp spreads the model over (ggml names and
    /// descriptions, in llama.cpp's order: RPC servers' devices, then local GPUs) before loading, where llama.cpp would fail with a
    /// terse log line or silently drop shares of GPUs that do not exist. Without GPUs, or with
    /// no layer offloaded, the placement has no effect and passes.
    pub fn check(&self, gpus: &[&crate::protocol::DeviceInfo]) -> Result<()> {
        if self.split_mode == SplitMode::Tensor && gpus.is_empty() {
            bail!(
                "split_mode = \"tensor\" needs at least one GPU, and llama.cpp sees none \
                 (CPU run); use another split_mode on this machine"
            );
        }
        if gpus.is_empty() || self.n_gpu_layers == GpuLayers::N(0) {
            return Ok(());
        }
        let listing = || {
            gpus.iter()
                .enumerate()
                .map(|(i, d)| format!("{i} = {} ({})", d.name, d.description))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let n = gpus.len();
        if self.split_mode == SplitMode::None && self.main_gpu as usize >= n {
            bail!(
                "main_gpu = {} but llama.cpp sees {n} GPU{}: {}; use a number from 0 to {}",
                self.main_gpu,
                if n == 1 { "" } else { "s" },
                listing(),
                n - 1
            );
        }
        if self.split_mode == SplitMode::Row {
            if let Some(g) = gpus.iter().find(|g| !g.row_split) {
                bail!(
                    "split_mode = \"row\": {}'s backend in this llama.cpp has no row-split \
                     buffers (llama.cpp deprecated `row` for `tensor`); use \"tensor\" or \"layer\"",
                    g.name
                );
            }
        }
        let needed = self.tensor_split.devices_needed();
        if self.split_mode != SplitMode::None && needed > n {
            bail!(
                "tensor_split = {} gives shares to {needed} GPUs but llama.cpp sees {n}: {}; \
                 give at most {n} shares, or use \"auto\"",
                self.tensor_split,
                listing()
            );
        }
        Ok(())
    }
}

/// A model loaded in this worker.
pub struct LoadedModel {
    ptr: NonNull<sys::llama_model>,
    pub path: PathBuf,
    pub placement: Placement,
    pub load_s: f64,
    pub cold: bool,
    /// The devices of the placement's RPC servers, and what the load sent to each server.
    pub remote: Vec<crate::protocol::DeviceInfo>,
    /// The local GPUs the placement may use, in llama.cpp's order (after `remote`).
    pub local: Vec<crate::protocol::DeviceInfo>,
    pub rpc_load_sent: Vec<(String, u64)>,
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // SAFETY: the model was returned by llama_model_load_from_file and is freed once.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

/// Drops `path` from the page cache so the next load reads from disk (`--cold`).
fn evict_from_page_cache(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path)?;
    f.sync_all().ok();
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(|e| anyhow::anyhow!("posix_fadvise(DONTNEED) failed: {e}"))
}

impl LoadedModel {
    /// Loads a GGUF file, timing it (`load_s`), on the placement's devices (checked first): the
    /// default device selection of llama.cpp, or with RPC servers or `devices` an explicit list:
    /// the servers' devices, then the local GPUs (llama.cpp's own order for RPC devices).
    pub fn load(engine: &Engine, path: &Path, placement: Placement, cold: bool) -> Result<Self> {
        // unknown device names fail before anything connects or loads
        let local: Vec<crate::protocol::DeviceInfo> = engine
            .info
            .cell_gpus(&placement.devices)
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .cloned()
            .collect();
        let remote = super::rpc::connect(&placement.rpc, placement.handshake)?;
        let mut gpus: Vec<&crate::protocol::DeviceInfo> = remote.iter().map(|r| &r.info).collect();
        gpus.extend(&local);
        placement.check(&gpus)?;
        let mut devices: Vec<sys::ggml_backend_dev_t> = remote.iter().map(|r| r.dev).collect();
        for g in &local {
            let name = CString::new(g.name.as_str())?;
            // SAFETY: a named lookup in the device registry.
            devices.push(unsafe { sys::ggml_backend_dev_by_name(name.as_ptr()) });
        }
        devices.push(std::ptr::null_mut());
        let sent_before: Vec<(String, u64)> = placement
            .rpc
            .0
            .iter()
            .map(|e| (e.clone(), crate::rpc_wire::traffic(e).unwrap_or_default().0))
            .collect();
        if cold {
            evict_from_page_cache(path)
                .context("--cold: evicting the model from the page cache")?;
        }
        let c = CString::new(path.as_os_str().as_bytes())?;
        // llama.cpp copies llama_max_devices() shares from this pointer.
        let mut shares = [0f32; MAX_DEVICES];
        for (d, s) in shares.iter_mut().zip(&placement.tensor_split.0) {
            *d = *s;
        }
        let t0 = Instant::now();
        // SAFETY: default params with placement fields set; the path and the shares outlive
        // the call (llama.cpp copies the shares into the model).
        let raw = unsafe {
            let mut p = sys::llama_model_default_params();
            p.n_gpu_layers = placement.n_gpu_layers.as_llama();
            p.split_mode = split_mode(placement.split_mode);
            p.main_gpu = placement.main_gpu as i32;
            if !placement.tensor_split.is_auto() {
                p.tensor_split = shares.as_ptr();
            }
            if !placement.rpc.is_local() || !placement.devices.is_default() {
                // NULL-terminated; llama.cpp copies the list into the model
                p.devices = devices.as_mut_ptr();
            }
            sys::llama_model_load_from_file(c.as_ptr(), p)
        };
        let load_s = t0.elapsed().as_secs_f64();
        let ptr = NonNull::new(raw)
            .ok_or_else(|| anyhow!("llama.cpp could not load {}", path.display()))?;
        // llama.cpp's RPC client queues uploads and may return before they left: one round trip
        // per device (its memory, asked through the same queue) drains it, so the counters hold
        // the whole load; the memory is the device's after the weights were placed
        let remote: Vec<crate::protocol::DeviceInfo> =
            remote.into_iter().map(super::rpc::refreshed).collect();
        let rpc_load_sent = sent_before
            .into_iter()
            .map(|(e, before)| {
                let after = crate::rpc_wire::traffic(&e).unwrap_or_default().0;
                (e, after.saturating_sub(before))
            })
            .collect();
        Ok(LoadedModel {
            ptr,
            path: path.to_path_buf(),
            rpc_load_sent,
            placement,
            load_s,
            cold,
            remote,
            local,
        })
    }

    /// The llama.cpp model (lives as long as `self`).
    pub(super) fn raw(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    /// The number of tokens of the vocabulary (the length of a row of logits).
    pub(super) fn n_vocab(&self) -> usize {
        // SAFETY: vocab of a live model.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) as usize }
    }

    /// Whether the model starts a sequence with BOS, and the BOS token.
    pub(super) fn bos(&self) -> (bool, sys::llama_token) {
        // SAFETY: vocab of a live model.
        unsafe {
            let v = self.vocab();
            (sys::llama_vocab_get_add_bos(v), sys::llama_vocab_bos(v))
        }
    }

    /// The model's vocabulary (lives as long as the model).
    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: getter on a live model.
        unsafe { sys::llama_model_get_vocab(self.ptr.as_ptr()) }
    }

    fn info(&self) -> ModelInfo {
        let m = self.ptr.as_ptr();
        let mut desc = [0u8; 256];
        // SAFETY: getters on a live model; desc is written NUL-terminated within its length.
        unsafe {
            sys::llama_model_desc(m, desc.as_mut_ptr().cast(), desc.len());
            ModelInfo {
                desc: super::cstr(desc.as_ptr().cast()),
                n_params: sys::llama_model_n_params(m),
                size_bytes: sys::llama_model_size(m),
                n_layer: sys::llama_model_n_layer(m) as u32,
                n_embd: sys::llama_model_n_embd(m) as u32,
                n_head: sys::llama_model_n_head(m) as u32,
                n_head_kv: sys::llama_model_n_head_kv(m) as u32,
                n_vocab: sys::llama_vocab_n_tokens(self.vocab()) as u32,
                n_ctx_train: sys::llama_model_n_ctx_train(m) as u32,
            }
        }
    }

    pub(super) fn tokenize(&self, text: &str) -> Result<Vec<sys::llama_token>> {
        // SAFETY: vocab of a live model; llama_tokenize writes at most buf.len() tokens and
        // returns minus the count needed when the buffer is too small.
        unsafe {
            let vocab = self.vocab();
            let add_bos = sys::llama_vocab_get_add_bos(vocab);
            let run = |buf: &mut Vec<sys::llama_token>| {
                sys::llama_tokenize(
                    vocab,
                    text.as_ptr().cast(),
                    text.len() as i32,
                    buf.as_mut_ptr(),
                    buf.len() as i32,
                    add_bos,
                    false,
                )
            };
            let mut buf = vec![0; text.len() + 8];
            let mut n = run(&mut buf);
            if n < 0 {
                buf.resize((-n) as usize, 0);
                n = run(&mut buf);
            }
            if n <= 0 {
                bail!("the prompt tokenized to no tokens");
            }
            buf.truncate(n as usize);
            Ok(buf)
        }
    }

    fn detokenize(&self, tokens: &[sys::llama_token]) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        // SAFETY: vocab of a live model; each piece is written within buf's length.
        unsafe {
            let vocab = self.vocab();
            for &t in tokens {
                let n = sys::llama_token_to_piece(
                    vocab,
                    t,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    false,
                );
                if n > 0 {
                    out.extend_from_slice(&buf[..n as usize]);
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Measures one cell on this model: context creation, warm-up, timed repetitions.
    pub fn measure(
        &self,
        engine: &Engine,
        cell: &Cell,
        probe: &mut dyn Probe,
    ) -> Result<Measurement> {
        let p = &cell.params;
        let prompt = self.tokenize(&p.prompt)?;
        let n_ctx = context_size(p, prompt.len())?;
        let info = self.info();
        let mut warnings = load_warnings(p, n_ctx, &info, self.learned_positions())?;
        if !p.rpc.is_local() && p.split_mode == SplitMode::Tensor {
            warnings.push(
                "split_mode = \"tensor\" keeps the weights in one buffer over all devices \
                 (llama.cpp's Meta device): what each RPC server holds is not known, rpc[] \
                 shows 0 bytes for it"
                    .into(),
            );
        }
        if let Some(why) = p.refusal() {
            bail!("{why}");
        }
        let t0 = Instant::now();
        let mut ctx = Context::new(self, cell, n_ctx)
            .map_err(|e| anyhow!("{e:#}{}", kv_need(p, n_ctx, &info)))?;
        let ctx_s = t0.elapsed().as_secs_f64();
        let mut memory = breakdown(ctx.ptr());
        memory.host_rss_after_load_bytes = host_rss().current_bytes;
        let devices_used = devices_used(&self.gpus(), &memory.buffers, &p.tensor_split);
        probe.after_load(&devices_used);

        let (pp_tokens, tg_tokens) = self.random_tokens(cell);
        ctx.fill_depth(&self.depth_tokens(cell), p.n_batch)?;
        let (reps, mut gen) = if p.n_parallel > 1 {
            if p.sampling == Sampling::Backend {
                warnings.push(
                    "with several sequences the greedy sampling of the generation test runs on \
                     the host (an argmax over each sequence's logits)"
                        .into(),
                );
            }
            let mut reps = ctx.batched_bench(p, &pp_tokens, &tg_tokens, &mut memory, probe)?;
            let gen = ctx.batched_user_generation(p, &prompt, &mut reps, probe)?;
            (reps, gen)
        } else {
            let mut reps = ctx.llama_bench(p, &pp_tokens, &tg_tokens, &mut memory, probe)?;
            let gen = ctx.user_generation(p, &prompt, &mut reps, probe)?;
            (reps, gen)
        };
        ctx.energy(p, &prompt, &mut gen, probe)?;
        memory.host_rss_peak_bytes = host_rss().peak_bytes;

        let (backend, device) = placement(&engine.info, &self.remote, &devices_used);
        let rpc = self.rpc_use(&memory.buffers);
        Ok(Measurement {
            serving: None,
            disturbance: None,
            backend,
            device,
            devices_used,
            load_s: self.load_s,
            load_cold: self.cold,
            ctx_s,
            // SAFETY: getter on a live context.
            n_ctx: unsafe { sys::llama_n_ctx(ctx.ptr()) },
            prompt_tokens: prompt.len() as u32,
            model: info,
            memory,
            gpu: Default::default(),
            reps,
            generated_text: self.detokenize(&gen.tokens),
            quality: None,
            warnings,
            rpc,
        })
    }

    /// The GPUs the model may be spread over, in llama.cpp's order: the RPC servers' devices,
    /// then the local GPUs.
    fn gpus(&self) -> Vec<&crate::protocol::DeviceInfo> {
        self.remote.iter().chain(&self.local).collect()
    }

    /// Per RPC server: its devices, the weights and other buffers they hold (llama.cpp's
    /// buffer accounting: buffers are named `RPC<device>[host:port]`), and the bytes the load
    /// sent; the weights came from the server's cache when the load sent far fewer bytes than
    /// the weights it placed there.
    fn rpc_use(&self, buffers: &[crate::protocol::BufferMemory]) -> Vec<crate::protocol::RpcUse> {
        self.rpc_load_sent
            .iter()
            .map(|(endpoint, sent)| {
                let devices: Vec<crate::protocol::DeviceInfo> = self
                    .remote
                    .iter()
                    .filter(|d| d.name.ends_with(&format!("[{endpoint}]")))
                    .cloned()
                    .collect();
                let held = |f: fn(&crate::protocol::BufferMemory) -> u64| {
                    buffers
                        .iter()
                        .filter(|b| devices.iter().any(|d| d.name == b.name))
                        .map(f)
                        .sum::<u64>()
                };
                let weights = held(|b| b.model_bytes);
                let context = held(|b| b.context_bytes + b.compute_bytes);
                crate::protocol::RpcUse {
                    endpoint: endpoint.clone(),
                    devices,
                    weights_bytes: weights,
                    context_bytes: context,
                    load_sent_bytes: *sent,
                    weights_from_cache: weights > 0 && *sent < weights / 2,
                }
            })
            .collect()
    }

    /// Whether the model's positions are learned embeddings (no RoPE, as GPT-2): a fixed
    /// number of them.
    fn learned_positions(&self) -> bool {
        // SAFETY: getter on a live model.
        unsafe { sys::llama_model_rope_type(self.ptr.as_ptr()) == sys::LLAMA_ROPE_TYPE_NONE }
    }

    /// The tokens the context holds before each test (`n_depth` random ones, BOS first where
    /// the model adds one), seeded apart from the pp and tg tokens.
    fn depth_tokens(&self, cell: &Cell) -> Vec<sys::llama_token> {
        let seed = cell.index as u64 ^ 0xde97;
        let mut v = self.random_sequences(seed, &[cell.params.n_depth]);
        v.pop().unwrap_or_default()
    }

    /// The random tokens of the pp and tg tests (`n_prompt`, then `n_gen` of them), seeded by
    /// the cell's index.
    fn random_tokens(&self, cell: &Cell) -> (Vec<sys::llama_token>, Vec<sys::llama_token>) {
        let p = &cell.params;
        let mut v = self.random_sequences(cell.index as u64, &[p.n_prompt, p.n_gen]);
        let tg_tokens = v.pop().unwrap_or_default();
        let pp_tokens = v.pop().unwrap_or_default();
        (pp_tokens, tg_tokens)
    }

    /// Sequences of random tokens of the given lengths, drawn one after the other from one
    /// generator seeded with `seed`, each led by BOS where the model adds one.
    fn random_sequences(&self, seed: u64, lens: &[u32]) -> Vec<Vec<sys::llama_token>> {
        // SAFETY: vocab getters on a live model.
        let (n_vocab, bos) = unsafe {
            let vocab = self.vocab();
            let bos = sys::llama_vocab_get_add_bos(vocab).then(|| sys::llama_vocab_bos(vocab));
            (sys::llama_vocab_n_tokens(vocab), bos)
        };
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        lens.iter()
            .map(|&n| {
                let mut v: Vec<sys::llama_token> =
                    (0..n).map(|_| rng.random_range(0..n_vocab)).collect();
                if let (Some(b), Some(first)) = (bos, v.first_mut()) {
                    *first = b;
                }
                v
            })
            .collect()
    }
}

/// The context size of a cell ([`CellParams::context_tokens`]), within llama.cpp's 32-bit
/// context size.
fn context_size(p: &CellParams, prompt_len: usize) -> Result<u32> {
    p.context_tokens(prompt_len as u64).ok_or_else(|| {
        anyhow::anyhow!(
            "the context for n_depth {} + n_parallel {} × (n_prompt {} (prompt {} tokens) + \
             n_gen {}) does not fit in llama.cpp's 32-bit context size; use smaller values",
            p.n_depth,
            p.n_parallel,
            p.n_prompt,
            prompt_len,
            p.n_gen
        )
    })
}

/// What the user should know before the numbers: a context longer than the model was trained
/// for (with rotary positions llama.cpp runs it, and the figures describe a context the model
/// does not use well). A model with learned positions (GPT-2) has none beyond its training
/// length (llama.cpp would abort): an error.
fn load_warnings(
    p: &CellParams,
    n_ctx: u32,
    info: &ModelInfo,
    learned_positions: bool,
) -> Result<Vec<String>> {
    let mut w = Vec::new();
    // the depth prefix is shared: each sequence holds it plus its own share of the rest
    let per_seq = p.n_depth + (n_ctx - p.n_depth.min(n_ctx)) / p.n_parallel.max(1);
    if info.n_ctx_train > 0 && per_seq > info.n_ctx_train {
        if learned_positions {
            bail!(
                "each sequence would reach {per_seq} tokens (n_depth {} + prompt + n_gen), but \
                 this model has learned position embeddings for {} positions only (no rotary \
                 positions): use a smaller n_depth, n_prompt or n_gen",
                p.n_depth,
                info.n_ctx_train
            );
        }
        w.push(format!(
            "each sequence reaches {per_seq} tokens (n_depth {} + prompt + n_gen), beyond the \
             {} the model was trained for",
            p.n_depth, info.n_ctx_train
        ));
    }
    Ok(w)
}

/// For a context llama.cpp could not create: how much its KV cache alone needs, from the
/// model's shape (`n_ctx × n_layer × n_head_kv × head size × bytes per K and V element`).
fn kv_need(p: &CellParams, n_ctx: u32, info: &ModelInfo) -> String {
    let head = u64::from(info.n_embd / info.n_head.max(1));
    let per_token = (head * u64::from(info.n_head_kv) * u64::from(info.n_layer)) as f64
        * (crate::capacity::kv_type_bytes(&p.type_k) + crate::capacity::kv_type_bytes(&p.type_v));
    let kv = (per_token * f64::from(n_ctx)) as u64;
    let gib = kv as f64 / f64::from(1u32 << 30);
    format!(
        " (n_parallel {}, n_depth {}: the KV cache of {n_ctx} tokens alone needs about \
         {gib:.2} GiB, {} K / {} V, before the weights and compute buffers)",
        p.n_parallel, p.n_depth, p.type_k, p.type_v
    )
}

fn split_mode(m: SplitMode) -> sys::llama_split_mode {
    match m {
        SplitMode::None => sys::LLAMA_SPLIT_MODE_NONE,
        SplitMode::Layer => sys::LLAMA_SPLIT_MODE_LAYER,
        SplitMode::Row => sys::LLAMA_SPLIT_MODE_ROW,
        SplitMode::Tensor => sys::LLAMA_SPLIT_MODE_TENSOR,
    }
}

/// The GPU devices (ggml names, in registration order) holding some of the model's weights,
/// from llama.cpp's buffer accounting: a buffer type is named after its device (`CUDA0`,
/// `CUDA0_something`); buffers shared by several devices (`CUDA_Split`) name none of them,
/// and the devices of a row split also hold the layers' other tensors in their own buffers.
/// `split_mode = "tensor"` puts the weights in buffers of one "meta" device over every GPU
/// (named `Meta(...)`, in the pinned llama.cpp `Meta()` with the list lost): then the GPUs
/// with a share of `tensor_split` (all of them for `auto`) hold them.
pub fn devices_used(
    gpus: &[&crate::protocol::DeviceInfo],
    buffers: &[crate::protocol::BufferMemory],
    tensor_split: &TensorSplit,
) -> Vec<String> {
    let weights = |b: &&crate::protocol::BufferMemory| !b.host && b.model_bytes > 0;
    let meta = buffers
        .iter()
        .filter(weights)
        .any(|b| b.name.starts_with("Meta("));
    gpus.iter()
        .enumerate()
        .filter(|(i, d)| {
            let share = tensor_split.is_auto() || tensor_split.0.get(*i).is_some_and(|x| *x > 0.0);
            (meta && share)
                || buffers.iter().filter(weights).any(|b| {
                    b.name == d.name
                        || b.name
                            .strip_prefix(d.name.as_str())
                            .is_some_and(|rest| rest.starts_with('_'))
                })
        })
        .map(|(_, d)| d.name.clone())
        .collect()
}

/// Backend and device(s) holding the model's weights (`2× NVIDIA H200` when split over two
/// alike GPUs), or the CPU.
fn placement(
    info: &crate::protocol::BackendInfo,
    remote: &[crate::protocol::DeviceInfo],
    used: &[String],
) -> (String, String) {
    let devs = &info.devices;
    let gpus: Vec<&crate::protocol::DeviceInfo> = used
        .iter()
        .filter_map(|n| remote.iter().chain(devs).find(|d| &d.name == n))
        .collect();
    match gpus.as_slice() {
        [] => match devs.iter().find(|d| d.kind == "cpu") {
            Some(d) => (d.backend.clone(), d.description.clone()),
            None => ("CPU".into(), String::new()),
        },
        [one] => (one.backend.clone(), one.description.clone()),
        many => {
            let mut backends: Vec<&str> = many.iter().map(|d| d.backend.as_str()).collect();
            backends.dedup();
            let same = many.iter().all(|d| d.description == many[0].description);
            let device = if same {
                format!("{}× {}", many.len(), many[0].description)
            } else {
                many.iter()
                    .map(|d| d.description.as_str())
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            (backends.join("+"), device)
        }
    }
}

/// Preallocated outputs of the generation test.
struct GenBuffers {
    tokens: Vec<sys::llama_token>,
    token_ms: Vec<f64>,
    /// Mean time of the greedy sampling step (reading the logits, argmax), µs per token.
    sample_us: f64,
}

impl GenBuffers {
    fn new(n_gen: u32) -> Self {
        GenBuffers {
            tokens: Vec::with_capacity(n_gen as usize),
            token_ms: Vec::with_capacity(n_gen as usize),
            sample_us: 0.0,
        }
    }
}

/// A llama.cpp context with the parameters of one cell.
struct Context {
    ptr: NonNull<sys::llama_context>,
    n_gen: u32,
    /// Greedy sampler chain run by the backend inside `llama_decode` (`sampling = "backend"`);
    /// owned here, freed after the context.
    sampler: Option<NonNull<sys::llama_sampler>>,
    /// Whether the sampler is attached to sequence 0 (only for the generation test).
    sampler_attached: bool,
    /// Tokens kept in the cache between tests (`n_depth`, filled once).
    depth: u32,
    /// The batch of the tests with several sequences (allocated on first use).
    batch: Option<batched::Batch>,
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model / llama_sampler_chain_init, freed once, the
        // context (which refers to the sampler) first.
        unsafe {
            sys::llama_free(self.ptr.as_ptr());
            if let Some(s) = self.sampler {
                sys::llama_sampler_free(s.as_ptr());
            }
        }
    }
}

fn kv_type(name: &str) -> Result<sys::ggml_type> {
    Ok(match name {
        "f32" => sys::GGML_TYPE_F32,
        "f16" => sys::GGML_TYPE_F16,
        "bf16" => sys::GGML_TYPE_BF16,
        "q8_0" => sys::GGML_TYPE_Q8_0,
        "q4_0" => sys::GGML_TYPE_Q4_0,
        "q4_1" => sys::GGML_TYPE_Q4_1,
        "q5_0" => sys::GGML_TYPE_Q5_0,
        "q5_1" => sys::GGML_TYPE_Q5_1,
        other => bail!("unsupported KV cache type {other:?}"),
    })
}

impl Context {
    fn new(model: &LoadedModel, cell: &Cell, n_ctx: u32) -> Result<Self> {
        let p = &cell.params;
        let (type_k, type_v) = (kv_type(&p.type_k)?, kv_type(&p.type_v)?);
        let sampler = match p.sampling {
            // SAFETY: a new chain owning a new greedy sampler.
            Sampling::Backend => unsafe {
                let chain =
                    sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params());
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_greedy());
                NonNull::new(chain)
            },
            Sampling::Host => None,
        };
        // SAFETY: default params with plain fields set; the model outlives the context.
        let raw = unsafe {
            let mut c = sys::llama_context_default_params();
            c.n_ctx = n_ctx;
            c.n_batch = p.n_batch;
            c.n_ubatch = p.n_ubatch;
            c.n_threads = p.n_threads as i32;
            c.n_threads_batch = p.n_threads as i32;
            c.flash_attn_type = match p.flash_attn {
                FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            };
            c.type_k = type_k;
            c.type_v = type_v;
            // B sequences in one unified cache, as llama-batched-bench
            c.n_seq_max = p.n_parallel.max(1);
            c.kv_unified = p.n_parallel > 1;
            // performance counters on: tg/pp are cross-checked against them
            c.no_perf = false;
            sys::llama_init_from_model(model.ptr.as_ptr(), c)
        };
        let Some(ptr) = NonNull::new(raw) else {
            if let Some(s) = sampler {
                // SAFETY: not attached to any context.
                unsafe { sys::llama_sampler_free(s.as_ptr()) };
            }
            bail!("llama.cpp could not create a context of {n_ctx} tokens");
        };
        Ok(Context {
            ptr,
            n_gen: p.n_gen,
            sampler,
            sampler_attached: false,
            depth: 0,
            batch: None,
        })
    }

    /// Puts the greedy sampler into the backend for sequence 0 (`sampling = "backend"`).
    /// When the backend cannot run it, tokens are taken on the host instead.
    fn attach_sampler(&mut self) {
        if let Some(s) = self.sampler {
            // SAFETY: live context and sampler; the sampler outlives the context (Drop order).
            self.sampler_attached = unsafe { sys::llama_set_sampler(self.ptr(), 0, s.as_ptr()) };
        }
    }

    /// The next token: sampled by the backend inside llama_decode, or the argmax of the logits
    /// on the host. Returns the token and the host-side time the step took.
    fn next_token(&mut self) -> (sys::llama_token, Duration) {
        if self.sampler_attached {
            // synchronise first so the timed part is the read alone
            self.synchronize();
            let ts = Instant::now();
            // SAFETY: live context after a decode with the sampler attached.
            let t = unsafe { sys::llama_get_sampled_token_ith(self.ptr(), -1) };
            if t >= 0 {
                return (t, ts.elapsed());
            }
            // The backend could not sample (unsupported op): llama.cpp then copied the logits.
        }
        let logits = self.last_logits();
        let ts = Instant::now();
        let t = argmax(logits) as sys::llama_token;
        (t, ts.elapsed())
    }

    fn ptr(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }

    /// Waits for the backend to finish the work queued on this context.
    fn synchronize(&self) {
        // SAFETY: live context.
        unsafe { sys::llama_synchronize(self.ptr()) }
    }

    /// Empties the cache for the next test, down to the depth prefix when there is one.
    fn clear(&mut self) {
        // SAFETY: live context; seq_rm of every sequence from position `depth` on keeps the
        // prefix (positions below it) in every sequence that holds it.
        unsafe {
            let mem = sys::llama_get_memory(self.ptr());
            if self.depth == 0 {
                sys::llama_memory_clear(mem, true)
            } else {
                sys::llama_memory_seq_rm(mem, -1, self.depth as i32, -1);
            }
        }
    }

    fn decode(&mut self, tokens: &[sys::llama_token]) -> Result<()> {
        // SAFETY: llama_batch_get_one borrows `tokens` (not written) for the duration of decode.
        let rc = unsafe {
            let batch = sys::llama_batch_get_one(tokens.as_ptr().cast_mut(), tokens.len() as i32);
            sys::llama_decode(self.ptr(), batch)
        };
        if rc != 0 {
            bail!("llama_decode failed with code {rc} (1 = no KV slot, 2 = aborted, <0 = error)");
        }
        Ok(())
    }

    fn last_logits(&mut self) -> &[f32] {
        self.logits_ith(-1)
    }

    /// The logits of output `i` of the last decode (`-1`: the last one).
    fn logits_ith(&self, i: i32) -> &[f32] {
        // SAFETY: after a successful decode, an output that asked for logits has n_vocab of them.
        unsafe {
            let vocab = sys::llama_model_get_vocab(sys::llama_get_model(self.ptr()));
            let n = sys::llama_vocab_n_tokens(vocab) as usize;
            let p = sys::llama_get_logits_ith(self.ptr(), i);
            std::slice::from_raw_parts(p, n)
        }
    }

    /// The user-visible test: the tokenized prompt, then `n_gen` tokens with greedy sampling.
    /// Returns TTFT in ms; per-token times land in `out.token_ms`.
    fn generate(&mut self, prompt: &[sys::llama_token], out: &mut GenBuffers) -> Result<f64> {
        self.clear();
        out.tokens.clear();
        out.token_ms.clear();
        let t0 = Instant::now();
        self.decode(prompt)?;
        let (mut tok, _) = self.next_token();
        out.token_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        out.tokens.push(tok);
        let mut sampling = Duration::ZERO;
        for _ in 1..self.n_gen {
            self.decode(std::slice::from_ref(&tok))?;
            let (t, spent) = self.next_token();
            tok = t;
            sampling += spent;
            out.token_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            out.tokens.push(tok);
        }
        out.sample_us = sampling.as_secs_f64() * 1e6 / f64::from(self.n_gen.max(2) - 1);
        Ok(out.token_ms[0])
    }

    fn perf(&self) -> sys::llama_perf_context_data {
        // SAFETY: live context.
        unsafe { sys::llama_perf_context(self.ptr()) }
    }

    fn reset_perf(&mut self) {
        // SAFETY: live context.
        unsafe { sys::llama_perf_context_reset(self.ptr()) }
    }

    /// Phase 1, llama-bench's pp and tg, on the context as llama.cpp creates it by default (no
    /// backend sampler, raw logits copied out): the memory figures describe this context.
    fn llama_bench(
        &mut self,
        p: &CellParams,
        pp_tokens: &[sys::llama_token],
        tg_tokens: &[sys::llama_token],
        memory: &mut MemoryMeasurement,
        probe: &mut dyn Probe,
    ) -> Result<Vec<RepSample>> {
        self.bench_reps(p, memory, probe, |ctx| {
            let (pp_ms, pp_llama) = ctx.prompt_processing(pp_tokens, p.n_batch)?;
            let (tg_ms, tg_llama) = ctx.token_generation(tg_tokens)?;
            let pp_tok_s = f64::from(p.n_prompt) / (pp_ms / 1e3);
            let tg_tok_s = f64::from(p.n_gen) / (tg_ms / 1e3);
            Ok(RepSample {
                pp_ms,
                pp_tok_s,
                tg_ms,
                tg_tok_s,
                pp_tok_s_llama: pp_llama,
                tg_tok_s_llama: tg_llama,
                throughput_tok_s: Some(tg_tok_s),
                pp_throughput_tok_s: Some(pp_tok_s),
                throughput_tok_s_llama: tg_llama,
                ..Default::default()
            })
        })
    }

    /// The repetitions of phase 1 (one sequence or several): `warmup` rounds of `rep`, the
    /// host RSS after them, then `repetitions` timed rounds.
    fn bench_reps(
        &mut self,
        p: &CellParams,
        memory: &mut MemoryMeasurement,
        probe: &mut dyn Probe,
        mut rep: impl FnMut(&mut Self) -> Result<RepSample>,
    ) -> Result<Vec<RepSample>> {
        let total = 2 * p.repetitions;
        for w in 0..p.warmup {
            rep(self)?;
            probe.progress("warmup", w + 1, p.warmup);
        }
        memory.host_rss_after_warmup_bytes = host_rss().current_bytes;
        probe.after_warmup();
        let mut reps: Vec<RepSample> = Vec::with_capacity(p.repetitions as usize);
        probe.timed_begin();
        for r in 0..p.repetitions {
            reps.push(rep(self)?);
            probe.progress("rep", r + 1, total);
        }
        probe.timed_end();
        Ok(reps)
    }

    /// Phase 2, what a user sees: the prompt, then greedy generation, with the sampler in the
    /// backend when `sampling = "backend"`. Attaching it makes llama.cpp re-reserve its compute
    /// buffers (adding a padded copy of the logits) on the next decode, so at least one warm-up
    /// runs first.
    fn user_generation(
        &mut self,
        p: &CellParams,
        prompt: &[sys::llama_token],
        reps: &mut [RepSample],
        probe: &mut dyn Probe,
    ) -> Result<GenBuffers> {
        self.attach_sampler();
        self.generation_reps(p, reps, probe, |ctx, gen| ctx.generate(prompt, gen))
    }

    /// The rounds of phase 2 (one sequence or several): at least one warm-up round of
    /// `generate` (which returns the TTFT), then one timed round per repetition, filling its
    /// TTFT, token times and decode speed. Returns the buffers of the last round.
    fn generation_reps(
        &mut self,
        p: &CellParams,
        reps: &mut [RepSample],
        probe: &mut dyn Probe,
        mut generate: impl FnMut(&mut Self, &mut GenBuffers) -> Result<f64>,
    ) -> Result<GenBuffers> {
        let total = 2 * p.repetitions;
        let mut gen = GenBuffers::new(p.n_gen);
        for _ in 0..p.warmup.max(1) {
            generate(self, &mut gen)?;
        }
        probe.timed_begin();
        for (r, rep) in reps.iter_mut().enumerate() {
            rep.ttft_ms = generate(self, &mut gen)?;
            let n = gen.token_ms.len();
            let decode_ms = gen.token_ms[n - 1] - gen.token_ms[0];
            rep.token_ms = gen.token_ms.clone();
            rep.decode_tok_s = (n - 1) as f64 / (decode_ms / 1e3);
            rep.sample_us = gen.sample_us;
            probe.progress("rep", p.repetitions + r as u32 + 1, total);
        }
        probe.timed_end();
        Ok(gen)
    }

    /// Energy: NVML's energy counter is too coarse for one short generation round (30 ms on
    /// GPT-2), so the same generation runs, untimed, for at least [`ENERGY_WINDOW_S`] (when the
    /// probe wants it).
    fn energy(
        &mut self,
        p: &CellParams,
        prompt: &[sys::llama_token],
        gen: &mut GenBuffers,
        probe: &mut dyn Probe,
    ) -> Result<()> {
        if !probe.wants_energy() {
            return Ok(());
        }
        probe.energy_begin();
        let t0 = Instant::now();
        let mut tokens = 0u64;
        while tokens == 0 || t0.elapsed().as_secs_f64() < ENERGY_WINDOW_S {
            if p.n_parallel > 1 {
                self.generate_batched(p, prompt, gen)?;
            } else {
                self.generate(prompt, gen)?;
            }
            tokens += u64::from(p.n_gen) * u64::from(p.n_parallel.max(1));
        }
        probe.energy_end(tokens, t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// llama-bench's pp: the tokens decoded in `n_batch` chunks, then synchronised. Returns the
    /// wall time in ms and the rate llama.cpp's counters saw.
    fn prompt_processing(
        &mut self,
        tokens: &[sys::llama_token],
        n_batch: u32,
    ) -> Result<(f64, Option<f64>)> {
        self.clear();
        self.reset_perf();
        let t0 = Instant::now();
        for chunk in tokens.chunks(n_batch as usize) {
            self.decode(chunk)?;
        }
        self.synchronize();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let d = self.perf();
        let llama = counted_rate(d.n_p_eval, d.t_p_eval_ms);
        Ok((ms, llama))
    }

    /// llama-bench's tg: one token at a time, no sampling, synchronised after each.
    fn token_generation(&mut self, tokens: &[sys::llama_token]) -> Result<(f64, Option<f64>)> {
        self.clear();
        self.reset_perf();
        let t0 = Instant::now();
        for t in tokens {
            self.decode(std::slice::from_ref(t))?;
            self.synchronize();
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let d = self.perf();
        let llama = counted_rate(d.n_eval, d.t_eval_ms);
        Ok((ms, llama))
    }
}

mod batched;

/// Tokens per second from llama.cpp's performance counters (`n` tokens over `ms`), if it timed
/// any.
fn counted_rate(n: i32, ms: f64) -> Option<f64> {
    (ms > 0.0).then(|| f64::from(n) / (ms / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BackendInfo, BufferMemory, DeviceInfo};

    fn gpu(name: &str, desc: &str, id: &str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            description: desc.into(),
            kind: "gpu".into(),
            backend: "CUDA".into(),
            memory_total_bytes: 0,
            memory_free_bytes: 0,
            device_id: id.into(),
            row_split: false,
            driver: String::new(),
        }
    }

    fn buf(name: &str, host: bool, model: u64, ctx: u64) -> BufferMemory {
        BufferMemory {
            name: name.into(),
            host,
            model_bytes: model,
            context_bytes: ctx,
            compute_bytes: 1,
        }
    }

    fn info(n: usize) -> BackendInfo {
        let mut devices = vec![DeviceInfo {
            kind: "cpu".into(),
            backend: "CPU".into(),
            ..gpu("CPU", "AMD EPYC", "")
        }];
        for i in 0..n {
            devices.push(gpu(
                &format!("CUDA{i}"),
                "NVIDIA H200",
                &format!("0000:{i:02x}:00.0"),
            ));
        }
        BackendInfo {
            devices,
            ..Default::default()
        }
    }

    #[test]
    fn devices_used_follow_the_weights() {
        let auto = TensorSplit::default();
        let two = info(2);
        // layer split: each GPU has its own buffer with weights
        let b = [
            buf("CPU_Mapped", true, 100, 0),
            buf("CUDA0", false, 500, 10),
            buf("CUDA1", false, 400, 10),
            buf("CUDA_Host", true, 0, 0),
        ];
        assert_eq!(
            devices_used(&two.llama_gpus(), &b, &auto),
            ["CUDA0", "CUDA1"]
        );
        assert_eq!(
            placement(&two, &[], &devices_used(&two.llama_gpus(), &b, &auto)).1,
            "2× NVIDIA H200"
        );
        // none on GPU 1: the other GPU holds only compute buffers
        let b = [buf("CUDA0", false, 0, 0), buf("CUDA1", false, 900, 20)];
        assert_eq!(devices_used(&two.llama_gpus(), &b, &auto), ["CUDA1"]);
        assert_eq!(
            placement(&two, &[], &["CUDA1".into()]),
            ("CUDA".into(), "NVIDIA H200".into())
        );
        // CUDA1 must not claim CUDA10's buffers, and the shared split buffer names no GPU
        let many = info(11);
        let b = [buf("CUDA10", false, 5, 0), buf("CUDA_Split", false, 800, 0)];
        assert_eq!(devices_used(&many.llama_gpus(), &b, &auto), ["CUDA10"]);
        // tensor parallelism: one meta buffer over the GPUs with a share
        let b = [buf("Meta()", false, 900, 0), buf("CUDA_Host", true, 0, 0)];
        assert_eq!(
            devices_used(&two.llama_gpus(), &b, &auto),
            ["CUDA0", "CUDA1"]
        );
        let ts = TensorSplit(vec![0.0, 1.0]);
        assert_eq!(devices_used(&two.llama_gpus(), &b, &ts), ["CUDA1"]);
        // all on the CPU
        let b = [buf("CPU", true, 900, 20)];
        assert!(devices_used(&two.llama_gpus(), &b, &auto).is_empty());
        assert_eq!(placement(&two, &[], &[]), ("CPU".into(), "AMD EPYC".into()));
    }

    #[test]
    fn placements_are_checked_against_the_gpus() {
        let p = |mode: SplitMode, mg: u32, ts: &[f32]| Placement {
            n_gpu_layers: GpuLayers::All,
            split_mode: mode,
            main_gpu: mg,
            tensor_split: TensorSplit(ts.to_vec()),
            rpc: Default::default(),
            devices: Default::default(),
            handshake: Duration::from_secs(15),
        };
        let with_rows = |d: DeviceInfo| DeviceInfo {
            row_split: true,
            ..d
        };
        let cuda0 = with_rows(gpu("CUDA0", "NVIDIA H200", ""));
        let cuda1 = with_rows(gpu("CUDA1", "NVIDIA H200", ""));
        let one = [&cuda0];
        let two = [&cuda0, &cuda1];
        assert!(p(SplitMode::None, 1, &[]).check(&two).is_ok());
        let e = p(SplitMode::None, 1, &[])
            .check(&one)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("main_gpu = 1 but llama.cpp sees 1 GPU: 0 = CUDA0 (NVIDIA H200)"),
            "{e}"
        );
        assert!(p(SplitMode::Row, 0, &[1.0, 1.0]).check(&two).is_ok());
        assert!(
            p(SplitMode::Row, 0, &[1.0, 0.0]).check(&one).is_ok(),
            "a zero share needs no GPU"
        );
        let e = p(SplitMode::Layer, 0, &[1.0, 1.0])
            .check(&one)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gives shares to 2 GPUs but llama.cpp sees 1"),
            "{e}"
        );
        // without GPUs (or with no layer offloaded) the placement has no effect
        assert!(p(SplitMode::None, 3, &[1.0, 1.0]).check(&[]).is_ok());
        let cpu = Placement {
            n_gpu_layers: GpuLayers::N(0),
            ..p(SplitMode::None, 3, &[])
        };
        assert!(cpu.check(&one).is_ok());
        assert!(p(SplitMode::Tensor, 0, &[]).check(&[]).is_err());
        // a backend without row-split buffers (CUDA in the pinned llama.cpp)
        let plain = gpu("CUDA0", "NVIDIA H200", "");
        let no_rows = [&plain];
        let e = p(SplitMode::Row, 0, &[])
            .check(&no_rows)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no row-split buffers") && e.contains("\"tensor\""),
            "{e}"
        );
        assert!(p(SplitMode::Layer, 0, &[]).check(&no_rows).is_ok());
    }

    fn naive(v: &[f32]) -> usize {
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] || v[best].is_nan() && !x.is_nan() {
                best = i;
            }
        }
        best
    }

    #[test]
    fn argmax_matches_a_naive_scan() {
        let mut seed = 7u64;
        for n in [1usize, 15, 16, 17, 1000, 50257] {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / 1e4 - 800.0
                })
                .collect();
            assert_eq!(argmax(&v), naive(&v), "n = {n}");
        }
    }

    #[test]
    fn argmax_ties_nan_and_negatives() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -1.0]), 2);
        assert_eq!(argmax(&[-3.0; 40]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        let mut v = vec![0.0f32; 100];
        v[69] = 9.0;
        v[37] = 9.0;
        v[99] = 9.0;
        assert_eq!(
            argmax(&v),
            37,
            "first of equal maxima across lanes and the tail"
        );
        v[98] = 10.0;
        assert_eq!(argmax(&v), 98, "the tail can win");
    }
}
