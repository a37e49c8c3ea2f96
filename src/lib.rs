//! quantbench: a benchmark harness for GGUF models on llama.cpp.
//!
//! config → plan → acquire → coordinator (worker processes) → stats → reports. `main.rs` only
//! parses the command line and dispatches to `commands`.

pub mod acquire;
pub mod capacity;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod coordinator;
pub mod engine;
pub mod envinfo;
pub mod fsutil;
pub mod gpu;
pub mod machine_lock;
pub mod output;
pub mod plan;
pub mod protocol;
pub mod quant;
pub mod report;
pub mod safe_path;
pub mod signals;
pub mod stats;
pub mod worker;
