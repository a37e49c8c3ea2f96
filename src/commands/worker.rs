//! `quantbench worker` (hidden): the worker process' entry point.

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::cli::WorkerArgs;
use crate::quant::Quant;

pub fn run(args: &WorkerArgs) -> Result<u8> {
    match &args.quantize {
        Some(v) => {
            let quant = Quant::parse(&v[2]).ok_or_else(|| anyhow!("unknown quant {:?}", v[2]))?;
            crate::worker::quantize(Path::new(&v[0]), Path::new(&v[1]), quant)?;
        }
        None if args.self_test => crate::worker::self_test()?,
        None if args.devices => crate::worker::devices()?,
        None => crate::worker::serve()?,
    }
    Ok(super::exit::OK)
}
