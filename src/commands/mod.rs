//! One file per subcommand: glue between the CLI options and the core modules.

pub mod compare;
pub mod fetch;
pub mod list;
pub mod merge;
pub mod report;
pub mod rpc_server;
pub mod run;
pub mod tune;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::acquire;
use crate::cli::{MatrixArgs, OverrideArgs};
use crate::config::{self, Matrix};
use crate::coordinator::Coordinator;
use crate::output::Printer;
use crate::plan::{self, Cell};

/// Exit codes of the command line (docs/troubleshooting.md lists them).
pub mod exit {
    pub const OK: u8 = 0;
    pub const REGRESSION: u8 = 1;
    pub const FATAL: u8 = 2;
    pub const CELLS_FAILED: u8 = 3;
    /// The gate could not tell: some verdicts are `inconclusive` (the machine was too busy, or
    /// the samples too spread to detect a change of the threshold's size), nothing regressed
    /// and no cell failed. A nightly job retries rather than alerts.
    pub const INCONCLUSIVE: u8 = 4;
    /// Interrupted by a signal: 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP); see
    /// [`crate::signals::exit_code`].
    pub const INTERRUPTED: u8 = 130;
}

/// What every command shares: the printer, folders, and the interrupt flag.
pub struct Ctx {
    pub printer: Printer,
    pub cache_dir: PathBuf,
    /// Whether `--cache-dir` (or QUANTBENCH_CACHE) was given rather than defaulted.
    pub cache_dir_given: bool,
    pub backend_dirs: Vec<PathBuf>,
    pub interrupted: Arc<AtomicBool>,
}

impl Ctx {
    /// Acquisition options for this invocation; `lock`: quantizing takes the machine-wide
    /// measurement lock.
    pub fn acquire_options(&self, offline: bool, lock: bool) -> Result<acquire::Options> {
        Ok(acquire::Options {
            cache_dir: self.cache_dir.clone(),
            exe: worker_exe()?,
            hub: acquire::hub::HubConfig::from_env(offline),
            lock_dir: lock.then(crate::machine_lock::dir),
        })
    }

    /// A coordinator whose workers see the same backend folders as this process.
    pub fn coordinator(&self) -> Result<Coordinator<'_>> {
        let mut env = Vec::new();
        if !self.backend_dirs.is_empty() {
            let joined =
                std::env::join_paths(&self.backend_dirs).context("--backend-dir contains ':'")?;
            env.push((
                crate::engine::BACKEND_DIR_ENV.to_string(),
                joined.to_string_lossy().into_owned(),
            ));
        }
        Ok(Coordinator {
            exe: worker_exe()?,
            env,
            interrupted: &self.interrupted,
        })
    }
}

/// The executable workers run: this very program. On Linux `/proc/self/exe`, which keeps
/// naming the binary this process started from even when its file is replaced or removed
/// meanwhile (an upgrade during a nightly run); elsewhere its path.
fn worker_exe() -> Result<PathBuf> {
    let me = Path::new("/proc/self/exe");
    if me.exists() {
        return Ok(me.to_path_buf());
    }
    std::env::current_exe().context("locating the quantbench executable")
}

/// A value twice in a command-line list is refused, as in models.toml (`n_parallel 4 is listed
/// twice`).
fn check_no_repeats(o: &OverrideArgs) -> Result<()> {
    fn first_repeat<T: PartialEq + std::fmt::Display>(key: &str, v: &Option<Vec<T>>) -> Result<()> {
        let v = v.as_deref().unwrap_or_default();
        if let Some(x) = v.iter().enumerate().find(|(i, x)| v[..*i].contains(x)) {
            anyhow::bail!("{key} {} is listed twice", x.1);
        }
        Ok(())
    }
    first_repeat("n_gen", &o.n_gen)?;
    first_repeat("n_prompt", &o.n_prompt)?;
    first_repeat("n_gpu_layers", &o.n_gpu_layers)?;
    first_repeat("n_threads", &o.threads)?;
    first_repeat("main_gpu", &o.main_gpu)?;
    first_repeat("n_parallel", &o.n_parallel)?;
    first_repeat("n_depth", &o.n_depth)?;
    first_repeat("rpc set", &o.rpc)?;
    Ok(())
}

/// Loads the matrix and expands it into cells.
pub fn load_plan(m: &MatrixArgs, o: &OverrideArgs) -> Result<(Matrix, Vec<Cell>)> {
    check_no_repeats(o)?;
    let mut matrix = config::load(&m.config)?;
    if let Some(url) = &o.endpoint {
        matrix.models = vec![config::endpoint_model(
            &matrix,
            url,
            o.api_key_env.as_deref(),
        )?];
    }
    let cells = plan::expand(&matrix, &o.to_overrides(&m.only))?;
    let searched = cells.iter().any(|c| {
        c.params
            .serve
            .as_ref()
            .is_some_and(|s| s.load == crate::traffic::Load::MaxRate)
    });
    if searched && !matrix.slo.requests().has_target() {
        anyhow::bail!(
            "rate \"max\" searches for the highest rate that meets [slo]: set max_ttft_ms, \
             max_tpot_ms or max_e2e_ms in models.toml's [slo]"
        );
    }
    Ok((matrix, cells))
}
