//! A model's vocabulary alone (llama.cpp's `vocab_only` load: no weights): token counts of
//! text and the model's context facts, for the prompts of serving cells.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use anyhow::{bail, Result};
use llama_cpp_sys_2 as sys;

/// A vocabulary-only model.
pub struct Vocab {
    ptr: NonNull<sys::llama_model>,
}

impl Vocab {
    /// Loads the vocabulary of a GGUF file (fast: no tensor is read).
    pub fn load(path: &Path) -> Result<Vocab> {
        let c = CString::new(path.as_os_str().to_string_lossy().as_bytes())?;
        // SAFETY: default parameters with vocab_only set; the model is freed on drop.
        let ptr = unsafe {
            let mut p = sys::llama_model_default_params();
            p.vocab_only = true;
            sys::llama_model_load_from_file(c.as_ptr(), p)
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Vocab { ptr }),
            None => bail!(
                "llama.cpp could not read the vocabulary of {}",
                path.display()
            ),
        }
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: getter on a live model.
        unsafe { sys::llama_model_get_vocab(self.ptr.as_ptr()) }
    }

    pub fn n_vocab(&self) -> u32 {
        // SAFETY: vocab of a live model.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()).max(1) as u32 }
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: getter on a live model.
        unsafe { sys::llama_model_n_ctx_train(self.ptr.as_ptr()).max(0) as u32 }
    }

    /// Whether positions are learned embeddings (GPT-2): none exist beyond `n_ctx_train`.
    pub fn learned_positions(&self) -> bool {
        // SAFETY: getter on a live model.
        unsafe { sys::llama_model_rope_type(self.ptr.as_ptr()) == sys::LLAMA_ROPE_TYPE_NONE }
    }

    /// `text` as the server tokenizes a prompt: with the model's special tokens (BOS).
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        let len = text.len().min(i32::MAX as usize) as i32;
        // SAFETY: llama_tokenize writes at most the buffer's length and returns minus the
        // count needed when the buffer is too small.
        unsafe {
            let v = self.vocab();
            let need = -sys::llama_tokenize(
                v,
                text.as_ptr().cast(),
                len,
                std::ptr::null_mut(),
                0,
                true,
                false,
            );
            if need <= 0 {
                return Vec::new();
            }
            let mut out = vec![0; need as usize];
            let got = sys::llama_tokenize(
                v,
                text.as_ptr().cast(),
                len,
                out.as_mut_ptr(),
                need,
                true,
                false,
            );
            out.truncate(got.max(0) as usize);
            out
        }
    }
}

impl Drop for Vocab {
    fn drop(&mut self) {
        // SAFETY: the model was loaded by llama_model_load_from_file and is freed once.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}
