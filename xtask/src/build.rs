//! Compiling the boot-sector crate for the 16-bit target.
//!
//! `--target`, `-Zbuild-std` and `-Zjson-target-spec` stay on this one cargo invocation: set
//! globally they would hit the host-side xtask too.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project_root;

/// The custom target: 16-bit real-mode x86 (LLVM's i386-unknown-none-code16).
const TARGET_SPEC: &str = "i386-code16-boot-sector.json";

/// The linked ELF files of the images, as cargo leaves them.
pub struct Elfs {
    pub boot_sector: PathBuf,
}

/// The cargo that runs this xtask (`$CARGO`), so the pinned toolchain builds the boot sector too.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the boot sector in the size-tuned release profile and returns where its ELF is.
pub fn build_elfs() -> Result<Elfs> {
    let root = project_root();
    let target_dir = root.join("target");
    let status = cargo()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--package",
            "vm512",
            "--bins",
            "--target",
            TARGET_SPEC,
        ])
        .args([
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
            "-Zjson-target-spec",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host would break the 16-bit build (and rebuild core each time).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("could not start cargo to build the boot sector")?;
    if !status.success() {
        bail!("building the boot sector failed ({status}); cargo's messages are above");
    }
    let out = target_dir.join("i386-code16-boot-sector").join("release");
    Ok(Elfs {
        boot_sector: out.join("boot-sector"),
    })
}
