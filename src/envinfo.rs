//! Facts about the machine a run measured: OS, kernel, CPU, memory. Linux /proc based; every
//! field degrades to empty rather than failing. Never prints.

use crate::results::Environment;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':').or_else(|| l.split_once('='))?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Total host memory in bytes (MemTotal).
pub fn host_memory_bytes() -> u64 {
    field(&read("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Memory available to new processes in bytes (MemAvailable).
pub fn host_memory_available_bytes() -> u64 {
    field(&read("/proc/meminfo"), "MemAvailable")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The machine's OS, kernel, CPU and memory (llama and GPU fields are filled by the caller).
pub fn collect() -> Environment {
    let (kernel, hostname) = match nix::sys::utsname::uname() {
        Ok(u) => (
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            ),
            u.nodename().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    };
    let cpuinfo = read("/proc/cpuinfo");
    Environment {
        os: field(&read("/etc/os-release"), "PRETTY_NAME")
            .unwrap_or(std::env::consts::OS)
            .to_string(),
        kernel,
        hostname,
        cpu: field(&cpuinfo, "model name")
            .unwrap_or("unknown")
            .to_string(),
        cpu_cores: crate::plan::default_threads(),
        host_memory_bytes: host_memory_bytes(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn collects_something() {
        let e = super::collect();
        assert!(e.cpu_cores >= 1);
        assert!(e.host_memory_bytes > 0);
        assert!(!e.kernel.is_empty());
    }
}
