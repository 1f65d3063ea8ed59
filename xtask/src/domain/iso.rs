//! A minimal ISO 9660 image with two El Torito "no emulation" boot entries: the boot sector for
//! PC BIOSes, and a FAT image holding `\EFI\BOOT\BOOTX64.EFI` for UEFI firmware (platform ID
//! 0xEF). Written here rather than by an external tool so that it needs nothing installed, stays
//! under 128 KiB and rebuilds bit for bit (no timestamps, no random IDs).
//!
//! Layout, in 2048-byte logical sectors:
//!
//! | sector | content |
//! | --- | --- |
//! | 0-15 | system area (zeros) |
//! | 16 | primary volume descriptor |
//! | 17 | El Torito boot record volume descriptor |
//! | 18 | volume descriptor set terminator |
//! | 19 | L path table (little-endian) |
//! | 20 | M path table (big-endian) |
//! | 21 | root directory: `.`, `..`, `BOOT.CAT;1`, `BOOT.IMG;1`, `EFI.IMG;1` |
//! | 22 | boot catalog |
//! | 23 | boot image: the 512-byte boot sector, zero-padded |
//! | 24- | UEFI boot image: the FAT volume, zero-padded to whole sectors |
//!
//! The net family's boot image is its loader sector with the program behind it: it takes as
//! many sectors from 23 as it needs, the BIOS loads all of it, and the UEFI image follows.

/// ISO 9660 logical sector size.
pub const SECTOR: usize = 2048;

const PRIMARY_VOLUME_DESCRIPTOR: usize = 16;
const BOOT_RECORD: usize = 17;
const TERMINATOR: usize = 18;
const L_PATH_TABLE: usize = 19;
const M_PATH_TABLE: usize = 20;
const ROOT_DIRECTORY: usize = 21;
const BOOT_CATALOG: usize = 22;
const BOOT_IMAGE: usize = 23;
/// El Torito platform ID of UEFI.
const PLATFORM_EFI: u8 = 0xEF;
/// El Torito section header: 0x91 = the final section header.
const FINAL_SECTION_HEADER: u8 = 0x91;

/// Standard identifier of every volume descriptor.
const CD001: &[u8; 5] = b"CD001";
/// Size of a path table with only the root in it: 8 bytes + 1-byte name + 1 byte padding.
const PATH_TABLE_SIZE: u32 = 10;
/// Virtual 512-byte sectors the BIOS loads from the boot image: 4, i.e. one CD sector, the
/// count the common tools use and every BIOS handles.
const BOOT_LOAD_SECTORS: u16 = 4;
/// Recording date of every directory record (years since 1900, month, day, h, m, s, GMT
/// offset): fixed, so that the image is reproducible.
const RECORDED: [u8; 7] = [80, 1, 1, 0, 0, 0, 0];

/// Builds the ISO image around `boot_sector` (the BIOS boot image: 512 bytes, or a loader with
/// its program, whole 512-byte sectors) and `efi_image` (a FAT volume with the UEFI program, a
/// whole number of 512-byte sectors).
pub fn build(boot_sector: &[u8], efi_image: &[u8]) -> Vec<u8> {
    let efi_at = BOOT_IMAGE + boot_sector.len().div_ceil(SECTOR).max(1);
    let boot_load_sectors =
        u16::try_from(boot_sector.len().div_ceil(512)).unwrap_or(u16::MAX).max(BOOT_LOAD_SECTORS);
    let sectors = efi_at + efi_image.len().div_ceil(SECTOR);
    let mut iso = vec![0u8; sectors * SECTOR];
    let sector = |n: usize| n * SECTOR..(n + 1) * SECTOR;
    primary_volume_descriptor(&mut iso[sector(PRIMARY_VOLUME_DESCRIPTOR)], sectors as u32);
    boot_record(&mut iso[sector(BOOT_RECORD)]);
    descriptor_header(&mut iso[sector(TERMINATOR)], 255);
    path_table(&mut iso[sector(L_PATH_TABLE)], Endian::Little);
    path_table(&mut iso[sector(M_PATH_TABLE)], Endian::Big);
    let sizes = [boot_sector.len() as u32, efi_image.len() as u32];
    root_directory(&mut iso[sector(ROOT_DIRECTORY)], sizes, efi_at);
    let efi_load_sectors = u16::try_from(efi_image.len() / 512).unwrap_or(u16::MAX);
    boot_catalog(&mut iso[sector(BOOT_CATALOG)], boot_load_sectors, efi_load_sectors, efi_at);
    let start = BOOT_IMAGE * SECTOR;
    iso[start..start + boot_sector.len()].copy_from_slice(boot_sector);
    let start = efi_at * SECTOR;
    iso[start..start + efi_image.len()].copy_from_slice(efi_image);
    iso
}

/// Type byte, "CD001", version 1.
fn descriptor_header(descriptor: &mut [u8], kind: u8) {
    descriptor[0] = kind;
    descriptor[1..6].copy_from_slice(CD001);
    descriptor[6] = 1;
}

/// ISO 9660 "both-byte-order" 32-bit field: little-endian, then big-endian.
fn both32(value: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

/// Both-byte-order 16-bit field.
fn both16(value: u16) -> [u8; 4] {
    let mut out = [0; 4];
    out[..2].copy_from_slice(&value.to_le_bytes());
    out[2..].copy_from_slice(&value.to_be_bytes());
    out
}

/// A text field padded with spaces, as ISO 9660 wants for identifiers.
fn text(field: &mut [u8], value: &str) {
    field.fill(b' ');
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// ECMA-119 8.4: the primary volume descriptor.
fn primary_volume_descriptor(pvd: &mut [u8], sectors: u32) {
    descriptor_header(pvd, 1);
    text(&mut pvd[8..40], ""); // system identifier
    text(&mut pvd[40..72], "512_BYTE_VM"); // volume identifier (d-characters)
    pvd[80..88].copy_from_slice(&both32(sectors)); // volume space size
    pvd[120..124].copy_from_slice(&both16(1)); // volume set size
    pvd[124..128].copy_from_slice(&both16(1)); // volume sequence number
    pvd[128..132].copy_from_slice(&both16(SECTOR as u16)); // logical block size
    pvd[132..140].copy_from_slice(&both32(PATH_TABLE_SIZE));
    pvd[140..144].copy_from_slice(&(L_PATH_TABLE as u32).to_le_bytes());
    pvd[148..152].copy_from_slice(&(M_PATH_TABLE as u32).to_be_bytes());
    directory_record(&mut pvd[156..190], ROOT_DIRECTORY as u32, SECTOR as u32, true, &[0]);
    text(&mut pvd[190..318], ""); // volume set identifier
    text(&mut pvd[318..446], ""); // publisher
    text(&mut pvd[446..574], ""); // data preparer
    text(&mut pvd[574..702], "512-BYTE VM"); // application
    text(&mut pvd[702..813], ""); // copyright, abstract and bibliographic file identifiers
    // Creation, modification, expiration and effective dates: "not specified" (16 ASCII zeros
    // and a zero time zone), which keeps the image reproducible.
    for date in pvd[813..881].chunks_mut(17) {
        date[..16].fill(b'0');
        date[16] = 0;
    }
    pvd[881] = 1; // file structure version
}

/// El Torito 2.0: the boot record volume descriptor, pointing at the boot catalog.
fn boot_record(record: &mut [u8]) {
    descriptor_header(record, 0);
    record[7..7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    record[71..75].copy_from_slice(&(BOOT_CATALOG as u32).to_le_bytes());
}

/// Byte order of a path table: ISO 9660 stores one of each.
#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

/// ECMA-119 9.4: a path table with the root directory only.
fn path_table(table: &mut [u8], endian: Endian) {
    let (extent, parent) = match endian {
        Endian::Little => ((ROOT_DIRECTORY as u32).to_le_bytes(), 1u16.to_le_bytes()),
        Endian::Big => ((ROOT_DIRECTORY as u32).to_be_bytes(), 1u16.to_be_bytes()),
    };
    table[0] = 1; // identifier length
    table[2..6].copy_from_slice(&extent);
    table[6..8].copy_from_slice(&parent); // the root is its own parent (directory number 1)
    table[8] = 0; // the root's identifier
}

/// ECMA-119 9.1: one directory record. Returns its length.
fn directory_record(
    record: &mut [u8],
    extent: u32,
    size: u32,
    directory: bool,
    name: &[u8],
) -> usize {
    // 33 fixed bytes + name, padded to an even length.
    let length = 33 + name.len() + (name.len() + 1) % 2;
    record[0] = length as u8;
    record[2..10].copy_from_slice(&both32(extent));
    record[10..18].copy_from_slice(&both32(size));
    record[18..25].copy_from_slice(&RECORDED);
    record[25] = if directory { 2 } else { 0 }; // file flags: bit 1 = directory
    record[28..32].copy_from_slice(&both16(1)); // volume sequence number
    record[32] = name.len() as u8;
    record[33..33 + name.len()].copy_from_slice(name);
    length
}

/// The root directory: itself, its parent (itself), the boot catalog and both boot images as
/// files.
fn root_directory(
    directory: &mut [u8],
    [boot_image_size, efi_image_size]: [u32; 2],
    efi_at: usize,
) {
    let root = (ROOT_DIRECTORY as u32, SECTOR as u32);
    let entries: [(u32, u32, bool, &[u8]); 5] = [
        (root.0, root.1, true, &[0]), // "."
        (root.0, root.1, true, &[1]), // ".."
        (BOOT_CATALOG as u32, SECTOR as u32, false, b"BOOT.CAT;1"),
        (BOOT_IMAGE as u32, boot_image_size, false, b"BOOT.IMG;1"),
        (efi_at as u32, efi_image_size, false, b"EFI.IMG;1"),
    ];
    let mut at = 0;
    for (extent, size, is_directory, name) in entries {
        at += directory_record(&mut directory[at..], extent, size, is_directory, name);
    }
}

/// El Torito 2.0: validation entry plus initial/default entry (bootable, no emulation, load
/// segment 0 = the BIOS default 07C0, `boot_load_sectors` from the boot image), then the final
/// section header for platform 0xEF (UEFI) with its one entry: bootable, no emulation,
/// `efi_load_sectors` 512-byte sectors of the FAT image at `efi_at`.
fn boot_catalog(catalog: &mut [u8], boot_load_sectors: u16, efi_load_sectors: u16, efi_at: usize) {
    let validation = &mut catalog[..32];
    validation[0] = 1; // header ID
    validation[1] = 0; // platform: 80x86
    validation[30] = 0x55;
    validation[31] = 0xAA;
    // The 16-bit words of the entry must sum to zero.
    let sum = validation
        .chunks(2)
        .fold(0u16, |sum, word| sum.wrapping_add(u16::from_le_bytes([word[0], word[1]])));
    validation[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());

    let initial = &mut catalog[32..64];
    initial[0] = 0x88; // bootable
    initial[1] = 0; // no emulation
    initial[2..4].copy_from_slice(&0u16.to_le_bytes()); // load segment: BIOS default (07C0)
    initial[6..8].copy_from_slice(&boot_load_sectors.to_le_bytes());
    initial[8..12].copy_from_slice(&(BOOT_IMAGE as u32).to_le_bytes());

    let header = &mut catalog[64..96];
    header[0] = FINAL_SECTION_HEADER;
    header[1] = PLATFORM_EFI;
    header[2..4].copy_from_slice(&1u16.to_le_bytes()); // entries in the section

    let entry = &mut catalog[96..128];
    entry[0] = 0x88; // bootable
    entry[1] = 0; // no emulation
    entry[6..8].copy_from_slice(&efi_load_sectors.to_le_bytes());
    entry[8..12].copy_from_slice(&(efi_at as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_sector() -> Vec<u8> {
        let mut sector: Vec<u8> = (0..512).map(|i| (i * 7) as u8).collect();
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector
    }

    fn sample_efi() -> Vec<u8> {
        vec![0xEF; 60 * 512]
    }

    fn build(sector: &[u8]) -> Vec<u8> {
        super::build(sector, &sample_efi())
    }

    fn at(iso: &[u8], sector: usize) -> &[u8] {
        &iso[sector * SECTOR..(sector + 1) * SECTOR]
    }

    fn le32(bytes: &[u8]) -> u32 {
        u32::from_le_bytes(bytes[..4].try_into().unwrap())
    }

    #[test]
    fn volume_descriptors_are_where_readers_look() {
        let iso = build(&sample_sector());
        assert_eq!(iso.len(), (24 + 15) * 2048);
        assert!(iso.len() <= 128 * 1024);
        let pvd = at(&iso, 16);
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(pvd[80..88], [39, 0, 0, 0, 0, 0, 0, 39], "volume size, both byte orders");
        assert_eq!(&pvd[40..51], b"512_BYTE_VM");
        assert_eq!(&at(&iso, 17)[..30], b"\x00CD001\x01EL TORITO SPECIFICATION");
        assert_eq!(&at(&iso, 18)[..7], b"\xFFCD001\x01");
        assert!(iso[..16 * 2048].iter().all(|&b| b == 0), "system area is zero");
    }

    #[test]
    fn boot_catalog_validates_and_points_at_the_boot_sector() {
        let sector = sample_sector();
        let iso = build(&sector);
        let catalog_sector = le32(&at(&iso, 17)[71..]) as usize;
        let catalog = at(&iso, catalog_sector);
        let validation = &catalog[..32];
        let sum = validation
            .chunks(2)
            .fold(0u16, |s, w| s.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
        assert_eq!(sum, 0, "validation entry checksum");
        assert_eq!(validation[30..32], [0x55, 0xAA]);
        let initial = &catalog[32..64];
        assert_eq!(initial[0], 0x88, "bootable");
        assert_eq!(initial[1], 0, "no emulation");
        assert_eq!(u16::from_le_bytes([initial[6], initial[7]]), 4);
        let image = le32(&initial[8..]) as usize;
        assert_eq!(&at(&iso, image)[..512], &sector[..]);
        let header = &catalog[64..96];
        assert_eq!(header[..4], [0x91, 0xEF, 1, 0], "final section header, UEFI, one entry");
        let efi = &catalog[96..128];
        assert_eq!(efi[..2], [0x88, 0], "bootable, no emulation");
        assert_eq!(u16::from_le_bytes([efi[6], efi[7]]), 60);
        let start = le32(&efi[8..]) as usize * SECTOR;
        assert_eq!(&iso[start..start + 60 * 512], &sample_efi()[..]);
    }

    #[test]
    fn root_directory_lists_the_boot_files() {
        let iso = build(&sample_sector());
        let pvd = at(&iso, 16);
        let root_extent = le32(&pvd[156 + 2..]) as usize;
        let root = at(&iso, root_extent);
        let mut names = Vec::new();
        let mut offset = 0;
        while root[offset] != 0 {
            let record = &root[offset..offset + root[offset] as usize];
            assert_eq!(record.len() % 2, 0, "records have even length");
            names.push(record[33..33 + record[32] as usize].to_vec());
            offset += record.len();
        }
        assert_eq!(
            names,
            [
                b"\0".to_vec(),
                b"\x01".to_vec(),
                b"BOOT.CAT;1".to_vec(),
                b"BOOT.IMG;1".to_vec(),
                b"EFI.IMG;1".to_vec()
            ]
        );
        // L and M path tables agree on the root's extent.
        assert_eq!(le32(&at(&iso, 19)[2..]) as usize, root_extent);
        assert_eq!(
            u32::from_be_bytes(at(&iso, 20)[2..6].try_into().unwrap()) as usize,
            root_extent
        );
    }

    #[test]
    fn the_same_sector_gives_the_same_image() {
        assert!(build(&sample_sector()) == build(&sample_sector()));
    }
}
