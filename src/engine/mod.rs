//! The only place that touches llama.cpp: backend modules, model loading, the timed loops,
//! memory accounting and quantization. Used inside worker processes only, so an abort in
//! llama.cpp costs one worker, never the run. Never prints (llama.cpp's own log goes to the
//! worker's stderr, which the coordinator captures).

mod backend;
mod bench;
mod memory;
mod quality;
mod quantize;
pub mod rpc;
mod vocab;

pub use backend::{
    backend_search_dirs, clear_recent_log, cpu_variant, init, recent_log, Engine, BACKEND_DIR_ENV,
    CPU_EXCLUDE_ENV,
};
pub use bench::{argmax, LoadedModel, Placement, Probe};
pub use memory::{host_rss, HostRss};
pub use quality::{score as score_quality, Corpus, Scoring};
pub use quantize::quantize;
pub use vocab::Vocab;

use std::ffi::CStr;
use std::os::raw::c_char;

/// Converts a C string owned by llama.cpp into an owned `String` (empty for null).
fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: llama.cpp returns NUL-terminated strings that live at least as long as the call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
