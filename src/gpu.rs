//! NVIDIA GPU facts and telemetry through NVML: device identity, driver and CUDA versions,
//! memory, and per-cell readings. "Unavailable" is a value: every field degrades to `None`
//! with a reason instead of failing the run. Never prints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

/// One NVIDIA GPU as NVML describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub pci_bus_id: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// Memory bus width in bits.
    pub memory_bus_width_bits: Option<u32>,
    /// Maximum memory clock in MHz.
    pub memory_clock_max_mhz: Option<u32>,
    /// Peak memory bandwidth: bus width / 8 × max memory clock × 2 (double data rate).
    pub peak_bandwidth_bytes_s: Option<f64>,
}

/// The GPUs of this machine, or why there are none to report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuEnvironment {
    pub driver_version: Option<String>,
    /// CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// Why `gpus` is empty or the versions are missing, plainly: `none (no NVIDIA driver)`.
    pub unavailable_reason: Option<String>,
    /// The loader's or NVML's own words behind `unavailable_reason` (shown with `-v`, not in
    /// reports).
    #[serde(skip)]
    pub unavailable_detail: Option<String>,
}

/// Why NVML cannot be used, said plainly: a machine without the NVIDIA driver (NVML's library
/// cannot be loaded) has no NVIDIA GPU to report; other failures keep NVML's words.
pub fn unavailable(e: &nvml_wrapper::error::NvmlError) -> String {
    match e {
        nvml_wrapper::error::NvmlError::LibloadingError(_) => "none (no NVIDIA driver)".into(),
        e => format!("NVML unavailable: {e}"),
    }
}

/// GPU readings of one cell; `None` fields come with `unavailable_reason`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuCellTelemetry {
    pub unavailable_reason: Option<String>,
    /// How `vram_*` was measured: `nvml_process` (this worker's own usage) or
    /// `nvml_device_delta` (device-wide used memory minus what was used before the load).
    pub vram_source: Option<String>,
    pub vram_after_load_bytes: Option<u64>,
    pub vram_after_warmup_bytes: Option<u64>,
    pub vram_peak_bytes: Option<u64>,
    /// Energy of the generation test, in joules, and the tokens generated: measured over extra
    /// untimed rounds lasting at least 2 s (`energy_window_s`), as NVML's counter is coarse.
    pub decode_energy_j: Option<f64>,
    pub decode_tokens: Option<u64>,
    pub energy_window_s: Option<f64>,
    pub sm_clock_mhz_min: Option<u32>,
    pub sm_clock_mhz_max: Option<u32>,
    pub mem_clock_mhz_min: Option<u32>,
    pub mem_clock_mhz_max: Option<u32>,
    /// Throttle reasons seen during timed regions (idle and application-clock settings excluded).
    pub throttle_reasons: Vec<String>,
    /// Other processes seen computing on the active GPUs during timed regions; `None` when
    /// not known (no reading, or NVML lists this process under another PID namespace's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_processes: Option<u32>,
    /// Peak memory bandwidth the model can draw on (NVML bus width × max memory clock × 2):
    /// one GPU's for `none` and `layer` (layers run one GPU after the other), the sum over its
    /// GPUs for `row` and `tensor`.
    pub peak_bandwidth_bytes_s: Option<f64>,
    /// Each GPU's share of `vram_*`, in the order llama.cpp lists the GPUs.
    #[serde(default)]
    pub per_device: Vec<DeviceVram>,
}

/// Device memory this worker held on one GPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceVram {
    /// ggml's name of the GPU, e.g. `CUDA1`.
    pub device: String,
    pub nvml_index: u32,
    pub pci_bus_id: String,
    /// The GPU model, e.g. `NVIDIA H200`.
    pub name: String,
    pub after_load_bytes: Option<u64>,
    pub after_warmup_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
}

/// Peak memory bandwidth from NVML's bus width (bits) and maximum memory clock (MHz), double
/// data rate.
fn peak_bandwidth(bus_bits: Option<u32>, clock_mhz: Option<u32>) -> Option<f64> {
    Some(f64::from(bus_bits?) / 8.0 * f64::from(clock_mhz?) * 1e6 * 2.0)
}

/// Reads what NVML knows about the machine's GPUs.
pub fn environment() -> GpuEnvironment {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return GpuEnvironment {
                unavailable_reason: Some(unavailable(&e)),
                unavailable_detail: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let mut env = GpuEnvironment {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_version: nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        }),
        ..Default::default()
    };
    let count = nvml.device_count().unwrap_or(0);
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        let mem = d.memory_info().ok();
        let bus = d.memory_bus_width().ok();
        let clock = d.max_clock_info(Clock::Memory).ok();
        env.gpus.push(GpuInfo {
            index: i,
            name: d.name().unwrap_or_default(),
            uuid: d.uuid().unwrap_or_default(),
            pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
            memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
            memory_free_bytes: mem.as_ref().map_or(0, |m| m.free),
            memory_bus_width_bits: bus,
            memory_clock_max_mhz: clock,
            peak_bandwidth_bytes_s: peak_bandwidth(bus, clock),
        });
    }
    if env.gpus.is_empty() {
        env.unavailable_reason = Some("NVML found no NVIDIA GPU".into());
    }
    env
}

/// Throttle reasons that do not mean the GPU was held back by power, heat or a slowdown.
fn benign(r: ThrottleReasons) -> bool {
    r == ThrottleReasons::GPU_IDLE
        || r == ThrottleReasons::APPLICATIONS_CLOCKS_SETTING
        || r == ThrottleReasons::DISPLAY_CLOCK_SETTING
        || r == ThrottleReasons::NONE
}

/// One GPU a worker watches: NVML's index, the name ggml gives it (`CUDA0`), and its memory use
/// before this process touched it (the baseline of the device-wide fallback).
#[derive(Clone, Debug)]
struct Watched {
    index: u32,
    ggml_name: String,
    pci_bus_id: String,
    name: String,
    baseline_used_bytes: u64,
    peak_bandwidth_bytes_s: Option<f64>,
}

/// NVML access for one worker process and every GPU llama.cpp may use. Opened before
/// llama.cpp is initialised, so each device's memory use before this process touched it is
/// the baseline of the device-wide fallback.
pub struct GpuSession {
    nvml: Arc<Nvml>,
    devices: Vec<Watched>,
    pid: u32,
}

/// Normalises a PCI bus id (`00000000:01:00.0` or `0000:01:00.0`) to `01:00.0`.
fn pci_tail(id: &str) -> String {
    let parts: Vec<&str> = id.split(':').collect();
    parts[parts.len().saturating_sub(2)..]
        .join(":")
        .to_lowercase()
}

/// Pairs ggml's GPUs (`(name, pci bus id)`, in ggml's order) with NVML's (`(index, pci bus
/// id)`): by PCI bus id where ggml reports one, else by position among the unpaired.
/// Returns `(ggml position, NVML index)`.
pub fn pair_devices(ggml: &[(String, String)], nvml: &[(u32, String)]) -> Vec<(usize, u32)> {
    let mut used = vec![false; nvml.len()];
    let mut out: Vec<(usize, Option<usize>)> = ggml
        .iter()
        .enumerate()
        .map(|(g, (_, pci))| {
            let hit = (!pci.is_empty())
                .then(|| nvml.iter().position(|(_, b)| pci_tail(b) == pci_tail(pci)))
                .flatten();
            if let Some(k) = hit {
                used[k] = true;
            }
            (g, hit)
        })
        .collect();
    for slot in out.iter_mut().filter(|(_, k)| k.is_none()) {
        if let Some(k) = used.iter().position(|u| !u) {
            used[k] = true;
            slot.1 = Some(k);
        }
    }
    out.into_iter()
        .filter_map(|(g, k)| k.map(|k| (g, nvml[k].0)))
        .collect()
}

impl GpuSession {
    /// Opens NVML and takes the memory baseline of every GPU it sees.
    pub fn open() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| unavailable(&e))?;
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        let mut devices = Vec::new();
        for i in 0..count {
            let Ok(d) = nvml.device_by_index(i) else {
                continue;
            };
            let bus = d.memory_bus_width().ok();
            let clock = d.max_clock_info(Clock::Memory).ok();
            devices.push(Watched {
                index: i,
                ggml_name: format!("GPU{i}"),
                pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                baseline_used_bytes: d.memory_info().map(|m| m.used).unwrap_or(0),
                peak_bandwidth_bytes_s: peak_bandwidth(bus, clock),
            });
        }
        if devices.is_empty() {
            return Err("NVML found no NVIDIA GPU".into());
        }
        Ok(GpuSession {
            nvml: Arc::new(nvml),
            devices,
            pid: std::process::id(),
        })
    }

    /// Keeps the GPUs llama.cpp registered (`(ggml name, pci bus id)` in ggml's order), named
    /// as ggml names them. Fails when none of them is an NVIDIA GPU NVML knows.
    pub fn select(mut self, ggml: &[(String, String)]) -> Result<Self, String> {
        let nv: Vec<(u32, String)> = self
            .devices
            .iter()
            .map(|d| (d.index, d.pci_bus_id.clone()))
            .collect();
        let mut kept = Vec::new();
        for (g, index) in pair_devices(ggml, &nv) {
            if let Some(d) = self.devices.iter().find(|d| d.index == index) {
                kept.push(Watched {
                    ggml_name: ggml[g].0.clone(),
                    ..d.clone()
                });
            }
        }
        if kept.is_empty() {
            return Err("NVML knows none of the GPUs llama.cpp registered".into());
        }
        self.devices = kept;
        Ok(self)
    }

    /// The watched GPUs, in ggml's order, as per-cell entries with no readings yet.
    pub fn devices(&self) -> Vec<DeviceVram> {
        self.devices
            .iter()
            .map(|d| DeviceVram {
                device: d.ggml_name.clone(),
                nvml_index: d.index,
                pci_bus_id: d.pci_bus_id.clone(),
                name: d.name.clone(),
                ..Default::default()
            })
            .collect()
    }

    /// Whether the GPU named `ggml_name` is watched (an NVIDIA GPU NVML knows).
    pub fn watches(&self, ggml_name: &str) -> bool {
        self.devices.iter().any(|d| d.ggml_name == ggml_name)
    }

    /// Peak memory bandwidth of the watched GPU named `ggml_name`.
    pub fn peak_bandwidth(&self, ggml_name: &str) -> Option<f64> {
        self.devices
            .iter()
            .find(|d| d.ggml_name == ggml_name)?
            .peak_bandwidth_bytes_s
    }

    /// Device memory this process holds now on each watched GPU, and how it was measured.
    pub fn vram(&self) -> VramReading {
        read_vram(&self.nvml, &self.devices, self.pid)
    }

    /// Device memory another process (a server this worker started) holds now, all watched
    /// GPUs together.
    pub fn vram_of(&self, pid: u32) -> Option<u64> {
        read_vram(&self.nvml, &self.devices, pid).total()
    }

    /// The summed energy counters of the GPUs named (millijoules; Volta and newer); `None`
    /// when any of them has no counter, or no GPU is named.
    pub fn energy_mj(&self, ggml_names: &[String]) -> Option<u64> {
        let mut sum = 0;
        let mut any = false;
        for d in self
            .devices
            .iter()
            .filter(|d| ggml_names.contains(&d.ggml_name))
        {
            sum += self
                .nvml
                .device_by_index(d.index)
                .ok()?
                .total_energy_consumption()
                .ok()?;
            any = true;
        }
        any.then_some(sum)
    }

    /// Starts a sampling thread: outside timed regions it reads this process' device memory
    /// every `untimed` (the peak covers load, context creation and warm-up, which allocate all
    /// the timed repetitions use); inside timed regions only the clocks and throttle reasons of
    /// the GPUs the model runs on ([`CellMonitor::set_active`]), every `timed` (`None`: not at
    /// all), so that NVML calls stay out of the measurement.
    pub fn monitor(&self, untimed: Duration, timed: Option<Duration>) -> CellMonitor {
        let state = Arc::new(Mutex::new(Sampled::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let timed_flag = Arc::new(AtomicBool::new(false));
        let active = Arc::new(Mutex::new(Vec::<u32>::new()));
        let (nvml, devices, pid) = (self.nvml.clone(), self.devices.clone(), self.pid);
        let (st, sp, tm, act) = (
            state.clone(),
            stop.clone(),
            timed_flag.clone(),
            active.clone(),
        );
        let thread = std::thread::spawn(move || {
            let tick = Duration::from_millis(2);
            let mut last: Option<std::time::Instant> = None;
            while !sp.load(Ordering::Relaxed) {
                let in_timed = tm.load(Ordering::Relaxed);
                let period = if in_timed { timed } else { Some(untimed) };
                let due = match (period, last) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(p), Some(t)) => t.elapsed() >= p,
                };
                if due {
                    last = Some(std::time::Instant::now());
                    let active = act.lock().map(|a| a.clone()).unwrap_or_default();
                    sample(&nvml, &devices, pid, in_timed, &active, &st);
                }
                std::thread::sleep(tick);
            }
            // one last memory reading after the timed regions
            sample(&nvml, &devices, pid, false, &[], &st);
        });
        CellMonitor {
            state,
            stop,
            timed: timed_flag,
            active,
            watched: self
                .devices
                .iter()
                .map(|d| (d.index, d.ggml_name.clone()))
                .collect(),
            thread: Some(thread),
        }
    }
}

/// Per-process device memory of each watched GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VramReading {
    /// Bytes per GPU, in the order of [`GpuSession::devices`].
    pub bytes: Vec<Option<u64>>,
    /// `nvml_process` when every device listed this process, else `nvml_device_delta`.
    pub source: &'static str,
}

impl VramReading {
    /// Bytes on all GPUs together (`None` when no device could be read).
    pub fn total(&self) -> Option<u64> {
        let v: Vec<u64> = self.bytes.iter().flatten().copied().collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

fn read_vram(nvml: &Nvml, devices: &[Watched], pid: u32) -> VramReading {
    let mut r = VramReading {
        bytes: Vec::with_capacity(devices.len()),
        source: "nvml_process",
    };
    for d in devices {
        let (v, source) = vram_of(nvml, d.index, pid, d.baseline_used_bytes);
        if source != "nvml_process" {
            r.source = source;
        }
        r.bytes.push(v);
    }
    r
}

/// One sampler reading: memory outside timed regions, clocks and throttling of the `active`
/// GPUs (NVML indices) inside.
fn sample(
    nvml: &Nvml,
    devices: &[Watched],
    pid: u32,
    in_timed: bool,
    active: &[u32],
    st: &Mutex<Sampled>,
) {
    if !in_timed {
        let r = read_vram(nvml, devices, pid);
        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = r.total() {
            s.vram_peak = Some(s.vram_peak.map_or(t, |p: u64| p.max(t)));
        }
        s.per_device_peak.resize(r.bytes.len(), None);
        for (peak, v) in s.per_device_peak.iter_mut().zip(&r.bytes) {
            if let Some(v) = *v {
                *peak = Some(peak.map_or(v, |p| p.max(v)));
            }
        }
        return;
    }
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    for &index in active {
        let Ok(d) = nvml.device_by_index(index) else {
            continue;
        };
        let minmax = |slot: &mut (Option<u32>, Option<u32>), v: Option<u32>| {
            if let Some(v) = v {
                slot.0 = Some(slot.0.map_or(v, |x| x.min(v)));
                slot.1 = Some(slot.1.map_or(v, |x| x.max(v)));
            }
        };
        minmax(&mut s.sm, d.clock_info(Clock::SM).ok());
        minmax(&mut s.mem, d.clock_info(Clock::Memory).ok());
        let reasons = d
            .current_throttle_reasons()
            .unwrap_or(ThrottleReasons::empty());
        for (name, flag) in reasons.iter_names() {
            if !benign(flag) && !s.throttle.iter().any(|n| n == name) {
                s.throttle.push(name.to_string());
            }
        }
        if let Ok(procs) = d.running_compute_processes() {
            // only a listing that holds this process speaks for the others (in a container
            // NVML may list it under another PID namespace's id)
            if procs.iter().any(|p| p.pid == pid) {
                s.others
                    .get_or_insert_with(Default::default)
                    .extend(procs.iter().map(|p| p.pid).filter(|&p| p != pid));
            }
        }
    }
}

fn vram_of(nvml: &Nvml, index: u32, pid: u32, baseline: u64) -> (Option<u64>, &'static str) {
    let Ok(d) = nvml.device_by_index(index) else {
        return (None, "unavailable");
    };
    // CUDA contexts are compute processes; a Vulkan context (llama.cpp's Vulkan backend on an
    // NVIDIA GPU) may be listed as a graphics process
    for procs in [
        d.running_compute_processes(),
        d.running_graphics_processes(),
    ] {
        if let Some(p) = procs
            .ok()
            .and_then(|v| v.into_iter().find(|p| p.pid == pid))
        {
            if let UsedGpuMemory::Used(b) = p.used_gpu_memory {
                return (Some(b), "nvml_process");
            }
        }
    }
    // In a container the process may be listed under another PID namespace's id, or not at
    // all. A device this process never touched is not listed either: the delta is then ~0.
    match d.memory_info() {
        Ok(m) => (Some(m.used.saturating_sub(baseline)), "nvml_device_delta"),
        Err(_) => (None, "unavailable"),
    }
}

#[derive(Default)]
struct Sampled {
    vram_peak: Option<u64>,
    per_device_peak: Vec<Option<u64>>,
    sm: (Option<u32>, Option<u32>),
    mem: (Option<u32>, Option<u32>),
    throttle: Vec<String>,
    /// Other processes' ids on the active GPUs; `None` until a listing held this process.
    others: Option<std::collections::BTreeSet<u32>>,
}

/// A running sampler for one cell.
pub struct CellMonitor {
    state: Arc<Mutex<Sampled>>,
    stop: Arc<AtomicBool>,
    timed: Arc<AtomicBool>,
    /// NVML indices of the GPUs whose clocks are read in timed regions.
    active: Arc<Mutex<Vec<u32>>>,
    /// `(NVML index, ggml name)` of the watched GPUs, in order.
    watched: Vec<(u32, String)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CellMonitor {
    /// Marks the start or end of timed regions (clocks and throttling are read only inside).
    pub fn set_timed(&self, on: bool) {
        self.timed.store(on, Ordering::Relaxed);
    }

    /// The GPUs (ggml names) the model runs on: their clocks and throttling are read.
    pub fn set_active(&self, ggml_names: &[String]) {
        let idx: Vec<u32> = self
            .watched
            .iter()
            .filter(|(_, n)| ggml_names.contains(n))
            .map(|(i, _)| *i)
            .collect();
        if let Ok(mut a) = self.active.lock() {
            *a = idx;
        }
    }

    /// Stops sampling and writes what was seen into `t`.
    pub fn finish(mut self, t: &mut GpuCellTelemetry) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        t.vram_peak_bytes = s.vram_peak;
        for (k, peak) in s.per_device_peak.iter().enumerate() {
            if let Some(d) = t.per_device.get_mut(k) {
                d.peak_bytes = *peak;
            }
        }
        (t.sm_clock_mhz_min, t.sm_clock_mhz_max) = s.sm;
        (t.mem_clock_mhz_min, t.mem_clock_mhz_max) = s.mem;
        t.throttle_reasons = s.throttle.clone();
        t.other_processes = s.others.as_ref().map(|o| o.len() as u32);
    }
}

impl Drop for CellMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_ids_match_across_formats() {
        assert_eq!(pci_tail("00000000:1B:00.0"), pci_tail("0000:1b:00.0"));
        assert_ne!(pci_tail("0000:1b:00.0"), pci_tail("0000:1c:00.0"));
    }

    #[test]
    fn ggml_gpus_pair_with_nvml_by_bus_id_then_by_order() {
        let g = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let nv: Vec<(u32, String)> = vec![
            (0, "00000000:1B:00.0".into()),
            (1, "00000000:2C:00.0".into()),
            (2, "00000000:3D:00.0".into()),
        ];
        // CUDA_VISIBLE_DEVICES=2,0: ggml's CUDA0 is NVML's 2
        let pairs = pair_devices(
            &g(&[("CUDA0", "0000:3d:00.0"), ("CUDA1", "0000:1b:00.0")]),
            &nv,
        );
        assert_eq!(pairs, vec![(0, 2), (1, 0)]);
        // no bus ids: in order
        let pairs = pair_devices(&g(&[("CUDA0", ""), ("CUDA1", "")]), &nv);
        assert_eq!(pairs, vec![(0, 0), (1, 1)]);
        // one known, one unknown: the unknown takes the first NVML GPU left
        let pairs = pair_devices(&g(&[("CUDA0", "0000:1b:00.0"), ("CUDA1", "")]), &nv);
        assert_eq!(pairs, vec![(0, 0), (1, 1)]);
        // more ggml GPUs than NVML ones: the extra one goes unwatched
        let pairs = pair_devices(&g(&[("A", ""), ("B", ""), ("C", ""), ("D", "")]), &nv);
        assert_eq!(pairs.len(), 3);
    }

    #[test]
    fn vram_totals_over_devices() {
        let r = VramReading {
            bytes: vec![Some(5), None, Some(7)],
            source: "nvml_process",
        };
        assert_eq!(r.total(), Some(12));
        assert_eq!(VramReading::default().total(), None);
    }

    #[test]
    fn no_gpu_is_a_value_not_an_error() {
        // On a machine without NVIDIA's driver this must degrade, not fail.
        let env = environment();
        if env.gpus.is_empty() {
            assert!(env.unavailable_reason.is_some());
            assert!(GpuSession::open().is_err());
        }
    }
}
