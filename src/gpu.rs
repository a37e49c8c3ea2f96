//! NVIDIA GPU facts and telemetry through NVML: device identity, driver and CUDA versions,
//! memory, and per-cell readings. "Unavailable" is a value: every field degrades to `None`
//! with a reason instead of failing the run. Never prints.

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
    /// Energy over the timed generation repetitions, in joules, and the tokens they produced.
    pub decode_energy_j: Option<f64>,
    pub decode_tokens: Option<u64>,
    pub sm_clock_mhz_min: Option<u32>,
    pub sm_clock_mhz_max: Option<u32>,
    pub mem_clock_mhz_min: Option<u32>,
    pub mem_clock_mhz_max: Option<u32>,
    /// Throttle reasons seen during timed regions (idle and application-clock settings excluded).
    pub throttle_reasons: Vec<String>,
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
        let clock = d
            .max_clock_info(nvml_wrapper::enum_wrappers::device::Clock::Memory)
            .ok();
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
