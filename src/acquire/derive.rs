//! Deriving a quant the source lacks: `llama_model_quantize` in a `quantbench worker --quantize`
//! process (llama.cpp may abort on a bad file), into a temporary name renamed when complete.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{Options, Progress};
use crate::quant::Quant;

/// Quantizes `input` to `quant` into `output`, in a `quantbench worker --quantize` process.
pub(super) fn derive(
    input: &Path,
    output: &Path,
    quant: Quant,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<()> {
    let tmp = crate::fsutil::temp_name(output);
    // quantizing loads every core: not while another run measures
    let _lock = match &opts.lock_dir {
        Some(dir) => {
            let lock = crate::machine_lock::acquire(
                dir,
                &crate::machine_lock::Holder::me(),
                &mut |h| {
                    progress.warn(&format!(
                        "another run is measuring on this machine ({}); quantizing waits for it \
                         (lock: {}; --no-lock quantizes anyway)",
                        h.map_or_else(|| "holder unknown".to_string(), ToString::to_string),
                        crate::machine_lock::path(dir).display()
                    ))
                },
                &|| progress.cancelled(),
            )?;
            if lock.is_none() {
                return Err(super::interrupted().into());
            }
            lock
        }
        None => None,
    };
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

/// Removes what killed writers and quantizers left in `dir` (their process is gone).
pub(super) fn clean_partials(dir: &Path) {
    crate::fsutil::clean_stale_partials(dir, std::time::Duration::from_secs(3600));
}
