//! `cargo xtask`: builds, checks, packages, boots, tests and measures the 512-byte VM.
//!
//! `main` only parses the command line and dispatches to one module per task.

mod bench;
mod build;
mod cli;
mod disasm;
mod elf;
mod formats;
#[cfg(test)]
mod gdb;
mod image;
mod iso;
mod qemu;
mod run;
mod test;

#[cfg(test)]
mod boot_tests;
#[cfg(test)]
mod robustness_tests;

use std::path::{Path, PathBuf};
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
    match cli::parse(std::env::args_os().skip(1))? {
        Command::Help => print!("{}", cli::USAGE),
        Command::Image(options) => {
            image::build_images(&options, &images_dir())?;
        }
        Command::Run(options, bus) => run::run(&options, bus)?,
        Command::Test => test::run()?,
        Command::Disasm { rom } => disasm::run(rom)?,
        Command::Bench(options) => bench::run(&options)?,
    }
    Ok(())
}

/// The workspace root (the boot-sector crate), from the xtask's own manifest directory.
pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Where the artifacts go: `target/images/512-byte-vm.<ext>`.
pub fn images_dir() -> PathBuf {
    project_root().join("target").join("images")
}
