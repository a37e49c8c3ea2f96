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
/// GPU and other backends are registered before the CPU one (ggml's own order). Returns the
/// modules loaded, and a note for each module that could not be loaded or registered no
/// device (why, from llama.cpp's log, and what to do).
fn load_modules(dirs: &[PathBuf]) -> (Vec<String>, Vec<String>) {
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
    let mut notes = Vec::new();
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
        clear_recent_log();
        // SAFETY: registers a ggml backend module; failures are logged by ggml and return null.
        let reg = unsafe { sys::ggml_backend_load(c.as_ptr()) };
        if reg.is_null() {
            notes.push(module_note(&path, &recent_log().join(" ")));
            continue;
        }
        loaded.push(path.display().to_string());
        // SAFETY: a registry ggml just returned. (The RPC backend has devices only once a
        // server is added.)
        let rpc = path.file_name().is_some_and(|f| f == "libggml-rpc.so");
        if !rpc && unsafe { sys::ggml_backend_reg_dev_count(reg) } == 0 {
            notes.push(module_note(&path, ""));
        }
    }
    clear_recent_log();
    (loaded, notes)
}

/// Why a backend module gave no device, and what to do: `log` is what llama.cpp logged while
/// loading it (empty when it loaded but registered no device).
fn module_note(path: &Path, log: &str) -> String {
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    let vulkan = file.starts_with("libggml-vulkan");
    let mut note = if log.is_empty() {
        format!("{file} loaded but registered no device")
    } else if log.contains("failed to load") {
        format!("{file} could not be loaded: {log}")
    } else {
        format!("{file} could not start its backend: {log}")
    };
    if vulkan {
        note.push_str(if log.contains("libvulkan.so") {
            "; the Vulkan loader is missing: install it (Debian/Ubuntu: libvulkan1) and your \
             GPU's Vulkan driver (mesa-vulkan-drivers for AMD and Intel GPUs; NVIDIA's driver \
             has its own)"
        } else if log.is_empty() {
            "; no Vulkan driver offers a GPU (llama.cpp's Vulkan backend skips drivers that run \
             on the CPU, such as Mesa's llvmpipe, unless GGML_VK_VISIBLE_DEVICES names them, \
             e.g. GGML_VK_VISIBLE_DEVICES=0); `vulkaninfo --summary` lists the drivers found"
        } else {
            "; is a Vulkan driver installed? `vulkaninfo --summary` lists the drivers the \
             loader finds (mesa-vulkan-drivers for AMD and Intel GPUs; NVIDIA's driver has \
             its own)"
        });
    }
    note.push_str("; the other backends are not affected");
    note
}

/// Drivers of Vulkan devices by device index, from the line llama.cpp's Vulkan backend logs
/// for each device it registers (`ggml_vulkan: 0 = NAME (DRIVER) | uma: ...`): ggml's device
/// interface has no driver field.
static VK_DRIVERS: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());

/// `ggml_vulkan: 0 = llvmpipe (LLVM 15.0.6, 256 bits) (llvmpipe) | uma: 0 | ...` → `(0,
/// "llvmpipe")`.
fn vulkan_driver(line: &str) -> Option<(usize, String)> {
    let rest = line.trim_start().strip_prefix("ggml_vulkan: ")?;
    let (idx, rest) = rest.split_once(" = ")?;
    let idx = idx.trim().parse().ok()?;
    let (name_driver, _) = rest.split_once(" | uma:")?;
    let name_driver = name_driver.trim_end().strip_suffix(')')?;
    let open = name_driver.rfind(" (")?;
    Some((idx, name_driver[open + 2..].to_string()))
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
    if !text.is_null() {
        // SAFETY: ggml passes a NUL-terminated message.
        let bytes = unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes();
        if bytes.starts_with(b"ggml_vulkan: ") {
            if let Some(d) = vulkan_driver(&String::from_utf8_lossy(bytes)) {
                VK_DRIVERS.lock().unwrap_or_else(|e| e.into_inner()).push(d);
            }
        }
        if level == sys::GGML_LOG_LEVEL_DEBUG && !LOG_DEBUG.load(Ordering::Relaxed) {
            return;
        }
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

impl Engine {
    /// Free memory of the named devices as their backends report it
    /// (`ggml_backend_dev_memory`: CUDA's and Vulkan's device-wide figures); `None` for a name
    /// of no device.
    pub fn free_bytes(&self, names: &[String]) -> Vec<Option<u64>> {
        names
            .iter()
            .map(|n| {
                let c = CString::new(n.as_str()).ok()?;
                // SAFETY: a named lookup in the registry of this initialised llama.cpp.
                let dev = unsafe { sys::ggml_backend_dev_by_name(c.as_ptr()) };
                // SAFETY: a device of a registry that stays loaded.
                (!dev.is_null()).then(|| unsafe { dev_memory(dev) }.0)
            })
            .collect()
    }
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
    let (modules, module_notes) = load_modules(&dirs);
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
            module_notes,
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
                    driver: String::new(),
                }
            })
            .map(with_driver)
            .collect()
    }
}

/// Fills in the driver of a Vulkan device (`Vulkan<i>`) from what its backend logged.
fn with_driver(mut d: DeviceInfo) -> DeviceInfo {
    if d.backend == "Vulkan" {
        let idx = d
            .name
            .strip_prefix("Vulkan")
            .and_then(|i| i.parse::<usize>().ok());
        let drivers = VK_DRIVERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, driver)) = drivers.iter().find(|(i, _)| Some(*i) == idx) {
            d.driver = driver.clone();
        }
    }
    d
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

    #[test]
    fn vulkan_driver_lines() {
        let d = vulkan_driver(
            "ggml_vulkan: 0 = llvmpipe (LLVM 15.0.6, 256 bits) (llvmpipe) | uma: 0 | fp16: 1 | \
             bf16: 0 | warp size: 8 | shared memory: 32768 | int dot: 0 | matrix cores: none\n",
        );
        assert_eq!(d, Some((0, "llvmpipe".to_string())));
        let d = vulkan_driver(
            "ggml_vulkan: 1 = NVIDIA H200 (NVIDIA) | uma: 0 | fp16: 1 | matrix cores: NV_coopmat2",
        );
        assert_eq!(d, Some((1, "NVIDIA".to_string())));
        assert_eq!(vulkan_driver("ggml_vulkan: Found 1 Vulkan devices:"), None);
        assert_eq!(vulkan_driver("llama_model_load: 0 = x (y) | uma: 0"), None);
    }

    #[test]
    fn module_notes_say_what_to_do() {
        let p = Path::new("/x/libggml-vulkan.so");
        let n = module_note(
            p,
            "load_backend: failed to load /x/libggml-vulkan.so: libvulkan.so.1: cannot open \
             shared object file",
        );
        assert!(
            n.starts_with("libggml-vulkan.so could not be loaded"),
            "{n}"
        );
        assert!(n.contains("libvulkan1"), "{n}");
        let n = module_note(p, "");
        assert!(n.contains("registered no device"), "{n}");
        assert!(n.contains("GGML_VK_VISIBLE_DEVICES"), "{n}");
        let n = module_note(Path::new("/x/libggml-cuda.so"), "failed to load: libcudart");
        assert!(!n.contains("Vulkan"), "{n}");
    }
}
