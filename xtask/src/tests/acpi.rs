//! The 64-bit core's ACPI readers (`src/acpi/tables.rs`, `src/acpi/aml.rs`) on the tables real
//! VMMs give their guests, dumped from guest memory (QEMU 7.2's `pc`, `q35` and `microvm`,
//! Cloud Hypervisor v54, Firecracker 1.17), and on damaged copies of them. The readers are
//! no_std code of the VM's own crate; they are pure, so they compile here too.

#[path = "../../../src/acpi/aml.rs"]
mod aml;
#[path = "../../../src/acpi/tables.rs"]
mod tables;

use super::harness::Noise;
use aml::{Ged, Interrupt, Register, SYSTEM_IO, SYSTEM_MEMORY};
use tables::{GenericAddress, IoApic, Override};

/// The tables of one VMM's machine.
struct Machine {
    name: &'static str,
    dsdt: &'static [u8],
    fadt: &'static [u8],
    madt: &'static [u8],
}

macro_rules! machine {
    ($name:literal) => {
        Machine {
            name: $name,
            dsdt: include_bytes!(concat!("acpi/dsdt-", $name, ".aml")),
            fadt: include_bytes!(concat!("acpi/facp-", $name, ".aml")),
            madt: include_bytes!(concat!("acpi/apic-", $name, ".aml")),
        }
    };
}

const MACHINES: [Machine; 5] = [
    machine!("qemu-pc"),
    machine!("qemu-q35"),
    machine!("qemu-microvm"),
    machine!("cloud-hypervisor"),
    machine!("firecracker"),
];

fn machine(name: &str) -> &'static Machine {
    MACHINES.iter().find(|m| m.name == name).unwrap()
}

#[test]
fn every_dumped_table_is_whole_and_checks_out() {
    for m in &MACHINES {
        for table in [m.dsdt, m.fadt, m.madt] {
            assert_eq!(tables::length(table), Some(table.len()), "{}", m.name);
            assert!(tables::checksum_ok(table), "{}", m.name);
        }
    }
}

#[test]
fn the_fadt_tells_fixed_hardware_from_hardware_reduced() {
    let pc = tables::fadt(machine("qemu-pc").fadt).unwrap();
    assert!(!pc.hardware_reduced);
    assert_eq!((pc.pm1a_event, pc.pm1a_control, pc.sci_int), (0x600, 0x604, 9));
    assert_eq!(pc.sleep_control, None);
    let microvm = tables::fadt(machine("qemu-microvm").fadt).unwrap();
    assert!(microvm.hardware_reduced);
    assert_eq!((microvm.pm1a_event, microvm.pm1a_control), (0, 0));
    assert_eq!(
        microvm.sleep_control,
        Some(GenericAddress { space: SYSTEM_MEMORY, bit_width: 8, address: 0xFEA0_0200 })
    );
    let ch = tables::fadt(machine("cloud-hypervisor").fadt).unwrap();
    assert!(ch.hardware_reduced);
    assert_eq!(
        ch.sleep_control,
        Some(GenericAddress { space: SYSTEM_IO, bit_width: 8, address: 0x600 })
    );
    // Firecracker: hardware-reduced with no sleep register at all: no ACPI way to power off.
    let fc = tables::fadt(machine("firecracker").fadt).unwrap();
    assert!(fc.hardware_reduced);
    assert_eq!(fc.sleep_control, None);
    assert!(tables::fadt(machine("qemu-pc").madt).is_none(), "an APIC table is no FADT");
}

#[test]
fn the_madt_names_each_io_apic_and_the_isa_overrides() {
    let pc = tables::madt(machine("qemu-pc").madt).unwrap();
    assert!(pc.pcat_compat);
    assert_eq!(pc.local_apic, 0xFEE0_0000);
    assert_eq!(pc.io_apics[0], Some(IoApic { address: 0xFEC0_0000, gsi_base: 0 }));
    // IRQ 0 on GSI 2; the SCI (IRQ 9) level triggered, active high; COM1 and the keyboard ISA's.
    assert_eq!(pc.isa_irq(0), (2, false, false));
    assert_eq!(pc.isa_irq(9), (9, true, false));
    assert_eq!(pc.isa_irq(4), (4, false, false));
    assert_eq!(pc.isa_irq(1), (1, false, false));
    assert!(pc.overrides.contains(&Some(Override { irq: 9, gsi: 9, flags: 0xD })));
    let microvm = tables::madt(machine("qemu-microvm").madt).unwrap();
    assert_eq!(microvm.io_apics.iter().flatten().count(), 2);
    assert_eq!(microvm.io_apic_for(9).unwrap().1, 9);
    let (second, input) = microvm.io_apic_for(30).unwrap();
    assert_eq!((second.address, input), (0xFEC1_0000, 6));
    let ch = tables::madt(machine("cloud-hypervisor").madt).unwrap();
    assert!(!ch.pcat_compat, "Cloud Hypervisor has no 8259");
    assert!(ch.io_apics[0].is_some());
}

#[test]
fn s5_comes_from_the_dsdt() {
    for (name, s5) in [
        ("qemu-pc", Some(0)),
        ("qemu-q35", Some(0)),
        ("qemu-microvm", Some(5)),
        ("cloud-hypervisor", Some(5)),
    ] {
        assert_eq!(aml::s5_sleep_type(machine(name).dsdt), s5, "{name}");
    }
}

#[test]
fn the_generic_event_device_is_found_with_its_power_button_event() {
    // QEMU microvm: the event selector at 0xFEA00000 (32 bits, read clears), bit 1, on GSI 9.
    assert_eq!(
        aml::ged(machine("qemu-microvm").dsdt),
        Some(Ged {
            interrupt: Interrupt { gsi: 9, level: false, active_low: false },
            events: Register { space: SYSTEM_MEMORY, address: 0xFEA0_0000, bits: 32 },
            power_button: 1 << 1,
        })
    );
    // Cloud Hypervisor: the GED's _EVT calls a method of another device, whose one-byte
    // register (at the top of the guest's physical address space) holds the power button in
    // bit 3; GSI 13.
    assert_eq!(
        aml::ged(machine("cloud-hypervisor").dsdt),
        Some(Ged {
            interrupt: Interrupt { gsi: 13, level: false, active_low: false },
            events: Register { space: SYSTEM_MEMORY, address: 0x3FFF_FFFE_D000, bits: 8 },
            power_button: 1 << 3,
        })
    );
    // Firecracker's GED signals other things (VMGenID, VMClock): no power button. The PC
    // machines have none: their button is fixed hardware.
    for name in ["firecracker", "qemu-pc", "qemu-q35"] {
        assert_eq!(aml::ged(machine(name).dsdt), None, "{name}");
    }
}

/// `table` damaged: truncated, bytes flipped or overwritten with AML's own opcodes and
/// prefixes (so that the damage lands on what the readers look for), a length field set wrong.
fn damaged(table: &[u8], noise: &mut Noise) -> Vec<u8> {
    const TOKENS: [u8; 16] = [
        0x00, 0x08, 0x0A, 0x0C, 0x11, 0x12, 0x14, 0x2E, 0x2F, 0x5B, 0x5C, 0x7B, 0x80, 0x86, 0xFF,
        0x3F,
    ];
    let mut bytes = table.to_vec();
    for _ in 0..1 + noise.below(8) {
        let at = noise.below(bytes.len());
        match noise.below(5) {
            0 => bytes.truncate(at),
            1 => bytes[at] ^= 1 << noise.below(8),
            2 => bytes[at] = TOKENS[noise.below(TOKENS.len())],
            3 if bytes.len() >= 8 => {
                let length = noise.next() as u32 % (2 * bytes.len() as u32 + 64);
                bytes[4..8].copy_from_slice(&length.to_le_bytes());
            }
            _ => bytes[at] = noise.next() as u8,
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

/// Every reader on 5,000 damaged tables of each machine: none panics (a bounds check, an
/// overflow), and none hangs (the test would time out).
#[test]
fn damaged_tables_never_crash_or_hang_the_readers() {
    let mut noise = Noise(0x5EED_0FAC_B1E5);
    for m in &MACHINES {
        for round in 0..5_000 {
            let seed = noise.0;
            let dsdt = damaged(m.dsdt, &mut noise);
            let fadt = damaged(m.fadt, &mut noise);
            let madt = damaged(m.madt, &mut noise);
            let outcome = std::panic::catch_unwind(|| {
                let _ = aml::ged(&dsdt);
                let _ = aml::s5_sleep_type(&dsdt);
                let _ = tables::fadt(&fadt).map(|f| f.sleep_control);
                if let Some(madt) = tables::madt(&madt) {
                    let _ = (madt.isa_irq(9), madt.io_apic_for(40));
                }
                let _ = tables::length(&dsdt).map(|_| tables::checksum_ok(&dsdt));
                let _ = tables::entries(&madt, 8).count();
            });
            assert!(outcome.is_ok(), "{} round {round} (seed {seed:#x}) panicked", m.name);
        }
    }
}

#[test]
fn empty_and_tiny_inputs_are_nothing() {
    for bytes in [&[][..], b"DSDT", &[0xFF; 40][..], &[0x5B; 64][..]] {
        assert_eq!(aml::ged(bytes), None);
        assert_eq!(aml::s5_sleep_type(bytes), None);
        assert_eq!(tables::fadt(bytes), None);
        assert_eq!(tables::root_table(bytes), None);
    }
}
