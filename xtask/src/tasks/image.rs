//! `cargo xtask image`: builds the artifact set and prints where the sector's bytes went.

use anyhow::Result;

use crate::domain::artifacts::{self, ImageOptions};
use crate::domain::image;
use crate::infra::cargo;

pub fn run(options: &ImageOptions) -> Result<()> {
    let built = artifacts::build(options, &artifacts::images_dir())?;
    print!("{}", built.report());
    Ok(())
}

/// Characters of message the last built boot sector has room for, if one was built.
pub fn message_room() -> Option<usize> {
    let sector = image::read_boot_sector(&cargo::elf_dir().join("boot-sector")).ok()?;
    Some(sector.message_room())
}
