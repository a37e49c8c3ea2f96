//! What else used the machine while a cell was timed: other processes' CPU time (the machine's
//! busy time from `/proc/stat` minus this process's own), the hypervisor's steal, and on GPUs
//! other processes on the cell's devices and slowdowns the workload did not cause. A cell
//! measured on a disturbed machine says so, and the gate calls its speed verdicts
//! inconclusive instead of trusting them. Reads `/proc`; never prints.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Other processes' CPU time, as a share of the machine's CPU capacity during the timed
/// regions, from which a cell measured on the CPU counts as disturbed: a CPU cell uses every
/// core, so a tenth of the machine taken by others costs it about as much (the CPU gate
/// thresholds are 25–35%).
pub const CPU_CELL_OTHER_PCT: f64 = 10.0;
/// The same for a cell on a GPU, whose host side needs a core or so.
pub const GPU_CELL_OTHER_PCT: f64 = 50.0;
/// Hypervisor steal from which a cell counts as disturbed.
pub const STEAL_PCT: f64 = 5.0;
/// Shortest timed span the CPU shares are judged on: `/proc/stat` counts in ticks of 10 ms.
pub const MIN_TIMED_S: f64 = 0.2;

/// What else used the machine during a cell's timed regions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disturbance {
    /// Wall time of the timed regions the figures cover, seconds.
    pub timed_s: f64,
    /// CPUs of the machine (online).
    pub cpus: u32,
    /// Other processes' CPU time, percent of the machine's capacity (`timed_s × cpus`).
    pub other_cpu_pct: f64,
    /// Time the hypervisor gave the machine's CPUs to others (steal), percent of capacity.
    pub steal_pct: f64,
    /// This worker's own CPU time, percent of capacity.
    pub own_cpu_pct: f64,
    /// Other processes seen computing on the cell's GPUs during timed regions (`None`: not
    /// known, as without NVML or when NVML lists processes under another PID namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_other_processes: Option<u32>,
    /// Slowdowns of the cell's GPUs the workload did not cause (thermal, hardware), by NVML's
    /// names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_slowdowns: Vec<String>,
    /// Why the cell counts as disturbed; `None`: a quiet machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disturbed: Option<String>,
}

impl Disturbance {
    /// Sets [`Disturbance::disturbed`] from the figures: other processes' CPU share beyond
    /// [`CPU_CELL_OTHER_PCT`] (a CPU cell) or [`GPU_CELL_OTHER_PCT`] (a GPU cell), steal beyond
    /// [`STEAL_PCT`], another process on the GPUs, or a GPU slowdown.
    pub fn judge(&mut self, on_gpu: bool) {
        let mut why = Vec::new();
        let limit = if on_gpu {
            GPU_CELL_OTHER_PCT
        } else {
            CPU_CELL_OTHER_PCT
        };
        if self.timed_s >= MIN_TIMED_S {
            if self.other_cpu_pct >= limit {
                why.push(format!(
                    "other processes used {:.0}% of the CPU",
                    self.other_cpu_pct
                ));
            }
            if self.steal_pct >= STEAL_PCT {
                why.push(format!(
                    "the hypervisor stole {:.0}% of the CPU",
                    self.steal_pct
                ));
            }
        }
        if let Some(n) = self.gpu_other_processes.filter(|&n| n > 0) {
            why.push(format!(
                "{n} other process{} computed on the GPU",
                if n == 1 { "" } else { "es" }
            ));
        }
        if !self.gpu_slowdowns.is_empty() {
            why.push(format!("GPU slowdown ({})", self.gpu_slowdowns.join(", ")));
        }
        self.disturbed = (!why.is_empty()).then(|| why.join("; "));
    }
}

/// The machine's CPU time counters: the first line of `/proc/stat`, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (guest time is inside user and nice).
    pub busy: u64,
    pub steal: u64,
}

/// Parses the `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
    })
}

fn machine() -> Option<CpuTimes> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Ticks per second of `/proc/stat`.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time this process used so far (all its threads).
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Online CPUs.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A point in time: the wall clock, the machine's counters and this process's CPU time.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    at: Instant,
    machine: CpuTimes,
    own: Duration,
}

impl Snapshot {
    fn now() -> Option<Self> {
        Some(Snapshot {
            machine: machine()?,
            own: own_cpu(),
            at: Instant::now(),
        })
    }
}

/// Sums what happened over several timed regions (`begin` … `end`, repeatedly).
#[derive(Debug, Default)]
pub struct Meter {
    open: Option<Snapshot>,
    wall_s: f64,
    busy_s: f64,
    steal_s: f64,
    own_s: f64,
}

impl Meter {
    /// A timed region starts.
    pub fn begin(&mut self) {
        self.open = Snapshot::now();
    }

    /// The timed region ends.
    pub fn end(&mut self) {
        let (Some(a), Some(b)) = (self.open.take(), Snapshot::now()) else {
            return;
        };
        let tick = 1.0 / ticks_per_s();
        self.wall_s += (b.at - a.at).as_secs_f64();
        self.busy_s += b.machine.busy.saturating_sub(a.machine.busy) as f64 * tick;
        self.steal_s += b.machine.steal.saturating_sub(a.machine.steal) as f64 * tick;
        self.own_s += b.own.saturating_sub(a.own).as_secs_f64();
    }

    /// The figures so far (not judged), or `None` when nothing was timed or `/proc/stat` could
    /// not be read.
    pub fn figures(&self) -> Option<Disturbance> {
        (self.wall_s > 0.0)
            .then(|| shares(self.wall_s, cpus(), self.busy_s, self.steal_s, self.own_s))
    }
}

/// The shares of the machine's capacity (`wall_s × cpus`) taken by others, steal and this
/// process, from the machine's busy and steal time and this process's CPU time (seconds).
pub fn shares(wall_s: f64, cpus: u32, busy_s: f64, steal_s: f64, own_s: f64) -> Disturbance {
    let capacity = wall_s * f64::from(cpus.max(1));
    let pct = |x: f64| (100.0 * x / capacity).clamp(0.0, 100.0);
    Disturbance {
        timed_s: wall_s,
        cpus,
        other_cpu_pct: pct((busy_s - own_s).max(0.0)),
        steal_pct: pct(steal_s),
        own_cpu_pct: pct(own_s),
        ..Default::default()
    }
}

/// Other processes' share of the machine's CPU (percent of capacity) over `window`, measured
/// now: how busy the machine is before something is measured again.
pub fn others_now(window: Duration) -> Option<f64> {
    let mut m = Meter::default();
    m.begin();
    std::thread::sleep(window);
    m.end();
    m.figures().map(|d| d.other_cpu_pct + d.steal_pct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_parsed() {
        let t = "cpu  100 5 20 900 7 1 2 3 0 0\ncpu0 50 2 10 450 3 0 1 1 0 0\nintr 1\n";
        assert_eq!(
            parse_proc_stat(t),
            Some(CpuTimes {
                busy: 100 + 5 + 20 + 1 + 2,
                steal: 3
            })
        );
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3\n"), None);
    }

    #[test]
    fn shares_and_verdicts() {
        // 2 s on 2 CPUs: the worker used 3.4 s, the machine was busy 4 s: others 0.6 s = 15%
        let d = shares(2.0, 2, 4.0, 0.0, 3.4);
        assert!((d.other_cpu_pct - 15.0).abs() < 1e-9, "{d:?}");
        assert!((d.own_cpu_pct - 85.0).abs() < 1e-9);
        let mut cpu = d.clone();
        cpu.judge(false);
        assert_eq!(
            cpu.disturbed.as_deref(),
            Some("other processes used 15% of the CPU")
        );
        let mut gpu = d.clone();
        gpu.judge(true);
        assert_eq!(gpu.disturbed, None, "a GPU cell needs a core or so");
        // a quiet machine; counters that moved less than the worker's own time (ticks)
        let mut quiet = shares(2.0, 2, 3.5, 0.0, 3.6);
        quiet.judge(false);
        assert_eq!((quiet.other_cpu_pct, quiet.disturbed), (0.0, None));
        // steal, other GPU processes, slowdowns
        let mut d = shares(1.0, 4, 1.0, 0.4, 1.0);
        d.gpu_other_processes = Some(2);
        d.gpu_slowdowns = vec!["HW_THERMAL_SLOWDOWN".into()];
        d.judge(true);
        assert_eq!(
            d.disturbed.as_deref(),
            Some(
                "the hypervisor stole 10% of the CPU; 2 other processes computed on the GPU; \
                 GPU slowdown (HW_THERMAL_SLOWDOWN)"
            )
        );
        // too short a span to judge by ticks
        let mut short = shares(0.05, 2, 0.1, 0.0, 0.0);
        short.judge(false);
        assert_eq!(short.disturbed, None);
    }

    #[test]
    fn a_busy_thread_of_this_process_is_not_another_process() {
        let mut m = Meter::default();
        m.begin();
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        m.end();
        let d = m.figures().unwrap();
        assert!(d.timed_s >= 0.3, "{d:?}");
        assert!(d.own_cpu_pct > 0.0, "{d:?}");
    }
}
