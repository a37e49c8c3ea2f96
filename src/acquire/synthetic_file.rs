//! The cached files of a synthetic model: where they live (`synthetic/PRESET-seedN-wV/`), writing
//! the F16 file once and deriving the other quants from it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::derive::{clean_partials, derive};
use super::identity::{changed_since_recorded, file_identity, remember_hash};
use super::local::inspect;
use super::{interrupted, synthetic, Options, Origin, Planned, Progress};
use crate::presets::Preset;
use crate::quant::Quant;

/// The cache folder of a preset and seed (the writer version is part of the name).
fn synthetic_dir(opts: &Options, preset: &Preset, seed: u64) -> PathBuf {
    opts.cache_dir.join("synthetic").join(format!(
        "{}-seed{seed}-w{}",
        preset.name,
        synthetic::WRITER_VERSION
    ))
}

/// The cached file of a preset, seed and quant.
pub(super) fn synthetic_file(opts: &Options, preset: &Preset, seed: u64, quant: Quant) -> PathBuf {
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

/// The nominal size of a synthetic model's file at `quant` (its parameters at the quant's
/// bits per weight), the same whether the file exists or not.
pub(super) fn nominal_bytes(preset: &Preset, quant: Quant) -> u64 {
    (preset.n_params() as f64 * bits_per_weight(quant) / 8.0) as u64
}

/// `list`'s view of a synthetic model's file: its size, or an estimate before it is written.
pub(super) fn describe(preset: &Preset, seed: u64, quant: Quant, opts: &Options) -> Planned {
    let path = synthetic_file(opts, preset, seed, quant);
    let mut local = inspect(&path);
    if local.problem.is_none() && changed_since_recorded(&path, opts) {
        local.problem = Some(CHANGED.into());
    }
    let size = local.size;
    Planned {
        cached: size.is_some() && local.problem.is_none(),
        problem: local.problem,
        size_is_estimate: size.is_none(),
        size_bytes: size.or_else(|| Some(nominal_bytes(preset, quant))),
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

/// The synthetic model's file for `quant`, written (F16) or derived (other quants) when missing.
pub(super) fn acquire(
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
    drop_if_changed(&f16, opts, progress);
    if !f16.exists() {
        write_synthetic(preset, seed, &f16, opts, progress)?;
    }
    let path = if quant == Quant::F16 {
        f16
    } else {
        let out = synthetic_file(opts, preset, seed, quant);
        drop_if_changed(&out, opts, progress);
        if !out.exists() {
            derive(&f16, &out, quant, opts, progress)?;
        }
        out
    };
    let identity = file_identity(&path, opts, progress)?;
    Ok(Origin {
        synthetic: true,
        preset: Some(preset.name.into()),
        seed: Some(seed),
        derived_from: (quant != Quant::F16).then_some(Quant::F16),
        ..Origin::of_file("synthetic", path, identity)
    })
}

/// Why a synthetic file is not used as it is.
const CHANGED: &str = "changed since quantbench wrote it (damaged?); the next run or fetch \
                       writes it again";

/// Removes a synthetic file that changed since quantbench wrote it (nothing else writes these
/// files: a change is damage), so that it is written again; says so.
fn drop_if_changed(path: &Path, opts: &Options, progress: &dyn Progress) {
    if changed_since_recorded(path, opts) {
        progress.warn(&format!(
            "{}: changed since quantbench wrote it (damaged?); writing it again",
            path.display()
        ));
        let _ = std::fs::remove_file(path);
    }
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
    let tmp = crate::fsutil::temp_name(path);
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
            remember_hash(path, &sha, opts, progress);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
