//! Obtaining the GGUF file of every (model, quant) the plan needs, outside any timed region:
//! synthetic models are written and cached, local paths checked, missing quants derived with
//! `llama_model_quantize` (in a worker process, since llama.cpp may abort on a bad file).
//!
//! Failures are per file: a missing or broken file fails its cells, not the run. Progress goes
//! through the [`Progress`] trait; this module never prints.

pub mod hub;
pub mod synthetic;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{fill_template, Matrix, Source};
use crate::gguf;
use crate::plan::Cell;
use crate::presets::Preset;
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

/// What is at a local path, looked at without ever blocking: only regular files are opened (a
/// FIFO or a device would hang the reader), and their header is checked.
struct Local {
    size: Option<u64>,
    shape: Option<crate::capacity::Shape>,
    problem: Option<String>,
}

fn inspect(path: &Path) -> Local {
    let none = |problem: Option<String>| Local {
        size: None,
        shape: None,
        problem,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return none(None),
        Err(e) => return none(Some(format!("cannot read it: {e}"))),
    };
    if !md.is_file() {
        return none(Some("not a regular file".into()));
    }
    let size = Some(md.len());
    let with = |problem: String| Local {
        size,
        shape: None,
        problem: Some(problem),
    };
    if md.len() == 0 {
        return with("an empty file, not a GGUF file".into());
    }
    let mut f = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) => return with(format!("cannot open it: {e}")),
    };
    match gguf::sniff(&mut f) {
        Ok(gguf::Sniff::Gguf { .. }) => {}
        Ok(gguf::Sniff::NotGguf { first_bytes }) => {
            return with(format!(
                "not a GGUF file (it starts with {:?}, not \"GGUF\")",
                String::from_utf8_lossy(&first_bytes)
            ))
        }
        Err(e) => return with(format!("cannot read it: {e}")),
    }
    let shape = File::open(path)
        .ok()
        .and_then(|f| gguf::read_metadata(&mut BufReader::new(f)).ok())
        .and_then(|m| crate::capacity::Shape::from_metadata(&m));
    Local {
        size,
        shape,
        problem: None,
    }
}

fn synthetic_dir(opts: &Options, preset: &Preset, seed: u64) -> PathBuf {
    opts.cache_dir.join("synthetic").join(format!(
        "{}-seed{seed}-w{}",
        preset.name,
        synthetic::WRITER_VERSION
    ))
}

fn synthetic_file(opts: &Options, preset: &Preset, seed: u64, quant: Quant) -> PathBuf {
    synthetic_dir(opts, preset, seed).join(format!("{}-{quant}.gguf", preset.name))
}

/// Approximate bits per weight of a quant, for size estimates before a file exists.
fn bits_per_weight(q: Quant) -> f64 {
    match q.name() {
        "F32" => 32.0,
        "F16" | "BF16" => 16.0,
        "Q8_0" => 8.5,
        "Q6_K" => 6.56,
        "Q5_0" | "Q5_1" | "Q5_K_S" | "Q5_K_M" => 5.6,
        "Q4_K_M" => 4.9,
        "Q4_0" | "Q4_1" | "Q4_K_S" => 4.6,
        "Q3_K_S" | "Q3_K_M" | "Q3_K_L" => 3.9,
        _ => 3.0,
    }
}

/// Where each (model, quant) of the plan comes from and whether it is already here.
pub fn describe(matrix: &Matrix, model_index: usize, quant: Quant, opts: &Options) -> Planned {
    let m = &matrix.models[model_index];
    match &m.source {
        Source::Synthetic { preset, seed } => {
            let path = synthetic_file(opts, preset, *seed, quant);
            let local = inspect(&path);
            let size = local.size;
            Planned {
                cached: size.is_some() && local.problem.is_none(),
                problem: local.problem,
                size_is_estimate: size.is_none(),
                size_bytes: size.or_else(|| {
                    Some((preset.n_params() as f64 * bits_per_weight(quant) / 8.0) as u64)
                }),
                source: format!(
                    "synthetic {} (seed {seed}){}",
                    preset.name,
                    if quant == Quant::F16 {
                        ""
                    } else {
                        ", quantized from F16"
                    }
                ),
                path: Some(path),
                shape: Some(preset.shape()),
            }
        }
        Source::Path { template } => {
            let path = PathBuf::from(fill_template(template, quant));
            let local = inspect(&path);
            Planned {
                cached: local.size.is_some() && local.problem.is_none(),
                size_is_estimate: false,
                size_bytes: local.size,
                source: "local file".into(),
                path: Some(path),
                shape: local.shape,
                problem: local.problem,
            }
        }
        Source::Hf {
            repo,
            revision,
            file,
            derive,
        } => describe_hf(repo, revision, file.as_deref(), *derive, quant, opts),
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
            Source::Synthetic { preset, seed } => {
                acquire_synthetic(preset, *seed, c.quant, opts, progress)
            }
            Source::Path { template } => {
                acquire_path(Path::new(&fill_template(template, c.quant)), opts, progress)
            }
            Source::Hf {
                repo,
                revision,
                file,
                derive,
            } => acquire_hf(
                &HfSpec {
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

fn acquire_synthetic(
    preset: &'static Preset,
    seed: u64,
    quant: Quant,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Origin> {
    let dir = synthetic_dir(opts, preset, seed);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clean_partials(&dir);
    let f16 = synthetic_file(opts, preset, seed, Quant::F16);
    if !f16.exists() {
        write_synthetic(preset, seed, &f16, opts, progress)?;
    }
    let path = if quant == Quant::F16 {
        f16
    } else {
        let out = synthetic_file(opts, preset, seed, quant);
        if !out.exists() {
            derive(&f16, &out, quant, opts, progress)?;
        }
        out
    };
    let (size_bytes, sha256) = file_identity(&path, opts, progress)?;
    Ok(Origin {
        kind: "synthetic".into(),
        synthetic: true,
        path,
        size_bytes,
        sha256,
        preset: Some(preset.name.into()),
        seed: Some(seed),
        repo: None,
        revision: None,
        commit: None,
        derived_from: (quant != Quant::F16).then_some(Quant::F16),
    })
}

/// Removes what killed writers and quantizers left in `dir` (their process is gone).
fn clean_partials(dir: &Path) {
    crate::fsutil::clean_stale_partials(dir, std::time::Duration::from_secs(3600));
}

/// A temporary name beside `path`, unique to this process: renamed over `path` when complete,
/// so a crash never leaves a truncated file under the final name.
fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

struct ProgressWriter<'a, W: Write> {
    inner: W,
    hasher: Sha256,
    progress: &'a dyn Progress,
    pending: u64,
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.progress.cancelled() {
            return Err(interrupted());
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.pending += n as u64;
        if self.pending >= 1 << 22 {
            self.progress.advance(self.pending);
            self.pending = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_synthetic(
    preset: &Preset,
    seed: u64,
    path: &Path,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<()> {
    let tmp = temp_beside(path);
    progress.begin(
        &format!("writing synthetic {} F16", preset.name),
        Some(preset.f16_bytes()),
    );
    let result = (|| -> Result<String> {
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = ProgressWriter {
            inner: BufWriter::with_capacity(1 << 22, f),
            hasher: Sha256::new(),
            progress,
            pending: 0,
        };
        preset
            .write(seed, &mut w)
            .with_context(|| format!("writing {}", tmp.display()))?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(hex::encode(w.hasher.finalize()))
    })();
    progress.end();
    match result {
        Ok(sha) => {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            remember_hash(path, &sha, opts)?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Quantizes `input` to `quant` into `output`, in a `quantbench worker --quantize` process.
pub fn derive(
    input: &Path,
    output: &Path,
    quant: Quant,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<()> {
    let tmp = temp_beside(output);
    progress.begin(
        &format!(
            "quantizing {} → {quant}",
            input.file_name().unwrap_or_default().to_string_lossy()
        ),
        None,
    );
    let out = Command::new(&opts.exe)
        .args(["worker", "--quantize"])
        .arg(input)
        .arg(&tmp)
        .arg(quant.name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    progress.end();
    let out = out.with_context(|| format!("starting {}", opts.exe.display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(4)..].join(" | ");
        bail!(
            "deriving {quant} from {} failed ({}): {tail}",
            input.display(),
            out.status
        );
    }
    crate::fsutil::sync_file(&tmp)?;
    std::fs::rename(&tmp, output)
        .with_context(|| format!("moving the derived file to {}", output.display()))?;
    Ok(())
}

fn acquire_path(path: &Path, opts: &Options, progress: &dyn Progress) -> Result<Origin> {
    let local = inspect(path);
    if let Some(problem) = local.problem {
        bail!("{}: {problem}", path.display());
    }
    if local.size.is_none() {
        bail!(
            "model file not found: {} (check `path` in the config)",
            path.display()
        );
    }
    let (size_bytes, sha256) = file_identity(path, opts, progress)?;
    Ok(Origin {
        kind: "path".into(),
        synthetic: false,
        path: path.to_path_buf(),
        size_bytes,
        sha256,
        preset: None,
        seed: None,
        repo: None,
        revision: None,
        commit: None,
        derived_from: None,
    })
}

/// An `hf` model entry.
struct HfSpec<'a> {
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
    derive: bool,
}

/// The files (a single file or a shard set) for `quant`: from the template, or found in the
/// repo listing (the cached snapshot's files when offline). `Ok(None)`: the repo has none.
fn hf_files(
    hub: &hub::Hub,
    spec: &HfSpec<'_>,
    quant: Quant,
    listing: &mut Option<Vec<String>>,
) -> Result<Option<Vec<String>>> {
    if let Some(t) = spec.file {
        let name = fill_template(t, quant);
        crate::safe_path::check_relative(&name, "`file`")
            .map_err(|e| anyhow::anyhow!("{}@{}: {e}", spec.repo, spec.revision))?;
        return Ok(Some(hub::shard_set(&name)));
    }
    if listing.is_none() {
        *listing = Some(if hub.cfg.offline {
            let commit = hub.cached_commit(spec.repo, spec.revision).ok_or_else(|| {
                anyhow::anyhow!(
                    "offline: {}@{} is not in the hub cache ({}); run `quantbench fetch` \
                     with network access first",
                    spec.repo,
                    spec.revision,
                    hub.cfg.cache_dir.display()
                )
            })?;
            hub.cached_files(spec.repo, &commit)
        } else {
            hub.list_files(spec.repo, spec.revision)?.1
        });
    }
    hub::find_quant(listing.as_deref().unwrap_or_default(), quant)
        .map_err(|e| anyhow::anyhow!("{}@{}: {e}", spec.repo, spec.revision))
}

/// A file that offline mode looked for in the hub cache and did not find. It travels typed inside
/// the `anyhow` error, so that a templated quant the cache lacks can be derived as a 404 would be.
#[derive(Debug)]
struct NotCached(String);

impl std::fmt::Display for NotCached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotCached {}

/// The file is not there: the hub answered 404, or (offline) the cache lacks it.
fn is_absent(e: &anyhow::Error) -> bool {
    hub::http_status(e) == Some(404) || e.chain().any(|c| c.downcast_ref::<NotCached>().is_some())
}

/// Downloads (or, offline, finds in the cache) every file of a set.
fn hf_fetch(
    hub: &hub::Hub,
    spec: &HfSpec<'_>,
    files: &[String],
    progress: &dyn Progress,
) -> Result<Vec<hub::CachedFile>> {
    files
        .iter()
        .map(|f| {
            if hub.cfg.offline {
                hub.cached(spec.repo, spec.revision, f).ok_or_else(|| {
                    anyhow::Error::new(NotCached(format!(
                        "offline: {}@{}: {f} is not in the hub cache ({}); run `quantbench \
                         fetch` with network access first",
                        spec.repo,
                        spec.revision,
                        hub.cfg.cache_dir.display()
                    )))
                })
            } else {
                hub.download(spec.repo, spec.revision, f, progress)
            }
        })
        .collect()
}

/// Size and sha256 of a downloaded file or shard set. LFS files are named by their sha256
/// (already verified); a shard set's identity is the sha256 of its shards' sha256s, one per
/// line, in shard order.
fn hf_identity(
    files: &[hub::CachedFile],
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(u64, String)> {
    let mut size = 0;
    let mut hashes = Vec::new();
    for f in files {
        let (n, sha) = if f.etag.len() == 64 && f.etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            (std::fs::metadata(&f.path)?.len(), f.etag.to_lowercase())
        } else {
            file_identity(&f.path, opts, progress)?
        };
        size += n;
        hashes.push(sha);
    }
    let sha = if hashes.len() == 1 {
        hashes.pop().unwrap_or_default()
    } else {
        hex::encode(Sha256::digest(hashes.join("\n").as_bytes()))
    };
    Ok((size, sha))
}

fn acquire_hf(
    spec: &HfSpec<'_>,
    quant: Quant,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Origin> {
    let hub = hub::Hub::new(opts.hub.clone());
    let mut listing = None;
    let found = hf_files(&hub, spec, quant, &mut listing)?;
    let origin =
        |kind: &str, files: &[hub::CachedFile], path: PathBuf, derived_from| -> Result<Origin> {
            let (size_bytes, sha256) = if kind == "hf" {
                hf_identity(files, opts, progress)?
            } else {
                file_identity(&path, opts, progress)?
            };
            Ok(Origin {
                kind: kind.into(),
                synthetic: false,
                path,
                size_bytes,
                sha256,
                preset: None,
                seed: None,
                repo: Some(spec.repo.into()),
                revision: Some(spec.revision.into()),
                commit: files.first().map(|f| f.commit.clone()),
                derived_from,
            })
        };
    if let Some(set) = found {
        let fetched = hf_fetch(&hub, spec, &set, progress);
        match fetched {
            Ok(files) => return origin("hf", &files, files[0].path.clone(), None),
            // a templated name the repo (or, offline, the cache) lacks: derive it when allowed
            Err(e) if spec.derive && spec.file.is_some() && is_absent(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if !spec.derive && hub.cfg.offline {
        bail!(
            "offline: the cached snapshot of {}@{} has no file for {quant}{}; run `quantbench \
             fetch` with network access first",
            spec.repo,
            spec.revision,
            listing
                .map(|l| format!(" (cached: {})", l.join(", ")))
                .unwrap_or_default()
        );
    }
    if !spec.derive {
        let files = listing.map(|l| {
            l.iter()
                .filter(|f| f.ends_with(".gguf"))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        });
        bail!(
            "{}@{} has no GGUF file for {quant}{}; set `derive = true` to make it from the \
             F16/BF16/F32 file, or name the file with `file`",
            spec.repo,
            spec.revision,
            files
                .map(|f| format!(" (GGUF files: {f})"))
                .unwrap_or_default()
        );
    }
    // Derive: quantize the repo's float file locally.
    let mut source = None;
    for q in Quant::derive_sources() {
        if let Some(set) = hf_files(&hub, spec, q, &mut listing)? {
            match hf_fetch(&hub, spec, &set, progress) {
                Ok(files) => {
                    source = Some((q, files));
                    break;
                }
                Err(e) if spec.file.is_some() && is_absent(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    let Some((from, files)) = source else {
        bail!(
            "{}@{} has neither a {quant} file nor an F16/BF16/F32 file to derive it from",
            spec.repo,
            spec.revision
        );
    };
    let out = derived_path(opts, spec.repo, &files[0].commit, &files[0].path, quant)?;
    if !out.exists() {
        let parent = out.parent().expect("has parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        clean_partials(parent);
        derive(&files[0].path, &out, quant, opts, progress)?;
    }
    origin("derived", &files, out, Some(from))
}

/// Where a quant derived from a hub file is cached: `derived/OWNER--NAME/COMMIT/STEM-QUANT.gguf`.
fn derived_path(
    opts: &Options,
    repo: &str,
    commit: &str,
    source: &Path,
    quant: Quant,
) -> Result<PathBuf> {
    let stem = source
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_end_matches(".gguf")
        .to_string();
    crate::safe_path::check_commit(commit, "commit")?;
    Ok(crate::safe_path::join_under(
        &opts.cache_dir.join("derived"),
        &format!("{}/{commit}/{stem}-{quant}.gguf", repo.replace('/', "--")),
        "derived file path",
    )?)
}

/// `list`'s view of an `hf` cell: from the cache only (no network).
fn describe_hf(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    derive: bool,
    quant: Quant,
    opts: &Options,
) -> Planned {
    let hub = hub::Hub::new(hub::HubConfig {
        offline: true,
        ..opts.hub.clone()
    });
    let spec = HfSpec {
        repo,
        revision,
        file,
        derive,
    };
    let mut listing = None;
    let found = hf_files(&hub, &spec, quant, &mut listing).ok().flatten();
    let cached = found
        .as_ref()
        .and_then(|set| hf_fetch(&hub, &spec, set, &Silent).ok());
    let derived = if cached.is_none() && derive {
        Quant::derive_sources().into_iter().find_map(|q| {
            let set = hf_files(&hub, &spec, q, &mut listing).ok().flatten()?;
            let files = hf_fetch(&hub, &spec, &set, &Silent).ok()?;
            let out = derived_path(opts, repo, &files[0].commit, &files[0].path, quant).ok()?;
            out.exists().then_some(out)
        })
    } else {
        None
    };
    let (path, cached_now) = match (&cached, &derived) {
        (Some(files), _) => (Some(files[0].path.clone()), true),
        (None, Some(p)) => (Some(p.clone()), true),
        _ => (None, false),
    };
    let what = match (file, &found) {
        (Some(t), _) => fill_template(t, quant),
        (None, Some(set)) => set[0].clone(),
        (None, None) => "found in the listing at fetch".into(),
    };
    let local = path.as_deref().map(inspect);
    let (size, shape, problem) = match local {
        Some(l) => (l.size, l.shape, l.problem),
        None => (None, None, None),
    };
    Planned {
        path,
        source: format!(
            "hf {repo}@{revision}: {what}{}",
            if derived.is_some() { " (derived)" } else { "" }
        ),
        cached: cached_now && problem.is_none(),
        size_bytes: size,
        size_is_estimate: false,
        shape,
        problem,
    }
}

#[derive(Serialize, Deserialize)]
struct HashRecord {
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

fn hash_record_path(path: &Path, opts: &Options) -> PathBuf {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = hex::encode(Sha256::digest(abs.as_os_str().as_encoded_bytes()));
    opts.cache_dir
        .join("hashes")
        .join(format!("{}.json", &key[..32]))
}

fn stat(path: &Path) -> Result<(u64, u128)> {
    let md = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mtime = md
        .modified()
        .with_context(|| format!("reading the time of {}", path.display()))?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok((md.len(), mtime))
}

fn remember_hash(path: &Path, sha256: &str, opts: &Options) -> Result<()> {
    let (size, mtime_ns) = stat(path)?;
    let rec = HashRecord {
        path: path.to_path_buf(),
        size,
        mtime_ns,
        sha256: sha256.into(),
    };
    let p = hash_record_path(path, opts);
    let dir = p.parent().expect("has parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(&p, serde_json::to_string(&rec)?.as_bytes())
}

/// Size and sha256 of a file; the hash is cached (keyed by path, size and mtime).
pub fn file_identity(
    path: &Path,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(u64, String)> {
    let (size, mtime_ns) = stat(path)?;
    let rec_path = hash_record_path(path, opts);
    if let Ok(text) = std::fs::read_to_string(&rec_path) {
        if let Ok(rec) = serde_json::from_str::<HashRecord>(&text) {
            if rec.size == size && rec.mtime_ns == mtime_ns {
                return Ok((size, rec.sha256));
            }
        }
    }
    progress.begin(
        &format!(
            "sha256 {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        Some(size),
    );
    let sha = sha256_file(path, progress);
    progress.end();
    let sha = sha?;
    remember_hash(path, &sha, opts)?;
    Ok((size, sha))
}

/// sha256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 22, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 22];
    loop {
        let n = r
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if progress.cancelled() {
            return Err(interrupted().into());
        }
        h.update(&buf[..n]);
        progress.advance(n as u64);
    }
    Ok(hex::encode(h.finalize()))
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
    use super::*;

    fn opts(dir: &Path) -> Options {
        Options {
            cache_dir: dir.to_path_buf(),
            exe: PathBuf::from("/nonexistent"),
            hub: hub::HubConfig::from_env(true),
        }
    }

    #[test]
    fn synthetic_f16_is_written_once_and_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let p = crate::presets::preset("tiny").unwrap();
        let a = acquire_synthetic(p, 3, Quant::F16, &o, &Silent).unwrap();
        assert!(a.path.exists() && a.synthetic && a.kind == "synthetic");
        assert_eq!(a.sha256, sha256_file(&a.path, &Silent).unwrap());
        let mtime = std::fs::metadata(&a.path).unwrap().modified().unwrap();
        let b = acquire_synthetic(p, 3, Quant::F16, &o, &Silent).unwrap();
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
        let missing = acquire_path(&tmp.path().join("nope.gguf"), &o, &Silent).unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
        let junk = tmp.path().join("junk.gguf");
        std::fs::write(&junk, b"hello world").unwrap();
        let e = acquire_path(&junk, &o, &Silent).unwrap_err();
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
