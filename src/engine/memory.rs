//! Memory accounting: llama.cpp's own per-buffer breakdown (through the C++ shim) and the
//! worker process' resident set from /proc.

use std::os::raw::c_char;

use crate::protocol::{BufferMemory, MemoryMeasurement};

#[repr(C)]
#[derive(Clone, Copy)]
struct QbBufferMemory {
    name: [c_char; 64],
    is_host: i32,
    model: usize,
    context: usize,
    compute: usize,
}

extern "C" {
    fn qb_memory_breakdown(
        ctx: *const llama_cpp_sys_2::llama_context,
        out: *mut QbBufferMemory,
        cap: usize,
    ) -> usize;
}

/// llama.cpp's memory breakdown of a context (model weights, KV cache, compute buffers per
/// buffer type), summed into device and host totals.
pub(super) fn breakdown(ctx: *const llama_cpp_sys_2::llama_context) -> MemoryMeasurement {
    const CAP: usize = 32;
    let empty = QbBufferMemory {
        name: [0; 64],
        is_host: 0,
        model: 0,
        context: 0,
        compute: 0,
    };
    let mut raw = [empty; CAP];
    // SAFETY: ctx is a live context; the shim writes at most CAP entries.
    let n = unsafe { qb_memory_breakdown(ctx, raw.as_mut_ptr(), CAP) }.min(CAP);
    let buffers: Vec<BufferMemory> = raw[..n]
        .iter()
        .map(|b| BufferMemory {
            name: super::cstr(b.name.as_ptr()),
            host: b.is_host != 0,
            model_bytes: b.model as u64,
            context_bytes: b.context as u64,
            compute_bytes: b.compute as u64,
        })
        .collect();
    let sum = |f: fn(&BufferMemory) -> u64, host: Option<bool>| -> u64 {
        buffers
            .iter()
            .filter(|b| host.is_none_or(|h| b.host == h))
            .map(f)
            .sum()
    };
    MemoryMeasurement {
        weights_gpu_bytes: sum(|b| b.model_bytes, Some(false)),
        weights_host_bytes: sum(|b| b.model_bytes, Some(true)),
        kv_bytes: sum(|b| b.context_bytes, None),
        compute_bytes: sum(|b| b.compute_bytes, None),
        buffers,
        ..Default::default()
    }
}

/// Resident set of this process, from /proc/self/status.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostRss {
    pub current_bytes: u64,
    pub peak_bytes: u64,
}

/// Reads VmRSS and VmHWM of this process (zeros where /proc is unavailable).
pub fn host_rss() -> HostRss {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return HostRss::default();
    };
    let field = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    HostRss {
        current_bytes: field("VmRSS:"),
        peak_bytes: field("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_read() {
        let r = super::host_rss();
        assert!(r.current_bytes > 0 && r.peak_bytes >= r.current_bytes);
    }
}
