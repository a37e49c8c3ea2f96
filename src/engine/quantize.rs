//! Deriving a quantized GGUF from a float one with `llama_model_quantize`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use llama_cpp_sys_2 as sys;

use crate::quant::Quant;

/// Quantizes `input` to `quant`, writing `output`. A quantized input is dequantized first
/// (llama.cpp's `allow_requantize`): how a missing F16 is made from a Q4_1 file. The caller runs
/// this in a worker process: llama.cpp aborts on some malformed inputs.
pub fn quantize(input: &Path, output: &Path, quant: Quant, n_threads: u32) -> Result<()> {
    let cin = CString::new(input.as_os_str().as_bytes()).context("input path")?;
    let cout = CString::new(output.as_os_str().as_bytes()).context("output path")?;
    // SAFETY: default params from llama.cpp, then plain fields set; the paths outlive the call.
    let rc = unsafe {
        let mut p = sys::llama_model_quantize_default_params();
        p.nthread = n_threads as i32;
        p.ftype = quant.ftype() as sys::llama_ftype;
        p.allow_requantize = true;
        sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &p)
    };
    if rc != 0 {
        bail!(
            "llama_model_quantize {} → {quant} failed (code {rc})",
            input.display()
        );
    }
    Ok(())
}
