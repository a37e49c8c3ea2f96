//! The run folder: its name, its lock, its log (`results.jsonl`) and what `--resume` reads back
//! from it, and where `--save-baseline` will write.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::plan::Cell;
use crate::results::{CellResult, Report, RunStatus};

/// One line of `results.jsonl`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum LogLine {
    /// The report header (no cells) when a run or a resumption starts.
    Run { report: Box<Report> },
    /// A finished cell.
    Cell { cell: Box<CellResult> },
    /// The run ended.
    End {
        status: RunStatus,
        finished_at: String,
        wall_s: f64,
    },
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `20261128T230512Z` from the current UTC time.
pub(super) fn run_id() -> String {
    now_rfc3339().replace(['-', ':'], "")
}

/// A new run folder under `out`, named by UTC timestamp (suffixed if taken).
pub(super) fn new_run_dir(out: &Path) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let base = run_id();
    for n in 1..1000 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = out.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a run folder under {}", out.display())
}

/// The run folder and its id: the `--resume` folder (its name is the id), else a new folder
/// under `out`.
pub(super) fn run_dir(resume: Option<&Path>, out: &Path) -> Result<(String, PathBuf)> {
    Ok(match resume {
        Some(dir) => (
            dir.file_name()
                .map_or_else(run_id, |n| n.to_string_lossy().into_owned()),
            dir.to_path_buf(),
        ),
        None => new_run_dir(out)?,
    })
}

/// Cells already measured in a run folder, from its `results.jsonl`, and the header of that run.
/// The log is read as bytes: a last line cut short by a crash or a full disk (without its
/// newline, perhaps inside a multi-byte character of generated text) is left out, as the repair
/// before appending will cut it; any other line that is not a log line is skipped. Reads only:
/// nothing in the folder changes.
pub(super) fn read_previous(dir: &Path) -> Result<(Option<Report>, Vec<CellResult>)> {
    let path = dir.join("results.jsonl");
    let bytes = match crate::fsutil::read_input(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| {
                format!(
                    "--resume {}: no results.jsonl there (is it a run folder?)",
                    dir.display()
                )
            })
        }
        r => r.with_context(|| format!("reading {}", path.display()))?,
    };
    // whole lines only: everything after the last newline is a torn line
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (mut header, mut cells) = (None, Vec::new());
    for line in bytes[..whole].split(|&b| b == b'\n') {
        match serde_json::from_slice::<LogLine>(line) {
            Ok(LogLine::Run { report }) => {
                header.get_or_insert(*report);
            }
            Ok(LogLine::Cell { cell }) => cells.push(*cell),
            Ok(LogLine::End { .. }) | Err(_) => {}
        }
    }
    Ok((header, cells))
}

/// Refuses to resume a folder holding cells that do not belong to this plan (another config,
/// other `--only` filters or overrides): resuming would drop them from its reports. Nothing in
/// the folder is changed.
pub(super) fn check_resume_belongs(
    dir: &Path,
    header: Option<&Report>,
    previous: &[CellResult],
    cells: &[Cell],
) -> Result<()> {
    let plan: HashSet<String> = cells.iter().map(Cell::key).collect();
    let foreign: Vec<&str> = previous
        .iter()
        .filter(|c| !plan.contains(&c.key))
        .map(|c| c.key.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = foreign.iter().take(8).copied().collect();
    bail!(
        "--resume {}: {} measured cell{} there {} not in this plan: {}{}. Resume with the config \
         and options of that run{}, or start a new run; nothing in the folder was changed",
        dir.display(),
        foreign.len(),
        if foreign.len() == 1 { "" } else { "s" },
        if foreign.len() == 1 { "is" } else { "are" },
        shown.join(", "),
        if foreign.len() > shown.len() {
            ", …"
        } else {
            ""
        },
        header
            .map(|h| format!(" (`{}`)", h.command.join(" ")))
            .unwrap_or_default()
    )
}

/// Where `--save-baseline` will store the run: checked (folders created, writability probed)
/// before anything is measured, so a bad path fails at once, naming it.
pub(super) enum SaveTarget {
    /// An existing folder (or a path ending in `/`): the run goes in as `RUN_ID.json`.
    Folder(PathBuf),
    File(PathBuf),
}

impl SaveTarget {
    pub(super) fn check(path: &Path) -> Result<SaveTarget> {
        let as_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
        let (target, folder) = if as_dir {
            (SaveTarget::Folder(path.to_path_buf()), path.to_path_buf())
        } else {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (SaveTarget::File(path.to_path_buf()), parent.to_path_buf())
        };
        let what = || format!("--save-baseline {}", path.display());
        std::fs::create_dir_all(&folder).with_context(|| {
            format!("{}: cannot create the folder {}", what(), folder.display())
        })?;
        let probe = folder.join(format!(".quantbench-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("{}: cannot write in {}", what(), folder.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(target)
    }

    pub(super) fn path(&self, run_id: &str) -> PathBuf {
        match self {
            SaveTarget::Folder(d) => d.join(format!("{run_id}.json")),
            SaveTarget::File(p) => p.clone(),
        }
    }
}

/// An exclusive lock on a run folder for as long as this process writes it.
pub(super) fn lock_run_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".quantbench.lock");
    let f = crate::fsutil::open_lock_file(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{}: another quantbench is writing this run folder (a run or a --resume of it); \
             wait for it to end",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// What `--resume` says to continue a run in `dir`.
pub(super) fn resume_hint(dir: &Path) -> String {
    format!(
        "continue with `quantbench run --resume {}` (same config and options)",
        dir.display()
    )
}
