//! ggml backend modules: where they are looked for, which ones are loaded, which devices they
//! registered; and llama.cpp's log, routed to the worker's stderr.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Result};
use llama_cpp_sys_2 as sys;

use super::cstr;
use crate::protocol::{BackendInfo, DeviceInfo};

/// Environment variable holding extra backend-module folders (`:`-separated), searched first.
pub const BACKEND_DIR_ENV: &str = "QUANTBENCH_BACKEND_DIR";

/// Environment variable naming CPU backend variants not to load (`,`-separated, e.g.
/// `sapphirerapids`): set by the coordinator when a variant fails its self-test on this machine.
pub const CPU_EXCLUDE_ENV: &str = "QUANTBENCH_CPU_EXCLUDE";

/// CPU variant of a module file: `libggml-cpu-haswell.so` → `haswell`.
pub fn cpu_variant(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix("libggml-cpu-")?.strip_suffix(".so")
}

/// Folders searched for `libggml-<backend>[-variant].so`, in priority order: the
/// `--backend-dir` / `QUANTBENCH_BACKEND_DIR` folders, the executable's folder, and the folders
/// the build installed the modules into (llama.cpp's, then quantbench's own RPC module). For each backend the first folder that has it wins.
pub fn backend_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os(BACKEND_DIR_ENV) {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    for built in [env!("QB_BUILD_BACKENDS_DIR"), env!("QB_BUILD_RPC_DIR")] {
        if !built.is_empty() {
            dirs.push(PathBuf::from(built));
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Backend name of a module file: `libggml-cpu-haswell.so` → `cpu`, `libggml-cuda.so` → `cuda`.
/// `None` for files that are not backend modules (`libggml.so`, `libggml-base.so`, ...).
fn module_backend(file_name: &OsStr) -> Option<String> {
    let s = file_name.to_str()?;
    let stem = s.strip_prefix("libggml-")?.strip_suffix(".so")?;
    let name = stem.split('-').next()?;
    if name.is_empty() || name == "base" {
        return None;
    }
    Some(name.to_string())
}

/// Asks a module how well it suits this machine (`ggml_backend_score`; 0 = unusable).
fn module_score(path: &Path) -> i32 {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: dlopen/dlsym/dlclose on a ggml backend module; the score function takes no
    // arguments and only inspects CPU features.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return 0;
        }
        let sym = libc::dlsym(h, c"ggml_backend_score".as_ptr());
        let score = if sym.is_null() {
            1
        } else {
            let f: extern "C" fn() -> i32 = std::mem::transmute(sym);
            f()
        };
        libc::dlclose(h);
        score
    }
}

/// Loads, for each backend, the best-scoring module of the first folder that has one.
/// GPU and other backends are registered before the CPU one (ggml's own order).
fn load_modules(dirs: &[PathBuf]) -> Vec<String> {
    let excluded: Vec<String> = std::env::var(CPU_EXCLUDE_ENV)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut by_backend: BTreeMap<String, (usize, Vec<PathBuf>)> = BTreeMap::new();
    for (rank, dir) in dirs.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = module_backend(&e.file_name()) else {
                continue;
            };
            let file = e.file_name().to_string_lossy().into_owned();
            if cpu_variant(&file).is_some_and(|v| excluded.iter().any(|x| x == v)) {
                continue;
            }
            let slot = by_backend.entry(name).or_insert((rank, Vec::new()));
            if slot.0 == rank {
                slot.1.push(e.path());
            }
        }
    }
    let mut order: Vec<_> = by_backend.into_iter().collect();
    order.sort_by_key(|(name, _)| name == "cpu");
    let mut loaded = Vec::new();
    for (_, (_, mut files)) in order {
        files.sort();
        let best = if files.len() == 1 {
            files.pop()
        } else {
            files
                .into_iter()
                .map(|f| (module_score(&f), f))
                .filter(|(s, _)| *s > 0)
                .max_by_key(|(s, _)| *s)
                .map(|(_, f)| f)
        };
        let Some(path) = best else { continue };
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: registers a ggml backend module; failures are logged by ggml and return null.
        let reg = unsafe { sys::ggml_backend_load(c.as_ptr()) };
        if !reg.is_null() {
            loaded.push(path.display().to_string());
        }
    }
    loaded
}

static LOG_DEBUG: AtomicBool = AtomicBool::new(false);
static LAST_LEVEL: AtomicU32 = AtomicU32::new(0);

/// Warning and error lines of llama.cpp's log since the last [`clear_recent_log`] (the last
/// few, with the line being assembled), so a failed cell can say why.
static RECENT: Mutex<(Vec<String>, String)> = Mutex::new((Vec::new(), String::new()));
const RECENT_KEEP: usize = 6;

/// The last warning/error lines llama.cpp logged since [`clear_recent_log`].
pub fn recent_log() -> Vec<String> {
    let r = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let mut lines = r.0.clone();
    if !r.1.trim().is_empty() {
        lines.push(r.1.trim().to_string());
    }
    lines
}

/// Forgets the remembered log lines (at the start of each cell).
pub fn clear_recent_log() {
    let mut r = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    r.0.clear();
    r.1.clear();
}

fn remember(text: &str) {
    let mut r = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    r.1.push_str(text);
    while let Some(i) = r.1.find('\n') {
        let line: String = r.1.drain(..=i).collect();
        let line = line.trim().to_string();
        if !line.is_empty() {
            r.0.push(line);
            if r.0.len() > RECENT_KEEP {
                r.0.remove(0);
            }
        }
    }
}

/// llama.cpp / ggml log sink: writes to stderr, which the coordinator keeps (shown with `-v`,
/// last lines used as the reason when a cell fails). Debug lines only with `QUANTBENCH_LLAMA_DEBUG`.
unsafe extern "C" fn log_to_stderr(
    level: sys::ggml_log_level,
    text: *const std::os::raw::c_char,
    _: *mut std::os::raw::c_void,
) {
    // GGML_LOG_LEVEL_CONT continues the previous message at the previous level.
    let level = if level == sys::GGML_LOG_LEVEL_CONT {
        LAST_LEVEL.load(Ordering::Relaxed)
    } else {
        LAST_LEVEL.store(level, Ordering::Relaxed);
        level
    };
    if level == sys::GGML_LOG_LEVEL_DEBUG && !LOG_DEBUG.load(Ordering::Relaxed) {
        return;
    }
    if !text.is_null() {
        // SAFETY: ggml passes a NUL-terminated message.
        let bytes = unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes();
        let _ = std::io::stderr().write_all(bytes);
        if level >= sys::GGML_LOG_LEVEL_WARN {
            remember(&String::from_utf8_lossy(bytes));
        }
    }
}

/// An initialised llama.cpp with its backend modules loaded.
pub struct Engine {
    pub info: BackendInfo,
}

/// Set once `llama_backend_init` ran: llama.cpp is initialised once per process.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Routes the log, loads backend modules from [`backend_search_dirs`], initialises llama.cpp,
/// and checks that at least one device was registered.
pub fn init() -> Result<Engine> {
    LOG_DEBUG.store(
        std::env::var_os("QUANTBENCH_LLAMA_DEBUG").is_some(),
        Ordering::Relaxed,
    );
    // SAFETY: installs a global callback with no user data; it is valid for the process' life.
    unsafe { sys::llama_log_set(Some(log_to_stderr), std::ptr::null_mut()) };
    let dirs = backend_search_dirs();
    let modules = load_modules(&dirs);
    if INITIALISED.swap(true, Ordering::SeqCst) {
        bail!("llama.cpp is initialised once per process");
    }
    // SAFETY: called once per process (checked above), after the modules were loaded.
    unsafe { sys::llama_backend_init() };
    let devices = devices();
    if devices.is_empty() {
        bail!(
            "no ggml backend device was registered: no usable backend module \
             (libggml-cpu-*.so, libggml-cuda.so, ...) in {}. Put the modules next to the \
             quantbench binary, or name their folder with --backend-dir or {BACKEND_DIR_ENV}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // SAFETY: plain getters returning static strings.
    let info = unsafe {
        BackendInfo {
            llama_version: cstr(sys::llama_version()),
            ggml_version: cstr(sys::ggml_version()),
            ggml_commit: cstr(sys::ggml_commit()),
            devices,
            modules,
            system_info: cstr(sys::llama_print_system_info()).trim().to_string(),
        }
    };
    Ok(Engine { info })
}

/// A device's free and total memory in bytes (for an RPC device, a round trip to its server).
///
/// # Safety
/// `dev` is a device of a registry that is still loaded.
pub(super) unsafe fn dev_memory(dev: sys::ggml_backend_dev_t) -> (u64, u64) {
    let (mut free, mut total) = (0usize, 0usize);
    sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
    (free as u64, total as u64)
}

fn devices() -> Vec<DeviceInfo> {
    // SAFETY: ggml device registry getters; indices are below ggml_backend_dev_count().
    unsafe {
        (0..sys::ggml_backend_dev_count())
            .map(|i| {
                let dev = sys::ggml_backend_dev_get(i);
                let (free, total) = dev_memory(dev);
                let mut props: sys::ggml_backend_dev_props = std::mem::zeroed();
                sys::ggml_backend_dev_get_props(dev, &mut props);
                let kind = match sys::ggml_backend_dev_type(dev) {
                    sys::GGML_BACKEND_DEVICE_TYPE_CPU => "cpu",
                    sys::GGML_BACKEND_DEVICE_TYPE_GPU => "gpu",
                    sys::GGML_BACKEND_DEVICE_TYPE_IGPU => "igpu",
                    _ => "accel",
                };
                DeviceInfo {
                    name: cstr(sys::ggml_backend_dev_name(dev)),
                    description: cstr(sys::ggml_backend_dev_description(dev)),
                    kind: kind.into(),
                    backend: cstr(sys::ggml_backend_reg_name(
                        sys::ggml_backend_dev_backend_reg(dev),
                    )),
                    memory_total_bytes: total,
                    memory_free_bytes: free,
                    device_id: cstr(props.device_id),
                    // what llama.cpp looks up for split_mode = "row"
                    row_split: !sys::ggml_backend_reg_get_proc_address(
                        sys::ggml_backend_dev_backend_reg(dev),
                        c"ggml_backend_split_buffer_type".as_ptr(),
                    )
                    .is_null(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        let n = |s: &str| module_backend(OsStr::new(s));
        assert_eq!(n("libggml-cpu-haswell.so").as_deref(), Some("cpu"));
        assert_eq!(n("libggml-cuda.so").as_deref(), Some("cuda"));
        assert_eq!(n("libggml-base.so"), None);
        assert_eq!(n("libggml.so"), None);
        assert_eq!(n("libllama.so"), None);
        assert_eq!(n("libggml-cuda.so.xz"), None);
        assert_eq!(cpu_variant("/x/libggml-cpu-zen4.so"), Some("zen4"));
        assert_eq!(cpu_variant("/x/libggml-cuda.so"), None);
    }
}
