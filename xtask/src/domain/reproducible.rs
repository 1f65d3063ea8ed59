//! Bit-for-bit reproducible disk files: the identifiers and timestamps qemu-img writes at random
//! (VDI image and snapshot UUIDs, VHD unique ID and timestamp; the VMDK, which the xtask writes
//! itself, takes its content ID from here) replaced with
//! values derived from the disk's content (and so its message), and timestamps fixed:
//! `SOURCE_DATE_EPOCH` when set, the format's epoch otherwise.
//!
//! Two copies of one file share these identifiers, as any two copies of a disk file do; a
//! platform that registers disks by UUID (VirtualBox) needs a fresh one per copy (see
//! docs/formats.md).

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

use crate::domain::formats::Format;

/// The environment variable of reproducible builds: a Unix time for every timestamp.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// `SOURCE_DATE_EPOCH`, or `None` when unset; an error when it is not a number.
pub fn source_date_epoch() -> Result<Option<u64>> {
    parse_epoch(std::env::var(SOURCE_DATE_EPOCH).ok().as_deref())
}

fn parse_epoch(value: Option<&str>) -> Result<Option<u64>> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!("{SOURCE_DATE_EPOCH} must be a Unix time in seconds; got `{text}`")
        }),
    }
}

/// 16 bytes derived from `seed` for `purpose`, shaped as an RFC 4122 UUID (version 4 bits,
/// variant 1), so that every reader takes it for one.
pub fn uuid(seed: &[u8], purpose: &str) -> [u8; 16] {
    let digest = Sha256::new().chain_update(seed).chain_update(purpose.as_bytes()).finalize();
    let mut id: [u8; 16] = digest[..16].try_into().expect("32-byte digest");
    id[6] = (id[6] & 0x0F) | 0x40;
    id[8] = (id[8] & 0x3F) | 0x80;
    id
}

/// VDI header fields (VirtualBox's VDI 1.1 header, from the file's start).
mod vdi {
    pub const UUID_IMAGE: usize = 0x188;
    pub const UUID_LAST_SNAPSHOT: usize = 0x198;
}

/// VHD footer fields (Virtual Hard Disk Image Format Specification, "Hard Disk Footer Format"),
/// from the footer's start; a dynamic VHD has a copy of the footer at the file's start too.
mod vhd {
    pub const FOOTER_SIZE: usize = 512;
    pub const COOKIE: &[u8] = b"conectix";
    pub const TIMESTAMP: usize = 24;
    pub const CHECKSUM: usize = 64;
    pub const UNIQUE_ID: usize = 68;
    /// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
    pub const EPOCH: u64 = 946_684_800;
}

/// The VMDK's content ID derived from `seed`: 8 hexadecimal digits, never ffffffff ("no
/// parent").
pub fn vmdk_cid(seed: &[u8]) -> u32 {
    let id = uuid(seed, "vmdk content id");
    (u32::from_be_bytes(id[..4].try_into().expect("16 bytes")) | 0x1000_0000) & 0x7FFF_FFFF
}

/// Makes the file qemu-img wrote for `format` reproducible, in place. `seed` identifies the
/// content (the SHA-256 of the raw disk).
pub fn settle(format: Format, bytes: &mut [u8], seed: &[u8], epoch: Option<u64>) -> Result<()> {
    match format {
        Format::Vdi => {
            bytes[vdi::UUID_IMAGE..vdi::UUID_IMAGE + 16].copy_from_slice(&uuid(seed, "vdi image"));
            let snapshot = uuid(seed, "vdi last snapshot");
            bytes[vdi::UUID_LAST_SNAPSHOT..vdi::UUID_LAST_SNAPSHOT + 16].copy_from_slice(&snapshot);
        }
        Format::Vhd => {
            let seconds = epoch.map_or(0, |e| e.saturating_sub(vhd::EPOCH)) as u32;
            let id = uuid(seed, "vhd unique id");
            let end = bytes.len();
            for start in [0, end - vhd::FOOTER_SIZE] {
                let footer = &mut bytes[start..start + vhd::FOOTER_SIZE];
                if !footer.starts_with(vhd::COOKIE) {
                    bail!("no VHD footer at byte {start}");
                }
                footer[vhd::TIMESTAMP..vhd::TIMESTAMP + 4].copy_from_slice(&seconds.to_be_bytes());
                footer[vhd::UNIQUE_ID..vhd::UNIQUE_ID + 16].copy_from_slice(&id);
                footer[vhd::CHECKSUM..vhd::CHECKSUM + 4].fill(0);
                let sum = footer.iter().fold(0u32, |sum, &b| sum.wrapping_add(b.into()));
                footer[vhd::CHECKSUM..vhd::CHECKSUM + 4].copy_from_slice(&(!sum).to_be_bytes());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_derived_and_shaped() {
        let a = uuid(b"disk", "x");
        assert_eq!(a, uuid(b"disk", "x"));
        assert_ne!(a, uuid(b"disk", "y"));
        assert_ne!(a, uuid(b"other disk", "x"));
        assert_eq!(a[6] >> 4, 4, "version 4");
        assert_eq!(a[8] >> 6, 0b10, "variant 1");
    }

    #[test]
    fn the_vhd_footers_get_the_epoch_the_id_and_a_valid_checksum() {
        let mut file = vec![0u8; 2048];
        for start in [0, 2048 - 512] {
            file[start..start + 8].copy_from_slice(vhd::COOKIE);
        }
        settle(Format::Vhd, &mut file, b"seed", Some(vhd::EPOCH + 86_400)).unwrap();
        for start in [0, 2048 - 512] {
            let footer = &file[start..start + 512];
            assert_eq!(footer[vhd::TIMESTAMP..vhd::TIMESTAMP + 4], 86_400u32.to_be_bytes());
            assert_eq!(footer[vhd::UNIQUE_ID..vhd::UNIQUE_ID + 16], uuid(b"seed", "vhd unique id"));
            let stored = u32::from_be_bytes(footer[64..68].try_into().unwrap());
            let sum: u32 = footer
                .iter()
                .enumerate()
                .filter(|(i, _)| !(64..68).contains(i))
                .fold(0u32, |s, (_, &b)| s.wrapping_add(b.into()));
            assert_eq!(stored, !sum, "the VHD checksum is the one's complement of the byte sum");
        }
    }

    #[test]
    fn source_date_epoch_is_a_unix_time_or_nothing() {
        assert_eq!(parse_epoch(None).unwrap(), None);
        assert_eq!(parse_epoch(Some("")).unwrap(), None);
        assert_eq!(parse_epoch(Some("1700000000")).unwrap(), Some(1_700_000_000));
        let error = parse_epoch(Some("yesterday")).unwrap_err().to_string();
        assert!(error.contains("must be a Unix time in seconds; got `yesterday`"), "{error}");
    }
}
