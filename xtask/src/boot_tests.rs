//! Boot tests: real QEMU, real SeaBIOS, COM1 read back. They use the images `cargo xtask test`
//! built (its environment variables name them); run them through that command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::DEFAULT_MESSAGE;
use crate::formats::Format;
use crate::image::{self, Image};
use crate::qemu::{Boot, Bus, Vm, VmConfig};
use crate::test::{ELF_ENV, IMAGES_ENV, LLVM_ENV};

/// How long a boot may take to print: generous, because under nested KVM a SeaBIOS boot costs
/// ~3 s of CPU and the matrix tests start many at once on 2 cores. Only a failure waits this long.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the idle check watches QEMU's CPU time.
pub const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// The most CPU an idle VM may use, as a share of one core. A VM that spins uses ~100%.
pub const IDLE_LIMIT: f64 = 0.05;

fn env_dir(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "{name} is not set: run the tests with `cargo xtask test`, which builds the images first"
        ),
    }
}

/// A test image: `target/test-images/512-byte-vm.<ext>`.
pub fn test_image(extension: &str) -> PathBuf {
    image::artifact_path(&env_dir(IMAGES_ENV), extension)
}

/// A scratch directory for this test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vm512-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Boots `config`, asserts that COM1 carries exactly `message` CR LF, and that the VM then idles
/// (still running, QEMU's CPU use below IDLE_LIMIT). Returns the VM for further checks.
pub fn assert_boots_and_idles(config: &VmConfig, message: &str) -> Vm {
    let mut vm = Vm::start(config).unwrap();
    let line = format!("{message}\r\n");
    vm.wait_for(line.as_bytes(), BOOT_TIMEOUT).unwrap();
    let share = vm.cpu_share_over(IDLE_WINDOW).unwrap();
    assert!(
        share < IDLE_LIMIT,
        "{}: QEMU used {:.1}% of a core while the VM should idle (limit {:.0}%)",
        vm.description(),
        share * 100.0,
        IDLE_LIMIT * 100.0
    );
    let output = vm.serial_output();
    assert_eq!(
        String::from_utf8_lossy(&output),
        line,
        "{}: COM1 must carry exactly the message line",
        vm.description()
    );
    vm
}

#[test]
fn flat_boot_sector_matches_llvm_objcopy() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let ours = image::read_boot_sector(&elf).unwrap();
    let out = scratch("objcopy").join("boot-sector.bin");
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
fn built_image_is_a_boot_sector_with_the_default_message() {
    let bytes = std::fs::read(test_image("raw")).unwrap();
    image::check_boot_sector(&bytes).unwrap();
    let elf = image::read_boot_sector(&env_dir(ELF_ENV).join("boot-sector")).unwrap();
    let built = Image { bytes, ..elf.clone() };
    assert_eq!(built.message(), DEFAULT_MESSAGE.as_bytes());
    assert_eq!(built.code_bytes() + built.message_bytes() + built.free_bytes() + 2, 512);
    // The code in front of the message is what the ELF linked.
    assert_eq!(built.bytes[..elf.code_bytes()], elf.bytes[..elf.code_bytes()]);
}

#[test]
fn boots_on_ide_prints_the_message_on_com1_and_idles() {
    assert_boots_and_idles(&VmConfig::disk(&test_image("raw")), DEFAULT_MESSAGE);
}

#[test]
fn a_custom_message_is_what_com1_carries() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let mut image = image::read_boot_sector(&elf).unwrap();
    let message = "Up! ~#$%&'()*+,-./:;<=>?@";
    image.set_message(message).unwrap();
    let path = scratch("custom").join("custom.raw");
    image::write_atomically(&path, &image.bytes).unwrap();
    assert_boots_and_idles(&VmConfig::disk(Path::new(&path)), message);
}

/// The longest message that fits (every free byte used) is printed whole: nothing after it in
/// the sector is overwritten, and the signature still holds.
#[test]
fn the_longest_message_that_fits_is_printed_whole() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let mut image = image::read_boot_sector(&elf).unwrap();
    let room = image.message_end - image.message_start - 3;
    let message: String = (0..room).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    image.set_message(&message).unwrap();
    assert_eq!(image.free_bytes(), 0);
    image.check_boot_sector().unwrap();
    let path = scratch("longest").join("longest.raw");
    image::write_atomically(&path, &image.bytes).unwrap();
    assert_boots_and_idles(&VmConfig::disk(Path::new(&path)), &message);
}

/// The idle check is real: the same image with the idle loop's `hlt` turned into `nop` (the
/// original NASM image's busy loop, in effect) must fail it.
#[test]
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
    let path = scratch("spin").join("spin.raw");
    image::write_atomically(&path, &bytes).unwrap();
    let mut vm = Vm::start(&VmConfig::disk(&path)).unwrap();
    vm.wait_for(b"\r\n", BOOT_TIMEOUT).unwrap();
    let share = vm.cpu_share_over(IDLE_WINDOW).unwrap();
    // Sharing the cores with the other tests' QEMUs, it may not get a whole one; what matters
    // is that the check the other tests make fails.
    assert!(
        share > IDLE_LIMIT,
        "a spinning VM passed the idle check ({:.1}% of a core)",
        share * 100.0
    );
}

/// Starts every config at once, then checks that each prints exactly `message` CR LF. Reports
/// every cell that failed, not just the first.
pub fn assert_all_print(configs: &[VmConfig], message: &str) {
    let line = format!("{message}\r\n");
    let mut vms: Vec<_> = configs.iter().map(|config| Vm::start(config).unwrap()).collect();
    let failures: Vec<String> = vms
        .iter_mut()
        .filter_map(|vm| match vm.wait_for(line.as_bytes(), BOOT_TIMEOUT) {
            Err(error) => Some(format!("{error:#}")),
            Ok(_) if vm.serial_output() != line.as_bytes() => Some(format!(
                "{}: COM1 carried {:?}",
                vm.description(),
                String::from_utf8_lossy(&vm.serial_output())
            )),
            Ok(_) => None,
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        vms.len(),
        failures.join("\n")
    );
}

/// `format` booted on every disk bus hypervisors use.
fn assert_boots_on_every_bus(format: Format) {
    let image = test_image(format.extension());
    let configs: Vec<_> = Bus::ALL.iter().map(|&bus| VmConfig::boot(&image, format, bus)).collect();
    assert_all_print(&configs, DEFAULT_MESSAGE);
}

#[test]
fn img_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Img);
}

#[test]
fn qcow2_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Qcow2);
}

#[test]
fn vmdk_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vmdk);
}

#[test]
fn vdi_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vdi);
}

#[test]
fn vhd_boots_on_every_bus() {
    assert_boots_on_every_bus(Format::Vhd);
}

/// The ISO on IDE (`pc`) and AHCI (`q35`) CD drives. SeaBIOS loads El Torito images at
/// 07C0:0000, so this is also the boot at CS=07C0 that the far jump must normalise.
#[test]
fn iso_boots_from_ide_and_ahci_cd_drives_and_idles() {
    let image = test_image("iso");
    let configs: Vec<_> =
        [Bus::Ide, Bus::Ahci].iter().map(|&bus| VmConfig::boot(&image, Format::Iso, bus)).collect();
    assert_all_print(&configs, DEFAULT_MESSAGE);
    assert_boots_and_idles(&configs[0], DEFAULT_MESSAGE);
}

/// What `qemu-img info` calls each disk artifact, and `qemu-img check` where it has one.
#[test]
fn qemu_img_identifies_and_checks_every_disk_format() {
    let qemu_img = crate::qemu::img_binary().unwrap();
    for (format, expected, checkable) in [
        (Format::Raw, "raw", false),
        (Format::Img, "raw", false),
        (Format::Qcow2, "qcow2", true),
        (Format::Vmdk, "vmdk", true),
        (Format::Vdi, "vdi", true),
        (Format::Vhd, "vpc", false), // qemu-img has no check for vpc
    ] {
        let path = test_image(format.extension());
        let info = Command::new(&qemu_img).arg("info").arg(&path).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout).into_owned();
        assert!(info.contains(&format!("file format: {expected}\n")), "{}: {info}", path.display());
        let virtual_size = if format == Format::Raw { 512 } else { crate::formats::DISK_SIZE };
        assert!(info.contains(&format!("({virtual_size} bytes)")), "{}: {info}", path.display());
        if checkable {
            let check = Command::new(&qemu_img).arg("check").arg(&path).output().unwrap();
            assert!(check.status.success(), "qemu-img check {}: {check:?}", path.display());
        }
    }
}

/// Each artifact is no larger than the original bundle's, the ISO at most 64 KiB, raw exactly 512.
#[test]
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
}

/// Two builds, the second from a clean crate: raw, img, qcow2 and iso are identical; the
/// formats that embed random identifiers by design differ.
#[test]
fn deterministic_formats_rebuild_bit_for_bit() {
    let first = env_dir(IMAGES_ENV);
    let second = first.with_file_name(crate::test::REBUILD_DIR);
    let sums = |dir: &Path| std::fs::read_to_string(dir.join(image::CHECKSUMS)).unwrap();
    let (first_sums, second_sums) = (sums(&first), sums(&second));
    for format in Format::ALL {
        let name = image::artifact_path(Path::new(""), format.extension());
        let name = name.to_string_lossy();
        let line = |sums: &str| {
            sums.lines().find(|l| l.ends_with(&format!("  {name}"))).unwrap().to_string()
        };
        let same = line(&first_sums) == line(&second_sums);
        assert_eq!(same, !format.embeds_random_ids(), "{name}: same SHA-256 twice is {same}");
    }
}

/// SHA256SUMS verifies with `sha256sum -c`.
#[test]
fn sha256sums_verifies_with_sha256sum() {
    let dir = env_dir(IMAGES_ENV);
    let out = Command::new("sha256sum")
        .args(["-c", image::CHECKSUMS])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(": OK").count(), Format::ALL.len());
}

pub use crate::qemu::available_accels as accels;

/// The ROM as `-bios` and in pflash, on `pc` and `q35`, under every accelerator available.
#[test]
fn rom_boots_as_bios_and_pflash_on_pc_and_q35() {
    let rom = test_image("rom");
    let mut configs = Vec::new();
    for accel in accels() {
        for machine in ["pc", "q35"] {
            for boot in [Boot::Bios, Boot::Pflash] {
                let mut config = VmConfig::boot(&rom, Format::Rom, Bus::Ide);
                (config.machine, config.boot, config.accel) = (machine.into(), boot, accel);
                configs.push(config);
            }
        }
    }
    assert_all_print(&configs, DEFAULT_MESSAGE);
}

/// Starts every config at once, waits for each message, then checks over one shared window
/// that each VM still runs, uses under IDLE_LIMIT of a core and printed exactly its line.
pub fn assert_all_idle(configs: &[VmConfig]) {
    assert_all_idle_after(configs, |_| {});
}

/// As [`assert_all_idle`], with `poke` done to each VM after its message (a button, a key).
pub fn assert_all_idle_after(configs: &[VmConfig], poke: impl Fn(&mut Vm)) {
    let line = format!("{DEFAULT_MESSAGE}\r\n");
    let mut vms: Vec<_> = configs.iter().map(|config| Vm::start(config).unwrap()).collect();
    for vm in &mut vms {
        vm.wait_for(line.as_bytes(), BOOT_TIMEOUT).unwrap();
        poke(vm);
    }
    let shares = crate::qemu::cpu_shares(&mut vms, IDLE_WINDOW).unwrap();
    for (vm, share) in vms.iter().zip(shares) {
        assert!(
            share < IDLE_LIMIT,
            "{}: {:.1}% of a core while idle",
            vm.description(),
            share * 100.0
        );
        assert_eq!(String::from_utf8_lossy(&vm.serial_output()), line, "{}", vm.description());
    }
}

/// With no BIOS the ROM programs the PIT, PIC and local APIC itself; as `-bios` and in pflash,
/// on `pc` and `q35`, it must idle as cheaply as the boot sector.
#[test]
fn rom_idles_after_the_message_as_bios_and_pflash() {
    let mut configs = Vec::new();
    for machine in ["pc", "q35"] {
        for boot in [Boot::Bios, Boot::Pflash] {
            let mut config = VmConfig::boot(&test_image("rom"), Format::Rom, Bus::Ide);
            (config.machine, config.boot) = (machine.into(), boot);
            configs.push(config);
        }
    }
    assert_all_idle(&configs);
}

#[test]
fn flat_rom_matches_llvm_objcopy() {
    let elf = env_dir(ELF_ENV).join("rom");
    let ours = image::read_rom(&elf).unwrap();
    let out = scratch("objcopy-rom").join("rom.bin");
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

/// How soon after the power button (or a key) the VM must be off.
pub const POWER_OFF_LIMIT: Duration = Duration::from_secs(2);

/// Boots every config at once, waits for each message, then asks each to power off with
/// `ask` and checks that QEMU exits by itself within POWER_OFF_LIMIT, successfully, with QMP
/// reporting a guest-initiated shutdown (ACPI soft-off, not the host stopping QEMU).
fn assert_all_power_off(configs: &[VmConfig], ask: impl Fn(&mut Vm)) {
    let mut vms: Vec<_> = configs.iter().map(|config| Vm::start(config).unwrap()).collect();
    for vm in &mut vms {
        vm.wait_for(format!("{DEFAULT_MESSAGE}\r\n").as_bytes(), BOOT_TIMEOUT).unwrap();
    }
    let mut failures = Vec::new();
    for vm in &mut vms {
        ask(vm);
        match vm.wait_exit(POWER_OFF_LIMIT).unwrap() {
            None => failures
                .push(format!("{}: still running {POWER_OFF_LIMIT:?} later", vm.description())),
            Some((status, _)) if !status.success() => failures.push(format!(
                "{}: QEMU exited with {status}: {}",
                vm.description(),
                vm.stderr_output()
            )),
            Some(_) if !vm.guest_shut_down() => failures.push(format!(
                "{}: no guest-initiated SHUTDOWN on QMP: {}",
                vm.description(),
                vm.qmp_log()
            )),
            Some(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        vms.len(),
        failures.join("\n")
    );
}

/// Every way the VM boots: the disk on `pc` (IDE) and `q35` (AHCI), a virtio disk, the ISO on
/// `pc` and `q35`, the ROM on `pc` and `q35`.
fn every_boot_path() -> Vec<VmConfig> {
    let (img, iso, rom) = (test_image("img"), test_image("iso"), test_image("rom"));
    let mut configs = vec![
        VmConfig::boot(&img, Format::Img, Bus::Ide),
        VmConfig::boot(&img, Format::Img, Bus::Ahci),
        VmConfig::boot(&img, Format::Img, Bus::VirtioBlk),
        VmConfig::boot(&iso, Format::Iso, Bus::Ide),
        VmConfig::boot(&iso, Format::Iso, Bus::Ahci),
    ];
    for machine in ["pc", "q35"] {
        let mut config = VmConfig::boot(&rom, Format::Rom, Bus::Ide);
        config.machine = machine.into();
        configs.push(config);
    }
    configs
}

#[test]
fn the_acpi_power_button_powers_off_every_boot_path() {
    assert_all_power_off(&every_boot_path(), |vm| vm.qmp("system_powerdown").unwrap());
}

#[test]
fn a_key_on_the_serial_console_powers_off() {
    let configs = every_boot_path();
    assert_all_power_off(&[configs[0].clone(), configs[5].clone()], |vm| {
        vm.send_serial(b"q").unwrap()
    });
}

#[test]
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
    assert_all_idle_after(&configs, |vm| {
        vm.qmp("system_powerdown").unwrap();
        vm.send_serial(b"q").unwrap();
    });
}
