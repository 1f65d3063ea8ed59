//! The PVH kernel under the other VMMs, where they are installed: Cloud Hypervisor and
//! Firecracker, on KVM, with no firmware. On each the kernel prints exactly its line on COM1,
//! echoes what is typed, idles with no tick, and ends on the VMM's graceful stop (CH: the ACPI
//! power button, then S5; FC: Ctrl-Alt-Del, then a reset through the i8042) and on Ctrl-D, the
//! VMM exiting with status 0 each time. The net kernel on a private network leases, answers and
//! gives its lease back. Without the VMM or KVM, each test says so and passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::harness::*;
use crate::domain::formats::{Family, Format};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::cloud_hypervisor::{self, ChVm};
use crate::infra::firecracker::{self, FcVm};
use crate::infra::guest::Guest;
use crate::infra::idle::Watched;
use crate::infra::netns::PrivateNetwork;
use crate::infra::qemu;

/// Wake-ups per second below which a VM runs no timer (the kernel stops every one).
const TICKLESS_WAKEUPS: f64 = 5.0;
/// How long the VM sleeps before its idle cost is measured.
const SETTLE: Duration = Duration::from_secs(3);
/// What the tests type on COM1, to be echoed.
const TYPED: &[u8] = b"echo?";
/// Ctrl-D: the kernel powers off (or resets) when it comes on COM1.
const CTRL_D: &[u8] = b"\x04";

/// What the tests need of a launcher: [`ChVm`] and [`FcVm`] have the same shape.
trait Launcher: Watched + Sized + std::ops::DerefMut<Target = Guest> {
    /// The VMM's program, as the skip line names it.
    const PROGRAM: &str;
    fn binary() -> Option<PathBuf>;
    fn start(kernel: &Path) -> Result<Self>;
    /// With a virtio-net card on tap `tap`, MAC `mac`.
    fn start_with_nic(kernel: &Path, tap: &str, mac: &str) -> Result<Self>;
    fn type_serial(&mut self, bytes: &[u8]) -> Result<()>;
    fn power_button(&mut self) -> Result<()>;
}

/// Implements [`Launcher`] for a launcher module's VM type with its own methods.
macro_rules! launcher {
    ($vm:ident, $module:ident, $program:literal) => {
        impl Launcher for $vm {
            const PROGRAM: &str = $program;
            fn binary() -> Option<PathBuf> {
                $module::binary()
            }
            fn start(kernel: &Path) -> Result<Self> {
                $vm::start(kernel)
            }
            fn start_with_nic(kernel: &Path, tap: &str, mac: &str) -> Result<Self> {
                $vm::start_with_nic(kernel, Some((tap, mac)))
            }
            fn type_serial(&mut self, bytes: &[u8]) -> Result<()> {
                $vm::type_serial(self, bytes)
            }
            fn power_button(&mut self) -> Result<()> {
                $vm::power_button(self)
            }
        }
    };
}

launcher!(ChVm, cloud_hypervisor, "cloud-hypervisor");
launcher!(FcVm, firecracker, "firecracker");

/// All COM1 carries at boot: the message as a line of its own.
fn com1_line() -> String {
    format!("\r\n{}", line(DEFAULT_MESSAGE))
}

/// Boots the PVH kernel on `V` and checks that COM1 carries exactly its line; `None`, with a
/// line saying why, where `V` or KVM is missing.
fn boot<V: Launcher>() -> Option<V> {
    if V::binary().is_none() {
        eprintln!("skipped: {} not installed", V::PROGRAM);
        return None;
    }
    if let Err(why) = qemu::kvm_usable() {
        eprintln!("skipped: {} needs KVM: {why}", V::PROGRAM);
        return None;
    }
    let mut vm = V::start(&test_image("pvh")).unwrap();
    let at = vm.wait_for(com1_line().as_bytes(), BOOT_TIMEOUT).unwrap();
    assert_eq!(String::from_utf8_lossy(&vm.serial_output()), com1_line(), "{}", vm.description());
    eprintln!("{}: the line {at:.3?} after start", vm.description());
    Some(vm)
}

/// Asks `vm` to stop with `ask` (`how` says how); checks that the VMM exits by itself with
/// status 0 within POWER_OFF_LIMIT of the asking.
fn assert_stops<V: Launcher>(vm: &mut V, how: &str, ask: impl FnOnce(&mut V) -> Result<()>) {
    let asked = Instant::now();
    ask(vm).unwrap();
    match vm.wait_exit(POWER_OFF_LIMIT.saturating_sub(asked.elapsed())).unwrap() {
        None => panic!("{}: still running {POWER_OFF_LIMIT:?} after {how}", vm.description()),
        Some((status, _)) => {
            let note = vm.stderr_note();
            assert!(
                status.success(),
                "{}: exited with {status} after {how}{note}",
                vm.description()
            );
        }
    }
    eprintln!("{}: exited {:.3?} after {how}", vm.description(), asked.elapsed());
}

/// Boots, checks the echo, lets the VM sleep and measures it idle, then stops it with its
/// VMM's graceful stop.
fn answers_idles_and_stops<V: Launcher>() {
    let Some(mut vm) = boot::<V>() else { return };
    vm.type_serial(TYPED).unwrap();
    // The line comes first thing; the echo once the kernel has read the tables and routed COM1
    // (under this machine's emulating KVM, and two cores' load, that can take seconds).
    vm.wait_for(TYPED, BOOT_TIMEOUT).unwrap();
    let expected = com1_line() + &String::from_utf8_lossy(TYPED);
    assert_eq!(String::from_utf8_lossy(&vm.serial_output()), expected, "{}", vm.description());
    std::thread::sleep(SETTLE);
    let cost = qemu::idle_costs(std::slice::from_mut(&mut vm), IDLE_WINDOW).unwrap()[0];
    eprintln!(
        "{}: idle at {:.1}% of a core, {:.1} wake-ups/s",
        vm.description(),
        cost.cpu * 100.0,
        cost.wakeups
    );
    assert!(
        cost.cpu < IDLE_LIMIT && cost.wakeups < TICKLESS_WAKEUPS,
        "{}: {:.1}% of a core (limit {:.0}%) and {:.1} wake-ups/s (limit {TICKLESS_WAKEUPS}) \
         while the VM should idle",
        vm.description(),
        cost.cpu * 100.0,
        IDLE_LIMIT * 100.0,
        cost.wakeups
    );
    assert_stops(&mut vm, "the graceful stop", V::power_button);
}

/// Boots, waits until COM1 answers, then types Ctrl-D on COM1: the VMM exits with status 0.
fn stops_on_ctrl_d<V: Launcher>() {
    let Some(mut vm) = boot::<V>() else { return };
    vm.type_serial(TYPED).unwrap();
    vm.wait_for(TYPED, BOOT_TIMEOUT).unwrap();
    assert_stops(&mut vm, "Ctrl-D on COM1", |vm| vm.type_serial(CTRL_D));
}

/// Under Cloud Hypervisor the kernel prints exactly its line, echoes COM1, idles with no tick,
/// and powers off (S5) within 2 s of the ACPI power button.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn cloud_hypervisor_boots_the_kernel_which_answers_idles_and_powers_off_on_the_button() {
    answers_idles_and_stops::<ChVm>();
}

/// Under Cloud Hypervisor, Ctrl-D on COM1 powers the VM off (S5): CH exits with status 0.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn cloud_hypervisor_powers_off_on_ctrl_d() {
    stops_on_ctrl_d::<ChVm>();
}

/// Under Firecracker the kernel prints exactly its line, echoes COM1, idles with no tick, and
/// resets within 2 s of SendCtrlAltDel, which ends FC with status 0.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn firecracker_boots_the_kernel_which_answers_idles_and_stops_on_ctrl_alt_del() {
    answers_idles_and_stops::<FcVm>();
}

/// Under Firecracker, Ctrl-D on COM1 resets the VM (no ACPI power-off there): FC exits with
/// status 0.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn firecracker_stops_on_ctrl_d() {
    stops_on_ctrl_d::<FcVm>();
}

/// The net kernel on `V` with a virtio-net card on a private network (Firecracker's on
/// virtio-mmio, named on the command line; Cloud Hypervisor's on PCI, with no 8254 for the
/// clock): its lease in dnsmasq's file, the address line on COM1, 5/5 pings, `GET /`, then the
/// graceful stop within POWER_OFF_LIMIT and the lease given back.
fn the_net_kernel_leases_answers_and_releases<V: Launcher>(
    stop: impl FnOnce(&mut V) -> Result<()>,
) {
    if V::binary().is_none() {
        eprintln!("skipped: {} not installed", V::PROGRAM);
        return;
    }
    if let Err(why) = qemu::kvm_usable() {
        eprintln!("skipped: {} needs KVM: {why}", V::PROGRAM);
        return;
    }
    let network = PrivateNetwork::create("vmm", true).unwrap();
    let mac = "52:54:00:00:06:01";
    let tap = network.tap().unwrap();
    let kernel = env_dir(crate::tasks::test::IMAGES_ENV).join(Family::Net.file_name(Format::Pvh));
    let mut vm = V::start_with_nic(&kernel, &tap, mac).unwrap();
    network.plug_when_open(&tap, vm.pid()).unwrap();
    let lease = network.wait_for_lease(mac, Duration::from_secs(60)).unwrap_or_else(|why| {
        let com1 = String::from_utf8_lossy(&vm.serial_output()).into_owned();
        panic!("{}: {why:#}\nCOM1 so far: {com1:?}", vm.description())
    });
    let address = lease.address;
    vm.wait_for(format!("{DEFAULT_MESSAGE} {address}\r\n").as_bytes(), BOOT_TIMEOUT).unwrap();
    let what = vm.description().to_string();
    assert_eq!(network.ping(&address, 5).unwrap(), 5, "{what}: ping {address}");
    let page = network.http_get(&address).unwrap();
    assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{what}: {page:?}");
    assert!(page.contains(&format!("mac {mac}\n")), "{what}: {page:?}");
    assert_stops(&mut vm, "the graceful stop", stop);
    assert_eq!(network.lease(mac), None, "{what}: lease not released");
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn cloud_hypervisor_runs_the_net_kernel_which_leases_answers_and_releases() {
    the_net_kernel_leases_answers_and_releases::<ChVm>(ChVm::power_button);
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn firecracker_runs_the_net_kernel_which_leases_answers_and_releases() {
    the_net_kernel_leases_answers_and_releases::<FcVm>(FcVm::power_button);
}
