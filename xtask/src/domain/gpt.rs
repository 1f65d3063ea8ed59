//! The disks' partitioning: sector 0 is the boot sector that BIOSes run, with a protective MBR
//! entry in its fourth partition slot, and a GPT (UEFI 2.10, chapter 5) with one partition, the
//! EFI System Partition, where UEFI firmware finds `\EFI\BOOT\BOOTX64.EFI`. The net family's
//! disks have a second one, the BIOS boot partition (LBA 64-255) that their loader sector reads
//! the program from, and their ESP follows it (see [`net_ranges`]).
//!
//! Layout of a disk of N 512-byte sectors (LBAs):
//!
//! | LBA | content |
//! | --- | --- |
//! | 0 | boot sector; slot 4 (offset 494): type 0xEE from LBA 1 to the end |
//! | 1 | primary GPT header |
//! | 2-33 | primary partition entries: 128 of 128 bytes |
//! | 34-63 | unused (the ESP starts 32 KiB in, a 4 KiB boundary) |
//! | 64 - N-34 | the EFI System Partition (FAT) |
//! | N-33 - N-2 | backup partition entries |
//! | N-1 | backup GPT header |
//!
//! UEFI firmware (EDK2's PartitionDxe) takes a disk as GPT when a slot has type 0xEE and starts
//! at LBA 1. util-linux (libblkid, libfdisk) reads the MBR as hybrid when another slot's type is
//! not 0, so the first three slots' type bytes stay 0; the boot sector's message may use their
//! other bytes (see `image.rs`).

use anyhow::{Result, bail};

use crate::domain::image::SECTOR_SIZE;
use crate::domain::reproducible;

/// Offset of the MBR partition table in sector 0, and the size of a slot.
pub const PARTITION_TABLE: usize = 446;
const SLOT_SIZE: usize = 16;
/// Offset of the type byte within a slot.
const SLOT_TYPE: usize = 4;
/// The fourth slot: the protective entry.
pub const PROTECTIVE_SLOT: usize = PARTITION_TABLE + 3 * SLOT_SIZE;
/// The first three slots' type bytes: 0 ("unused") on every disk.
pub const UNUSED_SLOT_TYPES: [usize; 3] = [
    PARTITION_TABLE + SLOT_TYPE,
    PARTITION_TABLE + SLOT_SIZE + SLOT_TYPE,
    PARTITION_TABLE + 2 * SLOT_SIZE + SLOT_TYPE,
];
/// MBR partition type of a GPT's protective entry.
const PROTECTIVE_TYPE: u8 = 0xEE;

/// GPT header fields (UEFI 2.10, table 5.5).
mod header {
    pub const SIGNATURE: usize = 0;
    pub const REVISION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const HEADER_CRC32: usize = 16;
    pub const MY_LBA: usize = 24;
    pub const ALTERNATE_LBA: usize = 32;
    pub const FIRST_USABLE_LBA: usize = 40;
    pub const LAST_USABLE_LBA: usize = 48;
    pub const DISK_GUID: usize = 56;
    pub const PARTITION_ENTRY_LBA: usize = 72;
    pub const NUMBER_OF_ENTRIES: usize = 80;
    pub const SIZE_OF_ENTRY: usize = 84;
    pub const ENTRIES_CRC32: usize = 88;
    /// Bytes the header CRC covers.
    pub const SIZE: u32 = 92;
}

/// Partition entry fields (UEFI 2.10, table 5.6).
mod entry {
    pub const TYPE_GUID: usize = 0;
    pub const UNIQUE_GUID: usize = 16;
    pub const STARTING_LBA: usize = 32;
    pub const ENDING_LBA: usize = 40;
    pub const NAME: usize = 56;
    /// UTF-16 code units of the name.
    pub const NAME_UNITS: usize = 36;
}

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
/// Entries in the array and the size of each: the minimum the specification asks for (16 KiB).
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors the entry array fills.
const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR_SIZE as u64;
/// The EFI System Partition's type GUID, C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const ESP_TYPE: [u8; 16] = [
    0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];
/// The BIOS boot partition's type GUID, 21686148-6449-6E6F-744E-656564454649 (GRUB's
/// convention: a partition for a BIOS loader's payload, with no file system).
const BIOS_BOOT_TYPE: [u8; 16] = [
    0x21, 0x68, 0x61, 0x48, 0x64, 0x49, 0x6E, 0x6F, 0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49,
];
/// Where the ESP starts: 32 KiB in.
pub const ESP_FIRST_LBA: u64 = 64;
/// The net disks' BIOS boot partition: 32 KiB in, 192 sectors (96 KiB, the net program's limit);
/// their ESP follows it.
pub const BIOS_BOOT_FIRST_LBA: u64 = 64;
pub const BIOS_BOOT_SECTORS: u64 = 192;

/// A partition to lay out: its kind, its LBAs and its content (at most its size; the rest 0).
pub struct Partition<'a> {
    pub kind: PartitionKind,
    pub first: u64,
    pub last: u64,
    pub bytes: &'a [u8],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    Esp,
    BiosBoot,
}

impl PartitionKind {
    /// Its type GUID (RFC 4122 bytes), its name, and what its unique GUID is derived from.
    fn describe(self) -> ([u8; 16], &'static str, &'static str) {
        match self {
            PartitionKind::Esp => (ESP_TYPE, "EFI system partition", "gpt esp"),
            PartitionKind::BiosBoot => (BIOS_BOOT_TYPE, "BIOS boot partition", "gpt bios boot"),
        }
    }
}

/// The net disks' layout on `sectors`: the BIOS boot partition's and the ESP's first and last
/// LBAs.
pub fn net_ranges(sectors: u64) -> ((u64, u64), (u64, u64)) {
    let bios = (BIOS_BOOT_FIRST_LBA, BIOS_BOOT_FIRST_LBA + BIOS_BOOT_SECTORS - 1);
    (bios, (bios.1 + 1, esp_range(sectors).1))
}

/// The smallest disk this layout fits: the tables, and an ESP of 64 sectors.
const MIN_SECTORS: u64 = ESP_FIRST_LBA + 64 + 1 + ENTRY_SECTORS;

/// The ESP's first and last LBA on a disk of `sectors`.
pub fn esp_range(sectors: u64) -> (u64, u64) {
    (ESP_FIRST_LBA, sectors - 2 - ENTRY_SECTORS)
}

/// A disk of `sectors` sectors: `boot_sector` with the protective entry, the GPT, and `esp`
/// (exactly the ESP's size) in place. `seed` derives the disk and partition GUIDs.
pub fn disk(boot_sector: &[u8], esp: &[u8], sectors: u64, seed: &[u8]) -> Result<Vec<u8>> {
    if sectors < MIN_SECTORS {
        bail!("a GPT disk needs at least {MIN_SECTORS} sectors, not {sectors}");
    }
    let (first, last) = esp_range(sectors);
    if esp.len() as u64 != (last - first + 1) * SECTOR_SIZE as u64 {
        bail!("the ESP is {} bytes; the partition holds {} sectors", esp.len(), last - first + 1);
    }
    let esp = Partition { kind: PartitionKind::Esp, first, last, bytes: esp };
    partitioned(boot_sector, &[esp], sectors, seed)
}

/// A disk of `sectors` sectors: `boot_sector` with the protective entry, the GPT listing
/// `partitions` in that order, and their contents in place.
pub fn partitioned(
    boot_sector: &[u8],
    partitions: &[Partition],
    sectors: u64,
    seed: &[u8],
) -> Result<Vec<u8>> {
    if sectors < MIN_SECTORS {
        bail!("a GPT disk needs at least {MIN_SECTORS} sectors, not {sectors}");
    }
    let last_usable = esp_range(sectors).1;
    for p in partitions {
        let size = (p.last + 1).saturating_sub(p.first) * SECTOR_SIZE as u64;
        if p.first < 2 + ENTRY_SECTORS || p.last > last_usable || p.bytes.len() as u64 > size {
            bail!(
                "a partition at LBAs {}-{} with {} bytes does not fit a {sectors}-sector disk",
                p.first,
                p.last,
                p.bytes.len()
            );
        }
    }
    let mut disk = vec![0u8; (sectors as usize) * SECTOR_SIZE];
    disk[..SECTOR_SIZE].copy_from_slice(boot_sector);
    protective_entry(&mut disk[..SECTOR_SIZE], sectors);

    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in partitions.iter().enumerate() {
        let (kind, name, label) = p.kind.describe();
        let slot = &mut entries[i * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize];
        put(slot, entry::TYPE_GUID, &guid(kind));
        put(slot, entry::UNIQUE_GUID, &guid(reproducible::uuid(seed, label)));
        put(slot, entry::STARTING_LBA, &p.first.to_le_bytes());
        put(slot, entry::ENDING_LBA, &p.last.to_le_bytes());
        let name: Vec<u8> = name
            .encode_utf16()
            .chain(std::iter::repeat(0))
            .take(entry::NAME_UNITS)
            .flat_map(u16::to_le_bytes)
            .collect();
        put(slot, entry::NAME, &name);
    }
    let entries_crc = crc32(&entries);
    let disk_guid = guid(reproducible::uuid(seed, "gpt disk"));

    let backup_entries = sectors - 1 - ENTRY_SECTORS;
    for (my, alternate, entries_at) in [(1, sectors - 1, 2), (sectors - 1, 1, backup_entries)] {
        let mut head = [0u8; SECTOR_SIZE];
        put(&mut head, header::SIGNATURE, SIGNATURE);
        put(&mut head, header::REVISION, &REVISION_1_0.to_le_bytes());
        put(&mut head, header::HEADER_SIZE, &header::SIZE.to_le_bytes());
        put(&mut head, header::MY_LBA, &u64::to_le_bytes(my));
        put(&mut head, header::ALTERNATE_LBA, &u64::to_le_bytes(alternate));
        put(&mut head, header::FIRST_USABLE_LBA, &(2 + ENTRY_SECTORS).to_le_bytes());
        put(&mut head, header::LAST_USABLE_LBA, &last_usable.to_le_bytes());
        put(&mut head, header::DISK_GUID, &disk_guid);
        put(&mut head, header::PARTITION_ENTRY_LBA, &u64::to_le_bytes(entries_at));
        put(&mut head, header::NUMBER_OF_ENTRIES, &ENTRIES.to_le_bytes());
        put(&mut head, header::SIZE_OF_ENTRY, &ENTRY_SIZE.to_le_bytes());
        put(&mut head, header::ENTRIES_CRC32, &entries_crc.to_le_bytes());
        let crc = crc32(&head[..header::SIZE as usize]);
        put(&mut head, header::HEADER_CRC32, &crc.to_le_bytes());
        put(&mut disk, my as usize * SECTOR_SIZE, &head);
        put(&mut disk, entries_at as usize * SECTOR_SIZE, &entries);
    }
    for p in partitions {
        put(&mut disk, p.first as usize * SECTOR_SIZE, p.bytes);
    }
    Ok(disk)
}

/// Writes the protective entry into slot 4 of `sector`: type 0xEE from LBA 1 over the rest of
/// the disk (at most 2^32 - 1 sectors), CHS fields as the specification gives them.
fn protective_entry(sector: &mut [u8], sectors: u64) {
    let size = (sectors - 1).min(u64::from(u32::MAX)) as u32;
    let mut slot = [0u8; SLOT_SIZE];
    slot[0] = 0; // not bootable
    slot[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    slot[SLOT_TYPE] = PROTECTIVE_TYPE;
    slot[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // CHS beyond what CHS can say
    slot[8..12].copy_from_slice(&1u32.to_le_bytes()); // starting LBA
    slot[12..16].copy_from_slice(&size.to_le_bytes());
    sector[PROTECTIVE_SLOT..PROTECTIVE_SLOT + SLOT_SIZE].copy_from_slice(&slot);
}

/// A GUID in GPT's (and VHDX's: Microsoft's) byte order from its RFC 4122 (big-endian) bytes:
/// the first three fields are stored little-endian.
pub fn guid(rfc: [u8; 16]) -> [u8; 16] {
    let mut out = rfc;
    out[0..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    out
}

/// Writes `bytes` into `buffer` at `at`.
pub fn put(buffer: &mut [u8], at: usize, bytes: &[u8]) {
    buffer[at..at + bytes.len()].copy_from_slice(bytes);
}

/// CRC-32 (IEEE 802.3, reflected, as GPT and zlib use it).
pub fn crc32(bytes: &[u8]) -> u32 {
    reflected_crc32(bytes, 0xEDB8_8320)
}

/// A reflected CRC-32 with the (reflected) polynomial `poly`, all ones in and out: IEEE 802.3's
/// for GPT, Castagnoli's for VHDX.
pub fn reflected_crc32(bytes: &[u8], poly: u32) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ poly } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid(ESP_TYPE),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }

    #[test]
    fn the_layout_has_both_headers_with_valid_crcs_and_the_esp_in_place() {
        let sectors = 2048;
        let (first, last) = esp_range(sectors);
        assert_eq!((first, last), (64, 2014));
        let mut sector = vec![0x90u8; SECTOR_SIZE];
        UNUSED_SLOT_TYPES.iter().for_each(|&offset| sector[offset] = 0);
        let esp = vec![0xE5; ((last - first + 1) as usize) * SECTOR_SIZE];
        let disk = disk(&sector, &esp, sectors, b"seed").unwrap();
        assert_eq!(disk.len(), 1 << 20);
        assert_eq!(disk[PROTECTIVE_SLOT + SLOT_TYPE], 0xEE);
        assert_eq!(disk[PROTECTIVE_SLOT + 8..PROTECTIVE_SLOT + 16], [1, 0, 0, 0, 255, 7, 0, 0]);
        for (lba, alternate, entries) in [(1u64, 2047u64, 2u64), (2047, 1, 2014 + 1)] {
            let head = &disk[lba as usize * 512..][..512];
            assert_eq!(&head[..8], SIGNATURE);
            let mut copy = head[..92].to_vec();
            copy[16..20].fill(0);
            assert_eq!(u32::from_le_bytes(head[16..20].try_into().unwrap()), crc32(&copy));
            let at =
                |offset: usize| u64::from_le_bytes(head[offset..offset + 8].try_into().unwrap());
            assert_eq!((at(header::MY_LBA), at(header::ALTERNATE_LBA)), (lba, alternate));
            assert_eq!(at(header::PARTITION_ENTRY_LBA), entries);
            let array = &disk[entries as usize * 512..][..16384];
            assert_eq!(u32::from_le_bytes(head[88..92].try_into().unwrap()), crc32(array));
            assert_eq!(array[..16], guid(ESP_TYPE));
        }
        assert!(disk[64 * 512..2015 * 512].iter().all(|&b| b == 0xE5));
        assert!(disk[34 * 512..64 * 512].iter().all(|&b| b == 0));
        // The same seed gives the same disk; another gives other GUIDs only.
        assert_eq!(disk, super::disk(&sector, &esp, sectors, b"seed").unwrap());
        assert_ne!(disk, super::disk(&sector, &esp, sectors, b"other").unwrap());
    }

    #[test]
    fn an_esp_of_the_wrong_size_or_a_tiny_disk_is_refused() {
        let sector = vec![0u8; SECTOR_SIZE];
        assert!(disk(&sector, &[0; 512], 2048, b"s").is_err());
        assert!(disk(&sector, &[], 100, b"s").is_err());
    }
}
