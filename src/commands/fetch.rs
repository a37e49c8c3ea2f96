//! `quantbench fetch`: acquire every file the matrix needs (write synthetic models, derive
//! quants), measure nothing.

use anyhow::Result;

use super::{exit, load_plan, Ctx};
use crate::acquire;
use crate::cli::{FetchArgs, OverrideArgs};
use crate::report::md::bytes;

pub fn run(ctx: &Ctx, args: &FetchArgs) -> Result<u8> {
    let (matrix, cells) = load_plan(&args.matrix, &OverrideArgs::default())?;
    let opts = ctx.acquire_options(args.matrix.offline, !args.no_lock)?;
    let stop = || crate::signals::stopping(&ctx.interrupted);
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
