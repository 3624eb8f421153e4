//! `ideaflow`: the one binary.

use clap::Parser;
use ideaflow::{cli, commands, logging};

// Tensors are allocated and freed per operation; glibc returns large blocks to
// the OS and page-faults them back in on every forward pass. mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    logging::init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Replay(args) => commands::replay::run(args),
        cli::Command::Embed(args) => commands::embed::run(args),
        cli::Command::Normalize(args) => commands::normalize::run(args),
        cli::Command::Gen(args) => commands::gen::run(args),
        cli::Command::Classify(args) => commands::classify::classify(args),
        cli::Command::Explain(args) => commands::classify::explain(args),
        cli::Command::Validate(args) => commands::validate::run(args),
        cli::Command::Migrate(args) => commands::migrate::run(args),
        cli::Command::Verify(args) => commands::verify::run(args),
        cli::Command::Produce(args) => commands::produce::run(args),
        cli::Command::Top(args) => commands::top::run(args),
        cli::Command::Checkpoint(cli::CheckpointCommand::Inspect(args)) => {
            commands::checkpoint::inspect(args)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: many errors (the redis crate's, our
/// own that name their cause) already print their source, which `{:#}` would
/// then print again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !out.contains(&cause) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&cause);
        }
    }
    out
}
