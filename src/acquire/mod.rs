//! Obtaining the GGUF file of every (model, quant) the plan needs, outside any timed region:
//! synthetic models are written and cached, local paths checked, missing quants derived with
//! `llama_model_quantize` (in a worker process, since llama.cpp may abort on a bad file).
//!
//! Failures are per file: a missing or broken file fails its cells, not the run. Progress goes
//! through the [`Progress`] trait; this module never prints.

mod derive;
mod hf;
pub mod hub;
mod identity;
mod local;
pub mod net;
pub mod synthetic;
mod synthetic_file;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::{Matrix, Source};
use crate::plan::Cell;
use crate::quant::Quant;

/// Where a cell's file came from, as recorded in every report row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// `synthetic`, `path`, `hf` or `derived` (quantized locally from a downloaded float file).
    pub kind: String,
    /// Random weights: speed and memory are meaningful, quality is not.
    pub synthetic: bool,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    /// Synthetic preset and seed.
    pub preset: Option<String>,
    pub seed: Option<u64>,
    /// Hub repository, requested revision and the commit it resolved to.
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
    /// The float quant this file was quantized from, when it was derived locally.
    pub derived_from: Option<Quant>,
}

impl Origin {
    /// The origin of the file at `path`, of `kind`, with its size and SHA-256; the fields that
    /// belong to other sources (preset, hub revision, derivation) empty.
    fn of_file(kind: &str, path: PathBuf, (size_bytes, sha256): (u64, String)) -> Origin {
        Origin {
            kind: kind.into(),
            synthetic: false,
            path,
            size_bytes,
            sha256,
            preset: None,
            seed: None,
            repo: None,
            revision: None,
            commit: None,
            derived_from: None,
        }
    }
}

/// Reports long acquisition steps (writing, hashing, quantizing, downloading).
pub trait Progress {
    /// A step begins; `total_bytes` is known for byte-counted steps.
    fn begin(&self, label: &str, total_bytes: Option<u64>);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The step ended.
    fn end(&self);
    /// The user asked to stop (Ctrl-C): long steps give up, leaving resumable state.
    fn cancelled(&self) -> bool {
        false
    }
    /// Something went wrong that costs nothing measured (a cache memo not written).
    fn warn(&self, _message: &str) {}
}

/// The error a step returns when [`Progress::cancelled`] says to stop.
pub fn interrupted() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted")
}

/// Acquisition settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root of quantbench's cache.
    pub cache_dir: PathBuf,
    /// The `quantbench` executable, run as `worker --quantize` to derive quants.
    pub exe: PathBuf,
    /// The Hugging Face hub (endpoint, token, cache, offline).
    pub hub: hub::HubConfig,
    /// The folder of the machine-wide measurement lock, which quantizing takes (it loads every
    /// core); `None`: quantize without it (`--no-lock`, or nothing measures here).
    pub lock_dir: Option<PathBuf>,
}

/// quantbench's cache folder: `$QUANTBENCH_CACHE`, else `$XDG_CACHE_HOME/quantbench`, else
/// `~/.cache/quantbench`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUANTBENCH_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("quantbench");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("quantbench")
}

/// Where a (model, quant) file is expected, before anything is fetched or written.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub path: Option<PathBuf>,
    /// Human description of the source, e.g. `synthetic gpt2 (seed 0)`.
    pub source: String,
    pub cached: bool,
    /// Size of the file if it exists, else an estimate.
    pub size_bytes: Option<u64>,
    pub size_is_estimate: bool,
    /// Architecture numbers, when known (synthetic preset, or a local file's metadata).
    pub shape: Option<crate::capacity::Shape>,
    /// Why the file that is there cannot be used (not a regular file, empty, not GGUF); such a
    /// file does not count as cached.
    pub problem: Option<String>,
}

/// A model file's nominal size and shape from the matrix alone, the same on every machine
/// whatever is cached: a synthetic preset's shape and its size at the quant's bits per weight;
/// `None` for files whose shape only the file itself gives (local paths, the hub).
pub fn nominal(
    matrix: &Matrix,
    model_index: usize,
    quant: Quant,
) -> Option<(u64, crate::capacity::Shape)> {
    match &matrix.models[model_index].source {
        Source::Synthetic { preset, .. } => {
            Some((synthetic_file::nominal_bytes(preset, quant), preset.shape()))
        }
        _ => None,
    }
}

/// Where each (model, quant) of the plan comes from and whether it is already here.
pub fn describe(matrix: &Matrix, model_index: usize, quant: Quant, opts: &Options) -> Planned {
    let m = &matrix.models[model_index];
    match &m.source {
        Source::Synthetic { preset, seed } => synthetic_file::describe(preset, *seed, quant, opts),
        Source::Path { template, derive } => local::describe(template, quant, *derive),
        Source::Hf {
            repo,
            revision,
            file,
            derive,
        } => hf::describe(repo, revision, file.as_deref(), *derive, quant, opts),
        Source::Endpoint { url, .. } => Planned {
            path: None,
            source: format!("endpoint {url} (no file)"),
            cached: true,
            size_bytes: None,
            size_is_estimate: false,
            shape: None,
            problem: None,
        },
    }
}

/// Acquires every (model, quant) the cells need. Each entry is the file's origin or the reason
/// it could not be obtained (which fails that file's cells only). Stops early when `stop()`
/// says so (Ctrl-C); files not reached are absent from the map.
pub fn acquire(
    matrix: &Matrix,
    cells: &[Cell],
    opts: &Options,
    progress: &dyn Progress,
    stop: &dyn Fn() -> bool,
) -> BTreeMap<(usize, Quant), Result<Origin, String>> {
    let mut out = BTreeMap::new();
    for c in cells {
        let key = (c.model_index, c.quant);
        if out.contains_key(&key) {
            continue;
        }
        if stop() {
            break;
        }
        let m = &matrix.models[c.model_index];
        let r = match &m.source {
            // a server quantbench does not start: nothing to acquire
            Source::Endpoint { .. } => continue,
            Source::Synthetic { preset, seed } => {
                synthetic_file::acquire(preset, *seed, c.quant, opts, progress)
            }
            Source::Path { template, derive } => {
                local::acquire(template, c.quant, *derive, opts, progress)
            }
            Source::Hf {
                repo,
                revision,
                file,
                derive,
            } => hf::acquire(
                &hf::HfSpec {
                    repo,
                    revision,
                    file: file.as_deref(),
                    derive: *derive,
                },
                c.quant,
                opts,
                progress,
            ),
        };
        out.insert(key, r.map_err(|e| format!("{e:#}")));
    }
    out
}

/// A [`Progress`] that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::identity::{file_identity, sha256_file};
    use super::*;

    fn opts(dir: &Path) -> Options {
        Options {
            cache_dir: dir.to_path_buf(),
            exe: PathBuf::from("/nonexistent"),
            hub: hub::HubConfig::from_env(true),
            lock_dir: None,
        }
    }

    #[test]
    fn synthetic_f16_is_written_once_and_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let p = crate::presets::preset("tiny").unwrap();
        let a = synthetic_file::acquire(p, 3, Quant::F16, &o, &Silent).unwrap();
        assert!(a.path.exists() && a.synthetic && a.kind == "synthetic");
        assert_eq!(a.sha256, sha256_file(&a.path, &Silent).unwrap());
        let mtime = std::fs::metadata(&a.path).unwrap().modified().unwrap();
        let b = synthetic_file::acquire(p, 3, Quant::F16, &o, &Silent).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::metadata(&b.path).unwrap().modified().unwrap(),
            mtime
        );
        // no partial files left behind
        let names: Vec<_> = std::fs::read_dir(a.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn path_source_errors_are_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let template = |p: &Path| p.to_string_lossy().into_owned();
        let f16 = Quant::F16;
        let missing = local::acquire(
            &template(&tmp.path().join("nope.gguf")),
            f16,
            false,
            &o,
            &Silent,
        )
        .unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
        let junk = tmp.path().join("junk.gguf");
        std::fs::write(&junk, b"hello world").unwrap();
        let e = local::acquire(&template(&junk), f16, false, &o, &Silent).unwrap_err();
        assert!(e.to_string().contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn hash_cache_notices_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let f = tmp.path().join("x.bin");
        std::fs::write(&f, b"one").unwrap();
        let (_, h1) = file_identity(&f, &o, &Silent).unwrap();
        std::fs::write(&f, b"three").unwrap();
        let (n, h2) = file_identity(&f, &o, &Silent).unwrap();
        assert_eq!(n, 5);
        assert_ne!(h1, h2);
    }
}
