//! Parse the command line, dispatch, turn the outcome into an exit code. Nothing else.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
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
                quantbench::output::worker_error(&e);
                ExitCode::from(exit::FATAL)
            }
        };
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    // Before any other thread exists: for the commands that stop cleanly (run, fetch, and merge
    // and report, which say what they left unwritten), SIGINT,
    // SIGTERM and SIGHUP are taken by one thread (the first stops after writing the reports, a
    // second leaves at once). The other commands keep the default: a signal ends them.
    let signals = match cli.command {
        Command::Run(_)
        | Command::Fetch(_)
        | Command::RpcServer(_)
        | Command::Tune(_)
        | Command::Merge(_)
        | Command::Report(_) => {
            quantbench::signals::install(interrupted.clone(), quantbench::output::note)
        }
        _ => Ok(()),
    };
    let ctx = Ctx {
        printer: Printer::new(cli.verbose).with_stop(interrupted.clone()),
        cache_dir: cli
            .cache_dir
            .clone()
            .unwrap_or_else(quantbench::acquire::default_cache_dir),
        cache_dir_given: cli.cache_dir.is_some(),
        backend_dirs: cli.backend_dir.clone(),
        interrupted,
    };
    if let Err(e) = signals {
        ctx.printer
            .warn(&format!("signals will not stop the run cleanly: {e}"));
    }
    let result = match &cli.command {
        Command::Run(a) => commands::run::run(&ctx, a),
        Command::Fetch(a) => commands::fetch::run(&ctx, a),
        Command::List(a) => commands::list::run(&ctx, a),
        Command::Compare(a) => commands::compare::run(&ctx, a),
        Command::Report(a) => commands::report::run(&ctx, a),
        Command::Merge(a) => commands::merge::run(&ctx, a),
        Command::Tune(a) => commands::tune::run(&ctx, a),
        Command::RpcServer(a) => commands::rpc_server::run(&ctx, a),
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
