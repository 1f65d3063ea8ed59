//! The UEFI program as the firmware loads it: a PE32+ image for x86-64, subsystem "EFI
//! application", with its message area in a section of its own (`.message`, see
//! `src/message.rs`).

use std::ops::Range;

use anyhow::{Context, Result, bail};
use object::pe::{IMAGE_FILE_MACHINE_AMD64, IMAGE_SUBSYSTEM_EFI_APPLICATION};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{LittleEndian, Object, ObjectSection};

/// The most the program may weigh (the size target the project set itself).
pub const SIZE_LIMIT: usize = 4096;

/// The most the net family's program may weigh (network stack, drivers and all).
pub const NET_SIZE_LIMIT: usize = 96 * 1024;

/// The file range of the message area, after checking that `pe` is an x86-64 EFI application.
pub fn message_area(pe: &[u8]) -> Result<Range<usize>> {
    let file = PeFile64::parse(pe).context("the UEFI program is not a PE32+ file")?;
    let headers = file.nt_headers();
    let machine = headers.file_header().machine.get(LittleEndian);
    let subsystem = headers.optional_header().subsystem();
    if machine != IMAGE_FILE_MACHINE_AMD64 || subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION {
        bail!(
            "the UEFI program is no x86-64 EFI application (machine {machine:#x}, subsystem \
             {subsystem})"
        );
    }
    let section = file
        .section_by_name(".message")
        .context("the UEFI program has no .message section (src/message.rs)")?;
    let (offset, size) = section.file_range().context("its .message section has no bytes")?;
    Ok(offset as usize..(offset + size) as usize)
}

/// Refuses a program over [`SIZE_LIMIT`].
pub fn check_size(pe: &[u8]) -> Result<()> {
    check_limit(pe, SIZE_LIMIT, "the UEFI program", "src/efi/")
}

/// Refuses a net program (UEFI or PVH) over [`NET_SIZE_LIMIT`].
pub fn check_net_size(program: &[u8], what: &str) -> Result<()> {
    check_limit(program, NET_SIZE_LIMIT, what, "src/net/ and src/nic/")
}

fn check_limit(program: &[u8], limit: usize, what: &str, shrink: &str) -> Result<()> {
    if program.len() > limit {
        bail!("{what} is {} bytes, over its {limit}-byte limit: shrink {shrink}", program.len());
    }
    Ok(())
}
