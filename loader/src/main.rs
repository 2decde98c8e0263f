//! `splitvisor`: see the `loader` library for what each command does.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use loader::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level.filter())
        .format(|out, record| {
            writeln!(out, "splitvisor: {}: {}", record.level().as_str().to_lowercase(), record.args())
        })
        .init();
    let result = match &cli.command {
        Command::Run(args) => loader::run(args, cli.log_level).map(|outcome| {
            if let Some(line) = outcome.describe() {
                eprintln!("splitvisor: {line}");
            }
            outcome.exit_code()
        }),
        Command::Dtb(args) => loader::dtb(args).map(|()| 0),
        Command::Guest(command) => loader::guest_command(command).map(|()| 0),
        Command::Trace(command) => loader::trace_command(command).map(|()| 0),
        Command::Replay(args) => {
            if let Some(flag) = args.isolation_only_flag() {
                Cli::command().error(ErrorKind::ArgumentConflict, format!("{flag} needs --isolate process")).exit();
            }
            loader::replay(args, cli.log_level)
        }
        Command::Serve { server, generation, inject } => loader::serve(*server, *generation, inject).map(|()| 0),
        Command::Bench(args) => loader::bench(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("splitvisor: error: {e}");
            ExitCode::FAILURE
        }
    }
}
