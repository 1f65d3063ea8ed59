//! `cargo xtask image`: the flat boot sector, its message, its checks and the size report.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::ImageOptions;
use crate::formats::{self, DISK_SIZE, Format};
use crate::{build, elf, iso, qemu};

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
/// What follows the message in the image: the line ending and the terminator the code stops at.
const MESSAGE_TRAILER: &[u8] = b"\r\n\0";

/// Base name of every artifact: `target/images/512-byte-vm.<ext>`.
pub const ARTIFACT_STEM: &str = "512-byte-vm";
/// The checksum file beside the artifacts.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// A flat image with a message area the xtask fills in.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    /// Offset of the first byte of the message area (`__message`).
    pub message_start: usize,
    /// Offset one past the last byte the message may use (`__message_end`).
    pub message_end: usize,
}

impl Image {
    /// Flattens a linked image to `size` bytes from load address `base`, with its message area.
    fn from_elf(elf: &[u8], base: u64, size: usize) -> Result<Image> {
        let flat = elf::flatten(elf, base, size, &["__message", "__message_end"])?;
        Ok(Image {
            message_start: flat.symbols["__message"],
            message_end: flat.symbols["__message_end"],
            bytes: flat.bytes,
        })
    }

    /// Reads a linked boot sector: 512 bytes at 0x7C00.
    pub fn boot_sector_from_elf(elf: &[u8]) -> Result<Image> {
        let image = Image::from_elf(elf, BOOT_ADDRESS, SECTOR_SIZE)?;
        image.check_boot_sector()?;
        Ok(image)
    }

    /// Reads a linked ROM: 64 KiB at 0xF0000 (load addresses).
    pub fn rom_from_elf(elf: &[u8]) -> Result<Image> {
        let image = Image::from_elf(elf, ROM_BASE, ROM_SIZE)?;
        check_rom(&image.bytes)?;
        Ok(image)
    }

    /// Bytes of code (and constants) in front of the message.
    pub fn code_bytes(&self) -> usize {
        self.message_start
    }

    /// Writes `text` + CR LF + NUL into the message area, zeroing the rest of it.
    pub fn set_message(&mut self, text: &str) -> Result<()> {
        validate_message(text)?;
        let room = self.message_end - self.message_start;
        let needed = text.len() + MESSAGE_TRAILER.len();
        if needed > room {
            bail!(
                "the message is {} bytes too long: {} characters fit (plus CR LF and a NUL), \
                 it has {}; shorten it",
                needed - room,
                room - MESSAGE_TRAILER.len(),
                text.len()
            );
        }
        let area = &mut self.bytes[self.message_start..self.message_end];
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        area[text.len()..needed].copy_from_slice(MESSAGE_TRAILER);
        Ok(())
    }

    /// The message currently in the image, without CR LF.
    pub fn message(&self) -> &[u8] {
        let area = &self.bytes[self.message_start..self.message_end];
        let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
        area[..end].strip_suffix(b"\r\n").unwrap_or(&area[..end])
    }

    /// Bytes the message uses, line ending and terminator included.
    pub fn message_bytes(&self) -> usize {
        self.message().len() + MESSAGE_TRAILER.len()
    }

    /// Free bytes left in the message area.
    pub fn free_bytes(&self) -> usize {
        self.message_end - self.message_start - self.message_bytes()
    }

    /// A BIOS boots it: exactly 512 bytes, ending in 0x55 0xAA.
    pub fn check_boot_sector(&self) -> Result<()> {
        check_boot_sector(&self.bytes)?;
        if self.message_start > self.message_end || self.message_end > SIGNATURE_OFFSET {
            bail!(
                "the message area {:#x}..{:#x} is not inside the sector",
                self.message_start,
                self.message_end
            );
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

/// Builds the boot sector with the options' message and writes each requested format as
/// `dir/512-byte-vm.<ext>`, then `dir/SHA256SUMS`. Returns the artifacts written.
pub fn build_images(options: &ImageOptions, dir: &Path) -> Result<Vec<(Format, PathBuf)>> {
    // Refuse bad input and missing tools before spending time on the build.
    validate_message(&options.message)?;
    let qemu_img = match options.formats.iter().any(|f| f.qemu_img_args().is_some()) {
        true => Some(qemu::img_binary()?),
        false => None,
    };
    let elfs = build::build_elfs()?;
    let mut image = read_boot_sector(&elfs.boot_sector)?;
    image.set_message(&options.message)?;
    image.check_boot_sector()?;
    let mut rom = read_rom(&elfs.rom)?;
    rom.set_message(&options.message)?;

    let mut written = Vec::new();
    for &format in &options.formats {
        let path = artifact_path(dir, format.extension());
        match format {
            Format::Raw => write_atomically(&path, &image.bytes)?,
            Format::Img => write_atomically(&path, &padded_disk(&image.bytes))?,
            Format::Iso => write_atomically(&path, &iso::build(&image.bytes))?,
            Format::Rom => write_atomically(&path, &rom.bytes)?,
            _ => {
                let qemu_img = qemu_img.as_deref().expect("checked above");
                // qemu-img reads a file: the padded disk, beside the output, removed after.
                let input = temporary_path(&artifact_path(dir, "disk.raw"));
                write_atomically(&input, &padded_disk(&image.bytes))?;
                let result = formats::convert(qemu_img, format, &input, &path);
                let _ = fs::remove_file(&input);
                result?;
            }
        }
        written.push((format, path));
    }
    let sums = write_checksums(dir)?;
    print_size_report(&image, &written);
    println!("wrote {}", sums.display());
    Ok(written)
}

/// The boot sector followed by zeros up to the virtual disk size every bus boots.
pub fn padded_disk(sector: &[u8]) -> Vec<u8> {
    let mut disk = sector.to_vec();
    disk.resize(DISK_SIZE as usize, 0);
    disk
}

/// Writes `dir/SHA256SUMS` (the `sha256sum -c` format) for every artifact present in `dir`.
pub fn write_checksums(dir: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut lines = String::new();
    for format in Format::ALL {
        let path = artifact_path(dir, format.extension());
        if !path.exists() {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let name = path.file_name().unwrap().to_string_lossy();
        lines.push_str(&format!("{hex}  {name}\n"));
    }
    let path = dir.join(CHECKSUMS);
    write_atomically(&path, lines.as_bytes())?;
    Ok(path)
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

/// `dir/512-byte-vm.<ext>`.
pub fn artifact_path(dir: &Path, extension: &str) -> PathBuf {
    dir.join(format!("{ARTIFACT_STEM}.{extension}"))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: a reader (or a
/// failed build) never sees a half-written artifact, and the last good one stays until then.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("artifact path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A hidden name beside `path` for a file being written.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn print_size_report(image: &Image, written: &[(Format, PathBuf)]) {
    println!(
        "boot sector: {SECTOR_SIZE} bytes = {} code + {} message (\"{}\" + CR LF + NUL) + {} free \
         + 2 signature",
        image.code_bytes(),
        image.message_bytes(),
        String::from_utf8_lossy(image.message()),
        image.free_bytes(),
    );
    println!("{:<24} {:>11}  {:>15}  bit for bit", "artifact", "bytes", "original bundle");
    for (format, path) in written {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let original = format.original_size().map_or("-".to_string(), thousands);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let reproducible = if format.embeds_random_ids() { "no (random IDs)" } else { "yes" };
        println!("{name:<24} {:>11}  {original:>15}  {reproducible}", thousands(size));
    }
    if let Some(dir) = written.first().and_then(|(_, path)| path.parent()) {
        println!("in {}", dir.display());
    }
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

    /// A sector shaped like the linked one: code up to 0x100, message area up to the signature.
    fn sample() -> Image {
        let mut bytes = vec![0x90; SECTOR_SIZE];
        bytes[SIGNATURE_OFFSET..].copy_from_slice(&BOOT_SIGNATURE);
        Image { bytes, message_start: 0x100, message_end: SIGNATURE_OFFSET }
    }

    #[test]
    fn message_is_written_with_crlf_and_nul_and_the_rest_zeroed() {
        let mut image = sample();
        image.set_message("Booted").unwrap();
        assert_eq!(&image.bytes[0x100..0x109], b"Booted\r\n\0");
        assert!(image.bytes[0x109..SIGNATURE_OFFSET].iter().all(|&b| b == 0));
        assert_eq!(image.message(), b"Booted");
        assert_eq!(
            image.code_bytes() + image.message_bytes() + image.free_bytes() + 2,
            SECTOR_SIZE
        );
        image.check_boot_sector().unwrap();
    }

    #[test]
    fn a_longer_message_replaces_a_shorter_one_completely() {
        let mut image = sample();
        image.set_message("a much longer message").unwrap();
        image.set_message("short").unwrap();
        assert_eq!(&image.bytes[0x100..0x108], b"short\r\n\0");
        assert!(image.bytes[0x108..SIGNATURE_OFFSET].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_message_that_fills_the_area_exactly_fits_and_one_more_byte_does_not() {
        let mut image = sample();
        let room = SIGNATURE_OFFSET - 0x100 - 3;
        image.set_message(&"x".repeat(room)).unwrap();
        assert_eq!(image.free_bytes(), 0);
        assert_eq!(image.bytes[SIGNATURE_OFFSET..], BOOT_SIGNATURE);
        let error = image.set_message(&"x".repeat(room + 5)).unwrap_err().to_string();
        assert!(error.contains("5 bytes too long"), "{error}");
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

    #[test]
    fn padded_disk_is_the_sector_then_zeros() {
        let disk = padded_disk(&sample().bytes);
        assert_eq!(disk.len(), 1 << 20);
        assert_eq!(disk[..512], sample().bytes[..]);
        assert!(disk[512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn checksums_cover_the_artifacts_present_in_sha256sum_format() {
        let dir = std::env::temp_dir().join(format!("vm512-sums-{}", std::process::id()));
        write_atomically(&artifact_path(&dir, "raw"), b"abc").unwrap();
        write_atomically(&artifact_path(&dir, "iso"), b"").unwrap();
        let sums = fs::read_to_string(write_checksums(&dir).unwrap()).unwrap();
        assert_eq!(
            sums,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  512-byte-vm.raw\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  512-byte-vm.iso\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("vm512-atomic-{}", std::process::id()));
        let path = dir.join("a.raw");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.raw")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
