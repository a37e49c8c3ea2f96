//! quantbench: a benchmark harness for GGUF models on llama.cpp.
//!
//! A run flows config → plan → acquire → coordinator (one worker process per cell) → results →
//! reports and comparison. `main.rs` only parses the command line and dispatches to `commands`.
//!
//! # Layers
//!
//! Modules are declared below in layer order, bottom first. A module may use the modules
//! declared before it and never one declared after it, so the import graph has no cycle. The
//! tests in `structure.rs` read every source file and fail on an upward import, on a module
//! missing from this list, and on a function longer than 100 lines:
//!
//! ```text
//!  commands          cli            one file per subcommand; main.rs calls these
//!  output                           the only module that prints (stderr)
//!  report                           writers: JSON, CSV, Markdown, charts, HTML
//!  compare                          read reports, statistics, verdicts, comparison text
//!  results           envinfo        the results.json schema; the machine description
//!  tune                             tune's targets, verdicts and answer (pure)
//!  coordinator                      one worker process per cell, deadlines, faults
//!  worker                           the worker process: a cell in, events out
//!  serving           engine         serving cells (llama-server, HTTP load); llama.cpp calls
//!  acquire                          local files, synthetic writer, hub, derived quants
//!  protocol                         coordinator ↔ worker messages
//!  plan              capacity       matrix → cells; will it fit in memory
//!  config                           models.toml → validated Matrix
//!  leaves: quant redact safe_path fsutil stats signals gpu presets metrics quality gguf
//!          machine_lock rpc_wire traffic serving_stats disturbance
//!          plain data and helpers: quant types, secrets kept out of messages (and terminal
//!          escaping), path guard, atomic files, statistics, signal handling, NVML,
//!          synthetic presets, gate metrics, quality statistics (llama-perplexity's
//!          KL-divergence definitions), GGUF format, machine lock,
//!          llama.cpp's RPC handshake and per-connection TCP counters, serving workloads
//!          (lengths, arrivals) and per-request statistics (vLLM's definitions), what else
//!          used the machine while a cell was timed
//! ```

// Leaves: plain data and helpers.
pub mod quant;
pub mod redact;
pub mod safe_path;
pub mod fsutil;
pub mod stats;
pub mod signals;
pub mod gpu;
pub mod presets;
pub mod metrics;
pub mod quality;
pub mod gguf;
pub mod machine_lock;
pub mod rpc_wire;
pub mod traffic;
pub mod serving_stats;
pub mod disturbance;
// The matrix and what it expands to.
pub mod config;
pub mod plan;
pub mod capacity;
pub mod protocol;
// Getting files and measuring them.
pub mod acquire;
pub mod engine;
pub mod serving;
pub mod worker;
pub mod coordinator;
pub mod tune;
// What a run produces.
pub mod results;
pub mod envinfo;
pub mod compare;
pub mod report;
pub mod output;
// The command line.
pub mod cli;
pub mod commands;

#[cfg(test)]
mod structure;
