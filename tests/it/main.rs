//! The integration tests: one test binary (linked once) whose modules are the former test files.
//! Every test drives the real `quantbench` binary or the library on the CPU, with real llama.cpp
//! on the `tiny` synthetic models; `common` holds the shared helpers.
//!
//! Run one module with `scripts/test --test it MODULE::` (e.g. `scripts/test --test it hub::`).

mod common;

mod cli;
mod compare;
mod docs;
mod hardening;
mod hub;
mod list;
mod load;
mod oracle;
mod quality;
mod recipes;
mod report;
mod rpc;
mod scripts;
mod served;
mod serving;
mod shard;
mod tune;
mod vulkan;
