//! `quantbench rpc-server`: llama.cpp's RPC server (from the `libggml-rpc.so` module built with
//! quantbench) serving this machine's devices to runs on other hosts (`rpc = ["host:port"]`).
//! Prints the endpoint and the devices, warns when it listens beyond loopback (the protocol has
//! no authentication), and stops cleanly on Ctrl-C / SIGTERM / SIGHUP.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::Ctx;
use crate::cli::RpcServerArgs;
use crate::engine;

pub fn run(ctx: &Ctx, args: &RpcServerArgs) -> Result<u8> {
    if !ctx.backend_dirs.is_empty() {
        let joined =
            std::env::join_paths(&ctx.backend_dirs).context("--backend-dir contains ':'")?;
        std::env::set_var(engine::BACKEND_DIR_ENV, joined);
    }
    let Ok(ip) = args.host.parse::<std::net::Ipv4Addr>() else {
        bail!(
            "--host {}: llama.cpp's RPC server listens on an IPv4 address only: use 127.0.0.1 \
             (this machine only, the default), 0.0.0.0 (every interface) or one of this \
             machine's addresses",
            args.host
        );
    };
    let endpoint = format!("{}:{}", args.host, args.port);
    crate::config::check_endpoint(&endpoint).map_err(anyhow::Error::msg)?;
    // llama.cpp says only "Failed to create server socket": find out why first
    std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on {endpoint}"))?;
    let engine = engine::init()?;
    let local = &engine.info.devices;
    let devices = if args.device.is_empty() {
        default_devices(local)
    } else {
        args.device.clone()
    };
    if let Some((_, d)) = devices
        .iter()
        .enumerate()
        .find(|(i, d)| devices[..*i].contains(d))
    {
        bail!("--device {d} is listed twice");
    }
    if let Some(d) = devices
        .iter()
        .find(|d| !local.iter().any(|l| &&l.name == d))
    {
        bail!(
            "--device {d}: no such device here; this machine has {}",
            local
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !ip.is_loopback() {
        ctx.printer.warn(&format!(
            "listening on {endpoint}: llama.cpp's RPC protocol has no authentication or \
             encryption; anyone who reaches this port can use these devices and read what \
             they hold. Keep it on a trusted network (or use --host 127.0.0.1 and a tunnel)"
        ));
    }
    let cache = ctx.cache_dir_given.then(|| ctx.cache_dir.join("rpc"));
    if let Some(c) = &cache {
        std::fs::create_dir_all(c)
            .with_context(|| format!("creating the tensor cache {}", c.display()))?;
    }
    let threads = args.threads.unwrap_or_else(|| {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1) as u32
    });
    for d in &devices {
        if let Some(l) = local.iter().find(|l| &l.name == d) {
            ctx.printer.line(&format!(
                "serving {} ({}, {:.1} GiB, {:.1} GiB free)",
                l.name,
                l.description,
                l.memory_total_bytes as f64 / (1u64 << 30) as f64,
                l.memory_free_bytes as f64 / (1u64 << 30) as f64
            ));
        }
    }
    let cache_note = cache.as_ref().map_or_else(
        || "off (--cache-dir DIR keeps tensors in DIR/rpc)".to_string(),
        |c| c.display().to_string(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let ep = endpoint.clone();
    std::thread::Builder::new()
        .name("rpc-server".into())
        .spawn(move || {
            let _ = tx.send(engine::rpc::serve(&ep, &devices, threads, cache.as_deref()));
        })?;
    wait_listening(&endpoint, &rx)?;
    announce(ctx, &endpoint, ip, args.port, threads, &cache_note);
    loop {
        if crate::signals::stopping(&ctx.interrupted) {
            let sig = crate::signals::received().map_or("a signal".into(), crate::signals::name);
            ctx.printer
                .line(&format!("rpc-server on {endpoint} stopped ({sig})"));
            return Ok(super::exit::OK);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => bail!("llama.cpp's RPC server on {endpoint} stopped"),
            Err(_) => {}
        }
    }
}

/// Waits until llama.cpp listens (a connection it accepts and closes at once), or fails with
/// the server thread's error.
fn wait_listening(endpoint: &str, rx: &std::sync::mpsc::Receiver<Result<()>>) -> Result<()> {
    let t0 = std::time::Instant::now();
    while !crate::rpc_wire::reachable(endpoint, Duration::from_secs(1)) {
        if let Ok(r) = rx.try_recv() {
            return r.and_then(|()| bail!("llama.cpp's RPC server on {endpoint} stopped"));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("llama.cpp's RPC server did not start listening on {endpoint} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The line that says the server is up and how clients name it (not `0.0.0.0`, which no
/// client can connect to: the machine's host name then).
fn announce(
    ctx: &Ctx,
    endpoint: &str,
    ip: std::net::Ipv4Addr,
    port: u16,
    threads: u32,
    cache: &str,
) {
    let reach = if ip.is_unspecified() {
        format!("{}:{port}", hostname())
    } else {
        endpoint.to_string()
    };
    ctx.printer.line(&format!(
        "quantbench rpc-server on {endpoint} (RPC protocol {}, {threads} CPU thread{}, tensor \
         cache {cache}); clients: rpc = [\"{reach}\"] in models.toml or --rpc {reach}{}. Ctrl-C \
         stops it.",
        crate::rpc_wire::PROTOCOL,
        if threads == 1 { "" } else { "s" },
        if ip.is_unspecified() {
            " (or another address of this machine)"
        } else {
            ""
        },
    ));
}

/// llama.cpp's rpc-server default: every device that is not the CPU, else the CPU.
fn default_devices(local: &[crate::protocol::DeviceInfo]) -> Vec<String> {
    let gpus: Vec<String> = local
        .iter()
        .filter(|d| d.kind != "cpu")
        .map(|d| d.name.clone())
        .collect();
    if gpus.is_empty() {
        local
            .iter()
            .filter(|d| d.kind == "cpu")
            .take(1)
            .map(|d| d.name.clone())
            .collect()
    } else {
        gpus
    }
}

/// This machine's name, for telling clients where to connect.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<this machine's address>".into())
}
