//! Parse the command line, dispatch, turn the outcome into an exit code. Nothing else.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Parser;

use quantbench::cli::{Cli, Command};
use quantbench::commands::{self, exit, Ctx};
use quantbench::output::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Worker(args) = &cli.command {
        // Workers report errors on stderr, which the coordinator turns into a failed cell.
        return match commands::worker::run(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("quantbench worker: error: {e:#}");
                ExitCode::from(exit::FATAL)
            }
        };
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    {
        let (flag, presses) = (interrupted.clone(), presses.clone());
        // First Ctrl-C: stop after writing the reports; second: leave at once.
        let _ = ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            if presses.fetch_add(1, Ordering::SeqCst) >= 1 {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        });
    }
    let ctx = Ctx {
        printer: Printer::new(cli.verbose).with_stop(interrupted.clone()),
        cache_dir: cli
            .cache_dir
            .clone()
            .unwrap_or_else(quantbench::acquire::default_cache_dir),
        backend_dirs: cli.backend_dir.clone(),
        interrupted,
    };
    let result = match &cli.command {
        Command::Run(a) => commands::run::run(&ctx, a),
        Command::Fetch(a) => commands::fetch::run(&ctx, a),
        Command::List(a) => commands::list::run(&ctx, a),
        Command::Compare(a) => commands::compare::run(&ctx, a),
        Command::Report(a) => commands::report::run(&ctx, a),
        Command::Worker(_) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ctx.printer.error(&e);
            ExitCode::from(exit::FATAL)
        }
    }
}
