//! Hub models (`hf = "owner/name"`): which files a quant needs (template or listing), fetching
//! them through [`hub`], deriving a quant the repository lacks, and `list`'s cache-only view.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::derive::{clean_partials, derive};
use sha2::{Digest, Sha256};

use super::identity::file_identity;
use super::local::inspect;
use super::{hub, Options, Origin, Planned, Progress, Silent};
use crate::config::fill_template;
use crate::quant::Quant;

/// An `hf` model entry.
pub(super) struct HfSpec<'a> {
    pub(super) repo: &'a str,
    pub(super) revision: &'a str,
    pub(super) file: Option<&'a str>,
    pub(super) derive: bool,
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

/// The hub file(s) for `quant`, fetched, or derived from the repository's float file.
pub(super) fn acquire(
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
            let identity = if kind == "hf" {
                hf_identity(files, opts, progress)?
            } else {
                file_identity(&path, opts, progress)?
            };
            Ok(Origin {
                repo: Some(spec.repo.into()),
                revision: Some(spec.revision.into()),
                commit: files.first().map(|f| f.commit.clone()),
                derived_from,
                ..Origin::of_file(kind, path, identity)
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
    if !spec.derive {
        return Err(no_file(spec, quant, listing, hub.cfg.offline));
    }
    // Derive: quantize the repo's float file locally.
    let Some((from, files)) = derive_source(&hub, spec, &mut listing, progress)? else {
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

/// Why a quant the repository lacks cannot be had without `derive`: offline, what the cached
/// snapshot holds; online, the repository's GGUF files.
fn no_file(
    spec: &HfSpec<'_>,
    quant: Quant,
    listing: Option<Vec<String>>,
    offline: bool,
) -> anyhow::Error {
    if offline {
        return anyhow::anyhow!(
            "offline: the cached snapshot of {}@{} has no file for {quant}{}; run `quantbench \
             fetch` with network access first",
            spec.repo,
            spec.revision,
            listing
                .map(|l| format!(" (cached: {})", l.join(", ")))
                .unwrap_or_default()
        );
    }
    let files = listing.map(|l| {
        l.iter()
            .filter(|f| f.ends_with(".gguf"))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    });
    anyhow::anyhow!(
        "{}@{} has no GGUF file for {quant}{}; set `derive = true` to make it from the \
         F16/BF16/F32 file, or name the file with `file`",
        spec.repo,
        spec.revision,
        files
            .map(|f| format!(" (GGUF files: {f})"))
            .unwrap_or_default()
    )
}

/// The repository's float file to derive from (F16, else BF16, else F32), fetched.
fn derive_source(
    hub: &hub::Hub,
    spec: &HfSpec<'_>,
    listing: &mut Option<Vec<String>>,
    progress: &dyn Progress,
) -> Result<Option<(Quant, Vec<hub::CachedFile>)>> {
    for q in Quant::derive_sources() {
        if let Some(set) = hf_files(hub, spec, q, listing)? {
            match hf_fetch(hub, spec, &set, progress) {
                Ok(files) => return Ok(Some((q, files))),
                Err(e) if spec.file.is_some() && is_absent(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
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
pub(super) fn describe(
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
