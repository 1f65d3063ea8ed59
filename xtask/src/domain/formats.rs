//! The artifact formats: what each is for, how it is made, and how QEMU boots it.
//!
//! Disk formats are converted by `qemu-img` (the field's standard) from the boot sector padded to
//! [`DISK_SIZE`]; the ISO comes from our own writer (`iso.rs`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::infra::process;
use crate::infra::qemu::{Boot, Bus, VmConfig};

/// Virtual size of every disk image but `raw`. SeaBIOS boots through INT 13h CHS reads, and for
/// disks whose geometry it derives itself (AHCI, virtio-blk) it uses 63 sectors x 16 heads: a disk
/// under 1008 sectors (516,096 bytes) has no whole cylinder and "could not read the boot disk".
/// virtio-scsi needs a whole multiple too. 1 MiB clears both and is the alignment Hyper-V and
/// Azure want; the sparse formats store it at almost no cost.
pub const DISK_SIZE: u64 = 1 << 20;

/// Virtual size of the VHD: 2040 sectors, the largest size under 1 MiB that the VHD
/// specification's CHS algorithm describes exactly (30 cylinders, 4 heads, 17 sectors per track).
/// Readers that size a VHD by its geometry (Virtual PC, several emulators) and readers that use
/// the footer's current size (Hyper-V, qemu-img) then see one size; 2040 sectors still boots on
/// every bus.
pub const VHD_SIZE: u64 = 2040 * 512;

/// The two families of artifacts: the classic VM, which sends nothing on any network, and the
/// net VM, which takes a DHCP lease and answers ping and HTTP (`src/net/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Classic,
    Net,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Classic, Family::Net];

    /// The artifacts' base name: `512-byte-vm.<ext>`, `512-byte-vm-net.<ext>`.
    pub fn stem(self) -> &'static str {
        match self {
            Family::Classic => "512-byte-vm",
            Family::Net => "512-byte-vm-net",
        }
    }

    /// The formats the family comes in, in [`Format::ALL`]'s order.
    pub fn formats(self) -> &'static [Format] {
        match self {
            Family::Classic => &Format::ALL,
            Family::Net => &Format::NET,
        }
    }

    pub fn has(self, format: Format) -> bool {
        self.formats().contains(&format)
    }

    /// The file name of `format` in this family.
    pub fn file_name(self, format: Format) -> String {
        format!("{}.{}", self.stem(), format.extension())
    }

    /// Every artifact of both families (what `--format all` builds), the classic ones first.
    pub fn every_artifact() -> impl Iterator<Item = (Family, Format)> {
        Family::ALL
            .into_iter()
            .flat_map(|family| family.formats().iter().map(move |&f| (family, f)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// The bare 512-byte sector (BIOS only).
    Raw,
    /// The disk of DISK_SIZE: the boot sector, a GPT and the EFI System Partition; boots on
    /// every bus, under BIOS and UEFI.
    Img,
    Qcow2,
    Vmdk,
    Vdi,
    Vhd,
    /// Dynamic VHDX (Hyper-V generation 2 attaches nothing else), written by `vhdx.rs`.
    Vhdx,
    Iso,
    /// The firmware image: 64 KiB started at the x86 reset vector (`-bios`, pflash).
    Rom,
    /// The UEFI program alone, for an ESP of the user's own (the disks and the ISO carry it).
    Efi,
    /// A KubeVirt containerDisk: an OCI image archive holding the qcow2.
    ContainerDisk,
    /// The PVH kernel: an ELF that VMMs boot directly (QEMU `-kernel`, `microvm`, Cloud
    /// Hypervisor, Firecracker).
    Pvh,
}

impl Format {
    /// Every format, in the order `all` builds them.
    pub const ALL: [Format; 12] = [
        Format::Raw,
        Format::Img,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vdi,
        Format::Vhd,
        Format::Vhdx,
        Format::Iso,
        Format::Rom,
        Format::Efi,
        Format::ContainerDisk,
        Format::Pvh,
    ];

    /// The formats of the net family: every one but the bare sector and the ROM (a 512-byte
    /// sector or a 64 KiB ROM holds no network stack).
    pub const NET: [Format; 10] = [
        Format::Img,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vdi,
        Format::Vhd,
        Format::Vhdx,
        Format::Iso,
        Format::Efi,
        Format::ContainerDisk,
        Format::Pvh,
    ];

    /// The name on the command line, and the file extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Img => "img",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Iso => "iso",
            Format::Rom => "rom",
            Format::Efi => "efi",
            Format::ContainerDisk => "containerdisk",
            Format::Pvh => "pvh",
        }
    }

    /// What the file is, for the help.
    pub fn description(self) -> &'static str {
        match self {
            Format::Raw => "the bare 512-byte sector (BIOS only)",
            Format::Img => "1 MiB raw disk: sector, GPT, ESP (BIOS and UEFI)",
            Format::Qcow2 => "qcow2 v3 of that disk (QEMU, KVM platforms)",
            Format::Vmdk => "monolithicSparse VMDK, 8 KiB grains (VMware, VBox)",
            Format::Vdi => "dynamic VDI of that disk (VirtualBox)",
            Format::Vhd => "dynamic VHD, 2040 sectors (Hyper-V, VirtualBox)",
            Format::Vhdx => "dynamic VHDX, 5 MiB (Hyper-V generation 2)",
            Format::Iso => "ISO 9660 CD, El Torito for BIOS and UEFI",
            Format::Rom => "64 KiB firmware started at the reset vector",
            Format::Efi => "the UEFI program alone (BOOTX64.EFI)",
            Format::ContainerDisk => "KubeVirt containerDisk: OCI archive of the qcow2",
            Format::Pvh => "PVH kernel (ELF): -kernel, microvm, CH, Firecracker",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::ContainerDisk => "containerdisk.tar",
            _ => self.name(),
        }
    }

    /// `qemu-img convert -O ...` arguments for the formats qemu-img makes. The variants are the
    /// ones every platform imports (see docs/formats.md, "Why these variants").
    pub fn qemu_img_args(self) -> Option<&'static [&'static str]> {
        Some(match self {
            // qcow2 v3 with 4 KiB clusters, uncompressed: its metadata takes 5 clusters, so the
            // cluster size sets the file size (64 KiB clusters: 320 KiB before any data).
            Format::Qcow2 => &["-O", "qcow2", "-o", "compat=1.1,cluster_size=4096"],
            // Dynamic VDI, VirtualBox's default.
            Format::Vdi => &["-O", "vdi", "-o", "static=off"],
            // Dynamic VHD: Hyper-V and VirtualBox attach it, and unlike a fixed VHD (footer only,
            // at the end) qemu-img and other probes recognise it. Its input is VHD_SIZE, which
            // qemu-img's CHS geometry describes exactly (no force_size, whose 65535/16/255 makes
            // geometry readers see 127 GiB).
            Format::Vhd => &["-O", "vpc", "-o", "subformat=dynamic"],
            // monolithicSparse, written by `vmdk.rs` (8 KiB grains; qemu-img's are 64 KiB).
            Format::Raw
            | Format::Vmdk
            | Format::Vhdx
            | Format::Img
            | Format::Iso
            | Format::Rom
            | Format::Efi
            | Format::ContainerDisk
            | Format::Pvh => {
                return None;
            }
        })
    }

    /// How QEMU boots this artifact: a disk or CD on `bus`, or the ROM as `-bios`.
    pub fn boot(self, bus: Bus) -> Boot {
        let format = match self {
            Format::Raw | Format::Img => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Iso => return Boot::Cdrom { bus },
            Format::Rom => return Boot::Bios,
            Format::Pvh => return Boot::Kernel,
            Format::Efi | Format::ContainerDisk => {
                unreachable!("no disk (refused before)")
            }
        };
        Boot::Disk { bus, format }
    }

    /// The virtual disk size (what the guest sees), for the disk formats.
    pub fn virtual_size(self) -> Option<u64> {
        match self {
            Format::Raw => Some(512),
            Format::Img | Format::Qcow2 | Format::Vmdk | Format::Vdi | Format::Vhdx => {
                Some(DISK_SIZE)
            }
            Format::Vhd => Some(VHD_SIZE),
            Format::Iso | Format::Rom | Format::Efi | Format::ContainerDisk | Format::Pvh => None,
        }
    }

    /// The buses this artifact boots from. `raw` (512 bytes, less than one cylinder) boots from
    /// IDE and the floppy drive only, which report a geometry of their own (see [`DISK_SIZE`]);
    /// the ISO needs a CD drive, which virtio-blk, NVMe and the floppy have not; the ROM is
    /// firmware, on no bus.
    pub fn buses(self) -> &'static [Bus] {
        match self {
            Format::Raw => &[Bus::Ide, Bus::Floppy],
            Format::Img
            | Format::Qcow2
            | Format::Vmdk
            | Format::Vdi
            | Format::Vhd
            | Format::Vhdx => &Bus::ALL,
            Format::Iso => &Bus::CD_DRIVES,
            Format::Rom | Format::Efi | Format::ContainerDisk | Format::Pvh => &[],
        }
    }

    /// The QEMU set-up that boots this artifact at `image` from `bus`, on the machine whose
    /// controller that is; the ROM as `-bios` on `pc`; the PVH kernel as `-kernel` on `microvm`.
    pub fn vm_config(self, image: &Path, bus: Bus) -> VmConfig {
        match self {
            Format::Rom => VmConfig::new(image, Boot::Bios, "pc"),
            Format::Pvh => VmConfig::new(image, Boot::Kernel, "microvm"),
            _ => VmConfig::new(image, self.boot(bus), bus.machine()),
        }
    }

    /// The file size of the same artifact in the original NASM release bundle, to compare with.
    pub fn original_size(self) -> Option<u64> {
        Some(match self {
            Format::Raw => 512,
            Format::Qcow2 => 328_704,
            Format::Vmdk => 131_072,
            Format::Vdi => 1_049_600,
            Format::Vhd => 2_100_224,
            Format::Iso => 1_835_008,
            Format::Img
            | Format::Vhdx
            | Format::Rom
            | Format::Efi
            | Format::ContainerDisk
            | Format::Pvh => {
                return None;
            }
        })
    }

    pub fn parse(name: &str) -> Result<Format> {
        match Format::ALL.iter().find(|format| format.name() == name) {
            Some(&format) => Ok(format),
            None => bail!("unknown format `{name}`; valid formats: {}", valid_list()),
        }
    }

    /// A comma-separated LIST of names, or `all`. Duplicates collapse; order is `ALL`'s.
    pub fn parse_list(list: &str) -> Result<Vec<Format>> {
        let mut formats = Vec::new();
        for name in list.split(',').map(str::trim) {
            if name.is_empty() {
                bail!("empty format name in `{list}`; valid formats: {}", valid_list());
            }
            if name == "all" {
                formats.extend(Format::ALL);
            } else {
                formats.push(Format::parse(name)?);
            }
        }
        formats.sort();
        formats.dedup();
        Ok(formats)
    }
}

/// Converts the raw disk `input` to `format` at `output` with qemu-img.
pub fn convert(qemu_img: &Path, format: Format, input: &Path, output: &Path) -> Result<()> {
    let args = format.qemu_img_args().context("not a qemu-img format")?;
    let out = process::output(
        Command::new(qemu_img)
            .args(["convert", "-q", "-f", "raw"])
            .args(args)
            .arg(input)
            .arg(output),
    )
    .context("running qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img convert to {} failed ({}): {}",
            format.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// "raw, img, qcow2, vmdk, vdi, vhd, vhdx, iso, rom, efi, containerdisk, pvh, or all".
pub fn valid_list() -> String {
    let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
    format!("{}, or all", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_dedupe_and_expand_all() {
        assert_eq!(Format::parse_list("raw").unwrap(), vec![Format::Raw]);
        assert_eq!(
            Format::parse_list("iso, qcow2,raw,qcow2").unwrap(),
            vec![Format::Raw, Format::Qcow2, Format::Iso]
        );
        assert_eq!(Format::parse_list("all").unwrap(), Format::ALL.to_vec());
        assert_eq!(Format::parse_list("vhd,all").unwrap(), Format::ALL.to_vec());
    }

    #[test]
    fn unknown_formats_are_refused_with_the_valid_list() {
        let error = Format::parse_list("raw,vhdy").unwrap_err().to_string();
        assert!(error.contains("unknown format `vhdy`"), "{error}");
        assert!(
            error.contains(
                "raw, img, qcow2, vmdk, vdi, vhd, vhdx, iso, rom, efi, containerdisk, pvh, or all"
            ),
            "{error}"
        );
        assert!(Format::parse_list("raw,,iso").is_err());
        assert!(Format::parse_list("").is_err());
    }
}
