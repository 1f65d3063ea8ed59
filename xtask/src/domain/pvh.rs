//! The PVH kernel as a VMM loads it: an ELF64 for x86-64 whose segments go to physical addresses
//! from 1 MiB up, with the Xen note that names its 32-bit entry (XEN_ELFNOTE_PHYS32_ENTRY), and
//! its message area in a section of its own (`.message`, see `src/message.rs`).

use std::ops::Range;

use anyhow::{Context, Result, bail};
use object::elf::{EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

/// The size the project set itself for the kernel.
pub const SIZE_TARGET: usize = 16 * 1024;
/// The lowest address a segment may load at: below lie the BIOS area, the loaders' own
/// structures (the start info, the memory map) and, on a PC, VGA memory.
pub const LOWEST_LOAD: u64 = 0x10_0000;
/// The note's owner and type (Xen's public `elfnote.h`).
const NOTE_NAME: &[u8] = b"Xen";
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// What a loader reads from the kernel.
#[derive(Debug, PartialEq)]
pub struct Kernel {
    /// The 32-bit entry point the Xen note names.
    pub entry: u32,
    /// The file range of the message area.
    pub message: Range<usize>,
}

/// Checks what a PVH loader (QEMU's, Cloud Hypervisor's and Firecracker's `linux-loader`)
/// checks, and finds the message area.
pub fn read(elf: &[u8]) -> Result<Kernel> {
    let file =
        ElfFile64::<Endianness>::parse(elf).context("the PVH kernel is not an ELF64 file")?;
    let endian = file.endian();
    let header = file.elf_header();
    let (kind, machine) = (header.e_type(endian), header.e_machine(endian));
    if kind != ET_EXEC || machine != EM_X86_64 {
        bail!("the PVH kernel is no x86-64 executable (type {kind}, machine {machine})");
    }
    let segments = header.program_headers(endian, elf).context("unreadable program headers")?;
    let mut entry = None;
    for segment in segments {
        match segment.p_type(endian) {
            PT_LOAD if segment.p_paddr(endian) < LOWEST_LOAD => bail!(
                "a segment of the PVH kernel loads at {:#x}, below 1 MiB (pvh.ld)",
                segment.p_paddr(endian)
            ),
            PT_NOTE => {
                let mut notes = segment.notes(endian, elf)?.context("an unreadable note")?;
                while let Some(note) = notes.next()? {
                    let descriptor = note.desc();
                    if note.name() == NOTE_NAME && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                        let bytes = descriptor.get(..4).context("the PVH entry note is short")?;
                        entry = Some(u32::from_le_bytes(bytes.try_into()?));
                    }
                }
            }
            _ => {}
        }
    }
    let entry = entry
        .context("the PVH kernel has no Xen PHYS32_ENTRY note (asm/pvh.s): no VMM would boot it")?;
    let loaded = segments.iter().filter(|s| s.p_type(endian) == PT_LOAD).any(|segment| {
        let start = segment.p_paddr(endian);
        (start..start + segment.p_filesz(endian)).contains(&u64::from(entry))
    });
    if !loaded {
        bail!("the PVH entry {entry:#x} lies in no loaded segment");
    }
    let section = file
        .section_by_name(".message")
        .context("the PVH kernel has no .message section (pvh.ld)")?;
    let (offset, size) = section.file_range().context("its .message section has no bytes")?;
    Ok(Kernel { entry, message: offset as usize..(offset + size) as usize })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_an_elf64_is_refused() {
        let error = read(b"\x7fELF\x01 truncated").unwrap_err();
        assert!(format!("{error:#}").contains("not an ELF64"), "{error:#}");
    }

    // The real kernel is read, and booted, in tests/pvh.rs.
}
