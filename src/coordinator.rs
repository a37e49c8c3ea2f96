//! Spawns worker processes (one per cell), feeds them their cell, turns their events into
//! outcomes, and survives their death: a worker that crashes, hangs past the cell's timeout or
//! is killed becomes a failed cell with the tail of its stderr as the reason, and the next cell
//! gets a fresh worker. Never prints: everything goes to the [`Observer`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::plan::Cell;
use crate::protocol::{BackendInfo, Event, Job, Measurement};

/// How a cell ended.
#[derive(Debug)]
pub enum Outcome {
    Measured(Box<Measurement>),
    Failed(String),
}

/// Receives everything that happens while cells run.
pub trait Observer {
    /// A worker initialised llama.cpp.
    fn ready(&mut self, _info: &BackendInfo) {}
    /// A cell was taken by a worker.
    fn started(&mut self, _cell: &Cell) {}
    /// Progress inside a cell (`load`, `warmup`, `rep`).
    fn progress(&mut self, _cell: &Cell, _phase: &str, _done: u32, _total: u32) {}
    /// A cell ended; an error here (e.g. the report cannot be written) stops the run.
    fn finished(&mut self, cell: &Cell, outcome: Outcome) -> Result<()>;
    /// A line a worker wrote to stderr (llama.cpp's log).
    fn worker_log(&mut self, _line: &str) {}
}

/// The error of a step stopped by Ctrl-C or a signal: the caller exits as interrupted.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// How the run of the cells ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Complete,
    Interrupted,
}

/// Runs `quantbench worker` processes.
pub struct Coordinator<'a> {
    pub exe: PathBuf,
    /// Extra environment for workers (backend folders, fault injection, ...).
    pub env: Vec<(String, String)>,
    /// Set by the Ctrl-C handler.
    pub interrupted: &'a AtomicBool,
}

enum ProbeError {
    /// The worker died from a signal after loading these modules.
    Crashed {
        variant: Option<String>,
        why: String,
    },
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ProbeError {
    fn from(e: anyhow::Error) -> Self {
        ProbeError::Other(e)
    }
}

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> Self {
        ProbeError::Other(e.into())
    }
}

enum Msg {
    Event(Event),
    Garbage(String),
    Log(String),
    StdoutClosed,
    StderrClosed,
}

const STDERR_KEEP: usize = 40;

/// How long a worker may take to exit after it reported its cell's result.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(10);

struct Worker {
    child: Child,
    rx: Receiver<Msg>,
    stderr_tail: VecDeque<String>,
}

impl Drop for Worker {
    /// A worker left behind by an error on the way (a report that cannot be written) is
    /// stopped, not left measuring on its own.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

impl Worker {
    fn kill(&mut self) {
        // The worker leads its own process group: kill the whole group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail(&self, n: usize) -> String {
        let lines: Vec<&String> = self
            .stderr_tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn describe_exit(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGABRT => " (SIGABRT: llama.cpp aborted)",
            libc::SIGILL => " (SIGILL: illegal instruction)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGKILL => " (SIGKILL: killed, possibly out of host memory)",
            libc::SIGBUS => " (SIGBUS: the model file changed or vanished while mapped?)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        format!("exited with code {}", status.code().unwrap_or(-1))
    }
}

impl Coordinator<'_> {
    fn spawn(&self, args: &[&str], jobs: &[Job]) -> Result<Worker> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: Ctrl-C reaches the coordinator only, which then stops workers
            // itself and writes the reports.
            .process_group(0);
        // ggml attaches gdb to print a backtrace when llama.cpp aborts: seconds of a dying
        // worker, and a failure reason made of stack frames instead of ggml's message. Kept
        // with QUANTBENCH_LLAMA_DEBUG.
        if std::env::var_os("QUANTBENCH_LLAMA_DEBUG").is_none() {
            cmd.env("GGML_NO_BACKTRACE", "1");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting worker {}", self.exe.display()))?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut stdin = child.stdin.take().expect("piped");
        let lines: Vec<String> = jobs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::thread::spawn(move || {
            // A worker that dies early closes the pipe; the error is its death, seen elsewhere.
            for l in lines {
                if writeln!(stdin, "{l}").is_err() {
                    break;
                }
            }
        });
        let txo = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let msg = match serde_json::from_str::<Event>(&line) {
                    Ok(e) => Msg::Event(e),
                    Err(_) => Msg::Garbage(line),
                };
                if txo.send(msg).is_err() {
                    return;
                }
            }
            let _ = txo.send(Msg::StdoutClosed);
        });
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send(Msg::Log(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::StderrClosed);
        });
        Ok(Worker {
            child,
            rx,
            stderr_tail: VecDeque::new(),
        })
    }

    /// Checks that workers can run on this machine: starts `worker --self-test` and returns
    /// what it loaded (backend modules, devices). A CPU backend variant that crashes in the
    /// self-test (an instruction set the CPU advertises but the machine does not allow) is
    /// excluded for every later worker and the test repeated with the next best variant; the
    /// returned notes say so. Fails with the worker's own error when llama.cpp cannot start.
    pub fn probe(&mut self) -> Result<(BackendInfo, Vec<String>)> {
        let mut notes = Vec::new();
        let mut excluded: Vec<String> = Vec::new();
        loop {
            match self.probe_once() {
                Ok(info) => return Ok((info, notes)),
                Err(ProbeError::Crashed {
                    variant: Some(v),
                    why,
                }) if excluded.len() < 16 => {
                    notes.push(format!(
                        "the CPU backend variant {v:?} crashed in the self-test on this machine ({why}); \
                         excluding it (as {}={v} would)",
                        crate::engine::CPU_EXCLUDE_ENV
                    ));
                    excluded.push(v);
                    self.env
                        .retain(|(k, _)| k != crate::engine::CPU_EXCLUDE_ENV);
                    self.env
                        .push((crate::engine::CPU_EXCLUDE_ENV.into(), excluded.join(",")));
                }
                Err(ProbeError::Crashed { why, .. }) => {
                    bail!("the worker self-test crashed: {why}")
                }
                Err(ProbeError::Other(e)) => return Err(e),
            }
        }
    }

    /// The backends and devices llama.cpp registers here (`worker --devices`: no self-test),
    /// for `quantbench list`.
    pub fn devices(&self) -> Result<BackendInfo> {
        match self.probe_with("--devices") {
            Ok(info) => Ok(info),
            Err(ProbeError::Crashed { why, .. }) => bail!("the worker crashed: {why}"),
            Err(ProbeError::Other(e)) => Err(e),
        }
    }

    fn probe_once(&self) -> Result<BackendInfo, ProbeError> {
        self.probe_with("--self-test")
    }

    fn probe_with(&self, flag: &str) -> Result<BackendInfo, ProbeError> {
        let mut w = self.spawn(&["worker", flag], &[])?;
        let mut info = None;
        let (mut out_done, mut err_done) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !(out_done && err_done) {
            match w.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Event(Event::Ready { backend })) => info = Some(backend),
                Ok(Msg::Log(l)) => push_tail(&mut w.stderr_tail, l),
                Ok(Msg::StdoutClosed) => out_done = true,
                Ok(Msg::StderrClosed) => err_done = true,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.is_interrupted() {
                        w.kill();
                        return Err(ProbeError::Other(anyhow::Error::new(Interrupted)));
                    }
                    if Instant::now() > deadline {
                        w.kill();
                        return Err(ProbeError::Other(anyhow::anyhow!(
                            "the worker self-test did not finish within 120 s: {}",
                            w.tail(5)
                        )));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = w.child.wait()?;
        match info {
            Some(i) if status.success() => Ok(i),
            Some(i) if status.signal().is_some() => Err(ProbeError::Crashed {
                variant: i
                    .modules
                    .iter()
                    .find_map(|m| crate::engine::cpu_variant(m).map(String::from)),
                why: describe_exit(status),
            }),
            _ => Err(ProbeError::Other(anyhow::anyhow!(
                "the worker could not initialise llama.cpp ({}): {}",
                describe_exit(status),
                w.tail(6)
            ))),
        }
    }

    /// Runs the jobs, a fresh worker for each. A worker that measured one cell and goes on to
    /// the next (same model file, new context) was measured on the H200 to decode 3–8% slower
    /// in the second cell and to carry 66 MiB of the first cell's device memory into the second
    /// one's VRAM figure; a process per cell costs one model load per cell (from the page cache).
    pub fn run(&self, jobs: Vec<Job>, obs: &mut dyn Observer) -> Result<Ended> {
        for job in &jobs {
            if self.run_cell(job, obs)? == Ended::Interrupted {
                return Ok(Ended::Interrupted);
            }
        }
        Ok(Ended::Complete)
    }

    /// Measures one cell in a worker of its own; a worker that dies or overruns `timeout_s`
    /// fails the cell with the reason and the tail of its log. The deadline runs from the spawn,
    /// so a worker that hangs before it starts the cell (driver or backend initialisation) is
    /// stopped too; one that hangs after reporting its result (teardown) is stopped after
    /// [`TEARDOWN_GRACE`], its result kept.
    fn run_cell(&self, job: &Job, obs: &mut dyn Observer) -> Result<Ended> {
        if self.is_interrupted() {
            return Ok(Ended::Interrupted);
        }
        let spawned = Instant::now();
        let mut w = self.spawn(&["worker"], std::slice::from_ref(job))?;
        let Some(mut seen) = self.watch_cell(&mut w, job, spawned, obs)? else {
            return Ok(Ended::Interrupted);
        };
        let status = w.child.wait()?;
        if seen.finished_at.is_some() {
            return Ok(Ended::Complete);
        }
        if self.stopped_with_the_run(status) {
            return Ok(Ended::Interrupted);
        }
        if let (Some(mut m), Some(s)) = (seen.speed.take(), seen.timed_out) {
            // the quality test overran timeout_s: the speed figures measured before it stand
            m.quality = Some(crate::protocol::QualityOutcome {
                error: Some(format!(
                    "the quality test did not finish within the cell's timeout_s ({s} s) and was \
                     stopped; raise timeout_s, or lower quality_chunks"
                )),
                stats: None,
                seconds: 0.0,
            });
            obs.finished(&job.cell, Outcome::Measured(m))?;
            return Ok(Ended::Complete);
        }
        let reason = seen.failure(&w, status) + &rpc_servers_state(&job.cell.params.rpc);
        obs.finished(&job.cell, Outcome::Failed(reason))?;
        Ok(Ended::Complete)
    }

    /// Passes the worker's events and log to `obs` until both its outputs close, its deadline
    /// passes (`timeout_s` from `spawned`, or [`TEARDOWN_GRACE`] after its result), or the run
    /// is interrupted (`None`; the worker is killed).
    fn watch_cell(
        &self,
        w: &mut Worker,
        job: &Job,
        spawned: Instant,
        obs: &mut dyn Observer,
    ) -> Result<Option<CellEvents>> {
        let limit = job.cell.params.timeout_s;
        let deadline = spawned + Duration::from_secs(limit);
        let mut seen = CellEvents::default();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            // the deadlines are checked on every pass, not only when the worker is silent: a
            // worker that logs in a loop must time out too
            if self.is_interrupted() {
                w.kill();
                return Ok(None);
            }
            let now = Instant::now();
            let until = match seen.finished_at {
                // the result is in: a worker stuck in teardown is simply stopped
                Some(t) if now > t + TEARDOWN_GRACE => {
                    w.kill();
                    break;
                }
                Some(t) => t + TEARDOWN_GRACE,
                None if now > deadline => {
                    seen.timed_out = Some(limit);
                    w.kill();
                    break;
                }
                None => deadline,
            };
            let wait = (until - now).min(Duration::from_millis(100));
            match w.rx.recv_timeout(wait) {
                Ok(Msg::Event(e)) => seen.event(e, &job.cell, obs)?,
                Ok(Msg::Garbage(line) | Msg::Log(line)) => {
                    obs.worker_log(&line);
                    push_tail(&mut w.stderr_tail, line);
                }
                Ok(Msg::StdoutClosed) => out_done = true,
                Ok(Msg::StderrClosed) => err_done = true,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(Some(seen))
    }

    /// Whether the run is being stopped. The signal that stops the run may have reached the
    /// worker too (systemd signals the whole control group), and the worker's death may be seen
    /// before the signal thread sets the flag: give it a moment. Not the cell's failure;
    /// --resume measures it.
    fn stopped_with_the_run(&self, status: ExitStatus) -> bool {
        if status
            .signal()
            .is_some_and(|s| [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&s))
        {
            let t = Instant::now();
            while !self.is_interrupted() && t.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.is_interrupted()
    }

    /// Whether Ctrl-C or a signal asked the run to stop.
    fn is_interrupted(&self) -> bool {
        crate::signals::stopping(self.interrupted)
    }
}

/// What the worker of one cell reported, as far as the end of the cell depends on it.
#[derive(Default)]
struct CellEvents {
    /// When the cell's result (measured or failed) came in.
    finished_at: Option<Instant>,
    /// Whether the worker started the cell.
    started: bool,
    /// The `timeout_s` the worker overran.
    timed_out: Option<u64>,
    /// The speed figures sent before the quality test ([`Event::Measured`]).
    speed: Option<Box<crate::protocol::Measurement>>,
}

impl CellEvents {
    /// Passes one event of the worker to `obs`, noting the start and the result of `cell`
    /// (events of other cells are ignored).
    fn event(&mut self, e: Event, cell: &Cell, obs: &mut dyn Observer) -> Result<()> {
        let ours = |c: usize| c == cell.index;
        match e {
            Event::Ready { backend } => obs.ready(&backend),
            Event::Started { cell: c } if ours(c) => {
                self.started = true;
                obs.started(cell);
            }
            Event::Progress {
                cell: c,
                phase,
                done,
                total,
            } if ours(c) => obs.progress(cell, &phase, done, total),
            Event::Done {
                cell: c,
                measurement,
            } if ours(c) => {
                obs.finished(cell, Outcome::Measured(measurement))?;
                self.finished_at = Some(Instant::now());
            }
            Event::Measured {
                cell: c,
                measurement,
            } if ours(c) => self.speed = Some(measurement),
            Event::Failed { cell: c, reason } if ours(c) => {
                obs.finished(cell, Outcome::Failed(reason))?;
                self.finished_at = Some(Instant::now());
            }
            _ => {}
        }
        Ok(())
    }

    /// Why a worker that reported no result failed its cell: the timeout or its exit, then the
    /// tail of its log.
    fn failure(&self, w: &Worker, status: ExitStatus) -> String {
        let cause = match self.timed_out {
            Some(s) if !self.started => format!(
                "timed out after {s} s (timeout_s) before it started the cell (stuck initialising \
                 llama.cpp or the GPU driver?) and was stopped"
            ),
            Some(s) => format!("timed out after {s} s (timeout_s) and was stopped"),
            None => format!("worker {}", describe_exit(status)),
        };
        let tail = w.tail(4);
        if tail.is_empty() {
            cause
        } else {
            format!("{cause}: {tail}")
        }
    }
}

/// For a cell whose worker died with RPC servers in its placement (llama.cpp aborts the process
/// when a server goes away): which of them still accept connections, so the failure names the
/// dead one.
fn rpc_servers_state(rpc: &crate::config::RpcServers) -> String {
    if rpc.is_local() {
        return String::new();
    }
    let state: Vec<String> = rpc
        .0
        .iter()
        .map(|e| {
            if crate::rpc_wire::reachable(e, Duration::from_secs(3)) {
                format!("{e} accepts connections")
            } else {
                format!("{e} did not accept a connection within 3 s (stopped, gone or unreachable)")
            }
        })
        .collect();
    format!(" — RPC servers of this cell: {}", state.join("; "))
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    tail.push_back(line);
    if tail.len() > STDERR_KEEP {
        tail.pop_front();
    }
}
