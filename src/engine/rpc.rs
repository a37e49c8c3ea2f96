//! llama.cpp's RPC backend (`libggml-rpc.so`, built with quantbench): the server that exposes
//! this machine's devices, and the remote devices a cell adds to the local ones.

use std::ffi::CString;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_sys_2 as sys;

use crate::config::RpcServers;
use crate::protocol::DeviceInfo;
use crate::rpc_wire;

/// A device of an RPC server, as this worker sees it.
pub struct RemoteDevice {
    pub endpoint: String,
    pub dev: sys::ggml_backend_dev_t,
    /// Named as llama.cpp names its buffers (`RPC0[host:port]`: the server's device 0).
    pub info: DeviceInfo,
}

/// The RPC backend's registry, or why it is not there.
fn registry() -> Result<sys::ggml_backend_reg_t> {
    // SAFETY: looks a registered backend up by a NUL-terminated name.
    let reg = unsafe { sys::ggml_backend_reg_by_name(c"RPC".as_ptr()) };
    if reg.is_null() {
        bail!(
            "llama.cpp's RPC backend is not loaded: libggml-rpc.so (built with quantbench, \
             shipped next to its binary) was not found in {}; put it next to the binary or name \
             its folder with --backend-dir",
            super::backend_search_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(reg)
}

/// A function the RPC backend exports through its registry.
fn proc_address(name: &std::ffi::CStr) -> Result<*mut std::os::raw::c_void> {
    let reg = registry()?;
    // SAFETY: a named lookup in a live registry.
    let f = unsafe { sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr()) };
    if f.is_null() {
        bail!("the RPC backend module has no {name:?}: a libggml-rpc.so of another llama.cpp?");
    }
    Ok(f)
}

/// Connects to every server of the set (each checked with quantbench's own handshake first,
/// unless this process is connected to it already: llama.cpp aborts the process on a server
/// it cannot use) and returns their devices in the
/// set's order, which is the order llama.cpp puts them in, before the local GPUs.
pub fn connect(servers: &RpcServers, timeout: std::time::Duration) -> Result<Vec<RemoteDevice>> {
    if servers.is_local() {
        return Ok(Vec::new());
    }
    type AddServer = unsafe extern "C" fn(*const std::os::raw::c_char) -> sys::ggml_backend_reg_t;
    let add = proc_address(c"ggml_backend_rpc_add_server")?;
    // SAFETY: the registry returned this symbol for that name; its signature is
    // `ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)`.
    let add: AddServer = unsafe { std::mem::transmute(add) };
    let mut out = Vec::new();
    for endpoint in &servers.0 {
        // (not while llama.cpp holds a connection there, for a model already loaded: the
        // server would keep a second one waiting)
        if !rpc_wire::connected(endpoint) {
            rpc_wire::handshake(endpoint, timeout).map_err(|r| anyhow!(r.message(endpoint)))?;
        }
        let c = CString::new(endpoint.as_str())?;
        // SAFETY: a NUL-terminated endpoint the handshake just reached; llama.cpp caches the
        // registry per endpoint for the process' life.
        let reg = unsafe { add(c.as_ptr()) };
        if reg.is_null() {
            bail!("RPC server {endpoint} offers no device");
        }
        // SAFETY: device getters of a live registry, indices below its count.
        unsafe {
            for i in 0..sys::ggml_backend_reg_dev_count(reg) {
                let dev = sys::ggml_backend_reg_dev_get(reg, i);
                let (free, total) = super::backend::dev_memory(dev);
                out.push(RemoteDevice {
                    endpoint: endpoint.clone(),
                    dev,
                    info: DeviceInfo {
                        name: format!("RPC{i}[{endpoint}]"),
                        description: format!("RPC[{endpoint}] device {i}"),
                        kind: "gpu".into(),
                        backend: "RPC".into(),
                        memory_total_bytes: total,
                        memory_free_bytes: free,
                        device_id: String::new(),
                        row_split: false,
                        driver: String::new(),
                    },
                });
            }
        }
    }
    Ok(out)
}

/// The device's description with its memory asked again (a round trip to the server, queued
/// behind every upload in flight).
pub fn refreshed(r: RemoteDevice) -> DeviceInfo {
    // SAFETY: a device of a registry llama.cpp keeps for the process' life.
    let (free, total) = unsafe { super::backend::dev_memory(r.dev) };
    DeviceInfo {
        memory_total_bytes: total,
        memory_free_bytes: free,
        ..r.info
    }
}

/// Runs llama.cpp's RPC server on `endpoint` with the named local devices until the process
/// is stopped (`ggml_backend_rpc_start_server` serves one client after another, forever; it
/// returns only when it cannot listen). `cache_dir`: where the server keeps tensors it was
/// sent, so that later loads of the same model send only hashes.
pub fn serve(
    endpoint: &str,
    devices: &[String],
    threads: u32,
    cache_dir: Option<&Path>,
) -> Result<()> {
    type StartServer = unsafe extern "C" fn(
        *const std::os::raw::c_char,
        *const std::os::raw::c_char,
        usize,
        usize,
        *mut sys::ggml_backend_dev_t,
    );
    let start = proc_address(c"ggml_backend_rpc_start_server")?;
    // SAFETY: the registry returned this symbol for that name, with this signature.
    let start: StartServer = unsafe { std::mem::transmute(start) };
    let mut devs = Vec::new();
    for name in devices {
        let c = CString::new(name.as_str())?;
        // SAFETY: a named lookup in the device registry.
        let dev = unsafe { sys::ggml_backend_dev_by_name(c.as_ptr()) };
        if dev.is_null() {
            bail!("--device {name}: no such device here");
        }
        devs.push(dev);
    }
    let ep = CString::new(endpoint)?;
    let cache = cache_dir
        .map(|d| CString::new(d.as_os_str().as_encoded_bytes()))
        .transpose()
        .context("--cache-dir")?;
    // SAFETY: NUL-terminated strings and a device array that outlive the call.
    unsafe {
        start(
            ep.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads as usize,
            devs.len(),
            devs.as_mut_ptr(),
        )
    };
    bail!(
        "llama.cpp's RPC server stopped: it could not listen on {endpoint} (see its message above)"
    )
}
