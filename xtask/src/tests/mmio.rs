//! The net kernel's virtio-mmio finders (`src/nic/cmdline.rs`: `virtio_mmio.device=` on the
//! kernel command line; `src/nic/dsdt.rs`: the DSDT's LNRO0005 transports), on generated
//! command lines and DSDTs, on what Firecracker and QEMU `microvm` give, and on damaged input.
//! Both are pure no_std code of the VM's crate, so they compile here too.

#[path = "../../../src/nic/cmdline.rs"]
mod cmdline;
#[path = "../../../src/nic/dsdt.rs"]
mod dsdt;

use super::harness::Noise;
use cmdline::{MmioDevice, virtio_mmio_devices};

fn parsed(line: &str) -> Vec<MmioDevice> {
    virtio_mmio_devices(line.as_bytes()).collect()
}

#[test]
fn the_command_lines_firecracker_and_microvm_give_name_their_devices() {
    // Firecracker appends one per device; QEMU microvm (acpi=off) too, with its 512-byte windows.
    let firecracker = "console=ttyS0 reboot=k panic=1 pci=off virtio_mmio.device=4K@0xd0000000:5";
    assert_eq!(parsed(firecracker), [MmioDevice { address: 0xD000_0000, size: 4096, irq: 5 }]);
    let microvm = "earlyprintk=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                   virtio_mmio.device=512@0xfeb00c00:11:7";
    assert_eq!(
        parsed(microvm),
        [
            MmioDevice { address: 0xFEB0_0E00, size: 512, irq: 12 },
            MmioDevice { address: 0xFEB0_0C00, size: 512, irq: 11 },
        ]
    );
}

#[test]
fn generated_command_lines_give_back_exactly_their_devices() {
    let mut noise = Noise(0x0DD_C0FF_EE15_0BAD);
    let others = ["console=ttyS0", "quiet", "pci=off", "virtio_mmio.devices=1", "x=virtio_mmio"];
    for _ in 0..2000 {
        let mut words = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..noise.below(6) {
            if noise.below(2) == 0 {
                words.push(others[noise.below(others.len())].to_string());
                continue;
            }
            let (size, size_text) = match noise.below(4) {
                0 => {
                    let k = 1 + noise.below(64) as u64;
                    (k << 10, format!("{k}{}", ["K", "k"][noise.below(2)]))
                }
                1 => {
                    let m = 1 + noise.below(4) as u64;
                    (m << 20, format!("{m}M"))
                }
                2 => {
                    let n = 1 + noise.next() % 0x10000;
                    (n, format!("0x{n:x}"))
                }
                _ => {
                    let n = 1 + noise.next() % 100_000;
                    (n, n.to_string())
                }
            };
            let address = noise.next() & 0xFFFF_FFFF_F000;
            let irq = noise.below(64) as u32;
            let id =
                if noise.below(2) == 0 { format!(":{}", noise.below(9)) } else { String::new() };
            words.push(format!("virtio_mmio.device={size_text}@0x{address:X}:{irq}{id}"));
            expected.push(MmioDevice { address, size, irq });
        }
        let line = words.join(["  ", " ", "\t"][noise.below(3)]);
        assert_eq!(parsed(&line), expected, "{line:?}");
    }
}

#[test]
fn malformed_devices_are_skipped_and_random_bytes_never_panic() {
    for bad in [
        "virtio_mmio.device=",
        "virtio_mmio.device=4K",
        "virtio_mmio.device=4K@",
        "virtio_mmio.device=4K@0xd0000000",
        "virtio_mmio.device=4K@0xd0000000:",
        "virtio_mmio.device=4K@0xd0000000:5x",
        "virtio_mmio.device=0@0xd0000000:5",
        "virtio_mmio.device=4K@0x:5",
        "virtio_mmio.device=0x100000000000000000@0:5",
        "virtio_mmio.device=4G@0xffffffffffffffff:5",
        "virtio_mmio.device=4K@0xd0000000:99999999999",
        "virtio_mmio.device=4T@0xd0000000:5",
    ] {
        assert_eq!(parsed(bad), [], "{bad:?}");
    }
    let mut noise = Noise(0xBAD_5EED);
    let alphabet = b"virtio_mmio.device=0x123456789abcdefKMG@: \t\0";
    for _ in 0..5000 {
        let length = noise.below(80);
        let bytes: Vec<u8> = (0..length).map(|_| alphabet[noise.below(alphabet.len())]).collect();
        let _ = virtio_mmio_devices(&bytes).count();
    }
}

/// AML `PkgLength` for `length` bytes of content (the encoding counts itself).
fn pkg_length(content: usize) -> Vec<u8> {
    if content + 1 < 64 {
        return vec![(content + 1) as u8];
    }
    let total = content + 2;
    assert!(total < 1 << 12);
    vec![0x40 | (total & 0x0F) as u8, (total >> 4) as u8]
}

/// `Device (name) { Name (_HID, hid) Name (_UID, 0) Name (_CRS, ResourceTemplate () {
/// Memory32Fixed (ReadWrite, address, size) Interrupt (ResourceConsumer, ...) { gsi } }) }`.
fn device(name: &[u8; 4], hid: &str, window: (u32, u32), gsi: u32, flags: u8) -> Vec<u8> {
    let mut template = vec![0x86, 0x09, 0x00, 0x01];
    template.extend(window.0.to_le_bytes());
    template.extend(window.1.to_le_bytes());
    template.extend([0x89, 0x06, 0x00, 0x01 | flags, 0x01]);
    template.extend(gsi.to_le_bytes());
    template.extend([0x79, 0x00]);
    let mut buffer = vec![0x0A, template.len() as u8];
    buffer.extend(template);
    let mut body = name.to_vec();
    body.extend(b"\x08_HID\x0D");
    body.extend(hid.as_bytes());
    body.extend(b"\x00\x08_UID\x00\x08_CRS\x11");
    body.extend(pkg_length(buffer.len()));
    body.extend(buffer);
    let mut aml = vec![0x5B, 0x82];
    aml.extend(pkg_length(body.len()));
    aml.extend(body);
    aml
}

/// A DSDT (header, length and checksum) around `aml`.
fn table(aml: &[u8]) -> Vec<u8> {
    let mut table = b"DSDT".to_vec();
    table.extend(((36 + aml.len()) as u32).to_le_bytes());
    table.extend([2, 0]);
    table.extend(b"BOCHS BXPC    \x01\x00\x00\x00BXPC\x01\x00\x00\x00");
    table.extend(aml);
    let sum = table.iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
    table[9] = 0u8.wrapping_sub(sum);
    table
}

#[test]
fn the_dsdt_lists_each_virtio_mmio_transport_with_its_window_and_line() {
    let mut noise = Noise(0x1_0A0A_0005);
    for _ in 0..500 {
        let mut aml = Vec::new();
        let mut expected = Vec::new();
        for i in 0..noise.below(8) {
            let name = [b'V', b'R', b'0', b'0' + i as u8];
            if noise.below(3) == 0 {
                // Another device between them (the GED, a power button).
                aml.extend(device(&name, "ACPI0013", (0xFEA0_0000, 4), 9, 0));
                continue;
            }
            let address = 0xFEB0_0000 + 0x200 * noise.below(24) as u32;
            let gsi = 16 + noise.below(24) as u32;
            let flags = (noise.below(4) as u8) << 1;
            aml.extend(device(&name, "LNRO0005", (address, 0x200), gsi, flags));
            expected.push(dsdt::MmioDevice {
                address: address.into(),
                size: 0x200,
                gsi,
                level: flags & 2 == 0,
                active_low: flags & 4 != 0,
            });
        }
        let dsdt = table(&aml);
        let found: Vec<_> = dsdt::virtio_mmio_devices(&dsdt).collect();
        assert_eq!(found, expected);
        // Truncated anywhere, or with a byte changed, it never panics or hangs.
        let cut = noise.below(dsdt.len());
        let _ = dsdt::virtio_mmio_devices(&dsdt[..cut]).count();
        let mut damaged = dsdt.clone();
        let at = noise.below(damaged.len());
        damaged[at] = noise.next() as u8;
        let _ = dsdt::virtio_mmio_devices(&damaged).count();
    }
}

#[test]
fn the_dumped_dsdts_without_virtio_devices_list_none() {
    for name in ["qemu-pc", "qemu-q35", "qemu-microvm", "cloud-hypervisor", "firecracker"] {
        let path = format!("{}/src/tests/acpi/dsdt-{name}.aml", env!("CARGO_MANIFEST_DIR"));
        let dsdt = std::fs::read(path).unwrap();
        assert_eq!(dsdt::virtio_mmio_devices(&dsdt).count(), 0, "{name}");
    }
}
