//! `cargo xtask disasm [--rom]`: the boot sector's (or the ROM's) annotated disassembly, and the
//! check that every instruction in it runs on a 386.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::domain::instructions::{TARGET_CPU, disassemble, newer_than_target, objdump};
use crate::infra::files::project_root;
use crate::infra::{cargo, process};

/// `cargo xtask disasm [--rom]`.
pub fn run(rom: bool) -> Result<()> {
    let elfs = cargo::build_elfs()?;
    let (elf, what) = if rom { (elfs.rom, "ROM") } else { (elfs.boot_sector, "boot sector") };
    let headers = process::output(Command::new(objdump()?).arg("-h").arg(&elf))
        .context("running llvm-objdump")?;
    println!("{what}: {}", elf.strip_prefix(project_root()).unwrap_or(&elf).display());
    print!("{}", String::from_utf8_lossy(&headers.stdout));
    let listing = disassemble(&elf, true)?;
    print!("{listing}");
    let newer = newer_than_target(&disassemble(&elf, false)?);
    if newer.is_empty() {
        println!("\nevery instruction above runs on a 386 ({TARGET_CPU})");
        Ok(())
    } else {
        bail!("instructions newer than the 386:\n{}", newer.join("\n"))
    }
}
