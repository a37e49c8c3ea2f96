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
    /// Why `gpus` is empty or the versions are missing.
    pub unavailable_reason: Option<String>,
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
    /// Peak memory bandwidth of the device (NVML bus width × max memory clock × 2).
    pub peak_bandwidth_bytes_s: Option<f64>,
}

/// Reads what NVML knows about the machine's GPUs.
pub fn environment() -> GpuEnvironment {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return GpuEnvironment {
                unavailable_reason: Some(format!("NVML unavailable (no NVIDIA driver?): {e}")),
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
            peak_bandwidth_bytes_s: match (bus, clock) {
                (Some(b), Some(c)) => Some(f64::from(b) / 8.0 * f64::from(c) * 1e6 * 2.0),
                _ => None,
            },
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

/// NVML access for one worker process and the GPU it uses. Opened before llama.cpp is
/// initialised, so the device's memory use before this process touched it is the baseline of
/// the device-wide fallback.
pub struct GpuSession {
    nvml: Arc<Nvml>,
    index: u32,
    pid: u32,
    baseline_used_bytes: u64,
    pub peak_bandwidth_bytes_s: Option<f64>,
}

/// Normalises a PCI bus id (`00000000:01:00.0` or `0000:01:00.0`) to `01:00.0`.
fn pci_tail(id: &str) -> String {
    let parts: Vec<&str> = id.split(':').collect();
    parts[parts.len().saturating_sub(2)..]
        .join(":")
        .to_lowercase()
}

impl GpuSession {
    /// Opens NVML and picks the GPU with PCI bus id `pci` (the first GPU when `None`).
    pub fn open(pci: Option<&str>) -> Result<Self, String> {
        let nvml =
            Nvml::init().map_err(|e| format!("NVML unavailable (no NVIDIA driver?): {e}"))?;
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        let mut index = None;
        for i in 0..count {
            let Ok(d) = nvml.device_by_index(i) else {
                continue;
            };
            let bus = d.pci_info().map(|p| p.bus_id).unwrap_or_default();
            if pci.is_none_or(|p| pci_tail(p) == pci_tail(&bus)) {
                index = Some(i);
                break;
            }
        }
        let index = index.ok_or_else(|| match pci {
            Some(p) => format!("NVML has no GPU with PCI bus id {p}"),
            None => "NVML found no NVIDIA GPU".to_string(),
        })?;
        let (baseline, bw) = {
            let d = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML: {e}"))?;
            let used = d.memory_info().map(|m| m.used).unwrap_or(0);
            let bus = d.memory_bus_width().ok();
            let clock = d.max_clock_info(Clock::Memory).ok();
            let bw = match (bus, clock) {
                (Some(b), Some(c)) => Some(f64::from(b) / 8.0 * f64::from(c) * 1e6 * 2.0),
                _ => None,
            };
            (used, bw)
        };
        Ok(GpuSession {
            nvml: Arc::new(nvml),
            index,
            pid: std::process::id(),
            baseline_used_bytes: baseline,
            peak_bandwidth_bytes_s: bw,
        })
    }

    /// Whether this session's GPU has PCI bus id `pci`.
    pub fn matches(&self, pci: &str) -> bool {
        self.nvml
            .device_by_index(self.index)
            .and_then(|d| d.pci_info())
            .is_ok_and(|p| pci_tail(&p.bus_id) == pci_tail(pci))
    }

    /// Device memory this process holds now, and how it was measured.
    pub fn vram(&self) -> (Option<u64>, &'static str) {
        vram_of(&self.nvml, self.index, self.pid, self.baseline_used_bytes)
    }

    /// The device's energy counter in millijoules (Volta and newer).
    pub fn energy_mj(&self) -> Option<u64> {
        self.nvml
            .device_by_index(self.index)
            .ok()?
            .total_energy_consumption()
            .ok()
    }

    /// Starts a sampling thread: outside timed regions it reads this process' device memory
    /// every `untimed` (the peak covers load, context creation and warm-up, which allocate all
    /// the timed repetitions use); inside timed regions only the clocks and throttle reasons,
    /// every `timed` (`None`: not at all), so that NVML calls stay out of the measurement.
    pub fn monitor(&self, untimed: Duration, timed: Option<Duration>) -> CellMonitor {
        let state = Arc::new(Mutex::new(Sampled::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let timed_flag = Arc::new(AtomicBool::new(false));
        let (nvml, index, pid, base) = (
            self.nvml.clone(),
            self.index,
            self.pid,
            self.baseline_used_bytes,
        );
        let (st, sp, tm) = (state.clone(), stop.clone(), timed_flag.clone());
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
                    sample(&nvml, index, pid, base, in_timed, &st);
                }
                std::thread::sleep(tick);
            }
            // one last memory reading after the timed regions
            sample(&nvml, index, pid, base, false, &st);
        });
        CellMonitor {
            state,
            stop,
            timed: timed_flag,
            thread: Some(thread),
        }
    }
}

/// One sampler reading: memory outside timed regions, clocks and throttling inside.
fn sample(nvml: &Nvml, index: u32, pid: u32, base: u64, in_timed: bool, st: &Mutex<Sampled>) {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if !in_timed {
        if let (Some(v), _) = vram_of(nvml, index, pid, base) {
            s.vram_peak = Some(s.vram_peak.map_or(v, |p: u64| p.max(v)));
        }
        return;
    }
    let Ok(d) = nvml.device_by_index(index) else {
        return;
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
}

fn vram_of(nvml: &Nvml, index: u32, pid: u32, baseline: u64) -> (Option<u64>, &'static str) {
    let Ok(d) = nvml.device_by_index(index) else {
        return (None, "unavailable");
    };
    if let Ok(procs) = d.running_compute_processes() {
        if let Some(p) = procs.iter().find(|p| p.pid == pid) {
            if let UsedGpuMemory::Used(b) = p.used_gpu_memory {
                return (Some(b), "nvml_process");
            }
        }
    }
    // In a container the process may be listed under another PID namespace's id, or not at all.
    match d.memory_info() {
        Ok(m) => (Some(m.used.saturating_sub(baseline)), "nvml_device_delta"),
        Err(_) => (None, "unavailable"),
    }
}

#[derive(Default)]
struct Sampled {
    vram_peak: Option<u64>,
    sm: (Option<u32>, Option<u32>),
    mem: (Option<u32>, Option<u32>),
    throttle: Vec<String>,
}

/// A running sampler for one cell.
pub struct CellMonitor {
    state: Arc<Mutex<Sampled>>,
    stop: Arc<AtomicBool>,
    timed: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CellMonitor {
    /// Marks the start or end of timed regions (clocks and throttling are read only inside).
    pub fn set_timed(&self, on: bool) {
        self.timed.store(on, Ordering::Relaxed);
    }

    /// Stops sampling and writes what was seen into `t`.
    pub fn finish(mut self, t: &mut GpuCellTelemetry) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        t.vram_peak_bytes = s.vram_peak;
        (t.sm_clock_mhz_min, t.sm_clock_mhz_max) = s.sm;
        (t.mem_clock_mhz_min, t.mem_clock_mhz_max) = s.mem;
        t.throttle_reasons = s.throttle.clone();
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
    fn no_gpu_is_a_value_not_an_error() {
        // On a machine without NVIDIA's driver this must degrade, not fail.
        let env = environment();
        if env.gpus.is_empty() {
            assert!(env.unavailable_reason.is_some());
            assert!(GpuSession::open(None).is_err());
        }
    }
}
