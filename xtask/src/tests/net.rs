//! The net family on the wire, under TCG: on a private network the test makes (a namespace,
//! a bridge, dnsmasq as the DHCP server and IPv6 router, QEMU's taps), and on QEMU's user
//! networking. What a platform's test suite would check: the lease in dnsmasq's lease file, the
//! address line on COM1, ping, `GET /`, ping to the SLAAC address, the power button, and the
//! lease given back. The classic VM on the same network asks for nothing.

use std::time::{Duration, Instant};

use super::harness::*;
use crate::domain::formats::{Family, Format};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::netns::{self, PrivateNetwork};
use crate::infra::qemu::{self, Bus, Firmware, NetBackend, Nic, Vm, VmConfig};
use crate::infra::tools;

/// How long a lease may take: dnsmasq checks the address is free first (a ping, up to 3 s),
/// and several TCG VMs share 2 cores.
pub(super) const LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pings per address; every one must be answered.
pub(super) const PINGS: u32 = 5;

/// The VM's MAC on the private network: 52:54:00 (QEMU's prefix) and the VM's number.
pub(super) fn mac(n: u8) -> String {
    format!("52:54:00:00:05:{n:02x}")
}

/// The SLAAC address a MAC gets on the network's prefix (RFC 4862 with the EUI-64).
pub(super) fn slaac(mac: &str) -> String {
    let b: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let groups = [
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xFF]),
        u16::from_be_bytes([0xFE, b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
    ];
    let prefix: std::net::Ipv6Addr = netns::PREFIX_V6.parse().unwrap();
    let mut segments = prefix.segments();
    segments[4..].copy_from_slice(&groups);
    std::net::Ipv6Addr::from(segments).to_string()
}

/// The link-local address a MAC gets (fe80::/64 and the EUI-64), scoped to the bridge.
pub(super) fn link_local(mac: &str) -> String {
    let global: std::net::Ipv6Addr = slaac(mac).parse().unwrap();
    let mut segments = global.segments();
    segments[..4].copy_from_slice(&[0xFE80, 0, 0, 0]);
    format!("{}%br0", std::net::Ipv6Addr::from(segments))
}

/// The net kernel (`-kernel`, SeaBIOS first) on `machine`.
pub(super) fn kernel(machine: &str) -> VmConfig {
    tcg(VmConfig::new(&net_test_image(Format::Pvh), qemu::Boot::Kernel, machine))
}

/// A net disk or CD booted from `bus` (on the machine that bus is on).
fn net_config(format: Format, bus: Bus) -> VmConfig {
    tcg(format.vm_config(&net_test_image(format), bus))
}

/// `config` with a `model` card on a tap of `network`, MAC `mac(n)`, started paused.
pub(super) fn on_network(
    network: &PrivateNetwork,
    mut config: VmConfig,
    model: &str,
    n: u8,
) -> (VmConfig, String) {
    config.label = Some(model.into());
    let tap = network.attach(&mut config, model, &mac(n)).unwrap();
    (config, tap)
}

/// Starts every config (paused), plugs its tap and lets it run.
pub(super) fn start_on(network: &PrivateNetwork, configs: &[(VmConfig, String)]) -> Vec<Vm> {
    network.start(configs).unwrap()
}

/// What a platform's suite checks of each VM `n` (its MAC `mac(n)`): the lease, the line, ping,
/// the page, the SLAAC address; then the power button, and the lease given back.
fn assert_on_the_network(network: &PrivateNetwork, vms: &mut [Vm], numbers: &[u8]) {
    assert_answers(network, vms, numbers);
    assert_all_power_off_now(vms, |vm| vm.qmp("system_powerdown").unwrap());
    assert_leases_released(network, vms, numbers);
}

/// The lease, the line, ping, the page and the SLAAC address of each VM `n`.
fn assert_answers(network: &PrivateNetwork, vms: &mut [Vm], numbers: &[u8]) {
    let mut addresses = Vec::new();
    for (vm, &n) in vms.iter_mut().zip(numbers) {
        let lease = network.wait_for_lease(&mac(n), LEASE_TIMEOUT).unwrap();
        let line = format!("{DEFAULT_MESSAGE} {}\r\n", lease.address);
        vm.wait_for(line.as_bytes(), LEASE_TIMEOUT).unwrap();
        // The message line first, as it always was; then the address line.
        let com1 = String::from_utf8_lossy(&vm.serial_output()).into_owned();
        assert!(com1.ends_with(&format!("\r\n{DEFAULT_MESSAGE}\r\n{line}")), "{com1:?}");
        let digits = mac(n).replace(':', "");
        assert_eq!(lease.host, format!("vm512-{digits}"), "{}", vm.description());
        assert_eq!(lease.client_id, format!("01:{}", mac(n)), "{}", vm.description());
        addresses.push(lease.address);
    }
    for ((vm, &n), address) in vms.iter().zip(numbers).zip(&addresses) {
        let what = vm.description();
        assert_eq!(network.ping(address, PINGS).unwrap(), PINGS, "{what}: ping {address}");
        let page = network.http_get(address).unwrap();
        assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{what}: {page:?}");
        for expected in [
            format!("\r\n\r\n{DEFAULT_MESSAGE}\n"),
            format!("mac {}\n", mac(n)),
            format!("ipv4 {address}\n"),
            format!("ipv6 {}\n", slaac(&mac(n))),
        ] {
            assert!(page.contains(&expected), "{what}: {expected:?} not in {page:?}");
        }
        // The SLAAC and the link-local address, each from its first ping on.
        for v6 in [slaac(&mac(n)), link_local(&mac(n))] {
            assert_eq!(network.ping(&v6, PINGS).unwrap(), PINGS, "{what}: ping {v6}");
        }
    }
}

/// Each VM `n` gave its lease back (DHCPRELEASE: dnsmasq drops the line at once).
fn assert_leases_released(network: &PrivateNetwork, vms: &[Vm], numbers: &[u8]) {
    for (vm, &n) in vms.iter().zip(numbers) {
        // DHCPRELEASE: dnsmasq drops the line at once.
        let deadline = Instant::now() + Duration::from_secs(2);
        while network.lease(&mac(n)).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(network.lease(&mac(n)), None, "{}: lease not released", vm.description());
        assert!(network.log().contains("DHCPRELEASE(br0) "), "{}", network.log());
    }
}

/// Under SeaBIOS, six net VMs on one private network: the qcow2 (its loader sector, the kernel
/// from the BIOS boot partition) on pc with e1000 and on q35 with e1000e, the ISO on pc with
/// transitional virtio-net and on q35 with modern-only virtio-net, the kernel by `-kernel` on
/// pc (virtio-net, with a second card, e1000, after it) and q35 (e1000e); the classic qcow2
/// beside them. Each net VM leases, prints
/// its address, answers ping, `GET /` and ping to its SLAAC address, and gives its lease back
/// on the power button; the classic VM, and the second card, send no DHCP at all.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_seabios_the_net_disks_cd_and_kernel_lease_answer_and_release() {
    let network = PrivateNetwork::create("bios", true).unwrap();
    let vms: [(VmConfig, &str); 6] = [
        (net_config(Format::Qcow2, Bus::Ide), "e1000"),
        (net_config(Format::Qcow2, Bus::Ahci), "e1000e"),
        (net_config(Format::Iso, Bus::Ide), "virtio-net-pci"),
        (net_config(Format::Iso, Bus::Ahci), "virtio-net-pci,disable-legacy=on"),
        (kernel("pc"), "virtio-net-pci"),
        (kernel("q35"), "e1000e"),
    ];
    let mut configs: Vec<(VmConfig, String)> = vms
        .into_iter()
        .enumerate()
        .map(|(i, (config, model))| on_network(&network, config, model, i as u8 + 1))
        .collect();
    // The classic qcow2 on the same bridge, with pc's default card.
    let classic_mac = mac(0x99);
    let mut classic = tcg(config(Format::Qcow2, Bus::Ide));
    let tap = network.tap().unwrap();
    classic.nic = Some(Nic {
        model: None,
        backend: NetBackend::Tap { ifname: tap.clone() },
        mac: Some(classic_mac.clone()),
    });
    classic.extra.push("-S".into());
    configs.push((classic, tap));
    // The kernel on pc gets a second card on the same bridge, after the first in PCI order:
    // the VM answers on the first only.
    let second_mac = mac(0x55);
    let second_tap = network.tap().unwrap();
    configs[4].0.extra.extend([
        "-netdev".into(),
        format!("tap,id=net1,ifname={second_tap},script=no,downscript=no").into(),
        "-device".into(),
        format!("e1000,netdev=net1,mac={second_mac}").into(),
    ]);
    let mut vms = start_on(&network, &configs);
    network.plug(&second_tap).unwrap();
    let classic = vms.pop().unwrap();
    assert_on_the_network(&network, &mut vms, &[1, 2, 3, 4, 5, 6]);
    assert!(
        !network.log().to_ascii_lowercase().contains(&second_mac),
        "the second card sent DHCP: {}",
        network.log()
    );
    let mut classic = vec![classic];
    qemu::wait_all_for(&mut classic, line(DEFAULT_MESSAGE).as_bytes(), BOOT_TIMEOUT).unwrap();
    assert!(
        !network.log().to_ascii_lowercase().contains(&classic_mac),
        "the classic VM sent DHCP: {}",
        network.log()
    );
}

/// Under OVMF on q35, the net qcow2 with modern-only virtio-net, the net ISO with e1000e and
/// the net VHDX with transitional virtio-net,
/// the disk (or CD) first in the boot order as platforms set it (else OVMF tries PXE on the
/// card for minutes): the same checks as under SeaBIOS.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn under_ovmf_the_net_disk_and_cd_lease_answer_and_release() {
    let network = PrivateNetwork::create("uefi", true).unwrap();
    let [image, ..] = tools::ovmf_files().unwrap();
    let media = [
        (Format::Qcow2, Bus::VirtioBlk, "virtio-net-pci,disable-legacy=on"),
        (Format::Iso, Bus::Ahci, "e1000e"),
        // Hyper-V generation 2's format, on its own.
        (Format::Vhdx, Bus::Ahci, "virtio-net-pci"),
    ];
    let configs: Vec<(VmConfig, String)> = media
        .iter()
        .enumerate()
        .map(|(i, &(format, bus, model))| {
            let mut config = net_config(format, bus);
            config.machine = "q35".into();
            config = config.under_uefi(Firmware::Uefi { image: image.clone() });
            on_network(&network, config, model, i as u8 + 1)
        })
        .collect();
    let mut vms = start_on(&network, &configs);
    for (vm, _) in vms.iter_mut().zip(&configs) {
        vm.wait_for(qemu::uefi_line(DEFAULT_MESSAGE).as_bytes(), BOOT_TIMEOUT).unwrap();
    }
    assert_on_the_network(&network, &mut vms, &[1, 2, 3]);
}

/// With no card, the net qcow2 boots from every controller the classic disks boot from but the
/// floppy drive (the loader reads through whatever INT 13h extensions the BIOS gives each),
/// every other net disk format (img, VMDK, VDI, VHD, VHDX) from IDE, the CD from both CD
/// drives: the message line alone, then idle; and the power button powers each off. On the floppy drive, which has no INT 13h extensions, the loader says so and halts.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn without_a_card_the_net_disk_boots_from_every_bus_and_idles() {
    let mut configs: Vec<VmConfig> = Format::Qcow2
        .buses()
        .iter()
        .filter(|&&bus| bus != Bus::Floppy)
        .map(|&bus| net_config(Format::Qcow2, bus))
        .collect();
    configs.extend(Bus::CD_DRIVES.iter().map(|&bus| net_config(Format::Iso, bus)));
    // Every other net disk format, from IDE: the same disk in each container.
    let others = [Format::Img, Format::Vmdk, Format::Vdi, Format::Vhd, Format::Vhdx];
    configs.extend(others.iter().map(|&format| net_config(format, Bus::Ide)));
    let line = qemu::uefi_line(DEFAULT_MESSAGE);
    let mut vms = qemu::start_all(&configs).unwrap();
    qemu::wait_all_for(&mut vms, line.as_bytes(), BOOT_TIMEOUT).unwrap();
    assert_idle_with(&mut vms, &line);
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
    let mut floppy = Vm::start(&net_config(Format::Qcow2, Bus::Floppy)).unwrap();
    let refused = "512-byte-vm-net: no INT 13h extensions\r\n";
    floppy.wait_for(refused.as_bytes(), BOOT_TIMEOUT).unwrap();
    floppy.check_running().unwrap();
}

/// Under SeaBIOS the net disk's kernel shows the message on the screen too (the loader's memory
/// map says 0xB8000 is no RAM).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_net_disk_shows_the_message_on_the_screen() {
    let scratch = scratch("net-screen");
    let mut vm = Vm::start(&net_config(Format::Qcow2, Bus::Ide)).unwrap();
    wait_for_screen(&mut vm, &scratch, DEFAULT_MESSAGE);
}

/// A net disk cut short, its BIOS boot partition gone: the loader's read fails, and it says so
/// on COM1 and the screen, then halts (QEMU still runs: no reset, no loop).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn a_failed_read_is_one_clear_line_on_com1_and_the_screen() {
    let scratch = scratch("net-short");
    let disk = std::fs::read(net_test_image(Format::Img)).unwrap();
    let short = scratch_image(&scratch, "short.img", &disk[..32 * 1024]);
    let mut vm = Vm::start(&tcg(raw_config(&short))).unwrap();
    let expected = "512-byte-vm-net: disk read failed";
    vm.wait_for(format!("{expected}\r\n").as_bytes(), BOOT_TIMEOUT).unwrap();
    wait_for_screen(&mut vm, &scratch, expected);
    std::thread::sleep(Duration::from_millis(500));
    vm.check_running().unwrap();
    assert_eq!(String::from_utf8_lossy(&vm.serial_output()), format!("{expected}\r\n"));
}

/// On QEMU `microvm`, the net kernel on virtio-mmio: the legacy interface (microvm's default)
/// and the modern one (`force-legacy=false`), both found in the DSDT (LNRO0005), and, with
/// `acpi=off`, the legacy one named on the command line (`virtio_mmio.device=`), its line on the
/// 8259. Each leases, prints its address, answers ping, `GET /` and ping to its SLAAC address,
/// and gives its lease back: on the power button (through the GED), or without ACPI on Ctrl-D,
/// which resets the VM (`-no-reboot`: QEMU exits).
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn on_microvm_the_net_kernel_drives_virtio_mmio_legacy_modern_and_from_the_command_line() {
    let network = PrivateNetwork::create("mmio", true).unwrap();
    let mut modern = kernel("microvm");
    modern.extra.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
    let vms: [(VmConfig, &str); 3] = [
        (kernel("microvm"), "virtio-net-device"),
        (modern, "virtio-net-device"),
        (kernel("microvm,acpi=off"), "virtio-net-device"),
    ];
    let mut configs: Vec<(VmConfig, String)> = vms
        .into_iter()
        .enumerate()
        .map(|(i, (config, model))| on_network(&network, config, model, i as u8 + 1))
        .collect();
    configs[0].0.label = Some("virtio-mmio legacy, DSDT".into());
    configs[1].0.label = Some("virtio-mmio modern, DSDT".into());
    configs[2].0.label = Some("virtio-mmio legacy, command line".into());
    let mut vms = start_on(&network, &configs);
    assert_answers(&network, &mut vms, &[1, 2, 3]);
    let mut without_acpi = vms.pop().unwrap();
    assert_all_power_off_now(&mut vms, |vm| vm.qmp("system_powerdown").unwrap());
    type_on_com1(&mut without_acpi, b"\x04");
    let exited = without_acpi.wait_exit(POWER_OFF_LIMIT).unwrap();
    let what = without_acpi.description();
    assert!(exited.is_some_and(|(status, _)| status.success()), "{what}: still running");
    let log = without_acpi.qmp_log();
    assert!(log.contains(r#""reason": "guest-reset""#), "{what}: {log}");
    vms.push(without_acpi);
    assert_leases_released(&network, &vms, &[1, 2, 3]);
}

/// The simplest case: QEMU's user networking (`-nic user`, which leases 10.0.2.15), the
/// kernel on pc's default card, its page through a port forward.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn on_user_networking_the_net_kernel_leases_10_0_2_15_and_serves_its_page() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = tcg(VmConfig::new(&net_test_image(Format::Pvh), qemu::Boot::Kernel, "pc"));
    config.nic =
        Some(Nic { model: None, backend: NetBackend::User { forward_to: Some(port) }, mac: None });
    let mut vm = Vm::start(&config).unwrap();
    vm.wait_for(format!("{DEFAULT_MESSAGE} 10.0.2.15\r\n").as_bytes(), LEASE_TIMEOUT).unwrap();
    let page = get(port);
    assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{page:?}");
    assert!(
        page.contains("ipv4 10.0.2.15\n") && page.contains("mac 52:54:00:12:34:56\n"),
        "{page}"
    );
    assert_all_power_off_now(std::slice::from_mut(&mut vm), |vm| {
        vm.qmp("system_powerdown").unwrap()
    });
}

/// `GET /` on 127.0.0.1:`port`, the whole answer.
fn get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// `format` of the net family, as `cargo xtask test` built it.
pub(super) fn net_test_image(format: Format) -> std::path::PathBuf {
    env_dir(crate::tasks::test::IMAGES_ENV).join(Family::Net.file_name(format))
}
