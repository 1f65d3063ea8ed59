//! `cargo xtask test`: builds the images the boot tests need, then runs every test of the xtask
//! (unit tests, and the boot tests that plain `cargo test` lists as ignored) with `cargo test`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::domain::artifacts::{self, ImageOptions};
use crate::infra::cargo;
use crate::infra::files::{self, SCRATCH_ENV, Scratch};
use crate::infra::process;
use crate::infra::qemu::Accel;
use crate::infra::tools;

/// Environment variable naming the directory of images built for the tests.
pub const IMAGES_ENV: &str = "VM512_TEST_IMAGES";
/// Environment variable naming the directory with the linked ELF files.
pub const ELF_ENV: &str = "VM512_TEST_ELF_DIR";
/// Directory (under target/) of the second, from-scratch build of the test images.
pub const REBUILD_DIR: &str = "test-images-rebuild";
/// Environment variable naming the LLVM tools directory (llvm-objcopy, llvm-objdump).
pub const LLVM_ENV: &str = "VM512_LLVM_BIN";

/// Builds the test images, then runs every test, or those whose names contain `filter`.
pub fn run(filter: Option<&str>) -> Result<()> {
    let (accel, why) = Accel::choose()?;
    tools::require(&tools::FOR_TESTS)?;
    let target = files::target_dir();
    let dir = target.join("test-images");
    let all = ImageOptions::everything();
    println!("building the test images in {}", dir.display());
    artifacts::build(&all, &dir)?;
    // A second build from scratch, for the bit-for-bit reproducibility test.
    println!("rebuilding the boot-sector crate from scratch into {REBUILD_DIR}");
    cargo::clean_boot_crate()?;
    artifacts::build(&all, &target.join(REBUILD_DIR))?;

    // Every scratch file of the tests goes here, and goes away with it, whatever happens.
    let scratch = Scratch::new("test")?;
    println!("running the tests (boot tests start QEMU with {}: {why})", accel.name());
    let status = process::status(
        Command::new(cargo::cargo_binary())
            .current_dir(files::project_root())
            .args(["test", "--package", "xtask", "--", "--include-ignored"])
            .args(filter)
            // Boot tests spend most of their time waiting on QEMU: run more than there are cores.
            .arg(format!("--test-threads={}", test_threads()))
            .env(IMAGES_ENV, &dir)
            .env(ELF_ENV, cargo::elf_dir())
            .env(LLVM_ENV, cargo::llvm_bin_dir()?)
            .env(SCRATCH_ENV, scratch.path()),
    )
    .context("could not start cargo test")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}

fn test_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}
