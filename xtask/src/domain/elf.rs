//! The ELF-to-flat step: lays the linked sections out as the bytes the machine loads.
//!
//! Sections, not segments, are copied (lld adds a LOAD segment for the ELF headers). Each
//! allocated section goes to its load address (LMA), found through the segment that holds it;
//! for the boot sector that equals its run address.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use object::elf::{PT_LOAD, SHF_ALLOC, SHT_NOBITS};
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, Object, ObjectSymbol};

/// A flat image and the image offsets of the symbols asked for.
#[derive(Debug)]
pub struct Flat {
    pub bytes: Vec<u8>,
    pub symbols: HashMap<String, usize>,
}

/// Lays out `elf` as `size` bytes starting at load address `base`, and resolves `symbols` to
/// offsets in those bytes. Anything that would land outside the image is an error.
pub fn flatten(elf: &[u8], base: u64, size: usize, symbols: &[&str]) -> Result<Flat> {
    let file = ElfFile32::<Endianness>::parse(elf).context("not a 32-bit ELF file")?;
    let endian = file.endian();
    let header = file.elf_header();
    let segments: Vec<_> = header
        .program_headers(endian, elf)
        .context("unreadable program headers")?
        .iter()
        .filter(|segment| segment.p_type(endian) == PT_LOAD)
        .map(|segment| {
            let vaddr = u64::from(segment.p_vaddr(endian));
            let paddr = u64::from(segment.p_paddr(endian));
            let memsz = u64::from(segment.p_memsz(endian));
            (vaddr, paddr, memsz)
        })
        .collect();
    // Run address (VMA) to image offset, through the load segment that holds it.
    let offset_of = |vma: u64, len: u64| -> Result<usize> {
        let lma = segments
            .iter()
            .find(|&&(vaddr, _, memsz)| vma >= vaddr && vma + len <= vaddr + memsz)
            .map_or(vma, |&(vaddr, paddr, _)| vma - vaddr + paddr);
        match lma.checked_sub(base) {
            Some(offset) if offset + len <= size as u64 => Ok(offset as usize),
            _ => bail!(
                "{len} bytes at {lma:#x} fall outside the image ({base:#x}..{:#x})",
                base + size as u64
            ),
        }
    };

    let mut bytes = vec![0u8; size];
    let sections = header.sections(endian, elf).context("unreadable section headers")?;
    for (index, section) in sections.enumerate() {
        let flags = u64::from(section.sh_flags(endian));
        let len = u64::from(section.sh_size(endian));
        if flags & u64::from(SHF_ALLOC) == 0 || len == 0 {
            continue;
        }
        let name = String::from_utf8_lossy(sections.section_name(endian, section).unwrap_or(b"?"));
        let offset = offset_of(u64::from(section.sh_addr(endian)), len)
            .with_context(|| format!("section {name} (#{})", index.0))?;
        if section.sh_type(endian) == SHT_NOBITS {
            continue; // zero-initialised: the image is already zero there
        }
        let data = section.data(endian, elf).with_context(|| format!("section {name}"))?;
        bytes[offset..offset + data.len()].copy_from_slice(data);
    }

    let mut found = HashMap::new();
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if symbols.contains(&name) {
            let offset =
                offset_of(symbol.address(), 0).with_context(|| format!("symbol {name}"))?;
            found.insert(name.to_string(), offset);
        }
    }
    if let Some(missing) = symbols.iter().find(|name| !found.contains_key(**name)) {
        bail!("the ELF has no symbol `{missing}` (is the linker script in place?)");
    }
    Ok(Flat { bytes, symbols: found })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_an_elf() {
        let error = flatten(b"MZ\x90\x00 not an ELF", 0x7C00, 512, &[]).unwrap_err();
        assert!(format!("{error:#}").contains("not a 32-bit ELF"), "{error:#}");
    }

    // The layout itself is checked against llvm-objcopy on the real images in boot_tests.rs.
}
