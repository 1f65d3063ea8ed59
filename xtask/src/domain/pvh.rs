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

/// Where a loader that copies the file whole puts it, and how many of its bytes: the kernel's
/// one loaded segment, headers included (`pvh.ld`), at its physical address less its file
/// offset. `None`-like errors for any other shape.
pub fn flat_load(elf: &[u8]) -> Result<(u32, usize)> {
    let file =
        ElfFile64::<Endianness>::parse(elf).context("the PVH kernel is not an ELF64 file")?;
    let endian = file.endian();
    let segments = file.elf_header().program_headers(endian, elf)?;
    let mut loads = segments.iter().filter(|s| s.p_type(endian) == PT_LOAD);
    let (Some(segment), None) = (loads.next(), loads.next()) else {
        bail!("the PVH kernel must have exactly one loaded segment (pvh.ld) for the BIOS loader");
    };
    let address = segment.p_paddr(endian).checked_sub(segment.p_offset(endian));
    let length = segment.p_offset(endian) + segment.p_filesz(endian);
    match address {
        Some(address) if address >= LOWEST_LOAD && address + length < 1 << 32 => {
            Ok((address as u32, length.min(elf.len() as u64) as usize))
        }
        _ => bail!("the PVH kernel's segment cannot be copied whole below 4 GiB"),
    }
}

/// Checks what a PVH loader (QEMU's, Cloud Hypervisor's and Firecracker's `linux-loader`)
/// checks, and finds the message area.
pub fn read(elf: &[u8]) -> Result<Kernel> {
    let entry = entry(elf)?;
    let file = ElfFile64::<Endianness>::parse(elf)?;
    let section = file
        .section_by_name(".message")
        .context("the PVH kernel has no .message section (pvh.ld)")?;
    let (offset, size) = section.file_range().context("its .message section has no bytes")?;
    Ok(Kernel { entry, message: offset as usize..(offset + size) as usize })
}

/// The 32-bit entry the Xen note names, checked as a loader checks it: an x86-64 executable,
/// nothing loaded below 1 MiB, the entry inside a loaded segment.
fn entry(elf: &[u8]) -> Result<u32> {
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
    Ok(entry)
}

/// A PVH kernel that writes `line` to COM1 with its first instructions and halts: what QEMU's
/// own start-up costs, the floor the bench holds the real kernel against. An ELF64 of one
/// segment (headers, note, code, text), loaded whole at [`LOWEST_LOAD`].
pub fn first_instruction_stub(line: &[u8]) -> Vec<u8> {
    const HEADER: usize = 64;
    const PROGRAM_HEADER: usize = 56;
    const NOTE_AT: usize = HEADER + 2 * PROGRAM_HEADER;
    const NOTE_LEN: usize = 20;
    const CODE_AT: usize = NOTE_AT + NOTE_LEN;
    // 32-bit code: ESI = the text; DX = COM1; send each byte up to the NUL; then cli; hlt.
    const CODE_LEN: usize = 5 + 4 + 8 + 4;
    let text_at = LOWEST_LOAD + (CODE_AT + CODE_LEN) as u64;
    let mut code = vec![0xBE]; // mov esi, imm32
    code.extend_from_slice(&(text_at as u32).to_le_bytes());
    code.extend_from_slice(&[0x66, 0xBA, 0xF8, 0x03]); // mov dx, 0x3F8
    code.extend_from_slice(&[0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8]); // lodsb .. jmp
    code.extend_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]); // cli; hlt; jmp back to hlt
    debug_assert_eq!(code.len(), CODE_LEN);
    let total = CODE_AT + CODE_LEN + line.len() + 1;
    let entry = LOWEST_LOAD + CODE_AT as u64;

    let mut elf = Vec::with_capacity(total);
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // 64-bit, LSB, v1
    elf.extend_from_slice(&ET_EXEC.to_le_bytes());
    elf.extend_from_slice(&EM_X86_64.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&(HEADER as u64).to_le_bytes()); // program headers' offset
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [HEADER, PROGRAM_HEADER, 2, 0, 0, 0] {
        elf.extend_from_slice(&(half as u16).to_le_bytes()); // sizes, counts, shstrndx
    }
    let segment = |elf: &mut Vec<u8>, kind: u32, flags: u32, offset: usize, size: usize| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&(offset as u64).to_le_bytes());
        for address in [LOWEST_LOAD + offset as u64; 2] {
            elf.extend_from_slice(&address.to_le_bytes()); // virtual, physical
        }
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // in the file
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // in memory
        elf.extend_from_slice(&4u64.to_le_bytes()); // alignment
    };
    segment(&mut elf, PT_LOAD, 5, 0, total); // read, execute
    segment(&mut elf, PT_NOTE, 4, NOTE_AT, NOTE_LEN);
    for word in [4, 4, XEN_ELFNOTE_PHYS32_ENTRY] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(b"Xen\0");
    elf.extend_from_slice(&(entry as u32).to_le_bytes());
    elf.extend_from_slice(&code);
    elf.extend_from_slice(line);
    elf.push(0);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_an_elf64_is_refused() {
        let error = read(b"\x7fELF\x01 truncated").unwrap_err();
        assert!(format!("{error:#}").contains("not an ELF64"), "{error:#}");
    }

    #[test]
    fn the_stub_is_a_kernel_a_loader_takes() {
        let stub = first_instruction_stub(b"hi");
        assert_eq!(entry(&stub).unwrap(), LOWEST_LOAD as u32 + 176 + 20);
    }

    // The real kernel is read, and booted, in tests/pvh.rs; the stub in the bench.
}
