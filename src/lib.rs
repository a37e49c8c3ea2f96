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
pub mod gpu;
pub mod output;
pub mod plan;
pub mod protocol;
pub mod quant;
pub mod report;
pub mod stats;
pub mod worker;
