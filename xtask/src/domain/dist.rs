//! The release bundle: one tar, `512-byte-vm-<version>.tar`, holding a directory of the same
//! name with every artifact of a set, its `SHA256SUMS` and `WHERE-EACH-FILE-GOES.txt`. What the
//! original's users took from its releases page, written bit for bit the same from the same
//! set (every entry stamped with one time, `SOURCE_DATE_EPOCH` or 0).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::domain::archive::Archive;
use crate::domain::artifacts::{ARTIFACT_STEM, CHECKSUMS};
use crate::domain::formats::{Family, Format};

/// The guide's file name in the bundle.
pub const GUIDE: &str = "WHERE-EACH-FILE-GOES.txt";

/// `512-byte-vm-<version>`: the bundle's directory, and its file name without `.tar`.
pub fn name(version: &str) -> String {
    format!("{ARTIFACT_STEM}-{version}")
}

/// The bundle of the set in `images` (every file its `SHA256SUMS` lists, which must be every
/// artifact: a partial set is refused), for `version`.
pub fn bundle(images: &Path, version: &str, epoch: u64) -> Result<Vec<u8>> {
    let sums = fs::read_to_string(images.join(CHECKSUMS))
        .with_context(|| format!("reading {}", images.join(CHECKSUMS).display()))?;
    let listed: Vec<&str> = sums.lines().filter_map(|line| line.split("  ").nth(1)).collect();
    let missing: Vec<String> = Family::every_artifact()
        .map(|(family, format)| family.file_name(format))
        .filter(|file| !listed.contains(&file.as_str()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the set in {} lacks {}: build it with --format all",
            images.display(),
            missing.join(", ")
        );
    }
    let top = name(version);
    let mut archive = Archive::new(epoch);
    archive.dir(&format!("{top}/"), 0o755, 0)?;
    for file in &listed {
        let bytes = fs::read(images.join(file)).with_context(|| format!("reading {file}"))?;
        archive.file(&format!("{top}/{file}"), &bytes, 0o644, 0)?;
    }
    archive.file(&format!("{top}/{CHECKSUMS}"), sums.as_bytes(), 0o644, 0)?;
    archive.file(&format!("{top}/{GUIDE}"), guide(version).as_bytes(), 0o644, 0)?;
    archive.finish()
}

/// Which file goes where: one line per artifact.
pub fn guide(version: &str) -> String {
    let mut text = format!(
        "The 512-byte VM {version}: every image, and which platform takes it.\n\
         Check them with `sha256sum -c SHA256SUMS`.\n\n"
    );
    for (family, format) in Family::every_artifact() {
        let file = family.file_name(format);
        text += &format!("{file:<32} {}\n", where_it_goes(family, format));
    }
    text
}

fn where_it_goes(family: Family, format: Format) -> &'static str {
    match (family, format) {
        (Family::Net, Format::Efi) => {
            "the net VM's UEFI program: \\EFI\\BOOT\\BOOTX64.EFI on an EFI System Partition"
        }
        (Family::Net, Format::Pvh) => {
            "the net VM as a PVH kernel: QEMU -kernel on pc or q35, with a NIC"
        }
        _ => where_classic_goes(format),
    }
}

fn where_classic_goes(format: Format) -> &'static str {
    match format {
        Format::Raw => "the bare boot sector: QEMU -drive format=raw, a floppy, BIOS only",
        Format::Img => "raw 1 MiB disk, BIOS and UEFI: dd, OpenStack raw images, QEMU",
        Format::Qcow2 => "oVirt, OpenStack, Proxmox (qm disk import), libvirt, QEMU",
        Format::Vmdk => "VMware, VirtualBox",
        Format::Vdi => "VirtualBox",
        Format::Vhd => "Hyper-V generation 1, VirtualBox",
        Format::Vhdx => "Hyper-V generation 2 (Secure Boot off)",
        Format::Iso => "a CD: any BIOS or UEFI VM's optical drive",
        Format::Rom => "firmware for QEMU -bios or pflash: no BIOS at all",
        Format::Efi => "the UEFI program alone, for an EFI System Partition of your own",
        Format::ContainerDisk => "KubeVirt: skopeo copy oci-archive:... docker://REGISTRY/IMAGE",
        Format::Pvh => "QEMU -kernel and microvm, Cloud Hypervisor, Firecracker",
    }
}

/// The project's version: the root `Cargo.toml`'s package version.
pub fn version(manifest: &str) -> Result<String> {
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_string)
        .context("the root Cargo.toml names no package version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_packages() {
        let manifest = "[package]\nname = \"vm512\"\nversion = \"1.2.3\"\n";
        assert_eq!(version(manifest).unwrap(), "1.2.3");
        assert!(version("[package]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn the_guide_names_every_artifact() {
        let guide = guide("9.9.9");
        for (family, format) in Family::every_artifact() {
            assert!(guide.contains(&format!("{} ", family.file_name(format))), "{guide}");
        }
    }

    #[test]
    fn a_partial_set_is_refused() {
        let dir = crate::infra::files::Scratch::new("dist-partial").unwrap();
        fs::write(dir.join("512-byte-vm.raw"), b"x").unwrap();
        fs::write(dir.join(CHECKSUMS), "00  512-byte-vm.raw\n").unwrap();
        let error = bundle(dir.path(), "1", 0).unwrap_err().to_string();
        assert!(
            error.contains("lacks 512-byte-vm.img") && error.contains("--format all"),
            "{error}"
        );
    }
}
