//! Boot tests: the images booted in QEMU on every bus and boot path, COM1 read back, idling and
//! powering off checked from outside; and the built files checked against what users' tools see.

use std::path::Path;
use std::process::Command;

use super::harness::*;
use crate::domain::artifacts::CHECKSUMS;
use crate::domain::formats::{Family, Format};
use crate::domain::image::{self, DEFAULT_MESSAGE, Image};
use crate::infra::qemu::{self, Boot, Bus, Vm, VmConfig};
use crate::tasks::test::{ELF_ENV, IMAGES_ENV, LLVM_ENV};

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn flat_boot_sector_matches_llvm_objcopy() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let linked = std::fs::read(&elf).unwrap();
    let ours = crate::domain::elf::flatten(&linked, image::BOOT_ADDRESS, 512, &[]).unwrap();
    let scratch = scratch("objcopy");
    let out = scratch.join("boot-sector.bin");
    let status = Command::new(env_dir(LLVM_ENV).join("llvm-objcopy"))
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = std::fs::read(&out).unwrap();
    assert_eq!(theirs.len(), 512, "objcopy output spans the whole sector");
    assert!(ours.bytes == theirs, "our ELF-to-flat step and llvm-objcopy disagree");
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn built_image_is_a_boot_sector_with_the_default_message() {
    let bytes = std::fs::read(test_image("raw")).unwrap();
    image::check_boot_sector(&bytes).unwrap();
    let elf = image::read_boot_sector(&env_dir(ELF_ENV).join("boot-sector")).unwrap();
    let built = Image { bytes, ..elf.clone() };
    assert_eq!(built.message(), DEFAULT_MESSAGE.as_bytes());
    assert_eq!(
        built.code_bytes()
            + built.message_bytes()
            + built.free_bytes()
            + built.reserved.len()
            + built.partition_entry_bytes()
            + 2,
        512
    );
    // The code in front of the message is what the ELF linked.
    assert_eq!(built.bytes[..elf.code_bytes()], elf.bytes[..elf.code_bytes()]);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn boots_on_ide_prints_the_message_on_com1_and_idles() {
    assert_boots_and_idles(&config(Format::Raw, Bus::Ide), DEFAULT_MESSAGE);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn a_custom_message_is_what_com1_carries() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let mut image = image::read_boot_sector(&elf).unwrap();
    let message = "Up! ~#$%&'()*+,-./:;<=>?@";
    image.set_message(message).unwrap();
    let scratch = scratch("custom");
    let path = scratch_image(&scratch, "custom.raw", &image.bytes);
    assert_boots_and_idles(&raw_config(&path), message);
}

/// The longest message that fits (every free byte used) is printed whole: nothing after it in
/// the sector is overwritten, and the signature still holds.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_longest_message_that_fits_is_printed_whole() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let mut image = image::read_boot_sector(&elf).unwrap();
    let room = image.message_room();
    assert!(room >= 32, "the sector keeps room for 32 characters; it has {room}");
    let message: String = (0..room).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    image.set_message(&message).unwrap();
    assert_eq!(image.free_bytes(), 0);
    image.check_boot_sector().unwrap();
    let scratch = scratch("longest");
    let path = scratch_image(&scratch, "longest.raw", &image.bytes);
    assert_boots_and_idles(&raw_config(&path), &message);
}

/// The idle check is real: the same image with the idle loop's `hlt` turned into `nop` (the
/// original NASM image's busy loop, in effect) must fail it.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_idle_check_catches_a_vm_that_spins() {
    let mut bytes = std::fs::read(test_image("raw")).unwrap();
    // Every `sti; hlt` (the compiler may rotate the loop and emit the pair twice).
    const STI_HLT: [u8; 2] = [0xFB, 0xF4];
    let places: Vec<_> =
        bytes.windows(2).enumerate().filter(|(_, w)| *w == STI_HLT).map(|(at, _)| at).collect();
    assert!(!places.is_empty(), "the idle loop's `sti; hlt`");
    for at in places {
        bytes[at + 1] = 0x90; // nop
    }
    let scratch = scratch("spin");
    let path = scratch_image(&scratch, "spin.raw", &bytes);
    let mut vm = Vm::start(&raw_config(&path)).unwrap();
    vm.wait_for(b"\r\n", BOOT_TIMEOUT).unwrap();
    let share = qemu::cpu_shares(std::slice::from_mut(&mut vm), IDLE_WINDOW).unwrap()[0];
    // Sharing the cores with the other tests' QEMUs, it may not get a whole one; what matters
    // is that the check the other tests make fails.
    assert!(
        share > IDLE_LIMIT,
        "a spinning VM passed the idle check ({:.1}% of a core)",
        share * 100.0
    );
}

/// `format` booted on every disk bus hypervisors use.
/// Every controller SeaBIOS boots from, all at once under TCG (see `Bus`).
fn assert_boots_on_every_bus(format: Format) {
    let configs: Vec<_> = format.buses().iter().map(|&bus| tcg(config(format, bus))).collect();
    assert_eq!(configs.len(), Bus::ALL.len());
    assert_all_print(&configs, DEFAULT_MESSAGE);
}

/// The bare sector boots from IDE and the floppy drive, the drives with a geometry of their
/// own; on the others it is less than a cylinder (see `Format::buses`).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn raw_boots_from_ide_and_the_floppy_drive() {
    let configs: Vec<_> =
        Format::Raw.buses().iter().map(|&bus| tcg(config(Format::Raw, bus))).collect();
    assert_eq!(configs.len(), 2);
    assert_all_print(&configs, DEFAULT_MESSAGE);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn img_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Img);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn qcow2_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Qcow2);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn vmdk_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vmdk);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn vdi_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vdi);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn vhd_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vhd);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn vhdx_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vhdx);
}

/// The ISO on every CD drive: IDE (`pc`), AHCI (`q35`), the SCSI controllers, USB. SeaBIOS loads El Torito images at
/// 07C0:0000, so this is also the boot at CS=07C0 that the far jump must normalise.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn iso_boots_from_ide_and_ahci_cd_drives_and_idles() {
    let configs: Vec<_> =
        Format::Iso.buses().iter().map(|&bus| tcg(config(Format::Iso, bus))).collect();
    assert_all_print(&configs, DEFAULT_MESSAGE);
    assert_boots_and_idles(&configs[0], DEFAULT_MESSAGE);
}

/// What `qemu-img info` calls each disk artifact, `qemu-img check` where it has one, and
/// `qemu-img compare`: the 1 MiB formats hold exactly the img's disk.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn qemu_img_identifies_and_checks_every_disk_format() {
    let qemu_img = crate::infra::tools::path(crate::infra::tools::Tool::QemuImg).unwrap();
    for (format, expected, checkable) in [
        (Format::Raw, "raw", false),
        (Format::Img, "raw", false),
        (Format::Qcow2, "qcow2", true),
        (Format::Vmdk, "vmdk", true),
        (Format::Vdi, "vdi", true),
        (Format::Vhd, "vpc", false), // qemu-img has no check for vpc
        (Format::Vhdx, "vhdx", true),
    ] {
        let path = test_image(format.extension());
        let info = Command::new(&qemu_img).arg("info").arg(&path).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout).into_owned();
        assert!(info.contains(&format!("file format: {expected}\n")), "{}: {info}", path.display());
        let virtual_size = format.virtual_size().unwrap();
        assert!(info.contains(&format!("({virtual_size} bytes)")), "{}: {info}", path.display());
        if checkable {
            let check = Command::new(&qemu_img).arg("check").arg(&path).output().unwrap();
            assert!(check.status.success(), "qemu-img check {}: {check:?}", path.display());
            let compare = Command::new(&qemu_img)
                .args(["compare", "-f", expected, "-F", "raw"])
                .arg(&path)
                .arg(test_image("img"))
                .output()
                .unwrap();
            assert!(compare.status.success(), "qemu-img compare {}: {compare:?}", path.display());
        }
    }
}

/// Each artifact is no larger than the original bundle's, the ISO at most 64 KiB, raw exactly
/// 512, the UEFI program at most 4 KiB, the VHDX at most 5 MiB.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn artifacts_are_no_larger_than_the_original_bundle() {
    for format in Format::ALL {
        let size = std::fs::metadata(test_image(format.extension())).unwrap().len();
        if let Some(original) = format.original_size() {
            assert!(
                size <= original,
                "{}: {size} bytes > the original's {original}",
                format.name()
            );
        }
    }
    assert_eq!(std::fs::metadata(test_image("raw")).unwrap().len(), 512);
    assert!(std::fs::metadata(test_image("iso")).unwrap().len() <= 64 * 1024);
    assert!(std::fs::metadata(test_image("efi")).unwrap().len() <= 4096);
    assert!(std::fs::metadata(test_image("vhdx")).unwrap().len() <= 5 << 20, "VHDX over 5 MiB");
}

/// Two builds, the second from a clean crate: every artifact is identical, the formats with
/// identifiers (vmdk, vdi, vhd) and the containerDisk included.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn every_format_rebuilds_bit_for_bit() {
    let first = env_dir(IMAGES_ENV);
    let second = first.with_file_name(crate::tasks::test::REBUILD_DIR);
    let sums = |dir: &Path| std::fs::read_to_string(dir.join(CHECKSUMS)).unwrap();
    assert_eq!(sums(&first).lines().count(), Family::every_artifact().count());
    assert_eq!(sums(&first), sums(&second), "two clean builds differ");
}

/// SHA256SUMS verifies with `sha256sum -c`.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn sha256sums_verifies_with_sha256sum() {
    let dir = env_dir(IMAGES_ENV);
    let out = Command::new("sha256sum").args(["-c", CHECKSUMS]).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let artifacts = Family::every_artifact().count();
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(": OK").count(), artifacts);
}

/// The ROM as `-bios` and in pflash, on `pc` and `q35`, under every accelerator available.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn rom_boots_as_bios_and_pflash_on_pc_and_q35() {
    let mut configs = Vec::new();
    for accel in accels() {
        for machine in ["pc", "q35"] {
            for boot in [Boot::Bios, Boot::Pflash] {
                configs.push(VmConfig { boot, accel, ..rom_config(machine) });
            }
        }
    }
    assert_all_print(&configs, DEFAULT_MESSAGE);
}

/// With no BIOS the ROM programs the PIT, PIC and local APIC itself; as `-bios` and in pflash,
/// on `pc` and `q35`, it must idle as cheaply as the boot sector.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn rom_idles_after_the_message_as_bios_and_pflash() {
    let mut configs = Vec::new();
    for machine in ["pc", "q35"] {
        for boot in [Boot::Bios, Boot::Pflash] {
            configs.push(VmConfig { boot, ..rom_config(machine) });
        }
    }
    assert_all_idle(&configs);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn flat_rom_matches_llvm_objcopy() {
    let elf = env_dir(ELF_ENV).join("rom");
    let ours = image::read_rom(&elf).unwrap();
    let scratch = scratch("objcopy-rom");
    let out = scratch.join("rom.bin");
    let status = Command::new(env_dir(LLVM_ENV).join("llvm-objcopy"))
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    // objcopy stops after the last byte of the reset vector; our image runs on to 64 KiB.
    let theirs = std::fs::read(&out).unwrap();
    assert!(theirs.len() > image::RESET_VECTOR_OFFSET, "objcopy output reaches the reset vector");
    assert!(
        ours.bytes[..theirs.len()] == theirs[..],
        "our ELF-to-flat step and llvm-objcopy disagree"
    );
    assert!(ours.bytes[theirs.len()..].iter().all(|&b| b == 0));
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_acpi_power_button_powers_off_every_boot_path() {
    assert_all_power_off(&every_boot_path(), |vm| vm.qmp("system_powerdown").unwrap());
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn ctrl_d_on_the_serial_console_powers_off() {
    let configs = every_boot_path();
    assert_all_power_off(&[configs[0].clone(), configs[5].clone()], |vm| type_on_com1(vm, b"\x04"));
}

/// A harness presses Enter on the console to wake a prompt: the VM echoes every byte on COM1
/// and stays up; only Ctrl-D powers it off. (It used to power off at any byte.)
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn com1_echoes_what_it_receives_and_stays_up_until_ctrl_d() {
    let configs = every_boot_path();
    let mut vms = boot_all(&[configs[0].clone(), configs[5].clone()], DEFAULT_MESSAGE);
    let typed = b"echo me\r";
    for vm in &mut vms {
        type_on_com1(vm, typed);
    }
    let expected = [line(DEFAULT_MESSAGE).as_bytes(), typed].concat();
    for vm in &mut vms {
        vm.wait_for(&expected, BOOT_TIMEOUT).unwrap();
        assert_eq!(vm.serial_output(), expected, "{}", vm.description());
    }
    // Still up well after the Enter.
    qemu::cpu_shares(&mut vms, POWER_OFF_LIMIT).unwrap();
    assert_all_power_off_now(&mut vms, |vm| type_on_com1(vm, b"\x04"));
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn a_key_on_the_keyboard_powers_off() {
    let configs = every_boot_path();
    let key = r#"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "q"}]}}"#;
    assert_all_power_off(
        &[configs[0].clone(), configs[1].clone(), configs[5].clone(), configs[6].clone()],
        |vm| vm.qmp_json(key).unwrap(),
    );
}

/// No ACPI (`acpi=off`: no tables for the boot sector, no PM function for the ROM): the VM
/// still prints and idles, and the power button and keys change nothing: no crash, no reboot
/// (`-no-reboot` would end QEMU), no spinning.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn without_acpi_the_vm_prints_idles_and_ignores_the_button() {
    let mut configs = every_boot_path();
    configs.retain(|config| {
        config.machine == "pc" && !matches!(config.boot, Boot::Disk { bus: Bus::VirtioBlk, .. })
    });
    for config in &mut configs {
        config.machine = "pc,acpi=off".into();
    }
    // The idle window (IDLE_WINDOW) outlasts POWER_OFF_LIMIT: a VM that powered off, crashed or
    // rebooted (-no-reboot ends QEMU) fails as "QEMU exited".
    assert!(IDLE_WINDOW > POWER_OFF_LIMIT);
    // A key on COM1 is echoed (and not acted on otherwise).
    let mut vms = boot_all(&configs, DEFAULT_MESSAGE);
    for vm in &mut vms {
        vm.qmp("system_powerdown").unwrap();
        type_on_com1(vm, b"q");
    }
    assert_idle_with(&mut vms, &format!("{}q", line(DEFAULT_MESSAGE)));
}

/// No periodic tick (the PIT stopped) in the boot sector and the ROM: the VM sleeps until the
/// keyboard, COM1 or the ACPI SCI interrupts it. Each of those still works after 10 s asleep, on
/// `pc` and `q35`: bytes typed on COM1 come back, and Ctrl-D, a key and the power button power
/// it off.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn every_wake_up_is_answered_after_a_long_idle() {
    let mut configs = Vec::new();
    for machine in ["pc", "q35"] {
        let sector = VmConfig { machine: machine.into(), ..config(Format::Img, Bus::Ide) };
        for image in [sector, rom_config(machine)] {
            for wake in WAKE_UPS {
                configs.push(VmConfig { label: Some(wake.into()), ..tcg(image.clone()) });
            }
        }
    }
    let mut vms = boot_all(&configs, DEFAULT_MESSAGE);
    assert_every_wake_up_answered_after_a_long_idle(&mut vms);
}
