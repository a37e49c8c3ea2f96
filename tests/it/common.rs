//! Helpers shared by the end-to-end tests: a scratch folder with its own cache, config
//! and reports, and readers for what a run leaves behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// The `quantbench` binary under test.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("quantbench")
}

/// What a developer's or CI's environment may hold that a test must never see or use: hub
/// credentials and settings (a logged-in machine's token must not reach a test server, and the
/// no-token cases must test what they claim), proxies, fault injection, backend folders.
pub const FOREIGN_ENV: &[&str] = &[
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "QUANTBENCH_FAULT",
    "QUANTBENCH_FAULT_DISK_FULL",
    "QUANTBENCH_BACKEND_DIR",
];

/// Sets `c` to run in `dir` with the quantbench cache at `cache`, `HOME` in `dir` (so no token
/// file or cache of the person running the tests is found), the machine-wide measurement lock in
/// the cache (parallel tests, and other people's test runs on the machine, do not wait for each
/// other; the lock's own tests point it elsewhere), and none of [`FOREIGN_ENV`].
pub fn isolate<'a>(
    c: &'a mut std::process::Command,
    dir: &Path,
    cache: &Path,
) -> &'a mut std::process::Command {
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    c.current_dir(dir)
        .env("QUANTBENCH_CACHE", cache)
        .env("QUANTBENCH_LOCK_DIR", cache)
        .env("HOME", dir.join("home"))
        // confirmation re-runs of cells measured on a busy machine wait for a quiet one: not
        // for long in tests, which run on busy machines
        .env("QUANTBENCH_QUIET_WAIT_S", "2")
}

/// `quantbench` run in `dir` with its cache at `cache`, as a plain `std` process.
pub fn process(dir: &Path, cache: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    isolate(&mut c, dir, cache);
    c
}

/// `quantbench` run in `dir` with its cache at `cache`.
pub fn command(dir: &Path, cache: &Path) -> Command {
    Command::from_std(process(dir, cache))
}

/// A scratch folder with its own cache, config and reports.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

/// The synthetic test models (`tiny`, `tiny-llama` at F16, Q8_0, Q4_K_M, Q4_1), made once
/// per test run by `quantbench fetch` into a cache of their own: every [`Scratch`] starts with
/// a copy of them (a copy, not a link: tests that damage their files damage only theirs), so
/// the tests do not each write and quantize the same files again.
fn shared_models() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("models.toml"),
            "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_K_M\", \"Q4_1\"]\n\
             [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n\
             [[model]]\nname = \"tiny-llama\"\nsynthetic = \"tiny-llama\"\n",
        )
        .unwrap();
        let out = process(d.path(), &d.path().join("cache"))
            .arg("fetch")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
    .path()
}

/// Copies the files under `from` into `to`, folders included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

impl Scratch {
    /// A scratch folder whose cache already holds the synthetic test models.
    pub fn new() -> Self {
        let s = Self::empty();
        copy_tree(
            &shared_models().join("cache/synthetic"),
            &s.cache().join("synthetic"),
        );
        s
    }

    /// A scratch folder with an empty cache (tests of making the files).
    pub fn empty() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.path().join("models.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
    /// The quantbench cache of this folder.
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }
    pub fn cmd(&self) -> Command {
        command(self.path(), &self.cache())
    }
    /// The same command as a plain `std` process (for signals and waiting), with SIGINT,
    /// SIGTERM and SIGHUP at their default disposition: a test suite started in the background
    /// (`cmd &`, `nohup`) hands them down ignored, and quantbench keeps ignored signals ignored.
    pub fn process(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut c = process(self.path(), &self.cache());
        // SAFETY: only async-signal-safe calls (signal) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().arg("run").args(args).output().unwrap()
    }
    /// The only run folder under reports/.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir_in("reports")
    }
    /// The only run folder under `out` (a `--out` folder).
    pub fn run_dir_in(&self, out: &str) -> PathBuf {
        only_run_dir(&self.path().join(out))
    }
}

/// The only run folder in `out` (a reports/ or `--out` folder).
pub fn only_run_dir(out: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

pub const TINY: &str = r#"
schema = 1
[defaults]
n_gen = 8
n_prompt = 32
repetitions = 3
warmup = 1

[[model]]
name = "tiny"
synthetic = "tiny"
"#;

/// [`TINY`] cut to Q8_0, and a second model, `stuck` (F16 only), with a short `timeout_s`:
/// the matrix for faults that hang the `stuck` worker.
pub fn tiny_and_stuck(timeout_s: u32) -> String {
    format!(
        "{TINY}quants = [\"Q8_0\"]\n\
         [[model]]\nname = \"stuck\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\ntimeout_s = {timeout_s}\n"
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn cells(report: &Value) -> &Vec<Value> {
    report["cells"].as_array().unwrap()
}

/// Waits (polling) until `f` holds, failing the test after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether a run folder's results.jsonl has a finished cell.
pub fn has_a_cell(reports: &Path) -> bool {
    std::fs::read_dir(reports)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("results.jsonl")).ok())
        .is_some_and(|t| t.contains("\"type\":\"cell\""))
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a child of the test.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for a child at most `secs` seconds; a child still running then is killed and the test
/// fails, instead of hanging the suite.
pub fn wait_bounded(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A few thousand words of plain text, different per `seed`: a corpus of several 64-token
/// chunks for the quality test.
pub fn corpus(seed: u64) -> String {
    let words = [
        "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
        "from", "his", "her", "it", "an", "were", "are", "which", "this", "be", "or",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..1500)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            words[(x >> 33) as usize % words.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}
