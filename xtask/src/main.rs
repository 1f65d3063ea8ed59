//! `cargo xtask`: builds, checks, packages, boots, tests and measures the 512-byte VM.
//!
//! Layers, each importing only the ones below it:
//!
//! - `cli`: the command line and its help;
//! - `tasks`: one module per command (`image`, `run`, `test`, `disasm`, `bench`, `dist`);
//! - `domain`: the images and their formats (flat images, ELF, artifact sets, ISO, instructions);
//! - `infra`: the outside world (tools and their installation, cargo, the one QEMU launcher,
//!   child processes and signals, files and locks; the GDB client for the tests).

mod cli;
mod domain;
mod infra;
mod tasks;

#[cfg(test)]
mod tests;

use std::process::ExitCode;

use cli::Command;

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let flags = cli::parse(std::env::args_os().skip(1))?;
    // From here on a signal kills every child and removes every scratch file before exiting.
    infra::process::handle_signals()?;
    if flags.no_install {
        infra::tools::forbid_installing();
    }
    match flags.command {
        Command::Help(None) => print!("{}", cli::usage()),
        Command::Help(Some(command)) => {
            print!("{}", cli::command_help(&command, tasks::image::message_room()))
        }
        Command::Image(options) => tasks::image::run(&options)?,
        Command::Run(options) => tasks::run::run(&options)?,
        Command::Test { filter } => tasks::test::run(filter.as_deref())?,
        Command::Disasm { rom } => tasks::disasm::run(rom)?,
        Command::Dist => tasks::dist::run()?,
        Command::Bench(options) => tasks::bench::run(&options)?,
    }
    Ok(())
}
