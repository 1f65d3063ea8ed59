//! The chipset's ACPI power-management I/O, which a BIOS would have switched on.
//!
//! With no BIOS there are no ACPI tables to read the PM1 registers from, and the PM I/O space is
//! off until someone programs its base address. The ROM finds the power-management function by
//! its PCI IDs (configuration mechanism #1, ports 0xCF8/0xCFC), places the registers at
//! [`PM_BASE`] as SeaBIOS does, and enables decoding:
//!
//! | machine | function | base register | enable |
//! | --- | --- | --- | --- |
//! | `pc` | PIIX4 PM, 00:01.3, 8086:7113 | 0x40 PMBA | 0x80 PMREGMISC bit 0 |
//! | `q35` | ICH9 LPC, 00:1f.0, 8086:2918 | 0x40 PMBASE | 0x44 ACPI_CNTL bit 7 |
//!
//! On both, PM1a_STS is at the base, PM1a_EN at +2 and PM1a_CNT at +4.

use vm512::acpi::{CHIPSET_SCI, NO_PM, Pm, S5_FALLBACK};
use vm512::port::{inl, inw, outb, outl, outw};

/// PCI configuration address and data ports.
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Where the ROM puts the PM registers: SeaBIOS's choice on QEMU.
pub const PM_BASE: u16 = 0x600;
/// PM1_CNT bit 0: events raise SCIs (ACPI mode), not SMIs.
const SCI_EN: u16 = 1 << 0;
/// PM1a_CNT relative to the base.
const PM1_CNT_OFFSET: u16 = 4;

/// A PCI function's power-management set-up: where it is, what it is, how to enable it.
struct PmFunction {
    /// Bus 0, device, function as `device << 3 | function`.
    devfn: u8,
    /// Vendor ID in the low half, device ID in the high half (config register 0).
    id: u32,
    /// Config register that takes the I/O base (bit 0 set: I/O space).
    base_register: u8,
    /// Config register and value that switch the PM I/O decoding on.
    enable_register: u8,
    enable_value: u8,
}

const CHIPSETS: [PmFunction; 2] = [
    // PIIX4 power management: PMBA, then PMREGMISC.PMIOSE.
    PmFunction {
        devfn: 1 << 3 | 3,
        id: 0x7113_8086,
        base_register: 0x40,
        enable_register: 0x80,
        enable_value: 0x01,
    },
    // ICH9 LPC bridge: PMBASE, then ACPI_CNTL.ACPI_EN.
    PmFunction {
        devfn: 0x1F << 3,
        id: 0x2918_8086,
        base_register: 0x40,
        enable_register: 0x44,
        enable_value: 0x80,
    },
];

/// Configuration-space address of bus 0, `devfn`, register `register` (enable bit 31).
fn config_address(devfn: u8, register: u8) -> u32 {
    0x8000_0000 | (devfn as u32) << 8 | (register & 0xFC) as u32
}

/// Switches on the PM I/O of the first chipset found and returns its registers with the power
/// button enabled, or [`NO_PM`] on a machine with neither (such as `isapc`): then the VM idles
/// without a power button.
pub fn enable_power_management() -> Pm {
    for chipset in CHIPSETS {
        // SAFETY: PCI configuration mechanism #1; reading an absent function gives all ones.
        unsafe {
            outl(CONFIG_ADDRESS, config_address(chipset.devfn, 0));
            if inl(CONFIG_DATA) != chipset.id {
                continue;
            }
            outl(CONFIG_ADDRESS, config_address(chipset.devfn, chipset.base_register));
            outl(CONFIG_DATA, PM_BASE as u32 | 1);
            outl(CONFIG_ADDRESS, config_address(chipset.devfn, chipset.enable_register));
            // A byte write to the register's own lane of the data port.
            outb(CONFIG_DATA + (chipset.enable_register & 3) as u16, chipset.enable_value);
            // ACPI mode, as an OS asks the firmware for it through SMI_CMD: with no firmware
            // (and no SMI handler) below the ROM, set PM1_CNT.SCI_EN itself, so that events
            // such as the power button are ACPI events, not SMIs.
            let control = PM_BASE + PM1_CNT_OFFSET;
            outw(control, inw(control) | SCI_EN);
        }
        return Pm::enable(PM_BASE, PM_BASE + PM1_CNT_OFFSET, S5_FALLBACK, CHIPSET_SCI.into());
    }
    NO_PM
}
