//! The net family's BIOS loader sector (`src/asm/loader.s`) made ready for one medium: where
//! the program is (an LBA on a disk, or already in memory behind the sector on the CD), where
//! it goes and where it starts. The numbers go into the sector's `loader_*` fields.

use anyhow::{Result, bail};

use crate::domain::image::{BOOT_ADDRESS, SECTOR_SIZE, check_boot_sector};
use crate::domain::{elf, pvh};

/// The fields the xtask fills in, by symbol.
const FIELDS: [&str; 6] = [
    "loader_sectors",
    "loader_lba",
    "loader_source",
    "loader_load_address",
    "loader_length",
    "loader_entry",
];
/// Where the loader reads the program to on a disk (1000:0000), and where the CD's El Torito
/// entry leaves it (right behind the sector at 0x7C00).
const DISK_BUFFER: u32 = 0x1_0000;
const CD_BUFFER: u32 = BOOT_ADDRESS as u32 + SECTOR_SIZE as u32;
/// Conventional memory ends at the EBDA (639 KiB): the program must fit below.
const LOW_MEMORY_END: u32 = 0x9_FC00;

/// The loader as linked, with its fields' offsets.
pub struct Loader {
    sector: Vec<u8>,
    fields: [usize; FIELDS.len()],
}

impl Loader {
    /// Reads the linked loader: 512 bytes at 0x7C00 ending in the boot signature.
    pub fn from_elf(elf: &[u8]) -> Result<Loader> {
        let flat = elf::flatten(elf, BOOT_ADDRESS, SECTOR_SIZE, &FIELDS)?;
        check_boot_sector(&flat.bytes)?;
        Ok(Loader { fields: FIELDS.map(|name| flat.symbols[name]), sector: flat.bytes })
    }

    fn put(&self, sector: &mut [u8], field: &str, bytes: &[u8]) {
        let index = FIELDS.iter().position(|&f| f == field).expect("a field of the loader");
        let at = self.fields[index];
        sector[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The sector for a disk whose BIOS boot partition, from `lba`, holds `kernel`.
    pub fn for_disk(&self, kernel: &[u8], lba: u64) -> Result<Vec<u8>> {
        self.ready(kernel, Some(lba), DISK_BUFFER)
    }

    /// The CD's boot image: the sector, then `kernel`, padded to whole 512-byte sectors.
    pub fn cd_boot_image(&self, kernel: &[u8]) -> Result<Vec<u8>> {
        let mut image = self.ready(kernel, None, CD_BUFFER)?;
        image.extend_from_slice(kernel);
        image.resize(image.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE, 0);
        Ok(image)
    }

    fn ready(&self, kernel: &[u8], lba: Option<u64>, buffer: u32) -> Result<Vec<u8>> {
        let (load_address, length) = pvh::flat_load(kernel)?;
        let entry = pvh::read(kernel)?.entry;
        if buffer as usize + kernel.len() > LOW_MEMORY_END as usize {
            bail!(
                "the net kernel ({} bytes) does not fit below 640 KiB for the loader",
                kernel.len()
            );
        }
        let sectors = kernel.len().div_ceil(SECTOR_SIZE) as u16;
        let mut sector = self.sector.clone();
        self.put(&mut sector, "loader_sectors", &(lba.map_or(0, |_| sectors)).to_le_bytes());
        self.put(&mut sector, "loader_lba", &lba.unwrap_or(0).to_le_bytes());
        self.put(&mut sector, "loader_source", &buffer.to_le_bytes());
        self.put(&mut sector, "loader_load_address", &load_address.to_le_bytes());
        self.put(&mut sector, "loader_length", &(length as u32).to_le_bytes());
        self.put(&mut sector, "loader_entry", &entry.to_le_bytes());
        Ok(sector)
    }
}
