//! What users' platforms do, as QEMU can build it: each platform's default VM (no COM1, other
//! controllers, other graphics), hardware-reduced ACPI, and the disk files read by independent
//! readers rather than qemu-img.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::harness::*;
use crate::domain::artifacts;
use crate::domain::formats::{Format, VHD_SIZE};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::qemu::{self, Boot, Bus, Serial, Vm, VmConfig};
use crate::infra::tools::{self, Tool};

/// How long a VM must still be running after its message: platforms' harnesses look for "up"
/// some seconds after boot.
const STAYS_UP: Duration = Duration::from_secs(10);

/// A platform's default VM: its machine, controller, graphics, COM1 and extra devices.
struct Platform {
    name: &'static str,
    machine: &'static str,
    format: Format,
    bus: Bus,
    /// COM1 present (where the message must be too).
    com1: bool,
    /// COM1 to a log file rather than a console.
    com1_to_file: bool,
    vga: Option<&'static str>,
    extra: &'static [&'static str],
}

const PLATFORMS: &[Platform] = &[
    Platform {
        name: "oVirt 4.5 (BIOS)",
        machine: "q35",
        format: Format::Qcow2,
        bus: Bus::VirtioScsi,
        com1: false,
        com1_to_file: false,
        vga: Some("std"),
        extra: &["-device", "qemu-xhci", "-device", "usb-tablet", "-device", "virtio-balloon-pci"],
    },
    Platform {
        name: "OpenStack Nova (libvirt)",
        machine: "pc",
        format: Format::Qcow2,
        bus: Bus::VirtioBlk,
        com1: true,
        com1_to_file: true,
        vga: None,
        extra: &["-usb", "-device", "usb-tablet"],
    },
    Platform {
        name: "KubeVirt",
        machine: "q35",
        format: Format::Qcow2,
        bus: Bus::VirtioBlk,
        com1: true,
        com1_to_file: false,
        vga: Some("std"),
        extra: &[],
    },
    Platform {
        name: "Proxmox VE",
        machine: "pc",
        format: Format::Qcow2,
        bus: Bus::VirtioScsi,
        com1: false,
        com1_to_file: false,
        vga: Some("std"),
        extra: &[],
    },
    Platform {
        name: "VirtualBox-like",
        machine: "pc",
        format: Format::Vdi,
        bus: Bus::Ahci,
        com1: false,
        com1_to_file: false,
        vga: None,
        extra: &[],
    },
    Platform {
        name: "VMware-like (LSI)",
        machine: "pc",
        format: Format::Vmdk,
        bus: Bus::Lsi,
        com1: false,
        com1_to_file: false,
        vga: Some("vmware"),
        extra: &[],
    },
    Platform {
        name: "VMware-like (PVSCSI)",
        machine: "pc",
        format: Format::Vmdk,
        bus: Bus::Pvscsi,
        com1: false,
        com1_to_file: false,
        vga: Some("vmware"),
        extra: &[],
    },
    Platform {
        name: "Hyper-V generation 1-like",
        machine: "pc",
        format: Format::Vhd,
        bus: Bus::Ide,
        com1: false,
        com1_to_file: false,
        vga: None,
        extra: &[],
    },
];

/// Each platform's default VM, all at once under TCG: the message on COM1 (console or log file)
/// where there is one and on the screen always, still running 10 s later and idling all along,
/// then off on the ACPI power button.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn every_platforms_default_vm_says_so_stays_up_idles_and_powers_off() {
    let scratch = scratch("platforms");
    let configs: Vec<VmConfig> = PLATFORMS
        .iter()
        .map(|platform| {
            let mut config = tcg(config(platform.format, platform.bus));
            config.machine = platform.machine.into();
            config.label = Some(platform.name.into());
            config.vga = platform.vga.map(str::to_string);
            config.extra = platform.extra.iter().map(Into::into).collect();
            config.serial = match (platform.com1, platform.com1_to_file) {
                (false, _) => Serial::None,
                (true, false) => Serial::Stdio,
                (true, true) => Serial::File(scratch.join(&format!("{}.log", platform.machine))),
            };
            config
        })
        .collect();
    let mut vms = qemu::start_all(&configs).unwrap();
    let line = line(DEFAULT_MESSAGE);
    for ((platform, config), vm) in PLATFORMS.iter().zip(&configs).zip(&mut vms) {
        wait_for_screen(vm, &scratch, DEFAULT_MESSAGE);
        match &config.serial {
            Serial::Stdio => {
                vm.wait_for(line.as_bytes(), BOOT_TIMEOUT).unwrap();
            }
            Serial::File(log) => {
                let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
                while std::fs::read(log).unwrap_or_default() != line.as_bytes() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{}: log {:?}",
                        platform.name,
                        std::fs::read(log)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Serial::None => assert!(vm.serial_output().is_empty()),
        }
    }
    // Still there, and idle, 10 s later: a VM without COM1 used to power itself off at once.
    let shares = qemu::cpu_shares(&mut vms, STAYS_UP).unwrap();
    for (vm, share) in vms.iter().zip(shares) {
        assert!(
            share < IDLE_LIMIT,
            "{}: {:.1}% of a core while idle",
            vm.description(),
            share * 100.0
        );
    }
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
}

/// No COM1 at all (`-serial none`): the boot sector and the ROM stay up. (With no UART the port
/// reads 0xFF, which the VM took for a received byte, and powered off within 0.2 s.)
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn without_com1_the_vm_stays_up() {
    let mut configs = vec![config(Format::Img, Bus::Ide), rom_config("pc"), rom_config("q35")];
    for config in &mut configs {
        config.serial = Serial::None;
        *config = tcg(config.clone());
    }
    let mut vms = qemu::start_all(&configs).unwrap();
    // The ROM shows nothing (no video BIOS): give both time to boot, then watch.
    std::thread::sleep(Duration::from_secs(2));
    qemu::cpu_shares(&mut vms, STAYS_UP).unwrap();
    for vm in &vms {
        assert!(!vm.qmp_log().contains("SHUTDOWN"), "{}: {}", vm.description(), vm.qmp_log());
    }
}

/// QEMU `microvm` with SeaBIOS: hardware-reduced ACPI, whose FADT names no PM1a blocks (0).
/// The VM prints and idles, and never touches an I/O port the firmware did not name:
/// QEMU's memory-region trace shows no access to ports 0-3 (the DMA controller, where it used to
/// write 0x100 and then poll). It answers its console: what is typed on COM1 comes back (the
/// idle loop ends the interrupt SeaBIOS's microvm build leaves in service at the 8259).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn hardware_reduced_acpi_touches_no_unnamed_port_and_echoes() {
    const SEABIOS_MICROVM: &str = "/usr/share/seabios/bios-microvm.bin";
    let firmware = Path::new(SEABIOS_MICROVM);
    assert!(firmware.exists(), "{SEABIOS_MICROVM} (Debian package seabios) is missing");
    let image = test_image("img").display().to_string().replace(',', ",,");
    let mut config = tcg(VmConfig::new(firmware, Boot::Bios, "microvm"));
    config.label = Some("microvm".into());
    config.extra = [
        "-drive",
        &format!("file={image},format=raw,if=none,id=boot,snapshot=on"),
        "-device",
        "virtio-blk-device,drive=boot",
        "-trace",
        "memory_region_ops_read",
        "-trace",
        "memory_region_ops_write",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let mut vm = Vm::start(&config).unwrap();
    vm.wait_for(line(DEFAULT_MESSAGE).as_bytes(), BOOT_TIMEOUT).unwrap();
    let share = qemu::cpu_shares(std::slice::from_mut(&mut vm), Duration::from_secs(2)).unwrap()[0];
    assert!(share < IDLE_LIMIT, "{:.1}% of a core while idle", share * 100.0);
    type_on_com1(&mut vm, b"echo?");
    let echoed = line(DEFAULT_MESSAGE) + "echo?";
    vm.wait_for(echoed.as_bytes(), POWER_OFF_LIMIT).unwrap();
    let trace = vm.stderr_note();
    let unnamed: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("name 'io'"))
        .filter(|l| {
            ["addr 0x0 ", "addr 0x1 ", "addr 0x2 ", "addr 0x3 "].iter().any(|a| l.contains(a))
        })
        .collect();
    assert!(
        unnamed.is_empty(),
        "accesses to ports the firmware did not name:\n{}",
        unnamed.join("\n")
    );
    assert!(trace.contains("memory_region_ops"), "the trace is empty: is tracing built in?");
}

/// Runs a reader; returns its standard output.
fn read_with(tool: Tool, args: &[&str], file: &Path) -> String {
    let out = Command::new(tools::path(tool).unwrap()).args(args).arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} {}: {text}{}",
        tool.binary(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// 7-Zip and libyal's readers open every disk format: each reports the virtual size and yields
/// the disk's sector 0 as its first 512 bytes (7-Zip told which container format to read); and
/// 7-Zip, left to itself, reads on through the container, the GPT and the FAT to the UEFI
/// program, which is the `efi` artifact byte for byte.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn independent_readers_open_every_disk_format() {
    let img = std::fs::read(test_image("img")).unwrap();
    let program = std::fs::read(test_image("efi")).unwrap();
    let scratch = scratch("readers");
    let disks = [Format::Img, Format::Qcow2, Format::Vmdk, Format::Vdi, Format::Vhd, Format::Vhdx];
    for format in disks {
        let file = test_image(format.extension());
        let size = format.virtual_size().unwrap();
        if format != Format::Img {
            let container = match format {
                Format::Qcow2 => "qcow",
                other => other.name(),
            };
            let out = scratch.join(format.name());
            let into = format!("-o{}", out.display());
            read_with(Tool::SevenZip, &["x", "-y", &format!("-t{container}"), &into], &file);
            let extracted: Vec<_> =
                std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
            assert_eq!(extracted.len(), 1, "{}: 7z extracted {extracted:?}", format.name());
            let disk = std::fs::read(&extracted[0]).unwrap();
            assert_eq!(disk.len() as u64, size, "{}: 7z's disk size", format.name());
            // Sector 0 is the image's, but for the protective entry's size (the VHD is smaller).
            let same = disk[..crate::domain::gpt::PROTECTIVE_SLOT]
                == img[..crate::domain::gpt::PROTECTIVE_SLOT];
            assert!(same, "{}: 7z's first sector is not the boot sector", format.name());
        }
        let out = scratch.join(&format!("{}-files", format.name()));
        read_with(Tool::SevenZip, &["x", "-y", &format!("-o{}", out.display())], &file);
        let found = std::fs::read(out.join("EFI/BOOT/BOOTX64.EFI")).unwrap_or_default();
        assert!(
            found == program,
            "{}: 7z found no \\EFI\\BOOT\\BOOTX64.EFI (or another)",
            format.name()
        );
        let libyal = match format {
            Format::Qcow2 => Some(Tool::Qcowinfo),
            Format::Vmdk => Some(Tool::Vmdkinfo),
            Format::Vhd | Format::Vhdx => Some(Tool::Vhdiinfo),
            _ => None, // libyal has no VDI reader packaged in Debian
        };
        if let Some(tool) = libyal {
            let info = read_with(tool, &[], &file);
            assert!(info.contains(&format!("({size} bytes)")), "{}: {info}", tool.binary());
        }
    }
}

/// The VHD's footer geometry describes its current size exactly (the VHD specification's CHS
/// algorithm), so readers that size a disk by geometry agree with the ones that read the size.
/// (It used to say 65535/16/255: 127 GiB to those readers.)
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_vhd_geometry_and_size_agree() {
    let vhd = std::fs::read(test_image("vhd")).unwrap();
    let footer = &vhd[vhd.len() - 512..];
    assert_eq!(&footer[..8], b"conectix");
    let current = u64::from_be_bytes(footer[48..56].try_into().unwrap());
    let (cylinders, heads, sectors) =
        (u16::from_be_bytes([footer[56], footer[57]]) as u64, footer[58] as u64, footer[59] as u64);
    assert_eq!(current, VHD_SIZE);
    assert_eq!((cylinders, heads, sectors), vhd_geometry(current / 512), "the specification's CHS");
    assert_eq!(cylinders * heads * sectors * 512, current, "geometry and size disagree");
}

/// The VHD specification's CHS algorithm (appendix "CHS calculation").
fn vhd_geometry(total: u64) -> (u64, u64, u64) {
    let total = total.min(65535 * 16 * 255);
    let (mut sectors, mut heads, mut cylinder_heads);
    if total >= 65535 * 16 * 63 {
        sectors = 255;
        heads = 16;
        cylinder_heads = total / sectors;
    } else {
        sectors = 17;
        cylinder_heads = total / sectors;
        heads = cylinder_heads.div_ceil(1024);
        if heads < 4 {
            heads = 4;
        }
        if cylinder_heads >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cylinder_heads = total / sectors;
        }
        if cylinder_heads >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cylinder_heads = total / sectors;
        }
    }
    (cylinder_heads / heads, heads, sectors)
}

/// The VMDK's embedded descriptor names the file itself, so readers that follow the extent
/// name find the data. (It used to name the build's temporary file.)
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_vmdk_descriptor_names_the_file_itself() {
    let file = test_image("vmdk");
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let name = artifacts::artifact_path(Path::new(""), "vmdk").display().to_string();
    assert!(
        text.contains(&format!("RW 2048 SPARSE \"{name}\"")),
        "descriptor: {}",
        &text[512..1024.min(text.len())]
    );
    let info = read_with(Tool::Vmdkinfo, &[], &file);
    assert!(info.contains(&format!("Filename:\t\t\t{name}")), "{info}");
}

#[test]
fn the_vhd_geometry_algorithm_matches_the_specification_examples() {
    assert_eq!(vhd_geometry(2040), (30, 4, 17));
    // 2048 sectors have no exact geometry: 30/4/17 is 2040.
    assert_eq!(vhd_geometry(2048), (30, 4, 17));
    assert_eq!(vhd_geometry(65535 * 16 * 255), (65535, 16, 255));
}

/// The KubeVirt containerDisk: skopeo (a registry client's view) accepts the OCI archive and
/// reports its one layer for linux/amd64; the layer, extracted with `tar`, holds exactly
/// `disk/512-byte-vm.qcow2`, owned 107:107, mode 0440, the same bytes as the qcow2 artifact,
/// which boots.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn skopeo_accepts_the_container_disk_and_its_disk_boots() {
    let archive = test_image("containerdisk.tar");
    let inspect = read_with(
        Tool::Skopeo,
        &["inspect"],
        Path::new(&format!("oci-archive:{}", archive.display())),
    );
    assert!(
        inspect.contains(r#""Architecture": "amd64""#) && inspect.contains(r#""Os": "linux""#),
        "{inspect}"
    );
    let layers = inspect
        .split(r#""Layers": ["#)
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or("");
    assert_eq!(layers.matches("sha256:").count(), 1, "one layer: {inspect}");
    let digest = layers.trim().trim_matches('"').trim_start_matches("sha256:").to_string();

    let scratch = scratch("container-disk");
    let tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).output().unwrap();
        assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let oci = scratch.join("oci");
    std::fs::create_dir_all(&oci).unwrap();
    tar(&["-xf", &archive.display().to_string(), "-C", &oci.display().to_string()]);
    let layer = oci.join("blobs/sha256").join(&digest);
    let listing = tar(&["-tvf", &layer.display().to_string(), "--numeric-owner"]);
    let files: Vec<&str> = listing.lines().filter(|l| !l.starts_with('d')).collect();
    assert_eq!(files.len(), 1, "exactly one file: {listing}");
    assert!(
        files[0].starts_with("-r--r----- 107/107") && files[0].ends_with(" disk/512-byte-vm.qcow2"),
        "{listing}"
    );
    let out = scratch.join("layer");
    std::fs::create_dir_all(&out).unwrap();
    tar(&["-xf", &layer.display().to_string(), "-C", &out.display().to_string()]);
    let disk = out.join("disk/512-byte-vm.qcow2");
    assert!(
        std::fs::read(&disk).unwrap() == std::fs::read(test_image("qcow2")).unwrap(),
        "not the qcow2 artifact"
    );
    let config = tcg(VmConfig {
        label: Some("containerDisk".into()),
        ..Format::Qcow2.vm_config(&disk, Bus::VirtioBlk)
    });
    // The extracted file is read-only (0440): QEMU's snapshot overlay keeps it so.
    assert_boots_and_idles(&config, DEFAULT_MESSAGE);
}
