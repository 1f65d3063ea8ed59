//! Boot tests: real QEMU, real SeaBIOS, COM1 read back. They use the images `cargo xtask test`
//! built (its environment variables name them); run them through that command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::DEFAULT_MESSAGE;
use crate::image::{self, Image};
use crate::qemu::{Vm, VmConfig};
use crate::test::{ELF_ENV, IMAGES_ENV, LLVM_ENV};

/// How long a boot may take to print, generous for software emulation on a loaded machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
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
    assert!(
        ours.bytes == theirs,
        "our ELF-to-flat step and llvm-objcopy disagree"
    );
}

#[test]
fn built_image_is_a_boot_sector_with_the_default_message() {
    let bytes = std::fs::read(test_image("raw")).unwrap();
    image::check_boot_sector(&bytes).unwrap();
    let elf = image::read_boot_sector(&env_dir(ELF_ENV).join("boot-sector")).unwrap();
    let built = Image {
        bytes,
        ..elf.clone()
    };
    assert_eq!(built.message(), DEFAULT_MESSAGE.as_bytes());
    assert_eq!(
        built.code_bytes() + built.message_bytes() + built.free_bytes() + 2,
        512
    );
    // The code in front of the message is what the ELF linked.
    assert_eq!(
        built.bytes[..elf.code_bytes()],
        elf.bytes[..elf.code_bytes()]
    );
}

#[test]
fn boots_on_ide_prints_the_message_on_com1_and_idles() {
    assert_boots_and_idles(&VmConfig::disk(&test_image("raw")), DEFAULT_MESSAGE);
}

#[test]
fn a_custom_message_is_what_com1_carries() {
    let elf = env_dir(ELF_ENV).join("boot-sector");
    let mut image = image::read_boot_sector(&elf).unwrap();
    let message = "Custom ~ message 0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}";
    image.set_message(message).unwrap();
    let path = scratch("custom").join("custom.raw");
    image::write_atomically(&path, &image.bytes).unwrap();
    assert_boots_and_idles(&VmConfig::disk(Path::new(&path)), message);
}

/// The idle check is real: the same image with the idle loop's `hlt` turned into `nop` (the
/// original NASM image's busy loop, in effect) must fail it.
#[test]
fn the_idle_check_catches_a_vm_that_spins() {
    let mut bytes = std::fs::read(test_image("raw")).unwrap();
    const STI_HLT: [u8; 2] = [0xFB, 0xF4];
    let at = bytes
        .windows(2)
        .position(|w| w == STI_HLT)
        .expect("the idle loop's `sti; hlt`");
    bytes[at + 1] = 0x90; // nop
    let path = scratch("spin").join("spin.raw");
    image::write_atomically(&path, &bytes).unwrap();
    let mut vm = Vm::start(&VmConfig::disk(&path)).unwrap();
    vm.wait_for(b"\r\n", BOOT_TIMEOUT).unwrap();
    let share = vm.cpu_share_over(IDLE_WINDOW).unwrap();
    assert!(
        share > 0.3,
        "a spinning VM used only {:.1}% of a core",
        share * 100.0
    );
}
