//! models.toml (schema 1) → a validated [`Matrix`].
//!
//! Owns parsing and validation of the user's matrix file. Every error names the file, line and
//! column and says what to do. Pure apart from reading the file; never prints.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::presets::{self, Preset};
use crate::quant::Quant;

mod serving;
pub use serving::{limits as workload_limits, ServeSpec};

/// The only schema this version reads.
pub const SCHEMA: i64 = 1;

/// A config error located in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the error has no position (e.g. file unreadable).
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// `n_gpu_layers`: all layers, or a number (0 = CPU only). Serialized as `"all"` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuLayers {
    All,
    N(u32),
}

impl serde::Serialize for GpuLayers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuLayers::All => s.serialize_str("all"),
            GpuLayers::N(n) => s.serialize_u32(*n),
        }
    }
}

/// Read back from reports (results.json, the run's cell log) and the worker's jobs only, never
/// from models.toml or the command line. A string goes through [`GpuLayers::parse`]; a number
/// is taken as recorded (any `u32`): builds before the [`limits::N_GPU_LAYERS`] check took any
/// `u32` on the command line, and their reports must stay readable.
impl<'de> serde::Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(GpuLayers::N(n)),
            Raw::S(s) => GpuLayers::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl GpuLayers {
    /// The value llama.cpp takes (`-1` or a large number means all).
    pub fn as_llama(self) -> i32 {
        match self {
            GpuLayers::All => -1,
            GpuLayers::N(n) => n as i32,
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::All => f.write_str("all"),
            GpuLayers::N(n) => write!(f, "{n}"),
        }
    }
}

/// Flash attention policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    On,
    Off,
    Auto,
}

impl FlashAttn {
    pub const ALL: [FlashAttn; 3] = [FlashAttn::On, FlashAttn::Off, FlashAttn::Auto];

    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        }
    }
}

/// Where the greedy sampling of the generation test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// In the backend, inside `llama_decode` (an argmax op on the GPU); only the token id comes
    /// back to the host.
    Backend,
    /// On the host: the logits are copied out and the argmax is taken by quantbench.
    Host,
}

impl Sampling {
    pub const ALL: [Sampling; 2] = [Sampling::Backend, Sampling::Host];

    pub fn name(self) -> &'static str {
        match self {
            Sampling::Backend => "backend",
            Sampling::Host => "host",
        }
    }
}

/// How llama.cpp spreads a model over several GPUs (llama.cpp's `split_mode`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// One GPU (`main_gpu`) holds the whole model.
    None,
    /// Whole layers (and their KV cache) go to the GPUs in proportion to `tensor_split`;
    /// llama.cpp's default.
    #[default]
    Layer,
    /// Like `layer`, and each weight matrix is split by rows across the GPUs as well.
    Row,
    /// llama.cpp's experimental tensor parallelism.
    Tensor,
}

impl SplitMode {
    pub const ALL: [SplitMode; 4] = [
        SplitMode::None,
        SplitMode::Layer,
        SplitMode::Row,
        SplitMode::Tensor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
            SplitMode::Tensor => "tensor",
        }
    }

    pub fn parse(s: &str) -> Option<SplitMode> {
        Self::ALL.into_iter().find(|m| m.name() == s.to_lowercase())
    }

    /// Whether `main_gpu` means anything in this mode (only `none` picks one GPU).
    pub fn uses_main_gpu(self) -> bool {
        self == SplitMode::None
    }

    /// Whether `tensor_split` means anything in this mode.
    pub fn uses_tensor_split(self) -> bool {
        self != SplitMode::None
    }
}

/// Most GPUs llama.cpp spreads a model over (`llama_max_devices()` of the pinned llama.cpp).
pub const MAX_DEVICES: usize = 16;

/// Shares of the model per GPU (llama.cpp's `tensor_split`), in the order llama.cpp lists the
/// GPUs. Empty = llama.cpp's default, proportional to each GPU's free memory (`auto`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TensorSplit(pub Vec<f32>);

impl Eq for TensorSplit {}

impl std::hash::Hash for TensorSplit {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for x in &self.0 {
            x.to_bits().hash(h);
        }
    }
}

impl TensorSplit {
    pub fn is_auto(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `auto`, or shares separated by `/` or `,` (`3/1`, `0.5,0.5`).
    pub fn parse(s: &str) -> Result<TensorSplit, String> {
        let s = s.trim();
        if s.is_empty() || s == "auto" {
            return Ok(TensorSplit::default());
        }
        let v: Result<Vec<f32>, _> = s
            .split(['/', ','])
            .map(|x| x.trim().parse::<f32>())
            .collect();
        let v = v.map_err(|_| {
            format!("tensor_split {s:?}: use shares per GPU such as 3/1, or \"auto\"")
        })?;
        TensorSplit::checked(v)
    }

    /// Validates shares: at most [`MAX_DEVICES`], none negative, at least one above zero.
    pub fn checked(v: Vec<f32>) -> Result<TensorSplit, String> {
        if v.len() > MAX_DEVICES {
            return Err(format!(
                "tensor_split has {} shares; llama.cpp uses at most {MAX_DEVICES} GPUs",
                v.len()
            ));
        }
        if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err("tensor_split shares must be numbers of at least 0".into());
        }
        if !v.is_empty() && v.iter().all(|x| *x == 0.0) {
            return Err(
                "tensor_split is all zeros: give each GPU a share (e.g. [1, 1]) or use \"auto\""
                    .into(),
            );
        }
        Ok(TensorSplit(v))
    }

    /// Each GPU's fraction of the model (empty for `auto`).
    pub fn fractions(&self) -> Vec<f64> {
        let sum: f64 = self.0.iter().map(|x| f64::from(*x)).sum();
        self.0.iter().map(|x| f64::from(*x) / sum).collect()
    }

    /// The highest GPU index with a share above zero, plus one.
    pub fn devices_needed(&self) -> usize {
        self.0.iter().rposition(|x| *x > 0.0).map_or(0, |i| i + 1)
    }
}

impl fmt::Display for TensorSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_auto() {
            return f.write_str("auto");
        }
        let parts: Vec<String> = self.0.iter().map(|x| format!("{x}")).collect();
        f.write_str(&parts.join("/"))
    }
}

/// The llama.cpp RPC servers (`host:port`) a cell adds to the local devices, in the order
/// llama.cpp lists them (before the local GPUs). Empty = local devices only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RpcServers(pub Vec<String>);

/// Most RPC servers one llama.cpp process connects to (`GGML_RPC_MAX_SERVERS`).
pub const MAX_RPC_SERVERS: usize = 16;

impl RpcServers {
    pub fn is_local(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses one set of servers from the command line: `host:port` separated by `,`;
    /// `local` (or nothing) for none.
    pub fn parse(s: &str) -> Result<RpcServers, String> {
        let s = s.trim();
        if s.is_empty() || s == "local" {
            return Ok(RpcServers::default());
        }
        RpcServers::checked(s.split(',').map(|x| x.trim().to_string()).collect())
    }

    /// Validates a set: each a `host:port` with a port from 1 to 65535, none twice, at most
    /// [`MAX_RPC_SERVERS`].
    pub fn checked(v: Vec<String>) -> Result<RpcServers, String> {
        if v.len() > MAX_RPC_SERVERS {
            return Err(format!(
                "rpc lists {} servers; llama.cpp connects to at most {MAX_RPC_SERVERS}",
                v.len()
            ));
        }
        for e in &v {
            check_endpoint(e)?;
        }
        if let Some(e) = first_repeat(&v) {
            return Err(format!("rpc server {e:?} is listed twice in one set"));
        }
        Ok(RpcServers(v))
    }
}

/// `host:port` as llama.cpp's RPC client takes it: it splits at the first `:` and connects
/// over IPv4, so the host is a name or an IPv4 address (no IPv6), the port a number from 1 to
/// 65535.
pub fn check_endpoint(e: &str) -> Result<(), String> {
    let how = "use host:port, e.g. \"192.168.1.20:50052\"";
    let Some((host, port)) = e.split_once(':') else {
        return Err(format!("rpc server {e:?} has no port: {how}"));
    };
    if port.contains(':') || host.starts_with('[') {
        return Err(format!(
            "rpc server {e:?}: llama.cpp's RPC client speaks IPv4 only; {how}"
        ));
    }
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("rpc server {e:?}: {how}"));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        _ => Err(format!(
            "rpc server {e:?}: the port must be a number from 1 to 65535; {how}"
        )),
    }
}

impl fmt::Display for RpcServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_local() {
            return f.write_str("local");
        }
        f.write_str(&self.0.join(","))
    }
}

/// The llama.cpp devices a cell may put layers on, by ggml name (`CUDA0`, `Vulkan0`), as
/// llama-bench's `-dev`: empty = llama.cpp's own choice (every GPU); `["CPU"]` = none (the
/// CPU holds everything). Names are checked against the devices present by the worker,
/// before the model is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DeviceSet(pub Vec<String>);

impl DeviceSet {
    /// llama.cpp's default device selection.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// Only the CPU: no device to offload to.
    pub fn is_cpu_only(&self) -> bool {
        self.0.len() == 1 && self.0[0].eq_ignore_ascii_case("cpu")
    }

    /// Parses one set from the command line: names separated by `,`; `auto` (or nothing) for
    /// llama.cpp's default.
    pub fn parse(s: &str) -> Result<DeviceSet, String> {
        let s = s.trim();
        if s.is_empty() || s == "auto" {
            return Ok(DeviceSet::default());
        }
        DeviceSet::checked(s.split(',').map(|x| x.trim().to_string()).collect())
    }

    /// Validates a set: ggml device names (letters, digits and `_-.[]:`), none twice, at most
    /// [`MAX_DEVICES`], and `CPU` only alone (the CPU holds whatever is not offloaded anyway).
    pub fn checked(v: Vec<String>) -> Result<DeviceSet, String> {
        let how = "use ggml device names as `quantbench list` shows them, e.g. \"Vulkan0\" or \
                   \"CUDA0\", or \"CPU\" alone for no GPU";
        if v.len() > MAX_DEVICES {
            return Err(format!(
                "devices lists {} devices; llama.cpp uses at most {MAX_DEVICES}",
                v.len()
            ));
        }
        for d in &v {
            let ok = !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.[]:".contains(c));
            if !ok {
                return Err(format!("devices: {d:?} is not a device name; {how}"));
            }
        }
        if let Some(d) = first_repeat(&v) {
            return Err(format!("device {d:?} is listed twice in one set"));
        }
        let set = DeviceSet(v);
        if set.0.len() > 1 && set.0.iter().any(|d| d.eq_ignore_ascii_case("cpu")) {
            return Err(format!(
                "devices: \"CPU\" goes alone (it means no GPU; the CPU holds whatever the \
                 listed devices do not); {how}"
            ));
        }
        Ok(set)
    }
}

impl fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            return f.write_str("auto");
        }
        f.write_str(&self.0.join(","))
    }
}

/// The allowed range of an integer parameter. models.toml and the command line check values
/// against the same limits and say the same thing when one is outside them.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub key: &'static str,
    pub min: i64,
    pub max: i64,
    /// Why the range is what it is, appended to the message (empty: nothing to add).
    pub why: &'static str,
}

impl Limit {
    pub const fn new(key: &'static str, min: i64, max: i64) -> Limit {
        Limit {
            key,
            min,
            max,
            why: "",
        }
    }

    /// The same limit, its message explaining the range.
    pub const fn because(self, why: &'static str) -> Limit {
        Limit { why, ..self }
    }

    /// `Ok(x)` inside the range, else the message both front ends show.
    pub fn check(&self, x: i64) -> Result<i64, String> {
        if x < self.min || x > self.max {
            let why = if self.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.why)
            };
            return Err(format!(
                "{} = {x} is out of range: use a value from {} to {}{why}",
                self.key, self.min, self.max
            ));
        }
        Ok(x)
    }

    /// Parses a command-line value and checks it.
    pub fn parse<T: TryFrom<i64>>(&self, s: &str) -> Result<T, String> {
        let x: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{} = {s:?}: use a whole number", self.key))?;
        T::try_from(self.check(x)?).map_err(|_| format!("{} = {x} is out of range", self.key))
    }

    /// Parses a comma-separated command-line list, each value checked.
    pub fn parse_list<T: TryFrom<i64>>(&self, s: &str) -> Result<Vec<T>, String> {
        s.split(',').map(|v| self.parse(v)).collect()
    }
}

/// Limits of the measurement parameters. `n_prompt` and `n_gen` stay far below what would
/// overflow a context size (`n_prompt + n_gen` fits in 32 bits).
pub mod limits {
    use super::Limit;
    pub const N_GEN: Limit = Limit::new("n_gen", 2, 1 << 20);
    pub const N_PROMPT: Limit = Limit::new("n_prompt", 1, 1 << 20);
    pub const REPETITIONS: Limit = Limit::new("repetitions", 1, 1000);
    pub const WARMUP: Limit = Limit::new("warmup", 0, 100);
    pub const N_BATCH: Limit = Limit::new("n_batch", 1, 1 << 20);
    pub const N_UBATCH: Limit = Limit::new("n_ubatch", 1, 1 << 20);
    pub const N_THREADS: Limit = Limit::new("n_threads", 1, 4096);
    pub const N_GPU_LAYERS: Limit = Limit::new("n_gpu_layers", 0, 100_000);
    pub const TIMEOUT_S: Limit = Limit::new("timeout_s", 1, 7 * 24 * 3600);
    pub const MAIN_GPU: Limit = Limit::new("main_gpu", 0, super::MAX_DEVICES as i64 - 1);
    pub const SEED: Limit = Limit::new("seed", 0, i64::MAX);
    /// The most an hour of a machine may cost (`usd_per_hour`): beyond it prices overflow.
    pub const MAX_USD_PER_HOUR: f64 = 1e6;
    /// The largest `--tokens-per-hour` (a million machines' worth of any model): beyond it the
    /// number of copies would not fit a count.
    pub const MAX_TOKENS_PER_HOUR: f64 = 1e15;
    pub const QUALITY_CTX: Limit = Limit::new("quality_ctx", 16, 1 << 20);
    pub const QUALITY_CHUNKS: Limit = Limit::new("quality_chunks", 1, 1 << 20);
    /// llama.cpp's `LLAMA_MAX_SEQ`: the most sequences one context holds.
    pub const N_PARALLEL: Limit = Limit::new("n_parallel", 1, 256)
        .because("llama.cpp holds at most 256 sequences in one context");
    pub const N_DEPTH: Limit = Limit::new("n_depth", 0, 1 << 24);
}

impl GpuLayers {
    /// `"all"` or a number of layers within [`limits::N_GPU_LAYERS`].
    pub fn parse(s: &str) -> Result<GpuLayers, String> {
        if s.trim() == "all" {
            return Ok(GpuLayers::All);
        }
        s.trim()
            .parse::<i64>()
            .map_err(|_| {
                format!("n_gpu_layers = {s:?}: use \"all\" or a number of layers (0 = CPU only)")
            })
            .and_then(Self::from_int)
    }

    /// A number of layers within [`limits::N_GPU_LAYERS`].
    pub fn from_int(n: i64) -> Result<GpuLayers, String> {
        limits::N_GPU_LAYERS
            .check(n)
            .map(|n| GpuLayers::N(n as u32))
            .map_err(|e| format!("{e} (or \"all\"; 0 = CPU only)"))
    }
}

/// KV cache element types accepted for `type_k` / `type_v`.
pub const KV_TYPES: &[&str] = &["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"];

/// Measurement parameters of a model, after defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub quants: Vec<Quant>,
    pub prompt: String,
    /// Tokens generated per repetition; each value is a separate cell.
    pub n_gen: Vec<u32>,
    /// Random prompt tokens for the prompt-processing test; each value is a separate cell.
    pub n_prompt: Vec<u32>,
    pub repetitions: u32,
    pub warmup: u32,
    /// Each value of these lists is a separate cell (the matrix is their product).
    pub n_gpu_layers: Vec<GpuLayers>,
    pub flash_attn: Vec<FlashAttn>,
    pub n_batch: Vec<u32>,
    pub n_ubatch: Vec<u32>,
    /// CPU threads; `None` = the number of cores.
    pub n_threads: Option<Vec<u32>>,
    pub type_k: Vec<String>,
    pub type_v: Vec<String>,
    /// Sequences decoded together (one `llama_decode` of B tokens per step).
    pub n_parallel: Vec<u32>,
    /// Tokens already in the context when pp and tg are measured.
    pub n_depth: Vec<u32>,
    /// With `n_parallel` > 1: one prompt copied to every sequence instead of B prompts.
    pub shared_prompt: bool,
    /// A cell (load included) running longer than this is stopped and marked failed.
    pub timeout_s: u64,
    /// Where the generation test's greedy sampling runs.
    pub sampling: Sampling,
    /// Multi-GPU placement; each value is a separate cell.
    pub split_mode: Vec<SplitMode>,
    /// The GPU of `split_mode = "none"`; each value is a separate cell.
    pub main_gpu: Vec<u32>,
    /// Shares per GPU for the split modes; each value is a separate cell.
    pub tensor_split: Vec<TensorSplit>,
    /// llama.cpp RPC servers whose devices join the local ones; each set is a separate cell.
    pub rpc: Vec<RpcServers>,
    /// The devices a cell may use (ggml names); each set is a separate cell.
    pub devices: Vec<DeviceSet>,
    /// Score each quant against the reference (`None`: on for real weights, off for synthetic).
    pub quality: Option<bool>,
    /// The reference quant (`None`: the model's most precise quant).
    pub quality_ref: Option<Quant>,
    /// The corpus file (`None`: sequences sampled from the reference).
    pub quality_corpus: Option<PathBuf>,
    /// Tokens per scored chunk.
    pub quality_ctx: u32,
    /// How many chunks (`None`: enough for about 8k scored tokens).
    pub quality_chunks: Option<u32>,
    /// Where the reference runs (`None`: on the cell's own placement); `["CPU"]` scores a
    /// backend against the CPU's figures.
    pub quality_ref_devices: Option<DeviceSet>,
    /// Measure through a llama-server started per cell under the workload (`true`), in
    /// process (`false`), or both (each value is a separate cell).
    pub serve: Vec<bool>,
    /// The llama-server binary for served cells (`None`: the pinned build, then `PATH`).
    pub server_bin: Option<PathBuf>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            quants: ["F16", "Q8_0", "Q4_K_M"]
                .iter()
                .map(|q| Quant::parse(q).expect("known"))
                .collect(),
            prompt: "The future of artificial intelligence is".into(),
            n_gen: vec![50],
            n_prompt: vec![512],
            repetitions: 5,
            warmup: 1,
            n_gpu_layers: vec![GpuLayers::All],
            flash_attn: vec![FlashAttn::Auto],
            n_batch: vec![2048],
            n_ubatch: vec![512],
            n_threads: None,
            type_k: vec!["f16".into()],
            type_v: vec!["f16".into()],
            n_parallel: vec![1],
            n_depth: vec![0],
            shared_prompt: false,
            timeout_s: 1800,
            sampling: Sampling::Backend,
            split_mode: vec![SplitMode::Layer],
            main_gpu: vec![0],
            tensor_split: vec![TensorSplit::default()],
            rpc: vec![RpcServers::default()],
            devices: vec![DeviceSet::default()],
            quality: None,
            quality_ref: None,
            quality_corpus: None,
            quality_ctx: 512,
            quality_chunks: None,
            quality_ref_devices: None,
            serve: vec![false],
            server_bin: None,
        }
    }
}

/// Where a model's files come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Random weights of a real architecture, written by quantbench.
    Synthetic { preset: &'static Preset, seed: u64 },
    /// Local files; `template` is absolute (relative paths are resolved against the config's
    /// folder) and may hold `{quant}` / `{QUANT}`.
    Path {
        template: String,
        /// A missing quant is made from the most precise file present (a missing F16 by
        /// dequantizing the best quantized one), written at its templated path.
        derive: bool,
    },
    /// A server quantbench does not start (`http://host:port/v1`): no files, no quants.
    Endpoint {
        url: String,
        /// Environment variable holding the API key.
        api_key_env: Option<String>,
        /// Model name to put in requests (`None`: the first one the server lists).
        model_name: Option<String>,
    },
    /// A Hugging Face hub repository.
    Hf {
        repo: String,
        revision: String,
        /// File name template with `{quant}` / `{QUANT}`; `None` = discover from the listing.
        file: Option<String>,
        derive: bool,
    },
}

impl Source {
    /// Short kind name used in reports: `synthetic`, `path` or `hf`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Synthetic { .. } => "synthetic",
            Source::Path { .. } => "path",
            Source::Hf { .. } => "hf",
            Source::Endpoint { .. } => "endpoint",
        }
    }
}

/// One `[[model]]` entry, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub label: String,
    pub source: Source,
    pub params: Params,
    /// The serving workload and its load points, for a model with served cells or an endpoint.
    pub serve: Option<ServeSpec>,
}

/// The validated matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub path: PathBuf,
    pub models: Vec<ModelSpec>,
    /// Regression thresholds (`[compare]`), percent by metric.
    pub compare: crate::metrics::Thresholds,
    /// `[cost]`: what an hour of the machine costs.
    pub cost: Cost,
    /// `[slo]`: what every user must still get.
    pub slo: Slo,
    /// The file's `[workload]` (defaults where it has none), for `--endpoint`.
    pub workload: ServeSpec,
    /// `[tune]`: the targets of `quantbench tune` (the command line overrides each).
    pub tune: TuneTable,
}

/// `[tune]`: the model and targets `quantbench tune` searches for, as the file gives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuneTable {
    pub model: Option<String>,
    pub min_tok_s: Option<f64>,
    pub max_ttft_ms: Option<f64>,
    pub max_kld: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    pub n_ctx: Option<u32>,
    pub rate: Option<f64>,
}

/// `[cost]`: the price of an hour of the machine, for `usd_per_mtok`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_hour: Option<f64>,
}

/// `[slo]`: the service every sequence must get for a cell to count as serving the load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Decode speed one sequence sees (`decode_tok_s`), at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_seq_tok_s: Option<f64>,
    /// Time to first token (`ttft_ms`), at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_ms: Option<f64>,
    /// Served cells: time per output token after the first, at most (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tpot_ms: Option<f64>,
    /// Served cells: request latency from sending to the last token, at most (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_e2e_ms: Option<f64>,
    /// Served cells: the share of requests (0–100) each target must hold for (default 99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Served cells: the fraction of requests (0–1) that must meet every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_goodput: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.min_seq_tok_s.is_some() || self.max_ttft_ms.is_some()
    }

    /// The per-request targets of served cells.
    pub fn requests(&self) -> crate::serving_stats::RequestSlo {
        crate::serving_stats::RequestSlo {
            max_ttft_ms: self.max_ttft_ms,
            max_tpot_ms: self.max_tpot_ms,
            max_e2e_ms: self.max_e2e_ms,
            percentile: self.percentile,
            min_goodput: self.min_goodput,
        }
    }
}

/// Fills `{quant}` (lower case) and `{QUANT}` (upper case) in a file template.
pub fn fill_template(template: &str, quant: Quant) -> String {
    template
        .replace("{quant}", &quant.name().to_lowercase())
        .replace("{QUANT}", quant.name())
}

fn has_quant_placeholder(template: &str) -> bool {
    template.contains("{quant}") || template.contains("{QUANT}")
}

// ---- raw, span-carrying structures -------------------------------------------------------

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<i64> {
        match self {
            OneOrMany::One(x) => vec![*x],
            OneOrMany::Many(xs) => xs.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrMany {
    One(String),
    Many(Vec<String>),
}

impl StrOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            StrOrMany::One(s) => vec![s.clone()],
            StrOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

/// `n_gpu_layers`: `"all"`, a number, or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum LayersOrMany {
    One(IntOrString),
    Many(Vec<IntOrString>),
}

/// Declares a raw table struct holding the per-model parameters plus `$extra` fields, so that
/// `[defaults]` and `[[model]]` accept exactly the same parameter keys.
macro_rules! raw_table {
    ($name:ident { $($extra:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($extra: Option<Spanned<$ty>>,)*
            quants: Option<Spanned<Vec<Spanned<String>>>>,
            prompt: Option<Spanned<String>>,
            n_gen: Option<Spanned<OneOrMany>>,
            n_prompt: Option<Spanned<OneOrMany>>,
            repetitions: Option<Spanned<i64>>,
            warmup: Option<Spanned<i64>>,
            n_gpu_layers: Option<Spanned<LayersOrMany>>,
            flash_attn: Option<Spanned<StrOrMany>>,
            n_batch: Option<Spanned<OneOrMany>>,
            n_ubatch: Option<Spanned<OneOrMany>>,
            n_threads: Option<Spanned<OneOrMany>>,
            type_k: Option<Spanned<StrOrMany>>,
            type_v: Option<Spanned<StrOrMany>>,
            n_parallel: Option<Spanned<OneOrMany>>,
            n_depth: Option<Spanned<OneOrMany>>,
            shared_prompt: Option<Spanned<bool>>,
            timeout_s: Option<Spanned<i64>>,
            sampling: Option<Spanned<String>>,
            split_mode: Option<Spanned<StrOrMany>>,
            main_gpu: Option<Spanned<OneOrMany>>,
            tensor_split: Option<Spanned<toml::Value>>,
            rpc: Option<Spanned<toml::Value>>,
            devices: Option<Spanned<toml::Value>>,
            quality: Option<Spanned<bool>>,
            quality_ref: Option<Spanned<String>>,
            quality_corpus: Option<Spanned<String>>,
            quality_ctx: Option<Spanned<i64>>,
            quality_chunks: Option<Spanned<i64>>,
            quality_ref_devices: Option<Spanned<toml::Value>>,
            serve: Option<Spanned<toml::Value>>,
            server_bin: Option<Spanned<String>>,
        }
        impl $name {
            fn params(&self) -> RawParams<'_> {
                RawParams {
                    quants: self.quants.as_ref(),
                    prompt: self.prompt.as_ref(),
                    n_gen: self.n_gen.as_ref(),
                    n_prompt: self.n_prompt.as_ref(),
                    repetitions: self.repetitions.as_ref(),
                    warmup: self.warmup.as_ref(),
                    n_gpu_layers: self.n_gpu_layers.as_ref(),
                    flash_attn: self.flash_attn.as_ref(),
                    n_batch: self.n_batch.as_ref(),
                    n_ubatch: self.n_ubatch.as_ref(),
                    n_threads: self.n_threads.as_ref(),
                    type_k: self.type_k.as_ref(),
                    type_v: self.type_v.as_ref(),
                    n_parallel: self.n_parallel.as_ref(),
                    n_depth: self.n_depth.as_ref(),
                    shared_prompt: self.shared_prompt.as_ref(),
                    timeout_s: self.timeout_s.as_ref(),
                    sampling: self.sampling.as_ref(),
                    split_mode: self.split_mode.as_ref(),
                    main_gpu: self.main_gpu.as_ref(),
                    tensor_split: self.tensor_split.as_ref(),
                    rpc: self.rpc.as_ref(),
                    devices: self.devices.as_ref(),
                    quality: self.quality.as_ref(),
                    quality_ref: self.quality_ref.as_ref(),
                    quality_corpus: self.quality_corpus.as_ref(),
                    quality_ctx: self.quality_ctx.as_ref(),
                    quality_chunks: self.quality_chunks.as_ref(),
                    quality_ref_devices: self.quality_ref_devices.as_ref(),
                    serve: self.serve.as_ref(),
                    server_bin: self.server_bin.as_ref(),
                }
            }
        }
    };
}

raw_table!(RawDefaults {});
raw_table!(RawModel {
    name: String,
    label: String,
    synthetic: String,
    seed: i64,
    hf: String,
    revision: String,
    file: String,
    derive: bool,
    path: String,
    endpoint: String,
    api_key_env: String,
    model_name: String,
    workload: serving::RawWorkload,
});

struct RawParams<'a> {
    quants: Option<&'a Spanned<Vec<Spanned<String>>>>,
    prompt: Option<&'a Spanned<String>>,
    n_gen: Option<&'a Spanned<OneOrMany>>,
    n_prompt: Option<&'a Spanned<OneOrMany>>,
    repetitions: Option<&'a Spanned<i64>>,
    warmup: Option<&'a Spanned<i64>>,
    n_gpu_layers: Option<&'a Spanned<LayersOrMany>>,
    flash_attn: Option<&'a Spanned<StrOrMany>>,
    n_batch: Option<&'a Spanned<OneOrMany>>,
    n_ubatch: Option<&'a Spanned<OneOrMany>>,
    n_threads: Option<&'a Spanned<OneOrMany>>,
    type_k: Option<&'a Spanned<StrOrMany>>,
    type_v: Option<&'a Spanned<StrOrMany>>,
    n_parallel: Option<&'a Spanned<OneOrMany>>,
    n_depth: Option<&'a Spanned<OneOrMany>>,
    shared_prompt: Option<&'a Spanned<bool>>,
    timeout_s: Option<&'a Spanned<i64>>,
    sampling: Option<&'a Spanned<String>>,
    split_mode: Option<&'a Spanned<StrOrMany>>,
    main_gpu: Option<&'a Spanned<OneOrMany>>,
    tensor_split: Option<&'a Spanned<toml::Value>>,
    rpc: Option<&'a Spanned<toml::Value>>,
    devices: Option<&'a Spanned<toml::Value>>,
    quality: Option<&'a Spanned<bool>>,
    quality_ref: Option<&'a Spanned<String>>,
    quality_corpus: Option<&'a Spanned<String>>,
    quality_ctx: Option<&'a Spanned<i64>>,
    quality_chunks: Option<&'a Spanned<i64>>,
    quality_ref_devices: Option<&'a Spanned<toml::Value>>,
    serve: Option<&'a Spanned<toml::Value>>,
    server_bin: Option<&'a Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    schema: Option<Spanned<i64>>,
    defaults: Option<RawDefaults>,
    model: Option<Vec<Spanned<RawModel>>>,
    compare: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    cost: Option<RawCost>,
    slo: Option<RawSlo>,
    workload: Option<serving::RawWorkload>,
    tune: Option<RawTune>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTune {
    model: Option<Spanned<String>>,
    min_tok_s: Option<Spanned<f64>>,
    max_ttft_ms: Option<Spanned<f64>>,
    max_kld: Option<Spanned<f64>>,
    memory: Option<Spanned<toml::Value>>,
    n_ctx: Option<Spanned<i64>>,
    rate: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCost {
    usd_per_hour: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    min_seq_tok_s: Option<Spanned<f64>>,
    max_ttft_ms: Option<Spanned<f64>>,
    max_tpot_ms: Option<Spanned<f64>>,
    max_e2e_ms: Option<Spanned<f64>>,
    percentile: Option<Spanned<f64>>,
    min_goodput: Option<Spanned<f64>>,
}

// ---- loading --------------------------------------------------------------------------------

/// Reads and validates a models.toml file.
pub fn load(path: &Path) -> Result<Matrix, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found; pass --config PATH or create models.toml (every key: docs/config.md)"
                .into()
        } else {
            format!("cannot read: {e}")
        },
    })?;
    parse(&text, path)
}

/// Parses and validates models.toml text; `path` is used for messages and relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Matrix, ConfigError> {
    let cx = Cx { text, path };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, explain_serde_message(e.message()))
    })?;
    cx.schema(raw.schema.as_ref())?;
    let defaults = match &raw.defaults {
        Some(d) => cx.params(&d.params(), &Params::default())?,
        None => Params::default(),
    };
    let top_workload = raw.workload.clone().unwrap_or_default();
    let models = cx.models(&raw.model.unwrap_or_default(), &defaults, &top_workload)?;
    let compare = cx.compare(raw.compare.iter().flatten())?;
    let positive = |v: &Option<Spanned<f64>>, key: &str| -> Result<Option<f64>, ConfigError> {
        match v {
            Some(x) if !(x.get_ref().is_finite() && *x.get_ref() > 0.0) => Err(cx.err(
                x.span(),
                format!("{key} must be a number above 0, e.g. {key} = 3.5"),
            )),
            Some(x) => Ok(Some(*x.get_ref())),
            None => Ok(None),
        }
    };
    let within = |v: &Option<Spanned<f64>>,
                  key: &str,
                  max: f64,
                  eg: &str|
     -> Result<Option<f64>, ConfigError> {
        match v {
            Some(x) if !(x.get_ref().is_finite() && *x.get_ref() > 0.0 && *x.get_ref() <= max) => {
                Err(cx.err(
                    x.span(),
                    format!("{key} must be above 0 and at most {max}: {eg}"),
                ))
            }
            Some(x) => Ok(Some(*x.get_ref())),
            None => Ok(None),
        }
    };
    let cost = Cost {
        usd_per_hour: within(
            &raw.cost.as_ref().and_then(|c| c.usd_per_hour.clone()),
            "usd_per_hour",
            limits::MAX_USD_PER_HOUR,
            "usd_per_hour = 3.5",
        )?,
    };
    let slo = Slo {
        min_seq_tok_s: positive(
            &raw.slo.as_ref().and_then(|c| c.min_seq_tok_s.clone()),
            "min_seq_tok_s",
        )?,
        max_ttft_ms: positive(
            &raw.slo.as_ref().and_then(|c| c.max_ttft_ms.clone()),
            "max_ttft_ms",
        )?,
        max_tpot_ms: positive(
            &raw.slo.as_ref().and_then(|c| c.max_tpot_ms.clone()),
            "max_tpot_ms",
        )?,
        max_e2e_ms: positive(
            &raw.slo.as_ref().and_then(|c| c.max_e2e_ms.clone()),
            "max_e2e_ms",
        )?,
        percentile: within(
            &raw.slo.as_ref().and_then(|c| c.percentile.clone()),
            "percentile",
            100.0,
            "e.g. percentile = 99 (the targets hold for 99% of requests)",
        )?,
        min_goodput: within(
            &raw.slo.as_ref().and_then(|c| c.min_goodput.clone()),
            "min_goodput",
            1.0,
            "a fraction of requests, e.g. min_goodput = 0.99",
        )?,
    };
    cx.check_searches(&models, &slo)?;
    Ok(Matrix {
        path: path.to_path_buf(),
        models,
        compare,
        cost,
        slo,
        workload: cx.serve_spec(&top_workload)?,
        tune: cx.tune(raw.tune.as_ref())?,
    })
}

/// Limits of `[tune]` / `quantbench tune`.
pub mod tune_limits {
    use super::Limit;
    /// The context a tuned configuration must hold.
    pub const N_CTX: Limit = Limit::new("n_ctx", 16, 1 << 24);
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

/// A memory size as users write it: `8GiB`, `8GB`, `8000MB`, `512MiB`, or bytes; above 0.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let b = parse_size(s)?;
    if b == 0 {
        return Err(format!("{s:?}: a memory budget must be above 0"));
    }
    Ok(b)
}

impl Cx<'_> {
    /// `[tune]`: numbers above 0, a memory size, a context within range, a model of the file.
    fn tune(&self, t: Option<&RawTune>) -> Result<TuneTable, ConfigError> {
        let Some(t) = t else {
            return Ok(TuneTable::default());
        };
        let pos = |v: &Option<Spanned<f64>>, key: &str| -> Result<Option<f64>, ConfigError> {
            match v {
                Some(x) if !(x.get_ref().is_finite() && *x.get_ref() > 0.0) => {
                    Err(self.err(x.span(), format!("[tune] {key} must be a number above 0")))
                }
                Some(x) => Ok(Some(*x.get_ref())),
                None => Ok(None),
            }
        };
        let memory = match &t.memory {
            None => None,
            Some(v) => Some(match v.get_ref() {
                toml::Value::String(s) => parse_memory(s).map_err(|m| self.err(v.span(), m))?,
                toml::Value::Integer(i) if *i > 0 => *i as u64,
                _ => {
                    return Err(self.err(
                        v.span(),
                        "[tune] memory takes a size like \"8GiB\", \"8GB\" or \"8000MB\"".into(),
                    ))
                }
            }),
        };
        Ok(TuneTable {
            model: t.model.as_ref().map(|m| m.get_ref().clone()),
            min_tok_s: pos(&t.min_tok_s, "min_tok_s")?,
            max_ttft_ms: pos(&t.max_ttft_ms, "max_ttft_ms")?,
            max_kld: pos(&t.max_kld, "max_kld")?,
            memory,
            n_ctx: match &t.n_ctx {
                Some(n) => Some(self.int(n, &tune_limits::N_CTX)?),
                None => None,
            },
            rate: pos(&t.rate, "rate")?,
        })
    }
}

/// The model `--endpoint URL [--api-key-env VAR]` measures instead of the matrix's: a server
/// quantbench does not start, under the file's `[workload]`.
pub fn endpoint_model(
    matrix: &Matrix,
    url: &str,
    api_key_env: Option<&str>,
) -> Result<ModelSpec, ConfigError> {
    let text = format!("--endpoint {url}");
    let cx = Cx {
        text: &text,
        path: Path::new("command line"),
    };
    let key = api_key_env.map(|k| Spanned::new(0..0, k.to_string()));
    let source = cx.endpoint_source(
        &Spanned::new(11..text.len(), url.to_string()),
        key.as_ref(),
        None,
    )?;
    let label = match &source {
        // the label is shown and written everywhere: never with the URL's password
        Source::Endpoint { url, .. } => crate::redact::strip_userinfo(url).into_owned(),
        _ => crate::redact::strip_userinfo(url).into_owned(),
    };
    Ok(ModelSpec {
        name: "endpoint".into(),
        label,
        source,
        params: Params {
            quants: vec![Quant::SERVER],
            serve: vec![true],
            ..Params::default()
        },
        serve: Some(matrix.workload.clone()),
    })
}

/// Adds a "did you mean" hint to serde's "unknown field" messages.
fn explain_serde_message(msg: &str) -> String {
    let msg = msg.trim();
    // the list-or-value keys: say what they take, not serde's type names
    for (ty, takes) in [
        (
            "OneOrMany",
            "a whole number or a list of them, e.g. 4 or [1, 4, 16]",
        ),
        (
            "StrOrMany",
            "a string or a list of strings, e.g. \"on\" or [\"on\", \"off\"]",
        ),
        (
            "LayersOrMany",
            "\"all\", a number of layers, or a list of them, e.g. [0, 16, \"all\"]",
        ),
    ] {
        if msg.contains(&format!("untagged enum {ty}")) {
            return format!("expected {takes}");
        }
    }
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(field, c), *c))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!("unknown key {field:?}; did you mean {c:?}?"),
        None => format!(
            "unknown key {field:?}; allowed keys here: {}",
            candidates.join(", ")
        ),
    }
}

struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            col,
            message,
        }
    }

    fn int<T: TryFrom<i64>>(&self, v: &Spanned<i64>, limit: &Limit) -> Result<T, ConfigError> {
        let x = limit
            .check(*v.get_ref())
            .map_err(|m| self.err(v.span(), m))?;
        T::try_from(x)
            .map_err(|_| self.err(v.span(), format!("{} = {x} is out of range", limit.key)))
    }

    fn int_list(&self, v: &Spanned<OneOrMany>, limit: &Limit) -> Result<Vec<u32>, ConfigError> {
        let values = v.get_ref().to_vec();
        if values.is_empty() {
            return Err(self.err(v.span(), format!("{} must not be an empty list", limit.key)));
        }
        if let Some(x) = first_repeat(&values) {
            return Err(self.err(v.span(), format!("{} {x} is listed twice", limit.key)));
        }
        values
            .into_iter()
            .map(|x| {
                limit
                    .check(x)
                    .map(|x| x as u32)
                    .map_err(|m| self.err(v.span(), m))
            })
            .collect()
    }

    /// Checks `schema = 1`.
    fn schema(&self, schema: Option<&Spanned<i64>>) -> Result<(), ConfigError> {
        match schema {
            None => Err(self.err(0..0, "missing `schema = 1` at the top of the file".into())),
            Some(s) if *s.get_ref() != SCHEMA => Err(self.err(
                s.span(),
                format!(
                    "schema {} is not supported by this quantbench (it reads schema {SCHEMA})",
                    s.get_ref()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Validates the `[[model]]` entries (at least one, names unique) over `defaults`.
    fn models(
        &self,
        raw_models: &[Spanned<RawModel>],
        defaults: &Params,
        workload: &serving::RawWorkload,
    ) -> Result<Vec<ModelSpec>, ConfigError> {
        if raw_models.is_empty() {
            return Err(self.err(
                self.text.len()..self.text.len(),
                "no [[model]] entries: add at least one (the format: docs/config.md)".into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut models = Vec::new();
        for m in raw_models {
            let spec = self.model(m, defaults, workload)?;
            if !seen.insert(spec.name.clone()) {
                let span = m.get_ref().name.as_ref().map_or(m.span(), Spanned::span);
                return Err(self.err(
                    span,
                    format!(
                        "duplicate model name {:?}: names are the keys of reports and must be unique",
                        spec.name
                    ),
                ));
            }
            models.push(spec);
        }
        Ok(models)
    }

    /// The `[compare]` thresholds: known metric names, percentages from 0 to 1000.
    fn compare<'t>(
        &self,
        entries: impl Iterator<Item = (&'t Spanned<String>, &'t Spanned<toml::Value>)>,
    ) -> Result<crate::metrics::Thresholds, ConfigError> {
        let mut compare = crate::metrics::Thresholds::default();
        for (k, v) in entries {
            let def = self.compare_metric(k)?;
            let pct = match v.get_ref() {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                _ => f64::NAN,
            };
            if !(0.0..=1000.0).contains(&pct) {
                return Err(self.err(
                    v.span(),
                    format!(
                        "[compare] {} must be a percentage, e.g. {} = 5",
                        def.name, def.name
                    ),
                ));
            }
            compare.0.insert(def.name.to_string(), pct);
        }
        Ok(compare)
    }

    /// The metric a `[compare]` key names, or an error with the closest known name.
    fn compare_metric(
        &self,
        k: &Spanned<String>,
    ) -> Result<&'static crate::metrics::MetricDef, ConfigError> {
        crate::metrics::metric(k.get_ref()).ok_or_else(|| {
            let names: Vec<&str> = crate::metrics::METRICS.iter().map(|m| m.name).collect();
            let hint = names
                .iter()
                .map(|n| (strsim::jaro_winkler(k.get_ref(), n), *n))
                .filter(|(s, _)| *s > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(String::new(), |(_, n)| format!("did you mean {n:?}? "));
            self.err(
                k.span(),
                format!(
                    "[compare]: unknown metric {:?}; {hint}known: {}",
                    k.get_ref(),
                    names.join(", ")
                ),
            )
        })
    }

    /// `base` with the keys set in `r` applied, checked in the order of [`Params`]' fields.
    fn params(&self, r: &RawParams<'_>, base: &Params) -> Result<Params, ConfigError> {
        let mut p = base.clone();
        self.workload(r, &mut p)?;
        self.context(r, &mut p)?;
        self.placement(r, &mut p)?;
        self.quality(r, &mut p)?;
        self.serving_params(r, &mut p)?;
        Ok(p)
    }

    /// The quality test: on or off, reference, corpus (relative to models.toml), chunk size and
    /// count.
    fn quality(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(v) = r.quality {
            p.quality = Some(*v.get_ref());
        }
        if let Some(v) = r.quality_ref {
            let q = Quant::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "quality_ref: unknown quant {:?}; known: {}",
                        v.get_ref(),
                        Quant::all_names().join(", ")
                    ),
                )
            })?;
            p.quality_ref = Some(q);
        }
        if let Some(v) = r.quality_corpus {
            if v.get_ref().trim().is_empty() {
                return Err(self.err(v.span(), "quality_corpus must name a file".into()));
            }
            p.quality_corpus = Some(self.beside_config(v.get_ref()));
        }
        if let Some(v) = r.quality_ctx {
            p.quality_ctx = self.int(v, &limits::QUALITY_CTX)?;
        }
        if let Some(v) = r.quality_chunks {
            p.quality_chunks = Some(self.int(v, &limits::QUALITY_CHUNKS)?);
        }
        if let Some(v) = r.quality_ref_devices {
            let sets = device_sets(v.get_ref()).map_err(|m| self.err(v.span(), m))?;
            let [set] = <[DeviceSet; 1]>::try_from(sets).map_err(|_| {
                self.err(
                    v.span(),
                    "quality_ref_devices takes one list of device names (the reference runs \
                     once per cell), e.g. [\"CPU\"]"
                        .into(),
                )
            })?;
            p.quality_ref_devices = Some(set);
        }
        Ok(())
    }

    /// A path as written in models.toml: relative ones are relative to the file's folder.
    fn beside_config(&self, p: &str) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        }
    }

    /// What is measured and how often: quants, prompt, sizes, repetitions, warm-up.
    fn workload(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(q) = r.quants {
            p.quants = self.quants(q)?;
        }
        if let Some(s) = r.prompt {
            if s.get_ref().trim().is_empty() {
                return Err(self.err(s.span(), "prompt must not be empty".into()));
            }
            p.prompt = s.get_ref().clone();
        }
        if let Some(v) = r.n_gen {
            // decode_tok_s needs at least two generated tokens.
            p.n_gen = self.int_list(v, &limits::N_GEN)?;
        }
        if let Some(v) = r.n_prompt {
            p.n_prompt = self.int_list(v, &limits::N_PROMPT)?;
        }
        if let Some(v) = r.repetitions {
            p.repetitions = self.int(v, &limits::REPETITIONS)?;
        }
        if let Some(v) = r.warmup {
            p.warmup = self.int(v, &limits::WARMUP)?;
        }
        Ok(())
    }

    /// How the model is loaded and its context set up: offloaded layers, attention, batch
    /// sizes, threads, KV cache types, timeout, sampling.
    fn context(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(v) = r.n_gpu_layers {
            p.n_gpu_layers = self.gpu_layers(v)?;
        }
        if let Some(v) = r.flash_attn {
            let names = self.str_list(v, "flash_attn")?;
            p.flash_attn = names
                .iter()
                .map(|n| self.one_of(n, "flash_attn", &FlashAttn::ALL, FlashAttn::name))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = r.n_batch {
            p.n_batch = self.int_list(v, &limits::N_BATCH)?;
        }
        if let Some(v) = r.n_ubatch {
            p.n_ubatch = self.int_list(v, &limits::N_UBATCH)?;
        }
        if let Some(v) = r.n_threads {
            p.n_threads = Some(self.int_list(v, &limits::N_THREADS)?);
        }
        if let Some(v) = r.type_k {
            p.type_k = self.kv_types(v, "type_k")?;
        }
        if let Some(v) = r.type_v {
            p.type_v = self.kv_types(v, "type_v")?;
        }
        self.load(r, p)?;
        if let Some(v) = r.timeout_s {
            p.timeout_s = self.int(v, &limits::TIMEOUT_S)?;
        }
        if let Some(v) = r.sampling {
            p.sampling = self.one_of(v, "sampling", &Sampling::ALL, Sampling::name)?;
        }
        Ok(())
    }

    /// Multi-GPU placement: split modes, main GPUs, tensor splits.
    fn placement(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(v) = r.split_mode {
            p.split_mode = self.split_modes(v)?;
        }
        if let Some(v) = r.main_gpu {
            let gpus = self.int_list(v, &limits::MAIN_GPU)?;
            if let Some(g) = first_repeat(&gpus) {
                return Err(self.err(v.span(), format!("main_gpu {g} is listed twice")));
            }
            p.main_gpu = gpus;
        }
        if let Some(v) = r.tensor_split {
            p.tensor_split = tensor_splits(v.get_ref()).map_err(|m| self.err(v.span(), m))?;
        }
        if let Some(v) = r.rpc {
            p.rpc = rpc_sets(v.get_ref()).map_err(|m| self.err(v.span(), m))?;
        }
        if let Some(v) = r.devices {
            p.devices = device_sets(v.get_ref()).map_err(|m| self.err(v.span(), m))?;
        }
        Ok(())
    }

    /// `quants`: known names, at least one, none twice.
    fn quants(&self, q: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Quant>, ConfigError> {
        if q.get_ref().is_empty() {
            return Err(self.err(q.span(), "quants must list at least one quant".into()));
        }
        let mut quants = Vec::new();
        for s in q.get_ref() {
            let quant = Quant::parse(s.get_ref())
                .filter(|q| q.is_file_type())
                .ok_or_else(|| {
                    self.err(
                        s.span(),
                        format!(
                            "unknown quant {:?}; known: {}",
                            s.get_ref(),
                            Quant::all_names().join(", ")
                        ),
                    )
                })?;
            if quants.contains(&quant) {
                return Err(self.err(s.span(), format!("quant {quant} is listed twice")));
            }
            quants.push(quant);
        }
        Ok(quants)
    }

    /// A keyword value: the one of `all` whose `name` it is (exactly), else the choices.
    fn one_of<T: Copy>(
        &self,
        v: &Spanned<String>,
        key: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<T, ConfigError> {
        let given = v.get_ref().as_str();
        all.iter()
            .copied()
            .find(|x| name(*x) == given)
            .ok_or_else(|| {
                let names: Vec<String> = all.iter().map(|x| format!("{:?}", name(*x))).collect();
                let choices = match names.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                };
                self.err(v.span(), format!("{key} = {given:?}: use {choices}"))
            })
    }

    /// `type_k` / `type_v`: one of [`KV_TYPES`] or a list of them, in any case; stored lower
    /// case.
    fn kv_types(&self, v: &Spanned<StrOrMany>, key: &str) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for n in self.str_list(v, key)? {
            let t = n.get_ref().to_lowercase();
            if !KV_TYPES.contains(&t.as_str()) {
                return Err(self.err(
                    n.span(),
                    format!(
                        "{key} = {:?}: use one of {}",
                        n.get_ref(),
                        KV_TYPES.join(", ")
                    ),
                ));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The strings of a string-or-list key, each with the key's span; not empty, none twice.
    fn str_list(
        &self,
        v: &Spanned<StrOrMany>,
        key: &str,
    ) -> Result<Vec<Spanned<String>>, ConfigError> {
        let names = v.get_ref().to_vec();
        if names.is_empty() {
            return Err(self.err(v.span(), format!("{key} must not be an empty list")));
        }
        if let Some(n) = first_repeat(&names) {
            return Err(self.err(v.span(), format!("{key} {n:?} is listed twice")));
        }
        Ok(names
            .into_iter()
            .map(|n| Spanned::new(v.span(), n))
            .collect())
    }

    /// `n_gpu_layers`: `"all"`, a number of layers, or a list of them.
    fn gpu_layers(&self, v: &Spanned<LayersOrMany>) -> Result<Vec<GpuLayers>, ConfigError> {
        let one = |x: &IntOrString| match x {
            IntOrString::Str(s) => GpuLayers::parse(s),
            IntOrString::Int(n) => GpuLayers::from_int(*n),
        };
        let out: Vec<GpuLayers> = match v.get_ref() {
            LayersOrMany::One(x) => vec![one(x)],
            LayersOrMany::Many(xs) => xs.iter().map(one).collect(),
        }
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|m| self.err(v.span(), m))?;
        if out.is_empty() {
            return Err(self.err(v.span(), "n_gpu_layers must not be an empty list".into()));
        }
        Ok(out)
    }

    /// Load on the context: parallel sequences, depth, a shared prompt.
    fn load(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(v) = r.n_parallel {
            p.n_parallel = self.int_list(v, &limits::N_PARALLEL)?;
        }
        if let Some(v) = r.n_depth {
            p.n_depth = self.int_list(v, &limits::N_DEPTH)?;
        }
        if let Some(v) = r.shared_prompt {
            p.shared_prompt = *v.get_ref();
        }
        Ok(())
    }

    /// `split_mode`: one mode or a list, known names, none twice.
    fn split_modes(&self, v: &Spanned<StrOrMany>) -> Result<Vec<SplitMode>, ConfigError> {
        let names = v.get_ref().to_vec();
        if names.is_empty() {
            return Err(self.err(v.span(), "split_mode must not be an empty list".into()));
        }
        let mut modes = Vec::new();
        for n in names {
            let m = SplitMode::parse(&n).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "split_mode = {n:?}: use \"none\" (one GPU), \"layer\", \"row\" or \"tensor\""
                    ),
                )
            })?;
            if modes.contains(&m) {
                return Err(self.err(v.span(), format!("split_mode {n:?} is listed twice")));
            }
            modes.push(m);
        }
        Ok(modes)
    }

    /// One `[[model]]` entry: its name, its parameters over `defaults`, then its one source.
    fn model(
        &self,
        m: &Spanned<RawModel>,
        defaults: &Params,
        workload: &serving::RawWorkload,
    ) -> Result<ModelSpec, ConfigError> {
        let r = m.get_ref();
        let name = self.model_name(m)?;
        let params = self.params(&r.params(), defaults)?;
        self.one_source(r, name)?;
        let source = if let Some(e) = &r.endpoint {
            self.endpoint_model(m, name, e)?
        } else if let Some(s) = &r.synthetic {
            self.synthetic_source(m, name, s)?
        } else if let Some(h) = &r.hf {
            self.hf_source(m, name, h, &params)?
        } else {
            let p = r.path.as_ref().expect("one source is set");
            self.path_source(m, name, p, &params)?
        };
        for (key, present) in [
            ("api_key_env", r.api_key_env.is_some()),
            ("model_name", r.model_name.is_some()),
        ] {
            self.only_for(m, name, key, present && r.endpoint.is_none(), "endpoint")?;
        }
        let endpoint = matches!(source, Source::Endpoint { .. });
        let mut params = params;
        if endpoint {
            params.quants = vec![Quant::SERVER];
            params.serve = vec![true];
        }
        let served = endpoint || params.serve.contains(&true);
        let serve = if served {
            let own = r.workload.as_ref().map(|w| w.get_ref().over(workload));
            Some(self.serve_spec(own.as_ref().unwrap_or(workload))?)
        } else {
            None
        };
        Ok(ModelSpec {
            name: name.get_ref().clone(),
            label: r
                .label
                .as_ref()
                .map_or_else(|| name.get_ref().clone(), |l| l.get_ref().clone()),
            source,
            params,
            serve,
        })
    }

    /// A model that is a server quantbench does not start: no file keys, no quants.
    fn endpoint_model(
        &self,
        m: &Spanned<RawModel>,
        name: &Spanned<String>,
        url: &Spanned<String>,
    ) -> Result<Source, ConfigError> {
        let r = m.get_ref();
        for (key, present) in [
            ("quants", r.quants.is_some()),
            ("seed", r.seed.is_some()),
            ("revision", r.revision.is_some()),
            ("file", r.file.is_some()),
            ("derive", r.derive.is_some()),
            ("serve", r.serve.is_some()),
            ("server_bin", r.server_bin.is_some()),
        ] {
            if present {
                return Err(self.err(
                    m.span(),
                    format!(
                        "model {:?}: {key} does not apply to an endpoint (a server quantbench \
                         does not start)",
                        name.get_ref()
                    ),
                ));
            }
        }
        self.endpoint_source(url, r.api_key_env.as_ref(), r.model_name.as_ref())
    }

    /// `rate = "max"` needs a per-request target in `[slo]` to search for.
    fn check_searches(&self, models: &[ModelSpec], slo: &Slo) -> Result<(), ConfigError> {
        let searched = models.iter().any(|m| {
            m.serve
                .as_ref()
                .is_some_and(|s| s.loads.contains(&crate::traffic::Load::MaxRate))
        });
        if searched && !slo.requests().has_target() {
            return Err(self.err(
                0..0,
                "rate = \"max\" searches for the highest rate that meets [slo]: set max_ttft_ms, \
                 max_tpot_ms or max_e2e_ms there"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `serve` (a bool or a list of them) and `server_bin`.
    fn serving_params(&self, r: &RawParams<'_>, p: &mut Params) -> Result<(), ConfigError> {
        if let Some(v) = r.serve {
            let values: Vec<toml::Value> = match v.get_ref() {
                toml::Value::Array(a) => a.clone(),
                x => vec![x.clone()],
            };
            let mut serve = Vec::new();
            for x in values {
                match x {
                    toml::Value::Boolean(b) if !serve.contains(&b) => serve.push(b),
                    toml::Value::Boolean(b) => {
                        return Err(self.err(v.span(), format!("serve {b} is listed twice")))
                    }
                    _ => {
                        return Err(self.err(
                            v.span(),
                            "serve takes true (through a llama-server), false (in process) or \
                             [false, true] (both)"
                                .into(),
                        ))
                    }
                }
            }
            if serve.is_empty() {
                return Err(self.err(v.span(), "serve must not be an empty list".into()));
            }
            p.serve = serve;
        }
        if let Some(v) = r.server_bin {
            if v.get_ref().trim().is_empty() {
                return Err(self.err(v.span(), "server_bin must name a file".into()));
            }
            p.server_bin = Some(if v.get_ref().contains('/') {
                self.beside_config(v.get_ref())
            } else {
                PathBuf::from(v.get_ref()) // a command name, looked up on PATH
            });
        }
        Ok(())
    }

    /// The model's `name`: present, and letters, digits, '.', '_' and '-' only.
    fn model_name<'m>(&self, m: &'m Spanned<RawModel>) -> Result<&'m Spanned<String>, ConfigError> {
        let name = m.get_ref().name.as_ref().ok_or_else(|| {
            self.err(
                m.span(),
                "[[model]] needs a `name` (the key used in reports)".into(),
            )
        })?;
        if !is_plain_name(name.get_ref()) {
            return Err(self.err(
                name.span(),
                format!(
                    "model name {:?}: use letters, digits, '.', '_' and '-' only",
                    name.get_ref()
                ),
            ));
        }
        Ok(name)
    }

    /// Exactly one of `synthetic`, `hf` and `path` is set.
    fn one_source(&self, r: &RawModel, name: &Spanned<String>) -> Result<(), ConfigError> {
        let sources: Vec<&str> = [
            r.synthetic.as_ref().map(|_| "synthetic"),
            r.hf.as_ref().map(|_| "hf"),
            r.path.as_ref().map(|_| "path"),
            r.endpoint.as_ref().map(|_| "endpoint"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if sources.len() == 1 {
            return Ok(());
        }
        let what = if sources.is_empty() {
            "has no source".to_string()
        } else {
            format!("has {} sources ({})", sources.len(), sources.join(", "))
        };
        Err(self.err(
            name.span(),
            format!(
                "model {:?} {what}: set exactly one of `synthetic`, `hf`, `path` or `endpoint`",
                name.get_ref()
            ),
        ))
    }

    /// Fails when `key` is set (`present`) on a model whose source is not `source`.
    fn only_for(
        &self,
        m: &Spanned<RawModel>,
        name: &Spanned<String>,
        key: &str,
        present: bool,
        source: &str,
    ) -> Result<(), ConfigError> {
        if !present {
            return Ok(());
        }
        Err(self.err(
            m.span(),
            format!(
                "model {:?}: `{key}` only applies to `{source}` models",
                name.get_ref()
            ),
        ))
    }

    /// Fails when a key of `hf` models (`revision`, `file`, `derive`: also of `path` models) is
    /// set.
    fn no_hf_keys(&self, m: &Spanned<RawModel>, name: &Spanned<String>) -> Result<(), ConfigError> {
        let r = m.get_ref();
        self.only_for(m, name, "revision", r.revision.is_some(), "hf")?;
        self.only_for(m, name, "file", r.file.is_some(), "hf")?;
        self.only_for(m, name, "derive", r.derive.is_some(), "hf` or `path")
    }

    /// `synthetic = PRESET` (with an optional `seed`).
    fn synthetic_source(
        &self,
        m: &Spanned<RawModel>,
        name: &Spanned<String>,
        s: &Spanned<String>,
    ) -> Result<Source, ConfigError> {
        self.no_hf_keys(m, name)?;
        let preset = presets::preset(s.get_ref()).ok_or_else(|| {
            self.err(
                s.span(),
                format!(
                    "unknown synthetic preset {:?}; known: {}",
                    s.get_ref(),
                    presets::preset_names().join(", ")
                ),
            )
        })?;
        let seed = match &m.get_ref().seed {
            Some(v) => self.int(v, &limits::SEED)?,
            None => 0,
        };
        Ok(Source::Synthetic { preset, seed })
    }

    /// `hf = "owner/name"` (with optional `revision`, `file` template and `derive`).
    fn hf_source(
        &self,
        m: &Spanned<RawModel>,
        name: &Spanned<String>,
        h: &Spanned<String>,
        params: &Params,
    ) -> Result<Source, ConfigError> {
        let r = m.get_ref();
        self.only_for(m, name, "seed", r.seed.is_some(), "synthetic")?;
        let repo = h.get_ref();
        let ok = repo.split('/').count() == 2
            && repo.split('/').all(is_plain_name)
            && crate::safe_path::check_relative(repo, "repository").is_ok();
        if !ok {
            return Err(self.err(
                h.span(),
                format!("hf = {repo:?}: write the repository as \"owner/name\""),
            ));
        }
        if let Some(v) = &r.revision {
            crate::safe_path::check_relative(v.get_ref(), "revision")
                .map_err(|e| self.err(v.span(), e.to_string()))?;
        }
        if let Some(f) = &r.file {
            crate::safe_path::check_relative(f.get_ref(), "file template")
                .map_err(|e| self.err(f.span(), e.to_string()))?;
            if params.quants.len() > 1 && !has_quant_placeholder(f.get_ref()) {
                return Err(self.err(
                    f.span(),
                    "file template has no {quant} or {QUANT}, so every quant would use the same file; add one, or leave `file` out to find files in the repository listing".into(),
                ));
            }
        }
        Ok(Source::Hf {
            repo: repo.clone(),
            revision: r
                .revision
                .as_ref()
                .map_or_else(|| "main".to_string(), |v| v.get_ref().clone()),
            file: r.file.as_ref().map(|f| f.get_ref().clone()),
            derive: r.derive.as_ref().is_some_and(|d| *d.get_ref()),
        })
    }

    /// `path = TEMPLATE`, relative to the config's folder unless absolute.
    fn path_source(
        &self,
        m: &Spanned<RawModel>,
        name: &Spanned<String>,
        p: &Spanned<String>,
        params: &Params,
    ) -> Result<Source, ConfigError> {
        self.only_for(m, name, "seed", m.get_ref().seed.is_some(), "synthetic")?;
        let r = m.get_ref();
        self.only_for(m, name, "revision", r.revision.is_some(), "hf")?;
        self.only_for(m, name, "file", r.file.is_some(), "hf")?;
        if params.quants.len() > 1 && !has_quant_placeholder(p.get_ref()) {
            return Err(self.err(
                p.span(),
                "path has no {quant} or {QUANT}, so every quant would use the same file; add one (e.g. \"models/x-{quant}.gguf\") or list a single quant".into(),
            ));
        }
        let full = self.beside_config(p.get_ref());
        Ok(Source::Path {
            template: full.to_string_lossy().into_owned(),
            derive: r.derive.as_ref().is_some_and(|d| *d.get_ref()),
        })
    }
}

/// Letters, digits, '.', '_' and '-' only, and not empty: a model name, or each half of a hub
/// repository's `owner/name`.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The first value that also appears earlier in `v`.
fn first_repeat<T: PartialEq>(v: &[T]) -> Option<&T> {
    v.iter()
        .enumerate()
        .find(|(i, x)| v[..*i].contains(x))
        .map(|(_, x)| x)
}

/// `tensor_split`: `"auto"`, one split (`[3, 1]`), or several, each a separate cell
/// (`[[1, 1], [3, 1], "auto"]`).
fn tensor_splits(v: &toml::Value) -> Result<Vec<TensorSplit>, String> {
    use toml::Value;
    const HOW: &str = "use shares per GPU such as [3, 1], several such lists, or \"auto\"";
    let share = |x: &Value| match x {
        Value::Integer(i) => Ok(*i as f32),
        Value::Float(f) => Ok(*f as f32),
        _ => Err(format!("tensor_split: {HOW}")),
    };
    let one = |x: &Value| -> Result<TensorSplit, String> {
        match x {
            Value::String(s) if s == "auto" => Ok(TensorSplit::default()),
            Value::Array(a) => TensorSplit::checked(a.iter().map(share).collect::<Result<_, _>>()?),
            _ => Err(format!("tensor_split: {HOW}")),
        }
    };
    let splits = match v {
        Value::Array(a) if a.is_empty() => Vec::new(),
        Value::Array(a)
            if a.iter()
                .all(|x| matches!(x, Value::Integer(_) | Value::Float(_))) =>
        {
            vec![one(v)?]
        }
        Value::Array(a) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        other => vec![one(other)?],
    };
    if splits.is_empty() {
        return Err(format!("tensor_split must not be an empty list: {HOW}"));
    }
    if let Some(s) = first_repeat(&splits) {
        return Err(format!("tensor_split {s} is listed twice"));
    }
    Ok(splits)
}

/// `rpc`: one set of servers (`["host:port", …]`), or several (`[[], ["host:port"]]`), each
/// a separate cell; `[]` inside a list of sets = local devices only.
fn rpc_sets(v: &toml::Value) -> Result<Vec<RpcServers>, String> {
    const HOW: &str = "use a list of \"host:port\" strings, or a list of such lists (one cell \
                       per set; [] = local devices only)";
    string_sets(v, "rpc", HOW, RpcServers::checked)
}

/// `devices`: one set of ggml device names (`["Vulkan0"]`), or several (`[["CUDA0"],
/// ["Vulkan0"], ["CPU"]]`), each a separate cell; `[]` inside a list of sets = llama.cpp's own
/// choice.
fn device_sets(v: &toml::Value) -> Result<Vec<DeviceSet>, String> {
    const HOW: &str = "use a list of device names (\"Vulkan0\", \"CUDA0\", \"CPU\"), or a list \
                       of such lists (one cell per set; [] = llama.cpp's own choice)";
    string_sets(v, "devices", HOW, DeviceSet::checked)
}

/// A key taking one list of strings or a list of such lists (one cell per list), each list
/// checked by `checked`, no list twice.
fn string_sets<T: PartialEq + fmt::Display>(
    v: &toml::Value,
    key: &str,
    how: &str,
    checked: fn(Vec<String>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    use toml::Value;
    let one = |x: &Value| -> Result<T, String> {
        match x {
            Value::Array(a) => checked(
                a.iter()
                    .map(|e| match e {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(format!("{key}: {how}")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => Err(format!("{key}: {how}")),
        }
    };
    let sets = match v {
        Value::Array(a) if a.iter().all(|x| matches!(x, Value::String(_))) => vec![one(v)?],
        Value::Array(a) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        _ => return Err(format!("{key}: {how}")),
    };
    if let Some(s) = first_repeat(&sets) {
        return Err(format!("{key} set {s} is listed twice"));
    }
    Ok(sets)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Matrix, ConfigError> {
        parse(text, Path::new("/cfg/models.toml"))
    }

    const MIN: &str = "schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n";

    #[test]
    fn an_endpoints_label_never_carries_its_password() {
        // an endpoint with credentials is refused (the key goes in api_key_env), and the
        // refusal does not repeat the password
        let m = p(MIN).unwrap();
        let e = endpoint_model(&m, "http://user:S3CRET@127.0.0.1:8080", None).unwrap_err();
        assert!(e.message.contains("must not carry credentials"), "{e:?}");
        assert!(!format!("{e:?} {e}").contains("S3CRET"), "{e:?}");
        let ok = endpoint_model(&m, "http://127.0.0.1:8080", None).unwrap();
        assert_eq!(ok.label, "http://127.0.0.1:8080");
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let m = p(MIN).unwrap();
        assert_eq!(m.models.len(), 1);
        let s = &m.models[0];
        assert_eq!(s.label, "a");
        assert_eq!(s.params, Params::default());
        assert_eq!(
            s.params.quants.iter().map(|q| q.name()).collect::<Vec<_>>(),
            ["F16", "Q8_0", "Q4_K_M"]
        );
        assert!(matches!(s.source, Source::Synthetic { seed: 0, .. }));
    }

    #[test]
    fn defaults_apply_and_models_override_them() {
        let m = p("schema = 1\n[defaults]\nn_gen = [128, 50]\nrepetitions = 3\nn_gpu_layers = 0\n\
                   [[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nrepetitions = 2\nquants = [\"q8_0\"]\n\
                   [[model]]\nname = \"b\"\npath = \"m/b-{QUANT}.gguf\"\nflash_attn = \"on\"\n")
        .unwrap();
        let (a, b) = (&m.models[0].params, &m.models[1].params);
        assert_eq!(a.n_gen, vec![128, 50]);
        assert_eq!(a.repetitions, 2);
        assert_eq!(b.repetitions, 3);
        assert_eq!(a.n_gpu_layers, [GpuLayers::N(0)]);
        assert_eq!(a.quants, vec![Quant::parse("Q8_0").unwrap()]);
        assert_eq!(b.flash_attn, [FlashAttn::On]);
        assert_eq!(
            m.models[1].source,
            Source::Path {
                template: "/cfg/m/b-{QUANT}.gguf".into(),
                derive: false,
            }
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, &str, usize, usize)] = &[
            ("schema = 1\n[defaults]\nquant = [\"F16\"]\n", "did you mean \"quants\"", 3, 1),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tinyy\"\n", "unknown synthetic preset", 4, 13),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nquants = [\"F16\", \"Q9\"]\n", "unknown quant \"Q9\"", 5, 18),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nn_gen = 1\n", "n_gen = 1 is out of range", 5, 9),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\npath = \"x\"\n", "has 2 sources", 3, 8),
            ("schema = 1\n[[model]]\nname = \"a\"\n", "has no source", 3, 8),
            ("schema = 2\n", "schema 2 is not supported", 1, 10),
            ("schema = 1\n[[model]]\nname = \"a\"\nhf = \"noslash\"\n", "owner/name", 4, 6),
            ("schema = 1\n[[model]]\nname = \"a\"\npath = \"x.gguf\"\n", "no {quant}", 4, 8),
            ("schema = 1\n[[model]]\nname = \"a b\"\nsynthetic = \"tiny\"\n", "letters, digits", 3, 8),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n", "duplicate model name", 6, 8),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nn_gpu_layers = \"some\"\n", "use \"all\"", 5, 16),
            ("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nrevision = \"main\"\n", "only applies to `hf`", 2, 1),
            ("schema = 1\n", "no [[model]] entries", 2, 1),
            ("schema = 1\n[[model]\n", "expected", 2, 9),
        ];
        for (text, want, line, col) in cases {
            let e = p(text).unwrap_err();
            assert!(e.message.contains(want), "{text:?}: {}", e.message);
            assert_eq!((e.line, e.col), (*line, *col), "{text:?}: {e}");
            assert!(e.to_string().starts_with("/cfg/models.toml:"), "{e}");
        }
    }

    #[test]
    fn compare_thresholds_from_the_file() {
        let m = p(&format!(
            "{MIN}[compare]\ndecode_tok_s = 3\nttft_ms = 12.5\n"
        ))
        .unwrap();
        assert_eq!(m.compare.0["decode_tok_s"], 3.0);
        assert_eq!(m.compare.0["ttft_ms"], 12.5);
        let pp = crate::metrics::metric("pp_tok_s").unwrap();
        assert_eq!(m.compare.get(pp, false), 35.0, "the default stays");
        let e = p(&format!("{MIN}[compare]\ndecode_tok = 3\n")).unwrap_err();
        assert!(e.message.contains("did you mean \"decode_tok_s\""), "{e}");
        assert_eq!((e.line, e.col), (6, 1));
        let e = p(&format!("{MIN}[compare]\ndecode_tok_s = \"x\"\n")).unwrap_err();
        assert!(e.message.contains("percentage"), "{e}");
    }

    #[test]
    fn multi_gpu_parameters() {
        let m = p(&format!(
            "{MIN}split_mode = [\"none\", \"Layer\", \"row\"]\nmain_gpu = [0, 1]\n\
             tensor_split = [[1, 1], [3, 1], \"auto\"]\n"
        ))
        .unwrap();
        let a = &m.models[0].params;
        assert_eq!(
            a.split_mode,
            [SplitMode::None, SplitMode::Layer, SplitMode::Row]
        );
        assert_eq!(a.main_gpu, [0, 1]);
        assert_eq!(
            a.tensor_split,
            [
                TensorSplit(vec![1.0, 1.0]),
                TensorSplit(vec![3.0, 1.0]),
                TensorSplit::default()
            ]
        );
        // single values
        let m = p(&format!(
            "{MIN}split_mode = \"row\"\nmain_gpu = 1\ntensor_split = [0.6, 0.4]\n"
        ))
        .unwrap();
        let a = &m.models[0].params;
        assert_eq!(a.split_mode, [SplitMode::Row]);
        assert_eq!(a.main_gpu, [1]);
        assert_eq!(a.tensor_split, [TensorSplit(vec![0.6, 0.4])]);
        assert_eq!(a.tensor_split[0].to_string(), "0.6/0.4");
        // defaults: llama.cpp's
        let d = Params::default();
        assert_eq!(
            (d.split_mode, d.main_gpu, d.tensor_split),
            (
                vec![SplitMode::Layer],
                vec![0],
                vec![TensorSplit::default()]
            )
        );
        let bad: &[(&str, &str)] = &[
            (
                "split_mode = \"rows\"",
                "use \"none\" (one GPU), \"layer\", \"row\" or \"tensor\"",
            ),
            ("split_mode = []", "must not be an empty list"),
            ("split_mode = [\"row\", \"row\"]", "listed twice"),
            ("main_gpu = -1", "out of range"),
            ("main_gpu = 16", "use a value from 0 to 15"),
            ("main_gpu = [1, 1]", "listed twice"),
            ("tensor_split = [0, 0]", "all zeros"),
            ("tensor_split = [1, -1]", "at least 0"),
            ("tensor_split = []", "must not be an empty list"),
            ("tensor_split = \"half\"", "shares per GPU"),
            ("tensor_split = [[1, 1], [1, 1]]", "listed twice"),
            (
                "tensor_split = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
                "at most 16 GPUs",
            ),
        ];
        for (line, want) in bad {
            let e = p(&format!("{MIN}{line}\n")).unwrap_err();
            assert!(e.message.contains(want), "{line}: {}", e.message);
            assert_eq!(e.line, 5, "{line}: {e}");
        }
    }

    #[test]
    fn tensor_split_from_the_command_line() {
        assert_eq!(
            TensorSplit::parse("3/1").unwrap(),
            TensorSplit(vec![3.0, 1.0])
        );
        assert_eq!(
            TensorSplit::parse("0.5,0.5").unwrap().fractions(),
            [0.5, 0.5]
        );
        assert!(TensorSplit::parse("auto").unwrap().is_auto());
        assert!(TensorSplit::parse("1/zero").is_err());
        assert_eq!(TensorSplit(vec![1.0, 2.0, 0.0]).devices_needed(), 2);
    }

    #[test]
    fn templates_fill_both_cases() {
        let q = Quant::parse("Q4_K_M").unwrap();
        assert_eq!(fill_template("m-{quant}-{QUANT}", q), "m-q4_k_m-Q4_K_M");
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let e = load(Path::new("/nonexistent/models.toml")).unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
    }
}
