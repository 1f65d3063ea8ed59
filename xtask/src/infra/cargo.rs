//! Compiling the boot-sector crate: the 16-bit images for the custom target, the UEFI program
//! for `x86_64-unknown-uefi`.
//!
//! `--target`, `-Zbuild-std` and `-Zjson-target-spec` stay on these cargo invocations: set
//! globally they would hit the host-side xtask too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::infra::files::{project_root, target_dir};
use crate::infra::process;

/// The custom target: 16-bit real-mode x86 (LLVM's i386-unknown-none-code16).
const TARGET_SPEC: &str = "i386-code16-boot-sector.json";

/// The UEFI program's target (built from source with `-Zbuild-std` like the others: no
/// `rustup target add` needed, and `core` gets the size-tuned profile too).
const UEFI_TARGET: &str = "x86_64-unknown-uefi";

/// The PVH kernel's target: bare-metal x86-64, built from source like the others.
const PVH_TARGET: &str = "x86_64-unknown-none";
/// Its code linked where it runs (1 MiB, `pvh.ld`), not position-independent: the stub and the
/// core run before anything could relocate them. Set for this target's crates only (`core`
/// too), in this cargo invocation's environment.
const PVH_RUSTFLAGS: (&str, &str) =
    ("CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS", "-C relocation-model=static");
/// The UEFI target's flags variable (set only for the net program).
const UEFI_RUSTFLAGS: &str = "CARGO_TARGET_X86_64_UNKNOWN_UEFI_RUSTFLAGS";
/// The net family's programs (and their `core`) with panics as a bare trap (`ud2`, which the
/// core's exception handler meets with a halt, as the panic handler would): without the code
/// that passes each panic's place and message to a handler that never reads them, the net
/// program with its guest agent fits its 96 KiB (9 KB smaller). The classic programs keep
/// their flags, and their bytes.
const NET_PANIC: &str = "-Zunstable-options -Cpanic=immediate-abort";
/// Where the net programs build: other flags, so another `core` and another folder.
fn net_dir() -> PathBuf {
    target_dir().join("net")
}

/// The linked files of the images, as cargo leaves them.
pub struct Elfs {
    pub boot_sector: PathBuf,
    pub rom: PathBuf,
    /// The net family's BIOS loader sector.
    pub loader: PathBuf,
    /// The UEFI program, a PE32+ file.
    pub efi: PathBuf,
    /// The PVH kernel, an ELF64 file.
    pub pvh: PathBuf,
    /// The net family's UEFI program and PVH kernel.
    pub net_efi: PathBuf,
    pub net_pvh: PathBuf,
}

/// The cargo that runs this xtask (`$CARGO`), so the pinned toolchain builds the boot sector too.
pub fn cargo_binary() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo() -> Command {
    Command::new(cargo_binary())
}

/// A cargo command for the boot-sector crate on the 16-bit target, in `target/`.
fn boot_crate_cargo(subcommand: &str) -> Command {
    let mut command = crate_cargo(subcommand, TARGET_SPEC);
    command.arg("-Zjson-target-spec");
    command
}

/// A cargo command for the boot-sector crate on `target`, in `target/`.
fn crate_cargo(subcommand: &str, target: &str) -> Command {
    crate_cargo_in(subcommand, target, &target_dir())
}

/// The net PVH kernel built as the images build it, but in `target/symbols/` and with its
/// symbols kept: which function and object is how big. Returns the ELF.
pub fn build_net_pvh_with_symbols() -> Result<PathBuf> {
    let dir = target_dir().join("symbols");
    let mut command = net_cargo("build", PVH_TARGET, &dir);
    command.env("VM512_SYMBOLS", "1");
    command.args([
        "--bin",
        "net-pvh",
        "-Zbuild-std=core",
        "-Zbuild-std-features=compiler-builtins-mem",
    ]);
    let status = process::status(&mut command).context("could not start cargo")?;
    if !status.success() {
        bail!(
            "building the net kernel with its symbols failed ({status}); cargo's messages are above"
        );
    }
    Ok(dir.join(PVH_TARGET).join("release").join("net-pvh"))
}

/// A cargo command for the boot-sector crate on `target`, in `dir`.
fn crate_cargo_in(subcommand: &str, target: &str, dir: &Path) -> Command {
    let mut command = cargo();
    command
        .current_dir(project_root())
        .args([subcommand, "--release", "--package", "vm512", "--target", target])
        .arg("--target-dir")
        .arg(dir)
        // Flags meant for the host would break the 16-bit build (and rebuild core each time).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

/// Builds the images' ELF files in the size-tuned release profile and returns where they are.
pub fn build_elfs() -> Result<Elfs> {
    const BUILD_STD: [&str; 2] = ["-Zbuild-std=core", "-Zbuild-std-features=compiler-builtins-mem"];
    let builds: [(Command, &[&str], &str); 5] = [
        (
            boot_crate_cargo("build"),
            &["--bin", "boot-sector", "--bin", "rom", "--bin", "loader"],
            "boot sector, ROM and loader",
        ),
        (crate_cargo("build", UEFI_TARGET), &["--bin", "efi"], "UEFI program"),
        (pvh_cargo("build"), &["--bin", "pvh"], "PVH kernel"),
        (net_cargo("build", UEFI_TARGET, &net_dir()), &["--bin", "net-efi"], "net UEFI program"),
        (net_cargo("build", PVH_TARGET, &net_dir()), &["--bin", "net-pvh"], "net PVH kernel"),
    ];
    for (mut command, bins, what) in builds {
        let status = process::status(command.args(bins).args(BUILD_STD))
            .with_context(|| format!("could not start cargo to build the {what}"))?;
        if !status.success() {
            bail!("building the {what} failed ({status}); cargo's messages are above");
        }
    }
    Ok(Elfs {
        boot_sector: elf_dir().join("boot-sector"),
        rom: elf_dir().join("rom"),
        loader: elf_dir().join("loader"),
        efi: target_dir().join(UEFI_TARGET).join("release").join("efi.efi"),
        pvh: target_dir().join(PVH_TARGET).join("release").join("pvh"),
        net_efi: net_dir().join(UEFI_TARGET).join("release").join("net-efi.efi"),
        net_pvh: net_dir().join(PVH_TARGET).join("release").join("net-pvh"),
    })
}

/// A cargo command for the boot-sector crate on the PVH kernel's target.
fn pvh_cargo(subcommand: &str) -> Command {
    let mut command = crate_cargo(subcommand, PVH_TARGET);
    command.env(PVH_RUSTFLAGS.0, PVH_RUSTFLAGS.1);
    command
}

/// A cargo command for the net programs on `target`, in `dir`: [`NET_PANIC`] (and the PVH
/// kernel's own flags).
fn net_cargo(subcommand: &str, target: &str, dir: &Path) -> Command {
    let mut command = crate_cargo_in(subcommand, target, dir);
    if target == PVH_TARGET {
        command.env(PVH_RUSTFLAGS.0, format!("{} {NET_PANIC}", PVH_RUSTFLAGS.1));
    } else {
        command.env(UEFI_RUSTFLAGS, NET_PANIC);
    }
    command
}

/// Removes the boot-sector crate's build output (not `core`'s), so that the next build starts
/// from its sources.
pub fn clean_boot_crate() -> Result<()> {
    for mut command in [
        boot_crate_cargo("clean"),
        crate_cargo("clean", UEFI_TARGET),
        pvh_cargo("clean"),
        net_cargo("clean", UEFI_TARGET, &net_dir()),
        net_cargo("clean", PVH_TARGET, &net_dir()),
    ] {
        let status = process::status(command.arg("--quiet")).context("running cargo clean")?;
        if !status.success() {
            bail!("cargo clean of the boot-sector crate failed ({status})");
        }
    }
    Ok(())
}

/// Where cargo leaves the linked images.
pub fn elf_dir() -> PathBuf {
    target_dir().join("i386-code16-boot-sector").join("release")
}

/// `<sysroot>/lib/rustlib/<host>/bin`, where the `llvm-tools` component puts its binaries.
pub fn llvm_bin_dir() -> Result<PathBuf> {
    let rustc = |arg: &str| -> Result<String> {
        let out = process::output(Command::new("rustc").current_dir(project_root()).arg(arg))
            .context("running rustc")?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    let sysroot = rustc("--print=sysroot")?;
    let host = rustc("-vV")?
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")?;
    let dir = PathBuf::from(sysroot).join("lib/rustlib").join(host).join("bin");
    if !dir.join("llvm-objcopy").exists() {
        bail!(
            "llvm-objcopy is missing from {}: install the toolchain's components with \
             `rustup toolchain install` in {}",
            dir.display(),
            project_root().display()
        );
    }
    Ok(dir)
}
