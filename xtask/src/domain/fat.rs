//! The FAT file system that holds the UEFI program: the disks' EFI System Partition and the CD's
//! El Torito UEFI image. One file, `\EFI\BOOT\BOOTX64.EFI`, in a FAT12 volume (Microsoft's FAT
//! specification 1.03: every field below is named after it).
//!
//! A writer of our own rather than a crate: the layout is fixed (two directories and one file,
//! written once, never changed), so it is a hundred lines, and the crate that would do it
//! (`fatfs` 0.3.6, the latest release) writes long-name entries for `.` and `..`, which
//! `fsck.fat` and 7-Zip report as damage. Reproducible by construction: every timestamp is FAT's
//! epoch (1980-01-01 00:00) and the volume ID comes from the caller.
//!
//! Layout, in 512-byte sectors: boot sector (BPB) | FAT 1 | FAT 2 | root directory (64 entries)
//! | data: cluster 2 = `\EFI`, cluster 3 = `\EFI\BOOT`, clusters 4.. = the program. One sector
//! per cluster.

use anyhow::{Result, bail};

use crate::domain::image::SECTOR_SIZE;

/// BIOS parameter block and extended boot record fields (offsets in the boot sector).
mod bpb {
    pub const JUMP: usize = 0;
    pub const OEM_NAME: usize = 3;
    pub const BYTES_PER_SECTOR: usize = 11;
    pub const SECTORS_PER_CLUSTER: usize = 13;
    pub const RESERVED_SECTORS: usize = 14;
    pub const NUMBER_OF_FATS: usize = 16;
    pub const ROOT_ENTRIES: usize = 17;
    pub const TOTAL_SECTORS_16: usize = 19;
    pub const MEDIA: usize = 21;
    pub const FAT_SIZE_16: usize = 22;
    pub const SECTORS_PER_TRACK: usize = 24;
    pub const NUMBER_OF_HEADS: usize = 26;
    pub const HIDDEN_SECTORS: usize = 28;
    pub const DRIVE_NUMBER: usize = 36;
    pub const BOOT_SIGNATURE: usize = 38;
    pub const VOLUME_ID: usize = 39;
    pub const VOLUME_LABEL: usize = 43;
    pub const FILE_SYSTEM_TYPE: usize = 54;
    /// Where the jump lands: code that halts (the volume is not bootable by a BIOS).
    pub const BOOT_CODE: usize = 62;
    pub const SIGNATURE: usize = 510;
}

/// Directory entry fields (32 bytes each).
mod entry {
    pub const NAME: usize = 0;
    pub const ATTRIBUTES: usize = 11;
    pub const CREATION_DATE: usize = 16;
    pub const ACCESS_DATE: usize = 18;
    pub const WRITE_DATE: usize = 24;
    pub const FIRST_CLUSTER: usize = 26;
    pub const FILE_SIZE: usize = 28;
    pub const SIZE: usize = 32;
}

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
/// 1980-01-01: day 1, month 1, year 0 (from 1980).
const EPOCH_DATE: u16 = 1 << 5 | 1;
const RESERVED_SECTORS: u32 = 1;
const NUMBER_OF_FATS: u32 = 2;
const ROOT_ENTRIES: u32 = 64;
const ROOT_SECTORS: u32 = ROOT_ENTRIES * entry::SIZE as u32 / SECTOR_SIZE as u32;
/// Media descriptor of a fixed disk; FAT entry 0 repeats it.
const MEDIA_FIXED: u8 = 0xF8;
/// FAT12 end-of-chain mark.
const END_OF_CHAIN: u16 = 0xFFF;
/// FAT12 holds at most 4084 clusters; more makes it FAT16 by definition.
const MAX_CLUSTERS: u32 = 4084;
/// The first data cluster, and the clusters of the two directories.
const EFI_DIR: u16 = 2;
const BOOT_DIR: u16 = 3;
const PROGRAM: u16 = 4;
/// The volume label UEFI tools show.
const LABEL: &[u8; 11] = b"EFI SYSTEM ";

/// The sizes that follow from a volume of `sectors` sectors.
struct Geometry {
    fat_sectors: u32,
    clusters: u32,
}

impl Geometry {
    fn of(sectors: u32) -> Result<Geometry> {
        // The FAT's size depends on the cluster count and the cluster count on the FAT's size:
        // grow the FAT until it covers what is left.
        let mut fat_sectors = 1;
        loop {
            let overhead = RESERVED_SECTORS + NUMBER_OF_FATS * fat_sectors + ROOT_SECTORS;
            let Some(clusters) = sectors.checked_sub(overhead) else {
                bail!("a FAT volume of {sectors} sectors has no room for data");
            };
            // 12 bits per entry, entries 0 and 1 reserved.
            let needed = ((clusters + 2) * 3).div_ceil(2).div_ceil(SECTOR_SIZE as u32);
            if needed <= fat_sectors {
                if clusters > MAX_CLUSTERS {
                    bail!("{sectors} sectors is too large for FAT12 ({clusters} clusters)");
                }
                return Ok(Geometry { fat_sectors, clusters });
            }
            fat_sectors = needed;
        }
    }

    fn data_start(&self) -> usize {
        (RESERVED_SECTORS + NUMBER_OF_FATS * self.fat_sectors + ROOT_SECTORS) as usize * SECTOR_SIZE
    }
}

/// A FAT12 volume of `sectors` sectors holding `program` as `\EFI\BOOT\BOOTX64.EFI`; `start` is
/// its first LBA on its disk (0 for a volume of its own), `volume_id` its serial number.
pub fn volume(program: &[u8], sectors: u32, start: u32, volume_id: u32) -> Result<Vec<u8>> {
    let geometry = Geometry::of(sectors)?;
    let program_clusters = program.len().div_ceil(SECTOR_SIZE).max(1) as u32;
    if program_clusters + 2 > geometry.clusters {
        bail!("the UEFI program ({} bytes) does not fit a {sectors}-sector volume", program.len());
    }
    let mut volume = vec![0u8; sectors as usize * SECTOR_SIZE];
    boot_sector(&mut volume[..SECTOR_SIZE], sectors, start, volume_id, &geometry);

    // The FAT: media and end-of-chain in entries 0 and 1, the two directories one cluster
    // each, the program's clusters in a chain. Both copies alike.
    let mut fat = vec![0u8; geometry.fat_sectors as usize * SECTOR_SIZE];
    set_fat12(&mut fat, 0, 0xF00 | u16::from(MEDIA_FIXED));
    set_fat12(&mut fat, 1, END_OF_CHAIN);
    set_fat12(&mut fat, EFI_DIR, END_OF_CHAIN);
    set_fat12(&mut fat, BOOT_DIR, END_OF_CHAIN);
    let last = PROGRAM + program_clusters as u16 - 1;
    for cluster in PROGRAM..last {
        set_fat12(&mut fat, cluster, cluster + 1);
    }
    set_fat12(&mut fat, last, END_OF_CHAIN);
    for copy in 0..NUMBER_OF_FATS as usize {
        let at = (RESERVED_SECTORS as usize + copy * geometry.fat_sectors as usize) * SECTOR_SIZE;
        volume[at..at + fat.len()].copy_from_slice(&fat);
    }

    let root = (RESERVED_SECTORS + NUMBER_OF_FATS * geometry.fat_sectors) as usize * SECTOR_SIZE;
    let cluster_at = |cluster: u16| geometry.data_start() + (cluster - 2) as usize * SECTOR_SIZE;
    let [efi, boot, file] = [b"EFI        ", b"BOOT       ", b"BOOTX64 EFI"];
    let entries: [(usize, &[u8; 11], u8, u16, u32); 8] = [
        (root, LABEL, ATTR_VOLUME_ID, 0, 0),
        (root + entry::SIZE, efi, ATTR_DIRECTORY, EFI_DIR, 0),
        (cluster_at(EFI_DIR), b".          ", ATTR_DIRECTORY, EFI_DIR, 0),
        // ".." of a directory in the root names cluster 0.
        (cluster_at(EFI_DIR) + entry::SIZE, b"..         ", ATTR_DIRECTORY, 0, 0),
        (cluster_at(EFI_DIR) + 2 * entry::SIZE, boot, ATTR_DIRECTORY, BOOT_DIR, 0),
        (cluster_at(BOOT_DIR), b".          ", ATTR_DIRECTORY, BOOT_DIR, 0),
        (cluster_at(BOOT_DIR) + entry::SIZE, b"..         ", ATTR_DIRECTORY, EFI_DIR, 0),
        (cluster_at(BOOT_DIR) + 2 * entry::SIZE, file, ATTR_ARCHIVE, PROGRAM, program.len() as u32),
    ];
    for (at, name, attributes, cluster, size) in entries {
        directory_entry(&mut volume[at..at + entry::SIZE], name, attributes, cluster, size);
    }
    let at = cluster_at(PROGRAM);
    volume[at..at + program.len()].copy_from_slice(program);
    Ok(volume)
}

/// Sectors of the smallest volume that holds `program`.
pub fn sectors_for(program: &[u8]) -> u32 {
    let clusters = program.len().div_ceil(SECTOR_SIZE) as u32 + 2;
    // Boot sector, one FAT sector each (up to 340 clusters), the root directory.
    RESERVED_SECTORS + NUMBER_OF_FATS + ROOT_SECTORS + clusters
}

fn boot_sector(sector: &mut [u8], sectors: u32, start: u32, volume_id: u32, geometry: &Geometry) {
    let mut put = |at: usize, bytes: &[u8]| sector[at..at + bytes.len()].copy_from_slice(bytes);
    // JMP short to the boot code, NOP.
    put(bpb::JUMP, &[0xEB, (bpb::BOOT_CODE - 2) as u8, 0x90]);
    put(bpb::OEM_NAME, b"MSWIN4.1"); // the name the specification recommends
    put(bpb::BYTES_PER_SECTOR, &(SECTOR_SIZE as u16).to_le_bytes());
    put(bpb::SECTORS_PER_CLUSTER, &[1]);
    put(bpb::RESERVED_SECTORS, &(RESERVED_SECTORS as u16).to_le_bytes());
    put(bpb::NUMBER_OF_FATS, &[NUMBER_OF_FATS as u8]);
    put(bpb::ROOT_ENTRIES, &(ROOT_ENTRIES as u16).to_le_bytes());
    put(bpb::TOTAL_SECTORS_16, &(sectors as u16).to_le_bytes());
    put(bpb::MEDIA, &[MEDIA_FIXED]);
    put(bpb::FAT_SIZE_16, &(geometry.fat_sectors as u16).to_le_bytes());
    put(bpb::SECTORS_PER_TRACK, &63u16.to_le_bytes());
    put(bpb::NUMBER_OF_HEADS, &255u16.to_le_bytes());
    put(bpb::HIDDEN_SECTORS, &start.to_le_bytes());
    put(bpb::DRIVE_NUMBER, &[0x80]);
    put(bpb::BOOT_SIGNATURE, &[0x29]); // the next three fields are present
    put(bpb::VOLUME_ID, &volume_id.to_le_bytes());
    put(bpb::VOLUME_LABEL, LABEL);
    put(bpb::FILE_SYSTEM_TYPE, b"FAT12   ");
    // CLI; HLT; JMP back to HLT: a BIOS that boots the volume by mistake stops there.
    put(bpb::BOOT_CODE, &[0xFA, 0xF4, 0xEB, 0xFD]);
    put(bpb::SIGNATURE, &[0x55, 0xAA]);
}

fn directory_entry(entry: &mut [u8], name: &[u8; 11], attributes: u8, cluster: u16, size: u32) {
    entry[entry::NAME..entry::NAME + 11].copy_from_slice(name);
    entry[entry::ATTRIBUTES] = attributes;
    for at in [entry::CREATION_DATE, entry::ACCESS_DATE, entry::WRITE_DATE] {
        entry[at..at + 2].copy_from_slice(&EPOCH_DATE.to_le_bytes());
    }
    entry[entry::FIRST_CLUSTER..entry::FIRST_CLUSTER + 2].copy_from_slice(&cluster.to_le_bytes());
    entry[entry::FILE_SIZE..entry::FILE_SIZE + 4].copy_from_slice(&size.to_le_bytes());
}

/// Sets FAT12 entry `index` (12 bits, packed two to three bytes) to `value`.
fn set_fat12(fat: &mut [u8], index: u16, value: u16) {
    let at = index as usize * 3 / 2;
    let pair = u16::from_le_bytes([fat[at], fat[at + 1]]);
    let pair = if index % 2 == 0 {
        (pair & 0xF000) | (value & 0x0FFF)
    } else {
        (pair & 0x000F) | (value << 4)
    };
    fat[at..at + 2].copy_from_slice(&pair.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_fat12(fat: &[u8], index: u16) -> u16 {
        let at = index as usize * 3 / 2;
        let pair = u16::from_le_bytes([fat[at], fat[at + 1]]);
        if index % 2 == 0 { pair & 0xFFF } else { pair >> 4 }
    }

    /// Follows `\EFI\BOOT\BOOTX64.EFI` from the root as a reader would, through the BPB, the
    /// directories and the cluster chain.
    fn read_back(volume: &[u8]) -> Vec<u8> {
        let word = |at: usize| u16::from_le_bytes([volume[at], volume[at + 1]]) as usize;
        let (reserved, fats, root_entries) = (
            word(bpb::RESERVED_SECTORS),
            volume[bpb::NUMBER_OF_FATS] as usize,
            word(bpb::ROOT_ENTRIES),
        );
        let fat_size = word(bpb::FAT_SIZE_16);
        let fat = &volume[reserved * 512..(reserved + fat_size) * 512];
        let root = (reserved + fats * fat_size) * 512;
        let data = root + root_entries * 32;
        let find = |directory: usize, name: &[u8]| -> (u16, u32) {
            let entries = &volume[directory..directory + 512];
            let found = entries.chunks(32).find(|e| &e[..11] == name).expect("entry");
            (
                u16::from_le_bytes([found[26], found[27]]),
                u32::from_le_bytes(found[28..32].try_into().unwrap()),
            )
        };
        let cluster = |c: u16| data + (c as usize - 2) * 512;
        let (efi, _) = find(root, b"EFI        ");
        let (boot, _) = find(cluster(efi), b"BOOT       ");
        let (mut next, size) = find(cluster(boot), b"BOOTX64 EFI");
        let mut bytes = Vec::new();
        while next < 0xFF8 {
            bytes.extend_from_slice(&volume[cluster(next)..cluster(next) + 512]);
            next = get_fat12(fat, next);
        }
        bytes.truncate(size as usize);
        bytes
    }

    #[test]
    fn fat12_entries_pack_two_in_three_bytes() {
        let mut fat = vec![0u8; 6];
        set_fat12(&mut fat, 0, 0xFF8);
        set_fat12(&mut fat, 1, 0xFFF);
        set_fat12(&mut fat, 2, 0x123);
        set_fat12(&mut fat, 3, 0x456);
        assert_eq!(fat, [0xF8, 0xFF, 0xFF, 0x23, 0x61, 0x45]);
        assert_eq!((get_fat12(&fat, 2), get_fat12(&fat, 3)), (0x123, 0x456));
    }

    #[test]
    fn the_program_reads_back_and_the_volume_is_reproducible() {
        let program: Vec<u8> = (0..3584u32).map(|i| (i * 7) as u8).collect();
        let volume = volume(&program, 1951, 64, 0x1234_5678).unwrap();
        assert_eq!(volume.len(), 1951 * 512);
        assert_eq!(read_back(&volume), program);
        assert_eq!(&volume[bpb::FILE_SYSTEM_TYPE..bpb::FILE_SYSTEM_TYPE + 8], b"FAT12   ");
        assert_eq!(volume[bpb::HIDDEN_SECTORS..bpb::HIDDEN_SECTORS + 4], [64, 0, 0, 0]);
        assert_eq!(volume[510..512], [0x55, 0xAA]);
        assert_eq!(volume, super::volume(&program, 1951, 64, 0x1234_5678).unwrap());
    }

    #[test]
    fn the_smallest_volume_still_holds_the_program_and_a_too_small_one_is_refused() {
        let program = vec![0xCC; 4096];
        let sectors = sectors_for(&program);
        assert_eq!(read_back(&volume(&program, sectors, 0, 1).unwrap()), program);
        assert!(volume(&program, sectors - 1, 0, 1).is_err());
        assert!(volume(&program, 5000, 0, 1).is_err(), "FAT12 ends at 4084 clusters");
    }
}
