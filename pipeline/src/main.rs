//! `ideaflow`: the one binary.

mod cli;
mod commands;
mod config;
mod dataflow;
mod logging;
mod model_files;
mod progress;

use clap::Parser;

fn main() -> std::process::ExitCode {
    logging::init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Embed(args) => commands::embed::run(args),
        cli::Command::Normalize(args) => commands::normalize::run(args),
        cli::Command::Gen(args) => commands::gen::run(args),
        cli::Command::Validate(args) => commands::validate::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
