//! Models across hosts with llama.cpp's RPC backend, on loopback: `quantbench rpc-server`
//! processes started by the tests serve the CPU; runs split tiny models over them and the local
//! CPU. Faults: a server that is down, one of another protocol version (a fake server: the one
//! injected fault), one killed or stopped mid-cell.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines a child writes on a pipe, collected by a thread.
fn collect(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            let mut o = o.lock().unwrap();
            o.push_str(&l);
            o.push('\n');
        }
    });
    out
}

/// A `quantbench rpc-server` on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(s: &Scratch, extra: &[&str]) -> Server {
        let port = free_port().to_string();
        let mut child = s
            .process()
            .args(["rpc-server", "--port", &port])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect(child.stderr.take().unwrap());
        let endpoint = format!("127.0.0.1:{port}");
        let l = log.clone();
        wait_for(60, "the rpc-server to listen", || {
            l.lock().unwrap().contains("quantbench rpc-server on")
        });
        Server {
            child,
            endpoint,
            log,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `quantbench run --threads 1` in the background, its log collected.
fn start_run(s: &Scratch) -> (Child, Arc<Mutex<String>>) {
    let mut run = s
        .process()
        .args(["run", "--threads", "1", "--out", "first"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(run.stderr.take().unwrap());
    (run, log)
}

/// Waits until the run's log has `needle`, failing with the log if the run ends first.
fn wait_for_line(run: &mut Child, log: &Arc<Mutex<String>>, needle: &str) {
    wait_for(180, needle, || {
        if let Some(st) = run.try_wait().unwrap() {
            panic!(
                "the run ended ({st}) before {needle:?}: {}",
                log.lock().unwrap()
            );
        }
        log.lock().unwrap().contains(needle)
    });
}

fn cell<'a>(report: &'a Value, model: &str) -> &'a Value {
    cells(report)
        .iter()
        .find(|c| c["model"] == model)
        .unwrap_or_else(|| panic!("no cell of {model}"))
}

/// One tiny GPT-2 (2 layers) at F16: all local, and split over two servers (one layer each,
/// `tensor_split = [1, 1]`) with the output layer and embeddings on the local CPU.
#[test]
fn a_model_split_over_two_servers_and_the_local_cpu_generates_the_local_text() {
    let s = Scratch::new();
    let (a, b) = (Server::start(&s, &[]), Server::start(&s, &[]));
    s.config(&format!(
        "schema = 1\n[defaults]\nn_gen = 8\nn_prompt = 16\nrepetitions = 1\nwarmup = 0\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
         n_gpu_layers = 2\ntensor_split = [1, 1]\nrpc = [[], [\"{}\", \"{}\"]]\n",
        a.endpoint, b.endpoint
    ));
    let out = s.run(&["--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("rpc      {}: weights", a.endpoint)),
        "{err}"
    );
    let report = json(&s.run_dir().join("results.json"));
    let c = cells(&report);
    assert_eq!(c.len(), 2);
    let (local, split) = (&c[0], &c[1]);
    assert_eq!(local["status"], "ok");
    assert_eq!(split["status"], "ok", "{}", split["error"]);
    assert_eq!(
        local["generated_text"], split["generated_text"],
        "greedy text differs between the local and the split model"
    );
    let names = |e: &str| format!("RPC0[{e}]");
    assert_eq!(
        split["devices_used"],
        serde_json::json!([names(&a.endpoint), names(&b.endpoint)])
    );
    let key = split["key"].as_str().unwrap();
    assert!(
        key.ends_with(&format!("ts1/1rpc{},{}", a.endpoint, b.endpoint)),
        "{key}"
    );
    let rpc = split["rpc"].as_array().unwrap();
    assert_eq!(rpc.len(), 2);
    for (u, e) in rpc.iter().zip([&a.endpoint, &b.endpoint]) {
        assert_eq!(&u["endpoint"], e);
        let w = u["weights_bytes"].as_u64().unwrap();
        let sent = u["load_sent_bytes"].as_u64().unwrap();
        assert!(w > 100_000, "{u}");
        // the weights travelled (no server cache): at least half of them was sent
        assert!(sent >= w / 2, "{u}");
        assert_eq!(u["weights_from_cache"], false);
        assert!(u["devices"][0]["memory_total_bytes"].as_u64().unwrap() > 0);
    }
    // the output layer and the embeddings stayed on the local CPU
    let host_weights = split["memory"]["weights_host_bytes"].as_u64().unwrap();
    assert!(host_weights > 100_000, "{}", split["memory"]);
    assert!(local["rpc"].is_null());
    // CSV: the servers and what they held, after the host column (then the serving columns)
    let csv = std::fs::read_to_string(s.run_dir().join("results.csv")).unwrap();
    let head = csv.lines().next().unwrap();
    assert!(
        head.contains(",host,rpc,rpc_weights_bytes,rpc_load_sent_bytes,serve,"),
        "{head}"
    );
    assert!(a.log.lock().unwrap().contains("serving CPU"));
    // summary.md and report.html name each server, its device and what the load sent it
    for file in ["summary.md", "report.html"] {
        let text = std::fs::read_to_string(s.run_dir().join(file)).unwrap();
        assert!(text.contains("RPC servers"), "{file}");
        assert!(text.contains(&names(&b.endpoint)), "{file}");
        assert!(text.contains("sent"), "{file}");
    }
}

/// A server killed while its cell runs fails that cell (naming it), and only that one: the
/// cells before and after it, on another server and local, are measured.
#[test]
fn a_server_killed_mid_cell_fails_only_its_cell() {
    let s = Scratch::new();
    let a = Server::start(&s, &[]);
    let mut b = Server::start(&s, &[]);
    let model = |name: &str, rpc: &str, reps: u32| {
        format!(
            "[[model]]\nname = \"{name}\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
             repetitions = {reps}\nrpc = [{rpc}]\n"
        )
    };
    s.config(&format!(
        "schema = 1\n[defaults]\nn_gen = 256\nn_prompt = 16\nwarmup = 0\n{}{}{}",
        model("a", &format!("\"{}\"", a.endpoint), 1),
        model("b", &format!("\"{}\"", b.endpoint), 1000),
        model("c", "", 1)
    ));
    let (mut run, log) = start_run(&s);
    wait_for_line(&mut run, &log, "TEST 2/3");
    std::thread::sleep(Duration::from_millis(500));
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let status = wait_bounded(&mut run, 300);
    let err = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "{err}");
    let report = json(&s.run_dir_in("first").join("results.json"));
    assert_eq!(cell(&report, "a")["status"], "ok");
    assert_eq!(cell(&report, "c")["status"], "ok");
    let failed = cell(&report, "b");
    assert_eq!(failed["status"], "failed");
    let why = failed["error"].as_str().unwrap();
    assert!(why.contains("Remote RPC server crashed"), "{why}");
    assert!(
        why.contains(&format!("{} did not accept a connection", b.endpoint)),
        "{why}"
    );
}

/// A fake server that answers the handshake with protocol `major.0.0` (the injected fault).
fn other_protocol(major: u8) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).is_err() {
                continue;
            }
            let n = u64::from_le_bytes(head[1..].try_into().unwrap());
            let mut caps = vec![0u8; n as usize];
            let _ = s.read_exact(&mut caps);
            let mut rsp = 28u64.to_le_bytes().to_vec();
            rsp.extend([major, 0, 0, 0]);
            rsp.extend([0u8; 24]);
            let _ = s.write_all(&rsp);
        }
    });
    addr
}

/// Servers that cannot be used fail their cells before llama.cpp touches them (it would abort
/// the worker), each with a message naming the endpoint; the local cell is measured.
#[test]
fn a_server_that_is_down_or_speaks_another_protocol_fails_its_cell_only() {
    let s = Scratch::new();
    let down = format!("127.0.0.1:{}", free_port());
    let old = other_protocol(3);
    s.config(&format!(
        "schema = 1\n[defaults]\nn_gen = 4\nn_prompt = 8\nrepetitions = 1\nwarmup = 0\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
         rpc = [[\"{down}\"], [\"{old}\"], []]\n"
    ));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    let c = cells(&report);
    let e0 = c[0]["error"].as_str().unwrap();
    assert!(
        e0.contains(&format!("RPC server {down}: connection refused")),
        "{e0}"
    );
    let port = down.rsplit(':').next().unwrap();
    assert!(
        e0.contains(&format!(
            "quantbench rpc-server --host 127.0.0.1 --port {port}"
        )),
        "{e0}"
    );
    let e1 = c[1]["error"].as_str().unwrap();
    assert!(
        e1.contains(&format!("RPC server {old} speaks RPC protocol 3.0.0")),
        "{e1}"
    );
    assert_eq!(c[2]["status"], "ok");
}

/// A server that stops answering mid-cell (SIGSTOP: the connection stays open, nothing comes
/// back) does not hang the run: the cell's deadline stops the worker.
#[test]
fn a_server_that_stops_answering_mid_cell_is_cut_off_by_the_cell_deadline() {
    let s = Scratch::new();
    let b = Server::start(&s, &[]);
    s.config(&format!(
        "schema = 1\n[defaults]\nn_gen = 16\nn_prompt = 16\nwarmup = 0\n\
         [[model]]\nname = \"b\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
         repetitions = 1000\nn_gen = 256\ntimeout_s = 20\nrpc = [\"{}\"]\n",
        b.endpoint
    ));
    let (mut run, log) = start_run(&s);
    wait_for_line(&mut run, &log, "TEST 1/1");
    std::thread::sleep(Duration::from_millis(500));
    signal(b.child.id(), libc::SIGSTOP);
    let status = wait_bounded(&mut run, 240);
    let err = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "{err}");
    let report = json(&s.run_dir_in("first").join("results.json"));
    let why = cells(&report)[0]["error"].as_str().unwrap().to_string();
    assert!(why.contains("timed out after 20 s"), "{why}");
    assert!(why.contains(&b.endpoint), "{why}");
    // a cell that starts while the server is still stopped: its handshake (a third of a 9 s
    // timeout_s) says so before the cell's deadline would
    s.config(&format!(
        "schema = 1\n[[model]]\nname = \"b\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
         repetitions = 1\nn_gen = 4\ntimeout_s = 9\nrpc = [\"{}\"]\n",
        b.endpoint
    ));
    let out = s.run(&["--out", "second"]);
    signal(b.child.id(), libc::SIGCONT);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir_in("second").join("results.json"));
    let why = cells(&report)[0]["error"].as_str().unwrap().to_string();
    assert!(
        why.contains(&format!(
            "RPC server {}: no answer to the handshake within 3 s",
            b.endpoint
        )),
        "{why}"
    );
}

/// The server command: its announcement, the warning beyond loopback, a clean stop on
/// SIGTERM, and clear errors for an unknown device and a port in use.
#[test]
fn rpc_server_warns_beyond_loopback_stops_on_sigterm_and_explains_bad_arguments() {
    let s = Scratch::new();
    let port = free_port().to_string();
    let mut child = s
        .process()
        .args(["rpc-server", "--host", "0.0.0.0", "--port", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    let l = log.clone();
    wait_for(60, "the announcement", || {
        l.lock().unwrap().contains("quantbench rpc-server on")
    });
    // the port is taken now: a second server says so
    let busy = s
        .cmd()
        .args(["rpc-server", "--host", "0.0.0.0", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(2));
    assert!(
        stderr(&busy).contains(&format!("cannot listen on 0.0.0.0:{port}")),
        "{}",
        stderr(&busy)
    );
    signal(child.id(), libc::SIGTERM);
    let status = wait_bounded(&mut child, 30);
    let text = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("no authentication"), "{text}");
    // clients are not told to connect to 0.0.0.0
    assert!(!text.contains("rpc = [\"0.0.0.0"), "{text}");
    assert!(text.contains("serving CPU"), "{text}");
    assert!(text.contains("stopped (SIGTERM)"), "{text}");

    // bad arguments: exit 2, and the reason
    let refused = |args: &[&str]| {
        let out = s.cmd().arg("rpc-server").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        stderr(&out)
    };
    let port = free_port().to_string();
    let e = refused(&["--port", &port, "--device", "CUDA7"]);
    assert!(e.contains("--device CUDA7: no such device here"), "{e}");
    assert!(e.contains("CPU"), "{e}");
    let e = refused(&["--port", &port, "--device", "CPU,CPU"]);
    assert!(e.contains("--device CPU is listed twice"), "{e}");
    let e = refused(&["--host", "localhost"]);
    assert!(e.contains("listens on an IPv4 address only"), "{e}");
}

/// models.toml and --rpc refuse what llama.cpp could not use, with the same messages.
#[test]
fn bad_rpc_settings_are_refused_before_anything_runs() {
    let s = Scratch::new();
    for (rpc, msg) in [
        ("[\"localhost\"]", "has no port"),
        ("[\"h:0\"]", "the port must be a number from 1 to 65535"),
        ("[\"h:1\", \"h:1\"]", "is listed twice in one set"),
        ("[[\"h:1\"], [\"h:1\"]]", "rpc set h:1 is listed twice"),
        ("[\"[::1]:50052\"]", "speaks IPv4 only"),
        ("[1]", "use a list of \"host:port\" strings"),
    ] {
        s.config(&format!(
            "schema = 1\n[[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
             rpc = {rpc}\n"
        ));
        let out = s.run(&[]);
        assert_eq!(out.status.code(), Some(2), "{rpc}");
        assert!(stderr(&out).contains(msg), "{rpc}: {}", stderr(&out));
    }
    s.config(&format!("{TINY}quants = [\"F16\"]\n"));
    let out = s.run(&["--rpc", "h:99999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the port must be a number from 1 to 65535"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&["--rpc", "h:1", "--rpc", "h:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("rpc set h:1 is listed twice"),
        "{}",
        stderr(&out)
    );
    // the plan shows the servers of each cell
    let out = s
        .cmd()
        .args([
            "list",
            "--rpc",
            "local",
            "--rpc",
            "10.0.0.2:50052,10.0.0.3:50052",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("rpc 10.0.0.2:50052,10.0.0.3:50052"), "{text}");
}
