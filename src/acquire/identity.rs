//! A file's identity in reports: its size and SHA-256, the hash remembered beside the cache (by
//! path, size and modification time) so a large file is hashed once.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{interrupted, Options, Progress};

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

/// Remembers a file's hash beside the cache. A memo only: when it cannot be written (a
/// read-only cache, a full disk) the file is hashed again next time, and `progress` warns.
pub(super) fn remember_hash(path: &Path, sha256: &str, opts: &Options, progress: &dyn Progress) {
    let written = (|| -> Result<()> {
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
    })();
    if let Err(e) = written {
        progress.warn(&format!(
            "the hash of {} was not remembered ({e:#}); it will be computed again next time",
            path.display()
        ));
    }
}

/// Whether `path` changed since its hash was recorded (another size or modification time);
/// `false` without a record. For files only quantbench writes (synthetic models and their
/// quants), a change means damage.
pub(super) fn changed_since_recorded(path: &Path, opts: &Options) -> bool {
    let Ok((size, mtime_ns)) = stat(path) else {
        return false;
    };
    std::fs::read_to_string(hash_record_path(path, opts))
        .ok()
        .and_then(|t| serde_json::from_str::<HashRecord>(&t).ok())
        .is_some_and(|rec| rec.size != size || rec.mtime_ns != mtime_ns)
}

/// Size and sha256 of a file; the hash is cached (keyed by path, size and mtime).
pub(super) fn file_identity(
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
    remember_hash(path, &sha, opts, progress);
    Ok((size, sha))
}

/// sha256 of a file's bytes, as lowercase hex.
pub(super) fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String> {
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
