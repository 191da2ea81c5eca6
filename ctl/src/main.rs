//! `lxvirt`: the command-line client of lxvirtd.

mod apply;
mod cli;
mod commands;
mod complete;
mod edit;
mod events;
mod images;
mod interfaces;
mod networks;
mod output;
mod terminal;
mod tuning;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_sigpipe();
    // A shell asking for completions gets them, and nothing else runs.
    complete::answer_if_asked();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("lxvirt: error: cannot start the async runtime: {error}");
            return ExitCode::from(commands::EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("lxvirt: error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Dies quietly on a closed pipe (`lxvirt list | head`) as command-line
/// tools do, instead of failing on the write.
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_DFL installs no Rust handler, so no handler can run concurrently.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
