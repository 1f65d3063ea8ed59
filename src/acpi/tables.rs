//! The ACPI tables the 64-bit core reads, as byte slices: the RSDP and its RSDT or XSDT, the FADT
//! (fixed and hardware-reduced power management) and the MADT (the interrupt controllers).
//!
//! Pure code with named offsets (ACPI 6.5 chapter 5), bounds-checked throughout: a field past a
//! table's end reads as absent. The host tests run it on tables dumped from QEMU and Cloud
//! Hypervisor (`xtask/src/tests/acpi.rs`). Finding the tables in memory is the core's job.

/// Every system description table starts with this 36-byte header (ACPI 6.5, 5.2.6).
pub const HEADER: usize = 36;
/// Header field: the table's length in bytes, header included.
const LENGTH: usize = 4;

/// RSDP fields (ACPI 6.5, 5.2.5.3).
mod rsdp {
    pub const REVISION: usize = 15;
    pub const RSDT_ADDRESS: usize = 16;
    pub const XSDT_ADDRESS: usize = 24;
    /// Bytes of an ACPI 2.0+ RSDP.
    pub const V2_LENGTH: usize = 36;
}

/// FADT fields (ACPI 6.5, table 5.9).
mod fadt {
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const FLAGS: usize = 112;
    pub const X_DSDT: usize = 140;
    /// The sleep status register (at 256) follows; nothing here reads it.
    pub const SLEEP_CONTROL_REG: usize = 244;
    /// FLAGS bit 20: no fixed hardware; power management through the sleep registers and AML.
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
}

/// MADT fields and entry types (ACPI 6.5, 5.2.12).
mod madt {
    pub const LOCAL_APIC_ADDRESS: usize = 36;
    pub const FLAGS: usize = 40;
    pub const ENTRIES: usize = 44;
    /// FLAGS bit 0: the machine also has dual 8259s.
    pub const PCAT_COMPAT: u32 = 1 << 0;
    pub const IO_APIC: u8 = 1;
    pub const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
}

/// A table's 4-character signature as it reads in memory.
pub fn signature(table: &[u8]) -> Option<[u8; 4]> {
    table.get(..4)?.try_into().ok()
}

/// A table's length field (how many bytes to look at), if it is at least a header long.
pub fn length(header: &[u8]) -> Option<usize> {
    let length = u32_at(header, LENGTH)? as usize;
    (length >= HEADER).then_some(length)
}

/// Whether every byte of `table` adds up to 0 (mod 256), as every ACPI table's does.
pub fn checksum_ok(table: &[u8]) -> bool {
    table.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

/// The root table an RSDP names: the XSDT (64-bit entries) when the RSDP is ACPI 2.0+ and names
/// one, else the RSDT (32-bit entries). Returns its address and its entry width in bytes.
pub fn root_table(rsdp: &[u8]) -> Option<(u64, usize)> {
    if rsdp.get(..8)? != b"RSD PTR " || !checksum_ok(rsdp.get(..20)?) {
        return None;
    }
    let v2 = *rsdp.get(rsdp::REVISION)? >= 2 && rsdp.len() >= rsdp::V2_LENGTH;
    if let Some(xsdt) = u64_at(rsdp, rsdp::XSDT_ADDRESS).filter(|&a| v2 && a != 0) {
        return Some((xsdt, 8));
    }
    let rsdt = u32_at(rsdp, rsdp::RSDT_ADDRESS)?;
    (rsdt != 0).then_some((u64::from(rsdt), 4))
}

/// The table addresses an RSDT (`width` 4) or XSDT (`width` 8) lists.
pub fn entries(root: &[u8], width: usize) -> impl Iterator<Item = u64> + '_ {
    root.get(HEADER..).unwrap_or(&[]).chunks_exact(width).map(move |entry| match width {
        8 => u64::from_le_bytes(entry.try_into().unwrap_or([0; 8])),
        _ => u64::from(u32::from_le_bytes(entry.try_into().unwrap_or([0; 4]))),
    })
}

/// A Generic Address Structure (ACPI 6.5, 5.2.3.2): a register in memory or I/O space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenericAddress {
    /// 0: system memory, 1: system I/O (the same numbers as AML's region spaces).
    pub space: u8,
    pub bit_width: u8,
    pub address: u64,
}

/// What the FADT says about power management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fadt {
    /// The DSDT's address (X_DSDT where present and non-zero).
    pub dsdt: u64,
    /// The SCI's interrupt: an 8259 IRQ, or an I/O APIC input (through any override).
    pub sci_int: u16,
    /// The PM1a event and control blocks' I/O ports (0: none).
    pub pm1a_event: u16,
    pub pm1a_control: u16,
    /// HW_REDUCED_ACPI: no fixed hardware at all.
    pub hardware_reduced: bool,
    /// The sleep control register (hardware-reduced ACPI), where the FADT has one.
    pub sleep_control: Option<GenericAddress>,
}

/// Reads a FADT ("FACP").
pub fn fadt(table: &[u8]) -> Option<Fadt> {
    if signature(table)? != *b"FACP" {
        return None;
    }
    let dsdt = u64_at(table, fadt::X_DSDT)
        .filter(|&a| a != 0)
        .or_else(|| u32_at(table, fadt::DSDT).map(u64::from))?;
    let flags = u32_at(table, fadt::FLAGS).unwrap_or(0);
    Some(Fadt {
        dsdt,
        sci_int: u16_at(table, fadt::SCI_INT).unwrap_or(0),
        pm1a_event: u32_at(table, fadt::PM1A_EVT_BLK).unwrap_or(0) as u16,
        pm1a_control: u32_at(table, fadt::PM1A_CNT_BLK).unwrap_or(0) as u16,
        hardware_reduced: flags & fadt::HW_REDUCED_ACPI != 0,
        sleep_control: generic_address(table, fadt::SLEEP_CONTROL_REG),
    })
}

/// A generic address at `at`, if it is inside the table and names a register (address non-zero,
/// memory or I/O space).
fn generic_address(table: &[u8], at: usize) -> Option<GenericAddress> {
    let space = *table.get(at)?;
    let bit_width = *table.get(at + 1)?;
    let address = u64_at(table, at + 4)?;
    (address != 0 && space <= 1).then_some(GenericAddress { space, bit_width, address })
}

/// The most I/O APICs and interrupt source overrides kept (a VM has one or two, and a handful).
pub const MAX_IO_APICS: usize = 4;
pub const MAX_OVERRIDES: usize = 16;

/// An I/O APIC: its registers' address and the first global system interrupt it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoApic {
    pub address: u32,
    pub gsi_base: u32,
}

/// An ISA IRQ that arrives on another global system interrupt, or with other polarity or
/// trigger mode than ISA's (edge, active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Override {
    pub irq: u8,
    pub gsi: u32,
    /// MPS INTI flags: bits 0-1 polarity (1 high, 3 low), bits 2-3 trigger (1 edge, 3 level).
    pub flags: u16,
}

/// What the MADT ("APIC") says about the interrupt controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Madt {
    pub local_apic: u32,
    /// The machine has 8259s too.
    pub pcat_compat: bool,
    pub io_apics: [Option<IoApic>; MAX_IO_APICS],
    pub overrides: [Option<Override>; MAX_OVERRIDES],
}

/// Reads a MADT.
pub fn madt(table: &[u8]) -> Option<Madt> {
    if signature(table)? != *b"APIC" {
        return None;
    }
    let mut madt = Madt {
        local_apic: u32_at(table, madt::LOCAL_APIC_ADDRESS)?,
        pcat_compat: u32_at(table, madt::FLAGS)? & madt::PCAT_COMPAT != 0,
        ..Madt::default()
    };
    let (mut apics, mut overrides) = (0, 0);
    let mut at = madt::ENTRIES;
    while let (Some(&kind), Some(&length)) = (table.get(at), table.get(at + 1)) {
        if length < 2 {
            break; // a zero length would never move on
        }
        let entry = match table.get(at..at + length as usize) {
            Some(entry) => entry,
            None => break,
        };
        match kind {
            madt::IO_APIC if apics < MAX_IO_APICS && entry.len() >= 12 => {
                madt.io_apics[apics] =
                    Some(IoApic { address: u32_at(entry, 4)?, gsi_base: u32_at(entry, 8)? });
                apics += 1;
            }
            madt::INTERRUPT_SOURCE_OVERRIDE if overrides < MAX_OVERRIDES && entry.len() >= 10 => {
                madt.overrides[overrides] = Some(Override {
                    irq: entry[3],
                    gsi: u32_at(entry, 4)?,
                    flags: u16_at(entry, 8)?,
                });
                overrides += 1;
            }
            _ => {}
        }
        at += length as usize;
    }
    Some(madt)
}

impl Madt {
    /// Where ISA IRQ `irq` arrives: its global system interrupt, level triggered?, active low?
    /// (ISA's own: the same number, edge, active high, unless an override says otherwise.)
    pub fn isa_irq(&self, irq: u8) -> (u32, bool, bool) {
        match self.overrides.iter().flatten().find(|o| o.irq == irq) {
            Some(o) => (o.gsi, o.flags >> 2 & 3 == 3, o.flags & 3 == 3),
            None => (u32::from(irq), false, false),
        }
    }

    /// The I/O APIC serving `gsi`, and the input (pin) it arrives on.
    pub fn io_apic_for(&self, gsi: u32) -> Option<(IoApic, u32)> {
        self.io_apics
            .iter()
            .flatten()
            .filter(|apic| apic.gsi_base <= gsi)
            .max_by_key(|apic| apic.gsi_base)
            .map(|apic| (*apic, gsi - apic.gsi_base))
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}
