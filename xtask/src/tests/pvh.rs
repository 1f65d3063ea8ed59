//! The PVH kernel under QEMU `-kernel`: on `pc` and `q35` (SeaBIOS and its PVH option ROM run
//! first), and on `microvm` with its own firmware, hardware-reduced ACPI and the Generic Event
//! Device; and `microvm,acpi=off`, where no ACPI is left to power off with. Under TCG, and under
//! KVM too where it is usable (the I/O APIC is then KVM's own).

use super::harness::*;
use crate::domain::formats::Format;
use crate::domain::image::{DEFAULT_MESSAGE, Image};
use crate::domain::pvh;
use crate::infra::qemu::{self, Accel, Bus, Vm, VmConfig};

/// The kernel's test image on `machine`, with `accel`.
fn kernel(machine: &str, accel: Accel) -> VmConfig {
    VmConfig { machine: machine.into(), accel, ..config(Format::Pvh, Bus::Ide) }
}

/// The QEMU machines the kernel boots on, under each accelerator this machine has.
fn every_machine() -> Vec<VmConfig> {
    let mut configs = Vec::new();
    for accel in accels() {
        for machine in ["pc", "q35", "microvm"] {
            configs.push(kernel(machine, accel));
        }
    }
    configs
}

/// Starts every config and waits until each has printed exactly `message` as a line of its own
/// (nothing else has written COM1 before it: QEMU's firmware is quiet there).
fn boot_all_kernels(configs: &[VmConfig], message: &str) -> Vec<Vm> {
    let line = qemu::uefi_line(message);
    let mut vms = qemu::start_all(configs).unwrap();
    qemu::wait_all_for(&mut vms, line.as_bytes(), BOOT_TIMEOUT).unwrap();
    for vm in &vms {
        assert_eq!(String::from_utf8_lossy(&vm.serial_output()), line, "{}", vm.description());
    }
    vms
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_kernel_is_an_elf_with_the_pvh_note_and_under_its_size_target() {
    let bytes = std::fs::read(test_image("pvh")).unwrap();
    let kernel = pvh::read(&bytes).unwrap();
    // The note names the ELF's own entry: the stub, first in the image after its headers.
    let elf_entry = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    assert_eq!(u64::from(kernel.entry), elf_entry);
    assert!((pvh::LOWEST_LOAD..pvh::LOWEST_LOAD + 0x1000).contains(&elf_entry), "{elf_entry:#x}");
    assert!(bytes.len() <= pvh::SIZE_TARGET, "{} bytes", bytes.len());
    let image = Image::pvh_from_elf(bytes).unwrap();
    assert_eq!(image.message(), DEFAULT_MESSAGE.as_bytes());
}

/// On every machine: the exact line, the echo of what is typed, and off within 2 s of the power
/// button (on `microvm` through the GED), QMP saying the guest shut down.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_kernel_prints_echoes_and_powers_off_on_pc_q35_and_microvm() {
    let mut vms = boot_all_kernels(&every_machine(), DEFAULT_MESSAGE);
    let typed = b"echo me\r";
    for vm in &mut vms {
        type_on_com1(vm, typed);
    }
    let expected = [qemu::uefi_line(DEFAULT_MESSAGE).as_bytes(), typed].concat();
    for vm in &mut vms {
        vm.wait_for(&expected, BOOT_TIMEOUT).unwrap();
    }
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
}

/// Wake-ups per second below which a VM has no timer running (a paused VM makes about 0).
const FLOOR_WAKEUPS: f64 = 1.0;
/// How long the start's own traffic (QMP's greeting, COM1's first bytes, what a test typed)
/// takes to settle before idle is measured.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks, once the start's traffic has settled, that each VM idles at the paused VM's floor.
fn assert_all_at_the_floor(vms: &mut [Vm]) {
    std::thread::sleep(SETTLE);
    let costs = qemu::idle_costs(vms, IDLE_WINDOW).unwrap();
    for (vm, cost) in vms.iter().zip(costs) {
        assert!(
            cost.cpu < IDLE_LIMIT && cost.wakeups < FLOOR_WAKEUPS,
            "{}: {:.2}% of a core, {:.1} wake-ups/s",
            vm.description(),
            cost.cpu * 100.0,
            cost.wakeups
        );
    }
}

/// Asleep 10 s at the paused VM's floor (no timer: under 5% of a core and under one wake-up a
/// second), then each wake-up in turn: bytes on COM1 come back, and Ctrl-D, a key (where there
/// is a keyboard: not on `microvm`) and the power button power it off.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_kernel_sleeps_at_the_floor_then_answers_every_wake_up() {
    let mut configs = Vec::new();
    for machine in ["pc", "q35", "microvm"] {
        for wake in WAKE_UPS {
            if machine == "microvm" && wake == "keyboard" {
                continue;
            }
            configs.push(VmConfig { label: Some(wake.into()), ..kernel(machine, Accel::Tcg) });
        }
    }
    let mut vms = boot_all_kernels(&configs, DEFAULT_MESSAGE);
    assert_all_at_the_floor(&mut vms);
    assert_every_wake_up_answered_after_a_long_idle(&mut vms);
}

/// `microvm,acpi=off`: no tables, so no power button and no ACPI way to power off. The kernel
/// prints, echoes and idles at the floor, ignores the button, and Ctrl-D resets it (through the
/// 8042, then a triple fault: `microvm` has no 8042), which `-no-reboot` turns into QEMU's exit:
/// the way Firecracker's guests end.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn without_acpi_the_kernel_echoes_idles_and_ctrl_d_resets_it() {
    let configs: Vec<VmConfig> =
        accels().into_iter().map(|accel| kernel("microvm,acpi=off", accel)).collect();
    let mut vms = boot_all_kernels(&configs, DEFAULT_MESSAGE);
    for vm in &mut vms {
        vm.qmp("system_powerdown").unwrap();
        type_on_com1(vm, b"q");
    }
    assert_all_at_the_floor(&mut vms);
    for vm in &mut vms {
        let expected = format!("{}q", qemu::uefi_line(DEFAULT_MESSAGE));
        assert_eq!(String::from_utf8_lossy(&vm.serial_output()), expected);
        type_on_com1(vm, b"\x04");
        let exited = vm.wait_exit(POWER_OFF_LIMIT).unwrap();
        assert!(exited.is_some_and(|(status, _)| status.success()), "{}", vm.description());
        let log = vm.qmp_log();
        assert!(log.contains(r#""reason": "guest-reset""#), "{}: {log}", vm.description());
    }
}

/// Where SeaBIOS left a text screen (`pc`, `q35`), the line is on it too, below the BIOS's.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_kernel_shows_the_line_on_the_screen_where_there_is_one() {
    let scratch = scratch("pvh-screen");
    let configs = [kernel("pc", Accel::Tcg), kernel("q35", Accel::Tcg)];
    let mut vms = boot_all_kernels(&configs, DEFAULT_MESSAGE);
    for vm in &mut vms {
        wait_for_screen(vm, &scratch, DEFAULT_MESSAGE);
    }
}

/// `image --message` reaches the kernel as it does every image: the longest the boot sector
/// takes, printed whole.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn a_custom_message_is_what_the_kernel_prints() {
    let scratch = scratch("pvh-message");
    let message = "Booted OK: the PVH kernel, with a 39-char";
    let mut image = Image::pvh_from_elf(std::fs::read(test_image("pvh")).unwrap()).unwrap();
    image.set_message(&message[..39]).unwrap();
    let path = scratch_image(&scratch, "custom.pvh", &image.bytes);
    let config = VmConfig { machine: "microvm".into(), ..Format::Pvh.vm_config(&path, Bus::Ide) };
    let mut vms = boot_all_kernels(&[tcg(config)], &message[..39]);
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
}
