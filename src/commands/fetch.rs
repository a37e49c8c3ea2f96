//! `quantbench fetch`: acquire every file the matrix needs (write synthetic models, derive
//! quants), measure nothing.

use std::sync::atomic::Ordering;

use anyhow::Result;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::cli::{MatrixArgs, OverrideArgs};
use crate::report::md::bytes;

pub fn run(ctx: &Ctx, args: &MatrixArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(args, &OverrideArgs::default())?;
    let opts = ctx.acquire_options(args.offline)?;
    let stop = || ctx.interrupted.load(Ordering::SeqCst);
    let origins = acquire::acquire(&matrix, &cells, &opts, &ctx.printer, &stop);
    let mut failed = 0;
    for ((m, q), r) in &origins {
        let name = &matrix.models[*m].name;
        match r {
            Ok(o) => ctx.printer.line(&format!(
                "{name:<16} {q:<7} {} ({}, {}, sha256 {})",
                o.path.display(),
                bytes(o.size_bytes),
                o.kind,
                &o.sha256[..12]
            )),
            Err(e) => {
                failed += 1;
                ctx.printer.line(&format!("{name:<16} {q:<7} FAILED: {e}"));
            }
        }
    }
    if stop() {
        ctx.printer
            .line("interrupted: run `quantbench fetch` again to continue");
        return Ok(crate::signals::exit_code());
    }
    Ok(if failed > 0 {
        exit::CELLS_FAILED
    } else {
        exit::OK
    })
}
