//! The one harness every boot test shares: the images `cargo xtask test` built, scratch space,
//! and the checks a user would make (the exact line on COM1, an idle QEMU, QEMU's own shutdown
//! event), each over many VMs started at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::artifacts;
use crate::domain::formats::Format;
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::files::Scratch;
use crate::infra::qemu::{self, Bus, Vm, VmConfig};
use crate::tasks::test::IMAGES_ENV;

pub use crate::infra::qemu::available_accels as accels;

/// How long a boot may take to print: generous, because under nested KVM a SeaBIOS boot costs
/// ~3 s of CPU, OVMF under TCG some 10 s, and the matrix tests start many at once on 2 cores (a
/// load average above 20: 90 s was seen too short for one OVMF and one nested-KVM boot among
/// them). Only a failure waits this long.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the idle check watches QEMU's CPU time.
pub const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// The most CPU an idle VM may use, as a share of one core. A VM that spins uses ~100%.
pub const IDLE_LIMIT: f64 = 0.05;
/// How soon after the power button (or a key) the VM must be off.
pub const POWER_OFF_LIMIT: Duration = Duration::from_secs(2);

/// A directory `cargo xtask test` names in the environment variable `name`.
pub fn env_dir(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "{name} is not set: run the boot tests with `cargo xtask test`, which builds the \
             images first"
        ),
    }
}

/// A test image: `target/test-images/512-byte-vm.<ext>`.
pub fn test_image(extension: &str) -> PathBuf {
    artifacts::artifact_path(&env_dir(IMAGES_ENV), extension)
}

/// A scratch directory for one test, removed when it ends.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(name).unwrap()
}

/// The line the VM prints for `message`.
pub fn line(message: &str) -> String {
    format!("{message}\r\n")
}

/// `format`'s test image booted from `bus`.
pub fn config(format: Format, bus: Bus) -> VmConfig {
    format.vm_config(&test_image(format.extension()), bus)
}

/// The ROM's test image on `machine`, as `-bios`.
pub fn rom_config(machine: &str) -> VmConfig {
    VmConfig { machine: machine.into(), ..config(Format::Rom, Bus::Ide) }
}

/// Types `bytes` on the VM's COM1.
pub fn type_on_com1(vm: &mut Vm, bytes: &[u8]) {
    vm.type_serial(bytes).unwrap();
}

/// Starts every config at once and waits until each has printed `message`; checks that COM1
/// carried exactly that line. Reports every VM that failed, not just the first.
pub fn boot_all(configs: &[VmConfig], message: &str) -> Vec<Vm> {
    let line = line(message);
    let mut vms = qemu::start_all(configs).unwrap();
    qemu::wait_all_for(&mut vms, line.as_bytes(), BOOT_TIMEOUT).unwrap();
    let wrong: Vec<String> = vms
        .iter()
        .filter(|vm| vm.serial_output() != line.as_bytes())
        .map(|vm| {
            format!(
                "{}: COM1 carried {:?}",
                vm.description(),
                String::from_utf8_lossy(&vm.serial_output())
            )
        })
        .collect();
    assert!(wrong.is_empty(), "COM1 must carry exactly the message line:\n{}", wrong.join("\n"));
    vms
}

/// Starts every config at once; checks that each prints exactly `message` CR LF.
pub fn assert_all_print(configs: &[VmConfig], message: &str) {
    boot_all(configs, message);
}

/// Checks over one shared window that each VM still runs, uses under IDLE_LIMIT of a core and
/// has printed exactly `message`'s line and nothing more.
pub fn assert_idle(vms: &mut [Vm], message: &str) {
    assert_idle_with(vms, &line(message));
}

/// As [`assert_idle`], with COM1 carrying exactly `com1`.
pub fn assert_idle_with(vms: &mut [Vm], com1: &str) {
    let shares = qemu::cpu_shares(vms, IDLE_WINDOW).unwrap();
    for (vm, share) in vms.iter().zip(shares) {
        assert!(
            share < IDLE_LIMIT,
            "{}: QEMU used {:.1}% of a core while the VM should idle (limit {:.0}%)",
            vm.description(),
            share * 100.0,
            IDLE_LIMIT * 100.0
        );
        assert_eq!(String::from_utf8_lossy(&vm.serial_output()), com1, "{}", vm.description());
    }
}

/// Boots `config`, asserts that COM1 carries exactly `message` CR LF, and that the VM then idles.
/// Returns the VM for further checks.
pub fn assert_boots_and_idles(config: &VmConfig, message: &str) -> Vm {
    let mut vms = boot_all(std::slice::from_ref(config), message);
    assert_idle(&mut vms, message);
    vms.pop().unwrap()
}

/// Boots every config at once, then checks they all idle.
pub fn assert_all_idle(configs: &[VmConfig]) {
    assert_all_idle_after(configs, |_| {});
}

/// As [`assert_all_idle`], with `poke` done to each VM after its message (a button, a key).
pub fn assert_all_idle_after(configs: &[VmConfig], poke: impl Fn(&mut Vm)) {
    let mut vms = boot_all(configs, DEFAULT_MESSAGE);
    vms.iter_mut().for_each(&poke);
    assert_idle(&mut vms, DEFAULT_MESSAGE);
}

/// Boots every config at once, waits for each message, then asks each to power off with
/// `ask` and checks that QEMU exits by itself within POWER_OFF_LIMIT, successfully, with QMP
/// reporting a guest-initiated shutdown (ACPI soft-off, not the host stopping QEMU).
pub fn assert_all_power_off(configs: &[VmConfig], ask: impl Fn(&mut Vm)) {
    let mut vms = boot_all(configs, DEFAULT_MESSAGE);
    assert_all_power_off_now(&mut vms, ask);
}

/// Asks each running VM to power off with `ask`; checks each QEMU exits by itself within
/// POWER_OFF_LIMIT, successfully, with a guest-initiated SHUTDOWN on QMP.
pub fn assert_all_power_off_now(vms: &mut [Vm], ask: impl Fn(&mut Vm)) {
    let mut failures = Vec::new();
    for vm in vms.iter_mut() {
        // A VM that is gone before it is asked fails with what QEMU and QMP said.
        if let Err(error) = vm.check_running() {
            failures.push(format!("{error:#} (before it was asked); QMP: {}", vm.qmp_log()));
            continue;
        }
        ask(vm);
        match vm.wait_exit(POWER_OFF_LIMIT).unwrap() {
            None => failures
                .push(format!("{}: still running {POWER_OFF_LIMIT:?} later", vm.description())),
            Some((status, _)) if !status.success() => failures.push(format!(
                "{}: QEMU exited with {status}{}",
                vm.description(),
                vm.stderr_note()
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
pub fn every_boot_path() -> Vec<VmConfig> {
    vec![
        config(Format::Img, Bus::Ide),
        config(Format::Img, Bus::Ahci),
        config(Format::Img, Bus::VirtioBlk),
        config(Format::Iso, Bus::Ide),
        config(Format::Iso, Bus::Ahci),
        rom_config("pc"),
        rom_config("q35"),
    ]
}

/// Writes `bytes` as a scratch image called `name` and returns its path (inside `scratch`).
pub fn scratch_image(scratch: &Scratch, name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The same set-up under TCG: the controller and platform matrices run there (fast to boot
/// under software emulation, and the same everywhere).
pub fn tcg(config: VmConfig) -> VmConfig {
    VmConfig { accel: crate::infra::qemu::Accel::Tcg, ..config }
}

/// The VGA text screen: 80 x 25 cells at 0xB8000, a character byte and an attribute byte each.
const VGA_TEXT: u32 = 0xB_8000;
const VGA_COLUMNS: usize = 80;
const VGA_ROWS: usize = 25;

/// The text on the VM's VGA screen, read exactly from its memory (QMP `pmemsave` into
/// `scratch`): one line per row, trailing blanks trimmed.
pub fn screen(vm: &mut Vm, scratch: &Scratch) -> String {
    let file = scratch.join(&format!("screen-{}.bin", vm.pid()));
    let size = VGA_COLUMNS * VGA_ROWS * 2;
    let name = file.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    vm.qmp_json(&format!(
        r#"{{"execute": "pmemsave", "arguments": {{"val": {VGA_TEXT}, "size": {size}, "filename": "{name}"}}}}"#
    ))
    .unwrap();
    let cells = std::fs::read(&file).unwrap();
    cells
        .chunks(VGA_COLUMNS * 2)
        .map(|row| {
            let text: String = row.iter().step_by(2).map(|&b| b as char).collect();
            text.trim_end_matches([' ', '\0']).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until a row of the screen reads exactly `text`.
pub fn wait_for_screen(vm: &mut Vm, scratch: &Scratch, text: &str) {
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    loop {
        let shown = screen(vm, scratch);
        if shown.lines().any(|row| row == text) {
            return;
        }
        vm.check_running().unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "{}: no line {text:?} on the screen within {BOOT_TIMEOUT:?}; it shows:\n{shown}",
            vm.description()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw disk image on IDE (`pc`): how a scratch boot sector boots.
pub fn raw_config(path: &Path) -> VmConfig {
    Format::Raw.vm_config(path, Bus::Ide)
}

/// How long a VM sleeps before the wake-up checks: long enough that a VM which only polled on a
/// timer it no longer has would be caught.
pub const LONG_IDLE: Duration = Duration::from_secs(10);

/// The ways a VM is woken up, one per VM (its label): bytes on COM1 (then Ctrl-D), a key on the
/// keyboard, the ACPI power button.
pub const WAKE_UPS: [&str; 3] = ["COM1 then Ctrl-D", "keyboard", "power button"];

/// Lets `vms` (labelled by [`WAKE_UPS`], booted) sleep [`LONG_IDLE`], idle all the while; then
/// checks that the COM1 ones echo what is typed, and that each powers off on its wake-up.
pub fn assert_every_wake_up_answered_after_a_long_idle(vms: &mut [Vm]) {
    let shares = qemu::cpu_shares(vms, LONG_IDLE).unwrap();
    for (vm, share) in vms.iter().zip(shares) {
        assert!(share < IDLE_LIMIT, "{}: {:.1}% of a core", vm.description(), share * 100.0);
    }
    let wake = |vm: &Vm| vm.description().split(':').next().unwrap_or_default().to_owned();
    for vm in vms.iter_mut().filter(|vm| wake(vm) == WAKE_UPS[0]) {
        type_on_com1(vm, b"awake?");
        vm.wait_for(b"awake?", POWER_OFF_LIMIT).unwrap();
    }
    let key = r#"{"execute": "send-key", "arguments": {"keys": [{"type": "qcode", "data": "q"}]}}"#;
    assert_all_power_off_now(vms, |vm| match wake(vm).as_str() {
        "COM1 then Ctrl-D" => type_on_com1(vm, b"\x04"),
        "keyboard" => vm.qmp_json(key).unwrap(),
        _ => vm.qmp("system_powerdown").unwrap(),
    });
}

/// A small, seeded generator (xorshift64*) for generated input, so that a failure names the
/// input that caused it.
pub struct Noise(pub u64);

impl Noise {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Fewer than `most` random bytes.
    pub fn bytes(&mut self, most: usize) -> Vec<u8> {
        let length = self.below(most);
        (0..length).map(|_| self.next() as u8).collect()
    }

    /// `seed` with one to four of its bytes changed.
    pub fn mutated(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = self.below(bytes.len());
            bytes[at] = self.next() as u8;
        }
        bytes
    }
}
