//! The child-process side (`quantbench worker`, hidden): jobs in on stdin, JSON events out on
//! stdout. The coordinator gives each worker one cell (it can serve several: a model already
//! loaded with the same settings is reused); llama.cpp's log goes to stderr.
//!
//! stdout is reserved for events: at start the real stdout is duplicated for them and file
//! descriptor 1 is pointed at stderr, so nothing llama.cpp prints can corrupt the protocol.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::{self, Engine, LoadedModel, Placement};
use std::time::Duration;

use crate::config::SplitMode;
use crate::gpu::{CellMonitor, GpuCellTelemetry, GpuSession};
use crate::plan::Cell;
use crate::protocol::{Event, Job, QualityJob, QualityOutcome};
use crate::quant::Quant;

/// Environment variable that makes workers inject a fault, for testing failure handling:
/// `KIND` or `KIND@MODEL` or `KIND@MODEL:QUANT`, KIND one of `crash`, `hang` (while measuring),
/// `hang-init` (before the cell starts), `hang-exit` (after its result), `hang-quality` (after
/// the speed tests, before the quality test), `hang-log` (while logging a line every 10 ms),
/// `error`, `oom`.
pub const FAULT_ENV: &str = "QUANTBENCH_FAULT";

struct Events {
    out: BufWriter<File>,
}

impl Events {
    fn send(&mut self, e: &Event) {
        // A coordinator that went away will kill us; nothing useful to do with a write error.
        if serde_json::to_writer(&mut self.out, e).is_ok() {
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
        }
    }
}

/// Takes fd 1 for events and sends everything else written to stdout to stderr.
fn take_stdout() -> Result<Events> {
    use std::os::fd::AsFd;
    let setup = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot set up the worker's event channel: {e}")
    };
    let events = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| setup(&e))?;
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| setup(&e))?;
    // Die with the coordinator rather than run on as an orphan holding the GPU.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    Ok(Events {
        out: BufWriter::new(File::from(events)),
    })
}

/// Entry point of `quantbench worker`: serves jobs until stdin closes.
pub fn serve() -> Result<()> {
    let mut events = take_stdout()?;
    // NVML before llama.cpp touches the GPUs: their memory use now is the baseline of the
    // device-wide fallback for per-process VRAM.
    let early = GpuSession::open();
    let engine = engine::init()?;
    events.send(&Event::Ready {
        backend: engine.info.clone(),
    });
    let gpus: Vec<(String, String)> = engine
        .info
        .llama_gpus()
        .iter()
        .map(|d| (d.name.clone(), d.device_id.clone()))
        .collect();
    let gpu: Result<GpuSession, String> = if gpus.is_empty() {
        Err(match early {
            Err(e) => e,
            Ok(_) => "no GPU backend device was registered (CPU run)".to_string(),
        })
    } else {
        early.and_then(|s| s.select(&gpus))
    };
    // what each GPU's backend says is free before any model is loaded: the baseline of the
    // device-wide figures used where NVML does not see the GPU (Vulkan on AMD or Intel)
    let baseline = BackendBaseline::take(&engine);
    let mut loaded: Option<LoadedModel> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading jobs from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let job: Job = serde_json::from_str(&line).context("malformed job")?;
        let cell = job.cell.index;
        if injected(&job.cell).as_deref() == Some("hang-init") {
            hang(); // as a driver or backend initialisation that never returns
        }
        events.send(&Event::Started { cell });
        match run_job(&engine, &job, &mut loaded, &mut events, (&gpu, &baseline)) {
            Ok(mut measurement) => {
                if let (Some(q), Some(model)) = (&job.quality, loaded.as_ref()) {
                    // the speed figures first: they stand if the quality test overruns
                    events.send(&Event::Measured {
                        cell,
                        measurement: Box::new(measurement.clone()),
                    });
                    if injected(&job.cell).as_deref() == Some("hang-quality") {
                        hang(); // a quality test that overruns timeout_s
                    }
                    // after the speed tests and their telemetry: the reference's memory is not
                    // the cell's
                    let mut progress = CellProbe {
                        events: &mut events,
                        cell,
                        session: None,
                        monitor: None,
                        telemetry: GpuCellTelemetry::default(),
                        energy_start: None,
                        devices_used: Vec::new(),
                        meter: Default::default(),
                        ggml_used: Vec::new(),
                        backend: None,
                    };
                    measurement.quality =
                        Some(quality(&engine, model, q, &job.cell, &mut progress));
                }
                events.send(&Event::Done {
                    cell,
                    measurement: Box::new(measurement),
                });
                if injected(&job.cell).as_deref() == Some("hang-exit") {
                    hang(); // as a teardown (freeing the model, the driver) that never returns
                }
            }
            Err(e) => {
                let reason = with_llama_log(format!("{e:#}"));
                events.send(&Event::Failed { cell, reason });
            }
        }
    }
    Ok(())
}

fn run_job(
    engine: &Engine,
    job: &Job,
    loaded: &mut Option<LoadedModel>,
    events: &mut Events,
    (gpu, baseline): (&Result<GpuSession, String>, &BackendBaseline),
) -> Result<crate::protocol::Measurement> {
    engine::clear_recent_log();
    inject_fault(&job.cell)?;
    if let (Some(sp), Some(sj)) = (&job.cell.params.serve, &job.serve) {
        *loaded = None; // the server holds the model, not this process
        return serve_job(engine, job, sp, sj, events, gpu);
    }
    let p = &job.cell.params;
    let session = gpu.as_ref().ok();
    // other processes keeping every core busy while the cell is measured (a test's busy
    // machine); stopped when this returns
    let _burners = (injected(&job.cell).as_deref() == Some("busy")).then(Burners::start);
    // Sample from before the load, so the peak covers loading too.
    let (untimed_ms, timed_ms) = sample_periods();
    let monitor = session.filter(|_| untimed_ms > 0).map(|g| {
        g.monitor(
            Duration::from_millis(untimed_ms),
            (timed_ms > 0).then(|| Duration::from_millis(timed_ms)),
        )
    });
    // checked against the GPUs (and RPC servers' devices) when the model is loaded
    let placement = Placement::of(p);
    let reuse = loaded
        .as_ref()
        .is_some_and(|m| m.path == job.model_path && m.placement == placement && !job.cold);
    if !reuse {
        *loaded = None; // free the previous model first
        events.send(&Event::Progress {
            cell: job.cell.index,
            phase: "load".into(),
            done: 0,
            total: 1,
        });
        *loaded = Some(LoadedModel::load(
            engine,
            &job.model_path,
            placement,
            job.cold,
        )?);
        events.send(&Event::Progress {
            cell: job.cell.index,
            phase: "load".into(),
            done: 1,
            total: 1,
        });
    }
    let model = loaded.as_ref().expect("loaded above");
    let mut probe = CellProbe {
        events,
        cell: job.cell.index,
        session,
        monitor: monitor.as_ref(),
        telemetry: GpuCellTelemetry::default(),
        energy_start: None,
        devices_used: Vec::new(),
        meter: Default::default(),
        ggml_used: Vec::new(),
        backend: Some((engine, baseline)),
    };
    let result = model.measure(engine, &job.cell, &mut probe);
    let mut telemetry = std::mem::take(&mut probe.telemetry);
    let figures = probe.meter.figures();
    if let Some(mon) = monitor {
        mon.finish(&mut telemetry);
    }
    let mut m = result?;
    m.disturbance = figures.map(|d| judged(d, &telemetry, !m.devices_used.is_empty()));
    match gpu {
        Ok(g) => {
            let used = nvml_names(&engine.info, &m.devices_used);
            telemetry.peak_bandwidth_bytes_s = peak_bandwidth(g, &used, p.split_mode);
        }
        Err(reason) => telemetry.unavailable_reason = Some(reason.clone()),
    }
    if telemetry.vram_after_warmup_bytes.is_none() && !m.devices_used.is_empty() {
        // the backend did not report a change: llama.cpp's own device buffers
        let device: u64 = m
            .memory
            .buffers
            .iter()
            .filter(|b| !b.host)
            .map(|b| b.model_bytes + b.context_bytes + b.compute_bytes)
            .sum();
        telemetry.vram_after_load_bytes = Some(device);
        telemetry.vram_after_warmup_bytes = Some(device);
        telemetry.vram_source = Some("llama_device_buffers".into());
    }
    m.gpu = telemetry;
    Ok(m)
}

/// A cell's disturbance figures with what NVML saw on its GPUs (other processes, slowdowns the
/// workload did not cause), judged for a cell on a GPU or on the CPU.
fn judged(
    mut d: crate::disturbance::Disturbance,
    telemetry: &GpuCellTelemetry,
    on_gpu: bool,
) -> crate::disturbance::Disturbance {
    d.gpu_other_processes = telemetry.other_processes;
    d.gpu_slowdowns = telemetry
        .throttle_reasons
        .iter()
        .filter(|r| r.contains("SLOWDOWN"))
        .cloned()
        .collect();
    d.judge(on_gpu);
    d
}

/// Free device memory per GPU (ggml name) as the backends reported it when the worker started.
struct BackendBaseline(Vec<(String, Option<u64>)>);

impl BackendBaseline {
    fn take(engine: &Engine) -> Self {
        let names: Vec<String> = engine
            .info
            .devices
            .iter()
            .filter(|d| (d.kind == "gpu" || d.kind == "igpu") && d.backend != "RPC")
            .map(|d| d.name.clone())
            .collect();
        let free = engine.free_bytes(&names);
        BackendBaseline(names.into_iter().zip(free).collect())
    }

    /// Device memory taken since the baseline on the `used` GPUs, summed (the backend's
    /// device-wide figures); `None` when no used GPU has a baseline or nothing was taken.
    fn taken(&self, engine: &Engine, used: &[String]) -> Option<u64> {
        let now = engine.free_bytes(used);
        let mut sum = None;
        for (name, now) in used.iter().zip(now) {
            let before = self.0.iter().find(|(n, _)| n == name).and_then(|(_, b)| *b);
            if let (Some(b), Some(n)) = (before, now) {
                sum = Some(sum.unwrap_or(0) + b.saturating_sub(n));
            }
        }
        sum.filter(|&s| s > 0)
    }
}

/// The names NVML's session knows the `used` GPUs by: a GPU that llama.cpp sees through two
/// backends (CUDA0 and Vulkan0 on one NVIDIA card, the same PCI bus id) is watched under the
/// name llama.cpp's own device selection keeps.
fn nvml_names(info: &crate::protocol::BackendInfo, used: &[String]) -> Vec<String> {
    let kept = info.llama_gpus();
    used.iter()
        .map(|u| {
            let id = info
                .devices
                .iter()
                .find(|d| &d.name == u)
                .map(|d| d.device_id.as_str())
                .unwrap_or_default();
            kept.iter()
                .find(|k| &k.name == u || (!id.is_empty() && k.device_id == id))
                .map_or_else(|| u.clone(), |k| k.name.clone())
        })
        .collect()
}

/// A serving cell: the workload against a llama-server started here (or an endpoint), timed
/// per request; the server's memory and the GPUs' energy read for its process.
fn serve_job(
    engine: &Engine,
    job: &Job,
    sp: &crate::plan::ServeParams,
    sj: &crate::protocol::ServeJob,
    events: &mut Events,
    gpu: &Result<GpuSession, String>,
) -> Result<crate::protocol::Measurement> {
    // the coordinator's deadline runs from this worker's start; stop searching a little before
    let limit = Duration::from_secs(job.cell.params.timeout_s.saturating_sub(5).max(1));
    let modules: Vec<std::path::PathBuf> = engine
        .info
        .modules
        .iter()
        .map(std::path::PathBuf::from)
        .collect();
    let session = gpu.as_ref().ok();
    let gpus: Vec<String> = engine
        .info
        .llama_gpus()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let energy = || session.and_then(|g| g.energy_mj(&gpus));
    let vram = |pid: u32| session.and_then(|g| g.vram_of(pid));
    let cx = crate::serving::CellEnv {
        modules: &modules,
        stop: &STOP,
        deadline: std::time::Instant::now() + limit,
        energy_mj: &energy,
        vram_of: &vram,
    };
    let cell = job.cell.index;
    let mut progress = |phase: &str, done: u32, total: u32| {
        events.send(&Event::Progress {
            cell,
            phase: phase.into(),
            done,
            total,
        })
    };
    let serving = crate::serving::measure(&job.cell, sp, sj, &job.model_path, &cx, &mut progress)?;
    let (backend, device) = match engine.info.llama_gpus().first() {
        Some(d) if !matches!(sj.target, crate::protocol::ServeTarget::Endpoint { .. }) => {
            (d.backend.clone(), d.description.clone())
        }
        _ => match &sj.target {
            crate::protocol::ServeTarget::Endpoint { base, .. } => {
                ("endpoint".into(), base.clone())
            }
            _ => engine
                .info
                .devices
                .first()
                .map(|d| (d.backend.clone(), d.description.clone()))
                .unwrap_or_default(),
        },
    };
    let mut gpu_t = GpuCellTelemetry::default();
    match gpu {
        Ok(_) => {
            gpu_t.vram_after_warmup_bytes = serving.server_vram_bytes;
            gpu_t.vram_source = Some("nvml_process (the server)".into());
        }
        Err(reason) => gpu_t.unavailable_reason = Some(reason.clone()),
    }
    Ok(crate::protocol::Measurement {
        backend,
        device,
        warnings: serving.notes.clone(),
        gpu: gpu_t,
        serving: Some(serving),
        ..Default::default()
    })
}

/// `reason`, followed by the warnings and errors llama.cpp logged since the log was last
/// cleared (the cause a message like "could not load" does not give).
fn with_llama_log(mut reason: String) -> String {
    let log = engine::recent_log();
    if !log.is_empty() {
        reason.push_str(" | llama.cpp: ");
        reason.push_str(&log.join(" | "));
    }
    reason
}

/// The quality test of a cell, after its speed tests: any failure becomes the outcome's error,
/// never the cell's (its speed figures stand).
fn quality(
    engine: &Engine,
    model: &LoadedModel,
    q: &QualityJob,
    cell: &Cell,
    probe: &mut CellProbe<'_>,
) -> QualityOutcome {
    let start = std::time::Instant::now();
    engine::clear_recent_log();
    let (stats, error) = match score_quality(engine, model, q, cell, probe) {
        Ok(stats) => (Some(stats), None),
        Err(e) => (None, Some(with_llama_log(format!("{e:#}")))),
    };
    QualityOutcome {
        stats,
        error,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn score_quality(
    engine: &Engine,
    model: &LoadedModel,
    q: &QualityJob,
    cell: &Cell,
    probe: &mut CellProbe<'_>,
) -> Result<crate::quality::QualityStats> {
    let reference_path = q.reference.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let corpus = match &q.corpus {
        Some(path) => engine::Corpus::Text(read_corpus(path)?),
        None => engine::Corpus::Sampled {
            seed: q.seed,
            cache: q.sample_cache.clone(),
        },
    };
    let scoring = engine::Scoring {
        n_ctx: q.n_ctx,
        chunks: q.chunks,
    };
    // the reference on devices of its own (`quality_ref_devices`): local, without RPC servers
    let placement = match cell
        .params
        .quality
        .as_ref()
        .and_then(|q| q.ref_devices.clone())
    {
        Some(devices) => Placement {
            devices,
            rpc: Default::default(),
            ..model.placement.clone()
        },
        None => model.placement.clone(),
    };
    if *reference_path == model.path && placement == model.placement {
        return engine::score_quality(model, model, &corpus, scoring, &cell.params, probe);
    }
    let reference = LoadedModel::load(engine, reference_path, placement, false)
        .with_context(|| format!("loading the reference {}", reference_path.display()))?;
    engine::score_quality(model, &reference, &corpus, scoring, &cell.params, probe)
}

/// The corpus file's text: UTF-8 and not empty, else a clear error.
fn read_corpus(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the quality corpus {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the quality corpus {} is not UTF-8 text (invalid byte at {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        anyhow::bail!("the quality corpus {} is empty", path.display());
    }
    Ok(text)
}

/// The memory bandwidth the model can draw on: with `none` and `layer` the layers run one GPU
/// after the other, so one GPU's (the slowest of those used); with `row` and `tensor` the GPUs
/// read their parts of each matrix at once, so the sum.
fn peak_bandwidth(g: &GpuSession, used: &[String], mode: SplitMode) -> Option<f64> {
    let bw: Vec<f64> = used.iter().filter_map(|n| g.peak_bandwidth(n)).collect();
    if bw.is_empty() || bw.len() != used.len() {
        return None;
    }
    match mode {
        SplitMode::None | SplitMode::Layer => bw.into_iter().reduce(f64::min),
        SplitMode::Row | SplitMode::Tensor => Some(bw.iter().sum()),
    }
}

/// GPU sampler periods in ms (outside, inside timed regions): `QUANTBENCH_GPU_SAMPLE_MS`
/// (default 20; 0 turns the sampler off) and `QUANTBENCH_GPU_TIMED_SAMPLE_MS` (default 100;
/// 0 = no readings inside timed regions).
fn sample_periods() -> (u64, u64) {
    let get = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    (
        get("QUANTBENCH_GPU_SAMPLE_MS", 20),
        get("QUANTBENCH_GPU_TIMED_SAMPLE_MS", 100),
    )
}

/// The worker's hooks around the engine's timed regions: progress events and GPU readings.
struct CellProbe<'a> {
    events: &'a mut Events,
    cell: usize,
    session: Option<&'a GpuSession>,
    monitor: Option<&'a CellMonitor>,
    telemetry: GpuCellTelemetry,
    energy_start: Option<u64>,
    /// GPUs holding the model's weights (the names NVML's session knows them by).
    devices_used: Vec<String>,
    /// What else used the machine during the timed regions.
    meter: crate::disturbance::Meter,
    /// The same GPUs by their ggml names.
    ggml_used: Vec<String>,
    /// For memory where NVML does not see the GPUs used: the engine and the backends' baseline.
    backend: Option<(&'a Engine, &'a BackendBaseline)>,
}

impl CellProbe<'_> {
    /// Whether NVML's session watches every GPU the cell uses (else its per-process figure
    /// would not be this cell's memory).
    fn nvml_covers(&self) -> bool {
        self.session
            .is_some_and(|g| self.devices_used.iter().all(|n| g.watches(n)))
    }

    /// The backends' device-wide figure for the GPUs used, where NVML does not cover them.
    fn backend_taken(&self, ggml_used: &[String]) -> Option<u64> {
        let (engine, baseline) = self.backend?;
        (!self.nvml_covers() && !ggml_used.is_empty())
            .then(|| baseline.taken(engine, ggml_used))
            .flatten()
    }
}

impl engine::Probe for CellProbe<'_> {
    fn after_load(&mut self, devices_used: &[String]) {
        self.ggml_used = devices_used.to_vec();
        self.devices_used = match self.backend {
            Some((engine, _)) => nvml_names(&engine.info, devices_used),
            None => devices_used.to_vec(),
        };
        if let Some(m) = self.monitor {
            m.set_active(&self.devices_used);
        }
        if let Some(v) = self.backend_taken(devices_used) {
            self.telemetry.vram_after_load_bytes = Some(v);
            self.telemetry.vram_source = Some("backend_device_delta".into());
        } else if let Some(g) = self.session {
            let r = g.vram();
            self.telemetry.vram_after_load_bytes = r.total();
            self.telemetry.vram_source = Some(r.source.to_string());
            self.telemetry.per_device = g.devices();
            for (d, v) in self.telemetry.per_device.iter_mut().zip(r.bytes) {
                d.after_load_bytes = v;
            }
        }
    }
    fn after_warmup(&mut self) {
        if self.telemetry.vram_source.as_deref() == Some("backend_device_delta") {
            let used = self.ggml_used.clone();
            self.telemetry.vram_after_warmup_bytes = self.backend_taken(&used);
        } else if let Some(g) = self.session {
            let r = g.vram();
            self.telemetry.vram_after_warmup_bytes = r.total();
            for (d, v) in self.telemetry.per_device.iter_mut().zip(r.bytes) {
                d.after_warmup_bytes = v;
            }
        }
    }
    fn timed_begin(&mut self) {
        if let Some(m) = self.monitor {
            m.set_timed(true);
        }
        self.meter.begin();
    }
    fn wants_energy(&self) -> bool {
        self.session
            .and_then(|g| g.energy_mj(&self.devices_used))
            .is_some()
    }
    fn energy_begin(&mut self) {
        self.energy_start = self.session.and_then(|g| g.energy_mj(&self.devices_used));
    }
    fn energy_end(&mut self, tokens: u64, seconds: f64) {
        let end = self.session.and_then(|g| g.energy_mj(&self.devices_used));
        if let (Some(a), Some(b)) = (self.energy_start.take(), end) {
            let t = &mut self.telemetry;
            t.decode_energy_j = Some(b.saturating_sub(a) as f64 / 1e3);
            t.decode_tokens = Some(tokens);
            t.energy_window_s = Some(seconds);
        }
    }
    fn timed_end(&mut self) {
        self.meter.end();
        if let Some(m) = self.monitor {
            m.set_timed(false);
        }
    }
    fn progress(&mut self, phase: &str, done: u32, total: u32) {
        self.events.send(&Event::Progress {
            cell: self.cell,
            phase: phase.into(),
            done,
            total,
        });
    }
}

/// Processes that keep every core busy until dropped: the injected fault `busy`, a machine
/// busy with something else while a cell is measured.
struct Burners(Vec<std::process::Child>);

impl Burners {
    fn start() -> Self {
        let n = crate::disturbance::cpus();
        Burners(
            (0..n)
                .filter_map(|_| {
                    // bounded by `timeout`, so that a worker killed mid-cell leaves nothing
                    // spinning for long; a group of its own, so that the drop stops the shell too
                    let mut cmd = std::process::Command::new("timeout");
                    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                    cmd.args(["-s", "KILL", "60", "sh", "-c", "while :; do :; done"])
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .ok()
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling the process group this worker created for the burner.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Parsed [`FAULT_ENV`].
fn fault_for(spec: &str, cell: &Cell) -> Option<String> {
    let (kind, target) = match spec.split_once('@') {
        Some((k, t)) => (k, Some(t)),
        None => (spec, None),
    };
    let hit = match target {
        None => true,
        Some(t) => match t.split_once(':') {
            Some((m, q)) => m == cell.model && Quant::parse(q) == Some(cell.quant),
            None => t == cell.model,
        },
    };
    hit.then(|| kind.to_string())
}

/// The fault [`FAULT_ENV`] asks for in this cell, if any.
fn injected(cell: &Cell) -> Option<String> {
    fault_for(&std::env::var(FAULT_ENV).ok()?, cell)
}

fn hang() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a worker's stderr is its log, which the coordinator reads: the injected faults \
              print what the real ones would"
)]
fn inject_fault(cell: &Cell) -> Result<()> {
    let spec = std::env::var(FAULT_ENV).unwrap_or_default();
    match injected(cell).as_deref() {
        None | Some("hang-init" | "hang-exit" | "hang-quality" | "busy") => Ok(()),
        Some("crash") => {
            eprintln!("quantbench worker: injected crash ({FAULT_ENV}={spec})");
            std::process::abort()
        }
        Some("hang") => hang(),
        Some("hang-log") => loop {
            // stuck, but chatty: a log line every 10 ms, as a driver retrying in a loop
            eprintln!("quantbench worker: still trying ({FAULT_ENV}={spec})");
            std::thread::sleep(std::time::Duration::from_millis(10));
        },
        Some("oom") => {
            // What llama.cpp's CUDA backend prints before it aborts on an allocation failure.
            eprintln!("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 15258.00 MiB on device 0: cudaMalloc failed: out of memory");
            eprintln!("llama_model_load: error loading model: unable to allocate CUDA0 buffer (injected by {FAULT_ENV})");
            std::process::abort()
        }
        Some("error") => anyhow::bail!("injected error ({FAULT_ENV}={spec})"),
        Some(other) => anyhow::bail!("{FAULT_ENV}: unknown fault kind {other:?}"),
    }
}

/// Entry point of `quantbench worker --self-test`: initialises llama.cpp, reports what it
/// loaded, then runs a few tokens of the `tiny` synthetic model at F16, Q8_0 and Q4_K_M on the
/// CPU. A CPU backend variant that the machine cannot run (CPUID advertises an instruction set
/// the hypervisor does not allow) crashes here, before any cell, and the coordinator picks
/// another variant.
/// `worker --devices`: initialises llama.cpp, reports its backends and devices, exits.
pub fn devices() -> Result<()> {
    let mut events = take_stdout()?;
    let engine = engine::init()?;
    events.send(&Event::Ready {
        backend: engine.info.clone(),
    });
    Ok(())
}

pub fn self_test() -> Result<()> {
    let mut events = take_stdout()?;
    let engine = engine::init()?;
    events.send(&Event::Ready {
        backend: engine.info.clone(),
    });
    let dir = std::env::temp_dir().join(format!("quantbench-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        let f16 = dir.join("tiny-F16.gguf");
        let preset = crate::presets::preset("tiny").expect("tiny preset exists");
        let mut w = BufWriter::new(File::create(&f16)?);
        preset.write(0, &mut w)?;
        w.into_inner().map_err(|e| e.into_error())?;
        let mut files = vec![(Quant::F16, f16.clone())];
        for q in ["Q8_0", "Q4_K_M"] {
            let quant = Quant::parse(q).expect("known quant");
            let out = dir.join(format!("tiny-{q}.gguf"));
            engine::quantize(&f16, &out, quant, crate::plan::default_threads())?;
            files.push((quant, out));
        }
        for (index, (quant, path)) in files.into_iter().enumerate() {
            let cell = Cell {
                index,
                model_index: 0,
                model: "self-test".into(),
                label: "self-test".into(),
                quant,
                params: crate::plan::CellParams {
                    serve: None,
                    prompt: "self test".into(),
                    n_prompt: 16,
                    n_gen: 4,
                    n_batch: 16,
                    n_ubatch: 16,
                    n_gpu_layers: crate::config::GpuLayers::N(0),
                    flash_attn: crate::config::FlashAttn::Auto,
                    type_k: "f16".into(),
                    type_v: "f16".into(),
                    n_threads: crate::plan::default_threads(),
                    repetitions: 1,
                    warmup: 0,
                    timeout_s: 60,
                    sampling: crate::config::Sampling::Backend,
                    split_mode: SplitMode::default(),
                    main_gpu: 0,
                    tensor_split: Default::default(),
                    rpc: Default::default(),
                    devices: Default::default(),
                    quality: None,
                    n_parallel: 1,
                    n_depth: 0,
                    shared_prompt: false,
                },
            };
            let model = LoadedModel::load(&engine, &path, Placement::of(&cell.params), false)?;
            model.measure(&engine, &cell, &mut NoProbe)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result.context("CPU self-test with the tiny synthetic model")
}

struct NoProbe;
impl engine::Probe for NoProbe {}

/// Entry point of `quantbench worker --quantize IN OUT QUANT`: derives one file.
pub fn quantize(input: &Path, output: &Path, quant: Quant) -> Result<()> {
    let _engine = engine::init()?;
    engine::quantize(input, output, quant, crate::plan::default_threads())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self};
    use crate::plan::{expand, Overrides};

    #[test]
    fn fault_targets() {
        let m = config::parse(
            "schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let cells = expand(&m, &Overrides::default()).unwrap();
        let q8 = &cells[1];
        assert_eq!(fault_for("crash", q8).as_deref(), Some("crash"));
        assert_eq!(fault_for("crash@a", q8).as_deref(), Some("crash"));
        assert_eq!(fault_for("crash@a:q8_0", q8).as_deref(), Some("crash"));
        assert_eq!(fault_for("crash@a:F16", q8), None);
        assert_eq!(fault_for("hang@b", q8), None);
    }
}
