//! UEFI: every disk format and the ISO boot under OVMF (EDK2's firmware, as oVirt, OpenStack,
//! KubeVirt and Proxmox run it) from the same files SeaBIOS boots; and the disks' GPT reads
//! cleanly in the partition tools.
//!
//! All under TCG: OVMF dies with "KVM internal error" under this machine's nested KVM before
//! printing anything (see NOTES), and TCG is what every machine has.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::harness::*;
use crate::domain::formats::Format;
use crate::domain::image::{self, DEFAULT_MESSAGE};
use crate::domain::{fat, gpt};
use crate::infra::files::Scratch;
use crate::infra::qemu::{self, Bus, Firmware, Serial, Vm, VmConfig};
use crate::infra::tools::{self, Tool};
use crate::tasks::test::ELF_ENV;

/// The controllers the UEFI matrix boots disks from, each on the machine a platform would give
/// it (`pc` for IDE, `q35` for AHCI, both for the rest).
const DISK_BUSES: [(Bus, &str); 5] = [
    (Bus::Ide, "pc"),
    (Bus::Ahci, "q35"),
    (Bus::VirtioBlk, "q35"),
    (Bus::VirtioScsi, "pc"),
    (Bus::Nvme, "q35"),
];

/// `config` under OVMF on `machine`, TCG: as one `-bios` image, or (`pflash`) as platforms
/// install it, code plus a writable copy of the variable store in `scratch`.
fn uefi(config: VmConfig, machine: &str, pflash: bool, scratch: &Scratch) -> VmConfig {
    let [single, code, vars] = tools::ovmf_files().unwrap();
    let firmware = if pflash {
        let copy = scratch.join(&format!("vars-{}.fd", qemu::socket_name("vars")));
        std::fs::copy(&vars, &copy).unwrap();
        Firmware::UefiPflash { code, vars: copy }
    } else {
        Firmware::Uefi { image: single }
    };
    VmConfig { machine: machine.into(), label: Some("UEFI".into()), ..tcg(config) }
        .under_uefi(firmware)
}

/// Starts every config at once and waits until each has printed the message as a line of its
/// own.
fn boot_all_uefi(configs: &[VmConfig], message: &str) -> Vec<Vm> {
    let mut vms = qemu::start_all(configs).unwrap();
    qemu::wait_all_for(&mut vms, qemu::uefi_line(message).as_bytes(), BOOT_TIMEOUT).unwrap();
    vms
}

/// Every disk format on IDE, AHCI, virtio-blk, virtio-scsi and NVMe, and the ISO on the IDE and
/// AHCI CD drives, under OVMF on `pc` and `q35`, half as `-bios`, half as pflash: each prints the
/// exact line on COM1 and powers off within 2 s of the ACPI power button.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn every_disk_format_and_the_iso_boot_under_uefi_and_power_off_on_the_button() {
    let scratch = scratch("uefi-matrix");
    let mut configs = Vec::new();
    let disks = [Format::Img, Format::Qcow2, Format::Vmdk, Format::Vdi, Format::Vhd, Format::Vhdx];
    for format in disks {
        for (bus, machine) in DISK_BUSES {
            configs.push((config(format, bus), machine));
        }
    }
    configs.push((config(Format::Iso, Bus::Ide), "pc"));
    configs.push((config(Format::Iso, Bus::Ahci), "q35"));
    let configs: Vec<VmConfig> = configs
        .into_iter()
        .enumerate()
        .map(|(i, (config, machine))| uefi(config, machine, i % 2 == 1, &scratch))
        .collect();
    let mut vms = boot_all_uefi(&configs, DEFAULT_MESSAGE);
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
}

/// With no COM1 (oVirt's, Proxmox's and Hyper-V's default), the UEFI program still runs: up
/// 10 s later, idle, and off on the power button (OVMF's own menus ignore it).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_uefi_without_com1_the_vm_stays_up_idles_and_powers_off() {
    let scratch = scratch("uefi-no-com1");
    let configs: Vec<VmConfig> = [(Bus::Ahci, "q35", true), (Bus::Ide, "pc", false)]
        .into_iter()
        .map(|(bus, machine, pflash)| {
            let config = VmConfig { serial: Serial::None, ..config(Format::Qcow2, bus) };
            uefi(config, machine, pflash, &scratch)
        })
        .collect();
    let mut vms = qemu::start_all(&configs).unwrap();
    // Nothing to read without COM1: wait until each VM idles without a tick. OVMF waiting (on a
    // disk, or its boot countdown) can use little CPU, but its 100 Hz timer wakes QEMU 80-230
    // times a second; the program stops every timer. Under load OVMF's boot takes well over
    // 10 s. The power button then proves that the program, not a firmware menu, is what runs.
    std::thread::sleep(Duration::from_secs(10));
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    for vm in vms.iter_mut() {
        loop {
            let cost = qemu::idle_costs(std::slice::from_mut(vm), IDLE_WINDOW).unwrap()[0];
            if cost.cpu < IDLE_LIMIT && cost.wakeups < TICKLESS_WAKEUPS {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: still {:.1}% of a core and {:.0} wake-ups/s {BOOT_TIMEOUT:?} after start",
                vm.description(),
                cost.cpu * 100.0,
                cost.wakeups
            );
        }
    }
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
}

/// Under UEFI, as under BIOS, no periodic tick: the program sleeps until the keyboard, COM1 or
/// the ACPI SCI interrupts it. After 10 s asleep, on `pc` and `q35` (one `-bios`, one pflash),
/// bytes typed on COM1 come back, and Ctrl-D, a key and the power button power it off.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_uefi_every_wake_up_is_answered_after_a_long_idle() {
    let scratch = scratch("uefi-wake-ups");
    let mut configs = Vec::new();
    for (bus, machine, pflash) in [(Bus::Ahci, "q35", false), (Bus::Ide, "pc", true)] {
        for wake in WAKE_UPS {
            let config = uefi(config(Format::Img, bus), machine, pflash, &scratch);
            configs.push(VmConfig { label: Some(wake.into()), ..config });
        }
    }
    let mut vms = boot_all_uefi(&configs, DEFAULT_MESSAGE);
    assert_every_wake_up_answered_after_a_long_idle(&mut vms);
}

/// The UEFI program carries nothing of the directory it was built in, so that the same source
/// builds the same bytes anywhere: no CodeView record (lld-link's PDB reference, whose GUID, and
/// under /Brepro the timestamp too, hashed the object files' absolute paths: a checkout built in
/// another directory differed in 20 bytes) and no path of the checkout. (The debug directory
/// keeps /Brepro's own entry, a hash of the content.)
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_uefi_program_carries_nothing_of_its_build_directory() {
    let program = std::fs::read(test_image("efi")).unwrap();
    assert!(!program.windows(4).any(|w| w == b"RSDS"), "a CodeView (PDB) record");
    let root = crate::infra::files::project_root().display().to_string();
    assert!(!program.windows(root.len()).any(|w| w == root.as_bytes()), "the path {root}");
}

/// Wake-ups per second below which a VM has no timer running: the UEFI program (0 measured)
/// rather than OVMF (80 and more).
const TICKLESS_WAKEUPS: f64 = 5.0;

/// Runs `program` with `args`, `DISK` standing for `disk`; returns what it printed (stdout and
/// stderr), failing on a non-zero exit.
fn partition_tool(program: &Path, args: &[&str], disk: &Path) -> String {
    let args: Vec<&std::ffi::OsStr> = args
        .iter()
        .map(|&arg| if arg == "DISK" { disk.as_os_str() } else { arg.as_ref() })
        .collect();
    let out = Command::new(program).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    assert!(out.status.success(), "{} {args:?}: {text}", program.display());
    text
}

/// Checks what parted, sfdisk, fdisk and blkid say of `disk`: a GPT with the ESP, the FAT file
/// system in it, and no error or warning (a hybrid MBR, a size mismatch, a damaged header).
fn assert_partition_tools_read(disk: &Path) {
    let sfdisk = tools::path(Tool::Sfdisk).unwrap();
    // fdisk comes in the same package as sfdisk.
    let fdisk = sfdisk.with_file_name("fdisk");
    let parted = tools::path(Tool::Parted).unwrap();
    let blkid = tools::path(Tool::Blkid).unwrap();
    let offset = (gpt::ESP_FIRST_LBA * 512).to_string();
    let esp_type = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    let checks: [(&Path, &[&str], &[&str]); 6] = [
        (&sfdisk, &["--json", "DISK"], &[r#""label": "gpt""#, esp_type]),
        (&sfdisk, &["--list", "DISK"], &["Disklabel type: gpt", "EFI System"]),
        (&fdisk, &["-l", "DISK"], &["Disklabel type: gpt", "EFI System"]),
        (&parted, &["-s", "DISK", "print"], &["Partition Table: gpt", "boot, esp"]),
        (&blkid, &["-p", "DISK"], &[r#"PTTYPE="gpt""#]),
        (&blkid, &["-p", "-O", &offset, "DISK"], &[r#"TYPE="vfat""#, r#"VERSION="FAT12""#]),
    ];
    for (program, args, expected) in checks {
        let said = partition_tool(program, args, disk);
        let what = format!("{} {args:?} on {}", program.display(), disk.display());
        for text in expected {
            assert!(said.contains(text), "{what}: no {text:?} in: {said}");
        }
        let lower = said.to_lowercase();
        for alarm in ["warning", "error", "hybrid", "mismatch", "corrupt", "invalid"] {
            assert!(!lower.contains(alarm), "{what} says {alarm:?}: {said}");
        }
    }
}

/// The partition tools read the disk image (1 MiB), the VHD's disk (2040 sectors), and a disk
/// whose message is the longest that fits, which fills the MBR's unused slots but their type
/// bytes.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn partition_tools_read_the_disks_cleanly() {
    let scratch = scratch("partition-tools");
    assert_partition_tools_read(&test_image("img"));
    let vhd = scratch.join("vhd.raw");
    let status = Command::new(tools::path(Tool::QemuImg).unwrap())
        .args(["convert", "-O", "raw"])
        .arg(test_image("vhd"))
        .arg(&vhd)
        .status()
        .unwrap();
    assert!(status.success());
    assert_partition_tools_read(&vhd);

    let mut sector = image::read_boot_sector(&env_dir(ELF_ENV).join("boot-sector")).unwrap();
    let longest: String = "M".repeat(sector.message_room());
    sector.set_message(&longest).unwrap();
    let program = std::fs::read(test_image("efi")).unwrap();
    let (first, last) = gpt::esp_range(2048);
    let esp = fat::volume(&program, (last - first + 1) as u32, first as u32, 1).unwrap();
    let disk = gpt::disk(&sector.bytes, &esp, 2048, b"longest").unwrap();
    assert!(disk[446..494].iter().filter(|&&b| b == b'M').count() >= 30, "slots hold text");
    let path = scratch_image(&scratch, "longest.img", &disk);
    assert_partition_tools_read(&path);
}
