//! The VMDK, written here: a monolithicSparse hosted extent (VMware's "Virtual Disk Format 1.1"),
//! with 8 KiB grains.
//!
//! qemu-img writes 64 KiB grains, and a GPT disk has data at both ends (sector 0, the backup
//! header in the last sector): two grains and 64 KiB of metadata, 192 KiB, where the original
//! bundle's VMDK (one grain) took 128 KiB. The specification lets the grain be any power of two
//! of at least 8 sectors, and VirtualBox, QEMU and libvmdk read any such; 16 sectors keep the
//! file at about 64 KiB. Everything else is what qemu-img writes: the header fields, the
//! descriptor text, a redundant grain directory and table. Reproducible by construction: the
//! content ID comes from the caller.
//!
//! Layout, in 512-byte sectors: header | descriptor (20) | redundant grain directory (1) and
//! grain table (4) | grain directory (1) and grain table (4) | padding to a grain | the
//! non-zero grains, in disk order.

use crate::domain::image::SECTOR_SIZE;

/// Sparse extent header fields (offsets in sector 0).
mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 8;
    pub const CAPACITY: usize = 12;
    pub const GRAIN_SIZE: usize = 20;
    pub const DESCRIPTOR_OFFSET: usize = 28;
    pub const DESCRIPTOR_SIZE: usize = 36;
    pub const GTES_PER_GT: usize = 44;
    pub const RGD_OFFSET: usize = 48;
    pub const GD_OFFSET: usize = 56;
    pub const OVERHEAD: usize = 64;
    /// '\n', ' ', '\r', '\n': lets a reader tell a file damaged by a text-mode transfer.
    pub const LINE_CHARS: usize = 73;
}

/// "KDMV" read as a little-endian word.
const MAGIC: &[u8; 4] = b"KDMV";
/// Flags: bit 0, the line-ending check is valid; bit 1, a redundant grain table is present.
const FLAGS: u32 = 0b11;
/// Sectors per grain.
pub const GRAIN_SECTORS: u64 = 16;
/// Grain table entries per grain table (the specification's fixed 512).
const GTES_PER_GT: u64 = 512;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
const RGD_OFFSET: u64 = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;

/// The monolithicSparse VMDK of `disk` (whole sectors), naming `file_name` as its own extent,
/// with content ID `cid`.
pub fn monolithic_sparse(disk: &[u8], file_name: &str, cid: u32) -> Vec<u8> {
    let sectors = (disk.len() / SECTOR_SIZE) as u64;
    let grains = sectors.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GTES_PER_GT);
    let directory_sectors = (tables * 4).div_ceil(SECTOR_SIZE as u64);
    let table_sectors = tables * GTES_PER_GT * 4 / SECTOR_SIZE as u64;
    let gd_offset = RGD_OFFSET + directory_sectors + table_sectors;
    let overhead = (gd_offset + directory_sectors + table_sectors).next_multiple_of(GRAIN_SECTORS);

    let mut file = vec![0u8; overhead as usize * SECTOR_SIZE];
    let mut put = |at: usize, bytes: &[u8]| file[at..at + bytes.len()].copy_from_slice(bytes);
    put(header::MAGIC, MAGIC);
    put(header::VERSION, &1u32.to_le_bytes());
    put(header::FLAGS, &FLAGS.to_le_bytes());
    put(header::CAPACITY, &sectors.to_le_bytes());
    put(header::GRAIN_SIZE, &GRAIN_SECTORS.to_le_bytes());
    put(header::DESCRIPTOR_OFFSET, &DESCRIPTOR_OFFSET.to_le_bytes());
    put(header::DESCRIPTOR_SIZE, &DESCRIPTOR_SECTORS.to_le_bytes());
    put(header::GTES_PER_GT, &(GTES_PER_GT as u32).to_le_bytes());
    put(header::RGD_OFFSET, &RGD_OFFSET.to_le_bytes());
    put(header::GD_OFFSET, &gd_offset.to_le_bytes());
    put(header::OVERHEAD, &overhead.to_le_bytes());
    put(header::LINE_CHARS, b"\n \r\n");
    let text = descriptor(sectors, file_name, cid);
    put(DESCRIPTOR_OFFSET as usize * SECTOR_SIZE, text.as_bytes());

    // Each grain with a non-zero byte is stored, in order, after the metadata; its table entry
    // holds its sector in the file. All-zero grains stay unallocated (they read as zeros).
    let grain_bytes = GRAIN_SECTORS as usize * SECTOR_SIZE;
    let mut entries = vec![0u32; (tables * GTES_PER_GT) as usize];
    let mut data = Vec::new();
    for (index, grain) in disk.chunks(grain_bytes).enumerate() {
        if grain.iter().any(|&b| b != 0) {
            entries[index] = (overhead + (data.len() / SECTOR_SIZE) as u64) as u32;
            data.extend_from_slice(grain);
            data.resize(data.len().next_multiple_of(grain_bytes), 0);
        }
    }
    let table: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    for directory in [RGD_OFFSET, gd_offset] {
        let first_table = directory + directory_sectors;
        let at = directory as usize * SECTOR_SIZE;
        for t in 0..tables {
            let table_at = (first_table + t * GTES_PER_GT * 4 / SECTOR_SIZE as u64) as u32;
            put(at + t as usize * 4, &table_at.to_le_bytes());
        }
        put(first_table as usize * SECTOR_SIZE, &table);
    }
    file.extend_from_slice(&data);
    file
}

/// The descriptor, as qemu-img writes it for an IDE disk of `sectors`.
fn descriptor(sectors: u64, file_name: &str, cid: u32) -> String {
    let (heads, sectors_per_track) = (16, 63);
    let cylinders = (sectors / (heads * sectors_per_track)).max(1);
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"monolithicSparse\"\n\n# Extent description\nRW {sectors} SPARSE \
         \"{file_name}\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{sectors_per_track}\"\nddb.adapterType = \"ide\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads sector `lba` of the disk back through the grain directory and table, as a reader
    /// does.
    fn read_sector(file: &[u8], lba: u64) -> Vec<u8> {
        let word = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let gd = u64::from_le_bytes(file[header::GD_OFFSET..][..8].try_into().unwrap()) as usize;
        let grain = (lba / GRAIN_SECTORS) as usize;
        let table = word(gd * 512 + grain / 512 * 4);
        let at = word(table * 512 + grain % 512 * 4);
        if at == 0 {
            return vec![0; 512];
        }
        let offset = (at + (lba % GRAIN_SECTORS) as usize) * 512;
        file[offset..offset + 512].to_vec()
    }

    #[test]
    fn the_disk_reads_back_and_only_non_zero_grains_are_stored() {
        let mut disk = vec![0u8; 2048 * 512];
        disk[..512].fill(0x11);
        disk[70 * 512..71 * 512].fill(0x22);
        disk[2047 * 512..].fill(0x33);
        let file = monolithic_sparse(&disk, "d.vmdk", 0x1234_abcd);
        assert_eq!(&file[..4], b"KDMV");
        for lba in [0, 1, 16, 70, 71, 1000, 2046, 2047] {
            assert_eq!(read_sector(&file, lba), disk[lba as usize * 512..][..512], "LBA {lba}");
        }
        // Metadata (32 sectors) and three 8 KiB grains.
        assert_eq!(file.len(), 32 * 512 + 3 * 8192);
        let text = String::from_utf8_lossy(&file[512..1536]).into_owned();
        assert!(text.contains("CID=1234abcd\n") && text.contains("RW 2048 SPARSE \"d.vmdk\""));
        assert_eq!(file, monolithic_sparse(&disk, "d.vmdk", 0x1234_abcd));
    }
}
