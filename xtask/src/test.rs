//! `cargo xtask test`: builds the images the boot tests need, then runs every test of the xtask
//! (unit tests and boot tests) with `cargo test`.

use anyhow::{Context, Result, bail};

use crate::build::{self, cargo};
use crate::cli::ImageOptions;
use crate::formats::Format;
use crate::{image, project_root, qemu};

/// Environment variable naming the directory of images built for the tests.
pub const IMAGES_ENV: &str = "VM512_TEST_IMAGES";
/// Environment variable naming the directory with the linked ELF files.
pub const ELF_ENV: &str = "VM512_TEST_ELF_DIR";
/// Directory (under target/) of the second, from-scratch build of the test images.
pub const REBUILD_DIR: &str = "test-images-rebuild";
/// Environment variable naming the LLVM tools directory (llvm-objcopy, llvm-objdump).
pub const LLVM_ENV: &str = "VM512_LLVM_BIN";

pub fn run() -> Result<()> {
    qemu::binary()?;
    qemu::img_binary()?;
    let target = project_root().join("target");
    let dir = target.join("test-images");
    let all = ImageOptions { formats: Format::ALL.to_vec(), ..ImageOptions::default() };
    println!("building the test images in {}", dir.display());
    image::build_images(&all, &dir)?;
    // A second build from scratch, for the bit-for-bit reproducibility test.
    println!("rebuilding the boot-sector crate from scratch into {}", REBUILD_DIR);
    build::clean_boot_crate()?;
    image::build_images(&all, &target.join(REBUILD_DIR))?;
    let elf_dir = build::elf_dir();

    println!("running the tests (boot tests start QEMU)");
    let status = cargo()
        .current_dir(project_root())
        .args(["test", "--package", "xtask", "--"])
        // Boot tests spend most of their time waiting on QEMU: run more than there are cores.
        .arg(format!("--test-threads={}", test_threads()))
        .env(IMAGES_ENV, &dir)
        .env(ELF_ENV, &elf_dir)
        .env(LLVM_ENV, build::llvm_bin_dir()?)
        .status()
        .context("could not start cargo test")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}

fn test_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}
