//! The VHDX writer: Hyper-V's disk format (generation 2 VMs attach nothing else), written by the
//! xtask rather than qemu-img, whose output is 16 MiB for our 1 MiB disk (an 8 MiB log and
//! 8 MiB blocks by default) and carries random GUIDs. This one is the smallest file the format
//! allows: every region is 1 MiB aligned and at least 1 MiB long, so the headers, a 1 MiB log
//! (empty: no log GUID in the header, so nothing to replay), the metadata, the block allocation
//! table and one 1 MiB payload block take 5 MiB. Its GUIDs come from the disk's content.
//!
//! Layout and fields: Microsoft's "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format", 2.
//! GUIDs are stored as Microsoft stores them (the first three fields little-endian).

use crate::domain::gpt::{self, put};
use crate::domain::reproducible;

/// One mebibyte: the format's alignment for every region and the smallest block.
const MIB: usize = 1 << 20;
/// Where each part lies (2.1: the header section is the file's first 1 MiB).
const HEADER_1: usize = 64 * 1024;
const HEADER_2: usize = 128 * 1024;
const REGION_TABLE_1: usize = 192 * 1024;
const REGION_TABLE_2: usize = 256 * 1024;
const LOG: usize = MIB;
const METADATA: usize = 2 * MIB;
const BAT: usize = 3 * MIB;
const PAYLOAD: usize = 4 * MIB;
/// Sizes: a header 4 KiB, a region table 64 KiB; the log, metadata and BAT regions 1 MiB each.
const HEADER_SIZE: usize = 4 * 1024;
const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The payload block size: the smallest the format allows, and our disk's whole size.
pub const BLOCK_SIZE: usize = MIB;
const SECTOR_SIZE: u32 = 512;

/// Region GUIDs (2.2.3.1) and metadata item GUIDs (2.6.2), RFC 4122 order.
const BAT_REGION: u128 = 0x2DC27766_F623_4200_9D64_115E9BFD4A08;
const METADATA_REGION: u128 = 0x8B7CA206_4790_4B9A_B8FE_575F050F886E;
const FILE_PARAMETERS: u128 = 0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B;
const VIRTUAL_DISK_SIZE: u128 = 0x2FA54224_CD1B_4876_B211_5DBED83BF4B8;
const VIRTUAL_DISK_ID: u128 = 0xBECA12AB_B2E6_4523_93EF_C309E000C746;
const LOGICAL_SECTOR_SIZE: u128 = 0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F;
const PHYSICAL_SECTOR_SIZE: u128 = 0xCDA348C7_445D_4471_9CC9_E9885251C556;
/// Metadata entry flags (2.6.1.2): IsVirtualDisk (bit 1), IsRequired (bit 2).
const IS_VIRTUAL_DISK: u32 = 1 << 1;
const IS_REQUIRED: u32 = 1 << 2;
/// Where the metadata items' data starts within the metadata region (2.6.1: at 64 KiB or more).
const METADATA_ITEMS: usize = 64 * 1024;
/// BAT entry state 6: PAYLOAD_BLOCK_FULLY_PRESENT (2.5.1.1); the file offset in MiB from bit 20.
const FULLY_PRESENT: u64 = 6;

/// The VHDX file holding `disk` (at most one block: [`BLOCK_SIZE`]), its GUIDs derived from
/// `seed`.
pub fn dynamic(disk: &[u8], seed: &[u8]) -> Vec<u8> {
    assert!(disk.len() <= BLOCK_SIZE && disk.len().is_multiple_of(SECTOR_SIZE as usize));
    let mut file = vec![0u8; PAYLOAD + BLOCK_SIZE];

    // The file type identifier: the signature, then the creator (UTF-16, optional).
    put(&mut file, 0, b"vhdxfile");
    for (i, unit) in "512-byte-vm xtask".encode_utf16().enumerate() {
        put(&mut file, 8 + 2 * i, &unit.to_le_bytes());
    }

    // Two headers, the second newer (a reader takes the higher sequence number; both valid).
    let guid = |purpose: &str| gpt::guid(reproducible::uuid(seed, purpose));
    for (at, sequence) in [(HEADER_1, 1u64), (HEADER_2, 2)] {
        let header = &mut file[at..at + HEADER_SIZE];
        put(header, 0, b"head");
        put(header, 8, &sequence.to_le_bytes());
        put(header, 16, &guid("vhdx file write"));
        put(header, 32, &guid("vhdx data write"));
        // The log GUID (48) stays zero: the log holds nothing to replay.
        put(header, 64, &0u16.to_le_bytes()); // log version
        put(header, 66, &1u16.to_le_bytes()); // version
        put(header, 68, &(MIB as u32).to_le_bytes()); // log length
        put(header, 72, &(LOG as u64).to_le_bytes()); // log offset
        let checksum = crc32c(header);
        put(header, 4, &checksum.to_le_bytes());
    }

    // Two identical region tables: the BAT and the metadata, both required.
    for at in [REGION_TABLE_1, REGION_TABLE_2] {
        let table = &mut file[at..at + REGION_TABLE_SIZE];
        put(table, 0, b"regi");
        put(table, 8, &2u32.to_le_bytes()); // entry count
        for (i, (id, offset)) in [(BAT_REGION, BAT), (METADATA_REGION, METADATA)].iter().enumerate()
        {
            let entry = 16 + 32 * i;
            put(table, entry, &gpt::guid(id.to_be_bytes()));
            put(table, entry + 16, &(*offset as u64).to_le_bytes());
            put(table, entry + 24, &(MIB as u32).to_le_bytes());
            put(table, entry + 28, &1u32.to_le_bytes()); // required
        }
        let checksum = crc32c(table);
        put(table, 4, &checksum.to_le_bytes());
    }

    // The metadata table and its five items.
    let disk_id = guid("vhdx virtual disk");
    let items: [(u128, u32, Vec<u8>); 5] = [
        (FILE_PARAMETERS, IS_REQUIRED, [(BLOCK_SIZE as u32).to_le_bytes(), [0; 4]].concat()),
        (
            VIRTUAL_DISK_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            (disk.len() as u64).to_le_bytes().into(),
        ),
        (VIRTUAL_DISK_ID, IS_VIRTUAL_DISK | IS_REQUIRED, disk_id.into()),
        (LOGICAL_SECTOR_SIZE, IS_VIRTUAL_DISK | IS_REQUIRED, SECTOR_SIZE.to_le_bytes().into()),
        (PHYSICAL_SECTOR_SIZE, IS_VIRTUAL_DISK | IS_REQUIRED, SECTOR_SIZE.to_le_bytes().into()),
    ];
    let metadata = &mut file[METADATA..METADATA + MIB];
    put(metadata, 0, b"metadata");
    put(metadata, 10, &(items.len() as u16).to_le_bytes());
    let mut data_at = METADATA_ITEMS;
    for (i, (id, flags, data)) in items.iter().enumerate() {
        let entry = 32 + 32 * i;
        put(metadata, entry, &gpt::guid(id.to_be_bytes()));
        put(metadata, entry + 16, &(data_at as u32).to_le_bytes());
        put(metadata, entry + 20, &(data.len() as u32).to_le_bytes());
        put(metadata, entry + 24, &flags.to_le_bytes());
        put(metadata, data_at, data);
        data_at += data.len();
    }

    // One BAT entry (one payload block, fewer than a chunk: no sector bitmap entry), and the
    // block: the disk, zero-padded to the block.
    let entry = ((PAYLOAD / MIB) as u64) << 20 | FULLY_PRESENT;
    put(&mut file, BAT, &entry.to_le_bytes());
    put(&mut file, PAYLOAD, disk);
    file
}

/// CRC-32C (Castagnoli, reflected), as VHDX checksums its headers and region tables.
pub fn crc32c(bytes: &[u8]) -> u32 {
    gpt::reflected_crc32(bytes, 0x82F6_3B78)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn the_file_is_five_mib_with_the_disk_in_its_one_block() {
        let disk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let file = dynamic(&disk, b"seed");
        assert_eq!(file.len(), 5 * MIB);
        assert_eq!(&file[PAYLOAD..], &disk[..]);
        assert_eq!(dynamic(&disk, b"seed"), file, "the same content, the same bytes");
        assert_ne!(
            dynamic(&disk, b"other")[HEADER_1..HEADER_1 + 64],
            file[HEADER_1..HEADER_1 + 64]
        );
    }
}
