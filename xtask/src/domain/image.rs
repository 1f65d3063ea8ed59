//! The flat images: the boot sector and the ROM as the machine loads them, their message area,
//! and the checks a BIOS (or the reset vector) needs.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::domain::{efi, elf, gpt, pvh};

/// The message a plain build prints.
pub const DEFAULT_MESSAGE: &str = "Hello World!";

/// Size of a disk sector, and of the whole boot sector.
pub const SECTOR_SIZE: usize = 512;
/// Where the BIOS loads the boot sector, and where the linker placed it.
pub const BOOT_ADDRESS: u64 = 0x7C00;
/// Offset of the boot signature, the last two bytes of the sector.
pub const SIGNATURE_OFFSET: usize = 510;
/// The boot signature: the BIOS boots a sector only if it ends in 0x55 0xAA.
pub const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Where the ROM appears below 1 MiB (it is also mapped at 4 GiB - 64 KiB).
pub const ROM_BASE: u64 = 0xF0000;
/// Size of the ROM: QEMU's `-bios` takes a non-zero multiple of 64 KiB, pflash of 4 KiB.
pub const ROM_SIZE: usize = 0x10000;
/// Offset of the reset vector in the ROM: the CPU starts at 0xFFFFFFF0, its last 16 bytes.
pub const RESET_VECTOR_OFFSET: usize = ROM_SIZE - 16;
/// What follows the message in the image: the line ending, and the end mark the code stops at
/// (`src/message.rs`: the first byte with bit 7 set; zero bytes are skipped).
const MESSAGE_TRAILER: &[u8] = b"\r\n\xFF";

/// A flat image with a message area the xtask fills in.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    /// Offset of the first byte of the message area (`__message`).
    pub message_start: usize,
    /// Offset one past the last byte the message may use (`__message_end`).
    pub message_end: usize,
    /// Offsets inside the area that must stay 0 (the boot sector's unused partition slots' type
    /// bytes): the text flows around them, and the code skips them.
    pub reserved: Vec<usize>,
}

impl Image {
    /// Flattens a linked image to `size` bytes from load address `base`, with its message area.
    fn from_elf(elf: &[u8], base: u64, size: usize) -> Result<Image> {
        let flat = elf::flatten(elf, base, size, &["__message", "__message_end"])?;
        Ok(Image {
            message_start: flat.symbols["__message"],
            message_end: flat.symbols["__message_end"],
            bytes: flat.bytes,
            reserved: Vec::new(),
        })
    }

    /// Reads a linked boot sector: 512 bytes at 0x7C00. Its message area may run over the first
    /// three partition slots, whose type bytes stay 0 ([`gpt::UNUSED_SLOT_TYPES`]).
    pub fn boot_sector_from_elf(elf: &[u8]) -> Result<Image> {
        let mut image = Image::from_elf(elf, BOOT_ADDRESS, SECTOR_SIZE)?;
        image.reserved = gpt::UNUSED_SLOT_TYPES
            .into_iter()
            .filter(|offset| (image.message_start..image.message_end).contains(offset))
            .collect();
        // The linked default text knows nothing of those bytes: lay it out as the xtask does.
        image.set_message(DEFAULT_MESSAGE)?;
        image.check_boot_sector()?;
        Ok(image)
    }

    /// Reads a linked ROM: 64 KiB at 0xF0000 (load addresses).
    pub fn rom_from_elf(elf: &[u8]) -> Result<Image> {
        let image = Image::from_elf(elf, ROM_BASE, ROM_SIZE)?;
        check_rom(&image.bytes)?;
        Ok(image)
    }

    /// Reads the UEFI program (a PE32+ file): its message area is its `.message` section.
    pub fn efi_from_pe(pe: Vec<u8>) -> Result<Image> {
        let area = efi::message_area(&pe)?;
        Ok(Image { message_start: area.start, message_end: area.end, bytes: pe, reserved: vec![] })
    }

    /// Reads the PVH kernel (an ELF64 file): its message area is its `.message` section.
    pub fn pvh_from_elf(elf: Vec<u8>) -> Result<Image> {
        let kernel = pvh::read(&elf)?;
        Ok(Image {
            message_start: kernel.message.start,
            message_end: kernel.message.end,
            bytes: elf,
            reserved: vec![],
        })
    }

    /// Bytes of code (and constants) in front of the message.
    pub fn code_bytes(&self) -> usize {
        self.message_start
    }

    /// The offsets of the area the message may use, in order.
    fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        (self.message_start..self.message_end).filter(|offset| !self.reserved.contains(offset))
    }

    /// Writes `text` + CR LF + the end mark into the message area, around its reserved bytes,
    /// and zeroes the rest of it.
    pub fn set_message(&mut self, text: &str) -> Result<()> {
        validate_message(text)?;
        let room = self.usable().count();
        let needed = text.len() + MESSAGE_TRAILER.len();
        if needed > room {
            bail!(
                "the message is {} too long: {} characters fit (plus CR LF and an end mark), \
                 it has {}; shorten it",
                bytes(needed - room),
                room.saturating_sub(MESSAGE_TRAILER.len()),
                text.len()
            );
        }
        self.bytes[self.message_start..self.message_end].fill(0);
        let offsets: Vec<usize> = self.usable().collect();
        for (&offset, &byte) in offsets.iter().zip(text.as_bytes().iter().chain(MESSAGE_TRAILER)) {
            self.bytes[offset] = byte;
        }
        Ok(())
    }

    /// The message currently in the image, as the code prints it, without CR LF.
    pub fn message(&self) -> Vec<u8> {
        let printed: Vec<u8> = self.bytes[self.message_start..self.message_end]
            .iter()
            .copied()
            .take_while(|&b| b & 0x80 == 0)
            .filter(|&b| b != 0)
            .collect();
        printed.strip_suffix(b"\r\n").unwrap_or(&printed).to_vec()
    }

    /// Bytes the message uses, line ending and end mark included.
    pub fn message_bytes(&self) -> usize {
        self.message().len() + MESSAGE_TRAILER.len()
    }

    /// The longest message the area takes (without CR LF and the end mark).
    pub fn message_room(&self) -> usize {
        self.usable().count().saturating_sub(MESSAGE_TRAILER.len())
    }

    /// Free bytes left in the message area.
    pub fn free_bytes(&self) -> usize {
        self.usable().count() - self.message_bytes()
    }

    /// Bytes after the message area up to the signature (the boot sector's protective
    /// partition slot).
    pub fn partition_entry_bytes(&self) -> usize {
        SIGNATURE_OFFSET.saturating_sub(self.message_end)
    }

    /// A BIOS boots it: exactly 512 bytes, ending in 0x55 0xAA.
    pub fn check_boot_sector(&self) -> Result<()> {
        check_boot_sector(&self.bytes)?;
        if self.message_start > self.message_end || self.message_end > gpt::PROTECTIVE_SLOT {
            bail!(
                "the message area {:#x}..{:#x} is not inside the sector's first {} bytes (the \
                 protective partition slot and the signature follow)",
                self.message_start,
                self.message_end,
                gpt::PROTECTIVE_SLOT
            );
        }
        if self.reserved.iter().any(|&offset| self.bytes[offset] != 0) {
            bail!("a partition slot's type byte in the message area is not 0");
        }
        Ok(())
    }
}

/// Checks what a BIOS checks, and the size the format promises.
pub fn check_boot_sector(bytes: &[u8]) -> Result<()> {
    if bytes.len() != SECTOR_SIZE {
        bail!("the boot sector is {} bytes; it must be exactly {SECTOR_SIZE}", bytes.len());
    }
    if bytes[SIGNATURE_OFFSET..] != BOOT_SIGNATURE {
        bail!(
            "the boot sector ends in {:02X} {:02X}, not the boot signature 55 AA",
            bytes[SIGNATURE_OFFSET],
            bytes[SIGNATURE_OFFSET + 1]
        );
    }
    Ok(())
}

/// Checks what QEMU's `-bios` and pflash need, and that the reset vector holds code.
pub fn check_rom(bytes: &[u8]) -> Result<()> {
    if bytes.len() != ROM_SIZE {
        bail!("the ROM is {} bytes; it must be exactly {ROM_SIZE} (64 KiB)", bytes.len());
    }
    if bytes[RESET_VECTOR_OFFSET..].iter().all(|&b| b == 0) {
        bail!("the ROM's reset vector (its last 16 bytes) is empty: is rom.ld in place?");
    }
    Ok(())
}

/// The message must be printable ASCII: what both INT 10h and a serial terminal show as is.
pub fn validate_message(text: &str) -> Result<()> {
    if text.is_empty() {
        bail!("the message is empty: give at least one printable ASCII character");
    }
    if let Some((at, bad)) = text.char_indices().find(|&(_, c)| !(' '..='~').contains(&c)) {
        bail!(
            "the message has {bad:?} at byte {at}: only printable ASCII (space to '~') is allowed, \
             no control characters, tabs or non-ASCII letters"
        );
    }
    Ok(())
}

/// Reads and flattens the linked boot sector at `elf_path`.
pub fn read_boot_sector(elf_path: &Path) -> Result<Image> {
    read_elf(elf_path, Image::boot_sector_from_elf)
}

/// Reads and flattens the linked ROM at `elf_path`.
pub fn read_rom(elf_path: &Path) -> Result<Image> {
    read_elf(elf_path, Image::rom_from_elf)
}

fn read_elf(elf_path: &Path, parse: fn(&[u8]) -> Result<Image>) -> Result<Image> {
    let elf = fs::read(elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    parse(&elf).with_context(|| format!("{}", elf_path.display()))
}

/// "1 byte", "2 bytes".
pub fn bytes(n: usize) -> String {
    if n == 1 { "1 byte".to_string() } else { format!("{n} bytes") }
}

/// 1048576 -> "1,048,576".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sector shaped like the linked one: code up to 0x100, message area up to the protective
    /// slot.
    fn sample() -> Image {
        let mut bytes = vec![0x90; SECTOR_SIZE];
        bytes[SIGNATURE_OFFSET..].copy_from_slice(&BOOT_SIGNATURE);
        Image { bytes, message_start: 0x100, message_end: gpt::PROTECTIVE_SLOT, reserved: vec![] }
    }

    #[test]
    fn message_is_written_with_crlf_and_end_mark_and_the_rest_zeroed() {
        let mut image = sample();
        image.set_message("Booted").unwrap();
        assert_eq!(&image.bytes[0x100..0x109], b"Booted\r\n\xFF");
        assert!(image.bytes[0x109..gpt::PROTECTIVE_SLOT].iter().all(|&b| b == 0));
        assert_eq!(image.message(), b"Booted");
        assert_eq!(
            image.code_bytes()
                + image.message_bytes()
                + image.free_bytes()
                + image.partition_entry_bytes()
                + 2,
            SECTOR_SIZE
        );
        image.check_boot_sector().unwrap();
    }

    #[test]
    fn the_text_flows_around_reserved_bytes_which_stay_zero() {
        let mut image = sample();
        image.message_start = 440;
        image.reserved = gpt::UNUSED_SLOT_TYPES.to_vec();
        let text = "0123456789abcdefghijklmnopqrstuvwxyz";
        image.set_message(text).unwrap();
        assert!(gpt::UNUSED_SLOT_TYPES.iter().all(|&offset| image.bytes[offset] == 0));
        assert_eq!(&image.bytes[440..450], b"0123456789");
        assert_eq!(image.bytes[451], b'a');
        assert_eq!(image.message(), text.as_bytes());
        assert_eq!(image.message_room(), gpt::PROTECTIVE_SLOT - 440 - 3 - 3);
        image.check_boot_sector().unwrap();
    }

    #[test]
    fn a_longer_message_replaces_a_shorter_one_completely() {
        let mut image = sample();
        image.set_message("a much longer message").unwrap();
        image.set_message("short").unwrap();
        assert_eq!(&image.bytes[0x100..0x108], b"short\r\n\xFF");
        assert!(image.bytes[0x108..gpt::PROTECTIVE_SLOT].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_message_that_fills_the_area_exactly_fits_and_one_more_byte_does_not() {
        let mut image = sample();
        let room = gpt::PROTECTIVE_SLOT - 0x100 - 3;
        image.set_message(&"x".repeat(room)).unwrap();
        assert_eq!(image.free_bytes(), 0);
        assert_eq!(image.bytes[SIGNATURE_OFFSET..], BOOT_SIGNATURE);
        let error = image.set_message(&"x".repeat(room + 5)).unwrap_err().to_string();
        assert!(error.contains("5 bytes too long"), "{error}");
        let error = image.set_message(&"x".repeat(room + 1)).unwrap_err().to_string();
        assert!(error.contains("is 1 byte too long"), "{error}");
        assert!(error.contains(&format!("{room} characters fit")), "{error}");
    }

    #[test]
    fn messages_must_be_printable_ascii() {
        validate_message("Hello World! ~ 0-9").unwrap();
        for bad in ["", "tab\there", "new\nline", "caf\u{e9}", "bell\u{7}", "del\u{7f}"] {
            assert!(validate_message(bad).is_err(), "{bad:?} was accepted");
        }
        let error = validate_message("caf\u{e9}").unwrap_err().to_string();
        assert!(error.contains("byte 3") && error.contains("printable ASCII"), "{error}");
    }

    #[test]
    fn boot_sector_checks_size_and_signature() {
        let mut image = sample();
        image.check_boot_sector().unwrap();
        image.bytes[511] = 0;
        let error = image.check_boot_sector().unwrap_err().to_string();
        assert!(error.contains("55 AA"), "{error}");
        assert!(check_boot_sector(&[0; 1024]).unwrap_err().to_string().contains("exactly 512"));
    }

    #[test]
    fn rom_checks_size_and_reset_vector() {
        let mut rom = vec![0u8; ROM_SIZE];
        assert!(check_rom(&rom).unwrap_err().to_string().contains("reset vector"));
        rom[RESET_VECTOR_OFFSET] = 0xFA;
        check_rom(&rom).unwrap();
        let error = check_rom(&rom[..ROM_SIZE - 4096]).unwrap_err().to_string();
        assert!(error.contains("exactly 65536"), "{error}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(512), "512");
        assert_eq!(thousands(1_048_576), "1,048,576");
        assert_eq!(thousands(328_704), "328,704");
    }
}
