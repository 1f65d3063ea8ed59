//! Power management on any machine: the ACPI tables found through the RSDP, the power button
//! (fixed PWRBTN, or the Generic Event Device on hardware-reduced ACPI) and the way to power off
//! (PM1a_CNT, the FADT's sleep control register, or a reset where ACPI gives none).

use core::ptr::with_exposed_provenance_mut;

use super::{physical, table};
use crate::acpi::aml::{self, Ged, Interrupt, Register, SYSTEM_IO, SYSTEM_MEMORY};
use crate::acpi::tables::{self, Fadt, GenericAddress, Madt};
use crate::acpi::{NO_PM, Pm, S5_FALLBACK};
use crate::port::{inb, inl, inw, outb, outl, outw};
use crate::reset;

/// The tables the core reads.
#[derive(Default)]
pub struct Tables {
    pub fadt: Option<Fadt>,
    pub madt: Option<Madt>,
    pub dsdt: Option<&'static [u8]>,
}

/// Bytes of an ACPI 2.0+ RSDP (a 1.0 one is 20, and the reader looks no further then).
const RSDP_LENGTH: usize = 36;

impl Tables {
    /// The FADT, the MADT and the DSDT, through the RSDP at `rsdp` (its checksum and every
    /// table's checked; a table that fails is left out).
    pub fn read(rsdp: u64) -> Tables {
        let mut found = Tables::default();
        let Some((root, width)) = physical(rsdp, RSDP_LENGTH).and_then(tables::root_table) else {
            return found;
        };
        let Some(root) = table(root) else { return found };
        for table in tables::entries(root, width).filter_map(table) {
            match tables::signature(table) {
                Some(s) if s == *b"FACP" => found.fadt = tables::fadt(table),
                Some(s) if s == *b"APIC" => found.madt = tables::madt(table),
                _ => {}
            }
        }
        found.dsdt = found.fadt.and_then(|fadt| table(fadt.dsdt));
        found
    }
}

/// How the VM learns of the power button and powers itself off.
pub struct Power {
    /// The fixed-hardware registers (PM1a), or `NO_PM`.
    pm: Pm,
    /// The FADT's SCI_INT, where the fixed power button raises the SCI.
    sci: Option<u16>,
    /// Hardware-reduced: the sleep control register and the value that enters S5.
    sleep: Option<(GenericAddress, u8)>,
    /// Hardware-reduced: the Generic Event Device that signals the power button.
    ged: Option<Ged>,
}

/// Sleep control register (ACPI 6.5, 4.8.3.7): SLP_TYP in bits 2-4, SLP_EN bit 5.
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_ENABLE: u8 = 1 << 5;

impl Power {
    /// What the tables give; nothing at all without them (then a reset powers off). A register
    /// in memory is used only where `map_device` makes it reachable.
    pub fn new(tables: &Tables, map_device: impl Fn(u64) -> bool) -> Power {
        let reachable = |space: u8, address: u64| space != SYSTEM_MEMORY || map_device(address);
        let mut power = Power { pm: NO_PM, sci: None, sleep: None, ged: None };
        let Some(fadt) = tables.fadt else { return power };
        let s5 = tables.dsdt.and_then(aml::s5_sleep_type).unwrap_or(S5_FALLBACK);
        if !fadt.hardware_reduced && fadt.pm1a_control != 0 {
            power.pm = Pm::enable(fadt.pm1a_event, fadt.pm1a_control, s5, fadt.sci_int);
            power.sci = (power.pm.status != 0).then_some(fadt.sci_int);
            return power;
        }
        power.sleep = fadt
            .sleep_control
            .filter(|register| reachable(register.space, register.address))
            .map(|register| (register, (s5 & 7) << SLEEP_TYPE_SHIFT | SLEEP_ENABLE));
        power.ged = tables
            .dsdt
            .and_then(aml::ged)
            .filter(|ged| reachable(ged.events.space, ged.events.address));
        power
    }

    /// The SCI's 8259 line, or `NO_SCI`.
    pub fn sci_irq(&self) -> u8 {
        self.pm.sci
    }

    /// The SCI's interrupt (SCI_INT), where the fixed power button is enabled.
    pub fn sci_interrupt(&self) -> Option<u16> {
        self.sci
    }

    /// The GED's interrupt, where the power button comes through one.
    pub fn ged_interrupt(&self) -> Option<Interrupt> {
        self.ged.map(|ged| ged.interrupt)
    }

    /// Whether the power button was pressed: PWRBTN_STS, or the GED's power-button event (reading
    /// QEMU's event selector clears it).
    pub fn button_pressed(&self) -> bool {
        self.pm.power_button_pressed()
            || self.ged.is_some_and(|ged| read(ged.events) & ged.power_button != 0)
    }

    /// Enters S5 (soft off), through PM1a_CNT or the sleep control register; resets where ACPI
    /// gives neither.
    pub fn power_off(&self) {
        if self.pm.control != 0 {
            self.pm.power_off();
        } else if let Some((register, value)) = self.sleep {
            write(
                Register { space: register.space, address: register.address, bits: 8 },
                value.into(),
            );
        } else {
            reset::reset();
        }
    }
}

/// Reads a register in memory or I/O space, at its width.
fn read(register: Register) -> u32 {
    let address = register.address as usize;
    // SAFETY: a register the firmware's tables name for exactly this.
    unsafe {
        match (register.space, register.bits) {
            (SYSTEM_IO, 8) => inb(address as u16).into(),
            (SYSTEM_IO, 16) => inw(address as u16).into(),
            (SYSTEM_IO, _) => inl(address as u16),
            (SYSTEM_MEMORY, 8) => with_exposed_provenance_mut::<u8>(address).read_volatile().into(),
            (SYSTEM_MEMORY, 16) => {
                with_exposed_provenance_mut::<u16>(address).read_volatile().into()
            }
            (SYSTEM_MEMORY, _) => with_exposed_provenance_mut::<u32>(address).read_volatile(),
            _ => 0,
        }
    }
}

/// Writes a register in memory or I/O space, at its width.
fn write(register: Register, value: u32) {
    let address = register.address as usize;
    // SAFETY: as above; powering off is the point.
    unsafe {
        match (register.space, register.bits) {
            (SYSTEM_IO, 8) => outb(address as u16, value as u8),
            (SYSTEM_IO, 16) => outw(address as u16, value as u16),
            (SYSTEM_IO, _) => outl(address as u16, value),
            (SYSTEM_MEMORY, 8) => {
                with_exposed_provenance_mut::<u8>(address).write_volatile(value as u8)
            }
            (SYSTEM_MEMORY, 16) => {
                with_exposed_provenance_mut::<u16>(address).write_volatile(value as u16)
            }
            (SYSTEM_MEMORY, _) => with_exposed_provenance_mut::<u32>(address).write_volatile(value),
            _ => {}
        }
    }
}
