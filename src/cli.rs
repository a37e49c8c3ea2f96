//! Command-line definitions (clap derive) only. Converted once into plain option structs; the
//! core never sees clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{limits, DeviceSet, GpuLayers, RpcServers, SplitMode, TensorSplit};
use crate::plan::Overrides;
use crate::traffic::Load;

#[derive(Parser, Debug)]
#[command(
    name = "quantbench",
    version,
    about = "Benchmark GGUF models × quantizations on llama.cpp: load time, memory, TTFT, \
             decode speed, efficiency",
    after_help = "Exit codes: 0 ok · 1 regression against the baseline · 2 usage/config/setup \
                  error (or a run stopped by an I/O error; it says how to --resume) · 3 some \
                  cells failed (reports written) · 4 inconclusive against the baseline (a busy machine or too \
                  few samples; retry) · 128 + the signal when interrupted (130 \
                  SIGINT, 143 SIGTERM, 129 SIGHUP)"
)]
pub struct Cli {
    /// Show llama.cpp's log and more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Extra folder of ggml backend modules (libggml-cuda.so, libggml-cpu-*.so), searched
    /// before the executable's folder. Repeatable.
    #[arg(
        long,
        global = true,
        env = "QUANTBENCH_BACKEND_DIR",
        value_delimiter = ':'
    )]
    pub backend_dir: Vec<PathBuf>,
    /// Cache folder for synthetic and derived models [default: $XDG_CACHE_HOME/quantbench, else
    /// ~/.cache/quantbench]. For
    /// rpc-server: given, the server keeps the tensors clients send in DIR/rpc (off without it).
    #[arg(long, global = true, env = "QUANTBENCH_CACHE")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Acquire the models, measure every cell, write the reports.
    Run(RunArgs),
    /// Acquire every file the matrix needs (synthesise, derive); measure nothing.
    Fetch(FetchArgs),
    /// Print the plan: cells, file sources, cache state, sizes, fit in memory.
    List(ListArgs),
    /// Compare two reports (results.json, results.csv, or run folders) cell by cell.
    Compare(CompareArgs),
    /// Write results.csv, summary.md, the charts and report.html of a run folder again from its
    /// results.json.
    Report(ReportArgs),
    /// Join run folders (shards of one matrix, runs on several machines) into one report.
    Merge(MergeArgs),
    /// Find the best configuration of one model that meets speed, latency, quality and memory
    /// targets, measuring few cells (docs/tune.md).
    Tune(TuneArgs),
    /// Serve this machine's devices to other hosts' runs (llama.cpp's RPC server; `rpc = […]`
    /// in models.toml or --rpc on the client). No authentication: keep it on a trusted network.
    RpcServer(RpcServerArgs),
    /// Internal: measure a cell sent on stdin (one worker process per cell).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Which matrix and which part of it.
#[derive(Args, Debug, Clone)]
pub struct MatrixArgs {
    /// The matrix file.
    #[arg(long, short = 'c', default_value = "models.toml")]
    pub config: PathBuf,
    /// Only these models or cells: NAME or NAME:QUANT. Repeatable.
    #[arg(long, value_name = "NAME[:QUANT]")]
    pub only: Vec<String>,
    /// Use only local files and caches; never download.
    #[arg(long)]
    pub offline: bool,
}

/// `quantbench fetch`: the matrix, and whether quantizing waits for the machine lock.
#[derive(Args, Debug, Clone)]
pub struct FetchArgs {
    #[command(flatten)]
    pub matrix: MatrixArgs,
    /// Quantize without taking the machine-wide measurement lock (quantizing loads every core:
    /// by default it waits while a run measures).
    #[arg(long)]
    pub no_lock: bool,
}

/// Measurement overrides applied to every cell. Values are checked against the same limits as
/// models.toml's keys ([`crate::config::limits`]), with the same messages.
#[derive(Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Timed repetitions per cell.
    #[arg(long, short = 'r', value_parser = |s: &str| limits::REPETITIONS.parse::<u32>(s))]
    pub repetitions: Option<u32>,
    /// Untimed warm-up repetitions per cell.
    #[arg(long, value_parser = |s: &str| limits::WARMUP.parse::<u32>(s))]
    pub warmup: Option<u32>,
    /// Tokens generated per repetition (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::N_GEN.parse::<u32>(s))]
    pub n_gen: Option<Vec<u32>>,
    /// Random prompt tokens for the pp test (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::N_PROMPT.parse::<u32>(s))]
    pub n_prompt: Option<Vec<u32>>,
    /// Layers to offload to the GPU: "all" or a number (0 = CPU only) (comma-separated list =
    /// one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = GpuLayers::parse)]
    pub n_gpu_layers: Option<Vec<GpuLayers>>,
    /// CPU threads [default: all cores] (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::N_THREADS.parse::<u32>(s))]
    pub threads: Option<Vec<u32>>,
    /// Sequences decoded together, as llama-batched-bench's B (comma-separated list = one cell
    /// per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::N_PARALLEL.parse::<u32>(s))]
    pub n_parallel: Option<Vec<u32>>,
    /// Tokens already in the context when pp and tg are measured, as llama-bench's -d
    /// (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::N_DEPTH.parse::<u32>(s))]
    pub n_depth: Option<Vec<u32>>,
    /// How to spread a model over several GPUs: none, layer, row or tensor (comma-separated
    /// list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = parse_split_mode)]
    pub split_mode: Option<Vec<SplitMode>>,
    /// The GPU of split mode "none" (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| limits::MAIN_GPU.parse::<u32>(s))]
    pub main_gpu: Option<Vec<u32>>,
    /// Shares of the model per GPU, e.g. 3/1, or "auto" (by free memory). Repeatable: one
    /// cell per value.
    #[arg(long, value_parser = TensorSplit::parse)]
    pub tensor_split: Option<Vec<TensorSplit>>,
    /// llama.cpp RPC servers (`quantbench rpc-server`) whose devices join the local ones:
    /// host:port separated by commas, or "local" for none. Repeatable: one cell per set.
    #[arg(long, value_parser = RpcServers::parse)]
    pub rpc: Option<Vec<RpcServers>>,
    /// The llama.cpp devices a cell may use, as `quantbench list` names them: e.g. Vulkan0 or
    /// CUDA0,CUDA1 (comma-separated), CPU for none, auto for llama.cpp's own choice.
    /// Repeatable: one cell per set (--devices CUDA0 --devices Vulkan0).
    #[arg(long, value_parser = DeviceSet::parse)]
    pub devices: Option<Vec<DeviceSet>>,
    /// Score every quant against its model's reference (KL divergence, top-1 agreement,
    /// perplexity) after the speed tests, also for synthetic weights.
    #[arg(long, conflicts_with = "no_quality")]
    pub quality: bool,
    /// No quality test, also for real weights.
    #[arg(long)]
    pub no_quality: bool,
    /// Measure every model with a file through a llama-server started per cell, under the
    /// [workload] of models.toml (docs/serving.md).
    #[arg(long, conflicts_with = "no_serve")]
    pub serve: bool,
    /// Measure in process only (no served cells).
    #[arg(long)]
    pub no_serve: bool,
    /// Served cells: open-loop request rates per second, or "max" for the highest rate that
    /// meets [slo] (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = parse_rate, conflicts_with = "concurrency")]
    pub rate: Option<Vec<Load>>,
    /// Served cells: closed-loop users (comma-separated list = one cell per value).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| crate::config::workload_limits::CONCURRENCY.parse::<u32>(s))]
    pub concurrency: Option<Vec<u32>>,
    /// Served cells: measured requests per load point.
    #[arg(long, value_parser = |s: &str| crate::config::workload_limits::REQUESTS.parse::<u32>(s))]
    pub requests: Option<u32>,
    /// Measure a server quantbench does not start (an OpenAI-compatible `http://host:port/v1`)
    /// under the [workload], instead of the matrix's models.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// With --endpoint: the environment variable holding its API key.
    #[arg(long, value_name = "VAR", requires = "endpoint")]
    pub api_key_env: Option<String>,
}

/// A request rate: a number per second, or `max`.
fn parse_rate(s: &str) -> Result<Load, String> {
    let l = if s.trim() == "max" {
        Load::MaxRate
    } else {
        Load::Rate(
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?}: use a number of requests per second or \"max\""))?,
        )
    };
    l.check().map(|()| l)
}

fn parse_split_mode(s: &str) -> Result<SplitMode, String> {
    SplitMode::parse(s).ok_or_else(|| format!("{s:?}: use none, layer, row or tensor"))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human table on stderr only.
    Table,
    Json,
    Csv,
    Md,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub matrix: MatrixArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Folder under which the run folder (UTC timestamp) is created.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Also print the results on stdout in this format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Continue an interrupted run in DIR: cells already measured are skipped.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Evict each model file from the page cache before loading it (cold load times).
    #[arg(long)]
    pub cold: bool,
    /// Compare the run with this baseline at the end (a results.json or results.csv, a run
    /// folder, or a folder of several baseline runs); exit 1 on a regression.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Store the run's results.json as a baseline: PATH is a file, or an existing folder (or one
    /// ending in '/') to add the run to, as `RUN_ID.json` (after a run without failed cells or
    /// regressions).
    #[arg(long, value_name = "PATH")]
    pub save_baseline: Option<PathBuf>,
    /// Regression threshold: PCT for every metric, or METRIC=PCT. Repeatable.
    #[arg(long, value_name = "[METRIC=]PCT")]
    pub threshold: Vec<String>,
    /// With --baseline: measure each regressed cell N more times and report a regression only
    /// when every re-measurement confirms it (0: no re-runs).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub confirm: u32,
    /// Measure without the machine-wide lock that keeps two runs from measuring at once (the
    /// report says so).
    #[arg(long)]
    pub no_lock: bool,
    /// Run a matrix of more cells than quantbench runs unasked (10,000; every list in
    /// models.toml multiplies the cells).
    #[arg(long)]
    pub yes: bool,
    /// Skip the charts and report.html.
    #[arg(long)]
    pub no_plots: bool,
    /// Run only part I of N of the matrix (e.g. 2/4), for spreading a matrix over several
    /// machines: the cells are dealt by a cost from the matrix alone (`list`'s duration model
    /// at nominal sizes and rates), the same way on every machine whatever it has cached; join
    /// the run folders with `quantbench merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::plan::Shard::parse)]
    pub shard: Option<crate::plan::Shard>,
    /// What an hour of this machine costs, in dollars: every cell gets `usd_per_mtok`
    /// (overrides models.toml's [cost] usd_per_hour).
    #[arg(long, value_name = "USD", value_parser = |s: &str| positive_at_most(s, limits::MAX_USD_PER_HOUR))]
    pub usd_per_hour: Option<f64>,
    /// Generated tokens per hour the deployment must serve: the reports say how many copies
    /// of each cell that needs.
    #[arg(long, value_name = "N", value_parser = |s: &str| positive_at_most(s, limits::MAX_TOKENS_PER_HOUR))]
    pub tokens_per_hour: Option<f64>,
}

/// A number above 0 and at most `max` (a price, a load).
fn positive_at_most(s: &str, max: f64) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0 && *x <= max)
        .ok_or_else(|| format!("{s:?}: use a number above 0 and at most {max:e}, e.g. 3.5"))
}

/// A finite number above 0 (a tune target).
fn positive_number(s: &str) -> Result<f64, String> {
    positive_at_most(s, f64::MAX)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneFormat {
    /// The answer on stderr only.
    Table,
    /// One JSON object on stdout (the answer, the probes, the run folder).
    Json,
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The matrix file: the model, its quants and settings, [tune], [workload], [slo].
    #[arg(long, short = 'c', default_value = "models.toml")]
    pub config: PathBuf,
    /// The model to tune (its name in the file; needed when it has several and [tune] names none).
    #[arg(long)]
    pub model: Option<String>,
    /// Decode speed one user sees (decode_tok_s), at least.
    #[arg(long, value_name = "TOK/S", value_parser = positive_number)]
    pub min_tok_s: Option<f64>,
    /// Time to first token (ttft_ms), at most.
    #[arg(long, value_name = "MS", value_parser = positive_number)]
    pub max_ttft_ms: Option<f64>,
    /// KL divergence against the model's reference (kld_mean), at most.
    #[arg(long, value_name = "KLD", value_parser = positive_number)]
    pub max_kld: Option<f64>,
    /// Memory of one copy, at most: VRAM on a GPU, else host memory (8GiB, 8GB, 8000MB, bytes).
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_memory)]
    pub memory: Option<u64>,
    /// The context the configuration must hold (tokens): the speed is measured that deep.
    #[arg(long, value_parser = |s: &str| crate::config::tune_limits::N_CTX.parse::<u32>(s))]
    pub n_ctx: Option<u32>,
    /// Requests per second the served configuration must sustain within [slo] (e.g. 2 or 2/s),
    /// under the file's [workload].
    #[arg(long, value_name = "RATE", value_parser = parse_per_second)]
    pub rate: Option<f64>,
    /// Print the answer as one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = TuneFormat::Table)]
    pub format: TuneFormat,
    /// Folder under which the run folder of the search is created.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Continue an interrupted search in DIR (its measured probes count).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Earlier run folders whose cells count as measurements (same cell keys). Repeatable.
    #[arg(long = "from", value_name = "DIR")]
    pub from: Vec<PathBuf>,
    /// Timed repetitions of a ranking probe (finalists get the model's `repetitions`).
    #[arg(long, default_value_t = 2, value_parser = |s: &str| limits::REPETITIONS.parse::<u32>(s))]
    pub probe_repetitions: u32,
    /// Use only local files and caches; never download.
    #[arg(long)]
    pub offline: bool,
    /// Measure without the machine-wide lock.
    #[arg(long)]
    pub no_lock: bool,
    /// Skip the charts and report.html.
    #[arg(long)]
    pub no_plots: bool,
}

/// A rate per second: `2`, `2/s`, `0.5/s`; above 0.
fn parse_per_second(s: &str) -> Result<f64, String> {
    positive_number(s.trim().trim_end_matches("/s"))
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Run folders (or results.json files) to join: the shards of one matrix, or runs of the
    /// same schema on other machines.
    #[arg(required = true, num_args = 1..)]
    pub dirs: Vec<PathBuf>,
    /// The folder the joined report is written to (created; must not hold a report yet).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RpcServerArgs {
    /// Address to listen on. Anything but loopback exposes the devices to whoever reaches
    /// the port: llama.cpp's RPC protocol has no authentication.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port.
    #[arg(long, default_value_t = 50052, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Devices to serve (ggml names: CPU, CUDA0, …; comma-separated or repeated). Default: every
    /// GPU, else the CPU (as llama.cpp's rpc-server).
    #[arg(long, value_delimiter = ',')]
    pub device: Vec<String>,
    /// CPU threads of the CPU device (default: half the cores, as llama.cpp's rpc-server).
    #[arg(long, value_parser = |s: &str| limits::N_THREADS.parse::<u32>(s))]
    pub threads: Option<u32>,
    // The tensor cache is the global --cache-dir DIR (or QUANTBENCH_CACHE): given, the server
    // keeps the tensors clients send in DIR/rpc, so a later load of the same model sends only
    // their hashes (tensors over 10 MiB); not given, it keeps nothing (llama.cpp's default).
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run folder (holding results.json).
    pub dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareFormat {
    /// Human table on stderr only.
    Table,
    Md,
    Json,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// BASE... CURRENT: the baseline report(s), then the report to judge. A report is a
    /// results.json, a results.csv, or a run folder; a folder of reports counts as several
    /// baseline runs. With three or more baseline runs, significance comes from their spread.
    #[arg(required = true, num_args = 2.., value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Regression threshold: PCT for every metric, or METRIC=PCT. Repeatable.
    #[arg(long, value_name = "[METRIC=]PCT")]
    pub threshold: Vec<String>,
    /// Also print the comparison on stdout in this format.
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    pub format: CompareFormat,
    /// Read `[compare]` thresholds from this matrix file (when it exists).
    #[arg(long, short = 'c', default_value = "models.toml")]
    pub config: PathBuf,
    /// A re-measurement of the current run's cells (a report, as `run --confirm` writes them
    /// into `confirm-N.json`). Repeatable: a regression stands only when every one of these
    /// regresses against the baseline too.
    #[arg(long, value_name = "REPORT")]
    pub confirm_with: Vec<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub matrix: MatrixArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// `json` prints the plan on stdout.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Check fits against this much memory instead of the GPU's (or host's) free memory,
    /// e.g. `48GB` or `80GiB`: "how many of these fit on a 48 GB card?".
    #[arg(long, value_parser = crate::capacity::parse_size)]
    pub device_memory: Option<u64>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Derive a quant instead of serving cells: IN OUT QUANT.
    #[arg(long, num_args = 3, value_names = ["IN", "OUT", "QUANT"])]
    pub quantize: Option<Vec<String>>,
    /// Initialise llama.cpp and run a few CPU tokens of the tiny model, then exit.
    #[arg(long, conflicts_with = "quantize")]
    pub self_test: bool,
    /// Initialise llama.cpp, report its backends and devices, then exit.
    #[arg(long, conflicts_with_all = ["quantize", "self_test"])]
    pub devices: bool,
}

impl OverrideArgs {
    /// The plain overrides the planner takes.
    pub fn to_overrides(&self, only: &[String]) -> Overrides {
        Overrides {
            repetitions: self.repetitions,
            warmup: self.warmup,
            n_gen: self.n_gen.clone(),
            n_prompt: self.n_prompt.clone(),
            n_gpu_layers: self.n_gpu_layers.clone(),
            n_threads: self.threads.clone(),
            n_parallel: self.n_parallel.clone(),
            n_depth: self.n_depth.clone(),
            split_mode: self.split_mode.clone(),
            main_gpu: self.main_gpu.clone(),
            tensor_split: self.tensor_split.clone(),
            rpc: self.rpc.clone(),
            devices: self.devices.clone(),
            quality: match (self.quality, self.no_quality) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            serve: match (self.serve, self.no_serve) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            loads: match (&self.rate, &self.concurrency) {
                (Some(r), _) => Some(r.clone()),
                (_, Some(c)) => Some(c.iter().map(|&n| Load::Concurrency(n)).collect()),
                _ => None,
            },
            requests: self.requests,
            only: only.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn overrides_parse() {
        measurement_overrides_parse();
        placement_overrides_parse();
        limits_match_models_toml();
        bad_placements_are_refused();
    }

    /// The overrides of a `run` command line (with its `--only` filters).
    fn overrides_of(args: &[&str]) -> Overrides {
        let c = Cli::try_parse_from(args).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        r.overrides.to_overrides(&r.matrix.only)
    }

    /// Sizes, repetitions, offloaded layers and `--only` reach the overrides.
    fn measurement_overrides_parse() {
        let o = overrides_of(&[
            "quantbench",
            "run",
            "--n-gen",
            "128,50",
            "-r",
            "3",
            "--n-gpu-layers",
            "all",
            "--only",
            "a:F16",
        ]);
        assert_eq!(o.n_gen, Some(vec![128, 50]));
        assert_eq!(o.repetitions, Some(3));
        assert_eq!(o.n_gpu_layers, Some(vec![GpuLayers::All]));
        assert!(Cli::try_parse_from(["quantbench", "run", "--n-gen", "1"]).is_err());
    }

    /// Split modes, main GPUs and tensor splits reach the overrides.
    fn placement_overrides_parse() {
        let o = overrides_of(&[
            "quantbench",
            "run",
            "--split-mode",
            "none,row",
            "--main-gpu",
            "1",
            "--tensor-split",
            "3/1",
            "--tensor-split",
            "auto",
        ]);
        assert_eq!(o.split_mode, Some(vec![SplitMode::None, SplitMode::Row]));
        assert_eq!(o.main_gpu, Some(vec![1]));
        assert_eq!(
            o.tensor_split,
            Some(vec![TensorSplit(vec![3.0, 1.0]), TensorSplit::default()])
        );
    }

    /// The command line refuses what models.toml refuses, with the same message.
    fn limits_match_models_toml() {
        for (flag, value, msg) in [
            (
                "-r",
                "0",
                "repetitions = 0 is out of range: use a value from 1 to 1000",
            ),
            ("--threads", "0", "n_threads = 0 is out of range"),
            ("--warmup", "1000000", "warmup = 1000000 is out of range"),
            (
                "--n-gen",
                "4294967295",
                "n_gen = 4294967295 is out of range",
            ),
            ("--n-gen", "1", "n_gen = 1 is out of range"),
            ("--n-prompt", "0", "n_prompt = 0 is out of range"),
            (
                "--n-gpu-layers",
                "100001",
                "n_gpu_layers = 100001 is out of range",
            ),
            ("--main-gpu", "16", "main_gpu = 16 is out of range"),
        ] {
            let e = Cli::try_parse_from(["quantbench", "run", flag, value]).unwrap_err();
            assert!(e.to_string().contains(msg), "{flag} {value}: {e}");
            let toml_key = msg.split(" = ").next().unwrap();
            let cfg = format!(
                "schema = 1\n[defaults]\n{toml_key} = {value}\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n"
            );
            let ce = crate::config::parse(&cfg, std::path::Path::new("m.toml")).unwrap_err();
            assert!(ce.to_string().contains(msg), "models.toml {toml_key}: {ce}");
        }
    }

    /// Unknown split modes and bad tensor splits are refused.
    fn bad_placements_are_refused() {
        for bad in [
            ["--split-mode", "rows"],
            ["--tensor-split", "0/0"],
            ["--tensor-split", "1/x"],
        ] {
            let mut args = vec!["quantbench", "run"];
            args.extend(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
