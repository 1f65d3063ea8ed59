//! The net family on the wire, under TCG: on a private network the test makes (a namespace,
//! a bridge, dnsmasq as the DHCP server and IPv6 router, QEMU's taps), and on QEMU's user
//! networking. What a platform's test suite would check: the lease in dnsmasq's lease file, the
//! address line on COM1, ping, `GET /`, ping to the SLAAC address, the power button, and the
//! lease given back. The classic VM on the same network asks for nothing.

use std::time::{Duration, Instant};

use super::harness::*;
use crate::domain::formats::{Family, Format};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::domain::{fat, gpt};
use crate::infra::netns::{self, PrivateNetwork};
use crate::infra::qemu::{self, Accel, Bus, Firmware, NetBackend, Nic, Vm, VmConfig};
use crate::infra::tools;

/// How long a lease may take: dnsmasq checks the address is free first (a ping, up to 3 s),
/// and several TCG VMs share 2 cores.
const LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pings per address; every one must be answered.
const PINGS: u32 = 5;

/// The VM's MAC on the private network: 52:54:00 (QEMU's prefix) and the VM's number.
fn mac(n: u8) -> String {
    format!("52:54:00:00:05:{n:02x}")
}

/// The SLAAC address a MAC gets on the network's prefix (RFC 4862 with the EUI-64).
fn slaac(mac: &str) -> String {
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

/// The net kernel (`-kernel`, SeaBIOS first) on `machine` with `model`, its card on a tap of
/// `network`, started paused (the tap joins the bridge first, as a platform's port is up
/// before its VM runs).
fn kernel_on(network: &PrivateNetwork, machine: &str, model: &str, n: u8) -> (VmConfig, String) {
    let image = net_test_image(Format::Pvh);
    let mut config = tcg(VmConfig::new(&image, qemu::Boot::Kernel, machine));
    config.label = Some(model.into());
    let tap = network.tap().unwrap();
    config.nic = Some(Nic {
        model: Some(model.into()),
        backend: NetBackend::Tap { ifname: tap.clone() },
        mac: Some(mac(n)),
    });
    config.memory_mib = 64;
    config.extra.push("-S".into());
    (config, tap)
}

/// Starts every config (paused), plugs its tap and lets it run.
fn start_on(network: &PrivateNetwork, configs: &[(VmConfig, String)]) -> Vec<Vm> {
    let only: Vec<VmConfig> = configs.iter().map(|(config, _)| config.clone()).collect();
    let mut vms = qemu::start_all(&only).unwrap();
    for ((_, tap), vm) in configs.iter().zip(&mut vms) {
        network.plug(tap).unwrap();
        vm.qmp("cont").unwrap();
    }
    vms
}

/// What a platform's suite checks of each VM `n` (its MAC `mac(n)`): the lease, the line, ping,
/// the page, the SLAAC address; then the power button, and the lease given back.
fn assert_on_the_network(network: &PrivateNetwork, vms: &mut [Vm], numbers: &[u8]) {
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
        let v6 = slaac(&mac(n));
        assert_eq!(network.ping(&v6, PINGS).unwrap(), PINGS, "{what}: ping {v6}");
    }
    assert_all_power_off_now(vms, |vm| vm.qmp("system_powerdown").unwrap());
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

/// The net kernel under SeaBIOS on pc (e1000, transitional virtio-net) and q35 (e1000e,
/// modern-only virtio-net), four VMs on one private network, with the classic qcow2 beside
/// them: each net VM leases, prints its address, answers ping, `GET /` and ping to its SLAAC
/// address, and gives its lease back on the power button; the classic VM sends no DHCP at all.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_net_kernel_leases_answers_and_releases_on_every_nic() {
    let network = PrivateNetwork::create("kernel", true).unwrap();
    let cards = [
        ("pc", "e1000"),
        ("pc", "virtio-net-pci"),
        ("q35", "e1000e"),
        ("q35", "virtio-net-pci,disable-legacy=on"),
    ];
    let mut configs: Vec<(VmConfig, String)> = cards
        .iter()
        .enumerate()
        .map(|(i, (machine, model))| kernel_on(&network, machine, model, i as u8 + 1))
        .collect();
    // The classic qcow2 on the same bridge, with a NIC of its own.
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
    let mut vms = start_on(&network, &configs);
    let classic = vms.pop().unwrap();
    assert_on_the_network(&network, &mut vms, &[1, 2, 3, 4]);
    let mut classic = vec![classic];
    qemu::wait_all_for(&mut classic, line(DEFAULT_MESSAGE).as_bytes(), BOOT_TIMEOUT).unwrap();
    assert!(
        !network.log().to_ascii_lowercase().contains(&classic_mac),
        "the classic VM sent DHCP: {}",
        network.log()
    );
}

/// A UEFI-only disk (sector 0 unused) with the net UEFI program on its ESP.
fn net_uefi_disk(scratch: &crate::infra::files::Scratch) -> std::path::PathBuf {
    let program = std::fs::read(net_test_image(Format::Efi)).unwrap();
    let sectors = crate::domain::formats::DISK_SIZE / 512;
    let (first, last) = gpt::esp_range(sectors);
    let esp = fat::volume(&program, (last - first + 1) as u32, first as u32, 0x512).unwrap();
    let mut sector = vec![0u8; 512];
    sector[510..].copy_from_slice(&[0x55, 0xAA]);
    let disk = gpt::disk(&sector, &esp, sectors, &[7; 32]).unwrap();
    scratch_image(scratch, "net-uefi.img", &disk)
}

/// The net UEFI program under OVMF on q35, with modern-only virtio-net and e1000e, the disk
/// first in the boot order (as platforms set it; else OVMF tries PXE on the card for
/// minutes): the same checks as the kernel's.
#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_net_uefi_program_leases_answers_and_releases() {
    let scratch = scratch("net-uefi");
    let disk = net_uefi_disk(&scratch);
    let network = PrivateNetwork::create("uefi", true).unwrap();
    let [image, ..] = tools::ovmf_files().unwrap();
    let configs: Vec<(VmConfig, String)> = ["virtio-net-pci,disable-legacy=on", "e1000e"]
        .iter()
        .enumerate()
        .map(|(i, model)| {
            let mut config = VmConfig::new(&disk, Format::Img.boot(Bus::VirtioBlk), "q35");
            config.accel = Accel::Tcg;
            config = config.under_uefi(Firmware::Uefi { image: image.clone() });
            config.label = Some(format!("UEFI {model}"));
            let tap = network.tap().unwrap();
            config.nic = Some(Nic {
                model: Some(model.to_string()),
                backend: NetBackend::Tap { ifname: tap.clone() },
                mac: Some(mac(i as u8 + 1)),
            });
            config.extra.push("-S".into());
            (config, tap)
        })
        .collect();
    let mut vms = start_on(&network, &configs);
    assert_on_the_network(&network, &mut vms, &[1, 2]);
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
fn net_test_image(format: Format) -> std::path::PathBuf {
    env_dir(crate::tasks::test::IMAGES_ENV).join(Family::Net.file_name(format))
}
